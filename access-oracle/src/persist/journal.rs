//! The state journal: every change the snapshot keeps (a failure counted, recipients
//! counted, a hold, a block, a release, a baseline learnt, a familiar network), appended
//! as it is made, so that `kill -9` at any moment loses nothing the oracle acknowledged.
//! At start the snapshot is read, then the journal's files are replayed on top of it.
//!
//! **Nothing on the verdict's path waits for a disk.** A change is copied into a
//! memory-mapped, shared file ([`access_map::AppendMap`]) before the verdict is sent:
//! no system call; the copy is in the kernel's page cache and survives the death of the
//! process. A thread of its own flushes it to disk (`msync`) every `journal_flush_ms`
//! (default 1,000): a power cut loses at most that much.
//!
//! **Files.** `state.journal.<generation>` in the state directory, each made whole
//! ([`FILE_BYTES`], reserved on disk at once; on a filesystem short of space a quarter
//! or a sixteenth of it) and filled from the start; zeros follow
//! the last record. A file that fills up is followed by the next generation, made ahead
//! by the flushing thread. Each snapshot starts a new generation and records in its
//! header the generation and the last sequence number before it ([`Mark`]); once the
//! snapshot is on disk, older generations are removed. A start replays, in order, every
//! generation from the snapshot's on, each record whose number is above the mark, then
//! opens a new generation (the replayed files stay until the next snapshot holds what
//! they hold).
//!
//! **Format.** The line `exim-access journal 1\n`, then records, then zeros:
//!
//! ```text
//! u32 length of the payload        little endian
//! u32 CRC-32 of sequence and payload
//! u64 sequence number              one counter for the whole oracle, never reused
//! payload                          postcard Entry
//! ```
//!
//! **Damage.** A record that is cut short (a file truncated) ends that file's replay:
//! what came before it is applied. A record that does not match its checksum (a copy
//! cut off by the process's death: never one that was acknowledged; a damaged disk) is
//! skipped when its length still leads to a whole record (or the end), and the records
//! after it are applied; otherwise it ends the file too. Each error names the file and
//! the byte offset, and the file is moved aside (`<name>.bad-<UTC time>`, e.g.
//! `state.journal.0000000007.bad-20261203T101500Z`) for inspection. The other files
//! are still replayed.
//!
//! **A full disk.** A file's space is reserved when it is made, so appending never fails
//! for want of space: a full disk shows when the next file cannot be made. Until it can
//! (the flushing thread and each snapshot try again), changes that find the current file
//! full are lost from the journal ([`Status::lost`]) and live in memory only; verdicts
//! go on, and housekeeping raises the alert. The journal is whole again
//! ([`Status::incomplete`] cleared) once a snapshot written after the loss is on disk.
//!
//! **Order.** A change is appended while the entry it changes is locked, and sequence
//! numbers are taken under the journal's own lock, so one entry's records are in the
//! order of its changes. Account and address records are skipped at replay when the
//! snapshot already holds them (the entry's number, kept in the snapshot); the others
//! are written whole and replaying one again changes nothing.

use std::cell::RefCell;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use access_map::AppendMap;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::snapshot::{self, StoredBlock, StoredHold, StoredHoldInfo};
use crate::state::blocks::Past;
use crate::state::journal::{Change, Journal};
use crate::state::{Baseline, Block, DedupWindow, DistinctWindow, HoldInfo, Secs, State};

/// The start of every journal file's name.
pub const PREFIX: &str = "state.journal.";

/// The first line of every journal file.
pub const MAGIC: &[u8] = b"exim-access journal 1\n";

/// Bytes before a record's payload: length, checksum, sequence number.
const FRAME: usize = 16;

/// The longest payload read (a baseline is a few hundred bytes).
const MAX_PAYLOAD: u32 = 4 << 20;

/// Where a snapshot stands in the journal: it holds every change numbered up to `seq`,
/// and the journal's files from generation `generation` on hold the changes after it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mark {
    /// The first generation to replay.
    pub generation: u64,
    /// The last change the snapshot holds.
    pub seq: u64,
}

/// One change as written.
#[derive(Debug, Serialize)]
enum EntryRef<'a> {
    Account {
        user: &'a str,
        failures: Vec<(Secs, Option<u64>)>,
        #[serde(borrow)]
        hold: Option<StoredHold<'a>>,
        info: Option<StoredHoldInfo<'a>>,
        throttle: Option<StoredHold<'a>>,
        rcpts_cleared: bool,
    },
    Rcpts {
        user: &'a str,
        at: Secs,
        n: u32,
    },
    Ip {
        ip: IpAddr,
        failures: Vec<(Secs, Option<u64>)>,
        distinct: &'a [(u64, Secs)],
    },
    Baseline(&'a str, &'a Baseline),
    Familiar(&'a str, &'a [(IpNet, Secs)]),
    Net {
        net: IpNet,
        block: Option<StoredBlock<'a>>,
        past: Option<Past>,
    },
}

