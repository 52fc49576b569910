//! The logs real Exim 4.96 and real Dovecot 2.3 write, read by the oracle.
//!
//! Each test drives a real server on loopback (Exim's daemon with swaks, a standalone
//! Dovecot with the harness's IMAP and POP3 clients), then checks what
//! `access-oracle parse` makes of the log against what the test did: who logged in over
//! which protocol from which address, with which outcome, which message went to how many
//! recipients, which session ended with which byte counts. The expectations come from the
//! test's own actions, not from a stored golden file (the logs hold times, pids and
//! session ids that change every run); the stored golden files of
//! `access-oracle/tests/fixtures/` were made by hand the same way.
//!
//! The last test has the oracle follow both logs live (`[[sources]]`): wrong IMAP
//! passwords seen only in Dovecot's log hold the account, and Exim's next AUTH for it
//! gets 435. One state for all protocols.
//!
//! Build first (see the harness): `cargo build -p access-oracle && cargo build --release
//! -p exim-dlfunc`.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use exim_access_e2e::{
    Dovecot, Exim, EximDaemon, Oracle, PASSWORD, ParsedLog, SwaksRun, Via, World, paths,
};
use serde_json::Value;

/// Selectors added to the shipped `log_selector` for the "rich" Exim run: what a site
/// that wants recipients and connection lines in its log would add.
const RICH_SELECTORS: &str = "+pid +smtp_connection +incoming_interface";

/// How long to wait for a line to reach a log, or for the oracle to act on it.
const LOG_DEADLINE: Duration = Duration::from_secs(30);

