//! `[fail2ban]`: every address block is also banned in a fail2ban jail, and unbanned
//! when it is lifted or ends, through `fail2ban-client set JAIL banip|unbanip ADDRESS`.
//!
//! ```toml
//! [fail2ban]
//! jail = "exim-access"                      # the jail that bans (its banaction acts)
//! client = "/usr/bin/fail2ban-client"       # default
//! socket = "/run/fail2ban/fail2ban.sock"    # default: the one fail2ban's config names
//! timeout_ms = 5000                         # one run of the client; then it is killed
//! ```
//!
//! The client is run directly (an argument list, no shell), with an empty environment
//! but `PATH`, its input empty. Exit status 0 is done; anything else, a client that
//! cannot be started or one killed at `timeout_ms` is a failure whose error carries the
//! first line the client printed (standard output first, where fail2ban says why, such
//! as `Sorry but the jail 'x' does not exist`; then standard error, its log prefix
//! dropped), escaped. The shared runner ([`super`]) retries and reports it.
//!
//! A single address (`/32`, `/128`) is banned as the bare address, as fail2ban's own
//! filters would; a wider network as `ADDRESS/PREFIX` (its network address), which
//! fail2ban 1.0 accepts and hands to the jail's banaction as `<ip>`. Whether that
//! banaction can act on a network is the jail's matter: `iptables-*` rules take one,
//! fail2ban's `nftables` and `*-ipset` actions cannot (their sets hold single
//! addresses), and their failure is in fail2ban's log only, since the client answers
//! as soon as the ban is recorded. Unbanning an address that is not banned answers 0
//! and counts as done.
//!
//! fail2ban ends a ban after the jail's `bantime`, not the oracle's block, so this
//! action does not expire by itself: the runner sends the unban at the block's end.
//! The jail's `bantime` should be at least the longest block the oracle makes, so
//! fail2ban does not lift a ban early, and finite, so a ban whose end the oracle
//! missed (it was stopped when the block ended) still ends (`docs/RESPONSES.md`).

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::{Action, ActionConfig, Applying, Step};
use crate::time::Secs;

/// `[fail2ban]`: ban and unban blocked addresses in a fail2ban jail.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Fail2banConfig {
    /// The jail that bans (as named in fail2ban's `jail.local` or `jail.d/`): letters,
    /// digits, `-`, `_` and `.`, up to 64 characters. It must exist in the running
    /// fail2ban; its banaction does the banning.
    pub jail: String,
    /// The `fail2ban-client` program (an absolute path); default
    /// `/usr/bin/fail2ban-client`.
    #[serde(default = "default_client")]
    pub client: PathBuf,
    /// fail2ban's socket (an absolute path), passed as `-s SOCKET`; by default the
    /// client finds the one fail2ban's own config names (`/run/fail2ban/fail2ban.sock`
    /// on Debian).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket: Option<PathBuf>,
    /// How long one run of the client may take, in milliseconds; past it the client is
    /// killed and the step failed (and retried). Default 5000.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_client() -> PathBuf {
    "/usr/bin/fail2ban-client".into()
}

fn default_timeout_ms() -> u64 {
    5000
}

/// The longest `timeout_ms` allowed.
const MAX_TIMEOUT_MS: u64 = 600_000;

/// The longest jail name allowed.
const MAX_JAIL_LEN: usize = 64;

/// Why a jail name is refused, if it is.
fn jail_problem(jail: &str) -> Option<String> {
    if jail.is_empty() {
        return Some("jail must name a fail2ban jail, got an empty name".into());
    }
    if jail.len() > MAX_JAIL_LEN {
        return Some(format!(
            "jail must be at most {MAX_JAIL_LEN} characters, got {}",
            jail.len()
        ));
    }
    if let Some(c) = jail
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        let escape = crate::text::escape_controls;
        return Some(format!(
            "jail \"{}\" holds '{}': a jail name is letters, digits, '-', '_' and '.'",
            escape(jail),
            escape(c.encode_utf8(&mut [0; 4]))
        ));
    }
    if jail.starts_with(['-', '.']) {
        return Some(format!(
            "jail {jail:?} must begin with a letter, a digit or '_'"
        ));
    }
    None
}

