//! Dovecot 2.3 asks the oracle about every login through its auth policy protocol.
//!
//! Each test runs a real oracle with its policy endpoint on, a real standalone Dovecot
//! configured with the shipped `exim-config/dovecot/conf.d/95-access-oracle.conf` (only
//! the URL and the key include's path replaced) and, where SMTP is involved, real Exim
//! on the shipped configuration with `driver = dovecot` (`auth_dovecot.conf`, Dovecot's
//! socket from `96-exim-auth-client.conf`). The clients pose as other addresses:
//! IMAP `ID ("x-originating-ip" ...)`, POP3 `XCLIENT ADDR=...`, `exim -bh IP`.
//!
//! What the clients see, checked against Dovecot 2.3.19 and Exim 4.96:
//! * a login refused by the policy: IMAP `NO [ALERT] <msg>`, POP3 `-ERR [AUTH] <msg>`,
//!   SMTP through Exim's dovecot authenticator `535 Incorrect authentication data` (Exim
//!   gets a plain FAIL from Dovecot, without the text);
//! * a wrong password: IMAP `NO [AUTHENTICATIONFAILED] Authentication failed.`, POP3
//!   `-ERR [AUTH] Authentication failed.`, SMTP 535;
//! * a tarpit of N seconds: the same answer, N seconds later.
//!
//! Build first (see the harness): `cargo build -p access-oracle && cargo build --release
//! -p exim-dlfunc`.

use std::thread;
use std::time::{Duration, Instant};

use exim_access_e2e::{
    Dialogue, Dovecot, DovecotSetup, Exim, HttpClient, Oracle, PASSWORD, POLICY_API_KEY,
    POLICY_PATH, PolicyServer, Via, World,
};
use serde_json::Value;

/// How long to wait for the oracle to act on a report or a log line to appear.
const DEADLINE: Duration = Duration::from_secs(30);

/// The hold's text (`[rules.failed_logins_account] message`, default).
const HOLD_TEXT: &str =
    "account temporarily locked after repeated authentication failures, try again later";

/// The block's text (`[rules.failed_logins_ip] message`, default).
const BLOCK_TEXT: &str = "too many authentication failures from your address, try again later";

/// Policy settings that switch the tarpit off, for tests about something else.
const NO_TARPIT: &str = "tarpit_after = 0\ntarpit_after_ip = 0";

/// The oracle with its policy endpoint and a Dovecot that asks it (and offers Exim's
/// auth socket).
fn oracle_and_dovecot(
    world: &World,
    users: &[&str],
    policy_toml: &str,
    extra_toml: &str,
) -> (Oracle, Dovecot) {
    let oracle = Oracle::start_with_policy(world, policy_toml, extra_toml);
    let dovecot = Dovecot::start_with(
        world,
        users,
        &DovecotSetup {
            policy: Some(PolicyServer {
                url: oracle.policy_url(),
                api_key: POLICY_API_KEY.into(),
            }),
            exim_auth: true,
        },
    );
    (oracle, dovecot)
}

/// Exim on the shipped configuration, authenticating through Dovecot.
fn exim(world: &World, oracle: &Oracle, dovecot: &Dovecot) -> Exim {
    Exim::new(world, Via::Dlfunc, oracle.exim_socket()).dovecot_auth(&dovecot.exim_auth_socket())
}

/// An IMAP login posing as `ip`; returns the tagged reply (`status text`) and how long
/// the LOGIN took.
fn imap_login(dovecot: &Dovecot, ip: &str, user: &str, password: &str) -> (String, Duration) {
    let mut imap = dovecot.imap();
    imap.id_originating(ip, 40000);
    let started = Instant::now();
    let reply = imap.login(user, password);
    let took = started.elapsed();
    let line = format!("{} {}", reply.status, reply.text);
    if reply.is_ok() {
        imap.logout();
    }
    (line, took)
}

/// A POP3 login posing as `ip`; returns the reply to PASS.
fn pop3_login(dovecot: &Dovecot, ip: &str, user: &str, password: &str) -> String {
    let mut pop3 = dovecot.pop3();
    pop3.xclient(ip, 40001);
    let reply = pop3.login(user, password);
    pop3.quit();
    reply
}

