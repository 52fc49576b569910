//! Alert delivery, one component per sink.
//!
//! The engine puts each alert on one bounded queue (never waiting: when it is full the
//! alert is counted in `alerts_dropped` and logged). A fan-out task takes alerts off
//! it and offers each to every sink whose `min_severity` it reaches, with `try` only:
//! every sink has its own bounded [`queue::Queue`] and its own task, so a sink that is
//! slow or hung fills its own queue, drops by its `when_full` policy and counts the
//! drops, and never delays the engine or another sink.
//!
//! A sink is a component, as in vector: a serde config struct (`deny_unknown_fields`)
//! that implements [`SinkConfig`] (`validate`, then `build` into a running [`Sink`]).
//! A `[[sinks]]` table holds the common settings ([`SinkTable`]: `name`, `type`,
//! `min_severity`, `queue_capacity`, `when_full`) and the type's own keys beside them.
//! Without `[[sinks]]` the oracle runs the two defaults it always had: `alerts` (the
//! JSON-lines file, `[alerts] file`) and `log` (one structured log line per alert); an
//! entry with one of those names replaces that default.
//!
//! # Adding a sink type
//!
//! 1. A new file `sinks/NAME.rs` with its config struct (`Deserialize`,
//!    `deny_unknown_fields`, each field documented: that is the operator reference)
//!    implementing [`SinkConfig`], and the running sink implementing [`Sink`]
//!    (`deliver` a batch, say how many were delivered, failed and retried; blocking
//!    work goes through `spawn_blocking`, waits have timeouts).
//! 2. One line in the `sink_types!` list below: `NAME => NameConfig` (the module, named
//!    as the type, and its config struct). That declares the module and puts the type
//!    in [`REGISTRY`].
//!
//! Nothing else changes: validation, `check-config`, the queue, the fan-out, the
//! counters in `ctl status` and the shutdown drain are shared.
//!
//! Shutdown: the fan-out drains what the engine queued, then closes every sink's queue;
//! each sink delivers what is left in its own queue until the deadline, and the sinks
//! still busy then are named in the log and stopped.

pub mod counters;
pub mod group;
pub mod owner;
pub mod queue;
pub mod stream;

use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::alert::Alert;
use crate::rules::Severity;
pub mod ecs;

pub use counters::{SinkCounters, SinkSnapshot};
pub use queue::{Pushed, Queue, WhenFull};

/// Declares each sink type's module (named as its `type`) and puts its config struct in
/// [`REGISTRY`].
macro_rules! sink_types {
    ($( $name:ident => $config:ident ),* $(,)?) => {
        $( pub mod $name; )*
        /// Every sink type, by its `type = "..."` name (the module's).
        pub const REGISTRY: &[Kind] = &[ $( Kind::of::<$name::$config>(stringify!($name)) ),* ];
    };
}

// A new sink type is a file `sinks/NAME.rs` and one line here.
sink_types! {
    email => EmailConfig,
    exec => ExecConfig,
    file => FileConfig,
    log => LogConfig,
    syslog => SyslogConfig,
    webhook => WebhookConfig,
}

/// The name of the default JSON-lines file sink (`[alerts] file`).
pub const DEFAULT_FILE: &str = "alerts";
/// The name of the default log sink.
pub const DEFAULT_LOG: &str = "log";

/// Alerts a sink takes off its queue at once (one flush, one request, per batch).
const MAX_BATCH: usize = 256;

