//! `[firewall]`: every address block as an element of an nftables set, with the block's
//! remaining time as the element's timeout, so the kernel drops the address's packets
//! (by a rule the administrator writes against the set) and forgets it when the block
//! ends, even when the oracle is not running.
//!
//! ```toml
//! [firewall]
//! nft_set = "inet access_oracle blocked"   # family, table, set: IPv4 blocks
//! # nft_set_v6 = "inet access_oracle blocked_v6"   # IPv6 blocks (default: nft_set + "_v6")
//! create = true            # create the table and both sets when they are missing
//! nft = "/usr/sbin/nft"
//! timeout_ms = 5000        # one nft run; past it nft is killed and the step retried
//! ```
//!
//! An nftables set holds one address type, so IPv4 blocks go to `nft_set` and IPv6
//! blocks to `nft_set_v6`. Both need `flags interval, timeout` (a block may be a
//! network: a CIDR from `ctl block`, an IPv6 /64). A block is one transaction on
//! `nft -f -`: the element added, deleted and added again with the block's remaining
//! time, so a block of an address already in the set (a longer or shorter block, or the
//! same one sent again at start) sets the new end whatever the kernel does with an
//! existing element's timeout. With `create = true` the same transaction first adds the
//! table and the sets (`add` leaves what exists, elements included), so a set dropped by
//! a firewall reload is made again at the next block. An unblock is `nft delete element`;
//! an element already gone (expired, deleted by hand, or its set gone) is success.
//!
//! nft runs directly, never through a shell: its arguments and its script are made only
//! of the validated set names, an address and a number. A run past `timeout_ms` is
//! killed; a failure's error is nft's exit status and the first line of its standard
//! error, escaped. The shared runner ([`super`]) retries, counts and reports it.

use crate::command::RunError;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::{Action, ActionConfig, Applying, Step};
use crate::time::Secs;

/// The longest one nft run may be given.
const MAX_TIMEOUT_MS: u64 = 600_000;

/// The longest table or set name nftables accepts.
const MAX_NAME: usize = 255;

/// `[firewall]`: address blocks as nftables set elements.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FirewallConfig {
    /// The set that holds IPv4 blocks: `"FAMILY TABLE SET"`, the family one of `ip`,
    /// `ip6` (not for IPv4) or `inet`, the names of letters, digits and `_` (not starting
    /// with a digit). Default `"inet access_oracle blocked"`.
    pub nft_set: String,
    /// The set that holds IPv6 blocks (an nftables set has one address type), in the same
    /// form (family `inet` or `ip6`). Default: `nft_set`'s family and table, its set name
    /// with `_v6` added (`"inet access_oracle blocked_v6"`).
    pub nft_set_v6: Option<String>,
    /// Whether each block first creates the table and both sets when they are missing
    /// (`type ipv4_addr` / `type ipv6_addr`, `flags interval, timeout`); existing ones and
    /// their elements are left as they are. Default false: the sets must exist.
    pub create: bool,
    /// The nft program (an absolute path). Default `/usr/sbin/nft`.
    pub nft: PathBuf,
    /// How long one nft run may take, in milliseconds; past it nft is killed and the step
    /// fails (and is retried). Default 5000.
    pub timeout_ms: u64,
}

impl Default for FirewallConfig {
    fn default() -> FirewallConfig {
        FirewallConfig {
            nft_set: "inet access_oracle blocked".into(),
            nft_set_v6: None,
            create: false,
            nft: PathBuf::from("/usr/sbin/nft"),
            timeout_ms: 5000,
        }
    }
}

/// An nftables address family that can hold the sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `ip`: IPv4 only.
    Ip,
    /// `ip6`: IPv6 only.
    Ip6,
    /// `inet`: both.
    Inet,
}

impl Family {
    fn parse(word: &str) -> Option<Family> {
        match word {
            "ip" => Some(Family::Ip),
            "ip6" => Some(Family::Ip6),
            "inet" => Some(Family::Inet),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Family::Ip => "ip",
            Family::Ip6 => "ip6",
            Family::Inet => "inet",
        }
    }
}

