//! `[notify_owner]`: "Was this you?", an e-mail to the account's owner when one of the
//! rules named trips for the account: what happened, from where, and what to do, in the
//! admin's words. Off by default.
//!
//! ```toml
//! [notify_owner]
//! enabled = true
//! rules = ["new_country", "impossible_travel", "failed_logins_account"]
//! address = "{user}@example.org"     # for accounts that are not addresses themselves
//! every_secs = 86400                 # at most one notice per account per day
//! from = "postmaster@example.org"    # default exim-access@<this host's name>
//! sendmail = "/usr/sbin/sendmail"
//! subject = "Was this you? Sign-in activity on your mail account"
//! template_file = "/etc/access-oracle/was-this-you.txt"   # default: the text below
//! ```
//!
//! **Where it goes.** An account that looks like an address (it holds an `@`) is the
//! address; else `address` with `{user}` replaced by the account. The result must be a
//! plain address (letters, digits and `.!#$%&'*+/=?^_`{|}~-` before the `@`, a host
//! name after it): an account name that makes anything else (spaces, quotes, control
//! characters, a second `@`) is skipped, logged (escaped) and counted as failed in
//! `ctl status`, never put in a header or on sendmail's command line.
//!
//! **How often.** At most one notice per account per `every_secs`: the time of the last
//! one sent to each account is kept in memory and in `<state_dir>/notify_owner.json`
//! (written after each notice, temporary file and rename), so a restart does not send
//! them again. A notice not sent for that reason is counted as held back in `ctl status`.
//! A notice that could not be sent is not remembered: the next trip tries again.
//!
//! **What it says.** `template_file` (or the text in [`DEFAULT_TEMPLATE`]) with the
//! placeholders `{user}`, `{rule}`, `{time}`, `{ip}`, `{rdns}`, `{country}`,
//! `{protocol}`, `{summary}` and `{action}` filled in; every value from outside (the
//! account, the reverse name) has its control characters escaped. Any other
//! `{placeholder}` is refused by `check-config`.
//!
//! It runs as one more sink ([`build`] gives its settings and the running sink, which
//! `serve` adds to the others), fed from the same fan-out: its own queue, its counters in
//! `ctl status` (as `notify_owner`), never in the way of a verdict. It sees every alert
//! ungrouped and ignores those of other rules or without an account. Sending is the
//! e-mail sink's: `sendmail -i -f FROM -- OWNER`, no shell, a 30 s timeout, two retries.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use jiff::Timestamp;
use lettre::message::Mailbox;
use serde::{Deserialize, Serialize};

use super::email::{self, Letter, Sendmail};
use super::{BuildContext, Delivery, Outcome, Settings, Sink, SinkCounters, SinkTable};
use crate::alert::Alert;
use crate::problems::Problems;
use crate::rules::{Response, RulesConfig, Severity};

/// The name of the sink in logs and `ctl status`.
pub const NAME: &str = "notify_owner";

/// The file under the state directory that keeps when each account was last notified.
pub const STATE_FILE: &str = "notify_owner.json";

/// The placeholders a notice's text may use.
pub const PLACEHOLDERS: &[&str] = &[
    "user", "rule", "time", "ip", "rdns", "country", "protocol", "summary", "action",
];

/// The text of a notice when `template_file` is not set.
pub const DEFAULT_TEMPLATE: &str = "\
Hello,

this is an automatic message from your mail service about the mail account {user}.

What happened: {summary}
When:          {time}
From:          {ip} ({rdns}), country {country}
Using:         {protocol}
What was done: {action}

If this was you (a new phone, a trip abroad, a mistyped password), there is nothing
to do.

If it was not you, someone else may know your password:
  1. Change your password now, and use it nowhere else.
  2. Contact the mail administrators and tell them about this message.

Please do not reply to this message.

(rule: {rule})
";

/// How long one run of sendmail may take.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// More tries after a failed run.
const SEND_RETRIES: u32 = 2;

/// The largest template file read.
const MAX_TEMPLATE_BYTES: u64 = 64 * 1024;

/// The largest state file read.
const MAX_STATE_BYTES: u64 = 64 << 20;

/// `[notify_owner]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyOwnerConfig {
    /// Whether owners are told; default: when `rules` names any (no `[notify_owner]`,
    /// or no rules: off).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// The rules whose alerts tell the owner (`new_country`, `impossible_travel`, ...);
    /// at least one when enabled.
    pub rules: Vec<String>,
    /// The owner's address for an account that is not an address itself, with `{user}`
    /// standing for the account: `"{user}@example.org"`. Without it only accounts that
    /// are addresses are told.
    pub address: Option<String>,
    /// At most one notice per account per this many seconds; default 86400.
    pub every_secs: u64,
    /// The sender (`From:` and `sendmail -f`); default `exim-access@<this host's name>`.
    pub from: Option<String>,
    /// The sendmail program (an absolute path); default `/usr/sbin/sendmail`.
    pub sendmail: PathBuf,
    /// The subject of every notice.
    pub subject: String,
    /// A text file with the notice's text and placeholders `{user}` `{rule}` `{time}`
    /// `{ip}` `{rdns}` `{country}` `{protocol}` `{summary}` `{action}`; default a
    /// built-in text (what happened, from where, change your password, tell the
    /// administrators if it was not you).
    pub template_file: Option<PathBuf>,
}

