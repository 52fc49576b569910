//! The Prometheus endpoint: `GET /metrics` in the Prometheus text format (0.0.4), when
//! `[metrics] listen` is set (`docs/OPERATIONS.md`, section "Metrics", lists every
//! metric).
//!
//! Nothing is counted here: a scrape reads the counters that exist for `ctl status`
//! (the engine's atomics, the sinks' and actions' counters, the listeners', the state
//! maps' sizes, the audit writer's queue, the enrichment files' times), through the
//! same [`views::status`] that `ctl status` answers with, plus the verdict counters, the
//! latency histogram and the per-source counters of [`crate::engine::stats`] and the
//! snapshot file's time. Each scrape builds a `prometheus-client` registry holding one
//! collector over those values and encodes it (a few hundred series); nothing is kept
//! between scrapes.
//!
//! Connections go through the policy endpoint's HTTP loop ([`http`]: `httparse`,
//! keep-alive, the caps, shedding and timeouts of `server::accept`) with a `GET` route.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use jiff::Timestamp;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::admin::views::{self, StatusView};
use crate::config::metrics::MetricsConfig;
use crate::engine::Engine;
use crate::engine::stats::{LATENCY_BOUNDS_MICROS, LatencySnapshot, SourceCounters};
use crate::server::accept::{Limits as Caps, Listeners, Slots};
use crate::server::policy::http::{self, Reply, Request};

/// The only path served.
pub const PATH: &str = "/metrics";

/// The `Content-Type` of the answer: the Prometheus text format, version 0.0.4.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// What a scrape reads.
pub struct Scrape {
    engine: Arc<Engine>,
    listeners: Arc<Listeners>,
    state_dir: PathBuf,
}

impl Scrape {
    /// Reads `engine`'s counters, `listeners`' and the snapshot in `state_dir`.
    pub fn new(engine: Arc<Engine>, listeners: Arc<Listeners>, state_dir: PathBuf) -> Scrape {
        Scrape {
            engine,
            listeners,
            state_dir,
        }
    }

    /// The exposition at `now`.
    pub fn render(&self, now: Timestamp) -> String {
        let facts = Facts::read(&self.engine, &self.listeners, &self.state_dir, now);
        let mut registry = Registry::default();
        registry.register_collector(Box::new(facts));
        let mut out = String::with_capacity(16 * 1024);
        // Writing to a String does not fail, and every name and label is valid.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry);
        out
    }
}

impl http::Handler for Scrape {
    const METHOD: &'static str = "GET";

    fn handle(&self, _request: &Request<'_>, _peer: SocketAddr) -> Reply {
        Reply::typed(CONTENT_TYPE, self.render(Timestamp::now()).into_bytes())
    }
}

/// A running endpoint, for the server's shutdown.
pub struct Endpoint {
    /// The address it listens on.
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
    slots: Arc<Slots>,
}

impl Endpoint {
    /// Waits (until `deadline`) for the accept loop to stop and open connections to
    /// close; returns whether they all did.
    pub async fn finish(self, deadline: tokio::time::Instant) -> bool {
        if self.task.await.is_err() {
            return false;
        }
        tokio::time::timeout_at(deadline, self.slots.closed())
            .await
            .is_ok()
    }
}

/// The connection limits of `[metrics]`.
pub fn limits(config: &MetricsConfig) -> http::Limits {
    http::Limits {
        max_connections: config.max_connections,
        max_connections_per_ip: config.max_connections_per_ip,
        head_timeout: std::time::Duration::from_millis(config.head_timeout_ms),
        request_timeout: std::time::Duration::from_millis(config.request_timeout_ms),
        idle_timeout: std::time::Duration::from_secs(config.idle_timeout_secs),
    }
}

