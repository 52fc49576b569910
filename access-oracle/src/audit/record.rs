//! One audit record, and how it is chained to the one before.
//!
//! A record is one line of JSON. Its last field is `chain`: the HMAC-SHA256, under the
//! trail's key, of the previous record's `chain` (32 bytes) followed by the line up to
//! that field (with the closing `}` put back). Changing, removing, reordering or adding a
//! record anywhere breaks every `chain` after it, and without the key nobody can compute
//! new ones.

use std::net::IpAddr;

use compact_str::CompactString;
use hmac::{Hmac, Mac};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::crypt::Crypt;
use crate::protocol::Outcome;
use crate::rules::{Response, Severity};

/// A chain value: the MAC of a record.
pub type Chain = [u8; 32];

/// The chain value before the first record of a trail.
pub const GENESIS: Chain = [0; 32];

/// What a record is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// The first record of each segment file: the chain value it continues from.
    Segment,
    /// Segments removed by retention: their names and the last record they held.
    Retention,
    /// What the trail found about itself: the end of a segment cut off (the oracle
    /// stopped while writing it) and dropped, records or a head missing when it was
    /// reopened, or a time when writing failed and records waited (`action` says which).
    Recovered,
    /// An authentication attempt (SMTP AUTH, IMAP, POP3, ...), or a login refused before
    /// the password was checked (`verdict` without `result`).
    Auth,
    /// A message submitted by an authenticated account.
    Sent,
    /// An IMAP / POP3 session ended, with its counters.
    Logout,
    /// Something done to a mailbox or a message in it (Dovecot `mail_log`).
    Mailbox,
    /// An administrator acted: Exim message actions (`frozen by`, `removed by`), a
    /// Dovecot master-user login into someone's mailbox.
    Admin,
    /// A rule fired: its response and until when.
    Alert,
    /// An administrator ended an account's hold (`ctl release`).
    Release,
    /// An administrator lifted an address's block (`ctl unblock`).
    Unblock,
    /// An external action (firewall, fail2ban, CrowdSec) applied a block or an unblock,
    /// or gave up on it: `action` the step, `result` ok or fail, `reason` the action,
    /// the network and the error.
    Action,
}

impl Kind {
    /// The kind as written.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Segment => "segment",
            Kind::Retention => "retention",
            Kind::Recovered => "recovered",
            Kind::Auth => "auth",
            Kind::Sent => "sent",
            Kind::Logout => "logout",
            Kind::Mailbox => "mailbox",
            Kind::Admin => "admin",
            Kind::Alert => "alert",
            Kind::Release => "release",
            Kind::Unblock => "unblock",
            Kind::Action => "action",
        }
    }

    /// Whether the trail writes this kind itself (segment bookkeeping).
    pub fn is_bookkeeping(self) -> bool {
        matches!(self, Kind::Segment | Kind::Retention | Kind::Recovered)
    }
}

/// Where a record's event was learnt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// Exim or Dovecot asked the oracle.
    Live,
    /// A log file the oracle follows.
    Log,
    /// `access-oracle ingest` (history backfilled with its own times).
    Ingest,
    /// The oracle itself (rules, the trail's bookkeeping).
    Oracle,
    /// An administrator through the admin socket.
    Admin,
}

