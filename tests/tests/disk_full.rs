//! A full disk under the oracle (issue 15 point 2): the state directory, and with it the
//! audit trail and the snapshot, on a small tmpfs the test mounts and then fills with a
//! filler file while verdicts are asked for all the time.
//!
//! * Every request is answered throughout (a client on one connection counts them, a
//!   real Exim session is answered while the disk is full: 235 for one account, the
//!   hold made before for another);
//! * the audit trail's failure raises one critical `storage_failed` alert (in the alert
//!   file, which is not on the full filesystem, and in the log sink's line) and one log
//!   line at error level, however often the writer retries; so does the snapshot's;
//! * the failed snapshot leaves the good one as it was, byte for byte, and no temporary
//!   file behind;
//! * once the filler is removed: a `storage_recovered` alert, and the trail records the
//!   gap (a `recovered` record with action `write_gap`: from when to when, how many
//!   records waited, nearly all the requests answered meanwhile), then those records;
//!   `audit verify` passes;
//! * a SIGTERM and a restart on the same directories: no "damaged" or "corrupt" in the
//!   new log, the hold is in force, and (with the state journal) the journal replays.
//!
//! Build first: `cargo build -p access-oracle && cargo build --release -p exim-dlfunc`.
//! Runs as root (it mounts a tmpfs). Takes about 70 s: the snapshot is tried once a
//! minute, and the test waits for that attempt.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use exim_access_e2e::oracle::audit;
use exim_access_e2e::{Dialogue, Exim, Oracle, PASSWORD, Via, World, process};
use serde_json::Value;

/// The request the verdict client repeats: answered `accept`, recorded in the trail.
const VERDICT: &str = "auth user=bob ip=192.0.2.20 result=ok";

/// A request of the account held before the disk fills.
const HELD: &str = "mail user=alice ip=192.0.2.40";

/// The size of the test's filesystem: room for the state journal's files (1 MiB each,
/// reserved whole when made: the current one, the one made ahead, and one more when a
/// snapshot starts the next) beside the trail and the snapshot, before it is filled.
const TMPFS_SIZE: &str = "32m";

/// The longest wait for the audit trail's effects (it retries every second).
const DEADLINE: Duration = Duration::from_secs(30);

/// The longest wait for the snapshot's attempt: it is written once a minute.
const SNAPSHOT_DEADLINE: Duration = Duration::from_secs(100);