/// One `[[sinks]]` table: the settings every sink has; every other key is the type's
/// own and read by that type's config struct (which refuses keys it does not know).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct SinkTable {
    /// A name for logs and `ctl status`: letters, digits, `-` and `_`, unique.
    /// `alerts` and `log` replace the default sinks of those names.
    pub name: String,
    /// The sink type: `file`, `log`, `exec`, `webhook`, `syslog` or `email`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The least severity delivered (`info`, `low`, `medium`, `high`, `critical`);
    /// default `low`.
    #[serde(default = "default_min_severity")]
    pub min_severity: Severity,
    /// Alerts waiting for this sink at most; default 1024.
    #[serde(default = "default_queue_capacity")]
    pub queue_capacity: usize,
    /// What a full queue does with one more alert: `drop_newest` (default: the new one
    /// is dropped) or `drop_oldest` (the oldest waiting is dropped to make room). Never
    /// waits; each drop is counted.
    #[serde(default)]
    pub when_full: WhenFull,
    /// What the sink is fed: `alerts` (default) or `audit`, every record of the audit
    /// trail in order, from its files, with a saved position (at least once; nothing
    /// is lost while the receiver or the oracle is down). Only types that can forward
    /// records take `audit`.
    #[serde(default)]
    pub stream: Stream,
    /// For `stream = "audit"`: where a sink without a saved position starts,
    /// `beginning` (default: every record the trail holds) or `end` (records written
    /// from its first start on).
    #[serde(default)]
    pub start_at: stream::StartAt,
    /// Alerts of one rule for one account or address within this many seconds of the
    /// first become one notification with a count and the span, delivered when the
    /// span ends (the first is delivered at once). `0` delivers every alert. Default
    /// 300, but 0 for the `file`, `log` and `syslog` types (they keep every alert).
    #[serde(default)]
    pub group_secs: Option<u64>,
    /// At most this many notifications per `rate_limit_secs`; what is held back is
    /// counted and summed up in one notification when the limit lets up. Default 0:
    /// no limit.
    #[serde(default)]
    pub rate_limit: u32,
    /// The rate limit's window, in seconds; default 60.
    #[serde(default = "default_rate_limit_secs")]
    pub rate_limit_secs: u64,
    /// The type's own settings.
    #[serde(flatten)]
    pub options: toml::Table,
}

fn default_min_severity() -> Severity {
    Severity::Low
}

fn default_queue_capacity() -> usize {
    1024
}

fn default_rate_limit_secs() -> u64 {
    60
}

/// What a sink is fed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    /// Alerts, as rules raise them.
    #[default]
    Alerts,
    /// Every audit record, in order, from the trail's files.
    Audit,
}

impl SinkTable {
    /// A table with no settings of its type's own.
    pub fn new(name: &str, kind: &str) -> SinkTable {
        SinkTable {
            name: name.into(),
            kind: kind.into(),
            min_severity: default_min_severity(),
            queue_capacity: default_queue_capacity(),
            when_full: WhenFull::default(),
            stream: Stream::default(),
            start_at: stream::StartAt::default(),
            group_secs: None,
            rate_limit: 0,
            rate_limit_secs: default_rate_limit_secs(),
            options: toml::Table::new(),
        }
    }
}

/// What a sink's config may read while it is checked and built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildContext {
    /// The state directory.
    pub state_dir: PathBuf,
    /// The default alert file (`[alerts] file`, else `<state_dir>/alerts.jsonl`).
    pub alert_file: PathBuf,
    /// `[audit]` when the trail is on (`None` when it is off): what a `stream =
    /// "audit"` sink reads.
    pub audit: Option<crate::audit::AuditConfig>,
}

impl BuildContext {
    /// The context of a config's state directory, alert file and `[audit]`.
    pub fn new(
        state_dir: PathBuf,
        alert_file: PathBuf,
        audit: &crate::audit::AuditConfig,
    ) -> BuildContext {
        BuildContext {
            state_dir,
            alert_file,
            audit: audit.enabled.then(|| audit.clone()),
        }
    }
}

