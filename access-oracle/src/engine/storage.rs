//! Storage failures: the state snapshot, the audit trail or the state journal cannot be
//! written (a full disk, an I/O error). Verdicts go on from memory; what must not go
//! unnoticed is that what should survive a restart, or what auditors rely on, is not
//! reaching the disk.
//!
//! One entry point for every part that writes ([`Engine::storage_failed`],
//! [`Engine::storage_recovered`]), so each is told the same way: the first failure of an
//! episode is logged at error level and raises one critical alert (rule
//! [`STORAGE_FAILED`]) through the normal alert path, so every sink gets it; further
//! failures of the same part are only counted (a writer retries every second, the
//! snapshot every minute) until the part writes again, which is logged and raises an
//! info alert ([`STORAGE_RECOVERED`]). Each part has its own episodes: a snapshot that
//! fails while the audit trail already does raises its own alert.

use std::path::Path;
use std::sync::{Arc, Mutex};

use jiff::Timestamp;

use super::Engine;
use crate::alert::Alert;
use crate::audit::writer::Health;
use crate::rules::{Response, Severity};

/// The rule name of the alert raised when a part cannot write (severity critical).
pub const STORAGE_FAILED: &str = "storage_failed";

/// The rule name of the alert raised when a part that failed writes again (info).
pub const STORAGE_RECOVERED: &str = "storage_recovered";

/// The state snapshot (`<state_dir>/state.snapshot`, written every minute).
pub const SNAPSHOT: &str = "snapshot";
/// The audit trail (its segments and `head.json`).
pub const AUDIT: &str = "audit";
/// The state journal (what changed since the last snapshot).
pub const JOURNAL: &str = "journal";

/// The parts failing now, each with its episode.
#[derive(Debug, Default)]
pub(crate) struct Episodes {
    failing: Mutex<Vec<(&'static str, Episode)>>,
}

/// One part's failures since it last wrote.
#[derive(Debug, Clone)]
struct Episode {
    /// The first failure.
    since: Timestamp,
    /// Failed attempts, the first included.
    failures: u64,
    /// The last error, escaped.
    error: String,
}

/// A part's name in words, for the alert and the log.
fn what(part: &str) -> &str {
    match part {
        SNAPSHOT => "the state snapshot",
        AUDIT => "the audit trail",
        JOURNAL => "the state journal",
        other => other,
    }
}

/// What a part failing means, for the alert and the log.
fn consequence(part: &str) -> &'static str {
    match part {
        SNAPSHOT => {
            "holds, blocks and counts are kept in memory and the snapshot is tried again every minute; a restart before it is written loses what changed since the last one"
        }
        AUDIT => {
            "audit records wait in memory and are written, after a record of the gap, when writing works again; a crash before that loses them"
        }
        JOURNAL => {
            "changes since the last snapshot are not journalled; a crash before the next snapshot loses them"
        }
        _ => "what it keeps is not on disk",
    }
}

impl Engine {
    /// Says that `part` (`"snapshot"`, `"audit"`, `"journal"`: [`SNAPSHOT`], [`AUDIT`],
    /// [`JOURNAL`]) could not write `path` at `now`, with `error`. Call it at every
    /// failed attempt: the first of an episode is logged at error level and raises a
    /// critical `storage_failed` alert; the rest are counted until
    /// [`Engine::storage_recovered`] ends the episode. Never waits: callable from any
    /// thread, the writer threads included.
    pub fn storage_failed(&self, part: &'static str, path: &Path, error: &str, now: Timestamp) {
        let error = crate::text::escape_controls(error).into_owned();
        let first = {
            let mut failing = self
                .storage
                .failing
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            match failing.iter_mut().find(|(p, _)| *p == part) {
                Some((_, episode)) => {
                    episode.failures += 1;
                    episode.error.clone_from(&error);
                    false
                }
                None => {
                    failing.push((
                        part,
                        Episode {
                            since: now,
                            failures: 1,
                            error: error.clone(),
                        },
                    ));
                    true
                }
            }
        };
        if !first {
            tracing::debug!(part, error = %error, "storage still failing");
            return;
        }
        let path = crate::text::escape_controls(&path.to_string_lossy()).into_owned();
        let (what, then) = (what(part), consequence(part));
        tracing::error!(part, path = %path, error = %error,
            "storage failed: cannot write {what} ({then}); verdicts go on");
        self.raise_storage(Alert {
            time: now,
            rule: STORAGE_FAILED,
            severity: Severity::Critical,
            account: None,
            ip: None,
            rdns: None,
            protocol: None,
            count: 1,
            counts: serde_json::json!({
                "part": part,
                "path": path,
                "error": error,
            }),
            threshold: 0,
            window_secs: 0,
            response: Response::Alert,
            expires: now,
            summary: format!("cannot write {what} ({path}): {error}; verdicts go on, but {then}"),
            group: None,
            context: None,
            observed: false,
        });
    }

    /// Says that `part` wrote again at `now`: when it was failing, the episode ends,
    /// logged and raised as an info `storage_recovered` alert. Cheap when it was not.
    pub fn storage_recovered(&self, part: &'static str, now: Timestamp) {
        let episode = {
            let mut failing = self
                .storage
                .failing
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let Some(i) = failing.iter().position(|(p, _)| *p == part) else {
                return;
            };
            failing.swap_remove(i).1
        };
        let lasted = now.as_second().saturating_sub(episode.since.as_second());
        let lasted = crate::time::human_secs(lasted.max(0) as u64);
        let what = what(part);
        tracing::warn!(part, since = %episode.since, failures = episode.failures,
            last_error = %episode.error, "storage recovered: {what} is written again");
        self.raise_storage(Alert {
            time: now,
            rule: STORAGE_RECOVERED,
            severity: Severity::Info,
            account: None,
            ip: None,
            rdns: None,
            protocol: None,
            count: episode.failures,
            counts: serde_json::json!({
                "part": part,
                "since": episode.since,
                "failures": episode.failures,
                "last_error": episode.error,
            }),
            threshold: 0,
            window_secs: 0,
            response: Response::Alert,
            expires: now,
            summary: format!(
                "{what} is written again, after failing for {lasted} since {} ({} failed attempts; the last: {})",
                episode.since, episode.failures, episode.error
            ),
            group: None,
            context: None,
            observed: false,
        });
    }