/// Waits (bounded) until `ready` says yes; panics with `what` and `context()` if it never
/// does.
fn wait_until(what: &str, mut ready: impl FnMut() -> bool, context: impl Fn() -> String) {
    let until = Instant::now() + LOG_DEADLINE;
    while !ready() {
        assert!(
            Instant::now() < until,
            "{what}: not within {LOG_DEADLINE:?}\n{}",
            context()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// How many lines of `text` contain `needle`.
fn count_lines(text: &str, needle: &str) -> usize {
    text.lines().filter(|l| l.contains(needle)).count()
}

/// A string field of an event (`""` when absent).
fn s<'a>(event: &'a Value, field: &str) -> &'a str {
    event[field].as_str().unwrap_or("")
}

/// The final code of the AUTH exchange in a swaks run (235, 435 or 535), skipping the
/// 334 prompts of LOGIN.
fn auth_code(run: &SwaksRun) -> u16 {
    run.exchanges
        .iter()
        .skip_while(|(line, _)| !line.starts_with("AUTH"))
        .filter_map(|(_, reply)| reply.as_ref())
        .map(|r| r.code)
        .find(|&code| code != 334)
        .unwrap_or_else(|| panic!("no AUTH result:\n{}", run.transcript()))
}

/// The Exim message id in the reply to the end of DATA (`250 OK id=...`).
fn message_id(run: &SwaksRun) -> String {
    run.exchanges
        .iter()
        .filter_map(|(_, reply)| reply.as_ref())
        .find_map(|r| {
            let text = r.text();
            let id = text.split("id=").nth(1)?;
            Some(id.split_whitespace().next()?.to_string())
        })
        .unwrap_or_else(|| panic!("no message id:\n{}", run.transcript()))
}

// ---------------------------------------------------------------------------------
// Exim

/// An Exim daemon on the shipped configuration; with `extra_selectors`, on a copy of it
/// whose `log_selector` has those added (Exim refuses a second `log_selector` line, and
/// the shipped file has no macro for it).
fn exim_daemon(world: &World, oracle: &Oracle, extra_selectors: Option<&str>) -> EximDaemon {
    let mut exim = Exim::new(world, Via::Dlfunc, oracle.exim_socket());
    if let Some(extra) = extra_selectors {
        let shipped =
            fs::read_to_string(paths::exim_config_example()).expect("read the shipped config");
        assert!(
            shipped.contains("\nlog_selector = "),
            "the shipped config sets log_selector"
        );
        let variant = shipped.replacen(
            "\nlog_selector = ",
            &format!("\nlog_selector = {extra} "),
            1,
        );
        let path = world.path("exim4.conf.selectors");
        fs::write(&path, variant).expect("write the config variant");
        exim = exim.with_config(&path);
    }
    exim.daemon()
}

/// Wrong passwords (PLAIN, LOGIN, an unknown user), a message to three recipients, a
/// refused RCPT; then the parsed mainlog has one event for each, and nothing it did not
/// understand.
fn exim_log_matches_the_sessions(extra_selectors: Option<&str>) {
    let world = World::new(&["alice", "bob"]);
    let oracle = Oracle::start(&world);
    let daemon = exim_daemon(&world, &oracle, extra_selectors);
    let mut sessions = 0;

    // (user, mechanism, password): each is refused with 535.
    let wrong = [
        ("alice", "PLAIN", "wrong-1"),
        ("bob", "LOGIN", "wrong-2"),
        ("mallory", "PLAIN", "guess"),
    ];
    for (user, mech, password) in wrong {
        let swaks = daemon.swaks();
        let swaks = match mech {
            "PLAIN" => swaks.auth_plain(user, password),
            _ => swaks.auth_login(user, password),
        };
        let run = swaks.quit_after("AUTH").run();
        sessions += 1;
        assert_eq!(auth_code(&run), 535, "{user}:\n{}", run.transcript());
    }

    let rcpts = ["r1@example.net", "r2@example.net", "r3@example.net"];
    let sent = daemon
        .swaks()
        .auth_plain("alice", PASSWORD)
        .from("alice@example.org")
        .to(&rcpts)
        .run();
    sessions += 1;
    assert_eq!(auth_code(&sent), 235, "{}", sent.transcript());
    let msgid = message_id(&sent);

    // Restricted characters: refused by the shipped RCPT ACL even from loopback (which
    // may relay).
    let refused_rcpt = "bad%relay@example.net";
    let refused = daemon
        .swaks()
        .from("someone@example.org")
        .to(&[refused_rcpt])
        .quit_after("RCPT")
        .run();
    sessions += 1;
    assert_eq!(
        refused.reply_to("RCPT").code,
        550,
        "{}",
        refused.transcript()
    );

    wait_until(
        "every session in the mainlog",
        || {
            let log = world.exim_mainlog();
            count_lines(&log, "authenticator failed") >= wrong.len()
                && count_lines(&log, " <= ") >= 1
                && count_lines(&log, "rejected RCPT") >= 1
        },
        || daemon.logs(),
    );
    let parsed = ParsedLog::of("exim", &world.log_dir().join("mainlog"));
    parsed.assert_all_understood();
    let dump = parsed.dump();

    // One failure per wrong password, with the name tried and the client address.
    let mut failed: Vec<(&str, &str, &str)> = parsed
        .auth("fail")
        .iter()
        .map(|e| (s(e, "user"), s(e, "ip"), s(e, "authenticator")))
        .collect();
    failed.sort();
    assert_eq!(
        failed,
        [
            ("alice", "127.0.0.1", "access_plain"),
            ("bob", "127.0.0.1", "access_login"),
            ("mallory", "127.0.0.1", "access_plain"),
        ],
        "{dump}"
    );
    for e in parsed.auth("fail") {
        assert_eq!(s(e, "protocol"), "smtp", "{e}");
        assert_ne!(e["temporary"], true, "535 is not temporary: {e}");
    }

    // The successful AUTH shows only as `A=` on the arrival: one `auth` ok.
    let ok = parsed.auth("ok");
    assert_eq!(ok.len(), 1, "{dump}");
    assert_eq!(
        (
            s(ok[0], "user"),
            s(ok[0], "ip"),
            s(ok[0], "authenticator"),
            s(ok[0], "protocol")
        ),
        ("alice", "127.0.0.1", "access_plain", "smtp"),
        "{dump}"
    );

    let arrivals = parsed.kind("arrival");
    assert_eq!(arrivals.len(), 1, "{dump}");
    let arrival = arrivals[0];
    assert_eq!(s(arrival, "msgid"), msgid, "{dump}");
    assert_eq!(s(arrival, "user"), "alice", "{dump}");
    assert_eq!(s(arrival, "ip"), "127.0.0.1", "{dump}");
    assert_eq!(s(arrival, "sender"), "alice@example.org", "{dump}");
    assert!(arrival["size"].as_u64().is_some_and(|n| n > 0), "{dump}");
    let mut listed: Vec<&str> = arrival["recipients"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    listed.sort();
    // The shipped log_selector has +received_recipients: the `<=` line names them.
    assert_eq!(listed, rcpts, "{dump}");

    let rejections = parsed.kind("rejection");
    assert_eq!(rejections.len(), 1, "{dump}");
    assert_eq!(
        rejections[0]["recipients"],
        serde_json::json!([refused_rcpt]),
        "{dump}"
    );
    assert_eq!(s(rejections[0], "ip"), "127.0.0.1", "{dump}");
    assert_ne!(rejections[0]["temporary"], true, "{dump}");

    if extra_selectors.is_some_and(|x| x.contains("+smtp_connection")) {
        // Every swaks session, plus the harness's readiness probe.
        assert!(
            parsed.kind("connection").len() > sessions,
            "{sessions} sessions:\n{dump}"
        );
        assert!(
            parsed.events.iter().all(|e| e["pid"].as_u64().is_some()),
            "+pid: every event has its pid:\n{dump}"
        );
    }
    assert!(world.exim_paniclog().is_empty(), "{}", daemon.logs());
}

#[test]
fn exim_log_of_shipped_configuration_matches_the_sessions() {
    exim_log_matches_the_sessions(None);
}

#[test]
fn exim_log_with_recipients_and_connections_matches_the_sessions() {
    exim_log_matches_the_sessions(Some(RICH_SELECTORS));
}

// ---------------------------------------------------------------------------------
// Dovecot

/// A message for APPEND (CRLF line ends) with the Message-ID `<id>`.
fn message(id: &str) -> Vec<u8> {
    format!(
        "From: carol@example.test\r\nTo: alice@example.test\r\nSubject: e2e {id}\r\n\
         Message-ID: <{id}>\r\n\r\nhello from the end-to-end test\r\n"
    )
    .into_bytes()
}

/// One IMAP or POP3 connection: its presented address, its attempts in order, and what
/// it does once logged in.
struct Connection {
    protocol: &'static str,
    ip: &'static str,
    /// (user, password is right).
    attempts: Vec<(&'static str, bool)>,
    then: Then,
}

/// What a connection does after a successful login, before it leaves.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Then {
    /// Nothing: log out at once.
    Leave,
    /// IMAP: append two messages, fetch the first, expunge the second.
    StoreAndExpunge,
    /// POP3: retrieve message 1.
    Retrieve,
}

impl Connection {
    /// (protocol, user, ip) of each attempt with outcome `ok`.
    fn attempts(
        &self,
        ok: bool,
    ) -> impl Iterator<Item = (&'static str, &'static str, &'static str)> + '_ {
        self.attempts
            .iter()
            .filter(move |a| a.1 == ok)
            .map(|&(user, _)| (self.protocol, user, self.ip))
    }

    fn failures(&self) -> usize {
        self.attempts.iter().filter(|(_, ok)| !ok).count()
    }

    fn logged_in(&self) -> bool {
        self.attempts.iter().any(|(_, ok)| *ok)
    }
}

/// `in=N out=M` (IMAP) or `retr=a/B ... top=c/D` (POP3) of a `Logged out` line, as the
/// parser should read them: (bytes_in, bytes_out).
fn logged_out_counts(line: &str) -> (Option<u64>, Option<u64>) {
    let field = |name: &str| {
        line.split([' ', ','])
            .find_map(|w| w.strip_prefix(name))
            .map(str::to_string)
    };
    let num = |v: Option<String>| v.and_then(|v| v.parse::<u64>().ok());
    let after_slash = |v: Option<String>| {
        v.and_then(|v| v.split_once('/').and_then(|(_, b)| b.parse::<u64>().ok()))
    };
    if line.contains(" in=") {
        (num(field("in=")), num(field("out=")))
    } else {
        let top = after_slash(field("top="));
        let retr = after_slash(field("retr="));
        (None, top.zip(retr).map(|(t, r)| t + r))
    }
}

/// IMAP and POP3 logins, right and wrong, from presented IPv4 and IPv6 addresses; mail
/// stored over IMAP and fetched over POP3. The parsed log has a per-attempt `auth` fail
/// for each wrong password and unknown user, a login summary with the protocol for each
/// connection that gave up, an `auth` ok with the protocol for each login, and a `logout`
/// with byte counts that shares the login's session.
#[test]
fn dovecot_log_matches_the_logins() {
    let world = World::new(&["alice", "bob"]);
    let dovecot = Dovecot::start(&world, &["alice", "bob"]);

    let imap = |ip, attempts, then| Connection {
        protocol: "imap",
        ip,
        attempts,
        then,
    };
    let pop3 = |ip, attempts, then| Connection {
        protocol: "pop3",
        ip,
        attempts,
        then,
    };
    let connections = [
        imap("203.0.113.10", vec![("alice", true)], Then::StoreAndExpunge),
        imap("203.0.113.11", vec![("alice", false)], Then::Leave),
        imap(
            "2001:db8::12",
            vec![("bob", false), ("bob", false)],
            Then::Leave,
        ),
        imap("203.0.113.13", vec![("mallory", false)], Then::Leave),
        imap(
            "198.51.100.14",
            vec![("alice", false), ("alice", true)],
            Then::Leave,
        ),
        pop3("198.51.100.20", vec![("alice", true)], Then::Retrieve),
        pop3("198.51.100.21", vec![("bob", false)], Then::Leave),
        pop3("2001:db8::22", vec![("alice", true)], Then::Leave),
    ];
    let kept = message("e2e-kept@example.test");
    let expunged = message("e2e-expunged@example.test");
    let mut port = 40000;

    for (n, conn) in connections.iter().enumerate() {
        port += 1;
        let password = |ok: bool, i: usize| {
            if ok {
                PASSWORD.to_string()
            } else {
                format!("wrong-{n}-{i}")
            }
        };
        if conn.protocol == "imap" {
            let mut client = dovecot.imap();
            client.id_originating(conn.ip, port);
            for (i, &(user, ok)) in conn.attempts.iter().enumerate() {
                let reply = client.login(user, &password(ok, i));
                assert_eq!(reply.is_ok(), ok, "{reply:?}\n{}", client.transcript());
            }
            if conn.then == Then::StoreAndExpunge {
                // Mailbox work the mail_log plugin reports: two saves, one expunge.
                for msg in [&kept, &expunged] {
                    let reply = client.append("INBOX", msg);
                    assert!(reply.is_ok(), "{reply:?}\n{}", client.transcript());
                }
                for command in [
                    "SELECT INBOX",
                    "FETCH 1 (BODY[])",
                    "STORE 2 +FLAGS (\\Deleted)",
                    "EXPUNGE",
                ] {
                    let reply = client.command(command);
                    assert!(reply.is_ok(), "{reply:?}\n{}", client.transcript());
                }
            }
            let bye = client.logout();
            assert!(bye.is_ok(), "{bye:?}");
        } else {
            let mut client = dovecot.pop3();
            assert!(client.greeting().contains("[XCLIENT]"), "trusted network");
            client.xclient(conn.ip, port);
            for (i, &(user, ok)) in conn.attempts.iter().enumerate() {
                let reply = client.login(user, &password(ok, i));
                assert_eq!(
                    reply.starts_with("+OK"),
                    ok,
                    "{reply}\n{}",
                    client.transcript()
                );
            }
            if conn.then == Then::Retrieve {
                let fetched = client.retr(1);
                assert_eq!(fetched, kept, "RETR gives the message kept over IMAP");
            }
            let bye = client.quit();
            assert!(bye.starts_with("+OK"), "{bye}");
        }
    }

    let failures: usize = connections.iter().map(Connection::failures).sum();
    let gave_up: Vec<&Connection> = connections.iter().filter(|c| !c.logged_in()).collect();
    let logins = connections.iter().filter(|c| c.logged_in()).count();
    dovecot.wait_for_log("auth failed", gave_up.len(), LOG_DEADLINE);
    dovecot.wait_for_log("Logged out", logins, LOG_DEADLINE);
    // With auth_verbose the auth process logs failures only, each as `passwd-file(..)`.
    let log = dovecot.wait_for_log("passwd-file(", failures, LOG_DEADLINE);
    let per_attempt = count_lines(&log, "Password mismatch") + count_lines(&log, "unknown user");
    assert_eq!(per_attempt, failures, "one auth line per failure:\n{log}");

    let parsed = ParsedLog::of("dovecot", &dovecot.log_path());
    parsed.assert_all_understood();
    let dump = parsed.dump();
    let fails = parsed.auth("fail");
    let (summaries, attempts): (Vec<&Value>, Vec<&Value>) =
        fails.iter().partition(|e| e["attempts"].is_u64());

    // Successful logins: protocol, user, presented address.
    let mut expected: Vec<(&str, &str, &str)> =
        connections.iter().flat_map(|c| c.attempts(true)).collect();
    expected.sort();
    let mut ok: Vec<(&str, &str, &str)> = parsed
        .auth("ok")
        .iter()
        .map(|e| (s(e, "protocol"), s(e, "user"), s(e, "ip")))
        .collect();
    ok.sort();
    assert_eq!(ok, expected, "auth ok events:\n{dump}");

    // Each wrong password and unknown user: one per-attempt failure from the auth
    // process (no protocol: the auth process does not say), in the connection's session.
    let mut expected: Vec<(&str, &str)> = connections
        .iter()
        .flat_map(|c| c.attempts(false))
        .map(|(_, user, ip)| (user, ip))
        .collect();
    expected.sort();
    let mut seen: Vec<(&str, &str)> = attempts
        .iter()
        .map(|e| (s(e, "user"), s(e, "ip")))
        .collect();
    seen.sort();
    assert_eq!(seen, expected, "per-attempt failures:\n{dump}");
    for e in &attempts {
        assert_eq!(s(e, "passdb"), "passwd-file", "{e}");
        let reason = if s(e, "user") == "mallory" {
            "unknown user"
        } else {
            "password mismatch"
        };
        assert_eq!(s(e, "reason"), reason, "{e}");
        assert!(!s(e, "session").is_empty(), "{e}");
    }

    // Each connection that gave up: one summary with the protocol and the attempt count.
    let mut expected: Vec<(&str, &str, &str, u64)> = gave_up
        .iter()
        .map(|c| (c.protocol, c.attempts[0].0, c.ip, c.failures() as u64))
        .collect();
    expected.sort();
    let mut seen: Vec<(&str, &str, &str, u64)> = summaries
        .iter()
        .map(|e| {
            (
                s(e, "protocol"),
                s(e, "user"),
                s(e, "ip"),
                e["attempts"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(seen, expected, "login summaries:\n{dump}");

    // Sessions tie it together: every per-attempt failure belongs to a summary or to a
    // later successful login of the same connection (same user and address).
    let mut by_session: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
    for e in &parsed.events {
        if let Some(session) = e["session"].as_str() {
            by_session.entry(session).or_default().push(e);
        }
    }
    for e in &attempts {
        let same = &by_session[s(e, "session")];
        let closer = same
            .iter()
            .find(|o| o["attempts"].is_u64() || o["result"] == "ok")
            .unwrap_or_else(|| panic!("no summary or login in the session of {e}:\n{dump}"));
        assert_eq!(
            (s(closer, "user"), s(closer, "ip")),
            (s(e, "user"), s(e, "ip")),
            "{dump}"
        );
        assert!(
            ["imap", "pop3"].contains(&s(closer, "protocol")),
            "{closer}"
        );
    }

    // Each login ends in a logout of the same session, user and protocol, with the byte
    // counts of its `Logged out` line.
    let logouts = parsed.kind("logout");
    assert_eq!(logouts.len(), logins, "{dump}");
    for login in parsed.auth("ok") {
        let session = s(login, "session");
        let logout = logouts
            .iter()
            .find(|l| s(l, "session") == session)
            .unwrap_or_else(|| panic!("no logout for {login}:\n{dump}"));
        assert_eq!(s(logout, "user"), s(login, "user"), "{dump}");
        assert_eq!(s(logout, "protocol"), s(login, "protocol"), "{dump}");
        let line = log
            .lines()
            .find(|l| l.contains(&format!("<{session}>")) && l.contains("Logged out"))
            .unwrap_or_else(|| panic!("no Logged out line of {session}:\n{dump}"))
            .to_string();
        let (bytes_in, bytes_out) = logged_out_counts(&line);
        assert_eq!(logout["bytes_in"].as_u64(), bytes_in, "{line}\n{logout}");
        assert_eq!(logout["bytes_out"].as_u64(), bytes_out, "{line}\n{logout}");
        assert!(bytes_out.is_some(), "{line}");
    }

    // What was done to the mailbox: the first IMAP session fetched one message and
    // expunged one; the first POP3 session retrieved the kept one.
    let first_imap = logouts
        .iter()
        .find(|l| s(l, "protocol") == "imap" && l["expunged"] == 1)
        .unwrap_or_else(|| panic!("no IMAP logout with expunged=1:\n{dump}"));
    assert_eq!(first_imap["fetched"], 1, "{first_imap}");
    let retr = logouts
        .iter()
        .find(|l| s(l, "protocol") == "pop3" && l["fetched"] == 1)
        .unwrap_or_else(|| panic!("no POP3 logout with retr=1:\n{dump}"));
    assert!(
        retr["bytes_out"]
            .as_u64()
            .is_some_and(|n| n >= kept.len() as u64),
        "{retr}"
    );
    let actions = parsed.kind("mailbox_action");
    let mut saved: Vec<&str> = actions
        .iter()
        .filter(|a| a["action"] == "save")
        .map(|a| s(a, "message_id"))
        .collect();
    saved.sort();
    assert_eq!(
        saved,
        ["e2e-expunged@example.test", "e2e-kept@example.test"],
        "{dump}"
    );
    let gone: Vec<&&Value> = actions
        .iter()
        .filter(|a| a["action"] == "expunge")
        .collect();
    assert_eq!(gone.len(), 1, "{dump}");
    assert_eq!(
        s(gone[0], "message_id"),
        "e2e-expunged@example.test",
        "{dump}"
    );
    assert_eq!(s(gone[0], "user"), "alice", "{dump}");
    assert_eq!(s(gone[0], "mailbox"), "INBOX", "{dump}");
}

// ---------------------------------------------------------------------------------
// Both, live

/// `ctl --json account USER`: the account's report (`hold` is null when not held).
fn account(oracle: &Oracle, user: &str) -> Value {
    oracle.ctl_json(&["account", user])
}

/// Whether the oracle has read `file` to its end (its saved position).
fn followed_to_end(state_dir: &Path, file: &Path) -> bool {
    let Ok(bytes) = fs::read(state_dir.join("positions.json")) else {
        return false;
    };
    let Ok(positions) = serde_json::from_slice::<Value>(&bytes) else {
        return false;
    };
    let len = fs::metadata(file).map(|m| m.len()).unwrap_or(u64::MAX);
    positions[file.to_string_lossy().as_ref()]["offset"].as_u64() == Some(len)
}

/// Five wrong IMAP passwords, seen only in Dovecot's log, hold the account; Exim then
/// defers the right password over SMTP (435). Each failure counts once although the log
/// reports it twice (auth process and login summary). The hold covers every source
/// (`hold_scope = "all"`): the SMTP login comes from loopback, where alice logged in
/// before, which the default scope would spare (tests/tests/responses.rs tests that).
#[test]
fn dovecot_failures_followed_live_hold_the_account_for_smtp() {
    let world = World::new(&["alice"]);
    let dovecot = Dovecot::start(&world, &["alice"]);
    let mainlog = world.log_dir().join("mainlog");
    let toml_path = |p: &Path| serde_json::to_string(&p.to_string_lossy()).expect("a string");
    let sources = format!(
        "[[sources]]\npath = {}\nformat = \"exim\"\nstart_at = \"beginning\"\npoll_secs = 1\n\n\
         [[sources]]\npath = {}\nformat = \"dovecot\"\nstart_at = \"beginning\"\npoll_secs = 1\n\n\
         [rules.failed_logins_account]\nhold_scope = \"all\"\n",
        toml_path(&mainlog),
        toml_path(&dovecot.log_path()),
    );
    let oracle = Oracle::start_with(&world, &sources);
    let daemon = Exim::new(&world, Via::Dlfunc, oracle.exim_socket()).daemon();

    // The right password works over SMTP before anything happened.
    let before = daemon
        .swaks()
        .auth_plain("alice", PASSWORD)
        .quit_after("AUTH")
        .run();
    assert_eq!(auth_code(&before), 235, "{}", before.transcript());
    assert!(account(&oracle, "alice")["hold"].is_null());

    for i in 1..=5 {
        let mut client = dovecot.imap();
        client.id_originating("203.0.113.50", 50000 + i);
        let reply = client.login("alice", &format!("wrong-{i}"));
        assert!(!reply.is_ok(), "{reply:?}");
        client.logout();
    }
    dovecot.wait_for_log("auth failed", 5, LOG_DEADLINE);

    wait_until(
        "the oracle holds alice after five IMAP failures",
        || !account(&oracle, "alice")["hold"].is_null(),
        || format!("{}\n{}", account(&oracle, "alice"), dovecot.logs()),
    );
    wait_until(
        "the oracle reads Dovecot's log to its end",
        || followed_to_end(&world.state_dir(), &dovecot.log_path()),
        || dovecot.logs(),
    );
    let report = account(&oracle, "alice");
    assert_eq!(
        report["failed_logins"]["count"], 5,
        "five failures, each counted once (auth line and summary):\n{report:#}"
    );
    assert_eq!(report["totals"]["logins_failed"], 5, "{report:#}");

    let held = daemon
        .swaks()
        .auth_plain("alice", PASSWORD)
        .quit_after("AUTH")
        .run();
    assert_eq!(auth_code(&held), 435, "{}", held.transcript());
    let reply = held
        .exchanges
        .iter()
        .filter_map(|(_, r)| r.as_ref())
        .find(|r| r.code == 435)
        .expect("the 435");
    assert!(
        reply
            .text()
            .starts_with("Unable to authenticate at present: "),
        "{reply}"
    );

    let alerts = oracle.wait_for_alerts(1, LOG_DEADLINE);
    let brute: Vec<&Value> = alerts
        .iter()
        .filter(|a| a["rule"] == "failed_logins_account")
        .collect();
    assert_eq!(brute.len(), 1, "{alerts:#?}");
    assert_eq!(brute[0]["account"], "alice", "{}", brute[0]);
    assert_eq!(brute[0]["ip"], "203.0.113.50", "{}", brute[0]);
    // Dovecot's auth process does not name the service: never mislabelled as smtp.
    assert_ne!(brute[0]["protocol"], "smtp", "{}", brute[0]);

    // Exim's log of the deferred AUTH (435, temporary) is not one more failure.
    wait_until(
        "the oracle reads Exim's mainlog to its end",
        || world.exim_mainlog().contains(" 435 ") && followed_to_end(&world.state_dir(), &mainlog),
        || daemon.logs(),
    );
    let after = account(&oracle, "alice");
    assert_eq!(after["failed_logins"]["count"], 5, "{after:#}");
    assert!(!after["hold"].is_null(), "{after:#}");
    let dead = fs::read_to_string(world.state_dir().join("dead-letters.log")).unwrap_or_default();
    assert!(dead.is_empty(), "dead letters while following:\n{dead}");
}