/// One audit record. Fields a kind does not use are absent from its line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Position in the trail, from 1, with no gaps.
    #[serde(default)]
    pub seq: u64,
    /// When it happened (a log line's own time for log events).
    pub time: Timestamp,
    /// When it was written to the trail.
    #[serde(default = "Timestamp::default")]
    pub logged: Timestamp,
    /// What it is about.
    pub kind: Kind,
    /// Where it was learnt.
    pub source: Source,
    /// The account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<CompactString>,
    /// The client's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<IpAddr>,
    /// The service (`smtp`, `imap`, `pop3`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<CompactString>,
    /// For `auth`: whether the credentials were accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Outcome>,
    /// For live requests: what the oracle answered (`accept`, `defer`, `deny`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<CompactString>,
    /// The text of a refusal, a hold, an alert's summary, a log line's reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Dovecot's session id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<CompactString>,
    /// For `auth`: the SASL mechanism (`PLAIN`, `LOGIN`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mech: Option<CompactString>,
    /// For `auth`: Exim's authenticator (its driver instance's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authenticator: Option<CompactString>,
    /// For `auth`: the client's source port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// For `auth`: the server port the client connected to (25, 587, 993, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_port: Option<u16>,
    /// For `auth`: whether the connection was encrypted (TLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<bool>,
    /// For `auth`: the TLS cipher suite, when named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_cipher: Option<CompactString>,
    /// For `auth`: the client's name (SMTP HELO / EHLO, Dovecot's client id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<CompactString>,
    /// Exim's message id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msgid: Option<CompactString>,
    /// The message's `Message-ID` header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<CompactString>,
    /// Recipients of a sent message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rcpts: Option<u64>,
    /// Bytes from the client in a session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_in: Option<u64>,
    /// Bytes to the client in a session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_out: Option<u64>,
    /// Messages fetched in a session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fetched: Option<u64>,
    /// Messages deleted or expunged in a session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted: Option<u64>,
    /// The mailbox acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mailbox: Option<CompactString>,
    /// The source mailbox of a copy or rename.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_mailbox: Option<CompactString>,
    /// The message's IMAP UID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// What was done (`expunge`, `frozen`, `master_login`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<CompactString>,
    /// Who acted with privileges: Exim's `by NAME`, Dovecot's master user, the admin
    /// socket's peer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<CompactString>,
    /// For `alert`: the rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<CompactString>,
    /// For `alert`: its severity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<Severity>,
    /// For `alert`: the response applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<Response>,
    /// When a response, hold or block ends (or ended, for `release`); for a `recovered`
    /// `write_gap`, when writing worked again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<Timestamp>,
    /// For `alert`: the `ctl` command that undoes what was done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undo: Option<String>,
    /// The log file of a log event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// The line's offset in that file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// For `segment`: the chain value this segment continues from (hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev_chain: Option<String>,
    /// For `segment`: the file it continues; for `retention`: the last file removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev_file: Option<String>,
    /// For `retention`: the files removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<String>,
    /// For `retention`: the last record removed (its `seq`); for `recovered`, the
    /// number of bytes dropped (`partial_line`), the last record missing
    /// (`records_missing`) or the number of records that waited (`write_gap`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub through: Option<u64>,
    /// For `retention`: the chain value of that last record (hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub through_chain: Option<String>,
}

impl Record {
    /// A record of `kind` at `time` from `source`, every other field empty.
    pub fn new(kind: Kind, source: Source, time: Timestamp) -> Record {
        Record {
            seq: 0,
            time,
            logged: time,
            kind,
            source,
            user: None,
            ip: None,
            protocol: None,
            result: None,
            verdict: None,
            reason: None,
            session: None,
            mech: None,
            authenticator: None,
            port: None,
            local_port: None,
            tls: None,
            tls_cipher: None,
            client: None,
            msgid: None,
            message_id: None,
            rcpts: None,
            bytes_in: None,
            bytes_out: None,
            fetched: None,
            deleted: None,
            mailbox: None,
            from_mailbox: None,
            uid: None,
            action: None,
            admin: None,
            rule: None,
            severity: None,
            response: None,
            until: None,
            undo: None,
            file: None,
            offset: None,
            prev_chain: None,
            prev_file: None,
            removed: Vec::new(),
            through: None,
            through_chain: None,
        }
    }

    /// Sets the account.
    pub fn user(mut self, user: &str) -> Record {
        self.user = Some(user.into());
        self
    }

    /// Sets the address.
    pub fn ip(mut self, ip: Option<IpAddr>) -> Record {
        self.ip = ip;
        self
    }

    /// Sets how a login attempt was made: mechanism, authenticator, ports, TLS, client.
    pub fn set_login_detail(&mut self, d: &crate::track::timeline::LoginDetail) {
        let text = |t: &Option<std::sync::Arc<str>>| t.as_deref().map(CompactString::from);
        self.mech = text(&d.mech);
        self.authenticator = text(&d.authenticator);
        self.port = d.port;
        self.local_port = d.local_port;
        self.tls = d.tls;
        self.tls_cipher = text(&d.cipher);
        self.client = text(&d.client);
    }

    /// Sets the protocol (unless unknown).
    pub fn protocol(mut self, protocol: Option<&str>) -> Record {
        self.protocol = protocol.map(Into::into);
        self
    }
}

