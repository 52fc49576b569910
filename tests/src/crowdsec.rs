//! A real CrowdSec Local API from Debian (`crowdsec` 1.4.6) for the oracle's
//! `[crowdsec]`, run by the test as its own process: `crowdsec -c CONFIG -no-cs` (the
//! Local API alone, no log-reading agent) with a configuration the test writes into
//! `<world>/crowdsec/`: its own SQLite database, the API on a free loopback port, no
//! Central API (no `online_client`), no hub, no metrics port. Nothing reaches the
//! network, and Debian's own crowdsec service and database are never touched.
//!
//! [`Crowdsec::cscli`] runs `cscli -c CONFIG ...` against it: cscli's own machine
//! (`cscli machines add --auto`, made at start) lets it add, list and delete decisions
//! through the API, as an administrator does. [`Crowdsec::bouncer_key_file`] and
//! [`Crowdsec::machine_file`] register the oracle as a bouncer and as a machine and
//! write their credentials into 0600 files.
//!
//! [`Crowdsec::start_tls`] serves the API over HTTPS with a [`TestCa`]'s server
//! certificate (cscli, which only talks to it, skips the check).
//!
//! [`Crowdsec::start`] returns once this crowdsec logs that its API listens (polled
//! with a deadline); a port a parallel test took first makes it exit, and another port
//! is tried. Drop stops it (SIGTERM, SIGKILL after a grace period) and prints its log
//! when the test is failing.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

use crate::process::{self, Finished};
use crate::tlsca::TestCa;
use crate::world::World;

/// crowdsec as Debian installs it.
const CROWDSEC: &str = "/usr/bin/crowdsec";

/// cscli as Debian installs it.
pub const CSCLI: &str = "/usr/bin/cscli";

/// How long the Local API may take to listen.
const START_DEADLINE: Duration = Duration::from_secs(30);

/// How long a SIGTERMed crowdsec may take to exit.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// A running CrowdSec Local API.
pub struct Crowdsec {
    child: Option<Child>,
    dir: PathBuf,
    config: PathBuf,
    port: u16,
    tls: bool,
}

impl Crowdsec {
    /// Writes the configuration into `<world>/crowdsec/` and starts the Local API;
    /// returns once it listens.
    pub fn start(world: &World) -> Crowdsec {
        Crowdsec::start_with(world, None)
    }

    /// [`Crowdsec::start`] with the API over HTTPS, presenting `ca`'s server
    /// certificate.
    pub fn start_tls(world: &World, ca: &TestCa) -> Crowdsec {
        Crowdsec::start_with(world, Some(ca))
    }

    fn start_with(world: &World, tls: Option<&TestCa>) -> Crowdsec {
        let dir = world.path("crowdsec");
        fs::create_dir_all(dir.join("data")).expect("create crowdsec's directories");
        fs::write(
            dir.join("profiles.yaml"),
            "name: default_ip_remediation\n\
             filters:\n \
             - Alert.Remediation == true && Alert.GetScope() == \"Ip\"\n\
             decisions:\n \
             - type: ban\n   \
             duration: 4h\n\
             on_success: break\n",
        )
        .expect("write profiles.yaml");
        fs::write(dir.join("simulation.yaml"), "simulation: false\n")
            .expect("write simulation.yaml");
        let mut last_failure = String::new();
        for _ in 0..5 {
            let port = crate::exim::free_port();
            let config = dir.join("config.yaml");
            fs::write(&config, config_yaml(&dir, port, tls)).expect("write crowdsec's config");
            let mut c = Crowdsec {
                child: None,
                dir: dir.clone(),
                config,
                port,
                tls: tls.is_some(),
            };
            // cscli's own machine: it adds and deletes decisions through the API (its
            // credentials file names the port).
            c.cscli(&[
                "machines",
                "add",
                "cscli",
                "--auto",
                "--force",
                "-f",
                &dir.join("cscli.yaml").display().to_string(),
            ])
            .assert_success();
            if c.tls {
                // cscli writes the URL as plain HTTP whatever the server does.
                let creds = dir.join("cscli.yaml");
                let text = fs::read_to_string(&creds).expect("read cscli's credentials");
                fs::write(&creds, text.replace("url: http://", "url: https://"))
                    .expect("write cscli's credentials");
            }
            match c.spawn() {
                Ok(()) => return c,
                Err(why) => {
                    last_failure = why;
                    c.stop();
                }
            }
        }
        panic!("the CrowdSec Local API did not start:\n{last_failure}");
    }

