//! Alerts in the Elastic Common Schema (ECS 8), for the sinks whose `format = "ecs"`:
//! what Elasticsearch, OpenSearch, Filebeat and most SIEMs read without a mapping of
//! their own.
//!
//! | ECS field | from the alert |
//! |---|---|
//! | `@timestamp` | when the rule fired |
//! | `message`, `event.reason` | the one-line summary |
//! | `event.kind` | `alert` |
//! | `event.category` | `authentication` (login rules) or `email` (sending rules) |
//! | `event.type` | `info` |
//! | `event.action`, `rule.name` | the rule |
//! | `event.severity` | 1 (info) to 5 (critical) |
//! | `event.end` | when the response ends (absent for an alert only) |
//! | `user.name` | the account |
//! | `source.ip`, `source.domain` | the address, its reverse DNS name |
//! | `network.protocol` | `smtp`, `imap`, `pop3` ... |
//! | `labels.severity`, `labels.response` | as in `alerts.jsonl` |
//! | `exim_access.*` | count, threshold, window, the named counts, response, expiry |

use serde_json::{Map, Value, json};

use crate::alert::Alert;
use crate::rules::{Response, Severity};

/// The ECS version these documents follow.
pub const ECS_VERSION: &str = "8.11.0";

/// The rules about sending (their events are e-mail, not authentication).
const SENDING_RULES: [&str; 2] = ["recipient_ceiling", "outbound_spike"];

/// `alert` as an ECS document.
pub fn alert(alert: &Alert) -> Value {
    let category = if SENDING_RULES.contains(&alert.rule) {
        "email"
    } else {
        "authentication"
    };
    let mut event = Map::new();
    event.insert("kind".into(), json!("alert"));
    event.insert("category".into(), json!([category]));
    event.insert("type".into(), json!(["info"]));
    event.insert("action".into(), json!(alert.rule));
    event.insert("severity".into(), json!(severity_number(alert.severity)));
    event.insert("reason".into(), json!(alert.summary));
    event.insert("module".into(), json!("exim_access"));
    event.insert("dataset".into(), json!("exim_access.alert"));
    if alert.response != Response::Alert {
        event.insert("end".into(), json!(alert.expires.to_string()));
    }
    let mut doc = Map::new();
    doc.insert("@timestamp".into(), json!(alert.time.to_string()));
    doc.insert("ecs".into(), json!({ "version": ECS_VERSION }));
    doc.insert("message".into(), json!(alert.summary));
    doc.insert("event".into(), Value::Object(event));
    doc.insert(
        "rule".into(),
        json!({ "name": alert.rule, "ruleset": "exim-access" }),
    );
    if let Some(account) = &alert.account {
        doc.insert("user".into(), json!({ "name": account }));
    }
    if let Some(ip) = alert.ip {
        let mut source = Map::new();
        source.insert("ip".into(), json!(ip.to_string()));
        if let Some(name) = &alert.rdns {
            source.insert("domain".into(), json!(name));
        }
        doc.insert("source".into(), Value::Object(source));
    }
    if let Some(protocol) = &alert.protocol {
        doc.insert("network".into(), json!({ "protocol": protocol }));
    }
    doc.insert(
        "labels".into(),
        json!({ "severity": alert.severity.as_str(), "response": alert.response.as_str() }),
    );
    doc.insert(
        "exim_access".into(),
        json!({
            "count": alert.count,
            "threshold": alert.threshold,
            "window_secs": alert.window_secs,
            "counts": alert.counts,
            "response": alert.response.as_str(),
            "expires": alert.expires.to_string(),
        }),
    );
    Value::Object(doc)
}

/// ECS's numeric `event.severity`: 1 (info) to 5 (critical).
fn severity_number(s: Severity) -> u8 {
    match s {
        Severity::Info => 1,
        Severity::Low => 2,
        Severity::Medium => 3,
        Severity::High => 4,
        Severity::Critical => 5,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::Timestamp;

    #[test]
    fn a_hold_reads_as_an_ecs_authentication_alert() {
        let alert = Alert {
            time: Timestamp::from_second(1_800_000_000).unwrap(),
            rule: "failed_logins_account",
            severity: Severity::High,
            account: Some("alice".into()),
            ip: Some("203.0.113.9".parse().unwrap()),
            rdns: Some("host.example".into()),
            protocol: Some("imap".into()),
            count: 5,
            counts: json!({ "failed_logins": 5 }),
            threshold: 5,
            window_secs: 300,
            response: Response::HoldAccount,
            expires: Timestamp::from_second(1_800_000_900).unwrap(),
            summary: "account alice held for 15 min after 5 failed logins in 5 min".into(),
            group: None,
            context: None,
        };
        let doc = super::alert(&alert);
        assert_eq!(
            doc,
            json!({
                "@timestamp": "2027-01-15T08:00:00Z",
                "ecs": { "version": "8.11.0" },
                "message": "account alice held for 15 min after 5 failed logins in 5 min",
                "event": {
                    "kind": "alert", "category": ["authentication"], "type": ["info"],
                    "action": "failed_logins_account", "severity": 4,
                    "reason": "account alice held for 15 min after 5 failed logins in 5 min",
                    "module": "exim_access", "dataset": "exim_access.alert",
                    "end": "2027-01-15T08:15:00Z"
                },
                "rule": { "name": "failed_logins_account", "ruleset": "exim-access" },
                "user": { "name": "alice" },
                "source": { "ip": "203.0.113.9", "domain": "host.example" },
                "network": { "protocol": "imap" },
                "labels": { "severity": "high", "response": "hold_account" },
                "exim_access": {
                    "count": 5, "threshold": 5, "window_secs": 300,
                    "counts": { "failed_logins": 5 }, "response": "hold_account",
                    "expires": "2027-01-15T08:15:00Z"
                }
            })
        );
        let sending = Alert {
            rule: "outbound_spike",
            response: Response::Alert,
            account: None,
            ip: None,
            protocol: None,
            ..alert
        };
        let doc = super::alert(&sending);
        assert_eq!(doc["event"]["category"], json!(["email"]));
        assert!(
            doc["event"].get("end").is_none(),
            "an alert only ends nothing"
        );
        assert!(doc.get("user").is_none() && doc.get("source").is_none());
    }
}
