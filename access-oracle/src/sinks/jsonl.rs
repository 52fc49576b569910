//! The JSON-lines alert file: one object per line, appended, flushed after each burst.
//! A write error is logged and counted, never fatal; the next alert tries again.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::alert::Alert;

/// Alerts that could not be written, for `ctl status`.
pub static WRITE_ERRORS: AtomicU64 = AtomicU64::new(0);

/// Appends alerts to a file.
pub struct JsonlSink {
    path: PathBuf,
    out: Option<BufWriter<File>>,
}

impl JsonlSink {
    /// Opens (creating) the file for appending; fails if it cannot be opened now, so a
    /// wrong path is reported at start.
    pub fn open(path: &Path) -> std::io::Result<JsonlSink> {
        let mut sink = JsonlSink {
            path: path.to_path_buf(),
            out: None,
        };
        sink.out = Some(sink.open_file()?);
        Ok(sink)
    }

    fn open_file(&self) -> std::io::Result<BufWriter<File>> {
        // Alerts name accounts and addresses: the oracle's user only (0700 / 0600).
        if let Some(dir) = self.path.parent() {
            crate::files::create_private_dir(dir)?;
        }
        let f = crate::files::private_append().open(&self.path)?;
        Ok(BufWriter::new(f))
    }

    /// Writes one alert line (buffered).
    pub fn write(&mut self, alert: &Alert) {
        if self.out.is_none() {
            match self.open_file() {
                Ok(f) => self.out = Some(f),
                Err(e) => return self.failed(&e),
            }
        }
        let mut line = match serde_json::to_vec(alert) {
            Ok(l) => l,
            Err(e) => {
                WRITE_ERRORS.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "cannot serialize alert");
                return;
            }
        };
        line.push(b'\n');
        if let Some(out) = self.out.as_mut()
            && let Err(e) = out.write_all(&line)
        {
            self.failed(&e);
        }
    }

    /// Pushes buffered lines to the file.
    pub fn flush(&mut self) {
        if let Some(out) = self.out.as_mut()
            && let Err(e) = out.flush()
        {
            self.failed(&e);
        }
    }

    fn failed(&mut self, e: &std::io::Error) {
        WRITE_ERRORS.fetch_add(1, Ordering::Relaxed);
        tracing::error!(path = %self.path.display(), error = %e, "cannot write alert file");
        // Reopen next time: the file may have been rotated away or the disk freed.
        self.out = None;
    }
}
