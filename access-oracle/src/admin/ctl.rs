//! `access-oracle ctl`: the admin client. Finds the admin socket, sends one request,
//! reads the answer into its typed view ([`super::views`]) and renders it as tables that
//! fit the terminal (80 columns when standard output is not one), or prints the raw JSON
//! `data` with `--json`.
//!
//! Every value from outside (an account name, an alert's summary, a hold's message, a
//! file name) goes through [`escape_controls`] before it is shown, so that it cannot act
//! on the reader's terminal.

use std::fmt;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use comfy_table::{ContentArrangement, Table, presets::UTF8_FULL_CONDENSED};
use jiff::Timestamp;
use serde_json::Value;

use super::AdminRequest;
use super::views::{
    AccountView, AlertView, BaselineView, CountersView, HoldScopeView, HoldView, InForce, Named,
    ReleaseView, SeenView, StatusView, TimelineEntry, UnblockView, View,
};
use crate::config::{RawConfig, read_raw};
use crate::text::escape_controls;

/// The config file the packages install; `ctl` reads its `[server] admin_socket` when
/// neither `--socket` nor `--config` is given.
pub const PACKAGED_CONFIG: &str = "/etc/access-oracle/access-oracle.toml";

/// The width tables are fitted to when standard output is not a terminal.
pub const DEFAULT_WIDTH: u16 = 80;

/// Where `ctl` found the admin socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SocketSource {
    /// `--socket` (or the caller's own, as the demo's).
    Flag,
    /// `[server] admin_socket` of the config given with `--config`.
    Config(PathBuf),
    /// `[server] admin_socket` of the packaged config ([`PACKAGED_CONFIG`]).
    PackagedConfig(PathBuf),
    /// The built-in default: no `--socket`, no `--config`, no packaged config.
    BuiltIn(PathBuf),
}

/// The admin socket `ctl` talks to, and where that came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSocket {
    /// The socket.
    pub path: PathBuf,
    /// Where it was found.
    pub source: SocketSource,
}

impl fmt::Display for AdminSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = escape_controls(&self.path.to_string_lossy()).into_owned();
        match &self.source {
            SocketSource::Flag => write!(f, "{path} (from --socket)"),
            SocketSource::Config(c) | SocketSource::PackagedConfig(c) => write!(
                f,
                "{path} ([server] admin_socket in {})",
                escape_controls(&c.to_string_lossy())
            ),
            SocketSource::BuiltIn(packaged) => write!(
                f,
                "{path} (the built-in default: no --socket, no --config, no {})",
                escape_controls(&packaged.to_string_lossy())
            ),
        }
    }
}

/// Finds the admin socket: `--socket` when given, else `[server] admin_socket` of the
/// `--config` file, else of the `packaged` config when that file exists, else the
/// built-in default (`/run/access-oracle/admin.sock`). A config that cannot be read is
/// an error naming it (the default socket might not be the one it names).
pub fn find_socket(
    socket: Option<PathBuf>,
    config: Option<PathBuf>,
    packaged: &Path,
) -> anyhow::Result<AdminSocket> {
    let from_config = |file: &Path| -> anyhow::Result<PathBuf> {
        let raw = read_raw(file).with_context(|| {
            format!(
                "cannot read [server] admin_socket from {} (give --socket)",
                escape_controls(&file.to_string_lossy())
            )
        })?;
        Ok(raw.server.admin_socket)
    };
    Ok(match (socket, config) {
        (Some(path), _) => AdminSocket {
            path,
            source: SocketSource::Flag,
        },
        (None, Some(file)) => AdminSocket {
            path: from_config(&file)?,
            source: SocketSource::Config(file),
        },
        (None, None) if packaged.exists() => AdminSocket {
            path: from_config(packaged)?,
            source: SocketSource::PackagedConfig(packaged.to_path_buf()),
        },
        (None, None) => AdminSocket {
            path: RawConfig::default().server.admin_socket,
            source: SocketSource::BuiltIn(packaged.to_path_buf()),
        },
    })
}

