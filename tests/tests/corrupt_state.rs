//! A corrupt or truncated state snapshot or journal (issue 15 point 2): the real oracle
//! starts anyway, logs an error naming the file and the byte offset of the damage, keeps
//! the bad file aside for inspection, and restores what can be trusted.
//!
//! * The snapshot (`state.snapshot`, written at a clean stop) with a byte flipped in its
//!   middle, or cut to half its length: refused whole (nothing of it is restored), moved
//!   to `state.snapshot.bad-<UTC time>`; what the journal holds after it is restored,
//!   also after another crash. The oracle then writes a new snapshot and reads it back
//!   at the next start.
//! * The journal (`state.journal.<generation>`, appended at every acknowledged change)
//!   cut in the middle of its last record, as a crash in the middle of a write leaves
//!   it: the records before it are applied, the file is moved to
//!   `<name>.bad-<UTC time>`, the log names the file and the offset of the record; the
//!   oracle journals on in a new file.
//! * The journal with a byte flipped in an earlier record: the records before that one
//!   are applied, none from it on in that file; the next generation's file (begun by the
//!   restart after an earlier crash) is still replayed.
//!
//! Changes are made and checked by requests (the Exim socket, `ctl`); the files are
//! only damaged, listed and compared, never decoded. Where a change's records end in the
//! journal is the file's length once the change is acknowledged (the journal is written
//! before the answer is sent). Build first: `cargo build -p access-oracle`.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use exim_access_e2e::{Oracle, World};

/// The text of a hold by `ctl hold`.
const ADMIN_HOLD: &str =
    "defer This account is on hold by the mail administrators; please contact them";

/// The name of the snapshot in the state directory.
const SNAPSHOT: &str = "state.snapshot";

/// The start of a journal file's name.
const JOURNAL: &str = "state.journal.";

/// Sends `line` on the Exim socket; its answer.
fn ask(oracle: &Oracle, line: &str) -> String {
    oracle
        .request(line)
        .unwrap_or_else(|| panic!("no answer to {line:?}:\n{}", oracle.log_text()))
}

/// `ctl hold USER` for two hours.
fn hold(oracle: &Oracle, user: &str) {
    oracle
        .ctl(&["hold", user, "--for", "2h", "--reason", "state test"])
        .assert_success();
}

/// Whether `user` is held by an administrator, by a `mail` request.
fn held(oracle: &Oracle, user: &str) -> bool {
    match ask(oracle, &format!("mail user={user} ip=192.0.2.50")).as_str() {
        ADMIN_HOLD => true,
        "accept" => false,
        other => panic!("mail of {user}: {other}"),
    }
}

/// Asserts which of `users` are held (`true`) and which not, with the oracle's log.
fn assert_holds(oracle: &Oracle, users: &[(&str, bool)], context: &str) {
    let found: Vec<(&str, bool)> = users.iter().map(|&(u, _)| (u, held(oracle, u))).collect();
    assert_eq!(found, users, "{context}:\n{}", oracle.log_text());
}

/// The names in the state directory, sorted.
fn state_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("list {}: {e}", dir.display()))
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The journal files in use (not set aside), oldest generation first.
fn journal_files(dir: &Path) -> Vec<PathBuf> {
    state_files(dir)
        .into_iter()
        .filter(|n| n.starts_with(JOURNAL) && !n.contains(".bad-"))
        .map(|n| dir.join(n))
        .collect()
}

/// The journal file being appended to and how far its data goes, as `ctl status`
/// tells (a journal file is made whole at once, so its length says nothing).
fn journal_now(oracle: &Oracle) -> (PathBuf, u64) {
    let status = oracle.ctl_json(&["status"]);
    let j = &status["journal"];
    let file = j["file"]
        .as_str()
        .unwrap_or_else(|| panic!("no journal file in the status: {j}"));
    (
        PathBuf::from(file),
        j["file_len"].as_u64().expect("file_len"),
    )
}

/// The journal file being appended to.
fn the_journal(oracle: &Oracle) -> PathBuf {
    journal_now(oracle).0
}

/// How far the data of `journal` (the file being appended to) goes.
fn journal_len(oracle: &Oracle, journal: &Path) -> u64 {
    let (file, len) = journal_now(oracle);
    assert_eq!(file, journal, "the journal moved to another file");
    len
}

/// The length of a file.
fn len(path: &Path) -> u64 {
    fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .len()
}

