//! The trail on real files: appending, resuming, day segments, retention, a cut-off
//! end, tampering of every kind, the writer thread, search.

use std::path::Path;

use jiff::Timestamp;

use super::record::{Kind, Record, Source};
use super::search::{Query, search};
use super::verify::verify;
use super::*;
use crate::protocol::Outcome;

fn config(dir: &Path) -> AuditConfig {
    AuditConfig {
        dir: Some(dir.join("audit")),
        key_file: Some(dir.join("audit.key")),
        sync_interval_ms: 60_000,
        ..AuditConfig::default()
    }
}

fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn auth(user: &str, ip: &str, result: Outcome, time: &str) -> Record {
    let mut r = Record::new(Kind::Auth, Source::Live, t(time))
        .user(user)
        .ip(Some(ip.parse().unwrap()))
        .protocol(Some("imap"));
    r.result = Some(result);
    r
}

fn key(dir: &Path) -> Vec<u8> {
    read_key(&config(dir), dir).unwrap()
}

fn audit_dir(dir: &Path) -> std::path::PathBuf {
    dir.join("audit")
}

/// A trail of `n` auth records written on 2026-11-28.
fn trail_with(dir: &Path, n: usize) {
    let now = t("2026-11-28T10:00:00Z");
    let mut trail = Trail::open(&config(dir), dir, now).unwrap();
    let mut batch: Vec<Record> = (0..n)
        .map(|i| {
            auth(
                &format!("user{i}@example.org"),
                "192.0.2.1",
                Outcome::Fail,
                "2026-11-28T09:59:00Z",
            )
        })
        .collect();
    trail.append(&mut batch, now).unwrap();
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn segment_path(dir: &Path, day: &str) -> std::path::PathBuf {
    audit_dir(dir).join(format!("audit-{day}.jsonl"))
}

#[test]
fn records_are_chained_across_batches_restarts_and_days() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    trail_with(d, 3);
    // Reopened (a restart): the chain goes on.
    let day2 = t("2026-11-29T00:00:01Z");
    let mut trail = Trail::open(&config(d), d, day2).unwrap();
    assert_eq!(trail.seq(), 4, "a segment record and three auth records");
    trail
        .append(
            &mut [auth(
                "alice",
                "198.51.100.7",
                Outcome::Ok,
                "2026-11-29T00:00:00Z",
            )],
            day2,
        )
        .unwrap();
    let v = verify(&audit_dir(d), &key(d)).unwrap();
    assert_eq!(v.files, 2);
    assert_eq!((v.first_seq, v.last_seq, v.records), (Some(1), Some(6), 6));
    let second = lines(&segment_path(d, "2026-11-29"));
    assert!(second[0].contains(r#""kind":"segment""#), "{}", second[0]);
    assert!(second[0].contains(r#""prev_file":"audit-2026-11-28.jsonl""#));
}

#[test]
fn a_clock_stepping_back_a_day_keeps_writing_the_later_segment() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let rec = |time: &str| auth("alice", "192.0.2.1", Outcome::Fail, time);
    let at = |time: &str, trail: &mut Trail| trail.append(&mut [rec(time)], t(time)).unwrap();
    let mut trail = Trail::open(&config(d), d, t("2026-11-28T00:20:00Z")).unwrap();
    at("2026-11-28T00:20:00Z", &mut trail);
    // Stepped back an hour, into the day before: still the 28th's file.
    at("2026-11-27T23:20:00Z", &mut trail);
    // Forward again, then a restart while the clock is behind the last segment's day.
    at("2026-11-28T01:20:00Z", &mut trail);
    drop(trail);
    let mut trail = Trail::open(&config(d), d, t("2026-11-27T23:30:00Z")).unwrap();
    at("2026-11-27T23:30:00Z", &mut trail);
    assert!(!segment_path(d, "2026-11-27").exists());
    // The next day begins a segment as usual.
    at("2026-11-29T00:00:01Z", &mut trail);
    drop(trail);
    let v = verify(&audit_dir(d), &key(d)).unwrap();
    assert!(v.problems.is_empty(), "{}", problems(&v));
    assert_eq!(v.files, 2);
    assert_eq!(
        (v.records, v.last_seq),
        (7, Some(7)),
        "two segment records and five auth records, in one chain"
    );
    let first = lines(&segment_path(d, "2026-11-28"));
    assert_eq!(first.len(), 5, "{first:?}");
    assert!(first[2].contains("2026-11-27T23:20:00Z"), "{}", first[2]);
}

#[test]
fn verify_names_the_first_record_changed_removed_inserted_or_reordered() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    trail_with(d, 5);
    let path = segment_path(d, "2026-11-28");
    let good = lines(&path);
    let write = |ls: &[String]| std::fs::write(&path, ls.join("\n") + "\n").unwrap();
    let check = |expect_line: u64, expect_why: &str| {
        let b = verify(&audit_dir(d), &key(d)).unwrap_err();
        assert_eq!(b.line, expect_line, "{b}");
        assert!(b.why.contains(expect_why), "{b}");
    };

    // Changed: user3 -> userX on line 4.
    let mut edited = good.clone();
    edited[3] = edited[3].replace("user2@", "userX@");
    write(&edited);
    check(4, "chain value does not match");

    // Removed: line 3 gone; the sequence jumps on the next line.
    let mut removed = good.clone();
    removed.remove(2);
    write(&removed);
    check(3, "sequence jumps from 2 to 4");

    // Removed at the end and the rest renumbered cannot be hidden without the key:
    // reordered lines 3 and 4.
    let mut reordered = good.clone();
    reordered.swap(2, 3);
    write(&reordered);
    check(3, "sequence jumps");

    // Inserted: a copy of line 2 after itself.
    let mut inserted = good.clone();
    inserted.insert(2, good[1].clone());
    write(&inserted);
    check(3, "sequence jumps from 2 to 2");

    // Garbage.
    let mut garbage = good.clone();
    garbage[4] = "not json at all".into();
    write(&garbage);
    check(5, "no chain field");

    // And back to the original: ok.
    write(&good);
    assert_eq!(verify(&audit_dir(d), &key(d)).unwrap().records, 6);

    // Another key.
    let other = vec![42u8; 32];
    let b = verify(&audit_dir(d), &other).unwrap_err();
    assert_eq!(b.line, 1);
}

#[test]
fn a_missing_segment_or_missing_start_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    trail_with(d, 2);
    for day in ["2026-11-29", "2026-11-30"] {
        let now = t(&format!("{day}T12:00:00Z"));
        let mut trail = Trail::open(&config(d), d, now).unwrap();
        trail
            .append(
                &mut [auth(
                    "bob",
                    "192.0.2.9",
                    Outcome::Ok,
                    &format!("{day}T11:00:00Z"),
                )],
                now,
            )
            .unwrap();
    }
    assert_eq!(verify(&audit_dir(d), &key(d)).unwrap().files, 3);
    // The middle day removed by hand: the third does not continue the first.
    let middle = segment_path(d, "2026-11-29");
    let kept = std::fs::read(&middle).unwrap();
    std::fs::remove_file(&middle).unwrap();
    let b = verify(&audit_dir(d), &key(d)).unwrap_err();
    assert_eq!(b.file, "audit-2026-11-30.jsonl");
    assert!(
        b.why.contains("does not continue audit-2026-11-28.jsonl"),
        "{b}"
    );
    std::fs::write(&middle, kept).unwrap();
    // The first day removed by hand (not by retention): reported.
    std::fs::remove_file(segment_path(d, "2026-11-28")).unwrap();
    let b = verify(&audit_dir(d), &key(d)).unwrap_err();
    assert!(b.why.contains("no retention record accounts"), "{b}");
}

#[test]
fn retention_removes_old_days_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut cfg = config(d);
    cfg.retention_days = 2;
    for day in ["2026-11-20", "2026-11-21", "2026-11-22"] {
        let now = t(&format!("{day}T12:00:00Z"));
        let mut trail = Trail::open(&cfg, d, now).unwrap();
        trail
            .append(
                &mut [auth(
                    "carol",
                    "192.0.2.3",
                    Outcome::Ok,
                    &format!("{day}T11:00:00Z"),
                )],
                now,
            )
            .unwrap();
    }
    // Four days later, the first three are past retention; opening removes them.
    let now = t("2026-11-26T08:00:00Z");
    let mut trail = Trail::open(&cfg, d, now).unwrap();
    trail
        .append(
            &mut [auth(
                "carol",
                "192.0.2.3",
                Outcome::Ok,
                "2026-11-26T07:00:00Z",
            )],
            now,
        )
        .unwrap();
    let days: Vec<String> = segment::list(&audit_dir(d))
        .unwrap()
        .into_iter()
        .map(|(day, _)| day.to_string())
        .collect();
    assert_eq!(days, ["2026-11-26"]);
    let v = verify(&audit_dir(d), &key(d)).unwrap();
    assert_eq!(v.removed_through_seq, Some(6), "{v:?}");
    assert_eq!((v.first_seq, v.last_seq), (Some(7), Some(9)));
    // A gap retention recorded is no problem.
    assert!(v.complete(), "{v:?}");
    let retention: Vec<Record> = lines(&segment_path(d, "2026-11-26"))
        .iter()
        .map(|l| serde_json::from_str::<Record>(l).unwrap())
        .filter(|r| r.kind == Kind::Retention)
        .collect();
    assert_eq!(
        retention[0].removed,
        [
            "audit-2026-11-20.jsonl",
            "audit-2026-11-21.jsonl",
            "audit-2026-11-22.jsonl"
        ]
    );
}

