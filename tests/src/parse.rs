//! `access-oracle parse` on a log that real Exim or Dovecot wrote during a test.
//!
//! [`ParsedLog::of`] runs the workspace's oracle binary twice on one file: once for the
//! events (one JSON object per line) with `--dead-letters FILE`, once with `--stats` for
//! the counts of unrecognised and dead-lettered lines. Tests then compare the events with
//! what they did to the server, so no stored golden file is needed (the logs hold times,
//! pids and session ids that change every run).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::paths;
use crate::process;

/// What the oracle's parser made of one log file.
#[derive(Debug)]
pub struct ParsedLog {
    /// Every event, in file order.
    pub events: Vec<Value>,
    /// The lines that looked relevant but did not parse, as `--dead-letters` wrote them.
    pub dead_letters: String,
    /// `--stats`: lines that were of no known shape.
    pub unrecognised: u64,
    /// `--stats`: lines that looked relevant but did not parse.
    pub dead_lettered: u64,
    /// The log itself, for messages.
    pub log: String,
}

impl ParsedLog {
    /// Runs `access-oracle parse --format FORMAT FILE` (and `--stats`); panics when the
    /// command fails or prints something that is not JSON.
    pub fn of(format: &str, file: &Path) -> ParsedLog {
        let dead = tempfile::NamedTempFile::new().expect("a dead-letter file");
        let mut cmd = Command::new(paths::oracle_bin());
        cmd.args(["parse", "--format", format, "--dead-letters"])
            .arg(dead.path())
            .arg(file);
        let run = process::run(cmd, b"", Duration::from_secs(60));
        run.assert_success();
        let events = run
            .stdout_text()
            .lines()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("parse printed a line that is not JSON ({e}): {l}"))
            })
            .collect();

        let mut cmd = Command::new(paths::oracle_bin());
        cmd.args(["parse", "--stats", "--format", format]).arg(file);
        let stats = process::run(cmd, b"", Duration::from_secs(60));
        stats.assert_success();
        let stats = stats.stdout_text();
        let count = |row: &str| {
            stats_row(&stats, row)
                .unwrap_or_else(|| panic!("no {row:?} row in parse --stats:\n{stats}"))
        };
        ParsedLog {
            events,
            dead_letters: std::fs::read_to_string(dead.path()).unwrap_or_default(),
            unrecognised: count("unrecognised"),
            dead_lettered: count("dead-lettered"),
            log: std::fs::read_to_string(file).unwrap_or_default(),
        }
    }

    /// The events of `kind`.
    pub fn kind(&self, kind: &str) -> Vec<&Value> {
        self.events.iter().filter(|e| e["kind"] == kind).collect()
    }

    /// The `auth` events with `result` (`ok` or `fail`).
    pub fn auth(&self, result: &str) -> Vec<&Value> {
        self.events
            .iter()
            .filter(|e| e["kind"] == "auth" && e["result"] == result)
            .collect()
    }

    /// The log and the events, for assertion messages.
    pub fn dump(&self) -> String {
        let mut out = format!("--- log\n{}--- events\n", self.log);
        for e in &self.events {
            out.push_str(&e.to_string());
            out.push('\n');
        }
        if !self.dead_letters.is_empty() {
            out.push_str(&format!("--- dead letters\n{}", self.dead_letters));
        }
        out
    }

    /// Asserts that no line looked relevant and failed to parse, and that every line was
    /// of a known shape.
    pub fn assert_all_understood(&self) {
        assert!(
            self.dead_lettered == 0 && self.dead_letters.is_empty(),
            "{} dead letter(s):\n{}",
            self.dead_lettered,
            self.dump()
        );
        assert_eq!(self.unrecognised, 0, "unrecognised lines:\n{}", self.dump());
    }
}

/// The total (last column) of a row of the `--stats` table (`| label | ... | N |`).
fn stats_row(table: &str, label: &str) -> Option<u64> {
    table.lines().find_map(|line| {
        let cells: Vec<&str> = line
            .split('|')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect();
        (cells.first() == Some(&label))
            .then(|| cells.last()?.parse().ok())
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_rows_are_read_from_the_table() {
        let table = "+-----+\n|  | total |\n| unrecognised   | 3     |\n|----|\n| dead-lettered  | 0     |\n";
        assert_eq!(stats_row(table, "unrecognised"), Some(3));
        assert_eq!(stats_row(table, "dead-lettered"), Some(0));
        assert_eq!(stats_row(table, "lines"), None);
    }
}
