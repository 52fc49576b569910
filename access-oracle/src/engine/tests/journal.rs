//! The state journal through the engine, on an injected clock: what an oracle
//! acknowledged and then lost without a snapshot (a `kill -9`) is back after the
//! restore, checked by requests; a snapshot written while changes go on is not counted
//! twice with the journal; a damaged journal gives back what came before the damage.

use std::path::Path;
use std::time::Duration;

use super::*;
use crate::config::RawConfig;
use crate::persist::{journal, restore, snapshot};
use crate::protocol::parse_line;

const ROOT: &str = "uid 0 (root)";

// Holds on every source: a check by a successful login must not make its network
// familiar and so lift the hold for itself.
const CONFIG: &str = "[rules.recipient_ceiling]\nlimit = 10\n\
                      [rules.failed_logins_account]\nhold_scope = \"all\"\n";

fn engine() -> (Engine, mpsc::Receiver<Arc<Alert>>) {
    let raw: RawConfig = toml::from_str(CONFIG).unwrap();
    let config = Config::from_raw(raw).unwrap();
    Engine::new(&config, t(0))
}

/// An engine journaling into `dir` from `next` (as the daemon opens it after a restore).
fn journaled(dir: &Path, next: journal::Mark) -> (Engine, mpsc::Receiver<Arc<Alert>>) {
    let (e, rx) = engine();
    e.set_journal(journal::JournalFile::open(
        dir,
        next.generation,
        next.seq,
        Duration::from_secs(3600),
    ));
    (e, rx)
}

/// An engine journaling into an empty `dir`: the first start.
fn first_start(dir: &Path) -> (Engine, mpsc::Receiver<Arc<Alert>>) {
    journaled(
        dir,
        journal::Mark {
            generation: 1,
            seq: 0,
        },
    )
}

/// A fresh engine with what `dir` holds restored, journaling again: a restart.
fn restart(dir: &Path, at: i64) -> (Engine, restore::Restored) {
    let (e, _rx) = engine();
    let r = restore::restore(e.state(), dir, t(at).as_second());
    e.set_journal(journal::JournalFile::open(
        dir,
        r.next.generation,
        r.next.seq,
        Duration::from_secs(3600),
    ));
    (e, r)
}

fn t(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).unwrap()
}

fn ask(e: &Engine, line: &str, at: i64) -> String {
    let cmd = parse_line(line.as_bytes()).unwrap_or_else(|err| panic!("{line}: {err}"));
    e.handle(&cmd, t(at)).to_string()
}

/// `n` wrong passwords for `user` from `ip` at `at`, each one never tried before.
fn fail(e: &Engine, user: &str, ip: &str, n: usize, at: i64) {
    static PASSWORD: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0x100);
    for _ in 0..n {
        let pw = PASSWORD.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let line = format!("auth user={user} ip={ip} result=fail pwhash={pw:x}");
        ask(e, &line, at);
    }
}

/// Recipients of `user` accepted until the first deferred one.
fn rcpts_left(e: &Engine, user: &str, at: i64) -> usize {
    for n in 0..100 {
        let reply = ask(
            e,
            &format!("rcpt user={user} ip=192.0.2.60 rcpt=x@example.org"),
            at,
        );
        if reply != "accept" {
            assert!(reply.starts_with("defer "), "{reply}");
            return n;
        }
    }
    panic!("the ceiling never deferred");
}

fn held(e: &Engine, user: &str, ip: &str, at: i64) -> bool {
    let reply = ask(e, &format!("auth user={user} ip={ip} result=ok"), at);
    reply != "accept"
}

/// Where the journal's data ends in its first file (the file itself is made whole at
/// once and zero after the data).
fn data_end(e: &Engine) -> usize {
    let bytes = e.journal().unwrap().status().bytes.load(Relaxed) as usize;
    b"exim-access journal 1\n".len() + bytes
}

use std::sync::atomic::Ordering::Relaxed;

