//! Counters for `ctl status` and `/metrics`: lock-free, relaxed atomics (the alerts by
//! rule and severity, counted only when an alert is raised, behind a short lock).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::Serialize;

use crate::protocol::{Reply, Verb};
use crate::rules::Severity;
use crate::sinks::{SinkCounters, SinkSnapshot};

/// Request, reply and connection counters.
#[derive(Debug, Default)]
pub struct Stats {
    requests: [AtomicU64; Verb::ALL.len()],
    replies: [AtomicU64; 5],
    /// Verdicts of the Exim socket's verbs by verb and reply kind.
    verdicts: [[AtomicU64; REPLY_KINDS.len()]; Verb::ALL.len()],
    /// How long the engine took over each verdict.
    latency: LatencyHistogram,
    /// Alerts raised by rule and severity.
    alerts_by_rule: Mutex<BTreeMap<(&'static str, Severity), u64>>,
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
    /// Each `[[sources]]` entry's counters, registered when its follower starts.
    sources: RwLock<Vec<Arc<SourceCounters>>>,
}

/// One `[[sources]]` entry's counters (the totals in [`Stats`] count them all).
#[derive(Debug, Default)]
pub struct SourceCounters {
    /// The file followed.
    pub path: String,
    /// Lines read.
    pub lines: AtomicU64,
    /// Events fed to the engine.
    pub events: AtomicU64,
    /// Lines of no known shape.
    pub unrecognised: AtomicU64,
    /// Lines that looked relevant but did not parse.
    pub dead_letters: AtomicU64,
    /// Errors reading it or saving its position.
    pub errors: AtomicU64,
}

/// The reply kinds, as [`Reply::kind`] names them.
pub const REPLY_KINDS: [&str; 5] = ["accept", "defer", "deny", "error", "pong"];

impl Stats {
    /// Registers the running sinks' counters (replacing any registered before).
    pub fn set_sinks(&self, sinks: Vec<Arc<SinkCounters>>) {
        *self.sinks.write().unwrap_or_else(|e| e.into_inner()) = sinks;
    }

    /// The counters of the source following `path`, registered on first use.
    pub fn source(&self, path: &str) -> Arc<SourceCounters> {
        let mut all = self.sources.write().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = all.iter().find(|c| c.path == path) {
            return c.clone();
        }
        let c = Arc::new(SourceCounters {
            path: path.to_string(),
            ..SourceCounters::default()
        });
        all.push(c.clone());
        c
    }

