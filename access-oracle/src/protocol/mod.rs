//! The Exim-facing line protocol: typed requests (one file per verb) and replies.
//!
//! Tokenizing is shared with the Exim library through `access-wire`; this module turns a
//! tokenized line into a [`Command`] with checked fields, and a [`Reply`] back into the
//! one line the client reads. The wire format is documented in `docs/PROTOCOL.md`.
//! `ping` takes no keys and is answered `pong`; every other verb has its own file.

mod auth;
mod connect;
mod data;
pub mod framing;
mod login;
mod mail;
mod rcpt;

use std::fmt;
use std::net::IpAddr;

use access_wire::{Request, WireError};

pub use auth::Auth;
pub use connect::Connect;
pub use data::Data;
pub use login::Login;
pub use mail::Mail;
pub use rcpt::Rcpt;

/// A checked request from Exim (or any client of the Exim socket).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `auth`: an SMTP AUTH attempt and its local outcome.
    Auth(Auth),
    /// `mail`: an authenticated MAIL FROM.
    Mail(Mail),
    /// `rcpt`: an authenticated RCPT TO.
    Rcpt(Rcpt),
    /// `data`: a message accepted for an account.
    Data(Data),
    /// `connect`: an unauthenticated connection check.
    Connect(Connect),
    /// `login`: a login at another service (imap, pop3, ...).
    Login(Login),
    /// `ping`: liveness.
    Ping,
}

impl Command {
    /// The verb as written on the wire.
    pub fn verb(&self) -> Verb {
        match self {
            Command::Auth(_) => Verb::Auth,
            Command::Mail(_) => Verb::Mail,
            Command::Rcpt(_) => Verb::Rcpt,
            Command::Data(_) => Verb::Data,
            Command::Connect(_) => Verb::Connect,
            Command::Login(_) => Verb::Login,
            Command::Ping => Verb::Ping,
        }
    }
}

/// The protocol verbs, for counters and dispatch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verb {
    /// `auth`
    Auth,
    /// `mail`
    Mail,
    /// `rcpt`
    Rcpt,
    /// `data`
    Data,
    /// `connect`
    Connect,
    /// `login`
    Login,
    /// `ping`
    Ping,
}

impl Verb {
    /// Every verb, in protocol order.
    pub const ALL: [Verb; 7] = [
        Verb::Auth,
        Verb::Mail,
        Verb::Rcpt,
        Verb::Data,
        Verb::Connect,
        Verb::Login,
        Verb::Ping,
    ];

    /// The verb as written on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Auth => "auth",
            Verb::Mail => "mail",
            Verb::Rcpt => "rcpt",
            Verb::Data => "data",
            Verb::Connect => "connect",
            Verb::Login => "login",
            Verb::Ping => "ping",
        }
    }

    fn parse(verb: &str) -> Option<Verb> {
        Verb::ALL
            .into_iter()
            .find(|v| v.as_str().eq_ignore_ascii_case(verb))
    }
}

