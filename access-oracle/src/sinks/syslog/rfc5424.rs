//! RFC 5424 messages: the bytes a syslog sink sends, built from an alert or an audit
//! record. Pure: no I/O, the time and the host's names are passed in, so the tests pin
//! the exact bytes.
//!
//! ```text
//! <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [SD-ID NAME="VALUE" ...] MSG
//! <155>1 2027-01-15T08:00:00Z mx1.example.org exim-access 4242 failed_logins_account [alert@32473 rule="failed_logins_account" severity="high" account="alice" ...] account alice held ...
//! ```
//!
//! * PRI is `facility × 8 + severity`; an alert's severity maps to syslog's as
//!   `critical` → 2 (crit), `high` → 3 (err), `medium` → 4 (warning), `low` → 5
//!   (notice), `info` → 6 (info).
//! * TIMESTAMP is the alert's (or the record's) time in UTC, RFC 3339 with at most six
//!   fractional digits (§6.2.3).
//! * HOSTNAME, APP-NAME, PROCID and MSGID hold printable US-ASCII only (§6.2): any other
//!   character becomes `_`, each is cut to its length limit (255, 48, 128, 32) and an
//!   empty one is the nil value `-`.
//! * STRUCTURED-DATA is one element whose SD-ID is `alert@32473` or `audit@32473`.
//!   32473 is the private enterprise number RFC 5612 reserves for documentation
//!   examples: exim-access has no number of its own, and a receiver matches the SD-ID
//!   as a whole. A PARAM-VALUE has its control characters written as visible escapes
//!   (as everywhere an outsider's text reaches a person: [`crate::text::escape_controls`]),
//!   is cut to 255 bytes, and then has `"`, `\` and `]` escaped with a backslash
//!   (§6.3.3).
//! * MSG is UTF-8 **without** a byte order mark (§6.4 allows it): a BOM in front of a
//!   JSON MSG (`format = "json"`, `"ecs"`, the audit stream) would stop receivers that
//!   parse it as JSON (rsyslog's `mmjsonparse`, Vector's `parse_json`), and every
//!   receiver in use reads UTF-8 without being told. A text MSG ([`text_msg`]) has its
//!   control characters escaped as in a PARAM-VALUE; a JSON MSG ([`json_msg`]) has the
//!   ones JSON leaves as they are (DEL, C1 and bidirectional controls) written as
//!   `\uXXXX`, which reads back as the same JSON. Either way one message is one line
//!   and nothing in it acts on a terminal.

use std::borrow::Cow;
use std::fmt::Write as _;

use jiff::Timestamp;
use serde::Deserialize;

use crate::text::{escape_controls, needs_escape};

/// The syslog facility of the sink's messages (RFC 5424 §6.2.1), by its usual name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Facility {
    /// 0: kernel messages.
    Kern,
    /// 1: user-level messages.
    User,
    /// 2: the mail system.
    Mail,
    /// 3: system daemons.
    Daemon,
    /// 4: security and authorization (the default).
    #[default]
    Auth,
    /// 5: the syslog daemon's own.
    Syslog,
    /// 6: the line printer.
    Lpr,
    /// 7: network news.
    News,
    /// 8: UUCP.
    Uucp,
    /// 9: clock daemons.
    Cron,
    /// 10: private security and authorization.
    Authpriv,
    /// 11: FTP.
    Ftp,
    /// 16: local use 0.
    Local0,
    /// 17: local use 1.
    Local1,
    /// 18: local use 2.
    Local2,
    /// 19: local use 3.
    Local3,
    /// 20: local use 4.
    Local4,
    /// 21: local use 5.
    Local5,
    /// 22: local use 6.
    Local6,
    /// 23: local use 7.
    Local7,
}

impl Facility {
    /// The facility's number.
    pub fn code(self) -> u8 {
        match self {
            Facility::Kern => 0,
            Facility::User => 1,
            Facility::Mail => 2,
            Facility::Daemon => 3,
            Facility::Auth => 4,
            Facility::Syslog => 5,
            Facility::Lpr => 6,
            Facility::News => 7,
            Facility::Uucp => 8,
            Facility::Cron => 9,
            Facility::Authpriv => 10,
            Facility::Ftp => 11,
            Facility::Local0 => 16,
            Facility::Local1 => 17,
            Facility::Local2 => 18,
            Facility::Local3 => 19,
            Facility::Local4 => 20,
            Facility::Local5 => 21,
            Facility::Local6 => 22,
            Facility::Local7 => 23,
        }
    }
}

