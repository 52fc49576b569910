//! Configuration: TOML read into [`raw`] structs, then validated as a whole into
//! [`Config`]. Every problem is reported at once; a config with problems is refused (at
//! start) or ignored in favour of the running one (on reload).

pub mod metrics;
pub mod policy;
pub mod raw;
pub mod reports;
pub mod responses;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::unistd::{Gid, Group, Uid, User};

use crate::rules::RulesConfig;
use crate::sources::SourceConfig;
use crate::state::baseline::BaselineConfig;
use policy::PolicyConfig;
pub use raw::RawConfig;
use raw::RawMode;

pub use crate::problems::Problems;

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown keys or wrong types.
    #[error("{path}: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// The file parsed but its values are wrong.
    #[error("{path}: {problems}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Everything wrong with it.
        problems: Problems,
    },
}

/// A socket's path and permissions, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketConfig {
    /// Where it is created.
    pub path: PathBuf,
    /// Its file mode.
    pub mode: u32,
    /// Its group, resolved to an id; `None` keeps the process's.
    pub group: Option<Gid>,
}

/// The validated configuration the daemon runs on.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The socket Exim talks to.
    pub exim_socket: SocketConfig,
    /// The admin socket.
    pub admin_socket: SocketConfig,
    /// Where state is kept.
    pub state_dir: PathBuf,
    /// Connections served at once.
    pub max_connections: usize,
    /// Grace period on shutdown, in seconds.
    pub shutdown_grace_secs: u64,
    /// How often the state journal is flushed to disk, in milliseconds (`None`: no
    /// journal).
    pub journal_flush_ms: Option<u64>,
    /// Roles on the admin socket.
    pub roles: Roles,
    /// The alert file.
    pub alert_file: PathBuf,
    /// The alert queue's capacity.
    pub alert_queue_capacity: usize,
    /// Alerts kept in memory.
    pub recent_alerts: usize,
    /// Whether account names keep their case.
    pub case_sensitive_accounts: bool,
    /// Accounts tracked at most.
    pub max_tracked_accounts: usize,
    /// Idle time before an entry is forgotten, in seconds.
    pub idle_secs: u64,
    /// The rules.
    pub rules: RulesConfig,
    /// How accounts learn.
    pub baselines: BaselineConfig,
    /// Log files to follow.
    pub sources: Vec<SourceConfig>,
    /// Dovecot's auth policy endpoint.
    pub policy: PolicyConfig,
    /// The config as written, for `ctl status` and reloads.
    pub raw: RawConfig,
}

/// Admin-socket roles, resolved to ids.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Roles {
    /// Users who may read and change.
    pub admin_uids: Vec<Uid>,
    /// Groups who may read and change.
    pub admin_groups: Vec<(Gid, Vec<String>)>,
    /// Users who may read.
    pub auditor_uids: Vec<Uid>,
    /// Groups who may read.
    pub auditor_groups: Vec<(Gid, Vec<String>)>,
}

/// Command-line settings that override the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--socket`
    pub exim_socket: Option<PathBuf>,
    /// `--admin-socket`
    pub admin_socket: Option<PathBuf>,
    /// `--state-dir`
    pub state_dir: Option<PathBuf>,
}

impl Overrides {
    /// Applies the overrides to a raw config.
    pub fn apply(&self, raw: &mut RawConfig) {
        if let Some(p) = &self.exim_socket {
            raw.server.exim_socket = p.clone();
        }
        if let Some(p) = &self.admin_socket {
            raw.server.admin_socket = p.clone();
        }
        if let Some(p) = &self.state_dir {
            raw.server.state_dir = p.clone();
        }
    }
}

/// The largest config file read: 4 MiB, far more than any real config (the example with
/// every key is ~20 KiB); a larger "config" is a wrong path.
pub const MAX_CONFIG_BYTES: u64 = 4 << 20;

