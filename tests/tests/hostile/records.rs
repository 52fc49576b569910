//! Hostile-client tests: records. What an SMTP client can put into what administrators
//! read (tables of `ctl` and `audit search`), and what a damaged state snapshot does to
//! the real binary at start.
//!
//! Before the fix: an AUTH user name holding ESC, OSC or BEL sequences came out raw in
//! `ctl status`, `ctl alerts`, `ctl account` and `audit search` tables (a title change,
//! a cleared screen on the admin's terminal); a snapshot with a flipped bit loaded (one
//! flip turned a hold's rule into `restored`), and a record that did not decode left
//! the records before it in the state while the log said "starting empty".

use std::fs;
use std::time::Duration;

use exim_access_e2e::oracle::audit;
use exim_access_e2e::process::Finished;
use exim_access_e2e::{Dialogue, Exim, Oracle, PASSWORD, Via, World};
use serde_json::Value;

/// An account name that sets the terminal's title (OSC ... BEL) and clears the screen
/// (CSI 2J), as an SMTP client may send it in `AUTH PLAIN`.
const EVIL: &str = "evil\x1b]0;pwned\x07\x1b[2J@example.org";

/// How it must show in a human-readable table (up to the `J`, which the oracle may
/// fold to lower case with the rest of an account name).
const EVIL_SHOWN: &str = "evil\\x1b]0;pwned\\x07\\x1b[2";

/// Whether `v` is the name, as sent or as the oracle folds account names.
fn is_evil(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|s| s == EVIL || s == EVIL.to_lowercase())
}

const ATTACKER: &str = "203.0.113.66";

/// The output holds no byte a terminal acts on (other than the line ends) and shows the
/// name escaped.
fn assert_inert(what: &str, out: &Finished) {
    out.assert_success();
    for (stream, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        assert!(
            !bytes.iter().any(|&b| (b < 0x20 && b != b'\n') || b == 0x7f),
            "{what}: raw control bytes on {stream}:\n{}",
            String::from_utf8_lossy(bytes).escape_debug()
        );
    }
    assert!(
        out.stdout_text().contains(EVIL_SHOWN),
        "{what}: the name is not shown escaped:\n{}",
        out.stdout_text().escape_debug()
    );
}

#[test]
fn terminal_escapes_in_a_user_name_reach_no_admin_terminal() {
    let world = World::new(&["alice"]);
    let mut oracle = Oracle::start(&world);
    let exim = Exim::new(&world, Via::Dlfunc, oracle.exim_socket());
    // Five wrong passwords: the account is held and an alert names it.
    for i in 0..5 {
        let s = exim.bh(ATTACKER, &Dialogue::auth_only(EVIL, format!("guess-{i}")));
        s.assert_oracle_answered();
        assert_eq!(s.reply("AUTH").code, 535, "{}", s.transcript());
    }
    let alerts = oracle.wait_for_alerts(1, Duration::from_secs(10));
    assert!(is_evil(&alerts[0]["account"]), "{alerts:?}");

    assert_inert("ctl status", &oracle.ctl(&["status"]));
    assert_inert("ctl alerts", &oracle.ctl(&["alerts"]));
    assert_inert("ctl account", &oracle.ctl(&["account", EVIL]));
    // JSON stays JSON: the name escaped by JSON itself, read back exactly.
    let json = oracle.ctl(&["--json", "account", EVIL]);
    json.assert_success();
    assert!(!json.stdout.contains(&0x1b), "{}", json.stdout_text());
    let account: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert!(is_evil(&account["account"]), "{account}");
    assert!(account["hold"].is_object(), "{account}");
    oracle.stop();

    assert_inert("audit search", &audit(&world, &["search", "--user", EVIL]));
    let found = audit(&world, &["search", "--json", "--user", EVIL]);
    found.assert_success();
    assert!(!found.stdout.contains(&0x1b), "{}", found.stdout_text());
    let first: Value = serde_json::from_str(found.stdout_text().lines().next().unwrap()).unwrap();
    assert!(is_evil(&first["user"]), "{first}");
    let verified = audit(&world, &["verify"]);
    verified.assert_success();
    assert!(!verified.stdout.iter().any(|&b| b == 0x1b || b == 0x07));
}

#[test]
fn a_damaged_snapshot_is_set_aside_and_nothing_of_it_is_restored() {
    let world = World::new(&["alice"]);
    let mut oracle = Oracle::start(&world);
    let exim = Exim::new(&world, Via::Dlfunc, oracle.exim_socket());
    for i in 0..5 {
        let s = exim.bh(
            ATTACKER,
            &Dialogue::auth_only("alice", format!("guess-{i}")),
        );
        assert_eq!(s.reply("AUTH").code, 535, "{}", s.transcript());
    }
    let held = exim.bh("192.0.2.10", &Dialogue::auth_only("alice", PASSWORD));
    assert_eq!(held.reply("AUTH").code / 100, 4, "{}", held.transcript());
    // Stopping writes the snapshot with the hold in it.
    oracle.stop();
    let path = world.state_dir().join("state.snapshot");
    let mut bytes = fs::read(&path).unwrap();
    // One bit of the hold's rule name flipped (the review's flip that loaded as a hold
    // by the rule `restored`).
    let rule = b"failed_logins_account";
    let at = bytes
        .windows(rule.len())
        .position(|w| w == rule)
        .expect("the hold's rule in the snapshot");
    bytes[at + 3] ^= 0x01;
    fs::write(&path, &bytes).unwrap();

    oracle.restart();
    let log = oracle.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("the state snapshot is damaged"))
        .unwrap_or_else(|| panic!("no word of the damaged snapshot:\n{log}"));
    assert!(line.contains("ERROR"), "{line}");
    assert!(
        line.contains("state.snapshot")
            && line.contains("does not match its checksum")
            && line.contains("bytes"),
        "the file and the offset: {line}"
    );
    assert!(line.contains("nothing of it was restored"), "{line}");
    let aside: Vec<String> = fs::read_dir(world.state_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("state.snapshot.bad-"))
        .collect();
    assert_eq!(aside.len(), 1, "kept aside for inspection");
    assert_eq!(
        fs::read(world.state_dir().join(&aside[0])).unwrap(),
        bytes,
        "kept as it was"
    );
    // What the log says is what happened: nothing restored, the hold is gone.
    let status = oracle.ctl_json(&["status"]);
    assert_eq!(
        status["in_force"]["holds"].as_array().map(Vec::len),
        Some(0),
        "{status}"
    );
    let s = exim.bh("192.0.2.10", &Dialogue::auth_only("alice", PASSWORD));
    assert_eq!(s.reply("AUTH").code, 235, "{}", s.transcript());
}
