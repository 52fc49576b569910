//! The alert record: what fired, against whom, what was done, in one line for a human.
//! Serialized as one JSON object per line by the file sink and the admin socket.

use std::net::IpAddr;

use jiff::Timestamp;
use serde::Serialize;

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

/// The context of an alert, gathered when it is raised.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Context {
    /// The account's recent logins, newest first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub recent_logins: Vec<LoginSeen>,
    /// Messages the account sent in the last hour.
    pub messages_1h: u64,
    /// Their recipients.
    pub recipients_1h: u64,
    /// Messages the account sent in the last 24 hours.
    pub messages_24h: u64,
    /// Their recipients.
    pub recipients_24h: u64,
    /// Distinct source addresses of the account's logins in the last 24 hours.
    pub addresses_24h: u64,
    /// The countries (ISO codes) those logins came from.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub countries_24h: Vec<String>,
    /// Holds, blocks and throttles in force on the account and the address now.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub in_force: Vec<InForce>,
    /// What the oracle did, in words (`account held until ...`), if anything.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// The exact command that undoes it (`access-oracle ctl release alice`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub undo: Option<String>,
}

/// One login attempt as the context shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoginSeen {
    /// When.
    pub time: Timestamp,
    /// `smtp`, `imap`, `pop3`, ...
    pub protocol: String,
    /// From where.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<IpAddr>,
    /// The address's reverse name, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rdns: Option<String>,
    /// Its country (ISO code).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    /// Its autonomous system number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub asn: Option<u32>,
    /// The AS's organisation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub as_org: Option<String>,
    /// The client's name, when it said (IMAP ID, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// The SASL mechanism (`PLAIN`, `LOGIN`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mechanism: Option<String>,
    /// Exim's authenticator (its driver instance name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authenticator: Option<String>,
    /// The server port the client connected to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Whether the session was encrypted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<bool>,
    /// `ok` or `fail`.
    pub outcome: crate::protocol::Outcome,
}

/// A hold, block or throttle in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InForce {
    /// `hold`, `deny`, `throttle`, `block` or `defer`.
    pub what: &'static str,
    /// The account or address it applies to.
    pub on: String,
    /// The rule that put it in place.
    pub rule: String,
    /// When it ends by itself.
    pub until: Timestamp,
    /// The `ctl` command that ends it now.
    pub undo: String,
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
            let _ = writeln!(out, "Undo with: {}", clean(undo));
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
                    let _ = write!(line, " port {port}");
                }
                match l.tls {
                    Some(true) => line.push_str(" TLS"),
                    Some(false) => line.push_str(" plaintext"),
                    None => {}
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
                    f.what,
                    clean(&f.on),
                    f.rule,
                    f.until,
                    clean(&f.undo)
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
