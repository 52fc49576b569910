//! `ctl` against the real daemon: it finds the admin socket from the config it is given,
//! says which socket it tried when it cannot connect, and its tables fit 80 columns.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use tempfile::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_access-oracle");

/// A deadline for things that must happen soon; generous, never a performance bound.
const SOON: Duration = Duration::from_secs(10);

/// A long account name and an IPv6 source, as the tables must fit them.
const LONG: &str =
    "firstname.middlename.lastname+newsletters@faculty-of-engineering.example-university.edu";
const V6: &str = "2001:db8:85a3:1234:5678:8a2e:370:7334";

/// `serve --config FILE`, the sockets and state only in that file.
struct Daemon {
    dir: TempDir,
    config: PathBuf,
    child: Child,
}

impl Daemon {
    fn start() -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("oracle.toml");
        let p = |name: &str| dir.path().join(name).display().to_string();
        std::fs::write(
            &config,
            format!(
                "[server]\nexim_socket = \"{}\"\nadmin_socket = \"{}\"\nstate_dir = \"{}\"\n",
                p("exim.sock"),
                p("admin-from-config.sock"),
                p("state"),
            ),
        )
        .unwrap();
        let child = Command::new(BIN)
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .stderr(std::fs::File::create(dir.path().join("oracle.log")).unwrap())
            .spawn()
            .unwrap();
        let d = Daemon { dir, config, child };
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

    fn request(&self, line: &str) -> Option<String> {
        let s = UnixStream::connect(self.path("exim.sock")).ok()?;
        s.set_read_timeout(Some(SOON)).ok()?;
        (&s).write_all(format!("{line}\n").as_bytes()).ok()?;
        let mut reply = String::new();
        BufReader::new(s).read_line(&mut reply).ok()?;
        Some(reply.trim_end().to_string())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ctl(args: &[&str]) -> Output {
    Command::new(BIN).arg("ctl").args(args).output().unwrap()
}

fn text(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn assert_fits(what: &str, out: &str) {
    for line in out.lines() {
        let n = line.chars().count();
        assert!(n <= 80, "{what}: {n} columns:\n{line}\n{out}");
    }
}

#[test]
fn ctl_finds_the_admin_socket_in_the_config_it_is_given() {
    let d = Daemon::start();
    let config = d.config.to_str().unwrap();
    let out = ctl(&["--config", config, "--json", "status"]);
    let status: serde_json::Value = serde_json::from_str(&text(&out)).unwrap();
    assert_eq!(
        status["exim_socket"],
        d.path("exim.sock").display().to_string()
    );
    // --socket wins over --config.
    let elsewhere = d.path("nothing-here.sock");
    let out = ctl(&[
        "--config",
        config,
        "--socket",
        elsewhere.to_str().unwrap(),
        "status",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("nothing-here.sock (from --socket)"),
        "the error names the socket and where it came from: {err}"
    );
}

#[test]
fn a_failed_connection_names_the_socket_and_the_config_it_came_from() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("oracle.toml");
    let socket = dir.path().join("down.sock");
    std::fs::write(
        &config,
        format!("[server]\nadmin_socket = \"{}\"\n", socket.display()),
    )
    .unwrap();
    let out = ctl(&["--config", config.to_str().unwrap(), "status"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "cannot connect to the admin socket {} ([server] admin_socket in {})",
            socket.display(),
            config.display()
        )),
        "{err}"
    );
    // A config that cannot be read is named, not replaced by the default socket.
    let missing = dir.path().join("missing.toml");
    let out = ctl(&["--config", missing.to_str().unwrap(), "status"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot read [server] admin_socket from") && err.contains("missing.toml"),
        "{err}"
    );
}

#[test]
fn ctl_help_says_where_the_socket_comes_from() {
    let out = ctl(&["--help"]);
    let help = text(&out);
    for needle in [
        "--socket",
        "--config",
        "/etc/access-oracle/access-oracle.toml",
    ] {
        assert!(help.contains(needle), "{needle}: {help}");
    }
}

#[test]
fn every_table_from_the_real_daemon_fits_80_columns() {
    let d = Daemon::start();
    let config = d.config.to_str().unwrap();
    for i in 0..5 {
        d.request(&format!(
            "auth user=\"{LONG}\" ip={V6} result=fail pwhash={i:04}"
        ));
    }
    d.request(&format!(
        "login user=\"{LONG}\" ip={V6} result=ok protocol=imap"
    ));
    let status = text(&ctl(&["--config", config, "status"]));
    assert!(status.contains("1 account(s) held"), "{status}");
    assert_fits("status", &status);
    let account = text(&ctl(&["--config", config, "account", LONG]));
    assert!(account.contains("HELD until"), "{account}");
    assert_fits("account", &account);
    let baseline = text(&ctl(&["--config", config, "account", "--baseline", LONG]));
    assert_fits("baseline", &baseline);
    let alerts = text(&ctl(&["--config", config, "alerts"]));
    assert!(alerts.contains("failed_logins_account"), "{alerts}");
    assert_fits("alerts", &alerts);
    let released = text(&ctl(&["--config", config, "release", LONG]));
    assert!(released.starts_with("released"), "{released}");
    assert_fits("release", &released);
    let unblocked = text(&ctl(&["--config", config, "unblock", V6]));
    assert_fits("unblock", &unblocked);
}
