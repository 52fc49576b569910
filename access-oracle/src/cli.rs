//! The command line: `serve`, `check-config`, `ctl`, `parse`, `replay`, `ingest`,
//! `audit`, `report`, `demo`.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// Watches who accesses mail accounts on an Exim server and stops abuse while it happens.
#[derive(Debug, Parser)]
#[command(name = "access-oracle", version, about)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Log output formats.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: answer Exim on its socket and admins on theirs.
    Serve {
        /// The TOML config file; without it the embedded defaults are used.
        #[arg(long)]
        config: Option<PathBuf>,
        /// The Exim socket (overrides server.exim_socket).
        #[arg(long)]
        socket: Option<PathBuf>,
        /// The admin socket (overrides server.admin_socket).
        #[arg(long)]
        admin_socket: Option<PathBuf>,
        /// Where state and alerts are written (overrides server.state_dir).
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
    /// Check a config file and list every problem in it.
    CheckConfig {
        /// The file.
        file: PathBuf,
    },
    /// Ask the running oracle (admin socket).
    ///
    /// The admin socket is `--socket` when given; else `[server] admin_socket` of the
    /// `--config` file; else that of /etc/access-oracle/access-oracle.toml when that file
    /// exists; else /run/access-oracle/admin.sock. A failed connection names the socket
    /// and which of these it came from.
    Ctl {
        /// The admin socket (overrides --config and the packaged config).
        #[arg(long)]
        socket: Option<PathBuf>,
        /// The config whose `[server] admin_socket` to use (default:
        /// /etc/access-oracle/access-oracle.toml when it exists).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Print the raw JSON answer.
        #[arg(long)]
        json: bool,
        /// The request.
        #[command(subcommand)]
        request: CtlRequest,
    },
    /// Print the events the oracle finds in Exim / Dovecot logs, one JSON object per line.
    Parse {
        /// The log format; `auto` decides per line.
        #[arg(long, value_enum, default_value_t = crate::sources::Format::Auto)]
        format: crate::sources::Format,
        /// Print counts only (lines, events by kind, failures, unparsed).
        #[arg(long)]
        stats: bool,
        /// Append lines that look relevant but do not parse to this file.
        #[arg(long, value_name = "FILE")]
        dead_letters: Option<PathBuf>,
        /// The log files (plain or gzip; `-` is standard input).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Run a rule set over past logs on their own clock and print what it would have
    /// alerted, held, blocked and deferred; touches no running oracle.
    Replay {
        /// The config whose rules to replay; the embedded defaults without it.
        #[arg(long)]
        config: Option<PathBuf>,
        /// The log format; `auto` decides per line.
        #[arg(long, value_enum, default_value_t = crate::sources::Format::Auto)]
        format: crate::sources::Format,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// The log files (plain or gzip), in any order: events are merged by time.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Backfill past logs into the state (baselines, holds) with the oracle stopped:
    /// accounts then start with their history instead of learning from scratch.
    Ingest {
        /// The config (rules, baselines, GeoIP databases); the embedded defaults without it.
        #[arg(long)]
        config: Option<PathBuf>,
        /// The state directory (overrides server.state_dir).
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// The log format; `auto` decides per line.
        #[arg(long, value_enum, default_value_t = crate::sources::Format::Auto)]
        format: crate::sources::Format,
        /// Append lines that look relevant but do not parse to this file (default
        /// `<state_dir>/dead-letters.log`).
        #[arg(long, value_name = "FILE")]
        dead_letters: Option<PathBuf>,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
        /// No progress on standard error.
        #[arg(long)]
        quiet: bool,
        /// The log files (plain or gzip), in any order: events are merged by time.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Check or search the audit trail (read from its files: works with the oracle
    /// stopped; needs read access to the trail, and to its key for `verify`).
    Audit {
        /// The config that says where the trail is; the embedded defaults without it.
        #[arg(long, global = true)]
        config: Option<PathBuf>,
        /// The state directory (overrides server.state_dir).
        #[arg(long, global = true)]
        state_dir: Option<PathBuf>,
        /// The trail's directory (overrides [audit] dir).
        #[arg(long, global = true)]
        dir: Option<PathBuf>,
        /// What to do.
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// A report from the audit trail for an auditor: logins by outcome, protocol, day,
    /// country and AS, the top failing addresses and accounts, alerts, holds and blocks,
    /// admin actions, with `--user` every access of one account; anchored to the trail
    /// by its verification result and chain head (see docs/REPORTS.md).
    Report {
        /// The config that says where the trail is (and the GeoIP databases); the
        /// embedded defaults without it.
        #[arg(long)]
        config: Option<PathBuf>,
        /// The state directory (overrides server.state_dir).
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// The trail's directory (overrides [audit] dir).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The trail's key, to verify it and read encrypted records (overrides
        /// [audit] key_file).
        #[arg(long)]
        key_file: Option<PathBuf>,
        /// Events at or after this time (RFC 3339, e.g. `2026-11-01T00:00:00Z`).
        #[arg(long, conflicts_with = "period")]
        since: Option<jiff::Timestamp>,
        /// Events before this time (RFC 3339); now without it.
        #[arg(long, conflicts_with = "period")]
        until: Option<jiff::Timestamp>,
        /// The last complete day, week (Monday to Monday) or month, in UTC.
        #[arg(long, value_enum)]
        period: Option<crate::commands::report::Period>,
        /// The per-account access report of this account.
        #[arg(long)]
        user: Option<String>,
        /// The format.
        #[arg(long, value_enum, default_value = "html")]
        format: crate::commands::report::Format,
        /// Where to write: a file (HTML, JSON) or a directory (CSV, one file per
        /// table); standard output without it (HTML, JSON).
        #[arg(short = 'o', long = "output")]
        output: Option<PathBuf>,
        /// Pseudonymise accounts, addresses and other names (keyed HMAC-SHA256 under a
        /// random key made for this export); reasons are left out.
        #[arg(long)]
        pseudonymise: bool,
        /// Cut addresses to their /24 (IPv4) or /48 (IPv6), before pseudonymising or in
        /// place; reasons are left out.
        #[arg(long)]
        truncate_addresses: bool,
    },
    /// Start the oracle on its defaults in a temporary directory and drive real Exim
    /// through a brute-force and a burst scenario, printing the alerts as they fire.
    Demo {
        /// The Exim library to load (default: next to this program, then the installed one).
        #[arg(long)]
        lib: Option<PathBuf>,
        /// Keep the temporary directory afterwards.
        #[arg(long)]
        keep: bool,
    },
}

/// `access-oracle audit ...`
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check every record's chain value and sequence; name the first that does not
    /// check. Exit status 0 when all do, 1 otherwise.
    Verify {
        /// The chain's key (overrides [audit] key_file).
        #[arg(long)]
        key_file: Option<PathBuf>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Find records by account, address or network, time and kind.
    Search {
        /// The account (case ignored); also matches the administrator of admin records.
        #[arg(long)]
        user: Option<String>,
        /// An address or a network (`192.0.2.0/24`).
        #[arg(long)]
        ip: Option<String>,
        /// Events at or after this time (RFC 3339, e.g. `2026-11-01T00:00:00Z`).
        #[arg(long)]
        since: Option<jiff::Timestamp>,
        /// Events before this time (RFC 3339).
        #[arg(long)]
        until: Option<jiff::Timestamp>,
        /// Only these kinds (repeat or separate with commas): auth, sent, logout,
        /// mailbox, admin, alert, release, unblock, action.
        #[arg(long, value_delimiter = ',')]
        kind: Vec<String>,
        /// The most records shown in the table (the newest); `--json` prints all.
        #[arg(long, default_value_t = 200)]
        limit: usize,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
        /// The trail's key, to read encrypted records (overrides [audit] key_file);
        /// plain records are read without it.
        #[arg(long)]
        key_file: Option<PathBuf>,
    },
}

/// Requests to the running oracle.
#[derive(Debug, Subcommand)]
pub enum CtlRequest {
    /// Counters, holds and blocks in force.
    Status,
    /// What is known about one account.
    Account {
        /// The account.
        user: String,
        /// Explain what is normal for the account (countries, networks, hours, sending)
        /// and since when, instead of its live state.
        #[arg(long)]
        baseline: bool,
    },
    /// The most recent alerts.
    Alerts {
        /// How many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// End an account's hold (and reset its counters).
    Release {
        /// The account.
        user: String,
    },
    /// Lift the blocks on an address (and a network block covering it) or inside a
    /// network (CIDR).
    Unblock {
        /// The address or network.
        ip: String,
    },
    /// Hold an account on every source (admin role; audited with your uid).
    Hold {
        /// The account.
        user: String,
        /// For how long: `90s`, `15m`, `2h`, `7d` or seconds (default 1h).
        #[arg(long = "for", value_parser = parse_duration)]
        for_secs: Option<u64>,
        /// Why (kept in the audit trail and shown by `ctl holds`).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Block an address or a network (CIDR); an IPv6 address blocks its /64 (admin
    /// role; audited with your uid).
    Block {
        /// The address or network.
        ip: String,
        /// For how long: `90s`, `15m`, `2h`, `7d` or seconds (default 1h).
        #[arg(long = "for", value_parser = parse_duration)]
        for_secs: Option<u64>,
        /// Why (kept in the audit trail and shown by `ctl holds`).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Every hold and block in force, with why, by whom, since and until.
    Holds,
}

/// A duration: seconds (`900`), or numbers with units, added up: `90s`, `15m`, `2h`,
/// `1h30m`, `7d`, `2w`, `3 days` (units `s`/`sec`/`seconds`, `m`/`min`/`minutes`,
/// `h`/`hours`, `d`/`days`, `w`/`weeks`).
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let text = s.trim();
    let bad = || format!("{text:?}: a duration is like 900, 15m, 2h, 1h30m or 7d");
    let mut rest = text;
    let mut secs: u64 = 0;
    let mut parts = 0;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = rest[digits..].trim_start();
        let letters = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let unit = rest[..letters].to_ascii_lowercase();
        rest = rest[letters..]
            .trim_start()
            .trim_start_matches(',')
            .trim_start();
        let per = match unit.as_str() {
            "" if parts == 0 && rest.is_empty() => 1,
            "s" | "sec" | "secs" | "second" | "seconds" => 1,
            "m" | "min" | "mins" | "minute" | "minutes" => 60,
            "h" | "hr" | "hrs" | "hour" | "hours" => 3600,
            "d" | "day" | "days" => 86_400,
            "w" | "week" | "weeks" => 7 * 86_400,
            _ => {
                return Err(format!(
                    "{text:?}: unknown unit {unit:?}; use s, m, h, d or w"
                ));
            }
        };
        secs = secs.saturating_add(n.saturating_mul(per));
        parts += 1;
    }
    if parts == 0 {
        return Err(bad());
    }
    if secs == 0 || secs > crate::admin::MAX_FOR_SECS {
        return Err(format!("{text:?}: must be between 1 second and a year"));
    }
    Ok(secs)
}

impl CtlRequest {
    /// The admin protocol request, or why the arguments make none.
    pub fn to_request(&self) -> Result<crate::admin::AdminRequest, String> {
        use crate::admin::AdminRequest as R;
        Ok(match self {
            CtlRequest::Status => R::Status,
            CtlRequest::Account { user, baseline } => R::Account {
                user: user.clone(),
                baseline: *baseline,
            },
            CtlRequest::Alerts { limit } => R::Alerts { limit: *limit },
            CtlRequest::Release { user } => R::Release { user: user.clone() },
            CtlRequest::Unblock { ip } => R::Unblock { ip: net_arg(ip)? },
            CtlRequest::Hold {
                user,
                for_secs,
                reason,
            } => R::Hold {
                user: user.clone(),
                for_secs: *for_secs,
                reason: reason.clone(),
            },
            CtlRequest::Block {
                ip,
                for_secs,
                reason,
            } => R::Block {
                ip: net_arg(ip)?,
                for_secs: *for_secs,
                reason: reason.clone(),
            },
            CtlRequest::Holds => R::Holds,
        })
    }
}

/// An address or network argument.
fn net_arg(s: &str) -> Result<crate::admin::Net, String> {
    crate::admin::Net::try_from(s.to_string())
}

#[cfg(test)]
mod duration_tests {
    use super::parse_duration;

    #[test]
    fn durations_read_as_people_write_them() {
        for (text, secs) in [
            ("900", 900),
            ("90s", 90),
            ("15m", 900),
            ("15min", 900),
            ("2h", 7200),
            ("1h30m", 5400),
            ("1h 30m", 5400),
            ("7d", 604_800),
            ("2w", 1_209_600),
            ("3 days", 259_200),
        ] {
            assert_eq!(parse_duration(text), Ok(secs), "{text}");
        }
        for bad in ["", "h", "15x", "0", "0s", "400d", "1.5h", "-5m", "5 5"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