/// A set as nft names it: family, table, set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetName {
    /// The table's family.
    pub family: Family,
    /// The table.
    pub table: String,
    /// The set.
    pub set: String,
}

impl SetName {
    /// Reads `"FAMILY TABLE SET"`; the error says what is wrong.
    pub fn parse(text: &str) -> Result<SetName, String> {
        let words: Vec<&str> = text.split_whitespace().collect();
        let [family, table, set] = words[..] else {
            return Err(format!(
                "\"{}\" is not \"FAMILY TABLE SET\" (three words, e.g. \"inet access_oracle blocked\")",
                crate::text::escape_controls(text)
            ));
        };
        let family = Family::parse(family).ok_or_else(|| {
            format!(
                "family \"{}\" must be ip, ip6 or inet",
                crate::text::escape_controls(family)
            )
        })?;
        check_name("table", table)?;
        check_name("set", set)?;
        Ok(SetName {
            family,
            table: table.into(),
            set: set.into(),
        })
    }

    /// `FAMILY TABLE` as nft's commands take a table.
    fn table_words(&self) -> String {
        format!("{} {}", self.family.as_str(), self.table)
    }

    /// Whether two names are the same table.
    fn same_table(&self, other: &SetName) -> bool {
        self.family == other.family && self.table == other.table
    }
}

impl fmt::Display for SetName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.family.as_str(), self.table, self.set)
    }
}

/// A table or set name nft reads as a plain identifier.
fn check_name(what: &str, name: &str) -> Result<(), String> {
    let ok = name.len() <= MAX_NAME
        && name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what} name \"{}\" must be letters, digits and _ (not starting with a digit), at most {MAX_NAME}",
            crate::text::escape_controls(name)
        ))
    }
}

impl FirewallConfig {
    /// The IPv4 set and the IPv6 set, or every problem with them.
    fn sets(&self) -> Result<(SetName, SetName), Vec<String>> {
        let mut problems = Vec::new();
        let v4 = SetName::parse(&self.nft_set).map_err(|e| format!("nft_set: {e}"));
        let v6 = match (&self.nft_set_v6, &v4) {
            (Some(text), _) => SetName::parse(text).map_err(|e| format!("nft_set_v6: {e}")),
            (None, Ok(v4)) => {
                let set = format!("{}_v6", v4.set);
                check_name("set", &set)
                    .map(|()| SetName { set, ..v4.clone() })
                    .map_err(|e| format!("nft_set_v6 (nft_set's name with _v6): {e}"))
            }
            // Said once, for nft_set.
            (None, Err(_)) => Err(String::new()),
        };
        if let Ok(v4) = &v4
            && v4.family == Family::Ip6
        {
            problems.push(format!(
                "nft_set {v4} is in an ip6 table, whose rules never see an IPv4 packet: use inet or ip"
            ));
        }
        if let Ok(v6) = &v6
            && v6.family == Family::Ip
        {
            problems.push(format!(
                "nft_set_v6 {v6} is in an ip table, whose rules never see an IPv6 packet: use inet or ip6"
            ));
        }
        if let (Ok(v4), Ok(v6)) = (&v4, &v6)
            && v4 == v6
        {
            problems.push(format!(
                "nft_set and nft_set_v6 are both {v4}: a set holds one address type, IPv4 or IPv6"
            ));
        }
        match (v4, v6) {
            (Ok(v4), Ok(v6)) if problems.is_empty() => Ok((v4, v6)),
            (v4, v6) => {
                problems.extend(v4.err());
                problems.extend(v6.err().filter(|e| !e.is_empty()));
                Err(problems)
            }
        }
    }
}

