//! `access-oracle serve`: binds the sockets, runs the listeners, the alert sinks and the
//! sweeper, reloads on SIGHUP and stops cleanly on SIGTERM / SIGINT.
//!
//! Shutdown order: stop accepting and close idle connections, wait (up to the grace
//! period) for requests in flight, then drain the alert queue into the sinks, then remove
//! the sockets.

pub mod accept;
pub mod admin;
pub mod exim;
pub mod follow;
pub mod housekeeping;
pub mod metrics;
pub mod policy;
pub mod preflight;
pub mod unix;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use jiff::Timestamp;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use crate::config::{self, Config, Overrides};
use crate::engine::Engine;
use crate::sinks;

/// Where the running config came from, for reloads.
#[derive(Debug, Clone)]
pub struct ConfigSource {
    /// The file, or `None` for the embedded defaults.
    pub path: Option<PathBuf>,
    /// Command-line overrides, applied again on reload.
    pub overrides: Overrides,
}

impl ConfigSource {
    fn describe(&self) -> String {
        self.path
            .as_ref()
            .map_or_else(|| "embedded defaults".into(), |p| p.display().to_string())
    }
}

/// A running oracle, for callers that drive it in-process (the demo, tests).
pub struct Running {
    /// The engine.
    pub engine: Arc<Engine>,
    /// Where the Dovecot policy endpoint listens, when it is on.
    pub policy_addr: Option<std::net::SocketAddr>,
    /// Where the metrics endpoint listens, when it is on.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// The listeners' connection counters (sheddings, refusals, timeouts).
    pub listeners: Arc<accept::Listeners>,
    policy: Option<Arc<policy::Shared>>,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Stops the oracle and waits for it.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        self.task.await.context("oracle task failed")?
    }
}