impl NotifyOwnerConfig {
    /// Whether owners are told: `enabled`, else whether `rules` names any.
    pub fn on(&self) -> bool {
        self.enabled.unwrap_or(!self.rules.is_empty())
    }
}

impl Default for NotifyOwnerConfig {
    fn default() -> Self {
        NotifyOwnerConfig {
            enabled: None,
            rules: Vec::new(),
            address: None,
            every_secs: 86_400,
            from: None,
            sendmail: email::default_sendmail(),
            subject: "Was this you? Sign-in activity on your mail account".into(),
            template_file: None,
        }
    }
}

impl NotifyOwnerConfig {
    /// Checks the settings (values only, nothing on disk), adding each problem;
    /// `sinks` are the `[[sinks]]` tables, whose names must not take this one's.
    pub fn validate(&self, sinks: &[SinkTable], problems: &mut Problems) {
        let mut own = Vec::new();
        for rule in &self.rules {
            if !RulesConfig::NAMES.contains(&rule.as_str()) {
                own.push(format!(
                    "rules: unknown rule {:?}; known: {}",
                    crate::text::escape_controls(rule),
                    RulesConfig::NAMES.join(", ")
                ));
            }
        }
        if self.on() && self.rules.is_empty() {
            own.push(
                "rules must name at least one rule whose alerts tell the owner, e.g. rules = [\"new_country\"]"
                    .into(),
            );
        }
        if let Some(template) = &self.address
            && let Err(e) = check_address_template(template)
        {
            own.push(format!("address: {e}"));
        }
        if self.every_secs == 0 || self.every_secs > 366 * 86_400 {
            own.push(format!(
                "every_secs must be between 1 and 31622400 (a year), got {}",
                self.every_secs
            ));
        }
        if self.on()
            && let Err(e) = email::sender("from", self.from.as_deref())
        {
            own.push(e);
        }
        email::check_sendmail("sendmail", &self.sendmail, &mut own);
        if self.subject.trim().is_empty()
            || self.subject.chars().count() > email::MAX_SUBJECT_CHARS
            || self.subject.chars().any(char::is_control)
        {
            own.push(format!(
                "subject must be 1 to {} characters without control characters",
                email::MAX_SUBJECT_CHARS
            ));
        }
        if let Some(path) = &self.template_file {
            super::absolute("template_file", path, &mut own);
        }
        if self.on() && sinks.iter().any(|t| t.name == NAME) {
            own.push(format!(
                "a [[sinks]] entry is named {NAME}, the name of this notice in ctl status: rename it"
            ));
        }
        for p in own {
            problems.add(format!("[notify_owner] {p}"));
        }
    }

    /// Looks at what an enabled notice uses (the sendmail program, the template file)
    /// without changing anything, for `check-config` and `serve`'s preflight.
    pub fn preflight(&self, problems: &mut Problems) {
        if !self.on() {
            return;
        }
        let mut own = Vec::new();
        email::preflight_sendmail("sendmail", &self.sendmail, &mut own);
        if let Err(e) = self.template() {
            own.push(e);
        }
        for p in own {
            problems.add(format!("[notify_owner] {p}"));
        }
    }

    /// The notice's text: the template file, checked, or [`DEFAULT_TEMPLATE`].
    pub fn template(&self) -> Result<String, String> {
        let Some(path) = &self.template_file else {
            return Ok(DEFAULT_TEMPLATE.to_string());
        };
        let limit = crate::files::Limit {
            what: "the notice template",
            max_bytes: MAX_TEMPLATE_BYTES,
            why: "a notice is a short text",
        };
        let text = crate::files::read_text_bounded(path, limit)
            .map_err(|e| format!("template_file {}: {e}", path.display()))?;
        check_placeholders(&text, PLACEHOLDERS)
            .map_err(|e| format!("template_file {}: {e}", path.display()))?;
        if text.trim().is_empty() {
            return Err(format!("template_file {} is empty", path.display()));
        }
        Ok(text)
    }
}