/// One change as read back.
#[derive(Debug, Deserialize)]
enum Entry<'a> {
    Account {
        user: &'a str,
        failures: Vec<(Secs, Option<u64>)>,
        #[serde(borrow)]
        hold: Option<StoredHold<'a>>,
        #[serde(borrow)]
        info: Option<StoredHoldInfo<'a>>,
        #[serde(borrow)]
        throttle: Option<StoredHold<'a>>,
        rcpts_cleared: bool,
    },
    Rcpts {
        user: &'a str,
        at: Secs,
        n: u32,
    },
    Ip {
        ip: IpAddr,
        failures: Vec<(Secs, Option<u64>)>,
        distinct: Vec<(u64, Secs)>,
    },
    Baseline(&'a str, Baseline),
    Familiar(&'a str, Vec<(IpNet, Secs)>),
    Net {
        net: IpNet,
        #[serde(borrow)]
        block: Option<StoredBlock<'a>>,
        past: Option<Past>,
    },
}

fn entry_of<'a>(change: &Change<'a>) -> EntryRef<'a> {
    match *change {
        Change::Account {
            user,
            account,
            rcpts_cleared,
        } => EntryRef::Account {
            user,
            failures: account
                .rules
                .failed_logins_account
                .failures
                .entries()
                .collect(),
            hold: account.hold.as_ref().map(snapshot::stored),
            info: account.hold_info.as_deref().map(snapshot::stored_info),
            throttle: account.throttle.as_ref().map(snapshot::stored),
            rcpts_cleared,
        },
        Change::Rcpts { user, at, n } => EntryRef::Rcpts { user, at, n },
        Change::Ip { ip, record } => EntryRef::Ip {
            ip,
            failures: record.rules.failed_logins_ip.failures.entries().collect(),
            distinct: record.rules.password_spraying.accounts.exact(),
        },
        Change::Baseline { user, baseline } => EntryRef::Baseline(user, baseline),
        Change::Familiar { user, list } => EntryRef::Familiar(user, list),
        Change::Net { net, block, past } => EntryRef::Net {
            net,
            block: block.map(|b| snapshot::stored_block(b, None)),
            past,
        },
    }
}

/// The file name of generation `g`.
pub fn file_name(g: u64) -> String {
    format!("{PREFIX}{g:010}")
}