/// Binds everything and starts serving in the background.
pub async fn start(config: Config, source: ConfigSource) -> anyhow::Result<Running> {
    // The checks check-config runs too (server/preflight.rs): one function, no drift.
    let preflight = preflight::run(&config);
    for warning in &preflight.warnings {
        tracing::warn!("{warning}");
    }
    let enrichment = preflight
        .into_result()
        .map_err(|problems| anyhow::anyhow!("{problems}"))?;
    match preflight::prepare_state_dir(&config.state_dir) {
        Ok(preflight::StateDir::Fine) => {}
        Ok(preflight::StateDir::Created(done)) => tracing::info!("{done}"),
        Ok(preflight::StateDir::Warn(done)) => tracing::warn!("{done}"),
        Err(e) => {
            return Err(e).with_context(|| {
                format!(
                    "cannot create the state directory {}",
                    config.state_dir.display()
                )
            });
        }
    }
    let sink_ctx = sinks::BuildContext::new(
        config.state_dir.clone(),
        config.alert_file.clone(),
        &config.raw.audit,
    );
    let mut sink = sinks::Sinks::build(&config.raw.sinks, &sink_ctx)
        .context("cannot start the alert sinks")?;
    if let Some((settings, owner)) = sinks::owner::build(&config.raw.notify_owner, &sink_ctx)
        .context("cannot start [notify_owner]")?
    {
        sink.add(settings, owner);
    }
    let (engine, alert_rx) = Engine::new(&config, Timestamp::now());
    engine.stats.set_sinks(sink.counters());
    let (rdns, rdns_worker) = crate::enrich::Rdns::new(&config.raw.rdns);
    engine.set_enrichment(crate::engine::Enrichment {
        rdns: rdns.clone(),
        ..enrichment
    });
    housekeeping::restore(&engine, &config.state_dir, config.journal_flush_ms);
    report_inactive_rules(&engine);
    let audit_writer = engine
        .open_audit(&config.raw.audit, &config.state_dir, false)
        .context("cannot open the audit trail ([audit])")?;
    if audit_writer.is_none() {
        tracing::warn!("the audit trail is off ([audit] enabled = false)");
    }
    let engine = Arc::new(engine);
    // The audit writer's disk failures raise the engine's storage alert.
    engine.watch_audit_storage();
    raise_fd_limit(
        (config.max_connections
            + config.raw.server.admin_max_connections
            + config.policy.max_connections
            + config.raw.metrics.max_connections) as u64
            + FD_HEADROOM,
    );
    let (exim_listener, exim_file) = unix::bind(&config.exim_socket)?;
    let (admin_listener, admin_file) = unix::bind(&config.admin_socket)?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    start_actions(&config, &engine, shutdown_rx.clone())?;
    let (sink_stop_tx, sink_stop_rx) = watch::channel(false);
    let listeners = Arc::new(accept::Listeners::default());
    // Bound before any task starts: a port in use stops the start cleanly.
    let policy_endpoint = match config.policy.listen {
        Some(_) => Some(
            policy::start(
                &config.policy,
                engine.clone(),
                listeners.clone(),
                shutdown_rx.clone(),
            )
            .await
            .context("cannot start the dovecot policy endpoint")?,
        ),
        None => None,
    };
    let metrics_endpoint = match config.raw.metrics.listen {
        Some(_) => Some(
            metrics::start(
                &config.raw.metrics,
                metrics::Scrape::new(engine.clone(), listeners.clone(), config.state_dir.clone()),
                listeners.clone(),
                shutdown_rx.clone(),
            )
            .await
            .context("cannot start the metrics endpoint")?,
        ),
        None => None,
    };
    let metrics_addr = metrics_endpoint.as_ref().map(|m| m.addr);
    let policy_addr = policy_endpoint.as_ref().map(|p| p.addr);
    let policy_shared = policy_endpoint.as_ref().map(|p| p.shared());
    // Queued alerts get at least a second to be written, whatever the grace.
    let sink_drain = Duration::from_secs(config.shutdown_grace_secs.max(1));
    let sink_task = sinks::run_apart(alert_rx, sink, sink_stop_rx, sink_drain)
        .context("cannot start the alert sinks' thread")?;
    let server = &config.raw.server;
    let exim_slots = accept::Slots::new(
        "exim socket",
        accept::Limits {
            max: config.max_connections,
            max_per_peer: 0,
        },
        listeners.clone(),
        |l| &l.exim,
    );
    let exim_task = tokio::spawn(exim::serve(
        exim_listener,
        unix::Kept::new(&config.exim_socket),
        engine.clone(),
        exim_slots.clone(),
        exim::Timeouts {
            idle: Duration::from_secs(server.exim_idle_timeout_secs),
            request: Duration::from_millis(server.exim_request_timeout_ms),
        },
        shutdown_rx.clone(),
    ));
    let admin_ctx = Arc::new(admin::AdminContext::new(
        engine.clone(),
        &config,
        source.describe(),
        listeners.clone(),
    ));
    let admin_slots = accept::Slots::new(
        "admin socket",
        accept::Limits {
            max: server.admin_max_connections,
            max_per_peer: 0,
        },
        listeners.clone(),
        |l| &l.admin,
    );
    let admin_task = tokio::spawn(admin::serve(
        admin_listener,
        admin_ctx,
        admin_slots,
        admin::Timeouts {
            idle: Duration::from_secs(server.admin_idle_timeout_secs),
            request: Duration::from_millis(server.admin_request_timeout_ms),
        },
        shutdown_rx.clone(),
    ));
    let followers = follow::Followers::start(&config.sources, engine.clone(), &config.state_dir)
        .context("cannot start the log sources")?;
    let sweeper = tokio::spawn(housekeeping::run(
        engine.clone(),
        housekeeping::Upkeep {
            idle_secs: config.idle_secs,
            max_accounts: config.max_tracked_accounts,
            state_dir: config.state_dir.clone(),
        },
        shutdown_rx.clone(),
    ));
    let enrich = engine.enrichment();
    let geoip_watch = tokio::spawn(crate::enrich::geoip::watch(
        enrich.geoip.clone(),
        shutdown_rx.clone(),
    ));
    let lists_watch = tokio::spawn(crate::enrich::lists::watch(
        enrich.lists.clone(),
        shutdown_rx.clone(),
    ));
    // [crowdsec]: the Local API's decision stream, polled into the table the gate reads.
    let crowdsec_poll = crate::actions::crowdsec::start_bouncer(
        config.raw.crowdsec.as_ref(),
        enrich.crowdsec.clone(),
        shutdown_rx.clone(),
    )
    .map_err(|e| anyhow::anyhow!("cannot start the CrowdSec bouncer ([crowdsec]): {e}"))?;
    let rdns_task = rdns
        .enabled()
        .then(|| tokio::spawn(rdns_worker.run(shutdown_rx.clone())));
    let accounts_watch = tokio::spawn(housekeeping::watch_accounts_file(
        engine.clone(),
        Duration::from_secs(config.rules.disabled_credentials.reload_check_secs),
        shutdown_rx.clone(),
    ));
    tracing::info!(
        exim_socket = %config.exim_socket.path.display(),
        admin_socket = %config.admin_socket.path.display(),
        state_dir = %config.state_dir.display(),
        alerts = %config.alert_file.display(),
        config = %source.describe(),
        sources = config.sources.len(),
        "access-oracle serving"
    );
    let task_engine = engine.clone();
    let grace = Duration::from_secs(config.shutdown_grace_secs);
    let state_dir = config.state_dir.clone();
    let task = tokio::spawn(async move {
        let mut shutdown_rx = shutdown_rx;
        let _ = shutdown_rx.changed().await;
        let deadline = tokio::time::Instant::now() + grace;
        exim_task.await.context("exim listener failed")?;
        let _ = admin_task.await;
        let _ = sweeper.await;
        let _ = accounts_watch.await;
        if let Some(t) = rdns_task {
            let _ = t.await;
        }
        let _ = geoip_watch.await;
        let _ = lists_watch.await;
        if let Some(t) = crowdsec_poll {
            let _ = t.await;
        }
        // Log followers read what is already written, then stop.
        let _ = tokio::task::spawn_blocking(move || followers.stop()).await;
        // Requests in flight hold a slot each: wait for all slots, within the grace.
        let waited = tokio::time::timeout_at(deadline, exim_slots.closed()).await;
        if let Some(endpoint) = policy_endpoint
            && !endpoint.finish(deadline).await
        {
            tracing::warn!(
                grace_secs = grace.as_secs(),
                "shutdown grace expired with dovecot policy connections still open"
            );
        }
        if let Some(endpoint) = metrics_endpoint
            && !endpoint.finish(deadline).await
        {
            tracing::warn!(
                grace_secs = grace.as_secs(),
                "shutdown grace expired with metrics connections still open"
            );
        }
        if waited.is_err() {
            tracing::warn!(
                open_connections = task_engine
                    .stats
                    .open_connections
                    .load(std::sync::atomic::Ordering::Relaxed),
                grace_secs = grace.as_secs(),
                "shutdown grace expired with exim connections still open"
            );
        }
        let _ = sink_stop_tx.send(true);
        sink_task.await.context("alert sink failed")?;
        // Every event source has stopped: write the last audit records.
        if let Some(writer) = audit_writer {
            let _ = tokio::task::spawn_blocking(move || writer.close()).await;
        }
        housekeeping::write_snapshot(task_engine.clone(), state_dir).await;
        if let Some(journal) = task_engine.journal() {
            journal.close();
        }
        drop((exim_file, admin_file));
        tracing::info!("access-oracle stopped");
        Ok(())
    });
    Ok(Running {
        engine,
        policy_addr,
        metrics_addr,
        listeners,
        policy: policy_shared,
        shutdown: shutdown_tx,
        task,
    })
}