/// One SMTP AUTH PLAIN through `exim -bh ip`; returns the reply code.
fn smtp_auth(exim: &Exim, ip: &str, user: &str, password: &str) -> u16 {
    let dialogue = Dialogue::new()
        .ehlo("client.example")
        .auth_plain(user, password)
        .quit();
    let session = exim.bh(ip, &dialogue);
    session.assert_exim_healthy();
    let reply = session.reply("AUTH");
    reply.code
}

/// `ctl --json account USER`.
fn account(oracle: &Oracle, user: &str) -> Value {
    oracle.ctl_json(&["account", user])
}

/// Waits (bounded) until `ready` holds for the account's report.
fn wait_account(oracle: &Oracle, user: &str, what: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let until = Instant::now() + DEADLINE;
    loop {
        let a = account(oracle, user);
        if ready(&a) {
            return a;
        }
        assert!(
            Instant::now() < until,
            "{what}: not within {DEADLINE:?}:\n{a:#}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// The account's failure count in the rule's window.
fn failures(a: &Value) -> u64 {
    a["failed_logins"]["count"].as_u64().unwrap_or(0)
}

/// Logins in the account's timeline as (protocol, ip, result), oldest first.
fn logins(a: &Value) -> Vec<(String, String, String)> {
    a["timeline"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["what"] == "login")
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or("").to_string();
            (s("protocol"), s("ip"), s("result"))
        })
        .collect()
}

/// The shipped configuration with `auth_dovecot.conf` passes `exim -bV`, in both ways
/// of asking the oracle.
#[test]
fn the_dovecot_variant_of_the_shipped_configuration_parses() {
    let world = World::new(&["alice"]);
    let socket = world.oracle_dir().join("exim.sock");
    for via in [Via::Dlfunc, Via::Readsocket] {
        Exim::new(&world, via, &socket)
            .dovecot_auth(&world.path("dovecot/run/auth-exim"))
            .check_config()
            .assert_success();
    }
}

/// 3 IMAP failures and 2 SMTP failures (Exim → Dovecot → policy, protocol smtp) make
/// 5: the account is held, and IMAP, POP3 and SMTP all refuse it, even with the right
/// password, from any address.
#[test]
fn failures_over_imap_and_smtp_hold_the_account_everywhere() {
    let world = World::new(&["alice"]);
    let (oracle, dovecot) = oracle_and_dovecot(&world, &["alice"], NO_TARPIT, "");
    let exim = exim(&world, &oracle, &dovecot);

    for i in 1..=3 {
        let (reply, _) = imap_login(
            &dovecot,
            "198.51.100.7",
            "alice",
            &format!("imap-wrong-{i}"),
        );
        assert_eq!(reply, "NO [AUTHENTICATIONFAILED] Authentication failed.");
    }
    for i in 1..=2 {
        assert_eq!(
            smtp_auth(&exim, "203.0.113.9", "alice", &format!("smtp-wrong-{i}")),
            535
        );
    }
    let a = wait_account(&oracle, "alice", "the hold", |a| !a["hold"].is_null());
    assert_eq!(failures(&a), 5, "{a:#}");
    assert_eq!(a["hold"]["rule"], "failed_logins_account");
    let mut seen = logins(&a);
    seen.sort();
    assert_eq!(
        seen,
        [
            ("imap".into(), "198.51.100.7".into(), "fail".into()),
            ("imap".into(), "198.51.100.7".into(), "fail".into()),
            ("imap".into(), "198.51.100.7".into(), "fail".into()),
            ("smtp".into(), "203.0.113.9".into(), "fail".into()),
            ("smtp".into(), "203.0.113.9".into(), "fail".into()),
        ],
        "{a:#}"
    );
    let alerts = oracle.wait_for_alerts(1, DEADLINE);
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["rule"], "failed_logins_account");
    assert_eq!(alerts[0]["count"], 5);

    // The right password, from addresses never seen: refused everywhere.
    let (imap, _) = imap_login(&dovecot, "192.0.2.21", "alice", PASSWORD);
    assert_eq!(imap, format!("NO [ALERT] {HOLD_TEXT}"));
    let pop3 = pop3_login(&dovecot, "192.0.2.22", "alice", PASSWORD);
    assert_eq!(pop3, format!("-ERR [AUTH] {HOLD_TEXT}"));
    assert_eq!(smtp_auth(&exim, "192.0.2.23", "alice", PASSWORD), 535);
    let log = dovecot.wait_for_log(
        "Authentication failure due to policy server refusal",
        3,
        DEADLINE,
    );
    assert!(log.contains(HOLD_TEXT), "{log}");
    // Refused attempts never reached the password check: not counted as failures.
    let a = account(&oracle, "alice");
    assert_eq!(failures(&a), 5, "{a:#}");
    assert!(a["totals"]["refused"].as_u64().unwrap() >= 3, "{a:#}");
}