/// When enabled, the sink's settings (named [`NAME`], every alert, no grouping: the
/// notice has its own limit) and the running sink, to add to the others; `None` when
/// off. Reads the template and the state file.
pub fn build(
    config: &NotifyOwnerConfig,
    ctx: &BuildContext,
) -> std::io::Result<Option<(Settings, Box<dyn Sink>)>> {
    if !config.on() {
        return Ok(None);
    }
    let table = SinkTable {
        min_severity: Severity::Info,
        group_secs: Some(0),
        ..SinkTable::new(NAME, NAME)
    };
    let settings = Settings::of(&table, NAME);
    let sink = OwnerSink::new(config, &ctx.state_dir, settings.counters.clone())?;
    Ok(Some((settings, Box::new(sink))))
}

/// Checks that `text` uses only the placeholders `allowed` (`{name}`: lowercase letters
/// and `_` between braces).
pub fn check_placeholders(text: &str, allowed: &[&str]) -> Result<(), String> {
    let unknown: Vec<&str> = placeholders(text)
        .filter(|p| !allowed.contains(p))
        .collect();
    if unknown.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "unknown placeholder {}; known: {}",
            unknown
                .iter()
                .map(|p| format!("{{{p}}}"))
                .collect::<Vec<_>>()
                .join(", "),
            allowed
                .iter()
                .map(|p| format!("{{{p}}}"))
                .collect::<Vec<_>>()
                .join(" ")
        ))
    }
}

