//! Responses on an injected clock: holds that spare the owner's familiar networks,
//! observe mode, the administrators' holds and blocks, block sizing and repeats, and
//! what of them survives a restart. Nothing here sleeps.

use super::policy::{PolicyAttempt, PolicySettings, PolicyVerdict};
use super::*;
use crate::admin::views;
use crate::config::RawConfig;
use crate::protocol::parse_line;
use crate::rules::Response;
use serde_json::Value;

const ROOT: &str = "uid 0 (root)";

fn engine_with(raw: &str) -> (Engine, mpsc::Receiver<Arc<Alert>>) {
    let raw: RawConfig = toml::from_str(raw).unwrap();
    let config = Config::from_raw(raw).unwrap();
    Engine::new(&config, t(0))
}

fn engine() -> (Engine, mpsc::Receiver<Arc<Alert>>) {
    engine_with("")
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

fn net(s: &str) -> ipnet::IpNet {
    crate::admin::Net::try_from(s.to_string()).unwrap().0
}

/// `n` wrong passwords for `user` from `ip`, one a second from `at`.
fn fail(e: &Engine, user: &str, ip: &str, n: usize, at: i64) {
    for i in 0..n {
        let line = format!(
            "auth user={user} ip={ip} result=fail pwhash={:x}",
            0x100 + i
        );
        assert_eq!(ask(e, &line, at + i as i64), "accept", "{line}");
    }
}

/// Dovecot's `allow` for an IMAP login.
fn allow(e: &Engine, user: &str, ip: &str, settings: &PolicySettings, at: i64) -> PolicyVerdict {
    e.policy_allow(user, ip.parse().ok(), Some("imap"), settings, t(at))
}

fn no_tarpit() -> PolicySettings {
    PolicySettings {
        tarpit_after: 0,
        tarpit_after_ip: 0,
        ..PolicySettings::default()
    }
}

fn refused(v: &PolicyVerdict) -> bool {
    matches!(v, PolicyVerdict::Reject { .. })
}

fn account_json(e: &Engine, user: &str, at: i64) -> Value {
    serde_json::to_value(views::account(e, user, t(at))).unwrap()
}

fn holds_json(e: &Engine, at: i64) -> Value {
    serde_json::to_value(views::in_force(e, t(at))).unwrap()
}

fn rendered(view: views::View) -> String {
    crate::admin::ctl::render(&view, 200)
}

// ---------------------------------------------------------------------------------------
// Holds that cannot be turned against the owner

/// alice works from 192.0.2.0/24 and 2001:db8:1:2::/64; five wrong passwords from
/// elsewhere hold her account for every source but those.
fn attacked_alice() -> (Engine, mpsc::Receiver<Arc<Alert>>) {
    let (e, rx) = engine();
    assert_eq!(
        ask(&e, "auth user=alice ip=192.0.2.10 result=ok", 0),
        "accept"
    );
    assert_eq!(
        ask(
            &e,
            "login user=alice ip=2001:db8:1:2::10 result=ok protocol=imap",
            1
        ),
        "accept"
    );
    fail(&e, "alice", "198.51.100.7", 5, 10);
    (e, rx)
}

#[test]
fn the_owner_goes_on_from_a_familiar_network_while_the_attacker_is_refused() {
    let (e, mut rx) = attacked_alice();
    let alerts = drain(&mut rx);
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    let a = &alerts[0];
    assert_eq!(
        (a.rule, a.response, a.observed),
        ("failed_logins_account", Response::HoldAccount, false)
    );
    assert!(
        a.summary.contains(
            "scope unfamiliar: logins from its familiar networks (192.0.2.0/24, 2001:db8:1:2::/64) go on"
        ) || a.summary.contains(
            "scope unfamiliar: logins from its familiar networks (2001:db8:1:2::/64, 192.0.2.0/24) go on"
        ),
        "{}",
        a.summary
    );

    // The owner, from anywhere in the familiar networks, every verb.
    for (line, what) in [
        ("auth user=alice ip=192.0.2.55 result=ok", "SMTP AUTH"),
        (
            "login user=alice ip=192.0.2.200 result=ok protocol=imap",
            "IMAP",
        ),
        (
            "login user=alice ip=2001:db8:1:2:aaaa::1 result=ok protocol=pop3",
            "POP3 over IPv6",
        ),
        ("mail user=alice ip=192.0.2.55", "MAIL"),
        ("rcpt user=alice ip=192.0.2.55 rcpt=bob@example.org", "RCPT"),
        ("data user=alice ip=192.0.2.55 rcpts=1", "DATA"),
    ] {
        assert_eq!(
            ask(&e, line, 20),
            "accept",
            "{what} from a familiar network"
        );
    }
    for ip in ["192.0.2.55", "2001:db8:1:2::beef"] {
        assert_eq!(
            allow(&e, "alice", ip, &no_tarpit(), 20),
            PolicyVerdict::Continue,
            "Dovecot allow from {ip}"
        );
    }

    // The attacker, even with the right password, and anyone else unfamiliar.
    for ip in [
        "198.51.100.7",
        "203.0.113.9",
        "192.0.3.1",
        "2001:db8:1:3::10",
    ] {
        for line in [
            format!("auth user=alice ip={ip} result=ok"),
            format!("login user=alice ip={ip} result=ok protocol=imap"),
            format!("mail user=alice ip={ip}"),
            format!("rcpt user=alice ip={ip} rcpt=bob@example.org"),
        ] {
            let reply = ask(&e, &line, 21);
            assert!(
                reply.starts_with("defer account temporarily locked"),
                "{line}: {reply}"
            );
        }
        assert!(
            refused(&allow(&e, "alice", ip, &no_tarpit(), 21)),
            "Dovecot allow from {ip}"
        );
    }
    // Nothing was counted as a new hold or failure by the refusals.
    assert!(drain(&mut rx).is_empty());

    // ctl account and ctl holds say which scope applies.
    let acct = account_json(&e, "alice", 30);
    assert_eq!(acct["hold"]["rule"], "failed_logins_account", "{acct:#}");
    assert_eq!(acct["hold_scope"]["scope"], "unfamiliar", "{acct:#}");
    let mut spared: Vec<&str> = acct["hold_scope"]["spared"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    spared.sort();
    assert_eq!(spared, ["192.0.2.0/24", "2001:db8:1:2::/64"]);
    let text = rendered(views::View::Account(Box::new(views::account(
        &e,
        "alice",
        t(30),
    ))));
    assert!(
        text.contains("unfamiliar sources only") && text.contains("192.0.2.0/24"),
        "{text}"
    );
    let holds = holds_json(&e, 30);
    assert_eq!(holds["holds"][0]["account"], "alice", "{holds:#}");
    assert_eq!(holds["holds"][0]["scope"], "unfamiliar");
    assert_eq!(holds["holds"][0]["by"], "failed_logins_account");
    let text = rendered(views::View::Holds(views::in_force(&e, t(30))));
    assert!(text.contains("(unfamiliar sources only)"), "{text}");

    // After the hold, everything is accepted again.
    assert_eq!(
        ask(&e, "auth user=alice ip=203.0.113.9 result=ok", 14 + 900),
        "accept"
    );
}

#[test]
fn a_refused_login_with_the_right_password_does_not_make_its_network_familiar() {
    let (e, mut rx) = attacked_alice();
    drain(&mut rx);
    // The attacker has the password: refused, and not learnt as alice's network.
    assert!(ask(&e, "auth user=alice ip=198.51.100.7 result=ok", 20).starts_with("defer "));
    assert!(
        ask(
            &e,
            "login user=alice ip=198.51.100.7 result=ok protocol=imap",
            21
        )
        .starts_with("defer ")
    );
    let familiar = e.state().familiar("alice", 0);
    assert!(!familiar.contains(&net("198.51.100.0/24")), "{familiar:?}");
    // So the next attack from there, after this hold, is held the same way.
    let later = 2000;
    fail(&e, "alice", "198.51.100.8", 5, later);
    let alerts = drain(&mut rx);
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert!(
        alerts[0].summary.contains("scope unfamiliar"),
        "{}",
        alerts[0].summary
    );
    assert!(ask(&e, "auth user=alice ip=198.51.100.7 result=ok", later + 10).starts_with("defer "));
    assert_eq!(
        ask(&e, "auth user=alice ip=192.0.2.10 result=ok", later + 10),
        "accept"
    );
}

#[test]
fn failures_from_a_familiar_network_hold_everywhere() {
    let (e, mut rx) = engine();
    ask(&e, "auth user=bob ip=192.0.2.10 result=ok", 0);
    // The failures come from bob's own office network: someone there guesses.
    fail(&e, "bob", "192.0.2.99", 5, 10);
    let alerts = drain(&mut rx);
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert!(
        alerts[0].summary.contains("; scope all"),
        "{}",
        alerts[0].summary
    );
    for ip in ["192.0.2.10", "192.0.2.99", "203.0.113.9"] {
        let reply = ask(&e, &format!("auth user=bob ip={ip} result=ok"), 20);
        assert!(reply.starts_with("defer "), "{ip}: {reply}");
        assert!(refused(&allow(&e, "bob", ip, &no_tarpit(), 20)), "{ip}");
    }
    assert!(ask(&e, "mail user=bob ip=192.0.2.10", 20).starts_with("defer "));
    let acct = account_json(&e, "bob", 30);
    assert_eq!(acct["hold_scope"]["scope"], "all", "{acct:#}");
    assert_eq!(holds_json(&e, 30)["holds"][0]["scope"], "all");
}

#[test]
fn an_account_with_no_familiar_network_is_held_everywhere() {
    let (e, mut rx) = engine();
    fail(&e, "carol", "198.51.100.7", 5, 10);
    let alerts = drain(&mut rx);
    assert!(
        alerts[0]
            .summary
            .contains("scope all: the failures came from a familiar network, or none is known"),
        "{}",
        alerts[0].summary
    );
    assert!(ask(&e, "auth user=carol ip=192.0.2.10 result=ok", 20).starts_with("defer "));
}

#[test]
fn hold_scope_all_refuses_every_source_and_says_so() {
    let (e, mut rx) = engine_with("[rules.failed_logins_account]\nhold_scope = \"all\"\n");
    ask(&e, "auth user=alice ip=192.0.2.10 result=ok", 0);
    fail(&e, "alice", "198.51.100.7", 5, 10);
    let alerts = drain(&mut rx);
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert!(
        alerts[0].summary.contains("; scope all"),
        "{}",
        alerts[0].summary
    );
    for ip in ["192.0.2.10", "192.0.2.55", "198.51.100.7"] {
        let reply = ask(&e, &format!("auth user=alice ip={ip} result=ok"), 20);
        assert!(reply.starts_with("defer "), "{ip}: {reply}");
        assert!(refused(&allow(&e, "alice", ip, &no_tarpit(), 20)), "{ip}");
    }
    assert_eq!(account_json(&e, "alice", 30)["hold_scope"]["scope"], "all");
}

#[test]
fn familiar_networks_follow_the_configured_prefixes_and_age() {
    let (e, mut rx) = engine_with(
        "[rules.failed_logins_account]\nfamiliar_prefix_v4 = 16\nfamiliar_prefix_v6 = 48\nfamiliar_days = 2\n",
    );
    ask(&e, "auth user=alice ip=192.0.2.10 result=ok", 0);
    ask(
        &e,
        "login user=alice ip=2001:db8:1:2::10 result=ok protocol=imap",
        0,
    );
    fail(&e, "alice", "198.51.100.7", 5, 10);
    drain(&mut rx);
    assert_eq!(
        ask(&e, "auth user=alice ip=192.0.200.1 result=ok", 20),
        "accept",
        "the /16"
    );
    assert_eq!(
        ask(
            &e,
            "login user=alice ip=2001:db8:1:ffff::1 result=ok protocol=imap",
            20
        ),
        "accept",
        "the /48"
    );
    assert!(ask(&e, "auth user=alice ip=192.1.0.1 result=ok", 20).starts_with("defer "));
    // Three days later the networks are no longer familiar: a new hold covers them.
    let later = 3 * 86_400;
    fail(&e, "alice", "198.51.100.7", 5, later);
    let alerts = drain(&mut rx);
    assert!(
        alerts[0].summary.contains("scope all"),
        "{}",
        alerts[0].summary
    );
    assert!(ask(&e, "auth user=alice ip=192.0.2.10 result=ok", later + 10).starts_with("defer "));
    // The sweep forgets them.
    e.sweep(t(later + 20), 7 * 86_400, 1_000_000);
    assert!(e.state().familiar("alice", 0).is_empty());
}

#[test]
fn the_owner_is_not_tarpitted_from_a_familiar_network() {
    let (e, _rx) = attacked_alice();
    let settings = PolicySettings::default();
    assert_eq!(
        allow(&e, "alice", "192.0.2.55", &settings, 20),
        PolicyVerdict::Continue
    );
    // Before the hold: three failures from elsewhere tarpit the others, not the owner.
    let (e, _rx) = engine();
    ask(&e, "auth user=dave ip=192.0.2.10 result=ok", 0);
    fail(&e, "dave", "198.51.100.7", 3, 10);
    assert_eq!(
        allow(&e, "dave", "192.0.2.55", &settings, 20),
        PolicyVerdict::Continue
    );
    assert!(matches!(
        allow(&e, "dave", "203.0.113.9", &settings, 20),
        PolicyVerdict::Tarpit { .. }
    ));
}

#[test]
fn dovecot_reports_learn_familiar_networks_and_hold_the_same_way() {
    let (e, mut rx) = engine();
    let report = |ip: &str, ok: bool, pw: u64, at: i64| {
        e.policy_report(
            &PolicyAttempt {
                user: "erin",
                ip: ip.parse().ok(),
                protocol: "imap",
                pwhash: Some(pw),
                session: None,
                result: if ok { Outcome::Ok } else { Outcome::Fail },
                mech: None,
                port: None,
                tls: None,
                client: None,
            },
            t(at),
        )
    };
    report("192.0.2.10", true, 1, 0);
    for i in 0..5 {
        report("203.0.113.50", false, 100 + i, 10 + i as i64);
    }
    assert_eq!(drain(&mut rx).len(), 1);
    assert_eq!(
        allow(&e, "erin", "192.0.2.77", &no_tarpit(), 20),
        PolicyVerdict::Continue
    );
    assert!(refused(&allow(
        &e,
        "erin",
        "203.0.113.50",
        &no_tarpit(),
        20
    )));
    assert!(ask(&e, "auth user=erin ip=203.0.113.51 result=ok", 20).starts_with("defer "));
}

#[test]
fn an_administrators_hold_covers_every_source_and_replaces_a_scoped_one() {
    let (e, mut rx) = attacked_alice();
    drain(&mut rx);
    assert_eq!(
        ask(&e, "auth user=alice ip=192.0.2.55 result=ok", 20),
        "accept"
    );
    let held = views::hold(&e, "alice", 3600, Some("stolen laptop"), t(21), ROOT);
    assert_eq!(held.scope, "all");
    assert!(ask(&e, "auth user=alice ip=192.0.2.55 result=ok", 22).starts_with("defer "));
    let acct = account_json(&e, "alice", 23);
    assert_eq!(acct["hold"]["rule"], "admin", "{acct:#}");
    assert_eq!(acct["hold_scope"]["scope"], "all");
    assert_eq!(acct["hold_scope"]["by"], ROOT);
    assert_eq!(acct["hold_scope"]["reason"], "stolen laptop");
    // Release ends it.
    views::release(&e, "alice", t(30), ROOT);
    assert_eq!(
        ask(&e, "auth user=alice ip=198.51.100.7 result=ok", 31),
        "accept"
    );
}

// ---------------------------------------------------------------------------------------
// Observe mode

#[test]
fn observe_mode_alerts_with_what_would_have_been_done_and_refuses_nothing() {
    let (e, mut rx) = engine_with("[responses]\nmode = \"observe\"\n");
    fail(&e, "alice", "198.51.100.7", 5, 0);
    let alerts = drain(&mut rx);
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    let a = &alerts[0];
    assert!(a.observed);
    assert!(a.summary.starts_with("[observed] "), "{}", a.summary);
    let json = serde_json::to_value(&**a).unwrap();
    assert_eq!(json["observed"], true);
    let listed = serde_json::to_value(views::alerts(&e, 10)).unwrap();
    assert_eq!(listed[0]["observed"], true, "ctl alerts --json: {listed:#}");
    let action = a.context.as_ref().unwrap().action.clone().unwrap();
    assert!(
        action
            .starts_with("observed only: nothing was done (would have: hold account alice until "),
        "{action}"
    );
    assert!(a.context.as_ref().unwrap().in_force.is_empty());
    assert_eq!(
        ask(&e, "auth user=alice ip=198.51.100.7 result=ok", 10),
        "accept"
    );
    assert_eq!(
        allow(&e, "alice", "198.51.100.7", &no_tarpit(), 10),
        PolicyVerdict::Continue
    );
    assert!(views::in_force(&e, t(10)).holds.is_empty());
    // More failures while the hold would be in force raise no alert each.
    fail(&e, "alice", "198.51.100.7", 5, 20);
    let more = drain(&mut rx);
    assert!(more.is_empty(), "{more:?}");
    // Spraying: the block is only observed.
    for i in 0..10 {
        ask(
            &e,
            &format!("auth user=user{i} ip=203.0.113.66 result=fail"),
            100 + i,
        );
    }
    let spray: Vec<_> = drain(&mut rx)
        .into_iter()
        .filter(|a| a.rule == "password_spraying")
        .collect();
    assert_eq!(spray.len(), 1);
    assert!(spray[0].observed);
    assert!(
        spray[0]
            .context
            .as_ref()
            .unwrap()
            .action
            .as_deref()
            .unwrap()
            .contains("would have: block 203.0.113.66 until "),
        "{:?}",
        spray[0].context
    );
    assert_eq!(ask(&e, "connect ip=203.0.113.66", 120), "accept");
    assert_eq!(
        ask(&e, "auth user=someone ip=203.0.113.66 result=ok", 120),
        "accept"
    );
    assert!(e.state().blocks().is_empty());
}

#[test]
fn the_recipient_ceiling_only_observed_defers_nothing() {
    let (e, mut rx) = engine_with("[rules.recipient_ceiling]\nmode = \"observe\"\nlimit = 5\n");
    for i in 0..8 {
        assert_eq!(
            ask(
                &e,
                &format!("rcpt user=alice ip=192.0.2.1 rcpt=r{i}@example.org"),
                i
            ),
            "accept",
            "recipient {i}"
        );
    }
    let alerts = drain(&mut rx);
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].rule, "recipient_ceiling");
    assert!(alerts[0].observed);
    // Enforced, the same count defers.
    let (e, _rx) = engine_with("[rules.recipient_ceiling]\nlimit = 5\n");
    let replies: Vec<String> = (0..8)
        .map(|i| {
            ask(
                &e,
                &format!("rcpt user=alice ip=192.0.2.1 rcpt=r{i}@example.org"),
                i,
            )
        })
        .collect();
    assert_eq!(replies.iter().filter(|r| *r == "accept").count(), 5);
}