/// A sink type's settings, read from its `[[sinks]]` table.
pub trait SinkConfig: fmt::Debug + Send + Sync {
    /// Adds every problem with the settings (beyond what serde refuses) to `problems`.
    fn validate(&self, ctx: &BuildContext, problems: &mut Vec<String>);
    /// Where the sink delivers (a path, an address), for logs, `ctl status` and to
    /// refuse two sinks of one type delivering to the same place.
    fn target(&self, ctx: &BuildContext) -> String;
    /// Builds the running sink (opens files and the like); an error stops the start.
    fn build(&self, ctx: &BuildContext) -> std::io::Result<Box<dyn Sink>>;
    /// Looks at what the sink will use (a file, a directory) without creating or
    /// changing anything, for `check-config` and `serve`'s preflight: each problem that
    /// would stop the start.
    fn preflight(&self, _ctx: &BuildContext, _problems: &mut Vec<String>) {}
    /// Whether the type can forward the audit trail (`stream = "audit"`).
    fn forwards_audit(&self) -> bool {
        false
    }
    /// Builds the running forwarder of a `stream = "audit"` sink. Called only when
    /// [`SinkConfig::forwards_audit`] is true.
    fn build_forwarder(&self, _ctx: &BuildContext) -> std::io::Result<Box<dyn Forward>> {
        Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "this sink type cannot forward the audit trail",
        ))
    }
}

/// One audit record for a `stream = "audit"` sink.
#[derive(Debug, Clone)]
pub struct AuditItem {
    /// The record.
    pub record: crate::audit::Record,
    /// Its line as the trail holds it (JSON with its `chain`), decrypted when the
    /// trail is encrypted.
    pub line: String,
}

/// The future a [`Forward::forward`] returns: how many records of the batch, from its
/// first, were delivered.
pub type Forwarding<'a> = Pin<Box<dyn Future<Output = usize> + Send + 'a>>;

/// A running `stream = "audit"` sink. Records come in trail order; the sink delivers
/// them in that order and stops at the first it cannot deliver: the position saved is
/// after the last delivered, and the rest are offered again after a pause.
pub trait Forward: Send + 'static {
    /// Delivers records in order and says how many, from the first, were delivered.
    fn forward<'a>(&'a mut self, batch: &'a [AuditItem]) -> Forwarding<'a>;
}

/// What one delivery did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Alerts delivered.
    pub delivered: u64,
    /// Alerts given up on.
    pub failed: u64,
    /// Attempts made after a failed one.
    pub retried: u64,
}

/// The future a [`Sink::deliver`] returns.
pub type Delivery<'a> = Pin<Box<dyn Future<Output = Outcome> + Send + 'a>>;

/// A running sink. Its task calls `deliver` with what its queue holds, one batch at a
/// time, in order; no other sink and not the engine waits for it.
pub trait Sink: Send + 'static {
    /// Delivers a batch of alerts (oldest first) and says what came of each.
    fn deliver<'a>(&'a mut self, batch: &'a [Arc<Alert>]) -> Delivery<'a>;
}

/// A sink type in the [`REGISTRY`].
#[derive(Debug)]
pub struct Kind {
    /// Its `type = "..."` name.
    pub name: &'static str,
    parse: fn(toml::Table) -> Result<Box<dyn SinkConfig>, String>,
}

impl Kind {
    /// The type named `name`, whose settings are read into `C`.
    pub const fn of<C: SinkConfig + DeserializeOwned + 'static>(name: &'static str) -> Kind {
        Kind {
            name,
            parse: parse_as::<C>,
        }
    }

    /// Reads a table's own settings into the type's config.
    pub fn parse(&self, options: &toml::Table) -> Result<Box<dyn SinkConfig>, String> {
        (self.parse)(options.clone())
    }
}

fn parse_as<C: SinkConfig + DeserializeOwned + 'static>(
    options: toml::Table,
) -> Result<Box<dyn SinkConfig>, String> {
    toml::Value::Table(options)
        .try_into::<C>()
        .map(|c| Box::new(c) as Box<dyn SinkConfig>)
        .map_err(|e| e.to_string().trim_end().to_string())
}

/// The type named `name`.
pub fn kind(name: &str) -> Option<&'static Kind> {
    REGISTRY.iter().find(|k| k.name == name)
}

/// The sinks a config runs: its `[[sinks]]`, after the defaults `alerts` (the file at
/// `[alerts] file`) and `log` that no entry replaces. The defaults deliver every
/// severity, as before sinks were configurable.
pub fn planned(tables: &[SinkTable]) -> Vec<SinkTable> {
    let mut out = Vec::new();
    for (name, kind) in [(DEFAULT_FILE, "file"), (DEFAULT_LOG, "log")] {
        if !tables.iter().any(|t| t.name == name) {
            out.push(SinkTable {
                min_severity: Severity::Info,
                ..SinkTable::new(name, kind)
            });
        }
    }
    out.extend(tables.iter().cloned());
    out
}

