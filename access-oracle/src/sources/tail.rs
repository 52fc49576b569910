//! Following a log file across rotation, resuming where it left off after a restart.
//!
//! [`Tailer::poll`] reads whatever complete lines are new. It handles:
//!
//! * **rename-and-create** rotation (logrotate's default): the old file is still open, so
//!   its last lines are read to the end before the new file is started; a file rotated
//!   once more in between (found at `PATH.1`) is read too. A retired file stays open for
//!   a grace period in case its writer has not reopened yet (rsyslog before its HUP).
//! * **copytruncate** rotation: a file that became shorter than what was read, or whose
//!   first bytes changed, is read again from the start.
//! * **a file that does not exist yet**, or was deleted: polls find nothing until it
//!   appears.
//! * **restarts**: [`Position`] (inode, offset of the end of the last complete line,
//!   fingerprint of the first bytes) is persisted by the caller after it has processed
//!   the lines; a tailer built from it resumes exactly there, in the same file or, if it
//!   was rotated meanwhile, in `PATH.1` first. Nothing is lost and nothing read twice.
//!
//! The tailer is synchronous and takes `now` for the grace period; the daemon drives it
//! from file-change notifications with a polling fallback.

use std::fs::File;
use std::hash::Hasher;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// How many leading bytes identify a file.
pub const FINGERPRINT_BYTES: u64 = 1024;

/// The longest line kept whole; longer ones are cut (and flagged).
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// How long a rotated-away file is still read, in seconds.
pub const RETIRE_GRACE_SECS: i64 = 5;

/// Where reading stopped: enough to resume in the same file after a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// The file's inode.
    pub inode: u64,
    /// The offset just after the last complete line handed out.
    pub offset: u64,
    /// A hash of the file's first `fingerprint_len` bytes.
    pub fingerprint: u64,
    /// How many bytes the fingerprint covers (up to [`FINGERPRINT_BYTES`]).
    pub fingerprint_len: u64,
}

/// Where to start in a file the tailer has no position for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartAt {
    /// Read the whole file.
    Beginning,
    /// Only what is written from now on.
    End,
}

/// One line read from a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// The file's inode (several files pass through one tailer across rotations).
    pub inode: u64,
    /// The offset of the line's first byte in that file.
    pub offset: u64,
    /// The line without its newline.
    pub bytes: Vec<u8>,
    /// Whether the line was longer than [`MAX_LINE_BYTES`] and was cut.
    pub truncated: bool,
}

struct OpenFile {
    file: File,
    inode: u64,
    /// Bytes read so far.
    read_to: u64,
    /// Where the incomplete last line starts: everything before it was handed out.
    partial_start: u64,
    /// The bytes of that line read so far (at most [`MAX_LINE_BYTES`]).
    partial: Vec<u8>,
    partial_truncated: bool,
    fingerprint: u64,
    fingerprint_len: u64,
    /// When it was rotated away, for retired files.
    retired_at: Option<i64>,
}

impl OpenFile {
    fn open(path: &Path, start: u64) -> io::Result<OpenFile> {
        let file = File::open(path)?;
        let inode = file.metadata()?.ino();
        let mut f = OpenFile {
            file,
            inode,
            read_to: start,
            partial_start: start,
            partial: Vec::new(),
            partial_truncated: false,
            fingerprint: 0,
            fingerprint_len: 0,
            retired_at: None,
        };
        f.refresh_fingerprint()?;
        Ok(f)
    }

    fn hash_prefix(&self, len: u64) -> io::Result<u64> {
        let mut buf = vec![0; len as usize];
        let n = read_full_at(&self.file, &mut buf, 0)?;
        let mut h = std::hash::DefaultHasher::new();
        h.write(&buf[..n]);
        Ok(h.finish())
    }

    fn refresh_fingerprint(&mut self) -> io::Result<()> {
        let len = self.file.metadata()?.len().min(FINGERPRINT_BYTES);
        if len > self.fingerprint_len {
            self.fingerprint = self.hash_prefix(len)?;
            self.fingerprint_len = len;
        }
        Ok(())
    }

    /// Whether the file was truncated or rewritten under us (copytruncate).
    fn was_replaced(&self) -> io::Result<bool> {
        let len = self.file.metadata()?.len();
        if len < self.read_to || len < self.fingerprint_len {
            return Ok(true);
        }
        Ok(self.fingerprint_len > 0 && self.hash_prefix(self.fingerprint_len)? != self.fingerprint)
    }

    fn restart_from_zero(&mut self) -> io::Result<()> {
        self.read_to = 0;
        self.partial_start = 0;
        self.partial.clear();
        self.partial_truncated = false;
        self.fingerprint_len = 0;
        self.refresh_fingerprint()
    }

    /// Reads to the end of the file, handing out complete lines. Returns bytes read.
    fn read_lines(&mut self, out: &mut Vec<Line>) -> io::Result<u64> {
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0;
        loop {
            let n = self.file.read_at(&mut buf, self.read_to)?;
            if n == 0 {
                break;
            }
            let base = self.read_to;
            let mut start = 0;
            while let Some(i) = buf[start..n].iter().position(|&b| b == b'\n') {
                let end = start + i;
                self.push_partial(&buf[start..end]);
                out.push(Line {
                    inode: self.inode,
                    offset: self.partial_start,
                    bytes: std::mem::take(&mut self.partial),
                    truncated: std::mem::take(&mut self.partial_truncated),
                });
                self.partial_start = base + end as u64 + 1;
                start = end + 1;
            }
            self.push_partial(&buf[start..n]);
            self.read_to += n as u64;
            total += n as u64;
        }
        if total > 0 {
            self.refresh_fingerprint()?;
        }
        Ok(total)
    }

