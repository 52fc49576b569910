//! Responses through real Exim 4.96 and Dovecot 2.3 (issue 14 points 1 to 3): holds
//! that spare the owner's familiar networks, observe mode, and the administrators'
//! `ctl hold`, `ctl block`, `ctl holds` and `ctl unblock`.
//!
//! The clients pose as chosen addresses: `exim -bh IP` for SMTP (Exim's own plaintext
//! authenticator on the test's passwd file, then the oracle's `auth`), IMAP `ID
//! ("x-originating-ip" ...)` for Dovecot, which asks the oracle's policy endpoint
//! before and after the password check and reports the outcome. What the oracle knows
//! is read back with `ctl --json` and the audit trail, polled with a deadline.
//!
//! Build first (see the harness): `cargo build -p access-oracle && cargo build --release
//! -p exim-dlfunc`.

use std::thread;
use std::time::{Duration, Instant};

use exim_access_e2e::oracle::audit;
use exim_access_e2e::{
    Dialogue, Dovecot, DovecotSetup, Exim, Oracle, PASSWORD, POLICY_API_KEY, PolicyServer, Via,
    World,
};
use serde_json::Value;

const DEADLINE: Duration = Duration::from_secs(30);

/// The owner's office network, where it logs in from every day.
const OFFICE: &str = "192.0.2.10";
/// Another address in the office's /24.
const OFFICE_OTHER: &str = "192.0.2.77";
/// The attacker's addresses.
const ATTACKER_IMAP: &str = "198.51.100.7";
const ATTACKER_SMTP: &str = "203.0.113.9";

/// The hold's text (`[rules.failed_logins_account] message`, default).
const HOLD_TEXT: &str =
    "account temporarily locked after repeated authentication failures, try again later";

/// The prefix Exim puts before a `server_condition` text (a deferred AUTH).
const AUTH_DEFER_PREFIX: &str = "Unable to authenticate at present: ";

/// Who `ctl` run by the tests (as root) is in the audit trail and `ctl holds`.
const ROOT: &str = "uid 0 (root)";

/// A tarpit of a second after three failures of an account (not of an address), so
/// that a tarpitted owner would show in the counters.
const TARPIT: &str = "tarpit_after = 3\ntarpit_after_ip = 0\ntarpit_secs = 1";

/// One AUTH PLAIN through `exim -bh ip`; returns the AUTH reply.
fn smtp_auth(exim: &Exim, ip: &str, user: &str, password: &str) -> exim_access_e2e::Reply {
    let session = exim.bh(ip, &Dialogue::auth_only(user, password));
    session.assert_oracle_answered();
    session.reply("AUTH").clone()
}

/// AUTH, MAIL and one RCPT through `exim -bh ip`; returns the three reply codes.
fn smtp_submit(exim: &Exim, ip: &str, user: &str) -> (u16, u16, u16) {
    let session = exim.bh(
        ip,
        &Dialogue::new()
            .ehlo("laptop.example")
            .auth_plain(user, PASSWORD)
            .mail_from(&format!("{user}@example.org"))
            .rcpt_to("bob@example.net")
            .quit(),
    );
    session.assert_oracle_answered();
    (
        session.reply("AUTH").code,
        session.reply("MAIL").code,
        session.reply("RCPT").code,
    )
}

/// Asserts `reply` is Exim's 435 for a deferred AUTH with the hold's text.
fn assert_held(reply: &exim_access_e2e::Reply, context: &str) {
    assert_eq!(reply.code, 435, "{context}: {reply}");
    assert_eq!(
        reply.text(),
        format!("{AUTH_DEFER_PREFIX}{HOLD_TEXT}"),
        "{context}"
    );
}

/// An IMAP LOGIN posing as `ip`; returns `status text`.
fn imap_login(dovecot: &Dovecot, ip: &str, user: &str, password: &str) -> String {
    let mut imap = dovecot.imap();
    imap.id_originating(ip, 40000);
    let reply = imap.login(user, password);
    let line = format!("{} {}", reply.status, reply.text);
    if reply.is_ok() {
        imap.logout();
    }
    line
}