/// A tmpfs mounted on a directory for the test, unmounted when dropped (also when the
/// test fails).
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` on `dir` (which must exist), mode 0700.
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        let mut cmd = Command::new("mount");
        cmd.args([
            "-t",
            "tmpfs",
            "-o",
            &format!("size={size},mode=0700"),
            "tmpfs",
        ])
        .arg(dir);
        process::run(cmd, b"", Duration::from_secs(30)).assert_success();
        Tmpfs {
            dir: dir.to_path_buf(),
        }
    }

    /// Bytes still free for files.
    fn available(&self) -> u64 {
        let s = nix::sys::statvfs::statvfs(&self.dir).expect("statvfs");
        s.blocks_available() as u64 * s.fragment_size() as u64
    }

    /// Writes `name` until the filesystem refuses with "no space left"; returns its
    /// path.
    fn fill(&self, name: &str) -> PathBuf {
        let path = self.dir.join(name);
        let mut file = fs::File::create(&path).expect("create the filler");
        let chunk = vec![0u8; 64 * 1024];
        loop {
            match file.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(nix::libc::ENOSPC) => break,
                Err(e) => panic!("filling {}: {e}", path.display()),
            }
        }
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let mut cmd = Command::new("umount");
        cmd.arg(&self.dir);
        if !process::run(cmd, b"", Duration::from_secs(30))
            .status
            .success()
        {
            // Still busy (a process of a failed test): detach it, so the tree goes.
            let mut cmd = Command::new("umount");
            cmd.arg("-l").arg(&self.dir);
            let _ = process::run(cmd, b"", Duration::from_secs(30));
        }
    }
}

/// The alerts in `file` (complete lines only).
fn alerts(file: &Path) -> Vec<Value> {
    let text = fs::read_to_string(file).unwrap_or_default();
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    complete
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// The alerts of `rule` about `part`.
fn storage_alerts(file: &Path, rule: &str, part: &str) -> Vec<Value> {
    alerts(file)
        .into_iter()
        .filter(|a| a["rule"] == rule && a["counts"]["part"] == part)
        .collect()
}

/// Polls `f` until it holds or `within` passes.
fn eventually(within: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let until = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < until, "{what}: not within {within:?}");
        thread::sleep(Duration::from_millis(50));
    }
}

/// A client on one connection asking for [`VERDICT`] until `stop`, each answer checked
/// to be `accept`; `answered` counts them. It paces itself (a request every 5 ms or so)
/// so that the records waiting in memory while the disk is full stay a few thousand.
/// Panics at the first missing or other answer.
fn verdicts_until(
    socket: &Path,
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicU64>,
) -> thread::JoinHandle<u64> {
    let stream = UnixStream::connect(socket).expect("connect the verdict client");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    let mut writer = stream.try_clone().expect("clone");
    let mut reader = BufReader::new(stream);
    thread::spawn(move || {
        let mut got = 0u64;
        while !stop.load(Ordering::Relaxed) {
            writer
                .write_all(format!("{VERDICT}\n").as_bytes())
                .unwrap_or_else(|e| panic!("verdict {}: cannot send: {e}", got + 1));
            let mut line = String::new();
            let n = reader
                .read_line(&mut line)
                .unwrap_or_else(|e| panic!("verdict {}: no answer: {e}", got + 1));
            assert!(n > 0, "verdict {}: connection closed", got + 1);
            assert_eq!(line.trim_end(), "accept", "verdict {}", got + 1);
            got += 1;
            answered.store(got, Ordering::Relaxed);
            thread::sleep(Duration::from_millis(5));
        }
        got
    })
}

/// `ctl status --json`'s audit counter `name`.
fn audit_counter(oracle: &Oracle, name: &str) -> u64 {
    let status = oracle.ctl_json(&["status"]);
    status["audit"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("no audit counter {name} in {status}"))
}

/// `audit search --json` records of the world's trail.
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

/// Every record of the trail in `state`, in order, read from its day files.
fn trail_records(state: &Path) -> Vec<Value> {
    let mut files: Vec<PathBuf> = fs::read_dir(state.join("audit"))
        .expect("the audit directory")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|f| {
            fs::read_to_string(f)
                .expect("read a segment")
                .lines()
                .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
                .collect::<Vec<Value>>()
        })
        .collect()
}

/// `audit verify` passes on the world's trail; returns its output.
fn verify_passes(world: &World) -> String {
    let out = audit(world, &["verify"]);
    assert!(
        out.status.success() && out.stdout_text().contains(": ok, "),
        "audit verify: {}\n{}",
        out.stdout_text(),
        out.stderr_text()
    );
    out.stdout_text()
}

/// A real Exim session through the library: AUTH of `user` with the right password
/// gets a reply of class `class` (2: accepted, 4: deferred by the hold).
fn exim_auth(exim: &Exim, user: &str, class: u16) {
    let session = exim.bh("192.0.2.10", &Dialogue::auth_only(user, PASSWORD));
    session.assert_oracle_answered();
    assert_eq!(
        session.reply("AUTH").code / 100,
        class,
        "{}",
        session.transcript()
    );
}

/// The state journal's files in the state directory (`state.journal.<generation>`).
fn journal_files(state: &Path) -> Vec<String> {
    fs::read_dir(state)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("state.journal."))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether the state directory holds a state journal.
fn has_journal(state: &Path) -> bool {
    !journal_files(state).is_empty()
}

#[test]
fn a_full_disk_keeps_verdicts_alerts_once_and_the_trail_records_the_gap() {
    let world = World::new(&["alice", "bob"]);
    let state = world.state_dir();
    let tmpfs = Tmpfs::mount(&state, TMPFS_SIZE);
    // The alerts go beside the full filesystem, as an operator's file sink or mail would.
    let alert_file = world.path("alerts.jsonl");
    let mut oracle = Oracle::start_with(
        &world,
        &format!(
            "[alerts]\nfile = {}\n",
            serde_json::to_string(&alert_file.to_string_lossy()).unwrap()
        ),
    );
    let exim = Exim::new(&world, Via::Dlfunc, oracle.exim_socket());

    // A hold, made before the disk fills; a clean restart writes it into the snapshot.
    oracle
        .ctl(&["hold", "alice", "--for", "2h", "--reason", "disk test"])
        .assert_success();
    oracle.restart();
    let snapshot = state.join("state.snapshot");
    let good = fs::read(&snapshot).expect("the snapshot written at the restart");
    assert!(oracle.request(HELD).unwrap().starts_with("defer "));

    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let client = verdicts_until(oracle.exim_socket(), stop.clone(), answered.clone());
    eventually(DEADLINE, "the first verdicts", || {
        answered.load(Ordering::Relaxed) >= 10
    });

    let filler = tmpfs.fill("filler");
    assert_eq!(tmpfs.available(), 0, "the filesystem is full");

    // The audit trail cannot be written: one critical alert, one error line.
    eventually(DEADLINE, "the audit trail's storage_failed alert", || {
        !storage_alerts(&alert_file, "storage_failed", "audit").is_empty()
    });
    let failed_at = answered.load(Ordering::Relaxed);
    let alert = &storage_alerts(&alert_file, "storage_failed", "audit")[0];
    assert_eq!(alert["severity"], "critical", "{alert}");
    assert!(
        alert["summary"]
            .as_str()
            .unwrap()
            .contains("No space left on device"),
        "{alert}"
    );
    let log = oracle.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("ERROR")
                && l.contains("storage failed: cannot write the audit trail")),
        "no error line for the audit trail:\n{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("storage_failed") && l.contains("critical")),
        "no log sink line for the alert:\n{log}"
    );

    // Verdicts go on, through Exim too: the hold made before is in force.
    exim_auth(&exim, "bob", 2);
    exim_auth(&exim, "alice", 4);
    assert!(oracle.request(HELD).unwrap().starts_with("defer "));

    // The snapshot is tried once a minute: its own alert, once; the good file stays.
    eventually(
        SNAPSHOT_DEADLINE,
        "the snapshot's storage_failed alert",
        || !storage_alerts(&alert_file, "storage_failed", "snapshot").is_empty(),
    );
    assert_eq!(
        fs::read(&snapshot).expect("the snapshot is still there"),
        good,
        "the snapshot in place is unchanged"
    );
    assert!(
        !state.join("state.snapshot.tmp").exists(),
        "a failed snapshot leaves no temporary file: {:?}",
        fs::read_dir(&state)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect::<Vec<_>>()
    );
    // The writer retried every second meanwhile: still one alert per part. The journal
    // goes on in the space its files reserved when they were made; were that used up,
    // it would raise one alert too, never more.
    assert!(audit_counter(&oracle, "write_errors") >= 30);
    for part in ["audit", "snapshot"] {
        assert_eq!(
            storage_alerts(&alert_file, "storage_failed", part).len(),
            1,
            "one alert for the {part}: {:#?}",
            alerts(&alert_file)
        );
    }
    assert!(
        storage_alerts(&alert_file, "storage_failed", "journal").len() <= 1,
        "{:#?}",
        alerts(&alert_file)
    );
    let journal = has_journal(&state);
    let during = answered.load(Ordering::Relaxed) - failed_at;
    assert!(during > 100, "{during} verdicts while the disk was full");
    exim_auth(&exim, "bob", 2);

    // Space returns: the trail is written again, and says so.
    fs::remove_file(&filler).expect("remove the filler");
    eventually(
        DEADLINE,
        "the audit trail's storage_recovered alert",
        || !storage_alerts(&alert_file, "storage_recovered", "audit").is_empty(),
    );
    eventually(DEADLINE, "every record written", || {
        audit_counter(&oracle, "waiting") == 0
    });
    stop.store(true, Ordering::Relaxed);
    let total = client.join().expect("the verdict client");
    assert!(total > during, "{total} verdicts in all");
    assert!(oracle.ping());

    // SIGTERM: the snapshot is written again on the way out.
    let before_stop = oracle.log_text().len();
    oracle.stop();
    let stopping = oracle.log_text()[before_stop..].to_string();
    assert!(
        stopping.contains("storage recovered: the state snapshot is written again"),
        "{stopping}"
    );
    let out = verify_passes(&world);
    assert!(
        out.contains("write_gap") || out.contains("writing the trail failed"),
        "{out}"
    );
    // `search` leaves the trail's bookkeeping out: the gap record is read from the files.
    let gaps: Vec<Value> = trail_records(&state)
        .into_iter()
        .filter(|r| r["kind"] == "recovered" && r["action"] == "write_gap")
        .collect();
    assert_eq!(gaps.len(), 1, "{gaps:#?}");
    let gap = &gaps[0];
    let waited = gap["through"].as_u64().expect("how many records waited");
    // Nearly all of them: while the disk is "full", a few pages come and go (a batch
    // cut back to its last whole record, a file that could not be made removed), and a
    // record written in such a moment did not wait.
    assert!(
        waited + during / 20 >= during,
        "{waited} records waited, {during} requests were answered while full: {gap}"
    );
    let (from, to) = (
        gap["time"]
            .as_str()
            .unwrap()
            .parse::<jiff::Timestamp>()
            .unwrap(),
        gap["until"]
            .as_str()
            .unwrap()
            .parse::<jiff::Timestamp>()
            .unwrap(),
    );
    assert!(
        to.as_second() - from.as_second() >= 30,
        "the gap spans the wait for the snapshot: {gap}"
    );
    // The requests answered while full are in the trail after the gap record.
    let bob = search(&world, &["--user", "bob"]);
    let seq = gap["seq"].as_u64().unwrap();
    let after = bob
        .iter()
        .filter(|r| r["seq"].as_u64().unwrap() > seq)
        .count() as u64;
    assert!(
        after >= during,
        "{after} of bob's records after the gap record"
    );

    // A restart on the same directories: nothing damaged, the hold in force.
    let before_start = oracle.log_text().len();
    oracle.restart();
    let starting = oracle.log_text()[before_start..].to_string();
    for word in ["damaged", "corrupt"] {
        assert!(
            !starting.to_lowercase().contains(word),
            "{word} in the restart's log:\n{starting}"
        );
    }
    assert!(
        !starting.lines().any(|l| l.contains("ERROR")),
        "an error in the restart's log:\n{starting}"
    );
    assert!(
        starting.contains("state restored from the snapshot"),
        "{starting}"
    );
    if journal {
        // No corrupt journal: the one begun by the snapshot at shutdown is replayed, and
        // nothing is set aside (no error above).
        assert!(starting.contains("state journal replayed"), "{starting}");
        assert!(
            journal_files(&state).iter().all(|f| !f.contains(".bad-")),
            "{:?}",
            journal_files(&state)
        );
    }
    assert!(oracle.request(HELD).unwrap().starts_with("defer "));
    assert_eq!(oracle.request(VERDICT).as_deref(), Some("accept"));
    exim_auth(&exim, "alice", 4);
    oracle.stop();
    verify_passes(&world);
    drop(oracle);
    drop(tmpfs);
}

/// A state directory on a small filesystem (700 KiB, less than one journal file of the
/// default size): the journal is made in smaller files, so a hold made just before a
/// `kill -9` is still in force after the restart.
#[test]
fn a_small_filesystem_still_holds_a_journal() {
    let world = World::new(&["alice"]);
    let state = world.state_dir();
    let _tmpfs = Tmpfs::mount(&state, "700k");
    let mut oracle = Oracle::start(&world);
    for i in 0..5 {
        let reply = oracle
            .request(&format!(
                "auth user=alice ip=198.51.100.9 result=fail pwhash={:x}",
                0x200 + i
            ))
            .expect("an answer");
        assert_eq!(reply, "accept");
    }
    assert!(oracle.request(HELD).unwrap().starts_with("defer "));
    oracle.kill();
    oracle.restart();
    assert!(
        oracle.request(HELD).unwrap().starts_with("defer "),
        "the hold after kill -9 on a small filesystem:\n{}",
        oracle.log_text()
    );
    let log = oracle.log_text();
    assert!(!log.contains(" ERROR "), "{log}");
}
