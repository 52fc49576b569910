//! Scheduled reports (`[reports]`): after each day, week or month ends (UTC), the daemon
//! writes that period's report into `dir` and mails it to `email_to` through the local
//! MTA, once, even across restarts.
//!
//! What was done is kept in `<state_dir>/reports.json` (`{"written": END, "sent": END}`,
//! the end of the last period written and mailed; temporary file, fsync, rename): a
//! restart neither writes nor mails a period again, and a period missed while the
//! daemon was down is made at the next start (only the last complete one: a report of
//! an older period is `access-oracle report --since ... --until ...`). A mail that
//! could not be sent is tried again at the next check (every minute) until it is. The
//! work runs off the async threads; a verdict never waits for it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::{Format, Options, Period, Shown};
use crate::config::Config;
use crate::config::reports::{ReportFormat, ReportsConfig, Schedule};

/// The file in the state directory that says what was done.
pub const STATE_FILE: &str = "reports.json";

/// How often the daemon checks whether a period has ended.
const CHECK: Duration = Duration::from_secs(60);

/// How long after the start the first check is made.
const FIRST_CHECK: Duration = Duration::from_secs(2);

/// What was done, by period end.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Done {
    /// The end of the last period whose report was written.
    pub written: Option<Timestamp>,
    /// The end of the last period whose report was mailed.
    pub sent: Option<Timestamp>,
}

/// What one check did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checked {
    /// Nothing: reports are off.
    Off,
    /// The last period's report was written and mailed (or not to be mailed) already.
    UpToDate,
    /// Done now: the file written (if it was now), and whether it was mailed now.
    Made {
        /// The report written now, if it was not before.
        written: Option<PathBuf>,
        /// Whether it was mailed now.
        mailed: bool,
    },
}

fn period(s: Schedule) -> Period {
    match s {
        Schedule::Daily => Period::Day,
        Schedule::Weekly => Period::Week,
        Schedule::Monthly => Period::Month,
    }
}

fn read_done(state_dir: &Path) -> Done {
    let path = state_dir.join(STATE_FILE);
    let limit = crate::files::Limit {
        what: "the scheduled reports' record",
        max_bytes: 64 * 1024,
        why: "it holds two times",
    };
    match crate::files::read_bounded(&path, limit) {
        Ok((bytes, _)) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            tracing::error!(file = %path.display(), error = %e,
                "scheduled reports: the record of what was done does not read; the last period's report is made again");
            Done::default()
        }),
        Err(_) => Done::default(),
    }
}

