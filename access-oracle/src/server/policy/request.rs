//! The JSON body of a Dovecot auth policy request, read tolerantly.
//!
//! Dovecot 2.3 sends one compact JSON object whose members come from
//! `auth_policy_request_attributes` (all strings: `login`, `pwhash`, `remote`,
//! `device_id`, `protocol`, `session_id` by default; the shipped snippet adds `local`,
//! `rport` and `mech`), then `success` and `policy_reject` (booleans, `report` only)
//! and `tls` (boolean). Dovecot 2.4 adds `fail_type` (`credentials`, `account`,
//! `policy`, `internal`, ...). A site may change the attribute list, so:
//!
//! * unknown members are ignored, every member is optional;
//! * a value may be a string, a number, a boolean or null (`"rport":"4711"` and
//!   `"rport":4711` both read), an object or array where a plain value belongs is
//!   treated as absent;
//! * values that do not make sense (an address that is not one, a `pwhash` that is not
//!   hex) are treated as absent, not refused;
//! * only a body that is not a JSON object is refused ([`RequestError`], HTTP 400).
//!
//! Lengths are bounded as on the Exim socket: a login name is shortened like the line
//! protocol's `user` (`protocol::bounded_user`), the protocol and the session id are
//! cut to [`MAX_PROTOCOL_BYTES`] and [`MAX_SESSION_BYTES`].

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::protocol::{MAX_USER_BYTES, bounded_user, parse_ip};

/// The longest protocol name kept, in bytes.
pub const MAX_PROTOCOL_BYTES: usize = 32;

/// The longest session id kept, in bytes.
pub const MAX_SESSION_BYTES: usize = 128;

/// A policy request's fields, as the engine needs them; texts borrow from the body
/// where they can (no escapes, nothing to shorten or lowercase).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyRequest<'a> {
    /// The login name tried (`login`); `None` when absent. An empty name is an attempt
    /// like any other (it counts against the source address).
    pub login: Option<Cow<'a, str>>,
    /// The client's address (`remote`).
    pub remote: Option<IpAddr>,
    /// The client's port (`rport`).
    pub rport: Option<u16>,
    /// The server's address the client reached (`local`).
    pub local: Option<IpAddr>,
    /// The service, lowercase (`protocol`): `imap`, `pop3`, `smtp`, `submission`, ...
    pub protocol: Option<Cow<'a, str>>,
    /// The SASL mechanism (`mech`) as sent (`PLAIN`), if the site sends it. Nothing
    /// decides on it, so it is not lowercased (that would copy it on every request).
    pub mech: Option<Cow<'a, str>>,
    /// The keyed password hash (`pwhash`), as a number: up to 16 hex digits; a longer
    /// hash (no `auth_policy_hash_truncate`) by its first 16.
    pub pwhash: Option<u64>,
    /// Dovecot's session id (`session_id`).
    pub session_id: Option<Cow<'a, str>>,
    /// The client's `device_id` (IMAP ID `x-client-id`...), if any.
    pub device_id: Option<Cow<'a, str>>,
    /// Whether the connection is TLS-protected (`tls`).
    pub tls: Option<bool>,
    /// `report` only: whether the login succeeded (`success`).
    pub success: Option<bool>,
    /// `report` only: whether the policy itself refused it (`policy_reject`).
    pub policy_reject: Option<bool>,
    /// Dovecot 2.4's `fail_type`, lowercase.
    pub fail_type: Option<Cow<'a, str>>,
}

impl PolicyRequest<'_> {
    /// The same request, owning its texts.
    pub fn into_owned(self) -> PolicyRequest<'static> {
        let own = |t: Option<Cow<'_, str>>| t.map(|t| Cow::Owned(t.into_owned()));
        PolicyRequest {
            login: own(self.login),
            remote: self.remote,
            rport: self.rport,
            local: self.local,
            protocol: own(self.protocol),
            mech: own(self.mech),
            pwhash: self.pwhash,
            session_id: own(self.session_id),
            device_id: own(self.device_id),
            tls: self.tls,
            success: self.success,
            policy_reject: self.policy_reject,
            fail_type: own(self.fail_type),
        }
    }
}

