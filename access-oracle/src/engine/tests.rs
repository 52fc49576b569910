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

mod log_events {
    //! Log events into the engine: counted once, whatever the live path saw.

    use super::*;
    use crate::sources::{EventKind, LineContext, LogEvent, Protocol};

    fn ev(kind: EventKind, at: i64, user: &str, ip: &str) -> LogEvent {
        let ctx = LineContext::new("mainlog", jiff::tz::TimeZone::UTC, t(at));
        let mut e = LogEvent::new(kind, t(at), &ctx);
        e.user = Some(user.into());
        e.ip = ip.parse().ok();
        e
    }

    fn auth(at: i64, user: &str, ip: &str, result: Outcome) -> LogEvent {
        let mut e = ev(EventKind::Auth, at, user, ip);
        e.result = Some(result);
        e.protocol = Some(Protocol::Smtp);
        e
    }

    #[test]
    fn a_failure_reported_live_is_not_counted_again_from_the_log() {
        let (e, mut rx) = engine();
        for i in 0..3 {
            ask(
                &e,
                &format!("auth user=alice ip=203.0.113.9 result=fail pwhash={i}"),
                i,
            );
        }
        for i in 0..3 {
            let o = e.observe(&auth(i + 1, "alice", "203.0.113.9", Outcome::Fail));
            assert!(!o.counted, "log copy {i} matched its live report");
        }
        assert_eq!(
            e.account_report("alice", t(10))["failed_logins"]["count"],
            3
        );
        assert!(drain(&mut rx).is_empty());
    }

    #[test]
    fn log_only_failures_trip_the_same_rule_and_hold_live_requests() {
        let (e, mut rx) = engine();
        for i in 0..5 {
            let o = e.observe(&auth(i, "bob", "198.51.100.3", Outcome::Fail));
            assert!(o.counted);
            assert_eq!(o.verdict, Some(Reply::Accept));
        }
        assert_eq!(drain(&mut rx).len(), 1);
        let o = e.observe(&auth(6, "bob", "198.51.100.3", Outcome::Ok));
        assert!(
            matches!(o.verdict, Some(Reply::Defer(_))),
            "replay would have deferred it"
        );
        assert!(ask(&e, "auth user=bob ip=198.51.100.3 result=ok", 7).starts_with("defer"));
        assert_eq!(e.stats.snapshot().log_attempts, 6);
    }

    #[test]
    fn dovecot_summaries_count_only_what_their_session_did_not_report() {
        let (e, mut rx) = engine();
        let imap_fail = |at: i64, session: &str, attempts: Option<u32>| {
            let mut a = auth(at, "gina", "192.0.2.30", Outcome::Fail);
            a.protocol = Some(Protocol::Imap);
            a.session = Some(session.into());
            a.attempts = attempts;
            a
        };
        // auth_verbose = yes: two attempt lines (the auth process names no service),
        // then the login process's summary of two.
        let mut attempt = imap_fail(0, "s1", None);
        attempt.protocol = None;
        e.observe(&attempt);
        attempt.time = t(1);
        e.observe(&attempt);
        assert!(!e.observe(&imap_fail(2, "s1", Some(2))).counted);
        let report = e.account_report("gina", t(3));
        assert_eq!(report["failed_logins"]["count"], 2);
        assert_eq!(report["totals"]["refused"], 0);
        let protocols: Vec<_> = report["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["protocol"].clone())
            .collect();
        assert_eq!(protocols, ["imap", "imap"], "named from the summary");
        // auth_verbose = no: only the summary, which counts all its attempts.
        assert!(e.observe(&imap_fail(4, "s2", Some(3))).counted);
        assert_eq!(drain(&mut rx).len(), 1, "2 + 3 failures hold the account");
    }

    #[test]
    fn exim_arrivals_of_one_session_are_one_login() {
        let (e, _rx) = engine();
        for i in 0..5 {
            e.observe(&auth(i * 60, "hank", "192.0.2.40", Outcome::Ok));
        }
        assert_eq!(e.account_report("hank", t(400))["totals"]["logins_ok"], 1);
    }

    #[test]
    fn a_temporary_failure_is_not_a_wrong_password() {
        let (e, _rx) = engine();
        for i in 0..10 {
            let mut a = auth(i, "carol", "192.0.2.5", Outcome::Fail);
            a.temporary = Some(true);
            assert!(!e.observe(&a).counted);
        }
        assert_eq!(
            ask(&e, "auth user=carol ip=192.0.2.5 result=ok", 20),
            "accept"
        );
    }

    #[test]
    fn arrivals_count_recipients_unless_counted_live() {
        let (e, mut rx) = engine();
        let mut arrival = ev(EventKind::Arrival, 0, "dave", "192.0.2.8");
        arrival.msgid = Some("1abcde-000001-AB".into());
        arrival.rcpt_count = Some(250);
        let o = e.observe(&arrival);
        assert_eq!(o.rcpts_deferred, 50, "the ceiling would have deferred 50");
        let alerts = drain(&mut rx);
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].rule, "recipient_ceiling");
        // An account the live path sees submitting is not counted twice.
        ask(&e, "rcpt user=erin ip=192.0.2.9 rcpt=x@example.org", 0);
        ask(&e, "data user=erin ip=192.0.2.9 rcpts=1", 1);
        let mut arrival = ev(EventKind::Arrival, 2, "erin", "192.0.2.9");
        arrival.msgid = Some("1abcde-000002-AB".into());
        arrival.rcpt_count = Some(1);
        assert!(!e.observe(&arrival).counted);
        let report = e.account_report("erin", t(3));
        assert_eq!(report["recipients"]["count"], 1);
        let sent: Vec<_> = report["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|x| x["what"] == "sent")
            .collect();
        assert_eq!(sent.len(), 1, "{report}");
        assert_eq!(
            sent[0]["msgid"], "1abcde-000002-AB",
            "the live entry got its id"
        );
    }

    #[test]
    fn deliveries_and_logouts_join_the_account_timeline() {
        let (e, _rx) = engine();
        let mut arrival = ev(EventKind::Arrival, 0, "frank", "192.0.2.8");
        arrival.msgid = Some("1zzzzz-000003-CD".into());
        arrival.rcpt_count = Some(1);
        e.observe(&arrival);
        let mut bounce = ev(EventKind::Bounce, 5, "ignored", "");
        bounce.user = None;
        bounce.msgid = Some("1zzzzz-000003-CD".into());
        bounce.recipients = vec!["nobody@example.net".into()];
        assert!(e.observe(&bounce).counted);
        let mut login = auth(10, "frank", "192.0.2.8", Outcome::Ok);
        login.protocol = Some(Protocol::Imap);
        login.session = Some("Sess1".into());
        e.observe(&login);
        let mut logout = ev(EventKind::Logout, 70, "frank", "");
        logout.session = Some("Sess1".into());
        logout.bytes_in = Some(120);
        logout.bytes_out = Some(4567);
        e.observe(&logout);
        let report = e.account_report("frank", t(80));
        let timeline = report["timeline"].as_array().unwrap();
        assert_eq!(timeline.len(), 3, "{report}");
        assert_eq!(timeline[1]["what"], "delivery");
        assert_eq!(timeline[1]["outcome"], "bounced");
        assert_eq!(timeline[2]["what"], "login");
        assert_eq!(timeline[2]["bytes_out"], 4567);
        assert_eq!(timeline[2]["protocol"], "imap");
        assert!(timeline[2]["logout"].is_string());
    }
}
