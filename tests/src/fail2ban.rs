//! A real fail2ban from Debian (`fail2ban`) for the oracle's `[fail2ban]` action, run by
//! the test as its own process: `fail2ban-server -c DIR -s SOCKET -p PIDFILE -x -f`
//! with its own configuration directory, socket, pid file, log file and an in-memory
//! database. Debian's own fail2ban service, running or not, is never asked anything.
//!
//! The configuration holds one jail, [`JAIL`], that reads no log of its own (`filter`
//! empty, `logpath = /dev/null`, as the operator's jail in `docs/RESPONSES.md`) and
//! bans with fail2ban's shipped `dummy` action, copied from `/etc/fail2ban/action.d/`:
//! it appends `+ADDRESS` to a file at each ban and `-ADDRESS` at each unban, so no
//! firewall is touched and the test sees what the jail's banaction was asked
//! ([`Fail2ban::action_log`]). `bantime` is a day, so every unban a test sees within its
//! run came from `fail2ban-client`, not from fail2ban's own timer.
//!
//! [`Fail2ban::start`] returns once `fail2ban-client -s SOCKET status JAIL` answers (the
//! jail is up), polled with a deadline. Drop stops it (SIGTERM, SIGKILL after a grace
//! period) and prints its log when the test is failing.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::process::{self, Finished};
use crate::world::World;

/// fail2ban's server as Debian installs it.
const SERVER: &str = "/usr/bin/fail2ban-server";

/// fail2ban's client as Debian installs it.
pub const CLIENT: &str = "/usr/bin/fail2ban-client";

/// The jail the test's fail2ban runs.
pub const JAIL: &str = "exim-access";

/// The dummy action fail2ban ships.
const DUMMY_ACTION: &str = "/etc/fail2ban/action.d/dummy.conf";

/// How long fail2ban may take to start its jail.
const START_DEADLINE: Duration = Duration::from_secs(30);

/// How long a SIGTERMed fail2ban-server may take to exit.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// A running fail2ban-server.
pub struct Fail2ban {
    child: Option<Child>,
    dir: PathBuf,
    socket: PathBuf,
}

impl Fail2ban {
    /// Writes the configuration into `<world>/fail2ban/` and starts the server; returns
    /// once the jail answers.
    pub fn start(world: &World) -> Fail2ban {
        let dir = world.path("fail2ban");
        let conf = dir.join("conf");
        fs::create_dir_all(conf.join("action.d")).expect("create fail2ban's directories");
        let dummy = fs::read_to_string(DUMMY_ACTION).unwrap_or_else(|e| {
            panic!("{DUMMY_ACTION}: {e} (install fail2ban: scripts/setup-debian)")
        });
        fs::write(conf.join("action.d/dummy.conf"), dummy).expect("copy the dummy action");
        let socket = dir.join("f2b.sock");
        let q = |p: &Path| p.display().to_string();
        fs::write(
            conf.join("fail2ban.conf"),
            format!(
                "[Definition]\n\
                 loglevel = INFO\n\
                 logtarget = {log}\n\
                 socket = {socket}\n\
                 pidfile = {pid}\n\
                 allowipv6 = auto\n\
                 dbfile = :memory:\n",
                log = q(&dir.join("fail2ban.log")),
                socket = q(&socket),
                pid = q(&dir.join("f2b.pid")),
            ),
        )
        .expect("write fail2ban.conf");
        fs::write(
            conf.join("jail.conf"),
            format!(
                "[{JAIL}]\n\
                 enabled  = true\n\
                 filter   =\n\
                 backend  = polling\n\
                 logpath  = /dev/null\n\
                 bantime  = 1d\n\
                 action   = dummy[target={target}]\n",
                target = q(&dir.join("actions")),
            ),
        )
        .expect("write jail.conf");
        let mut f = Fail2ban {
            child: None,
            dir,
            socket,
        };
        if let Err(why) = f.spawn() {
            f.stop();
            panic!("{why}");
        }
        f
    }