/// A sink's settings, checked.
#[derive(Debug)]
pub struct Planned {
    /// The common settings.
    pub table: SinkTable,
    /// The registry entry of its type.
    pub kind: &'static Kind,
    /// Its own settings.
    pub config: Box<dyn SinkConfig>,
}

/// Checks `[[sinks]]` as a whole, with the defaults it leaves in place ([`planned`]),
/// and adds every problem, each naming its sink (`sinks[i] (name)` as configured), to
/// `problems`. Returns the sinks to run.
pub fn validate(
    configured: &[SinkTable],
    ctx: &BuildContext,
    problems: &mut Vec<String>,
) -> Vec<Planned> {
    let tables = planned(configured);
    let defaults = tables.len() - configured.len();
    let mut out = Vec::new();
    let mut targets: Vec<(String, &str, String, Stream)> = Vec::new();
    for (i, t) in tables.iter().enumerate() {
        let at = match i.checked_sub(defaults) {
            None => format!("the default sink {}", t.name),
            Some(i) if t.name.is_empty() => format!("sinks[{i}]"),
            Some(i) => format!("sinks[{i}] ({})", crate::text::escape_controls(&t.name)),
        };
        let name_ok = !t.name.is_empty()
            && t.name.len() <= 32
            && t.name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !name_ok {
            problems.push(format!(
                "{at}: name must be 1 to 32 letters, digits, '-' or '_'"
            ));
        } else if tables[..i].iter().any(|o| o.name == t.name) {
            problems.push(format!("{at}: the name is used by another sink"));
        }
        if t.group_secs.is_some_and(|g| g > MAX_NOISE_SECS) {
            problems.push(format!(
                "{at}: group_secs must be at most {MAX_NOISE_SECS}, got {}",
                t.group_secs.unwrap_or_default()
            ));
        }
        if t.rate_limit_secs == 0 || t.rate_limit_secs > MAX_NOISE_SECS {
            problems.push(format!(
                "{at}: rate_limit_secs must be between 1 and {MAX_NOISE_SECS}, got {}",
                t.rate_limit_secs
            ));
        }
        if t.stream == Stream::Audit && (t.group_secs.is_some_and(|g| g > 0) || t.rate_limit > 0) {
            problems.push(format!(
                "{at}: a stream = \"audit\" sink forwards every record: group_secs and rate_limit do not apply"
            ));
        }
        if t.queue_capacity == 0 || t.queue_capacity > 1_000_000 {
            problems.push(format!(
                "{at}: queue_capacity must be between 1 and 1000000, got {}",
                t.queue_capacity
            ));
        }
        let Some(kind) = kind(&t.kind) else {
            let known: Vec<&str> = REGISTRY.iter().map(|k| k.name).collect();
            problems.push(format!(
                "{at}: unknown type {:?}; known: {}",
                crate::text::escape_controls(&t.kind),
                known.join(", ")
            ));
            continue;
        };
        let config = match kind.parse(&t.options) {
            Ok(c) => c,
            Err(e) => {
                problems.push(format!("{at}: {e}"));
                continue;
            }
        };
        let mut own = Vec::new();
        config.validate(ctx, &mut own);
        stream::check(t, config.as_ref(), ctx, &mut own);
        problems.extend(own.into_iter().map(|p| format!("{at}: {p}")));
        let target = config.target(ctx);
        // Two sinks writing one file would interleave whatever they carry; two sending
        // to one receiver conflict only on the same stream (alerts and the audit trail
        // to one syslog server is the usual set-up).
        if let Some((other, _, _, _)) = targets.iter().find(|(_, k, tg, s)| {
            *k == kind.name && *tg == target && (kind.name == "file" || *s == t.stream)
        }) {
            problems.push(format!(
                "{at}: {target} is already the target of sink {other}"
            ));
        }
        targets.push((t.name.clone(), kind.name, target, t.stream));
        out.push(Planned {
            table: t.clone(),
            kind,
            config,
        });
    }
    out
}