/// Right and wrong passwords over IMAP and POP3, each client posing as another address
/// (IPv4 and IPv6): every login reaches the oracle with its protocol, address and
/// outcome, and the right passwords get in.
#[test]
fn imap_and_pop3_logins_are_recorded_with_their_presented_addresses() {
    let users = ["alice", "bob", "carol"];
    let world = World::new(&users);
    let (oracle, dovecot) = oracle_and_dovecot(&world, &users, NO_TARPIT, "");

    let (reply, _) = imap_login(&dovecot, "198.51.100.11", "alice", PASSWORD);
    assert!(reply.starts_with("OK "), "{reply}");
    let (reply, _) = imap_login(&dovecot, "198.51.100.12", "bob", "wrong");
    assert_eq!(reply, "NO [AUTHENTICATIONFAILED] Authentication failed.");
    let (reply, _) = imap_login(&dovecot, "2001:db8::5", "carol", PASSWORD);
    assert!(reply.starts_with("OK "), "{reply}");
    assert_eq!(
        pop3_login(&dovecot, "192.0.2.31", "bob", PASSWORD),
        "+OK Logged in."
    );
    assert_eq!(
        pop3_login(&dovecot, "203.0.113.32", "alice", "wrong"),
        "-ERR [AUTH] Authentication failed."
    );

    let alice = wait_account(&oracle, "alice", "alice's two logins", |a| {
        logins(a).len() == 2
    });
    assert_eq!(
        logins(&alice),
        [
            ("imap".into(), "198.51.100.11".into(), "ok".into()),
            ("pop3".into(), "203.0.113.32".into(), "fail".into()),
        ],
        "{alice:#}"
    );
    assert_eq!(failures(&alice), 1);
    assert_eq!(alice["last_login"]["protocol"], "imap");
    let bob = wait_account(&oracle, "bob", "bob's two logins", |a| logins(a).len() == 2);
    assert_eq!(
        logins(&bob),
        [
            ("imap".into(), "198.51.100.12".into(), "fail".into()),
            ("pop3".into(), "192.0.2.31".into(), "ok".into()),
        ],
        "{bob:#}"
    );
    let carol = wait_account(&oracle, "carol", "carol's login", |a| logins(a).len() == 1);
    assert_eq!(
        logins(&carol),
        [("imap".into(), "2001:db8::5".into(), "ok".into())]
    );

    // Dovecot asks `allow` before the password check and again after a right one.
    let counters = policy_counters(&oracle);
    assert_eq!(counters["report_ok"], 3, "{counters:?}");
    assert_eq!(counters["report_fail"], 2, "{counters:?}");
    assert_eq!(counters["allow"], 3 * 2 + 2, "{counters:?}");
    assert_eq!(counters["continued"], counters["allow"], "{counters:?}");
    assert_eq!(counters["unauthorized"], 0, "{counters:?}");
}

/// The policy counters of `ctl status`, by name.
fn policy_counters(oracle: &Oracle) -> std::collections::BTreeMap<String, u64> {
    let status = oracle.ctl_json(&["status"]);
    status["counters"]["policy"]
        .as_array()
        .unwrap_or_else(|| panic!("no policy counters in ctl status: {status:#}"))
        .iter()
        .map(|p| (p[0].as_str().unwrap().to_string(), p[1].as_u64().unwrap()))
        .collect()
}

