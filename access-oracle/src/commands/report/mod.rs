//! `access-oracle report`: what an auditor hands over, from the audit trail (so it
//! covers the whole retention period, not only what the daemon holds in memory).
//!
//! One pass over the period's records ([`aggregate`], through `audit::search`) gathers
//! the numbers and lists into a [`Report`], which is anchored to the trail by its
//! verification result and chain head at report time; then one file per format writes
//! it: [`json`] (the schema is `docs/REPORTS.md`), [`csv`] (one file per table) and
//! [`html`] (one self-contained page with inline SVG charts).

pub mod aggregate;
pub mod csv;
pub mod html;
pub mod json;
pub mod pseudo;
pub mod schedule;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use jiff::civil::{Date, Weekday};
use jiff::{Timestamp, ToSpan, tz::TimeZone};
use serde::Serialize;

use self::aggregate::{Gathered, Gatherer};
use self::pseudo::Shown;
use crate::audit::crypt::Crypt;
use crate::audit::record::chain_hex;
use crate::audit::search::{Query, search};
use crate::audit::verify::{read_head, verify_with};
use crate::config::{self, Overrides};
use crate::enrich::GeoIp;

/// The report's schema name and version (the `schema` member).
pub const SCHEMA: &str = "access-oracle-report/1";

/// The output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One self-contained HTML page.
    Html,
    /// One CSV file per table, in a directory.
    Csv,
    /// One JSON document.
    Json,
}

/// The last complete period before now (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Period {
    /// Yesterday.
    Day,
    /// Last week, Monday to Monday.
    Week,
    /// Last month.
    Month,
}

impl Period {
    /// The period's start and end (exclusive) as of `now`.
    pub fn bounds(self, now: Timestamp) -> anyhow::Result<(Timestamp, Timestamp)> {
        let today = now.to_zoned(TimeZone::UTC).date();
        let (start, end): (Date, Date) = match self {
            Period::Day => (today.yesterday()?, today),
            Period::Week => {
                let monday =
                    today.checked_sub(i64::from(today.weekday().since(Weekday::Monday)).days())?;
                (monday.checked_sub(7.days())?, monday)
            }
            Period::Month => {
                let first = today.first_of_month();
                (first.checked_sub(1.month())?, first)
            }
        };
        let at =
            |d: Date| -> anyhow::Result<Timestamp> { Ok(d.to_zoned(TimeZone::UTC)?.timestamp()) };
        Ok((at(start)?, at(end)?))
    }
}

/// What `access-oracle report` was asked for.
#[derive(Debug, Clone)]
pub struct Options {
    /// The config file (for `[audit] dir`, `key_file`, `[geoip]`).
    pub config: Option<PathBuf>,
    /// Overrides `server.state_dir`.
    pub state_dir: Option<PathBuf>,
    /// Overrides `[audit] dir`.
    pub dir: Option<PathBuf>,
    /// Overrides `[audit] key_file`.
    pub key_file: Option<PathBuf>,
    /// Events at or after this time.
    pub since: Option<Timestamp>,
    /// Events before this time.
    pub until: Option<Timestamp>,
    /// The last complete day, week or month (instead of `since` / `until`).
    pub period: Option<Period>,
    /// The per-account access report of this account.
    pub user: Option<String>,
    /// The format.
    pub format: Format,
    /// Where to write (a file; a directory for CSV); standard output without it.
    pub output: Option<PathBuf>,
    /// Pseudonymise accounts, addresses and the other names.
    pub pseudonymise: bool,
    /// Cut addresses to /24 and /48.
    pub truncate_addresses: bool,
}

/// The period reported on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Span {
    /// Its start, absent for "since the trail's beginning".
    pub since: Option<Timestamp>,
    /// Its end (exclusive).
    pub until: Timestamp,
}

/// The trail's verification at report time.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Verification {
    /// Every record checks and none is missing.
    pub ok: bool,
    /// Records checked.
    pub records: u64,
    /// The first record's sequence number.
    pub first_seq: Option<u64>,
    /// The last record's sequence number.
    pub last_seq: Option<u64>,
    /// When the last record was written.
    pub last_logged: Option<Timestamp>,
    /// Records up to this one were removed by retention (and the removal recorded).
    pub removed_through_seq: Option<u64>,
    /// Where the chain does not check, when it does not.
    pub broken: Option<String>,
    /// Why the trail is not complete (records missing, a head changed, ...).
    pub problems: Vec<String>,
    /// What was checked or not and is no problem.
    pub notes: Vec<String>,
}

/// The chain's head: the last record flushed to disk, as `head.json` names it
/// (checked against its MAC).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Head {
    /// Its sequence number.
    pub seq: u64,
    /// Its chain value (hex).
    pub chain: String,
}

