//! `access-oracle replay` over written logs: the rules on the logs' own clock.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_access-oracle");

fn replay(args: &[&str]) -> serde_json::Value {
    let out = Command::new(BIN).arg("replay").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn replay_reports_what_the_rules_would_have_done_across_files() {
    let dir = tempfile::tempdir().unwrap();
    // Exim: four wrong passwords for alice, a burst of 250 recipients from bob.
    let mut exim = String::new();
    for i in 0..4 {
        exim.push_str(&format!(
            "2026-10-01 10:00:0{i} plain_server authenticator failed for (x) [203.0.113.7]:5000{i}: 535 Incorrect authentication data (set_id=alice)\n"
        ));
    }
    exim.push_str("2026-10-01 11:00:00 1tQxyz-000001-AB <= bob@example.org H=(pc) [198.51.100.4]:40000 P=esmtpsa A=plain_server:bob S=1234 id=m1@example.org for ");
    let rcpts: Vec<String> = (0..250).map(|i| format!("r{i}@example.net")).collect();
    exim.push_str(&rcpts.join(" "));
    exim.push('\n');
    // Dovecot, in another file and partly earlier: the fifth failure, over IMAP, and a
    // later successful login that the hold would have deferred.
    let dovecot = "2026-10-01T10:00:05.000000+00:00 mail dovecot[1]: auth: Info: passwd-file(alice,203.0.113.7,<abc>): Password mismatch\n\
2026-10-01T10:01:00.000000+00:00 mail dovecot[1]: imap-login: Info: Login: user=<alice>, method=PLAIN, rip=203.0.113.7, lip=192.0.2.1, mpid=7, session=<def>\n";
    let exim_path = dir.path().join("mainlog");
    let dovecot_path = dir.path().join("dovecot.log");
    std::fs::write(&exim_path, exim).unwrap();
    std::fs::write(&dovecot_path, dovecot).unwrap();
    let r = replay(&[
        "--json",
        dovecot_path.to_str().unwrap(),
        exim_path.to_str().unwrap(),
    ]);
    assert_eq!(r["held"]["alice"], 1, "{r:#}");
    assert_eq!(r["throttled"]["bob"], 1, "{r:#}");
    assert_eq!(r["deferred_rcpts"], 50);
    let deferred = r["deferred_logins"].as_array().unwrap();
    assert_eq!(deferred.len(), 1, "{r:#}");
    assert_eq!(deferred[0]["user"], "alice");
    assert_eq!(deferred[0]["protocol"], "imap");
    assert_eq!(r["alerts"].as_array().unwrap().len(), 2);

    // A stricter config replayed over the same logs.
    let conf = dir.path().join("strict.toml");
    std::fs::write(
        &conf,
        "[rules.failed_logins_account]\nthreshold = 3\n[rules.recipient_ceiling]\nlimit = 300\n",
    )
    .unwrap();
    let r = replay(&[
        "--json",
        "--config",
        conf.to_str().unwrap(),
        exim_path.to_str().unwrap(),
    ]);
    assert_eq!(r["held"]["alice"], 1);
    assert!(r["throttled"].as_object().unwrap().is_empty());
    assert_eq!(r["deferred_rcpts"], 0);
}