/// One address failing on several accounts is blocked (the address rule, threshold 3
/// here): every account's login from it is refused, also with the right password, and
/// the same account from another address gets in.
#[test]
fn an_address_failing_on_many_accounts_is_refused_for_all() {
    let users = ["u1", "u2", "u3", "dave"];
    let world = World::new(&users);
    let (oracle, dovecot) = oracle_and_dovecot(
        &world,
        &users,
        NO_TARPIT,
        "[rules.failed_logins_ip]\nthreshold = 3\n",
    );
    let (reply, _) = imap_login(&dovecot, "203.0.113.50", "u1", "guess");
    assert_eq!(reply, "NO [AUTHENTICATIONFAILED] Authentication failed.");
    let (reply, _) = imap_login(&dovecot, "203.0.113.50", "u2", "guess");
    assert_eq!(reply, "NO [AUTHENTICATIONFAILED] Authentication failed.");
    assert_eq!(
        pop3_login(&dovecot, "203.0.113.50", "u3", "guess"),
        "-ERR [AUTH] Authentication failed."
    );
    let alerts = oracle.wait_for_alerts(1, DEADLINE);
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["rule"], "failed_logins_ip");
    assert_eq!(alerts[0]["ip"], "203.0.113.50");

    let (reply, _) = imap_login(&dovecot, "203.0.113.50", "dave", PASSWORD);
    assert_eq!(reply, format!("NO [ALERT] {BLOCK_TEXT}"));
    assert_eq!(
        pop3_login(&dovecot, "203.0.113.50", "dave", PASSWORD),
        format!("-ERR [AUTH] {BLOCK_TEXT}")
    );
    let (reply, _) = imap_login(&dovecot, "203.0.113.51", "dave", PASSWORD);
    assert!(reply.starts_with("OK "), "another address: {reply}");
}

/// After `tarpit_after` failures of an account (2 here, tarpit 2 s), its next logins
/// wait before the password is checked, from any address; the right password still gets
/// in, just later. Another account is not slowed down.
#[test]
fn an_ongoing_brute_force_is_tarpitted() {
    let users = ["erin", "frank"];
    let world = World::new(&users);
    let (oracle, dovecot) = oracle_and_dovecot(
        &world,
        &users,
        "tarpit_after = 2\ntarpit_after_ip = 0\ntarpit_secs = 2",
        "",
    );
    for i in 1..=2 {
        let (reply, _) = imap_login(&dovecot, "198.51.100.60", "erin", &format!("wrong-{i}"));
        assert_eq!(reply, "NO [AUTHENTICATIONFAILED] Authentication failed.");
    }
    wait_account(&oracle, "erin", "two failures", |a| failures(a) == 2);

    let (reply, took) = imap_login(&dovecot, "198.51.100.61", "erin", "wrong-3");
    assert_eq!(reply, "NO [AUTHENTICATIONFAILED] Authentication failed.");
    assert!(
        took >= Duration::from_millis(1500),
        "a wrong password, tarpitted: {took:?}"
    );
    let (reply, took) = imap_login(&dovecot, "198.51.100.62", "erin", PASSWORD);
    assert!(reply.starts_with("OK "), "{reply}");
    assert!(
        took >= Duration::from_millis(1500),
        "the right one too: {took:?}"
    );
    let (reply, _) = imap_login(&dovecot, "198.51.100.60", "frank", PASSWORD);
    assert!(reply.starts_with("OK "), "{reply}");

    let log = dovecot.wait_for_log("Policy check action is tarpit 2 second(s)", 2, DEADLINE);
    // Three `allow` answers were a tarpit: before the third password, and before and
    // after the right one (Dovecot waits only before a password check).
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("Policy check action is tarpit 2 second(s)"))
            .count(),
        3,
        "{log}"
    );
    let counters = policy_counters(&oracle);
    assert_eq!(counters["tarpitted"], 3, "{counters:?}");
    let erin = account(&oracle, "erin");
    assert_eq!(failures(&erin), 3, "{erin:#}");
    assert!(
        erin["hold"].is_null(),
        "below the hold's threshold: {erin:#}"
    );
}

