//! Engine scenarios with an injected clock: nothing here sleeps.

use super::*;
use crate::config::RawConfig;
use crate::protocol::parse_line;

fn engine() -> (Engine, mpsc::Receiver<Arc<Alert>>) {
    let config = Config::from_raw(RawConfig::default()).unwrap();
    Engine::new(&config, t(0))
}

fn t(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).unwrap()
}

fn ask(e: &Engine, line: &str, at: i64) -> String {
    let cmd = parse_line(line.as_bytes()).unwrap_or_else(|err| panic!("{line}: {err}"));
    e.handle(&cmd, t(at)).to_string()
}

fn drain(rx: &mut mpsc::Receiver<Arc<Alert>>) -> Vec<Arc<Alert>> {
    let mut v = Vec::new();
    while let Ok(a) = rx.try_recv() {
        v.push(a);
    }
    v
}

#[test]
fn brute_force_holds_the_account_from_the_next_request() {
    let (e, mut rx) = engine();
    for i in 0..5 {
        let line = format!("auth user=alice ip=203.0.113.9 result=fail pwhash=00{i:02}");
        assert_eq!(
            ask(&e, &line, i),
            "accept",
            "attempt {i} keeps its local outcome"
        );
    }
    let alerts = drain(&mut rx);
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].rule, "failed_logins_account");
    assert_eq!(alerts[0].account.as_deref(), Some("alice"));
    assert_eq!(alerts[0].count, 5);
    let held = ask(&e, "auth user=alice ip=203.0.113.9 result=ok", 10);
    assert!(
        held.starts_with("defer account temporarily locked"),
        "{held}"
    );
    assert!(ask(&e, "mail user=alice ip=192.0.2.1", 11).starts_with("defer "));
    assert!(ask(&e, "rcpt user=alice ip=192.0.2.1 rcpt=x@example.org", 12).starts_with("defer "));
    assert!(ask(&e, "data user=alice ip=192.0.2.1", 13).starts_with("defer "));
    assert!(
        ask(
            &e,
            "login user=alice ip=192.0.2.1 result=ok protocol=imap",
            14
        )
        .starts_with("defer "),
        "the hold applies to every protocol"
    );
    // Other accounts are untouched; the hold ends after 15 minutes.
    assert_eq!(
        ask(&e, "auth user=bob ip=203.0.113.9 result=ok", 15),
        "accept"
    );
    assert_eq!(
        ask(&e, "auth user=alice ip=203.0.113.9 result=ok", 4 + 900),
        "accept"
    );
    assert!(drain(&mut rx).is_empty());
}

#[test]
fn release_ends_the_hold_and_forgets_the_failures() {
    let (e, _rx) = engine();
    for i in 0..5 {
        ask(
            &e,
            &format!("auth user=alice ip=203.0.113.9 result=fail pwhash={i:x}"),
            i,
        );
    }
    let report = e.account_report("alice", t(6));
    assert_eq!(report["hold"]["rule"], "failed_logins_account");
    let released = e.release("alice", t(7));
    assert_eq!(released["released"], true);
    assert!(released["hold"].is_object());
    assert_eq!(
        ask(&e, "auth user=alice ip=203.0.113.9 result=ok", 8),
        "accept"
    );
    // One more failure does not re-hold at once: the old ones were forgotten.
    ask(
        &e,
        "auth user=alice ip=203.0.113.9 result=fail pwhash=99",
        9,
    );
    assert_eq!(
        ask(&e, "auth user=alice ip=203.0.113.9 result=ok", 10),
        "accept"
    );
    assert!(e.account_report("alice", t(11))["hold"].is_null());
}

#[test]
fn the_same_wrong_password_counts_once() {
    let (e, mut rx) = engine();
    for i in 0..10 {
        ask(
            &e,
            "auth user=alice ip=203.0.113.9 result=fail pwhash=0945",
            i,
        );
    }
    assert_eq!(
        ask(&e, "auth user=alice ip=203.0.113.9 result=ok", 20),
        "accept"
    );
    assert!(drain(&mut rx).is_empty());
}

