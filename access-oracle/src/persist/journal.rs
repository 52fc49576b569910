//! The state journal: every change the snapshot keeps (a failure counted, recipients
//! counted, a hold, a block, a release, a baseline learnt, a familiar network), appended
//! as it is made, so that `kill -9` at any moment loses nothing the oracle acknowledged.
//! At start the snapshot is read, then the journal's files are replayed on top of it.
//!
//! **Nothing on the verdict's path waits for a disk.** A change is one `write(2)` to a
//! file opened for appending, made before the verdict is sent: once it returns, the
//! bytes are in the kernel's page cache and survive the death of the process. A thread
//! of its own flushes the file to disk (`fdatasync`) every `journal_flush_ms`
//! (default 1,000): a power cut loses at most that much. The write is never followed by
//! a flush on the verdict's path.
//!
//! **Files.** `state.journal.<generation>` in the state directory. Each snapshot starts
//! a new generation and records in its header the generation and the last sequence
//! number before it ([`Mark`]); once the snapshot is on disk, older generations are
//! removed. A start replays, in order, every generation from the snapshot's on, each
//! record whose number is above the mark, then opens a new generation (the replayed
//! files stay until the next snapshot holds what they hold).
//!
//! **Format.** The line `exim-access journal 1\n`, then records:
//!
//! ```text
//! u32 length of the payload        little endian
//! u32 CRC-32 of sequence and payload
//! u64 sequence number              one counter for the whole oracle, never reused
//! payload                          postcard Entry
//! ```
//!
//! **Damage.** A record that is cut short (the end of a file written at a power cut)
//! ends that file's replay: what came before it is applied. A record that does not
//! match its checksum is skipped when its length still leads to a whole record (or the
//! end), and the records after it are applied; otherwise it ends the file too. Each
//! error names the file and the byte offset, and the file is moved aside
//! (`<name>.bad-<UTC time>`, e.g. `state.journal.0000000007.bad-20261203T101500Z`) for
//! inspection. The other files are still replayed.
//!
//! **A full disk.** An append that fails is cut back (`ftruncate`) to the last whole
//! record and the journal stops appending ([`Status::failed`]): changes then live in
//! memory only, verdicts go on, and the failure is reported (housekeeping raises the
//! alert and tries a snapshot every minute). The next snapshot that is written starts a
//! new file, and the journal is whole again.
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
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::snapshot::{self, StoredBlock, StoredHold, StoredHoldInfo};
use crate::state::blocks::Past;
use crate::state::journal::{Change, Journal};
use crate::state::{Baseline, Block, DedupWindow, DistinctWindow, HoldInfo, Secs, State};

/// The start of every journal file's name.
pub const PREFIX: &str = "state.journal.";

const MAGIC: &[u8] = b"exim-access journal 1\n";

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
    /// Appending failed and has not resumed (a new file starts at the next snapshot).
    pub failed: AtomicBool,
    /// The last failure, for the report: the file and the error.
    pub last_error: Mutex<Option<(PathBuf, String)>>,
}

/// The file being appended to.
#[derive(Debug)]
struct Open {
    generation: u64,
    path: PathBuf,
    /// `None`: no file could be opened; nothing is appended until one is.
    file: Option<Arc<File>>,
    /// Its length after the last whole record.
    len: u64,
    /// The last sequence number given.
    seq: u64,
    /// An append failed: nothing more goes into this file.
    broken: bool,
    /// Bytes written since the last flush.
    unflushed: bool,
}

/// The journal of a running oracle.
#[derive(Debug)]
pub struct JournalFile {
    dir: PathBuf,
    open: Mutex<Open>,
    /// One rotation at a time (the minute's snapshot and the last one at shutdown).
    rotating: Mutex<()>,
    status: Arc<Status>,
    /// Wakes the flusher early (at the end).
    stop: Arc<(Mutex<bool>, Condvar)>,
}