fn journal_files(dir: &Path) -> Vec<(u64, std::path::PathBuf)> {
    journal::files(dir).unwrap()
}

#[test]
fn what_was_acknowledged_is_back_after_a_crash_without_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (e, _rx) = first_start(dir.path());
        fail(&e, "alice", "198.51.100.1", 5, 10);
        assert!(held(&e, "alice", "198.51.100.1", 11));
        fail(&e, "bob", "198.51.100.2", 3, 10);
        for _ in 0..4 {
            assert_eq!(
                ask(&e, "rcpt user=carol ip=192.0.2.60 rcpt=x@example.org", 10),
                "accept"
            );
        }
        e.block(net("203.0.113.0/24"), 600, Some("scanner"), t(10), ROOT);
        e.hold("dave", 600, Some("stolen laptop"), t(10), ROOT);
        fail(&e, "erin", "198.51.100.3", 5, 10);
        assert!(held(&e, "erin", "198.51.100.3", 11));
        assert!(e.release("erin", t(12), ROOT).is_some());
        assert_eq!(
            ask(&e, "auth user=frank ip=192.0.2.77 result=ok", 12),
            "accept"
        );
        // No snapshot: the engine is dropped as a killed process leaves its files.
    }
    assert!(!dir.path().join(snapshot::FILE_NAME).exists());
    let (e, r) = restart(dir.path(), 20);
    let replayed = r.journal.unwrap();
    assert!(replayed.damaged.is_empty(), "{:?}", replayed.damaged);
    assert!(replayed.applied > 0);
    assert!(held(&e, "alice", "198.51.100.1", 21), "alice's hold");
    // Bob had 3 of 5: two more hold him.
    fail(&e, "bob", "198.51.100.2", 1, 21);
    assert!(!held(&e, "bob", "198.51.100.2", 21));
    fail(&e, "bob", "198.51.100.2", 1, 22);
    assert!(
        held(&e, "bob", "198.51.100.2", 22),
        "bob after 5 failures in all"
    );
    assert_eq!(rcpts_left(&e, "carol", 22), 6, "carol had 4 of 10");
    assert!(ask(&e, "connect ip=203.0.113.9", 22).starts_with("deny "));
    assert!(
        held(&e, "dave", "192.0.2.5", 22),
        "the administrator's hold"
    );
    assert!(!held(&e, "erin", "198.51.100.3", 22), "erin was released");
    assert!(e.state().baseline("frank").is_some(), "frank's baseline");
    assert_eq!(
        e.state().familiar("frank", 0).len(),
        1,
        "frank's familiar network"
    );
    // A second crash: the restart's own journal file and the first are replayed.
    fail(&e, "gina", "198.51.100.4", 2, 23);
    drop(e);
    let (e, _) = restart(dir.path(), 30);
    assert!(held(&e, "alice", "198.51.100.1", 31));
    assert!(held(&e, "bob", "198.51.100.2", 31));
    fail(&e, "gina", "198.51.100.4", 2, 31);
    assert!(!held(&e, "gina", "198.51.100.4", 31));
    fail(&e, "gina", "198.51.100.4", 1, 32);
    assert!(
        held(&e, "gina", "198.51.100.4", 32),
        "gina had 2 before the crash"
    );
}

fn net(s: &str) -> ipnet::IpNet {
    s.parse().unwrap()
}