/// Open files beyond the listeners' caps: followed logs, the audit trail, the snapshot,
/// sinks' connections, commands' pipes.
const FD_HEADROOM: u64 = 1024;

/// Raises the soft limit of open files to `wanted` (the listeners' caps and some room),
/// within the hard limit. A service manager's default soft limit (1024 under systemd) is
/// below the Exim socket's default cap alone; at the limit, accepting fails and idle
/// connections are closed to make room before the cap is reached. Only as far as needed:
/// commands the oracle runs inherit the limit.
fn raise_fd_limit(wanted: u64) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    if soft >= wanted {
        return;
    }
    let raised = wanted.min(hard);
    match setrlimit(Resource::RLIMIT_NOFILE, raised, hard) {
        Ok(()) if raised < wanted => tracing::warn!(
            soft = raised,
            wanted,
            "the hard limit of open files is below what the listeners' caps need: raise it (systemd: LimitNOFILE=) or lower the max_connections settings"
        ),
        Ok(()) => tracing::info!(
            from = soft,
            to = raised,
            "raised the limit of open files to the listeners' caps"
        ),
        Err(e) => tracing::warn!(error = %e, soft, wanted, "cannot raise the limit of open files"),
    }
}

/// Runs until SIGTERM or SIGINT; SIGHUP reloads the rules.
pub async fn run(config: Config, source: ConfigSource) -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot watch SIGHUP")?;
    let mut running_config = config.clone();
    let running = start(config, source.clone()).await?;
    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM: stopping"); break }
            _ = int.recv() => { tracing::info!("SIGINT: stopping"); break }
            _ = hup.recv() => {
                if let Some(new) = reload(&running, &running_config, &source) {
                    running_config = new;
                }
            }
        }
    }
    running.stop().await
}