/// Why a request was refused; sent back as `error <message>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// The line could not be tokenized.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// The verb is not one of the protocol's.
    #[error("unknown verb {0:?}")]
    UnknownVerb(String),
    /// A required key is absent.
    #[error("{verb}: missing required key {key}")]
    MissingKey {
        /// The verb of the request.
        verb: &'static str,
        /// The missing key.
        key: &'static str,
    },
    /// A key has a value that is not allowed.
    #[error("{verb}: invalid {key}: {reason}")]
    InvalidValue {
        /// The verb of the request.
        verb: &'static str,
        /// The key whose value is wrong.
        key: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

/// Parses one request line into a [`Command`].
pub fn parse_line(line: &[u8]) -> Result<Command, ProtocolError> {
    let request = access_wire::parse_request(line)?;
    let verb =
        Verb::parse(request.verb).ok_or_else(|| ProtocolError::UnknownVerb(request.verb.into()))?;
    let fields = Fields {
        verb: verb.as_str(),
        request: &request,
    };
    Ok(match verb {
        Verb::Auth => Command::Auth(Auth::parse(&fields)?),
        Verb::Mail => Command::Mail(Mail::parse(&fields)?),
        Verb::Rcpt => Command::Rcpt(Rcpt::parse(&fields)?),
        Verb::Data => Command::Data(Data::parse(&fields)?),
        Verb::Connect => Command::Connect(Connect::parse(&fields)?),
        Verb::Login => Command::Login(Login::parse(&fields)?),
        Verb::Ping => Command::Ping,
    })
}

/// Typed access to a request's pairs for the per-verb parsers.
pub(crate) struct Fields<'r, 'a> {
    verb: &'static str,
    request: &'r Request<'a>,
}

/// The longest text field (an address, a HELO name) kept, in bytes; a longer one is cut.
pub const MAX_FIELD_BYTES: usize = 1024;

impl Fields<'_, '_> {
    fn invalid(&self, key: &'static str, reason: impl Into<String>) -> ProtocolError {
        ProtocolError::InvalidValue {
            verb: self.verb,
            key,
            reason: reason.into(),
        }
    }

    /// An optional text field, cut to [`MAX_FIELD_BYTES`]: what a client controls (a
    /// sender, a recipient, a HELO name) is never a reason to skip the check.
    fn text(&self, key: &'static str) -> Result<Option<String>, ProtocolError> {
        Ok(self
            .request
            .get(key)
            .map(|v| bounded_text(v, MAX_FIELD_BYTES)))
    }

    /// A required text field.
    fn required_text(&self, key: &'static str) -> Result<String, ProtocolError> {
        self.text(key)?.ok_or(ProtocolError::MissingKey {
            verb: self.verb,
            key,
        })
    }

    /// A required account name. What the client typed decides nothing: an empty name is
    /// an account like any other (its attempts count, against the source address too),
    /// and a name longer than [`MAX_USER_BYTES`] is shortened to a bounded key that
    /// keeps distinct names distinct.
    fn user(&self) -> Result<String, ProtocolError> {
        let user = self.request.get("user").ok_or(ProtocolError::MissingKey {
            verb: self.verb,
            key: "user",
        })?;
        Ok(bounded_user(user))
    }

    /// The required `ip` key: an address, or empty when Exim has none.
    fn ip(&self) -> Result<Option<IpAddr>, ProtocolError> {
        let raw = self.required_text("ip")?;
        parse_ip(&raw).map_err(|reason| self.invalid("ip", reason))
    }

    /// An optional unsigned number; `-1` (Exim's "unknown", e.g. `$message_size` before
    /// DATA without SIZE) reads as absent.
    fn number(&self, key: &'static str) -> Result<Option<u64>, ProtocolError> {
        match self.request.get(key) {
            None | Some("") | Some("-1") => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| self.invalid(key, format!("not a number: {:?}", short(v)))),
        }
    }

    /// An optional port (`local_port=`): a number from 1 to 65535, else absent. A port
    /// is a fact for the record, never a reason to refuse the request.
    fn port(&self, key: &'static str) -> Option<u16> {
        self.request
            .get(key)
            .and_then(|v| v.parse::<u16>().ok())
            .filter(|&p| p != 0)
    }

    /// An optional flag: `1`, `yes` or `true` set it; `0`, `no`, `false` or empty do not.
    fn flag(&self, key: &'static str) -> Result<bool, ProtocolError> {
        match self.request.get(key) {
            None | Some("" | "0" | "no" | "false") => Ok(false),
            Some("1" | "yes" | "true") => Ok(true),
            Some(v) => Err(self.invalid(key, format!("expected 1 or 0, got {:?}", short(v)))),
        }
    }

    /// The required `result` key of `auth` and `login`.
    fn outcome(&self) -> Result<Outcome, ProtocolError> {
        let raw = self.required_text("result")?;
        match raw.as_str() {
            "ok" => Ok(Outcome::Ok),
            "fail" => Ok(Outcome::Fail),
            other => Err(self.invalid(
                "result",
                format!("expected ok or fail, got {:?}", short(other)),
            )),
        }
    }

    /// The optional `pwhash` key: 1 to 16 hex digits (Dovecot's truncated hash).
    fn pwhash(&self) -> Result<Option<u64>, ProtocolError> {
        match self.request.get("pwhash") {
            None | Some("") => Ok(None),
            Some(v) if v.len() <= 16 && v.bytes().all(|b| b.is_ascii_hexdigit()) => {
                Ok(u64::from_str_radix(v, 16).ok())
            }
            Some(v) => Err(self.invalid(
                "pwhash",
                format!("expected up to 16 hex digits, got {:?}", short(v)),
            )),
        }
    }
}

/// The longest account name kept as it is, in bytes.
pub const MAX_USER_BYTES: usize = 256;

