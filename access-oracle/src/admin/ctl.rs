//! `access-oracle ctl`: the admin client. Sends one request, prints the answer as a
//! readable table, or as the raw JSON `data` with `--json`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use serde_json::Value;

use super::AdminRequest;
use crate::text::escape_controls;

/// Sends `req` to the admin socket and returns the response's `data`.
pub fn call(socket: &Path, req: &AdminRequest) -> anyhow::Result<Value> {
    let mut stream = UnixStream::connect(socket)
        .with_context(|| format!("cannot connect to the admin socket {}", socket.display()))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.set_write_timeout(Some(Duration::from_secs(30)))?;
    let mut line = serde_json::to_vec(req)?;
    line.push(b'\n');
    stream.write_all(&line)?;
    stream.shutdown(std::net::Shutdown::Write)?;
    let mut answer = String::new();
    BufReader::new(stream)
        .read_line(&mut answer)
        .context("no answer from the oracle")?;
    let response: Value = serde_json::from_str(&answer)
        .with_context(|| format!("unreadable answer from the oracle: {answer:?}"))?;
    if response["ok"] != Value::Bool(true) {
        bail!(
            "{}",
            escape_controls(response["error"].as_str().unwrap_or("request failed"))
        );
    }
    Ok(response["data"].clone())
}

/// Renders a response for a human. Every value shown is escaped ([`escape_controls`]).
pub fn render(req: &AdminRequest, data: &Value) -> String {
    match req {
        AdminRequest::Status => render_status(data),
        AdminRequest::Account {
            baseline: false, ..
        } => render_account(data),
        AdminRequest::Account { baseline: true, .. } => render_baseline(data),
        AdminRequest::Alerts { .. } => render_alerts(data),
        AdminRequest::Release { user } => {
            let user = escape_controls(user);
            match (&data["released"], &data["hold"]) {
                (Value::Bool(true), Value::Object(h)) => format!(
                    "released {user}: hold by {} until {} ended",
                    text(&h["rule"]),
                    text(&h["until"])
                ),
                (Value::Bool(true), _) => {
                    format!("{user} was not held; its failure and recipient counts were reset")
                }
                _ => format!("{user}: {}", text(&data["reason"])),
            }
        }
        AdminRequest::Unblock { ip } => match (&data["unblocked"], &data["reason"]) {
            (Value::Bool(true), _) => format!("unblocked {ip}"),
            (_, Value::String(r)) => format!("{ip}: {}", escape_controls(r)),
            _ => format!("{ip} was not blocked; its failure count was reset"),
        },
    }
}

/// A value as shown in a table: text an outsider may have chosen (an account name, an
/// alert's summary, a hold's message) with its control characters escaped, so that it
/// cannot act on the reader's terminal.
fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => escape_controls(s).into_owned(),
        other => escape_controls(&other.to_string()).into_owned(),
    }
}

fn table() -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t
}

