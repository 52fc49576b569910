//! A network namespace of the test's own, for tests that change a firewall: nft run
//! inside it changes that namespace's ruleset only, never the host's.
//!
//! [`NetNs::new`] runs `ip netns add exim-access-test-<pid>-<n>` (with its loopback up);
//! dropping it runs `ip netns delete`, also when the test fails. [`NetNs::command`] makes
//! a command that runs inside it (`ip netns exec NAME ...`: ip switches namespace and
//! execs the program, so the child's pid is the program's). Unix sockets are files, so a
//! process inside is reached from outside through its socket paths as usual.

use std::ffi::OsStr;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;

use crate::process::{self, Finished};

/// Namespaces made by this process so far (for unique names).
static MADE: AtomicUsize = AtomicUsize::new(0);

/// How long one command inside may take.
const DEADLINE: Duration = Duration::from_secs(30);

/// A network namespace, deleted when dropped.
pub struct NetNs {
    name: String,
}

/// One element of an nftables set, as `nft -j list set` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetElement {
    /// The address (`192.0.2.7`) or network (`2001:db8::/64`).
    pub value: String,
    /// The timeout it was given, in seconds (0: none).
    pub timeout: u64,
    /// The seconds left until it expires (0: no timeout).
    pub expires: u64,
}

impl NetNs {
    /// Creates `exim-access-test-<pid>-<n>` with its loopback up.
    pub fn new() -> NetNs {
        let n = MADE.fetch_add(1, Ordering::Relaxed);
        let name = format!("exim-access-test-{}-{n}", std::process::id());
        let mut add = Command::new("ip");
        add.args(["netns", "add", &name]);
        process::run(add, b"", DEADLINE).assert_success();
        let ns = NetNs { name };
        ns.run("ip", &["link", "set", "lo", "up"], b"")
            .assert_success();
        ns
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A command running `program` inside the namespace; add its arguments.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Runs `program args...` inside with `input` on its standard input (30 s at most).
    pub fn run(&self, program: &str, args: &[&str], input: &[u8]) -> Finished {
        let mut cmd = self.command(program);
        cmd.args(args);
        process::run(cmd, input, DEADLINE)
    }

    /// `nft ARGS...` inside, which must succeed; its standard output.
    pub fn nft(&self, args: &[&str]) -> String {
        let out = self.run("nft", args, b"");
        out.assert_success();
        out.stdout_text()
    }

    /// `nft -f -` inside with `script`, which must succeed.
    pub fn nft_script(&self, script: &str) {
        self.run("nft", &["-f", "-"], script.as_bytes())
            .assert_success();
    }

    /// The elements of the set `FAMILY TABLE SET` (`nft -j list set`); `None` when the
    /// set (or its table) does not exist.
    pub fn set_elements(&self, set: &str) -> Option<Vec<SetElement>> {
        let mut args = vec!["-j", "list", "set"];
        args.extend(set.split_whitespace());
        let out = self.run("nft", &args, b"");
        if !out.status.success() {
            let err = out.stderr_text();
            assert!(
                err.contains("No such file or directory"),
                "{} failed otherwise than for a missing set: {err}",
                out.command
            );
            return None;
        }
        let doc: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{} printed no JSON ({e}): {}",
                out.command,
                out.stdout_text()
            )
        });
        let set = doc["nftables"]
            .as_array()
            .and_then(|items| items.iter().find_map(|i| i.get("set")))
            .unwrap_or_else(|| panic!("{} shows no set: {doc}", out.command));
        let elems = set["elem"].as_array().cloned().unwrap_or_default();
        Some(elems.iter().map(element).collect())
    }
}

/// One entry of a set's `elem` list: a bare value, or `{"elem": {"val": ..., "timeout":
/// ..., "expires": ...}}` for an element with a timeout; a value is an address or
/// `{"prefix": {"addr": ..., "len": ...}}`.
fn element(entry: &Value) -> SetElement {
    let (val, timeout, expires) = match entry.get("elem") {
        Some(e) => (
            &e["val"],
            e["timeout"].as_u64().unwrap_or(0),
            e["expires"].as_u64().unwrap_or(0),
        ),
        None => (entry, 0, 0),
    };
    let value = match (val.as_str(), val.get("prefix")) {
        (Some(addr), _) => addr.to_string(),
        (None, Some(p)) => format!("{}/{}", p["addr"].as_str().unwrap_or("?"), p["len"]),
        _ => panic!("an nft set element of an unknown shape: {entry}"),
    };
    SetElement {
        value,
        timeout,
        expires,
    }
}

impl Default for NetNs {
    fn default() -> NetNs {
        NetNs::new()
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let mut del = Command::new("ip");
        del.args(["netns", "delete", &self.name]);
        let out = process::run(del, b"", DEADLINE);
        if !out.status.success() {
            eprintln!("{} failed: {}", out.command, out.stderr_text());
        }
    }
}