/// With `auth_policy_reject_on_fail = no` (the shipped setting), a stopped oracle costs
/// nothing: IMAP, POP3 and SMTP logins work as if there were no policy.
#[test]
fn logins_go_on_while_the_oracle_is_down() {
    let world = World::new(&["alice"]);
    let (mut oracle, dovecot) = oracle_and_dovecot(&world, &["alice"], "", "");
    let exim = exim(&world, &oracle, &dovecot);
    oracle.stop();

    let (reply, _) = imap_login(&dovecot, "198.51.100.70", "alice", PASSWORD);
    assert!(reply.starts_with("OK "), "{reply}");
    let (reply, _) = imap_login(&dovecot, "198.51.100.70", "alice", "wrong");
    assert_eq!(reply, "NO [AUTHENTICATIONFAILED] Authentication failed.");
    assert_eq!(
        pop3_login(&dovecot, "198.51.100.71", "alice", PASSWORD),
        "+OK Logged in."
    );
    assert_eq!(smtp_auth(&exim, "198.51.100.72", "alice", PASSWORD), 235);
    assert_eq!(smtp_auth(&exim, "198.51.100.72", "alice", "wrong"), 535);
    let log = dovecot.wait_for_log("Policy server HTTP error", 1, DEADLINE);
    assert!(
        !log.contains("policy server refusal"),
        "nothing was refused:\n{log}"
    );
}