    /// Every registered source's counters, in the order registered.
    pub fn sources(&self) -> Vec<Arc<SourceCounters>> {
        self.sources
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
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

    /// Counts the verdict `reply` on a request of `verb` that took `took` in the engine.
    pub fn verdict(&self, verb: Verb, reply: &Reply, took: Duration) {
        let v = Verb::ALL.iter().position(|x| *x == verb).unwrap_or(0);
        let k = REPLY_KINDS
            .iter()
            .position(|k| *k == reply.kind())
            .unwrap_or(0);
        self.verdicts[v][k].fetch_add(1, Ordering::Relaxed);
        self.latency.record(took);
    }

    /// Counts an alert raised by `rule` at `severity`.
    pub fn alert_raised(&self, rule: &'static str, severity: Severity) {
        self.alerts_raised.fetch_add(1, Ordering::Relaxed);
        *self
            .alerts_by_rule
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((rule, severity))
            .or_insert(0) += 1;
    }

    /// Verdicts by verb and reply kind: every pair that can occur, zeros included
    /// (`pong` answers `ping` only, and `ping` gets nothing else).
    pub fn verdicts(&self) -> Vec<(&'static str, &'static str, u64)> {
        let mut out = Vec::with_capacity(Verb::ALL.len() * REPLY_KINDS.len());
        for (verb, row) in Verb::ALL.iter().zip(&self.verdicts) {
            for (kind, n) in REPLY_KINDS.iter().zip(row) {
                if (*verb == Verb::Ping) == (*kind == "pong") {
                    out.push((verb.as_str(), *kind, n.load(Ordering::Relaxed)));
                }
            }
        }
        out
    }

    /// The verdict latency histogram at one moment.
    pub fn latency(&self) -> LatencySnapshot {
        self.latency.snapshot()
    }

    /// Alerts raised by (rule, severity), in that order.
    pub fn alerts_by_rule(&self) -> Vec<(&'static str, &'static str, u64)> {
        self.alerts_by_rule
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|((rule, severity), n)| (*rule, severity.as_str(), *n))
            .collect()
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

/// The upper bounds of the verdict latency buckets, in microseconds (a last bucket,
/// `+Inf`, takes the rest).
pub const LATENCY_BOUNDS_MICROS: [u64; 14] = [
    5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 100_000, 1_000_000,
];

/// A histogram of verdict latencies in atomic buckets: recording is three relaxed
/// additions, no lock.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    /// Per bucket (not cumulative); the last is over the last bound.
    buckets: [AtomicU64; LATENCY_BOUNDS_MICROS.len() + 1],
    sum_micros: AtomicU64,
    count: AtomicU64,
}

/// [`LatencyHistogram`] at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatencySnapshot {
    /// Observations per bucket (not cumulative), the last over the last bound.
    pub buckets: Vec<u64>,
    /// The sum of the observations, in microseconds.
    pub sum_micros: u64,
    /// The number of observations.
    pub count: u64,
}

impl LatencyHistogram {
    /// Records one observation.
    pub fn record(&self, took: Duration) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let i = LATENCY_BOUNDS_MICROS.partition_point(|b| *b < micros);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// The buckets, sum and count. Read one after the other while verdicts go on, the
    /// count is made the buckets' total so that the two always agree.
    pub fn snapshot(&self) -> LatencySnapshot {
        let buckets: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        LatencySnapshot {
            count: buckets.iter().sum(),
            buckets,
            sum_micros: self.sum_micros.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_fall_in_the_bucket_of_their_upper_bound() {
        let h = LatencyHistogram::default();
        for micros in [0, 5, 6, 1_000, 1_000_001, 3] {
            h.record(Duration::from_micros(micros));
        }
        let s = h.snapshot();
        assert_eq!(s.count, 6);
        assert_eq!(s.sum_micros, 5 + 6 + 1_000 + 1_000_001 + 3);
        assert_eq!(s.buckets[0], 3, "0, 3 and 5 are <= 5");
        assert_eq!(s.buckets[1], 1, "6");
        assert_eq!(s.buckets[7], 1, "1000 is <= 1000");
        assert_eq!(
            s.buckets[LATENCY_BOUNDS_MICROS.len()],
            1,
            "over the last bound"
        );
    }

    #[test]
    fn verdicts_and_alerts_are_counted_by_their_labels() {
        let s = Stats::default();
        s.verdict(Verb::Auth, &Reply::Accept, Duration::from_micros(3));
        s.verdict(Verb::Auth, &Reply::Accept, Duration::from_micros(3));
        s.verdict(
            Verb::Rcpt,
            &Reply::Deny("x".into()),
            Duration::from_micros(3),
        );
        let v = s.verdicts();
        assert_eq!(v.len(), (Verb::ALL.len() - 1) * (REPLY_KINDS.len() - 1) + 1);
        assert!(v.contains(&("auth", "accept", 2)));
        assert!(v.contains(&("rcpt", "deny", 1)));
        assert!(v.contains(&("mail", "defer", 0)));
        s.alert_raised("failed_logins_ip", Severity::High);
        s.alert_raised("failed_logins_ip", Severity::High);
        s.alert_raised("recipients", Severity::Medium);
        assert_eq!(
            s.alerts_by_rule(),
            vec![("failed_logins_ip", "high", 2), ("recipients", "medium", 1)]
        );
        assert_eq!(s.alerts_raised.load(Ordering::Relaxed), 3);
    }
}
