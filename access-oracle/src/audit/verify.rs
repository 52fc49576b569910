//! `access-oracle audit verify`: walks every segment in order and checks each record's
//! chain value, its sequence number, and that each segment continues the one before.
//! Names the first record that does not check, and why.

use std::io::{BufRead, BufReader};
use std::path::Path;

use jiff::Timestamp;
use serde::Serialize;

use super::crypt::Crypt;
use super::record::{self, Chain, GENESIS, Kind};
use super::segment;

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

/// Checks the trail in `dir` with `key`.
pub fn verify(dir: &Path, key: &[u8]) -> Result<Verified, Broken> {
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
    let head = read_head(dir, key)?;
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
                v.recovered
                    .push((r.seq, r.reason.clone().unwrap_or_default()));
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
                return Err(at(format!(
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
    if let Some((head_seq, _)) = head
        && last_seq.is_none_or(|last| last < head_seq)
    {
        return Err(Broken {
            file: segment::HEAD_FILE.into(),
            line: 1,
            seq: last_seq,
            why: format!(
                "the head file says record {head_seq} was written, the trail ends at {}: \
                 records were cut from its end",
                last_seq.unwrap_or(0)
            ),
        });
    }
    v.last_seq = last_seq;
    Ok(v)
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