/// Binds the endpoint of `config` (which must have `listen`) and serves `scrape` until
/// `shutdown` turns true, counting its connections in `stats.metrics`.
pub async fn start(
    config: &MetricsConfig,
    scrape: Scrape,
    stats: Arc<Listeners>,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<Endpoint> {
    let addr = config
        .listen_addr()
        .context("metrics.listen is not set or not an address")?;
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (metrics.listen)"))?;
    let addr = listener.local_addr().unwrap_or(addr);
    let limits = limits(config);
    let slots = Slots::new(
        "metrics endpoint",
        Caps {
            max: limits.max_connections,
            max_per_peer: limits.max_connections_per_ip,
        },
        stats,
        |l| &l.metrics,
    );
    let task = tokio::spawn(http::serve_counted(
        listener,
        PATH.into(),
        Arc::new(scrape),
        limits,
        slots.clone(),
        shutdown,
    ));
    tracing::info!(listen = %addr, path = PATH, "metrics endpoint listening");
    Ok(Endpoint { addr, task, slots })
}

/// One sample: its label pairs and value.
type Sample = (Vec<(&'static str, String)>, f64);

/// One metric family: name (without `_total`), help, type, samples.
#[derive(Debug)]
struct Family {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    samples: Vec<Sample>,
}

/// Everything a scrape exports, read at one moment; the collector encodes it.
#[derive(Debug, Default)]
struct Facts {
    families: Vec<Family>,
    latency: Option<LatencySnapshot>,
}

fn labels(pairs: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    pairs.iter().map(|(k, v)| (*k, (*v).to_string())).collect()
}

/// Seconds from an RFC 3339 time to `now`; `None` when it does not read.
fn age(at: &str, now: Timestamp) -> Option<f64> {
    let t: Timestamp = at.parse().ok()?;
    Some((now.as_millisecond() - t.as_millisecond()) as f64 / 1000.0)
}

impl Facts {
    fn add(&mut self, name: &'static str, help: &'static str, kind: MetricType, s: Vec<Sample>) {
        self.families.push(Family {
            name,
            help,
            kind,
            samples: s,
        });
    }

    fn one(&mut self, name: &'static str, help: &'static str, kind: MetricType, v: f64) {
        self.add(name, help, kind, vec![(Vec::new(), v)]);
    }

    fn read(engine: &Engine, listeners: &Listeners, state_dir: &Path, now: Timestamp) -> Facts {
        use MetricType::{Counter, Gauge};
        let l = listeners.snapshot();
        let status: StatusView = views::status(
            engine,
            now,
            views::ServerFacts {
                config: String::new(),
                exim_socket: String::new(),
                listeners: views::ListenersView::new(&l.exim, &l.policy, &l.admin),
            },
        );
        let stats = &engine.stats;
        let c = &status.counters;
        let mut f = Facts {
            latency: Some(stats.latency()),
            ..Facts::default()
        };
        f.one(
            "exim_access_start_time_seconds",
            "When the oracle started, in seconds since the Unix epoch",
            Gauge,
            status.started.as_second() as f64,
        );
        f.add(
            "exim_access_verdicts",
            "Verdicts on the Exim socket by verb and result",
            Counter,
            stats
                .verdicts()
                .into_iter()
                .map(|(verb, result, n)| (labels(&[("verb", verb), ("result", result)]), n as f64))
                .collect(),
        );
        f.one(
            "exim_access_malformed_requests",
            "Exim socket requests answered with error (malformed)",
            Counter,
            c.malformed as f64,
        );
        f.one(
            "exim_access_exim_connections_open",
            "Connections open on the Exim socket",
            Gauge,
            c.open_connections as f64,
        );
        let policy = |name: &str| {
            c.policy
                .iter()
                .find(|(k, _)| k == name)
                .map_or(0.0, |(_, v)| *v as f64)
        };
        f.add(
            "exim_access_policy_requests",
            "Dovecot auth policy requests by command and answer",
            Counter,
            [
                ("allow", "continue", "continued"),
                ("allow", "tarpit", "tarpitted"),
                ("allow", "reject", "rejected"),
                ("report", "ok", "report_ok"),
                ("report", "fail", "report_fail"),
                ("report", "refused", "report_refused"),
                ("report", "internal", "report_internal"),
                ("report", "anonymous", "report_anonymous"),
                ("none", "unauthorized", "unauthorized"),
                ("none", "malformed", "malformed"),
            ]
            .iter()
            .map(|(command, answer, key)| {
                (
                    labels(&[("command", command), ("answer", answer)]),
                    policy(key),
                )
            })
            .collect(),
        );
        f.add(
            "exim_access_events",
            "Events by source: requests on the Exim socket, Dovecot policy reports, events read from logs",
            Counter,
            vec![
                (
                    labels(&[("source", "exim")]),
                    c.requests.iter().map(|(_, n)| *n as f64).sum(),
                ),
                (
                    labels(&[("source", "policy")]),
                    policy("allow")
                        + policy("report_ok")
                        + policy("report_fail")
                        + policy("report_refused")
                        + policy("report_internal")
                        + policy("report_anonymous"),
                ),
                (labels(&[("source", "logs")]), c.source_events as f64),
            ],
        );
        let sources = stats.sources();
        let per_source = |pick: fn(&SourceCounters) -> &AtomicU64| -> Vec<Sample> {
            sources
                .iter()
                .map(|c| {
                    (
                        labels(&[("path", &c.path)]),
                        pick(c).load(Ordering::Relaxed) as f64,
                    )
                })
                .collect()
        };
        f.add(
            "exim_access_source_lines",
            "Log lines read, per [[sources]] entry",
            Counter,
            per_source(|c| &c.lines),
        );
        f.add(
            "exim_access_source_events",
            "Events fed to the engine, per [[sources]] entry",
            Counter,
            per_source(|c| &c.events),
        );
        f.add(
            "exim_access_source_dead_letters",
            "Dead-lettered log lines, per [[sources]] entry",
            Counter,
            per_source(|c| &c.dead_letters),
        );
        f.add(
            "exim_access_source_unrecognised_lines",
            "Log lines of no known shape, per [[sources]] entry",
            Counter,
            per_source(|c| &c.unrecognised),
        );
        f.add(
            "exim_access_source_read_errors",
            "Errors reading a [[sources]] entry or saving its position",
            Counter,
            per_source(|c| &c.errors),
        );
        f.one(
            "exim_access_log_lines",
            "Log lines read by the [[sources]] followers",
            Counter,
            c.source_lines as f64,
        );
        f.one(
            "exim_access_log_lines_unrecognised",
            "Log lines of no known shape",
            Counter,
            c.source_unrecognised as f64,
        );
        f.one(
            "exim_access_log_attempts",
            "Login attempts learnt from logs that the live path had not reported",
            Counter,
            c.log_attempts as f64,
        );
        f.one(
            "exim_access_dead_letters",
            "Log lines that looked relevant but did not parse (written to the dead-letter file)",
            Counter,
            c.source_dead_letters as f64,
        );
        f.one(
            "exim_access_source_errors",
            "Errors reading log sources or saving their positions",
            Counter,
            c.source_errors as f64,
        );
        f.add(
            "exim_access_alerts",
            "Alerts raised by rule and severity",
            Counter,
            stats
                .alerts_by_rule()
                .into_iter()
                .map(|(rule, sev, n)| (labels(&[("rule", rule), ("severity", sev)]), n as f64))
                .collect(),
        );
        f.one(
            "exim_access_alerts_dropped",
            "Alerts dropped because the alert queue was full",
            Counter,
            c.alerts_dropped as f64,
        );
        let sink = |pick: fn(&views::SinkView) -> u64| -> Vec<Sample> {
            c.sinks
                .iter()
                .map(|s| {
                    (
                        labels(&[("sink", &s.name), ("type", &s.kind)]),
                        pick(s) as f64,
                    )
                })
                .collect()
        };
        f.add(
            "exim_access_sink_deliveries",
            "Alerts delivered, per sink",
            Counter,
            sink(|s| s.delivered),
        );
        f.add(
            "exim_access_sink_failures",
            "Alerts a sink gave up on after its retries",
            Counter,
            sink(|s| s.failed),
        );
        f.add(
            "exim_access_sink_drops",
            "Alerts dropped by a sink's when_full policy",
            Counter,
            sink(|s| s.dropped),
        );
        f.add(
            "exim_access_sink_retries",
            "Further delivery attempts after a failed one, per sink",
            Counter,
            sink(|s| s.retried),
        );
        f.add(
            "exim_access_sink_queued",
            "Alerts waiting in a sink's queue",
            Gauge,
            sink(|s| s.queued),
        );
        f.one(
            "exim_access_tracked_accounts",
            "Accounts with a live entry",
            Gauge,
            status.accounts_tracked as f64,
        );
        f.one(
            "exim_access_tracked_addresses",
            "Source addresses with a live entry",
            Gauge,
            status.ips_tracked as f64,
        );
        f.one(
            "exim_access_baselines",
            "Accounts with a learnt baseline",
            Gauge,
            status.baselines as f64,
        );
        f.one(
            "exim_access_holds_in_force",
            "Accounts held now",
            Gauge,
            status.in_force.holds.len() as f64,
        );
        f.one(
            "exim_access_blocks_in_force",
            "Address blocks in force now",
            Gauge,
            status.in_force.ip_blocks.len() as f64,
        );
        if let Some(a) = &status.audit {
            f.one(
                "exim_access_audit_queued_records",
                "Audit records waiting for the writer (its lag)",
                Gauge,
                a.waiting as f64,
            );
            f.one(
                "exim_access_audit_records_written",
                "Audit records written",
                Counter,
                a.written as f64,
            );
            f.one(
                "exim_access_audit_write_errors",
                "Audit trail write errors",
                Counter,
                a.write_errors as f64,
            );
        }
        if let Some(j) = &status.journal {
            f.one(
                "exim_access_journal_records_appended",
                "State changes appended to the journal",
                Counter,
                j.appended as f64,
            );
            f.one(
                "exim_access_journal_records_lost",
                "State changes kept in memory only because the journal could not be written",
                Counter,
                j.lost as f64,
            );
            f.one(
                "exim_access_journal_errors",
                "State journal appends, flushes or new files that failed",
                Counter,
                j.errors as f64,
            );
            f.one(
                "exim_access_journal_failing",
                "1 while the state journal cannot be written (until the next snapshot)",
                Gauge,
                if j.failing { 1.0 } else { 0.0 },
            );
        }
        let snapshot = state_dir.join(crate::persist::snapshot::FILE_NAME);
        if let Ok(modified) = std::fs::metadata(&snapshot).and_then(|m| m.modified())
            && let Ok(at) = Timestamp::try_from(modified)
        {
            f.one(
                "exim_access_snapshot_age_seconds",
                "Seconds since the state snapshot was last written",
                Gauge,
                (now.as_millisecond() - at.as_millisecond()) as f64 / 1000.0,
            );
        }
        let e = &status.enrichment;
        let mut built = Vec::new();
        let mut loaded = Vec::new();
        for (name, db) in [("city", &e.geoip.city_db), ("asn", &e.geoip.asn_db)] {
            let Some(db) = db else { continue };
            let path = db.path.display().to_string();
            if let Some(a) = age(&db.build_time, now) {
                built.push((labels(&[("database", name), ("path", &path)]), a));
            }
            if let Some(a) = age(&db.loaded_at, now) {
                loaded.push((labels(&[("kind", name), ("path", &path)]), a));
            }
        }
        for file in &e.lists.files {
            if let Some(a) = age(&file.loaded_at, now) {
                let path = file.path.display().to_string();
                loaded.push((labels(&[("kind", &file.kind), ("path", &path)]), a));
            }
        }
        f.add(
            "exim_access_geoip_database_age_seconds",
            "Seconds since a GeoIP or ASN database was built (its build_epoch)",
            Gauge,
            built,
        );
        f.add(
            "exim_access_enrichment_loaded_age_seconds",
            "Seconds since an enrichment file (GeoIP database, block or allow list) was last loaded",
            Gauge,
            loaded,
        );
        let action = |pick: fn(&views::ActionView) -> u64| -> Vec<Sample> {
            status
                .actions
                .iter()
                .map(|a| (labels(&[("action", &a.name)]), pick(a) as f64))
                .collect()
        };
        f.add(
            "exim_access_action_applied",
            "Steps an external action (firewall, fail2ban, crowdsec) applied",
            Counter,
            action(|a| a.applied),
        );
        f.add(
            "exim_access_action_failed",
            "Steps an external action gave up on after its retries",
            Counter,
            action(|a| a.failed),
        );
        f.add(
            "exim_access_action_retried",
            "Further attempts of an external action after a failed one",
            Counter,
            action(|a| a.retried),
        );
        f.add(
            "exim_access_action_dropped",
            "Steps an external action dropped because its queue was full",
            Counter,
            action(|a| a.dropped),
        );
        f.add(
            "exim_access_action_expired",
            "Unblocks an external action sent because a block ended",
            Counter,
            action(|a| a.expired),
        );
        let mut conns = Vec::new();
        for (listener, pairs) in [
            ("exim", &l.exim),
            ("policy", &l.policy),
            ("admin", &l.admin),
            ("metrics", &listeners.metrics.snapshot()),
        ] {
            for (event, n) in pairs.iter() {
                conns.push((
                    labels(&[("listener", listener), ("event", event)]),
                    *n as f64,
                ));
            }
        }
        f.add(
            "exim_access_listener_connections",
            "Connections per listener by event: accepted, shed_idle, refused_full, refused_per_peer, waited_full, idle_timeouts, request_timeouts",
            Counter,
            conns,
        );
        f
    }
}

/// Writes one sample: a counter's value as an integer (every counter here counts
/// something), a gauge's as it is.
fn put(
    target: &mut prometheus_client::encoding::MetricEncoder<'_>,
    kind: MetricType,
    value: f64,
) -> Result<(), std::fmt::Error> {
    if kind == MetricType::Counter {
        target.encode_counter::<NoLabelSet, u64, u64>(&(value as u64), None)
    } else {
        target.encode_gauge(&value)
    }
}

impl Collector for Facts {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for family in &self.families {
            let mut metric =
                encoder.encode_descriptor(family.name, family.help, None, family.kind)?;
            for (labels, value) in &family.samples {
                if labels.is_empty() {
                    put(&mut metric, family.kind, *value)?;
                } else {
                    put(&mut metric.encode_family(labels)?, family.kind, *value)?;
                }
            }
        }
        if let Some(h) = &self.latency {
            let mut metric = encoder.encode_descriptor(
                "exim_access_verdict_duration_seconds",
                "How long the engine took over a verdict on the Exim socket",
                None,
                MetricType::Histogram,
            )?;
            let buckets: Vec<(f64, u64)> = LATENCY_BOUNDS_MICROS
                .iter()
                .map(|b| *b as f64 / 1e6)
                .chain([f64::INFINITY])
                .zip(h.buckets.iter().copied())
                .collect();
            metric.encode_histogram::<NoLabelSet>(
                h.sum_micros as f64 / 1e6,
                h.count,
                &buckets,
                None,
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