/// An account name as tracked: itself when short, else its first 200 bytes, `…#` and a
/// hash of the whole name. No real mailbox has such a name, but the attempt still counts.
pub fn bounded_user(user: &str) -> String {
    if user.len() <= MAX_USER_BYTES {
        return user.to_string();
    }
    let mut cut = 200;
    while !user.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut hasher = std::hash::DefaultHasher::new();
    std::hash::Hash::hash(user, &mut hasher);
    format!(
        "{}…#{:016x}",
        &user[..cut],
        std::hash::Hasher::finish(&hasher)
    )
}

/// `text` cut to at most `max` bytes at a character boundary, with `…` marking the cut.
pub fn bounded_text(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut cut = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &text[..cut])
}

/// Parses an address as Exim writes `$sender_host_address`; empty means none.
pub fn parse_ip(raw: &str) -> Result<Option<IpAddr>, String> {
    if raw.is_empty() {
        return Ok(None);
    }
    // Exim writes IPv6 plainly; tolerate brackets and an IPv4-mapped form.
    let trimmed = raw.trim_start_matches('[').trim_end_matches(']');
    match trimmed.parse::<IpAddr>() {
        Ok(ip) => Ok(Some(crate::net::canonical_ip(ip))),
        Err(_) => Err(format!("not an ip address: {:?}", short(raw))),
    }
}

fn short(s: &str) -> &str {
    match s.char_indices().nth(40) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// The local outcome of an authentication attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The password was right.
    Ok,
    /// The password was wrong, or the account unknown.
    Fail,
}

/// The one line the oracle answers with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Go ahead.
    Accept,
    /// Temporary refusal, with the text for the SMTP client.
    Defer(String),
    /// Permanent refusal, with the text for the SMTP client.
    Deny(String),
    /// The request was malformed; what was wrong.
    Error(String),
    /// The answer to `ping`.
    Pong,
}

