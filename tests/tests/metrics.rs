//! The metrics endpoint (`[metrics]`, issue 16): after AUTH failures and successes
//! through real Exim (`exim -bh` on the shipped configuration) and IMAP logins through a
//! real Dovecot asking the oracle's policy endpoint (the shipped snippet),
//! `GET /metrics` reads with a strict Prometheus text-format parser
//! (`exim_access_e2e::prometheus`) and its counts are the traffic's; every metric the
//! shipped Grafana dashboard queries is in a live answer.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use exim_access_e2e::prometheus::{self, Exposition, Kind};
use exim_access_e2e::{
    Dialogue, Dovecot, DovecotSetup, Exim, HttpClient, Oracle, PASSWORD, POLICY_API_KEY,
    PolicyServer, Via, World,
};

/// A client address from the documentation range.
const CLIENT_IP: &str = "192.0.2.10";

/// `[metrics]` on a port the oracle picks (its log says which).
const METRICS: &str = "[metrics]\nlisten = \"127.0.0.1:0\"\n";

/// The port of the oracle's metrics endpoint, from its log line (the last start's).
fn metrics_port(oracle: &Oracle) -> u16 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = oracle.log_text();
        let port = log
            .lines()
            .rfind(|l| l.contains("metrics endpoint listening"))
            .and_then(|l| l.split("listen=127.0.0.1:").nth(1))
            .and_then(|rest| {
                rest.split(|c: char| !c.is_ascii_digit())
                    .next()
                    .and_then(|p| p.parse().ok())
            });
        if let Some(port) = port {
            return port;
        }
        assert!(
            Instant::now() < deadline,
            "no metrics endpoint in the log:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A scrape, read strictly.
fn scrape(oracle: &Oracle) -> Exposition {
    let mut http = HttpClient::connect(metrics_port(oracle));
    let answer = http.get("/metrics");
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(
        answer.content_type.as_deref(),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    prometheus::parse(&answer.body)
        .unwrap_or_else(|e| panic!("not a valid exposition: {e}\n{}", answer.body))
}

/// Scrapes until `ready` holds (Dovecot reports an outcome after it answered the
/// client), within a deadline.
fn scrape_until(oracle: &Oracle, what: &str, ready: impl Fn(&Exposition) -> bool) -> Exposition {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let m = scrape(oracle);
        if ready(&m) {
            return m;
        }
        assert!(Instant::now() < deadline, "{what}: not within 30 s: {m:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An IMAP login of `user` posing as `ip`; whether it succeeded.
fn imap_login(dovecot: &Dovecot, ip: &str, user: &str, password: &str) -> bool {
    let mut imap = dovecot.imap();
    imap.id_originating(ip, 40000);
    let reply = imap.login(user, password);
    let ok = reply.is_ok();
    if ok {
        imap.logout();
    }
    ok
}

#[test]
fn metrics_count_the_traffic_through_exim_and_dovecot_policy() {
    let world = World::new(&["alice", "bob"]);
    // A log source with a line of no known shape, a malformed line and an arrival.
    let log = world.path("extra-mainlog");
    std::fs::write(
        &log,
        "2026-11-28 04:53:08 frobnicate the widget\n\
         2026-11-28 04:53:08 exim-access: {not json\n\
         2026-11-28 04:53:08 1xXAQu-0008Bx-1S exim-access: {\"v\":1,\"event\":\"arrival\",\"user\":\"alice\",\"ip\":\"\",\"rcpts\":4,\"size\":309}\n",
    )
    .unwrap();
    let sources = format!(
        "{METRICS}\n[[sources]]\npath = {}\nformat = \"exim\"\nstart_at = \"beginning\"\n",
        serde_json::to_string(&log.to_string_lossy()).unwrap()
    );
    let oracle = Oracle::start_with_policy(&world, "", &sources);
    let exim = Exim::new(&world, Via::Dlfunc, oracle.exim_socket());
    let dovecot = Dovecot::start_with(
        &world,
        &["alice", "bob"],
        &DovecotSetup {
            policy: Some(PolicyServer {
                url: oracle.policy_url(),
                api_key: POLICY_API_KEY.into(),
            }),
            exim_auth: false,
        },
    );

    let path = log.display().to_string();
    let source = [("path", path.as_str())];
    let before = scrape_until(&oracle, "the log source read", |m| {
        m.sum("exim_access_source_lines_total", &source) >= 3.0
    });
    assert_eq!(before.value("exim_access_source_lines_total", &source), 3.0);
    assert_eq!(
        before.value("exim_access_source_dead_letters_total", &source),
        1.0
    );
    assert_eq!(
        before.value("exim_access_source_events_total", &source),
        1.0
    );
    assert_eq!(
        before.value("exim_access_source_unrecognised_lines_total", &source),
        1.0
    );
    assert_eq!(before.value("exim_access_dead_letters_total", &[]), 1.0);
    assert_eq!(
        before.value("exim_access_events_total", &[("source", "logs")]),
        1.0
    );
    assert_eq!(
        before.sum("exim_access_verdicts_total", &[("verb", "auth")]),
        0.0
    );

    // Three wrong passwords and a right one: below the account rule's threshold (5).
    for i in 1..=3 {
        let s = exim.bh(
            CLIENT_IP,
            &Dialogue::auth_only("alice", format!("wrong-{i}")),
        );
        s.assert_oracle_answered();
        assert_eq!(s.reply("AUTH").code, 535, "{}", s.transcript());
    }
    let ok = exim.bh(CLIENT_IP, &Dialogue::auth_only("alice", PASSWORD));
    assert_eq!(ok.reply("AUTH").code, 235, "{}", ok.transcript());
    // Dovecot asks before each IMAP login of bob and reports its outcome.
    assert!(!imap_login(&dovecot, "192.0.2.20", "bob", "wrong"));
    assert!(imap_login(&dovecot, "192.0.2.20", "bob", PASSWORD));
    let reports = [("command", "report")];
    let allows = [("command", "allow")];
    let m = scrape_until(&oracle, "three allows and two reports", |m| {
        m.sum("exim_access_policy_requests_total", &reports) >= 2.0
            && m.sum("exim_access_policy_requests_total", &allows) >= 3.0
    });
    for (name, kind) in [
        ("exim_access_verdicts_total", Kind::Counter),
        ("exim_access_verdict_duration_seconds", Kind::Histogram),
        ("exim_access_policy_requests_total", Kind::Counter),
        ("exim_access_events_total", Kind::Counter),
        ("exim_access_dead_letters_total", Kind::Counter),
        ("exim_access_alerts_total", Kind::Counter),
        ("exim_access_sink_deliveries_total", Kind::Counter),
        ("exim_access_sink_failures_total", Kind::Counter),
        ("exim_access_sink_drops_total", Kind::Counter),
        ("exim_access_tracked_accounts", Kind::Gauge),
        ("exim_access_tracked_addresses", Kind::Gauge),
        ("exim_access_holds_in_force", Kind::Gauge),
        ("exim_access_blocks_in_force", Kind::Gauge),
        ("exim_access_audit_queued_records", Kind::Gauge),
        ("exim_access_audit_write_errors_total", Kind::Counter),
        ("exim_access_listener_connections_total", Kind::Counter),
    ] {
        assert_eq!(m.family(name).kind, kind, "{name}");
    }
    // Every AUTH reached the oracle once, and none was refused by it.
    assert_eq!(
        m.value(
            "exim_access_verdicts_total",
            &[("verb", "auth"), ("result", "accept")]
        ),
        4.0
    );
    assert_eq!(
        m.sum("exim_access_verdicts_total", &[("verb", "auth")]),
        4.0
    );
    // One observation of the latency per verdict (the histogram's own consistency is
    // the parser's: +Inf equals _count, buckets cumulative).
    let verdicts = m.sum("exim_access_verdicts_total", &[]);
    assert_eq!(
        m.value("exim_access_verdict_duration_seconds_count", &[]),
        verdicts
    );
    assert_eq!(
        m.value("exim_access_events_total", &[("source", "exim")]),
        verdicts,
        "every request on the Exim socket was answered with a verdict"
    );
    for (command, answer, n) in [
        // `allow` before each password check and again after the right one.
        ("allow", "continue", 3.0),
        ("allow", "reject", 0.0),
        ("report", "fail", 1.0),
        ("report", "ok", 1.0),
        ("none", "unauthorized", 0.0),
    ] {
        assert_eq!(
            m.value(
                "exim_access_policy_requests_total",
                &[("command", command), ("answer", answer)]
            ),
            n,
            "{command} {answer}"
        );
    }
    assert_eq!(
        m.value("exim_access_events_total", &[("source", "policy")]),
        5.0
    );
    assert_eq!(
        m.value("exim_access_tracked_accounts", &[]),
        2.0,
        "alice and bob"
    );
    assert_eq!(m.value("exim_access_tracked_addresses", &[]), 2.0);
    assert_eq!(m.value("exim_access_holds_in_force", &[]), 0.0);
    assert_eq!(m.sum("exim_access_alerts_total", &[]), 0.0);
    // Each listener's connections are counted, the metrics endpoint's own too.
    assert!(
        m.value(
            "exim_access_listener_connections_total",
            &[("listener", "exim"), ("event", "accepted")]
        ) >= 4.0
    );
    assert!(
        m.value(
            "exim_access_listener_connections_total",
            &[("listener", "policy"), ("event", "accepted")]
        ) >= 1.0,
        "Dovecot's connections to the policy endpoint"
    );
    assert!(
        m.value(
            "exim_access_listener_connections_total",
            &[("listener", "metrics"), ("event", "accepted")]
        ) >= 2.0,
        "the scrapes themselves"
    );

    // Two more failures hold alice: an alert by its rule and severity, a hold in force.
    for i in 4..=5 {
        exim.bh(
            CLIENT_IP,
            &Dialogue::auth_only("alice", format!("wrong-{i}")),
        );
    }
    oracle.wait_for_alerts(1, Duration::from_secs(10));
    let m = scrape(&oracle);
    assert_eq!(
        m.value(
            "exim_access_alerts_total",
            &[("rule", "failed_logins_account"), ("severity", "high")]
        ),
        1.0
    );
    assert_eq!(m.value("exim_access_holds_in_force", &[]), 1.0);
    let held = exim.bh(CLIENT_IP, &Dialogue::auth_only("alice", PASSWORD));
    assert_eq!(held.reply("AUTH").code, 435, "{}", held.transcript());
    let m = scrape(&oracle);
    assert!(
        m.value(
            "exim_access_verdicts_total",
            &[("verb", "auth"), ("result", "defer")]
        ) >= 1.0,
        "the held account's AUTH is a defer verdict"
    );
}

/// The metric names an expression uses: `exim_access_...` words.
fn names_in(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = expr;
    while let Some(at) = rest.find("exim_access_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(tail.len());
        out.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

/// Every `expr` in the dashboard's panels.
fn exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr", serde_json::Value::String(e)) => out.push(e.clone()),
                    _ => exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

#[test]
fn every_metric_of_the_grafana_dashboard_is_exported() {
    let path =
        exim_access_e2e::paths::workspace_root().join("exim-config/grafana/exim-access.json");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut all = Vec::new();
    exprs(&dashboard["panels"], &mut all);
    assert!(all.len() >= 10, "the dashboard's queries: {all:?}");

    let world = World::new(&["alice"]);
    let mut oracle = Oracle::start_with(&world, METRICS);
    let exim = Exim::new(&world, Via::Dlfunc, oracle.exim_socket());
    exim.bh(CLIENT_IP, &Dialogue::auth_only("alice", PASSWORD));
    // A stop writes the state snapshot: its age is exported from then on.
    oracle.restart();
    let live = scrape(&oracle).names();
    for expr in &all {
        let used = names_in(expr);
        assert!(!used.is_empty(), "a query naming no metric: {expr}");
        for name in used {
            assert!(
                live.contains(&name),
                "the dashboard queries {name} ({expr}), which /metrics does not export; it has {live:?}"
            );
        }
    }
}
