//! `[reports]`: the compliance report the daemon writes, and mails, after each period.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::problems::Problems;

/// How often a report is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    /// Each day (UTC), after midnight.
    Daily,
    /// Each week, Monday to Monday (UTC).
    Weekly,
    /// Each calendar month (UTC).
    Monthly,
}

impl Schedule {
    /// `daily`, `weekly` or `monthly`.
    pub fn as_str(self) -> &'static str {
        match self {
            Schedule::Daily => "daily",
            Schedule::Weekly => "weekly",
            Schedule::Monthly => "monthly",
        }
    }
}

/// The format of a scheduled report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportFormat {
    /// One self-contained HTML page (default).
    #[default]
    Html,
    /// One JSON document (`docs/REPORTS.md`).
    Json,
}

/// `[reports]`: off unless `schedule` is set.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReportsConfig {
    /// `daily`, `weekly` or `monthly`: after each such period ends (UTC) the daemon
    /// writes its report once, even across restarts (what was done is kept in
    /// `<state_dir>/reports.json`).
    pub schedule: Option<Schedule>,
    /// Where the reports are written (absolute; created 0700):
    /// `exim-access-<schedule>-<first day>.html`.
    pub dir: Option<PathBuf>,
    /// `html` (default) or `json`.
    pub format: ReportFormat,
    /// Addresses the report is mailed to, attached, through the local MTA; none: only
    /// written.
    pub email_to: Vec<String>,
    /// `From:` of that mail; default `exim-access@<hostname>`.
    pub from: Option<String>,
    /// The MTA's sendmail (Exim's); default `/usr/sbin/sendmail`.
    pub sendmail: Option<PathBuf>,
}

impl ReportsConfig {
    /// Adds each problem to `p`.
    pub fn validate(&self, p: &mut Problems) {
        if self.schedule.is_none() {
            if self.dir.is_some() || !self.email_to.is_empty() {
                p.add("[reports] dir and email_to need a schedule (daily, weekly or monthly)");
            }
            return;
        }
        match &self.dir {
            None => p.add("[reports] schedule needs dir: where the reports are written"),
            Some(d) if !d.is_absolute() => p.add(format!(
                "[reports] dir must be an absolute path, got {}",
                d.display()
            )),
            Some(_) => {}
        }
        for to in &self.email_to {
            if let Err(e) = crate::sinks::email::configured_mailbox("[reports] email_to", to) {
                p.add(e);
            }
        }
        if !self.email_to.is_empty()
            && let Err(e) = crate::sinks::email::sender("[reports] from", self.from.as_deref())
        {
            p.add(e);
        }
        if let Some(s) = &self.sendmail {
            let mut own = Vec::new();
            crate::sinks::email::check_sendmail("[reports] sendmail", s, &mut own);
            for problem in own {
                p.add(problem);
            }
        }
    }

    /// The sendmail program.
    pub fn sendmail(&self) -> PathBuf {
        self.sendmail
            .clone()
            .unwrap_or_else(crate::sinks::email::default_sendmail)
    }
}
