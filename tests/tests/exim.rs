//! End-to-end scenarios: real Exim 4.96 on the shipped configuration, the real oracle.
//!
//! Each test builds its own [`World`] (temporary tree), oracle and, where needed, Exim
//! daemon, so the tests run in parallel. The harness (`exim_access_e2e`) explains how
//! binaries are found; build them first:
//!
//! ```text
//! cargo build -p access-oracle && cargo build --release -p exim-dlfunc
//! cargo test -p exim-access-e2e
//! ```
//!
//! What Exim answers, for reference (checked against Exim 4.96):
//! * AUTH: 235 accepted, 535 wrong password or `deny`, `435 Unable to authenticate at
//!   present: <text>` for a `defer <text>` verdict (a held account);
//! * MAIL / RCPT / DATA: `451 <text>` for `defer <text>`, `550 <text>` for `deny <text>`;
//! * an unauthenticated relay attempt: `550 relay not permitted`.

use std::path::Path;
use std::time::Duration;

use exim_access_e2e::{
    Dialogue, Exim, Oracle, PASSWORD, Reply, SilentOracle, Via, World, debian, stale_socket,
};

/// A client address from the documentation range (the oracle sees it as the source).
const CLIENT_IP: &str = "192.0.2.10";

/// The prefix Exim puts before a `server_condition` text (a deferred AUTH).
const AUTH_DEFER_PREFIX: &str = "Unable to authenticate at present: ";

/// The recipient ceiling of the default rules (recipients per account per hour).
const CEILING: usize = 200;

/// A session that authenticates with PLAIN, then sends MAIL and `rcpts` RCPTs (no
/// QUIT yet: add `.data(..)` and/or `.quit()`).
fn submission(user: &str, password: &str, rcpts: usize) -> Dialogue {
    let mut d = Dialogue::new()
        .ehlo("client.example")
        .auth_plain(user, password)
        .mail_from("submitter@example.org");
    for i in 1..=rcpts {
        d = d.rcpt_to(&format!("rcpt{i}@example.net"));
    }
    d
}

/// Asserts that `reply` is the 435 of a deferred AUTH with a non-empty text.
fn assert_auth_deferred(reply: &Reply, context: &str) {
    assert_eq!(reply.code, 435, "{context}: {reply}");
    let text = reply.text();
    let why = text.strip_prefix(AUTH_DEFER_PREFIX).unwrap_or_else(|| {
        panic!("{context}: 435 without {AUTH_DEFER_PREFIX:?}: {reply}");
    });
    assert!(
        !why.trim().is_empty(),
        "{context}: empty hold text: {reply}"
    );
}

/// The `hold` field of `ctl --json account USER` (JSON null when not held).
fn hold_of(oracle: &Oracle, user: &str) -> serde_json::Value {
    let account = oracle.ctl_json(&["account", user]);
    account
        .get("hold")
        .cloned()
        .unwrap_or_else(|| panic!("ctl --json account {user} has no `hold` field: {account}"))
}

/// The alerts of one rule.
fn alerts_of(alerts: &[serde_json::Value], rule: &str) -> Vec<serde_json::Value> {
    alerts
        .iter()
        .filter(|a| a["rule"] == rule)
        .cloned()
        .collect()
}

#[test]
fn shipped_configuration_parses_in_both_variants() {
    let world = World::new(&["alice"]);
    let socket = world.oracle_dir().join("exim.sock");
    for via in [Via::Dlfunc, Via::Readsocket] {
        Exim::new(&world, via, &socket)
            .check_config()
            .assert_success();
    }
}