    fn push_partial(&mut self, bytes: &[u8]) {
        let room = MAX_LINE_BYTES.saturating_sub(self.partial.len());
        if bytes.len() > room {
            self.partial_truncated = true;
        }
        self.partial
            .extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    /// Hands out the incomplete last line of a file that will not grow any more.
    fn flush_partial(&mut self, out: &mut Vec<Line>) {
        if self.read_to > self.partial_start {
            out.push(Line {
                inode: self.inode,
                offset: self.partial_start,
                bytes: std::mem::take(&mut self.partial),
                truncated: std::mem::take(&mut self.partial_truncated),
            });
            self.partial_start = self.read_to;
        }
    }

    fn position(&self) -> Position {
        Position {
            inode: self.inode,
            offset: self.partial_start,
            fingerprint: self.fingerprint,
            fingerprint_len: self.fingerprint_len,
        }
    }
}

fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], offset + n as u64)? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Follows one log file.
pub struct Tailer {
    path: PathBuf,
    current: Option<OpenFile>,
    retired: Vec<OpenFile>,
    start_at: StartAt,
    saved: Option<Position>,
}

impl Tailer {
    /// A tailer for `path`, resuming at `saved` if given, else starting as `start_at` says.
    /// Nothing is opened until the first [`Tailer::poll`].
    pub fn new(path: impl Into<PathBuf>, saved: Option<Position>, start_at: StartAt) -> Tailer {
        Tailer {
            path: path.into(),
            current: None,
            retired: Vec::new(),
            start_at,
            saved,
        }
    }

    /// The followed path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where to resume after the lines handed out so far; `None` before a file was found.
    pub fn position(&self) -> Option<Position> {
        self.current.as_ref().map(OpenFile::position).or(self.saved)
    }

    fn rotated_path(&self) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(".1");
        p.into()
    }

    /// Reads every new complete line, in order: rotated-away files' rest first, then
    /// the current file.
    pub fn poll(&mut self, now: i64) -> io::Result<Vec<Line>> {
        let mut out = Vec::new();
        if self.current.is_none() && !self.open_first()? {
            return Ok(out);
        }
        // Retired files are read until their grace period is over, then closed (their
        // last line, even without a newline, handed out).
        let mut keep = Vec::with_capacity(self.retired.len());
        for mut old in self.retired.drain(..) {
            old.read_lines(&mut out)?;
            if now - old.retired_at.unwrap_or(now) >= RETIRE_GRACE_SECS {
                old.flush_partial(&mut out);
            } else {
                keep.push(old);
            }
        }
        self.retired = keep;
        if let Some(cur) = self.current.as_mut() {
            if cur.was_replaced()? {
                cur.restart_from_zero()?;
            }
            cur.read_lines(&mut out)?;
        }
        // Rotated? The path now names another file (or none yet).
        match std::fs::metadata(&self.path) {
            Ok(meta) if Some(meta.ino()) != self.current.as_ref().map(|c| c.inode) => {
                if let Some(mut old) = self.current.take() {
                    old.retired_at = Some(now);
                    // A file rotated once more in between sits at PATH.1: read it whole.
                    if let Ok(m1) = std::fs::metadata(self.rotated_path())
                        && m1.ino() != old.inode
                        && m1.ino() != meta.ino()
                        && !self.retired.iter().any(|r| r.inode == m1.ino())
                    {
                        let mut between = OpenFile::open(&self.rotated_path(), 0)?;
                        between.read_lines(&mut out)?;
                        between.flush_partial(&mut out);
                    }
                    self.retired.push(old);
                }
                let mut cur = OpenFile::open(&self.path, 0)?;
                cur.read_lines(&mut out)?;
                self.current = Some(cur);
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        Ok(out)
    }

    /// Opens the file the first time; returns whether there is one.
    fn open_first(&mut self) -> io::Result<bool> {
        let meta = match std::fs::metadata(&self.path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        let Some(saved) = self.saved else {
            let start = match self.start_at {
                StartAt::Beginning => 0,
                StartAt::End => meta.len(),
            };
            self.current = Some(OpenFile::open(&self.path, start)?);
            return Ok(true);
        };
        // The saved file, if `path` is it: from the saved offset when its first bytes are
        // unchanged, from the start when it was truncated and rewritten meanwhile.
        let reopen = |path: &Path| -> io::Result<Option<OpenFile>> {
            match std::fs::metadata(path) {
                Ok(m) if m.ino() == saved.inode => {}
                _ => return Ok(None),
            }
            let mut f = OpenFile::open(path, 0)?;
            let len = f.file.metadata()?.len();
            if len >= saved.offset
                && len >= saved.fingerprint_len
                && f.hash_prefix(saved.fingerprint_len)? == saved.fingerprint
            {
                f.read_to = saved.offset;
                f.partial_start = saved.offset;
            }
            Ok(Some(f))
        };
        if let Some(f) = reopen(&self.path)? {
            self.current = Some(f);
        } else {
            // Rotated while we were away: finish the old file first, then all of the new.
            if let Some(mut old) = reopen(&self.rotated_path())? {
                old.retired_at = Some(i64::MIN / 2);
                self.retired.push(old);
            }
            self.current = Some(OpenFile::open(&self.path, 0)?);
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests;