#[test]
fn a_record_cut_off_by_a_crash_is_dropped_and_recorded_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    trail_with(d, 2);
    let path = segment_path(d, "2026-11-28");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend_from_slice(br#"{"seq":4,"time":"2026-11-28T1"#);
    std::fs::write(&path, &bytes).unwrap();
    let b = verify(&audit_dir(d), &key(d)).unwrap_err();
    assert!(b.why.contains("cut off"), "{b}");
    let now = t("2026-11-28T11:00:00Z");
    let trail = Trail::open(&config(d), d, now).unwrap();
    assert_eq!(trail.seq(), 4);
    let v = verify(&audit_dir(d), &key(d)).unwrap();
    assert_eq!(v.last_seq, Some(4));
    // Nothing flushed was lost: a note, not a problem.
    assert!(v.complete(), "{v:?}");
    assert!(v.notes[0].contains("cut off"), "{v:?}");
    let last: Record = serde_json::from_str(lines(&path).last().unwrap()).unwrap();
    assert_eq!(last.kind, Kind::Recovered);
    assert_eq!(last.through, Some(29));
    assert_eq!(last.action.as_deref(), Some(writer::PARTIAL_LINE));
}

#[test]
fn one_writer_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let now = t("2026-11-28T10:00:00Z");
    let first = Trail::open(&config(d), d, now).unwrap();
    let e = Trail::open(&config(d), d, now).err().unwrap().to_string();
    assert!(e.contains("another process is writing it"), "{e}");
    drop(first);
    assert!(Trail::open(&config(d), d, now).is_ok());
}