/// Sends `req` to the admin socket and returns the response's `data`, as sent.
pub fn call(socket: &AdminSocket, req: &AdminRequest) -> anyhow::Result<Value> {
    let mut stream = UnixStream::connect(&socket.path)
        .with_context(|| format!("cannot connect to the admin socket {socket}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.set_write_timeout(Some(Duration::from_secs(30)))?;
    let mut line = serde_json::to_vec(req)?;
    line.push(b'\n');
    stream.write_all(&line)?;
    stream.shutdown(std::net::Shutdown::Write)?;
    let mut answer = String::new();
    BufReader::new(stream)
        .read_line(&mut answer)
        .context("no answer from the oracle")?;
    #[derive(serde::Deserialize)]
    struct Answer {
        ok: bool,
        #[serde(default)]
        data: Value,
        #[serde(default)]
        error: Option<String>,
    }
    let response: Answer = serde_json::from_str(&answer).with_context(|| {
        format!(
            "unreadable answer from the oracle: {}",
            escape_controls(answer.trim_end())
        )
    })?;
    if !response.ok {
        bail!(
            "{}",
            escape_controls(response.error.as_deref().unwrap_or("request failed"))
        );
    }
    Ok(response.data)
}

/// Sends `req` and reads the answer into its typed view.
pub fn ask(socket: &AdminSocket, req: &AdminRequest) -> anyhow::Result<View> {
    let data = call(socket, req)?;
    View::read(req, data).context("unexpected answer from the oracle")
}

/// The width to fit tables to: the terminal's when standard output is one (at least
/// 40), else [`DEFAULT_WIDTH`].
pub fn output_width() -> u16 {
    Table::new().width().map_or(DEFAULT_WIDTH, |w| w.max(40))
}

/// Renders a view for a human, every line at most `width` columns.
pub fn render(view: &View, width: u16) -> String {
    let out = match view {
        View::Status(s) => render_status(s, width),
        View::Account(a) => render_account(a, width),
        View::Baseline(b) => render_baseline(b, width),
        View::Alerts(a) => render_alerts(a, width),
        View::Release(r) => wrap(&release_text(r), width),
        View::Unblock(u) => wrap(&unblock_text(u), width),
        View::Hold(h) => wrap(
            &format!(
                "held {} on every source until {}{}",
                esc(&h.account),
                when(&h.hold.until),
                h.reason
                    .as_deref()
                    .map(|r| format!(" ({})", esc(r)))
                    .unwrap_or_default()
            ),
            width,
        ),
        View::Block(b) => wrap(
            &format!(
                "blocked {} until {}{}{}",
                b.ip,
                when(&b.hold.until),
                b.reason
                    .as_deref()
                    .map(|r| format!(" ({})", esc(r)))
                    .unwrap_or_default(),
                if b.by != "admin" && b.hold.rule != "admin" {
                    format!("; a stronger block by {} stays in force", esc(&b.by))
                } else {
                    String::new()
                }
            ),
            width,
        ),
        View::Holds(f) => render_in_force(f, width),
    };
    out.trim_end().to_string()
}

fn release_text(r: &ReleaseView) -> String {
    let user = esc(&r.account);
    match (&r.reason, &r.hold) {
        (Some(reason), _) => format!("{user}: {}", esc(reason)),
        (None, Some(h)) => format!(
            "released {user}: hold by {} until {} ended",
            esc(&h.rule),
            when(&h.until)
        ),
        (None, None) => {
            format!("{user} was not held; its failure and recipient counts were reset")
        }
    }
}

fn unblock_text(u: &UnblockView) -> String {
    match (&u.reason, u.unblocked) {
        (Some(reason), _) => format!("{}: {}", u.ip, esc(reason)),
        (None, true) => format!("unblocked {}", u.ip),
        (None, false) => format!("{} was not blocked; its failure count was reset", u.ip),
    }
}

/// Text from outside, escaped.
fn esc(s: &str) -> String {
    escape_controls(s).into_owned()
}

/// A time as shown in tables: UTC, to the second, without the `T` and `Z`.
fn when(t: &Timestamp) -> String {
    t.strftime("%Y-%m-%d %H:%M:%S").to_string()
}

/// A day, for the first and last sightings of a baseline.
fn day(t: &Timestamp) -> String {
    t.strftime("%Y-%m-%d").to_string()
}

/// A table fitted to `width`, its content wrapped where it does not fit.
fn table(width: u16) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_width(width);
    t
}

/// A two-column table of labels and values under a title.
fn key_values(title: &str, width: u16) -> Table {
    let mut t = table(width);
    t.set_header([title, ""]);
    t
}

/// Text outside a table, wrapped at spaces to `width` (a longer word is cut).
fn wrap(text: &str, width: u16) -> String {
    let width = usize::from(width.max(1));
    let mut out = Vec::new();
    for para in text.lines() {
        let mut line = String::new();
        for word in para.split(' ') {
            let mut word: Vec<char> = word.chars().collect();
            let used = line.chars().count();
            if used > 0 && used + 1 + word.len() > width {
                out.push(std::mem::take(&mut line));
            }
            while word.len() > width {
                let rest = word.split_off(width);
                if !line.is_empty() {
                    out.push(std::mem::take(&mut line));
                }
                out.push(word.into_iter().collect());
                word = rest;
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.extend(word);
        }
        out.push(line);
    }
    out.join("\n")
}

/// `name value, name value`, the names as in the JSON.
fn pairs(named: &Named) -> String {
    if named.is_empty() {
        return "-".into();
    }
    named
        .iter()
        .map(|(k, v)| format!("{} {v}", esc(k)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn path(p: &Path) -> String {
    esc(&p.to_string_lossy())
}

fn render_status(s: &StatusView, width: u16) -> String {
    let mut out = Vec::new();
    let mut t = key_values("oracle", width);
    t.add_row(["version".to_string(), esc(&s.version)]);
    t.add_row([
        "started".to_string(),
        format!(
            "{} (up {})",
            when(&s.started),
            crate::time::human_secs(s.uptime_secs.max(0) as u64)
        ),
    ]);
    t.add_row(["config".to_string(), esc(&s.config)]);
    t.add_row(["exim socket".to_string(), esc(&s.exim_socket)]);
    t.add_row([
        "tracked".to_string(),
        format!(
            "{} accounts, {} addresses, {} baselines",
            s.accounts_tracked, s.ips_tracked, s.baselines
        ),
    ]);
    out.push(t.to_string());

    let e = &s.enrichment;
    let mut t = key_values("enrichment", width);
    for (label, db) in [
        ("GeoIP city_db", &e.geoip.city_db),
        ("GeoIP asn_db", &e.geoip.asn_db),
    ] {
        let shown = match db {
            None => "none".to_string(),
            Some(db) => {
                let mut v = format!(
                    "{}\n{}, built {}, loaded {}",
                    path(&db.path),
                    esc(&db.database_type),
                    esc(&db.build_time),
                    esc(&db.loaded_at)
                );
                if let Some(r) = &db.last_refusal {
                    v.push_str(&format!("\nlast refusal {}: {}", esc(&r.at), esc(&r.error)));
                }
                v
            }
        };
        t.add_row([label.to_string(), shown]);
    }
    let l = &e.lists;
    let mut lists = format!(
        "{} blocked networks, {} allowed",
        l.block_networks, l.allow_networks
    );
    for f in &l.files {
        lists.push_str(&format!(
            "\n{} {}: {} networks, {} bad lines",
            esc(&f.kind),
            path(&f.path),
            f.networks,
            f.bad_lines
        ));
        if let Some(r) = &f.last_refusal {
            lists.push_str(&format!("; last refusal {}: {}", esc(&r.at), esc(&r.error)));
        }
    }
    t.add_row(["lists".to_string(), lists]);
    if let Some(c) = &e.crowdsec {
        let mut v = format!(
            "{} ban decisions ({}), {} hits, {} polls, {} poll errors",
            c.decisions,
            esc(&c.response),
            c.hits,
            c.polls,
            c.poll_errors
        );
        if let Some(r) = &c.last_error {
            v.push_str(&format!("\nlast error {}: {}", esc(&r.at), esc(&r.error)));
        }
        t.add_row(["CrowdSec".to_string(), v]);
    }
    let r = &e.rdns;
    t.add_row([
        "reverse DNS".to_string(),
        if r.enabled {
            format!(
                "{} names cached (at most {}), {} pending, {} failures, {} timeouts",
                r.cached, r.cache_max, r.pending, r.failures, r.timeouts
            )
        } else {
            "off".to_string()
        },
    ]);
    let d = &e.disabled_accounts;
    t.add_row([
        "disabled accounts".to_string(),
        match &d.file {
            None => "no accounts file".to_string(),
            Some(file) => format!("{} from {}", d.accounts, path(file)),
        },
    ]);
    t.add_row([
        "audit trail".to_string(),
        match &s.audit {
            None => "off ([audit] enabled = false)".to_string(),
            Some(a) => format!(
                "{} records written, {} waiting, {} write errors\n{}",
                a.written,
                a.waiting,
                a.write_errors,
                path(&a.dir)
            ),
        },
    ]);
    t.add_row([
        "state journal".to_string(),
        match &s.journal {
            None => {
                "off ([server] journal = false): a crash loses what changed since the last snapshot"
                    .to_string()
            }
            Some(j) => format!(
                "{} changes appended ({} bytes), {} flushes, {} errors{}{}",
                j.appended,
                j.bytes,
                j.flushes,
                j.errors,
                match &j.file {
                    Some(f) => format!("\n{} ({} bytes)", path(f), j.file_len),
                    None => String::new(),
                },
                if j.failing {
                    format!(
                        "\nFAILING: {} changes in memory only until the next snapshot",
                        j.lost
                    )
                } else {
                    String::new()
                }
            ),
        },
    ]);
    out.push(t.to_string());

    out.push(render_counters(&s.counters, width));
    if !s.actions.is_empty() {
        let mut t = table(width);
        t.set_header([
            "action", "applied", "failed", "retried", "dropped", "expired",
        ]);
        for a in &s.actions {
            t.add_row([
                esc(&a.name),
                a.applied.to_string(),
                a.failed.to_string(),
                a.retried.to_string(),
                a.dropped.to_string(),
                a.expired.to_string(),
            ]);
        }
        out.push(t.to_string());
    }
    let mut t = key_values("connections", width);
    for (name, counters) in [
        ("exim socket", &s.listeners.exim),
        ("policy endpoint", &s.listeners.policy),
        ("admin socket", &s.listeners.admin),
    ] {
        t.add_row([name.to_string(), pairs(counters)]);
    }
    out.push(t.to_string());
    out.push(render_in_force(&s.in_force, width));
    out.join("\n")
}

/// The engine's counters, then a row per alert sink.
pub fn render_counters(c: &CountersView, width: u16) -> String {
    let mut out = Vec::new();
    let mut t = key_values("counters", width);
    t.add_row(["requests".to_string(), pairs(&c.requests)]);
    t.add_row(["replies".to_string(), pairs(&c.replies)]);
    t.add_row(["dovecot policy".to_string(), pairs(&c.policy)]);
    for (name, value) in c.scalars() {
        t.add_row([name.replace('_', " "), value.to_string()]);
    }
    out.push(t.to_string());
    if !c.sinks.is_empty() {
        let mut t = table(width);
        t.set_header([
            "sink",
            "type",
            "delivered",
            "failed",
            "retried",
            "dropped",
            "queued",
            "grouped",
            "held back",
        ]);
        for k in &c.sinks {
            t.add_row([
                esc(&k.name),
                esc(&k.kind),
                k.delivered.to_string(),
                k.failed.to_string(),
                k.retried.to_string(),
                k.dropped.to_string(),
                k.queued.to_string(),
                k.grouped.to_string(),
                k.suppressed.to_string(),
            ]);
        }
        out.push(t.to_string());
    }
    out.join("\n")
}

fn render_in_force(f: &InForce, width: u16) -> String {
    let mut out = wrap(
        &format!(
            "{} account(s) held, {} address(es) blocked",
            f.holds.len(),
            f.ip_blocks.len()
        ),
        width,
    );
    if f.holds.is_empty() && f.ip_blocks.is_empty() {
        return out;
    }
    let mut t = table(width);
    t.set_header(["held / blocked", "by, why, since, until"]);
    let by = |h: &HoldView, who: &str, why: Option<&str>, extra: String| {
        let who = if who.is_empty() { &h.rule } else { who };
        let mut s = format!("{}{extra}", esc(who));
        if let Some(why) = why {
            s.push_str(&format!("\n{}", esc(why)));
        }
        s.push_str(&format!(
            "\nsince {}\nuntil {}",
            when(&h.since),
            when(&h.until)
        ));
        s
    };
    for h in &f.holds {
        let scope = if h.scope == "unfamiliar" {
            " (unfamiliar sources only)".to_string()
        } else {
            String::new()
        };
        t.add_row([
            esc(&h.account),
            by(&h.hold, &h.by, h.reason.as_deref(), scope),
        ]);
    }
    for b in &f.ip_blocks {
        let repeat = if b.repeats > 0 {
            format!(" (repeat {})", b.repeats)
        } else {
            String::new()
        };
        t.add_row([
            b.ip.clone(),
            by(&b.hold, &b.by, b.reason.as_deref(), repeat),
        ]);
    }
    out.push('\n');
    out.push_str(&t.to_string());
    out
}

fn render_account(a: &AccountView, width: u16) -> String {
    let account = esc(&a.account);
    let Some(live) = a.live.as_ref().filter(|_| a.tracked) else {
        return wrap(
            &format!("{account}: not seen since the oracle started (or forgotten when idle)"),
            width,
        );
    };
    let mut t = key_values("account", width);
    t.add_row(["account".to_string(), account]);
    t.add_row([
        "hold".to_string(),
        match &a.hold {
            Some(h) => {
                let mut s = format!(
                    "HELD until {} by {}: {}",
                    when(&h.until),
                    esc(&h.rule),
                    esc(&h.message)
                );
                if let Some(scope) = &a.hold_scope {
                    s.push_str(&hold_scope_text(&h.rule, scope));
                }
                s
            }
            None => "no".into(),
        },
    ]);
    if !a.familiar.is_empty() {
        t.add_row([
            "familiar networks".to_string(),
            a.familiar
                .iter()
                .map(|n| esc(n))
                .collect::<Vec<_>>()
                .join(", "),
        ]);
    }
    let f = &live.failed_logins;
    t.add_row([
        "failed logins".to_string(),
        format!(
            "{} in the last {} s (threshold {})",
            f.count, f.window_secs, f.threshold
        ),
    ]);
    let r = &live.recipients;
    t.add_row([
        "recipients".to_string(),
        format!(
            "{} in the last {} s (ceiling {}){}",
            r.count,
            r.window_secs,
            r.limit,
            r.throttled_until
                .map(|u| format!(", deferred until {}", when(&u)))
                .unwrap_or_default()
        ),
    ]);
    let tot = &live.totals;
    t.add_row([
        "totals".to_string(),
        format!(
            "logins ok {}, failed {}; messages {}; recipients {} accepted, {} refused; requests refused {}",
            tot.logins_ok,
            tot.logins_failed,
            tot.messages,
            tot.rcpts_accepted,
            tot.rcpts_refused,
            tot.refused
        ),
    ]);
    t.add_row([
        "last login".to_string(),
        match &live.last_login {
            Some(l) => format!(
                "{} from {} ({})",
                when(&l.time),
                l.ip.map_or("-".into(), |ip| ip.to_string()),
                esc(&l.protocol)
            ),
            None => "-".into(),
        },
    ]);
    t.add_row(["last seen".to_string(), when(&live.last_seen)]);
    let mut out = t.to_string();
    if !live.timeline.is_empty() {
        let mut t = table(width);
        t.set_header(["time", "what", "details"]);
        for e in &live.timeline {
            let (time, what, details) = timeline_row(e);
            t.add_row([when(time), what, details]);
        }
        out.push_str("\nrecent activity\n");
        out.push_str(&t.to_string());
    }
    out
}

/// Which sources a hold refuses, who put it there and why, as lines after the hold.
fn hold_scope_text(rule: &str, s: &HoldScopeView) -> String {
    let mut out = if s.scope == "unfamiliar" {
        let spared: Vec<String> = s.spared.iter().map(|n| esc(n)).collect();
        format!(
            "\nscope unfamiliar (unfamiliar sources only): requests from {} go on",
            spared.join(", ")
        )
    } else {
        "\nscope all: every source is refused".to_string()
    };
    if s.by != rule {
        out.push_str(&format!("\nput by {}", esc(&s.by)));
    }
    if let Some(why) = &s.reason {
        out.push_str(&format!("\nwhy: {}", esc(why)));
    }
    out
}

/// A timeline entry as (time, what, details).
fn timeline_row(e: &TimelineEntry) -> (&Timestamp, String, String) {
    let mut details = Vec::new();
    let mut add = |label: &str, value: Option<String>| {
        if let Some(v) = value {
            details.push(format!("{label}{v}"));
        }
    };
    let (time, what) = match e {
        TimelineEntry::Login {
            time,
            protocol,
            ip,
            result,
            session,
            logout,
            bytes_in,
            bytes_out,
            origin,
            mech,
            authenticator,
            port,
            local_port,
            tls,
            tls_cipher,
            client,
        } => {
            add("ip ", ip.map(|i| i.to_string()));
            add("port ", port.map(|p| p.to_string()));
            add("to port ", local_port.map(|p| p.to_string()));
            add("mech ", mech.as_deref().map(esc));
            add("via ", authenticator.as_deref().map(esc));
            add(
                "",
                match (tls, tls_cipher) {
                    (_, Some(c)) => Some(format!("TLS {}", esc(c))),
                    (Some(true), None) => Some("TLS".into()),
                    (Some(false), None) => Some("plaintext".into()),
                    (None, None) => None,
                },
            );
            add("client ", client.as_deref().map(esc));
            add("session ", session.as_deref().map(esc));
            add("logout ", logout.as_ref().map(when));
            add("in ", bytes_in.map(|b| b.to_string()));
            add("out ", bytes_out.map(|b| b.to_string()));
            let result = match result {
                crate::protocol::Outcome::Ok => "ok",
                crate::protocol::Outcome::Fail => "fail",
            };
            (
                time,
                format!(
                    "{} login {result} ({})",
                    esc(protocol),
                    origin_name(*origin)
                ),
            )
        }
        TimelineEntry::Sent {
            time,
            msgid,
            rcpts,
            ip,
            origin,
        } => {
            add("ip ", ip.map(|i| i.to_string()));
            add("msgid ", msgid.as_deref().map(esc));
            add("rcpts ", Some(rcpts.to_string()));
            (time, format!("message sent ({})", origin_name(*origin)))
        }
        TimelineEntry::Delivery {
            time,
            msgid,
            rcpt,
            outcome,
        } => {
            add("msgid ", Some(esc(msgid)));
            add("to ", rcpt.as_deref().map(esc));
            (time, format!("message {}", esc(outcome)))
        }
        TimelineEntry::Session {
            time,
            protocol,
            session,
            bytes_in,
            bytes_out,
        } => {
            add("session ", session.as_deref().map(esc));
            add("in ", bytes_in.map(|b| b.to_string()));
            add("out ", bytes_out.map(|b| b.to_string()));
            (time, format!("{} session", esc(protocol)))
        }
    };
    (time, what, details.join(", "))
}

fn origin_name(o: crate::state::Origin) -> &'static str {
    match o {
        crate::state::Origin::Live => "live",
        crate::state::Origin::Log => "log",
    }
}

fn render_baseline(b: &BaselineView, width: u16) -> String {
    let account = esc(&b.account);
    let Some(k) = b.learnt.as_ref().filter(|_| b.known) else {
        return wrap(
            &format!("{account}: no baseline yet (no successful login or sending seen)"),
            width,
        );
    };
    let mut t = key_values("baseline", width);
    t.add_row(["account".to_string(), account]);
    t.add_row([
        "known since".to_string(),
        format!(
            "{} ({} successful logins; last {})",
            when(&k.since),
            k.logins,
            when(&k.last_seen)
        ),
    ]);
    t.add_row([
        "learning".to_string(),
        if k.learning {
            format!(
                "yes, until at least {} and {} logins (new-country and new-ASN alerts wait)",
                when(&k.learning_until),
                k.learning_logins
            )
        } else {
            "no: learnt".to_string()
        },
    ]);
    let seen = |list: &[SeenView]| -> String {
        if list.is_empty() {
            return "none".into();
        }
        list.iter()
            .map(|s| {
                format!(
                    "{}: {} logins, {} .. {}",
                    esc(s.key.value()),
                    s.logins,
                    day(&s.first),
                    day(&s.last)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    t.add_row(["countries".to_string(), seen(&k.countries)]);
    t.add_row(["ASNs".to_string(), seen(&k.asns)]);
    t.add_row(["networks".to_string(), seen(&k.networks)]);
    t.add_row(["clients".to_string(), seen(&k.clients)]);
    t.add_row([
        "active hours (UTC)".to_string(),
        if k.active_hours_utc.is_empty() {
            "none".into()
        } else {
            k.active_hours_utc
                .iter()
                .map(u8::to_string)
                .collect::<Vec<_>>()
                .join(" ")
        },
    ]);
    let s = &k.sending;
    t.add_row([
        "sending".to_string(),
        format!(
            "{} recipients per active hour on average over {} hours (peak {}); spike above {}{}",
            s.hourly_average,
            s.hours,
            s.peak,
            s.spike_threshold,
            if s.learnt { "" } else { " once learnt" }
        ),
    ]);
    if let Some(p) = &k.last_place {
        t.add_row([
            "last located login".to_string(),
            format!(
                "{} from {} ({}, {}, {} +/- {} km)",
                when(&p.time),
                p.ip,
                p.country.as_deref().map_or("-".into(), esc),
                p.lat,
                p.lon,
                p.accuracy_km
            ),
        ]);
    }
    t.to_string()
}

fn render_alerts(alerts: &[AlertView], width: u16) -> String {
    if alerts.is_empty() {
        return "no alerts since the oracle started".into();
    }
    let mut t = table(width);
    t.set_header(["alert", "account, address, summary"]);
    for a in alerts {
        let mut who = Vec::new();
        if let Some(account) = &a.account {
            who.push(format!("account {}", esc(account)));
        }
        if let Some(ip) = a.ip {
            who.push(match &a.rdns {
                Some(name) => format!("from {ip} ({})", esc(name)),
                None => format!("from {ip}"),
            });
        }
        who.push(esc(&a.summary));
        if let Some(c) = &a.context {
            if let Some(action) = &c.action {
                who.push(format!("done: {}", esc(action)));
            }
            if let Some(undo) = &c.undo {
                who.push(format!("undo: {}", crate::alert::shown_command(undo)));
            }
        }
        t.add_row([
            format!(
                "{}\n{}\n{}\n{}",
                when(&a.time),
                esc(&a.rule),
                a.severity.as_str(),
                a.response.as_str()
            ),
            who.join("\n"),
        ]);
    }
    t.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::Arc;

    use crate::admin::views::{
        self, AuditView, GeoIpDbView, ListFileView, ListenersView, RefusalView, ServerFacts,
    };
    use crate::config::Config;
    use crate::engine::Engine;
    use crate::sinks::SinkCounters;

    /// Control characters, an OSC title, a C1 CSI and a right-to-left override.
    const EVIL: &str = "mallory\x1b]0;pwned\x07\x1b[2J\u{9b}31m\u{202e}";
    /// A long account name, as universities and hosting companies have them.
    const LONG: &str =
        "firstname.middlename.lastname+newsletters@faculty-of-engineering.example-university.edu";
    const V6: &str = "2001:db8:85a3:1234:5678:8a2e:370:7334";
    const SPRAYER: &str = "2001:db8:dead:beef:cafe:f00d:1234:5678";

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    fn ask(e: &Engine, line: &str, at: i64) {
        let cmd = crate::protocol::parse_line(line.as_bytes())
            .unwrap_or_else(|err| panic!("{line}: {err}"));
        e.handle(&cmd, t(at));
    }

    /// No byte a terminal acts on, other than the tables' own line ends.
    fn assert_inert(out: &str) {
        assert!(
            !out.bytes().any(|b| (b < 0x20 && b != b'\n') || b == 0x7f),
            "{out:?}"
        );
        assert!(
            !out.chars()
                .any(|c| ('\u{80}'..='\u{9f}').contains(&c) || c == '\u{202e}'),
            "{out:?}"
        );
    }

    /// A real engine after traffic from long names, IPv6 addresses and a hostile name:
    /// holds, a block, timelines, baselines, alerts.
    fn busy_engine() -> Engine {
        let mut raw = RawConfig::default();
        raw.rules.failed_logins_ip.threshold = 8;
        let config = Config::from_raw(raw).unwrap();
        let (e, _rx) = Engine::new(&config, t(0));
        // The wire's quoting: every byte but NUL and newline, `"` and `\` escaped.
        let quoted = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
        for (n, user) in [LONG, EVIL].into_iter().enumerate() {
            let user = quoted(user);
            let helo = "workstation-42.faculty-of-engineering.example-university.edu";
            ask(
                &e,
                &format!("auth user={user} ip={V6} result=ok helo={helo}"),
                0,
            );
            ask(
                &e,
                &format!(
                    "login user={user} ip=2001:db8:ffff:ffff:ffff:ffff:ffff:fffe result=ok \
                     protocol=imap session=Ab3dE5fG7hI9jK1l client={}",
                    quoted(EVIL)
                ),
                1,
            );
            for i in 0..5 {
                let line = format!("auth user={user} ip={V6} result=fail pwhash={n}{i:03}");
                ask(&e, &line, 2 + i);
            }
            ask(
                &e,
                &format!("data user={user} ip={V6} rcpts=40 size=123456 msgid=1abcde-000002-AB"),
                10,
            );
        }
        let filler = "x".repeat(40);
        for i in 0..8 {
            let line =
                format!("auth user=user{i}.{filler} ip={SPRAYER} result=fail pwhash=0{i:03}");
            ask(&e, &line, 20 + i);
        }
        e.stats.set_sinks(vec![
            Arc::new(SinkCounters::new(
                "security-team-webhook-primary-datacentre",
                "file",
            )),
            Arc::new(SinkCounters::new("log", "log")),
        ]);
        for _ in 0..123_456 {
            e.stats.request(crate::protocol::Verb::Rcpt);
        }
        e
    }

    fn status_of(e: &Engine) -> views::StatusView {
        let dir = "very-long-directory-name".repeat(3);
        let long_path = format!("/var/lib/access-oracle/{dir}/");
        let counters: Vec<(&str, u64)> = vec![
            ("accepted", u64::MAX),
            ("shed_idle", 123_456_789),
            ("refused_full", 42),
            ("refused_per_peer", 7),
            ("waited_full", 3),
            ("idle_timeouts", 99_999),
            ("request_timeouts", 12),
        ];
        let mut s = views::status(
            e,
            t(60),
            ServerFacts {
                config: format!("{long_path}access-oracle.toml (--socket {long_path}exim.sock)"),
                exim_socket: format!("{long_path}exim.sock"),
                listeners: ListenersView::new(&counters, &counters, &counters),
            },
        );
        let refusal = Some(RefusalView {
            at: t(50).to_string(),
            error: format!("{long_path}City.mmdb is not a usable MaxMind DB file: {EVIL}"),
        });
        s.enrichment.geoip.city_db = Some(GeoIpDbView {
            path: format!("{long_path}GeoLite2-City.mmdb").into(),
            database_type: "GeoLite2-City".into(),
            build_time: t(-86_400).to_string(),
            loaded_at: t(0).to_string(),
            last_refusal: refusal.clone(),
            ..GeoIpDbView::default()
        });
        s.enrichment.lists.files = vec![ListFileView {
            path: format!("{long_path}{EVIL}drop_v4.txt").into(),
            kind: "block".into(),
            networks: 1_234,
            last_refusal: refusal,
            ..ListFileView::default()
        }];
        s.enrichment.rdns.enabled = true;
        s.enrichment.disabled_accounts.file = Some(format!("{long_path}disabled-accounts").into());
        s.audit = Some(AuditView {
            dir: format!("{long_path}audit").into(),
            written: 9_876_543_210,
            ..AuditView::default()
        });
        s
    }

    /// Every view `ctl` renders, from the busy engine.
    fn every_view(e: &Engine) -> Vec<(AdminRequest, View)> {
        let now = t(60);
        let mut v = vec![(AdminRequest::Status, View::Status(Box::new(status_of(e))))];
        for user in [LONG, EVIL, "nobody"] {
            v.push((
                AdminRequest::Account {
                    user: user.into(),
                    baseline: false,
                },
                View::Account(Box::new(views::account(e, user, now))),
            ));
            v.push((
                AdminRequest::Account {
                    user: user.into(),
                    baseline: true,
                },
                View::Baseline(Box::new(views::baseline(e, user, now))),
            ));
        }
        for limit in [50, 0] {
            v.push((
                AdminRequest::Alerts { limit },
                View::Alerts(views::alerts(e, limit)),
            ));
        }
        for user in [LONG, EVIL, "nobody"] {
            v.push((
                AdminRequest::Release { user: user.into() },
                View::Release(views::release(e, user, now, "uid 0 (root)")),
            ));
        }
        for ip in [SPRAYER, SPRAYER, V6, "192.0.2.200"] {
            let ip = crate::admin::Net::try_from(ip.to_string()).unwrap();
            v.push((
                AdminRequest::Unblock { ip },
                View::Unblock(views::unblock(e, ip.0, now, "uid 0 (root)")),
            ));
        }
        let net = crate::admin::Net::try_from("198.51.100.0/24".to_string()).unwrap();
        v.push((
            AdminRequest::Block {
                ip: net,
                for_secs: Some(600),
                reason: Some(EVIL.into()),
            },
            View::Block(views::block(e, net.0, 600, Some(EVIL), now, "uid 0 (root)")),
        ));
        v.push((
            AdminRequest::Hold {
                user: EVIL.into(),
                for_secs: Some(600),
                reason: Some(EVIL.into()),
            },
            View::Hold(views::hold(e, EVIL, 600, Some(EVIL), now, "uid 0 (root)")),
        ));
        v.push((AdminRequest::Holds, View::Holds(views::in_force(e, now))));
        v
    }

    #[test]
    fn the_busy_engine_has_what_the_views_show() {
        let e = busy_engine();
        let status = status_of(&e);
        assert_eq!(status.in_force.holds.len(), 2, "{status:?}");
        assert!(!status.in_force.ip_blocks.is_empty(), "{status:?}");
        let View::Account(a) = &every_view(&e)[1].1 else {
            panic!("not an account")
        };
        let live = a.live.as_ref().unwrap();
        assert!(a.hold.is_some() && live.timeline.len() >= 7, "{a:?}");
        assert!(views::alerts(&e, 50).len() >= 3);
    }

    #[test]
    fn every_view_fits_80_columns_and_reads_back_as_sent() {
        let e = busy_engine();
        for (req, view) in every_view(&e) {
            // What the server sends is what ctl reads.
            let sent = serde_json::to_value(&view).unwrap();
            assert_eq!(View::read(&req, sent.clone()).unwrap(), view, "{sent:#}");
            for width in [DEFAULT_WIDTH, 100] {
                let out = render(&view, width);
                for line in out.lines() {
                    let n = line.chars().count();
                    assert!(
                        n <= usize::from(width),
                        "{n} columns > {width} in {req:?}:\n{line}\n{out}"
                    );
                }
                assert_inert(&out);
            }
        }
    }

    #[test]
    fn every_rendering_escapes_what_an_outsider_chose() {
        let e = busy_engine();
        let shown: Vec<String> = every_view(&e)
            .iter()
            .map(|(_, view)| render(view, DEFAULT_WIDTH))
            .filter(|out| out.contains("mallory"))
            .collect();
        // status (holds, refusals, list files), account, baseline (client names),
        // alerts, release.
        assert!(shown.len() >= 5, "{shown:#?}");
        for out in &shown {
            assert_inert(out);
            // The escape is visible (and may be wrapped across lines).
            assert!(out.contains("\\x1b"), "{out}");
        }
    }

    #[test]
    fn status_is_several_small_tables_with_every_counter() {
        let e = busy_engine();
        let out = render(&View::Status(Box::new(status_of(&e))), DEFAULT_WIDTH);
        for title in ["oracle", "enrichment", "counters", "connections", "sink"] {
            let head = format!("│ {title} ");
            assert!(out.lines().any(|l| l.starts_with(&head)), "{title}:\n{out}");
        }
        assert!(out.contains("rcpt 123456"), "{out}");
        assert!(out.contains("18446744073709551615"), "{out}");
        assert!(out.contains("2 account(s) held, "), "{out}");
    }

    #[test]
    fn wrap_breaks_at_spaces_and_cuts_long_words() {
        assert_eq!(wrap("a bb ccc", 4), "a bb\nccc");
        assert_eq!(wrap("abcdefghij", 4), "abcd\nefgh\nij");
        assert_eq!(wrap("x abcdefghij y", 4), "x\nabcd\nefgh\nij y");
    }

    #[test]
    fn the_socket_comes_from_the_flag_the_config_or_the_default() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("oracle.toml");
        std::fs::write(&conf, "[server]\nadmin_socket = \"/run/x/admin.sock\"\n").unwrap();
        let none = dir.path().join("absent.toml");
        let flag = find_socket(Some("/tmp/a.sock".into()), Some(conf.clone()), &none).unwrap();
        assert_eq!(flag.path, Path::new("/tmp/a.sock"));
        assert_eq!(flag.source, SocketSource::Flag);
        let from = find_socket(None, Some(conf.clone()), &none).unwrap();
        assert_eq!(from.path, Path::new("/run/x/admin.sock"));
        assert!(
            from.to_string().contains("[server] admin_socket in"),
            "{from}"
        );
        // The packaged config is read when it exists...
        let packaged = find_socket(None, None, &conf).unwrap();
        assert_eq!(packaged.source, SocketSource::PackagedConfig(conf.clone()));
        assert_eq!(packaged.path, Path::new("/run/x/admin.sock"));
        // ...and the built-in default is used when it does not.
        let default = find_socket(None, None, &none).unwrap();
        assert_eq!(default.path, Path::new("/run/access-oracle/admin.sock"));
        assert!(
            default.to_string().contains("built-in default"),
            "{default}"
        );
        // A config that does not parse is an error naming it, not a silent default.
        std::fs::write(&conf, "[server\n").unwrap();
        let e = find_socket(None, Some(conf.clone()), &none).unwrap_err();
        assert!(format!("{e:#}").contains("oracle.toml"), "{e:#}");
    }
}
