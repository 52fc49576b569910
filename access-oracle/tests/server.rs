//! The oracle's sockets, end to end over real Unix sockets: framing, the connection
//! rules of the protocol, socket permissions, the connection cap, roles on the admin
//! socket, reload and shutdown of the real binary.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use access_oracle::admin::views;
use access_oracle::config::{Config, Overrides, RawConfig};
use access_oracle::engine::Engine;
use access_oracle::server::{self, ConfigSource, Running};
use tempfile::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_access-oracle");

/// A deadline for things that must happen soon; generous, never a performance bound.
const SOON: Duration = Duration::from_secs(10);

/// The account's failed logins in the rule's window, as `ctl account` shows them.
fn failed_logins(engine: &Engine, user: &str) -> u64 {
    views::account(engine, user, jiff::Timestamp::now())
        .live
        .map_or(0, |l| l.failed_logins.count)
}

struct InProcess {
    dir: TempDir,
    running: Running,
}

impl InProcess {
    async fn start(edit: impl FnOnce(&mut RawConfig)) -> InProcess {
        let dir = tempfile::tempdir().unwrap();
        let mut raw = RawConfig::default();
        Overrides {
            exim_socket: Some(dir.path().join("exim.sock")),
            admin_socket: Some(dir.path().join("admin.sock")),
            state_dir: Some(dir.path().join("state")),
        }
        .apply(&mut raw);
        raw.server.shutdown_grace_secs = 1;
        edit(&mut raw);
        let config = Config::from_raw(raw).unwrap();
        let running = server::start(
            config,
            ConfigSource {
                path: None,
                overrides: Overrides::default(),
            },
        )
        .await
        .unwrap();
        InProcess { dir, running }
    }

    fn exim_socket(&self) -> PathBuf {
        self.dir.path().join("exim.sock")
    }

    fn connect(&self) -> UnixStream {
        let s = UnixStream::connect(self.exim_socket()).unwrap();
        s.set_read_timeout(Some(SOON)).unwrap();
        s
    }
}

/// Runs blocking client code off the runtime that serves it.
async fn client<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