#[test]
fn a_snapshot_written_while_changes_go_on_is_not_counted_twice() {
    let dir = tempfile::tempdir().unwrap();
    let (e, _rx) = first_start(dir.path());
    let j = e.journal().unwrap().clone();
    // Before the snapshot starts.
    for _ in 0..3 {
        ask(&e, "rcpt user=carol ip=192.0.2.60 rcpt=x@example.org", 10);
    }
    fail(&e, "bob", "198.51.100.2", 1, 10);
    let mark = j.rotate();
    // While it is written: in the new journal file and (read after) in the snapshot.
    for _ in 0..2 {
        ask(&e, "rcpt user=carol ip=192.0.2.60 rcpt=x@example.org", 11);
    }
    fail(&e, "bob", "198.51.100.2", 1, 11);
    snapshot::write(e.state(), dir.path(), t(11).as_second(), None, Some(mark)).unwrap();
    j.forget_before(mark);
    assert_eq!(
        journal_files(dir.path())
            .iter()
            .map(|(g, _)| *g)
            .collect::<Vec<_>>(),
        vec![2, 3],
        "the file before the snapshot is gone (3: the next, made ahead)"
    );
    // After it: in the journal only.
    ask(&e, "rcpt user=carol ip=192.0.2.60 rcpt=x@example.org", 12);
    fail(&e, "bob", "198.51.100.2", 1, 12);
    drop(e);
    let (e, r) = restart(dir.path(), 20);
    assert_eq!(r.snapshot.unwrap().unwrap().journal, Some(mark));
    // 3 + 2 + 1 recipients of 10: 4 left, not 2.
    assert_eq!(rcpts_left(&e, "carol", 20), 4);
    // Bob had 3 failures: 2 more hold him, not 1 (counted twice would be 5 already).
    assert!(!held(&e, "bob", "198.51.100.2", 20));
    fail(&e, "bob", "198.51.100.2", 1, 20);
    assert!(!held(&e, "bob", "198.51.100.2", 20));
    fail(&e, "bob", "198.51.100.2", 1, 21);
    assert!(held(&e, "bob", "198.51.100.2", 21));
}

#[test]
fn a_damaged_journal_gives_back_what_came_before_the_damage_and_is_kept_aside() {
    let dir = tempfile::tempdir().unwrap();
    let whole = {
        let (e, _rx) = first_start(dir.path());
        e.hold("dave", 600, None, t(10), ROOT);
        e.hold("erin", 600, None, t(10), ROOT);
        data_end(&e)
    };
    let path = dir.path().join(journal::file_name(1));
    let mut bytes = std::fs::read(&path).unwrap();
    // The file cut short in its last record (truncated by hand or by a filesystem).
    bytes.truncate(whole - 3);
    std::fs::write(&path, &bytes).unwrap();
    let (e, r) = restart(dir.path(), 20);
    let replayed = r.journal.as_ref().unwrap();
    assert_eq!(replayed.damaged.len(), 1);
    let damage = &replayed.damaged[0];
    assert_eq!(damage.file, path);
    assert!(damage.reason.contains("cut short"), "{}", damage.reason);
    assert!(damage.offset > 0 && (damage.offset as usize) < whole - 3);
    let kept = damage.moved_to.clone().expect("moved aside");
    assert!(kept.exists() && !path.exists());
    assert!(
        kept.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("state.journal.0000000001.bad-")
    );
    assert!(held(&e, "dave", "192.0.2.5", 21), "before the damage");
    assert!(!held(&e, "erin", "192.0.2.5", 21), "the damaged record");

    // A flipped byte in the first record of the restart's own file.
    assert!(data_end(&e) > 40, "the restart journaled nothing");
    drop(e);
    let path = dir.path().join(journal::file_name(r.next.generation));
    let mut bytes = std::fs::read(&path).unwrap();
    let magic = b"exim-access journal 1\n".len();
    bytes[magic + 20] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    let (_, r) = restart(dir.path(), 30);
    let damage = r.journal.unwrap().damaged.remove(0);
    assert_eq!(damage.offset, magic as u64);
    assert!(damage.reason.contains("checksum"), "{}", damage.reason);
}

#[test]
fn with_no_journal_the_state_is_not_journaled() {
    let dir = tempfile::tempdir().unwrap();
    let (e, _rx) = engine();
    fail(&e, "bob", "198.51.100.2", 3, 10);
    assert!(journal_files(dir.path()).is_empty());
    assert!(e.journal().is_none());
}

