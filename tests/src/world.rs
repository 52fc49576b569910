//! One test's private directory tree, usable by Exim's unprivileged processes.
//!
//! Exim drops to its own user (`Debian-exim`) for the SMTP processes of its daemon and
//! for writing the spool, even in `-bh` mode when a message reaches DATA. So the tree is
//! world-traversable, its spool and log directories belong to `Debian-exim`, and the
//! passwd file is world-readable. Every test gets its own tree under the system
//! temporary directory (tests run in parallel); it is removed on drop unless
//! `E2E_KEEP=1` is set, in which case its path is printed.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::unistd::User;
use tempfile::TempDir;

/// The user Exim runs as on Debian (`exim_user`).
pub const EXIM_USER: &str = "Debian-exim";

/// The password of every account in the passwd file the harness writes.
pub const PASSWORD: &str = "s3cret";

/// SHA-512-crypt of [`PASSWORD`], made once with
/// `openssl passwd -6 -salt exaccesstest1234 s3cret` and checked by Exim's `crypteq`.
pub const PASSWORD_HASH: &str = "$6$exaccesstest1234$bhifDZ6luWMjS1tMp2uIqt/Se9bcUNRUlQYZGjYtUGzlzPLdSRp77fe2TKsQKfNo8/eVqBq.O9Z5ShFQR63q.0";

/// A test's directory tree:
///
/// ```text
/// <root>/            0755
///   passwd           0644  user:PASSWORD_HASH lines for the plaintext authenticators
///   spool/           Debian-exim  Exim's spool_directory (SPOOLDIR)
///   log/             Debian-exim  Exim's mainlog, rejectlog, paniclog (LOG_FILE_PATH)
///   oracle/          0755  the oracle's sockets
///   state/           the oracle's --state-dir (alerts.jsonl)
/// ```
pub struct World {
    dir: Option<TempDir>,
    root: PathBuf,
}

impl World {
    /// Creates the tree with a passwd file holding `users`, each with [`PASSWORD`].
    pub fn new(users: &[&str]) -> World {
        let dir = tempfile::Builder::new()
            .prefix("exim-access-e2e-")
            .tempdir()
            .expect("create a temporary directory");
        let root = dir.path().to_path_buf();
        set_mode(&root, 0o755);

        let exim = User::from_name(EXIM_USER)
            .expect("look up the Exim user")
            .unwrap_or_else(|| panic!("user {EXIM_USER} missing: install exim4-daemon-heavy"));
        for sub in ["spool", "log"] {
            let path = root.join(sub);
            fs::create_dir(&path).expect("create an Exim directory");
            std::os::unix::fs::chown(&path, Some(exim.uid.as_raw()), Some(exim.gid.as_raw()))
                .expect("chown an Exim directory to Debian-exim (the tests run as root)");
            set_mode(&path, 0o750);
        }
        for sub in ["oracle", "state"] {
            fs::create_dir(root.join(sub)).expect("create an oracle directory");
            set_mode(&root.join(sub), 0o755);
        }

        let world = World {
            dir: Some(dir),
            root,
        };
        world.write_passwd(users);
        world
    }

    /// Rewrites the passwd file with `users`, each with [`PASSWORD`]. A name with
    /// characters other than letters, digits and `._@+-` is written as an `lsearch`
    /// quoted key (`"a \"b\"": ...`), so names with spaces, quotes or backslashes can
    /// log in too (names with newlines cannot).
    pub fn write_passwd(&self, users: &[&str]) {
        let mut text = String::new();
        for user in users {
            text.push_str(&format!("{}:{PASSWORD_HASH}\n", lsearch_key(user)));
        }
        fs::write(self.passwd(), text).expect("write the passwd file");
        set_mode(&self.passwd(), 0o644);
    }

    /// The root of the tree.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A path inside the tree.
    pub fn path(&self, relative: &str) -> PathBuf {
        self.root.join(relative)
    }

    /// The passwd file (`ACCESS_PASSWD_FILE`).
    pub fn passwd(&self) -> PathBuf {
        self.path("passwd")
    }

    /// Exim's spool directory (`SPOOLDIR`).
    pub fn spool_dir(&self) -> PathBuf {
        self.path("spool")
    }

    /// Exim's log directory (`LOG_FILE_PATH` is `<this>/%slog`).
    pub fn log_dir(&self) -> PathBuf {
        self.path("log")
    }

    /// The directory for the oracle's sockets.
    pub fn oracle_dir(&self) -> PathBuf {
        self.path("oracle")
    }

    /// The oracle's state directory (`--state-dir`).
    pub fn state_dir(&self) -> PathBuf {
        self.path("state")
    }

    /// Exim's mainlog so far (empty when there is none yet).
    pub fn exim_mainlog(&self) -> String {
        fs::read_to_string(self.log_dir().join("mainlog")).unwrap_or_default()
    }

    /// Exim's paniclog so far (empty when there is none: the normal case).
    pub fn exim_paniclog(&self) -> String {
        fs::read_to_string(self.log_dir().join("paniclog")).unwrap_or_default()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let keep = std::env::var_os("E2E_KEEP").is_some_and(|v| v == "1");
        if let Some(mut dir) = self.dir.take() {
            if keep {
                dir.disable_cleanup(true);
                eprintln!("E2E_KEEP=1: kept {}", self.root.display());
            }
        }
    }
}

/// `user` as an `lsearch` key: bare when it is plain, else double-quoted with `\"` and
/// `\\` escapes.
fn lsearch_key(user: &str) -> String {
    let plain = !user.is_empty()
        && user
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._@+-".contains(c));
    if plain {
        return user.to_string();
    }
    let mut key = String::from("\"");
    for c in user.chars() {
        if c == '"' || c == '\\' {
            key.push('\\');
        }
        key.push(c);
    }
    key.push('"');
    key
}

/// Sets the permission bits of `path`.
fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
}
