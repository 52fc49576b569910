//! A preallocated, memory-mapped, append-only file, for the oracle's state journal
//! (`access-oracle/src/persist/journal.rs`), which forbids unsafe code: the little that
//! a shared mapping needs is here, behind a safe interface.
//!
//! * [`AppendMap::create`] reserves the whole capacity on disk first
//!   (`posix_fallocate`): a full disk fails there, with an error, and never later as a
//!   `SIGBUS` on a write into a page the filesystem cannot back.
//! * [`AppendMap::append`] copies bytes into the shared mapping after what is there:
//!   no system call. Once the copy is done the bytes are in the page cache, which
//!   outlives the process: a `kill -9` right after loses nothing. The file's tail
//!   past what was appended stays zero.
//! * [`AppendMap::flush`] writes what was appended to disk (`msync`), for a power
//!   cut; appends go on meanwhile (they write past what is being flushed).
//!
//! The mapping is of a file the caller created for itself (mode 0600 in a private
//! directory): nothing else is expected to change it while it is mapped.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::Mutex;

use memmap2::{MmapOptions, MmapRaw};

/// A file of fixed capacity, mapped shared, appended to from the start.
#[derive(Debug)]
pub struct AppendMap {
    map: MmapRaw,
    /// Bytes appended so far: the next append's offset.
    len: Mutex<usize>,
    /// Kept open for as long as the mapping.
    _file: File,
}

impl AppendMap {
    /// Reserves `capacity` bytes of `file` (which must be open for reading and writing,
    /// and empty) on disk, and maps them. `start` bytes already written at its head
    /// through `file` (a header) count as appended.
    pub fn create(file: File, capacity: usize, start: usize) -> io::Result<AppendMap> {
        if capacity == 0 || start > capacity {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "capacity must be above zero and hold the start",
            ));
        }
        let size = libc::off_t::try_from(capacity)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "capacity too large"))?;
        // SAFETY: a plain system call on an open descriptor we own; no memory is passed.
        let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, size) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        let map = MmapOptions::new().len(capacity).map_raw(&file)?;
        Ok(AppendMap {
            map,
            len: Mutex::new(start),
            _file: file,
        })
    }

    /// The capacity in bytes.
    pub fn capacity(&self) -> usize {
        self.map.len()
    }

    /// Bytes appended so far (the start included).
    pub fn len(&self) -> usize {
        *self.len.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether nothing is in the file.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Copies `bytes` after what was appended; returns their offset, or `None` (and
    /// writes nothing) when they do not fit.
    pub fn append(&self, bytes: &[u8]) -> Option<usize> {
        let mut len = self.len.lock().unwrap_or_else(|e| e.into_inner());
        let at = *len;
        let end = at.checked_add(bytes.len())?;
        if end > self.map.len() {
            return None;
        }
        // SAFETY: `at..end` lies inside the mapping (checked above), which is valid and
        // writable for its whole length while `self.map` lives. Appends are serialised
        // by `self.len`'s lock and each writes past every earlier one, so no two copies
        // overlap and nothing reads these bytes through a Rust reference (`flush` hands
        // an address range to the kernel only). `bytes` is a distinct borrowed slice,
        // so the regions cannot overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.map.as_mut_ptr().add(at),
                bytes.len(),
            );
        }
        *len = end;
        Some(at)
    }

    /// Writes `from..` what was appended to disk (`msync`), and returns where it got
    /// to (the next call's `from`). Appends are not held up: they write past it.
    pub fn flush(&self, from: usize) -> io::Result<usize> {
        let to = self.len();
        if to > from {
            self.map.flush_range(from, to - from)?;
        }
        Ok(to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn new_file(dir: &std::path::Path, header: &[u8]) -> File {
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(dir.join("j"))
            .unwrap();
        f.write_all(header).unwrap();
        f
    }

    #[test]
    fn appends_land_in_the_file_after_the_header_and_the_rest_is_zero() {
        let dir = tempfile::tempdir().unwrap();
        let m = AppendMap::create(new_file(dir.path(), b"HEAD\n"), 4096, 5).unwrap();
        assert_eq!(m.append(b"one"), Some(5));
        assert_eq!(m.append(b"two"), Some(8));
        assert_eq!(m.len(), 11);
        // Readable by anyone reading the file, before any flush (the page cache).
        let bytes = std::fs::read(dir.path().join("j")).unwrap();
        assert_eq!(bytes.len(), 4096, "the whole capacity is reserved");
        assert_eq!(&bytes[..11], b"HEAD\nonetwo");
        assert!(bytes[11..].iter().all(|&b| b == 0));
        assert_eq!(m.flush(0).unwrap(), 11);
        assert_eq!(m.flush(11).unwrap(), 11);
    }

    #[test]
    fn what_does_not_fit_is_refused_whole() {
        let dir = tempfile::tempdir().unwrap();
        let m = AppendMap::create(new_file(dir.path(), b""), 10, 0).unwrap();
        assert_eq!(m.append(b"12345678"), Some(0));
        assert_eq!(m.append(b"abc"), None);
        assert_eq!(m.append(b"ab"), Some(8));
        assert_eq!(m.append(b"x"), None);
        assert_eq!(&std::fs::read(dir.path().join("j")).unwrap(), b"12345678ab");
    }

    #[test]
    fn a_bad_capacity_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(AppendMap::create(new_file(dir.path(), b""), 0, 0).is_err());
        let dir = tempfile::tempdir().unwrap();
        assert!(AppendMap::create(new_file(dir.path(), b"abc"), 2, 3).is_err());
    }

    #[test]
    fn a_full_filesystem_fails_at_creation() {
        // /dev/full-like behaviour needs a filesystem; a capacity beyond what any
        // filesystem here has (1 PiB) must fail cleanly rather than map.
        let dir = tempfile::tempdir().unwrap();
        let r = AppendMap::create(new_file(dir.path(), b""), 1 << 50, 0);
        assert!(r.is_err());
    }
}
