//! The access oracle as a child process, and stand-ins for an oracle that is not there.
//!
//! [`Oracle::start`] writes a TOML config into the test's [`World`], runs
//! `access-oracle serve --config F --state-dir D`, and returns once the Exim socket
//! answers `ping` with `pong` (a bounded poll, not a fixed sleep). Drop stops it
//! (SIGTERM, then SIGKILL after a grace period) and, when the test is failing, prints its
//! log. Around it: the alerts file, `access-oracle ctl`, and two ways for an oracle to be
//! unavailable: a [`stale_socket`] (a socket file nobody listens on: a crashed oracle)
//! and a [`SilentOracle`] (accepts connections, never answers: a hung oracle).

use std::fs;
use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::paths;
use crate::process::{self, Finished};
use crate::world::{EXIM_USER, World};

/// How long the oracle may take to start answering `ping`.
const START_DEADLINE: Duration = Duration::from_secs(20);

/// How long a SIGTERMed oracle may take to exit before it is killed (its own grace
/// for open connections is set to 1 s in the test config).
const STOP_GRACE: Duration = Duration::from_secs(10);

/// The API key of [`Oracle::start_with_policy`] (a test may present another).
pub const POLICY_API_KEY: &str = "e2e-policy-key-5f0c2a9d41b7e386";

/// The URL path of the policy endpoint in the tests (the shipped default).
pub const POLICY_PATH: &str = "/policy";

/// A running `access-oracle serve`.
pub struct Oracle {
    child: Option<Child>,
    config: PathBuf,
    exim_socket: PathBuf,
    admin_socket: PathBuf,
    state_dir: PathBuf,
    log: PathBuf,
    policy_port: Option<u16>,
    /// The network namespace it runs in (`ip netns exec NAME`), if not the test's own.
    netns: Option<String>,
    /// Variables added to its environment (and kept for restarts).
    env: Vec<(String, String)>,
}

impl Oracle {
    /// Starts an oracle on the default rules (DESIGN section 5).
    pub fn start(world: &World) -> Oracle {
        Oracle::start_with(world, "")
    }

    /// Starts an oracle whose config file has `extra_toml` appended after the `[server]`
    /// table (e.g. a `[rules.recipient_ceiling]` table).
    ///
    /// The Exim socket is `<world>/oracle/exim.sock`, mode 0660, group `Debian-exim`
    /// (the Exim daemon's SMTP processes run as that user); the admin socket is
    /// `<world>/oracle/admin.sock`; SIGTERM waits at most 1 s for open connections.
    pub fn start_with(world: &World, extra_toml: &str) -> Oracle {
        let mut oracle = Oracle::configure(world, extra_toml);
        if let Err(why) = oracle.spawn() {
            panic!("{why}");
        }
        oracle
    }

    /// Starts an oracle as [`Oracle::start_with`] does, inside the network namespace
    /// `netns` (`ip netns exec NETNS access-oracle serve ...`, e.g. a
    /// [`crate::netns::NetNs`]): what it does to a firewall stays in that namespace. Its
    /// sockets are files, reached from outside as usual; restarts stay inside.
    pub fn start_in_netns(world: &World, netns: &str, extra_toml: &str) -> Oracle {
        let mut oracle = Oracle::configure(world, extra_toml);
        oracle.netns = Some(netns.to_string());
        if let Err(why) = oracle.spawn() {
            panic!("{why}");
        }
        oracle
    }

    /// Starts an oracle as [`Oracle::start_with`] does, with `env` added to its
    /// environment (e.g. `LD_PRELOAD` of libfaketime and its settings, to step its wall
    /// clock); restarts keep them.
    pub fn start_with_env(world: &World, extra_toml: &str, env: &[(&str, &str)]) -> Oracle {
        let mut oracle = Oracle::configure(world, extra_toml);
        oracle.env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if let Err(why) = oracle.spawn() {
            panic!("{why}");
        }
        oracle
    }