#[test]
fn verdicts_append_to_the_journal_and_never_flush_it() {
    let dir = tempfile::tempdir().unwrap();
    // The flushing thread's interval is an hour: any flush would be the verdicts'.
    let (e, _rx) = first_start(dir.path());
    let status = e.journal().unwrap().status().clone();
    fail(&e, "bob", "198.51.100.2", 3, 10);
    for _ in 0..3 {
        ask(&e, "rcpt user=carol ip=192.0.2.60 rcpt=x@example.org", 10);
    }
    e.hold("dave", 600, None, t(10), ROOT);
    use std::sync::atomic::Ordering::Relaxed;
    // Three failures (account and address each), three recipients (the first also
    // copies the baseline's sending rate: the baseline), one hold.
    assert_eq!(status.appended.load(Relaxed), 11);
    assert_eq!(status.flushes.load(Relaxed), 0);
    assert_eq!(status.lost.load(Relaxed), 0);
    // The flush is the flushing thread's (and a snapshot's, and shutdown's).
    e.journal().unwrap().flush();
    assert_eq!(status.flushes.load(Relaxed), 1);
    // What a restart would replay, until a snapshot begins.
    let j = e.journal().unwrap();
    assert_eq!(j.since_snapshot(), 11);
    j.rotate();
    assert_eq!(j.since_snapshot(), 0);
}

#[test]
fn a_record_that_fails_its_checksum_costs_that_record_only() {
    let dir = tempfile::tempdir().unwrap();
    let (path, ends) = {
        let (e, _rx) = first_start(dir.path());
        let path = dir.path().join(journal::file_name(1));
        let mut ends = Vec::new();
        for user in ["anna", "bert", "cleo"] {
            e.hold(user, 600, None, t(10), ROOT);
            ends.push(data_end(&e));
        }
        (path, ends)
    };
    let mut bytes = std::fs::read(&path).unwrap();
    // A bit flipped inside bert's record (its payload, not its length).
    bytes[ends[1] - 3] ^= 0x04;
    std::fs::write(&path, &bytes).unwrap();
    let (e, r) = restart(dir.path(), 20);
    let damaged = r.journal.unwrap().damaged;
    assert_eq!(damaged.len(), 1, "{damaged:?}");
    assert_eq!(
        damaged[0].offset, ends[0] as u64,
        "bert's record starts there"
    );
    assert!(
        damaged[0].reason.contains("skipped"),
        "{}",
        damaged[0].reason
    );
    assert!(held(&e, "anna", "192.0.2.5", 21));
    assert!(!held(&e, "bert", "192.0.2.5", 21));
    assert!(
        held(&e, "cleo", "192.0.2.5", 21),
        "the record after the damaged one"
    );
}

#[test]
fn a_full_journal_file_goes_on_in_the_next_and_all_are_replayed() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (e, _rx) = engine();
        // Files of 8 KiB: a few dozen changes each.
        e.set_journal(journal::JournalFile::open_sized(
            dir.path(),
            1,
            0,
            Duration::from_secs(3600),
            8192,
        ));
        for i in 0..400 {
            e.hold(&format!("user{i}"), 600, None, t(10), ROOT);
        }
        assert_eq!(e.journal().unwrap().status().lost.load(Relaxed), 0);
    }
    let files = journal_files(dir.path());
    assert!(files.len() > 5, "{files:?}");
    let (e, r) = restart(dir.path(), 20);
    let replayed = r.journal.unwrap();
    assert!(replayed.damaged.is_empty(), "{:?}", replayed.damaged);
    assert_eq!(replayed.records, 400);
    for i in [0, 199, 399] {
        assert!(held(&e, &format!("user{i}"), "192.0.2.5", 21), "user{i}");
    }
}

