//! Appending to the trail: [`Trail`] owns the newest segment file and the chain; a
//! writer thread ([`spawn`]) takes records from the engine over a channel and appends
//! them in batches (what arrives within [`LINGER`]), each batch written with one
//! `write`, and flushed to disk (`fdatasync`) at most every `sync_interval_ms` and when
//! the writer goes idle; the verdict path never waits for the disk.
//!
//! Nothing handed to the writer is dropped: a batch that cannot be written (disk full)
//! is cut back to the last whole record, kept and retried every second, with an error
//! in the log (the first failure; then once a minute) and a counter, and the watcher
//! set with [`AuditSink::watch`] is told ([`Health`]: the server raises a critical
//! alert). Records handed over meanwhile wait in memory behind it. When writing works
//! again, a `recovered` record with action [`WRITE_GAP`] comes first: from when to when
//! writing failed and how many records waited. On shutdown, records that still cannot
//! be written are logged at error level, one by one, as the last place they can go.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, SyncSender, channel, sync_channel};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use jiff::Timestamp;
use jiff::civil::Date;

use super::config::AuditConfig;
use super::crypt::Crypt;
use super::record::{self, Chain, GENESIS, Kind, Record, Source};
use super::{key, segment};
use crate::persist::snapshot::{self, AuditHead};

/// Records written in one batch at most.
const BATCH: usize = 4096;

/// How long the writer waits between attempts while the disk refuses.
const RETRY: Duration = Duration::from_secs(1);

/// Failed attempts between two log lines while the disk keeps refusing (the first is
/// logged at once): about one a minute.
const LOG_EVERY: u64 = 60;

/// How long the writer sleeps between batches while records keep coming: under load
/// many records share one write and one fdatasync, and senders never wake the writer.
/// Records reach the disk at most about this much later (plus the disk's own time).
const LINGER: Duration = Duration::from_millis(5);

/// The newest segment and the chain's head.
pub struct Trail {
    dir: PathBuf,
    key: Vec<u8>,
    /// Reads encrypted records (always: the trail may hold some), and seals new ones
    /// when `encrypt` is on.
    crypt: Crypt,
    encrypt: bool,
    retention_days: u32,
    /// How often to fdatasync what was written (zero: after every batch).
    sync_interval: Duration,
    /// When the file was last flushed to disk, and whether it was written since.
    synced: (std::time::Instant, bool),
    /// Flush the next batch whatever the interval (after writing failed: the trail
    /// works again only once records and the head are on disk).
    flush_next: bool,
    /// The open segment: its day, file and length (of whole records).
    open: Option<(Date, File, u64)>,
    /// The last segment's name, open or not.
    last_file: Option<String>,
    /// The last record's sequence number (0 before the first).
    seq: u64,
    /// The last record's chain value.
    chain: Chain,
    /// Held while the trail is open: one writer at a time (the oracle or an ingest).
    _lock: nix::fcntl::Flock<File>,
    /// The lines of a batch, reused.
    buf: Vec<u8>,
    /// The head last written to `head.json`, for the state snapshot.
    head: Arc<SharedHead>,
}

/// The trail's head as last written to `head.json` (records flushed to disk), shared
/// with the state snapshot, which keeps a second copy of it outside the trail's
/// directory.
#[derive(Debug, Default)]
pub struct SharedHead {
    head: Mutex<Option<AuditHead>>,
    changed: AtomicBool,
}

impl SharedHead {
    fn set(&self, head: AuditHead) {
        *self.head.lock().unwrap_or_else(|e| e.into_inner()) = Some(head);
        self.changed.store(true, Ordering::Release);
    }