#[test]
fn a_damaged_last_record_stops_the_open_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    trail_with(d, 1);
    let path = segment_path(d, "2026-11-28");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("garbage line\n");
    std::fs::write(&path, text).unwrap();
    let e = Trail::open(&config(d), d, t("2026-11-28T12:00:00Z"))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("ends with a damaged record"), "{e}");
    assert!(e.contains("audit verify"), "{e}");
}

#[test]
fn the_writer_thread_writes_everything_before_close_and_flush_waits() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (sink, writer) = start(&config(d), d, true).unwrap().unwrap();
    for i in 0..1000 {
        let time = if i % 2 == 0 {
            "2025-01-01T00:00:00Z"
        } else {
            "2025-01-01T00:00:30Z"
        };
        sink.record(auth("dave", "192.0.2.4", Outcome::Fail, time));
    }
    sink.flush();
    assert_eq!(
        sink.stats()
            .written
            .load(std::sync::atomic::Ordering::Relaxed),
        1000
    );
    sink.record(auth(
        "dave",
        "192.0.2.4",
        Outcome::Ok,
        "2025-01-01T00:01:00Z",
    ));
    writer.close();
    let v = verify(&audit_dir(d), &key(d)).unwrap();
    assert_eq!(v.records, 1002, "segment + 1001");
    // Backfilled events are marked as ingested, and keep their own times.
    let mut early = 0;
    search(&audit_dir(d), &Query::default(), None, |r| {
        assert_eq!(r.source, Source::Ingest);
        if r.time == t("2025-01-01T00:00:00Z") {
            early += 1;
        }
    })
    .unwrap();
    assert_eq!(early, 500);
}