#[test]
fn failures_add_up_across_protocols_and_case() {
    let (e, _rx) = engine();
    for i in 0..3 {
        ask(
            &e,
            &format!("login user=Alice ip=192.0.2.4 result=fail protocol=imap pwhash={i}"),
            i,
        );
    }
    for i in 3..5 {
        ask(
            &e,
            &format!("auth user=alice ip=192.0.2.4 result=fail pwhash={i}"),
            i,
        );
    }
    assert!(ask(&e, "auth user=ALICE ip=192.0.2.4 result=ok", 6).starts_with("defer "));
}

#[test]
fn many_failures_from_one_address_defer_its_auth_only() {
    let (e, mut rx) = engine();
    for i in 0..20 {
        // Spread over accounts so no account reaches its own threshold.
        let line = format!(
            "auth user=u{} ip=198.51.100.7 result=fail pwhash={i:x}",
            i % 5
        );
        assert_eq!(ask(&e, &line, i), "accept");
    }
    let alerts = drain(&mut rx);
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].rule, "failed_logins_ip");
    assert_eq!(alerts[0].response.as_str(), "defer_ip_auth");
    let blocked = ask(&e, "auth user=carol ip=198.51.100.7 result=ok", 30);
    assert!(
        blocked.starts_with("defer too many authentication failures"),
        "{blocked}"
    );
    assert_eq!(
        ask(&e, "auth user=carol ip=198.51.100.8 result=ok", 31),
        "accept"
    );
    assert_eq!(ask(&e, "mail user=carol ip=198.51.100.7", 32), "accept");
    assert_eq!(
        ask(&e, "auth user=carol ip=198.51.100.7 result=ok", 19 + 3600),
        "accept"
    );
    assert_eq!(
        e.unblock("198.51.100.7".parse().unwrap(), t(40))["unblocked"],
        true
    );
}

#[test]
fn recipient_ceiling_defers_after_200_and_alerts_once() {
    let (e, mut rx) = engine();
    let mut accepted = 0;
    for i in 0..250 {
        let r = ask(
            &e,
            &format!("rcpt user=bulk ip=192.0.2.8 rcpt=r{i}@example.org"),
            i / 10,
        );
        if r == "accept" {
            accepted += 1;
        } else {
            assert!(r.starts_with("defer hourly recipient limit"), "{r}");
        }
    }
    assert_eq!(accepted, 200);
    let alerts = drain(&mut rx);
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].rule, "recipient_ceiling");
    assert_eq!(alerts[0].count, 200);
    // Not a hold: MAIL and AUTH go on; recipients resume when the hour has passed.
    assert_eq!(ask(&e, "mail user=bulk ip=192.0.2.8", 30), "accept");
    assert!(e.account_report("bulk", t(30))["hold"].is_null());
    assert!(ask(&e, "rcpt user=bulk ip=192.0.2.8 rcpt=x@example.org", 3599).starts_with("defer"));
    assert_eq!(
        ask(&e, "rcpt user=bulk ip=192.0.2.8 rcpt=x@example.org", 3600),
        "accept"
    );
}

#[test]
fn a_reload_changes_thresholds_and_keeps_state() {
    let (e, _rx) = engine();
    ask(&e, "auth user=dave ip=192.0.2.1 result=fail pwhash=1", 0);
    ask(&e, "auth user=dave ip=192.0.2.1 result=fail pwhash=2", 1);
    let mut rules = RulesConfig::default();
    rules.failed_logins_account.threshold = 3;
    e.set_rules(rules);
    ask(&e, "auth user=dave ip=192.0.2.1 result=fail pwhash=3", 2);
    assert!(ask(&e, "auth user=dave ip=192.0.2.1 result=ok", 3).starts_with("defer"));
}

#[test]
fn ping_and_connect() {
    let (e, _rx) = engine();
    assert_eq!(ask(&e, "ping", 0), "pong");
    assert_eq!(ask(&e, "connect ip=192.0.2.1 helo=x", 0), "accept");
}