#[test]
fn a_rule_in_observe_mode_observes_while_the_others_enforce() {
    let (e, mut rx) = engine_with("[rules.failed_logins_account]\nmode = \"observe\"\n");
    fail(&e, "alice", "198.51.100.7", 5, 0);
    let alerts = drain(&mut rx);
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert!(alerts[0].observed && alerts[0].summary.starts_with("[observed] "));
    assert_eq!(
        ask(&e, "auth user=alice ip=198.51.100.7 result=ok", 10),
        "accept"
    );
    // Spraying is enforced.
    for i in 0..10 {
        ask(
            &e,
            &format!("auth user=user{i} ip=203.0.113.66 result=fail"),
            100 + i,
        );
    }
    let spray: Vec<_> = drain(&mut rx)
        .into_iter()
        .filter(|a| a.rule == "password_spraying")
        .collect();
    assert_eq!(spray.len(), 1);
    assert!(!spray[0].observed && !spray[0].summary.starts_with("[observed]"));
    assert!(ask(&e, "connect ip=203.0.113.66", 120).starts_with("deny "));
    // A hold put by the rule before it was switched to observe is not applied either.
    let (e, _rx) = engine();
    fail(&e, "bob", "198.51.100.7", 5, 0);
    assert!(ask(&e, "auth user=bob ip=198.51.100.7 result=ok", 10).starts_with("defer "));
    let mut rules = e.rules().as_ref().clone();
    rules.failed_logins_account.mode = crate::rules::Mode::Observe;
    e.set_rules(rules);
    assert_eq!(
        ask(&e, "auth user=bob ip=198.51.100.7 result=ok", 11),
        "accept"
    );
}