/// Reloads the config file; a config with problems is refused and the running one kept.
/// Returns the config now in force.
/// Builds the external actions (`[firewall]`, `[fail2ban]`, `[crowdsec]`) and hands
/// them to the engine, with every block in force (the far side may have lost them).
/// Their reports reach the engine through a weak reference: the tasks do not keep it
/// alive after the server has stopped.
fn start_actions(
    config: &Config,
    engine: &Arc<Engine>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut built = Vec::new();
    for action in config.raw.actions() {
        let running = action
            .build()
            .with_context(|| format!("cannot start [{}]", action.name()))?;
        built.push((action.name(), running));
    }
    if built.is_empty() {
        return Ok(());
    }
    let weak = Arc::downgrade(engine);
    let report: crate::actions::Reporter = Arc::new(move |r| {
        if let Some(engine) = weak.upgrade() {
            engine.action_report(r);
        }
    });
    let (actions, _tasks) =
        crate::actions::Actions::start(built, crate::actions::Tuning::default(), report, stop);
    engine.set_actions(actions, Timestamp::now());
    Ok(())
}

fn reload(running: &Running, current: &Config, source: &ConfigSource) -> Option<Config> {
    match config::load(source.path.as_deref(), &source.overrides) {
        Ok(new) => {
            if new.exim_socket != current.exim_socket
                || new.admin_socket != current.admin_socket
                || new.state_dir != current.state_dir
                || new.alert_file != current.alert_file
                || new.raw.sinks != current.raw.sinks
                || new.raw.notify_owner != current.raw.notify_owner
                || new.sources != current.sources
                || new.raw.audit != current.raw.audit
                || new.raw.metrics != current.raw.metrics
            {
                tracing::warn!(
                    "socket, state, alert file, sink, source, audit or metrics settings changed: they take effect at the next restart"
                );
            }
            if new.policy.listen != current.policy.listen
                || new.policy.path != current.policy.path
                || new.policy.api_key_header != current.policy.api_key_header
                || new.policy.api_key != current.policy.api_key
                || new.policy.api_key_file != current.policy.api_key_file
                || policy::http::Limits::from(&new.policy)
                    != policy::http::Limits::from(&current.policy)
                || new.raw.server.exim_idle_timeout_secs
                    != current.raw.server.exim_idle_timeout_secs
                || new.raw.server.exim_request_timeout_ms
                    != current.raw.server.exim_request_timeout_ms
                || new.raw.server.admin_max_connections != current.raw.server.admin_max_connections
                || new.raw.server.admin_idle_timeout_secs
                    != current.raw.server.admin_idle_timeout_secs
                || new.raw.server.admin_request_timeout_ms
                    != current.raw.server.admin_request_timeout_ms
            {
                tracing::warn!(
                    "policy endpoint address, path, key or connection settings, or socket limits, changed: they take effect at the next restart"
                );
            }
            if let Some(p) = &running.policy {
                p.set_settings(crate::engine::policy::PolicySettings::from(&new.policy));
            }
            if new.raw.crowdsec != current.raw.crowdsec {
                tracing::warn!("[crowdsec] changed: it takes effect at the next restart");
            }
            reload_enrichment(running, current, &new);
            running.engine.set_baseline_config(new.baselines.clone());
            running.engine.set_rules(new.rules.clone());
            running.engine.set_responses(new.raw.responses.clone());
            tracing::info!(config = %source.describe(), "configuration reloaded");
            Some(new)
        }
        Err(e) => {
            tracing::error!(error = %e, "reload failed; keeping the running configuration");
            None
        }
    }
}

