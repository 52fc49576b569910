//! What `serve` checks on the machine before it binds anything, in one function that
//! `check-config` runs too: a config that passes `check-config` does not then stop
//! `serve`, and the two cannot drift apart.
//!
//! [`Config::from_raw`] checks the values; [`run`] checks what they point at: the GeoIP
//! databases, lists and accounts file are opened exactly as `serve` opens them (regular
//! files only, bounded, see [`crate::files`]), the policy endpoint's key and the audit
//! key are read and checked, the state directory, the sockets' paths and the alert file
//! are looked at. Nothing is changed: [`prepare_state_dir`] is the part only `serve`
//! does (creating the state directory 0700, or tightening one every local user can
//! read).

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

use crate::config::{Config, Problems, SocketConfig};
use crate::engine::Enrichment;
use crate::enrich::disabled::DisabledAccounts;
use crate::enrich::{GeoIp, GeoIpConfig, GeoIpError, IpLists, ListError, ListsConfig};

/// What the checks found: the problems that stop a start, warnings that do not, and the
/// enrichment `serve` goes on with (so every file is read once).
#[derive(Default)]
pub struct Preflight {
    /// What stops `serve`; `check-config` fails on any.
    pub problems: Problems,
    /// What `serve` logs and `check-config` prints, without failing.
    pub warnings: Vec<String>,
    enrichment: Enrichment,
}

impl Preflight {
    /// The enrichment to start with, or every problem found.
    pub fn into_result(self) -> Result<Enrichment, Problems> {
        if self.problems.is_empty() {
            Ok(self.enrichment)
        } else {
            Err(self.problems)
        }
    }
}

/// Runs every check `serve` applies to the machine before it starts.
pub fn run(config: &Config) -> Preflight {
    let mut out = Preflight::default();
    let raw = &config.raw;
    open_geoip(&raw.geoip, &mut out);
    open_lists(&raw.lists, &mut out);
    if let Some(c) = &raw.crowdsec {
        out.enrichment.crowdsec = Arc::new(c.decisions());
    }
    if let Some(path) = &config.rules.disabled_credentials.file {
        match DisabledAccounts::open(path, !config.case_sensitive_accounts) {
            Ok(d) => out.enrichment.disabled = Arc::new(d),
            Err(e) => out
                .problems
                .add(format!("[rules.disabled_credentials] file: {e}")),
        }
    }
    if config.policy.listen.is_some()
        && let Err(e) = config.policy.load_key()
    {
        out.problems.add(format!("[policy] {e}"));
    }
    check_audit(config, &mut out);
    check_state_dir(&config.state_dir, &mut out);
    check_socket("server.exim_socket", &config.exim_socket, &mut out);
    check_socket("server.admin_socket", &config.admin_socket, &mut out);
    if config.raw.server.exim_socket_allow_everyone && config.exim_socket.mode & 0o002 != 0 {
        out.warnings.push(format!(
            "server.exim_socket_mode {:04o} lets every local user connect and hold any account by reporting failed logins (allowed by server.exim_socket_allow_everyone)",
            config.exim_socket.mode
        ));
    }
    check_alert_file(&config.alert_file, &config.state_dir, &mut out);
    check_sinks(config, &mut out);
    for action in config.raw.action_tables() {
        let mut own = Vec::new();
        action.preflight(&mut own);
        for problem in own {
            out.problems.add(format!("[{}]: {problem}", action.name()));
        }
    }
    config.raw.notify_owner.preflight(&mut out.problems);
    for (i, source) in config.sources.iter().enumerate() {
        if let Ok(meta) = std::fs::metadata(&source.path)
            && !meta.is_file()
        {
            out.problems.add(format!(
                "sources[{i}].path {} is {}; a log source must be a regular file",
                source.path.display(),
                crate::files::describe_type(&meta)
            ));
        }
    }
    out
}

fn open_geoip(config: &GeoIpConfig, out: &mut Preflight) {
    let key = |path: &Path| {
        if config.city_db.as_deref() == Some(path) {
            "city_db"
        } else {
            "asn_db"
        }
    };
    match GeoIp::open(config) {
        Ok(g) => out.enrichment.geoip = Arc::new(g),
        Err(e) => {
            let path = match &e {
                GeoIpError::Read { path, .. }
                | GeoIpError::Invalid { path, .. }
                | GeoIpError::WrongType { path, .. }
                | GeoIpError::Corrupt { path, .. } => path.clone(),
            };
            out.problems.add(format!("[geoip] {}: {e}", key(&path)));
            // The city file failed first: say whether the ASN file is usable too.
            if key(&path) == "city_db"
                && config.asn_db.is_some()
                && let Err(e) = GeoIp::open(&GeoIpConfig {
                    city_db: None,
                    ..config.clone()
                })
            {
                out.problems.add(format!("[geoip] asn_db: {e}"));
            }
        }
    }
}

fn open_lists(config: &ListsConfig, out: &mut Preflight) {
    match IpLists::open(config) {
        Ok(l) => out.enrichment.lists = Arc::new(l),
        Err(_) => {
            // Every file on its own, so each bad one is named.
            let each = config
                .block
                .iter()
                .map(|p| ("block", p, true))
                .chain(config.allow.iter().map(|p| ("allow", p, false)));
            for (key, path, block) in each {
                let one = ListsConfig {
                    block: if block { vec![path.clone()] } else { vec![] },
                    allow: if block { vec![] } else { vec![path.clone()] },
                    ..config.clone()
                };
                if let Err(ListError::Read { path, source }) = IpLists::open(&one) {
                    out.problems.add(format!(
                        "[lists] {key}: cannot read {}: {source}",
                        path.display()
                    ));
                }
            }
        }
    }
}