/// The generation a file name names (`None`: not a journal file, or one set aside).
pub fn generation_of(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(PREFIX)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Every journal file in `dir`, by generation.
pub fn files(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut v = Vec::new();
    for e in fs::read_dir(dir)? {
        let e = e?;
        if let Some(g) = e.file_name().to_str().and_then(generation_of) {
            v.push((g, e.path()));
        }
    }
    v.sort();
    Ok(v)
}

/// What the journal reports about itself (`ctl status`, metrics, housekeeping).
#[derive(Debug, Default)]
pub struct Status {
    /// Changes appended.
    pub appended: AtomicU64,
    /// Bytes appended.
    pub bytes: AtomicU64,
    /// Changes not kept because appending failed (held in memory only).
    pub lost: AtomicU64,
    /// Flushes to disk done.
    pub flushes: AtomicU64,
    /// Appends or flushes that failed.
    pub errors: AtomicU64,
    /// Appending failed and has not resumed (the flushing thread and each snapshot try
    /// to make a file again).
    pub failed: AtomicBool,
    /// Changes were lost since the last snapshot written (which holds everything before
    /// it): until the next one is, a crash loses them.
    pub incomplete: AtomicBool,
    /// The last failure, for the report: the file and the error.
    pub last_error: Mutex<Option<(PathBuf, String)>>,
}

/// Bytes of one journal file: a file that fills up is followed by the next
/// generation (the replay reads every generation in order).
pub const FILE_BYTES: usize = 1 << 20;

/// One journal file, mapped.
#[derive(Debug)]
struct Segment {
    generation: u64,
    path: PathBuf,
    map: Arc<AppendMap>,
}

/// The file being appended to, and the next one, made ahead.
#[derive(Debug)]
struct Open {
    /// `None`: no file could be made; nothing is appended until one is.
    current: Option<Segment>,
    /// The generation of the current file (or of the last one, when there is none).
    generation: u64,
    /// The highest generation handed out to be made: each file is made by one thread
    /// only, under a number nobody else makes (numbers may be skipped, never reused).
    allocated: u64,
    /// The next generation's file, made ahead by the flushing thread so that a file
    /// filling up, or a snapshot starting, never waits for one to be made.
    spare: Option<Segment>,
    /// The last sequence number given.
    seq: u64,
    /// How far the current file was flushed.
    flushed: usize,
    /// Files left for the next (flushed, then dropped by the flushing thread).
    retired: Vec<(Arc<AppendMap>, usize)>,
    /// Changes lost before the last rotation (the snapshot after it holds them).
    lost_at_rotation: u64,
    /// The sequence number at the last rotation (or at the start).
    seq_at_rotation: u64,
}

/// The journal of a running oracle.
#[derive(Debug)]
pub struct JournalFile {
    dir: PathBuf,
    open: Mutex<Open>,
    /// One rotation at a time (the minute's snapshot and the last one at shutdown).
    rotating: Mutex<()>,
    status: Arc<Status>,
    /// Bytes of each file.
    file_bytes: usize,
    /// Wakes the flusher early: (stop, make the next file now).
    stop: Arc<(Mutex<(bool, bool)>, Condvar)>,
}

thread_local! {
    /// Each thread encodes its records here, outside the journal's lock.
    static BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

impl JournalFile {
    /// Opens generation `generation` (a new file) in `dir`, numbering changes after
    /// `seq`, and starts the thread that flushes it every `flush_every` (and makes the
    /// next file ahead). A file that cannot be made is reported in the status; the
    /// oracle goes on without journaling until one can (at the next snapshot, or when
    /// the flushing thread manages).
    pub fn open(dir: &Path, generation: u64, seq: u64, flush_every: Duration) -> Arc<JournalFile> {
        JournalFile::open_sized(dir, generation, seq, flush_every, FILE_BYTES)
    }

    /// [`JournalFile::open`] with files of `file_bytes` (tests).
    pub fn open_sized(
        dir: &Path,
        generation: u64,
        seq: u64,
        flush_every: Duration,
        file_bytes: usize,
    ) -> Arc<JournalFile> {
        let status = Arc::new(Status::default());
        let file_bytes = file_bytes.max(MAGIC.len() + 4096);
        let current = match create(dir, generation, file_bytes) {
            Ok(s) => Some(s),
            Err((path, e)) => {
                fail(&status, &path, &e);
                None
            }
        };
        let journal = Arc::new(JournalFile {
            dir: dir.to_path_buf(),
            open: Mutex::new(Open {
                current,
                generation,
                allocated: generation,
                spare: None,
                seq,
                flushed: 0,
                retired: Vec::new(),
                lost_at_rotation: 0,
                seq_at_rotation: seq,
            }),
            rotating: Mutex::new(()),
            status,
            file_bytes,
            stop: Arc::new((Mutex::new((false, false)), Condvar::new())),
        });
        journal.make_spare();
        let flusher = Arc::downgrade(&journal);
        let stop = journal.stop.clone();
        let spawned = std::thread::Builder::new()
            .name("journal-flush".into())
            .spawn(move || flush_loop(flusher, stop, flush_every.max(Duration::from_millis(10))));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the journal's flushing thread: the journal is flushed at each snapshot only");
        }
        journal
    }

    /// The journal's counters.
    pub fn status(&self) -> &Arc<Status> {
        &self.status
    }

    /// Changes appended since the last snapshot began (or since the start): what a
    /// restart would replay.
    pub fn since_snapshot(&self) -> u64 {
        let open = self.lock();
        open.seq - open.seq_at_rotation
    }

    /// The file being appended to and how far its data goes (the file itself is made
    /// whole at once: zeros follow); `None` while no file could be made.
    pub fn current(&self) -> Option<(PathBuf, u64)> {
        let open = self.lock();
        let seg = open.current.as_ref()?;
        Some((seg.path.clone(), seg.map.len() as u64))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes the next generation's file ahead, when there is none (outside the lock:
    /// appends go on meanwhile).
    fn make_spare(&self) {
        let next = {
            let mut open = self.lock();
            if open.spare.is_some() {
                return;
            }
            open.allocated += 1;
            open.allocated
        };
        match create(&self.dir, next, self.file_bytes) {
            Ok(seg) => {
                let mut open = self.lock();
                if open.spare.is_none() && next > open.generation {
                    open.spare = Some(seg);
                } else {
                    drop(open);
                    // Someone moved on meanwhile: this one is of no use.
                    let _ = fs::remove_file(&seg.path);
                }
            }
            // Not yet a loss: the current file goes on taking changes; counted, and
            // tried again at the next flush.
            Err((path, e)) => {
                self.status.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(file = %path.display(), error = %e,
                    "cannot make the next journal file ahead; tried again at the next flush");
            }
        }
    }

    /// Moves to the next generation: the spare file, or a new one made now (outside the
    /// lock, which `open` is released for). Returns false when none could be made; that
    /// is a failure of the journal (`losing`: changes are lost until a file is made) or
    /// only counted (a snapshot's rotation: the current file goes on).
    fn advance<'a>(
        &'a self,
        mut open: std::sync::MutexGuard<'a, Open>,
        losing: bool,
    ) -> (std::sync::MutexGuard<'a, Open>, bool) {
        loop {
            let seg = match open.spare.take() {
                Some(s) if s.generation > open.generation => s,
                other => {
                    if let Some(stale) = other {
                        let _ = fs::remove_file(&stale.path);
                    }
                    open.allocated += 1;
                    let next = open.allocated;
                    drop(open);
                    let made = create(&self.dir, next, self.file_bytes);
                    open = self.lock();
                    match made {
                        Ok(s) if next > open.generation => s,
                        Ok(s) => {
                            // Moved on meanwhile: try again from there.
                            let _ = fs::remove_file(&s.path);
                            continue;
                        }
                        Err((path, e)) if losing || open.current.is_none() => {
                            fail(&self.status, &path, &e);
                            return (open, false);
                        }
                        Err((path, e)) => {
                            self.status.errors.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(file = %path.display(), error = %e,
                                "cannot start the next journal file for the snapshot: the current one goes on");
                            return (open, false);
                        }
                    }
                }
            };
            let next = seg.generation;
            let flushed = std::mem::take(&mut open.flushed);
            if let Some(old) = open.current.replace(seg) {
                open.retired.push((old.map, flushed));
            }
            open.generation = next;
            if self.status.failed.swap(false, Ordering::Relaxed) {
                tracing::info!(file = %self.dir.join(file_name(next)).display(),
                    "the state journal is written again");
            }
            return (open, true);
        }
    }

    /// Starts the next generation, for a snapshot about to be written: returns the mark
    /// the snapshot records. The files left are flushed to disk first. When no file can
    /// be made, the mark names the current one (replayed from the mark's number on).
    pub fn rotate(&self) -> Mark {
        let _one = self.rotating.lock().unwrap_or_else(|e| e.into_inner());
        let (mut open, _) = self.advance(self.lock(), false);
        open.lost_at_rotation = self.status.lost.load(Ordering::Relaxed);
        open.seq_at_rotation = open.seq;
        let mark = Mark {
            generation: open.generation,
            seq: open.seq,
        };
        let retired = std::mem::take(&mut open.retired);
        drop(open);
        self.flush_retired(retired);
        self.make_spare();
        mark
    }

    fn flush_retired(&self, retired: Vec<(Arc<AppendMap>, usize)>) {
        for (map, from) in retired {
            match map.flush(from) {
                Ok(_) => {
                    self.status.flushes.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    self.status.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "cannot flush a previous journal file");
                }
            }
        }
    }

    /// Removes the files before `mark`'s generation: a snapshot holding what they hold
    /// is on disk.
    pub fn forget_before(&self, mark: Mark) {
        forget_before(&self.dir, mark);
    }

    /// The snapshot begun at `mark` (by [`JournalFile::rotate`]) is on disk: the older
    /// files go, and changes lost before the rotation are no longer missing (the
    /// snapshot holds them).
    pub fn snapshot_written(&self, mark: Mark) {
        self.forget_before(mark);
        let open = self.lock();
        if self.status.lost.load(Ordering::Relaxed) == open.lost_at_rotation
            && self.status.incomplete.swap(false, Ordering::Relaxed)
        {
            tracing::info!("the state journal is whole again: the snapshot holds what it lost");
        }
    }

    /// Flushes what was appended to disk now, and makes the next file ahead if needed.
    pub fn flush(&self) {
        let (current, from, retired) = {
            let mut open = self.lock();
            let retired = std::mem::take(&mut open.retired);
            let current = open.current.as_ref().map(|s| s.map.clone());
            (current, open.flushed, retired)
        };
        self.flush_retired(retired);
        if let Some(map) = current
            && map.len() > from
        {
            match map.flush(from) {
                Ok(to) => {
                    self.status.flushes.fetch_add(1, Ordering::Relaxed);
                    let mut open = self.lock();
                    if open
                        .current
                        .as_ref()
                        .is_some_and(|s| Arc::ptr_eq(&s.map, &map))
                    {
                        open.flushed = open.flushed.max(to);
                    }
                }
                Err(e) => {
                    self.status.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(error = %e, "cannot flush the state journal to disk");
                }
            }
        }
        self.make_spare();
        // A journal that lost changes (no file, or a full one and no next) tries again
        // here, off the verdicts' path.
        if self.status.failed.load(Ordering::Relaxed) {
            let (open, _) = self.advance(self.lock(), true);
            drop(open);
        }
    }

    /// Flushes and stops the flushing thread (at shutdown).
    pub fn close(&self) {
        self.flush();
        let (lock, cv) = &*self.stop;
        lock.lock().unwrap_or_else(|e| e.into_inner()).0 = true;
        cv.notify_all();
    }

    /// Asks the flushing thread to make the next file now (one was just used up).
    fn want_spare(&self) {
        let (lock, cv) = &*self.stop;
        lock.lock().unwrap_or_else(|e| e.into_inner()).1 = true;
        cv.notify_all();
    }
}