#[test]
fn search_finds_by_account_address_network_time_and_kind() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let now = t("2026-11-28T10:00:00Z");
    let mut trail = Trail::open(&config(d), d, now).unwrap();
    let mut sent = Record::new(Kind::Sent, Source::Log, t("2026-11-28T09:30:00Z")).user("Alice");
    sent.rcpts = Some(3);
    trail
        .append(
            &mut [
                auth("alice", "192.0.2.1", Outcome::Ok, "2026-11-28T09:00:00Z"),
                auth("bob", "192.0.2.200", Outcome::Fail, "2026-11-28T09:10:00Z"),
                auth(
                    "alice",
                    "198.51.100.1",
                    Outcome::Fail,
                    "2026-11-27T09:20:00Z",
                ),
                sent,
            ],
            now,
        )
        .unwrap();
    let find = |q: Query| {
        let mut v = Vec::new();
        search(&audit_dir(d), &q, None, |r| v.push(r.seq)).unwrap();
        v
    };
    let user = |u: &str| Query {
        user: Some(u.into()),
        ..Query::default()
    };
    assert_eq!(find(user("ALICE")), [2, 4, 5]);
    assert_eq!(
        find(Query {
            ip: Some("192.0.2.0/24".parse().unwrap()),
            ..Query::default()
        }),
        [2, 3]
    );
    assert_eq!(
        find(Query {
            since: Some(t("2026-11-28T00:00:00Z")),
            until: Some(t("2026-11-28T09:15:00Z")),
            ..Query::default()
        }),
        [2, 3]
    );
    assert_eq!(
        find(Query {
            kinds: vec![Kind::Sent],
            ..user("alice")
        }),
        [5]
    );
    // Bookkeeping records are not search results.
    assert_eq!(find(Query::default()), [2, 3, 4, 5]);
}

/// A trail of five auth records written through the writer thread (flushed, so the
/// head file names the last), and its head.
fn flushed_trail(d: &Path) -> crate::persist::snapshot::AuditHead {
    let (sink, writer) = start(&config(d), d, false).unwrap().unwrap();
    for i in 0..5 {
        sink.record(auth(
            &format!("u{i}"),
            "192.0.2.5",
            Outcome::Fail,
            "2026-11-28T10:00:00Z",
        ));
    }
    writer.close();
    sink.head().expect("a head once open")
}

/// The state snapshot as the daemon writes it: with the trail's head.
fn snapshot_with(d: &Path, head: &crate::persist::snapshot::AuditHead) {
    crate::persist::snapshot::write(
        &crate::state::State::default(),
        d,
        1_800_000_000,
        Some(head),
        None,
    )
    .unwrap();
}

fn problems(v: &verify::Verified) -> String {
    v.problems
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn records_cut_from_the_end_are_noticed_through_the_head_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let head = flushed_trail(d);
    assert_eq!(head.seq, 6);
    let v = verify(&audit_dir(d), &key(d)).unwrap();
    assert_eq!((v.last_seq, v.head_seq), (Some(6), Some(6)));
    assert!(v.complete(), "{v:?}");
    // The last two records removed by hand: the chain of the rest still checks, the
    // head file does not agree.
    let path = segment::list(&audit_dir(d)).unwrap().pop().unwrap().1;
    let all = lines(&path);
    std::fs::write(&path, all[..4].join("\n") + "\n").unwrap();
    let v = verify(&audit_dir(d), &key(d)).unwrap();
    assert!(!v.complete());
    assert_eq!(v.problems[0].file, "head.json");
    assert!(
        problems(&v).contains("records were cut from its end"),
        "{v:?}"
    );
    // Reopened, the oracle says so in the chain before going on; verify keeps
    // reporting that loss.
    let trail = Trail::open(&config(d), d, Timestamp::now()).unwrap();
    assert_eq!(trail.seq(), 5);
    drop(trail);
    let v = verify(&audit_dir(d), &key(d)).unwrap();
    assert_eq!(v.recovered.len(), 1);
    assert!(
        v.recovered[0].1.contains("records 5 to 6 are missing"),
        "{v:?}"
    );
    assert_eq!(v.problems.len(), 1, "{v:?}");
    assert_eq!(v.problems[0].seq, Some(5));
    assert!(problems(&v).contains("records 5 to 6 are missing"), "{v:?}");
    // A head file edited to hide it is refused.
    let head = audit_dir(d).join("head.json");
    let text = std::fs::read_to_string(&head).unwrap();
    std::fs::write(&head, text.replace("\"seq\":5", "\"seq\":4")).unwrap();
    let v = verify(&audit_dir(d), &key(d)).unwrap();
    assert!(problems(&v).contains("MAC does not match"), "{v:?}");
}

