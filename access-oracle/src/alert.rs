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
        }
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