#[test]
fn a_listed_address_is_only_observed() {
    use crate::enrich::lists::ListsConfig;
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("drop.txt");
    std::fs::write(&list, "203.0.113.0/24 ; SBL1\n").unwrap();
    let lists = || Enrichment {
        lists: Arc::new(
            IpLists::open(&ListsConfig {
                block: vec![list.clone()],
                ..ListsConfig::default()
            })
            .unwrap(),
        ),
        ..Enrichment::default()
    };
    let (e, mut rx) = engine_with("[rules.bad_ip]\nmode = \"observe\"\n");
    e.set_enrichment(lists());
    assert_eq!(ask(&e, "connect ip=203.0.113.5", 0), "accept");
    assert_eq!(
        ask(&e, "auth user=alice ip=203.0.113.5 result=ok", 1),
        "accept"
    );
    assert_eq!(
        allow(&e, "alice", "203.0.113.5", &no_tarpit(), 2),
        PolicyVerdict::Continue
    );
    let alerts = drain(&mut rx);
    assert!(!alerts.is_empty());
    assert!(
        alerts.iter().all(|a| a.rule == "bad_ip" && a.observed),
        "{alerts:?}"
    );
    assert!(
        alerts[0]
            .context
            .as_ref()
            .unwrap()
            .action
            .as_deref()
            .unwrap()
            .contains("would have: refuse the request"),
        "{:?}",
        alerts[0].context
    );
    // Enforced, it refuses.
    let (e, _rx) = engine();
    e.set_enrichment(lists());
    assert!(ask(&e, "connect ip=203.0.113.5", 0).starts_with("defer "));
}