    /// Starts an oracle with its Dovecot policy endpoint on a free loopback port: a
    /// `[policy]` table with `listen`, the key [`POLICY_API_KEY`] in a 0600 file and
    /// `policy_toml` (more `[policy]` settings), then `extra_toml` as in
    /// [`Oracle::start_with`].
    pub fn start_with_policy(world: &World, policy_toml: &str, extra_toml: &str) -> Oracle {
        let key_file = world.path("policy.key");
        fs::write(&key_file, format!("{POLICY_API_KEY}\n")).expect("write the policy key");
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&key_file, fs::Permissions::from_mode(0o600))
                .expect("chmod the policy key");
        }
        let mut last_failure = String::new();
        // A port found free may be taken by a parallel test before the oracle binds it.
        for _ in 0..5 {
            let port = crate::exim::free_port();
            let extra = format!(
                "[policy]\n\
                 listen = \"127.0.0.1:{port}\"\n\
                 api_key_file = {}\n\
                 {policy_toml}\n\
                 {extra_toml}\n",
                toml_string(&key_file),
            );
            let mut oracle = Oracle::configure(world, &extra);
            oracle.policy_port = Some(port);
            match oracle.spawn() {
                Ok(()) => return oracle,
                Err(why) => last_failure = why,
            }
            let _ = fs::remove_file(&oracle.exim_socket);
            let _ = fs::remove_file(&oracle.admin_socket);
        }
        panic!("the oracle with a policy endpoint did not start:\n{last_failure}");
    }

    /// Writes the config file; the process is not started yet.
    fn configure(world: &World, extra_toml: &str) -> Oracle {
        let exim_socket = world.oracle_dir().join("exim.sock");
        let admin_socket = world.oracle_dir().join("admin.sock");
        let config = world.path("oracle.toml");
        let text = format!(
            "[server]\n\
             exim_socket = {}\n\
             exim_socket_mode = \"0660\"\n\
             exim_socket_group = \"{EXIM_USER}\"\n\
             admin_socket = {}\n\
             shutdown_grace_secs = 1\n\
             {extra_toml}\n",
            toml_string(&exim_socket),
            toml_string(&admin_socket),
        );
        fs::write(&config, text).expect("write the oracle config");
        Oracle {
            child: None,
            config,
            exim_socket,
            admin_socket,
            state_dir: world.state_dir(),
            log: world.path("oracle.log"),
            policy_port: None,
            netns: None,
            env: Vec::new(),
        }
    }

    /// Starts the process and waits until it answers `ping`; `Err` with its log when it
    /// exits first.
    fn spawn(&mut self) -> Result<(), String> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open the oracle log");
        let mut cmd = match &self.netns {
            Some(ns) => {
                // ip execs the oracle after switching: the child is the oracle itself.
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(paths::oracle_bin());
                c
            }
            None => Command::new(paths::oracle_bin()),
        };
        cmd.arg("serve")
            .arg("--config")
            .arg(&self.config)
            .arg("--state-dir")
            .arg(&self.state_dir)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log);
        let command = process::describe(&cmd);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {command}: {e}"));
        self.child = Some(child);

        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if let Some(status) = process::reap_if_exited(&mut self.child) {
                return Err(format!(
                    "{command} exited with {status} before answering ping; its log:\n{}",
                    self.log_text()
                ));
            }
            if self.exim_socket.exists() && self.ping() {
                return Ok(());
            }
            assert!(
                Instant::now() < deadline,
                "{command} did not answer ping on {} within {START_DEADLINE:?}; its log:\n{}",
                self.exim_socket.display(),
                self.log_text()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// The policy endpoint's URL for Dovecot's `auth_policy_server_url`; panics unless
    /// started by [`Oracle::start_with_policy`].
    pub fn policy_url(&self) -> String {
        format!("http://127.0.0.1:{}{POLICY_PATH}", self.policy_port())
    }

    /// The policy endpoint's port.
    pub fn policy_port(&self) -> u16 {
        self.policy_port
            .expect("the oracle was started without a policy endpoint")
    }

    /// The Exim socket (`ACCESS_SOCKET`).
    pub fn exim_socket(&self) -> &Path {
        &self.exim_socket
    }

    /// The admin socket (`ctl --socket`).
    pub fn admin_socket(&self) -> &Path {
        &self.admin_socket
    }

    /// The oracle's stdout and stderr so far.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends one newline-terminated request on a fresh connection and returns the reply
    /// line without its newline; `None` when the oracle cannot be reached or does not
    /// answer within 5 s.
    pub fn request(&self, line: &str) -> Option<String> {
        request(&self.exim_socket, line, Duration::from_secs(5))
    }

    /// Whether the oracle answers `ping` with `pong`.
    pub fn ping(&self) -> bool {
        self.request("ping").as_deref() == Some("pong")
    }

    /// Whether the oracle process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Stops the oracle and starts it again on the same config and state directory.
    pub fn restart(&mut self) {
        self.stop();
        if let Err(e) = self.spawn() {
            panic!("restarting the oracle: {e}");
        }
    }

    /// Stops the oracle (SIGTERM, SIGKILL after a grace period); a no-op when stopped.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = Pid::from_raw(child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let (_, killed) = process::wait_until(&mut child, Instant::now() + STOP_GRACE);
        if killed {
            eprintln!("access-oracle ignored SIGTERM for {STOP_GRACE:?} and was killed");
        }
    }

    /// Kills the oracle with SIGKILL, as a crash or `kill -9` would (nothing of its own
    /// shutdown runs), and reaps it; a no-op when stopped. [`Oracle::restart`] starts it
    /// again.
    pub fn kill(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = child.kill();
        let _ = child.wait();
    }

    /// The alerts written so far: one JSON object per complete line of
    /// `<state-dir>/alerts.jsonl` (an empty list when the file does not exist yet).
    pub fn alerts(&self) -> Vec<serde_json::Value> {
        let text = fs::read_to_string(self.state_dir.join("alerts.jsonl")).unwrap_or_default();
        // Only complete lines: the oracle may be writing the next one right now.
        let complete = text.rfind('\n').map_or("", |end| &text[..end]);
        complete
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("alerts.jsonl line is not JSON ({e}): {l}"))
            })
            .collect()
    }

    /// Waits (bounded) until at least `count` alerts are written, then returns them all.
    pub fn wait_for_alerts(&self, count: usize, deadline: Duration) -> Vec<serde_json::Value> {
        let until = Instant::now() + deadline;
        loop {
            let alerts = self.alerts();
            if alerts.len() >= count || Instant::now() >= until {
                return alerts;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs `access-oracle ctl --socket <admin socket> <args...>`.
    pub fn ctl(&self, args: &[&str]) -> Finished {
        let mut cmd = Command::new(paths::oracle_bin());
        cmd.arg("ctl")
            .arg("--socket")
            .arg(&self.admin_socket)
            .args(args);
        process::run(cmd, b"", Duration::from_secs(30))
    }

    /// Runs `access-oracle ctl --socket <admin socket> --json <args...>`, checks it
    /// succeeded, and parses its output.
    pub fn ctl_json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.ctl(&all);
        out.assert_success();
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{} printed no JSON ({e}):\n{}",
                out.command,
                out.stdout_text()
            )
        })
    }
}

