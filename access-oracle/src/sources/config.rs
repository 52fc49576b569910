//! `[[sources]]`: the log files the daemon follows (the server's follower reads them).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::Format;
use super::tail::StartAt;
use crate::problems::Problems;

/// `[[sources]]`: one log file to follow.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// The file, e.g. `/var/log/exim4/mainlog` or `/var/log/dovecot.log`. It may not
    /// exist yet.
    pub path: PathBuf,
    /// `exim`, `dovecot` or `auto` (decided per line).
    #[serde(default)]
    pub format: Format,
    /// Where to start in a file never read before: `end` (only new lines) or
    /// `beginning`. Afterwards the saved position is used.
    #[serde(default = "default_start_at")]
    pub start_at: StartAt,
    /// The longest wait between two looks at the file when no notification comes.
    #[serde(default = "default_poll_secs")]
    pub poll_secs: u64,
}

fn default_start_at() -> StartAt {
    StartAt::End
}

fn default_poll_secs() -> u64 {
    1
}

impl SourceConfig {
    /// Checks one source, adding each problem found.
    pub fn validate(&self, index: usize, problems: &mut Problems) {
        if !self.path.is_absolute() {
            problems.add(format!(
                "sources[{index}].path must be an absolute path, got {}",
                self.path.display()
            ));
        }
        if self.poll_secs == 0 || self.poll_secs > 3600 {
            problems.add(format!(
                "sources[{index}].poll_secs must be between 1 and 3600, got {}",
                self.poll_secs
            ));
        }
    }
}