impl Journal for JournalFile {
    fn append(&self, change: Change<'_>) -> u64 {
        BUF.with(|buf| {
            let mut buf = match buf.try_borrow_mut() {
                Ok(b) => b,
                // Not reached (appending never appends); a fresh buffer if it were.
                Err(_) => return self.append_in(&mut Vec::new(), &change),
            };
            self.append_in(&mut buf, &change)
        })
    }
}

impl JournalFile {
    fn append_in(&self, buf: &mut Vec<u8>, change: &Change<'_>) -> u64 {
        buf.clear();
        buf.resize(FRAME, 0);
        let taken = std::mem::take(buf);
        *buf = match postcard::to_extend(&entry_of(change), taken) {
            Ok(b) => b,
            Err(e) => {
                // Every field is plain data: encoding does not fail. Were it to,
                // the change is counted as lost, not the oracle.
                self.status.lost.fetch_add(1, Ordering::Relaxed);
                self.status.incomplete.store(true, Ordering::Relaxed);
                tracing::error!(error = %e, "cannot encode a journal record");
                return 0;
            }
        };
        let payload = (buf.len() - FRAME) as u32;
        if buf.len() > self.file_bytes - MAGIC.len() {
            // Larger than a whole file (no change is: a baseline is a few hundred bytes):
            // lost, rather than a new file for nothing.
            self.status.lost.fetch_add(1, Ordering::Relaxed);
            self.status.incomplete.store(true, Ordering::Relaxed);
            tracing::error!(
                bytes = buf.len(),
                "a journal record larger than a journal file"
            );
            return 0;
        }
        let mut open = self.lock();
        let seq = open.seq + 1;
        buf[0..4].copy_from_slice(&payload.to_le_bytes());
        buf[8..16].copy_from_slice(&seq.to_le_bytes());
        let mut h = crc32fast::Hasher::new();
        h.update(&buf[8..]);
        buf[4..8].copy_from_slice(&h.finalize().to_le_bytes());
        let mut appended = open.current.as_ref().and_then(|s| s.map.append(buf));
        if appended.is_none()
            && open.current.is_some()
            && !self.status.failed.load(Ordering::Relaxed)
        {
            // The file is full: on to the next (made ahead, normally). After a failure
            // the flushing thread tries, not every verdict.
            let (again, moved) = self.advance(open, true);
            open = again;
            if moved {
                appended = open.current.as_ref().and_then(|s| s.map.append(buf));
                self.want_spare();
            }
        }
        if appended.is_none() {
            self.status.lost.fetch_add(1, Ordering::Relaxed);
            self.status.incomplete.store(true, Ordering::Relaxed);
            return 0;
        }
        open.seq = seq;
        drop(open);
        self.status.appended.fetch_add(1, Ordering::Relaxed);
        self.status
            .bytes
            .fetch_add(buf.len() as u64, Ordering::Relaxed);
        seq
    }
}