    /// The head last written (`None` before the trail was opened).
    pub fn get(&self) -> Option<AuditHead> {
        *self.head.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the head moved since the last call (and clears the flag).
    pub fn take_changed(&self) -> bool {
        self.changed.swap(false, Ordering::AcqRel)
    }
}

/// Why the trail cannot be opened.
#[derive(Debug, thiserror::Error)]
#[error("audit trail {dir}: {why}")]
pub struct OpenError {
    dir: String,
    why: String,
}

impl Trail {
    /// Opens the trail of `config` for appending: reads or creates the key, continues
    /// the chain from the newest segment's last record, repairs a last line cut off by a
    /// crash (recording what was dropped), checks the trail's end against `head.json`
    /// and against the audit head in the state snapshot of `state_dir` (recording, and
    /// logging at error level, records found missing), writes `head.json` and removes
    /// segments past retention.
    pub fn open(
        config: &AuditConfig,
        state_dir: &Path,
        now: Timestamp,
    ) -> Result<Trail, OpenError> {
        let dir = config.dir(state_dir);
        let err = |why: String| OpenError {
            dir: dir.display().to_string(),
            why,
        };
        let key = key::read_or_create(&config.key_file(state_dir)).map_err(&err)?;
        crate::files::create_private_dir(&dir)
            .map_err(|e| err(format!("cannot create it: {e}")))?;
        let lock = OpenOptions::new()
            .mode(crate::files::PRIVATE_FILE_MODE)
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(".lock"))
            .map_err(|e| err(format!("cannot create its lock file: {e}")))?;
        let lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusiveNonblock)
            .map_err(|(_, e)| {
                err(format!(
                    "another process is writing it (a running oracle, or an ingest): {e}"
                ))
            })?;
        let mut trail = Trail {
            dir: dir.clone(),
            crypt: Crypt::new(&key),
            encrypt: config.encrypt,
            key,
            retention_days: config.retention_days,
            sync_interval: Duration::from_millis(config.sync_interval_ms),
            synced: (std::time::Instant::now(), false),
            flush_next: false,
            open: None,
            last_file: None,
            seq: 0,
            chain: GENESIS,
            _lock: lock,
            buf: Vec::new(),
            head: Arc::default(),
        };
        trail.resume(now).map_err(err)?;
        trail.check_end(state_dir, now).map_err(err)?;
        publish_head(&trail.dir, &trail.key, &trail.head, trail.seq, &trail.chain)
            .map_err(|e| err(format!("cannot write the head file: {e}")))?;
        // A segment of an earlier day is closed: the next record starts today's. One of
        // a later day (the clock is behind it: it stepped back) stays open, so that the
        // files stay in the chain's order.
        if trail
            .open
            .as_ref()
            .is_some_and(|(day, _, _)| *day < segment::day_of(now))
        {
            trail.open = None;
        }
        if let Some(r) = trail.expire(now).map_err(|e| err(e.to_string()))? {
            trail
                .append(&mut [r], now)
                .map_err(|e| err(format!("cannot write: {e}")))?;
        }
        Ok(trail)
    }

    /// The last record's sequence number.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn resume(&mut self, now: Timestamp) -> Result<(), String> {
        let segments =
            segment::list(&self.dir).map_err(|e| format!("cannot list its segments: {e}"))?;
        let Some((day, path)) = segments.last() else {
            return Ok(());
        };
        let name = file_name(path);
        let tail = segment::tail(path).map_err(|e| format!("cannot read {name}: {e}"))?;
        let Some(line) = tail.last_line.as_deref() else {
            // Created, then stopped before its first record was whole: start it again.
            if tail.len > 0 {
                tracing::warn!(file = %name, bytes = tail.len, "audit segment holds only a cut-off record; starting it again");
            }
            std::fs::remove_file(path).map_err(|e| format!("cannot remove {name}: {e}"))?;
            if segments.len() > 1 {
                return self.resume(now);
            }
            return Ok(());
        };
        let damaged = |why: String| {
            format!(
                "{name} ends with a damaged record ({why}); the oracle does not append to a \
                 trail it cannot continue. Check it with `access-oracle audit verify`, then \
                 move the file aside to go on from the segment before it"
            )
        };
        let (unsealed, last) = record::read_line(line, Some(&self.crypt)).map_err(damaged)?;
        self.seq = last.seq;
        self.chain = unsealed.chain;
        self.last_file = Some(name.clone());
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| format!("cannot open {name}: {e}"))?;
        let whole = tail.len - tail.cut_bytes;
        if tail.cut_bytes > 0 {
            file.set_len(whole)
                .map_err(|e| format!("cannot cut the damaged end of {name}: {e}"))?;
        }
        self.open = Some((*day, file, whole));
        if tail.cut_bytes > 0 {
            tracing::warn!(file = %name, bytes = tail.cut_bytes, "audit segment ended with a record cut off by a crash; dropped and recorded");
            let mut r = Record::new(Kind::Recovered, Source::Oracle, now);
            r.through = Some(tail.cut_bytes);
            r.action = Some(PARTIAL_LINE.into());
            r.reason = Some(format!(
                "{} bytes after record {} of {name} were cut off (the oracle stopped while writing) and dropped",
                tail.cut_bytes, self.seq
            ));
            self.append(&mut [r], now)
                .map_err(|e| format!("cannot write to {name}: {e}"))?;
        }
        Ok(())
    }

    /// Records cut from the end (by hand: a crash only cuts what was not yet flushed,
    /// and the heads name flushed records only), a whole trail removed, or its head file
    /// removed or changed, would vanish without a trace once the chain goes on. The end
    /// is checked against two heads: `head.json` beside the segments and the copy in
    /// the state snapshot (outside the trail's directory). What does not agree is
    /// logged at error level and recorded (`recovered` records, which `verify` reports
    /// as problems) before anything else is written.
    fn check_end(&mut self, state_dir: &Path, now: Timestamp) -> Result<(), String> {
        let last = self.seq;
        let mut found: Vec<Record> = Vec::new();
        let recovered = |action: &str, reason: String| {
            let mut r = Record::new(Kind::Recovered, Source::Oracle, now);
            r.action = Some(action.into());
            r.reason = Some(reason);
            r
        };
        // The furthest record a head names, and which heads name it.
        let mut claimed: Option<(u64, Chain, Vec<&str>)> = None;
        let mut claim = |seq: u64, chain: Chain, by: &'static str| match &mut claimed {
            Some((s, _, by_all)) if *s == seq => by_all.push(by),
            Some((s, _, _)) if *s > seq => {}
            _ => claimed = Some((seq, chain, vec![by])),
        };
        match super::verify::read_head(&self.dir, &self.key) {
            Ok(Some((seq, chain))) => claim(seq, chain, "its head file"),
            Ok(None) if last > 0 => {
                tracing::error!(
                    dir = %self.dir.display(),
                    last_seq = last,
                    "the audit trail's head file is missing: it was removed; records cut from the end before now could not be noticed through it"
                );
                found.push(recovered(
                    HEAD_MISSING,
                    format!(
                        "the head file {} was missing (removed) with the trail at record {last}: records cut from its end before now cannot be told from it",
                        segment::HEAD_FILE
                    ),
                ));
            }
            Ok(None) => {}
            Err(b) => {
                tracing::error!(dir = %self.dir.display(), error = %b, "the audit trail's head file does not check");
                found.push(recovered(
                    HEAD_INVALID,
                    format!(
                        "the head file did not check ({}): it is written again",
                        b.why
                    ),
                ));
            }
        }
        match snapshot::read_header(state_dir) {
            Ok(Some(snapshot::Header {
                audit: Some(h),
                written,
                ..
            })) => {
                if record::check_head(&self.key, h.seq, &h.chain, &h.mac) {
                    claim(h.seq, h.chain, "the state snapshot");
                    if h.seq == last && h.seq > 0 && h.chain != self.chain {
                        tracing::error!(
                            seq = h.seq,
                            "the audit trail's last record is not the one the state snapshot names: the trail was replaced"
                        );
                        found.push(recovered(
                            RECORDS_MISSING,
                            format!(
                                "record {last} is not the record {} the state snapshot (written at {}) named: the trail was replaced",
                                h.seq,
                                fmt_secs(written)
                            ),
                        ));
                    }
                } else {
                    tracing::error!(
                        seq = h.seq,
                        "the audit head in the state snapshot does not check with the trail's key: the key was replaced or the snapshot changed"
                    );
                    found.push(recovered(
                        SNAPSHOT_HEAD_INVALID,
                        format!(
                            "the state snapshot (written at {}) names audit record {} with a MAC that does not check under this trail's key: the key was replaced, or the snapshot changed",
                            fmt_secs(written),
                            h.seq
                        ),
                    ));
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the audit head in the state snapshot")
            }
        }
        if let Some((head_seq, head_chain, by)) = claimed
            && head_seq > last
        {
            let by = by.join(" and ");
            tracing::error!(
                last_seq = last,
                head_seq,
                named_by = %by,
                "the audit trail ends before the record its heads name: records were cut from its end, or the trail was removed"
            );
            let mut r = recovered(
                RECORDS_MISSING,
                if last == 0 {
                    format!(
                        "the trail held no records, but {by} named record {head_seq}: records 1 to {head_seq} are missing (the trail was removed); a new chain starts here"
                    )
                } else {
                    format!(
                        "the trail ended at record {last} but {by} named record {head_seq}: records {} to {head_seq} are missing",
                        last + 1
                    )
                },
            );
            r.through = Some(head_seq);
            r.through_chain = Some(record::chain_hex(&head_chain));
            found.push(r);
        }
        if found.is_empty() {
            return Ok(());
        }
        self.append(&mut found, now)
            .map_err(|e| format!("cannot write: {e}"))
    }

    /// Appends `records` (setting their `seq` and `logged`), opening the day's segment
    /// first when a new day began. On an error nothing of the batch stays in the file
    /// and the chain is where it was.
    ///
    /// Segments only move forward: when the clock steps back into an earlier day, the
    /// records go on in the open segment (a segment holds what was written on its day
    /// or before, as `search` reads it), never into an earlier day's file, which would
    /// put them in the chain before records already written.
    pub fn append<R: std::borrow::BorrowMut<Record>>(
        &mut self,
        records: &mut [R],
        now: Timestamp,
    ) -> std::io::Result<()> {
        let today = segment::day_of(now);
        if self.open.as_ref().is_none_or(|(day, _, _)| *day < today) {
            self.start_segment(today, now)?;
        }
        self.write(records, now)
    }

    fn write<R: std::borrow::BorrowMut<Record>>(
        &mut self,
        records: &mut [R],
        now: Timestamp,
    ) -> std::io::Result<()> {
        let (_, file, len) = self.open.as_mut().expect("a segment is open");
        let mut seq = self.seq;
        let mut chain = self.chain;
        let buf = &mut self.buf;
        let crypt = self.encrypt.then_some(&self.crypt);
        buf.clear();
        for r in records.iter_mut() {
            let r = r.borrow_mut();
            seq += 1;
            r.seq = seq;
            r.logged = now;
            chain = record::seal_into(buf, r, &chain, &self.key, crypt);
            buf.push(b'\n');
        }
        let due = self.flush_next || self.synced.0.elapsed() >= self.sync_interval;
        let written = file
            .write_all(buf)
            .and_then(|()| if due { file.sync_data() } else { Ok(()) })
            .and_then(|()| {
                if due {
                    publish_head(&self.dir, &self.key, &self.head, seq, &chain)
                } else {
                    Ok(())
                }
            });
        if let Err(e) = written {
            // Leave no partial record behind: the batch is retried whole.
            let _ = file.set_len(*len);
            return Err(e);
        }
        *len += buf.len() as u64;
        self.seq = seq;
        self.chain = chain;
        self.synced = match due {
            true => (std::time::Instant::now(), false),
            false => (self.synced.0, true),
        };
        Ok(())
    }

    /// Flushes what was written and not yet on disk (when the writer goes idle, and at
    /// the end).
    pub fn sync(&mut self) -> std::io::Result<()> {
        if let (Some((_, file, _)), (_, true)) = (&self.open, self.synced) {
            file.sync_data()?;
            publish_head(&self.dir, &self.key, &self.head, self.seq, &self.chain)?;
            self.synced = (std::time::Instant::now(), false);
        }
        Ok(())
    }

    /// Opens the segment of `day` (a new file that starts with a `segment` record) and
    /// removes the segments past retention.
    fn start_segment(&mut self, day: Date, now: Timestamp) -> std::io::Result<()> {
        let name = segment::name(day);
        let path = self.dir.join(&name);
        let file = crate::files::private_append().open(&path)?;
        let len = file.metadata()?.len();
        File::open(&self.dir)?.sync_all()?;
        let prev_file = self.last_file.replace(name);
        self.open = Some((day, file, len));
        if len == 0 {
            let mut header = Record::new(Kind::Segment, Source::Oracle, now);
            header.prev_chain = Some(record::chain_hex(&self.chain));
            header.prev_file.clone_from(&prev_file);
            if let Err(e) = self.write(&mut [header], now) {
                // Not begun (a full disk): the next append begins it again, with its
                // segment record first, never records in a file without one.
                self.open = None;
                self.last_file = prev_file;
                return Err(e);
            }
        }
        match self.expire(now)? {
            Some(r) => self.write(&mut [r], now),
            None => Ok(()),
        }
    }

    /// Removes segments older than the retention (never the open one); returns the
    /// record that says so, to be written next.
    fn expire(&mut self, now: Timestamp) -> std::io::Result<Option<Record>> {
        let cutoff = segment::day_of(now)
            .checked_sub(jiff::Span::new().days(i64::from(self.retention_days)))
            .unwrap_or(Date::MIN);
        let open_day = self.open.as_ref().map(|(d, _, _)| *d);
        let expired: Vec<(Date, PathBuf)> = segment::list(&self.dir)?
            .into_iter()
            .filter(|(day, _)| *day < cutoff && Some(*day) != open_day)
            .collect();
        let Some((_, newest)) = expired.last() else {
            return Ok(None);
        };
        // The last record removed, so `verify` can tell removal from loss.
        let tail = segment::tail(newest)?;
        let last = tail
            .last_line
            .as_deref()
            .and_then(|l| record::read_line(l, Some(&self.crypt)).ok())
            .map(|(u, r)| (r.seq, u.chain));
        let mut removed = Vec::new();
        for (_, path) in &expired {
            std::fs::remove_file(path)?;
            removed.push(file_name(path));
        }
        tracing::info!(
            files = removed.len(),
            retention_days = self.retention_days,
            "audit segments past retention removed"
        );
        let mut r = Record::new(Kind::Retention, Source::Oracle, now);
        r.reason = Some(format!(
            "segments older than {} days removed",
            self.retention_days
        ));
        r.prev_file = removed.last().cloned();
        r.removed = removed;
        if let Some((seq, chain)) = last {
            r.through = Some(seq);
            r.through_chain = Some(record::chain_hex(&chain));
        }
        Ok(Some(r))
    }
}

