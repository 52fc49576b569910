//! Real Dovecot 2.3, a private instance per test on two free loopback ports.
//!
//! [`Dovecot::start`] writes a standalone configuration into `<world>/dovecot/` and runs
//! `dovecot -F -c <world>/dovecot/dovecot.conf` as a child: its own `base_dir`,
//! `state_dir` and log file, IMAP and POP3 on free ports of 127.0.0.1, no TLS, nothing
//! shared with a system Dovecot (which need not be running, and is never touched). It
//! returns once both ports greet. Drop stops it with SIGTERM (the master stops its
//! children) and, when the test is failing, prints its log.
//!
//! The configuration is what the log parsers must read on a real server, plus what makes
//! a test fast and able to pose as any client:
//! * `auth_verbose = yes`: the auth process logs each `Password mismatch` and
//!   `unknown user` (Debian's default `no` logs only the login summaries);
//! * `login_trusted_networks = 127.0.0.0/8 ::1`: a loopback client may present another
//!   source address, with IMAP `ID ("x-originating-ip" ...)` or POP3 `XCLIENT ADDR=`;
//! * `auth_failure_delay = 0` and the anvil auth penalty off: a wrong password costs no
//!   2 s delay, doubled per address;
//! * the `mail_log` plugin: saves, expunges and mailbox changes are logged.
//!
//! [`Dovecot::start_with`] can add the shipped snippets of `exim-config/dovecot/conf.d/`
//! ([`DovecotSetup`]): `95-access-oracle.conf` (the auth policy, with only its URL and
//! the path of its private key include replaced) and `96-exim-auth-client.conf` (the
//! socket Exim's `driver = dovecot` authenticators connect to, [`Dovecot::exim_auth_socket`]).
//!
//! Accounts live in a `passwd-file` (`{SHA512-CRYPT}` of
//! [`PASSWORD`](crate::PASSWORD)), their mail in `<world>/dovecot/mail/USER/Maildir`,
//! owned by `nobody` (the mail processes run as the account's uid, which may not be
//! root). The login processes run as Dovecot's `dovenull` and the auth process as
//! `dovecot`, the users the Debian packages create; everything they read is
//! world-readable.
//!
//! ```text
//! <world>/dovecot/         0755
//!   dovecot.conf  users    0644
//!   run/  state/           base_dir, state_dir (Dovecot sets their modes)
//!   mail/USER/             nobody:nogroup
//!   dovecot.log            log_path and info_log_path
//!   dovecot.out            the master's stdout and stderr
//!   95-access-oracle.conf  the shipped policy snippet, URL and include path replaced
//!   access-oracle-api-key.conf   0600, `auth_policy_server_api_header = X-API-Key: ...`
//!   96-exim-auth-client.conf     the shipped snippet, as it is
//! ```

use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::{Pid, User};

use crate::exim::free_port;
use crate::imap::Imap;
use crate::paths;
use crate::pop3::Pop3;
use crate::process;
use crate::world::{PASSWORD_HASH, World};

/// How long Dovecot may take to greet on both ports.
const START_DEADLINE: Duration = Duration::from_secs(20);

/// How long a SIGTERMed Dovecot may take to exit before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// The user that owns the mailboxes (the mail processes run as it).
const MAIL_USER: &str = "nobody";

/// The URL in the shipped `95-access-oracle.conf` that a test replaces by its oracle's.
pub const SHIPPED_POLICY_URL: &str = "http://127.0.0.1:8091/policy";

/// The private include in the shipped `95-access-oracle.conf` that a test replaces by
/// its own file.
pub const SHIPPED_API_KEY_INCLUDE: &str = "/etc/dovecot/private/access-oracle-api-key.conf";

/// What to add to the standalone configuration, from `exim-config/dovecot/conf.d/`.
#[derive(Clone, Debug, Default)]
pub struct DovecotSetup {
    /// Ask a policy server: `95-access-oracle.conf` with this URL and API key.
    pub policy: Option<PolicyServer>,
    /// Offer Exim's auth socket: `96-exim-auth-client.conf`.
    pub exim_auth: bool,
}