impl Reply {
    /// The reply's kind as a word, for counters.
    pub fn kind(&self) -> &'static str {
        match self {
            Reply::Accept => "accept",
            Reply::Defer(_) => "defer",
            Reply::Deny(_) => "deny",
            Reply::Error(_) => "error",
            Reply::Pong => "pong",
        }
    }

    /// Appends the reply line, with its newline, to `out`, in `access-wire`'s grammar
    /// (the library parses it with the same): texts kept to one line.
    pub fn write_line(&self, out: &mut Vec<u8>) {
        let wire = match self {
            Reply::Accept => access_wire::Reply::Accept(""),
            Reply::Defer(t) => access_wire::Reply::Defer(t),
            Reply::Deny(t) => access_wire::Reply::Deny(t),
            Reply::Error(t) => access_wire::Reply::Error(t),
            Reply::Pong => access_wire::Reply::Pong,
        };
        wire.write(out);
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut line = Vec::new();
        self.write_line(&mut line);
        line.pop();
        f.write_str(&String::from_utf8_lossy(&line))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_verb() {
        let cases: &[(&str, Verb)] = &[
            ("auth user=a ip=192.0.2.1 result=ok", Verb::Auth),
            ("mail user=a ip=192.0.2.1", Verb::Mail),
            ("rcpt user=a ip= rcpt=b@example.org", Verb::Rcpt),
            ("data user=a ip=192.0.2.1 rcpts=3 size=100", Verb::Data),
            ("connect ip=2001:db8::1", Verb::Connect),
            (
                "login user=a ip=192.0.2.1 result=fail protocol=imap",
                Verb::Login,
            ),
            ("ping", Verb::Ping),
            ("PING", Verb::Ping),
        ];
        for (line, verb) in cases {
            let cmd = parse_line(line.as_bytes()).unwrap_or_else(|e| panic!("{line}: {e}"));
            assert_eq!(cmd.verb(), *verb);
        }
    }

    #[test]
    fn reports_what_is_wrong() {
        let cases: &[(&str, &str)] = &[
            ("frobnicate x=1", "unknown verb \"frobnicate\""),
            (
                "auth ip=192.0.2.1 result=ok",
                "auth: missing required key user",
            ),
            ("auth user=a result=ok", "auth: missing required key ip"),
            (
                "auth user=a ip=1.2.3 result=ok",
                "auth: invalid ip: not an ip address: \"1.2.3\"",
            ),
            (
                "auth user=a ip=192.0.2.1 result=maybe",
                "auth: invalid result: expected ok or fail, got \"maybe\"",
            ),
            (
                "auth user=a ip=192.0.2.1 result=fail pwhash=xyz",
                "auth: invalid pwhash: expected up to 16 hex digits, got \"xyz\"",
            ),
            (
                "rcpt user=a ip=192.0.2.1",
                "rcpt: missing required key rcpt",
            ),
            (
                "data user=a ip= size=big",
                "data: invalid size: not a number: \"big\"",
            ),
        ];
        for (line, want) in cases {
            let err = parse_line(line.as_bytes()).unwrap_err();
            assert_eq!(err.to_string(), *want, "line {line}");
        }
    }

    #[test]
    fn long_user_names_are_kept_bounded_and_distinct() {
        let long_a = format!("{}a", "x".repeat(3000));
        let long_b = format!("{}b", "x".repeat(3000));
        let (a, b) = (bounded_user(&long_a), bounded_user(&long_b));
        assert!(a.len() < MAX_USER_BYTES && b.len() < MAX_USER_BYTES);
        assert_ne!(a, b);
        assert_eq!(bounded_user("alice"), "alice");
        let line = format!("auth user=\"{long_a}\" ip=192.0.2.1 result=fail");
        let Command::Auth(auth) = parse_line(line.as_bytes()).unwrap() else {
            panic!("not auth");
        };
        assert_eq!(auth.user, a);
        // Multi-byte characters are never cut in half.
        assert!(bounded_user(&"é".repeat(500)).starts_with(&"é".repeat(100)));
    }

    #[test]
    fn what_a_client_controls_never_makes_a_request_unreadable() {
        // Empty names, bytes that are not UTF-8, NUL (escaped), over-long fields.
        let Command::Auth(auth) = parse_line(b"auth user= ip=192.0.2.1 result=fail").unwrap()
        else {
            panic!("not auth");
        };
        assert_eq!(auth.user, "");
        let Command::Mail(mail) =
            parse_line(b"mail user=al\xffice ip=192.0.2.1 sender=b\xffob@example.com").unwrap()
        else {
            panic!("not mail");
        };
        assert_eq!(mail.user, "al\\xffice");
        assert_eq!(mail.sender.as_deref(), Some("b\\xffob@example.com"));
        let Command::Rcpt(rcpt) =
            parse_line(b"rcpt user=\"a\\x00b\" ip= rcpt=\"x\\xfe@y\"").unwrap()
        else {
            panic!("not rcpt");
        };
        assert_eq!(rcpt.user, "a\\x00b");
        assert_eq!(rcpt.rcpt, "x\\xfe@y");
        let line = format!("rcpt user=a ip= rcpt={}@example.com", "r".repeat(5000));
        let Command::Rcpt(rcpt) = parse_line(line.as_bytes()).unwrap() else {
            panic!("not rcpt");
        };
        assert!(rcpt.rcpt.len() <= MAX_FIELD_BYTES && rcpt.rcpt.ends_with('…'));
    }

    #[test]
    fn the_verbs_are_the_wire_crates() {
        let ours: Vec<&str> = Verb::ALL.iter().map(|v| v.as_str()).collect();
        assert_eq!(ours, access_wire::VERBS);
    }

    #[test]
    fn minus_one_means_unknown() {
        let cmd = parse_line(b"mail user=a ip=192.0.2.1 size=-1").unwrap();
        assert!(matches!(cmd, Command::Mail(Mail { size: None, .. })));
    }

    #[test]
    fn ignores_unknown_keys() {
        let cmd = parse_line(b"mail user=a ip=192.0.2.1 future=1 size=10").unwrap();
        assert!(matches!(cmd, Command::Mail(Mail { size: Some(10), .. })));
    }

    #[test]
    fn normalises_mapped_ipv6() {
        assert_eq!(
            parse_ip("::ffff:192.0.2.7").unwrap(),
            Some("192.0.2.7".parse().unwrap())
        );
        assert_eq!(parse_ip("").unwrap(), None);
    }

    #[test]
    fn replies_are_one_line() {
        let mut out = Vec::new();
        Reply::Defer("held\nnow".into()).write_line(&mut out);
        Reply::Accept.write_line(&mut out);
        Reply::Pong.write_line(&mut out);
        assert_eq!(out, b"defer held now\naccept\npong\n");
    }
}