/// Reads and parses a file without validating it. Refuses a world-writable file (anyone
/// could otherwise switch the rules off), and anything but a regular file of at most
/// [`MAX_CONFIG_BYTES`].
pub fn read_raw(path: &Path) -> Result<RawConfig, ConfigError> {
    let read_err = |source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(read_err)?;
    if meta.is_file() && meta.permissions().mode() & 0o002 != 0 {
        return Err(ConfigError::Invalid {
            path: path.to_path_buf(),
            problems: Problems::one("the file is world-writable; refusing it (chmod o-w)"),
        });
    }
    let limit = crate::files::Limit {
        what: "the config file",
        max_bytes: MAX_CONFIG_BYTES,
        why: "far more than any real config",
    };
    let text = crate::files::read_text_bounded(path, limit).map_err(read_err)?;
    toml::from_str(&text).map_err(|e| ConfigError::Syntax {
        path: path.to_path_buf(),
        message: e.to_string().trim_end().to_string(),
    })
}

/// Loads a file (or the embedded defaults when `path` is `None`), applies overrides and
/// validates the result.
pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
    let mut raw = match path {
        Some(p) => read_raw(p)?,
        None => RawConfig::default(),
    };
    overrides.apply(&mut raw);
    Config::from_raw(raw).map_err(|problems| ConfigError::Invalid {
        path: path.map_or_else(|| "<defaults>".into(), Path::to_path_buf),
        problems,
    })
}

