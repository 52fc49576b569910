//! The audit trail through real Exim 4.96: what a brute force, a hold, a release and a
//! sent message leave in it; `audit verify` across a restart; tampering found.

use std::fs;
use std::path::Path;

use exim_access_e2e::oracle::audit;
use exim_access_e2e::{Dialogue, Exim, Oracle, PASSWORD, Via, World};
use serde_json::Value;

const ATTACKER: &str = "203.0.113.9";
const HOME: &str = "192.0.2.10";

fn search(world: &World, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["search", "--json"];
    all.extend_from_slice(args);
    let out = audit(world, &all);
    out.assert_success();
    out.stdout_text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// The `kind` of each record, in order.
fn kinds(records: &[Value]) -> Vec<&str> {
    records
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect()
}

fn segments(state: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = fs::read_dir(state.join("audit"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    v.sort();
    v
}

#[test]
fn a_brute_force_its_hold_a_release_and_a_message_are_in_the_trail() {
    let world = World::new(&["alice"]);
    let mut oracle = Oracle::start(&world);
    let exim = Exim::new(&world, Via::Dlfunc, oracle.exim_socket());

    for i in 0..5 {
        let s = exim.bh(
            ATTACKER,
            &Dialogue::auth_only("alice", format!("guess-{i}")),
        );
        s.assert_oracle_answered();
        assert_eq!(s.reply("AUTH").code, 535, "{}", s.transcript());
    }
    let held = exim.bh(HOME, &Dialogue::auth_only("alice", PASSWORD));
    assert_eq!(held.reply("AUTH").code / 100, 4, "{}", held.transcript());
    oracle.ctl(&["release", "alice"]).assert_success();
    let sent = exim.bh(
        HOME,
        &Dialogue::new()
            .ehlo("laptop.example")
            .auth_plain("alice", PASSWORD)
            .mail_from("alice@example.org")
            .rcpt_to("bob@example.net")
            .rcpt_to("carol@example.net")
            .data("hello")
            .quit(),
    );
    assert_eq!(sent.reply("DATA").code / 100, 3, "{}", sent.transcript());
    let status = oracle.ctl(&["status"]);
    status.assert_success();
    assert!(
        status.stdout_text().contains("audit trail")
            && status.stdout_text().contains("0 write errors"),
        "{}",
        status.stdout_text()
    );
    let json = oracle.ctl_json(&["status"]);
    assert!(
        json["audit"]["dir"].as_str().unwrap().ends_with("/audit"),
        "{json}"
    );
    // Stopping writes what is queued.
    oracle.stop();

    let records = search(&world, &["--user", "alice"]);
    let kinds = kinds(&records);
    assert_eq!(
        kinds,
        [
            "auth", "auth", "auth", "auth", "auth", "alert", "auth", "release", "auth", "sent"
        ],
        "{records:#?}"
    );
    for r in &records[..5] {
        assert_eq!(r["result"], "fail");
        assert_eq!(r["ip"], ATTACKER);
        assert_eq!(r["protocol"], "smtp");
        assert_eq!(r["source"], "live");
        assert_eq!(r["verdict"], "accept", "Exim's own 535 stands");
    }
    assert_eq!(records[5]["rule"], "failed_logins_account");
    assert_eq!(records[5]["response"], "hold_account");
    assert_eq!(records[6]["verdict"], "defer");
    assert_eq!(records[6]["result"], "ok");
    assert!(records[7]["admin"].as_str().unwrap().starts_with("uid "));
    assert_eq!(records[8]["verdict"], "accept");
    assert_eq!(records[9]["rcpts"], 2);
    assert_eq!(records[9]["ip"], HOME);
    // By address: the attacker's five attempts and the alert.
    assert_eq!(search(&world, &["--ip", "203.0.113.0/24"]).len(), 6);
    assert_eq!(search(&world, &["--kind", "alert"]).len(), 1);

    let verified = audit(&world, &["verify"]);
    verified.assert_success();
    assert!(
        verified.stdout_text().contains(": ok, 11 records"),
        "{}",
        verified.stdout_text()
    );

    // A restart continues the chain.
    oracle.restart();
    let s = exim.bh(HOME, &Dialogue::auth_only("alice", PASSWORD));
    assert_eq!(s.reply("AUTH").code, 235);
    oracle.stop();
    let verified = audit(&world, &["verify", "--json"]);
    verified.assert_success();
    let v: Value = serde_json::from_slice(&verified.stdout).unwrap();
    assert_eq!(v["verified"]["last_seq"], 12, "{v}");

    // Someone edits the trail to hide where the attack came from.
    let file = segments(&world.state_dir()).pop().unwrap();
    let text = fs::read_to_string(&file).unwrap();
    let line = text
        .lines()
        .position(|l| l.contains(ATTACKER))
        .expect("the attacker's address");
    fs::write(&file, text.replacen(ATTACKER, "192.0.2.99", 1)).unwrap();
    let broken = audit(&world, &["verify"]);
    assert_eq!(broken.status.code(), Some(1), "{}", broken.stdout_text());
    let out = broken.stdout_text();
    assert!(
        out.contains(&format!("line {}", line + 1)) && out.contains("chain value does not match"),
        "{out}"
    );
}

#[test]
fn an_encrypted_trail_keeps_who_and_where_from_the_files_but_not_from_search() {
    let world = World::new(&["alice"]);
    let mut oracle = Oracle::start_with(&world, "[audit]\nencrypt = true\n");
    let exim = Exim::new(&world, Via::Dlfunc, oracle.exim_socket());
    for i in 0..5 {
        let s = exim.bh(
            ATTACKER,
            &Dialogue::auth_only("alice", format!("guess-{i}")),
        );
        s.assert_oracle_answered();
    }
    let held = exim.bh(HOME, &Dialogue::auth_only("alice", PASSWORD));
    assert_eq!(held.reply("AUTH").code / 100, 4, "{}", held.transcript());
    oracle.stop();

    for path in segments(&world.state_dir()) {
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"enc\":\""), "{text}");
        for secret in ["alice", ATTACKER, HOME, "smtp", "failed_logins_account"] {
            assert!(
                !text.contains(secret),
                "{secret} readable in {}",
                path.display()
            );
        }
    }
    audit(&world, &["verify"]).assert_success();
    let records = search(&world, &["--user", "alice"]);
    let kinds = kinds(&records);
    assert_eq!(
        kinds,
        ["auth", "auth", "auth", "auth", "auth", "alert", "auth"],
        "{records:#?}"
    );
    assert_eq!(records[0]["ip"], ATTACKER);
    assert_eq!(records[6]["verdict"], "defer");
}

/// A trail of a few records through real Exim, the oracle stopped (which writes the
/// state snapshot with the trail's head in it); the oracle, ready to restart.
fn trail_of_three_attempts(world: &World) -> Oracle {
    let mut oracle = Oracle::start(world);
    let exim = Exim::new(world, Via::Dlfunc, oracle.exim_socket());
    for i in 0..3 {
        let s = exim.bh(
            ATTACKER,
            &Dialogue::auth_only("alice", format!("guess-{i}")),
        );
        s.assert_oracle_answered();
    }
    oracle.stop();
    let verified = audit(world, &["verify"]);
    verified.assert_success();
    assert!(
        verified
            .stdout_text()
            .contains("reaches record 4 named by the state snapshot"),
        "{}",
        verified.stdout_text()
    );
    oracle
}

/// `audit verify` fails (exit 1) and says each of `expected`.
fn assert_verify_fails(world: &World, expected: &[&str]) -> String {
    let out = audit(world, &["verify"]);
    let text = out.stdout_text();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("INCOMPLETE"), "{text}");
    for e in expected {
        assert!(text.contains(e), "{e:?} not in:\n{text}");
    }
    text
}