/// Why a body is not a policy request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed policy request: {0}")]
pub struct RequestError(String);

/// Reads a request body.
pub fn parse(body: &[u8]) -> Result<PolicyRequest<'_>, RequestError> {
    // serde would also read a struct from an array of its fields, in order.
    if body.trim_ascii_start().first() != Some(&b'{') {
        return Err(RequestError("expected a JSON object".into()));
    }
    let raw = match flat(body) {
        Some(raw) => raw,
        None => match serde_json::from_slice(body) {
            Ok(raw) => raw,
            Err(e) if std::str::from_utf8(body).is_err() => return repaired(body, &e),
            Err(e) => return Err(RequestError(one_line(&e))),
        },
    };
    Ok(build(raw))
}

/// A body with bytes that are not UTF-8 (a client's login name passed on as it came):
/// read with each such byte as the text `\xHH`, the line protocol's text form of it
/// ([`access_wire::text_from_bytes`]), so the attempt is counted under the same name
/// rather than refused (a refused request lets Dovecot fail open).
fn repaired(
    body: &[u8],
    first: &serde_json::Error,
) -> Result<PolicyRequest<'static>, RequestError> {
    // Inside a JSON string the text `\xHH` is written with an escaped backslash.
    let mut text = String::with_capacity(body.len() + 16);
    for chunk in body.utf8_chunks() {
        text.push_str(chunk.valid());
        for &b in chunk.invalid() {
            text.push_str(&format!("\\\\x{b:02x}"));
        }
    }
    let raw: Raw<'_> = serde_json::from_str(&text).map_err(|_| RequestError(one_line(first)))?;
    Ok(build(raw).into_owned())
}

/// [`parse`] without its fast path: serde reads every body. For the fuzz target, which
/// checks that both read every body the same.
pub fn parse_with_serde(body: &[u8]) -> Result<PolicyRequest<'_>, RequestError> {
    if body.trim_ascii_start().first() != Some(&b'{') {
        return Err(RequestError("expected a JSON object".into()));
    }
    let raw = serde_json::from_slice(body).map_err(|e| RequestError(one_line(&e)))?;
    Ok(build(raw))
}

