//! The tailer against real files: rotation, truncation, restarts, and a model-based test
//! over random sequences of them.

use std::fs::{self, OpenOptions};
use std::io::Write;

use proptest::prelude::*;

use super::*;

fn append(path: &Path, bytes: &[u8]) {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(bytes).unwrap();
}

fn texts(lines: &[Line]) -> Vec<String> {
    lines
        .iter()
        .map(|l| String::from_utf8_lossy(&l.bytes).into_owned())
        .collect()
}

fn rotated(path: &Path) -> PathBuf {
    PathBuf::from(format!("{}.1", path.display()))
}

#[test]
fn waits_for_the_file_then_reads_complete_lines_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mainlog");
    let mut t = Tailer::new(&path, None, StartAt::Beginning);
    assert!(t.poll(0).unwrap().is_empty());
    assert_eq!(t.position(), None);
    append(&path, b"one\ntw");
    let lines = t.poll(0).unwrap();
    assert_eq!(texts(&lines), ["one"]);
    assert_eq!((lines[0].offset, t.position().unwrap().offset), (0, 4));
    append(&path, b"o\nthree\n");
    let lines = t.poll(0).unwrap();
    assert_eq!(texts(&lines), ["two", "three"]);
    assert_eq!(lines[1].offset, 8);
}

#[test]
fn start_at_end_skips_history() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mainlog");
    append(&path, b"old\n");
    let mut t = Tailer::new(&path, None, StartAt::End);
    assert!(t.poll(0).unwrap().is_empty());
    append(&path, b"new\n");
    assert_eq!(texts(&t.poll(0).unwrap()), ["new"]);
}

#[test]
fn follows_rename_and_create_reading_the_old_file_to_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mainlog");
    append(&path, b"a\n");
    let mut t = Tailer::new(&path, None, StartAt::Beginning);
    assert_eq!(texts(&t.poll(0).unwrap()), ["a"]);
    append(&path, b"b\n");
    fs::rename(&path, rotated(&path)).unwrap();
    append(&path, b"c\n");
    // The writer had not reopened yet: one more line lands in the old file.
    append(&rotated(&path), b"late\n");
    assert_eq!(texts(&t.poll(10).unwrap()), ["b", "late", "c"]);
    append(&rotated(&path), b"later\n");
    append(&path, b"d\n");
    assert_eq!(texts(&t.poll(12).unwrap()), ["later", "d"]);
}

#[test]
fn a_rotated_file_without_a_final_newline_is_handed_out_after_the_grace() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mainlog");
    append(&path, b"a\nunfinished");
    let mut t = Tailer::new(&path, None, StartAt::Beginning);
    assert_eq!(texts(&t.poll(0).unwrap()), ["a"]);
    fs::rename(&path, rotated(&path)).unwrap();
    append(&path, b"b\n");
    assert_eq!(texts(&t.poll(0).unwrap()), ["b"]);
    assert_eq!(texts(&t.poll(RETIRE_GRACE_SECS).unwrap()), ["unfinished"]);
}

#[test]
fn copytruncate_starts_over() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mainlog");
    append(&path, b"first line\nsecond line\n");
    let mut t = Tailer::new(&path, None, StartAt::Beginning);
    assert_eq!(t.poll(0).unwrap().len(), 2);
    fs::copy(&path, rotated(&path)).unwrap();
    OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    append(&path, b"x\n");
    assert_eq!(texts(&t.poll(0).unwrap()), ["x"]);
    // Truncated and refilled past the old length before the poll: the changed first
    // bytes tell.
    OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    append(
        &path,
        b"y: a much longer line than before, longer than what was read\n",
    );
    assert_eq!(
        texts(&t.poll(0).unwrap()),
        ["y: a much longer line than before, longer than what was read"]
    );
}

#[test]
fn resumes_after_a_restart_in_the_same_or_the_rotated_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mainlog");
    append(&path, b"1\n2\n");
    let mut t = Tailer::new(&path, None, StartAt::Beginning);
    assert_eq!(texts(&t.poll(0).unwrap()), ["1", "2"]);
    append(&path, b"3\n");
    let saved = t.position();
    drop(t);
    let mut t = Tailer::new(&path, saved, StartAt::End);
    assert_eq!(texts(&t.poll(0).unwrap()), ["3"]);
    append(&path, b"4\n");
    let saved = t.position();
    drop(t);
    // Rotated while the oracle was down.
    fs::rename(&path, rotated(&path)).unwrap();
    append(&path, b"5\n");
    let mut t = Tailer::new(&path, saved, StartAt::End);
    assert_eq!(texts(&t.poll(0).unwrap()), ["4", "5"]);
}

