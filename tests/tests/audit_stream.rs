//! Forwarding the audit trail (`stream = "audit"`, issue 13 point 5) with real Exim
//! 4.96 producing the records: a file sink writing ECS documents and an exec sink whose
//! command appends what it reads to a file (and fails while a flag file exists: the
//! receiver is down). Every record arrives, in order, with no gap: while the receiver is
//! down and after it comes back, across a SIGTERM of the oracle, and across a `kill -9`.
//!
//! At least once: a SIGTERM leaves the position saved after every delivery, so nothing
//! arrives twice; after a `kill -9`, records delivered after the last position saved
//! arrive again (a run of numbers repeats). Waits poll what the receivers hold, the
//! trail's head and `ctl status`, with deadlines; nothing sleeps for a fixed time.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use exim_access_e2e::oracle::audit;
use exim_access_e2e::{Dialogue, Exim, Oracle, PASSWORD, Via, World};
use serde_json::Value;

const HOME: &str = "192.0.2.10";
const ATTACKER: &str = "203.0.113.9";

/// The receivers and what the test reads back from them.
struct Receivers {
    /// The file sink's ECS documents.
    ecs: PathBuf,
    /// What the exec sink's command appended (the trail's lines).
    exec_out: PathBuf,
    /// While this exists the command fails.
    down_flag: PathBuf,
}

impl Receivers {
    fn new(world: &World) -> (Receivers, String) {
        let r = Receivers {
            ecs: world.path("siem/audit-ecs.jsonl"),
            exec_out: world.path("shipped.jsonl"),
            down_flag: world.path("receiver-down"),
        };
        let script = world.path("ship.sh");
        fs::write(
            &script,
            format!(
                "#!/bin/sh\n\
                 if [ -e {flag} ]; then echo 'receiver down' >&2; exit 1; fi\n\
                 cat >> {out}\n",
                flag = r.down_flag.display(),
                out = r.exec_out.display()
            ),
        )
        .unwrap();
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
        let sinks = format!(
            r#"
[[sinks]]
name = "siem"
type = "file"
stream = "audit"
path = "{ecs}"
format = "ecs"

[[sinks]]
name = "shipper"
type = "exec"
stream = "audit"
command = ["{script}"]
"#,
            ecs = r.ecs.display(),
            script = script.display()
        );
        (r, sinks)
    }

    fn down(&self) {
        fs::write(&self.down_flag, "").unwrap();
    }

    fn up(&self) {
        fs::remove_file(&self.down_flag).unwrap();
    }

    /// The numbers the exec sink's command received, in order.
    fn shipped(&self) -> Vec<u64> {
        lines(&self.exec_out)
            .iter()
            .map(|d| d["seq"].as_u64().unwrap())
            .collect()
    }

    /// The numbers in the ECS file, in order.
    fn in_ecs(&self) -> Vec<u64> {
        lines(&self.ecs)
            .iter()
            .map(|d| d["event"]["sequence"].as_u64().unwrap())
            .collect()
    }
}

/// The JSON lines of `path` (complete lines only).
fn lines(path: &Path) -> Vec<Value> {
    let text = fs::read_to_string(path).unwrap_or_default();
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    complete
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// The last record the trail's head names (flushed to disk).
fn head(world: &World) -> u64 {
    let text = fs::read_to_string(world.state_dir().join("audit/head.json")).unwrap_or_default();
    serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| v["seq"].as_u64())
        .unwrap_or(0)
}

/// Every line of the trail by number.
fn trail(world: &World) -> Vec<(u64, String)> {
    let mut files: Vec<PathBuf> = fs::read_dir(world.state_dir().join("audit"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        for line in fs::read_to_string(f).unwrap().lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            out.push((v["seq"].as_u64().unwrap(), line.to_string()));
        }
    }
    out
}

/// The sink's counters in `ctl status --json`.
fn sink(oracle: &Oracle, name: &str) -> Value {
    let status = oracle.ctl_json(&["status"]);
    status["counters"]["sinks"]
        .as_array()
        .and_then(|all| all.iter().find(|s| s["name"] == name).cloned())
        .unwrap_or_else(|| panic!("no sink {name} in {status}"))
}

/// Polls `done` until it holds, for at most a minute (the sink's pauses double to
/// several seconds while its receiver is down).
fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// `n` SMTP AUTH sessions through Exim, every third with a wrong password; each is one
/// `auth` record.
fn traffic(exim: &Exim, n: usize) {
    for i in 0..n {
        let (ip, password) = if i % 3 == 2 {
            (ATTACKER, "wrong")
        } else {
            (HOME, PASSWORD)
        };
        let s = exim.bh(ip, &Dialogue::auth_only("alice", password));
        s.assert_oracle_answered();
    }
}

/// Checks a receiver's numbers against the trail's first `through` records: every one
/// there, and in order: the numbers rise by one, except where a run repeats from an
/// earlier point (at-least-once after a kill); never a gap. Returns how many arrived
/// more than once.
fn assert_whole(what: &str, got: &[u64], through: u64) -> u64 {
    let mut max = 0u64;
    let mut again = 0;
    for (i, &seq) in got.iter().enumerate() {
        assert!(
            seq <= max + 1,
            "{what}: record {seq} after {max}: records {} to {} are missing ({got:?} at {i})",
            max + 1,
            seq - 1
        );
        if seq <= max {
            again += 1;
            // A repeat is a run from an earlier point: it follows the one before it.
            assert!(
                i > 0 && (seq == got[i - 1] + 1 || seq < got[i - 1]),
                "{what}: {got:?} at {i}"
            );
        }
        max = max.max(seq);
    }
    assert_eq!(max, through, "{what}: {got:?}");
    again
}