#[test]
fn an_administrators_hold_and_block_refuse_even_in_observe_mode() {
    let (e, _rx) = engine_with("[responses]\nmode = \"observe\"\n");
    views::hold(&e, "alice", 600, None, t(0), ROOT);
    assert!(ask(&e, "auth user=alice ip=192.0.2.10 result=ok", 1).starts_with("defer "));
    assert!(refused(&allow(&e, "alice", "192.0.2.10", &no_tarpit(), 1)));
    views::block(&e, net("198.51.100.0/24"), 600, None, t(0), ROOT);
    assert!(ask(&e, "connect ip=198.51.100.9", 1).starts_with("deny "));
}

// ---------------------------------------------------------------------------------------
// Manual actions, block sizing, repeats

#[test]
fn ctl_block_of_a_network_refuses_every_address_in_it() {
    let (e, _rx) = engine();
    let b = views::block(
        &e,
        net("198.51.100.0/24"),
        600,
        Some("scanner farm"),
        t(0),
        ROOT,
    );
    assert_eq!(b.ip, "198.51.100.0/24");
    assert_eq!(
        (b.by.as_str(), b.reason.as_deref()),
        (ROOT, Some("scanner farm"))
    );
    for ip in ["198.51.100.0", "198.51.100.77", "198.51.100.255"] {
        assert!(
            ask(&e, &format!("connect ip={ip}"), 1).starts_with("deny "),
            "{ip}"
        );
        let reply = ask(&e, &format!("auth user=alice ip={ip} result=ok"), 1);
        assert!(reply.starts_with("deny "), "{ip}: {reply}");
        assert!(refused(&allow(&e, "alice", ip, &no_tarpit(), 1)), "{ip}");
    }
    assert_eq!(ask(&e, "connect ip=198.51.101.1", 1), "accept");
    assert_eq!(
        ask(&e, "auth user=alice ip=198.51.99.255 result=ok", 1),
        "accept"
    );
    // ctl holds: who, why, since, until.
    let holds = holds_json(&e, 10);
    let blocked = &holds["ip_blocks"][0];
    assert_eq!(blocked["ip"], "198.51.100.0/24", "{holds:#}");
    assert_eq!(blocked["by"], ROOT);
    assert_eq!(blocked["reason"], "scanner farm");
    assert_eq!(blocked["rule"], "admin");
    assert_eq!(blocked["since"], t(0).to_string());
    assert_eq!(blocked["until"], t(600).to_string());
    let text = rendered(views::View::Holds(views::in_force(&e, t(10))));
    assert!(
        text.contains("198.51.100.0/24") && text.contains(ROOT) && text.contains("scanner farm"),
        "{text}"
    );
    // It ends by itself.
    assert_eq!(ask(&e, "connect ip=198.51.100.77", 600), "accept");
}