#[test]
fn records_cut_from_the_end_with_the_head_file_fail_verify_and_are_recorded() {
    let world = World::new(&["alice"]);
    let mut oracle = trail_of_three_attempts(&world);
    // The last two records and the head file removed: the chain of the rest checks.
    let file = segments(&world.state_dir()).pop().unwrap();
    let text = fs::read_to_string(&file).unwrap();
    let kept: Vec<&str> = text.lines().collect();
    fs::write(&file, kept[..kept.len() - 2].join("\n") + "\n").unwrap();
    fs::remove_file(world.state_dir().join("audit/head.json")).unwrap();
    assert_verify_fails(
        &world,
        &[
            "head.json line 0: missing",
            "the state snapshot",
            "records 3 to 4 are missing",
        ],
    );
    // A restart records the loss in the trail and logs it at error level.
    oracle.restart();
    oracle.stop();
    let log = oracle.log_text();
    assert!(
        log.lines().any(|l| l.contains("ERROR")
            && l.contains("the audit trail ends before the record its heads name")),
        "{log}"
    );
    assert_verify_fails(
        &world,
        &[
            "recorded when the oracle reopened the trail",
            "records 3 to 4 are missing",
        ],
    );
}

#[test]
fn a_removed_head_file_fails_verify() {
    let world = World::new(&["alice"]);
    let mut oracle = trail_of_three_attempts(&world);
    fs::remove_file(world.state_dir().join("audit/head.json")).unwrap();
    assert_verify_fails(&world, &["head.json", "missing, with 4 records"]);
    oracle.restart();
    oracle.stop();
    assert!(
        oracle
            .log_text()
            .lines()
            .any(|l| l.contains("ERROR") && l.contains("head file is missing")),
        "{}",
        oracle.log_text()
    );
    assert_verify_fails(&world, &["the head file head.json was missing (removed)"]);
}

#[test]
fn a_removed_trail_begun_again_fails_verify_and_the_new_chain_says_what_is_missing() {
    let world = World::new(&["alice"]);
    let mut oracle = trail_of_three_attempts(&world);
    fs::remove_dir_all(world.state_dir().join("audit")).unwrap();
    assert_verify_fails(&world, &["the trail ends at 0: records 1 to 4 are missing"]);
    // The oracle restarts on the old key: the new chain starts at seq 1, and says so.
    oracle.restart();
    let exim = Exim::new(&world, Via::Dlfunc, oracle.exim_socket());
    let s = exim.bh(HOME, &Dialogue::auth_only("alice", PASSWORD));
    assert_eq!(s.reply("AUTH").code, 235, "{}", s.transcript());
    oracle.stop();
    assert!(
        oracle.log_text().lines().any(|l| l.contains("ERROR")
            && l.contains("the audit trail ends before the record its heads name")),
        "{}",
        oracle.log_text()
    );
    let first = fs::read_to_string(segments(&world.state_dir()).remove(0)).unwrap();
    let recovered: Value = serde_json::from_str(first.lines().nth(1).unwrap()).unwrap();
    assert_eq!(recovered["kind"], "recovered", "{recovered}");
    assert_eq!(recovered["seq"], 2);
    assert_eq!(recovered["through"], 4);
    assert!(
        recovered["reason"]
            .as_str()
            .unwrap()
            .contains("records 1 to 4 are missing (the trail was removed)"),
        "{recovered}"
    );
    assert_verify_fails(
        &world,
        &["records 1 to 4 are missing (the trail was removed)"],
    );
}