/// The files set aside for `name` (`<name>.bad-<suffix>`): each suffix and path.
fn set_aside(dir: &Path, name: &str) -> Vec<(String, PathBuf)> {
    let prefix = format!("{name}.bad-");
    state_files(dir)
        .into_iter()
        .filter_map(|n| {
            let suffix = n.strip_prefix(&prefix)?.to_string();
            Some((suffix, dir.join(&n)))
        })
        .collect()
}

/// Flips every bit of the byte at `at`.
fn flip_byte(path: &Path, at: usize) {
    let mut bytes = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    bytes[at] ^= 0xff;
    fs::write(path, bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// Cuts a file to its first `to` bytes.
fn truncate(path: &Path, to: u64) {
    fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| f.set_len(to))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// The oracle's log written since it was `from` bytes long.
fn log_since(oracle: &Oracle, from: usize) -> String {
    oracle
        .log_text()
        .get(from..)
        .unwrap_or_default()
        .to_string()
}

/// The error lines of `log` that name `file`.
fn errors_naming(log: &str, file: &Path) -> Vec<String> {
    let file = file.to_string_lossy();
    log.lines()
        .filter(|l| l.contains(" ERROR ") && l.contains(file.as_ref()))
        .map(str::to_string)
        .collect()
}

/// The byte offsets a log line names (`offset=N`, `byte N`, `bytes N to M`).
fn offsets(line: &str) -> Vec<u64> {
    let mut out = Vec::new();
    for (i, _) in line.match_indices("offset=") {
        let digits: String = line[i + 7..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        if let Ok(n) = digits.parse() {
            out.push(n);
        }
    }
    for (i, _) in line.match_indices("byte") {
        let rest = line[i + 4..].trim_start_matches('s').trim_start();
        let mut words = rest.split(|c: char| !c.is_ascii_digit());
        if let Some(n) = words.next().and_then(|w| w.parse().ok()) {
            out.push(n);
        }
        if let Some(to) = rest.find(" to ") {
            let digits: String = rest[to + 4..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            if let Ok(n) = digits.parse() {
                out.push(n);
            }
        }
    }
    out
}

/// The Unix time now.
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

/// The Unix time of the UTC time in the name of a file set aside (`20261203T101500Z`).
fn utc_time(when: &str) -> u64 {
    jiff::civil::DateTime::strptime("%Y%m%dT%H%M%SZ", when)
        .and_then(|t| t.to_zoned(jiff::tz::TimeZone::UTC))
        .ok()
        .and_then(|t| u64::try_from(t.timestamp().as_second()).ok())
        .unwrap_or_else(|| panic!("not a .bad-<UTC time> suffix: {when}"))
}

/// How a file is damaged.
#[derive(Clone, Copy, Debug)]
enum Damage {
    /// Every bit of one byte flipped.
    Flip,
    /// Cut short.
    Truncate,
}

/// A snapshot with a byte flipped in its middle, or cut to half its length: the oracle
/// serves, logs the file and the offset at error level, moves the file aside as
/// `state.snapshot.bad-<UTC time>` unchanged, restores nothing of it but what the
/// journal holds after it (again after a second crash: the journal's files stay), and
/// writes and reads back a good snapshot again.
#[test]
fn a_damaged_snapshot_is_set_aside_and_the_journal_after_it_restored() {
    for damage in [Damage::Flip, Damage::Truncate] {
        let context = format!("{damage:?}");
        let world = World::new(&[]);
        let state = world.state_dir();
        let mut oracle = Oracle::start(&world);

        // A hold in the snapshot (written at a clean stop), read back at the restart.
        hold(&oracle, "in-snapshot");
        oracle.stop();
        let snapshot = state.join(SNAPSHOT);
        assert!(snapshot.exists(), "{context}: {:?}", state_files(&state));
        oracle.restart();
        assert_holds(&oracle, &[("in-snapshot", true)], &context);
        // A hold after it, in the journal only: the crash leaves the snapshot as it was.
        hold(&oracle, "in-journal");
        assert_holds(&oracle, &[("in-journal", true)], &context);
        oracle.kill();

        let size = len(&snapshot);
        match damage {
            Damage::Flip => flip_byte(&snapshot, size as usize / 2),
            Damage::Truncate => truncate(&snapshot, size / 2),
        }
        let damaged = fs::read(&snapshot).expect("read the damaged snapshot");
        let started = unix_now();
        let from = oracle.log_text().len();
        oracle.restart();
        assert!(oracle.ping(), "{context}: the oracle serves");

        // The error names the file and where.
        let log = log_since(&oracle, from);
        let errors = errors_naming(&log, &snapshot);
        assert_eq!(
            errors.len(),
            1,
            "{context}: one error naming the file:\n{log}"
        );
        let at = offsets(&errors[0]);
        assert!(
            !at.is_empty() && at.iter().all(|&b| b <= size),
            "{context}: byte offsets within the file's {size} bytes: {}",
            errors[0]
        );
        // Kept aside, as it was; no snapshot until the next one is written.
        let aside = set_aside(&state, SNAPSHOT);
        assert_eq!(aside.len(), 1, "{context}: {:?}", state_files(&state));
        let (when, path) = &aside[0];
        let at_secs = utc_time(when);
        assert!(
            (started..=unix_now()).contains(&at_secs),
            "{context}: set aside at {when}, the restart began at {started}"
        );
        assert!(
            errors[0].contains(path.to_string_lossy().as_ref()),
            "{context}: the error says where the file went: {}",
            errors[0]
        );
        assert_eq!(
            fs::read(path).expect("read the file set aside"),
            damaged,
            "{context}: set aside unchanged"
        );
        assert!(!snapshot.exists(), "{context}: {:?}", state_files(&state));
        // Nothing of the snapshot; what the journal holds after it.
        assert_holds(
            &oracle,
            &[("in-snapshot", false), ("in-journal", true)],
            &format!("{context}: after the damaged snapshot"),
        );
        // The journal's files stay until a snapshot holds them: another crash now
        // restores the same.
        oracle.kill();
        oracle.restart();
        assert_holds(
            &oracle,
            &[("in-snapshot", false), ("in-journal", true)],
            &format!("{context}: a second crash after the damaged snapshot"),
        );

        // It goes on: a new snapshot is written at the next stop and read back.
        hold(&oracle, "after");
        let from = oracle.log_text().len();
        oracle.restart();
        assert!(snapshot.exists(), "{context}: {:?}", state_files(&state));
        let log = log_since(&oracle, from);
        assert!(
            log.contains("state restored from the snapshot") && !log.contains(" ERROR "),
            "{context}:\n{log}"
        );
        assert_holds(
            &oracle,
            &[
                ("in-snapshot", false),
                ("in-journal", true),
                ("after", true),
            ],
            &format!("{context}: after a good snapshot again"),
        );
        assert_eq!(
            set_aside(&state, SNAPSHOT).len(),
            1,
            "{context}: {:?}",
            state_files(&state)
        );
    }
}

/// Runs `change`, then returns the journal's length: where its records end.
fn journaled(oracle: &Oracle, journal: &Path, change: impl FnOnce(&Oracle)) -> u64 {
    let before = journal_len(oracle, journal);
    change(oracle);
    let after = journal_len(oracle, journal);
    assert!(
        after > before,
        "the change was journaled before it was acknowledged ({before} bytes before, {after} after)"
    );
    after
}

/// Checks the log since `from` and the state directory after a start on a damaged
/// journal file `file`: one error naming it and an offset in `expected`, the file moved
/// to `<name>.bad-<UTC time>` (a time since `started`) with `content` unchanged.
fn assert_set_aside(
    oracle: &Oracle,
    from: usize,
    file: &Path,
    expected: std::ops::RangeInclusive<u64>,
    content: &[u8],
    started: u64,
) {
    let state = file.parent().expect("the state directory");
    let name = file.file_name().expect("a file name").to_string_lossy();
    let log = log_since(oracle, from);
    let errors = errors_naming(&log, file);
    assert_eq!(errors.len(), 1, "one error naming {name}:\n{log}");
    let at = offsets(&errors[0]);
    assert!(
        at.len() == 1 && expected.contains(&at[0]),
        "the offset of the damaged record ({expected:?}): {}",
        errors[0]
    );
    let aside = set_aside(state, &name);
    assert_eq!(aside.len(), 1, "{:?}", state_files(state));
    let (when, path) = &aside[0];
    let when = utc_time(when);
    assert!(
        (started..=unix_now()).contains(&when),
        "set aside at {when}, the restart began at {started}"
    );
    assert!(
        errors[0].contains(path.to_string_lossy().as_ref()),
        "the error says where the file went: {}",
        errors[0]
    );
    assert_eq!(
        fs::read(path).expect("read the file set aside"),
        content,
        "set aside unchanged"
    );
    assert!(!file.exists(), "{:?}", state_files(state));
}

/// A crash in the middle of writing the last record (the journal cut in the middle of
/// it): what came before is in force, the last change is not, the file is kept aside;
/// the oracle journals on, and a clean restart keeps it all.
#[test]
fn a_journal_cut_in_its_last_record_keeps_what_came_before() {
    let world = World::new(&[]);
    let state = world.state_dir();
    let mut oracle = Oracle::start(&world);
    let journal = the_journal(&oracle);

    journaled(&oracle, &journal, |o| hold(o, "first"));
    journaled(&oracle, &journal, |o| {
        o.ctl(&["block", "198.51.100.70", "--for", "2h"])
            .assert_success();
    });
    let before_last = journal_len(&oracle, &journal);
    let end = journaled(&oracle, &journal, |o| hold(o, "last"));
    assert!(
        state_files(&state).iter().all(|n| n != SNAPSHOT),
        "no snapshot yet: {:?}",
        state_files(&state)
    );
    oracle.kill();

    let cut = (before_last + end) / 2;
    truncate(&journal, cut);
    let content = fs::read(&journal).expect("read the journal");
    let started = unix_now();
    let from = oracle.log_text().len();
    oracle.restart();
    assert!(oracle.ping(), "the oracle serves");
    assert_set_aside(
        &oracle,
        from,
        &journal,
        before_last..=cut,
        &content,
        started,
    );
    let blocked = |o: &Oracle| ask(o, "connect ip=198.51.100.70");
    assert!(
        blocked(&oracle).starts_with("deny "),
        "{}",
        blocked(&oracle)
    );
    assert_holds(
        &oracle,
        &[("first", true), ("last", false)],
        "what came before the cut record",
    );
    // What was recovered from the file set aside survives a second crash at once (the
    // restart put it into a snapshot).
    oracle.kill();
    oracle.restart();
    assert!(
        blocked(&oracle).starts_with("deny "),
        "the block after a second crash: {}",
        blocked(&oracle)
    );
    assert_holds(
        &oracle,
        &[("first", true), ("last", false)],
        "after a second crash",
    );

    // It goes on journaling, and a clean stop keeps it all.
    hold(&oracle, "last");
    let from = oracle.log_text().len();
    oracle.restart();
    let log = log_since(&oracle, from);
    assert!(!log.contains(" ERROR "), "{log}");
    assert!(
        blocked(&oracle).starts_with("deny "),
        "the block after a clean restart: {}",
        blocked(&oracle)
    );
    assert_holds(
        &oracle,
        &[("first", true), ("last", true)],
        "after a clean restart",
    );
}

/// A byte flipped in an earlier record of the journal: that record is skipped, the
/// records before and after it are in force, and the next generation's file is
/// replayed.
#[test]
fn a_journal_damaged_in_an_earlier_record_keeps_what_came_before_it() {
    let world = World::new(&[]);
    let state = world.state_dir();
    let mut oracle = Oracle::start(&world);
    let first_file = the_journal(&oracle);

    // Generation one: a, b, c, then a crash.
    let end_a = journaled(&oracle, &first_file, |o| hold(o, "a"));
    let end_b = journaled(&oracle, &first_file, |o| hold(o, "b"));
    journaled(&oracle, &first_file, |o| hold(o, "c"));
    oracle.kill();
    // The restart replays it and opens generation two: d, then a crash.
    oracle.restart();
    assert_holds(
        &oracle,
        &[("a", true), ("b", true), ("c", true)],
        "the first crash",
    );
    let files = journal_files(&state);
    assert_eq!(files[0], first_file, "{:?}", state_files(&state));
    let second = the_journal(&oracle);
    assert_ne!(second, first_file);
    journaled(&oracle, &second, |o| hold(o, "d"));
    assert!(
        state_files(&state).iter().all(|n| n != SNAPSHOT),
        "no snapshot yet: {:?}",
        state_files(&state)
    );
    oracle.kill();

    // b's record damaged in the middle.
    let middle = (end_a + end_b) / 2;
    flip_byte(&first_file, middle as usize);
    let content = fs::read(&first_file).expect("read the journal");
    let started = unix_now();
    let from = oracle.log_text().len();
    oracle.restart();
    assert!(oracle.ping(), "the oracle serves");
    assert_set_aside(
        &oracle,
        from,
        &first_file,
        end_a..=middle,
        &content,
        started,
    );
    assert_holds(
        &oracle,
        &[("a", true), ("b", false), ("c", true), ("d", true)],
        "around the damaged record, and the next file",
    );
}