#[test]
fn an_ipv6_address_block_covers_its_64_and_unblocking_any_address_in_it_lifts_it() {
    let (e, _rx) = engine();
    let b = views::block(&e, net("2001:db8:5:6::1"), 600, None, t(0), ROOT);
    assert_eq!(b.ip, "2001:db8:5:6::/64");
    assert!(ask(&e, "connect ip=2001:db8:5:6:ffff::2", 1).starts_with("deny "));
    assert_eq!(ask(&e, "connect ip=2001:db8:5:7::1", 1), "accept");
    // An IPv4 address is blocked alone.
    let b = views::block(&e, net("192.0.2.7"), 600, None, t(0), ROOT);
    assert_eq!(b.ip, "192.0.2.7");
    assert_eq!(ask(&e, "connect ip=192.0.2.8", 1), "accept");

    let lifted = views::unblock(&e, net("2001:db8:5:6::abcd"), t(2), ROOT);
    assert!(lifted.unblocked);
    assert_eq!(lifted.lifted.len(), 1);
    assert_eq!(lifted.lifted[0].ip, "2001:db8:5:6::/64");
    assert_eq!(ask(&e, "connect ip=2001:db8:5:6:ffff::2", 3), "accept");
    // Unblocking a network lifts the blocks inside it.
    views::block(&e, net("198.51.100.0/24"), 600, None, t(0), ROOT);
    let lifted = views::unblock(&e, net("198.51.0.0/16"), t(4), ROOT);
    assert_eq!(lifted.lifted.len(), 1);
    assert_eq!(ask(&e, "connect ip=198.51.100.1", 5), "accept");
    // Nothing in force: said so.
    let none = views::unblock(&e, net("203.0.113.1"), t(6), ROOT);
    assert!(!none.unblocked);
    assert_eq!(
        ask(&e, "connect ip=192.0.2.7", 7).split(' ').next(),
        Some("deny")
    );
}