/// Records the trail's head (after its records are on disk): the last record's number
/// and chain value, with a MAC, replaced atomically. `verify` then notices records cut
/// from the end, which the chain alone cannot show.
/// Then `shared` holds it too, for the next state snapshot.
fn publish_head(
    dir: &Path,
    key: &[u8],
    shared: &SharedHead,
    seq: u64,
    chain: &Chain,
) -> std::io::Result<()> {
    write_head(dir, key, seq, chain)?;
    shared.set(AuditHead {
        seq,
        chain: *chain,
        mac: record::head_mac(key, seq, chain),
    });
    Ok(())
}

/// Writes `head.json`.
fn write_head(dir: &Path, key: &[u8], seq: u64, chain: &Chain) -> std::io::Result<()> {
    let head = serde_json::json!({
        "seq": seq,
        "chain": record::chain_hex(chain),
        "mac": record::chain_hex(&record::head_mac(key, seq, chain)),
    });
    let tmp = dir.join(".head.json.tmp");
    crate::files::private_create()
        .open(&tmp)?
        .write_all(format!("{head}\n").as_bytes())?;
    std::fs::rename(&tmp, dir.join(segment::HEAD_FILE))
}

/// `recovered` records' actions: the end of a segment was a partial line (cut by a
/// crash before it was flushed; nothing acknowledged is lost). A note for `verify`.
pub const PARTIAL_LINE: &str = "partial_line";
/// Records named by a head (the head file, the state snapshot) are not in the trail.
pub const RECORDS_MISSING: &str = "records_missing";
/// The head file was missing from a trail with records.
pub const HEAD_MISSING: &str = "head_missing";
/// The head file's MAC did not check.
pub const HEAD_INVALID: &str = "head_invalid";
/// The state snapshot's audit head did not check under the trail's key.
pub const SNAPSHOT_HEAD_INVALID: &str = "snapshot_head_invalid";