fn check_audit(config: &Config, out: &mut Preflight) {
    let audit = &config.raw.audit;
    if !audit.enabled {
        return;
    }
    let key = audit.key_file(&config.state_dir);
    if std::fs::symlink_metadata(&key).is_ok() {
        if let Err(e) = crate::audit::read_key(audit, &config.state_dir) {
            out.problems.add(format!("[audit] key_file: {e}"));
        }
    } else {
        creatable("[audit] key_file", &key, out);
    }
    let dir = audit.dir(&config.state_dir);
    match std::fs::metadata(&dir) {
        Ok(meta) if !meta.is_dir() => out.problems.add(format!(
            "[audit] dir {} is {}, not a directory",
            dir.display(),
            crate::files::describe_type(&meta)
        )),
        Ok(_) => {}
        Err(_) => creatable("[audit] dir", &dir, out),
    }
}

/// Reports a problem when `path` cannot be created because an existing ancestor is not a
/// directory.
fn creatable(what: &str, path: &Path, out: &mut Preflight) {
    if let Err(why) = crate::files::creatable(path) {
        out.problems.add(format!("{what} {why}"));
    }
}

/// The state directory: a directory not writable by every local user. One every local
/// user may read or enter is a warning here; `serve` tightens it ([`prepare_state_dir`]).
fn check_state_dir(dir: &Path, out: &mut Preflight) {
    let meta = match std::fs::metadata(dir) {
        Ok(meta) => meta,
        Err(_) => return creatable("server.state_dir", dir, out),
    };
    if !meta.is_dir() {
        out.problems.add(format!(
            "server.state_dir {} is {}, not a directory",
            dir.display(),
            crate::files::describe_type(&meta)
        ));
        return;
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o002 != 0 {
        out.problems.add(format!(
            "server.state_dir {} (mode {mode:04o}) is writable by every local user, who could replace the snapshot or the audit trail; use a directory of the oracle's own (chmod 0700)",
            dir.display()
        ));
    } else if mode & 0o007 != 0 {
        out.warnings.push(format!(
            "server.state_dir {} (mode {mode:04o}) lets every local user read account names and addresses; serve removes their access at start (chmod o-rwx)",
            dir.display()
        ));
    }
}

/// What [`prepare_state_dir`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateDir {
    /// It was there, closed to other users.
    Fine,
    /// It was created (mode 0700).
    Created(String),
    /// Something to warn about: its mode was changed, or it is open and not ours.
    Warn(String),
}

/// Creates the state directory 0700 when missing (and its missing parents), or removes
/// every local user's access to an existing one the oracle owns (what `check-config`
/// warns about). Returns what was done, for the log.
pub fn prepare_state_dir(dir: &Path) -> std::io::Result<StateDir> {
    if std::fs::metadata(dir).is_err() {
        crate::files::create_private_dir(dir)?;
        return Ok(StateDir::Created(format!(
            "created the state directory {} (mode 0700)",
            dir.display()
        )));
    }
    let meta = std::fs::metadata(dir)?;
    let mode = meta.mode() & 0o7777;
    if mode & 0o007 == 0 {
        return Ok(StateDir::Fine);
    }
    if meta.uid() != nix::unistd::geteuid().as_raw() || mode & 0o1000 != 0 {
        // Not ours (or a shared sticky directory such as /tmp): not ours to change.
        return Ok(StateDir::Warn(format!(
            "the state directory {} (mode {mode:04o}) lets every local user in; it is not the oracle's own, so it is left as it is",
            dir.display()
        )));
    }
    let tightened = mode & !0o007;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(tightened))?;
    Ok(StateDir::Warn(format!(
        "the state directory {} was mode {mode:04o}, readable by every local user; changed to {tightened:04o}",
        dir.display()
    )))
}

/// A socket's path must be free or a socket (a stale one is replaced), in a directory.
fn check_socket(what: &str, socket: &SocketConfig, out: &mut Preflight) {
    let path = &socket.path;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => out.problems.add(format!(
            "{what} {} exists and is {}, not a socket; serve refuses to replace it",
            path.display(),
            crate::files::describe_type(&meta)
        )),
        Ok(_) => {}
        Err(_) => creatable(what, path, out),
    }
}

/// What each `[[sinks]]` entry will use (a file sink at its own path), looked at as
/// `serve` would open it.
fn check_sinks(config: &Config, out: &mut Preflight) {
    let ctx = crate::sinks::BuildContext::new(
        config.state_dir.clone(),
        config.alert_file.clone(),
        &config.raw.audit,
    );
    // Their settings were checked with the config; here only the world is looked at.
    for p in crate::sinks::validate(&config.raw.sinks, &ctx, &mut Vec::new()) {
        let mut problems = Vec::new();
        p.config.preflight(&ctx, &mut problems);
        for problem in problems {
            out.problems.add(format!(
                "sink {}: {problem}",
                crate::text::escape_controls(&p.table.name)
            ));
        }
    }
}

/// The alert file is appended to: it must not be a directory or a device. Outside the
/// state directory (whose mode protects it otherwise), one every local user can read is
/// a warning.
fn check_alert_file(path: &Path, state_dir: &Path, out: &mut Preflight) {
    match std::fs::metadata(path) {
        Ok(meta) if !meta.is_file() => out.problems.add(format!(
            "alerts.file {} is {}, not a regular file",
            path.display(),
            crate::files::describe_type(&meta)
        )),
        Ok(meta) if meta.mode() & 0o004 != 0 && !path.starts_with(state_dir) => out.warnings.push(format!(
            "alerts.file {} is readable by every local user (chmod o-r): alerts name accounts and addresses",
            path.display()
        )),
        Ok(_) => {}
        Err(_) => creatable("alerts.file", path, out),
    }
}