#[test]
fn a_rule_blocks_an_ipv6_sprayer_by_its_64_and_a_repeat_offender_longer() {
    let (e, mut rx) = engine();
    let spray = |ip: &str, at: i64| {
        for i in 0..10 {
            ask(
                &e,
                &format!("auth user=user{i} ip={ip} result=fail"),
                at + i,
            );
        }
    };
    spray("2001:db8:bad::1", 0);
    assert!(ask(&e, "connect ip=2001:db8:bad::2", 20).starts_with("deny "));
    assert_eq!(ask(&e, "connect ip=2001:db8:bad:1::2", 20), "accept");
    let holds = views::in_force(&e, t(20));
    assert_eq!(holds.ip_blocks.len(), 1);
    assert_eq!(holds.ip_blocks[0].ip, "2001:db8:bad::/64");
    assert_eq!(holds.ip_blocks[0].by, "password_spraying");
    assert_eq!(holds.ip_blocks[0].repeats, 0);
    let first_until = t(9 + 3600);
    assert_eq!(holds.ip_blocks[0].hold.until, first_until);
    drain(&mut rx);

    // After it ended, the same /64 sprays again: twice as long, and the alert says so.
    let again = 9 + 3600 + 100;
    spray("2001:db8:bad::3", again);
    let alerts: Vec<_> = drain(&mut rx)
        .into_iter()
        .filter(|a| a.rule == "password_spraying")
        .collect();
    assert_eq!(alerts.len(), 1);
    let until = t(again + 9 + 7200);
    assert_eq!(alerts[0].expires, until, "{}", alerts[0].summary);
    assert!(
        alerts[0].summary.contains(
            "; address blocked for 2 h; the block covers 2001:db8:bad::/64; repeat offender: blocked 1 time(s) before within 30 days, so for longer"
        ),
        "{}",
        alerts[0].summary
    );
    let holds = views::in_force(&e, t(again + 20));
    assert_eq!(holds.ip_blocks[0].repeats, 1);
    assert_eq!(holds.ip_blocks[0].hold.until, until);
    let text = rendered(views::View::Holds(holds));
    assert!(text.contains("(repeat 1)"), "{text}");
    assert!(ask(&e, "connect ip=2001:db8:bad::99", again + 7000).starts_with("deny "));
}

