//! Following the trail: its records in order from a place in it, up to the last record
//! the writer has flushed to disk (the head in `head.json`), for whoever forwards the
//! trail elsewhere (a `stream = "audit"` sink).
//!
//! Read as `verify` and `search` read it: the day files in order ([`segment::list`]),
//! each line through [`record::read_line`], encrypted records opened with the trail's
//! key. Nothing past the head is read: a record written but not yet flushed (or a line
//! half written) can still be cut off by a crash or a failed write and its number given
//! to another record, so it is never handed on.
//!
//! A place ([`Place`]) is a record's number and chain value and where its line ends
//! (the day file and the offset): resuming there is one read of that line; when the
//! file is gone or holds another record there, the place is found again by number.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::crypt::Crypt;
use super::record::{self, Chain, Record};
use super::{segment, verify};

/// Where a record's line ends in the trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    /// The record's number.
    pub seq: u64,
    /// Its chain value (tells it from another record given the same number by a trail
    /// begun again).
    pub chain: Chain,
    /// The day file holding it (empty when not known: it is looked for by number).
    pub file: String,
    /// The offset just after its line (its newline) in that file.
    pub end: u64,
}

/// One record read, with where it ends.
#[derive(Debug, Clone)]
pub struct Followed {
    /// The record.
    pub record: Record,
    /// Its line as the trail holds it, without the newline; for an encrypted record,
    /// the record's JSON (decrypted) followed by its `chain` field as on the line.
    pub line: String,
    /// Where its line ends.
    pub place: Place,
}

/// What one [`Follower::read`] found.
#[derive(Debug, Default)]
pub struct Batch {
    /// The last record the head names (0 when the trail has none flushed yet).
    pub head: u64,
    /// Records, in order.
    pub records: Vec<Followed>,
    /// Records not in the trail where they should have been (numbers skipped: removed
    /// by retention before they were read, or lines that are not records).
    pub missing: u64,
    /// What was odd, for the log: numbers skipped, lines that are not records.
    pub notes: Vec<String>,
}

/// Where [`Follower::seek`] put the reader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sought {
    /// Right after the place.
    Resumed,
    /// The records after the place up to the trail's first are gone (removed by
    /// retention): reading goes on at the trail's first, and the records in between are
    /// counted as missing when it is read.
    Removed,
    /// The trail no longer holds the record of the place (the trail was removed and
    /// begun again, or cut): reading starts at the trail's beginning. Why, for the log.
    Replaced(String),
}

/// Reads the trail in order, from a place, up to its flushed head.
#[derive(Debug)]
pub struct Follower {
    dir: PathBuf,
    key: Vec<u8>,
    crypt: Crypt,
    /// The day file being read and the offset of its next line; `None` before the first.
    at: Option<(String, u64)>,
    /// The last record read (0 before any).
    last: u64,
    /// Whether the next record read may have any number: reading from the trail's
    /// beginning, records retention removed long ago are not missing.
    fresh: bool,
}

impl Follower {
    /// A follower of the trail in `dir` whose key is `key`, at its beginning.
    pub fn new(dir: &Path, key: Vec<u8>) -> Follower {
        Follower {
            dir: dir.to_path_buf(),
            crypt: Crypt::new(&key),
            key,
            at: None,
            last: 0,
            fresh: true,
        }
    }

    /// The last record read (or sought), 0 before any.
    pub fn last(&self) -> u64 {
        self.last
    }

    /// The head: the last record flushed to disk, as `head.json` names it (checked
    /// against its MAC); `None` before the trail was first opened.
    pub fn head(&self) -> Result<Option<(u64, Chain)>, String> {
        verify::read_head(&self.dir, &self.key).map_err(|b| b.to_string())
    }

    /// Goes back to the trail's beginning.
    pub fn rewind(&mut self) {
        self.at = None;
        self.last = 0;
        self.fresh = true;
    }

