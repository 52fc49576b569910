//! `[audit]`: where the audit trail lives, its key, how long it is kept.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::problems::Problems;

/// `[audit]`: the append-only, hash-chained record of who accessed which account.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Whether to keep the trail at all.
    pub enabled: bool,
    /// Its directory; default `<state_dir>/audit`.
    pub dir: Option<PathBuf>,
    /// The chain's secret key (32 bytes or more, raw); default `<state_dir>/audit.key`,
    /// created with mode 0600 when missing. Whoever has it can verify the trail, and
    /// could rewrite it: keep it readable by the oracle and the auditors only.
    pub key_file: Option<PathBuf>,
    /// Segments (one file per UTC day) older than this many days are removed, and the
    /// removal is itself recorded.
    pub retention_days: u32,
    /// How often written records are flushed to disk (`fdatasync`), in milliseconds; 0
    /// flushes after every batch (about every 5 ms under load). Records are written to
    /// the file at once either way, so a crash of the oracle loses none; this bounds
    /// what a power cut can take.
    pub sync_interval_ms: u64,
    /// Whether new records are encrypted at rest (XChaCha20-Poly1305, with a key
    /// derived from `key_file`): the files then show when records were written, not
    /// about whom. `verify` checks the chain either way; `search` needs the key to read
    /// encrypted records. Records already written stay as they are.
    pub encrypt: bool,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            enabled: true,
            dir: None,
            key_file: None,
            retention_days: 400,
            sync_interval_ms: 1000,
            encrypt: false,
        }
    }
}

impl AuditConfig {
    /// Checks the settings, adding each problem found.
    pub fn validate(&self, problems: &mut Problems) {
        for (key, path) in [("dir", &self.dir), ("key_file", &self.key_file)] {
            if let Some(p) = path
                && !p.is_absolute()
            {
                problems.add(format!(
                    "[audit] {key} must be an absolute path, got {}",
                    p.display()
                ));
            }
        }
        if self.sync_interval_ms > 60_000 {
            problems.add(format!(
                "[audit] sync_interval_ms must be at most 60000, got {}",
                self.sync_interval_ms
            ));
        }
        if !(1..=36_500).contains(&self.retention_days) {
            problems.add(format!(
                "[audit] retention_days must be between 1 and 36500, got {}",
                self.retention_days
            ));
        }
    }

    /// The trail's directory.
    pub fn dir(&self, state_dir: &Path) -> PathBuf {
        self.dir.clone().unwrap_or_else(|| state_dir.join("audit"))
    }

    /// The key file.
    pub fn key_file(&self, state_dir: &Path) -> PathBuf {
        self.key_file
            .clone()
            .unwrap_or_else(|| state_dir.join("audit.key"))
    }
}
