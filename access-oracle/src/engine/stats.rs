//! Counters for `ctl status` (and, later, metrics): lock-free, relaxed atomics.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use serde::Serialize;

use crate::protocol::{Reply, Verb};
use crate::sinks::{SinkCounters, SinkSnapshot};

/// Request, reply and connection counters.
#[derive(Debug, Default)]
pub struct Stats {
    requests: [AtomicU64; Verb::ALL.len()],
    replies: [AtomicU64; 5],
    /// Malformed requests answered with `error`.
    pub malformed: AtomicU64,
    /// Connections accepted on the Exim socket.
    pub connections: AtomicU64,
    /// Connections open now.
    pub open_connections: AtomicU64,
    /// Alerts raised.
    pub alerts_raised: AtomicU64,
    /// Alerts dropped because the queue was full.
    pub alerts_dropped: AtomicU64,
    /// Admin requests refused for lack of a role.
    pub admin_refused: AtomicU64,
    /// Login attempts learnt from logs that the live path had not reported.
    pub log_attempts: AtomicU64,
    /// Log lines read by the `[[sources]]` followers.
    pub source_lines: AtomicU64,
    /// Events the followers fed to the engine.
    pub source_events: AtomicU64,
    /// Log lines of no known shape.
    pub source_unrecognised: AtomicU64,
    /// Log lines that looked relevant but did not parse (in the dead-letter file).
    pub source_dead_letters: AtomicU64,
    /// Errors reading sources or saving positions.
    pub source_errors: AtomicU64,
    /// The policy endpoint's counters.
    pub policy: super::policy::PolicyStats,
    /// Each alert sink's delivery counters, registered when the sinks are built.
    sinks: RwLock<Vec<Arc<SinkCounters>>>,
}

const REPLY_KINDS: [&str; 5] = ["accept", "defer", "deny", "error", "pong"];

impl Stats {
    /// Registers the running sinks' counters (replacing any registered before).
    pub fn set_sinks(&self, sinks: Vec<Arc<SinkCounters>>) {
        *self.sinks.write().unwrap_or_else(|e| e.into_inner()) = sinks;
    }

    /// Counts a request.
    pub fn request(&self, verb: Verb) {
        let i = Verb::ALL.iter().position(|v| *v == verb).unwrap_or(0);
        self.requests[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a reply.
    pub fn reply(&self, reply: &Reply) {
        let i = REPLY_KINDS
            .iter()
            .position(|k| *k == reply.kind())
            .unwrap_or(0);
        self.replies[i].fetch_add(1, Ordering::Relaxed);
    }

    /// A snapshot for display.
    pub fn snapshot(&self) -> StatsSnapshot {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let sinks: Vec<SinkSnapshot> = self
            .sinks
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|s| s.snapshot())
            .collect();
        StatsSnapshot {
            requests: Verb::ALL
                .iter()
                .zip(&self.requests)
                .map(|(v, n)| (v.as_str(), get(n)))
                .collect(),
            replies: REPLY_KINDS
                .iter()
                .zip(&self.replies)
                .map(|(k, n)| (*k, get(n)))
                .collect(),
            malformed: get(&self.malformed),
            connections: get(&self.connections),
            open_connections: get(&self.open_connections),
            alerts_raised: get(&self.alerts_raised),
            alerts_dropped: get(&self.alerts_dropped),
            alert_write_errors: sinks.iter().map(|s| s.failed).sum(),
            admin_refused: get(&self.admin_refused),
            log_attempts: get(&self.log_attempts),
            source_lines: get(&self.source_lines),
            source_events: get(&self.source_events),
            source_unrecognised: get(&self.source_unrecognised),
            source_dead_letters: get(&self.source_dead_letters),
            source_errors: get(&self.source_errors),
            policy: self.policy.snapshot(),
            sinks,
        }
    }
}

/// The counters at one moment.
#[derive(Debug, Clone, Serialize)]
pub struct StatsSnapshot {
    /// Requests by verb.
    pub requests: Vec<(&'static str, u64)>,
    /// Replies by kind.
    pub replies: Vec<(&'static str, u64)>,
    /// Malformed requests.
    pub malformed: u64,
    /// Connections accepted.
    pub connections: u64,
    /// Connections open.
    pub open_connections: u64,
    /// Alerts raised.
    pub alerts_raised: u64,
    /// Alerts dropped (queue full).
    pub alerts_dropped: u64,
    /// Alerts the sinks failed to deliver, all sinks together (each sink's own
    /// counters are in `sinks`).
    pub alert_write_errors: u64,
    /// Admin requests refused.
    pub admin_refused: u64,
    /// Login attempts learnt from logs only.
    pub log_attempts: u64,
    /// Log lines read.
    pub source_lines: u64,
    /// Events from logs.
    pub source_events: u64,
    /// Unrecognised log lines.
    pub source_unrecognised: u64,
    /// Dead-lettered log lines.
    pub source_dead_letters: u64,
    /// Source errors.
    pub source_errors: u64,
    /// The policy endpoint's counters, by name.
    pub policy: Vec<(&'static str, u64)>,
    /// Each alert sink's counters, in the order they were configured.
    pub sinks: Vec<SinkSnapshot>,
}
