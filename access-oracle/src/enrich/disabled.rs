//! The accounts file of `[rules.disabled_credentials]`: accounts whose credentials must
//! not be used any more, reloaded when the file changes.
//!
//! ```text
//! # user        [expiry]
//! olduser                       # disabled
//! contractor    2026-12-31      # valid through that day (UTC), expired after
//! intern        2026-09-01T12:00:00Z
//! ```
//!
//! A line that does not parse is reported with its file and line number and skipped; a
//! file that cannot be read on reload keeps the previous list.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use jiff::Timestamp;
use jiff::civil::Date;

use crate::time::Secs;

/// Why an account counts as disabled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disabled {
    /// Listed without an expiry.
    Listed,
    /// Its expiry has passed.
    Expired(Secs),
    /// The caller (Exim's `disabled=1`) said so.
    Flagged,
}

impl Disabled {
    /// For alerts: `disabled`, `expired since ...`, `flagged disabled by the caller`.
    pub fn describe(self) -> String {
        match self {
            Disabled::Listed => "disabled".into(),
            Disabled::Expired(t) => format!("expired since {}", crate::time::rfc3339(t)),
            Disabled::Flagged => "flagged disabled by the mail server".into(),
        }
    }

    /// When the credentials expired, for expired ones.
    pub fn expired_at(self) -> Option<Secs> {
        match self {
            Disabled::Expired(t) => Some(t),
            _ => None,
        }
    }
}

/// Why the file could not be used.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the accounts file {path}: {source}")]
pub struct AccountsFileError {
    path: PathBuf,
    source: std::io::Error,
}

/// The file's identity, to notice a change.
type Stamp = (Option<SystemTime>, u64, u64);

#[derive(Default)]
struct Loaded {
    /// Account → when its credentials expire (`None`: disabled now).
    accounts: HashMap<Box<str>, Option<Secs>>,
    stamp: Option<Stamp>,
    bad_lines: usize,
}

/// The disabled accounts, swapped whole on reload.
pub struct DisabledAccounts {
    path: Option<PathBuf>,
    fold_case: bool,
    loaded: RwLock<Arc<Loaded>>,
}

fn stamp(path: &Path) -> std::io::Result<Stamp> {
    Ok(stamp_of(&std::fs::metadata(path)?))
}

fn stamp_of(m: &std::fs::Metadata) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    (m.modified().ok(), m.len(), m.ino())
}

/// The most read of the accounts file: 64 MiB, about a million names with expiries. It
/// is read whole into memory; more is a wrong path (`/dev/zero`, a log file).
pub const MAX_ACCOUNTS_FILE_BYTES: u64 = 64 << 20;

const ACCOUNTS_LIMIT: crate::files::Limit = crate::files::Limit {
    what: "the accounts file",
    max_bytes: MAX_ACCOUNTS_FILE_BYTES,
    why: "about a million accounts",
};

/// Parses an expiry: a date (valid through that day, UTC) or an RFC 3339 time.
fn parse_expiry(text: &str) -> Result<Secs, String> {
    if let Ok(t) = text.parse::<Timestamp>() {
        return Ok(t.as_second());
    }
    let date: Date = text
        .parse()
        .map_err(|_| format!("expiry {text:?} is neither YYYY-MM-DD nor an RFC 3339 time"))?;
    let next = date
        .tomorrow()
        .map_err(|e| format!("expiry {text:?}: {e}"))?;
    next.to_zoned(jiff::tz::TimeZone::UTC)
        .map(|z| z.timestamp().as_second())
        .map_err(|e| format!("expiry {text:?}: {e}"))
}

fn parse(path: &Path, text: &str, fold_case: bool) -> Loaded {
    let mut loaded = Loaded::default();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut words = line.split_whitespace();
        let user = words.next().unwrap_or_default();
        let expiry = words.next();
        let result = match (expiry.map(parse_expiry), words.next()) {
            (_, Some(extra)) => Err(format!("unexpected {extra:?} after the expiry")),
            (Some(Err(e)), _) => Err(e),
            (Some(Ok(t)), None) => Ok(Some(t)),
            (None, None) => Ok(None),
        };
        match result {
            Ok(expiry) => {
                let key = if fold_case {
                    user.to_lowercase()
                } else {
                    user.to_string()
                };
                loaded.accounts.insert(key.into(), expiry);
            }
            Err(e) => {
                loaded.bad_lines += 1;
                tracing::warn!(file = %path.display(), line = i + 1, error = %e,
                    "skipping a line of the accounts file");
            }
        }
    }
    loaded
}