/// What sits between a record's fields and its chain value on a line.
const CHAIN_FIELD: &str = ",\"chain\":\"";

/// Appends the line of `record` (with `seq` and `logged` already set) chained after
/// `prev` to `buf`, without the newline, encrypted with `crypt` if given; returns the
/// record's chain value.
pub fn seal_into(
    buf: &mut Vec<u8>,
    record: &Record,
    prev: &Chain,
    key: &[u8],
    crypt: Option<&Crypt>,
) -> Chain {
    let start = buf.len();
    match crypt {
        Some(c) => c.seal_into(buf, record),
        None => serde_json::to_writer(&mut *buf, record)
            .expect("a record always serializes (no maps, no floats)"),
    }
    let chain = mac(key, prev, &buf[start..]);
    buf.pop(); // the closing brace
    buf.extend_from_slice(CHAIN_FIELD.as_bytes());
    let mut hex = [0u8; 64];
    hex::encode_to_slice(chain, &mut hex).expect("64 digits for 32 bytes");
    buf.extend_from_slice(&hex);
    buf.extend_from_slice(b"\"}");
    chain
}

/// The line of `record` chained after `prev`, without the newline, and its chain value.
pub fn seal(record: &Record, prev: &Chain, key: &[u8]) -> (String, Chain) {
    let mut buf = Vec::with_capacity(512);
    let chain = seal_into(&mut buf, record, prev, key, None);
    (
        String::from_utf8(buf).expect("serde_json writes UTF-8"),
        chain,
    )
}

/// A line taken apart: the sealed content (what the MAC covers) and the chain value.
#[derive(Debug)]
pub struct Unsealed {
    /// The record's JSON without its `chain` field.
    pub content: String,
    /// The chain value the line claims.
    pub chain: Chain,
}

/// A line's sealed content and chain, and its record, decrypted with `crypt` when the
/// line is encrypted; or why it is not a record (an encrypted one without `crypt`
/// included).
pub fn read_line(line: &str, crypt: Option<&Crypt>) -> Result<(Unsealed, Record), String> {
    let unsealed = unseal(line)?;
    let record = match super::crypt::encrypted(&unsealed.content) {
        Some(sealed) => {
            let sealed = sealed?;
            let crypt = crypt.ok_or_else(|| {
                format!(
                    "record {} is encrypted: reading it takes the trail's key",
                    sealed.seq
                )
            })?;
            crypt.open(&sealed)?
        }
        None => {
            serde_json::from_str(&unsealed.content).map_err(|e| format!("not a record: {e}"))?
        }
    };
    Ok((unsealed, record))
}

/// Takes a line apart, or says why it is not a sealed record.
pub fn unseal(line: &str) -> Result<Unsealed, String> {
    let Some(at) = line.rfind(CHAIN_FIELD) else {
        return Err("no chain field: not a sealed record".into());
    };
    // A `"` inside a JSON string is escaped, so the last unescaped `,"chain":"` is ours.
    let hex_part = line[at + CHAIN_FIELD.len()..]
        .strip_suffix("\"}")
        .ok_or("the chain field is not the record's last field")?;
    let mut chain = [0u8; 32];
    hex::decode_to_slice(hex_part, &mut chain)
        .map_err(|e| format!("the chain value is not 64 hex digits: {e}"))?;
    let mut content = String::with_capacity(at + 1);
    content.push_str(&line[..at]);
    content.push('}');
    Ok(Unsealed { content, chain })
}

/// The HMAC-SHA256 under `key` of `parts`, one after the other.
fn hmac(key: &[u8], parts: &[&[u8]]) -> Hmac<Sha256> {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    for part in parts {
        m.update(part);
    }
    m
}

/// The chain value of `content` after `prev`.
pub fn mac(key: &[u8], prev: &Chain, content: &[u8]) -> Chain {
    hmac(key, &[prev, content]).finalize().into_bytes().into()
}

/// Whether `content` after `prev` has the chain value `claimed` (compared in constant
/// time).
pub fn check(key: &[u8], prev: &Chain, content: &[u8], claimed: &Chain) -> bool {
    hmac(key, &[prev, content]).verify_slice(claimed).is_ok()
}

