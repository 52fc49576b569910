//! The `[fail2ban]` action (issue 14 point 5) against a real fail2ban: Debian's
//! `fail2ban-server`, started by each test with its own config, socket and jail
//! ([`exim_access_e2e::fail2ban`]: a dummy banaction that records `+ADDRESS` and
//! `-ADDRESS`, `bantime` a day, so every unban seen here came from the oracle). The
//! blocks come from `password_spraying` tripped through real Exim (`exim -bh` sessions
//! from a chosen address) or from `ctl`; what fail2ban holds is read back with
//! `fail2ban-client get JAIL banned`, polled with a deadline.

use std::fs;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use exim_access_e2e::fail2ban::JAIL;
use exim_access_e2e::process;
use exim_access_e2e::{Dialogue, Exim, Fail2ban, Oracle, PASSWORD, Via, World, paths};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

const DEADLINE: Duration = Duration::from_secs(30);

/// Three distinct accounts failing from one address make a spraying block.
const SPRAY_AT_3: &str = "[rules.password_spraying]\naccounts = 3\n";

/// One AUTH from `ip`; returns the AUTH reply code.
fn login(exim: &Exim, ip: &str, user: &str, password: &str) -> u16 {
    let session = exim.bh(ip, &Dialogue::auth_only(user, password));
    session.assert_oracle_answered();
    session.reply("AUTH").code
}

/// Wrong passwords on three accounts from `ip`, then waits for the block's alert.
fn spray(oracle: &Oracle, exim: &Exim, ip: &str) -> Value {
    for i in 0..3 {
        assert_eq!(login(exim, ip, &format!("user{i}"), "guess"), 535);
    }
    wait_until(oracle, "a password_spraying alert", || {
        !alerts_of(oracle, "password_spraying").is_empty()
    });
    let alert = alerts_of(oracle, "password_spraying").remove(0);
    assert_eq!(alert["response"], "block_ip", "{alert}");
    alert
}

fn alerts_of(oracle: &Oracle, rule: &str) -> Vec<Value> {
    oracle
        .alerts()
        .into_iter()
        .filter(|a| a["rule"] == rule)
        .collect()
}

