//! `access-oracle ingest`: backfill past logs into the persisted state, so that accounts
//! start with months of baseline (countries, networks, hours, sending rate) instead of
//! learning from scratch.
//!
//! Runs with the oracle stopped (it refuses when the configured admin socket answers):
//! it reads `<state_dir>/state.snapshot`, feeds every event of the files through the
//! same engine and rules as live events, on the logs' own clock, and writes the snapshot
//! back. The files are read at once, one thread each, and merged by time, so an Exim
//! and a Dovecot log of the same month interleave as they happened, in bounded memory.
//! Alerts the history would have raised are counted in the summary, not delivered.
//! Lines that looked relevant but did not parse go to the dead-letter file.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::time::{Duration, Instant};

use anyhow::Context;
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::Serialize;

use crate::config::{self, Overrides};
use crate::engine::Engine;
use crate::persist::{journal, snapshot};
use crate::sources::{DeadLetterWriter, Format, LogEvent, ParseStats, Parsed, reader};

/// Events buffered per file between its reader thread and the merge.
const CHANNEL_EVENTS: usize = 4096;

/// What `ingest` was asked to do.
#[derive(Debug, Clone)]
pub struct IngestOptions {
    /// The config (rules, baselines, GeoIP); the defaults without it.
    pub config: Option<PathBuf>,
    /// Overrides `server.state_dir`.
    pub state_dir: Option<PathBuf>,
    /// The log format.
    pub format: Format,
    /// Where unparsed relevant lines go; default `<state_dir>/dead-letters.log`.
    pub dead_letters: Option<PathBuf>,
    /// Print the summary as JSON.
    pub json: bool,
    /// Show progress (a bar on a terminal, plain lines otherwise).
    pub progress: bool,
    /// The files (plain or gzip).
    pub files: Vec<PathBuf>,
}

/// What an ingest did.
#[derive(Debug, Default, Serialize)]
pub struct IngestReport {
    /// Lines read, events by kind, unparsed lines, per file and in total.
    pub parsed: ParseStats,
    /// Per file.
    pub files: Vec<(String, ParseStats)>,
    /// The first event's time.
    pub from: Option<Timestamp>,
    /// The last event's time.
    pub to: Option<Timestamp>,
    /// Baselines before and after.
    pub baselines_before: usize,
    /// Baselines after.
    pub baselines_after: usize,
    /// Alerts the history would have raised, by rule.
    pub alerts: BTreeMap<&'static str, u64>,
    /// Where the state was written.
    pub snapshot: PathBuf,
    /// Where dead letters went.
    pub dead_letters: PathBuf,
    /// Where the audit trail is, when it is on.
    pub audit_dir: Option<PathBuf>,
    /// Records the history added to the audit trail.
    pub audit_records: u64,
}

/// One file's reader: events in file order, then its counts.
struct Feed {
    rx: Receiver<LogEvent>,
    head: Option<LogEvent>,
    handle: std::thread::JoinHandle<anyhow::Result<ParseStats>>,
    name: String,
}

/// Refuses to run against a live oracle: it would overwrite the snapshot at its exit.
fn refuse_if_running(admin_socket: &Path) -> anyhow::Result<()> {
    if UnixStream::connect(admin_socket).is_ok() {
        anyhow::bail!(
            "the oracle is running (its admin socket {} answers): stop it before ingesting, or its next snapshot would overwrite what ingest learns",
            admin_socket.display()
        );
    }
    Ok(())
}

fn spawn_reader(
    path: PathBuf,
    format: Format,
    tz: TimeZone,
    lines: Arc<AtomicU64>,
    dead: Arc<std::sync::Mutex<DeadLetterWriter<std::fs::File>>>,
    tx: SyncSender<LogEvent>,
) -> std::thread::JoinHandle<anyhow::Result<ParseStats>> {
    std::thread::spawn(move || {
        reader::each_line(&path, format, &tz, None, |parsed, ctx, line| {
            lines.fetch_add(1, Ordering::Relaxed);
            if let Parsed::DeadLetter(reason) = parsed {
                let mut dead = dead.lock().unwrap_or_else(|e| e.into_inner());
                dead.write(reason, ctx, line)?;
            }
            for ev in parsed.events() {
                if tx.send(ev.clone()).is_err() {
                    anyhow::bail!("the merge stopped");
                }
            }
            Ok(())
        })
        .with_context(|| format!("reading {}", path.display()))
    })
}