fn render_status(d: &Value) -> String {
    let mut t = table();
    t.set_header(["oracle", ""]);
    for (k, label) in [
        ("version", "version"),
        ("started", "started"),
        ("uptime_secs", "uptime (s)"),
        ("config", "config"),
        ("exim_socket", "exim socket"),
        ("accounts_tracked", "accounts tracked"),
        ("ips_tracked", "addresses tracked"),
        ("baselines", "baselines"),
    ] {
        t.add_row([label.to_string(), text(&d[k])]);
    }
    let e = &d["enrichment"];
    for (slot, label) in [("city_db", "GeoIP city_db"), ("asn_db", "GeoIP asn_db")] {
        let db = &e["geoip"][slot];
        let shown = if db.is_null() {
            "none".to_string()
        } else {
            let refused = match &db["last_refusal"] {
                Value::Object(r) => {
                    format!("; last refusal {}: {}", text(&r["at"]), text(&r["error"]))
                }
                _ => String::new(),
            };
            format!(
                "{} ({}, built {}, loaded {}){refused}",
                text(&db["path"]),
                text(&db["database_type"]),
                text(&db["build_time"]),
                text(&db["loaded_at"])
            )
        };
        t.add_row([label.to_string(), shown]);
    }
    t.add_row([
        "lists".to_string(),
        format!(
            "{} blocked networks, {} allowed",
            text(&e["lists"]["block_networks"]),
            text(&e["lists"]["allow_networks"])
        ),
    ]);
    let disabled = &e["disabled_accounts"];
    t.add_row([
        "disabled accounts".to_string(),
        if disabled["file"].is_null() {
            "no accounts file".to_string()
        } else {
            format!(
                "{} from {}",
                text(&disabled["accounts"]),
                text(&disabled["file"])
            )
        },
    ]);
    let audit = &d["audit"];
    t.add_row([
        "audit trail".to_string(),
        if audit.is_null() {
            "off ([audit] enabled = false)".to_string()
        } else {
            format!(
                "{} records written, {} waiting, {} write errors ({})",
                text(&audit["written"]),
                text(&audit["waiting"]),
                text(&audit["write_errors"]),
                text(&audit["dir"])
            )
        },
    ]);
    let c = &d["counters"];
    let pairs = |v: &Value| -> String {
        v.as_array()
            .map(|a| {
                a.iter()
                    .map(|p| format!("{} {}", text(&p[0]), text(&p[1])))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    };
    t.add_row(["requests".to_string(), pairs(&c["requests"])]);
    t.add_row(["replies".to_string(), pairs(&c["replies"])]);
    t.add_row(["dovecot policy".to_string(), pairs(&c["policy"])]);
    for (key, name) in [
        ("exim", "exim socket"),
        ("policy", "policy endpoint"),
        ("admin", "admin socket"),
    ] {
        t.add_row([format!("{name} connections"), pairs(&d["listeners"][key])]);
    }
    for k in [
        "malformed",
        "connections",
        "open_connections",
        "alerts_raised",
        "alerts_dropped",
        "alert_write_errors",
        "admin_refused",
        "log_attempts",
        "source_lines",
        "source_events",
        "source_unrecognised",
        "source_dead_letters",
        "source_errors",
    ] {
        t.add_row([k.replace('_', " "), text(&c[k])]);
    }
    for s in c["sinks"].as_array().into_iter().flatten() {
        t.add_row([
            format!("sink {} ({})", text(&s["name"]), text(&s["type"])),
            format!(
                "delivered {}, failed {}, retried {}, dropped {}, queued {}",
                text(&s["delivered"]),
                text(&s["failed"]),
                text(&s["retried"]),
                text(&s["dropped"]),
                text(&s["queued"])
            ),
        ]);
    }
    let mut out = t.to_string();
    let holds = d["in_force"]["holds"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let blocks = d["in_force"]["ip_blocks"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    out.push_str(&format!(
        "\n{} account(s) held, {} address(es) blocked",
        holds.len(),
        blocks.len()
    ));
    if !holds.is_empty() || !blocks.is_empty() {
        let mut t = table();
        t.set_header(["held", "rule", "since", "until"]);
        for h in holds.iter() {
            t.add_row([
                text(&h["account"]),
                text(&h["rule"]),
                text(&h["since"]),
                text(&h["until"]),
            ]);
        }
        for b in blocks.iter() {
            t.add_row([
                text(&b["ip"]),
                text(&b["rule"]),
                text(&b["since"]),
                text(&b["until"]),
            ]);
        }
        out.push('\n');
        out.push_str(&t.to_string());
    }
    out
}

fn render_baseline(d: &Value) -> String {
    let account = text(&d["account"]);
    if d["known"] != Value::Bool(true) {
        return format!("{account}: no baseline yet (no successful login or sending seen)");
    }
    let mut t = table();
    t.set_header(["baseline", &account]);
    let learning = if d["learning"] == Value::Bool(true) {
        format!(
            "yes, until at least {} and {} logins (new-country and new-ASN alerts wait)",
            text(&d["learning_until"]),
            text(&d["learning_logins"])
        )
    } else {
        "no: learnt".to_string()
    };
    t.add_row([
        "known since".to_string(),
        format!(
            "{} ({} successful logins; last {})",
            text(&d["since"]),
            text(&d["logins"]),
            text(&d["last_seen"])
        ),
    ]);
    t.add_row(["learning".to_string(), learning]);
    let seen = |list: &Value, name: &str| -> String {
        let items: Vec<String> = list
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|e| {
                        format!(
                            "{} ({} logins, {} .. {})",
                            text(&e[name]),
                            text(&e["logins"]),
                            text(&e["first"]),
                            text(&e["last"])
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        if items.is_empty() {
            "none".into()
        } else {
            items.join("\n")
        }
    };
    t.add_row(["countries".to_string(), seen(&d["countries"], "country")]);
    t.add_row(["ASNs".to_string(), seen(&d["asns"], "asn")]);
    t.add_row(["networks".to_string(), seen(&d["networks"], "network")]);
    t.add_row(["clients".to_string(), seen(&d["clients"], "client")]);
    let hours: Vec<String> = d["active_hours_utc"]
        .as_array()
        .map(|a| a.iter().map(text).collect())
        .unwrap_or_default();
    t.add_row([
        "active hours (UTC)".to_string(),
        if hours.is_empty() {
            "none".into()
        } else {
            hours.join(" ")
        },
    ]);
    let s = &d["sending"];
    t.add_row([
        "sending".to_string(),
        format!(
            "{} recipients per active hour on average over {} hours (peak {}); spike above {}{}",
            text(&s["hourly_average"]),
            text(&s["hours"]),
            text(&s["peak"]),
            text(&s["spike_threshold"]),
            if s["learnt"] == Value::Bool(true) {
                ""
            } else {
                " once learnt"
            }
        ),
    ]);
    if let Value::Object(p) = &d["last_place"] {
        t.add_row([
            "last located login".to_string(),
            format!(
                "{} from {} ({}, {}, {} +/- {} km)",
                text(&p["time"]),
                text(&p["ip"]),
                text(&p["country"]),
                text(&p["lat"]),
                text(&p["lon"]),
                text(&p["accuracy_km"])
            ),
        ]);
    }
    t.to_string()
}

fn render_account(d: &Value) -> String {
    let account = text(&d["account"]);
    if d["tracked"] != Value::Bool(true) {
        return format!("{account}: not seen since the oracle started (or forgotten when idle)");
    }
    let mut t = table();
    t.set_header(["account", &account]);
    let hold = match &d["hold"] {
        Value::Object(h) => format!(
            "HELD until {} by {}: {}",
            text(&h["until"]),
            text(&h["rule"]),
            text(&h["message"])
        ),
        _ => "no".into(),
    };
    t.add_row(["hold".to_string(), hold]);
    let f = &d["failed_logins"];
    t.add_row([
        "failed logins".to_string(),
        format!(
            "{} in the last {} s (threshold {})",
            text(&f["count"]),
            text(&f["window_secs"]),
            text(&f["threshold"])
        ),
    ]);
    let r = &d["recipients"];
    let throttle = match &r["throttled_until"] {
        Value::String(u) => format!(", deferred until {u}"),
        _ => String::new(),
    };
    t.add_row([
        "recipients".to_string(),
        format!(
            "{} in the last {} s (ceiling {}){throttle}",
            text(&r["count"]),
            text(&r["window_secs"]),
            text(&r["limit"])
        ),
    ]);
    let tot = &d["totals"];
    t.add_row([
        "totals".to_string(),
        format!(
            "logins ok {}, failed {}, messages {}, recipients {} accepted / {} refused, requests refused {}",
            text(&tot["logins_ok"]),
            text(&tot["logins_failed"]),
            text(&tot["messages"]),
            text(&tot["rcpts_accepted"]),
            text(&tot["rcpts_refused"]),
            text(&tot["refused"])
        ),
    ]);
    let last_login = match &d["last_login"] {
        Value::Object(l) => format!(
            "{} from {} ({})",
            text(&l["time"]),
            text(&l["ip"]),
            text(&l["protocol"])
        ),
        _ => "-".into(),
    };
    t.add_row(["last login".to_string(), last_login]);
    t.add_row(["last seen".to_string(), text(&d["last_seen"])]);
    let mut out = t.to_string();
    let timeline = d["timeline"].as_array().cloned().unwrap_or_default();
    if !timeline.is_empty() {
        let mut t = table();
        t.set_header(["time", "what", "details", "from"]);
        for e in &timeline {
            t.add_row([
                text(&e["time"]),
                timeline_what(e),
                timeline_details(e),
                text(&e["origin"]),
            ]);
        }
        out.push_str("\nrecent activity\n");
        out.push_str(&t.to_string());
    }
    out
}

fn timeline_what(e: &Value) -> String {
    match e["what"].as_str() {
        Some("login") => format!("{} login {}", text(&e["protocol"]), text(&e["result"])),
        Some("sent") => "message sent".into(),
        Some("delivery") => format!("message {}", text(&e["outcome"])),
        Some("session") => format!("{} session", text(&e["protocol"])),
        _ => text(&e["what"]),
    }
}

fn timeline_details(e: &Value) -> String {
    let mut parts = Vec::new();
    let mut add = |label: &str, key: &str| {
        if !e[key].is_null() {
            parts.push(format!("{label}{}", text(&e[key])));
        }
    };
    add("ip ", "ip");
    add("session ", "session");
    add("msgid ", "msgid");
    add("rcpts ", "rcpts");
    add("to ", "rcpt");
    add("logout ", "logout");
    add("in ", "bytes_in");
    add("out ", "bytes_out");
    parts.join(", ")
}

fn render_alerts(d: &Value) -> String {
    let alerts = d.as_array().cloned().unwrap_or_default();
    if alerts.is_empty() {
        return "no alerts since the oracle started".into();
    }
    let mut t = table();
    t.set_header([
        "time", "severity", "rule", "account", "ip", "response", "summary",
    ]);
    for a in &alerts {
        t.add_row([
            text(&a["time"]),
            text(&a["severity"]),
            text(&a["rule"]),
            text(&a["account"]),
            text(&a["ip"]),
            text(&a["response"]),
            text(&a["summary"]),
        ]);
    }
    t.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVIL: &str = "mallory\x1b]0;pwned\x07\x1b[2J\u{9b}31m\u{202e}";

    /// No byte a terminal acts on, other than the tables' own line ends.
    fn assert_inert(out: &str) {
        assert!(
            !out.bytes().any(|b| (b < 0x20 && b != b'\n') || b == 0x7f),
            "{out:?}"
        );
        assert!(
            !out.chars()
                .any(|c| ('\u{80}'..='\u{9f}').contains(&c) || c == '\u{202e}'),
            "{out:?}"
        );
        assert!(out.contains("mallory\\x1b]0;pwned\\x07"), "{out}");
    }

    #[test]
    fn every_rendering_escapes_what_an_outsider_chose() {
        let hold = serde_json::json!({
            "account": EVIL, "rule": "failed_logins_account", "since": "t", "until": "u",
            "message": EVIL,
        });
        let status = serde_json::json!({
            "in_force": {"holds": [hold], "ip_blocks": []},
            "audit": {"dir": EVIL, "written": 1, "waiting": 0, "write_errors": 0},
        });
        assert_inert(&render(&AdminRequest::Status, &status));
        let account = serde_json::json!({
            "account": EVIL, "tracked": true, "hold": hold,
            "last_login": {"time": "t", "ip": "192.0.2.1", "protocol": EVIL},
            "timeline": [{"time": "t", "what": "login", "protocol": "smtp", "result": EVIL,
                          "session": EVIL, "origin": "live"}],
        });
        let req = AdminRequest::Account {
            user: EVIL.into(),
            baseline: false,
        };
        assert_inert(&render(&req, &account));
        let baseline = serde_json::json!({
            "account": EVIL, "known": true,
            "clients": [{"client": EVIL, "logins": 1, "first": "a", "last": "b"}],
        });
        let req = AdminRequest::Account {
            user: EVIL.into(),
            baseline: true,
        };
        assert_inert(&render(&req, &baseline));
        let alerts = serde_json::json!([{
            "time": "t", "severity": "high", "rule": "failed_logins_account",
            "account": EVIL, "ip": "203.0.113.9", "response": "hold_account",
            "summary": format!("5 failed logins for {EVIL}"),
        }]);
        assert_inert(&render(&AdminRequest::Alerts { limit: 5 }, &alerts));
        let req = AdminRequest::Release { user: EVIL.into() };
        assert_inert(&render(&req, &serde_json::json!({"released": true})));
        assert_inert(&render(&req, &serde_json::json!({"reason": EVIL})));
    }
}