/// Waits (bounded) until `ready`, else panics with `what` and the oracle's log.
fn wait_until(oracle: &Oracle, what: &str, mut ready: impl FnMut() -> bool) {
    let until = Instant::now() + DEADLINE;
    while !ready() {
        assert!(
            Instant::now() < until,
            "{what}: not within {DEADLINE:?}\n{}",
            oracle.log_text()
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// The audit trail's `action` records, in order.
fn action_records(world: &World) -> Vec<Value> {
    let out = exim_access_e2e::oracle::audit(world, &["search", "--json"]);
    out.assert_success();
    out.stdout_text()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|r| r["kind"] == "action")
        .collect()
}

/// Waits (bounded) until the trail holds an `action` record whose reason has `needle`.
fn wait_for_record(world: &World, oracle: &Oracle, needle: &str) -> Value {
    let mut found = None;
    wait_until(oracle, &format!("an action record with {needle:?}"), || {
        found = action_records(world)
            .into_iter()
            .find(|r| r["reason"].as_str().is_some_and(|s| s.contains(needle)));
        found.is_some()
    });
    found.unwrap_or_default()
}

/// A spraying block is banned in the jail, `ctl unblock` unbans it; after fail2ban lost
/// its bans, a restarted oracle bans again what is in force.
#[test]
fn a_spraying_block_is_banned_until_ctl_unblock() {
    let world = World::new(&["alice"]);
    let f2b = Fail2ban::start(&world);
    let oracle = Oracle::start_with(&world, &format!("{}{SPRAY_AT_3}", f2b.toml(JAIL, "")));
    let exim = Exim::new(&world, Via::Dlfunc, oracle.exim_socket());
    let sprayer = "203.0.113.66";
    spray(&oracle, &exim, sprayer);
    f2b.wait_banned(sprayer, true, DEADLINE);
    assert_eq!(f2b.action_log(), [format!("+{sprayer}")]);
    let record = wait_for_record(&world, &oracle, &format!("fail2ban: block {sprayer}/32"));
    assert_eq!(record["result"], "ok", "{record}");
    assert_eq!(record["action"], "block", "{record}");
    assert_eq!(record["ip"], sprayer, "{record}");

    // fail2ban forgets (restarted with an in-memory database, or an administrator's
    // unban); the oracle, restarted, sends the blocks in force again.
    f2b.client(&["set", JAIL, "unbanip", sprayer])
        .assert_success();
    f2b.wait_banned(sprayer, false, DEADLINE);
    let mut oracle = oracle;
    oracle.restart();
    f2b.wait_banned(sprayer, true, DEADLINE);

    oracle.ctl(&["unblock", sprayer]).assert_success();
    f2b.wait_banned(sprayer, false, DEADLINE);
    wait_for_record(&world, &oracle, &format!("fail2ban: unblock {sprayer}/32"));
    assert_eq!(
        f2b.action_log(),
        [
            format!("+{sprayer}"),
            format!("-{sprayer}"),
            format!("+{sprayer}"),
            format!("-{sprayer}")
        ]
    );
    // Another address is never banned.
    assert_eq!(login(&exim, "203.0.113.67", "alice", PASSWORD), 235);
    assert!(f2b.banned().is_empty(), "{:?}", f2b.banned());
}

/// An IPv6 address's block covers its /64, banned as a network; when the block ends,
/// the oracle unbans it (fail2ban's own bantime is a day).
#[test]
fn an_ipv6_block_bans_its_64_until_the_block_ends() {
    let world = World::new(&["alice"]);
    let f2b = Fail2ban::start(&world);
    let oracle = Oracle::start_with(
        &world,
        &format!("{}{SPRAY_AT_3}response_secs = 3\n", f2b.toml(JAIL, "")),
    );
    let exim = Exim::new(&world, Via::Dlfunc, oracle.exim_socket());
    spray(&oracle, &exim, "2001:db8:1:2::66");
    let net = "2001:db8:1:2::/64";
    f2b.wait_banned(net, true, DEADLINE);
    f2b.wait_banned(net, false, DEADLINE);
    assert_eq!(f2b.action_log(), [format!("+{net}"), format!("-{net}")]);
    let record = wait_for_record(
        &world,
        &oracle,
        &format!("fail2ban: unblock {net} (the block ended)"),
    );
    assert_eq!(record["result"], "ok", "{record}");
}

/// `ctl block` of a network bans the network, of an IPv6 address its /64; `ctl
/// unblock` unbans the network, a short `--for` ends by itself; the audit trail has
/// each step.
#[test]
fn ctl_block_bans_networks_and_unblock_or_the_end_unbans_them() {
    let world = World::new(&["alice"]);
    let f2b = Fail2ban::start(&world);
    let oracle = Oracle::start_with(&world, &f2b.toml(JAIL, ""));
    oracle
        .ctl(&[
            "block",
            "198.51.100.0/24",
            "--for",
            "1h",
            "--reason",
            "botnet",
        ])
        .assert_success();
    oracle
        .ctl(&["block", "2001:db8:7:8::1", "--for", "2s"])
        .assert_success();
    f2b.wait_banned("198.51.100.0/24", true, DEADLINE);
    f2b.wait_banned("2001:db8:7:8::/64", true, DEADLINE);
    oracle.ctl(&["unblock", "198.51.100.0/24"]).assert_success();
    f2b.wait_banned("198.51.100.0/24", false, DEADLINE);
    f2b.wait_banned("2001:db8:7:8::/64", false, DEADLINE);
    assert!(f2b.banned().is_empty(), "{:?}", f2b.banned());
    let mut log = f2b.action_log();
    log.sort();
    assert_eq!(
        log,
        [
            "+198.51.100.0/24",
            "+2001:db8:7:8::/64",
            "-198.51.100.0/24",
            "-2001:db8:7:8::/64"
        ]
    );
    wait_for_record(
        &world,
        &oracle,
        "fail2ban: unblock 2001:db8:7:8::/64 (the block ended)",
    );
    let records = action_records(&world);
    assert_eq!(records.len(), 4, "{records:?}");
    assert!(records.iter().all(|r| r["result"] == "ok"), "{records:?}");
}

/// A jail fail2ban does not have: each step fails with fail2ban's own words, is
/// retried, then given up; the trail records the failure and an alert says so.
#[test]
fn a_jail_fail2ban_does_not_have_is_retried_then_alerts() {
    let world = World::new(&["alice"]);
    let f2b = Fail2ban::start(&world);
    let oracle = Oracle::start_with(
        &world,
        &format!("{}{SPRAY_AT_3}", f2b.toml("no-such-jail", "")),
    );
    let exim = Exim::new(&world, Via::Dlfunc, oracle.exim_socket());
    let sprayer = "198.51.100.23";
    spray(&oracle, &exim, sprayer);
    wait_until(&oracle, "an action_failed alert", || {
        !alerts_of(&oracle, "action_failed").is_empty()
    });
    let alert = alerts_of(&oracle, "action_failed").remove(0);
    assert_eq!(alert["ip"], sprayer, "{alert}");
    assert_eq!(alert["severity"], "high", "{alert}");
    let counts = &alert["counts"];
    assert_eq!(counts["action"], "fail2ban", "{alert}");
    assert_eq!(counts["step"], "block", "{alert}");
    assert_eq!(counts["attempts"], 4, "one try and three retries: {alert}");
    assert!(
        counts["error"]
            .as_str()
            .is_some_and(|e| e.contains("Sorry but the jail 'no-such-jail' does not exist")),
        "{alert}"
    );
    let record = wait_for_record(&world, &oracle, &format!("fail2ban: block {sprayer}/32"));
    assert_eq!(record["result"], "fail", "{record}");
    assert!(
        record["reason"]
            .as_str()
            .is_some_and(|r| r.contains("given up after 4 attempts")),
        "{record}"
    );
    let log = oracle.log_text();
    assert!(
        log.contains("external action failed; retrying") && log.contains("no-such-jail"),
        "{log}"
    );
    assert!(f2b.banned().is_empty());
    assert!(f2b.action_log().is_empty());
}

/// fail2ban stopped (SIGSTOP: its socket accepts, nothing answers) holds only its own
/// action: while the ban waits, every other login is answered; once fail2ban goes on,
/// the ban it was sent lands.
#[test]
fn verdicts_are_answered_while_fail2ban_hangs() {
    let world = World::new(&["alice"]);
    let f2b = Fail2ban::start(&world);
    let oracle = Oracle::start_with(
        &world,
        &format!("{}{SPRAY_AT_3}", f2b.toml(JAIL, "timeout_ms = 120000")),
    );
    let exim = Exim::new(&world, Via::Dlfunc, oracle.exim_socket());
    let server = Pid::from_raw(f2b.pid() as i32);
    kill(server, Signal::SIGSTOP).expect("stop fail2ban-server");
    let sprayer = "203.0.113.99";
    spray(&oracle, &exim, sprayer);
    // The block is in force at once; the ban waits on fail2ban.
    let refused = exim.bh(sprayer, &Dialogue::auth_only("alice", PASSWORD));
    let greeting = refused.greeting.as_ref().expect("a greeting or refusal");
    assert_eq!(greeting.code / 100, 5, "{}", refused.transcript());
    for _ in 0..20 {
        assert_eq!(login(&exim, "203.0.113.100", "alice", PASSWORD), 235);
    }
    assert!(
        action_records(&world).is_empty(),
        "20 logins answered while the ban was still on its way: {:?}",
        action_records(&world)
    );
    kill(server, Signal::SIGCONT).expect("continue fail2ban-server");
    f2b.wait_banned(sprayer, true, DEADLINE);
    let record = wait_for_record(&world, &oracle, &format!("fail2ban: block {sprayer}/32"));
    assert_eq!(record["result"], "ok", "{record}");
}

/// check-config (and so serve) names a missing client and a socket path that is not
/// a socket, under the table's name.
#[test]
fn check_config_names_a_missing_client_and_a_socket_that_is_not_one() {
    let world = World::new(&[]);
    let not_a_socket = world.path("plain-file");
    fs::write(&not_a_socket, "").unwrap();
    let config = world.path("f2b.toml");
    fs::write(
        &config,
        format!(
            "[fail2ban]\njail = \"{JAIL}\"\nclient = \"{}\"\nsocket = \"{}\"\n",
            world.path("no-client").display(),
            not_a_socket.display()
        ),
    )
    .unwrap();
    let mut cmd = Command::new(paths::oracle_bin());
    cmd.arg("check-config").arg(&config);
    let out = process::run(cmd, b"", Duration::from_secs(30));
    assert!(!out.status.success(), "{}", out.stdout_text());
    let text = format!("{}{}", out.stdout_text(), out.stderr_text());
    assert!(
        text.contains("[fail2ban]: client") && text.contains("no-client does not exist"),
        "{text}"
    );
    assert!(
        text.contains("[fail2ban]: socket") && text.contains("is a regular file, not a socket"),
        "{text}"
    );
    fs::write(&config, "[fail2ban]\njail = \"a b\"\ntimeout_ms = 0\n").unwrap();
    let mut cmd = Command::new(paths::oracle_bin());
    cmd.arg("check-config").arg(&config);
    let out = process::run(cmd, b"", Duration::from_secs(30));
    let text = format!("{}{}", out.stdout_text(), out.stderr_text());
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("[fail2ban]: jail \"a b\" holds ' '"),
        "{text}"
    );
    assert!(
        text.contains("[fail2ban]: timeout_ms must be between"),
        "{text}"
    );
}