impl ActionConfig for Fail2banConfig {
    fn name(&self) -> &'static str {
        "fail2ban"
    }

    fn validate(&self, problems: &mut Vec<String>) {
        if let Some(p) = jail_problem(&self.jail) {
            problems.push(p);
        }
        if !self.client.is_absolute() {
            problems.push(format!(
                "client must be an absolute path (it is run without a shell or a search of PATH), got {}",
                self.client.display()
            ));
        }
        if let Some(socket) = &self.socket
            && !socket.is_absolute()
        {
            problems.push(format!(
                "socket must be an absolute path, got {}",
                socket.display()
            ));
        }
        if self.timeout_ms == 0 || self.timeout_ms > MAX_TIMEOUT_MS {
            problems.push(format!(
                "timeout_ms must be between 1 and {MAX_TIMEOUT_MS}, got {}",
                self.timeout_ms
            ));
        }
    }

    /// The client must be an executable file. A socket path that exists must be a
    /// socket; a missing one is not a problem: fail2ban may start after the oracle, and
    /// its steps are retried and alert when they fail.
    fn preflight(&self, problems: &mut Vec<String>) {
        use std::os::unix::fs::{FileTypeExt, PermissionsExt};
        match std::fs::metadata(&self.client) {
            Ok(meta) if !meta.is_file() => problems.push(format!(
                "client {} is {}, not a program",
                self.client.display(),
                crate::files::describe_type(&meta)
            )),
            Ok(meta) if meta.permissions().mode() & 0o111 == 0 => problems.push(format!(
                "client {} is not executable",
                self.client.display()
            )),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => problems.push(format!(
                "client {} does not exist (Debian's package fail2ban installs it)",
                self.client.display()
            )),
            Err(e) => problems.push(format!("client {}: {e}", self.client.display())),
        }
        if let Some(socket) = &self.socket {
            match std::fs::metadata(socket) {
                Ok(meta) if !meta.file_type().is_socket() => problems.push(format!(
                    "socket {} is {}, not a socket",
                    socket.display(),
                    crate::files::describe_type(&meta)
                )),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => problems.push(format!("socket {}: {e}", socket.display())),
            }
        }
    }

    fn build(&self) -> std::io::Result<Box<dyn Action>> {
        Ok(Box::new(Fail2ban {
            client: self.client.clone(),
            socket: self.socket.clone(),
            jail: self.jail.clone(),
            timeout: Duration::from_millis(self.timeout_ms),
        }))
    }
}

/// The running fail2ban action.
#[derive(Debug)]
pub struct Fail2ban {
    client: PathBuf,
    socket: Option<PathBuf>,
    jail: String,
    timeout: Duration,
}

/// How fail2ban is told about a network: the bare address for one address, else
/// `NETWORK/PREFIX`.
pub fn ban_target(net: IpNet) -> String {
    if net.prefix_len() == net.max_prefix_len() {
        net.addr().to_string()
    } else {
        net.trunc().to_string()
    }
}

impl Fail2ban {
    /// The client's arguments for `step`.
    fn args(&self, step: &Step) -> Vec<OsString> {
        let mut args: Vec<OsString> = Vec::with_capacity(6);
        if let Some(socket) = &self.socket {
            args.push("-s".into());
            args.push(socket.clone().into());
        }
        let verb = match step {
            Step::Block { .. } => "banip",
            Step::Unblock { .. } => "unbanip",
        };
        args.push("set".into());
        args.push(self.jail.clone().into());
        args.push(verb.into());
        args.push(ban_target(step.net()).into());
        args
    }

    /// Runs the client once with `args`.
    async fn run(&self, args: Vec<OsString>) -> Result<(), String> {
        use crate::command::RunError;
        let out = match crate::command::run(&self.client, &args, None, self.timeout).await {
            Ok(out) => out,
            Err(RunError::Timeout(t)) => {
                return Err(format!(
                    "fail2ban-client killed at its timeout ({} ms)",
                    t.as_millis()
                ));
            }
            Err(RunError::Start(e)) => {
                return Err(format!("cannot run {}: {e}", self.client.display()));
            }
            Err(e) => return Err(format!("fail2ban-client: {e}")),
        };
        if out.status.success() {
            return Ok(());
        }
        use std::os::unix::process::ExitStatusExt;
        let ended = match (out.status.code(), out.status.signal()) {
            (Some(code), _) => format!("fail2ban-client exited with {code}"),
            (None, Some(signal)) => format!("fail2ban-client ended by signal {signal}"),
            (None, None) => format!("fail2ban-client {}", out.status),
        };
        let why = first_line(&out.stdout).or_else(|| first_line(&out.stderr));
        Err(match why {
            Some(why) => format!("{ended}: {why}"),
            None => ended,
        })
    }
}

