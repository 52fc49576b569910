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
//!
//! Audit records (a `stream = "audit"` sink with `format = "ecs"`, [`record`]):
//!
//! | ECS field | from the record |
//! |---|---|
//! | `@timestamp` | `time` (when it happened) |
//! | `event.created` | `logged` (when the trail wrote it) |
//! | `event.sequence` | `seq` |
//! | `event.id` | `chain` (unique; a receiver deduplicates on it, [`item`] only) |
//! | `event.kind` | `alert` for `alert`, else `event` |
//! | `event.category`, `event.type` | by kind, in the table below |
//! | `event.action` | `action` when the record has one, else the kind |
//! | `event.outcome` | `failure` when the verdict was `defer` or `deny` or `result` is `fail`; `success` when `result` is `ok`, and for `sent`, `logout`, `release`, `unblock`, `segment`, `retention`; else `unknown` |
//! | `event.severity` | 1 (info) to 5 (critical), for `alert` |
//! | `event.end` | `until` |
//! | `message`, `event.reason` | `reason` |
//! | `rule.name` | `rule` |
//! | `user.name` | `user`; for a record with `admin`, the administrator (and `user.target.name` the account) |
//! | `source.ip` | `ip` |
//! | `source.bytes`, `destination.bytes` | `bytes_in`, `bytes_out` (from and to the client) |
//! | `source.port`, `destination.port`, `tls.established` | `port` (the client's), `local_port` (the server's), `tls`, for attempts recorded with them |
//! | `network.protocol` | `protocol` |
//! | `email.local_id`, `email.message_id` | `msgid` (Exim's), `message_id` (the header) |
//! | `labels.severity`, `labels.response` | `severity`, `response` |
//! | `exim_access.*` | `kind`, and every other field as the trail names it (`source`, `result`, `verdict`, `session`, `rcpts`, `mailbox`, `uid`, `file`, `offset`, `prev_chain`, `removed`, `through` ..., and `chain` ([`item`])) |
//!
//! | kind | `event.category` | `event.type` |
//! |---|---|---|
//! | `auth` | `authentication` | `start` |
//! | `logout` | `authentication`, `session` | `end` |
//! | `sent`, `mailbox` | `email` | `info` |
//! | `admin` | `iam` | `admin` |
//! | `alert` | `authentication` or `email` (as for alerts) | `info` |
//! | `release` | `iam` | `change`, `user` |
//! | `unblock` | `network` | `allowed` |
//! | `segment`, `retention`, `recovered` | `file` (the trail's own files) | `creation`, `deletion`, `change` |
//!
//! A record carries no location or network owner: `source.geo.*` and `source.as.*` are
//! left to the receiver (an Elasticsearch `geoip` ingest processor on `source.ip`,
//! Vector's `geoip` enrichment), which has the same databases.

use serde_json::{Map, Value, json};

use super::AuditItem;
use crate::alert::Alert;
use crate::audit::{self, Kind};
use crate::protocol::Outcome;
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

/// The record's fields that have an ECS place of their own; every other field goes
/// under `exim_access`, as the trail names it.
const MAPPED: [&str; 16] = [
    "seq",
    "time",
    "logged",
    "kind",
    "user",
    "admin",
    "ip",
    "protocol",
    "reason",
    "rule",
    "severity",
    "until",
    "msgid",
    "message_id",
    "bytes_in",
    "bytes_out",
];