#[test]
fn repeats_follow_the_responses_settings() {
    let (e, mut rx) = engine_with(
        "[responses]\nrepeat_factor = 3.0\nmax_block_secs = 5000\nblock_prefix_v4 = 24\nrepeat_memory_secs = 86400\n",
    );
    let spray = |ip: &str, at: i64| {
        for i in 0..10 {
            ask(
                &e,
                &format!("auth user=user{i} ip={ip} result=fail"),
                at + i,
            );
        }
    };
    spray("203.0.113.66", 0);
    // The /24.
    assert!(ask(&e, "connect ip=203.0.113.1", 20).starts_with("deny "));
    let at = 4000;
    spray("203.0.113.67", at);
    let b = &views::in_force(&e, t(at + 20)).ip_blocks[0];
    assert_eq!(b.ip, "203.0.113.0/24");
    // 3600 * 3 = 10800, capped at 5000.
    assert_eq!(b.hold.until, t(at + 9 + 5000));
    // Lifted early by an administrator: it still counts, from when it was lifted.
    views::unblock(&e, net("203.0.113.0/24"), t(at + 100), ROOT);
    drain(&mut rx);
    // Beyond the memory: back to the rule's hour.
    let much_later = at + 100 + 86_400 + 1;
    e.sweep(t(much_later), 7 * 86_400, 1_000_000);
    spray("203.0.113.68", much_later);
    let b = &views::in_force(&e, t(much_later + 20)).ip_blocks[0];
    assert_eq!((b.repeats, b.hold.until), (0, t(much_later + 9 + 3600)));
}

#[test]
fn the_responses_settings_are_checked() {
    for (raw, needle) in [
        ("[responses]\nmode = \"watch\"\n", "mode"),
        (
            "[responses]\nblock_prefix_v4 = 4\n",
            "block_prefix_v4 must be between 8 and 32",
        ),
        (
            "[responses]\nblock_prefix_v6 = 16\n",
            "block_prefix_v6 must be between 32 and 128",
        ),
        (
            "[responses]\nrepeat_factor = 0.5\n",
            "repeat_factor must be between 1 and 100",
        ),
        (
            "[responses]\nmax_block_secs = 0\n",
            "max_block_secs must be between 1",
        ),
        (
            "[responses]\nrepeat_memory_secs = 99999999\n",
            "repeat_memory_secs must be at most",
        ),
        (
            "[rules.failed_logins_account]\nhold_scope = \"some\"\n",
            "hold_scope",
        ),
        (
            "[rules.failed_logins_account]\nfamiliar_days = 0\n",
            "familiar_days must be between 1 and 365",
        ),
        (
            "[rules.failed_logins_account]\nfamiliar_prefix_v4 = 33\n",
            "familiar_prefix_v4 must be between 8 and 32",
        ),
        (
            "[rules.failed_logins_account]\nfamiliar_prefix_v6 = 8\n",
            "familiar_prefix_v6 must be between 16 and 128",
        ),
    ] {
        let err = match toml::from_str::<RawConfig>(raw) {
            Err(e) => e.to_string(),
            Ok(parsed) => match Config::from_raw(parsed) {
                Err(e) => e.to_string(),
                Ok(_) => panic!("{raw:?} accepted"),
            },
        };
        assert!(err.contains(needle), "{raw:?}: {err}");
    }
}

#[test]
fn manual_actions_are_audited_with_the_administrator() {
    use crate::audit::search::{Query, search};
    use crate::audit::{AuditConfig, Kind};
    let dir = tempfile::tempdir().unwrap();
    let (e, _rx) = engine();
    let config = AuditConfig {
        sync_interval_ms: 60_000,
        ..AuditConfig::default()
    };
    let writer = e.open_audit(&config, dir.path(), false).unwrap().unwrap();
    views::hold(&e, "alice", 600, Some("phished"), t(0), ROOT);
    views::block(&e, net("198.51.100.0/24"), 900, Some("scanner"), t(1), ROOT);
    views::block(&e, net("192.0.2.7"), 900, None, t(2), "uid 1000 (ops)");
    views::unblock(&e, net("198.51.100.5"), t(3), ROOT);
    views::release(&e, "alice", t(4), ROOT);
    writer.close();
    let mut r = Vec::new();
    search(&dir.path().join("audit"), &Query::default(), None, |x| {
        r.push(x)
    })
    .unwrap();
    let kinds: Vec<Kind> = r.iter().map(|r| r.kind).collect();
    assert_eq!(
        kinds,
        [
            Kind::Admin,
            Kind::Admin,
            Kind::Admin,
            Kind::Unblock,
            Kind::Release
        ],
        "{r:#?}"
    );
    assert_eq!(r[0].action.as_deref(), Some("hold"));
    assert_eq!(r[0].user.as_deref(), Some("alice"));
    assert_eq!(r[0].admin.as_deref(), Some(ROOT));
    assert_eq!(r[0].reason.as_deref(), Some("phished"));
    assert_eq!(r[0].until, Some(t(600)));
    assert_eq!(r[1].action.as_deref(), Some("block"));
    assert_eq!(r[1].reason.as_deref(), Some("198.51.100.0/24: scanner"));
    assert_eq!(r[1].until, Some(t(901)));
    assert_eq!(r[2].ip, "192.0.2.7".parse().ok());
    assert_eq!(r[2].admin.as_deref(), Some("uid 1000 (ops)"));
    assert_eq!(r[3].admin.as_deref(), Some(ROOT));
    assert!(
        r[3].reason
            .as_deref()
            .unwrap()
            .contains("198.51.100.0/24 (by uid 0 (root))"),
        "{:?}",
        r[3].reason
    );
    assert_eq!(r[4].admin.as_deref(), Some(ROOT));
}