#[test]
fn a_removed_head_file_is_a_problem_and_is_recorded_when_the_trail_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    flushed_trail(d);
    std::fs::remove_file(audit_dir(d).join("head.json")).unwrap();
    let v = verify(&audit_dir(d), &key(d)).unwrap();
    assert!(!v.complete());
    assert_eq!(v.problems[0].file, "head.json");
    assert!(problems(&v).contains("missing, with 6 records"), "{v:?}");
    let trail = Trail::open(&config(d), d, Timestamp::now()).unwrap();
    assert_eq!(trail.seq(), 7, "the removal is recorded");
    drop(trail);
    let v = verify(&audit_dir(d), &key(d)).unwrap();
    assert_eq!(v.head_seq, Some(7), "the head file is written again");
    assert_eq!(v.problems.len(), 1, "{v:?}");
    assert!(problems(&v).contains("was missing (removed)"), "{v:?}");
}

#[test]
fn records_cut_with_the_head_file_are_noticed_through_the_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let head = flushed_trail(d);
    snapshot_with(d, &head);
    let v = verify::verify_with(&audit_dir(d), &key(d), Some(d)).unwrap();
    assert!(v.complete(), "{v:?}");
    assert_eq!(v.snapshot_seq, Some(6));
    // The last two records and the head file removed.
    let path = segment::list(&audit_dir(d)).unwrap().pop().unwrap().1;
    let all = lines(&path);
    std::fs::write(&path, all[..4].join("\n") + "\n").unwrap();
    std::fs::remove_file(audit_dir(d).join("head.json")).unwrap();
    let v = verify::verify_with(&audit_dir(d), &key(d), Some(d)).unwrap();
    let text = problems(&v);
    assert!(
        text.contains("the state snapshot") && text.contains("records 5 to 6 are missing"),
        "{text}"
    );
    // Reopened: both the missing head file and the missing records are recorded.
    let trail = Trail::open(&config(d), d, Timestamp::now()).unwrap();
    drop(trail);
    let v = verify::verify_with(&audit_dir(d), &key(d), Some(d)).unwrap();
    let text = problems(&v);
    assert!(text.contains("was missing (removed)"), "{text}");
    assert!(
        text.contains("the state snapshot named record 6: records 5 to 6 are missing"),
        "{text}"
    );
}

#[test]
fn a_removed_trail_begun_again_is_noticed_through_the_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let head = flushed_trail(d);
    snapshot_with(d, &head);
    // The whole trail removed (the key stays, as it lives beside the state).
    std::fs::remove_dir_all(audit_dir(d)).unwrap();
    let v = verify::verify_with(&audit_dir(d), &key(d), Some(d)).unwrap();
    assert!(
        problems(&v).contains("the trail ends at 0: records 1 to 6 are missing"),
        "{v:?}"
    );
    // Without the snapshot nothing would show.
    assert!(verify(&audit_dir(d), &key(d)).unwrap().complete());
    // The oracle restarts: the new chain starts by saying what is missing.
    let (sink, writer) = start(&config(d), d, false).unwrap().unwrap();
    for i in 0..10 {
        sink.record(auth(
            &format!("n{i}"),
            "192.0.2.6",
            Outcome::Ok,
            "2026-11-28T11:00:00Z",
        ));
    }
    writer.close();
    let records: Vec<Record> = segment::list(&audit_dir(d))
        .unwrap()
        .iter()
        .flat_map(|(_, p)| lines(p))
        .map(|l| serde_json::from_str(&l).unwrap())
        .collect();
    assert_eq!((records[1].seq, records[1].kind), (2, Kind::Recovered));
    assert_eq!(records[1].through, Some(6));
    assert_eq!(
        records[1].through_chain.as_deref(),
        Some(record::chain_hex(&head.chain).as_str())
    );
    assert!(
        records[1]
            .reason
            .as_deref()
            .unwrap()
            .contains("records 1 to 6 are missing (the trail was removed)"),
        "{:?}",
        records[1]
    );
    // The old snapshot still names record 6 of the old chain: another record now.
    let v = verify::verify_with(&audit_dir(d), &key(d), Some(d)).unwrap();
    let text = problems(&v);
    assert!(text.contains("records 1 to 6 are missing"), "{text}");
    assert!(
        text.contains("the state snapshot names another record as seq 6"),
        "{text}"
    );
    // Once the daemon wrote a snapshot of the new head, the recorded loss remains.
    snapshot_with(d, &sink.head().unwrap());
    let v = verify::verify_with(&audit_dir(d), &key(d), Some(d)).unwrap();
    assert_eq!(v.problems.len(), 1, "{v:?}");
    assert!(!v.complete());
}

