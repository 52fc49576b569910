//! The alert record: what fired, against whom, what was done, in one line for a human.
//! Serialized as one JSON object per line by the file sink and the admin socket.

use std::net::IpAddr;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::rules::{Response, Severity, Trip};

/// One alert.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    /// When the rule fired.
    pub time: Timestamp,
    /// The rule's name, as in `[rules.NAME]`.
    pub rule: &'static str,
    /// Its severity.
    pub severity: Severity,
    /// The account concerned, if any.
    pub account: Option<String>,
    /// The source address of the event that tripped the rule.
    pub ip: Option<IpAddr>,
    /// Its reverse DNS name, when `[rdns]` is on and the name was already known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rdns: Option<String>,
    /// The protocol of that event (`smtp`, `imap`, ...).
    pub protocol: Option<String>,
    /// What was counted in the window.
    pub count: u64,
    /// The same, named: `{"failed_logins": 5, "threshold": 5, "window_secs": 300}`.
    pub counts: serde_json::Value,
    /// The rule's threshold.
    pub threshold: u64,
    /// The rule's window, in seconds.
    pub window_secs: u64,
    /// The response applied.
    pub response: Response,
    /// When the response ends by itself.
    pub expires: Timestamp,
    /// One line for a human.
    pub summary: String,
    /// Set by a sink that grouped alerts of this rule for this account or address
    /// (`group_secs`): how many, over what span. This alert is the latest of them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<Group>,
    /// What a person needs to act on the alert alone: the account's recent logins and
    /// sending, what is in force, the `ctl` command that undoes what was done.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context: Option<Box<Context>>,
    /// The rule only observes (its `mode`, or `[responses] mode = "observe"`): nothing
    /// was done; the context's action says what would have been.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub observed: bool,
}

/// Alerts of one rule for one account or address, delivered as one notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Group {
    /// How many alerts, the first (already delivered alone) included.
    pub count: u64,
    /// The first one's time.
    pub first: Timestamp,
    /// The last one's time.
    pub last: Timestamp,
}

/// The context of an alert, gathered when it is raised: what a person needs to act on
/// the notification alone.
///
/// The sending and login figures come from the account's timeline, which keeps its
/// newest [`TIMELINE_LEN`](crate::track::timeline::TIMELINE_LEN) entries (logins,
/// messages, deliveries): for a busy account they are lower bounds, and
/// `counted_since` says from when they are complete.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Context {
    /// The account's recent login attempts (successful or not), newest first, at most
    /// [`RECENT_LOGINS`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent_logins: Vec<LoginSeen>,
    /// Messages the account sent in the last hour (at least).
    pub messages_1h: u64,
    /// Their recipients; for the last hour also the recipients the recipient rules
    /// counted at RCPT time, whichever is more.
    pub recipients_1h: u64,
    /// Messages the account sent in the last 24 hours (at least).
    pub messages_24h: u64,
    /// Their recipients (at least).
    pub recipients_24h: u64,
    /// Distinct source addresses of the account's login attempts in the last 24 hours.
    pub addresses_24h: u64,
    /// The countries (ISO codes) those addresses are in, as the GeoIP database says.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub countries_24h: Vec<String>,
    /// Set when the account's timeline was full: the time of its oldest entry. What
    /// happened before is not in the figures above.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counted_since: Option<Timestamp>,
    /// Holds, blocks and throttles in force on the account and the address now.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub in_force: Vec<InForce>,
    /// What the oracle did, in words (`account alice held until ...`), if anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// The exact command that undoes it (`access-oracle ctl release alice`), when a
    /// `ctl` command can.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undo: Option<String>,
}

/// How many recent logins an alert's context lists.
pub const RECENT_LOGINS: usize = 10;