impl Config {
    /// Validates a raw config, listing every problem.
    pub fn from_raw(raw: RawConfig) -> Result<Config, Problems> {
        let mut p = Problems::default();
        let s = &raw.server;
        let exim_socket = socket(
            &mut p,
            "server.exim_socket",
            &s.exim_socket,
            &s.exim_socket_mode,
            s.exim_socket_group.as_deref(),
        );
        if let Some(e) = &exim_socket
            && e.mode & 0o002 != 0
            && !s.exim_socket_allow_everyone
        {
            p.add(format!(
                "server.exim_socket_mode {:04o} lets every local user connect, and whoever connects can report failed logins and so hold any account; use \"0660\" with exim_socket_group = \"Debian-exim\" (or set server.exim_socket_allow_everyone = true if every local user is trusted)",
                e.mode
            ));
        }
        let admin_socket = socket(
            &mut p,
            "server.admin_socket",
            &s.admin_socket,
            &s.admin_socket_mode,
            s.admin_socket_group.as_deref(),
        );
        if let Some(a) = &admin_socket
            && a.mode & 0o002 != 0
        {
            p.add(format!(
                "server.admin_socket_mode {:04o} lets every local user connect; roles are still checked from the peer's credentials, but nobody outside them needs to reach the socket; use \"0600\" (root only) or \"0660\" with admin_socket_group",
                a.mode
            ));
        }
        if s.exim_socket == s.admin_socket {
            p.add("server.exim_socket and server.admin_socket must differ");
        }
        if !s.state_dir.is_absolute() {
            p.add(format!(
                "server.state_dir must be an absolute path, got {}",
                s.state_dir.display()
            ));
        }
        if s.max_connections == 0 || s.max_connections > 65_536 {
            p.add(format!(
                "server.max_connections must be between 1 and 65536, got {}",
                s.max_connections
            ));
        }
        for (key, value, min, max) in [
            (
                "server.exim_idle_timeout_secs",
                s.exim_idle_timeout_secs,
                1,
                86_400,
            ),
            (
                "server.exim_request_timeout_ms",
                s.exim_request_timeout_ms,
                10,
                60_000,
            ),
            (
                "server.admin_max_connections",
                s.admin_max_connections as u64,
                1,
                4096,
            ),
            (
                "server.admin_idle_timeout_secs",
                s.admin_idle_timeout_secs,
                1,
                86_400,
            ),
            (
                "server.admin_request_timeout_ms",
                s.admin_request_timeout_ms,
                10,
                60_000,
            ),
        ] {
            if value < min || value > max {
                p.add(format!(
                    "{key} must be between {min} and {max}, got {value}"
                ));
            }
        }
        if s.journal && !(10..=60_000).contains(&s.journal_flush_ms) {
            p.add(format!(
                "server.journal_flush_ms must be between 10 and 60000, got {}",
                s.journal_flush_ms
            ));
        }
        if s.shutdown_grace_secs > 600 {
            p.add(format!(
                "server.shutdown_grace_secs must be at most 600, got {}",
                s.shutdown_grace_secs
            ));
        }
        let roles = Roles {
            admin_uids: users(&mut p, "admin.admin_users", &raw.admin.admin_users),
            admin_groups: groups(&mut p, "admin.admin_groups", &raw.admin.admin_groups),
            auditor_uids: users(&mut p, "admin.auditor_users", &raw.admin.auditor_users),
            auditor_groups: groups(&mut p, "admin.auditor_groups", &raw.admin.auditor_groups),
        };
        let alert_file = raw
            .alerts
            .file
            .clone()
            .unwrap_or_else(|| s.state_dir.join("alerts.jsonl"));
        if !alert_file.is_absolute() {
            p.add(format!(
                "alerts.file must be an absolute path, got {}",
                alert_file.display()
            ));
        }
        if raw.alerts.queue_capacity == 0 || raw.alerts.queue_capacity > 1_000_000 {
            p.add(format!(
                "alerts.queue_capacity must be between 1 and 1000000, got {}",
                raw.alerts.queue_capacity
            ));
        }
        if raw.alerts.recent > 100_000 {
            p.add(format!(
                "alerts.recent must be at most 100000, got {}",
                raw.alerts.recent
            ));
        }
        if raw.accounts.max_tracked == 0 {
            p.add("accounts.max_tracked must be at least 1");
        }
        let longest_window = raw.rules.longest_window_secs();
        if raw.accounts.idle_secs < longest_window {
            p.add(format!(
                "accounts.idle_secs ({}) must be at least the longest rule window ({longest_window})",
                raw.accounts.idle_secs
            ));
        }
        raw.rules.validate(&mut p);
        if raw.rules.recipient_ceiling.window_secs > 0
            && raw.rules.outbound_spike.window_secs > raw.rules.recipient_ceiling.window_secs
        {
            p.add(format!(
                "[rules.outbound_spike] window_secs ({}) must not exceed [rules.recipient_ceiling] window_secs ({}): recipients are remembered for the ceiling's window",
                raw.rules.outbound_spike.window_secs, raw.rules.recipient_ceiling.window_secs
            ));
        }
        raw.baselines.validate(&mut p);
        raw.geoip.validate(&mut p);
        raw.lists.validate(&mut p);
        raw.rdns.validate(&mut p);
        for (i, source) in raw.sources.iter().enumerate() {
            source.validate(i, &mut p);
            if raw.sources[..i].iter().any(|o| o.path == source.path) {
                p.add(format!(
                    "sources[{i}].path {} is listed twice",
                    source.path.display()
                ));
            }
        }
        let mut sink_problems = Vec::new();
        crate::sinks::validate(
            &raw.sinks,
            &crate::sinks::BuildContext::new(s.state_dir.clone(), alert_file.clone(), &raw.audit),
            &mut sink_problems,
        );
        sink_problems.into_iter().for_each(|problem| p.add(problem));
        if let Some(file) = &raw.alerts.file
            && let Some(sink) = raw
                .sinks
                .iter()
                .find(|t| t.name == crate::sinks::DEFAULT_FILE && t.options.contains_key("path"))
        {
            p.add(format!(
                "alerts.file ({}) and the path of the sink named {} both say where the alert \
                 file is: keep one",
                file.display(),
                sink.name
            ));
        }
        raw.policy.validate(&mut p, &raw.rules);
        raw.metrics.validate(&mut p);
        raw.notify_owner.validate(&raw.sinks, &mut p);
        raw.audit.validate(&mut p);
        raw.responses.validate(&mut p);
        raw.reports.validate(&mut p);
        if raw.reports.schedule.is_some() && !raw.audit.enabled {
            p.add("[reports] are made from the audit trail: they need [audit] enabled = true");
        }
        for action in raw.action_tables() {
            let mut own = Vec::new();
            action.validate(&mut own);
            for problem in own {
                p.add(format!("[{}]: {problem}", action.name()));
            }
        }
        let (Some(exim_socket), Some(admin_socket)) = (exim_socket, admin_socket) else {
            return Err(p);
        };
        if !p.is_empty() {
            return Err(p);
        }
        Ok(Config {
            exim_socket,
            admin_socket,
            state_dir: s.state_dir.clone(),
            max_connections: s.max_connections,
            shutdown_grace_secs: s.shutdown_grace_secs,
            journal_flush_ms: s.journal.then_some(s.journal_flush_ms),
            roles,
            alert_file,
            alert_queue_capacity: raw.alerts.queue_capacity,
            recent_alerts: raw.alerts.recent,
            case_sensitive_accounts: raw.accounts.case_sensitive,
            max_tracked_accounts: raw.accounts.max_tracked,
            idle_secs: raw.accounts.idle_secs,
            rules: raw.rules.clone(),
            baselines: raw.baselines.clone(),
            sources: raw.sources.clone(),
            policy: raw.policy.clone(),
            raw,
        })
    }
}

