//! Hostile-client tests: what an SMTP client puts into the values Exim hands to the
//! library and the `${readsocket}` snippets (bytes that are not UTF-8, empty values,
//! NUL, over-long values) never decides whether the oracle is asked.
//!
//! Before the fix, `MAIL FROM:<b\xffob@example.com>` made the library refuse the
//! argument and answer `accept` without asking, and the readsocket snippets ignored the
//! oracle's `error`: twelve recipients passed a ceiling of five. Empty and non-UTF-8
//! AUTH user names were never sent, so their failures counted nowhere.

use std::collections::HashMap;

use exim_access_e2e::{Dialogue, Exim, Oracle, PASSWORD, Session, Via, World};

/// A recipient ceiling of five an hour.
const CEILING_5: &str = "[rules.recipient_ceiling]\nlimit = 5\n";

/// The requests the oracle has answered, by verb, and the malformed ones.
fn counts(oracle: &Oracle) -> (HashMap<String, u64>, u64) {
    let status = oracle.ctl_json(&["status"]);
    let stats = &status["counters"];
    let mut by_verb = HashMap::new();
    for pair in stats["requests"].as_array().expect("requests by verb") {
        by_verb.insert(
            pair[0].as_str().unwrap().to_string(),
            pair[1].as_u64().unwrap(),
        );
    }
    (by_verb, stats["malformed"].as_u64().unwrap_or(0))
}

/// Runs `dialogue` and asserts that the oracle was asked `want` more times per verb and
/// found nothing malformed.
fn asked(
    oracle: &Oracle,
    exim: &Exim,
    ip: &str,
    dialogue: &Dialogue,
    want: &[(&str, u64)],
    what: &str,
) -> Session {
    let (before, malformed_before) = counts(oracle);
    let session = exim.bh(ip, dialogue);
    session.assert_exim_healthy();
    let (after, malformed_after) = counts(oracle);
    for (verb, n) in want {
        let grew = after.get(*verb).copied().unwrap_or(0) - before.get(*verb).copied().unwrap_or(0);
        assert_eq!(
            grew,
            *n,
            "{what}: the oracle was asked {grew} {verb} requests, want {n}:\n{}",
            session.transcript()
        );
    }
    assert_eq!(
        malformed_after,
        malformed_before,
        "{what}: a request was malformed:\n{}",
        session.transcript()
    );
    let problems = session.oracle_problems();
    assert!(problems.is_empty(), "{what}: {problems:?}");
    session
}

/// An authenticated submission as alice with a raw MAIL FROM and `rcpts` recipients.
fn submission_from(sender: &[u8], rcpts: usize) -> Dialogue {
    let mut mail = b"MAIL FROM:<".to_vec();
    mail.extend_from_slice(sender);
    mail.push(b'>');
    let mut d = Dialogue::new()
        .ehlo("client.example")
        .auth_plain("alice", PASSWORD)
        .line("MAIL", mail);
    for i in 1..=rcpts {
        d = d.rcpt_to(&format!("rcpt{i}@example.net"));
    }
    d.quit()
}

/// The finding itself: a sender that is not UTF-8, then twelve recipients under a
/// ceiling of five. Every one is asked about and the sixth on is deferred.
#[test]
fn a_sender_that_is_not_utf8_does_not_bypass_the_ceiling() {
    for via in [Via::Dlfunc, Via::Readsocket] {
        let world = World::new(&["alice"]);
        let oracle = Oracle::start_with(&world, CEILING_5);
        let exim = Exim::new(&world, via, oracle.exim_socket());
        let session = asked(
            &oracle,
            &exim,
            "192.0.2.20",
            &submission_from(b"b\xffob@example.com", 12),
            &[("mail", 1), ("rcpt", 12)],
            &format!("{via:?}"),
        );
        assert_eq!(session.reply("MAIL").code, 250, "{}", session.transcript());
        let codes = session.codes("RCPT");
        assert_eq!(codes.len(), 12, "{}", session.transcript());
        assert!(
            codes[..5].iter().all(|&c| c == 250),
            "{via:?}: the first five pass: {codes:?}"
        );
        assert!(
            codes[5..].iter().all(|&c| (400..500).contains(&c)),
            "{via:?}: the sixth on are deferred: {codes:?}\n{}",
            session.transcript()
        );
    }
}