/// Five wrong passwords, then the right one: held (435), one high alert, `ctl` shows
/// the hold, `ctl release` lifts it. Through a real Exim daemon and swaks.
#[test]
fn brute_force_holds_the_account_until_released() {
    let world = World::new(&["alice"]);
    let oracle = Oracle::start(&world);
    let daemon = Exim::new(&world, Via::Dlfunc, oracle.exim_socket()).daemon();

    // Distinct wrong passwords: each has its own keyed hash and counts.
    for i in 1..=5 {
        let run = daemon
            .swaks()
            .auth_plain("alice", &format!("wrong-{i}"))
            .quit_after("AUTH")
            .run();
        assert_eq!(
            run.reply_to("AUTH").code,
            535,
            "wrong password {i}:\n{}",
            run.transcript()
        );
    }

    let held = daemon
        .swaks()
        .auth_plain("alice", PASSWORD)
        .quit_after("AUTH")
        .run();
    assert_auth_deferred(held.reply_to("AUTH"), "right password after 5 failures");

    let alerts = oracle.wait_for_alerts(1, Duration::from_secs(10));
    let brute = alerts_of(&alerts, "failed_logins_account");
    assert_eq!(
        brute.len(),
        1,
        "one failed_logins_account alert: {alerts:?}"
    );
    assert_eq!(brute[0]["severity"], "high", "{}", brute[0]);
    assert_eq!(brute[0]["account"], "alice", "{}", brute[0]);
    assert!(!hold_of(&oracle, "alice").is_null(), "ctl shows the hold");

    oracle.ctl(&["release", "alice"]).assert_success();
    assert!(hold_of(&oracle, "alice").is_null(), "released");

    let after = daemon
        .swaks()
        .auth_plain("alice", PASSWORD)
        .from("alice@example.org")
        .to(&["bob@example.net"])
        .quit_after("RCPT")
        .run();
    assert_eq!(after.reply_to("AUTH").code, 235, "{}", after.transcript());
    assert_eq!(after.reply_to("RCPT").code, 250, "{}", after.transcript());
    assert_eq!(
        alerts_of(&oracle.alerts(), "failed_logins_account").len(),
        1,
        "still one alert"
    );
    let mainlog = world.exim_mainlog();
    assert!(
        !mainlog.contains("exim-access: ") && !mainlog.contains("access-oracle: error"),
        "the oracle answered every call of the daemon:\n{}",
        daemon.logs()
    );
    assert!(world.exim_paniclog().is_empty(), "{}", daemon.logs());
}

/// A restart in the middle of a brute force does not give the attacker a fresh count:
/// three failures, a restart, two more, and the account is held.
#[test]
fn a_restart_keeps_the_failure_count() {
    let world = World::new(&["alice"]);
    let mut oracle = Oracle::start(&world);
    let exim = Exim::new(&world, Via::Dlfunc, oracle.exim_socket());
    let fail = |i: usize| {
        let session = exim.bh(
            CLIENT_IP,
            &Dialogue::auth_only("alice", format!("wrong-{i}")),
        );
        session.assert_oracle_answered();
        assert_eq!(session.reply("AUTH").code, 535, "{}", session.transcript());
    };
    for i in 1..=3 {
        fail(i);
    }
    oracle.restart();
    assert!(
        oracle
            .log_text()
            .contains("state restored from the snapshot"),
        "the restart read the snapshot:\n{}",
        oracle.log_text()
    );
    assert!(hold_of(&oracle, "alice").is_null(), "not held yet");
    for i in 4..=5 {
        fail(i);
    }
    let held = exim.bh(CLIENT_IP, &Dialogue::auth_only("alice", PASSWORD));
    assert_auth_deferred(held.reply("AUTH"), "right password after 3 + 2 failures");
    assert!(!hold_of(&oracle, "alice").is_null(), "held");
}

/// The same wrong password ten times (a stale client) counts once: no hold, no alert.
#[test]
fn same_wrong_password_ten_times_counts_once() {
    let world = World::new(&["alice"]);
    let oracle = Oracle::start(&world);
    let exim = Exim::new(&world, Via::Dlfunc, oracle.exim_socket());

    for i in 1..=10 {
        let session = exim.bh(CLIENT_IP, &Dialogue::auth_only("alice", "old-password"));
        session.assert_oracle_answered();
        assert_eq!(
            session.reply("AUTH").code,
            535,
            "attempt {i}:\n{}",
            session.transcript()
        );
    }
    let session = exim.bh(CLIENT_IP, &Dialogue::auth_only("alice", PASSWORD));
    assert_eq!(session.reply("AUTH").code, 235, "{}", session.transcript());
    assert!(hold_of(&oracle, "alice").is_null(), "not held");
    assert!(
        oracle.alerts().is_empty(),
        "no alert: {:?}",
        oracle.alerts()
    );
}