/// The MAC of the trail's head (its last record's sequence number and chain value),
/// kept in `<dir>/head.json` so that records cut from the end are noticed.
pub fn head_mac(key: &[u8], seq: u64, chain: &Chain) -> Chain {
    hmac(key, &[b"exim-access audit head", &seq.to_le_bytes(), chain])
        .finalize()
        .into_bytes()
        .into()
}

/// Whether `claimed` is the head MAC of `seq` and `chain` (compared in constant time).
pub fn check_head(key: &[u8], seq: u64, chain: &Chain, claimed: &Chain) -> bool {
    hmac(key, &[b"exim-access audit head", &seq.to_le_bytes(), chain])
        .verify_slice(claimed)
        .is_ok()
}

/// A chain value as text.
pub fn chain_hex(chain: &Chain) -> String {
    hex::encode(chain)
}

/// A chain value from text.
pub fn parse_chain(text: &str) -> Option<Chain> {
    let mut chain = [0u8; 32];
    hex::decode_to_slice(text, &mut chain).ok()?;
    Some(chain)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn sample() -> Record {
        let mut r = Record::new(
            Kind::Auth,
            Source::Live,
            "2026-11-28T10:00:00Z".parse().unwrap(),
        )
        .user("alice@example.org")
        .ip(Some("192.0.2.7".parse().unwrap()))
        .protocol(Some("imap"));
        r.seq = 7;
        r.result = Some(Outcome::Fail);
        r.reason = Some(r#"tricky ,"chain":"00"} text"#.into());
        r
    }

    #[test]
    fn a_sealed_line_unseals_to_its_content_and_checks() {
        let prev = [9u8; 32];
        let (line, chain) = seal(&sample(), &prev, KEY);
        assert!(line.ends_with("\"}"), "{line}");
        let u = unseal(&line).unwrap();
        assert_eq!(u.chain, chain);
        assert!(check(KEY, &prev, u.content.as_bytes(), &u.chain));
        let back: Record = serde_json::from_str(&u.content).unwrap();
        assert_eq!(back, sample());
        // The record reads back with its chain field present too.
        let with_chain: Record = serde_json::from_str(&line).unwrap();
        assert_eq!(with_chain, sample());
    }

    #[test]
    fn any_change_breaks_the_chain() {
        let prev = [1u8; 32];
        let (line, _) = seal(&sample(), &prev, KEY);
        let edited = line.replace("alice", "alicf");
        let u = unseal(&edited).unwrap();
        assert!(!check(KEY, &prev, u.content.as_bytes(), &u.chain));
        // Same line after another predecessor.
        let u = unseal(&line).unwrap();
        assert!(!check(KEY, &[2u8; 32], u.content.as_bytes(), &u.chain));
        // Another key.
        assert!(!check(
            b"another key, same length, 32 byt",
            &prev,
            u.content.as_bytes(),
            &u.chain
        ));
    }

    /// A record written before the login details existed reads and checks as it was
    /// sealed; one with them reads back whole.
    #[test]
    fn records_with_and_without_login_details_read_back() {
        let prev = [3u8; 32];
        let (old_line, _) = seal(&sample(), &prev, KEY);
        assert!(!old_line.contains("mech"), "{old_line}");
        let u = unseal(&old_line).unwrap();
        assert!(check(KEY, &prev, u.content.as_bytes(), &u.chain));
        let mut r = sample();
        r.set_login_detail(&crate::track::timeline::LoginDetail {
            mech: Some("PLAIN".into()),
            authenticator: Some("access_plain".into()),
            port: Some(40123),
            local_port: Some(587),
            tls: Some(true),
            cipher: Some("TLS1.3:TLS_AES_256_GCM_SHA384:256".into()),
            client: Some("laptop.example".into()),
        });
        let (line, _) = seal(&r, &prev, KEY);
        assert!(
            line.contains(r#""mech":"PLAIN","authenticator":"access_plain","port":40123,"local_port":587,"tls":true"#),
            "{line}"
        );
        let (_, back) = read_line(&line, None).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn lines_that_are_not_sealed_records_say_why() {
        assert!(unseal("{}").unwrap_err().contains("no chain field"));
        assert!(
            unseal(r#"{"a":1,"chain":"00"}"#)
                .unwrap_err()
                .contains("64 hex digits")
        );
        assert!(
            unseal(r#"{"a":1,"chain":"00","b":2}"#)
                .unwrap_err()
                .contains("last field")
        );
    }
}