/// ANSI colour sequences removed (the oracle logs to a file in colour).
fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A Dovecot with the wrong key is refused (401) and logged with its address; its
/// logins go on unjudged (nothing counted). The endpoint refuses a missing key and
/// tells a malformed body from a good one.
#[test]
fn a_wrong_api_key_is_refused_and_logged() {
    let world = World::new(&["alice"]);
    let oracle = Oracle::start_with_policy(&world, NO_TARPIT, "");
    let dovecot = Dovecot::start_with(
        &world,
        &["alice"],
        &DovecotSetup {
            policy: Some(PolicyServer {
                url: oracle.policy_url(),
                api_key: "not-the-key-of-this-oracle-42".into(),
            }),
            exim_auth: false,
        },
    );
    let (reply, _) = imap_login(&dovecot, "198.51.100.80", "alice", "wrong");
    assert_eq!(reply, "NO [AUTHENTICATIONFAILED] Authentication failed.");
    let (reply, _) = imap_login(&dovecot, "198.51.100.80", "alice", PASSWORD);
    assert!(reply.starts_with("OK "), "{reply}");
    let log = dovecot.wait_for_log("Policy server HTTP error: 401", 1, DEADLINE);
    assert!(!log.contains("policy server refusal"), "{log}");

    // allow + report for the wrong password, allow + allow + report for the right one:
    // each counted exactly; the warning is rate-limited (the first is logged, the rest
    // summed up later), so a flood of wrong keys cannot flood the log.
    let until = Instant::now() + DEADLINE;
    while policy_counters(&oracle)["unauthorized"] < 5 {
        assert!(Instant::now() < until, "{:?}", policy_counters(&oracle));
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(policy_counters(&oracle)["unauthorized"], 5);
    let log = plain(&oracle.log_text());
    let refused: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("policy request refused: missing or wrong API key"))
        .collect();
    assert!(
        (1..=2).contains(&refused.len()),
        "the first refusal logged, the rest held back: {}",
        oracle.log_text()
    );
    for line in &refused {
        assert!(line.contains(" WARN "), "{line}");
        assert!(line.contains("peer=127.0.0.1:"), "{line}");
        assert!(line.contains("key=\"wrong\""), "{line}");
        assert!(line.contains("header=\"x-api-key\""), "{line}");
    }
    assert_eq!(account(&oracle, "alice")["tracked"], false);

    // The same endpoint, asked directly.
    let mut http = HttpClient::connect(oracle.policy_port());
    let target = format!("{POLICY_PATH}?command=allow");
    let body = r#"{"login":"alice","remote":"192.0.2.90","protocol":"imap"}"#;
    let missing = http.post(&target, None, body);
    assert_eq!(missing.status, 401);
    assert_eq!(missing.json()["error"], "missing or wrong API key");
    let malformed = http.post(&target, Some(POLICY_API_KEY), r#"{"login":"alice""#);
    assert_eq!(malformed.status, 400);
    let why = malformed.json()["error"].as_str().unwrap().to_string();
    assert!(why.starts_with("malformed policy request: "), "{why}");
    let ok = http.post(&target, Some(POLICY_API_KEY), body);
    assert_eq!(
        (ok.status, ok.body.as_str()),
        (200, r#"{"status":0,"msg":""}"#)
    );
    let counters = policy_counters(&oracle);
    assert_eq!(counters["unauthorized"], 6, "{counters:?}");
    assert_eq!(counters["malformed"], 1, "{counters:?}");
    let log = plain(&oracle.log_text());
    assert!(
        log.lines()
            .filter(|l| l.contains("policy request refused"))
            .count()
            <= 2,
        "six refusals, at most two lines: {log}"
    );
}

/// One wrong password tried over IMAP, POP3, SMTP through Dovecot and SMTP through
/// Exim's own authenticator (the library's hash) counts once: Dovecot and the library
/// hash it with the same nonce.
#[test]
fn one_wrong_password_over_every_protocol_counts_once() {
    let world = World::new(&["alice"]);
    let (oracle, dovecot) = oracle_and_dovecot(&world, &["alice"], NO_TARPIT, "");
    let via_dovecot = exim(&world, &oracle, &dovecot);
    let via_library = Exim::new(&world, Via::Dlfunc, oracle.exim_socket());
    let stale = "last-years-password";
    let (reply, _) = imap_login(&dovecot, "198.51.100.90", "alice", stale);
    assert_eq!(reply, "NO [AUTHENTICATIONFAILED] Authentication failed.");
    assert_eq!(
        pop3_login(&dovecot, "198.51.100.90", "alice", stale),
        "-ERR [AUTH] Authentication failed."
    );
    assert_eq!(
        smtp_auth(&via_dovecot, "198.51.100.90", "alice", stale),
        535
    );
    assert_eq!(
        smtp_auth(&via_library, "198.51.100.90", "alice", stale),
        535
    );
    let a = wait_account(&oracle, "alice", "four failed logins", |a| {
        a["totals"]["logins_failed"] == 4
    });
    assert_eq!(failures(&a), 1, "one password, counted once:\n{a:#}");
    let mut protocols: Vec<String> = logins(&a).into_iter().map(|(p, _, _)| p).collect();
    protocols.sort();
    assert_eq!(protocols, ["imap", "pop3", "smtp", "smtp"]);
}

/// The oracle follows Dovecot's log too: the failures Dovecot reported live are not
/// counted again from their log lines (auth process and login summary).
#[test]
fn dovecot_log_lines_do_not_count_reported_failures_twice() {
    let world = World::new(&["alice"]);
    let log_path = world.path("dovecot/dovecot.log");
    let sources = format!(
        "[[sources]]\npath = {}\nformat = \"dovecot\"\nstart_at = \"beginning\"\npoll_secs = 1\n",
        serde_json::to_string(&log_path.to_string_lossy()).unwrap()
    );
    let (oracle, dovecot) = oracle_and_dovecot(&world, &["alice"], NO_TARPIT, &sources);
    assert_eq!(dovecot.log_path(), log_path);
    for i in 1..=2 {
        let (reply, _) = imap_login(&dovecot, "198.51.100.95", "alice", &format!("wrong-{i}"));
        assert_eq!(reply, "NO [AUTHENTICATIONFAILED] Authentication failed.");
    }
    assert_eq!(
        pop3_login(&dovecot, "198.51.100.96", "alice", "wrong-3"),
        "-ERR [AUTH] Authentication failed."
    );
    dovecot.wait_for_log("auth failed", 3, DEADLINE);
    let until = Instant::now() + DEADLINE;
    loop {
        let status = oracle.ctl_json(&["status"]);
        let read = status["counters"]["source_lines"].as_u64().unwrap_or(0);
        let written = dovecot.log_text().lines().count() as u64;
        if read >= written && written > 0 {
            break;
        }
        assert!(
            Instant::now() < until,
            "the follower read {read} of {written} lines"
        );
        thread::sleep(Duration::from_millis(50));
    }
    let a = account(&oracle, "alice");
    assert_eq!(failures(&a), 3, "{a:#}");
    assert_eq!(a["totals"]["logins_failed"], 3, "{a:#}");
    // Either comes first: Dovecot writes the log line when it checks the password and
    // reports to the policy endpoint right after, so the follower may read a line before
    // its report arrives (the line counts, the report then matches it) or after (the
    // report counts, the line matches it). Each failure counted once either way (above).
    let status = oracle.ctl_json(&["status"]);
    let from_log = status["counters"]["log_attempts"].as_u64().unwrap();
    assert!(from_log <= 3, "{status:#}");
    assert!(
        status["counters"]["source_events"].as_u64().unwrap() >= 6,
        "{status:#}"
    );
}