/// 250 recipients in one hour: the first 200 accepted, the rest deferred (4xx), one
/// alert, and the account is not held.
fn recipient_ceiling(via: Via) {
    let world = World::new(&["alice"]);
    let oracle = Oracle::start(&world);
    let exim = Exim::new(&world, via, oracle.exim_socket());

    let session = exim.bh(
        CLIENT_IP,
        &submission("alice", PASSWORD, 250).data("burst").quit(),
    );
    session.assert_oracle_answered();
    assert_eq!(session.reply("AUTH").code, 235, "{}", session.transcript());
    let rcpts = session.replies("RCPT");
    assert_eq!(rcpts.len(), 250);
    for (i, reply) in rcpts.iter().enumerate() {
        let reply = reply.unwrap_or_else(|| panic!("no reply to RCPT {}", i + 1));
        if i < CEILING {
            assert_eq!(
                reply.code,
                250,
                "RCPT {} is within the ceiling: {reply}",
                i + 1
            );
        } else {
            assert!(
                reply.is_temporary(),
                "RCPT {} is over the ceiling: {reply}",
                i + 1
            );
        }
    }

    let alerts = oracle.wait_for_alerts(1, Duration::from_secs(10));
    let ceiling = alerts_of(&alerts, "recipient_ceiling");
    assert_eq!(ceiling.len(), 1, "one recipient_ceiling alert: {alerts:?}");
    assert_eq!(ceiling[0]["account"], "alice", "{}", ceiling[0]);

    // The ceiling throttles recipients; it does not hold the account.
    assert!(hold_of(&oracle, "alice").is_null(), "not held");
    let again = exim.bh(CLIENT_IP, &submission("alice", PASSWORD, 1).quit());
    assert_eq!(again.reply("AUTH").code, 235, "{}", again.transcript());
    assert!(
        again.reply("RCPT").is_temporary(),
        "still over the ceiling this hour:\n{}",
        again.transcript()
    );
    assert_eq!(
        alerts_of(&oracle.alerts(), "recipient_ceiling").len(),
        1,
        "still one alert"
    );
}

#[test]
fn recipient_ceiling_defers_after_200_recipients() {
    recipient_ceiling(Via::Dlfunc);
}

#[test]
fn recipient_ceiling_through_readsocket() {
    recipient_ceiling(Via::Readsocket);
}

/// A brute force through the LOGIN mechanism and the `${readsocket}` variant of the
/// authenticators (which cannot send a password hash: every wrong password counts).
#[test]
fn brute_force_through_readsocket_and_login() {
    let world = World::new(&["alice"]);
    let oracle = Oracle::start(&world);
    let exim = Exim::new(&world, Via::Readsocket, oracle.exim_socket());
    let login = |password: &str| {
        Dialogue::new()
            .ehlo("client.example")
            .auth_login("alice", password)
            .quit()
    };
    for i in 1..=5 {
        let session = exim.bh(CLIENT_IP, &login(&format!("wrong-{i}")));
        session.assert_oracle_answered();
        assert_eq!(
            session.codes("AUTH-PASS"),
            [535],
            "{}",
            session.transcript()
        );
    }
    let session = exim.bh(CLIENT_IP, &login(PASSWORD));
    let reply = session.replies("AUTH-PASS")[0]
        .unwrap_or_else(|| panic!("no reply to the password:\n{}", session.transcript()));
    assert_auth_deferred(reply, "LOGIN after 5 failures");
    assert!(!hold_of(&oracle, "alice").is_null(), "ctl shows the hold");
}

/// Where an unreachable oracle is, in the two ways it can be unreachable.
#[derive(Clone, Copy, Debug)]
enum Down {
    /// No socket file at all.
    Missing,
    /// A socket file nobody listens on (a crashed oracle).
    Stale,
}

fn unreachable_socket(world: &World, down: Down) -> std::path::PathBuf {
    let path = world.oracle_dir().join("exim.sock");
    if let Down::Stale = down {
        stale_socket(&path);
    }
    path
}