/// Syslog severities (RFC 5424 §6.2.1) the sink uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Level {
    /// 2: critical conditions.
    Crit = 2,
    /// 3: error conditions.
    Err = 3,
    /// 4: warning conditions.
    Warning = 4,
    /// 5: normal but significant.
    Notice = 5,
    /// 6: informational.
    Info = 6,
}

impl From<crate::rules::Severity> for Level {
    fn from(s: crate::rules::Severity) -> Level {
        use crate::rules::Severity;
        match s {
            Severity::Critical => Level::Crit,
            Severity::High => Level::Err,
            Severity::Medium => Level::Warning,
            Severity::Low => Level::Notice,
            Severity::Info => Level::Info,
        }
    }
}

/// The longest HOSTNAME (§6.2.4).
pub const MAX_HOSTNAME: usize = 255;
/// The longest APP-NAME (§6.2.5).
pub const MAX_APP_NAME: usize = 48;
/// The longest MSGID (§6.2.7).
pub const MAX_MSGID: usize = 32;
/// The longest PARAM-VALUE, in bytes before escaping (RFC 5424 sets none; a bound keeps
/// one long account name from crowding out the rest).
pub const MAX_VALUE: usize = 255;
/// The longest PARAM-VALUE when a datagram does not hold the message otherwise.
const MAX_VALUE_SHORT: usize = 32;

/// Whether `s` is 1 to `max` printable US-ASCII characters (no space), as a header
/// field must be.
pub fn is_header_field(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && s.bytes().all(|b| (33..=126).contains(&b))
}

/// `s` as a header field: other characters become `_`, cut to `max`, `-` when empty.
pub fn header_field(s: &str, max: usize) -> String {
    let out: String = s
        .chars()
        .map(|c| if ('!'..='~').contains(&c) { c } else { '_' })
        .take(max)
        .collect();
    if out.is_empty() { "-".into() } else { out }
}

/// A time as RFC 5424 writes it: UTC, `T` and `Z`, at most six fractional digits.
pub fn timestamp(t: Timestamp) -> String {
    let micros = t.subsec_microsecond();
    let whole = Timestamp::from_second(t.as_second())
        .unwrap_or(t)
        .to_string();
    if micros <= 0 {
        return whole;
    }
    let base = whole.strip_suffix('Z').unwrap_or(&whole);
    format!("{base}.{micros:06}Z")
}

/// A text MSG: control characters written as visible escapes
/// ([`crate::text::escape_controls`]).
pub fn text_msg(text: &str) -> Cow<'_, str> {
    escape_controls(text)
}

/// A JSON MSG: `json` (serde_json's output, which escapes C0 controls itself) with every
/// other character a terminal would act on (DEL, C1 controls, bidirectional controls)
/// written as a JSON `\uXXXX` escape. They can only stand inside JSON strings, where
/// the escape means the same character.
pub fn json_msg(json: &str) -> Cow<'_, str> {
    let flagged = |c: char| c != '\\' && needs_escape(c);
    if !json.contains(flagged) {
        return Cow::Borrowed(json);
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        if flagged(c) {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                let _ = write!(out, "\\u{u:04x}");
            }
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// One SD-ELEMENT: `[ID NAME="VALUE" ...]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    id: &'static str,
    params: Vec<(&'static str, String)>,
}

impl Element {
    /// An element with no parameters yet. `id` and every parameter name are written as
    /// given: they are the code's own SD-NAMEs (printable ASCII, no `=`, space, `]` or
    /// `"`, at most 32 characters).
    pub fn new(id: &'static str) -> Element {
        Element {
            id,
            params: Vec::new(),
        }
    }

    /// Adds `name="value"`; the value as it is (escaped when written).
    pub fn param(&mut self, name: &'static str, value: impl Into<String>) -> &mut Element {
        self.params.push((name, value.into()));
        self
    }

    /// Adds `name="value"` when there is a value.
    pub fn opt<T: ToString>(&mut self, name: &'static str, value: Option<T>) -> &mut Element {
        if let Some(v) = value {
            self.param(name, v.to_string());
        }
        self
    }

    /// Writes the element, each value cut to `max_value` bytes.
    fn write(&self, out: &mut String, max_value: usize) {
        out.push('[');
        out.push_str(self.id);
        for (name, value) in &self.params {
            let _ = write!(out, " {name}=\"");
            let shown = escape_controls(value);
            for c in cut(&shown, max_value).chars() {
                if matches!(c, '"' | '\\' | ']') {
                    out.push('\\');
                }
                out.push(c);
            }
            out.push('"');
        }
        out.push(']');
    }
}

/// `s` cut to at most `max` bytes at a character boundary.
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

/// One message, its header fields as the sink configured them.
#[derive(Debug, Clone)]
pub struct Message<'a> {
    /// The facility.
    pub facility: Facility,
    /// The severity.
    pub level: Level,
    /// When the event happened.
    pub time: Timestamp,
    /// HOSTNAME: the mail server's name.
    pub hostname: &'a str,
    /// APP-NAME.
    pub app_name: &'a str,
    /// PROCID: the oracle's process id.
    pub procid: u32,
    /// MSGID: the rule, or the record's kind.
    pub msgid: &'a str,
    /// STRUCTURED-DATA.
    pub data: Element,
    /// MSG, made safe by [`text_msg`] or [`json_msg`] (written as it is).
    pub msg: &'a str,
}

