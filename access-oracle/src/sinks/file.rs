//! `type = "file"`: alerts appended to a file, one JSON object per line, flushed after
//! each batch, optionally rotated by size. The default `alerts` sink is one of these at
//! `[alerts] file` (`<state_dir>/alerts.jsonl`).
//!
//! ```toml
//! [[sinks]]
//! name = "alerts"
//! type = "file"
//! path = "/var/log/access-oracle/alerts.jsonl"   # default: [alerts] file
//! format = "json"                               # or "ecs" (Elastic Common Schema)
//! max_bytes = 104857600                          # rotate past 100 MiB; 0 never
//! keep = 5                                       # alerts.jsonl.1 .. .5
//! ```
//!
//! Writes run on the blocking pool, so a stuck disk holds this sink only. A write error
//! is logged and counted as failed, never fatal; the file is reopened for the next
//! batch (it may have been moved away or the disk freed).
//!
//! With `stream = "audit"` ([`super::stream`]) the file receives every audit record
//! instead of alerts: `format = "json"` writes each record's line as the trail holds it
//! (decrypted when the trail is encrypted; with its `chain`), `"ecs"` its ECS document
//! ([`super::ecs::item`]). A batch is flushed and `fdatasync`ed before it counts as
//! delivered, so the saved position never runs ahead of what is on disk; `path` must
//! then be a file of its own (not the alert file).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use super::{AuditItem, BuildContext, Delivery, Forward, Forwarding, Outcome, Sink, SinkConfig};
use crate::alert::Alert;

/// How each alert is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// The alert record as `ctl alerts --json` shows it, one object per line.
    #[default]
    Json,
    /// The Elastic Common Schema ([`super::ecs`]), one document per line.
    Ecs,
}

/// `[[sinks]] type = "file"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// The file, absolute; by default `[alerts] file` (itself `<state_dir>/alerts.jsonl`
    /// by default). Created 0600 in a 0700 directory if missing.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// `json` (as `alerts.jsonl` always was) or `ecs` (Elastic Common Schema).
    #[serde(default)]
    pub format: Format,
    /// Rotate when a line would take the file past this many bytes: the file becomes
    /// `PATH.1`, `PATH.1` becomes `PATH.2` and so on. 0 (the default) never rotates.
    #[serde(default)]
    pub max_bytes: u64,
    /// Rotated files kept when `max_bytes` is set; default 5.
    #[serde(default = "default_keep")]
    pub keep: u32,
}

fn default_keep() -> u32 {
    5
}

impl FileConfig {
    fn path(&self, ctx: &BuildContext) -> PathBuf {
        self.path.clone().unwrap_or_else(|| ctx.alert_file.clone())
    }
}

impl SinkConfig for FileConfig {
    fn validate(&self, ctx: &BuildContext, problems: &mut Vec<String>) {
        super::absolute("path", &self.path(ctx), problems);
        if self.max_bytes != 0 && self.max_bytes < 4096 {
            problems.push(format!(
                "max_bytes must be 0 (never rotate) or at least 4096, got {}",
                self.max_bytes
            ));
        }
        if self.keep == 0 || self.keep > 1000 {
            problems.push(format!(
                "keep must be between 1 and 1000, got {}",
                self.keep
            ));
        }
    }

    fn target(&self, ctx: &BuildContext) -> String {
        self.path(ctx).display().to_string()
    }

    /// The file must be a regular file, or creatable (its nearest existing ancestor a
    /// directory). The default
    /// file (`[alerts] file`) is the preflight's own check.
    fn preflight(&self, ctx: &BuildContext, problems: &mut Vec<String>) {
        let path = self.path(ctx);
        if path == ctx.alert_file {
            return;
        }
        match std::fs::metadata(&path) {
            Ok(meta) if !meta.is_file() => problems.push(format!(
                "path {} is {}, not a regular file",
                path.display(),
                crate::files::describe_type(&meta)
            )),
            Ok(_) => {}
            Err(_) => {
                if let Err(why) = crate::files::creatable(&path) {
                    problems.push(format!("path {why}"));
                }
            }
        }
    }

    fn build(&self, ctx: &BuildContext) -> std::io::Result<Box<dyn Sink>> {
        let writer = Writer::open(self.path(ctx), self.max_bytes, self.keep)?;
        Ok(Box::new(FileSink {
            writer: Some(writer),
            format: self.format,
        }))
    }