/// Removes the journal files in `dir` before `mark`'s generation (a snapshot holding
/// what they hold is on disk).
pub fn forget_before(dir: &Path, mark: Mark) {
    match files(dir) {
        Ok(list) => {
            for (g, path) in list {
                if g < mark.generation
                    && let Err(e) = fs::remove_file(&path)
                {
                    tracing::warn!(file = %path.display(), error = %e, "cannot remove an old journal file");
                }
            }
        }
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot list the journal files")
        }
    }
}

/// Makes generation `g`'s file in `dir`: its first line written and flushed, its whole
/// size reserved on disk (a full disk fails here, never during an append), mapped.
fn create(dir: &Path, g: u64, bytes: usize) -> Result<Segment, (PathBuf, std::io::Error)> {
    let path = dir.join(file_name(g));
    // A new file, never one that is there (whoever made it owns it).
    let mut f = match fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(crate::files::PRIVATE_FILE_MODE)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) => return Err((path, e)),
    };
    let made = (|| {
        f.write_all(MAGIC)?;
        // As much as the disk has, down to a sixteenth: a small filesystem still holds
        // a journal, in smaller files.
        let mut size = bytes;
        let map = loop {
            match AppendMap::create(f.try_clone()?, size, MAGIC.len()) {
                Ok(map) => break map,
                Err(e)
                    if e.kind() == std::io::ErrorKind::StorageFull
                        && size / 4 >= (bytes / 16).max(MIN_FILE_BYTES) =>
                {
                    size /= 4;
                    f.set_len(MAGIC.len() as u64)?;
                }
                Err(e) => return Err(e),
            }
        };
        map.flush(0)?;
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(map)
    })();
    match made {
        Ok(map) => Ok(Segment {
            generation: g,
            path,
            map: Arc::new(map),
        }),
        Err(e) => {
            let _ = fs::remove_file(&path);
            Err((path, e))
        }
    }
}