    /// Puts the reader right after `place`: at once when its file holds that record
    /// there, else by looking for its number.
    pub fn seek(&mut self, place: &Place) -> std::io::Result<Sought> {
        if !place.file.is_empty()
            && let Some((seq, chain)) = self.line_ending_at(&place.file, place.end)
            && seq == place.seq
            && chain == place.chain
        {
            self.at = Some((place.file.clone(), place.end));
            self.last = place.seq;
            self.fresh = false;
            return Ok(Sought::Resumed);
        }
        let segments = segment::list(&self.dir)?;
        let mut firsts = Vec::with_capacity(segments.len());
        for (_, path) in &segments {
            firsts.push((file_name(path), self.first_seq(path)));
        }
        // The last file starting at or before the place's record holds it, if any does.
        let holding = firsts
            .iter()
            .rposition(|(_, first)| first.is_some_and(|f| f <= place.seq));
        let Some(i) = holding else {
            match firsts.iter().find(|(_, first)| first.is_some()) {
                Some((name, _)) => {
                    // Every file starts after the place: what came between was removed.
                    self.at = Some((name.clone(), 0));
                    self.last = place.seq;
                    self.fresh = false;
                    return Ok(Sought::Removed);
                }
                None => {
                    self.rewind();
                    return Ok(Sought::Replaced(format!(
                        "the trail holds no records, and record {} was forwarded: it was removed \
                         and begun again",
                        place.seq
                    )));
                }
            }
        };
        let name = &firsts[i].0;
        match self.find(name, place.seq)? {
            Some((end, chain)) if chain == place.chain => {
                self.at = Some((name.clone(), end));
                self.last = place.seq;
                self.fresh = false;
                Ok(Sought::Resumed)
            }
            Some(_) => {
                self.rewind();
                Ok(Sought::Replaced(format!(
                    "record {} of the trail is not the record forwarded under that number: the \
                     trail was removed and begun again, or replaced",
                    place.seq
                )))
            }
            None if i + 1 < firsts.len() => {
                // A hole between two files: go on with the next.
                self.at = Some((firsts[i + 1].0.clone(), 0));
                self.last = place.seq;
                self.fresh = false;
                Ok(Sought::Removed)
            }
            None => {
                self.rewind();
                Ok(Sought::Replaced(format!(
                    "the trail ends before record {}, which was forwarded: records were cut \
                     from its end, or it was removed and begun again",
                    place.seq
                )))
            }
        }
    }