/// The names of the `{placeholders}` in `text`.
fn placeholders(text: &str) -> impl Iterator<Item = &str> {
    text.split('{').skip(1).filter_map(|rest| {
        let (name, _) = rest.split_once('}')?;
        (!name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
            .then_some(name)
    })
}

/// `text` with each `{name}` of `values` replaced by its value (one pass: a value is
/// never searched for placeholders).
pub fn render(text: &str, values: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(text.len() + 256);
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let replaced = after.split_once('}').and_then(|(name, tail)| {
            values
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v, tail))
        });
        match replaced {
            Some((value, tail)) => {
                out.push_str(value);
                rest = tail;
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Checks an `address` template: `{user}` once, no other placeholder, and a plain
/// address once filled in.
pub fn check_address_template(template: &str) -> Result<(), String> {
    check_placeholders(template, &["user"])?;
    if template.matches("{user}").count() != 1 {
        return Err(format!(
            "must hold {{user}} once, like \"{{user}}@example.org\", got {:?}",
            crate::text::escape_controls(template)
        ));
    }
    let sample = template.replace("{user}", "user");
    plain_address(&sample).map(|_| ()).map_err(|e| {
        format!(
            "{:?} does not make an address ({e})",
            crate::text::escape_controls(template)
        )
    })
}

/// The owner's address for `account`: the account itself when it holds an `@`, else
/// `template` filled in; only a plain address ([`plain_address`]).
pub fn owner_address(template: Option<&str>, account: &str) -> Result<Mailbox, String> {
    let candidate = if account.contains('@') {
        account.to_string()
    } else {
        match template {
            Some(t) => t.replace("{user}", account),
            None => return Err("not an address, and [notify_owner] address is not set".into()),
        }
    };
    plain_address(&candidate)
}

/// `text` as an address if it is a plain one: an ASCII dot-atom local part (letters,
/// digits, ``.!#$%&'*+/=?^_`{|}~-``, no leading, trailing or double dot, at most 64), one
/// `@`, and a host name (letters, digits and `-` in dot-separated labels, at most 253).
/// Nothing that could be quoted, folded or read as an option.
pub fn plain_address(text: &str) -> Result<Mailbox, String> {
    let Some((local, domain)) = text.split_once('@') else {
        return Err("no @".into());
    };
    let atom = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+/=?^_`{|}~-".contains(&b);
    if local.is_empty()
        || local.len() > 64
        || local.starts_with('.')
        || local.ends_with('.')
        || local.contains("..")
        || !local.bytes().all(|b| atom(b) || b == b'.')
    {
        return Err("the part before the @ is not a plain local part".into());
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if domain.is_empty() || domain.len() > 253 || !domain.split('.').all(label_ok) {
        return Err("the part after the @ is not a host name".into());
    }
    let address = lettre::Address::new(local, domain).map_err(|e| e.to_string())?;
    Ok(Mailbox::new(None, address))
}

/// When each account was last told, and the limit: at most one notice per account per
/// `every_secs`. Plain data on the `now` it is given.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Limiter {
    every_secs: i64,
    last: HashMap<String, i64>,
}

impl Limiter {
    /// A limiter with nobody told yet.
    pub fn new(every_secs: u64) -> Limiter {
        Limiter {
            every_secs: i64::try_from(every_secs).unwrap_or(i64::MAX),
            last: HashMap::new(),
        }
    }

    /// Whether `account` may be told at `now` (Unix seconds). A last notice more than
    /// one period in the future (the clock was set back) does not hold it back.
    pub fn due(&self, account: &str, now: i64) -> bool {
        match self.last.get(account) {
            None => true,
            Some(&t) => {
                now.saturating_sub(t) >= self.every_secs || t.saturating_sub(now) > self.every_secs
            }
        }
    }

    /// Records a notice sent to `account` at `now`, and forgets the accounts whose
    /// period is over.
    pub fn sent(&mut self, account: &str, now: i64) {
        let every = self.every_secs;
        self.last
            .retain(|_, t| now.saturating_sub(*t) < every && t.saturating_sub(now) <= every);
        self.last.insert(account.to_string(), now);
    }

    /// The accounts told and when, for the state file.
    fn to_json(&self) -> Vec<u8> {
        let sorted: std::collections::BTreeMap<&String, &i64> = self.last.iter().collect();
        serde_json::to_vec_pretty(&sorted).unwrap_or_default()
    }

    /// The limiter saved in `path`; empty (and a warning) when it is missing or
    /// unreadable.
    pub fn load(path: &Path, every_secs: u64) -> Limiter {
        let mut limiter = Limiter::new(every_secs);
        let limit = crate::files::Limit {
            what: "the notify_owner state file",
            max_bytes: MAX_STATE_BYTES,
            why: "far more than the accounts told in a period",
        };
        match crate::files::read_text_bounded(path, limit) {
            Ok(text) => match serde_json::from_str::<HashMap<String, i64>>(&text) {
                Ok(last) => limiter.last = last,
                Err(e) => tracing::warn!(file = %path.display(), error = %e,
                    "[notify_owner] state file unreadable; starting as if nobody was told"),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(file = %path.display(), error = %e,
                "[notify_owner] state file unreadable; starting as if nobody was told"),
        }
        limiter
    }
}

/// Writes `bytes` to `path` through a temporary file and a rename, private.
fn save(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let tmp = path.with_extension("json.tmp");
    let mut f = crate::files::private_create().open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_data()?;
    drop(f);
    std::fs::rename(&tmp, path)
}

/// The running notice.
pub struct OwnerSink {
    rules: Vec<String>,
    address: Option<String>,
    from: Mailbox,
    subject: String,
    template: String,
    sendmail: Sendmail,
    limiter: Limiter,
    state_file: PathBuf,
    counters: Arc<SinkCounters>,
}

/// What to do about one alert.
#[derive(Debug)]
pub enum Plan {
    /// Not for the owner: another rule, or no account.
    Ignore,
    /// The account does not make a plain address (why).
    BadAddress(String),
    /// Told already within `every_secs`.
    Limited,
    /// Send this notice to the account's owner.
    Send(Box<lettre::Message>),
}

impl OwnerSink {
    /// The running notice of `config`, remembering who was told in `state_dir`.
    pub fn new(
        config: &NotifyOwnerConfig,
        state_dir: &Path,
        counters: Arc<SinkCounters>,
    ) -> std::io::Result<OwnerSink> {
        let invalid = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, e);
        let state_file = state_dir.join(STATE_FILE);
        Ok(OwnerSink {
            rules: config.rules.clone(),
            address: config.address.clone(),
            from: email::sender("from", config.from.as_deref()).map_err(invalid)?,
            subject: config.subject.clone(),
            template: config.template().map_err(invalid)?,
            sendmail: Sendmail {
                program: config.sendmail.clone(),
                timeout: SEND_TIMEOUT,
                retries: SEND_RETRIES,
            },
            limiter: Limiter::load(&state_file, config.every_secs),
            state_file,
            counters,
        })
    }

    /// What to do about `alert` at `now` (Unix seconds).
    pub fn plan(&self, alert: &Alert, now: i64) -> Plan {
        if !self.rules.iter().any(|r| r == alert.rule) {
            return Plan::Ignore;
        }
        let Some(account) = alert.account.as_deref() else {
            return Plan::Ignore;
        };
        let to = match owner_address(self.address.as_deref(), account) {
            Ok(to) => to,
            Err(e) => return Plan::BadAddress(e),
        };
        if !self.limiter.due(account, now) {
            return Plan::Limited;
        }
        let body = render(&self.template, &values(alert).as_pairs());
        let letter = Letter {
            from: &self.from,
            to: std::slice::from_ref(&to),
            subject: email::subject_line("", &self.subject),
            body,
            attachment: None,
        };
        match letter.message() {
            Ok(m) => Plan::Send(Box::new(m)),
            Err(e) => Plan::BadAddress(e),
        }
    }
}

/// The placeholders' values for one alert, control characters escaped.
struct Values {
    user: String,
    rule: String,
    time: String,
    ip: String,
    rdns: String,
    country: String,
    protocol: String,
    summary: String,
    action: String,
}

impl Values {
    fn as_pairs(&self) -> [(&'static str, &str); 9] {
        [
            ("user", &self.user),
            ("rule", &self.rule),
            ("time", &self.time),
            ("ip", &self.ip),
            ("rdns", &self.rdns),
            ("country", &self.country),
            ("protocol", &self.protocol),
            ("summary", &self.summary),
            ("action", &self.action),
        ]
    }
}

fn values(alert: &Alert) -> Values {
    let clean = |s: &str| crate::text::escape_controls(s).into_owned();
    let unknown = || "unknown".to_string();
    // The login that tripped the rule, as the context saw it.
    let login = alert.context.as_ref().and_then(|c| {
        c.recent_logins
            .iter()
            .find(|l| l.ip == alert.ip && l.ip.is_some())
    });
    let rdns = alert
        .rdns
        .as_deref()
        .or(login.and_then(|l| l.rdns.as_deref()));
    Values {
        user: alert.account.as_deref().map_or_else(unknown, clean),
        rule: alert.rule.to_string(),
        time: when(alert.time),
        ip: alert.ip.map_or_else(unknown, |ip| ip.to_string()),
        rdns: rdns.map_or_else(|| "no reverse name".into(), clean),
        country: login
            .and_then(|l| l.country.as_deref())
            .map_or_else(unknown, clean),
        protocol: alert.protocol.as_deref().map_or_else(unknown, clean),
        summary: clean(&alert.headline()),
        action: alert
            .context
            .as_ref()
            .and_then(|c| c.action.as_deref())
            .map_or_else(|| action(alert), clean),
    }
}

/// A time for a person: `2027-01-15 08:00:00 UTC`.
fn when(t: Timestamp) -> String {
    t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// What was done, from the response, when the context does not say.
fn action(alert: &Alert) -> String {
    let until = when(alert.expires);
    match alert.response {
        Response::Alert => "nothing was blocked; the administrators were told".into(),
        Response::HoldAccount | Response::DenyAccount => {
            format!("sending and signing in with the account are paused until {until}")
        }
        Response::DeferIpAuth | Response::BlockIp => {
            format!("signing in from that address is blocked until {until}")
        }
        Response::ThrottleRcpt => format!("further recipients are deferred until {until}"),
        Response::Refuse => "the attempt was refused".into(),
    }
}

impl Sink for OwnerSink {
    fn deliver<'a>(&'a mut self, batch: &'a [Arc<Alert>]) -> Delivery<'a> {
        Box::pin(async move {
            let mut outcome = Outcome::default();
            let mut told = false;
            for alert in batch {
                let now = Timestamp::now().as_second();
                match self.plan(alert, now) {
                    Plan::Ignore => {}
                    Plan::Limited => {
                        self.counters.suppressed.fetch_add(1, Ordering::Relaxed);
                    }
                    Plan::BadAddress(why) => {
                        tracing::warn!(
                            account = %crate::text::escape_controls(alert.account.as_deref().unwrap_or("")),
                            rule = alert.rule, why = %why,
                            "[notify_owner] no notice: the account does not make an address"
                        );
                        outcome.failed += 1;
                    }
                    Plan::Send(message) => {
                        let sent = self.sendmail.send(NAME, &message).await;
                        outcome.retried += sent.retried;
                        match sent.result {
                            Ok(()) => {
                                if let Some(account) = &alert.account {
                                    self.limiter.sent(account, now);
                                }
                                told = true;
                                outcome.delivered += 1;
                            }
                            Err(e) => {
                                tracing::error!(program = %self.sendmail.program.display(),
                                    error = %e, rule = alert.rule,
                                    "[notify_owner] sendmail failed; the owner was not told");
                                outcome.failed += 1;
                            }
                        }
                    }
                }
            }
            if told {
                let (path, bytes) = (self.state_file.clone(), self.limiter.to_json());
                match tokio::task::spawn_blocking(move || save(&path, &bytes)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::error!(file = %self.state_file.display(), error = %e,
                        "[notify_owner] cannot save who was told; a restart may tell them again"),
                    Err(e) => tracing::error!(error = %e, "[notify_owner] saving the state failed"),
                }
            }
            outcome
        })
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::alert::{Context, LoginSeen};

    const T0: i64 = 1_800_000_000;

    fn alert(rule: &'static str, account: Option<&str>) -> Alert {
        let time = Timestamp::from_second(T0).unwrap();
        Alert {
            time,
            rule,
            severity: Severity::High,
            account: account.map(str::to_string),
            ip: "192.0.2.7".parse().ok(),
            rdns: None,
            protocol: Some("imap".into()),
            count: 1,
            counts: serde_json::json!({}),
            threshold: 1,
            window_secs: 300,
            response: Response::Alert,
            expires: time,
            summary: format!("login from a new country for {}", account.unwrap_or("-")),
            group: None,
            context: None,
            observed: false,
        }
    }

    fn config(text: &str) -> NotifyOwnerConfig {
        toml::from_str(text).unwrap()
    }

    fn sink(text: &str, state_dir: &Path) -> OwnerSink {
        OwnerSink::new(
            &config(text),
            state_dir,
            Arc::new(SinkCounters::new(NAME, NAME)),
        )
        .unwrap()
    }

    const ON: &str = "enabled = true\nrules = [\"new_country\"]\naddress = \"{user}@example.org\"\nfrom = \"postmaster@example.org\"\n";

    /// The headers as written, and the body decoded from its transfer encoding.
    fn message_text(m: &lettre::Message) -> String {
        let raw = String::from_utf8(m.formatted()).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap();
        let body = if head.contains("Content-Transfer-Encoding: quoted-printable") {
            let joined = body.replace("=\r\n", "");
            let mut out = Vec::new();
            let b = joined.as_bytes();
            let mut i = 0;
            while i < b.len() {
                if b[i] == b'=' {
                    out.push(u8::from_str_radix(&joined[i + 1..i + 3], 16).unwrap());
                    i += 3;
                } else {
                    out.push(b[i]);
                    i += 1;
                }
            }
            String::from_utf8(out).unwrap()
        } else if head.contains("Content-Transfer-Encoding: base64") {
            use base64::Engine as _;
            String::from_utf8(
                base64::engine::general_purpose::STANDARD
                    .decode(body.replace("\r\n", ""))
                    .unwrap(),
            )
            .unwrap()
        } else {
            body.to_string()
        };
        format!("{head}\r\n\r\n{}", body.replace("\r\n", "\n"))
    }

    #[test]
    fn the_owner_is_the_account_if_an_address_else_the_template_filled_in() {
        let t = Some("{user}@example.org");
        let addr = |account: &str| owner_address(t, account).map(|m| m.email.to_string());
        assert_eq!(addr("alice").unwrap(), "alice@example.org");
        assert_eq!(addr("bob@example.net").unwrap(), "bob@example.net");
        assert_eq!(
            addr("first.last+tag").unwrap(),
            "first.last+tag@example.org"
        );
        assert!(owner_address(None, "alice").is_err());
        assert_eq!(
            owner_address(None, "carol@example.com")
                .unwrap()
                .email
                .to_string(),
            "carol@example.com"
        );
        for bad in [
            "a b",
            "alice\r\nBcc: victim@example.net",
            "alice\n",
            "\"quoted\"@example.org",
            "\"a@b\"",
            "a@b@c",
            "alice@",
            "@example.org",
            ".alice",
            "al..ice",
            "alice@exa mple.org",
            "alice@-example.org",
            "alice,bob",
            "alice <x@example.net>",
            "zoë",
            "",
        ] {
            assert!(addr(bad).is_err(), "{bad:?} made {:?}", addr(bad));
        }
        // "-f..." is a plain local part; it can never reach sendmail as an option: the
        // recipients follow "--".
        assert!(addr("-f/etc/passwd").is_ok());
    }

    #[test]
    fn the_address_template_takes_user_only() {
        assert!(check_address_template("{user}@example.org").is_ok());
        assert!(check_address_template("mail-{user}@users.example.org").is_ok());
        let e = check_address_template("{name}@example.org").unwrap_err();
        assert!(e.contains("unknown placeholder {name}"), "{e}");
        let e = check_address_template("postmaster@example.org").unwrap_err();
        assert!(e.contains("must hold {user} once"), "{e}");
        assert!(check_address_template("{user}{user}@example.org").is_err());
        let e = check_address_template("{user} at example.org").unwrap_err();
        assert!(e.contains("does not make an address"), "{e}");
    }

    #[test]
    fn placeholders_are_checked_and_filled_in_once() {
        assert!(check_placeholders(DEFAULT_TEMPLATE, PLACEHOLDERS).is_ok());
        for p in PLACEHOLDERS {
            assert!(DEFAULT_TEMPLATE.contains(&format!("{{{p}}}")), "{p}");
        }
        let e =
            check_placeholders("Hi {user}, {password} {x1} { spaced }", PLACEHOLDERS).unwrap_err();
        assert!(
            e.starts_with("unknown placeholder {password}; known: {user}"),
            "{e}"
        );
        // A value is not searched again: an account named "{rule}" stays itself.
        assert_eq!(
            render(
                "{user} / {rule} / {other} / {",
                &[("user", "{rule}"), ("rule", "r")]
            ),
            "{rule} / r / {other} / {"
        );
    }

    #[test]
    fn at_most_one_notice_per_account_per_period() {
        let mut l = Limiter::new(86_400);
        assert!(l.due("alice", T0));
        l.sent("alice", T0);
        assert!(!l.due("alice", T0));
        assert!(!l.due("alice", T0 + 86_399));
        assert!(l.due("alice", T0 + 86_400));
        assert!(l.due("bob", T0 + 10), "each account has its own period");
        // The clock set back by less than a period keeps the limit, by more lifts it.
        assert!(!l.due("alice", T0 - 3600));
        assert!(l.due("alice", T0 - 86_401));
        // Accounts whose period is over are forgotten when another is told.
        l.sent("bob", T0 + 86_400);
        assert_eq!(l.last.len(), 1);
        assert!(l.last.contains_key("bob"));
    }

    #[test]
    fn who_was_told_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STATE_FILE);
        let mut l = Limiter::new(3600);
        l.sent("alice", T0);
        l.sent("bob@example.net", T0 + 5);
        save(&path, &l.to_json()).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "private: {mode:o}");
        let back = Limiter::load(&path, 3600);
        assert_eq!(back, l);
        assert!(!back.due("alice", T0 + 3599));
        // A missing or damaged file starts empty.
        assert_eq!(
            Limiter::load(&dir.path().join("none"), 60),
            Limiter::new(60)
        );
        std::fs::write(&path, "{not json").unwrap();
        assert_eq!(Limiter::load(&path, 60), Limiter::new(60));
    }

    #[test]
    fn a_notice_for_a_named_rule_with_its_time_limit() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = sink(ON, dir.path());
        let mut a = alert("new_country", Some("alice"));
        a.context = Some(Box::new(Context {
            recent_logins: vec![
                serde_json::from_value::<LoginSeen>(serde_json::json!({
                    "time": a.time,
                    "protocol": "imap",
                    "ip": a.ip,
                    "rdns": "host.example.net",
                    "country": "BR",
                    "outcome": "ok",
                }))
                .unwrap(),
            ],
            ..Context::default()
        }));
        let Plan::Send(m) = s.plan(&a, T0) else {
            panic!("a notice is due")
        };
        let to: Vec<String> = m.envelope().to().iter().map(ToString::to_string).collect();
        assert_eq!(to, ["alice@example.org"]);
        let text = message_text(&m);
        for want in [
            "To: alice@example.org\r\n",
            "From: postmaster@example.org\r\n",
            "Subject: Was this you? Sign-in activity on your mail account\r\n",
            "Auto-Submitted: auto-generated\r\n",
            "about the mail account alice.",
            "What happened: login from a new country for alice",
            "When:          2027-01-15 08:00:00 UTC",
            "From:          192.0.2.7 (host.example.net), country BR",
            "Using:         imap",
            "What was done: nothing was blocked",
            "Change your password now",
            "Contact the mail administrators",
            "(rule: new_country)",
        ] {
            assert!(text.contains(want), "missing {want:?} in:\n{text}");
        }
        assert!(
            !text.contains("multipart"),
            "text only, no JSON for the owner"
        );

        s.limiter.sent("alice", T0);
        assert!(matches!(s.plan(&a, T0 + 60), Plan::Limited));
        assert!(matches!(s.plan(&a, T0 + 86_399), Plan::Limited));
        assert!(matches!(s.plan(&a, T0 + 86_400), Plan::Send(_)));
        // Other rules and alerts without an account are not for the owner.
        assert!(matches!(
            s.plan(&alert("failed_logins_ip", Some("alice")), T0),
            Plan::Ignore
        ));
        assert!(matches!(
            s.plan(&alert("new_country", None), T0),
            Plan::Ignore
        ));
    }

    #[test]
    fn an_account_that_makes_no_address_is_skipped_never_injected() {
        let dir = tempfile::tempdir().unwrap();
        let s = sink(ON, dir.path());
        for evil in [
            "alice\r\nBcc: victim@example.net",
            "a b",
            "\"x\"@example.org",
            "alice\u{85}",
        ] {
            let a = alert("new_country", Some(evil));
            assert!(matches!(s.plan(&a, T0), Plan::BadAddress(_)), "{evil:?}");
        }
        // A strange but plain name is escaped in the text.
        let mut a = alert("new_country", Some("o'brien"));
        a.summary = "login\r\nBcc: victim@example.net for o'brien".into();
        let Plan::Send(m) = s.plan(&a, T0) else {
            panic!("a plain address")
        };
        let text = message_text(&m);
        assert!(!text.contains("\nBcc:"), "{text}");
        assert!(
            text.contains("login\\x0d\\x0aBcc: victim@example.net for o'brien"),
            "{text}"
        );
    }

    #[test]
    fn the_admins_template_is_used_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("notice.txt");
        std::fs::write(&file, "Dear {user}: {summary} from {country} at {time}.\n").unwrap();
        let text = format!("{ON}template_file = \"{}\"\n", file.display());
        let s = sink(&text, dir.path());
        let Plan::Send(m) = s.plan(&alert("new_country", Some("alice")), T0) else {
            panic!("due")
        };
        assert!(message_text(&m).contains(
            "Dear alice: login from a new country for alice from unknown at 2027-01-15 08:00:00 UTC."
        ));
        std::fs::write(&file, "Dear {user}, your {password}\n").unwrap();
        let mut p = Problems::default();
        config(&text).preflight(&mut p);
        let all = p.to_string();
        assert!(all.contains("[notify_owner] template_file"), "{all}");
        assert!(all.contains("unknown placeholder {password}"), "{all}");
        let mut p = Problems::default();
        config(&format!(
            "{ON}template_file = \"{}/none.txt\"\nsendmail = \"/nonexistent/sendmail\"\n",
            dir.path().display()
        ))
        .preflight(&mut p);
        let all = p.to_string();
        assert!(all.contains("none.txt"), "{all}");
        assert!(all.contains("sendmail /nonexistent/sendmail"), "{all}");
        // Off: nothing looked at.
        let mut p = Problems::default();
        NotifyOwnerConfig::default().preflight(&mut p);
        assert!(p.is_empty());
    }

    #[test]
    fn settings_are_checked() {
        let problems = |text: &str, sinks: &[SinkTable]| {
            let mut p = Problems::default();
            config(text).validate(sinks, &mut p);
            p.list().join("\n")
        };
        assert_eq!(problems("", &[]), "");
        assert_eq!(problems(ON, &[]), "");
        let all = problems(
            "enabled = true\nrules = [\"new_country\", \"no_such_rule\"]\n\
             address = \"{name}@example.org\"\nevery_secs = 0\nfrom = \"not an address\"\n\
             sendmail = \"sendmail\"\nsubject = \"a\\r\\nBcc: x\"\ntemplate_file = \"notice.txt\"\n",
            &[SinkTable::new(NAME, "log")],
        );
        for want in [
            "[notify_owner] rules: unknown rule \"no_such_rule\"; known: failed_logins_account",
            "[notify_owner] address: unknown placeholder {name}",
            "[notify_owner] every_secs must be between 1",
            "[notify_owner] from is not an e-mail address",
            "[notify_owner] sendmail must be an absolute path",
            "[notify_owner] subject must be 1 to 200 characters without control characters",
            "[notify_owner] template_file must be an absolute path",
            "[notify_owner] a [[sinks]] entry is named notify_owner",
        ] {
            assert!(all.contains(want), "missing {want:?} in:\n{all}");
        }
        assert!(problems("enabled = true\n", &[]).contains("rules must name at least one rule"));
        assert!(toml::from_str::<NotifyOwnerConfig>("adress = \"x\"").is_err());
    }

    #[tokio::test]
    async fn delivery_sends_once_per_account_and_remembers_it_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let program = dir.path().join("sendmail");
        let log = dir.path().join("sent");
        std::fs::write(
            &program,
            format!("#!/bin/sh\nfor a in \"$@\"; do printf '%s ' \"$a\"; done >> {0}\necho >> {0}\ncat > /dev/null\n", log.display()),
        )
        .unwrap();
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
        let text = format!("{ON}sendmail = \"{}\"\n", program.display());
        let counters = Arc::new(SinkCounters::new(NAME, NAME));
        let mut s = OwnerSink::new(&config(&text), dir.path(), counters.clone()).unwrap();
        let batch = [
            Arc::new(alert("new_country", Some("alice"))),
            Arc::new(alert("new_country", Some("alice"))),
            Arc::new(alert("new_country", Some("bob@example.net"))),
            Arc::new(alert("failed_logins_ip", Some("carol"))),
            Arc::new(alert("new_country", Some("bad name"))),
        ];
        let outcome = s.deliver(&batch).await;
        assert_eq!(
            outcome,
            Outcome {
                delivered: 2,
                failed: 1,
                retried: 0
            }
        );
        assert_eq!(counters.suppressed.load(Ordering::Relaxed), 1);
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            "-i -f postmaster@example.org -- alice@example.org \n\
             -i -f postmaster@example.org -- bob@example.net \n"
        );
        // Started again: the same accounts are not told again within the period.
        let counters = Arc::new(SinkCounters::new(NAME, NAME));
        let mut s = OwnerSink::new(&config(&text), dir.path(), counters.clone()).unwrap();
        let outcome = s.deliver(&batch[..3]).await;
        assert_eq!(outcome, Outcome::default());
        assert_eq!(counters.suppressed.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn off_builds_nothing_on_builds_an_ungrouped_sink() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = BuildContext::new(
            dir.path().into(),
            dir.path().join("alerts.jsonl"),
            &crate::audit::AuditConfig::default(),
        );
        assert!(
            build(&NotifyOwnerConfig::default(), &ctx)
                .unwrap()
                .is_none()
        );
        let (settings, _) = build(&config(ON), &ctx).unwrap().unwrap();
        assert_eq!(settings.name, NAME);
        assert_eq!(settings.group_secs, 0);
        assert_eq!(settings.rate_limit, 0);
        assert_eq!(settings.min_severity, Severity::Info);
    }
}
