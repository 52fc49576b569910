//! `access-oracle parse`: every event of some log files as JSON lines, or `--stats`.
//!
//! The way `fail2ban-regex` lets an administrator check a log format against a filter:
//! point it at `/var/log/exim4/mainlog` or Dovecot's log and see what the oracle would
//! make of each line. Files may be plain or gzip-compressed (`.gz`, or anything that
//! starts with the gzip magic bytes); `-` is standard input. Offsets in `.gz` files count
//! decompressed bytes.
//!
//! Syslog timestamps have no year: each file's modification time is the reference
//! (a line is not from after its file was last written), and now for standard input.
//! Times without an offset are in the system's time zone.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use comfy_table::Table;
use jiff::Timestamp;
use jiff::tz::TimeZone;

use crate::sources::{DeadLetterWriter, Format, ParseStats, Parsed, reader};

/// What `parse` was asked to do.
#[derive(Debug, Clone)]
pub struct ParseOptions {
    /// Which parser the lines go to.
    pub format: Format,
    /// Print counts only, not events.
    pub stats: bool,
    /// The files (`-` for standard input).
    pub files: Vec<PathBuf>,
    /// The time zone of timestamps written without an offset.
    pub tz: TimeZone,
    /// The reference time for years syslog leaves out; `None`: each file's modification
    /// time (now for standard input).
    pub reference: Option<Timestamp>,
    /// Where to append the lines that looked relevant but did not parse.
    pub dead_letters: Option<PathBuf>,
}

/// Runs `access-oracle parse` as the command line asked, on standard output.
pub fn run_cli(
    format: Format,
    stats: bool,
    files: Vec<PathBuf>,
    dead_letters: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let opts = ParseOptions {
        format,
        stats,
        files,
        tz: TimeZone::system(),
        reference: None,
        dead_letters,
    };
    let stdout = io::stdout();
    let mut out = io::BufWriter::with_capacity(1 << 16, stdout.lock());
    let totals = run(&opts, &mut out)?;
    out.flush()?;
    if !opts.stats && totals.dead_lettered() > 0 {
        eprintln!(
            "access-oracle parse: {} line(s) looked relevant but did not parse{}",
            totals.dead_lettered(),
            match &opts.dead_letters {
                Some(p) => format!(" (written to {})", p.display()),
                None => " (see --stats, --dead-letters FILE)".into(),
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Parses every file in `opts` and writes the events (or, with `stats`, the table of
/// counts) to `out`; returns the counts.
pub fn run(opts: &ParseOptions, out: &mut dyn Write) -> anyhow::Result<ParseStats> {
    let mut totals = ParseStats::default();
    let mut dead = match &opts.dead_letters {
        Some(path) => Some(DeadLetterWriter::new(
            crate::files::private_append()
                .open(path)
                .with_context(|| format!("opening {}", path.display()))?,
        )),
        None => None,
    };
    let mut per_file = Vec::new();
    for path in &opts.files {
        let stats = parse_file(opts, path, out, dead.as_mut())
            .with_context(|| format!("reading {}", path.display()))?;
        totals.merge(&stats);
        per_file.push((path.display().to_string(), stats));
    }
    if let Some(dead) = dead.as_mut() {
        dead.flush()?;
    }
    if opts.stats {
        writeln!(out, "{}", stats_table(&per_file, &totals))?;
    }
    Ok(totals)
}

/// Parses one file.
fn parse_file(
    opts: &ParseOptions,
    path: &Path,
    out: &mut dyn Write,
    mut dead: Option<&mut DeadLetterWriter<File>>,
) -> anyhow::Result<ParseStats> {
    reader::each_line(
        path,
        opts.format,
        &opts.tz,
        opts.reference,
        |parsed, ctx, line| {
            match parsed {
                Parsed::DeadLetter(reason) => {
                    if let Some(dead) = dead.as_deref_mut() {
                        dead.write(reason, ctx, line)?;
                    }
                }
                _ if opts.stats => {}
                _ => {
                    for event in parsed.events() {
                        serde_json::to_writer(&mut *out, event)?;
                        out.write_all(b"\n")?;
                    }
                }
            }
            Ok(())
        },
    )
}

/// The `--stats` table: one column per file (when there are several) and the total.
fn stats_table(per_file: &[(String, ParseStats)], totals: &ParseStats) -> Table {
    let mut columns: Vec<(&str, &ParseStats)> = Vec::new();
    if per_file.len() > 1 {
        columns.extend(per_file.iter().map(|(name, s)| (name.as_str(), s)));
    }
    columns.push(("total", totals));
    let mut table = Table::new();
    let mut header = vec!["".to_string()];
    header.extend(columns.iter().map(|(n, _)| n.to_string()));
    table.set_header(header);
    let mut row = |label: &str, value: &dyn Fn(&ParseStats) -> u64| {
        let mut r = vec![label.to_string()];
        r.extend(columns.iter().map(|(_, s)| value(s).to_string()));
        table.add_row(r);
    };
    row("lines", &|s| s.lines);
    for kind in crate::sources::EventKind::ALL {
        if totals.events.contains_key(&kind) {
            row(kind.as_str(), &|s| {
                s.events.get(&kind).copied().unwrap_or(0)
            });
        }
    }
    row("auth ok", &|s| s.auth_ok);
    row("auth failures", &|s| s.auth_fail);
    row("irrelevant", &|s| s.irrelevant);
    row("unrecognised", &|s| s.unrecognised);
    row("dead-lettered", &|s| s.dead_lettered());
    for reason in totals.dead_letters.keys() {
        row(&format!("  {reason}"), &|s| {
            s.dead_letters.get(reason).copied().unwrap_or(0)
        });
    }
    table
}