/// An audit record as an ECS document (the table in the module's doc).
pub fn record(r: &audit::Record) -> Value {
    let (category, kind_type): (&[&str], &[&str]) = match r.kind {
        Kind::Auth => (&["authentication"], &["start"]),
        Kind::Logout => (&["authentication", "session"], &["end"]),
        Kind::Sent | Kind::Mailbox => (&["email"], &["info"]),
        Kind::Admin => (&["iam"], &["admin"]),
        Kind::Alert => match r.rule.as_deref() {
            Some(rule) if SENDING_RULES.contains(&rule) => (&["email"], &["info"]),
            _ => (&["authentication"], &["info"]),
        },
        Kind::Release => (&["iam"], &["change", "user"]),
        Kind::Unblock => (&["network"], &["allowed"]),
        Kind::Action => match r.action.as_deref() {
            Some("unblock") => (&["network"], &["allowed"]),
            _ => (&["network"], &["denied"]),
        },
        Kind::Segment => (&["file"], &["creation"]),
        Kind::Retention => (&["file"], &["deletion"]),
        Kind::Recovered => (&["file"], &["change"]),
    };
    let refused = matches!(r.verdict.as_deref(), Some("defer" | "deny"));
    let outcome = if refused || r.result == Some(Outcome::Fail) {
        "failure"
    } else if r.result == Some(Outcome::Ok)
        || matches!(
            r.kind,
            Kind::Sent
                | Kind::Logout
                | Kind::Release
                | Kind::Unblock
                | Kind::Segment
                | Kind::Retention
        )
    {
        "success"
    } else {
        "unknown"
    };
    let mut event = Map::new();
    let alert = r.kind == Kind::Alert;
    event.insert("kind".into(), json!(if alert { "alert" } else { "event" }));
    event.insert("category".into(), json!(category));
    event.insert("type".into(), json!(kind_type));
    event.insert(
        "action".into(),
        json!(r.action.as_deref().unwrap_or(r.kind.as_str())),
    );
    event.insert("outcome".into(), json!(outcome));
    event.insert("sequence".into(), json!(r.seq));
    event.insert("created".into(), json!(r.logged.to_string()));
    event.insert("module".into(), json!("exim_access"));
    event.insert("dataset".into(), json!("exim_access.audit"));
    if let Some(s) = r.severity {
        event.insert("severity".into(), json!(severity_number(s)));
    }
    if let Some(until) = r.until {
        event.insert("end".into(), json!(until.to_string()));
    }
    if let Some(reason) = &r.reason {
        event.insert("reason".into(), json!(reason));
    }
    let mut doc = Map::new();
    doc.insert("@timestamp".into(), json!(r.time.to_string()));
    doc.insert("ecs".into(), json!({ "version": ECS_VERSION }));
    if let Some(reason) = &r.reason {
        doc.insert("message".into(), json!(reason));
    }
    doc.insert("event".into(), Value::Object(event));
    if let Some(rule) = &r.rule {
        doc.insert(
            "rule".into(),
            json!({ "name": rule, "ruleset": "exim-access" }),
        );
    }
    let mut user = Map::new();
    match (&r.admin, &r.user) {
        (Some(admin), target) => {
            user.insert("name".into(), json!(admin));
            if let Some(target) = target {
                user.insert("target".into(), json!({ "name": target }));
            }
        }
        (None, Some(account)) => {
            user.insert("name".into(), json!(account));
        }
        (None, None) => {}
    }
    if !user.is_empty() {
        doc.insert("user".into(), Value::Object(user));
    }
    let mut source = Map::new();
    if let Some(ip) = r.ip {
        source.insert("ip".into(), json!(ip.to_string()));
    }
    if let Some(n) = r.bytes_in {
        source.insert("bytes".into(), json!(n));
    }
    if !source.is_empty() {
        doc.insert("source".into(), Value::Object(source));
    }
    if let Some(n) = r.bytes_out {
        doc.insert("destination".into(), json!({ "bytes": n }));
    }
    if let Some(protocol) = &r.protocol {
        doc.insert("network".into(), json!({ "protocol": protocol }));
    }
    let mut email = Map::new();
    if let Some(id) = &r.msgid {
        email.insert("local_id".into(), json!(id));
    }
    if let Some(id) = &r.message_id {
        email.insert("message_id".into(), json!(id));
    }
    if !email.is_empty() {
        doc.insert("email".into(), Value::Object(email));
    }
    if let Some(s) = r.severity {
        let mut labels = Map::new();
        labels.insert("severity".into(), json!(s.as_str()));
        if let Some(response) = r.response {
            labels.insert("response".into(), json!(response.as_str()));
        }
        doc.insert("labels".into(), Value::Object(labels));
    }
    // Everything else, as the trail names it: fields added to records later arrive
    // here without a change to this mapping.
    let mut rest = match serde_json::to_value(r) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    };
    for key in MAPPED {
        rest.remove(key);
    }
    connection(&mut rest, &mut doc);
    rest.insert("kind".into(), json!(r.kind.as_str()));
    doc.insert("exim_access".into(), Value::Object(rest));
    Value::Object(doc)
}