/// One login attempt as the context shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoginSeen {
    /// When.
    pub time: Timestamp,
    /// `smtp`, `imap`, `pop3`, ...
    pub protocol: String,
    /// From where.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<IpAddr>,
    /// The address's reverse name, when the resolver's cache has it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rdns: Option<String>,
    /// Its country (ISO code).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    /// Its autonomous system number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asn: Option<u32>,
    /// The AS's organisation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_org: Option<String>,
    /// The client's name: the SMTP HELO / EHLO name, Dovecot's client id (IMAP `ID`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// The SASL mechanism (`PLAIN`, `LOGIN`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mechanism: Option<String>,
    /// Exim's authenticator (its driver instance name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authenticator: Option<String>,
    /// The client's own (source) port, as Exim's `$sender_host_port`, Dovecot's `rport`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// The server port the client connected to (25, 465, 587, 993, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_port: Option<u16>,
    /// Whether the session was encrypted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<bool>,
    /// The TLS cipher suite, when the source named it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_cipher: Option<String>,
    /// `ok` or `fail`.
    pub outcome: crate::protocol::Outcome,
}

/// What is in force: an account's hold or throttle, an address's block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InForceKind {
    /// The account's requests get temporary failures.
    Hold,
    /// The account's requests are refused.
    Deny,
    /// The account's further recipients are deferred (a throttle).
    Throttle,
    /// The account reached the recipient ceiling: recipients are deferred until the
    /// window lets them in again.
    Ceiling,
    /// Connections and authentication from the address are refused.
    Block,
    /// Authentication from the address is deferred.
    Defer,
}

impl InForceKind {
    /// The word in JSON and text.
    pub fn as_str(self) -> &'static str {
        match self {
            InForceKind::Hold => "hold",
            InForceKind::Deny => "deny",
            InForceKind::Throttle => "throttle",
            InForceKind::Ceiling => "ceiling",
            InForceKind::Block => "block",
            InForceKind::Defer => "defer",
        }
    }
}

/// A hold, block or throttle in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InForce {
    /// `hold`, `deny`, `throttle`, `ceiling`, `block` or `defer`.
    pub what: InForceKind,
    /// The account or address it applies to.
    pub on: String,
    /// The rule that put it in place (or `admin`).
    pub rule: String,
    /// When it ends by itself.
    pub until: Timestamp,
    /// The `ctl` command that ends it now.
    pub undo: String,
}

/// `word` as one shell word that a POSIX shell reads back as exactly `word` and that
/// runs nothing when pasted: as it is when it has only `A-Z a-z 0-9 @ . _ + - / :`
/// (and is not empty), else in single quotes, a `'` in it written `'"'"'`. A word with a
/// character a terminal would act on (a control character, a bidirectional control:
/// [`crate::text::needs_escape`], a backslash aside) is written in the `$'...'` quoting
/// of bash, zsh and ksh instead, each such character as `\xHH` or `\uHHHH`, so the
/// command shows as plain text and still names the account exactly.
pub fn shell_word(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "@._+-/:".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        return word.to_string();
    }
    if word
        .chars()
        .any(|c| c != '\\' && crate::text::needs_escape(c))
    {
        use std::fmt::Write as _;
        let mut out = String::from("$'");
        for c in word.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\'' => out.push_str("\\'"),
                c if (c as u32) < 0x80 && crate::text::needs_escape(c) => {
                    let _ = write!(out, "\\x{:02x}", c as u32);
                }
                c if crate::text::needs_escape(c) => {
                    let _ = write!(out, "\\u{:04x}", c as u32);
                }
                c => out.push(c),
            }
        }
        out.push('\'');
        return out;
    }
    format!("'{}'", word.replace('\'', "'\"'\"'"))
}

/// A command line built with [`shell_word`], for a terminal: as it is (it holds no
/// character a terminal acts on, and escaping its backslashes would change the
/// command); anything else escaped as [`crate::text::escape_controls`] does.
pub fn shown_command(command: &str) -> std::borrow::Cow<'_, str> {
    if command
        .chars()
        .any(|c| c != '\\' && crate::text::needs_escape(c))
    {
        crate::text::escape_controls(command)
    } else {
        std::borrow::Cow::Borrowed(command)
    }
}