/// SIGHUP rereads the GeoIP databases, lists and the accounts file. Files named as
/// before are reloaded in place (their watchers go on); newly named ones are opened and
/// watched. A file that cannot be used keeps the running data.
fn reload_enrichment(running: &Running, current: &Config, new: &Config) {
    let old = running.engine.enrichment();
    let mut next = crate::engine::Enrichment {
        geoip: old.geoip.clone(),
        lists: old.lists.clone(),
        disabled: old.disabled.clone(),
        rdns: old.rdns.clone(),
        crowdsec: old.crowdsec.clone(),
    };
    if new.raw.geoip == current.raw.geoip {
        old.geoip.reload();
    } else {
        match crate::enrich::GeoIp::open(&new.raw.geoip) {
            Ok(g) => {
                let g = Arc::new(g);
                tokio::spawn(crate::enrich::geoip::watch(
                    g.clone(),
                    running.shutdown.subscribe(),
                ));
                next.geoip = g;
            }
            Err(e) => tracing::error!(error = %e, "reload: keeping the running GeoIP databases"),
        }
    }
    if new.raw.lists == current.raw.lists {
        old.lists.reload();
    } else {
        match crate::enrich::IpLists::open(&new.raw.lists) {
            Ok(l) => {
                let l = Arc::new(l);
                tokio::spawn(crate::enrich::lists::watch(
                    l.clone(),
                    running.shutdown.subscribe(),
                ));
                next.lists = l;
            }
            Err(e) => tracing::error!(error = %e, "reload: keeping the running lists"),
        }
    }
    let file = &new.rules.disabled_credentials.file;
    if file == &current.rules.disabled_credentials.file {
        if let Err(e) = old.disabled.reload() {
            tracing::error!(error = %e, "reload: keeping the running accounts list");
        }
    } else {
        let opened = match file {
            Some(path) => {
                crate::enrich::disabled::DisabledAccounts::open(path, !new.case_sensitive_accounts)
                    .map(Arc::new)
            }
            None => Ok(Arc::new(crate::enrich::disabled::DisabledAccounts::empty())),
        };
        match opened {
            Ok(d) => next.disabled = d,
            Err(e) => tracing::error!(error = %e, "reload: keeping the running accounts list"),
        }
    }
    running.engine.set_enrichment(next);
}

/// Says at start which rules cannot work with the GeoIP databases loaded, and why.
pub fn report_inactive_rules(engine: &Engine) {
    let caps = engine.enrichment().geoip.capabilities();
    let rules = engine.rules();
    let mut inactive = Vec::new();
    if !caps.country && rules.new_country.enabled {
        inactive.push("new_country (no City or Country database: [geoip] city_db)");
    }
    if !caps.asn && rules.new_asn.enabled {
        inactive.push("new_asn (no ASN database: [geoip] asn_db)");
    }
    if !caps.coordinates && rules.impossible_travel.enabled {
        inactive
            .push("impossible_travel (no coordinates: [geoip] city_db must be a City database)");
    }
    if !caps.coordinates && rules.distant_logins.enabled {
        inactive.push("distant_logins (no coordinates: [geoip] city_db must be a City database)");
    }
    if inactive.is_empty() {
        tracing::info!("every enabled rule has the data it needs");
    } else {
        for rule in inactive {
            tracing::warn!(rule, "rule inactive");
        }
    }
}

/// Builds the enrichment the config names; a configured file that cannot be used stops
/// the start with the reason.
pub fn enrichment(config: &Config) -> anyhow::Result<crate::engine::Enrichment> {
    let mut e = crate::engine::Enrichment::default();
    let raw = &config.raw;
    e.geoip = Arc::new(crate::enrich::GeoIp::open(&raw.geoip).context("[geoip]")?);
    e.lists = Arc::new(crate::enrich::IpLists::open(&raw.lists).context("[lists]")?);
    if let Some(path) = &config.rules.disabled_credentials.file {
        e.disabled = Arc::new(
            crate::enrich::disabled::DisabledAccounts::open(path, !config.case_sensitive_accounts)
                .context("[rules.disabled_credentials] file")?,
        );
    }
    Ok(e)
}