// ---------------------------------------------------------------------------------------
// What a restart keeps

#[test]
fn holds_with_their_scope_blocks_with_their_history_and_familiar_networks_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (e, _rx) = attacked_alice();
    views::hold(&e, "bob", 3600, Some("phished"), t(20), ROOT);
    views::block(
        &e,
        net("198.51.100.0/24"),
        3600,
        Some("scanner"),
        t(20),
        ROOT,
    );
    // A rule's block, lifted: its history remains for repeats.
    for i in 0..10 {
        ask(
            &e,
            &format!("auth user=user{i} ip=203.0.113.66 result=fail"),
            30 + i,
        );
    }
    views::unblock(&e, net("203.0.113.66"), t(50), ROOT);
    crate::persist::snapshot::write(e.state(), dir.path(), t(60).as_second(), None, None).unwrap();

    let (back, _rx2) = engine();
    crate::persist::snapshot::read(back.state(), dir.path(), t(70).as_second())
        .unwrap()
        .unwrap();
    // alice's hold, scope and spared networks.
    let acct = account_json(&back, "alice", 70);
    assert_eq!(acct["hold"]["rule"], "failed_logins_account", "{acct:#}");
    assert_eq!(acct["hold_scope"]["scope"], "unfamiliar");
    assert_eq!(
        ask(&back, "auth user=alice ip=192.0.2.55 result=ok", 71),
        "accept"
    );
    assert!(ask(&back, "auth user=alice ip=192.0.3.1 result=ok", 71).starts_with("defer "));
    // Her familiar networks, for the next hold.
    let mut familiar = back.state().familiar("alice", 0);
    familiar.sort();
    assert_eq!(familiar, [net("192.0.2.0/24"), net("2001:db8:1:2::/64")]);
    // bob's hold: by whom, why.
    let holds = holds_json(&back, 70);
    let bob = holds["holds"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["account"] == "bob")
        .unwrap();
    assert_eq!(
        (&bob["by"], &bob["reason"], &bob["scope"]),
        (
            &Value::from(ROOT),
            &Value::from("phished"),
            &Value::from("all")
        )
    );
    // The network block with who and why.
    let block = &holds["ip_blocks"][0];
    assert_eq!(
        (&block["ip"], &block["by"], &block["reason"]),
        (
            &Value::from("198.51.100.0/24"),
            &Value::from(ROOT),
            &Value::from("scanner")
        )
    );
    assert!(ask(&back, "connect ip=198.51.100.200", 71).starts_with("deny "));
    // The lifted block's history: the next block of the sprayer is a repeat.
    for i in 0..10 {
        ask(
            &back,
            &format!("auth user=user{i} ip=203.0.113.66 result=fail"),
            100 + i,
        );
    }
    let b = views::in_force(&back, t(120))
        .ip_blocks
        .into_iter()
        .find(|b| b.ip == "203.0.113.66")
        .unwrap();
    assert_eq!(b.repeats, 1);
    assert_eq!(b.hold.until, t(109 + 7200));
}

#[test]
fn a_hold_or_block_for_no_time_or_beyond_a_year_is_refused_with_a_reason() {
    use crate::admin::AdminRequest;
    for json in [
        r#"{"cmd":"hold","user":"alice","for_secs":0}"#,
        r#"{"cmd":"block","ip":"192.0.2.7","for_secs":31536001}"#,
    ] {
        let req: AdminRequest = serde_json::from_str(json).unwrap();
        let why = req.problem().expect(json);
        assert!(
            why.contains("for_secs must be between 1 and 31536000 (a year)"),
            "{why}"
        );
    }
    for json in [
        r#"{"cmd":"hold","user":"alice"}"#,
        r#"{"cmd":"block","ip":"198.51.100.0/24","for_secs":600,"reason":"x"}"#,
        r#"{"cmd":"holds"}"#,
    ] {
        let req: AdminRequest = serde_json::from_str(json).unwrap();
        assert_eq!(req.problem(), None, "{json}");
    }
    // ctl's own --for is checked before anything is sent.
    assert!(crate::cli::parse_duration("0").is_err());
    assert!(crate::cli::parse_duration("366d").is_err());
    assert_eq!(crate::cli::parse_duration("15m"), Ok(900));
    assert_eq!(crate::cli::parse_duration("2h"), Ok(7200));
    assert_eq!(crate::cli::parse_duration("7d"), Ok(7 * 86_400));
    assert_eq!(crate::cli::parse_duration("90"), Ok(90));
    assert_eq!(crate::cli::parse_duration("1w"), Ok(7 * 86_400));
    assert!(crate::cli::parse_duration("1y").is_err());
}