/// The trail the report was made from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TrailInfo {
    /// Its directory.
    pub dir: String,
    /// The verification result at report time.
    pub verification: Verification,
    /// The chain's head at report time, when there is one.
    pub head: Option<Head>,
    /// Why the head could not be read, when it could not.
    pub head_error: Option<String>,
    /// Records read in the pass (bookkeeping aside).
    pub records_read: u64,
    /// Records in the period (and of the account, with `--user`).
    pub records_reported: u64,
    /// Lines that are not records.
    pub unreadable: u64,
    /// Encrypted records not read for want of the key: the report leaves them out.
    pub encrypted_unread: u64,
}

/// One control and what in the report answers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Control {
    /// The control (`PCI DSS 10.2`, ...).
    pub control: &'static str,
    /// What it asks for.
    pub asks: &'static str,
    /// The report's sections that answer it.
    pub sections: &'static [&'static str],
}

/// The mapping of the report's sections to the controls it serves.
pub const CONTROLS: &[Control] = &[
    Control {
        control: "PCI DSS 10.2",
        asks: "audit logs capture user access, failed access attempts, administrative \
               actions and changes to identification and authentication",
        sections: &[
            "logins",
            "top_failing_addresses",
            "top_failing_accounts",
            "admin_actions",
            "holds_and_blocks",
            "access",
        ],
    },
    Control {
        control: "PCI DSS 10.4",
        asks: "audit logs are reviewed to identify anomalies or suspicious activity",
        sections: &[
            "alerts",
            "holds_and_blocks",
            "top_failing_addresses",
            "trail",
        ],
    },
    Control {
        control: "HIPAA 164.312(b)",
        asks: "mechanisms that record and examine activity in systems holding electronic \
               protected health information",
        sections: &["logins", "access", "admin_actions", "trail"],
    },
    Control {
        control: "GDPR Art. 30",
        asks: "records of processing activities: what is processed about whom",
        sections: &["access", "sending", "logins"],
    },
    Control {
        control: "GDPR Art. 32",
        asks: "security of processing: the ability to detect and respond to incidents, \
               integrity of the records",
        sections: &["alerts", "holds_and_blocks", "trail"],
    },
];

/// The whole report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// [`SCHEMA`].
    pub schema: &'static str,
    /// When it was made.
    pub generated: Timestamp,
    /// The period.
    pub period: Span,
    /// The account of a per-account report (as shown).
    pub user: Option<String>,
    /// Whether names are pseudonymised (reasons are then left out).
    pub pseudonymised: bool,
    /// Whether addresses are cut to /24 and /48.
    pub addresses_truncated: bool,
    /// Where countries and AS come from: `not configured`, or the databases in use at
    /// report time.
    pub geoip: String,
    /// The trail and its verification.
    pub trail: TrailInfo,
    /// The numbers and lists.
    #[serde(flatten)]
    pub gathered: Gathered,
    /// The controls the report's sections serve.
    pub controls: &'static [Control],
}

/// Where the trail, its key and the GeoIP databases are.
struct Resolved {
    dir: PathBuf,
    key_file: PathBuf,
    state_dir: PathBuf,
    geoip: crate::enrich::GeoIpConfig,
}

fn resolve(o: &Options) -> anyhow::Result<Resolved> {
    let overrides = Overrides {
        state_dir: o.state_dir.clone(),
        ..Overrides::default()
    };
    let config = config::load(o.config.as_deref(), &overrides)?;
    let audit = &config.raw.audit;
    Ok(Resolved {
        dir: o
            .dir
            .clone()
            .unwrap_or_else(|| audit.dir(&config.state_dir)),
        key_file: o
            .key_file
            .clone()
            .unwrap_or_else(|| audit.key_file(&config.state_dir)),
        state_dir: config.state_dir.clone(),
        geoip: config.raw.geoip.clone(),
    })
}

/// The period `o` asks for, as of `now`.
pub fn span(o: &Options, now: Timestamp) -> anyhow::Result<Span> {
    if let Some(p) = o.period {
        if o.since.is_some() || o.until.is_some() {
            anyhow::bail!("--period and --since / --until exclude each other");
        }
        let (since, until) = p.bounds(now)?;
        return Ok(Span {
            since: Some(since),
            until,
        });
    }
    let until = o.until.unwrap_or(now);
    if o.since.is_some_and(|s| s >= until) {
        anyhow::bail!("--since must be before --until");
    }
    Ok(Span {
        since: o.since,
        until,
    })
}