/// How a login was made, where the record says (attempts recorded with it): the
/// client's port as `source.port`, the server's as `destination.port`, whether TLS was
/// on as `tls.established`. Taken out of `rest`, the record's other fields.
fn connection(rest: &mut Map<String, Value>, doc: &mut Map<String, Value>) {
    for (field, set, key) in [
        ("port", "source", "port"),
        ("local_port", "destination", "port"),
        ("tls", "tls", "established"),
    ] {
        let Some(value) = rest.remove(field) else {
            continue;
        };
        match doc.entry(set).or_insert_with(|| Value::Object(Map::new())) {
            Value::Object(m) => {
                m.insert(key.into(), value);
            }
            _ => {
                rest.insert(field.into(), value);
            }
        }
    }
}

/// A forwarded record as an ECS document: [`record`], with the line's chain value as
/// `event.id` (unique in the trail: a receiver that keeps one document per `event.id`
/// drops what at-least-once delivery sent twice) and `exim_access.chain`.
pub fn item(item: &AuditItem) -> Value {
    let mut doc = record(&item.record);
    if let Ok(sealed) = audit::record::unseal(&item.line) {
        let chain = audit::record::chain_hex(&sealed.chain);
        doc["event"]["id"] = json!(chain);
        doc["exim_access"]["chain"] = json!(chain);
    }
    doc
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
            observed: false,
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

    #[test]
    fn how_a_login_was_made_maps_to_ports_and_tls() {
        let mut doc = Map::new();
        doc.insert("source".into(), json!({ "ip": "192.0.2.1" }));
        let mut rest = json!({
            "source": "live", "mech": "PLAIN", "port": 40123, "local_port": 587,
            "tls": true, "tls_cipher": "TLS1.3:TLS_AES_256_GCM_SHA384:256"
        })
        .as_object()
        .unwrap()
        .clone();
        connection(&mut rest, &mut doc);
        assert_eq!(
            Value::Object(doc),
            json!({
                "source": { "ip": "192.0.2.1", "port": 40123 },
                "destination": { "port": 587 },
                "tls": { "established": true }
            })
        );
        assert_eq!(
            Value::Object(rest),
            json!({
                "source": "live", "mech": "PLAIN",
                "tls_cipher": "TLS1.3:TLS_AES_256_GCM_SHA384:256"
            })
        );
    }

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).unwrap()
    }

    #[test]
    fn a_refused_login_reads_as_an_ecs_authentication_failure() {
        let mut r = audit::Record::new(audit::Kind::Auth, audit::Source::Live, at(1_800_000_000))
            .user("alice@example.org")
            .ip(Some("203.0.113.9".parse().unwrap()))
            .protocol(Some("smtp"));
        r.seq = 42;
        r.logged = at(1_800_000_001);
        r.result = Some(Outcome::Ok);
        r.verdict = Some("defer".into());
        r.reason = Some("account on hold".into());
        r.session = Some("abc123".into());
        let (line, chain) = audit::record::seal(&r, &[7; 32], &[1; 32]);
        let doc = item(&AuditItem {
            record: r.clone(),
            line,
        });
        let chain = audit::record::chain_hex(&chain);
        assert_eq!(
            doc,
            json!({
                "@timestamp": "2027-01-15T08:00:00Z",
                "ecs": { "version": "8.11.0" },
                "message": "account on hold",
                "event": {
                    "kind": "event", "category": ["authentication"], "type": ["start"],
                    "action": "auth", "outcome": "failure", "sequence": 42,
                    "created": "2027-01-15T08:00:01Z", "module": "exim_access",
                    "dataset": "exim_access.audit", "reason": "account on hold",
                    "id": chain
                },
                "user": { "name": "alice@example.org" },
                "source": { "ip": "203.0.113.9" },
                "network": { "protocol": "smtp" },
                "exim_access": {
                    "kind": "auth", "source": "live", "result": "ok", "verdict": "defer",
                    "session": "abc123", "chain": chain
                }
            })
        );
        // Without the verdict, the right password is a success; a wrong one a failure.
        r.verdict = None;
        assert_eq!(record(&r)["event"]["outcome"], "success");
        r.result = Some(Outcome::Fail);
        assert_eq!(record(&r)["event"]["outcome"], "failure");
        assert!(record(&r)["event"].get("id").is_none(), "no line, no chain");
    }

    #[test]
    fn alerts_admin_actions_sessions_and_bookkeeping_map_by_kind() {
        let t = at(1_800_000_000);
        let mut alert = audit::Record::new(audit::Kind::Alert, audit::Source::Oracle, t)
            .user("bob")
            .ip(Some("198.51.100.4".parse().unwrap()));
        alert.rule = Some("outbound_spike".into());
        alert.severity = Some(Severity::High);
        alert.response = Some(Response::ThrottleRcpt);
        alert.until = Some(at(1_800_003_600));
        alert.reason = Some("bob sent 400 recipients in 1 h".into());
        let doc = record(&alert);
        assert_eq!(doc["event"]["kind"], "alert");
        assert_eq!(doc["event"]["category"], json!(["email"]));
        assert_eq!(doc["event"]["severity"], 4);
        assert_eq!(doc["event"]["end"], "2027-01-15T09:00:00Z");
        assert_eq!(doc["event"]["outcome"], "unknown");
        assert_eq!(doc["rule"]["name"], "outbound_spike");
        assert_eq!(
            doc["labels"],
            json!({ "severity": "high", "response": "throttle_rcpt" })
        );
        assert_eq!(doc["exim_access"]["response"], "throttle_rcpt");

        let mut admin = audit::Record::new(audit::Kind::Admin, audit::Source::Log, t).user("carol");
        admin.admin = Some("root".into());
        admin.action = Some("removed".into());
        admin.msgid = Some("1tAbCd-000123-4F".into());
        let doc = record(&admin);
        assert_eq!(
            doc["user"],
            json!({ "name": "root", "target": { "name": "carol" } })
        );
        assert_eq!(doc["event"]["category"], json!(["iam"]));
        assert_eq!(doc["event"]["action"], "removed");
        assert_eq!(doc["email"], json!({ "local_id": "1tAbCd-000123-4F" }));
        assert_eq!(doc["exim_access"]["action"], "removed");

        let mut logout = audit::Record::new(audit::Kind::Logout, audit::Source::Log, t)
            .user("dave")
            .ip(Some("192.0.2.1".parse().unwrap()))
            .protocol(Some("imap"));
        logout.bytes_in = Some(120);
        logout.bytes_out = Some(4096);
        let doc = record(&logout);
        assert_eq!(doc["event"]["type"], json!(["end"]));
        assert_eq!(doc["event"]["outcome"], "success");
        assert_eq!(doc["source"], json!({ "ip": "192.0.2.1", "bytes": 120 }));
        assert_eq!(doc["destination"], json!({ "bytes": 4096 }));
        assert!(doc.get("message").is_none());

        let mut retention = audit::Record::new(audit::Kind::Retention, audit::Source::Oracle, t);
        retention.removed = vec!["audit-2025-01-01.jsonl".into()];
        retention.through = Some(99);
        let doc = record(&retention);
        assert_eq!(doc["event"]["category"], json!(["file"]));
        assert_eq!(doc["event"]["type"], json!(["deletion"]));
        assert_eq!(
            doc["exim_access"],
            json!({
                "kind": "retention", "source": "oracle",
                "removed": ["audit-2025-01-01.jsonl"], "through": 99
            })
        );
        assert!(doc.get("user").is_none() && doc.get("source").is_none());
    }
}