impl Alert {
    /// Builds the alert for a rule trip.
    pub fn from_trip(
        trip: &Trip,
        now: Timestamp,
        account: Option<&str>,
        ip: Option<IpAddr>,
        protocol: Option<&str>,
    ) -> Alert {
        let expires = Timestamp::from_second(trip.expires).unwrap_or(now);
        let window = human_secs(trip.window_secs);
        let until = human_secs(trip.expires.saturating_sub(now.as_second()).max(0) as u64);
        let who = account.unwrap_or("-");
        let from = ip.map(|ip| format!(" from {ip}")).unwrap_or_default();
        let summary = match (&trip.summary, trip.response) {
            (Some(s), Response::Alert | Response::Refuse) => s.clone(),
            (Some(s), Response::HoldAccount) => format!("{s}; account held for {until}"),
            (Some(s), Response::DenyAccount) => format!("{s}; account refused for {until}"),
            (Some(s), Response::BlockIp) => format!("{s}; address blocked for {until}"),
            (Some(s), Response::DeferIpAuth) => {
                format!("{s}; authentication from the address deferred for {until}")
            }
            (Some(s), Response::ThrottleRcpt) => {
                format!("{s}; further recipients deferred for {until}")
            }
            (None, Response::HoldAccount | Response::DenyAccount) => format!(
                "account {who} held for {until} after {} failed logins in {window}{from}",
                trip.count
            ),
            (None, Response::DeferIpAuth | Response::BlockIp) => format!(
                "authentication{from} deferred for {until} after {} failed logins in {window} (last account {who})",
                trip.count
            ),
            (None, Response::ThrottleRcpt | Response::Alert | Response::Refuse) => format!(
                "account {who} reached {} recipients in {window}{from}; further recipients deferred for up to {until}",
                trip.count
            ),
        };
        let counted = match trip.response {
            Response::ThrottleRcpt => "recipients",
            _ => "failed_logins",
        };
        let counts = trip.details.clone().unwrap_or_else(|| {
            serde_json::json!({
                counted: trip.count,
                "threshold": trip.threshold,
                "window_secs": trip.window_secs,
            })
        });
        Alert {
            counts,
            time: now,
            rule: trip.rule,
            severity: trip.severity,
            account: account.map(str::to_string),
            ip,
            rdns: None,
            protocol: protocol.map(str::to_string),
            count: trip.count,
            threshold: trip.threshold,
            window_secs: trip.window_secs,
            response: trip.response,
            expires,
            summary,
            group: None,
            context: None,
            observed: false,
        }
    }

    /// The one-line title of a notification: the summary, with the group's count.
    pub fn headline(&self) -> String {
        match &self.group {
            Some(g) if g.count > 1 => format!(
                "{} ({} alerts of {} in {})",
                self.summary,
                g.count,
                self.rule,
                human_secs(
                    g.last
                        .as_second()
                        .saturating_sub(g.first.as_second())
                        .max(0) as u64
                )
            ),
            _ => self.summary.clone(),
        }
    }