/// The smallest journal file made on a filesystem short of space.
const MIN_FILE_BYTES: usize = 64 << 10;

/// Records a failure to make `path` (or to write it).
fn fail(status: &Status, path: &Path, e: &std::io::Error) {
    status.errors.fetch_add(1, Ordering::Relaxed);
    let first = !status.failed.swap(true, Ordering::Relaxed);
    *status.last_error.lock().unwrap_or_else(|p| p.into_inner()) =
        Some((path.to_path_buf(), e.to_string()));
    if first {
        tracing::error!(file = %path.display(), error = %e,
            "cannot write the state journal: changes are kept in memory only until a journal file can be made (tried every flush and at each snapshot)");
    }
}

fn flush_loop(
    journal: std::sync::Weak<JournalFile>,
    stop: Arc<(Mutex<(bool, bool)>, Condvar)>,
    every: Duration,
) {
    let (lock, cv) = &*stop;
    loop {
        let spare_only = {
            let flags = lock.lock().unwrap_or_else(|e| e.into_inner());
            let (mut flags, waited) = cv
                .wait_timeout_while(flags, every, |(stop, spare)| !*stop && !*spare)
                .unwrap_or_else(|e| e.into_inner());
            if flags.0 {
                return;
            }
            let spare = std::mem::take(&mut flags.1);
            spare && !waited.timed_out()
        };
        match journal.upgrade() {
            Some(j) if spare_only => j.make_spare(),
            Some(j) => j.flush(),
            None => return,
        }
    }
}

/// What a replay did.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Replayed {
    /// Files read.
    pub files: u64,
    /// Records read.
    pub records: u64,
    /// Records applied (the others the snapshot already held).
    pub applied: u64,
    /// The highest generation found (0: none).
    pub last_generation: u64,
    /// The highest sequence number found (or the mark's).
    pub last_seq: u64,
    /// Damaged files: each one's error (file and byte offset) and where it was moved.
    pub damaged: Vec<Damage>,
}

impl Replayed {
    /// Where the journal goes on after this replay: the next generation, numbered after
    /// every change read (a snapshot of the replayed state stands there).
    pub fn next(&self) -> Mark {
        Mark {
            generation: self.last_generation + 1,
            seq: self.last_seq,
        }
    }
}

/// A damaged journal file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Damage {
    /// The file.
    pub file: PathBuf,
    /// The byte offset of the first record not applied.
    pub offset: u64,
    /// What is wrong.
    pub reason: String,
    /// Where it was moved (`None`: it could not be).
    pub moved_to: Option<PathBuf>,
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: at byte {}: {}",
            self.file.display(),
            self.offset,
            self.reason
        )
    }
}

/// Replays the journal files in `dir` into `state`, after a snapshot that stands at
/// `mark` (`None`: no snapshot, or one written without a journal: every file). Files
/// before the mark's generation are removed (a snapshot holds them). A damaged file is
/// applied up to the damage and moved aside. Call before [`JournalFile::open`], and
/// before the state journals (what is replayed is not journaled again).
pub fn replay(
    state: &State,
    dir: &Path,
    mark: Option<Mark>,
    now: Secs,
) -> std::io::Result<Replayed> {
    let mark = mark.unwrap_or_default();
    let mut out = Replayed {
        last_seq: mark.seq,
        last_generation: mark.generation.saturating_sub(1),
        ..Replayed::default()
    };
    for (g, path) in files(dir)? {
        out.last_generation = out.last_generation.max(g);
        if g < mark.generation {
            if let Err(e) = fs::remove_file(&path) {
                tracing::warn!(file = %path.display(), error = %e, "cannot remove a journal file the snapshot holds");
            }
            continue;
        }
        out.files += 1;
        let bytes = {
            let mut b = Vec::new();
            File::open(&path)?.read_to_end(&mut b)?;
            b
        };
        let problems = replay_file(state, &bytes, mark.seq, now, &mut out);
        if !problems.is_empty() {
            let moved_to = set_aside(&path, now);
            for (offset, reason) in problems {
                out.damaged.push(Damage {
                    file: path.clone(),
                    offset,
                    reason,
                    moved_to: moved_to.clone(),
                });
            }
        }
    }
    if out.applied > 0 {
        state.mark_dirty();
    }
    Ok(out)
}