    /// The parts failing now: name, since when, failed attempts, last error.
    pub fn storage_failing(&self) -> Vec<(&'static str, Timestamp, u64, String)> {
        self.storage
            .failing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(p, e)| (*p, e.since, e.failures, e.error.clone()))
            .collect()
    }

    /// Has the audit trail's writer tell this engine when it cannot write and when it
    /// writes again (part [`AUDIT`]). Through a weak reference: the writer's thread does
    /// not keep the engine alive. A no-op when the trail is off.
    pub fn watch_audit_storage(self: &Arc<Self>) {
        let Some(sink) = self.audit() else {
            return;
        };
        let engine = Arc::downgrade(self);
        sink.watch(Arc::new(move |health: Health<'_>| {
            let Some(engine) = engine.upgrade() else {
                return;
            };
            match health {
                Health::Failing { path, error, at } => {
                    engine.storage_failed(AUDIT, path, error, at);
                }
                Health::Writing { at, .. } => engine.storage_recovered(AUDIT, at),
            }
        }));
    }

    /// Raises a storage alert, unless the alert queue is closed (at shutdown, after the
    /// sinks stopped: the log line is then the whole report).
    fn raise_storage(&self, alert: Alert) {
        if !self.alerts.is_closed() {
            self.raise(alert);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine() -> (Engine, tokio::sync::mpsc::Receiver<Arc<Alert>>) {
        let config = crate::config::Config::from_raw(crate::config::RawConfig::default()).unwrap();
        Engine::new(&config, Timestamp::from_second(1_800_000_000).unwrap())
    }

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    fn drain(rx: &mut tokio::sync::mpsc::Receiver<Arc<Alert>>) -> Vec<Arc<Alert>> {
        let mut out = Vec::new();
        while let Ok(a) = rx.try_recv() {
            out.push(a);
        }
        out
    }

    #[test]
    fn one_critical_alert_per_episode_and_part_and_one_on_recovery() {
        let (engine, mut rx) = engine();
        let path = Path::new("/var/lib/access-oracle/state.snapshot");
        for i in 0..5 {
            engine.storage_failed(
                SNAPSHOT,
                path,
                "No space left on device (os error 28)",
                at(i),
            );
        }
        let alerts = drain(&mut rx);
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        assert_eq!(alerts[0].rule, STORAGE_FAILED);
        assert_eq!(alerts[0].severity, Severity::Critical);
        assert_eq!(alerts[0].counts["part"], "snapshot");
        assert!(
            alerts[0].summary.contains("No space left"),
            "{}",
            alerts[0].summary
        );
        // Another part has its own episode.
        engine.storage_failed(AUDIT, Path::new("/a"), "EIO", at(6));
        assert_eq!(drain(&mut rx).len(), 1);
        assert_eq!(engine.storage_failing().len(), 2);

        engine.storage_recovered(SNAPSHOT, at(65));
        let alerts = drain(&mut rx);
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].rule, STORAGE_RECOVERED);
        assert_eq!(alerts[0].severity, Severity::Info);
        assert_eq!(alerts[0].count, 5);
        assert!(
            alerts[0].summary.contains("for 65 s since"),
            "{}",
            alerts[0].summary
        );
        // Recovering again, or a part that never failed, says nothing.
        engine.storage_recovered(SNAPSHOT, at(66));
        engine.storage_recovered(JOURNAL, at(66));
        assert!(drain(&mut rx).is_empty());
        // A new failure is a new episode.
        engine.storage_failed(SNAPSHOT, path, "again", at(120));
        assert_eq!(drain(&mut rx).len(), 1);
        let failing: Vec<_> = engine.storage_failing().iter().map(|f| f.0).collect();
        assert_eq!(failing.len(), 2);
        assert!(failing.contains(&SNAPSHOT) && failing.contains(&AUDIT));
    }

    #[test]
    fn error_and_path_text_is_escaped() {
        let (engine, mut rx) = engine();
        engine.storage_failed(
            JOURNAL,
            Path::new("/state/\x1b[31mjournal"),
            "bad\nline \u{202e}",
            at(0),
        );
        let alert = &drain(&mut rx)[0];
        assert!(!alert.summary.contains('\x1b') && !alert.summary.contains('\n'));
        assert!(!alert.summary.contains('\u{202e}'));
        assert!(
            alert.summary.contains("\\x1b[31mjournal"),
            "{}",
            alert.summary
        );
        assert_eq!(alert.counts["error"], "bad\\x0aline \\u{202e}");
    }

    #[test]
    fn nothing_is_raised_once_the_alert_queue_is_closed() {
        let (engine, rx) = engine();
        drop(rx);
        engine.storage_failed(SNAPSHOT, Path::new("/s"), "full", at(0));
        engine.storage_recovered(SNAPSHOT, at(1));
        assert_eq!(
            engine
                .stats
                .alerts_dropped
                .load(std::sync::atomic::Ordering::Relaxed),
            0
        );
        assert!(engine.storage_failing().is_empty());
    }
}
