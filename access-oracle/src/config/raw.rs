//! The configuration file as written: serde structs with defaults, unknown keys refused.
//! Field docs are the operator reference (`docs/CONFIGURATION.md` mirrors them).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::policy::PolicyConfig;
use crate::enrich::{GeoIpConfig, ListsConfig, RdnsConfig};
use crate::rules::RulesConfig;
use crate::sources::SourceConfig;
use crate::state::baseline::BaselineConfig;

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    /// Sockets, state directory, connection limits.
    pub server: RawServer,
    /// Who may use the admin socket.
    pub admin: RawAdmin,
    /// Where alerts go.
    pub alerts: RawAlerts,
    /// How accounts are tracked.
    pub accounts: RawAccounts,
    /// The rules.
    pub rules: RulesConfig,
    /// How accounts learn what is normal for them.
    pub baselines: BaselineConfig,
    /// GeoIP / ASN databases (`.mmdb`).
    pub geoip: GeoIpConfig,
    /// CIDR block and allow lists.
    pub lists: ListsConfig,
    /// Reverse DNS (off by default).
    pub rdns: RdnsConfig,
    /// Log files to follow (`[[sources]]`).
    pub sources: Vec<SourceConfig>,
    /// Where alerts are delivered besides the defaults (`[[sinks]]`, `sinks/mod.rs`).
    pub sinks: Vec<crate::sinks::SinkTable>,
    /// Dovecot's auth policy endpoint (`[policy]`); off unless `listen` is set.
    pub policy: PolicyConfig,
    /// The audit trail (`[audit]`).
    pub audit: crate::audit::AuditConfig,
    /// A CrowdSec Local API (`[crowdsec]`, `actions/crowdsec.rs`): its ban decisions
    /// refuse clients, and with a machine the oracle's blocks are pushed to it; off
    /// unless the table is present.
    pub crowdsec: Option<crate::actions::crowdsec::CrowdsecConfig>,
    /// Address blocks as nftables set elements (`[firewall]`, `actions/nft.rs`); off
    /// unless the table is present.
    pub firewall: Option<crate::actions::nft::FirewallConfig>,
    /// Ban blocked addresses in a fail2ban jail (`[fail2ban]`, `actions/fail2ban.rs`);
    /// off unless the table is present.
    pub fail2ban: Option<crate::actions::fail2ban::Fail2banConfig>,
    /// Enforce or observe; how address blocks are sized (`[responses]`).
    pub responses: super::responses::ResponsesConfig,
    /// Compliance reports written and mailed after each period (`[reports]`).
    pub reports: super::reports::ReportsConfig,
    /// "Was this you?" e-mails to account owners (`[notify_owner]`, off by default).
    pub notify_owner: crate::sinks::owner::NotifyOwnerConfig,
    /// The Prometheus endpoint (`[metrics]`); off unless `listen` is set.
    pub metrics: super::metrics::MetricsConfig,
}

impl RawConfig {
    /// The external actions configured (`[firewall]`, `[fail2ban]`, `[crowdsec]`), in
    /// the order they run: each action's table adds its line here.
    pub fn actions(&self) -> Vec<&dyn crate::actions::ActionConfig> {
        #[allow(unused_mut)]
        let mut out: Vec<&dyn crate::actions::ActionConfig> = Vec::new();
        if let Some(c) = &self.firewall {
            out.push(c);
        }
        if let Some(f) = &self.fail2ban {
            out.push(f);
        }
        if let Some(c) = self.crowdsec.as_ref().filter(|c| c.pushes()) {
            out.push(c);
        }
        out
    }

    /// The action tables to check (validate, preflight): the actions, and `[crowdsec]`
    /// also when it only reads decisions (a bouncer, which pushes nothing).
    pub fn action_tables(&self) -> Vec<&dyn crate::actions::ActionConfig> {
        let mut out = self.actions();
        if let Some(c) = self.crowdsec.as_ref().filter(|c| !c.pushes()) {
            out.push(c);
        }
        out
    }
}

/// A socket file mode, as `"0660"` or `0o660`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum RawMode {
    /// `0o660` in TOML.
    Number(i64),
    /// `"0660"`, read as octal.
    Text(String),
}