#[test]
fn deleted_then_recreated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mainlog");
    append(&path, b"a\n");
    let mut t = Tailer::new(&path, None, StartAt::Beginning);
    t.poll(0).unwrap();
    append(&path, b"b\n");
    fs::remove_file(&path).unwrap();
    assert_eq!(texts(&t.poll(0).unwrap()), ["b"]);
    assert!(t.poll(1).unwrap().is_empty());
    append(&path, b"c\n");
    assert_eq!(texts(&t.poll(2).unwrap()), ["c"]);
}

#[test]
fn overlong_lines_are_cut_and_flagged_without_losing_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mainlog");
    let mut long = vec![b'x'; MAX_LINE_BYTES + 10_000];
    long.extend_from_slice(b"\nnext\n");
    append(&path, &long);
    let mut t = Tailer::new(&path, None, StartAt::Beginning);
    let lines = t.poll(0).unwrap();
    assert_eq!(lines.len(), 2);
    assert!(lines[0].truncated && lines[0].bytes.len() == MAX_LINE_BYTES);
    assert_eq!(lines[1].bytes, b"next");
    assert_eq!(lines[1].offset, (MAX_LINE_BYTES + 10_001) as u64);
}

/// What a test does to the log file.
#[derive(Debug, Clone)]
enum Op {
    /// Append whole lines.
    Write(Vec<String>),
    /// Append the start of a line; the writer finishes it with the next write.
    WritePartial(String),
    /// logrotate's default: rename to PATH.1 (replacing it), create a new file.
    Rotate,
    /// logrotate's copytruncate.
    CopyTruncate,
    /// Stop and start the oracle: a new tailer from the saved position.
    Restart,
    /// A wake-up.
    Poll,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => proptest::collection::vec("[a-z0-9 ]{0,12}", 1..4).prop_map(Op::Write),
        1 => "[a-z]{1,6}".prop_map(Op::WritePartial),
        1 => Just(Op::Rotate),
        1 => Just(Op::CopyTruncate),
        1 => Just(Op::Restart),
        3 => Just(Op::Poll),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Every complete line written is read exactly once, in order, whatever the mix of
    /// writes, rotations, truncations and restarts, given that the oracle has polled
    /// before a copytruncate (the truncation destroys what was not read), between two
    /// renames (a third-generation file is out of reach), and once before a file it has
    /// never seen is renamed (as the daemon does when it starts and when a file appears).
    #[test]
    fn every_line_once_in_order(ops in proptest::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mainlog");
        let mut t = Tailer::new(&path, None, StartAt::Beginning);
        let mut written: Vec<String> = Vec::new();
        let mut pending = String::new();
        let mut read: Vec<String> = Vec::new();
        let mut now = 0;
        let mut renamed_since_poll = false;
        let mut seq = 0u64;
        let poll = |t: &mut Tailer, now: &mut i64, read: &mut Vec<String>| {
            *now += 1;
            read.extend(texts(&t.poll(*now).unwrap()));
        };
        for op in ops {
            match op {
                Op::Write(lines) => {
                    let mut bytes = String::new();
                    // Every line starts with a sequence number, as log lines start with a
                    // timestamp: that is what lets a fingerprint tell a rewritten file.
                    let lines: Vec<String> = lines
                        .iter()
                        .map(|l| {
                            seq += 1;
                            format!("{seq} {l}")
                        })
                        .collect();
                    for (i, l) in lines.iter().enumerate() {
                        if i == 0 {
                            written.push(format!("{}{l}", std::mem::take(&mut pending)));
                        } else {
                            written.push(l.clone());
                        }
                        bytes.push_str(l);
                        bytes.push('\n');
                    }
                    append(&path, bytes.as_bytes());
                }
                Op::WritePartial(s) => {
                    append(&path, s.as_bytes());
                    pending.push_str(&s);
                }
                Op::Rotate => {
                    if !pending.is_empty() { continue; }
                    if renamed_since_poll || t.position().is_none() {
                        poll(&mut t, &mut now, &mut read);
                    }
                    if path.exists() {
                        fs::rename(&path, rotated(&path)).unwrap();
                        renamed_since_poll = true;
                    }
                    append(&path, b"");
                }
                Op::CopyTruncate => {
                    if !pending.is_empty() || !path.exists() { continue; }
                    poll(&mut t, &mut now, &mut read);
                    renamed_since_poll = false;
                    // logrotate makes the copy a new file (the old PATH.1 moved away).
                    let _ = fs::remove_file(rotated(&path));
                    fs::copy(&path, rotated(&path)).unwrap();
                    OpenOptions::new().write(true).truncate(true).open(&path).unwrap();
                }
                Op::Restart => {
                    let saved = t.position();
                    t = Tailer::new(&path, saved, StartAt::Beginning);
                }
                Op::Poll => {
                    poll(&mut t, &mut now, &mut read);
                    renamed_since_poll = false;
                }
            }
        }
        // Let every grace period pass.
        for _ in 0..(RETIRE_GRACE_SECS + 2) {
            poll(&mut t, &mut now, &mut read);
        }
        prop_assert_eq!(read, written);
    }
}