    fn spawn(&mut self) -> Result<(), String> {
        let log_path = self.dir.join("crowdsec.log");
        let log = fs::File::create(&log_path).expect("crowdsec's log");
        let mut cmd = Command::new(CROWDSEC);
        cmd.arg("-c")
            .arg(&self.config)
            .arg("-no-cs")
            .arg("-no-capi")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log);
        let command = process::describe(&cmd);
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!("cannot start {command}: {e} (install crowdsec: scripts/setup-debian)")
        });
        self.child = Some(child);
        let listening = format!("CrowdSec Local API listening on 127.0.0.1:{}", self.port);
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if let Some(status) = process::reap_if_exited(&mut self.child) {
                return Err(format!(
                    "{command} exited with {status}; its log:\n{}",
                    self.log_text()
                ));
            }
            if self.log_text().contains(&listening) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{command}: not listening within {START_DEADLINE:?}; its log:\n{}",
                    self.log_text()
                ));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The Local API's URL, for `[crowdsec] lapi_url`.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// Runs `cscli -c CONFIG --error ARGS...` (30 s at most).
    pub fn cscli(&self, args: &[&str]) -> Finished {
        let mut cmd = Command::new(CSCLI);
        cmd.arg("-c").arg(&self.config).arg("--error").args(args);
        process::run(cmd, b"", Duration::from_secs(30))
    }

    /// Registers bouncer `name` and writes its API key into a 0600 file, for
    /// `[crowdsec] bouncer_key_file`.
    pub fn bouncer_key_file(&self, name: &str) -> PathBuf {
        let out = self.cscli(&["bouncers", "add", name, "-o", "raw"]);
        out.assert_success();
        let key = out.stdout_text().trim().to_string();
        assert!(
            !key.is_empty(),
            "cscli printed no key: {}",
            out.stderr_text()
        );
        let path = self.dir.join(format!("{name}.key"));
        write_private(&path, &format!("{key}\n"));
        path
    }

    /// Registers machine `id` with `password` and returns the credentials file cscli
    /// wrote (`url`, `login`, `password`), made 0600, for `[crowdsec] password_file`.
    pub fn machine_file(&self, id: &str, password: &str) -> PathBuf {
        let path = self.dir.join(format!("{id}.yaml"));
        self.cscli(&[
            "machines",
            "add",
            id,
            "--password",
            password,
            "-f",
            &path.display().to_string(),
        ])
        .assert_success();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600))
            .expect("chmod the credentials");
        path
    }

    /// Every decision in force as `cscli decisions list -o json` shows it (each with
    /// its alert's `machine_id` added), `--all` for those of every origin.
    pub fn decisions(&self, all: bool) -> Vec<Value> {
        let mut args = vec!["decisions", "list", "-o", "json"];
        if all {
            args.push("--all");
        }
        let out = self.cscli(&args);
        out.assert_success();
        let alerts: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "cscli decisions list printed no JSON ({e}): {}",
                out.stdout_text()
            )
        });
        let mut decisions = Vec::new();
        for alert in alerts.as_array().into_iter().flatten() {
            for d in alert["decisions"].as_array().into_iter().flatten() {
                let mut d = d.clone();
                d["machine_id"] = alert["machine_id"].clone();
                decisions.push(d);
            }
        }
        decisions
    }

    /// Waits (bounded) until a decision on `value` is listed (`true`) or not
    /// (`false`); returns the decisions then, panics with the log otherwise.
    pub fn wait_decision(&self, value: &str, listed: bool, deadline: Duration) -> Vec<Value> {
        let until = Instant::now() + deadline;
        loop {
            let now = self.decisions(false);
            if now.iter().any(|d| d["value"] == value) == listed {
                return now;
            }
            assert!(
                Instant::now() < until,
                "{value} {} within {deadline:?}; decisions: {now:#?}\ncrowdsec's log:\n{}",
                if listed { "not listed" } else { "still listed" },
                self.log_text()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// crowdsec's log (its standard output and error).
    pub fn log_text(&self) -> String {
        fs::read_to_string(self.dir.join("crowdsec.log")).unwrap_or_default()
    }

    /// Stops the Local API (SIGTERM, then SIGKILL after a grace period); its database
    /// stays for [`Crowdsec::restart`].
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let (_, killed) = process::wait_until(&mut child, Instant::now() + STOP_GRACE);
        if killed {
            eprintln!("crowdsec ignored SIGTERM for {STOP_GRACE:?} and was killed");
        }
    }

    /// Starts the stopped Local API again on its port, with its database.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "crowdsec is running");
        if let Err(why) = self.spawn() {
            panic!("{why}");
        }
    }
}

impl Drop for Crowdsec {
    fn drop(&mut self) {
        self.stop();
        if thread::panicking() {
            eprintln!("--- crowdsec log ---\n{}", self.log_text());
        }
    }
}

fn write_private(path: &Path, text: &str) {
    fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

/// crowdsec's configuration: the Local API only, everything under `dir`.
fn config_yaml(dir: &Path, port: u16, tls: Option<&TestCa>) -> String {
    let d = dir.display();
    let (skip_verify, tls) = match tls {
        Some(ca) => (
            "true",
            format!(
                "\x20   tls:\n\x20     cert_file: {}\n\x20     key_file: {}\n",
                ca.server_cert.display(),
                ca.server_key.display()
            ),
        ),
        None => ("false", String::new()),
    };
    format!(
        "common:\n\
         \x20 daemonize: false\n\
         \x20 log_media: stdout\n\
         \x20 log_level: info\n\
         \x20 working_dir: {d}\n\
         config_paths:\n\
         \x20 config_dir: {d}/\n\
         \x20 data_dir: {d}/data/\n\
         \x20 simulation_path: {d}/simulation.yaml\n\
         \x20 hub_dir: {d}/hub/\n\
         \x20 index_path: {d}/hub/.index.json\n\
         \x20 notification_dir: {d}/notifications/\n\
         \x20 plugin_dir: /usr/lib/crowdsec/plugins/\n\
         cscli:\n\
         \x20 output: human\n\
         db_config:\n\
         \x20 log_level: info\n\
         \x20 type: sqlite\n\
         \x20 db_path: {d}/data/crowdsec.db\n\
         \x20 use_wal: false\n\
         api:\n\
         \x20 client:\n\
         \x20   insecure_skip_verify: {skip_verify}\n\
         \x20   credentials_path: {d}/cscli.yaml\n\
         \x20 server:\n\
         \x20   log_level: info\n\
         \x20   listen_uri: 127.0.0.1:{port}\n\
         \x20   profiles_path: {d}/profiles.yaml\n\
         {tls}\
         \x20   trusted_ips:\n\
         \x20     - 127.0.0.1\n\
         prometheus:\n\
         \x20 enabled: false\n"
    )
}