impl DisabledAccounts {
    /// No file: nobody is disabled (except by `disabled=1`).
    pub fn empty() -> DisabledAccounts {
        DisabledAccounts {
            path: None,
            fold_case: true,
            loaded: RwLock::new(Arc::new(Loaded::default())),
        }
    }

    /// Reads the file. `fold_case` lowercases names as the engine does.
    pub fn open(path: &Path, fold_case: bool) -> Result<DisabledAccounts, AccountsFileError> {
        let d = DisabledAccounts {
            path: Some(path.to_path_buf()),
            fold_case,
            loaded: RwLock::new(Arc::new(Loaded::default())),
        };
        d.reload()?;
        Ok(d)
    }

    /// Rereads the file if it changed; returns whether it did. On error the previous
    /// list stays.
    pub fn reload(&self) -> Result<bool, AccountsFileError> {
        let Some(path) = &self.path else {
            return Ok(false);
        };
        let err = |source| AccountsFileError {
            path: path.clone(),
            source,
        };
        let now_stamp = stamp(path).map_err(err)?;
        if self.current().stamp == Some(now_stamp) {
            return Ok(false);
        }
        let (bytes, meta) = crate::files::read_bounded(path, ACCOUNTS_LIMIT).map_err(err)?;
        let text = String::from_utf8(bytes).map_err(|_| {
            err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "the accounts file is not UTF-8 text",
            ))
        })?;
        let mut loaded = parse(path, &text, self.fold_case);
        loaded.stamp = Some(stamp_of(&meta));
        tracing::info!(file = %path.display(), accounts = loaded.accounts.len(),
            bad_lines = loaded.bad_lines, "accounts file loaded");
        *self.loaded.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(loaded);
        Ok(true)
    }

    fn current(&self) -> Arc<Loaded> {
        self.loaded
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether `user` (as the engine tracks it) is disabled at `now`.
    pub fn check(&self, user: &str, now: Secs) -> Option<Disabled> {
        let loaded = self.loaded.read().unwrap_or_else(|e| e.into_inner());
        match loaded.accounts.get(user)? {
            None => Some(Disabled::Listed),
            Some(t) if now >= *t => Some(Disabled::Expired(*t)),
            Some(_) => None,
        }
    }

    /// The file, when configured.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// For `ctl status`.
    pub fn status(&self) -> serde_json::Value {
        let loaded = self.current();
        serde_json::json!({
            "file": self.path,
            "accounts": loaded.accounts.len(),
            "bad_lines": loaded.bad_lines,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_users_expiries_and_reports_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disabled");
        std::fs::write(
            &path,
            "# comment\nOldUser\ncontractor 2026-12-31 # note\nintern 2026-09-01T12:00:00Z\nbad 2026-13-45\nx y z\n",
        )
        .unwrap();
        let d = DisabledAccounts::open(&path, true).unwrap();
        assert_eq!(d.check("olduser", 0), Some(Disabled::Listed));
        let end_2026 = "2027-01-01T00:00:00Z"
            .parse::<Timestamp>()
            .unwrap()
            .as_second();
        assert_eq!(d.check("contractor", end_2026 - 1), None);
        assert_eq!(
            d.check("contractor", end_2026),
            Some(Disabled::Expired(end_2026))
        );
        assert!(d.check("intern", end_2026).is_some());
        assert_eq!(d.check("bad", end_2026), None);
        assert_eq!(d.status()["bad_lines"], 2);
        assert_eq!(d.check("nobody", 0), None);
    }

    #[test]
    fn reload_picks_up_changes_and_keeps_the_old_list_on_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disabled");
        std::fs::write(&path, "alice\n").unwrap();
        let d = DisabledAccounts::open(&path, true).unwrap();
        assert!(!d.reload().unwrap(), "unchanged");
        std::fs::write(&path, "bob\nbobby\n").unwrap();
        assert!(d.reload().unwrap());
        assert!(d.check("alice", 0).is_none());
        assert!(d.check("bob", 0).is_some());
        std::fs::remove_file(&path).unwrap();
        assert!(d.reload().is_err());
        assert!(d.check("bob", 0).is_some(), "kept");
        // A FIFO or a device in its place: refused at once, the list in use kept.
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let e = d.reload().unwrap_err().to_string();
        assert!(e.contains("a FIFO") && e.contains("disabled"), "{e}");
        assert!(d.check("bob", 0).is_some(), "kept");
        let e = DisabledAccounts::open(Path::new("/dev/zero"), true)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("a character device"), "{e}");
    }
}