/// `recovered` record's action: writing failed for a while and resumed; `time` is the
/// first failure, `until` when the first record was written again, `through` how many
/// records waited meanwhile (they follow it). Nothing was lost: a note for `verify`.
pub const WRITE_GAP: &str = "write_gap";

/// Seconds since the epoch as an RFC 3339 time (or the number, when out of range).
fn fmt_secs(secs: i64) -> String {
    Timestamp::from_second(secs).map_or_else(|_| secs.to_string(), |t| t.to_string())
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// What goes to the writer thread.
enum Message {
    Record(Box<Record>),
    /// Answered once everything sent before is written.
    Flush(SyncSender<()>),
    /// Write what is queued, then stop.
    Close,
}

/// What the writer says about its disk, to the watcher set with [`AuditSink::watch`].
#[derive(Debug, Clone, Copy)]
pub enum Health<'a> {
    /// Writing or flushing the trail failed; said at every failed attempt (about
    /// every second) while it lasts.
    Failing {
        /// The trail's directory.
        path: &'a Path,
        /// The error.
        error: &'a str,
        /// When.
        at: Timestamp,
    },
    /// Records are written again after failures (the [`WRITE_GAP`] record is written).
    Writing {
        /// The first failure.
        since: Timestamp,
        /// When writing worked again.
        at: Timestamp,
        /// Records that waited.
        waited: u64,
    },
}