/// The first line with text in `output`, without fail2ban's log prefix (`DATE TIME
/// fail2ban [PID]: ERROR   `), escaped and cut to 300 characters.
fn first_line(output: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(output);
    let line = text.lines().map(str::trim).find(|l| !l.is_empty())?;
    let line = match line.split_once("]: ") {
        Some((_, rest)) => {
            let rest = rest.trim_start();
            match rest.split_once(char::is_whitespace) {
                Some((level, msg)) if level.chars().all(|c| c.is_ascii_uppercase()) => {
                    msg.trim_start()
                }
                _ => rest,
            }
        }
        None => line,
    };
    let line: String = line.chars().take(300).collect();
    Some(crate::text::escape_controls(&line).into_owned())
}

impl Action for Fail2ban {
    fn apply<'a>(&'a mut self, step: &'a Step, _now: Secs) -> Applying<'a> {
        Box::pin(async move { self.run(self.args(step)).await })
    }

    fn expires_by_itself(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(toml: &str) -> Result<Fail2banConfig, toml::de::Error> {
        toml::from_str(toml)
    }

    fn problems(c: &Fail2banConfig) -> Vec<String> {
        let mut p = Vec::new();
        c.validate(&mut p);
        p
    }

    fn action(socket: Option<&str>) -> Fail2ban {
        Fail2ban {
            client: "/usr/bin/fail2ban-client".into(),
            socket: socket.map(PathBuf::from),
            jail: "exim-access".into(),
            timeout: Duration::from_secs(5),
        }
    }

    fn block(net: &str) -> Step {
        Step::Block {
            net: net.parse().unwrap(),
            until: 0,
            by: "spraying".into(),
            reason: "many accounts".into(),
        }
    }

    fn strings(args: Vec<OsString>) -> Vec<String> {
        args.into_iter().map(|a| a.into_string().unwrap()).collect()
    }

    #[test]
    fn defaults_and_every_key() {
        let c = config(r#"jail = "exim-access""#).unwrap();
        assert_eq!(c.client, PathBuf::from("/usr/bin/fail2ban-client"));
        assert_eq!(c.socket, None);
        assert_eq!(c.timeout_ms, 5000);
        assert!(problems(&c).is_empty());
        let c = config(
            r#"
            jail = "postfix_sasl.2"
            client = "/usr/local/bin/fail2ban-client"
            socket = "/run/f2b/f2b.sock"
            timeout_ms = 200
            "#,
        )
        .unwrap();
        assert!(problems(&c).is_empty(), "{:?}", problems(&c));
        assert_eq!(c.socket, Some(PathBuf::from("/run/f2b/f2b.sock")));
    }

    #[test]
    fn jail_is_required_and_unknown_keys_refused() {
        let e = config(r#"client = "/usr/bin/fail2ban-client""#).unwrap_err();
        assert!(e.to_string().contains("missing field `jail`"), "{e}");
        let e = config("jail = \"x\"\nbantime = 600").unwrap_err();
        assert!(e.to_string().contains("unknown field `bantime`"), "{e}");
    }

    #[test]
    fn every_problem_is_named() {
        let c = Fail2banConfig {
            jail: "my jail;rm".into(),
            client: "fail2ban-client".into(),
            socket: Some("run/f2b.sock".into()),
            timeout_ms: 0,
        };
        let p = problems(&c);
        assert_eq!(p.len(), 4, "{p:?}");
        assert!(p[0].contains(r#"jail "my jail;rm" holds ' '"#), "{p:?}");
        assert!(p[1].starts_with("client must be an absolute path"), "{p:?}");
        assert!(p[2].starts_with("socket must be an absolute path"), "{p:?}");
        assert!(
            p[3].starts_with("timeout_ms must be between 1 and 600000"),
            "{p:?}"
        );
    }

    #[test]
    fn jail_names() {
        for good in ["sshd", "exim-access", "postfix_sasl", "a.b", "_x", "J1"] {
            assert_eq!(jail_problem(good), None, "{good}");
        }
        for bad in ["", "-s", ".x", "a b", "a/b", "a\nb", "ä", &"x".repeat(65)] {
            assert!(jail_problem(bad).is_some(), "{bad:?}");
        }
        assert_eq!(
            jail_problem("a\u{1b}[2Jb").unwrap(),
            r#"jail "a\x1b[2Jb" holds '\x1b': a jail name is letters, digits, '-', '_' and '.'"#,
            "a control character is shown escaped"
        );
    }

    #[test]
    fn argument_lists() {
        let a = action(None);
        assert_eq!(
            strings(a.args(&block("192.0.2.7/32"))),
            ["set", "exim-access", "banip", "192.0.2.7"]
        );
        assert_eq!(
            strings(a.args(&Step::Unblock {
                net: "192.0.2.7/32".parse().unwrap()
            })),
            ["set", "exim-access", "unbanip", "192.0.2.7"]
        );
        let a = action(Some("/tmp/f2b.sock"));
        assert_eq!(
            strings(a.args(&block("2001:db8:1:2::/64"))),
            [
                "-s",
                "/tmp/f2b.sock",
                "set",
                "exim-access",
                "banip",
                "2001:db8:1:2::/64"
            ]
        );
        assert_eq!(
            strings(a.args(&block("2001:db8::5/128"))),
            [
                "-s",
                "/tmp/f2b.sock",
                "set",
                "exim-access",
                "banip",
                "2001:db8::5"
            ]
        );
    }

    #[test]
    fn a_network_is_banned_by_its_network_address() {
        assert_eq!(
            ban_target("198.51.100.77/24".parse().unwrap()),
            "198.51.100.0/24"
        );
        assert_eq!(
            ban_target("2001:db8:1:2:3::9/64".parse().unwrap()),
            "2001:db8:1:2::/64"
        );
        assert_eq!(ban_target("0.0.0.0/0".parse().unwrap()), "0.0.0.0/0");
    }

    #[test]
    fn what_the_client_said() {
        assert_eq!(
            first_line(b"Sorry but the jail 'nojail' does not exist\n").as_deref(),
            Some("Sorry but the jail 'nojail' does not exist")
        );
        assert_eq!(
            first_line(
                b"\n2026-12-02 17:11:36,654 fail2ban                [31883]: ERROR   Failed to access socket path: /x. Is fail2ban running?\n"
            )
            .as_deref(),
            Some("Failed to access socket path: /x. Is fail2ban running?")
        );
        assert_eq!(first_line(b"  \n\n"), None);
        assert_eq!(
            first_line(b"bad \x1b[31m\n").as_deref(),
            Some(r"bad \x1b[31m")
        );
    }

    #[test]
    fn preflight_looks_at_the_client_and_the_socket() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain");
        std::fs::write(&plain, "").unwrap();
        std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut c = config(r#"jail = "j""#).unwrap();
        c.client = plain.clone();
        c.socket = Some(plain.clone());
        let mut p = Vec::new();
        c.preflight(&mut p);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].ends_with("is not executable"), "{p:?}");
        assert!(p[1].ends_with("is a regular file, not a socket"), "{p:?}");

        c.client = dir.path().join("missing");
        c.socket = Some(dir.path().join("not-yet.sock"));
        let mut p = Vec::new();
        c.preflight(&mut p);
        assert_eq!(
            p.len(),
            1,
            "a socket fail2ban has not made yet is fine: {p:?}"
        );
        assert!(p[0].contains("does not exist"), "{p:?}");

        let sock = dir.path().join("f2b.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        c.client = "/bin/sh".into();
        c.socket = Some(sock);
        let mut p = Vec::new();
        c.preflight(&mut p);
        assert!(p.is_empty(), "{p:?}");
    }

    /// A client that does not answer is killed at the timeout, and one that fails says
    /// why: a real program in place of the client (a shell script).
    #[tokio::test]
    async fn a_client_that_hangs_is_killed_and_a_failure_says_why() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("client");
        let pidfile = dir.path().join("pid");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\necho $$ > {}\nif [ \"$3\" = banip ]; then exec sleep 30; fi\n\
                 echo \"Sorry but the jail '$2' does not exist\"; exit 255\n",
                pidfile.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut a = Fail2ban {
            client: script,
            socket: None,
            jail: "nojail".into(),
            timeout: Duration::from_millis(300),
        };
        let e = a.apply(&block("192.0.2.7/32"), 0).await.unwrap_err();
        assert_eq!(e, "fail2ban-client killed at its timeout (300 ms)");
        let pid = std::fs::read_to_string(&pidfile).unwrap();
        let proc = PathBuf::from(format!("/proc/{}", pid.trim()));
        // Killed, then reaped by tokio's orphan queue: gone, or a zombie for a moment.
        for _ in 0..200 {
            let state = std::fs::read_to_string(proc.join("stat")).unwrap_or_default();
            if state.is_empty() || state.contains(") Z ") {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let state = std::fs::read_to_string(proc.join("stat")).unwrap_or_default();
        assert!(
            state.is_empty() || state.contains(") Z "),
            "still running: {state}"
        );

        let unblock = Step::Unblock {
            net: "192.0.2.7/32".parse().unwrap(),
        };
        let e = a.apply(&unblock, 0).await.unwrap_err();
        assert_eq!(
            e,
            "fail2ban-client exited with 255: Sorry but the jail 'nojail' does not exist"
        );
    }
}