/// The policy server Dovecot asks.
#[derive(Clone, Debug)]
pub struct PolicyServer {
    /// `auth_policy_server_url`.
    pub url: String,
    /// The key sent as `X-API-Key`.
    pub api_key: String,
}

/// A running standalone Dovecot.
pub struct Dovecot {
    child: Option<Child>,
    dir: PathBuf,
    imap_port: u16,
    pop3_port: u16,
    includes: Vec<PathBuf>,
    extra: String,
}

impl Dovecot {
    /// Starts Dovecot for `users`, each with [`PASSWORD`](crate::PASSWORD); waits
    /// (bounded) until IMAP and POP3 greet. Names must be plain (letters, digits,
    /// `._@+-`): they go into a `passwd-file` and a directory name.
    pub fn start(world: &World, users: &[&str]) -> Dovecot {
        Dovecot::start_with(world, users, &DovecotSetup::default())
    }

    /// [`Dovecot::start`] with the shipped snippets `setup` asks for.
    pub fn start_with(world: &World, users: &[&str], setup: &DovecotSetup) -> Dovecot {
        Dovecot::start_with_extra(world, users, setup, "")
    }

    /// [`Dovecot::start_with`] with `extra` appended to the configuration (settings
    /// such as `auth_verbose_passwords = plain`).
    pub fn start_with_extra(
        world: &World,
        users: &[&str],
        setup: &DovecotSetup,
        extra: &str,
    ) -> Dovecot {
        let dir = world.path("dovecot");
        fs::create_dir(&dir).expect("create the Dovecot directory");
        set_mode(&dir, 0o755);
        let mail_user = User::from_name(MAIL_USER)
            .expect("look up the mail user")
            .unwrap_or_else(|| panic!("user {MAIL_USER} missing"));
        let mail = dir.join("mail");
        fs::create_dir(&mail).expect("create the mail directory");
        set_mode(&mail, 0o755);
        let mut passwd = String::new();
        for user in users {
            assert!(
                !user.is_empty()
                    && user
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "._@+-".contains(c))
                    && !user.starts_with('.'),
                "Dovecot test accounts need plain names, got {user:?}"
            );
            let home = mail.join(user);
            fs::create_dir(&home).expect("create a mail home");
            std::os::unix::fs::chown(
                &home,
                Some(mail_user.uid.as_raw()),
                Some(mail_user.gid.as_raw()),
            )
            .expect("chown a mail home (the tests run as root)");
            set_mode(&home, 0o700);
            writeln!(
                passwd,
                "{user}:{{SHA512-CRYPT}}{PASSWORD_HASH}:{}:{}::{}",
                mail_user.uid,
                mail_user.gid,
                home.display()
            )
            .expect("write to a string");
        }
        fs::write(dir.join("users"), passwd).expect("write the Dovecot users file");
        set_mode(&dir.join("users"), 0o644);
        let includes = shipped_snippets(&dir, setup);