impl ActionConfig for FirewallConfig {
    fn name(&self) -> &'static str {
        "firewall"
    }

    fn validate(&self, problems: &mut Vec<String>) {
        if let Err(mut own) = self.sets() {
            problems.append(&mut own);
        }
        if !self.nft.is_absolute() {
            problems.push(format!(
                "nft must be an absolute path (it is run without a search of PATH), got {}",
                crate::text::escape_controls(&self.nft.to_string_lossy())
            ));
        }
        if self.timeout_ms == 0 || self.timeout_ms > MAX_TIMEOUT_MS {
            problems.push(format!(
                "timeout_ms must be between 1 and {MAX_TIMEOUT_MS}, got {}",
                self.timeout_ms
            ));
        }
    }

    /// Checks the nft program only: whether the sets exist cannot be asked without the
    /// privilege to change them (nftables answers nothing without CAP_NET_ADMIN), and
    /// `check-config` may run as another user than the daemon.
    fn preflight(&self, problems: &mut Vec<String>) {
        use std::os::unix::fs::PermissionsExt;
        let nft = crate::text::escape_controls(&self.nft.to_string_lossy()).into_owned();
        match std::fs::metadata(&self.nft) {
            Ok(meta) if !meta.is_file() => problems.push(format!(
                "nft {nft} is {}, not a program",
                crate::files::describe_type(&meta)
            )),
            Ok(meta) if meta.permissions().mode() & 0o111 == 0 => {
                problems.push(format!("nft {nft} is not executable"))
            }
            Ok(_) => {}
            Err(e) => problems.push(format!(
                "nft {nft}: {e} (Debian's package nftables installs /usr/sbin/nft)"
            )),
        }
    }

    fn build(&self) -> std::io::Result<Box<dyn Action>> {
        Ok(Box::new(self.firewall().map_err(|problems| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, problems.join("; "))
        })?))
    }
}

impl FirewallConfig {
    /// The running action.
    pub fn firewall(&self) -> Result<Firewall, Vec<String>> {
        let (v4, v6) = self.sets()?;
        Ok(Firewall {
            nft: self.nft.clone(),
            v4,
            v6,
            create: self.create,
            timeout: Duration::from_millis(self.timeout_ms),
        })
    }
}

/// The running firewall action.
#[derive(Debug, Clone)]
pub struct Firewall {
    nft: PathBuf,
    v4: SetName,
    v6: SetName,
    create: bool,
    timeout: Duration,
}

/// One nft run: its arguments and, for `-f -`, the script on its standard input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// nft's arguments.
    pub args: Vec<String>,
    /// The script for `nft -f -`.
    pub script: Option<String>,
    /// What it does, in nft's words, for the error.
    pub what: String,
}

/// An address or network as nft writes an element: a single address bare, a network
/// as `address/length` with the host bits cleared.
pub fn element(net: &IpNet) -> String {
    let net = net.trunc();
    if net.prefix_len() == net.max_prefix_len() {
        net.addr().to_string()
    } else {
        net.to_string()
    }
}

impl Firewall {
    /// The set a network's blocks go to.
    fn set_for(&self, net: &IpNet) -> &SetName {
        match net {
            IpNet::V4(_) => &self.v4,
            IpNet::V6(_) => &self.v6,
        }
    }

    /// The lines that create the tables and sets when missing (`add` keeps what exists).
    fn creation(&self) -> Vec<String> {
        let mut lines = vec![format!("add table {}", self.v4.table_words())];
        if !self.v6.same_table(&self.v4) {
            lines.push(format!("add table {}", self.v6.table_words()));
        }
        for (set, kind) in [(&self.v4, "ipv4_addr"), (&self.v6, "ipv6_addr")] {
            lines.push(format!(
                "add set {} {} {{ type {kind}; flags interval, timeout; }}",
                set.table_words(),
                set.set
            ));
        }
        lines
    }

