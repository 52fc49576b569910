//! `access-oracle replay`: a rule set over past logs, on the logs' own clock.
//!
//! "Who would this configuration have deferred last month?" The logs' events are merged
//! in time order and fed to a fresh engine built from the given config (or the
//! defaults), exactly as live events would be; nothing touches a running oracle's state.
//! The report lists the alerts, the accounts it would have held, the addresses it would
//! have blocked, and the login attempts and recipients it would have deferred.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::Serialize;
use serde_json::json;

use crate::alert::Alert;
use crate::config::{self, Overrides};
use crate::engine::Engine;
use crate::protocol::Reply;
use crate::rules::Response;
use crate::sources::{EventKind, Format, LogEvent, ParseStats, reader};

/// What `replay` was asked to do.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// The config whose rules to replay; the defaults without it.
    pub config: Option<PathBuf>,
    /// The log format.
    pub format: Format,
    /// Print JSON instead of tables.
    pub json: bool,
    /// The log files, in any order (events are merged by time).
    pub files: Vec<PathBuf>,
}

/// A login attempt the rules would have deferred.
#[derive(Debug, Clone, Serialize)]
pub struct Deferred {
    /// When.
    pub time: Timestamp,
    /// The account.
    pub user: String,
    /// From where.
    pub ip: Option<IpAddr>,
    /// By which protocol.
    pub protocol: String,
    /// The text the client would have seen.
    pub message: String,
}

/// What the rules would have done.
#[derive(Debug, Default, Serialize)]
pub struct ReplayReport {
    /// Lines read, events by kind, unparsed lines.
    pub parsed: ParseStats,
    /// The first and last event's times.
    pub from: Option<Timestamp>,
    /// The last event's time.
    pub to: Option<Timestamp>,
    /// Every alert, in time order.
    pub alerts: Vec<Arc<Alert>>,
    /// Accounts that would have been held, with how often.
    pub held: BTreeMap<String, u64>,
    /// Addresses whose authentication would have been blocked, with how often.
    pub blocked: BTreeMap<String, u64>,
    /// Accounts whose recipients would have been throttled, with how often.
    pub throttled: BTreeMap<String, u64>,
    /// Login attempts that would have been deferred.
    pub deferred_logins: Vec<Deferred>,
    /// Recipients that would have been deferred at the ceiling.
    pub deferred_rcpts: u64,
}

/// Replays the files through the rules and returns the report.
pub fn replay(opts: &ReplayOptions) -> anyhow::Result<ReplayReport> {
    let config = config::load(opts.config.as_deref(), &Overrides::default())?;
    let tz = TimeZone::system();
    let mut events: Vec<LogEvent> = Vec::new();
    let mut report = ReplayReport::default();
    for path in &opts.files {
        let stats = reader::each_line(path, opts.format, &tz, None, |parsed, _, _| {
            events.extend(parsed.events().iter().cloned());
            Ok(())
        })?;
        report.parsed.merge(&stats);
    }
    // Merge the files on the logs' clock; equal times keep their file order.
    events.sort_by_key(|e| e.time);
    report.from = events.first().map(|e| e.time);
    report.to = events.last().map(|e| e.time);
    let start = report.from.unwrap_or_else(Timestamp::now);
    let (engine, mut alerts) = Engine::new(&config, start);
    // The config's GeoIP databases and lists, so the location rules replay too.
    engine.set_enrichment(crate::server::enrichment(&config)?);
    for ev in &events {
        let observed = engine.observe(ev);
        if ev.kind == EventKind::Auth
            && let Some(Reply::Defer(message) | Reply::Deny(message)) = observed.verdict
        {
            report.deferred_logins.push(Deferred {
                time: ev.time,
                user: ev.user.as_deref().unwrap_or_default().to_owned(),
                ip: ev.ip,
                protocol: ev
                    .protocol
                    .map_or("smtp", crate::sources::Protocol::as_str)
                    .to_string(),
                message,
            });
        }
        report.deferred_rcpts += observed.rcpts_deferred;
        while let Ok(alert) = alerts.try_recv() {
            let who = |a: &Alert| a.account.clone().unwrap_or_default();
            match alert.response {
                Response::HoldAccount | Response::DenyAccount => {
                    *report.held.entry(who(&alert)).or_default() += 1
                }
                Response::ThrottleRcpt => *report.throttled.entry(who(&alert)).or_default() += 1,
                Response::DeferIpAuth | Response::BlockIp => {
                    let ip = alert.ip.map(|ip| ip.to_string()).unwrap_or_default();
                    *report.blocked.entry(ip).or_default() += 1
                }
                Response::Alert | Response::Refuse => {}
            }
            report.alerts.push(alert);
        }
    }
    Ok(report)
}

/// Runs `access-oracle replay` on standard output.
pub fn run_cli(opts: &ReplayOptions) -> anyhow::Result<ExitCode> {
    let report = replay(opts)?;
    let mut out = std::io::stdout().lock();
    if opts.json {
        serde_json::to_writer_pretty(&mut out, &json!(report))?;
        writeln!(out)?;
    } else {
        write!(out, "{}", render(&report))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn table() -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t
}

/// The report for a human.
pub fn render(r: &ReplayReport) -> String {
    let mut out = String::new();
    let span = match (r.from, r.to) {
        (Some(from), Some(to)) => format!("{from} .. {to}"),
        _ => "no events".into(),
    };
    let events: u64 = r.parsed.events.values().sum();
    out.push_str(&format!(
        "replayed {} lines, {events} events ({span}); {} unrecognised, {} not parsed\n",
        r.parsed.lines,
        r.parsed.unrecognised,
        r.parsed.dead_lettered()
    ));
    if r.alerts.is_empty() {
        out.push_str("no rule would have fired\n");
        return out;
    }
    let mut t = table();
    t.set_header(["time", "severity", "rule", "account", "ip", "summary"]);
    for a in &r.alerts {
        t.add_row([
            a.time.to_string(),
            a.severity.as_str().to_string(),
            a.rule.to_string(),
            a.account.clone().unwrap_or_default(),
            a.ip.map(|ip| ip.to_string()).unwrap_or_default(),
            a.summary.clone(),
        ]);
    }
    out.push_str(&format!("{} alert(s)\n{t}\n", r.alerts.len()));
    let list = |m: &BTreeMap<String, u64>| {
        m.iter()
            .map(|(k, n)| {
                if *n > 1 {
                    format!("{k} ({n}x)")
                } else {
                    k.clone()
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut t = table();
    t.set_header(["would have", ""]);
    t.add_row(["held accounts".to_string(), list(&r.held)]);
    t.add_row(["blocked addresses (AUTH)".to_string(), list(&r.blocked)]);
    t.add_row(["throttled accounts (RCPT)".to_string(), list(&r.throttled)]);
    t.add_row([
        "deferred login attempts".to_string(),
        r.deferred_logins.len().to_string(),
    ]);
    t.add_row([
        "deferred recipients".to_string(),
        r.deferred_rcpts.to_string(),
    ]);
    out.push_str(&format!("{t}\n"));
    out
}
