//! Each sink's delivery counters, shared by its queue (dropped, queued) and its task
//! (delivered, failed, retried), read by `ctl status`. Relaxed atomics: no lock on the
//! way of an alert.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// One alert sink's delivery counters (`ctl status`), shared by its queue and its task.
#[derive(Debug, Default)]
pub struct SinkCounters {
    /// The sink's name (`[[sinks]] name`).
    pub name: String,
    /// Its type (`[[sinks]] type`).
    pub kind: &'static str,
    /// Alerts delivered.
    pub delivered: AtomicU64,
    /// Alerts the sink tried and failed to deliver (given up).
    pub failed: AtomicU64,
    /// Further attempts made after a failed one.
    pub retried: AtomicU64,
    /// Alerts dropped by the sink's `when_full` policy (its queue was full).
    pub dropped: AtomicU64,
    /// Alerts waiting in its queue now.
    pub queued: AtomicU64,
    /// Alerts folded into a group (`group_secs`): counted in a later notification.
    pub grouped: AtomicU64,
    /// Notifications held back by the rate limit (summed up in a later one).
    pub suppressed: AtomicU64,
}

impl SinkCounters {
    /// Counters at zero for a sink.
    pub fn new(name: &str, kind: &'static str) -> SinkCounters {
        SinkCounters {
            name: name.to_string(),
            kind,
            ..SinkCounters::default()
        }
    }

    /// The counters at this moment.
    pub fn snapshot(&self) -> SinkSnapshot {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SinkSnapshot {
            name: self.name.clone(),
            kind: self.kind,
            delivered: get(&self.delivered),
            failed: get(&self.failed),
            retried: get(&self.retried),
            dropped: get(&self.dropped),
            queued: get(&self.queued),
            grouped: get(&self.grouped),
            suppressed: get(&self.suppressed),
        }
    }
}

/// One sink's counters at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SinkSnapshot {
    /// The sink's name.
    pub name: String,
    /// Its type.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Alerts delivered.
    pub delivered: u64,
    /// Alerts given up on.
    pub failed: u64,
    /// Attempts after a failure.
    pub retried: u64,
    /// Alerts dropped because its queue was full.
    pub dropped: u64,
    /// Alerts waiting in its queue.
    pub queued: u64,
    /// Alerts folded into a group.
    pub grouped: u64,
    /// Notifications held back by the rate limit.
    pub suppressed: u64,
}