/// `[server]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawServer {
    /// The socket Exim's library and `${readsocket}` connect to.
    pub exim_socket: PathBuf,
    /// Its file mode; Exim's processes must be able to connect (write permission).
    pub exim_socket_mode: RawMode,
    /// Its group, e.g. `Debian-exim`; by default the oracle's own.
    pub exim_socket_group: Option<String>,
    /// Whether `exim_socket_mode` may let every local user connect (`0666`, `0662`).
    /// Off by default and refused without it: whoever can connect can report failed
    /// logins and so hold any account. Only for a host where every local user is trusted.
    pub exim_socket_allow_everyone: bool,
    /// The admin socket for `access-oracle ctl`.
    pub admin_socket: PathBuf,
    /// Its file mode; roles are still checked from the peer's credentials.
    pub admin_socket_mode: RawMode,
    /// Its group; by default the oracle's own.
    pub admin_socket_group: Option<String>,
    /// Where state and, by default, alerts are written.
    pub state_dir: PathBuf,
    /// Connections served at once on the Exim socket. At the cap, the connection idle
    /// the longest is closed to make room (the library reconnects on its next call);
    /// when none is idle, the newcomer is answered `defer` and closed.
    pub max_connections: usize,
    /// How long an Exim socket connection may wait for its next request, in seconds
    /// (the library keeps one open for a whole SMTP session and reconnects
    /// transparently when it was closed).
    pub exim_idle_timeout_secs: u64,
    /// How long a request line begun on the Exim socket may take to end (newline or end
    /// of input), in milliseconds; then it is answered `error` and the connection closed.
    pub exim_request_timeout_ms: u64,
    /// Connections served at once on the admin socket; at the cap the idlest is closed
    /// to make room, or the newcomer refused (and the refusal audited).
    pub admin_max_connections: usize,
    /// How long an admin connection may wait for its next request, in seconds.
    pub admin_idle_timeout_secs: u64,
    /// How long an admin request line may take to arrive whole, in milliseconds.
    pub admin_request_timeout_ms: u64,
    /// How long SIGTERM waits for open connections before it stops anyway, in seconds.
    pub shutdown_grace_secs: u64,
    /// Whether every change to the state (failures and recipients counted, holds,
    /// blocks, releases, baselines) is appended to a journal in `state_dir` as it is
    /// made, so a crash (`kill -9`, an OOM kill) loses nothing acknowledged. Off: a
    /// crash loses what changed since the last snapshot (at most a minute).
    pub journal: bool,
    /// How often the journal is flushed to disk, in milliseconds: what a power cut can
    /// lose. Appending never waits for it.
    pub journal_flush_ms: u64,
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            exim_socket: "/run/access-oracle/exim.sock".into(),
            exim_socket_mode: RawMode::Text("0660".into()),
            exim_socket_group: None,
            exim_socket_allow_everyone: false,
            admin_socket: "/run/access-oracle/admin.sock".into(),
            admin_socket_mode: RawMode::Text("0600".into()),
            admin_socket_group: None,
            state_dir: "/var/lib/access-oracle".into(),
            max_connections: 1024,
            exim_idle_timeout_secs: 300,
            exim_request_timeout_ms: 2000,
            admin_max_connections: 64,
            admin_idle_timeout_secs: 60,
            admin_request_timeout_ms: 5000,
            shutdown_grace_secs: 5,
            journal: true,
            journal_flush_ms: 1000,
        }
    }
}

/// `[admin]`: roles on the admin socket, from the peer's Unix credentials. Root is
/// always an admin.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAdmin {
    /// Users who may read and change (release, unblock).
    pub admin_users: Vec<String>,
    /// Groups whose members may read and change.
    pub admin_groups: Vec<String>,
    /// Users who may only read.
    pub auditor_users: Vec<String>,
    /// Groups whose members may only read.
    pub auditor_groups: Vec<String>,
}

/// `[alerts]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAlerts {
    /// The JSON-lines alert file; default `<state_dir>/alerts.jsonl`.
    pub file: Option<PathBuf>,
    /// Alerts waiting for the sinks; when full, new alerts are counted and dropped
    /// (never the verdict path waiting on a sink).
    pub queue_capacity: usize,
    /// Alerts kept in memory for `ctl alerts`.
    pub recent: usize,
}

impl Default for RawAlerts {
    fn default() -> Self {
        RawAlerts {
            file: None,
            queue_capacity: 10_000,
            recent: 1000,
        }
    }
}

/// `[accounts]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAccounts {
    /// Whether `Alice` and `alice` are different accounts. Off by default: most
    /// backends ignore case, and an attacker must not dodge counters by changing it.
    pub case_sensitive: bool,
    /// The most accounts tracked; above it the least recently seen idle ones are dropped.
    pub max_tracked: usize,
    /// An account or address with nothing in force is forgotten after this long idle.
    pub idle_secs: u64,
}

impl Default for RawAccounts {
    fn default() -> Self {
        RawAccounts {
            case_sensitive: false,
            max_tracked: 1_000_000,
            idle_secs: 86_400,
        }
    }
}
