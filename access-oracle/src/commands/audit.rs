//! The `access-oracle audit verify` and `audit search` commands: they read the files
//! directly (file permissions are the access control), so they work with the oracle
//! stopped too.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};

use crate::audit::crypt::Crypt;
use crate::audit::record::{Kind, Record};
use crate::audit::search::{Query, search};
use crate::audit::verify::verify_with;
use crate::config::{self, Overrides};
use crate::protocol::Outcome;
use crate::text::escape_controls;

/// Where the trail is: from the config (or the defaults), each part overridable.
#[derive(Debug, Clone, Default)]
pub struct Location {
    /// The config file.
    pub config: Option<PathBuf>,
    /// Overrides `server.state_dir`.
    pub state_dir: Option<PathBuf>,
    /// Overrides `[audit] dir`.
    pub dir: Option<PathBuf>,
    /// Overrides `[audit] key_file`.
    pub key_file: Option<PathBuf>,
}

impl Location {
    /// The trail's directory, its key file and the state directory.
    fn resolve(&self) -> anyhow::Result<(PathBuf, PathBuf, PathBuf)> {
        let overrides = Overrides {
            state_dir: self.state_dir.clone(),
            ..Overrides::default()
        };
        let config = config::load(self.config.as_deref(), &overrides)?;
        let audit = &config.raw.audit;
        Ok((
            self.dir
                .clone()
                .unwrap_or_else(|| audit.dir(&config.state_dir)),
            self.key_file
                .clone()
                .unwrap_or_else(|| audit.key_file(&config.state_dir)),
            config.state_dir.clone(),
        ))
    }
}