    /// Reads the records after the last one read, in order, up to the head (at most
    /// `max`). Reads nothing when the head is not past the last record read.
    pub fn read(&mut self, max: usize) -> std::io::Result<Batch> {
        let head = match self.head() {
            Ok(h) => h.map_or(0, |(seq, _)| seq),
            Err(why) => return Err(std::io::Error::other(why)),
        };
        let mut batch = Batch {
            head,
            ..Batch::default()
        };
        if head <= self.last && !self.fresh {
            return Ok(batch);
        }
        // The file whose end was checked once more before moving past it.
        let mut rechecked: Option<String> = None;
        while batch.records.len() < max {
            let Some((name, offset)) = self.at.clone() else {
                match segment::list(&self.dir)?.first() {
                    Some((_, path)) => {
                        self.at = Some((file_name(path), 0));
                        continue;
                    }
                    None => break,
                }
            };
            let path = self.dir.join(&name);
            let file = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    // Removed (retention) before it was read to its end.
                    let Some(next) = self.next_file(&name)? else {
                        break;
                    };
                    batch.notes.push(format!(
                        "{name} was removed before it was read to its end; going on with {next}"
                    ));
                    self.at = Some((next, 0));
                    continue;
                }
                Err(e) => return Err(e),
            };
            let (read, past_head) = self.read_lines(file, &name, offset, head, max, &mut batch)?;
            if past_head || self.last >= head && !self.fresh || batch.records.len() >= max {
                break;
            }
            if read > 0 {
                continue;
            }
            // The end of this file, and the head is further: the rest is in the next.
            let Some(next) = self.next_file(&name)? else {
                break;
            };
            // The writer finished this file before it started the next: look at its
            // end once more, in case it grew after it was read.
            if rechecked.as_deref() != Some(name.as_str()) {
                rechecked = Some(name);
                continue;
            }
            self.at = Some((next, 0));
        }
        Ok(batch)
    }

    /// Reads the whole lines of `name` from `offset`: records up to `head` (and `max`)
    /// into `batch`. Returns how many lines were taken and whether a record past the
    /// head was met.
    fn read_lines(
        &mut self,
        mut file: File,
        name: &str,
        offset: u64,
        head: u64,
        max: usize,
        batch: &mut Batch,
    ) -> std::io::Result<(usize, bool)> {
        file.seek(SeekFrom::Start(offset))?;
        let mut reader = BufReader::new(file);
        let mut buf = Vec::new();
        let mut end = offset;
        let mut taken = 0;
        while batch.records.len() < max {
            buf.clear();
            let n = reader
                .by_ref()
                .take(segment::MAX_LINE_BYTES + 1)
                .read_until(b'\n', &mut buf)?;
            if n as u64 > segment::MAX_LINE_BYTES {
                return Err(std::io::Error::other(format!(
                    "{name} at offset {end}: a line over {} bytes is not a record (run \
                     `access-oracle audit verify`)",
                    segment::MAX_LINE_BYTES
                )));
            }
            if n == 0 || buf.last() != Some(&b'\n') {
                // The end, or a line not yet whole: the writer may be writing it.
                break;
            }
            let line_end = end + n as u64;
            buf.pop();
            let parsed = std::str::from_utf8(&buf)
                .map_err(|_| "not UTF-8".to_string())
                .and_then(|text| {
                    record::read_line(text, Some(&self.crypt)).map(|(sealed, r)| (text, sealed, r))
                });
            let (text, sealed, r) = match parsed {
                Ok(p) => p,
                Err(why) => {
                    batch.notes.push(format!(
                        "{name} at offset {end}: not a record ({why}); skipped (run `access-oracle audit verify`)"
                    ));
                    end = line_end;
                    taken += 1;
                    self.at = Some((name.to_string(), end));
                    continue;
                }
            };
            if r.seq > head {
                return Ok((taken, true));
            }
            if !self.fresh && r.seq != self.last + 1 {
                if r.seq > self.last + 1 {
                    let gap = r.seq - self.last - 1;
                    batch.missing += gap;
                    batch.notes.push(format!(
                        "records {} to {} are not in the trail (removed by retention, or lines \
                         that are not records); going on with record {} in {name}",
                        self.last + 1,
                        r.seq - 1,
                        r.seq
                    ));
                } else {
                    batch.notes.push(format!(
                        "record {} in {name} follows record {}: the trail was begun again",
                        r.seq, self.last
                    ));
                }
            }
            let line = if super::crypt::is_encrypted(text) {
                plain_line(&r, &sealed.chain)
            } else {
                text.to_string()
            };
            self.last = r.seq;
            self.fresh = false;
            end = line_end;
            taken += 1;
            self.at = Some((name.to_string(), end));
            batch.records.push(Followed {
                place: Place {
                    seq: r.seq,
                    chain: sealed.chain,
                    file: name.to_string(),
                    end,
                },
                record: r,
                line,
            });
        }
        Ok((taken, false))
    }

    /// The day file after `name`, if there is one.
    fn next_file(&self, name: &str) -> std::io::Result<Option<String>> {
        Ok(segment::list(&self.dir)?
            .into_iter()
            .map(|(_, p)| file_name(&p))
            .find(|n| n.as_str() > name))
    }

    /// The number and chain value of the record whose line ends at `end` in `name`.
    fn line_ending_at(&self, name: &str, end: u64) -> Option<(u64, Chain)> {
        let mut file = File::open(self.dir.join(name)).ok()?;
        let start = end.saturating_sub(segment::MAX_LINE_BYTES + 1);
        file.seek(SeekFrom::Start(start)).ok()?;
        let mut buf = Vec::new();
        file.take(end - start).read_to_end(&mut buf).ok()?;
        if buf.len() as u64 != end - start || buf.pop() != Some(b'\n') {
            return None;
        }
        let from = memchr::memrchr(b'\n', &buf).map_or(0, |i| i + 1);
        if from == 0 && start > 0 {
            return None;
        }
        let text = std::str::from_utf8(&buf[from..]).ok()?;
        self.seq_and_chain(text)
    }

    /// The number and chain of a line, reading no more than needed (an encrypted
    /// record's number is in the clear).
    fn seq_and_chain(&self, text: &str) -> Option<(u64, Chain)> {
        let sealed = record::unseal(text).ok()?;
        let seq = match super::crypt::encrypted(&sealed.content) {
            Some(enc) => enc.ok()?.seq,
            None => serde_json::from_str::<SeqOnly>(&sealed.content).ok()?.seq,
        };
        Some((seq, sealed.chain))
    }

    /// The number of a day file's first record (`None`: no whole line yet).
    fn first_seq(&self, path: &Path) -> Option<u64> {
        let file = File::open(path).ok()?;
        let mut line = Vec::new();
        BufReader::new(file)
            .take(segment::MAX_LINE_BYTES + 1)
            .read_until(b'\n', &mut line)
            .ok()?;
        if line.pop() != Some(b'\n') {
            return None;
        }
        self.seq_and_chain(std::str::from_utf8(&line).ok()?)
            .map(|(seq, _)| seq)
    }

    /// Where record `seq`'s line ends in `name`, and its chain value.
    fn find(&self, name: &str, seq: u64) -> std::io::Result<Option<(u64, Chain)>> {
        let file = match File::open(self.dir.join(name)) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut reader = BufReader::new(file);
        let mut buf = Vec::new();
        let mut end = 0u64;
        loop {
            buf.clear();
            let n = reader
                .by_ref()
                .take(segment::MAX_LINE_BYTES + 1)
                .read_until(b'\n', &mut buf)?;
            if n == 0 || buf.last() != Some(&b'\n') {
                return Ok(None);
            }
            end += n as u64;
            buf.pop();
            let Some((s, chain)) = std::str::from_utf8(&buf)
                .ok()
                .and_then(|t| self.seq_and_chain(t))
            else {
                continue;
            };
            if s == seq {
                return Ok(Some((end, chain)));
            }
            if s > seq {
                return Ok(None);
            }
        }
    }
}