#[test]
fn no_room_for_a_new_file_loses_changes_counted_until_a_snapshot_holds_them() {
    let dir = tempfile::tempdir().unwrap();
    // The next generations' names are taken (directories): no new file can be made, as
    // on a full disk.
    for g in 2..=40 {
        std::fs::create_dir(dir.path().join(journal::file_name(g))).unwrap();
    }
    let (e, _rx) = engine();
    let j = journal::JournalFile::open_sized(dir.path(), 1, 0, Duration::from_secs(3600), 8192);
    e.set_journal(j.clone());
    let status = j.status().clone();
    let mut n = 0;
    while status.lost.load(Relaxed) == 0 {
        e.hold(&format!("user{n}"), 600, None, t(10), ROOT);
        n += 1;
        assert!(n < 1000, "the first file never filled");
    }
    assert!(status.failed.load(Relaxed) && status.incomplete.load(Relaxed));
    // Verdicts go on; further changes are lost without trying to make a file each time.
    let errors = status.errors.load(Relaxed);
    for i in 0..20 {
        e.hold(&format!("later{i}"), 600, None, t(11), ROOT);
    }
    assert_eq!(status.lost.load(Relaxed), 21);
    assert_eq!(status.errors.load(Relaxed), errors, "no attempt per change");
    assert!(held(&e, "later19", "192.0.2.5", 12), "in force from memory");
    // Room again: the flushing thread's attempt makes a file; appending resumes, but the
    // journal stays incomplete until a snapshot after the loss is written.
    for g in 2..=40 {
        std::fs::remove_dir(dir.path().join(journal::file_name(g))).unwrap();
    }
    j.flush();
    assert!(!status.failed.load(Relaxed));
    assert!(status.incomplete.load(Relaxed));
    let lost = status.lost.load(Relaxed);
    e.hold("after", 600, None, t(13), ROOT);
    assert_eq!(status.lost.load(Relaxed), lost, "appended again");
    let mark = j.rotate();
    snapshot::write(e.state(), dir.path(), t(13).as_second(), None, Some(mark)).unwrap();
    j.snapshot_written(mark);
    assert!(!status.incomplete.load(Relaxed));
    // And a crash now loses nothing: the snapshot holds what the journal lost.
    drop(e);
    let (e, _) = restart(dir.path(), 20);
    for user in ["user0", "later19", "after"] {
        assert!(held(&e, user, "192.0.2.5", 21), "{user}");
    }
}

#[test]
fn a_large_journal_is_replayed_in_parallel_with_each_entry_in_order() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (e, _rx) = first_start(dir.path());
        // 2,000 accounts, each with 3 failures and 2 recipients interleaved, then a
        // release of every tenth: 20,000 records and more, each account's in order.
        for round in 0..3 {
            for i in 0..2000 {
                let user = format!("u{i}");
                fail(&e, &user, &format!("198.51.100.{}", i % 200), 1, 10 + round);
                if round < 2 {
                    ask(
                        &e,
                        &format!("rcpt user={user} ip=192.0.2.60 rcpt=x@example.org"),
                        10 + round,
                    );
                }
            }
        }
        for i in (0..2000).step_by(10) {
            e.release(&format!("u{i}"), t(20), ROOT);
        }
        assert!(e.journal().unwrap().status().appended.load(Relaxed) > 16_000);
    }
    let (e, r) = restart(dir.path(), 30);
    let replayed = r.journal.unwrap();
    assert!(replayed.damaged.is_empty(), "{:?}", replayed.damaged);
    assert!(replayed.records > 16_000, "{replayed:?}");
    for i in [1, 777, 1999] {
        let user = format!("u{i}");
        assert_eq!(rcpts_left(&e, &user, 31), 8, "{user} had 2 of 10");
        fail(&e, &user, "203.0.113.200", 1, 31);
        assert!(!held(&e, &user, "203.0.113.201", 31), "{user}: 4 of 5");
        fail(&e, &user, "203.0.113.200", 1, 31);
        assert!(held(&e, &user, "203.0.113.201", 31), "{user}: 5 of 5");
    }
    // Released: its failures and recipients were forgotten after they were counted.
    assert_eq!(rcpts_left(&e, "u10", 31), 10);
    fail(&e, "u10", "203.0.113.200", 4, 31);
    assert!(!held(&e, "u10", "203.0.113.201", 31), "u10 was released");
}