    fn forwards_audit(&self) -> bool {
        true
    }

    fn build_forwarder(&self, ctx: &BuildContext) -> std::io::Result<Box<dyn Forward>> {
        let writer = Writer::open(self.path(ctx), self.max_bytes, self.keep)?;
        Ok(Box::new(FileForwarder {
            writer: Some(writer),
            format: self.format,
        }))
    }
}

/// The running file sink of a `stream = "audit"` table.
#[derive(Debug)]
pub struct FileForwarder {
    /// `None` only while a batch is being written on the blocking pool.
    writer: Option<Writer>,
    format: Format,
}

impl Forward for FileForwarder {
    fn forward<'a>(&'a mut self, batch: &'a [AuditItem]) -> Forwarding<'a> {
        Box::pin(async move {
            let Some(mut writer) = self.writer.take() else {
                return 0;
            };
            let format = self.format;
            let items = batch.to_vec();
            let path = writer.path.clone();
            match tokio::task::spawn_blocking(move || {
                let written = writer.forward_batch(&items, format);
                (writer, written)
            })
            .await
            {
                Ok((writer, written)) => {
                    self.writer = Some(writer);
                    written
                }
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "audit stream file writer failed");
                    self.writer = Some(Writer::closed(path));
                    0
                }
            }
        })
    }
}

/// The running file sink.
#[derive(Debug)]
pub struct FileSink {
    /// `None` only while a batch is being written on the blocking pool.
    writer: Option<Writer>,
    format: Format,
}

impl Sink for FileSink {
    fn deliver<'a>(&'a mut self, batch: &'a [Arc<Alert>]) -> Delivery<'a> {
        Box::pin(async move {
            let Some(mut writer) = self.writer.take() else {
                return Outcome {
                    failed: batch.len() as u64,
                    ..Outcome::default()
                };
            };
            let format = self.format;
            let alerts = batch.to_vec();
            let path = writer.path.clone();
            match tokio::task::spawn_blocking(move || {
                let outcome = writer.write_batch(&alerts, format);
                (writer, outcome)
            })
            .await
            {
                Ok((writer, outcome)) => {
                    self.writer = Some(writer);
                    outcome
                }
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "alert file writer failed");
                    // Start again with the file closed; it is reopened on the next write.
                    self.writer = Some(Writer::closed(path));
                    Outcome {
                        failed: batch.len() as u64,
                        ..Outcome::default()
                    }
                }
            }
        })
    }
}

/// The file, its size and rotation settings.
#[derive(Debug)]
struct Writer {
    path: PathBuf,
    out: Option<BufWriter<File>>,
    size: u64,
    max_bytes: u64,
    keep: u32,
}

impl Writer {
    /// Opens (creating) the file; fails if it cannot be opened now, so a wrong path is
    /// reported at start.
    fn open(path: PathBuf, max_bytes: u64, keep: u32) -> std::io::Result<Writer> {
        let mut w = Writer {
            path,
            out: None,
            size: 0,
            max_bytes,
            keep,
        };
        w.reopen()?;
        Ok(w)
    }

    fn closed(path: PathBuf) -> Writer {
        Writer {
            path,
            out: None,
            size: 0,
            max_bytes: 0,
            keep: 1,
        }
    }

    fn reopen(&mut self) -> std::io::Result<()> {
        let (file, size) = open_append(&self.path)?;
        self.out = Some(BufWriter::new(file));
        self.size = size;
        Ok(())
    }

    /// Appends the batch and flushes it; says how many lines reached the file.
    fn write_batch(&mut self, batch: &[Arc<Alert>], format: Format) -> Outcome {
        let mut outcome = Outcome::default();
        // Lines written to the buffer since the last flush that succeeded.
        let mut pending = 0u64;
        for alert in batch {
            let mut line = match format {
                Format::Json => match serde_json::to_vec(&**alert) {
                    Ok(l) => l,
                    Err(e) => {
                        outcome.failed += 1;
                        tracing::error!(error = %e, "cannot serialize alert");
                        continue;
                    }
                },
                Format::Ecs => super::ecs::alert(alert).to_string().into_bytes(),
            };
            line.push(b'\n');
            if self.max_bytes > 0
                && self.out.is_some()
                && self.size > 0
                && self.size + line.len() as u64 > self.max_bytes
            {
                self.settle(&mut pending, &mut outcome);
                self.rotate();
            }
            if self.out.is_none()
                && let Err(e) = self.reopen()
            {
                outcome.failed += 1;
                self.failed(&e);
                continue;
            }
            let Some(out) = self.out.as_mut() else {
                continue;
            };
            match out.write_all(&line) {
                Ok(()) => {
                    pending += 1;
                    self.size += line.len() as u64;
                }
                Err(e) => {
                    // What the buffer held goes with the writer.
                    outcome.failed += pending + 1;
                    pending = 0;
                    self.failed(&e);
                }
            }
        }
        self.settle(&mut pending, &mut outcome);
        outcome
    }