/// The request from the members read.
fn build(raw: Raw<'_>) -> PolicyRequest<'_> {
    PolicyRequest {
        login: raw.login.and_then(Loose::into_text).map(|l| {
            if l.len() <= MAX_USER_BYTES {
                l
            } else {
                Cow::Owned(bounded_user(&l))
            }
        }),
        remote: raw.remote.as_ref().and_then(Loose::ip),
        rport: raw
            .rport
            .as_ref()
            .and_then(Loose::text)
            .and_then(|p| p.parse().ok()),
        local: raw.local.as_ref().and_then(Loose::ip),
        protocol: raw.protocol.and_then(|p| p.word(MAX_PROTOCOL_BYTES)),
        mech: raw.mech.and_then(|m| m.short(MAX_PROTOCOL_BYTES)),
        pwhash: raw.pwhash.as_ref().and_then(Loose::text).and_then(pwhash),
        session_id: raw
            .session_id
            .and_then(Loose::into_text)
            .filter(|s| !s.is_empty())
            .map(|s| cut_cow(s, MAX_SESSION_BYTES)),
        device_id: raw
            .device_id
            .and_then(Loose::into_text)
            .filter(|s| !s.is_empty())
            .map(|s| cut_cow(s, MAX_SESSION_BYTES)),
        tls: raw.tls.as_ref().and_then(Loose::flag),
        success: raw.success.as_ref().and_then(Loose::flag),
        policy_reject: raw.policy_reject.as_ref().and_then(Loose::flag),
        fail_type: raw.fail_type.and_then(|f| f.word(MAX_PROTOCOL_BYTES)),
    }
}

/// `s` cut to at most `max` bytes, borrowed when it fits.
fn cut_cow(s: Cow<'_, str>, max: usize) -> Cow<'_, str> {
    match s {
        Cow::Borrowed(b) => Cow::Borrowed(cut(b, max)),
        Cow::Owned(o) if o.len() <= max => Cow::Owned(o),
        Cow::Owned(o) => Cow::Owned(cut(&o, max).to_string()),
    }
}

/// Dovecot's hex `pwhash` as a number (the line protocol's `pwhash=` reads the same
/// digits the same way).
fn pwhash(hex: &str) -> Option<u64> {
    if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(&hex[..hex.len().min(16)], 16).ok()
}

/// `s` cut to at most `max` bytes, at a character boundary.
fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A serde error on one line, whatever the input held.
fn one_line(e: &serde_json::Error) -> String {
    e.to_string()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(300)
        .collect()
}

/// Reads what Dovecot sends, a flat object of plain strings, booleans and small
/// integers, without serde (about a third of its time); `None` for anything else (an
/// escape, a nested value, another number, a repeated member, any syntax error), which
/// serde then reads or refuses. Both give the same [`Raw`] (checked by the fuzz target).
pub(crate) fn flat(body: &[u8]) -> Option<Raw<'_>> {
    let text = std::str::from_utf8(body).ok()?;
    let b = text.as_bytes();
    let ws = |i: &mut usize| {
        while b
            .get(*i)
            .is_some_and(|c| matches!(c, b' ' | b'\t' | b'\n' | b'\r'))
        {
            *i += 1;
        }
    };
    // A string without escapes or control characters; `i` at its opening quote.
    let string = |i: &mut usize| -> Option<&str> {
        let start = *i + 1;
        let len = b
            .get(start..)?
            .iter()
            .position(|&c| c == b'"' || c == b'\\' || c < 0x20)?;
        let end = start + len;
        (b[end] == b'"').then(|| {
            *i = end + 1;
            &text[start..end]
        })
    };
    let mut raw = Raw::default();
    let mut i = 0;
    ws(&mut i);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i += 1;
    ws(&mut i);
    if b.get(i) == Some(&b'}') {
        i += 1;
    } else {
        loop {
            if b.get(i) != Some(&b'"') {
                return None;
            }
            let key = string(&mut i)?;
            ws(&mut i);
            if b.get(i) != Some(&b':') {
                return None;
            }
            i += 1;
            ws(&mut i);
            let value = match *b.get(i)? {
                b'"' => Loose::Text(Cow::Borrowed(string(&mut i)?)),
                b't' if b[i..].starts_with(b"true") => {
                    i += 4;
                    Loose::Flag(true)
                }
                b'f' if b[i..].starts_with(b"false") => {
                    i += 5;
                    Loose::Flag(false)
                }
                b'n' if b[i..].starts_with(b"null") => {
                    i += 4;
                    Loose::Nothing
                }
                b'0'..=b'9' => {
                    let len = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
                    // serde reads 007 as an error and 1.5 or 1e3 as floats: leave them.
                    if len > 18
                        || (len > 1 && b[i] == b'0')
                        || matches!(b.get(i + len), Some(b'.' | b'e' | b'E'))
                    {
                        return None;
                    }
                    i += len;
                    Loose::Text(Cow::Borrowed(&text[i - len..i]))
                }
                _ => return None,
            };
            let slot = match key {
                "login" => Some(&mut raw.login),
                "remote" => Some(&mut raw.remote),
                "rport" => Some(&mut raw.rport),
                "local" => Some(&mut raw.local),
                "protocol" => Some(&mut raw.protocol),
                "mech" => Some(&mut raw.mech),
                "pwhash" => Some(&mut raw.pwhash),
                "session_id" => Some(&mut raw.session_id),
                "device_id" => Some(&mut raw.device_id),
                "tls" => Some(&mut raw.tls),
                "success" => Some(&mut raw.success),
                "policy_reject" => Some(&mut raw.policy_reject),
                "fail_type" => Some(&mut raw.fail_type),
                _ => None,
            };
            if let Some(slot) = slot {
                if slot.is_some() {
                    return None;
                }
                *slot = Some(value);
            }
            ws(&mut i);
            match b.get(i) {
                Some(b',') => {
                    i += 1;
                    ws(&mut i);
                }
                Some(b'}') => {
                    i += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    ws(&mut i);
    (i == b.len()).then_some(raw)
}

/// The members the oracle reads; the rest are skipped.
#[derive(Debug, Deserialize, Default, PartialEq)]
#[serde(default)]
pub(crate) struct Raw<'a> {
    #[serde(borrow)]
    login: Option<Loose<'a>>,
    #[serde(borrow)]
    remote: Option<Loose<'a>>,
    #[serde(borrow)]
    rport: Option<Loose<'a>>,
    #[serde(borrow)]
    local: Option<Loose<'a>>,
    #[serde(borrow)]
    protocol: Option<Loose<'a>>,
    #[serde(borrow)]
    mech: Option<Loose<'a>>,
    #[serde(borrow)]
    pwhash: Option<Loose<'a>>,
    #[serde(borrow)]
    session_id: Option<Loose<'a>>,
    #[serde(borrow)]
    device_id: Option<Loose<'a>>,
    #[serde(borrow)]
    tls: Option<Loose<'a>>,
    #[serde(borrow)]
    success: Option<Loose<'a>>,
    #[serde(borrow)]
    policy_reject: Option<Loose<'a>>,
    #[serde(borrow)]
    fail_type: Option<Loose<'a>>,
}

/// A JSON value read leniently: text (strings and numbers), a boolean, or nothing usable.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Loose<'a> {
    Text(Cow<'a, str>),
    Flag(bool),
    Nothing,
}

impl<'a> Loose<'a> {
    /// The text, a NUL written `\x00` as the line protocol's tokenizer writes it
    /// ([`access_wire::text_from_str`]): both endpoints key on the same text.
    fn into_text(self) -> Option<Cow<'a, str>> {
        match self {
            Loose::Text(t) if t.as_bytes().contains(&0) => {
                Some(Cow::Owned(access_wire::text_from_str(&t).into_owned()))
            }
            Loose::Text(t) => Some(t),
            Loose::Flag(_) | Loose::Nothing => None,
        }
    }

    fn text(&self) -> Option<&str> {
        match self {
            Loose::Text(t) => Some(t),
            Loose::Flag(_) | Loose::Nothing => None,
        }
    }

    fn flag(&self) -> Option<bool> {
        match self {
            Loose::Flag(b) => Some(*b),
            Loose::Text(t) => match t.to_ascii_lowercase().as_str() {
                "true" | "yes" | "1" => Some(true),
                "false" | "no" | "0" => Some(false),
                _ => None,
            },
            Loose::Nothing => None,
        }
    }

    fn ip(&self) -> Option<IpAddr> {
        parse_ip(self.text()?).ok().flatten()
    }

    /// A short word, trimmed and cut to `max` bytes; `None` when nothing is left.
    fn short(self, max: usize) -> Option<Cow<'a, str>> {
        fn trimmed(t: &str, max: usize) -> Option<&str> {
            let t = cut(t.trim(), max);
            (!t.is_empty()).then_some(t)
        }
        match self.into_text()? {
            Cow::Borrowed(b) => Some(Cow::Borrowed(trimmed(b, max)?)),
            Cow::Owned(o) => Some(Cow::Owned(trimmed(&o, max)?.to_string())),
        }
    }

    /// A short lowercase word: a protocol, a failure type. Borrowed when already
    /// lowercase.
    fn word(self, max: usize) -> Option<Cow<'a, str>> {
        match self.short(max)? {
            Cow::Borrowed(t) if t.bytes().any(|c| c.is_ascii_uppercase()) => {
                Some(Cow::Owned(t.to_ascii_lowercase()))
            }
            Cow::Borrowed(t) => Some(Cow::Borrowed(t)),
            Cow::Owned(o) => Some(Cow::Owned(o.to_ascii_lowercase())),
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Loose<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(LooseVisitor(std::marker::PhantomData))
    }
}

struct LooseVisitor<'a>(std::marker::PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for LooseVisitor<'a> {
    type Value = Loose<'a>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string, number, boolean or null")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Loose::Text(Cow::Borrowed(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Loose::Text(Cow::Owned(v.to_string())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Loose::Text(Cow::Owned(v)))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Loose::Flag(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Loose::Text(Cow::Owned(v.to_string())))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Loose::Text(Cow::Owned(v.to_string())))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Loose::Text(Cow::Owned(v.to_string())))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Loose::Nothing)
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Loose::Nothing)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Loose::Nothing)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Loose::Nothing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What Dovecot 2.3.19.1 sent on `report` with the shipped snippet's attributes
    /// (copied from its `auth_debug` log in an end-to-end run: keys sorted, attribute
    /// values all strings, `success`, `policy_reject` and `tls` booleans).
    const REPORT: &[u8] = br#"{"device_id":"","local":"127.0.0.1","login":"alice","mech":"PLAIN","protocol":"imap","pwhash":"082e","remote":"198.51.100.7","rport":"40000","session_id":"d5pzw1BhQJzGM2QH","success":false,"policy_reject":false,"tls":false}"#;

    /// What it sent on `allow` for Exim's dovecot authenticator: no local address, port
    /// 0, no session.
    const SMTP_ALLOW: &[u8] = br#"{"device_id":"","local":"","login":"alice","mech":"PLAIN","protocol":"smtp","pwhash":"0974","remote":"203.0.113.9","rport":"0","session_id":"","tls":false}"#;

    #[test]
    fn nul_and_bytes_that_are_not_utf8_keep_the_line_protocols_text_form() {
        let r = parse(br#"{"login":"a\u0000b","remote":"192.0.2.1"}"#).unwrap();
        assert_eq!(r.login.as_deref(), Some("a\\x00b"));
        let r =
            parse(b"{\"login\":\"b\xffob\",\"remote\":\"192.0.2.1\",\"x\":\"q\\\\xq\"}").unwrap();
        assert_eq!(r.login.as_deref(), Some("b\\xffob"));
        assert_eq!(r.remote, Some("192.0.2.1".parse().unwrap()));
        let r = parse(br#"{"login":""}"#).unwrap();
        assert_eq!(
            r.login.as_deref(),
            Some(""),
            "an empty name is an attempt too"
        );
        assert!(parse(b"{\"login\":\xff}").is_err(), "still JSON or refused");
    }

    #[test]
    fn reads_dovecots_report() {
        let r = parse(REPORT).unwrap();
        assert_eq!(r.login.as_deref(), Some("alice"));
        assert_eq!(r.remote, Some("198.51.100.7".parse().unwrap()));
        assert_eq!(r.local, Some("127.0.0.1".parse().unwrap()));
        assert_eq!(r.rport, Some(40000));
        assert_eq!(r.protocol.as_deref(), Some("imap"));
        assert_eq!(r.mech.as_deref(), Some("PLAIN"), "as sent");
        assert_eq!(r.pwhash, Some(0x082e));
        assert_eq!(r.session_id.as_deref(), Some("d5pzw1BhQJzGM2QH"));
        assert_eq!(r.device_id, None, "empty means absent");
        assert_eq!(r.tls, Some(false));
        assert_eq!(r.success, Some(false));
        assert_eq!(r.policy_reject, Some(false));
        assert_eq!(r.fail_type, None);
        let smtp = parse(SMTP_ALLOW).unwrap();
        assert_eq!(smtp.protocol.as_deref(), Some("smtp"));
        assert_eq!(smtp.local, None);
        assert_eq!(smtp.rport, Some(0));
        assert_eq!(smtp.session_id, None);
        assert_eq!(smtp.success, None);
    }

    #[test]
    fn the_default_attributes_and_nothing_else_are_enough() {
        let r = parse(br#"{"login":"bob","pwhash":"0249","remote":"2001:db8::7","device_id":"","protocol":"pop3","session_id":"x","tls":true}"#).unwrap();
        assert_eq!(r.remote, Some("2001:db8::7".parse().unwrap()));
        assert_eq!(r.success, None);
        assert_eq!(parse(b"{}").unwrap(), PolicyRequest::default());
    }

    #[test]
    fn values_of_any_plain_type_are_read_and_others_ignored() {
        let r = parse(
            br#"{"login":"c\u00e9line","rport":4711,"success":"true","tls":1,"remote":{"ip":"1.2.3.4"},
                 "protocol":["imap"],"session_id":null,"unknown":{"deep":[1,2,{"x":null}]},
                 "fail_type":"Credentials","pwhash":"zz"}"#,
        )
        .unwrap();
        assert_eq!(r.login.as_deref(), Some("céline"));
        assert_eq!(r.rport, Some(4711));
        assert_eq!(r.success, Some(true));
        assert_eq!(r.tls, Some(true), "the number 1");
        assert_eq!(r.remote, None, "an object is no address");
        assert_eq!(r.protocol, None, "an array is no protocol");
        assert_eq!(r.session_id, None);
        assert_eq!(r.fail_type.as_deref(), Some("credentials"));
        assert_eq!(r.pwhash, None);
    }

    #[test]
    fn nonsense_values_are_absent_not_errors() {
        let r = parse(br#"{"remote":"not-an-ip","rport":"99999","pwhash":"xyz","protocol":"  "}"#)
            .unwrap();
        assert_eq!(r.remote, None);
        assert_eq!(r.rport, None);
        assert_eq!(r.pwhash, None);
        assert_eq!(r.protocol, None);
    }

    #[test]
    fn long_hashes_and_names_are_bounded() {
        let full = "a".repeat(64);
        let body = format!(
            r#"{{"pwhash":"{full}","login":"{}","protocol":"{}"}}"#,
            "u".repeat(1000),
            "P".repeat(100)
        );
        let r = parse(body.as_bytes()).unwrap();
        assert_eq!(r.pwhash, Some(0xaaaa_aaaa_aaaa_aaaa));
        assert!(r.login.unwrap().len() < 300);
        assert_eq!(r.protocol.unwrap(), "p".repeat(MAX_PROTOCOL_BYTES));
    }

    #[test]
    fn plain_values_are_borrowed_from_the_body() {
        let r = parse(REPORT).unwrap();
        assert!(matches!(r.login, Some(Cow::Borrowed("alice"))));
        assert!(matches!(r.protocol, Some(Cow::Borrowed("imap"))));
        assert!(
            matches!(r.mech, Some(Cow::Borrowed("PLAIN"))),
            "not lowercased"
        );
        assert!(matches!(r.session_id, Some(Cow::Borrowed(_))));
    }

    #[test]
    fn the_fast_path_reads_dovecots_bodies_as_serde_does() {
        for body in [
            REPORT,
            SMTP_ALLOW,
            b"{}",
            b" { \"tls\" : true , \"rport\":0 }\r\n",
        ] {
            let fast = flat(body).expect("a flat body");
            let slow: Raw<'_> = serde_json::from_slice(body).unwrap();
            assert_eq!(fast, slow, "{}", String::from_utf8_lossy(body));
        }
        // Left to serde: escapes, nesting, other numbers, repeats, errors.
        for body in [
            &br#"{"login":"a\u0041"}"#[..],
            br#"{"x":{"y":1}}"#,
            br#"{"x":[1]}"#,
            br#"{"rport":-1}"#,
            br#"{"rport":1.5}"#,
            br#"{"rport":007}"#,
            br#"{"login":"a","login":"b"}"#,
            br#"{"login":"a",}"#,
            br#"{"tls":truex}"#,
            b"{\"login\":\"a\nb\"}",
            b"{} x",
        ] {
            assert_eq!(flat(body), None, "{}", String::from_utf8_lossy(body));
        }
        // An unknown member repeated is fine for both.
        let body = br#"{"x":1,"x":"2","login":"a"}"#;
        let slow: Raw<'_> = serde_json::from_slice(body).unwrap();
        assert_eq!(flat(body), Some(slow));
    }

    #[test]
    fn only_non_objects_are_refused_with_a_one_line_reason() {
        for body in [
            &b""[..],
            b"[]",
            b"\"x\"",
            b"{\"login\":",
            b"{\"a\":1}{",
            b"\xff",
            b"{\"login\":\"a\",\"login\":\"b\"}",
        ] {
            let e = parse(body).unwrap_err().to_string();
            assert!(e.starts_with("malformed policy request: "), "{e}");
            assert!(!e.chars().any(char::is_control), "{e:?}");
        }
    }
}