impl Drop for Oracle {
    fn drop(&mut self) {
        self.stop();
        if thread::panicking() {
            eprintln!("--- access-oracle log ---\n{}", self.log_text());
        }
    }
}

/// A TOML basic string holding `path`.
fn toml_string(path: &Path) -> String {
    serde_json::to_string(&path.to_string_lossy()).expect("a string serializes")
}

/// One request on a fresh connection to `socket`; the reply line without its newline.
pub fn request(socket: &Path, line: &str, timeout: Duration) -> Option<String> {
    let mut stream = UnixStream::connect(socket).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_write_timeout(Some(timeout)).ok()?;
    stream.write_all(format!("{line}\n").as_bytes()).ok()?;
    let mut reply = String::new();
    BufReader::new(stream).read_line(&mut reply).ok()?;
    if !reply.ends_with('\n') {
        return None;
    }
    Some(reply.trim_end_matches('\n').to_string())
}

/// Leaves a socket file at `path` that nobody listens on, as a crashed oracle does:
/// connecting to it fails with "connection refused".
pub fn stale_socket(path: &Path) {
    let listener = UnixListener::bind(path).expect("bind a Unix socket");
    drop(listener);
    assert!(
        path.exists(),
        "the socket file stays after its listener closes"
    );
}

/// An "oracle" that accepts connections and reads requests but never answers: a hung
/// oracle. It holds every connection open until dropped.
pub struct SilentOracle {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<usize>>,
}

impl SilentOracle {
    /// Listens on `path` (mode 0666) until dropped.
    pub fn start(path: &Path) -> SilentOracle {
        let listener = UnixListener::bind(path).expect("bind the silent listener");
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(path, fs::Permissions::from_mode(0o666))
                .expect("chmod the silent listener");
        }
        listener
            .set_nonblocking(true)
            .expect("make the listener non-blocking");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            let mut held = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => held.push(stream),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(5));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
            held.len()
        });
        SilentOracle {
            path: path.to_path_buf(),
            stop,
            thread: Some(thread),
        }
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops listening and returns how many connections it accepted.
    pub fn finish(mut self) -> usize {
        self.shutdown()
    }

    fn shutdown(&mut self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .map(|t| t.join().unwrap_or(0))
            .unwrap_or(0)
    }
}

impl Drop for SilentOracle {
    fn drop(&mut self) {
        self.shutdown();
        let _ = fs::remove_file(&self.path);
    }
}

/// `access-oracle audit <args> --state-dir <the world's state>`, run to its end (30 s at
/// most).
pub fn audit(world: &World, args: &[&str]) -> Finished {
    let mut cmd = Command::new(paths::oracle_bin());
    cmd.arg("audit")
        .args(args)
        .arg("--state-dir")
        .arg(world.state_dir());
    process::run(cmd, b"", Duration::from_secs(30))
}