/// Under `on_error=accept`, an unreachable oracle changes nothing: the local password
/// check decides AUTH, MAIL and RCPT proceed.
#[test]
fn unreachable_oracle_fails_open_under_on_error_accept() {
    for (via, down) in [
        (Via::Dlfunc, Down::Missing),
        (Via::Dlfunc, Down::Stale),
        (Via::Readsocket, Down::Missing),
        (Via::Readsocket, Down::Stale),
    ] {
        let world = World::new(&["alice"]);
        let socket = unreachable_socket(&world, down);
        let exim = Exim::new(&world, via, &socket).on_error("accept");
        let context = format!("{via:?}, {down:?} socket");

        let ok = exim.bh(
            CLIENT_IP,
            &submission("alice", PASSWORD, 2).data("x").quit(),
        );
        ok.assert_exim_healthy();
        assert_eq!(
            ok.reply("AUTH").code,
            235,
            "{context}:\n{}",
            ok.transcript()
        );
        assert_eq!(
            ok.reply("MAIL").code,
            250,
            "{context}:\n{}",
            ok.transcript()
        );
        assert_eq!(
            ok.codes("RCPT"),
            [250, 250],
            "{context}:\n{}",
            ok.transcript()
        );

        let wrong = exim.bh(CLIENT_IP, &Dialogue::auth_only("alice", "wrong"));
        assert_eq!(
            wrong.reply("AUTH").code,
            535,
            "{context}:\n{}",
            wrong.transcript()
        );
    }
}

/// Under `on_error=defer`, an unreachable oracle defers AUTH (435) and the commands of
/// an authenticated session (4xx); unauthenticated traffic is not affected.
#[test]
fn unreachable_oracle_defers_under_on_error_defer() {
    for (via, down) in [
        (Via::Dlfunc, Down::Missing),
        (Via::Dlfunc, Down::Stale),
        (Via::Readsocket, Down::Missing),
    ] {
        let world = World::new(&["alice"]);
        let socket = unreachable_socket(&world, down);
        let exim = match via {
            Via::Dlfunc => Exim::new(&world, via, &socket).on_error("defer"),
            Via::Readsocket => Exim::new(&world, via, &socket)
                .define("ACCESS_READSOCKET_FAIL", "defer access checks unavailable"),
        };
        let context = format!("{via:?}, {down:?} socket");

        let session = exim.bh(CLIENT_IP, &Dialogue::auth_only("alice", PASSWORD));
        session.assert_exim_healthy();
        assert_auth_deferred(session.reply("AUTH"), &context);

        // The connect check stays fail-open: MX traffic still gets in.
        let inbound = exim.bh(
            CLIENT_IP,
            &Dialogue::new()
                .ehlo("mx.example")
                .mail_from("someone@example.net")
                .rcpt_to("postmaster@localhost")
                .quit(),
        );
        assert_eq!(
            inbound.greeting.as_ref().map(|g| g.code),
            Some(220),
            "{context}:\n{}",
            inbound.transcript()
        );
        assert_eq!(
            inbound.reply("RCPT").code,
            250,
            "{context}:\n{}",
            inbound.transcript()
        );
    }
}

/// The oracle stops in the middle of an authenticated session: what follows proceeds
/// under `on_error=accept` and is deferred under `on_error=defer`.
#[test]
fn oracle_stopped_mid_session() {
    for via in [Via::Dlfunc, Via::Readsocket] {
        for on_error in ["accept", "defer"] {
            let world = World::new(&["alice"]);
            let mut oracle = Oracle::start(&world);
            let exim = match (via, on_error) {
                (Via::Readsocket, "defer") => Exim::new(&world, via, oracle.exim_socket())
                    .define("ACCESS_READSOCKET_FAIL", "defer access checks unavailable"),
                _ => Exim::new(&world, via, oracle.exim_socket()).on_error(on_error),
            };
            let context = format!("{via:?}, on_error={on_error}");

            let mut live = exim.live(CLIENT_IP);
            live.send("EHLO client.example");
            let auth = Dialogue::new().auth_plain("alice", PASSWORD);
            let reply = live.send(&auth.steps()[0].line).expect("a reply to AUTH");
            assert_eq!(reply.code, 235, "{context}: {reply}");
            let reply = live
                .send("MAIL FROM:<alice@example.org>")
                .expect("a reply to MAIL");
            assert_eq!(reply.code, 250, "{context}: {reply}");

            oracle.stop();
            let reply = live
                .send("RCPT TO:<bob@example.net>")
                .expect("a reply to RCPT");
            if on_error == "accept" {
                assert_eq!(reply.code, 250, "{context}: {reply}");
            } else {
                assert!(reply.is_temporary(), "{context}: {reply}");
            }
            live.finish();
        }
    }
}

