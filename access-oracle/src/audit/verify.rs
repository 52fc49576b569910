//! `access-oracle audit verify`: walks every segment in order and checks each record's
//! chain value, its sequence number, and that each segment continues the one before.
//! Names the first record that does not check, and why.
//!
//! A chain that checks can still be incomplete: records cut from its end, a trail
//! removed and begun again. Those are *problems* ([`Verified::problems`]), and a trail
//! with any is not verified: the trail's end is checked against `head.json` and against
//! the audit head kept in the state snapshot (outside the trail's directory, see
//! `persist::snapshot`), and every loss the oracle found and recorded when it reopened
//! the trail (`recovered` records naming missing records, a missing or changed head) is
//! reported each time. Only records removed by retention, which records its removals,
//! a partial last line dropped after a crash (never flushed), and a time when writing
//! failed and records waited in memory (a `write_gap` note: none was lost) are not
//! problems.

use std::io::{BufRead, BufReader};
use std::path::Path;

use jiff::Timestamp;
use serde::Serialize;

use super::crypt::Crypt;
use super::record::{self, Chain, GENESIS, Kind, Record};
use super::{segment, writer};
use crate::persist::snapshot;

/// A trail that checks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Verified {
    /// Segment files.
    pub files: usize,
    /// Records.
    pub records: u64,
    /// The first record's sequence number.
    pub first_seq: Option<u64>,
    /// The last record's sequence number.
    pub last_seq: Option<u64>,
    /// When the last record was written.
    pub last_logged: Option<Timestamp>,
    /// When the trail starts after records removed by retention: the last one removed
    /// (as the retention record says).
    pub removed_through_seq: Option<u64>,
    /// The last record the head file says was flushed to disk (absent for a trail
    /// that never reached a flush).
    pub head_seq: Option<u64>,
    /// `recovered` records: what the oracle found missing or cut off when it reopened
    /// the trail (sequence number and text), for the auditor to look at.
    pub recovered: Vec<(u64, String)>,
    /// The audit head the state snapshot names (its sequence number), when one was
    /// checked.
    pub snapshot_seq: Option<u64>,
    /// Why the trail is not complete: records missing from its end, a trail begun
    /// again, a head removed or changed, losses the oracle recorded. Empty when it is.
    pub problems: Vec<Broken>,
    /// What was checked or not and is no problem (no snapshot to compare with, a
    /// partial line dropped after a crash).
    pub notes: Vec<String>,
}