/// Told about the writer's disk. Called on the writer's thread: it must not wait.
pub type Watcher = Arc<dyn Fn(Health<'_>) + Send + Sync>;

/// Counters of the writer, shared with `ctl status`.
#[derive(Debug, Default)]
pub struct AuditStats {
    /// Records handed to the writer.
    pub queued: AtomicU64,
    /// Records written.
    pub written: AtomicU64,
    /// Failed attempts to write a batch.
    pub write_errors: AtomicU64,
}

/// The engine's end: hands records to the writer, never waits for the disk.
#[derive(Clone)]
pub struct AuditSink {
    tx: Sender<Message>,
    stats: Arc<AuditStats>,
    backfill: bool,
    dir: Arc<Path>,
    head: Arc<SharedHead>,
    watcher: Arc<OnceLock<Watcher>>,
}

impl AuditSink {
    /// Hands a record to the writer. When the sink belongs to `access-oracle ingest`,
    /// every record is marked `ingest`: it comes from the backfilled history.
    pub fn record(&self, mut record: Record) {
        if self.backfill {
            record.source = Source::Ingest;
        }
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
        if self.tx.send(Message::Record(Box::new(record))).is_err() {
            // Only after `AuditWriter::close`: nothing records after shutdown.
            tracing::error!("audit record after the trail was closed");
        }
    }

    /// Waits until every record handed over before is written (or the writer stopped).
    pub fn flush(&self) {
        let (tx, rx) = sync_channel(1);
        if self.tx.send(Message::Flush(tx)).is_ok() {
            let _ = rx.recv();
        }
    }

    /// Has `watcher` told when writing fails and when it works again (once: a second
    /// watcher is ignored).
    pub fn watch(&self, watcher: Watcher) {
        let _ = self.watcher.set(watcher);
    }

    /// The writer's counters.
    pub fn stats(&self) -> &AuditStats {
        &self.stats
    }

    /// Where the trail is.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The trail's head as last written to `head.json` (flushed records only), for the
    /// state snapshot.
    pub fn head(&self) -> Option<AuditHead> {
        self.head.get()
    }

    /// Whether the head moved since the last call: the snapshot is then due even when
    /// nothing else it keeps changed.
    pub fn take_head_changed(&self) -> bool {
        self.head.take_changed()
    }

    /// The counters and the directory, for `ctl status`.
    pub fn status(&self) -> serde_json::Value {
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let (queued, written) = (n(&self.stats.queued), n(&self.stats.written));
        serde_json::json!({
            "dir": self.dir,
            "written": written,
            "waiting": queued.saturating_sub(written),
            "write_errors": n(&self.stats.write_errors),
        })
    }
}

/// The writer thread, to close on shutdown (dropping it closes it too).
pub struct AuditWriter {
    thread: Option<std::thread::JoinHandle<()>>,
    tx: Sender<Message>,
}

impl AuditWriter {
    /// Writes what is queued and stops the thread; records handed over later are
    /// refused (and logged).
    pub fn close(self) {
        drop(self);
    }
}

impl Drop for AuditWriter {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = self.tx.send(Message::Close);
            let _ = thread.join();
        }
    }
}