/// An oracle that accepts connections and never answers costs each call at most
/// `timeout_ms` (`${dlfunc}`), or the whole-second `ACCESS_READSOCKET_TIMEOUT`
/// (`${readsocket}`), and the session goes on under `on_error=accept`.
#[test]
fn hung_oracle_costs_at_most_the_timeout_per_call() {
    let world = World::new(&["alice"]);
    let silent = SilentOracle::start(&world.oracle_dir().join("silent.sock"));

    // connect + auth + mail + 10 rcpt = 13 calls of at most 250 ms.
    let timeout_ms = 250;
    let calls = 13;
    let exim = Exim::new(&world, Via::Dlfunc, silent.path())
        .timeout_ms(timeout_ms)
        .on_error("accept");
    let session = exim.bh(CLIENT_IP, &submission("alice", PASSWORD, 10).quit());
    session.assert_exim_healthy();
    assert_eq!(session.reply("AUTH").code, 235, "{}", session.transcript());
    assert_eq!(session.codes("RCPT"), [250; 10], "{}", session.transcript());
    // A behaviour bound, not a benchmark: one timeout per call plus slack for a slow
    // machine; a retry after each timeout, or no timeout at all, breaks it.
    let bound = Duration::from_millis(calls * timeout_ms) + Duration::from_millis(2500);
    assert!(
        session.run.elapsed <= bound,
        "{calls} calls with timeout_ms={timeout_ms} took {:?} (bound {bound:?}):\n{}",
        session.run.elapsed,
        session.transcript()
    );

    // ${readsocket}: connect + auth + mail + 1 rcpt = 4 calls of at most 1 s.
    let exim = Exim::new(&world, Via::Readsocket, silent.path());
    let session = exim.bh(CLIENT_IP, &submission("alice", PASSWORD, 1).quit());
    session.assert_exim_healthy();
    assert_eq!(session.reply("AUTH").code, 235, "{}", session.transcript());
    assert_eq!(session.codes("RCPT"), [250], "{}", session.transcript());
    let bound = Duration::from_secs(4) + Duration::from_millis(2500);
    assert!(
        session.run.elapsed <= bound,
        "4 readsocket calls took {:?} (bound {bound:?})",
        session.run.elapsed
    );
    assert!(silent.finish() > 0, "the silent oracle was asked");
}