fn read_line(reader: &mut impl BufRead) -> String {
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    line
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newline_terminated_requests_share_one_connection() {
    let o = InProcess::start(|_| {}).await;
    let s = o.connect();
    client(move || {
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut w = s;
        w.write_all(b"ping\n").unwrap();
        assert_eq!(read_line(&mut r), "pong\n");
        w.write_all(b"auth user=alice ip=192.0.2.1 result=ok\n")
            .unwrap();
        assert_eq!(read_line(&mut r), "accept\n");
        // Pipelined: three requests in one write, three replies in order.
        w.write_all(b"ping\nfrob\r\nconnect ip=2001:db8::1\n")
            .unwrap();
        assert_eq!(read_line(&mut r), "pong\n");
        assert_eq!(read_line(&mut r), "error unknown verb \"frob\"\n");
        assert_eq!(read_line(&mut r), "accept\n");
    })
    .await;
    o.running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_ended_by_eof_is_answered_then_closed() {
    let o = InProcess::start(|_| {}).await;
    let s = o.connect();
    let all = client(move || {
        let mut s = s;
        s.write_all(b"rcpt user=bob ip=192.0.2.1 rcpt=\"a b@example.org\"")
            .unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut all = String::new();
        s.read_to_string(&mut all).unwrap();
        all
    })
    .await;
    // read_to_string returning at all means the oracle closed the connection.
    assert_eq!(all, "accept\n");
    o.running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_lines_get_errors_and_the_connection_goes_on() {
    let o = InProcess::start(|_| {}).await;
    let s = o.connect();
    client(move || {
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut w = s;
        let mut huge = b"auth user=".to_vec();
        huge.extend(std::iter::repeat_n(b'x', 20_000));
        huge.push(b'\n');
        w.write_all(&huge).unwrap();
        assert_eq!(
            read_line(&mut r),
            "error request line too long (limit 8192 bytes)\n"
        );
        for (bad, want) in [
            (
                &b"auth user=a\n"[..],
                "error auth: missing required key ip\n",
            ),
            (
                b"auth user=a ip=x result=ok\n",
                "error auth: invalid ip: not an ip address: \"x\"\n",
            ),
            (
                b"auth user=\"open ip=1.2.3.4\n",
                "error unterminated quoted value of user\n",
            ),
            // A stray byte that is not UTF-8 is no key=value (a value's bytes may be
            // anything: `sender=b\xffob` is read, not refused).
            (
                b"mail user=a ip=192.0.2.1 \xff\n",
                "error expected key=value at byte 25\n",
            ),
            (b"\n", "error empty request\n"),
        ] {
            w.write_all(bad).unwrap();
            assert_eq!(read_line(&mut r), want);
        }
        w.write_all(b"ping\n").unwrap();
        assert_eq!(read_line(&mut r), "pong\n");
    })
    .await;
    // The daemon keeps serving new connections too.
    let s = o.connect();
    let reply = client(move || {
        let mut r = BufReader::new(s.try_clone().unwrap());
        (&s).write_all(b"ping\n").unwrap();
        read_line(&mut r)
    })
    .await;
    assert_eq!(reply, "pong\n");
    let status = o.running.engine.stats.snapshot();
    assert_eq!(status.malformed, 6);
    o.running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_get_the_configured_mode_and_group() {
    let o = InProcess::start(|raw| {
        raw.server.exim_socket_mode = access_oracle::config::raw::RawMode::Text("0660".into());
        raw.server.exim_socket_group = Some("daemon".into());
    })
    .await;
    let meta = std::fs::metadata(o.exim_socket()).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    let daemon = nix::unistd::Group::from_name("daemon").unwrap().unwrap();
    assert_eq!(meta.gid(), daemon.gid.as_raw());
    let admin = std::fs::metadata(o.dir.path().join("admin.sock")).unwrap();
    assert_eq!(admin.permissions().mode() & 0o777, 0o600);
    let path = o.exim_socket();
    o.running.stop().await.unwrap();
    assert!(!path.exists(), "a clean stop removes the sockets");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_socket_is_not_taken_over_and_a_stale_one_is_replaced() {
    let o = InProcess::start(|_| {}).await;
    let dir = o.dir.path().to_path_buf();
    let mut raw = RawConfig::default();
    Overrides {
        exim_socket: Some(dir.join("exim.sock")),
        admin_socket: Some(dir.join("admin2.sock")),
        state_dir: Some(dir.join("state2")),
    }
    .apply(&mut raw);
    let second = server::start(
        Config::from_raw(raw).unwrap(),
        ConfigSource {
            path: None,
            overrides: Overrides::default(),
        },
    )
    .await;
    let err = second
        .err()
        .expect("a second oracle on the same socket is refused");
    assert!(
        err.to_string()
            .contains("in use by another running process"),
        "{err}"
    );
    o.running.stop().await.unwrap();

    // A socket file nobody listens on (a crashed oracle) is replaced.
    let stale = dir.join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let o = InProcess::start(|raw| raw.server.exim_socket = stale.clone()).await;
    let s = UnixStream::connect(&stale).unwrap();
    let reply = client(move || {
        (&s).write_all(b"ping\n").unwrap();
        read_line(&mut BufReader::new(s))
    })
    .await;
    assert_eq!(reply, "pong\n");
    o.running.stop().await.unwrap();
}

/// A listener counter of the in-process oracle.
fn exim_counter(o: &InProcess, name: &str) -> u64 {
    o.running
        .listeners
        .exim
        .snapshot()
        .into_iter()
        .find(|(n, _)| *n == name)
        .unwrap()
        .1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_connection_cap_the_idlest_connection_makes_room() {
    let o = InProcess::start(|raw| raw.server.max_connections = 2).await;
    let ping = |s: &UnixStream| {
        let mut w = s;
        w.write_all(b"ping\n").unwrap();
        read_line(&mut BufReader::new(s.try_clone().unwrap()))
    };
    let (a, b) = (o.connect(), o.connect());
    let path = o.exim_socket();
    let (a, b) = client(move || {
        assert_eq!(ping(&a), "pong\n");
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(ping(&b), "pong\n");
        // A third is served at once: `a`, idle the longest, is closed to make room.
        let c = UnixStream::connect(&path).unwrap();
        c.set_read_timeout(Some(SOON)).unwrap();
        assert_eq!(ping(&c), "pong\n");
        let mut rest = Vec::new();
        assert_eq!((&a).read_to_end(&mut rest).unwrap(), 0, "a was closed");
        (a, b)
    })
    .await;
    assert_eq!(exim_counter(&o, "shed_idle"), 1);
    drop((a, b));
    o.running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_connection_cap_with_none_idle_the_newcomer_gets_defer() {
    let o = InProcess::start(|raw| raw.server.max_connections = 1).await;
    let busy = o.connect();
    let path = o.exim_socket();
    let reply = client(move || {
        // Half a line: busy, not idle.
        (&busy).write_all(b"auth user=a").unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let c = UnixStream::connect(&path).unwrap();
        c.set_read_timeout(Some(SOON)).unwrap();
        (&c).write_all(b"ping\n").unwrap();
        let mut all = String::new();
        let _ = (&c).read_to_string(&mut all);
        drop(busy);
        all
    })
    .await;
    assert_eq!(
        reply.as_bytes(),
        access_oracle::server::exim::BUSY_REPLY,
        "answered defer, then closed"
    );
    assert_eq!(exim_counter(&o, "refused_full"), 1);
    o.running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_lines_and_idle_connections_are_timed_out() {
    let o = InProcess::start(|raw| {
        raw.server.exim_request_timeout_ms = 100;
        raw.server.exim_idle_timeout_secs = 1;
    })
    .await;
    let (half, idle) = (o.connect(), o.connect());
    let (half_reply, idle_rest) = client(move || {
        // A used connection is idle from its last answer.
        (&idle).write_all(b"ping\n").unwrap();
        let mut reader = BufReader::new(&idle);
        assert_eq!(read_line(&mut reader), "pong\n");
        (&half).write_all(b"ping").unwrap();
        let mut half_reply = String::new();
        let _ = (&half).read_to_string(&mut half_reply);
        let mut idle_rest = Vec::new();
        let n = reader.read_to_end(&mut idle_rest).unwrap();
        assert_eq!(n, 0);
        (half_reply, idle_rest)
    })
    .await;
    assert_eq!(
        half_reply,
        "error request line not complete within 100 ms\n"
    );
    assert!(idle_rest.is_empty(), "closed after its idle second");
    assert_eq!(exim_counter(&o, "request_timeouts"), 1);
    assert_eq!(exim_counter(&o, "idle_timeouts"), 1);
    o.running.stop().await.unwrap();
}

/// The real binary, as a daemon.
struct Daemon {
    dir: TempDir,
    child: Child,
}

impl Daemon {
    fn start(config: &str) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let conf = dir.path().join("oracle.toml");
        std::fs::write(&conf, config).unwrap();
        let child = Command::new(BIN)
            .arg("serve")
            .arg("--config")
            .arg(&conf)
            .arg("--socket")
            .arg(dir.path().join("exim.sock"))
            .arg("--admin-socket")
            .arg(dir.path().join("admin.sock"))
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .stderr(std::fs::File::create(dir.path().join("oracle.log")).unwrap())
            .spawn()
            .unwrap();
        let d = Daemon { dir, child };
        let until = Instant::now() + SOON;
        while d.request("ping").as_deref() != Some("pong") {
            assert!(Instant::now() < until, "the oracle did not come up");
            std::thread::sleep(Duration::from_millis(20));
        }
        d
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Waits (bounded) until the daemon's log holds `text` `times` times.
    fn wait_for_log(&self, text: &str, times: usize) {
        let until = Instant::now() + SOON;
        loop {
            let log = std::fs::read_to_string(self.path("oracle.log")).unwrap_or_default();
            if log.matches(text).count() >= times {
                return;
            }
            assert!(Instant::now() < until, "no {text:?} in the log:\n{log}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn request(&self, line: &str) -> Option<String> {
        let s = UnixStream::connect(self.path("exim.sock")).ok()?;
        s.set_read_timeout(Some(SOON)).ok()?;
        (&s).write_all(format!("{line}\n").as_bytes()).ok()?;
        let mut reply = String::new();
        BufReader::new(s).read_line(&mut reply).ok()?;
        Some(reply.trim_end().to_string())
    }

    fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), sig).unwrap();
    }

    fn ctl(&self, uid: Option<u32>, args: &[&str]) -> std::process::Output {
        let mut cmd = Command::new(BIN);
        cmd.arg("ctl")
            .arg("--socket")
            .arg(self.path("admin.sock"))
            .args(args);
        if let Some(uid) = uid {
            cmd.uid(uid).gid(uid);
        }
        cmd.output().unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn sigterm_stops_cleanly_and_removes_the_sockets() {
    let mut d = Daemon::start("");
    d.signal(nix::sys::signal::Signal::SIGTERM);
    let until = Instant::now() + SOON;
    let status = loop {
        if let Some(status) = d.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < until, "SIGTERM did not stop the oracle");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
    assert!(!d.path("exim.sock").exists());
    assert!(!d.path("admin.sock").exists());
}

#[test]
fn sighup_reloads_the_rules_and_a_bad_file_keeps_them() {
    let d = Daemon::start("[rules.failed_logins_account]\nthreshold = 5\n");
    std::fs::write(
        d.path("oracle.toml"),
        "[rules.failed_logins_account]\nthreshold = 2\n",
    )
    .unwrap();
    d.signal(nix::sys::signal::Signal::SIGHUP);
    // The reload is asynchronous: probe with a fresh account until the new threshold
    // shows (two failures hold it), bounded.
    let until = Instant::now() + SOON;
    let mut n = 0;
    loop {
        n += 1;
        let user = format!("probe{n}");
        for i in 0..2 {
            d.request(&format!(
                "auth user={user} ip=192.0.2.{n} result=fail pwhash={i}"
            ));
        }
        if d.request(&format!("auth user={user} ip=192.0.2.{n} result=ok"))
            .is_some_and(|r| r.starts_with("defer"))
        {
            break;
        }
        assert!(Instant::now() < until, "the reload did not take effect");
        std::thread::sleep(Duration::from_millis(20));
    }
    // A file with problems is refused; the running rules stay.
    std::fs::write(
        d.path("oracle.toml"),
        "[rules.failed_logins_account]\nthreshold = 0\n",
    )
    .unwrap();
    d.signal(nix::sys::signal::Signal::SIGHUP);
    // Wait for the refusal itself (a fixed pause passed whether or not it happened).
    d.wait_for_log("reload failed; keeping the running configuration", 1);
    for i in 0..2 {
        d.request(&format!(
            "auth user=after ip=198.51.100.1 result=fail pwhash={i}"
        ));
    }
    let reply = d
        .request("auth user=after ip=198.51.100.1 result=ok")
        .unwrap();
    assert!(
        reply.starts_with("defer"),
        "threshold 2 still in force: {reply}"
    );
}

#[test]
fn admin_roles_come_from_the_peer_credentials() {
    let nobody = nix::unistd::User::from_name("nobody")
        .unwrap()
        .unwrap()
        .uid
        .as_raw();
    let d = Daemon::start(&format!(
        // The socket's group is the auditor's (ctl runs with gid = uid): a mode every
        // local user could connect with is refused.
        "[server]\nadmin_socket_mode = \"0660\"\nadmin_socket_group = \"{nobody}\"\n[admin]\nauditor_users = [\"{nobody}\"]\n"
    ));
    for i in 0..5 {
        d.request(&format!(
            "auth user=carol ip=203.0.113.5 result=fail pwhash={i}"
        ));
    }
    // An auditor may read...
    let out = d.ctl(Some(nobody), &["--json", "account", "carol"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let account: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(account["hold"]["rule"], "failed_logins_account");
    // ...but not release.
    let out = d.ctl(Some(nobody), &["release", "carol"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("permission denied"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Root may.
    let out = d.ctl(None, &["release", "carol"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("released carol"));
    assert_eq!(
        d.request("auth user=carol ip=203.0.113.5 result=ok")
            .unwrap(),
        "accept"
    );
    // Someone with no role may not even read.
    let daemon_uid = nix::unistd::User::from_name("daemon")
        .unwrap()
        .unwrap()
        .uid
        .as_raw();
    // In the socket's group (so the socket's mode lets them in), with no role.
    let out = Command::new(BIN)
        .arg("ctl")
        .arg("--socket")
        .arg(d.path("admin.sock"))
        .arg("status")
        .uid(daemon_uid)
        .gid(nobody)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let status = d.ctl(None, &["--json", "status"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["counters"]["admin_refused"], 2);
}

#[test]
fn check_config_lists_every_problem_and_accepts_the_shipped_example() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[server]\nexim_socket = \"rel.sock\"\nmax_connections = 0\n[rules.recipient_ceiling]\nlimit = 0\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("3 problem(s)"), "{err}");
    for want in [
        "exim_socket must be an absolute path",
        "max_connections",
        "limit must be between",
    ] {
        assert!(err.contains(want), "missing {want:?} in {err}");
    }
    let example =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../exim-config/oracle/access-oracle.toml");
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(&example)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The shipped example is exactly the embedded defaults.
    let text = std::fs::read_to_string(&example).unwrap();
    assert_eq!(
        toml::from_str::<RawConfig>(&text).unwrap(),
        RawConfig::default()
    );
}

/// An Exim mainlog line stamped now (Exim writes local time).
fn exim_line(text: &str) -> String {
    format!(
        "{} {text}\n",
        jiff::Zoned::now().strftime("%Y-%m-%d %H:%M:%S")
    )
}

fn append(path: &Path, text: &str) {
    use std::fs::OpenOptions;
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
}

/// Waits (bounded) until `check` holds.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let until = Instant::now() + SOON;
    while !check() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followed_logs_feed_the_same_rules_across_rotation_and_restart() {
    let logs = tempfile::tempdir().unwrap();
    let mainlog = logs.path().join("mainlog");
    let source = |raw: &mut RawConfig| {
        raw.sources = vec![access_oracle::sources::SourceConfig {
            path: mainlog.clone(),
            format: access_oracle::sources::Format::Exim,
            start_at: access_oracle::sources::tail::StartAt::Beginning,
            poll_secs: 1,
        }];
    };
    // The file does not exist yet when the oracle starts.
    let o = InProcess::start(source).await;
    let fail = |n: u32| {
        exim_line(&format!(
            "plain_server authenticator failed for (client.example) [203.0.113.7]:4{n:04}: 535 Incorrect authentication data (set_id=alice)"
        ))
    };
    for n in 0..3 {
        append(&mainlog, &fail(n));
    }
    let engine = o.running.engine.clone();
    eventually("three failures", || failed_logins(&engine, "alice") == 3).await;
    // Rotation: the rest goes to a new file.
    std::fs::rename(&mainlog, logs.path().join("mainlog.1")).unwrap();
    append(&mainlog, &fail(3));
    eventually("the failure after rotation", || {
        failed_logins(&engine, "alice") == 4
    })
    .await;
    append(
        &mainlog,
        "2026-11-28 03:21:17 plain_server authenticator failed for garbage\n",
    );
    // Restart: the position was saved; the fifth failure, written while the oracle was
    // down, is read once and trips the hold.
    let state = o.dir.path().join("state");
    let dir = o.dir;
    o.running.stop().await.unwrap();
    append(&mainlog, &fail(4));
    let mut raw = RawConfig::default();
    Overrides {
        exim_socket: Some(dir.path().join("exim.sock")),
        admin_socket: Some(dir.path().join("admin.sock")),
        state_dir: Some(state.clone()),
    }
    .apply(&mut raw);
    source(&mut raw);
    let running = server::start(
        Config::from_raw(raw).unwrap(),
        ConfigSource {
            path: None,
            overrides: Overrides::default(),
        },
    )
    .await
    .unwrap();
    let engine = running.engine.clone();
    eventually("the fifth failure", || failed_logins(&engine, "alice") == 5).await;
    // Counted once: the new process read only the fifth line (the first four came back
    // with the snapshot's window), and the fifth holds the account.
    assert_eq!(engine.stats.snapshot().source_lines, 1);
    let report = views::account(&engine, "alice", jiff::Timestamp::now());
    assert_eq!(
        report.hold.as_ref().map(|h| h.rule.as_str()),
        Some("failed_logins_account"),
        "{report:#?}"
    );
    let dead = std::fs::read_to_string(state.join("dead-letters.log")).unwrap();
    assert!(dead.contains("authenticator failed for garbage"), "{dead}");
    let positions = std::fs::read_to_string(state.join("positions.json")).unwrap();
    assert!(positions.contains("mainlog"), "{positions}");
    running.stop().await.unwrap();
}