/// Moves a damaged file aside (`<name>.bad-<UTC time>`, as the snapshot); where to,
/// if it could.
fn set_aside(path: &Path, now: Secs) -> Option<PathBuf> {
    let name = path.file_name()?.to_string_lossy().into_owned();
    let when = jiff::Timestamp::from_second(now)
        .map(|t| t.strftime("%Y%m%dT%H%M%SZ").to_string())
        .unwrap_or_else(|_| now.to_string());
    let to = path.with_file_name(format!("{name}.bad-{when}"));
    fs::rename(path, &to).ok().map(|()| to)
}

/// The frame at `at`: payload length, checksum, sequence number and where the record
/// ends; an error when the frame or its payload is cut short or the length is not
/// believable.
fn frame_at(bytes: &[u8], at: usize) -> Result<(u32, u64, usize), (u64, String)> {
    let frame = bytes.get(at..at + FRAME).ok_or_else(|| {
        (
            at as u64,
            format!(
                "a record cut short: {} bytes of its 16-byte frame",
                bytes.len() - at
            ),
        )
    })?;
    let len = u32::from_le_bytes(frame[0..4].try_into().expect("4 bytes"));
    let sum = u32::from_le_bytes(frame[4..8].try_into().expect("4 bytes"));
    let seq = u64::from_le_bytes(frame[8..16].try_into().expect("8 bytes"));
    if len > MAX_PAYLOAD {
        return Err((at as u64, format!("a record claims {len} bytes: damaged")));
    }
    let end = at + FRAME + len as usize;
    if end > bytes.len() {
        return Err((
            at as u64,
            format!(
                "a record cut short: {} of its {len} bytes",
                bytes.len() - at - FRAME
            ),
        ));
    }
    Ok((sum, seq, end))
}

/// Whether the record from `at` to `end` matches its checksum `sum`.
fn sums(bytes: &[u8], at: usize, end: usize, sum: u32) -> bool {
    let mut h = crc32fast::Hasher::new();
    h.update(&bytes[at + 8..end]);
    h.finalize() == sum
}

/// Records at and above which a file is decoded and applied on several threads.
const PARALLEL_RECORDS: usize = 8192;

/// Applies one file's records; returns each problem found (byte offset, what is
/// wrong). A record that does not match its checksum, but whose length leads to a whole
/// record that does (or to the end of the file), is skipped and the records after it
/// are applied: one damaged record costs that record only. A frame that is cut short
/// or unbelievable ends the file: nothing after it can be found.
///
/// The frames are found and checked in one pass; a large file's records are then
/// decoded in parallel chunks and applied in parallel by entry (each thread applies,
/// in the file's order, the records of the accounts, addresses and networks that hash
/// to it), so one entry's records are applied in their order.
pub fn replay_file(
    state: &State,
    bytes: &[u8],
    after: u64,
    now: Secs,
    out: &mut Replayed,
) -> Vec<(u64, String)> {
    let mut problems = Vec::new();
    if !bytes.starts_with(MAGIC) {
        let reason = if MAGIC.starts_with(bytes) {
            "cut short in its first line".to_string()
        } else {
            "not an exim-access journal (bad first line)".to_string()
        };
        problems.push((0, reason));
        return problems;
    }
    // Every whole record that matches its checksum: (offset, sequence number, end).
    let mut frames: Vec<(usize, u64, usize)> = Vec::new();
    let mut at = MAGIC.len();
    while at < bytes.len() {
        // A file is made whole at once and filled from the start: zeros after the
        // last record are where appending stopped.
        if bytes[at..bytes.len().min(at + FRAME)]
            .iter()
            .all(|&b| b == 0)
        {
            break;
        }
        let (sum, seq, end) = match frame_at(bytes, at) {
            Ok(f) => f,
            Err(p) => {
                problems.push(p);
                break;
            }
        };
        if !sums(bytes, at, end, sum) {
            let next_whole = end == bytes.len()
                || frame_at(bytes, end).is_ok_and(|(s, _, e)| sums(bytes, end, e, s));
            if next_whole {
                problems.push((
                    at as u64,
                    "a record does not match its checksum: skipped, the records after it applied"
                        .into(),
                ));
                at = end;
                continue;
            }
            problems.push((at as u64, "a record does not match its checksum".into()));
            break;
        }
        frames.push((at, seq, end));
        at = end;
    }
    let threads = if frames.len() >= PARALLEL_RECORDS {
        std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(8)
    } else {
        1
    };
    // Decoded in contiguous chunks, one per thread, put back in the file's order.
    let chunk = frames.len().div_ceil(threads).max(1);
    let decoded: Vec<Result<Entry<'_>, (u64, String)>> = on_threads(threads, |t| {
        frames
            .chunks(chunk)
            .nth(t)
            .unwrap_or_default()
            .iter()
            .map(|&(at, _, end)| {
                postcard::from_bytes::<Entry<'_>>(&bytes[at + FRAME..end]).map_err(|e| {
                    (
                        at as u64,
                        format!(
                            "a record does not decode: {e}: skipped, the records after it applied"
                        ),
                    )
                })
            })
            .collect::<Vec<_>>()
    })
    .into_iter()
    .flatten()
    .collect();
    // Applied by entry: each thread the entries that hash to it, in the file's order.
    let applied: u64 = on_threads(threads, |t| {
        let mut n = 0u64;
        for (entry, &(_, seq, _)) in decoded.iter().zip(&frames) {
            if let Ok(entry) = entry
                && (threads == 1 || shard(entry, threads) == t)
                && seq > after
                && apply(state, entry, seq, now)
            {
                n += 1;
            }
        }
        n
    })
    .into_iter()
    .sum();
    for (entry, &(_, seq, _)) in decoded.iter().zip(&frames) {
        match entry {
            Ok(_) => {
                out.records += 1;
                out.last_seq = out.last_seq.max(seq);
            }
            Err(p) => problems.push(p.clone()),
        }
    }
    out.applied += applied;
    problems.sort_by_key(|(offset, _)| *offset);
    problems
}