/// User names with spaces, quotes, backslashes, UTF-8, control characters, invalid
/// UTF-8 and 3 KB: Exim never crashes, every AUTH gets an SMTP answer, names that are
/// in the passwd file log in and send, reaching the oracle intact (the 3 KB one under a
/// bounded key), and the oracle keeps serving.
#[test]
fn hostile_user_names_crash_nothing() {
    let long = "x".repeat(3 * 1024);
    let valid: Vec<&str> = vec![
        "a b c",
        "quote\"d",
        "back\\slash",
        "\\\"",
        "ünïcødé-名前",
        "user=evil ip=203.0.113.9 result=ok",
    ];
    let mut passwd = valid.clone();
    passwd.push(&long);
    passwd.push("alice");
    let world = World::new(&passwd);
    let oracle = Oracle::start(&world);

    let odd: Vec<Vec<u8>> = vec![
        b"new\nline".to_vec(),
        b"carriage\rreturn".to_vec(),
        b"tab\there".to_vec(),
        b"\xff\xfe invalid utf-8".to_vec(),
        b"".to_vec(),
        b"\x01\x02\x7f".to_vec(),
        [b"y".repeat(3 * 1024).as_slice(), b"\"\\"].concat(),
    ];

    for via in [Via::Dlfunc, Via::Readsocket] {
        let exim = Exim::new(&world, via, oracle.exim_socket());
        for name in &valid {
            let short: String = name.chars().take(40).collect();
            let session = exim.bh(
                CLIENT_IP,
                &submission(name, PASSWORD, 2).data("hostile").quit(),
            );
            session.assert_oracle_answered();
            assert_eq!(
                session.reply("AUTH").code,
                235,
                "{via:?} {short:?}:\n{}",
                session.transcript()
            );
            assert_eq!(
                session.codes("RCPT"),
                [250, 250],
                "{via:?} {short:?}:\n{}",
                session.transcript()
            );
        }
        // 3 KB: longer than any real account name. It reaches the oracle, which
        // tracks it under a bounded key (so its failures still count against the
        // address), and logs in on the local result.
        let session = exim.bh(
            CLIENT_IP,
            &submission(&long, PASSWORD, 2).data("long").quit(),
        );
        session.assert_exim_healthy();
        session.assert_oracle_answered();
        assert_eq!(
            session.reply("AUTH").code,
            235,
            "{via:?}:\n{}",
            session.transcript()
        );
        assert_eq!(
            session.codes("RCPT"),
            [250, 250],
            "{via:?}:\n{}",
            session.transcript()
        );

        for name in &odd {
            let dialogue = Dialogue::new()
                .ehlo("client.example")
                .auth_plain(name, PASSWORD)
                .auth_plain(name, "wrong")
                .quit();
            let session = exim.bh(CLIENT_IP, &dialogue);
            assert!(
                session.run.signal().is_none() && !session.run.timed_out,
                "{via:?} {name:?}: exim died:\n{}",
                session.transcript()
            );
            for code in session.codes("AUTH") {
                assert!(
                    [535, 435, 501].contains(&code),
                    "{via:?} {name:?}: AUTH got {code}:\n{}",
                    session.transcript()
                );
            }
        }
        assert!(oracle.ping(), "{via:?}: the oracle still answers ping");
    }

    // Every hostile failure was counted against the address, so it is now deferred;
    // a normal account from another address is served as usual.
    let exim = Exim::new(&world, Via::Dlfunc, oracle.exim_socket());
    let session = exim.bh(CLIENT_IP, &submission("alice", PASSWORD, 1).quit());
    assert_eq!(session.reply("AUTH").code, 435, "{}", session.transcript());
    assert!(
        session
            .reply("AUTH")
            .text()
            .contains("too many authentication failures from your address"),
        "{}",
        session.transcript()
    );
    let session = exim.bh("192.0.2.99", &submission("alice", PASSWORD, 1).quit());
    assert_eq!(session.reply("AUTH").code, 235, "{}", session.transcript());
    assert_eq!(session.codes("RCPT"), [250], "{}", session.transcript());
    assert!(
        world.exim_paniclog().is_empty(),
        "{}",
        world.exim_paniclog()
    );
}

/// Debian's split configuration with the files of `exim-config/debian/`: generated by
/// `update-exim4.conf` from a copy of `/etc/exim4`, it asks the oracle through the same
/// snippets and hands over to Debian's own ACLs.
#[test]
fn debian_split_configuration_uses_the_same_snippets() {
    assert!(
        Path::new("/usr/sbin/update-exim4.conf").exists(),
        "update-exim4.conf missing: install exim4-config (scripts/setup-debian installs exim4-daemon-heavy, which depends on it)"
    );
    let world = World::new(&["alice"]);
    let oracle = Oracle::start(&world);
    let snippets = exim_access_e2e::paths::exim_config_snippets();
    let lib = exim_access_e2e::paths::dlfunc_lib();
    let passwd = world.passwd();
    let spool = world.spool_dir();
    let config = debian::split_config(
        &world,
        &[
            ("ACCESS_CONFIG_DIR", snippets.as_path()),
            ("ACCESS_LIB", lib.as_path()),
            ("ACCESS_SOCKET", oracle.exim_socket()),
            ("ACCESS_PASSWD_FILE", passwd.as_path()),
            ("SPOOLDIR", spool.as_path()),
            ("AUTH_SERVER_ALLOW_NOTLS_PASSWORDS", Path::new("1")),
            // No reverse DNS of the test addresses (slow without a network).
            ("MAIN_HOST_LOOKUP", Path::new("!*")),
        ],
    );
    let exim = Exim::for_config(&world, &config);
    exim.check_config().assert_success();

    for i in 1..=5 {
        let session = exim.bh(
            CLIENT_IP,
            &Dialogue::auth_only("alice", format!("wrong-{i}")),
        );
        assert_eq!(session.reply("AUTH").code, 535, "{}", session.transcript());
    }
    let session = exim.bh(CLIENT_IP, &submission("alice", PASSWORD, 1).quit());
    assert_auth_deferred(session.reply("AUTH"), "Debian config, held account");

    oracle.ctl(&["release", "alice"]).assert_success();
    let session = exim.bh(
        CLIENT_IP,
        &submission("alice", PASSWORD, 1).data("debian").quit(),
    );
    session.assert_oracle_answered();
    assert_eq!(session.reply("AUTH").code, 235, "{}", session.transcript());
    assert_eq!(session.codes("RCPT"), [250], "{}", session.transcript());

    // Debian's own ACL still decides for unauthenticated clients.
    let relay = exim.bh(
        CLIENT_IP,
        &Dialogue::new()
            .ehlo("client.example")
            .mail_from("x@example.org")
            .rcpt_to("y@example.net")
            .quit(),
    );
    assert_eq!(relay.reply("RCPT").code, 550, "{}", relay.transcript());
}