fn socket(
    p: &mut Problems,
    what: &str,
    path: &Path,
    mode: &RawMode,
    group: Option<&str>,
) -> Option<SocketConfig> {
    let before = p.list().len();
    if !path.is_absolute() {
        p.add(format!(
            "{what} must be an absolute path, got {}",
            path.display()
        ));
    } else if path.as_os_str().len() > 100 {
        p.add(format!(
            "{what} is {} bytes long; Unix socket paths are limited to about 100",
            path.as_os_str().len()
        ));
    }
    let mode = match parse_mode(mode) {
        Ok(m) => m,
        Err(e) => {
            p.add(format!("{what}_mode: {e}"));
            0
        }
    };
    let gid = group.and_then(|g| match resolve_group(g) {
        Ok(gid) => Some(gid),
        Err(e) => {
            p.add(format!("{what}_group: {e}"));
            None
        }
    });
    (p.list().len() == before).then(|| SocketConfig {
        path: path.to_path_buf(),
        mode,
        group: gid,
    })
}

/// Parses a file mode: `"0660"` (octal text) or `0o660` (a TOML number).
pub fn parse_mode(mode: &RawMode) -> Result<u32, String> {
    let value = match mode {
        RawMode::Number(n) => u32::try_from(*n).map_err(|_| format!("{n} is not a file mode"))?,
        RawMode::Text(t) => u32::from_str_radix(t.trim_start_matches("0o"), 8)
            .map_err(|_| format!("{t:?} is not an octal file mode like \"0660\""))?,
    };
    if value > 0o777 {
        return Err(format!(
            "{value:o} (octal) is not a file mode; write \"0660\" or 0o660, not 660"
        ));
    }
    if value & 0o200 == 0 {
        return Err(format!(
            "{value:04o} lets nobody connect (the owner needs write permission)"
        ));
    }
    Ok(value)
}

fn resolve_group(name: &str) -> Result<Gid, String> {
    if let Ok(n) = name.parse::<u32>() {
        return Ok(Gid::from_raw(n));
    }
    match Group::from_name(name) {
        Ok(Some(g)) => Ok(g.gid),
        Ok(None) => Err(format!("no such group {name:?}")),
        Err(e) => Err(format!("cannot look up group {name:?}: {e}")),
    }
}

fn users(p: &mut Problems, what: &str, names: &[String]) -> Vec<Uid> {
    names
        .iter()
        .filter_map(|name| {
            if let Ok(n) = name.parse::<u32>() {
                return Some(Uid::from_raw(n));
            }
            match User::from_name(name) {
                Ok(Some(u)) => Some(u.uid),
                Ok(None) => {
                    p.add(format!("{what}: no such user {name:?}"));
                    None
                }
                Err(e) => {
                    p.add(format!("{what}: cannot look up user {name:?}: {e}"));
                    None
                }
            }
        })
        .collect()
}