        let mut last_failure = String::new();
        // A port found free may be taken by a parallel test before Dovecot binds it.
        for _ in 0..5 {
            let mut dovecot = Dovecot {
                child: None,
                dir: dir.clone(),
                imap_port: free_port(),
                pop3_port: free_port(),
                includes: includes.clone(),
                extra: extra.to_string(),
            };
            if dovecot.imap_port == dovecot.pop3_port {
                continue;
            }
            match dovecot.spawn() {
                Ok(()) => return dovecot,
                Err(why) => last_failure = format!("{why}\n{}", dovecot.logs()),
            }
        }
        panic!("Dovecot did not start:\n{last_failure}");
    }

    /// Writes the configuration for the chosen ports, starts the master and waits until
    /// both ports greet.
    fn spawn(&mut self) -> Result<(), String> {
        let config = self.config_path();
        fs::write(&config, self.config_text()).expect("write dovecot.conf");
        set_mode(&config, 0o644);
        let out = fs::File::create(self.dir.join("dovecot.out")).expect("create dovecot.out");
        let mut cmd = Command::new(paths::dovecot_bin());
        cmd.arg("-F")
            .arg("-c")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("clone a file handle"))
            .stderr(out);
        let command = process::describe(&cmd);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {command}: {e}"));
        self.child = Some(child);

        let deadline = Instant::now() + START_DEADLINE;
        let mut imap_ready = false;
        let mut pop3_ready = false;
        loop {
            if let Some(status) = process::reap_if_exited(&mut self.child) {
                return Err(format!("{command} exited with {status}"));
            }
            imap_ready = imap_ready || greets(self.imap_port, "* OK");
            pop3_ready = pop3_ready || greets(self.pop3_port, "+OK");
            if imap_ready && pop3_ready {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.stop();
                return Err(format!(
                    "{command}: no greeting within {START_DEADLINE:?} (imap {imap_ready}, pop3 {pop3_ready})"
                ));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The configuration file's text.
    fn config_text(&self) -> String {
        let dir = &self.dir;
        let users = dir.join("users");
        let mut text = format!(
            "# Standalone Dovecot of one exim-access end-to-end test.\n\
             protocols = imap pop3\n\
             base_dir = {run}\n\
             state_dir = {state}\n\
             log_path = {log}\n\
             info_log_path = {log}\n\
             listen = 127.0.0.1\n\
             ssl = no\n\
             disable_plaintext_auth = no\n\
             auth_verbose = yes\n\
             auth_failure_delay = 0\n\
             auth_mechanisms = plain login\n\
             login_trusted_networks = 127.0.0.0/8 ::1\n\
             default_internal_user = dovecot\n\
             default_login_user = dovenull\n\
             mail_location = maildir:~/Maildir\n\
             mail_plugins = $mail_plugins notify mail_log\n\
             plugin {{\n  \
               mail_log_events = delete undelete expunge copy mailbox_create mailbox_delete mailbox_rename save\n  \
               mail_log_fields = uid box msgid size\n\
             }}\n\
             passdb {{\n  driver = passwd-file\n  args = {users}\n}}\n\
             userdb {{\n  driver = passwd-file\n  args = {users}\n}}\n\
             service imap-login {{\n  \
               inet_listener imap {{\n    port = {imap}\n  }}\n  \
               inet_listener imaps {{\n    port = 0\n  }}\n\
             }}\n\
             service pop3-login {{\n  \
               inet_listener pop3 {{\n    port = {pop3}\n  }}\n  \
               inet_listener pop3s {{\n    port = 0\n  }}\n\
             }}\n\
             service anvil {{\n  unix_listener anvil-auth-penalty {{\n    mode = 0\n  }}\n}}\n",
            run = dir.join("run").display(),
            state = dir.join("state").display(),
            log = self.log_path().display(),
            users = users.display(),
            imap = self.imap_port,
            pop3 = self.pop3_port,
        );
        for include in &self.includes {
            writeln!(text, "!include {}", include.display()).expect("write to a string");
        }
        text.push_str(&self.extra);
        text.push('\n');
        text
    }

    /// The socket of `96-exim-auth-client.conf`, for Exim's `ACCESS_DOVECOT_SOCKET`.
    pub fn exim_auth_socket(&self) -> PathBuf {
        self.dir.join("run").join("auth-exim")
    }

    /// `<world>/dovecot/dovecot.conf`.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("dovecot.conf")
    }

    /// Dovecot's log file (`log_path`, `info_log_path`).
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("dovecot.log")
    }

    /// The log so far (empty when there is none yet).
    pub fn log_text(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Waits (bounded) until at least `count` log lines contain `needle`; returns the log.
    /// Dovecot writes through its log process, so a line may land a moment after the
    /// client saw the reply; a summary of a failed login is written only once the client
    /// has gone.
    pub fn wait_for_log(&self, needle: &str, count: usize, deadline: Duration) -> String {
        let until = Instant::now() + deadline;
        loop {
            let text = self.log_text();
            let seen = text.lines().filter(|l| l.contains(needle)).count();
            if seen >= count {
                return text;
            }
            assert!(
                Instant::now() < until,
                "{seen} of {count} Dovecot log lines with {needle:?} after {deadline:?}:\n{text}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The IMAP port (127.0.0.1).
    pub fn imap_port(&self) -> u16 {
        self.imap_port
    }

    /// The POP3 port (127.0.0.1).
    pub fn pop3_port(&self) -> u16 {
        self.pop3_port
    }

    /// A new IMAP connection, greeted.
    pub fn imap(&self) -> Imap {
        Imap::connect(self.imap_port)
    }

    /// A new POP3 connection, greeted.
    pub fn pop3(&self) -> Pop3 {
        Pop3::connect(self.pop3_port)
    }

    /// The log and the master's own output, for messages.
    pub fn logs(&self) -> String {
        format!(
            "--- dovecot.log\n{}--- dovecot -F output\n{}",
            self.log_text(),
            fs::read_to_string(self.dir.join("dovecot.out")).unwrap_or_default()
        )
    }

    /// Stops Dovecot (SIGTERM to the master, SIGKILL after a grace period); a no-op when
    /// stopped.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let (_, killed) = process::wait_until(&mut child, Instant::now() + STOP_GRACE);
        if killed {
            eprintln!("dovecot ignored SIGTERM for {STOP_GRACE:?} and was killed");
        }
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        self.stop();
        if thread::panicking() {
            eprintln!("--- Dovecot ---\n{}", self.logs());
        }
    }
}

/// Writes the shipped snippets `setup` asks for into `dir`, returning the files to
/// include. Only the policy URL and the path of its key include are replaced; the test
/// fails if the shipped file no longer has them.
fn shipped_snippets(dir: &Path, setup: &DovecotSetup) -> Vec<PathBuf> {
    let mut includes = Vec::new();
    if let Some(policy) = &setup.policy {
        let shipped = paths::dovecot_config_snippets().join("95-access-oracle.conf");
        let text = fs::read_to_string(&shipped)
            .unwrap_or_else(|e| panic!("read {}: {e}", shipped.display()));
        for needle in [SHIPPED_POLICY_URL, SHIPPED_API_KEY_INCLUDE] {
            assert!(
                text.contains(needle),
                "{} no longer holds {needle:?}: update the harness",
                shipped.display()
            );
        }
        let key_file = dir.join("access-oracle-api-key.conf");
        fs::write(
            &key_file,
            format!(
                "auth_policy_server_api_header = X-API-Key: {}\n",
                policy.api_key
            ),
        )
        .expect("write the API key include");
        set_mode(&key_file, 0o600);
        let text = text
            .replace(SHIPPED_POLICY_URL, &policy.url)
            .replace(SHIPPED_API_KEY_INCLUDE, &key_file.display().to_string());
        let copy = dir.join("95-access-oracle.conf");
        fs::write(&copy, text).expect("write the policy snippet");
        set_mode(&copy, 0o644);
        includes.push(copy);
    }
    if setup.exim_auth {
        let shipped = paths::dovecot_config_snippets().join("96-exim-auth-client.conf");
        let copy = dir.join("96-exim-auth-client.conf");
        fs::copy(&shipped, &copy).unwrap_or_else(|e| panic!("copy {}: {e}", shipped.display()));
        set_mode(&copy, 0o644);
        includes.push(copy);
    }
    includes
}

/// Whether a connection to `port` is greeted with a line starting with `prefix`.
fn greets(port: u16, prefix: &str) -> bool {
    let Ok(stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line).is_ok() && line.starts_with(prefix)
}

/// Sets the permission bits of `path`.
fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
}