    fn spawn(&mut self) -> Result<(), String> {
        let log = fs::File::create(self.dir.join("server.out")).expect("fail2ban's output");
        let mut cmd = Command::new(SERVER);
        cmd.arg("-c")
            .arg(self.dir.join("conf"))
            .arg("-s")
            .arg(&self.socket)
            .arg("-p")
            .arg(self.dir.join("f2b.pid"))
            .arg("-x")
            .arg("-f")
            .env("PYTHONNOUSERSITE", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log);
        let command = process::describe(&cmd);
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!("cannot start {command}: {e} (install fail2ban: scripts/setup-debian)")
        });
        self.child = Some(child);
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if let Some(status) = process::reap_if_exited(&mut self.child) {
                return Err(format!(
                    "{command} exited with {status}; its output:\n{}",
                    self.log_text()
                ));
            }
            if self.socket.exists() && self.client(&["status", JAIL]).status.success() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{command}: jail {JAIL} not up within {START_DEADLINE:?}; its output:\n{}",
                    self.log_text()
                ));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server's process id (to stop and continue it).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The server's socket, for `[fail2ban] socket`.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// A `[fail2ban]` table for this server and `jail`, with `extra` lines.
    pub fn toml(&self, jail: &str, extra: &str) -> String {
        format!(
            "[fail2ban]\njail = \"{jail}\"\nclient = \"{CLIENT}\"\nsocket = \"{}\"\n{extra}\n",
            self.socket.display()
        )
    }

    /// Runs `fail2ban-client -s SOCKET ARGS...` (15 s at most).
    pub fn client(&self, args: &[&str]) -> Finished {
        let mut cmd = Command::new(CLIENT);
        cmd.arg("-s").arg(&self.socket).args(args);
        process::run(cmd, b"", Duration::from_secs(15))
    }

    /// The addresses and networks the jail has banned now (`get JAIL banned`).
    pub fn banned(&self) -> Vec<String> {
        let out = self.client(&["get", JAIL, "banned"]);
        out.assert_success();
        parse_list(&out.stdout_text())
    }

    /// Waits (bounded) until `addr` is banned (`true`) or not (`false`); panics with
    /// both logs otherwise.
    pub fn wait_banned(&self, addr: &str, banned: bool, deadline: Duration) {
        let until = Instant::now() + deadline;
        loop {
            let now = self.banned();
            if now.iter().any(|b| b == addr) == banned {
                return;
            }
            assert!(
                Instant::now() < until,
                "{addr} {} within {deadline:?}; banned: {now:?}; fail2ban's log:\n{}",
                if banned { "not banned" } else { "still banned" },
                self.log_text()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// What the jail's action was asked, in order: `+ADDRESS` for a ban, `-ADDRESS` for
    /// an unban.
    pub fn action_log(&self) -> Vec<String> {
        fs::read_to_string(self.dir.join("actions"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with(['+', '-']))
            .map(str::to_string)
            .collect()
    }

    /// fail2ban's log file and its standard output and error.
    pub fn log_text(&self) -> String {
        format!(
            "{}{}",
            fs::read_to_string(self.dir.join("server.out")).unwrap_or_default(),
            fs::read_to_string(self.dir.join("fail2ban.log")).unwrap_or_default()
        )
    }

    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let (_, killed) = process::wait_until(&mut child, Instant::now() + STOP_GRACE);
        if killed {
            eprintln!("fail2ban-server ignored SIGTERM for {STOP_GRACE:?} and was killed");
        }
    }
}

impl Drop for Fail2ban {
    fn drop(&mut self) {
        self.stop();
        if thread::panicking() {
            eprintln!("--- fail2ban output and log ---\n{}", self.log_text());
        }
    }
}

/// The list `fail2ban-client get JAIL banned` prints, Python's way:
/// `['192.0.2.7', '2001:db8::/64']`.
fn parse_list(text: &str) -> Vec<String> {
    text.trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .split(',')
        .map(|s| s.trim().trim_matches('\'').to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn parse_list() {
        assert_eq!(super::parse_list("[]\n"), Vec::<String>::new());
        assert_eq!(
            super::parse_list("['192.0.2.7', '2001:db8:1::/64']\n"),
            ["192.0.2.7", "2001:db8:1::/64"]
        );
    }
}
