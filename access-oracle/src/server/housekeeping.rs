//! Periodic upkeep of the running oracle: forget idle state, write the state snapshot
//! (each one starts the journal's next file), report a journal that cannot write,
//! reread the accounts file when it changes. Restores the snapshot and replays the
//! journal at start.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::watch;

use crate::engine::{Engine, storage};
use crate::persist::{self, journal, snapshot};

/// How often idle accounts and addresses are forgotten and the snapshot is written.
const EVERY: Duration = Duration::from_secs(60);

/// What upkeep needs from the config.
#[derive(Debug, Clone)]
pub struct Upkeep {
    /// Idle time before an entry is forgotten, in seconds.
    pub idle_secs: u64,
    /// Accounts tracked at most.
    pub max_accounts: usize,
    /// Where the snapshot is written.
    pub state_dir: PathBuf,
}

/// Reads the snapshot into the engine's state and replays the journal after it, then
/// opens the journal (when `journal_flush_ms` is set: flushed that often). A damaged
/// snapshot is moved aside and reported, and the oracle starts from what the journal
/// holds rather than not at all; a damaged journal file is applied up to the damage,
/// moved aside and reported.
pub fn restore(engine: &Engine, dir: &Path, journal_flush_ms: Option<u64>) {
    let now = Timestamp::now().as_second();
    // The audit trail's head the snapshot keeps a copy of, for a snapshot written here.
    let audit_head = snapshot::read_header(dir)
        .ok()
        .flatten()
        .and_then(|h| h.audit);
    let restored = persist::restore::restore(engine.state(), dir, now);
    match &restored.snapshot {
        Ok(Some(c)) => tracing::info!(
            baselines = c.baselines,
            holds = c.holds,
            ip_blocks = c.ip_blocks,
            windows = c.windows,
            version = c.version,
            "state restored from the snapshot"
        ),
        Ok(None) => tracing::info!(dir = %dir.display(), "no state snapshot yet"),
        // Nothing of a damaged file is kept (snapshot::read refuses it whole).
        Err(e) => match &restored.set_aside {
            Some(Ok(to)) => tracing::error!(error = %e, moved_to = %to.display(),
                "the state snapshot is damaged: nothing of it was restored; starting from what the journal holds, the file kept aside for inspection"),
            Some(Err(why)) => tracing::error!(error = %e, cannot_move = %why,
                "the state snapshot is damaged: nothing of it was restored; starting from what the journal holds, and the file could not be moved aside (the next snapshot replaces it)"),
            None => tracing::error!(error = %e, "the state snapshot is damaged"),
        },
    }
    match &restored.journal {
        Ok(r) => {
            if r.files > 0 {
                tracing::info!(
                    files = r.files,
                    records = r.records,
                    applied = r.applied,
                    "state journal replayed"
                );
            }
            for d in &r.damaged {
                match &d.moved_to {
                    Some(to) => {
                        tracing::error!(file = %d.file.display(), offset = d.offset, error = %d.reason, moved_to = %to.display(),
                        "the state journal is damaged: the records before the damage were applied, the rest of the file was not; the file kept aside for inspection")
                    }
                    None => {
                        tracing::error!(file = %d.file.display(), offset = d.offset, error = %d.reason,
                        "the state journal is damaged: the records before the damage were applied, the rest of the file was not; the file could not be moved aside")
                    }
                }
            }
        }
        Err(e) => tracing::error!(dir = %dir.display(), error = %e,
            "cannot read the state journal: what changed after the snapshot was not restored"),
    }
    // A journal file set aside (damaged) no longer holds what was replayed from it, and
    // one left by a journal now turned off would be replayed over newer state at every
    // start: what they held goes into a snapshot now, and the files go.
    let damaged = restored
        .journal
        .as_ref()
        .is_ok_and(|r| !r.damaged.is_empty());
    let left_over =
        journal_flush_ms.is_none() && restored.journal.as_ref().is_ok_and(|r| r.files > 0);
    if damaged || left_over {
        let head = audit_head.as_ref();
        match snapshot::write(engine.state(), dir, now, head, Some(restored.next)) {
            Ok(_) => journal::forget_before(dir, restored.next),
            Err(e) => tracing::error!(error = %e,
                "cannot write the state snapshot after replaying the journal; its files are kept and replayed again at the next start"),
        }
    }
    if let Some(ms) = journal_flush_ms {
        let j = journal::JournalFile::open(
            dir,
            restored.next.generation,
            restored.next.seq,
            Duration::from_millis(ms),
        );
        engine.set_journal(j);
    }
}

