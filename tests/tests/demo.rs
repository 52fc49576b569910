//! `access-oracle demo`, the README's first command, end to end with real Exim: the
//! brute force is held, the burst deferred, and the audit trail it kept verifies.

use std::process::Command;
use std::time::Duration;

use exim_access_e2e::{paths, process};

#[test]
fn the_demo_runs_its_scenarios_and_its_audit_trail_verifies() {
    let mut cmd = Command::new(paths::oracle_bin());
    cmd.arg("demo").arg("--lib").arg(paths::dlfunc_lib());
    let out = process::run(cmd, b"", Duration::from_secs(120));
    out.assert_success();
    let text = out.stdout_text();
    for want in [
        "ALERT [high] failed_logins_account",
        "right password:     435",
        "right password:     235",
        "RCPT 201-250:      451",
        "ALERT [high] recipient_ceiling",
        "2 alert(s) written",
        "access-oracle audit verify: ok",
        "release ",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
}