/// Starts the writer thread of `trail`. `backfill` marks log events as `ingest`.
pub fn spawn(trail: Trail, backfill: bool) -> (AuditSink, AuditWriter) {
    let (tx, rx) = channel();
    let stats = Arc::new(AuditStats::default());
    let dir: Arc<Path> = Arc::from(trail.dir.as_path());
    let head = trail.head.clone();
    let watcher: Arc<OnceLock<Watcher>> = Arc::default();
    let mut writer = Writer {
        trail,
        rx,
        stats: stats.clone(),
        watcher: watcher.clone(),
        batch: Vec::with_capacity(BATCH),
        waiting: Vec::new(),
        open: true,
        outage: None,
    };
    let thread = std::thread::Builder::new()
        .name("audit-writer".into())
        .spawn(move || writer.run())
        .expect("cannot start the audit writer thread");
    (
        AuditSink {
            tx: tx.clone(),
            stats,
            backfill,
            dir,
            head,
            watcher,
        },
        AuditWriter {
            thread: Some(thread),
            tx,
        },
    )
}

/// Writing has failed since `since`: what the [`WRITE_GAP`] record will say.
#[derive(Debug)]
struct Outage {
    since: Timestamp,
    failures: u64,
    error: String,
}

/// The writer thread's own state.
struct Writer {
    trail: Trail,
    rx: Receiver<Message>,
    stats: Arc<AuditStats>,
    watcher: Arc<OnceLock<Watcher>>,
    /// Records taken from the channel, not yet written. Kept boxed as they arrive:
    /// unboxing would copy each (perf showed it).
    #[allow(clippy::vec_box)]
    batch: Vec<Box<Record>>,
    /// Flushes to answer once the batch is written.
    waiting: Vec<SyncSender<()>>,
    /// False once `Close` was taken (or every sender is gone).
    open: bool,
    /// Set while writing fails.
    outage: Option<Outage>,
}

impl Writer {
    fn run(&mut self) {
        use std::sync::mpsc::TryRecvError;
        while self.open {
            // Idle: block until something arrives; while writing fails, only until the
            // next attempt (a failed flush is tried again even when nothing comes).
            if self.outage.is_some() {
                match self.rx.recv_timeout(RETRY) {
                    Ok(m) => self.take(m),
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => self.open = false,
                }
            } else {
                match self.rx.recv() {
                    Ok(m) => self.take(m),
                    Err(_) => self.open = false,
                }
            }
            // Busy: sleep LINGER, take what came meanwhile, write it; until a LINGER
            // passes with nothing. While the writer sleeps rather than waits on the
            // channel, a sender never has to wake it: handing over a record stays a few
            // atomic operations on the verdict's path, without a system call.
            loop {
                if self.open
                    && self.waiting.is_empty()
                    && self.batch.len() < BATCH
                    && self.outage.is_none()
                {
                    std::thread::sleep(LINGER);
                }
                // Whatever is queued; after Close, everything.
                while self.batch.len() < BATCH || !self.open {
                    match self.rx.try_recv() {
                        Ok(m) => self.take(m),
                        Err(TryRecvError::Empty) => break,
                        Err(TryRecvError::Disconnected) => {
                            self.open = false;
                            break;
                        }
                    }
                }
                if self.batch.is_empty() && self.waiting.is_empty() && self.outage.is_none() {
                    // Going idle: what was written goes to disk now.
                    if let Err(e) = self.trail.sync() {
                        self.failed(&e, "flush");
                    }
                    break;
                }
                // With an outage and nothing queued, the gap record alone tries the disk.
                self.write_batch();
                for w in self.waiting.drain(..) {
                    let _ = w.send(());
                }
                if !self.open {
                    let _ = self.trail.sync();
                    break;
                }
                if self.outage.is_some() {
                    // Given up for now (only when closing): back to waiting.
                    break;
                }
            }
        }
    }

    /// Takes one message; `Close` ends `open`.
    fn take(&mut self, m: Message) {
        match m {
            Message::Record(r) => self.batch.push(r),
            Message::Flush(w) => self.waiting.push(w),
            Message::Close => self.open = false,
        }
    }

    /// Records handed to the writer and not yet written.
    fn unwritten(&self) -> u64 {
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        n(&self.stats.queued).saturating_sub(n(&self.stats.written))
    }

    /// Writes the batch (after the gap record, when writing had failed), retrying
    /// every second while the disk refuses and taking what arrives meanwhile behind
    /// it; when closing, gives up after a few tries and logs the records instead.
    fn write_batch(&mut self) {
        if self.batch.is_empty() && self.outage.is_none() {
            return;
        }
        let mut tries = 0;
        loop {
            let now = Timestamp::now();
            let waited = self.unwritten();
            let gap = self.outage.as_ref().map(|o| gap_record(o, waited, now));
            let with_gap = gap.is_some();
            if let Some(r) = gap {
                self.batch.insert(0, Box::new(r));
                // Over only when the head can be written too: a write that fits in the
                // file's last block of a full disk is not the disk back.
                self.trail.flush_next = true;
            }
            // What waited during an outage is written a batch at a time.
            let n = self.batch.len().min(BATCH + usize::from(with_gap));
            match self.trail.append(&mut self.batch[..n], now) {
                Ok(()) => {
                    let handed = n - usize::from(with_gap);
                    self.stats
                        .written
                        .fetch_add(handed as u64, Ordering::Relaxed);
                    self.batch.drain(..n);
                    self.trail.flush_next = false;
                    if let Some(o) = self.outage.take() {
                        tracing::warn!(dir = %self.trail.dir.display(), since = %o.since,
                            failures = o.failures, waited,
                            "the audit trail is written again; a write_gap record says how long it was not");
                        self.tell(Health::Writing {
                            since: o.since,
                            at: now,
                            waited,
                        });
                    }
                    if self.batch.is_empty() {
                        return;
                    }
                    tries = 0;
                }
                Err(e) => {
                    if with_gap {
                        self.batch.remove(0);
                    }
                    tries += 1;
                    self.failed(&e, "write");
                    if !self.open && tries >= 5 {
                        for r in self.batch.drain(..) {
                            tracing::error!(record = %serde_json::to_string(&r).unwrap_or_default(), "audit record not written");
                        }
                        return;
                    }
                    self.wait_taking();
                }
            }
        }
    }

