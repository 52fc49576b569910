//! Periodic upkeep of the running oracle: forget idle state, write the state snapshot,
//! reread the accounts file when it changes. Restores the snapshot at start.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::watch;

use crate::engine::Engine;
use crate::persist::snapshot;

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

/// Reads the snapshot into the engine's state. A damaged snapshot is moved aside and
/// reported; the oracle then starts from empty state rather than not at all.
pub fn restore(engine: &Engine, dir: &Path) {
    let now = Timestamp::now().as_second();
    match snapshot::read(engine.state(), dir, now) {
        Ok(Some(c)) => tracing::info!(
            baselines = c.baselines,
            holds = c.holds,
            ip_blocks = c.ip_blocks,
            windows = c.windows,
            version = c.version,
            "state restored from the snapshot"
        ),
        Ok(None) => tracing::info!(dir = %dir.display(), "no state snapshot yet: starting empty"),
        // Nothing of a damaged file is kept (snapshot::read refuses it whole).
        Err(e) => match snapshot::set_aside(dir, now) {
            Ok(to) => tracing::error!(error = %e, moved_to = %to.display(),
                "the state snapshot is damaged: nothing of it was restored; starting empty, the file kept aside for inspection"),
            Err(why) => tracing::error!(error = %e, cannot_move = %why,
                "the state snapshot is damaged: nothing of it was restored; starting empty, and the file could not be moved aside (the next snapshot replaces it)"),
        },
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
    let writer = engine.clone();
    let result = tokio::task::spawn_blocking(move || {
        snapshot::write(writer.state(), &dir, now, head.as_ref())
    })
    .await;
    match result {
        Ok(Ok(c)) => tracing::debug!(
            baselines = c.baselines,
            holds = c.holds,
            ip_blocks = c.ip_blocks,
            windows = c.windows,
            "state snapshot written"
        ),
        Ok(Err(e)) => {
            // Try again at the next tick.
            engine.state().mark_dirty();
            tracing::error!(error = %e, "cannot write the state snapshot")
        }
        Err(e) => tracing::error!(error = %e, "the snapshot task failed"),
    }
}

/// Sweeps and snapshots every minute until shutdown.
pub async fn run(engine: Arc<Engine>, upkeep: Upkeep, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
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