/// Waits (bounded) until `ready` holds for `what`, else panics with the oracle's log.
fn wait_until(oracle: &Oracle, what: &str, mut ready: impl FnMut() -> bool) {
    let until = Instant::now() + DEADLINE;
    while !ready() {
        assert!(
            Instant::now() < until,
            "{what}: not within {DEADLINE:?}\n{}",
            oracle.log_text()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

fn alerts_of(oracle: &Oracle, rule: &str) -> Vec<Value> {
    oracle
        .alerts()
        .into_iter()
        .filter(|a| a["rule"] == rule)
        .collect()
}

/// The policy counters of `ctl status`, by name.
fn policy_counter(oracle: &Oracle, name: &str) -> u64 {
    let status = oracle.ctl_json(&["status"]);
    status["counters"]["policy"]
        .as_array()
        .unwrap_or_else(|| panic!("no policy counters in ctl status: {status:#}"))
        .iter()
        .find(|p| p[0] == name)
        .and_then(|p| p[1].as_u64())
        .unwrap_or_else(|| panic!("no policy counter {name}: {status:#}"))
}

/// The networks of a JSON array of strings, sorted.
fn sorted(v: &Value) -> Vec<String> {
    let mut out: Vec<String> = v
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| s.as_str().unwrap_or_default().to_string())
        .collect();
    out.sort();
    out
}

/// `access-oracle audit search --json ARGS...`, every record.
fn audit_search(world: &World, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["search", "--json"];
    all.extend_from_slice(args);
    let out = audit(world, &all);
    out.assert_success();
    out.stdout_text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// The owner keeps working from its usual network during an attack from elsewhere, over
/// IMAP (Dovecot asking the policy endpoint) and SMTP (Exim); the attacker is refused
/// even with the right password; `ctl account` and `ctl holds` say the hold's scope,
/// and after a restart the hold, its scope and the familiar networks are still there.
#[test]
fn the_owner_keeps_logging_in_from_its_usual_network_while_the_attacker_is_refused() {
    let world = World::new(&["alice"]);
    let mut oracle = Oracle::start_with_policy(&world, TARPIT, "");
    let dovecot = Dovecot::start_with(
        &world,
        &["alice"],
        &DovecotSetup {
            policy: Some(PolicyServer {
                url: oracle.policy_url(),
                api_key: POLICY_API_KEY.into(),
            }),
            exim_auth: false,
        },
    );
    let exim = Exim::new(&world, Via::Dlfunc, oracle.exim_socket());

    // An ordinary day: IMAP and SMTP from the office.
    let reply = imap_login(&dovecot, OFFICE, "alice", PASSWORD);
    assert!(reply.starts_with("OK "), "{reply}");
    assert_eq!(smtp_auth(&exim, OFFICE, "alice", PASSWORD).code, 235);
    wait_until(&oracle, "the office is familiar", || {
        sorted(&oracle.ctl_json(&["account", "alice"])["familiar"]) == ["192.0.2.0/24"]
    });

    // The attack: three wrong IMAP passwords, two wrong SMTP ones, from elsewhere.
    for i in 1..=3 {
        let reply = imap_login(&dovecot, ATTACKER_IMAP, "alice", &format!("guess-{i}"));
        assert_eq!(reply, "NO [AUTHENTICATIONFAILED] Authentication failed.");
    }
    for i in 1..=2 {
        let reply = smtp_auth(&exim, ATTACKER_SMTP, "alice", &format!("guess-smtp-{i}"));
        assert_eq!(reply.code, 535, "{reply}");
    }
    wait_until(&oracle, "the hold", || {
        !oracle.ctl_json(&["account", "alice"])["hold"].is_null()
    });
    let alerts = alerts_of(&oracle, "failed_logins_account");
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    let summary = alerts[0]["summary"].as_str().unwrap();
    assert!(
        summary
            .contains("scope unfamiliar: logins from its familiar networks (192.0.2.0/24) go on"),
        "{summary}"
    );
    assert!(alerts[0].get("observed").is_none(), "{}", alerts[0]);

    // The owner, from the office network, over IMAP and SMTP: as before, not slowed.
    let tarpitted = policy_counter(&oracle, "tarpitted");
    let reply = imap_login(&dovecot, OFFICE_OTHER, "alice", PASSWORD);
    assert!(reply.starts_with("OK "), "the owner over IMAP: {reply}");
    assert_eq!(
        smtp_submit(&exim, OFFICE_OTHER, "alice"),
        (235, 250, 250),
        "the owner over SMTP"
    );
    assert_eq!(
        policy_counter(&oracle, "tarpitted"),
        tarpitted,
        "the owner was not tarpitted"
    );

    // The attacker, with the right password, from its addresses and any other.
    for ip in [ATTACKER_IMAP, ATTACKER_SMTP, "192.0.3.1"] {
        let reply = imap_login(&dovecot, ip, "alice", PASSWORD);
        assert_eq!(reply, format!("NO [ALERT] {HOLD_TEXT}"), "IMAP from {ip}");
        assert_held(
            &smtp_auth(&exim, ip, "alice", PASSWORD),
            &format!("SMTP from {ip}"),
        );
    }
    let log = dovecot.wait_for_log(
        "Authentication failure due to policy server refusal",
        3,
        DEADLINE,
    );
    assert!(log.contains(HOLD_TEXT), "{log}");

    // ctl account and ctl holds say the scope.
    let account = oracle.ctl_json(&["account", "alice"]);
    assert_eq!(
        account["hold"]["rule"], "failed_logins_account",
        "{account:#}"
    );
    assert_eq!(account["hold_scope"]["scope"], "unfamiliar", "{account:#}");
    assert_eq!(sorted(&account["hold_scope"]["spared"]), ["192.0.2.0/24"]);
    assert_eq!(
        sorted(&account["familiar"]),
        ["192.0.2.0/24"],
        "the attacker's networks did not become familiar: {account:#}"
    );
    let text = oracle.ctl(&["account", "alice"]);
    text.assert_success();
    assert!(
        text.stdout_text().contains("unfamiliar") && text.stdout_text().contains("192.0.2.0/24"),
        "{}",
        text.stdout_text()
    );
    let holds = oracle.ctl_json(&["holds"]);
    assert_eq!(holds["holds"][0]["account"], "alice", "{holds:#}");
    assert_eq!(holds["holds"][0]["scope"], "unfamiliar", "{holds:#}");
    assert_eq!(
        holds["holds"][0]["by"], "failed_logins_account",
        "{holds:#}"
    );
    let text = oracle.ctl(&["holds"]);
    text.assert_success();
    assert!(
        text.stdout_text().contains("(unfamiliar sources only)"),
        "{}",
        text.stdout_text()
    );

    // A restart keeps the hold, its scope and the familiar networks.
    oracle.restart();
    let account = oracle.ctl_json(&["account", "alice"]);
    assert_eq!(
        account["hold"]["rule"], "failed_logins_account",
        "{account:#}"
    );
    assert_eq!(account["hold_scope"]["scope"], "unfamiliar", "{account:#}");
    assert_eq!(sorted(&account["hold_scope"]["spared"]), ["192.0.2.0/24"]);
    assert_eq!(sorted(&account["familiar"]), ["192.0.2.0/24"]);
    assert_eq!(
        oracle
            .request("auth user=alice ip=192.0.2.200 result=ok")
            .as_deref(),
        Some("accept")
    );
    assert_eq!(
        oracle
            .request(&format!("auth user=alice ip={ATTACKER_SMTP} result=ok"))
            .as_deref(),
        Some(format!("defer {HOLD_TEXT}").as_str())
    );
    assert_eq!(smtp_auth(&exim, OFFICE, "alice", PASSWORD).code, 235);
    assert_held(
        &smtp_auth(&exim, ATTACKER_IMAP, "alice", PASSWORD),
        "after the restart",
    );

    // Released, then attacked again: the familiar networks kept across the restart
    // make the new hold spare the office again.
    oracle.ctl(&["release", "alice"]).assert_success();
    for i in 1..=5 {
        let reply = smtp_auth(&exim, ATTACKER_SMTP, "alice", &format!("again-{i}"));
        assert_eq!(reply.code, 535, "{reply}");
    }
    wait_until(&oracle, "the second hold", || {
        oracle.ctl_json(&["account", "alice"])["hold_scope"]["scope"] == "unfamiliar"
    });
    assert_eq!(smtp_auth(&exim, OFFICE, "alice", PASSWORD).code, 235);
    assert_held(
        &smtp_auth(&exim, ATTACKER_SMTP, "alice", PASSWORD),
        "the second attack",
    );
}

/// Failures from the owner's own network (someone in the office guessing): the hold
/// covers every source, the office included, and says so.
#[test]
fn failures_from_the_familiar_network_hold_the_account_everywhere() {
    let world = World::new(&["bob"]);
    let oracle = Oracle::start(&world);
    let exim = Exim::new(&world, Via::Dlfunc, oracle.exim_socket());
    assert_eq!(smtp_auth(&exim, OFFICE, "bob", PASSWORD).code, 235);
    for i in 1..=5 {
        let reply = smtp_auth(&exim, OFFICE_OTHER, "bob", &format!("guess-{i}"));
        assert_eq!(reply.code, 535, "{reply}");
    }
    wait_until(&oracle, "the hold", || {
        !oracle.ctl_json(&["account", "bob"])["hold"].is_null()
    });
    assert_held(
        &smtp_auth(&exim, OFFICE, "bob", PASSWORD),
        "from the office",
    );
    assert_held(
        &smtp_auth(&exim, ATTACKER_SMTP, "bob", PASSWORD),
        "from elsewhere",
    );
    let account = oracle.ctl_json(&["account", "bob"]);
    assert_eq!(account["hold_scope"]["scope"], "all", "{account:#}");
    let summary = alerts_of(&oracle, "failed_logins_account")[0]["summary"].clone();
    assert!(
        summary.as_str().unwrap().contains("; scope all"),
        "{summary}"
    );
}

/// `[responses] mode = "observe"`: a brute force and a spraying run raise their alerts
/// with `"observed": true` and what would have been done; every Exim session goes on,
/// the right password from the attacker included, and nothing is in force.
#[test]
fn observe_mode_alerts_and_refuses_nothing_through_exim() {
    let world = World::new(&["alice"]);
    let oracle = Oracle::start_with(
        &world,
        "[responses]\nmode = \"observe\"\n[rules.password_spraying]\naccounts = 3\n",
    );
    let exim = Exim::new(&world, Via::Dlfunc, oracle.exim_socket());
    for i in 1..=8 {
        let reply = smtp_auth(&exim, ATTACKER_SMTP, "alice", &format!("guess-{i}"));
        assert_eq!(reply.code, 535, "{reply}");
    }
    wait_until(&oracle, "the observed hold's alert", || {
        !alerts_of(&oracle, "failed_logins_account").is_empty()
    });
    // The attacker with the right password, and a whole session.
    assert_eq!(
        smtp_submit(&exim, ATTACKER_SMTP, "alice"),
        (235, 250, 250),
        "nothing is refused"
    );
    // Spraying from another address: observed too, and it still connects.
    let sprayer = "198.51.100.66";
    for i in 0..3 {
        let reply = smtp_auth(&exim, sprayer, &format!("user{i}"), "guess");
        assert_eq!(reply.code, 535, "{reply}");
    }
    wait_until(&oracle, "the observed block's alert", || {
        !alerts_of(&oracle, "password_spraying").is_empty()
    });
    let session = exim.bh(sprayer, &Dialogue::auth_only("alice", PASSWORD));
    assert_eq!(
        session.greeting.as_ref().map(|g| g.code),
        Some(220),
        "{}",
        session.transcript()
    );
    assert_eq!(session.reply("AUTH").code, 235, "{}", session.transcript());

    // Each alert once (the eight failures trip the rule at five and after), observed.
    let held = alerts_of(&oracle, "failed_logins_account");
    assert_eq!(held.len(), 1, "{held:#?}");
    let alert = &held[0];
    assert_eq!(alert["observed"], true, "{alert:#}");
    assert!(
        alert["summary"]
            .as_str()
            .unwrap()
            .starts_with("[observed] "),
        "{alert:#}"
    );
    let action = alert["context"]["action"].as_str().unwrap();
    assert!(
        action
            .starts_with("observed only: nothing was done (would have: hold account alice until "),
        "{action}"
    );
    let spray = &alerts_of(&oracle, "password_spraying")[0];
    assert_eq!(spray["observed"], true, "{spray:#}");
    assert!(
        spray["context"]["action"]
            .as_str()
            .unwrap()
            .contains(&format!("would have: block {sprayer} until ")),
        "{spray:#}"
    );
    let holds = oracle.ctl_json(&["holds"]);
    assert_eq!(holds["holds"], Value::Array(vec![]), "{holds:#}");
    assert_eq!(holds["ip_blocks"], Value::Array(vec![]), "{holds:#}");
}

/// `ctl hold`, `ctl block` of a network, `ctl holds` (text and JSON: by whom, why,
/// since, until), `ctl unblock` and `ctl release` through Exim, and the audit trail's
/// record of each with the caller.
#[test]
fn administrators_hold_block_list_and_lift_through_exim_and_are_audited() {
    let world = World::new(&["alice", "bob"]);
    let oracle = Oracle::start(&world);
    let exim = Exim::new(&world, Via::Dlfunc, oracle.exim_socket());

    let out = oracle.ctl(&["hold", "bob", "--for", "10m", "--reason", "phished"]);
    out.assert_success();
    assert!(
        out.stdout_text().contains("held bob on every source until")
            && out.stdout_text().contains("(phished)"),
        "{}",
        out.stdout_text()
    );
    let out = oracle.ctl(&[
        "block",
        "198.51.100.0/24",
        "--for",
        "10m",
        "--reason",
        "scanner",
    ]);
    out.assert_success();
    assert!(
        out.stdout_text().contains("blocked 198.51.100.0/24 until"),
        "{}",
        out.stdout_text()
    );

    // bob is refused from everywhere, his office included; alice is not.
    for ip in [OFFICE, ATTACKER_SMTP] {
        let reply = smtp_auth(&exim, ip, "bob", PASSWORD);
        assert_eq!(reply.code, 435, "bob from {ip}: {reply}");
        assert!(
            reply.text().contains("on hold by the mail administrators"),
            "{reply}"
        );
    }
    assert_eq!(smtp_auth(&exim, OFFICE, "alice", PASSWORD).code, 235);
    // Every address of the /24 is refused at connect; its neighbours are not.
    for ip in ["198.51.100.1", "198.51.100.200"] {
        let session = exim.bh(ip, &Dialogue::auth_only("alice", PASSWORD));
        let greeting = session.greeting.as_ref().expect("a greeting or refusal");
        assert_eq!(greeting.code / 100, 5, "{}", session.transcript());
    }
    assert_eq!(
        smtp_auth(&exim, "198.51.101.1", "alice", PASSWORD).code,
        235
    );

    // ctl holds: who, why, since, until.
    let holds = oracle.ctl_json(&["holds"]);
    let hold = &holds["holds"][0];
    assert_eq!(hold["account"], "bob", "{holds:#}");
    assert_eq!(hold["by"], ROOT, "{holds:#}");
    assert_eq!(hold["reason"], "phished", "{holds:#}");
    assert_eq!(hold["rule"], "admin", "{holds:#}");
    assert_eq!(hold["scope"], "all", "{holds:#}");
    let secs = |v: &Value| {
        v.as_str()
            .unwrap()
            .parse::<jiff::Timestamp>()
            .unwrap()
            .as_second()
    };
    assert_eq!(
        secs(&hold["until"]) - secs(&hold["since"]),
        600,
        "{holds:#}"
    );
    let block = &holds["ip_blocks"][0];
    assert_eq!(block["ip"], "198.51.100.0/24", "{holds:#}");
    assert_eq!(block["by"], ROOT, "{holds:#}");
    assert_eq!(block["reason"], "scanner", "{holds:#}");
    assert_eq!(
        secs(&block["until"]) - secs(&block["since"]),
        600,
        "{holds:#}"
    );
    let text = oracle.ctl(&["holds"]);
    text.assert_success();
    let text = text.stdout_text();
    for needle in [
        "1 account(s) held, 1 address(es) blocked",
        "bob",
        "198.51.100.0/24",
        ROOT,
        "phished",
        "scanner",
    ] {
        assert!(text.contains(needle), "{needle:?} in\n{text}");
    }

    // Lifted: both go on.
    let out = oracle.ctl(&["unblock", "198.51.100.0/24"]);
    out.assert_success();
    let lifted = oracle.ctl_json(&["unblock", "198.51.100.0/24"]);
    assert_eq!(lifted["unblocked"], false, "already lifted: {lifted:#}");
    oracle.ctl(&["release", "bob"]).assert_success();
    assert_eq!(
        smtp_auth(&exim, "198.51.100.1", "alice", PASSWORD).code,
        235
    );
    assert_eq!(smtp_auth(&exim, OFFICE, "bob", PASSWORD).code, 235);
    let holds = oracle.ctl_json(&["holds"]);
    assert_eq!(holds["holds"], Value::Array(vec![]), "{holds:#}");
    assert_eq!(holds["ip_blocks"], Value::Array(vec![]), "{holds:#}");

    // The audit trail: each action with the administrator.
    let mut records = Vec::new();
    wait_until(&oracle, "the release in the audit trail", || {
        records = audit_search(&world, &["--kind", "admin,unblock,release"]);
        records.iter().any(|r| r["kind"] == "release")
    });
    let kinds: Vec<&str> = records
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["admin", "admin", "unblock", "unblock", "release"],
        "{records:#?}"
    );
    assert!(records.iter().all(|r| r["admin"] == ROOT), "{records:#?}");
    assert_eq!(records[0]["action"], "hold");
    assert_eq!(records[0]["user"], "bob");
    assert_eq!(records[0]["reason"], "phished");
    assert_eq!(records[1]["action"], "block");
    assert_eq!(records[1]["reason"], "198.51.100.0/24: scanner");
    assert!(
        records[2]["reason"]
            .as_str()
            .unwrap()
            .contains(&format!("198.51.100.0/24 (by {ROOT})")),
        "{records:#?}"
    );
    assert!(
        records[3]["reason"]
            .as_str()
            .unwrap()
            .starts_with("no block in force on 198.51.100.0/24"),
        "{records:#?}"
    );
    assert_eq!(records[4]["user"], "bob");
}