#[test]
fn the_audit_stream_survives_a_receiver_outage_a_restart_and_a_kill() {
    let world = World::new(&["alice"]);
    let (receivers, sinks) = Receivers::new(&world);
    let mut oracle = Oracle::start_with(&world, &sinks);
    let exim = Exim::new(&world, Via::Dlfunc, oracle.exim_socket());

    // Both receivers get the trail as it is written.
    traffic(&exim, 4);
    // The receivers have the records a moment before the sink has saved its position
    // and counted them: wait for both.
    wait_for(
        "both receivers at the head, the shipper's count with them",
        || {
            let h = head(&world);
            h > 4
                && receivers.shipped().last() == Some(&h)
                && receivers.in_ecs().last() == Some(&h)
                && sink(&oracle, "shipper")["queued"] == 0
        },
    );
    let shipper = sink(&oracle, "shipper");
    assert_eq!(shipper["type"], "exec");
    assert_eq!(shipper["queued"], 0, "no lag: {shipper}");

    // The exec receiver goes down: the file sink goes on; the exec sink lags, retries.
    receivers.down();
    let before = receivers.shipped().len();
    traffic(&exim, 5);
    wait_for("the ECS file at the head", || {
        receivers.in_ecs().last() == Some(&head(&world))
    });
    // Behind by what it read before it began retrying: it retries that batch and reads
    // no further meanwhile, so on a loaded machine its lag can show fewer than the five
    // records written while the receiver is down.
    wait_for("the shipper retrying, behind", || {
        let s = sink(&oracle, "shipper");
        s["retried"].as_u64().unwrap() >= 1 && s["queued"].as_u64().unwrap() >= 1
    });
    assert_eq!(receivers.shipped().len(), before, "nothing while down");
    receivers.up();
    wait_for("the shipper caught up", || {
        receivers.shipped().last() == Some(&head(&world))
    });
    assert_eq!(assert_whole("exec", &receivers.shipped(), head(&world)), 0);

    // Down again, then the oracle stops (SIGTERM) with the shipper behind; it comes back
    // after the receiver did and resumes from the saved position.
    receivers.down();
    traffic(&exim, 5);
    wait_for("the ECS file at the head", || {
        receivers.in_ecs().last() == Some(&head(&world))
    });
    let retried = sink(&oracle, "shipper")["retried"].as_u64().unwrap();
    wait_for("another retry", || {
        sink(&oracle, "shipper")["retried"].as_u64().unwrap() > retried
    });
    let behind = receivers.shipped().len();
    oracle.stop();
    receivers.up();
    oracle.restart();
    wait_for("the shipper caught up after the restart", || {
        let h = head(&world);
        receivers.shipped().last() == Some(&h) && receivers.in_ecs().last() == Some(&h)
    });
    assert!(receivers.shipped().len() > behind);
    // A clean stop saved every position: exactly once so far.
    let h = head(&world);
    assert_eq!(receivers.shipped(), (1..=h).collect::<Vec<_>>());
    assert_eq!(receivers.in_ecs(), (1..=h).collect::<Vec<_>>());

    // kill -9 with the shipper behind (its receiver down) and records still flowing to
    // the file sink; more after the restart.
    receivers.down();
    traffic(&exim, 3);
    let retried = sink(&oracle, "shipper")["retried"].as_u64().unwrap();
    wait_for("a retry", || {
        sink(&oracle, "shipper")["retried"].as_u64().unwrap() > retried
    });
    traffic(&exim, 2);
    oracle.kill();
    receivers.up();
    oracle.restart();
    traffic(&exim, 3);
    wait_for("both receivers at the head after the kill", || {
        let h = head(&world);
        receivers.shipped().last() == Some(&h) && receivers.in_ecs().last() == Some(&h)
    });
    let h = head(&world);
    let again_exec = assert_whole("exec", &receivers.shipped(), h);
    let again_ecs = assert_whole("ecs", &receivers.in_ecs(), h);
    eprintln!("after kill -9: {again_exec} record(s) shipped twice, {again_ecs} written twice");
    let counters = sink(&oracle, "shipper");
    assert_eq!(counters["failed"], 0, "{counters}");

    // What was shipped is the trail's own lines; the ECS documents say what happened.
    let trail = trail(&world);
    assert_eq!(trail.last().unwrap().0, h);
    let shipped: Vec<String> = fs::read_to_string(&receivers.exec_out)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    for (seq, line) in &trail {
        assert!(
            shipped.contains(line),
            "record {seq} not shipped as written"
        );
    }
    let docs = lines(&receivers.ecs);
    let failures: Vec<&Value> = docs
        .iter()
        .filter(|d| d["exim_access"]["kind"] == "auth" && d["event"]["outcome"] == "failure")
        .collect();
    assert!(!failures.is_empty());
    for d in failures {
        assert_eq!(d["user"]["name"], "alice", "{d}");
        assert_eq!(d["source"]["ip"], ATTACKER, "{d}");
        assert_eq!(
            d["event"]["category"],
            serde_json::json!(["authentication"])
        );
        assert_eq!(d["network"]["protocol"], "smtp");
        assert_eq!(d["event"]["id"].as_str().unwrap().len(), 64);
    }
    assert!(docs.iter().any(|d| d["exim_access"]["kind"] == "auth"
        && d["event"]["outcome"] == "success"
        && d["source"]["ip"] == HOME));
    // The position files are the oracle's own.
    for name in ["siem", "shipper"] {
        let p = world.state_dir().join(format!("sinks/{name}.position"));
        let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", p.display());
    }
    oracle.stop();
    audit(&world, &["verify"]).assert_success();
}
