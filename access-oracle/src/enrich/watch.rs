//! Noticing that enrichment files changed: inotify on their directories, with a polling
//! fallback, shared by [`super::geoip::watch`] and [`super::lists::watch`].
//!
//! A notification names a file but not whether its writer is done, so changes are
//! debounced: the reload runs once notifications have been quiet for [`SETTLE`] (at most
//! [`SETTLE_MAX`] after the first). A reload that still catches a half-written file
//! refuses it and keeps the old data; the writer's next event triggers another try.
//! Polling compares a cheap [`FileStamp`] and never reads an unchanged file.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, EventKind, MetadataKind, ModifyKind};
use notify::{RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};

/// Quiet time after the last notification before a reload.
pub(crate) const SETTLE: Duration = Duration::from_millis(250);
/// Longest wait after the first notification of a burst.
pub(crate) const SETTLE_MAX: Duration = Duration::from_secs(5);

/// What identifies a version of a file without reading it: a rename brings a new inode, an
/// in-place write a new size or modification / change time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileStamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl FileStamp {
    /// The stamp of the file at `path` (following symlinks).
    pub(crate) fn of(path: &Path) -> std::io::Result<FileStamp> {
        let m = std::fs::metadata(path)?;
        Ok(FileStamp::from_metadata(&m))
    }

    /// The stamp of an open file's metadata.
    pub(crate) fn from_metadata(m: &std::fs::Metadata) -> FileStamp {
        FileStamp {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
            ctime_ns: i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()),
        }
    }
}

/// Reads a whole file and its stamp, taken from the same open file: only a regular file
/// of at most `limit` bytes, not writable by everyone ([`crate::files::read_bounded`]).
pub(crate) fn read_with_stamp(
    path: &Path,
    limit: crate::files::Limit,
) -> std::io::Result<(Vec<u8>, FileStamp)> {
    let (bytes, meta) = crate::files::read_bounded(path, limit)?;
    Ok((bytes, FileStamp::from_metadata(&meta)))
}

/// Why a reload runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Trigger {
    /// A notification named one of the files: read them and compare.
    Notified,
    /// The polling interval: look only at files whose stamp changed.
    Poll,
}

/// Whether an inotify event can mean new content (our own reads open the file too).
fn is_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        EventKind::Modify(ModifyKind::Metadata(MetadataKind::AccessTime)) => false,
        _ => true,
    }
}

/// Runs until `shutdown` turns true (or its sender is gone), calling `reload` on a
/// blocking thread once at start (for changes since the files were opened), after a
/// debounced notification about one of `paths`, and every `poll`.
pub(crate) async fn watch_files<F>(
    what: &'static str,
    paths: Vec<PathBuf>,
    poll: Duration,
    use_notify: bool,
    mut shutdown: watch::Receiver<bool>,
    reload: F,
) where
    F: Fn(Trigger) + Send + Sync + Clone + 'static,
{
    if paths.is_empty() || *shutdown.borrow() {
        return;
    }
    let (tx, mut rx) = mpsc::channel::<()>(1);
    let _watcher = if use_notify {
        notifier(what, &paths, tx)
    } else {
        None
    };
    // A change between the files' first read and the watch above is seen now.
    run(what, &reload, Trigger::Poll).await;
    let poll = poll.max(Duration::from_millis(100));
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + poll, poll);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let trigger = tokio::select! {
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    return;
                }
                continue;
            }
            Some(()) = rx.recv() => {
                let first = tokio::time::Instant::now();
                loop {
                    let quiet = tokio::time::sleep(SETTLE);
                    tokio::select! {
                        Some(()) = rx.recv() => {
                            if first.elapsed() >= SETTLE_MAX { break; }
                        }
                        _ = quiet => break,
                    }
                }
                Trigger::Notified
            }
            _ = ticks.tick() => Trigger::Poll,
        };
        run(what, &reload, trigger).await;
        if *shutdown.borrow() {
            return;
        }
    }
}

/// Runs `reload` on a blocking thread (it reads files) and waits for it.
async fn run<F>(what: &'static str, reload: &F, trigger: Trigger)
where
    F: Fn(Trigger) + Send + Sync + Clone + 'static,
{
    let reload = reload.clone();
    if let Err(e) = tokio::task::spawn_blocking(move || reload(trigger)).await {
        tracing::error!(what, error = %e, "reload task failed");
    }
}

/// An inotify watcher on the directories of `paths` that wakes `tx` for events naming one
/// of the files; `None` (polling only) when notifications are unavailable.
fn notifier(
    what: &'static str,
    paths: &[PathBuf],
    tx: mpsc::Sender<()>,
) -> Option<notify::RecommendedWatcher> {
    let names: BTreeSet<OsString> = paths
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_os_string()))
        .collect();
    let dirs: BTreeSet<PathBuf> = paths
        .iter()
        .filter_map(|p| p.parent().map(Path::to_path_buf))
        .collect();
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        let Ok(ev) = ev else { return };
        if is_change(&ev.kind)
            && ev
                .paths
                .iter()
                .any(|p| p.file_name().is_some_and(|n| names.contains(n)))
        {
            // Full means a wake-up is already pending: nothing is lost.
            let _ = tx.try_send(());
        }
    })
    .map_err(|e| tracing::warn!(what, error = %e, "no file notifications; polling only"))
    .ok()?;
    for dir in &dirs {
        if let Err(e) = watcher.watch(dir, RecursiveMode::NonRecursive) {
            tracing::warn!(what, dir = %dir.display(), error = %e,
                "cannot watch the directory; polling only for its files");
        }
    }
    Some(watcher)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_tell_a_rename_and_an_append() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"one").unwrap();
        let a = FileStamp::of(&p).unwrap();
        assert_eq!(a, FileStamp::of(&p).unwrap());
        let limit = crate::files::Limit {
            what: "a test file",
            max_bytes: 10,
            why: "a test",
        };
        let (bytes, b) = read_with_stamp(&p, limit).unwrap();
        assert_eq!((bytes.as_slice(), b), (&b"one"[..], a));
        std::fs::write(dir.path().join("g"), b"two").unwrap();
        std::fs::rename(dir.path().join("g"), &p).unwrap();
        assert_ne!(a, FileStamp::of(&p).unwrap());
        let c = FileStamp::of(&p).unwrap();
        std::fs::write(&p, b"three").unwrap();
        assert_ne!(c, FileStamp::of(&p).unwrap());
    }

    #[test]
    fn our_own_reads_are_not_changes() {
        assert!(!is_change(&EventKind::Access(AccessKind::Open(
            AccessMode::Any
        ))));
        assert!(!is_change(&EventKind::Access(AccessKind::Close(
            AccessMode::Read
        ))));
        assert!(is_change(&EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
        assert!(is_change(&EventKind::Modify(ModifyKind::Any)));
        assert!(is_change(&EventKind::Create(
            notify::event::CreateKind::File
        )));
    }

    #[tokio::test(start_paused = true)]
    async fn polls_until_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (stop, rx) = watch::channel(false);
        let c = calls.clone();
        let task = tokio::spawn(watch_files(
            "test",
            vec![dir.path().join("x")],
            Duration::from_secs(60),
            false,
            rx,
            move |t| {
                assert_eq!(t, Trigger::Poll);
                c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            },
        ));
        // Virtual time: each sleep lets one poll (60 s) happen.
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_secs(61)).await;
        }
        stop.send(true).unwrap();
        task.await.unwrap();
        assert!(calls.load(std::sync::atomic::Ordering::SeqCst) >= 2);
    }
}