/// `f(0)`, ..., `f(threads - 1)`, on that many threads (here, for one), in order. A
/// panic in one goes on in the caller: a result is never left out.
fn on_threads<T: Send>(threads: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    if threads <= 1 {
        return vec![f(0)];
    }
    let f = &f;
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads).map(|t| scope.spawn(move || f(t))).collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
}

/// Which of `threads` applies `entry`: by the account, address or network it changes,
/// so that one entry's records are applied by one thread, in order.
fn shard(entry: &Entry<'_>, threads: usize) -> usize {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    match entry {
        Entry::Account { user, .. }
        | Entry::Rcpts { user, .. }
        | Entry::Baseline(user, _)
        | Entry::Familiar(user, _) => user.hash(&mut h),
        Entry::Ip { ip, .. } => ip.hash(&mut h),
        Entry::Net { net, .. } => net.hash(&mut h),
    }
    (h.finish() % threads as u64) as usize
}

/// Applies one record; false when the entry already had it.
fn apply(state: &State, entry: &Entry<'_>, seq: u64, now: Secs) -> bool {
    match entry {
        Entry::Account {
            user,
            failures,
            hold,
            info,
            throttle,
            rcpts_cleared,
        } => {
            let mut a = state.account_mut(user);
            if seq <= a.journal_seq {
                return false;
            }
            a.journal_seq = seq;
            a.last_seen = a.last_seen.max(now);
            a.rules.failed_logins_account.failures =
                DedupWindow::from_entries(failures.iter().copied());
            a.hold = hold.as_ref().map(snapshot::restore);
            a.hold_info = info.as_ref().map(|i| {
                Box::new(HoldInfo {
                    by: Arc::from(i.by),
                    reason: i.reason.map(Arc::from),
                    scope: i.scope,
                    familiar: i.familiar.clone(),
                })
            });
            a.throttle = throttle.as_ref().map(snapshot::restore);
            if *rcpts_cleared {
                a.rcpts.clear();
            }
        }
        Entry::Rcpts { user, at, n } => {
            let (at, n) = (*at, *n);
            let mut a = state.account_mut(user);
            if seq <= a.journal_seq {
                return false;
            }
            a.journal_seq = seq;
            a.last_seen = a.last_seen.max(at);
            for _ in 0..n {
                a.rcpts.record(at);
            }
            let (key, acct) = a.pair_mut();
            if !acct.send.is_current(at) {
                let mut b = state.baseline_mut(key, at);
                acct.send.refresh(&mut b, at);
            }
            acct.send.count(n, at);
        }
        Entry::Ip {
            ip,
            failures,
            distinct,
        } => {
            let mut r = state.ip_mut(*ip);
            if seq <= r.journal_seq {
                return false;
            }
            r.journal_seq = seq;
            r.last_seen = r.last_seen.max(now);
            r.rules.failed_logins_ip.failures = DedupWindow::from_entries(failures.iter().copied());
            r.rules.password_spraying.accounts =
                DistinctWindow::from_exact(distinct.iter().copied());
        }
        Entry::Baseline(user, b) => {
            state
                .baselines()
                .insert((*user).into(), Box::new(b.clone()));
        }
        Entry::Familiar(user, list) => state.restore_familiar(user, list.clone()),
        Entry::Net { net, block, past } => match block {
            Some(b) => {
                let block: Block = snapshot::restore_block(b);
                state.blocks().restore(*net, block, *past);
            }
            None => state.blocks().restore_lifted(*net, *past),
        },
    }
    true
}