/// Writes the snapshot now (off the async threads) if anything it keeps changed since
/// the last one: the state, or the audit trail's head (kept in it as a second copy).
pub async fn write_snapshot(engine: Arc<Engine>, dir: PathBuf) {
    let dirty = engine.state().take_dirty();
    let audit_moved = engine.audit().is_some_and(|a| a.take_head_changed());
    if !dirty && !audit_moved {
        return;
    }
    let now = Timestamp::now().as_second();
    let head = engine.audit().and_then(|a| a.head());
    let path = dir.join(snapshot::FILE_NAME);
    let writer = engine.clone();
    let journal = engine.journal().cloned();
    let result = tokio::task::spawn_blocking(move || {
        // The journal's next file starts before the snapshot reads the state: what the
        // snapshot may miss is in the new file, and the older files go once it is on disk.
        let mark = journal.as_ref().map(|j| j.rotate());
        let written = snapshot::write(writer.state(), &dir, now, head.as_ref(), mark);
        if written.is_ok()
            && let (Some(j), Some(m)) = (&journal, mark)
        {
            j.snapshot_written(m);
        }
        written
    })
    .await;
    match result {
        Ok(Ok(c)) => {
            tracing::debug!(
                baselines = c.baselines,
                holds = c.holds,
                ip_blocks = c.ip_blocks,
                windows = c.windows,
                "state snapshot written"
            );
            engine.storage_recovered(storage::SNAPSHOT, Timestamp::now());
        }
        Ok(Err(e)) => {
            // Try again at the next tick. The first failure of an episode is logged at
            // error level and alerted (critical) by the engine.
            engine.state().mark_dirty();
            tracing::warn!(error = %e, "cannot write the state snapshot; tried again in a minute");
            engine.storage_failed(storage::SNAPSHOT, &path, &e.to_string(), Timestamp::now());
        }
        Err(e) => tracing::error!(error = %e, "the snapshot task failed"),
    }
}

/// How often the journal's health is looked at.
const JOURNAL_CHECK: Duration = Duration::from_secs(1);

/// Changes in the journal after which a snapshot is written before the minute is up:
/// a restart replays at most about this many (a quarter of a million replay in about
/// 0.3 s, beside the snapshot's own read: docs/PERFORMANCE.md, "State journal").
const JOURNAL_SNAPSHOT_AFTER: u64 = 250_000;

/// Reports the journal failing (once per episode, through the engine: a critical alert
/// and a log line) or writing again, and asks for a snapshot while it fails: the
/// snapshot starts its next file.
fn check_journal(engine: &Engine) {
    let Some(j) = engine.journal() else {
        return;
    };
    let status = j.status();
    let failing = status.failed.load(std::sync::atomic::Ordering::Relaxed)
        || status.incomplete.load(std::sync::atomic::Ordering::Relaxed);
    if failing {
        engine.state().mark_dirty();
        let last = status
            .last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some((path, error)) = last {
            engine.storage_failed(storage::JOURNAL, &path, &error, Timestamp::now());
        }
    } else {
        engine.storage_recovered(storage::JOURNAL, Timestamp::now());
    }
}

/// Sweeps and snapshots every minute until shutdown; looks at the journal every second.
pub async fn run(engine: Arc<Engine>, upkeep: Upkeep, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut journal_tick = tokio::time::interval(JOURNAL_CHECK);
    journal_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = journal_tick.tick() => {
                check_journal(&engine);
                // A busy minute: the snapshot comes early, so a restart stays short.
                if engine.journal().is_some_and(|j| j.since_snapshot() >= JOURNAL_SNAPSHOT_AFTER) {
                    write_snapshot(engine.clone(), upkeep.state_dir.clone()).await;
                }
            }
            _ = tick.tick() => {
                let now = Timestamp::now();
                let dropped = engine.sweep(now, upkeep.idle_secs, upkeep.max_accounts);
                let b = engine.baseline_config();
                let forgotten = engine.state().sweep_baselines(
                    now.as_second(), b.retention_secs as i64, b.max_accounts);
                if dropped + forgotten > 0 {
                    tracing::debug!(dropped, forgotten, "forgot idle accounts, addresses and baselines");
                }
                write_snapshot(engine.clone(), upkeep.state_dir.clone()).await;
            }
            _ = shutdown.changed() => break,
        }
    }
}