impl Message<'_> {
    /// The message's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.head(MAX_VALUE);
        out.push(' ');
        out.push_str(self.msg);
        out.into_bytes()
    }

    /// The message's bytes in at most `max` (a datagram): MSG is cut first, then, if
    /// the header and the structured data alone are too long, every PARAM-VALUE is cut
    /// to 32 bytes. The flag says whether anything was cut.
    pub fn to_bytes_within(&self, max: usize) -> (Vec<u8>, bool) {
        let whole = self.to_bytes();
        if whole.len() <= max {
            return (whole, false);
        }
        let mut head = self.head(MAX_VALUE);
        if head.len() + 1 > max {
            head = self.head(MAX_VALUE_SHORT);
        }
        let room = max.saturating_sub(head.len() + 1);
        head.push(' ');
        head.push_str(cut(self.msg, room));
        let mut bytes = head.into_bytes();
        // The header itself is bounded far below a datagram; this only guards the limit.
        bytes.truncate(max);
        (bytes, true)
    }

    /// Everything before MSG's separating space.
    fn head(&self, max_value: usize) -> String {
        let mut out = String::with_capacity(256);
        let pri = u16::from(self.facility.code()) * 8 + self.level as u16;
        let _ = write!(
            out,
            "<{pri}>1 {} {} {} {} {} ",
            timestamp(self.time),
            header_field(self.hostname, MAX_HOSTNAME),
            header_field(self.app_name, MAX_APP_NAME),
            self.procid,
            header_field(self.msgid, MAX_MSGID),
        );
        self.data.write(&mut out, max_value);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(data: Element, msg: &str) -> Message<'_> {
        Message {
            facility: Facility::Auth,
            level: Level::Err,
            time: Timestamp::from_second(1_800_000_000).unwrap(),
            hostname: "mx1.example.org",
            app_name: "exim-access",
            procid: 4242,
            msgid: "failed_logins_account",
            data,
            msg,
        }
    }

    #[test]
    fn a_message_is_written_exactly() {
        let mut sd = Element::new("alert@32473");
        sd.param("rule", "failed_logins_account")
            .param("account", "alice");
        let m = message(sd, "account alice held");
        assert_eq!(
            String::from_utf8(m.to_bytes()).unwrap(),
            "<35>1 2027-01-15T08:00:00Z mx1.example.org exim-access 4242 failed_logins_account \
             [alert@32473 rule=\"failed_logins_account\" account=\"alice\"] account alice held"
        );
    }

    #[test]
    fn param_values_escape_quote_backslash_bracket_and_controls() {
        let mut sd = Element::new("alert@32473");
        sd.param("account", "a\"b\\c]d\x1be\nf");
        let m = message(sd, "x");
        let text = String::from_utf8(m.to_bytes()).unwrap();
        // The control characters first become visible escapes (`\x1b`, whose backslash
        // is then escaped as any other), then `"`, `\` and `]` get a backslash.
        assert!(
            text.ends_with(r#"[alert@32473 account="a\"b\\\\c\]d\\x1be\\x0af"] x"#),
            "{text}"
        );
    }

    #[test]
    fn msg_has_no_control_characters_and_no_bom() {
        let msg = text_msg("evil\r\nline\x07 Zoë");
        let m = message(Element::new("alert@32473"), &msg);
        let bytes = m.to_bytes();
        assert!(!bytes.starts_with(b"\xef\xbb\xbf"));
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.ends_with("] evil\\x0d\\x0aline\\x07 Zoë"), "{text}");
    }

    #[test]
    fn a_json_msg_stays_the_same_json_without_terminal_controls() {
        let value = serde_json::json!({ "account": "a\"b\\c\n\u{7f}\u{9b}\u{202e}é🙂" });
        let json = serde_json::to_string(&value).unwrap();
        let msg = json_msg(&json);
        assert_eq!(msg, r#"{"account":"a\"b\\c\n\u007f\u009b\u202eé🙂"}"#);
        assert!(!msg.contains(|c: char| c != '\\' && needs_escape(c)));
        let back: serde_json::Value = serde_json::from_str(&msg).unwrap();
        assert_eq!(back, value);
        assert!(matches!(
            json_msg("{\"a\":\"plain\\\\\"}"),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn header_fields_are_printable_ascii_within_their_limits() {
        assert_eq!(header_field("mx 1\u{e9}", 255), "mx_1_");
        assert_eq!(header_field("", 48), "-");
        assert_eq!(header_field(&"r".repeat(40), MAX_MSGID).len(), 32);
        assert!(is_header_field("exim-access", MAX_APP_NAME));
        assert!(!is_header_field("exim access", MAX_APP_NAME));
        assert!(!is_header_field(&"a".repeat(49), MAX_APP_NAME));
        assert!(!is_header_field("", MAX_APP_NAME));
    }

    #[test]
    fn pri_is_facility_times_eight_plus_severity() {
        for (facility, level, pri) in [
            (Facility::Auth, Level::Crit, "<34>"),
            (Facility::Authpriv, Level::Info, "<86>"),
            (Facility::Local7, Level::Notice, "<189>"),
            (Facility::Kern, Level::Warning, "<4>"),
            (Facility::Mail, Level::Err, "<19>"),
        ] {
            let m = Message {
                facility,
                level,
                ..message(Element::new("a@32473"), "")
            };
            assert!(m.to_bytes().starts_with(pri.as_bytes()), "{pri}");
        }
        assert_eq!(Level::from(crate::rules::Severity::High), Level::Err);
        assert_eq!(Level::from(crate::rules::Severity::Low), Level::Notice);
    }

    #[test]
    fn timestamps_have_at_most_six_fractional_digits() {
        let t = Timestamp::new(1_800_000_000, 123_456_789).unwrap();
        assert_eq!(timestamp(t), "2027-01-15T08:00:00.123456Z");
        let t = Timestamp::new(1_800_000_000, 500).unwrap();
        assert_eq!(timestamp(t), "2027-01-15T08:00:00Z");
        let t = Timestamp::new(1_800_000_000, 7_000).unwrap();
        assert_eq!(timestamp(t), "2027-01-15T08:00:00.000007Z");
    }

    #[test]
    fn a_datagram_cuts_msg_then_values() {
        let mut sd = Element::new("alert@32473");
        sd.param("account", "alice");
        let long = "é".repeat(2000);
        let m = message(sd, &long);
        let (bytes, cut) = m.to_bytes_within(2048);
        assert!(cut);
        assert!(bytes.len() <= 2048 && bytes.len() > 2040, "{}", bytes.len());
        let text = String::from_utf8(bytes).expect("cut at a character boundary");
        assert!(
            text.contains("[alert@32473 account=\"alice\"] éé"),
            "{text}"
        );

        let mut sd = Element::new("alert@32473");
        for name in ["a", "b", "c", "d", "e", "f", "g", "h", "i"] {
            sd.param(name, "]".repeat(255));
        }
        let m = message(sd, "the headline");
        let (bytes, cut) = m.to_bytes_within(2048);
        assert!(cut && bytes.len() <= 2048);
        let text = String::from_utf8(bytes).unwrap();
        assert!(
            text.contains(&format!("a=\"{}\"", "\\]".repeat(32))),
            "{text}"
        );
        assert!(text.ends_with("] the headline"), "{text}");

        let short = message(Element::new("alert@32473"), "fits");
        assert_eq!(short.to_bytes_within(2048), (short.to_bytes(), false));
    }
}
