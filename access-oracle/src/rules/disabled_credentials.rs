//! Disabled or expired credentials: any attempt (right password or wrong) on an account
//! listed as disabled, or whose expiry has passed, in the accounts file (`file`, lines
//! `user [expiry]`, see [`crate::enrich::disabled`]), or flagged `disabled=1` by Exim.
//! The attempt itself is refused (`deny` by default: 535 at AUTH, 550 at MAIL / RCPT)
//! and a critical alert raised, again at most every `realert_secs` per account.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::response::Action;
use super::{Response, Rule, Severity, Trip, validate_message};
use crate::enrich::disabled::Disabled;
use crate::problems::Problems;
use crate::track::{Refused, Secs};

/// `[rules.disabled_credentials]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DisabledCredentials {
    /// `enforce` (default) or `observe`: alert with what would have been done and
    /// refuse nothing (`[responses] mode = "observe"` does so for every rule).
    pub mode: crate::rules::Mode,
    /// Whether the rule runs.
    pub enabled: bool,
    /// The alert's severity.
    pub severity: Severity,
    /// The accounts file: one `user [expiry]` per line (expiry `YYYY-MM-DD`, the last
    /// valid day, or an RFC 3339 time); reloaded when it changes.
    pub file: Option<PathBuf>,
    /// How often the file is checked for changes, in seconds.
    pub reload_check_secs: u64,
    /// What the attempt gets: `deny` (default), `defer`, or `alert` (let it through).
    pub response: Action,
    /// What the client sees.
    pub message: String,
    /// A new alert for the same account at most this often, in seconds.
    pub realert_secs: u64,
}

impl Default for DisabledCredentials {
    fn default() -> Self {
        DisabledCredentials {
            mode: crate::rules::Mode::Enforce,
            enabled: true,
            severity: Severity::Critical,
            file: None,
            reload_check_secs: 10,
            response: Action::Deny,
            message: "this account is disabled".into(),
            realert_secs: 3600,
        }
    }
}

/// Checks the `response` of a listing rule: only `alert`, `defer` and `deny` make sense.
pub(crate) fn validate_listing(
    problems: &mut Problems,
    table: &str,
    action: Action,
    message: &str,
    realert_secs: u64,
) {
    if !matches!(action, Action::Alert | Action::Defer | Action::Deny) {
        problems.add(format!(
            "[rules.{table}] response must be \"alert\", \"defer\" or \"deny\" (the request itself is refused)"
        ));
    }
    if realert_secs == 0 || realert_secs > 31 * 86_400 {
        problems.add(format!(
            "[rules.{table}] realert_secs must be between 1 and 2678400 (31 days), got {realert_secs}"
        ));
    }
    validate_message(problems, &format!("[rules.{table}] message"), message);
}

/// The refusal of listing rule `rule` for its response: none for `alert`.
pub(crate) fn refusal(rule: &'static str, action: Action, message: &str) -> Option<Refused> {
    (action != Action::Alert).then(|| Refused {
        rule,
        message: message.into(),
        deny: action == Action::Deny,
    })
}

/// What a listing rule (a disabled account, a listed address) needs to decide.
pub(crate) struct Listing<'a> {
    pub(crate) name: &'static str,
    pub(crate) enabled: bool,
    pub(crate) severity: Severity,
    pub(crate) response: Action,
    pub(crate) message: &'a str,
    pub(crate) realert_secs: u64,
}

impl Listing<'_> {
    /// A request that hit the listing at `now`: the refusal (unless the response is
    /// `alert`) and, unless one was raised within `realert_secs`, the alert, whose
    /// summary and details `describe` gives.
    pub(crate) fn check(
        &self,
        alerted_at: &mut Option<Secs>,
        now: Secs,
        describe: impl FnOnce() -> (String, serde_json::Value),
    ) -> (Option<Refused>, Option<Trip>) {
        if !self.enabled {
            return (None, None);
        }
        let refusal = refusal(self.name, self.response, self.message);
        if alerted_at.is_some_and(|t| now - t < self.realert_secs as Secs) {
            return (refusal, None);
        }
        *alerted_at = Some(now);
        let (summary, details) = describe();
        let trip = Trip {
            rule: self.name,
            severity: self.severity,
            count: 1,
            threshold: 1,
            window_secs: 0,
            response: if refusal.is_some() {
                Response::Refuse
            } else {
                Response::Alert
            },
            expires: now,
            message: Some(self.message.into()),
            summary: Some(summary),
            details: Some(details),
        };
        (refusal, Some(trip))
    }
}

impl DisabledCredentials {
    /// The rule's name in config and alerts.
    pub const NAME: &'static str = "disabled_credentials";

    /// An attempt on a disabled account at `now`: the refusal (if the response refuses)
    /// and, unless one was raised within `realert_secs`, the alert.
    pub fn check(
        &self,
        why: Disabled,
        alerted_at: &mut Option<Secs>,
        user: &str,
        protocol: &str,
        now: Secs,
    ) -> (Option<Refused>, Option<Trip>) {
        let listing = Listing {
            name: Self::NAME,
            enabled: self.enabled,
            severity: self.severity,
            response: self.response,
            message: &self.message,
            realert_secs: self.realert_secs,
        };
        listing.check(alerted_at, now, || {
            let why_text = why.describe();
            (
                format!("{protocol} attempt on account {user}, which is {why_text}"),
                json!({ "status": why_text, "expired_at": why.expired_at().map(crate::time::rfc3339) }),
            )
        })
    }
}

impl Rule for DisabledCredentials {
    const NAME: &'static str = Self::NAME;

    fn mode(&self) -> crate::rules::Mode {
        self.mode
    }
    type AccountSlot = Option<Secs>;
    type IpSlot = ();

    fn validate(&self, problems: &mut Problems) {
        validate_listing(
            problems,
            Self::NAME,
            self.response,
            &self.message,
            self.realert_secs,
        );
        if self.reload_check_secs == 0 || self.reload_check_secs > 86_400 {
            problems.add(format!(
                "[rules.{}] reload_check_secs must be between 1 and 86400, got {}",
                Self::NAME,
                self.reload_check_secs
            ));
        }
        if let Some(f) = &self.file
            && !f.is_absolute()
        {
            problems.add(format!(
                "[rules.{}] file must be an absolute path, got {}",
                Self::NAME,
                f.display()
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_every_time_alerts_once_per_period() {
        let rule = DisabledCredentials::default();
        let mut at = None;
        let (r, t) = rule.check(Disabled::Listed, &mut at, "eve", "smtp", 100);
        assert_eq!(
            r,
            Some(Refused {
                rule: DisabledCredentials::NAME,
                message: "this account is disabled".into(),
                deny: true,
            })
        );
        let t = t.expect("alert");
        assert_eq!(t.severity, Severity::Critical);
        assert_eq!(
            t.summary.as_deref(),
            Some("smtp attempt on account eve, which is disabled")
        );
        let (r, t) = rule.check(Disabled::Listed, &mut at, "eve", "imap", 200);
        assert!(r.is_some() && t.is_none());
        assert!(
            rule.check(Disabled::Listed, &mut at, "eve", "imap", 3700)
                .1
                .is_some()
        );
    }
}