/// Rereads the disabled-accounts file when it changes, until shutdown.
pub async fn watch_accounts_file(
    engine: Arc<Engine>,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every.max(Duration::from_secs(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let disabled = engine.enrichment().disabled.clone();
                if disabled.path().is_none() {
                    continue;
                }
                match tokio::task::spawn_blocking(move || disabled.reload()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::error!(error = %e, "keeping the previous accounts list"),
                    Err(e) => tracing::error!(error = %e, "the accounts file task failed"),
                }
            }
            _ = shutdown.changed() => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, RawConfig};

    fn engine() -> Engine {
        let config = Config::from_raw(RawConfig::default()).unwrap();
        Engine::new(&config, Timestamp::now()).0
    }

    fn held(e: &Engine, user: &str) -> bool {
        let cmd = crate::protocol::parse_line(
            format!("auth user={user} ip=192.0.2.9 result=ok").as_bytes(),
        )
        .unwrap();
        e.handle(&cmd, Timestamp::now()).to_string() != "accept"
    }

    #[test]
    fn a_journal_turned_off_is_put_into_a_snapshot_and_goes() {
        let dir = tempfile::tempdir().unwrap();
        {
            let e = engine();
            restore(&e, dir.path(), Some(1000));
            e.hold("dave", 3600, None, Timestamp::now(), "uid 0 (root)");
            // Killed: no snapshot.
        }
        assert!(!dir.path().join(snapshot::FILE_NAME).exists());
        let e = engine();
        restore(&e, dir.path(), None);
        assert!(held(&e, "dave"));
        assert!(e.journal().is_none());
        assert!(journal::files(dir.path()).unwrap().is_empty());
        assert!(dir.path().join(snapshot::FILE_NAME).exists());
        // The next start has it from the snapshot alone.
        let e = engine();
        restore(&e, dir.path(), None);
        assert!(held(&e, "dave"));
    }

    #[test]
    fn a_journal_that_loses_changes_is_alerted_once_and_until_a_snapshot_holds_them() {
        let dir = tempfile::tempdir().unwrap();
        for g in 2..=40 {
            std::fs::create_dir(dir.path().join(journal::file_name(g))).unwrap();
        }
        // The alerts' receiver kept: a closed queue (shutdown) raises nothing.
        let config = Config::from_raw(RawConfig::default()).unwrap();
        let (e, _alerts) = Engine::new(&config, Timestamp::now());
        let j = journal::JournalFile::open_sized(dir.path(), 1, 0, Duration::from_secs(3600), 8192);
        e.set_journal(j.clone());
        let storage = |e: &Engine, rule: &str| {
            e.recent_alerts(100)
                .iter()
                .filter(|a| a.rule == rule)
                .count()
        };
        check_journal(&e);
        assert_eq!(storage(&e, storage::STORAGE_FAILED), 0, "nothing lost yet");
        let mut n = 0;
        while j.status().lost.load(std::sync::atomic::Ordering::Relaxed) == 0 {
            e.hold(
                &format!("u{n}"),
                600,
                None,
                Timestamp::now(),
                "uid 0 (root)",
            );
            n += 1;
        }
        // Looked at every second: one alert for the episode.
        for _ in 0..3 {
            check_journal(&e);
        }
        assert_eq!(storage(&e, storage::STORAGE_FAILED), 1);
        // Room again and a snapshot written: recovered.
        for g in 2..=40 {
            std::fs::remove_dir(dir.path().join(journal::file_name(g))).unwrap();
        }
        j.flush();
        check_journal(&e);
        assert_eq!(
            storage(&e, storage::STORAGE_RECOVERED),
            0,
            "not before a snapshot"
        );
        let mark = j.rotate();
        snapshot::write(
            e.state(),
            dir.path(),
            Timestamp::now().as_second(),
            None,
            Some(mark),
        )
        .unwrap();
        j.snapshot_written(mark);
        check_journal(&e);
        assert_eq!(storage(&e, storage::STORAGE_RECOVERED), 1);
        assert_eq!(storage(&e, storage::STORAGE_FAILED), 1);
    }
}