thread_local! {
    /// Each thread encodes its records here, outside the journal's lock.
    static BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

impl JournalFile {
    /// Opens generation `generation` (a new file) in `dir`, numbering changes after
    /// `seq`, and starts the thread that flushes it every `flush_every`. A file that
    /// cannot be created is reported in the status; the oracle goes on without
    /// journaling until a snapshot starts the next generation.
    pub fn open(dir: &Path, generation: u64, seq: u64, flush_every: Duration) -> Arc<JournalFile> {
        let status = Arc::new(Status::default());
        let path = dir.join(file_name(generation));
        let mut open = Open {
            generation,
            path: path.clone(),
            file: None,
            len: 0,
            seq,
            broken: false,
            unflushed: false,
        };
        match create(&path) {
            Ok(f) => {
                open.len = MAGIC.len() as u64;
                open.file = Some(Arc::new(f));
            }
            Err(e) => fail(&status, &path, &e),
        }
        let journal = Arc::new(JournalFile {
            dir: dir.to_path_buf(),
            open: Mutex::new(open),
            rotating: Mutex::new(()),
            status,
            stop: Arc::new((Mutex::new(false), Condvar::new())),
        });
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

    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts the next generation, for a snapshot about to be written: returns the mark
    /// the snapshot records. The file left is flushed to disk first. When the new file
    /// cannot be created, the mark names the current one (replayed from the mark's
    /// number on) and appending goes on there, unless it had failed.
    pub fn rotate(&self) -> Mark {
        let _one = self.rotating.lock().unwrap_or_else(|e| e.into_inner());
        let next = self.lock().generation + 1;
        let path = self.dir.join(file_name(next));
        let created = create(&path);
        let mut open = self.lock();
        match created {
            Ok(f) => {
                let old = open.file.replace(Arc::new(f));
                open.generation = next;
                open.path = path;
                open.len = MAGIC.len() as u64;
                open.broken = false;
                open.unflushed = false;
                let mark = Mark {
                    generation: next,
                    seq: open.seq,
                };
                drop(open);
                if self.status.failed.swap(false, Ordering::Relaxed) {
                    tracing::info!(file = %self.dir.join(file_name(next)).display(),
                        "the state journal is written again");
                }
                if let Some(old) = old
                    && let Err(e) = old.sync_data()
                {
                    self.status.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "cannot flush the previous journal file");
                }
                mark
            }
            Err(e) => {
                fail(&self.status, &path, &e);
                Mark {
                    generation: open.generation,
                    seq: open.seq,
                }
            }
        }
    }

    /// Removes the files before `mark`'s generation: a snapshot holding what they hold
    /// is on disk.
    pub fn forget_before(&self, mark: Mark) {
        forget_before(&self.dir, mark);
    }

    /// Flushes what was appended to disk now.
    pub fn flush(&self) {
        let file = {
            let mut open = self.lock();
            if !std::mem::take(&mut open.unflushed) {
                return;
            }
            open.file.clone()
        };
        if let Some(f) = file {
            match f.sync_data() {
                Ok(()) => {
                    self.status.flushes.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    self.status.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(error = %e, "cannot flush the state journal to disk");
                }
            }
        }
    }

    /// Flushes and stops the flushing thread (at shutdown).
    pub fn close(&self) {
        self.flush();
        let (lock, cv) = &*self.stop;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
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
                tracing::error!(error = %e, "cannot encode a journal record");
                return 0;
            }
        };
        let payload = (buf.len() - FRAME) as u32;
        let mut open = self.lock();
        let Some(file) = open.file.clone().filter(|_| !open.broken) else {
            self.status.lost.fetch_add(1, Ordering::Relaxed);
            return 0;
        };
        let seq = open.seq + 1;
        buf[0..4].copy_from_slice(&payload.to_le_bytes());
        buf[8..16].copy_from_slice(&seq.to_le_bytes());
        let mut h = crc32fast::Hasher::new();
        h.update(&buf[8..]);
        buf[4..8].copy_from_slice(&h.finalize().to_le_bytes());
        match (&*file).write_all(buf) {
            Ok(()) => {
                open.seq = seq;
                open.len += buf.len() as u64;
                open.unflushed = true;
                self.status.appended.fetch_add(1, Ordering::Relaxed);
                self.status
                    .bytes
                    .fetch_add(buf.len() as u64, Ordering::Relaxed);
                seq
            }
            Err(e) => {
                // No partial record stays behind; nothing more goes into this file.
                let _ = file.set_len(open.len);
                open.broken = true;
                let path = open.path.clone();
                drop(open);
                self.status.lost.fetch_add(1, Ordering::Relaxed);
                fail(&self.status, &path, &e);
                0
            }
        }
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

/// Creates a journal file and writes its first line.
fn create(path: &Path) -> std::io::Result<File> {
    // Appending (O_APPEND): a record is written at the end whatever happened before.
    let mut f = crate::files::private_append().open(path)?;
    let written = f
        .set_len(0)
        .and_then(|()| f.write_all(MAGIC))
        .and_then(|()| f.sync_data());
    if let Err(e) = written {
        let _ = fs::remove_file(path);
        return Err(e);
    }
    if let Some(dir) = path.parent()
        && let Ok(d) = File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(f)
}

/// Records a failure to append to (or create) `path`.
fn fail(status: &Status, path: &Path, e: &std::io::Error) {
    status.errors.fetch_add(1, Ordering::Relaxed);
    let first = !status.failed.swap(true, Ordering::Relaxed);
    *status.last_error.lock().unwrap_or_else(|p| p.into_inner()) =
        Some((path.to_path_buf(), e.to_string()));
    if first {
        tracing::error!(file = %path.display(), error = %e,
            "cannot append to the state journal: changes are kept in memory only until the next snapshot is written");
    }
}

fn flush_loop(
    journal: std::sync::Weak<JournalFile>,
    stop: Arc<(Mutex<bool>, Condvar)>,
    every: Duration,
) {
    let (lock, cv) = &*stop;
    loop {
        {
            let stopped = lock.lock().unwrap_or_else(|e| e.into_inner());
            let (stopped, _) = cv
                .wait_timeout_while(stopped, every, |s| !*s)
                .unwrap_or_else(|e| e.into_inner());
            if *stopped {
                return;
            }
        }
        match journal.upgrade() {
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

/// Applies one file's records; returns each problem found (byte offset, what is
/// wrong). A record that does not match its checksum, but whose length leads to a whole
/// record that does (or to the end of the file), is skipped and the records after it
/// are applied: one damaged record costs that record only. A frame that is cut short
/// or unbelievable ends the file: nothing after it can be found.
fn replay_file(
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
    let mut at = MAGIC.len();
    while at < bytes.len() {
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
        match postcard::from_bytes::<Entry<'_>>(&bytes[at + FRAME..end]) {
            Ok(entry) => {
                out.records += 1;
                out.last_seq = out.last_seq.max(seq);
                if seq > after && apply(state, entry, seq, now) {
                    out.applied += 1;
                }
            }
            Err(e) => problems.push((
                at as u64,
                format!("a record does not decode: {e}: skipped, the records after it applied"),
            )),
        }
        at = end;
    }
    problems
}

/// Applies one record; false when the entry already had it.
fn apply(state: &State, entry: Entry<'_>, seq: u64, now: Secs) -> bool {
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
            a.rules.failed_logins_account.failures = DedupWindow::from_entries(failures);
            a.hold = hold.as_ref().map(snapshot::restore);
            a.hold_info = info.map(|i| {
                Box::new(HoldInfo {
                    by: Arc::from(i.by),
                    reason: i.reason.map(Arc::from),
                    scope: i.scope,
                    familiar: i.familiar,
                })
            });
            a.throttle = throttle.as_ref().map(snapshot::restore);
            if rcpts_cleared {
                a.rcpts.clear();
            }
        }
        Entry::Rcpts { user, at, n } => {
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
            let mut r = state.ip_mut(ip);
            if seq <= r.journal_seq {
                return false;
            }
            r.journal_seq = seq;
            r.last_seen = r.last_seen.max(now);
            r.rules.failed_logins_ip.failures = DedupWindow::from_entries(failures);
            r.rules.password_spraying.accounts = DistinctWindow::from_exact(distinct);
        }
        Entry::Baseline(user, b) => {
            state.baselines().insert(user.into(), Box::new(b));
        }
        Entry::Familiar(user, list) => state.restore_familiar(user, list),
        Entry::Net { net, block, past } => match block {
            Some(b) => {
                let block: Block = snapshot::restore_block(&b);
                state.blocks().restore(net, block, past);
            }
            None => state.blocks().restore_lifted(net, past),
        },
    }
    true
}
