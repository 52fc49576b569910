//! Where the programs and files under test are.
//!
//! The tests run what the workspace builds, never a copy: the oracle binary, the
//! `${dlfunc}` library and the shipped Exim configuration in `exim-config/`. They do not
//! build anything themselves (a nested `cargo build` would wait for the lock that
//! `cargo test` holds); build first:
//!
//! ```text
//! cargo build -p access-oracle && cargo build --release -p exim-dlfunc
//! cargo test -p exim-access-e2e
//! ```
//!
//! Lookup order, first hit wins:
//!
//! | what | environment override | then |
//! |---|---|---|
//! | oracle | `ACCESS_ORACLE_BIN` | the newer of `<target>/{debug,release}/access-oracle` |
//! | library | `ACCESS_DLFUNC_LIB` | the newer of `<target>/{release,debug}/libexim_access.so` |
//! | Exim | `EXIM_BIN` | `exim` on `PATH` |
//! | swaks | `SWAKS_BIN` | `swaks` on `PATH` |
//! | Dovecot | `DOVECOT_BIN` | `dovecot` on `PATH`, then `/usr/sbin` |
//!
//! `<target>` is `CARGO_TARGET_DIR` when set, else the directory three levels above the
//! running test binary (`<target>/<profile>/deps/exim-...`), else `<workspace>/target`.
//! When both profiles have one, the most recently built wins (a workspace `cargo test`
//! also leaves a debug `libexim_access.so` behind). A binary older than the newest
//! source file of its crate gets a warning on stderr (shown for failing tests): it is
//! probably stale.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The workspace root (the parent of this crate's directory).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The shipped monolithic Exim configuration the tests run.
pub fn exim_config_example() -> PathBuf {
    workspace_root().join("exim-config/exim4.conf.example")
}

/// The directory of the shipped Exim snippets (`ACCESS_CONFIG_DIR`).
pub fn exim_config_snippets() -> PathBuf {
    workspace_root().join("exim-config/access")
}

/// The directory of the shipped Dovecot snippets (`exim-config/dovecot/conf.d`).
pub fn dovecot_config_snippets() -> PathBuf {
    workspace_root().join("exim-config/dovecot/conf.d")
}

/// Cargo's target directory (see the module documentation).
pub fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        let dir = PathBuf::from(dir);
        return if dir.is_absolute() {
            dir
        } else {
            workspace_root().join(dir)
        };
    }
    if let Some(dir) = test_binary_profile_dir().and_then(|p| p.parent().map(Path::to_path_buf)) {
        return dir;
    }
    workspace_root().join("target")
}

/// `<target>/<profile>` of the running test binary, if it sits in `.../deps/`.
fn test_binary_profile_dir() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let deps = exe.parent()?;
    if deps.file_name()? != "deps" {
        return None;
    }
    deps.parent().map(Path::to_path_buf)
}

/// Finds a workspace build product or panics with the command that builds it.
fn find_built(env_var: &str, file: &str, crate_dir: &str, build: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env_var) {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "{env_var}={} does not name a file",
            path.display()
        );
        return path;
    }
    let target = target_dir();
    let candidates: Vec<PathBuf> = ["debug", "release"]
        .iter()
        .map(|profile| target.join(profile).join(file))
        .collect();
    let found = candidates
        .iter()
        .filter(|p| p.is_file())
        .max_by_key(|p| modified(p))
        .unwrap_or_else(|| {
            panic!(
                "{file} not found (looked at {}); build it first with `{build}` \
             or point {env_var} at it",
                candidates
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        });
    warn_if_stale(found, &workspace_root().join(crate_dir));
    found.clone()
}

/// Prints a warning when a source file under `crate_dir` is newer than `built`.
fn warn_if_stale(built: &Path, crate_dir: &Path) {
    let Some(built_at) = modified(built) else {
        return;
    };
    let mut newest = None;
    newest_source(crate_dir, &mut newest);
    if let Some((_, path)) = newest.filter(|(time, _)| *time > built_at) {
        eprintln!(
            "warning: {} is older than {}: rebuild it, the tests may run stale code",
            built.display(),
            path.display()
        );
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    path.metadata().and_then(|m| m.modified()).ok()
}

/// The newest `.rs` or `Cargo.toml` under `dir` (recursively).
fn newest_source(dir: &Path, newest: &mut Option<(SystemTime, PathBuf)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            newest_source(&path, newest);
        } else if path.extension().is_some_and(|e| e == "rs")
            || path.file_name().is_some_and(|n| n == "Cargo.toml")
        {
            let time = modified(&path);
            if let Some(time) = time.filter(|time| newest.as_ref().is_none_or(|(t, _)| time > t)) {
                *newest = Some((time, path));
            }
        }
    }
}

/// The `access-oracle` binary.
pub fn oracle_bin() -> PathBuf {
    find_built(
        "ACCESS_ORACLE_BIN",
        "access-oracle",
        "access-oracle",
        "cargo build -p access-oracle",
    )
}

/// The `${dlfunc}` library `libexim_access.so`.
pub fn dlfunc_lib() -> PathBuf {
    find_built(
        "ACCESS_DLFUNC_LIB",
        "libexim_access.so",
        "exim-dlfunc",
        "cargo build --release -p exim-dlfunc",
    )
}

/// A program from an environment override or from `PATH`.
fn program(env_var: &str, name: &str, package: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env_var) {
        return PathBuf::from(path);
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| OsString::from("/usr/sbin:/usr/bin"));
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} not found on PATH: install {package} (or set {env_var})"))
}

/// The Exim binary (a heavy build for the `${dlfunc}` tests).
pub fn exim_bin() -> PathBuf {
    program("EXIM_BIN", "exim", "exim4-daemon-heavy")
}

/// The swaks SMTP test client.
pub fn swaks_bin() -> PathBuf {
    program("SWAKS_BIN", "swaks", "swaks")
}

/// The Dovecot master binary (`dovecot -F -c FILE`).
pub fn dovecot_bin() -> PathBuf {
    program("DOVECOT_BIN", "dovecot", "dovecot-imapd and dovecot-pop3d")
}