    /// The nft run for a step at `now`; `None` for a block that has already ended.
    pub fn plan(&self, step: &Step, now: Secs) -> Option<Run> {
        match step {
            Step::Block { net, until, .. } => {
                if *until <= now {
                    return None;
                }
                let secs = until.saturating_sub(now).max(1);
                let set = self.set_for(net);
                let elem = element(net);
                let add = format!("add element {set} {{ {elem} timeout {secs}s }}");
                let mut lines = if self.create {
                    self.creation()
                } else {
                    Vec::new()
                };
                // Added first so that the delete finds it; added again with this end.
                lines.push(add.clone());
                lines.push(format!("delete element {set} {{ {elem} }}"));
                lines.push(add.clone());
                let mut script = lines.join("\n");
                script.push('\n');
                Some(Run {
                    args: vec!["-f".into(), "-".into()],
                    script: Some(script),
                    what: format!("nft {add}"),
                })
            }
            Step::Unblock { net } => {
                let set = self.set_for(net);
                let args: Vec<String> = ["delete", "element", set.family.as_str()]
                    .into_iter()
                    .map(String::from)
                    .chain([
                        set.table.clone(),
                        set.set.clone(),
                        "{".into(),
                        element(net),
                        "}".into(),
                    ])
                    .collect();
                Some(Run {
                    what: format!("nft {}", args.join(" ")),
                    args,
                    script: None,
                })
            }
        }
    }

    async fn apply_step(&self, step: &Step, now: Secs) -> Result<(), String> {
        let Some(run) = self.plan(step, now) else {
            return Ok(());
        };
        match run_nft(&self.nft, &run, self.timeout).await {
            Ok(()) => Ok(()),
            // The element is gone already (it expired, was deleted, or its set is).
            Err(RunError::Exit(_, err))
                if matches!(step, Step::Unblock { .. })
                    && (err.contains("element does not exist")
                        || err.contains("No such file or directory")) =>
            {
                Ok(())
            }
            Err(e) => Err(format!("{} failed: {e}{}", run.what, self.hint(&e))),
        }
    }

    /// What an administrator can do about a failure nft explains in few words.
    fn hint(&self, e: &RunError) -> &'static str {
        let RunError::Exit(_, err) = e else {
            return "";
        };
        if err.contains("Operation not permitted") {
            " (nft needs CAP_NET_ADMIN and AF_NETLINK: see RESPONSES.md on the systemd unit)"
        } else if err.contains("interval overlaps") {
            " (the set holds an element that overlaps this network; nftables keeps no overlapping intervals)"
        } else if err.contains("File exists") && self.create {
            " (a table or set of that name exists with another type or flags: the sets need type ipv4_addr / ipv6_addr and flags interval, timeout)"
        } else if err.contains("No such file or directory") && !self.create {
            " (the set does not exist: create it, or set create = true)"
        } else {
            ""
        }
    }
}

impl Action for Firewall {
    fn apply<'a>(&'a mut self, step: &'a Step, now: Secs) -> Applying<'a> {
        Box::pin(self.apply_step(step, now))
    }

    fn expires_by_itself(&self) -> bool {
        true
    }
}

/// Runs `program` with the run's arguments (and script on standard input), killed at
/// `timeout`; a failure carries nft's error ([`nft_error`]).
async fn run_nft(program: &std::path::Path, run: &Run, timeout: Duration) -> Result<(), RunError> {
    let input = run.script.as_deref().map(str::as_bytes);
    let ran = crate::command::run(program, &run.args, input, timeout).await?;
    if !ran.status.success() {
        return Err(RunError::Exit(
            ran.status,
            nft_error(&String::from_utf8_lossy(&ran.stderr)),
        ));
    }
    // nft reads to the end of its script: one not all written did not run whole.
    ran.written.map_err(RunError::Start)
}

/// The error in nft's standard error, escaped: its first line, and for a script the
/// script's line it names (nft writes `/dev/stdin:LINE:COLUMNS: Error: ...`, then the
/// line, then a marker under the part at fault).
pub fn nft_error(stderr: &str) -> String {
    let mut lines = stderr.lines().filter(|l| !l.trim().is_empty());
    let Some(first) = lines.next() else {
        return String::new();
    };
    let text = match first.strip_prefix("/dev/stdin:") {
        Some(rest) => {
            let message = rest.split_once(": ").map_or(rest, |(_, m)| m);
            match lines.next() {
                Some(line) => format!("{message} in `{}`", line.trim()),
                None => message.to_string(),
            }
        }
        None => first.to_string(),
    };
    crate::text::escape_controls(&text).into_owned()
}

#[cfg(test)]
mod tests;