/// An oracle stand-in that answers each verb from a script, to drive the shipped ACL
/// snippets through the replies today's rules never give (`deny`, `error`): the thing
/// under test is the real Exim on the shipped configuration, not the oracle.
fn scripted_oracle(path: &Path, answer: fn(&str) -> String) -> std::thread::JoinHandle<()> {
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::fs::PermissionsExt;
    let listener = std::os::unix::net::UnixListener::bind(path).expect("bind");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let mut writer = stream;
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                    let reply = answer(line.split(' ').next().unwrap_or(""));
                    if writer.write_all(format!("{reply}\n").as_bytes()).is_err() {
                        return;
                    }
                    line.clear();
                }
            });
        }
    })
}

/// `deny <text>` gives a 5xx with that text; `error <what>` (a request the oracle could
/// not read) is logged and answered like an unreachable oracle, under `on_error`: the
/// command proceeds under `accept` and is deferred under `defer`, in both the dlfunc
/// and the readsocket snippets. (Before, an `error` always let the command through,
/// whatever `on_error` said.)
#[test]
fn deny_and_error_replies_through_the_shipped_snippets() {
    let world = World::new(&["alice"]);
    let socket = world.oracle_dir().join("scripted.sock");
    let _oracle = scripted_oracle(&socket, |verb| match verb.trim() {
        "rcpt" => "deny no such mailbox here, sorry".into(),
        "mail" => "error mail: something the oracle did not like".into(),
        _ => "accept".into(),
    });
    for via in [Via::Dlfunc, Via::Readsocket] {
        let exim = Exim::new(&world, via, &socket);
        let session = exim.bh(CLIENT_IP, &submission("alice", PASSWORD, 1).quit());
        session.assert_exim_healthy();
        assert_eq!(
            session.reply("AUTH").code,
            235,
            "{via:?}:\n{}",
            session.transcript()
        );
        assert_eq!(
            session.reply("MAIL").code,
            250,
            "{via:?}:\n{}",
            session.transcript()
        );
        let rcpt = session.reply("RCPT");
        assert_eq!(rcpt.code, 550, "{via:?}:\n{}", session.transcript());
        assert_eq!(rcpt.text(), "no such mailbox here, sorry", "{via:?}");
        let logged = match via {
            Via::Dlfunc => {
                "the oracle refused the request: mail: something the oracle did not like; answered \"accept\""
            }
            Via::Readsocket => {
                "access-oracle: error: mail: something the oracle did not like; answered as accept"
            }
        };
        assert!(
            session.log().contains(logged),
            "{via:?}:\n{}",
            session.log()
        );

        let exim = match via {
            Via::Dlfunc => Exim::new(&world, via, &socket).on_error("defer"),
            Via::Readsocket => Exim::new(&world, via, &socket)
                .define("ACCESS_READSOCKET_FAIL", "defer access checks unavailable"),
        };
        let session = exim.bh(CLIENT_IP, &submission("alice", PASSWORD, 1).quit());
        session.assert_exim_healthy();
        assert!(
            session.reply("MAIL").is_temporary(),
            "{via:?}: error under on_error defer:\n{}",
            session.transcript()
        );
    }
}