#[derive(serde::Deserialize)]
struct SeqOnly {
    #[serde(default)]
    seq: u64,
}

/// A record's plain line: its JSON followed by its `chain` field, as a plain record's
/// line is written.
fn plain_line(r: &Record, chain: &Chain) -> String {
    let mut line = serde_json::to_string(r).unwrap_or_else(|_| "{}".into());
    line.pop();
    if line.len() > 1 {
        line.push(',');
    }
    line.push_str("\"chain\":\"");
    line.push_str(&record::chain_hex(chain));
    line.push_str("\"}");
    line
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::Kind;
    use crate::audit::{AuditConfig, Source, Trail};
    use jiff::Timestamp;

    fn at(day: u32, second: i64) -> Timestamp {
        let base: Timestamp = format!("2026-11-{day:02}T10:00:00Z").parse().unwrap();
        base + jiff::SignedDuration::from_secs(second)
    }

    fn auth(n: u64, t: Timestamp) -> Record {
        Record::new(Kind::Auth, Source::Live, t).user(&format!("user{n}"))
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        state: PathBuf,
        config: AuditConfig,
    }

    impl Fixture {
        fn new(encrypt: bool) -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            let state = dir.path().to_path_buf();
            Fixture {
                _dir: dir,
                state,
                config: AuditConfig {
                    encrypt,
                    // Flushed only when the test says so.
                    sync_interval_ms: 60_000,
                    ..AuditConfig::default()
                },
            }
        }

        fn trail(&self, now: Timestamp) -> Trail {
            Trail::open(&self.config, &self.state, now).unwrap()
        }

        fn follower(&self) -> Follower {
            let key = crate::audit::read_key(&self.config, &self.state).unwrap();
            Follower::new(&self.config.dir(&self.state), key)
        }
    }

    fn seqs(b: &Batch) -> Vec<u64> {
        b.records.iter().map(|f| f.record.seq).collect()
    }

    #[test]
    fn reads_in_order_across_days_up_to_the_flushed_head_only() {
        let f = Fixture::new(false);
        let mut trail = f.trail(at(1, 0));
        trail
            .append(&mut [auth(1, at(1, 1)), auth(2, at(1, 2))], at(1, 2))
            .unwrap();
        trail.sync().unwrap();
        // Written but not flushed: not read.
        let mut late = [auth(3, at(1, 3))];
        trail.append(&mut late, at(1, 3)).unwrap();
        let mut follower = f.follower();
        let b = follower.read(100).unwrap();
        // segment, 2 auths: the head is the last flushed (the 3rd auth waits).
        assert_eq!(seqs(&b), [1, 2, 3]);
        assert_eq!(b.head, 3);
        trail.sync().unwrap();
        // The next day starts a new file.
        trail.append(&mut [auth(4, at(2, 0))], at(2, 0)).unwrap();
        trail.sync().unwrap();
        let b = follower.read(2).unwrap();
        assert_eq!(seqs(&b), [4, 5]);
        let b = follower.read(100).unwrap();
        assert_eq!(seqs(&b), [6]);
        assert_eq!(b.records[0].record.kind, Kind::Auth);
        assert_eq!(b.records[0].place.file, "audit-2026-11-02.jsonl");
        assert_eq!(b.missing, 0);
        assert!(follower.read(100).unwrap().records.is_empty());
        // Each line is the trail's own.
        let text =
            std::fs::read_to_string(f.config.dir(&f.state).join("audit-2026-11-02.jsonl")).unwrap();
        assert_eq!(text.lines().last().unwrap(), b.records[0].line);
    }

    #[test]
    fn a_place_is_resumed_at_once_or_found_by_number() {
        let f = Fixture::new(true);
        let mut trail = f.trail(at(1, 0));
        for n in 1..=5 {
            trail
                .append(&mut [auth(n, at(1, n as i64))], at(1, n as i64))
                .unwrap();
        }
        trail.sync().unwrap();
        let mut first = f.follower();
        let b = first.read(3).unwrap();
        let place = b.records[2].place.clone();
        assert_eq!(place.seq, 3);
        // Encrypted records are handed on decrypted, with their chain.
        let line: serde_json::Value = serde_json::from_str(&b.records[1].line).unwrap();
        assert_eq!(line["user"], "user1");
        assert_eq!(line["chain"], record::chain_hex(&b.records[1].place.chain));
        let mut again = f.follower();
        assert_eq!(again.seek(&place).unwrap(), Sought::Resumed);
        assert_eq!(seqs(&again.read(100).unwrap()), [4, 5, 6]);
        // Without the file, by number.
        let mut by_number = f.follower();
        let loose = Place {
            file: String::new(),
            end: 0,
            ..place.clone()
        };
        assert_eq!(by_number.seek(&loose).unwrap(), Sought::Resumed);
        assert_eq!(seqs(&by_number.read(100).unwrap()), [4, 5, 6]);
        // Another chain under that number: the trail was replaced.
        let mut other = f.follower();
        let wrong = Place {
            chain: [9; 32],
            ..place.clone()
        };
        assert!(matches!(other.seek(&wrong).unwrap(), Sought::Replaced(_)));
        assert_eq!(seqs(&other.read(100).unwrap()), [1, 2, 3, 4, 5, 6]);
        // Past the trail's end.
        let beyond = Place {
            seq: 99,
            file: String::new(),
            ..place
        };
        let mut past = f.follower();
        assert!(matches!(past.seek(&beyond).unwrap(), Sought::Replaced(_)));
    }

    #[test]
    fn files_removed_before_they_were_read_are_counted_as_missing() {
        let f = Fixture::new(false);
        let mut trail = f.trail(at(1, 0));
        trail.append(&mut [auth(1, at(1, 1))], at(1, 1)).unwrap();
        trail.sync().unwrap();
        let mut follower = f.follower();
        let b = follower.read(1).unwrap();
        assert_eq!(seqs(&b), [1]);
        trail
            .append(&mut [auth(2, at(2, 0)), auth(3, at(2, 1))], at(2, 1))
            .unwrap();
        trail.append(&mut [auth(4, at(3, 0))], at(3, 0)).unwrap();
        trail.sync().unwrap();
        drop(trail);
        // Days 1 and 2 go (as retention would remove them) before they were read.
        let dir = f.config.dir(&f.state);
        std::fs::remove_file(dir.join("audit-2026-11-01.jsonl")).unwrap();
        std::fs::remove_file(dir.join("audit-2026-11-02.jsonl")).unwrap();
        let b = follower.read(100).unwrap();
        // Day 3: its segment record (6) and auth 4 (7); 2 to 5 are missing.
        assert_eq!(seqs(&b), [6, 7]);
        assert_eq!(b.missing, 4);
        assert!(
            b.notes.iter().any(|n| n.contains("records 2 to 5")),
            "{:?}",
            b.notes
        );
        // A place in a removed file: reading goes on at the trail's first.
        let mut late = f.follower();
        let place = Place {
            seq: 3,
            chain: [0; 32],
            file: "audit-2026-11-02.jsonl".into(),
            end: 10,
        };
        assert_eq!(late.seek(&place).unwrap(), Sought::Removed);
        let b = late.read(100).unwrap();
        assert_eq!(seqs(&b), [6, 7]);
        assert_eq!(b.missing, 2);
        // From the beginning, nothing is missing.
        let mut fresh = f.follower();
        let b = fresh.read(100).unwrap();
        assert_eq!((seqs(&b), b.missing), (vec![6, 7], 0));
    }

    #[test]
    fn a_line_being_written_is_not_read() {
        let f = Fixture::new(false);
        let mut trail = f.trail(at(1, 0));
        trail.append(&mut [auth(1, at(1, 1))], at(1, 1)).unwrap();
        trail.sync().unwrap();
        drop(trail);
        let path = f.config.dir(&f.state).join("audit-2026-11-01.jsonl");
        let mut text = std::fs::read(&path).unwrap();
        text.extend_from_slice(b"{\"seq\":3,\"time\":");
        std::fs::write(&path, &text).unwrap();
        let mut follower = f.follower();
        let b = follower.read(100).unwrap();
        assert_eq!(seqs(&b), [1, 2]);
        assert!(b.notes.is_empty(), "{:?}", b.notes);
        assert!(follower.read(100).unwrap().records.is_empty());
    }
}