/// Every value a client controls in the shipped snippets (the AUTH user name and
/// password, the sender, the recipient), each not UTF-8, empty and holding NUL: the
/// oracle is asked every time, and no request is malformed.
#[test]
fn every_client_value_reaches_the_oracle_whatever_its_bytes() {
    let odd: [(&str, &[u8]); 5] = [
        ("not utf-8", b"b\xffob\xc3"),
        ("empty", b""),
        ("nul", b"nu\0l"),
        ("control", b"\x1b]0;x\x07\x01"),
        ("long", &[b'z'; 6000]),
    ];
    let world = World::new(&["alice"]);
    let oracle = Oracle::start(&world);
    for via in [Via::Dlfunc, Via::Readsocket] {
        let exim = Exim::new(&world, via, oracle.exim_socket());
        for (i, (what, bytes)) in odd.iter().enumerate() {
            // A fresh address each time: the failures below add up per address.
            let ip = format!(
                "198.51.100.{}",
                10 + i + if via == Via::Dlfunc { 0 } else { 50 }
            );
            // The AUTH user name (wrong password, then the password itself).
            let d = Dialogue::new()
                .ehlo("client.example")
                .auth_plain(strip_nul(bytes), "wrong")
                .auth_plain("alice", bytes)
                .quit();
            asked(
                &oracle,
                &exim,
                &ip,
                &d,
                &[("auth", 2)],
                &format!("{via:?} auth {what}"),
            );
            // The same through LOGIN, where a NUL can be typed.
            let d = Dialogue::new()
                .ehlo("client.example")
                .auth_login(bytes, "wrong")
                .quit();
            let s = exim.bh(&ip, &d);
            s.assert_exim_healthy();
            // The sender: Exim's own syntax check may refuse it first (then nothing is
            // asked); when Exim takes it, the oracle is asked.
            let mut sender = b"s".to_vec();
            sender.extend_from_slice(bytes);
            sender.extend_from_slice(b"@example.com");
            let session = exim.bh(&ip, &submission_from(&sender, 1));
            session.assert_exim_healthy();
            if session.reply("MAIL").code == 250 {
                assert!(
                    session.replies("RCPT")[0].is_some(),
                    "{}",
                    session.transcript()
                );
                let (after, _) = counts(&oracle);
                assert!(after.get("rcpt").copied().unwrap_or(0) > 0);
                assert!(
                    session.oracle_problems().is_empty(),
                    "{via:?} sender {what}: {:?}",
                    session.oracle_problems()
                );
            }
            // The recipient.
            let mut rcpt = b"RCPT TO:<r".to_vec();
            rcpt.extend_from_slice(bytes);
            rcpt.extend_from_slice(b"@example.net>");
            let d = Dialogue::new()
                .ehlo("client.example")
                .auth_plain("alice", PASSWORD)
                .mail_from("alice@example.org")
                .line("RCPT", rcpt)
                .quit();
            let session = exim.bh(&ip, &d);
            session.assert_exim_healthy();
            assert!(
                session.oracle_problems().is_empty(),
                "{via:?} rcpt {what}: {:?}\n{}",
                session.oracle_problems(),
                session.transcript()
            );
        }
    }
    assert!(oracle.ping(), "the oracle still serves");
    assert!(
        world.exim_paniclog().is_empty(),
        "{}",
        world.exim_paniclog()
    );
}

/// `bytes` without NUL (AUTH PLAIN separates its fields with NUL).
fn strip_nul(bytes: &[u8]) -> Vec<u8> {
    bytes.iter().copied().filter(|&b| b != 0).collect()
}

/// Empty and non-UTF-8 user names were never sent: their failures counted nowhere.
/// Now five wrong passwords hold such a name like any other, and the attempts are in
/// the account's record under the name's text form.
#[test]
fn empty_and_non_utf8_user_names_are_counted_and_held() {
    for via in [Via::Dlfunc, Via::Readsocket] {
        let world = World::new(&["alice"]);
        let oracle = Oracle::start(&world);
        let exim = Exim::new(&world, via, oracle.exim_socket());
        for (name, shown) in [(&b""[..], ""), (&b"b\xffob"[..], "b\\xffob")] {
            let ip = if name.is_empty() {
                "203.0.113.31"
            } else {
                "203.0.113.32"
            };
            let mut d = Dialogue::new().ehlo("client.example");
            for i in 0..6 {
                d = d.auth_plain(name, format!("wrong{i}"));
            }
            let session = exim.bh(ip, &d.quit());
            session.assert_exim_healthy();
            let codes = session.codes("AUTH");
            assert_eq!(
                codes,
                [535, 535, 535, 535, 535, 435],
                "{via:?} {shown:?}: the sixth is held:\n{}",
                session.transcript()
            );
            let account = oracle.ctl_json(&["account", shown]);
            assert!(
                !account["hold"].is_null(),
                "{via:?} {shown:?}: held: {account}"
            );
        }
    }
}

/// A user name with terminal control sequences (OSC title, BEL, CSI clear screen) held
/// after five failures: the oracle's own log lines (the alert, the hold) carry it
/// escaped, so `journalctl` or a terminal tailing the log is not driven by it.
#[test]
fn control_characters_reach_no_log_line() {
    let world = World::new(&["alice"]);
    let oracle = Oracle::start(&world);
    let exim = Exim::new(&world, Via::Dlfunc, oracle.exim_socket());
    let name = b"\x1b]0;pwned\x07\x1b[2Jmallory";
    let mut d = Dialogue::new().ehlo("client.example");
    for i in 0..6 {
        d = d.auth_plain(name, format!("wrong{i}"));
    }
    let session = exim.bh("203.0.113.41", &d.quit());
    session.assert_exim_healthy();
    assert_eq!(
        session.codes("AUTH").last(),
        Some(&435),
        "{}",
        session.transcript()
    );
    let alerts = oracle.wait_for_alerts(1, std::time::Duration::from_secs(10));
    assert_eq!(alerts[0]["rule"], "failed_logins_account", "{alerts:?}");
    let log = oracle.log_text();
    assert!(log.contains("mallory"), "the alert is logged:\n{log}");
    for (i, b) in log.bytes().enumerate() {
        assert!(
            b >= 0x20 || b == b'\n' || b == b'\t',
            "a control byte 0x{b:02x} at {i} of the oracle's log:\n{}",
            log.escape_debug()
        );
    }
}