/// Backfills the files into the state directory and returns the summary.
pub fn ingest(opts: &IngestOptions) -> anyhow::Result<IngestReport> {
    let overrides = Overrides {
        state_dir: opts.state_dir.clone(),
        ..Overrides::default()
    };
    let config = config::load(opts.config.as_deref(), &overrides)?;
    refuse_if_running(&config.admin_socket.path)?;
    crate::files::create_private_dir(&config.state_dir)
        .with_context(|| format!("creating {}", config.state_dir.display()))?;
    let (engine, mut alerts) = Engine::new(&config, Timestamp::now());
    engine.set_enrichment(crate::server::enrichment(&config)?);
    crate::server::report_inactive_rules(&engine);
    let now = Timestamp::now().as_second();
    let mark = match snapshot::read(engine.state(), &config.state_dir, now) {
        Ok(c) => c.and_then(|c| c.journal),
        Err(e) => anyhow::bail!("{e}: move it aside or remove it to start from empty state"),
    };
    // What the oracle journaled after its last snapshot (it may have been killed).
    let replayed = journal::replay(engine.state(), &config.state_dir, mark, now)
        .context("reading the state journal")?;
    for d in &replayed.damaged {
        eprintln!(
            "warning: the state journal is damaged: {d}; the records before the damage were applied{}",
            match &d.moved_to {
                Some(to) => format!(", the file moved to {}", to.display()),
                None => String::new(),
            }
        );
    }
    // The history goes into the audit trail too, each record with its own time.
    let audit_writer = engine
        .open_audit(&config.raw.audit, &config.state_dir, true)
        .context("cannot open the audit trail ([audit])")?;
    let mut report = IngestReport {
        audit_dir: engine.audit().map(|a| a.dir().to_path_buf()),
        baselines_before: engine.state().baseline_count(),
        snapshot: config.state_dir.join(snapshot::FILE_NAME),
        dead_letters: opts
            .dead_letters
            .clone()
            .unwrap_or_else(|| config.state_dir.join("dead-letters.log")),
        ..IngestReport::default()
    };
    let dead_file = crate::files::private_append()
        .open(&report.dead_letters)
        .with_context(|| format!("opening {}", report.dead_letters.display()))?;
    let dead = Arc::new(std::sync::Mutex::new(DeadLetterWriter::new(dead_file)));
    let lines = Arc::new(AtomicU64::new(0));
    let tz = TimeZone::system();
    let mut feeds: Vec<Feed> = opts
        .files
        .iter()
        .map(|path| {
            let (tx, rx) = sync_channel(CHANNEL_EVENTS);
            let handle = spawn_reader(
                path.clone(),
                opts.format,
                tz.clone(),
                lines.clone(),
                dead.clone(),
                tx,
            );
            Feed {
                rx,
                head: None,
                handle,
                name: path.display().to_string(),
            }
        })
        .collect();
    for f in &mut feeds {
        f.head = f.rx.recv().ok();
    }
    let mut progress = Progress::new(opts.progress);
    let mut events = 0u64;
    // Merge: always the earliest head next; a file's own order is kept on equal times.
    while let Some(i) = feeds
        .iter()
        .enumerate()
        .filter_map(|(i, f)| f.head.as_ref().map(|e| (e.time, i)))
        .min()
        .map(|(_, i)| i)
    {
        let ev = feeds[i].head.take().expect("a head");
        feeds[i].head = feeds[i].rx.recv().ok();
        report.from = report.from.or(Some(ev.time));
        report.to = Some(report.to.map_or(ev.time, |t| t.max(ev.time)));
        engine.observe(&ev);
        events += 1;
        while let Ok(alert) = alerts.try_recv() {
            *report.alerts.entry(alert.rule).or_default() += 1;
        }
        if events % 4096 == 0 {
            progress.show(lines.load(Ordering::Relaxed), events, &report);
        }
    }
    while let Ok(alert) = alerts.try_recv() {
        *report.alerts.entry(alert.rule).or_default() += 1;
    }
    for f in feeds {
        let stats = f
            .handle
            .join()
            .map_err(|_| anyhow::anyhow!("the reader of {} panicked", f.name))??;
        report.parsed.merge(&stats);
        report.files.push((f.name, stats));
    }
    progress.finish(lines.load(Ordering::Relaxed), events);
    dead.lock()
        .unwrap_or_else(|e| e.into_inner())
        .flush()
        .context("writing dead letters")?;
    report.baselines_after = engine.state().baseline_count();
    if let Some(writer) = audit_writer {
        writer.close();
        if let Some(sink) = engine.audit() {
            let stats = sink.stats();
            report.audit_records = stats.written.load(Ordering::Relaxed);
            let errors = stats.write_errors.load(Ordering::Relaxed);
            if report.audit_records < stats.queued.load(Ordering::Relaxed) {
                anyhow::bail!(
                    "the audit trail {} refused records ({errors} write errors; see the log)",
                    sink.dir().display()
                );
            }
        }
    }
    // The trail's head goes into the snapshot too: its second copy (audit verify).
    let audit_head = engine.audit().and_then(|a| a.head());
    // It holds what the journal held: the journal's files go once it is on disk.
    let mark = replayed.next();
    snapshot::write(
        engine.state(),
        &config.state_dir,
        now,
        audit_head.as_ref(),
        Some(mark),
    )
    .context("writing the state snapshot")?;
    journal::forget_before(&config.state_dir, mark);
    Ok(report)
}