fn groups(p: &mut Problems, what: &str, names: &[String]) -> Vec<(Gid, Vec<String>)> {
    names
        .iter()
        .filter_map(|name| match Group::from_name(name) {
            Ok(Some(g)) => Some((g.gid, g.mem)),
            Ok(None) => {
                p.add(format!("{what}: no such group {name:?}"));
                None
            }
            Err(e) => {
                p.add(format!("{what}: cannot look up group {name:?}: {e}"));
                None
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_match_the_design() {
        let c = Config::from_raw(RawConfig::default()).expect("defaults validate");
        assert_eq!(
            c.exim_socket.path,
            Path::new("/run/access-oracle/exim.sock")
        );
        assert_eq!(c.exim_socket.mode, 0o660);
        assert_eq!(c.rules.failed_logins_account.threshold, 5);
        assert_eq!(c.rules.failed_logins_account.window_secs, 300);
        assert_eq!(c.rules.failed_logins_account.hold_secs, 900);
        assert_eq!(c.rules.failed_logins_ip.threshold, 20);
        assert_eq!(c.rules.failed_logins_ip.window_secs, 600);
        assert_eq!(c.rules.failed_logins_ip.block_secs, 3600);
        assert_eq!(c.rules.recipient_ceiling.limit, 200);
        assert_eq!(c.rules.recipient_ceiling.window_secs, 3600);
        assert_eq!(
            c.alert_file,
            Path::new("/var/lib/access-oracle/alerts.jsonl")
        );
    }

    #[test]
    fn lists_every_problem_at_once() {
        let text = r#"
            [server]
            exim_socket = "relative.sock"
            exim_socket_mode = 660
            exim_socket_group = "no-such-group-here"
            max_connections = 0
            [rules.failed_logins_account]
            threshold = 0
            message = "yes"
            [rules.recipient_ceiling]
            window_secs = 0
        "#;
        let raw: RawConfig = toml::from_str(text).unwrap();
        let problems = Config::from_raw(raw).unwrap_err();
        let all = problems.to_string();
        for want in [
            "server.exim_socket must be an absolute path",
            "server.exim_socket_mode: 1224 (octal) is not a file mode",
            "server.exim_socket_group: no such group \"no-such-group-here\"",
            "server.max_connections must be between 1 and 65536",
            "[rules.failed_logins_account] threshold must be between 1 and 10000",
            "would read as a plain answer",
            "[rules.recipient_ceiling] window_secs must be between 1",
        ] {
            assert!(all.contains(want), "missing {want:?} in:\n{all}");
        }
        assert_eq!(problems.list().len(), 7, "{all}");
    }

    #[test]
    fn unknown_keys_are_refused_with_their_place() {
        let err = toml::from_str::<RawConfig>("[rules.failed_logins_account]\ntreshold = 3\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `treshold`"), "{err}");
    }

    #[test]
    fn modes_parse_as_octal() {
        assert_eq!(parse_mode(&RawMode::Text("0660".into())), Ok(0o660));
        assert_eq!(parse_mode(&RawMode::Number(0o600)), Ok(0o600));
        assert!(parse_mode(&RawMode::Text("0440".into())).is_err());
        assert!(parse_mode(&RawMode::Text("rw".into())).is_err());
    }

    #[test]
    fn sockets_every_local_user_can_connect_to_are_refused() {
        let problems = |text: &str| match Config::from_raw(toml::from_str(text).unwrap()) {
            Ok(_) => String::new(),
            Err(p) => p.to_string(),
        };
        let e = problems("[server]\nexim_socket_mode = \"0666\"\n");
        assert!(
            e.contains("server.exim_socket_mode 0666 lets every local user connect"),
            "{e}"
        );
        assert!(e.contains("exim_socket_allow_everyone"), "{e}");
        assert_eq!(
            problems("[server]\nexim_socket_mode = \"0666\"\nexim_socket_allow_everyone = true\n"),
            ""
        );
        let e = problems("[server]\nadmin_socket_mode = \"0777\"\n");
        assert!(
            e.contains("server.admin_socket_mode 0777 lets every local user connect"),
            "{e}"
        );
        assert_eq!(problems("[server]\nexim_socket_mode = \"0664\"\n"), "");
    }

    #[test]
    fn a_config_that_is_not_a_regular_file_is_refused_at_once() {
        let e = read_raw(Path::new("/dev/zero")).unwrap_err().to_string();
        assert!(e.contains("a character device"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo.toml");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let e = read_raw(&fifo).unwrap_err().to_string();
        assert!(e.contains("a FIFO"), "{e}");
    }

    #[test]
    fn overrides_win_over_the_file() {
        let mut raw = RawConfig::default();
        Overrides {
            exim_socket: Some("/tmp/x.sock".into()),
            admin_socket: None,
            state_dir: Some("/tmp/state".into()),
        }
        .apply(&mut raw);
        let c = Config::from_raw(raw).unwrap();
        assert_eq!(c.exim_socket.path, Path::new("/tmp/x.sock"));
        assert_eq!(c.alert_file, Path::new("/tmp/state/alerts.jsonl"));
    }
}