impl Verified {
    /// Whether the trail is whole: every record checks and nothing is missing.
    pub fn complete(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Whether a `recovered` record tells of a loss (rather than of a partial line dropped
/// after a crash, or of records that waited while writing failed). Records written
/// before `action` was set tell by their text.
fn is_loss(r: &Record) -> bool {
    match r.action.as_deref() {
        Some(writer::PARTIAL_LINE | writer::WRITE_GAP) => false,
        Some(_) => true,
        None => r
            .reason
            .as_deref()
            .is_some_and(|t| t.contains("are missing")),
    }
}

/// The first place where the trail does not check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{file} line {line}{}: {why}", seq.map(|s| format!(" (seq {s})")).unwrap_or_default())]
pub struct Broken {
    /// The segment file.
    pub file: String,
    /// The line in it, from 1.
    pub line: u64,
    /// The record's sequence number, when it could be read.
    pub seq: Option<u64>,
    /// What is wrong.
    pub why: String,
}

/// Checks the trail in `dir` with `key`, its end against `head.json` only.
pub fn verify(dir: &Path, key: &[u8]) -> Result<Verified, Broken> {
    verify_with(dir, key, None)
}

/// Checks the trail in `dir` with `key`, its end against `head.json` and, when
/// `state_dir` is given, against the audit head in the state snapshot there. `Err` when
/// the chain itself does not check (the first place); otherwise what is missing is in
/// [`Verified::problems`].
pub fn verify_with(dir: &Path, key: &[u8], state_dir: Option<&Path>) -> Result<Verified, Broken> {
    let segments = segment::list(dir).map_err(|e| Broken {
        file: dir.display().to_string(),
        line: 0,
        seq: None,
        why: format!("cannot list the segments: {e}"),
    })?;
    let mut v = Verified {
        files: segments.len(),
        ..Verified::default()
    };
    let head = match read_head(dir, key) {
        Ok(h) => h,
        Err(b) => {
            v.problems.push(b);
            None
        }
    };
    let snap = state_dir.and_then(|d| snapshot_head(d, key, &mut v));
    let crypt = Crypt::new(key);
    v.head_seq = head.map(|(seq, _)| seq);
    let mut chain: Option<Chain> = None;
    let mut last_seq: Option<u64> = None;
    let mut prev_file: Option<String> = None;
    // The trail's start when it does not start at the very first record: where, and
    // whether a retention record accounts for what came before.
    let mut start: Option<(Chain, String, u64)> = None;
    let mut explained: Option<u64> = None;
    for (_, path) in &segments {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let broken = |line: u64, seq: Option<u64>, why: String| Broken {
            file: name.clone(),
            line,
            seq,
            why,
        };
        let file =
            std::fs::File::open(path).map_err(|e| broken(0, None, format!("cannot open: {e}")))?;
        let mut reader = BufReader::new(file);
        let mut buf = Vec::new();
        let mut line_no = 0u64;
        loop {
            buf.clear();
            let n = reader
                .read_until(b'\n', &mut buf)
                .map_err(|e| broken(line_no + 1, None, format!("cannot read: {e}")))?;
            if n == 0 {
                break;
            }
            line_no += 1;
            if buf.last() != Some(&b'\n') {
                return Err(broken(
                    line_no,
                    None,
                    format!(
                        "the last {n} bytes are a record cut off (the oracle stopped while \
                         writing it); the oracle drops them and records that when it next starts"
                    ),
                ));
            }
            buf.pop();
            let line = std::str::from_utf8(&buf)
                .map_err(|_| broken(line_no, None, "not UTF-8: not a record".into()))?;
            let (sealed, r) =
                record::read_line(line, Some(&crypt)).map_err(|why| broken(line_no, None, why))?;
            let at = |why: String| broken(line_no, Some(r.seq), why);
            if line_no == 1 {
                if r.kind != Kind::Segment {
                    return Err(at(format!(
                        "the segment starts with a {} record, not its segment record",
                        r.kind.as_str()
                    )));
                }
                let prev = r
                    .prev_chain
                    .as_deref()
                    .and_then(record::parse_chain)
                    .ok_or_else(|| at("the segment record has no valid prev_chain".into()))?;
                match chain {
                    None => {
                        if prev != GENESIS || r.seq != 1 {
                            start = Some((prev, name.clone(), r.seq));
                        }
                        chain = Some(prev);
                    }
                    Some(c) if c != prev => {
                        return Err(at(format!(
                            "this segment does not continue {}: records after seq {} are \
                             missing, or a segment was replaced",
                            prev_file.as_deref().unwrap_or("the one before"),
                            last_seq.unwrap_or(0)
                        )));
                    }
                    Some(_) => {}
                }
            } else if r.kind == Kind::Segment {
                return Err(at("a segment record inside a segment".into()));
            }
            if let Some(last) = last_seq
                && r.seq != last + 1
            {
                return Err(at(format!(
                    "sequence jumps from {last} to {}: records missing or inserted",
                    r.seq
                )));
            }
            let before = chain.unwrap_or(GENESIS);
            if !record::check(key, &before, sealed.content.as_bytes(), &sealed.chain) {
                return Err(at(
                    "the chain value does not match: this record was changed, or one \
                     before it removed, inserted or reordered (or the key is another)"
                        .into(),
                ));
            }
            if r.kind == Kind::Recovered {
                let reason = r.reason.clone().unwrap_or_default();
                if is_loss(&r) {
                    v.problems.push(at(format!(
                        "recorded when the oracle reopened the trail: {reason}"
                    )));
                } else {
                    v.notes
                        .push(format!("record {} (recovered): {reason}", r.seq));
                }
                v.recovered.push((r.seq, reason));
            }
            if let Some((snap_seq, snap_chain, _)) = &snap
                && *snap_seq == r.seq
                && *snap_chain != sealed.chain
            {
                v.problems.push(at(format!(
                    "the state snapshot names another record as seq {snap_seq}: the chain \
                     was begun again or replaced from there on (records of the chain the \
                     snapshot knew are missing)"
                )));
            }
            if r.kind == Kind::Retention
                && let Some((first_prev, _, _)) = &start
                && r.through_chain.as_deref().and_then(record::parse_chain) == Some(*first_prev)
            {
                explained = r.through;
            }
            if let Some((head_seq, head_chain)) = head
                && head_seq == r.seq
                && head_chain != sealed.chain
            {
                v.problems.push(at(format!(
                    "the head file names another record as seq {head_seq}: the records from \
                     here on were replaced"
                )));
            }
            chain = Some(sealed.chain);
            last_seq = Some(r.seq);
            v.first_seq.get_or_insert(r.seq);
            v.records += 1;
            v.last_logged = Some(r.logged);
        }
        prev_file = Some(name);
    }
    if let Some((_, file, seq)) = start {
        match explained {
            Some(through) if through + 1 == seq => v.removed_through_seq = Some(through),
            _ => {
                return Err(Broken {
                    file,
                    line: 1,
                    seq: Some(seq),
                    why: format!(
                        "the trail starts at seq {seq}, and no retention record accounts for \
                         the records before it: earlier segments are missing"
                    ),
                });
            }
        }
    }
    let last = last_seq.unwrap_or(0);
    if let Some((head_seq, _)) = head
        && last < head_seq
    {
        v.problems.push(Broken {
            file: segment::HEAD_FILE.into(),
            line: 1,
            seq: last_seq,
            why: format!(
                "the head file says record {head_seq} was written, the trail ends at \
                 {last}: records were cut from its end"
            ),
        });
    }
    if head.is_none()
        && last_seq.is_some()
        && !v.problems.iter().any(|p| p.file == segment::HEAD_FILE)
    {
        v.problems.push(Broken {
            file: segment::HEAD_FILE.into(),
            line: 0,
            seq: None,
            why: format!(
                "missing, with {} records in the trail: it was removed (the oracle writes it \
                 when it opens the trail and after every flush), so records cut from the \
                 end would not be noticed through it",
                v.records
            ),
        });
    }
    if let Some((snap_seq, _, written)) = snap
        && last < snap_seq
        && v.removed_through_seq
            .is_none_or(|through| through < snap_seq)
    {
        v.problems.push(Broken {
            file: snapshot::FILE_NAME.into(),
            line: 0,
            seq: last_seq,
            why: format!(
                "the state snapshot (written at {written}) says audit record {snap_seq} was \
                 written, the trail ends at {last}: records {} to {snap_seq} are missing \
                 (cut from its end, or the trail was removed)",
                last + 1
            ),
        });
    }
    v.last_seq = last_seq;
    Ok(v)
}

/// The audit head in the state snapshot of `state_dir` (sequence number, chain value,
/// when written), checked against its MAC; what cannot be used becomes a note or a
/// problem in `v`.
fn snapshot_head(state_dir: &Path, key: &[u8], v: &mut Verified) -> Option<(u64, Chain, String)> {
    let path = state_dir.join(snapshot::FILE_NAME);
    let header = match snapshot::read_header(state_dir) {
        Ok(Some(h)) => h,
        Ok(None) => {
            v.notes.push(format!(
                "no state snapshot with an audit head at {} (none written yet, or of an \
                 older version): the trail's end was checked against {} only",
                path.display(),
                segment::HEAD_FILE
            ));
            return None;
        }
        Err(e) => {
            v.problems.push(Broken {
                file: path.display().to_string(),
                line: 0,
                seq: None,
                why: format!("the audit head in the state snapshot cannot be read: {e}"),
            });
            return None;
        }
    };
    let written = jiff::Timestamp::from_second(header.written)
        .map_or_else(|_| header.written.to_string(), |t| t.to_string());
    let Some(h) = header.audit else {
        v.notes.push(format!(
            "the state snapshot {} (written at {written}) holds no audit head (written with \
             the trail off): the trail's end was checked against {} only",
            path.display(),
            segment::HEAD_FILE
        ));
        return None;
    };
    if !record::check_head(key, h.seq, &h.chain, &h.mac) {
        v.problems.push(Broken {
            file: path.display().to_string(),
            line: 0,
            seq: Some(h.seq),
            why: format!(
                "the audit head in the state snapshot (written at {written}, record {}) does \
                 not check: the snapshot was changed, or the trail's key is another",
                h.seq
            ),
        });
        return None;
    }
    v.snapshot_seq = Some(h.seq);
    Some((h.seq, h.chain, written))
}

/// The head file's record number and chain value, checked against its MAC; `None`
/// when there is no head file.
pub(crate) fn read_head(dir: &Path, key: &[u8]) -> Result<Option<(u64, Chain)>, Broken> {
    let broken = |why: String| Broken {
        file: segment::HEAD_FILE.into(),
        line: 1,
        seq: None,
        why,
    };
    let text = match std::fs::read_to_string(dir.join(segment::HEAD_FILE)) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(broken(format!("cannot read: {e}"))),
    };
    let head: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| broken(format!("not JSON: {e}")))?;
    let seq = head["seq"].as_u64();
    let chain = head["chain"].as_str().and_then(record::parse_chain);
    let mac = head["mac"].as_str().and_then(record::parse_chain);
    let (Some(seq), Some(chain), Some(mac)) = (seq, chain, mac) else {
        return Err(broken("not a head record (seq, chain, mac)".into()));
    };
    if !record::check_head(key, seq, &chain, &mac) {
        return Err(broken(
            "its MAC does not match: the head file was changed (or the key is another)".into(),
        ));
    }
    Ok(Some((seq, chain)))
}