/// `audit verify`: exit 0 when every record checks and none is missing (against
/// `head.json` and the audit head in the state snapshot); 1 at the first record that
/// does not check, or when records are missing (every problem listed).
pub fn run_verify(at: &Location, json: bool) -> anyhow::Result<ExitCode> {
    let (dir, key_file, state_dir) = at.resolve()?;
    let key = crate::audit::key::read(&key_file).map_err(anyhow::Error::msg)?;
    let result = verify_with(&dir, &key, Some(&state_dir));
    let mut out = std::io::stdout().lock();
    // Paths and reasons may hold what an outsider chose (a reason quotes a record).
    let shown = |s: &str| escape_controls(s).into_owned();
    let dir_shown = shown(&dir.display().to_string());
    match result {
        Ok(v) => {
            let complete = v.complete();
            if json {
                writeln!(
                    out,
                    "{}",
                    serde_json::json!({ "ok": complete, "dir": dir, "verified": v })
                )?;
            } else {
                if !complete {
                    writeln!(
                        out,
                        "{dir_shown}: INCOMPLETE: every record checks, but {} problem(s) \
                         say records are missing or were replaced",
                        v.problems.len()
                    )?;
                    for p in &v.problems {
                        writeln!(out, "  problem: {}", shown(&p.to_string()))?;
                    }
                }
                if v.records == 0 {
                    writeln!(out, "{dir_shown}: no records")?;
                } else {
                    write!(
                        out,
                        "{dir_shown}: {}{} records in {} segment(s), seq {} to {}, last written {}",
                        if complete { "ok, " } else { "" },
                        v.records,
                        v.files,
                        v.first_seq.unwrap_or(0),
                        v.last_seq.unwrap_or(0),
                        v.last_logged.map(|t| t.to_string()).unwrap_or_default(),
                    )?;
                    if let Some(through) = v.removed_through_seq {
                        write!(out, "; records 1 to {through} removed by retention")?;
                    }
                    if let Some(seq) = v.snapshot_seq {
                        write!(out, "; reaches record {seq} named by the state snapshot")?;
                    }
                    writeln!(out)?;
                }
                for note in &v.notes {
                    writeln!(out, "  note: {}", shown(note))?;
                }
            }
            Ok(if complete {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Err(b) => {
            if json {
                writeln!(
                    out,
                    "{}",
                    serde_json::json!({ "ok": false, "dir": dir, "broken": b })
                )?;
            } else {
                writeln!(out, "{dir_shown}: BROKEN at {}", shown(&b.to_string()))?;
            }
            Ok(ExitCode::FAILURE)
        }
    }
}

/// `audit search`: the matching records as a table, or one JSON object per line.
pub fn run_search(
    at: &Location,
    query: &Query,
    limit: usize,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let (dir, key_file, _) = at.resolve()?;
    if !dir.exists() {
        anyhow::bail!("no audit trail at {}", dir.display());
    }
    // Encrypted records need the key; plain ones do not, so a reader without it still
    // sees those.
    let key = crate::audit::key::read(&key_file);
    let crypt = key.as_deref().ok().map(Crypt::new);
    let mut found: Vec<Record> = Vec::new();
    let mut out = std::io::stdout().lock();
    let mut write_error = None;
    let stats = search(&dir, query, crypt.as_ref(), |r| {
        if json {
            if write_error.is_none()
                && let Err(e) = serde_json::to_writer(&mut out, &r)
                    .map_err(std::io::Error::from)
                    .and_then(|()| out.write_all(b"\n"))
            {
                write_error = Some(e);
            }
        } else {
            // Keep the newest `limit` for the table.
            if found.len() == limit.max(1) {
                found.remove(0);
            }
            found.push(r);
        }
    })
    .with_context(|| format!("cannot read the audit trail {}", dir.display()))?;
    if let Some(e) = write_error {
        // A closed pipe (`| head`) is not an error worth a message.
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            return Err(e.into());
        }
        return Ok(ExitCode::SUCCESS);
    }
    if !json {
        if !found.is_empty() {
            writeln!(out, "{}", table(&found))?;
        }
        let shown = if stats.matched as usize > found.len() {
            format!(" (the newest {} shown; --limit for more)", found.len())
        } else {
            String::new()
        };
        writeln!(
            out,
            "{} of {} records matched in {} segment(s){shown}",
            stats.matched, stats.records, stats.files
        )?;
    }
    if stats.encrypted_unread > 0 {
        eprintln!(
            "access-oracle: {} encrypted record(s) not read: the key {} is needed ({})",
            stats.encrypted_unread,
            key_file.display(),
            key.err().unwrap_or_default()
        );
    }
    if stats.unreadable > 0 {
        eprintln!(
            "access-oracle: {} line(s) of the trail are not records; run `access-oracle audit verify`",
            stats.unreadable
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The records as a table for a person: every field an outsider may have chosen (the
/// account, the protocol, reasons, mailbox names) is escaped ([`escape_controls`]).
fn table(records: &[Record]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header([
        "time (UTC)",
        "kind",
        "source",
        "account",
        "address",
        "protocol",
        "what",
    ]);
    for r in records {
        t.add_row([
            r.time.strftime("%Y-%m-%d %H:%M:%S").to_string(),
            r.kind.as_str().to_string(),
            serde_json::to_value(r.source)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            escape_controls(r.user.as_deref().unwrap_or("")).into_owned(),
            r.ip.map(|ip| ip.to_string()).unwrap_or_default(),
            escape_controls(r.protocol.as_deref().unwrap_or("")).into_owned(),
            what(r),
        ]);
    }
    t
}

/// One line saying what a record is about, for a person: what an outsider chose in it
/// (reasons, mailbox names, message ids) is escaped ([`escape_controls`]).
pub fn what(r: &Record) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut add = |s: String| {
        if !s.is_empty() {
            parts.push(s);
        }
    };
    match r.kind {
        Kind::Auth => {
            add(match r.result {
                Some(Outcome::Ok) => "ok".into(),
                Some(Outcome::Fail) => "failed".into(),
                None => "refused before the password check".into(),
            });
            if let Some(v) = r.verdict.as_deref().filter(|v| *v != "accept") {
                add(format!("{v}: {}", r.reason.as_deref().unwrap_or("")));
            }
        }
        Kind::Sent => {
            add(r.msgid.as_deref().unwrap_or("").to_string());
            if let Some(n) = r.rcpts {
                add(format!("{n} recipient(s)"));
            }
        }
        Kind::Logout => {
            if let (Some(i), Some(o)) = (r.bytes_in, r.bytes_out) {
                add(format!("in {i} B, out {o} B"));
            }
            if let Some(n) = r.fetched {
                add(format!("{n} fetched"));
            }
            if let Some(n) = r.deleted {
                add(format!("{n} deleted"));
            }
        }
        Kind::Mailbox | Kind::Admin => {
            add(r.action.as_deref().unwrap_or("").to_string());
            if let Some(m) = r.mailbox.as_deref() {
                add(match r.from_mailbox.as_deref() {
                    Some(from) => format!("{from} -> {m}"),
                    None => m.to_string(),
                });
            }
            if let Some(uid) = r.uid {
                add(format!("uid {uid}"));
            }
            if let Some(id) = r.msgid.as_deref() {
                add(id.to_string());
            }
            if let Some(a) = r.admin.as_deref() {
                add(format!("by {a}"));
            }
        }
        Kind::Alert => {
            add(r.rule.as_deref().unwrap_or("").to_string());
            if let Some(resp) = r.response {
                add(resp.as_str().to_string());
            }
            if let Some(u) = r.until {
                add(format!("until {}", u.strftime("%Y-%m-%d %H:%M:%S")));
            }
            add(r.reason.as_deref().unwrap_or("").to_string());
        }
        Kind::Release | Kind::Unblock | Kind::Action => {
            add(r.reason.as_deref().unwrap_or("").to_string());
            if let Some(a) = r.admin.as_deref() {
                add(format!("by {a}"));
            }
        }
        Kind::Segment | Kind::Retention | Kind::Recovered => {
            add(r.reason.as_deref().unwrap_or("").to_string());
        }
    }
    let joined = parts.join(", ");
    let text = escape_controls(&joined);
    if text.chars().count() > 100 {
        text.chars().take(99).chain(['…']).collect()
    } else {
        text.into_owned()
    }
}