fn save_done(state_dir: &Path, done: &Done) -> anyhow::Result<()> {
    let path = state_dir.join(STATE_FILE);
    let tmp = state_dir.join(format!("{STATE_FILE}.tmp"));
    let bytes = serde_json::to_vec(done)?;
    {
        use std::io::Write;
        let mut f = crate::files::private_create()
            .open(&tmp)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        f.write_all(&bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot replace {}", path.display()))?;
    Ok(())
}

/// The report's file name for the period starting at `since`.
pub fn file_name(schedule: Schedule, format: ReportFormat, since: Timestamp) -> String {
    let day = since.strftime("%Y-%m-%d");
    let ext = match format {
        ReportFormat::Html => "html",
        ReportFormat::Json => "json",
    };
    format!("exim-access-{}-{day}.{ext}", schedule.as_str())
}

/// One check at `now`: writes and mails the last complete period's report if that was
/// not done. Blocking (reads the whole period of the trail).
pub fn check(config: &Config, now: Timestamp) -> anyhow::Result<(Checked, Option<Mail>)> {
    let reports = &config.raw.reports;
    let (Some(schedule), Some(dir)) = (reports.schedule, reports.dir.as_ref()) else {
        return Ok((Checked::Off, None));
    };
    let now = Timestamp::from_second(now.as_second()).unwrap_or(now);
    let (since, until) = period(schedule).bounds(now)?;
    let mut done = read_done(&config.state_dir);
    let to_mail = !reports.email_to.is_empty();
    let path = dir.join(file_name(schedule, reports.format, since));
    let mut written = None;
    if done.written.is_none_or(|w| w < until) || !path.exists() {
        crate::files::create_private_dir(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let format = match reports.format {
            ReportFormat::Html => Format::Html,
            ReportFormat::Json => Format::Json,
        };
        let options = Options {
            config: None,
            state_dir: None,
            dir: None,
            key_file: None,
            since: Some(since),
            until: Some(until),
            period: None,
            user: None,
            format,
            output: Some(path.clone()),
            pseudonymise: false,
            truncate_addresses: false,
        };
        let audit = &config.raw.audit;
        let (geo, geo_text) = super::open_geoip(&config.raw.geoip);
        let report = super::build(
            &audit.dir(&config.state_dir),
            &audit.key_file(&config.state_dir),
            &config.state_dir,
            (&geo, geo_text),
            &options,
            &Shown::plain(false),
            now,
        )?;
        let _ = std::fs::remove_file(&path);
        super::write(&report, format, Some(&path))?;
        done.written = Some(until);
        save_done(&config.state_dir, &done)?;
        tracing::info!(schedule = schedule.as_str(), file = %path.display(),
            since = %since, until = %until, "scheduled report written");
        written = Some(path.clone());
    }
    let mail = (to_mail && done.sent.is_none_or(|s| s < until)).then(|| Mail {
        path: path.clone(),
        schedule,
        since,
        until,
    });
    if written.is_none() && mail.is_none() {
        return Ok((Checked::UpToDate, None));
    }
    Ok((
        Checked::Made {
            written,
            mailed: false,
        },
        mail,
    ))
}

/// A report to mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mail {
    /// The report's file.
    pub path: PathBuf,
    /// Its schedule.
    pub schedule: Schedule,
    /// Its period.
    pub since: Timestamp,
    /// Its period's end.
    pub until: Timestamp,
}

/// Mails the report to `email_to` through sendmail and records it as sent.
pub async fn send(config: &Config, mail: &Mail) -> anyhow::Result<()> {
    use crate::sinks::email::{Letter, Sendmail, configured_mailbox, sender, subject_line};
    let reports: &ReportsConfig = &config.raw.reports;
    let from = sender("[reports] from", reports.from.as_deref()).map_err(anyhow::Error::msg)?;
    let to = reports
        .email_to
        .iter()
        .map(|t| configured_mailbox("[reports] email_to", t))
        .collect::<Result<Vec<_>, _>>()
        .map_err(anyhow::Error::msg)?;
    let limit = crate::files::Limit {
        what: "a report",
        max_bytes: 64 * 1024 * 1024,
        why: "a mail attachment",
    };
    let (text, _) = crate::files::read_bounded(&mail.path, limit)
        .with_context(|| format!("cannot read {}", mail.path.display()))?;
    let text = String::from_utf8_lossy(&text).into_owned();
    let name = mail
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "report".into());
    let kind = match reports.format {
        ReportFormat::Html => "text/html; charset=utf-8",
        ReportFormat::Json => "application/json",
    };
    let message = Letter {
        from: &from,
        to: &to,
        subject: subject_line(
            "[exim-access]",
            &format!(
                "{} access report {} to {}",
                mail.schedule.as_str(),
                mail.since.strftime("%Y-%m-%d"),
                mail.until.strftime("%Y-%m-%d")
            ),
        ),
        body: format!(
            "The exim-access {} report for {} to {} (UTC) is attached ({name}).\n\
             It is also kept at {} on the mail server.\n",
            mail.schedule.as_str(),
            mail.since,
            mail.until,
            mail.path.display()
        ),
        attachment: Some((&name, kind, text)),
    }
    .message()
    .map_err(anyhow::Error::msg)?;
    let sendmail = Sendmail {
        program: reports.sendmail(),
        timeout: Duration::from_secs(60),
        retries: 2,
    };
    sendmail
        .send("reports", &message)
        .await
        .result
        .map_err(|e| anyhow::anyhow!("sendmail failed: {e}"))?;
    let mut done = read_done(&config.state_dir);
    done.sent = Some(mail.until);
    save_done(&config.state_dir, &done)?;
    tracing::info!(
        schedule = mail.schedule.as_str(),
        to = reports.email_to.join(", "),
        "scheduled report mailed"
    );
    Ok(())
}

/// The daemon's task: a check at start and every minute until `stop`.
pub async fn run(config: Config, mut stop: watch::Receiver<bool>) {
    if config.raw.reports.schedule.is_none() {
        return;
    }
    // The trail is opened as the server starts: the first check waits for it.
    tokio::select! {
        () = tokio::time::sleep(FIRST_CHECK) => {}
        r = stop.changed() => if r.is_err() || *stop.borrow() { return },
    }
    let mut first = true;
    loop {
        let c = config.clone();
        let checked = tokio::task::spawn_blocking(move || check(&c, Timestamp::now())).await;
        match checked {
            Ok(Ok((Checked::UpToDate, _))) if first => {
                tracing::info!("scheduled reports: the last period's report was already made")
            }
            Ok(Ok((_, Some(mail)))) => {
                if let Err(e) = send(&config, &mail).await {
                    tracing::error!(error = %e, file = %mail.path.display(),
                        "scheduled report not mailed; tried again in a minute");
                }
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %format!("{e:#}"),
                "scheduled report not made; tried again in a minute"),
            Err(e) => tracing::error!(error = %e, "scheduled report task failed"),
        }
        first = false;
        tokio::select! {
            () = tokio::time::sleep(CHECK) => {}
            r = stop.changed() => if r.is_err() || *stop.borrow() { return },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RawConfig;

    fn config(dir: &Path, schedule: &str) -> Config {
        let text = format!(
            "[server]\nstate_dir = {:?}\n\n[reports]\nschedule = {schedule:?}\ndir = {:?}\n",
            dir.join("state"),
            dir.join("reports")
        );
        let raw: RawConfig = toml::from_str(&text).unwrap();
        Config::from_raw(raw).unwrap()
    }

    #[test]
    fn each_period_is_written_once_and_again_only_when_the_next_ends() {
        let dir = tempfile::tempdir().unwrap();
        let c = config(dir.path(), "daily");
        std::fs::create_dir_all(&c.state_dir).unwrap();
        std::fs::create_dir_all(c.raw.audit.dir(&c.state_dir)).unwrap();
        let day2 = Timestamp::from_second(1_800_086_400 + 3600).unwrap();
        let (first, mail) = check(&c, day2).unwrap();
        assert!(mail.is_none());
        let Checked::Made {
            written: Some(path),
            ..
        } = first
        else {
            panic!("{first:?}")
        };
        assert!(
            path.ends_with("exim-access-daily-2027-01-15.html"),
            "{path:?}"
        );
        let html = std::fs::read_to_string(&path).unwrap();
        assert!(html.contains("<svg"), "a report page");
        // Later the same day, and after a "restart" (state read from the file): done.
        let later = Timestamp::from_second(1_800_086_400 + 20_000).unwrap();
        assert_eq!(check(&c, later).unwrap().0, Checked::UpToDate);
        // The next day ends: its report.
        let day3 = Timestamp::from_second(1_800_172_800 + 60).unwrap();
        let (next, _) = check(&c, day3).unwrap();
        assert!(matches!(next, Checked::Made { written: Some(p), .. }
            if p.ends_with("exim-access-daily-2027-01-16.html")));
        let done = read_done(&c.state_dir);
        // Its end: 2027-01-17T00:00:00Z.
        assert_eq!(done.written.unwrap().as_second(), 1_800_144_000);
    }

    #[test]
    fn a_report_to_mail_is_offered_until_it_was_sent() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config(dir.path(), "weekly");
        c.raw.reports.email_to = vec!["auditor@example.org".into()];
        c.raw.reports.from = Some("exim-access@example.org".into());
        std::fs::create_dir_all(c.raw.audit.dir(&c.state_dir)).unwrap();
        std::fs::create_dir_all(&c.state_dir).unwrap();
        let now = Timestamp::from_second(1_800_086_400 + 3600).unwrap();
        let (_, mail) = check(&c, now).unwrap();
        let mail = mail.expect("to be mailed");
        // Not sent: offered again, not written again.
        let (again, mail2) = check(&c, now).unwrap();
        assert_eq!(
            again,
            Checked::Made {
                written: None,
                mailed: false
            }
        );
        assert_eq!(mail2.as_ref(), Some(&mail));
        let mut done = read_done(&c.state_dir);
        done.sent = Some(mail.until);
        save_done(&c.state_dir, &done).unwrap();
        assert_eq!(check(&c, now).unwrap().0, Checked::UpToDate);
    }

    #[test]
    fn settings_are_checked() {
        let raw: RawConfig =
            toml::from_str("[reports]\nschedule = \"daily\"\nemail_to = [\"not an address\"]\n")
                .unwrap();
        let err = Config::from_raw(raw).unwrap_err().to_string();
        assert!(err.contains("[reports] schedule needs dir"), "{err}");
        assert!(
            err.contains("[reports] email_to is not an e-mail address"),
            "{err}"
        );
    }
}
