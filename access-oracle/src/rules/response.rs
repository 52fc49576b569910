//! What a rule does when it fires, as written in its table: `response`, `response_secs`
//! and `message`, shared by the rules added with baselines and enrichment.
//!
//! | `response` | an account rule (new country, travel, spike, ...) | an address rule (spraying, listed address) |
//! |---|---|---|
//! | `alert` | alert only | alert only |
//! | `defer` | hold the account: its AUTH, MAIL, RCPT, DATA get a temporary failure | authentication from the address is deferred |
//! | `deny` | the account's requests are refused (535 / 550) | connections and authentication from the address are refused |
//! | `hold_account` | as `defer` | not allowed (no account) |
//! | `block_ip` | the source address of the event is refused | as `deny` |
//! | `throttle` | recipient rules only: further RCPTs deferred for `response_secs` | not allowed |
//!
//! Every response ends by itself after `response_secs`; `ctl release` and `ctl unblock`
//! end it earlier. The `message` is what the client sees meanwhile.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{Response, Severity, Trip, validate_message};
use crate::problems::Problems;
use crate::time::Secs;

/// A response as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Alert only.
    Alert,
    /// Temporary failures for the rule's subject.
    Defer,
    /// Permanent failures for the rule's subject.
    Deny,
    /// Hold the account (temporary failures).
    HoldAccount,
    /// Refuse the source address.
    BlockIp,
    /// Defer further recipients (recipient rules).
    Throttle,
}

/// Whether a rule's responses are applied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Hold, block, throttle and refuse as configured.
    #[default]
    Enforce,
    /// Alert with what would have been done (`"observed": true`); refuse nothing.
    Observe,
}

/// What a rule is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// An account's logins.
    Account,
    /// An account's sending.
    Sending,
    /// A source address.
    Ip,
}

impl Action {
    /// The response this action means for a rule of `scope`; `None` when it makes no
    /// sense there.
    pub fn resolve(self, scope: Scope) -> Option<Response> {
        Some(match (self, scope) {
            (Action::Alert, _) => Response::Alert,
            (Action::Defer | Action::HoldAccount, Scope::Account | Scope::Sending) => {
                Response::HoldAccount
            }
            (Action::Deny, Scope::Account | Scope::Sending) => Response::DenyAccount,
            (Action::BlockIp | Action::Deny, _) => Response::BlockIp,
            (Action::Defer, Scope::Ip) => Response::DeferIpAuth,
            (Action::Throttle, Scope::Sending) => Response::ThrottleRcpt,
            (Action::HoldAccount | Action::Throttle, _) => return None,
        })
    }
}

/// Defines `fn settings(&self) -> ResponseSettings` for a rule table with the fields
/// `response`, `response_secs` and `message`, in the given [`Scope`].
macro_rules! response_settings {
    ($scope:expr) => {
        fn settings(&self) -> $crate::rules::response::ResponseSettings<'_> {
            $crate::rules::response::ResponseSettings {
                table: Self::NAME,
                scope: $scope,
                action: self.response,
                secs: self.response_secs,
                message: &self.message,
            }
        }
    };
}
pub(crate) use response_settings;

/// The response settings of one rule, borrowed from its table.
pub(crate) struct ResponseSettings<'a> {
    pub(crate) table: &'static str,
    pub(crate) scope: Scope,
    pub(crate) action: Action,
    pub(crate) secs: u64,
    pub(crate) message: &'a str,
}

impl ResponseSettings<'_> {
    /// Checks the settings, adding each problem.
    pub(crate) fn validate(&self, problems: &mut Problems) {
        if self.action.resolve(self.scope).is_none() {
            let why = match self.action {
                Action::HoldAccount => "it concerns an address, not an account",
                _ => "only recipient rules can throttle",
            };
            problems.add(format!(
                "[rules.{}] response = {:?} is not possible here: {why}",
                self.table,
                serde_json::to_value(self.action)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default()
            ));
        }
        if self.action != Action::Alert && (self.secs == 0 || self.secs > 365 * 86_400) {
            problems.add(format!(
                "[rules.{}] response_secs must be between 1 and 31536000 (a year), got {}",
                self.table, self.secs
            ));
        }
        validate_message(
            problems,
            &format!("[rules.{}] message", self.table),
            self.message,
        );
    }

    /// A trip of this rule at `now`; `counted` is (count, threshold, window_secs).
    pub(crate) fn trip(
        &self,
        severity: Severity,
        now: Secs,
        counted: (u64, u64, u64),
        summary: String,
        details: serde_json::Value,
    ) -> Trip {
        let (count, threshold, window_secs) = counted;
        let response = self.action.resolve(self.scope).unwrap_or(Response::Alert);
        Trip {
            rule: self.table,
            severity,
            count,
            threshold,
            window_secs,
            response,
            expires: if response == Response::Alert {
                now
            } else {
                now + self.secs as Secs
            },
            message: Some(Arc::from(self.message)),
            summary: Some(summary),
            details: Some(details),
        }
    }
}

/// Checks a distance or speed setting.
pub(crate) fn validate_range(
    problems: &mut Problems,
    table: &str,
    key: &str,
    value: f64,
    min: f64,
    max: f64,
) {
    if !(min..=max).contains(&value) {
        problems.add(format!(
            "[rules.{table}] {key} must be between {min} and {max}, got {value}"
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_resolve_by_scope() {
        assert_eq!(
            Action::Defer.resolve(Scope::Account),
            Some(Response::HoldAccount)
        );
        assert_eq!(
            Action::Deny.resolve(Scope::Account),
            Some(Response::DenyAccount)
        );
        assert_eq!(
            Action::Defer.resolve(Scope::Ip),
            Some(Response::DeferIpAuth)
        );
        assert_eq!(Action::Deny.resolve(Scope::Ip), Some(Response::BlockIp));
        assert_eq!(
            Action::BlockIp.resolve(Scope::Account),
            Some(Response::BlockIp)
        );
        assert_eq!(Action::HoldAccount.resolve(Scope::Ip), None);
        assert_eq!(Action::Throttle.resolve(Scope::Account), None);
        assert_eq!(
            Action::Throttle.resolve(Scope::Sending),
            Some(Response::ThrottleRcpt)
        );
    }

    #[test]
    fn impossible_responses_are_problems() {
        let mut p = Problems::default();
        ResponseSettings {
            table: "password_spraying",
            scope: Scope::Ip,
            action: Action::HoldAccount,
            secs: 0,
            message: "no",
        }
        .validate(&mut p);
        let all = p.to_string();
        assert!(
            all.contains("response = \"hold_account\" is not possible here"),
            "{all}"
        );
        assert!(all.contains("response_secs must be between"), "{all}");
        assert!(all.contains("would read as a plain answer"), "{all}");
    }
}