    /// Waits [`RETRY`], taking what arrives meanwhile (records behind the batch,
    /// flushes, `Close`), so that a shutdown is seen while the disk refuses.
    fn wait_taking(&mut self) {
        let until = std::time::Instant::now() + RETRY;
        loop {
            let left = until.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return;
            }
            match self.rx.recv_timeout(left) {
                Ok(m) => self.take(m),
                Err(RecvTimeoutError::Timeout) => return,
                Err(RecvTimeoutError::Disconnected) => {
                    self.open = false;
                    std::thread::sleep(left);
                    return;
                }
            }
        }
    }

    /// Counts a failed write or flush, logs it (the first of an outage at error level,
    /// then about once a minute) and tells the watcher.
    fn failed(&mut self, e: &std::io::Error, what: &str) {
        self.stats.write_errors.fetch_add(1, Ordering::Relaxed);
        let now = Timestamp::now();
        let error = e.to_string();
        let waiting = self.unwritten();
        let dir = self.trail.dir.display().to_string();
        match &mut self.outage {
            None => {
                tracing::error!(dir = %dir, error = %error, records_waiting = waiting,
                    "cannot {what} the audit trail; records wait in memory, tried again every second");
                self.outage = Some(Outage {
                    since: now,
                    failures: 1,
                    error: error.clone(),
                });
            }
            Some(o) => {
                o.failures += 1;
                o.error.clone_from(&error);
                if o.failures % LOG_EVERY == 0 {
                    tracing::error!(dir = %dir, error = %error, since = %o.since,
                        failures = o.failures, records_waiting = waiting,
                        "the audit trail still cannot be written");
                }
            }
        }
        let path = self.trail.dir.clone();
        self.tell(Health::Failing {
            path: &path,
            error: &error,
            at: now,
        });
    }

    fn tell(&self, health: Health<'_>) {
        if let Some(w) = self.watcher.get() {
            w(health);
        }
    }
}