    /// The alert for a person, as plain text (an e-mail body, a chat message): the
    /// summary, who and where, the group, then the context. Every text from outside
    /// (account names, reverse names, client names) has its control characters escaped.
    pub fn describe(&self) -> String {
        use std::fmt::Write as _;
        let clean = crate::text::escape_controls;
        let mut out = String::new();
        let _ = writeln!(out, "{}", clean(&self.headline()));
        let _ = writeln!(out);
        let _ = writeln!(out, "Rule:      {} ({:?})", self.rule, self.severity);
        let _ = writeln!(out, "Time:      {}", self.time);
        if let Some(a) = &self.account {
            let _ = writeln!(out, "Account:   {}", clean(a));
        }
        if let Some(ip) = self.ip {
            match &self.rdns {
                Some(n) => {
                    let _ = writeln!(out, "Address:   {ip} ({})", clean(n));
                }
                None => {
                    let _ = writeln!(out, "Address:   {ip}");
                }
            }
        }
        if let Some(p) = &self.protocol {
            let _ = writeln!(out, "Protocol:  {}", clean(p));
        }
        if let Some(g) = &self.group {
            let _ = writeln!(
                out,
                "Grouped:   {} alerts from {} to {}",
                g.count, g.first, g.last
            );
        }
        let Some(c) = &self.context else {
            return out;
        };
        if let Some(action) = &c.action {
            let _ = writeln!(out, "Done:      {}", clean(action));
        }
        if let Some(undo) = &c.undo {
            let _ = writeln!(out, "Undo with: {}", shown_command(undo));
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "Sent in the last hour: {} messages, {} recipients; in 24 h: {} messages, {} recipients",
            c.messages_1h, c.recipients_1h, c.messages_24h, c.recipients_24h
        );
        let _ = writeln!(
            out,
            "Logins in 24 h from {} addresses{}",
            c.addresses_24h,
            if c.countries_24h.is_empty() {
                String::new()
            } else {
                format!(" in {}", clean(&c.countries_24h.join(", ")))
            }
        );
        if let Some(since) = c.counted_since {
            let _ = writeln!(
                out,
                "(at least: the account's timeline goes back to {since})"
            );
        }
        if !c.recent_logins.is_empty() {
            let _ = writeln!(out);
            let _ = writeln!(out, "Recent logins (newest first):");
            for l in &c.recent_logins {
                let mut line = format!(
                    "  {} {:<10} {:<4}",
                    l.time,
                    clean(&l.protocol),
                    match l.outcome {
                        crate::protocol::Outcome::Ok => "ok",
                        crate::protocol::Outcome::Fail => "FAIL",
                    }
                );
                if let Some(ip) = l.ip {
                    let _ = write!(line, " {ip}");
                }
                if let Some(n) = &l.rdns {
                    let _ = write!(line, " ({})", clean(n));
                }
                if let Some(cc) = &l.country {
                    let _ = write!(line, " {}", clean(cc));
                }
                if let Some(asn) = l.asn {
                    let _ = write!(line, " AS{asn}");
                }
                if let Some(org) = &l.as_org {
                    let _ = write!(line, " {}", clean(org));
                }
                if let Some(m) = &l.mechanism {
                    let _ = write!(line, " {}", clean(m));
                }
                if let Some(a) = &l.authenticator {
                    let _ = write!(line, " via {}", clean(a));
                }
                if let Some(port) = l.port {
                    let _ = write!(line, " client port {port}");
                }
                if let Some(port) = l.local_port {
                    let _ = write!(line, " to port {port}");
                }
                match (l.tls, &l.tls_cipher) {
                    (_, Some(cipher)) => {
                        let _ = write!(line, " TLS {}", clean(cipher));
                    }
                    (Some(true), None) => line.push_str(" TLS"),
                    (Some(false), None) => line.push_str(" plaintext"),
                    (None, None) => {}
                }
                if let Some(c) = &l.client {
                    let _ = write!(line, " client {}", clean(c));
                }
                let _ = writeln!(out, "{line}");
            }
        }
        if !c.in_force.is_empty() {
            let _ = writeln!(out);
            let _ = writeln!(out, "In force now:");
            for f in &c.in_force {
                let _ = writeln!(
                    out,
                    "  {} on {} by {} until {}; undo: {}",
                    f.what.as_str(),
                    clean(&f.on),
                    clean(&f.rule),
                    f.until,
                    shown_command(&f.undo)
                );
            }
        }
        out
    }
}

pub use crate::time::{human_secs, rfc3339};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_read_well() {
        let trip = Trip {
            rule: "failed_logins_account",
            severity: Severity::High,
            count: 5,
            threshold: 5,
            window_secs: 300,
            response: Response::HoldAccount,
            expires: 1_800_000_900,
            message: None,
            summary: None,
            details: None,
        };
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let a = Alert::from_trip(
            &trip,
            now,
            Some("alice"),
            "192.0.2.7".parse().ok(),
            Some("smtp"),
        );
        assert_eq!(
            a.summary,
            "account alice held for 15 min after 5 failed logins in 5 min from 192.0.2.7"
        );
        let json = serde_json::to_value(&a).unwrap();
        assert_eq!(json["response"], "hold_account");
        assert_eq!(json["severity"], "high");
        assert_eq!(json["time"], "2027-01-15T08:00:00Z");
        assert_eq!(json["ip"], "192.0.2.7");
        assert_eq!(json["counts"]["failed_logins"], 5);
        assert_eq!(json["counts"]["window_secs"], 300);
    }

    #[test]
    fn human_durations() {
        assert_eq!(human_secs(90), "90 s");
        assert_eq!(human_secs(300), "5 min");
        assert_eq!(human_secs(3600), "1 h");
        assert_eq!(human_secs(5400), "90 min");
    }
}