/// Makes the report from the trail in `dir` (its key in `key_file`, the state
/// snapshot in `state_dir` for the verification), looking addresses up in `geo`, as
/// of `now`.
pub fn build(
    dir: &Path,
    key_file: &Path,
    state_dir: &Path,
    geo: (&GeoIp, String),
    o: &Options,
    shown: &Shown,
    now: Timestamp,
) -> anyhow::Result<Report> {
    let span = span(o, now)?;
    if !dir.exists() {
        anyhow::bail!("no audit trail at {}", dir.display());
    }
    let key = crate::audit::key::read(key_file);
    let verification = match &key {
        Err(e) => Verification {
            broken: Some(format!(
                "not verified: the key {} is needed ({e})",
                key_file.display()
            )),
            ..Verification::default()
        },
        Ok(key) => match verify_with(dir, key, Some(state_dir)) {
            Ok(v) => Verification {
                ok: v.complete(),
                records: v.records,
                first_seq: v.first_seq,
                last_seq: v.last_seq,
                last_logged: v.last_logged,
                removed_through_seq: v.removed_through_seq,
                broken: None,
                problems: v.problems.iter().map(ToString::to_string).collect(),
                notes: v.notes.clone(),
            },
            Err(b) => Verification {
                broken: Some(b.to_string()),
                ..Verification::default()
            },
        },
    };
    let (head, head_error) = match &key {
        Err(_) => (None, None),
        Ok(key) => match read_head(dir, key) {
            Ok(h) => (
                h.map(|(seq, chain)| Head {
                    seq,
                    chain: chain_hex(&chain),
                }),
                None,
            ),
            Err(b) => (None, Some(b.to_string())),
        },
    };
    let crypt = key.as_deref().ok().map(Crypt::new);
    let query = Query {
        user: o.user.clone(),
        ip: None,
        since: span.since,
        until: Some(span.until),
        kinds: Vec::new(),
    };
    let mut gatherer = Gatherer::new(shown, geo.0, o.user.is_some());
    let stats = search(dir, &query, crypt.as_ref(), |r| gatherer.add(&r))
        .with_context(|| format!("cannot read the audit trail {}", dir.display()))?;
    Ok(Report {
        schema: SCHEMA,
        generated: now,
        period: span,
        user: o.user.as_deref().map(|u| shown.account(u)),
        pseudonymised: shown.is_pseudonymised(),
        addresses_truncated: o.truncate_addresses,
        geoip: geo.1,
        trail: TrailInfo {
            dir: dir.display().to_string(),
            verification,
            head,
            head_error,
            records_read: stats.records,
            records_reported: stats.matched,
            unreadable: stats.unreadable,
            encrypted_unread: stats.encrypted_unread,
        },
        gathered: gatherer.finish(),
        controls: CONTROLS,
    })
}

/// Opens the GeoIP databases of the config, if any: what the report says of them.
fn open_geoip(config: &crate::enrich::GeoIpConfig) -> (GeoIp, String) {
    if config.city_db.is_none() && config.asn_db.is_none() {
        return (GeoIp::empty(), "not configured".into());
    }
    match GeoIp::open(config) {
        Ok(g) => {
            let named: Vec<String> = [&config.city_db, &config.asn_db]
                .into_iter()
                .flatten()
                .map(|p| p.display().to_string())
                .collect();
            (g, format!("at report time: {}", named.join(", ")))
        }
        Err(e) => {
            eprintln!(
                "access-oracle: the GeoIP databases cannot be read ({e}): countries and AS are unknown"
            );
            (GeoIp::empty(), format!("not readable: {e}"))
        }
    }
}

/// Writes `report` in `format` to `output` (a file, or a directory for CSV), or to
/// standard output.
pub fn write(report: &Report, format: Format, output: Option<&Path>) -> anyhow::Result<()> {
    match format {
        Format::Csv => {
            let Some(dir) = output else {
                anyhow::bail!("CSV is one file per table: name a directory with -o");
            };
            csv::write_dir(report, dir)
                .with_context(|| format!("cannot write the CSV files in {}", dir.display()))
        }
        Format::Json | Format::Html => {
            let bytes = match format {
                Format::Json => json::render(report)?,
                _ => html::render(report).into_bytes(),
            };
            match output {
                Some(path) => crate::files::private_create()
                    .open(path)
                    .and_then(|mut f| f.write_all(&bytes))
                    .with_context(|| format!("cannot write {}", path.display())),
                None => {
                    let mut out = std::io::stdout().lock();
                    out.write_all(&bytes)?;
                    out.flush()?;
                    Ok(())
                }
            }
        }
    }
}

/// `access-oracle report`: exit 0 when the report was written (its verification
/// result is in it), with a warning on standard error when the trail does not verify.
pub fn run(o: &Options, now: Timestamp) -> anyhow::Result<ExitCode> {
    // Whole seconds: the report's times are read by people.
    let now = Timestamp::from_second(now.as_second()).unwrap_or(now);
    let at = resolve(o)?;
    let (geo, geo_text) = open_geoip(&at.geoip);
    let shown = if o.pseudonymise {
        Shown::pseudonymised(o.truncate_addresses)?
    } else {
        Shown::plain(o.truncate_addresses)
    };
    let report = build(
        &at.dir,
        &at.key_file,
        &at.state_dir,
        (&geo, geo_text),
        o,
        &shown,
        now,
    )?;
    write(&report, o.format, o.output.as_deref())?;
    let v = &report.trail.verification;
    if !v.ok {
        eprintln!(
            "access-oracle: the audit trail does not verify ({}); the report says so",
            v.broken
                .clone()
                .unwrap_or_else(|| format!("{} problem(s)", v.problems.len()))
        );
    }
    if report.trail.encrypted_unread > 0 {
        eprintln!(
            "access-oracle: {} encrypted record(s) not read: the key {} is needed",
            report.trail.encrypted_unread,
            at.key_file.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests;