/// The record that says writing failed from `o.since` to `now`, with `waited` records
/// waiting meanwhile.
fn gap_record(o: &Outage, waited: u64, now: Timestamp) -> Record {
    let mut r = Record::new(Kind::Recovered, Source::Oracle, o.since);
    r.action = Some(WRITE_GAP.into());
    r.until = Some(now);
    r.through = Some(waited);
    r.reason = Some(format!(
        "writing the trail failed from {} to {now} ({} failed attempts; the last: {}); {waited} records waited in memory and are written from here on",
        o.since,
        o.failures,
        crate::text::escape_controls(&o.error)
    ));
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Outcome;

    fn auth(i: usize) -> Record {
        let mut r = Record::new(Kind::Auth, Source::Live, Timestamp::now())
            .user(&format!("user{i}"))
            .ip(Some("192.0.2.1".parse().unwrap()));
        r.result = Some(Outcome::Ok);
        r
    }

    /// The head file's temporary name made a directory: every write of the head fails
    /// (as a full disk makes it fail) until it is removed.
    #[test]
    fn a_write_outage_is_told_recorded_as_a_gap_and_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let config = AuditConfig {
            dir: Some(d.join("audit")),
            key_file: Some(d.join("audit.key")),
            // Every batch is flushed and the head written with it.
            sync_interval_ms: 0,
            ..AuditConfig::default()
        };
        let trail = Trail::open(&config, d, Timestamp::now()).unwrap();
        let blocker = d.join("audit").join(".head.json.tmp");
        std::fs::create_dir(&blocker).unwrap();
        let (sink, writer) = spawn(trail, false);
        let (tx, told) = channel();
        let tx = Mutex::new(tx);
        sink.watch(Arc::new(move |h: Health<'_>| {
            let said = match h {
                Health::Failing { error, path, .. } => {
                    assert!(path.ends_with("audit"), "{}", path.display());
                    format!("failing: {error}")
                }
                Health::Writing { waited, since, at } => {
                    assert!(since <= at);
                    format!("writing: {waited}")
                }
            };
            let _ = tx.lock().unwrap().send(said);
        }));
        for i in 0..3 {
            sink.record(auth(i));
        }
        let wait = Duration::from_secs(10);
        let first = told.recv_timeout(wait).unwrap();
        assert!(first.starts_with("failing: "), "{first}");
        // Handed over while failing: they wait behind the first ones.
        for i in 3..5 {
            sink.record(auth(i));
        }
        // A retry fails again: told again (the engine alerts once), counted.
        assert!(told.recv_timeout(wait).unwrap().starts_with("failing: "));
        assert!(sink.stats().write_errors.load(Ordering::Relaxed) >= 2);
        assert_eq!(sink.stats().written.load(Ordering::Relaxed), 0);
        std::fs::remove_dir(&blocker).unwrap();
        sink.flush();
        assert_eq!(sink.stats().written.load(Ordering::Relaxed), 5);
        let said: Vec<String> = told.try_iter().collect();
        assert_eq!(
            said.iter().filter(|s| s.starts_with("writing")).count(),
            1,
            "{said:?}"
        );
        assert_eq!(said.last().map(String::as_str), Some("writing: 5"));
        writer.close();

        let v = super::super::verify::verify(
            &d.join("audit"),
            &key::read(&d.join("audit.key")).unwrap(),
        )
        .unwrap();
        assert!(v.complete(), "{:?}", v.problems);
        assert_eq!(v.records, 7, "segment, gap, five auth records");
        assert!(
            v.notes
                .iter()
                .any(|n| n.contains("writing the trail failed from")),
            "{:?}",
            v.notes
        );
        let segments = segment::list(&d.join("audit")).unwrap();
        let text = std::fs::read_to_string(&segments[0].1).unwrap();
        let records: Vec<Record> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let gap = &records[1];
        assert_eq!(gap.kind, Kind::Recovered);
        assert_eq!(gap.action.as_deref(), Some(WRITE_GAP));
        assert_eq!(gap.through, Some(5));
        assert!(gap.until.unwrap() >= gap.time && gap.logged >= gap.time);
        assert!(
            gap.reason.as_deref().unwrap().contains("5 records waited"),
            "{:?}",
            gap.reason
        );
        let users: Vec<&str> = records[2..]
            .iter()
            .map(|r| r.user.as_deref().unwrap())
            .collect();
        assert_eq!(users, ["user0", "user1", "user2", "user3", "user4"]);
    }

    /// Flushing when idle fails (the head cannot be written) while appending to the
    /// segment's last block would still work, as on a full disk: the outage lasts until
    /// records and the head are both written, so it is told once, not on and off.
    #[test]
    fn an_append_without_its_head_does_not_end_an_outage() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let config = AuditConfig {
            dir: Some(d.join("audit")),
            key_file: Some(d.join("audit.key")),
            sync_interval_ms: 60_000,
            ..AuditConfig::default()
        };
        let trail = Trail::open(&config, d, Timestamp::now()).unwrap();
        let blocker = d.join("audit").join(".head.json.tmp");
        std::fs::create_dir(&blocker).unwrap();
        let (sink, writer) = spawn(trail, false);
        let (tx, told) = channel();
        let tx = Mutex::new(tx);
        sink.watch(Arc::new(move |h: Health<'_>| {
            let said = match h {
                Health::Failing { .. } => "failing".to_string(),
                Health::Writing { waited, .. } => format!("writing: {waited}"),
            };
            let _ = tx.lock().unwrap().send(said);
        }));
        // Written to the file; the flush when the writer goes idle fails.
        sink.record(auth(0));
        let wait = Duration::from_secs(10);
        assert_eq!(told.recv_timeout(wait).unwrap(), "failing");
        assert_eq!(sink.stats().written.load(Ordering::Relaxed), 1);
        sink.record(auth(1));
        sink.record(auth(2));
        // Their appends would fit, but each attempt flushes and writes the head: fails.
        assert_eq!(told.recv_timeout(wait).unwrap(), "failing");
        assert_eq!(told.recv_timeout(wait).unwrap(), "failing");
        assert_eq!(sink.stats().written.load(Ordering::Relaxed), 1);
        std::fs::remove_dir(&blocker).unwrap();
        sink.flush();
        let said: Vec<String> = told.try_iter().collect();
        assert_eq!(
            said.iter().filter(|s| s.starts_with("writing")).count(),
            1,
            "{said:?}"
        );
        assert_eq!(said.last().map(String::as_str), Some("writing: 2"));
        assert_eq!(sink.stats().written.load(Ordering::Relaxed), 3);
        writer.close();
        let v = super::super::verify::verify(
            &d.join("audit"),
            &key::read(&d.join("audit.key")).unwrap(),
        )
        .unwrap();
        assert!(v.complete(), "{:?}", v.problems);
        assert_eq!(v.records, 5, "segment, auth, gap, two auth records");
    }

    /// A close while the disk refuses ends within a few tries: the records are logged.
    #[test]
    fn closing_while_writes_fail_does_not_hang() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let config = AuditConfig {
            dir: Some(d.join("audit")),
            key_file: Some(d.join("audit.key")),
            sync_interval_ms: 0,
            ..AuditConfig::default()
        };
        let trail = Trail::open(&config, d, Timestamp::now()).unwrap();
        std::fs::create_dir(d.join("audit").join(".head.json.tmp")).unwrap();
        let (sink, writer) = spawn(trail, false);
        sink.record(auth(0));
        let started = std::time::Instant::now();
        writer.close();
        assert!(started.elapsed() < Duration::from_secs(15));
        assert_eq!(sink.stats().written.load(Ordering::Relaxed), 0);
    }
}