    /// Appends the records, flushes them and syncs them to disk; says how many, from
    /// the first, are on disk (at a write error, those synced before it).
    fn forward_batch(&mut self, batch: &[AuditItem], format: Format) -> usize {
        let mut synced = 0;
        let mut pending = 0;
        for item in batch {
            let mut line = match format {
                Format::Json => item.line.clone().into_bytes(),
                Format::Ecs => super::ecs::item(item).to_string().into_bytes(),
            };
            line.push(b'\n');
            if self.max_bytes > 0
                && self.out.is_some()
                && self.size > 0
                && self.size + line.len() as u64 > self.max_bytes
            {
                if !self.sync(&mut pending, &mut synced) {
                    return synced;
                }
                self.rotate();
            }
            if self.out.is_none()
                && let Err(e) = self.reopen()
            {
                self.failed(&e);
                return synced;
            }
            let Some(out) = self.out.as_mut() else {
                return synced;
            };
            if let Err(e) = out.write_all(&line) {
                self.failed(&e);
                return synced;
            }
            pending += 1;
            self.size += line.len() as u64;
        }
        self.sync(&mut pending, &mut synced);
        synced
    }

    /// Flushes the pending lines and syncs the file; true when they are on disk.
    fn sync(&mut self, pending: &mut usize, synced: &mut usize) -> bool {
        let Some(out) = self.out.as_mut() else {
            return *pending == 0;
        };
        match out.flush().and_then(|()| out.get_ref().sync_data()) {
            Ok(()) => {
                *synced += std::mem::take(pending);
                true
            }
            Err(e) => {
                self.failed(&e);
                false
            }
        }
    }

    /// Flushes; the pending lines count as delivered or failed.
    fn settle(&mut self, pending: &mut u64, outcome: &mut Outcome) {
        if let Some(out) = self.out.as_mut() {
            match out.flush() {
                Ok(()) => outcome.delivered += *pending,
                Err(e) => {
                    outcome.failed += *pending;
                    self.failed(&e);
                }
            }
        } else {
            outcome.failed += *pending;
        }
        *pending = 0;
    }

    /// `PATH.{keep-1}` → `PATH.{keep}`, ..., `PATH` → `PATH.1`; the next write opens a
    /// new `PATH`. A rename that fails is logged and writing goes on where it can.
    fn rotate(&mut self) {
        self.out = None;
        let numbered = |n: u32| {
            let mut p = self.path.clone().into_os_string();
            p.push(format!(".{n}"));
            PathBuf::from(p)
        };
        for n in (1..self.keep).rev() {
            let from = numbered(n);
            if let Err(e) = std::fs::rename(&from, numbered(n + 1))
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::error!(path = %from.display(), error = %e, "cannot rotate alert file");
            }
        }
        if let Err(e) = std::fs::rename(&self.path, numbered(1)) {
            tracing::error!(path = %self.path.display(), error = %e, "cannot rotate alert file");
        }
        self.size = 0;
    }

    fn failed(&mut self, e: &std::io::Error) {
        tracing::error!(path = %self.path.display(), error = %e, "cannot write alert file");
        // Reopen next time: the file may have been moved away or the disk freed.
        self.out = None;
    }
}

/// Opens `path` for appending (0600, its directory 0700 if created) without blocking,
/// and refuses anything but a regular file (a FIFO or a device named by mistake).
/// Returns the file and its size.
fn open_append(path: &Path) -> std::io::Result<(File, u64)> {
    // Alerts name accounts and addresses: the oracle's user only.
    if let Some(dir) = path.parent() {
        crate::files::create_private_dir(dir)?;
    }
    let file = crate::files::private_append()
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other(format!(
            "{} is {}, not a regular file",
            path.display(),
            crate::files::describe_type(&meta)
        )));
    }
    Ok((file, meta.len()))
}