/// Why the sinks could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The settings have problems (normally caught when the config was validated).
    #[error("[[sinks]]: {}", .0.join("; "))]
    Invalid(Vec<String>),
    /// A sink could not be built (a file that cannot be opened, ...).
    #[error("sink {name} ({target}): {source}")]
    Build {
        /// The sink.
        name: String,
        /// Where it delivers.
        target: String,
        /// Why.
        source: std::io::Error,
    },
}

/// How one sink runs: its common settings and counters.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Its name.
    pub name: String,
    /// The least severity it takes.
    pub min_severity: Severity,
    /// Its queue's capacity.
    pub queue_capacity: usize,
    /// What a full queue drops.
    pub when_full: WhenFull,
    /// Grouping span in seconds (0: none).
    pub group_secs: u64,
    /// Notifications per `rate_limit_secs` (0: no limit).
    pub rate_limit: u32,
    /// The rate limit's window.
    pub rate_limit_secs: u64,
    /// Its counters.
    pub counters: Arc<SinkCounters>,
}

/// `group_secs` when a sink does not set it: the file and log types keep every alert,
/// the others (which reach people) group over five minutes.
pub fn default_group_secs(kind: &str) -> u64 {
    match kind {
        // What a SIEM or a file keeps must hold every alert.
        "file" | "log" | "syslog" => 0,
        _ => 300,
    }
}

/// The longest `group_secs` and `rate_limit_secs`.
const MAX_NOISE_SECS: u64 = 86_400;

impl Settings {
    /// The settings of a `[[sinks]]` table, with fresh counters.
    pub fn of(table: &SinkTable, kind: &'static str) -> Settings {
        Settings {
            name: table.name.clone(),
            min_severity: table.min_severity,
            queue_capacity: table.queue_capacity,
            when_full: table.when_full,
            group_secs: table.group_secs.unwrap_or_else(|| default_group_secs(kind)),
            rate_limit: table.rate_limit,
            rate_limit_secs: table.rate_limit_secs,
            counters: Arc::new(SinkCounters::new(&table.name, kind)),
        }
    }
}

/// The sinks, built and not yet running.
#[derive(Default)]
pub struct Sinks {
    built: Vec<(Settings, Box<dyn Sink>)>,
    /// The `stream = "audit"` sinks: fed from the trail, not by the fan-out.
    streams: Vec<(Settings, Box<dyn Forward>, stream::Plan)>,
}

impl Sinks {
    /// Builds the sinks `[[sinks]]` names, with the defaults it leaves in place: opens
    /// their files now, so a wrong path stops the start with the sink's name and why.
    pub fn build(tables: &[SinkTable], ctx: &BuildContext) -> Result<Sinks, BuildError> {
        let mut problems = Vec::new();
        let planned = validate(tables, ctx, &mut problems);
        if !problems.is_empty() {
            return Err(BuildError::Invalid(problems));
        }
        let mut sinks = Sinks::default();
        for p in planned {
            if p.table.stream == Stream::Audit
                && let Some(plan) = stream::Plan::of(&p.table, ctx)
            {
                let forward =
                    p.config
                        .build_forwarder(ctx)
                        .map_err(|source| BuildError::Build {
                            name: p.table.name.clone(),
                            target: p.config.target(ctx),
                            source,
                        })?;
                let settings = Settings::of(&p.table, p.kind.name);
                sinks.streams.push((settings, forward, plan));
                continue;
            }
            let sink = p.config.build(ctx).map_err(|source| BuildError::Build {
                name: p.table.name.clone(),
                target: p.config.target(ctx),
                source,
            })?;
            sinks.add(Settings::of(&p.table, p.kind.name), sink);
        }
        Ok(sinks)
    }

    /// Adds a running sink (for in-process callers and tests).
    pub fn add(&mut self, settings: Settings, sink: Box<dyn Sink>) {
        self.built.push((settings, sink));
    }

