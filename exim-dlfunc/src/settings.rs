//! The per-process settings that `configure` changes: where the oracle listens, how long
//! a round trip may take, what to answer when it cannot be reached, and the hash nonce.
//!
//! Exim forks a process per SMTP connection (`-bh` and `-bs` keep one process), and each
//! process starts from the defaults below. `configure` may be called any number of times;
//! a bad value is reported and ignored, keeping the previous one.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::args::Pairs;
use crate::pwhash::DEFAULT_NONCE;

/// Where the oracle listens unless `configure{socket=...}` says otherwise.
pub const DEFAULT_SOCKET: &str = "/run/access-oracle/exim.sock";

/// The default bound on one whole round trip (connect, write, read).
pub const DEFAULT_TIMEOUT_MS: u64 = 250;

/// The accepted range of `timeout_ms`.
pub const TIMEOUT_MS_RANGE: std::ops::RangeInclusive<u64> = 1..=60_000;

/// The longest Unix socket path Linux accepts (`sun_path` holds 108 bytes with the NUL).
pub const MAX_SOCKET_PATH_BYTES: usize = 107;

/// What to answer when the oracle cannot give a verdict (unreachable, too slow, a refused
/// argument, an `error` reply to `auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    /// Let mail flow: `check` answers `accept`, `auth` the local password result.
    Accept,
    /// Ask the client to come back later: `check` answers `defer <text>`, `auth` a 435 text.
    Defer,
}

/// The settings of this Exim process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The oracle's Exim socket (`socket=`).
    pub socket: PathBuf,
    /// The bound on one whole round trip (`timeout_ms=`).
    pub timeout: Duration,
    /// The answer when no verdict can be had (`on_error=accept|defer`).
    pub on_error: OnError,
    /// The nonce of the password hash (`hash_nonce=`), the same as Dovecot's
    /// `auth_policy_hash_nonce`.
    pub hash_nonce: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            socket: PathBuf::from(DEFAULT_SOCKET),
            timeout: Duration::from_millis(DEFAULT_TIMEOUT_MS),
            on_error: OnError::Accept,
            hash_nonce: DEFAULT_NONCE.to_string(),
        }
    }
}

/// A `configure` pair that was ignored, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettingError {
    /// A key `configure` does not know.
    UnknownKey(String),
    /// A known key with a value it cannot take; key and what is expected.
    BadValue(&'static str, &'static str),
    /// A value that is not UTF-8; its key.
    NotUtf8(String),
}

impl fmt::Display for SettingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SettingError::UnknownKey(key) => write!(
                f,
                "unknown key {key} ignored (known: socket timeout_ms on_error hash_nonce)"
            ),
            SettingError::NotUtf8(key) => {
                write!(
                    f,
                    "{key}: the value is not valid utf-8; previous value kept"
                )
            }
            SettingError::BadValue(key, expected) => {
                write!(f, "{key}: expected {expected}; previous value kept")
            }
        }
    }
}

impl Settings {
    /// Applies every valid pair and returns one error per pair that was ignored.
    pub fn apply(&mut self, pairs: &Pairs) -> Vec<SettingError> {
        let mut errors = Vec::new();
        for (key, value) in pairs.iter() {
            let Ok(value) = std::str::from_utf8(value) else {
                errors.push(SettingError::NotUtf8(key.to_string()));
                continue;
            };
            if let Err(e) = self.apply_one(key, value) {
                errors.push(e);
            }
        }
        errors
    }

    /// Applies one pair.
    fn apply_one(&mut self, key: &str, value: &str) -> Result<(), SettingError> {
        match key {
            "socket" => {
                let expected = "an absolute path of at most 107 bytes";
                if !value.starts_with('/') || value.len() > MAX_SOCKET_PATH_BYTES {
                    return Err(SettingError::BadValue("socket", expected));
                }
                self.socket = PathBuf::from(value);
            }
            "timeout_ms" => {
                let ms = value
                    .parse::<u64>()
                    .ok()
                    .filter(|ms| TIMEOUT_MS_RANGE.contains(ms))
                    .ok_or(SettingError::BadValue(
                        "timeout_ms",
                        "a whole number of milliseconds from 1 to 60000",
                    ))?;
                self.timeout = Duration::from_millis(ms);
            }
            "on_error" => {
                self.on_error = match value {
                    "accept" => OnError::Accept,
                    "defer" => OnError::Defer,
                    _ => return Err(SettingError::BadValue("on_error", "accept or defer")),
                };
            }
            "hash_nonce" => {
                if value.is_empty() {
                    return Err(SettingError::BadValue("hash_nonce", "a non-empty string"));
                }
                self.hash_nonce = value.to_string();
            }
            _ => return Err(SettingError::UnknownKey(key.to_string())),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Pairs {
        let mut p = Pairs::default();
        for (k, v) in list {
            p.push(k, *v).unwrap();
        }
        p
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let s = Settings::default();
        assert_eq!(s.socket, PathBuf::from("/run/access-oracle/exim.sock"));
        assert_eq!(s.timeout, Duration::from_millis(250));
        assert_eq!(s.on_error, OnError::Accept);
        assert_eq!(s.hash_nonce, "exim-access-default-nonce");
    }

    #[test]
    fn valid_values_apply() {
        let mut s = Settings::default();
        let errors = s.apply(&pairs(&[
            ("socket", "/tmp/o.sock"),
            ("timeout_ms", "60000"),
            ("on_error", "defer"),
            ("hash_nonce", "site secret"),
        ]));
        assert_eq!(errors, []);
        assert_eq!(s.socket, PathBuf::from("/tmp/o.sock"));
        assert_eq!(s.timeout, Duration::from_millis(60_000));
        assert_eq!(s.on_error, OnError::Defer);
        assert_eq!(s.hash_nonce, "site secret");
    }

    #[test]
    fn bad_values_are_reported_and_the_previous_ones_kept() {
        let mut s = Settings::default();
        s.apply(&pairs(&[("timeout_ms", "100")]));
        let before = s.clone();
        let errors = s.apply(&pairs(&[
            ("socket", "relative.sock"),
            ("timeout_ms", "0"),
            ("on_error", "reject"),
            ("hash_nonce", ""),
            ("colour", "blue"),
        ]));
        assert_eq!(errors.len(), 5, "{errors:?}");
        assert_eq!(s, before);
        for bad in ["60001", "-1", "1.5", ""] {
            assert_eq!(s.apply(&pairs(&[("timeout_ms", bad)])).len(), 1, "{bad}");
        }
        let long = format!("/{}", "s".repeat(MAX_SOCKET_PATH_BYTES));
        assert_eq!(s.apply(&pairs(&[("socket", &long)])).len(), 1);
        assert_eq!(s, before);
    }
}