/// Progress on standard error: a bar on a terminal, a line every few seconds otherwise.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    plain: bool,
    last: Instant,
    started: Instant,
}

impl Progress {
    fn new(enabled: bool) -> Progress {
        let terminal = enabled && std::io::stderr().is_terminal();
        let bar = terminal.then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Progress {
            bar,
            plain: enabled && !terminal,
            last: Instant::now(),
            started: Instant::now(),
        }
    }

    fn show(&mut self, lines: u64, events: u64, report: &IngestReport) {
        let rate = lines as f64 / self.started.elapsed().as_secs_f64().max(1e-3);
        let at = report.to.map(|t| t.to_string()).unwrap_or_default();
        let msg = format!("{lines} lines, {events} events, {rate:.0} lines/s, at {at}");
        if let Some(bar) = &self.bar {
            bar.set_message(msg);
        } else if self.plain && self.last.elapsed() >= Duration::from_secs(5) {
            eprintln!("ingest: {msg}");
            self.last = Instant::now();
        }
    }

    fn finish(&mut self, lines: u64, events: u64) {
        let took = self.started.elapsed().as_secs_f64();
        let msg = format!("{lines} lines, {events} events in {took:.1} s");
        if let Some(bar) = &self.bar {
            bar.finish_with_message(msg);
        } else if self.plain {
            eprintln!("ingest: done: {msg}");
        }
    }
}

/// The summary for a human.
pub fn render(r: &IngestReport) -> String {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header(["", "count"]);
    let span = match (r.from, r.to) {
        (Some(a), Some(b)) => format!("{a} .. {b}"),
        _ => "no events".into(),
    };
    t.add_row(["period".to_string(), span]);
    t.add_row(["lines".to_string(), r.parsed.lines.to_string()]);
    for (kind, n) in &r.parsed.events {
        t.add_row([format!("events: {}", kind.as_str()), n.to_string()]);
    }
    t.add_row([
        "authentications ok / failed".to_string(),
        format!("{} / {}", r.parsed.auth_ok, r.parsed.auth_fail),
    ]);
    t.add_row([
        "unrecognised lines".to_string(),
        r.parsed.unrecognised.to_string(),
    ]);
    t.add_row([
        "dead-lettered lines".to_string(),
        format!(
            "{} ({})",
            r.parsed.dead_lettered(),
            r.dead_letters.display()
        ),
    ]);
    t.add_row([
        "accounts with a baseline".to_string(),
        format!("{} (before: {})", r.baselines_after, r.baselines_before),
    ]);
    let alerts: u64 = r.alerts.values().sum();
    let by_rule: Vec<String> = r.alerts.iter().map(|(k, v)| format!("{k} {v}")).collect();
    t.add_row([
        "alerts the history raised (not delivered)".to_string(),
        if by_rule.is_empty() {
            "0".into()
        } else {
            format!("{alerts}: {}", by_rule.join(", "))
        },
    ]);
    t.add_row([
        "audit trail records added".to_string(),
        match &r.audit_dir {
            Some(dir) => format!("{} ({})", r.audit_records, dir.display()),
            None => "none: [audit] enabled = false".into(),
        },
    ]);
    t.add_row([
        "state written to".to_string(),
        r.snapshot.display().to_string(),
    ]);
    format!("{t}\n")
}

/// Runs `access-oracle ingest` on standard output.
pub fn run_cli(opts: &IngestOptions) -> anyhow::Result<ExitCode> {
    let report = ingest(opts)?;
    let mut out = std::io::stdout().lock();
    if opts.json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        write!(out, "{}", render(&report))?;
    }
    Ok(ExitCode::SUCCESS)
}