    /// Every sink's counters, in order, for `ctl status`.
    pub fn counters(&self) -> Vec<Arc<SinkCounters>> {
        let streams = self.streams.iter().map(|(s, _, _)| s);
        let all = self.built.iter().map(|(s, _)| s).chain(streams);
        all.map(|s| s.counters.clone()).collect()
    }

    /// The sinks' names, in order.
    pub fn names(&self) -> Vec<String> {
        let streams = self.streams.iter().map(|(s, _, _)| s);
        let all = self.built.iter().map(|(s, _)| s).chain(streams);
        all.map(|s| s.name.clone()).collect()
    }

    /// Starts the fan-out and one task per sink, fed from `alerts`; a `stream =
    /// "audit"` sink's task follows the audit trail instead ([`stream::run`]).
    pub fn start(self, alerts: mpsc::Receiver<Arc<Alert>>) -> Running {
        let (stop, stop_rx) = watch::channel(false);
        let mut outlets = Vec::new();
        let mut tasks = Vec::new();
        for (settings, sink) in self.built {
            let queue = Arc::new(Queue::new(
                settings.queue_capacity,
                settings.when_full,
                settings.counters.clone(),
            ));
            let gate = group::Gate::new(
                settings.group_secs,
                settings.rate_limit,
                settings.rate_limit_secs,
            );
            tasks.push((
                settings.name.clone(),
                tokio::spawn(drive(sink, queue.clone(), settings.counters.clone(), gate)),
            ));
            outlets.push((settings, queue));
        }
        for (settings, forward, plan) in self.streams {
            let task = stream::run(plan, forward, settings.counters, stop_rx.clone());
            tasks.push((settings.name, tokio::spawn(task)));
        }
        let fanout = tokio::spawn(fan_out(alerts, outlets, stop_rx));
        Running {
            stop,
            fanout,
            tasks,
        }
    }
}

/// The running sinks.
pub struct Running {
    stop: watch::Sender<bool>,
    fanout: JoinHandle<()>,
    tasks: Vec<(String, JoinHandle<()>)>,
}

impl Running {
    /// Stops: the fan-out hands on what the engine queued, then each sink delivers
    /// what is left in its queue until `drain` has passed. Returns the names of the
    /// sinks still busy then (they are stopped).
    pub async fn stop(self, drain: Duration) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + drain;
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout_at(deadline, self.fanout).await;
        let mut busy = Vec::new();
        for (name, task) in self.tasks {
            let abort = task.abort_handle();
            if tokio::time::timeout_at(deadline, task).await.is_err() {
                abort.abort();
                busy.push(name);
            }
        }
        busy
    }
}

/// `serve`'s sink task: runs the sinks until `stop` turns true (or the alert queue
/// closes), then drains them within `drain` and names in the log any still busy.
pub async fn run(
    alerts: mpsc::Receiver<Arc<Alert>>,
    sinks: Sinks,
    mut stop: watch::Receiver<bool>,
    drain: Duration,
) {
    let running = sinks.start(alerts);
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            break;
        }
    }
    let busy = running.stop(drain).await;
    if !busy.is_empty() {
        tracing::warn!(
            sinks = busy.join(", "),
            drain_secs = drain.as_secs(),
            "alert sinks still delivering at the shutdown deadline; their queued alerts are lost"
        );
    }
}

/// [`run`] on a thread of its own with its own runtime: what the sinks do (serialising,
/// writing, TLS, starting commands) never occupies the threads that answer Exim and
/// Dovecot, so a verdict never waits in a run queue behind a sink. The returned task
/// ends when the sinks have drained.
pub fn run_apart(
    alerts: mpsc::Receiver<Arc<Alert>>,
    sinks: Sinks,
    stop: watch::Receiver<bool>,
    drain: Duration,
) -> std::io::Result<JoinHandle<()>> {
    // Two workers: a sink busy on the CPU (a file written, a batch serialised) leaves
    // the other to the sinks waiting on their peers.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("alert-sinks")
        .enable_all()
        .build()?;
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::Builder::new()
        .name("alert-sinks".into())
        .spawn(move || {
            runtime.block_on(run(alerts, sinks, stop, drain));
            // Tasks the sinks left (a hung command's wait) end with the runtime.
            runtime.shutdown_timeout(Duration::from_millis(100));
            let _ = done_tx.send(());
        })?;
    Ok(tokio::spawn(async move {
        let _ = done_rx.await;
    }))
}