#[test]
fn a_snapshot_head_under_another_key_is_a_problem() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut head = flushed_trail(d);
    head.mac[0] ^= 1;
    snapshot_with(d, &head);
    let v = verify::verify_with(&audit_dir(d), &key(d), Some(d)).unwrap();
    assert!(problems(&v).contains("does not check"), "{v:?}");
    let trail = Trail::open(&config(d), d, Timestamp::now()).unwrap();
    assert_eq!(trail.seq(), 7, "recorded");
}

mod encrypted {
    //! `[audit] encrypt = true`: the files do not show about whom; the chain, `verify`
    //! and `search` (with the key) work as for plain records, on trails that mix both.

    use super::*;
    use crate::audit::crypt::Crypt;

    fn encrypting(dir: &Path) -> AuditConfig {
        AuditConfig {
            encrypt: true,
            ..config(dir)
        }
    }

    fn found(d: &Path, crypt: Option<&Crypt>) -> (Vec<Record>, search::Searched) {
        let mut v = Vec::new();
        let s = search(&audit_dir(d), &Query::default(), crypt, |r| v.push(r)).unwrap();
        (v, s)
    }

    #[test]
    fn records_are_unreadable_in_the_file_and_read_back_with_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let now = t("2026-11-28T10:00:00Z");
        let mut trail = Trail::open(&encrypting(d), d, now).unwrap();
        trail
            .append(
                &mut [
                    auth(
                        "alice@example.org",
                        "198.51.100.7",
                        Outcome::Fail,
                        "2026-11-28T09:59:00Z",
                    ),
                    auth(
                        "bob@example.org",
                        "2001:db8::9",
                        Outcome::Ok,
                        "2026-11-28T09:59:30Z",
                    ),
                ],
                now,
            )
            .unwrap();
        drop(trail);
        let text = std::fs::read_to_string(segment_path(d, "2026-11-28")).unwrap();
        for secret in [
            "alice",
            "bob",
            "198.51.100.7",
            "2001:db8::9",
            "imap",
            "auth",
        ] {
            assert!(!text.contains(secret), "{secret} readable in {text}");
        }
        assert_eq!(text.lines().count(), 3, "segment record + two");
        let v = verify(&audit_dir(d), &key(d)).unwrap();
        assert_eq!((v.records, v.last_seq), (3, Some(3)));
        let crypt = Crypt::new(&key(d));
        let (records, s) = found(d, Some(&crypt));
        assert_eq!(s.encrypted_unread, 0);
        let users: Vec<_> = records.iter().map(|r| r.user.as_deref().unwrap()).collect();
        assert_eq!(users, ["alice@example.org", "bob@example.org"]);
        assert_eq!(records[1].ip, Some("2001:db8::9".parse().unwrap()));
        // Without the key nothing is read, and the count says why.
        let (records, s) = found(d, None);
        assert!(records.is_empty());
        assert_eq!((s.encrypted_unread, s.unreadable), (3, 0));
        // Another key opens none of them.
        let other = Crypt::new(&[7u8; 32]);
        let (records, s) = found(d, Some(&other));
        assert!(records.is_empty());
        assert_eq!(s.unreadable, 3);
    }

    #[test]
    fn a_trail_goes_on_across_restarts_and_a_change_of_the_setting() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        trail_with(d, 2); // plain
        let later = t("2026-11-28T11:00:00Z");
        let mut trail = Trail::open(&encrypting(d), d, later).unwrap();
        assert_eq!(trail.seq(), 3, "resumed from a plain record");
        trail
            .append(
                &mut [auth(
                    "carol@example.org",
                    "192.0.2.3",
                    Outcome::Ok,
                    "2026-11-28T10:59:00Z",
                )],
                later,
            )
            .unwrap();
        drop(trail);
        // Reopened from an encrypted last record, plain again.
        let mut trail = Trail::open(&config(d), d, later).unwrap();
        assert_eq!(trail.seq(), 4, "resumed from an encrypted record");
        trail
            .append(
                &mut [auth(
                    "dave@example.org",
                    "192.0.2.4",
                    Outcome::Ok,
                    "2026-11-28T10:59:30Z",
                )],
                later,
            )
            .unwrap();
        drop(trail);
        let v = verify(&audit_dir(d), &key(d)).unwrap();
        assert_eq!(v.last_seq, Some(5));
        let crypt = Crypt::new(&key(d));
        let (records, _) = found(d, Some(&crypt));
        let users: Vec<_> = records.iter().map(|r| r.user.as_deref().unwrap()).collect();
        assert_eq!(
            users,
            [
                "user0@example.org",
                "user1@example.org",
                "carol@example.org",
                "dave@example.org"
            ]
        );
        // Without the key the plain ones are still read.
        let (records, s) = found(d, None);
        assert_eq!(records.len(), 3);
        assert_eq!(s.encrypted_unread, 1);
    }

    #[test]
    fn a_changed_or_moved_encrypted_record_is_named_by_verify() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let now = t("2026-11-28T10:00:00Z");
        let mut trail = Trail::open(&encrypting(d), d, now).unwrap();
        let mut batch: Vec<Record> = (0..3)
            .map(|i| {
                auth(
                    &format!("u{i}@example.org"),
                    "192.0.2.1",
                    Outcome::Fail,
                    "2026-11-28T09:59:00Z",
                )
            })
            .collect();
        trail.append(&mut batch, now).unwrap();
        drop(trail);
        let path = segment_path(d, "2026-11-28");
        let original = lines(&path);
        // One character of the ciphertext changed.
        let mut edited = original.clone();
        let at = edited[2].find("\"enc\":\"").unwrap() + 10;
        let mut bytes = edited[2].clone().into_bytes();
        bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
        edited[2] = String::from_utf8(bytes).unwrap();
        std::fs::write(&path, edited.join("\n") + "\n").unwrap();
        let broken = verify(&audit_dir(d), &key(d)).unwrap_err();
        assert_eq!(broken.line, 3, "{broken}");
        // Two records' sealed contents swapped, each under its own seq: the cipher's
        // associated data refuses them even before the chain would.
        let mut swapped = original.clone();
        let enc =
            |l: &str| l[l.find("\"enc\":\"").unwrap()..l.find("\",\"chain\"").unwrap()].to_string();
        let (e2, e3) = (enc(&original[2]), enc(&original[3]));
        swapped[2] = original[2].replace(&e2, &e3);
        swapped[3] = original[3].replace(&e3, &e2);
        std::fs::write(&path, swapped.join("\n") + "\n").unwrap();
        let broken = verify(&audit_dir(d), &key(d)).unwrap_err();
        assert_eq!(broken.line, 3, "{broken}");
        assert!(broken.why.contains("does not open"), "{broken}");
    }

    #[test]
    fn malformed_encrypted_lines_are_errors_not_panics() {
        let crypt = Crypt::new(&[1u8; 32]);
        for content in [
            r#"{"seq":1,"enc":"!!!"}"#,
            r#"{"seq":1,"enc":""}"#,
            r#"{"seq":x,"enc":"AAAA"}"#,
            r#"{"seq":1,"enc":"AAAA","x":1}"#,
        ] {
            let sealed = crate::audit::crypt::encrypted(content).unwrap();
            let opened = sealed.and_then(|s| crypt.open(&s));
            assert!(opened.is_err(), "{content}");
        }
        assert!(crate::audit::crypt::encrypted(r#"{"seq":1,"kind":"auth"}"#).is_none());
    }
}