/// Takes alerts off the engine's queue and offers each to every sink that wants it,
/// never waiting on one. On stop, hands on what is already queued, then closes the
/// sinks' queues.
async fn fan_out(
    mut alerts: mpsc::Receiver<Arc<Alert>>,
    outlets: Vec<(Settings, Arc<Queue>)>,
    mut stop: watch::Receiver<bool>,
) {
    let offer = |alert: Arc<Alert>| {
        for (settings, queue) in &outlets {
            if alert.severity >= settings.min_severity {
                queue.push(alert.clone());
            }
        }
    };
    loop {
        if *stop.borrow_and_update() {
            break;
        }
        tokio::select! {
            a = alerts.recv() => match a {
                Some(a) => offer(a),
                None => break,
            },
            changed = stop.changed() => if changed.is_err() { break },
        }
    }
    while let Ok(a) = alerts.try_recv() {
        offer(a);
    }
    for (_, queue) in &outlets {
        queue.close();
    }
}

/// One sink's task: takes its queue a batch at a time through its grouping and rate
/// limit ([`group::Gate`]) and delivers what they let through, until the queue is
/// closed and empty; then delivers what the gate still holds.
async fn drive(
    mut sink: Box<dyn Sink>,
    queue: Arc<Queue>,
    counters: Arc<SinkCounters>,
    mut gate: group::Gate,
) {
    // Wall time at the start, moved on by tokio's monotonic clock: a step of the wall
    // clock does not stretch or cut a span, and a test with paused time runs at once.
    let (wall0, start) = (
        jiff::Timestamp::now().as_second(),
        tokio::time::Instant::now(),
    );
    let now = || wall0.saturating_add(start.elapsed().as_secs() as i64);
    loop {
        // Wait for alerts, or until the gate has a group or a summary due.
        let batch = match gate.next_due() {
            None => Some(queue.pop_batch(MAX_BATCH).await),
            Some(due) => {
                let wait = Duration::from_secs(due.saturating_sub(now()).max(0) as u64);
                tokio::select! {
                    // Cancel-safe: pop_batch takes alerts only when it returns them.
                    b = queue.pop_batch(MAX_BATCH) => Some(b),
                    () = tokio::time::sleep(wait) => None,
                }
            }
        };
        let at = now();
        let mut out = match batch {
            Some(b) if b.is_empty() => {
                let rest = gate.flush(at);
                deliver(&mut *sink, &rest, &counters).await;
                break;
            }
            Some(b) => gate.offer(&b, at),
            None => group::Let::default(),
        };
        let due = gate.due(at);
        out.deliver.extend(due.deliver);
        counters
            .grouped
            .fetch_add(out.grouped + due.grouped, Ordering::Relaxed);
        counters
            .suppressed
            .fetch_add(out.suppressed + due.suppressed, Ordering::Relaxed);
        deliver(&mut *sink, &out.deliver, &counters).await;
    }
}

/// Delivers what the gate let through and counts what came of it.
async fn deliver(sink: &mut dyn Sink, alerts: &[Arc<Alert>], counters: &SinkCounters) {
    if alerts.is_empty() {
        return;
    }
    let outcome = sink.deliver(alerts).await;
    counters
        .delivered
        .fetch_add(outcome.delivered, Ordering::Relaxed);
    counters.failed.fetch_add(outcome.failed, Ordering::Relaxed);
    counters
        .retried
        .fetch_add(outcome.retried, Ordering::Relaxed);
}

/// `path` if absolute, else the problem.
pub(crate) fn absolute(key: &str, path: &Path, problems: &mut Vec<String>) {
    if !path.is_absolute() {
        problems.push(format!(
            "{key} must be an absolute path, got {}",
            path.display()
        ));
    }
}

#[cfg(test)]
mod tests;
