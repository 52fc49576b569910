//! Recipient ceiling: at most N accepted recipients per account in a sliding window.
//!
//! Further RCPTs are deferred until the account's count in the window is under the
//! ceiling again ("for the rest of the hour" for a burst); the account is not held, and
//! one alert is raised per window. Default: 200 recipients per hour.

use serde::{Deserialize, Serialize};

use super::{Response, Severity, Trip, validate_common};
use crate::config::Problems;
use crate::state::{Account, Secs};

/// `[rules.recipient_ceiling]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecipientCeiling {
    /// Whether the rule runs.
    pub enabled: bool,
    /// Recipients accepted in the window before further ones are deferred.
    pub limit: u64,
    /// The window, in seconds.
    pub window_secs: u64,
    /// The alert's severity.
    pub severity: Severity,
    /// What the client sees for a deferred recipient.
    pub message: String,
}

impl Default for RecipientCeiling {
    fn default() -> Self {
        RecipientCeiling {
            enabled: true,
            limit: 200,
            window_secs: 3600,
            severity: Severity::High,
            message: "hourly recipient limit reached for this account, try again later".into(),
        }
    }
}

/// The ceiling's decision on one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CeilingDecision {
    /// Accept the recipient; `Some` when it reached the ceiling and an alert is due.
    Accept(Option<Trip>),
    /// Defer it: the account is at the ceiling until the given time.
    Defer {
        /// When the account's count drops under the ceiling.
        until: Secs,
    },
}

impl RecipientCeiling {
    /// The rule's name in config and alerts.
    pub const NAME: &'static str = "recipient_ceiling";

    pub(crate) fn validate(&self, problems: &mut Problems) {
        validate_common(
            problems,
            Self::NAME,
            ("limit", self.limit),
            self.window_secs,
            &self.message,
        );
    }

    /// Decides on one recipient of `account` at `now` and counts it when accepted.
    pub fn on_rcpt(&self, account: &mut Account, now: Secs) -> CeilingDecision {
        let window = self.window_secs as Secs;
        let limit = self.limit as usize;
        account.rcpts.prune(now, window);
        if !self.enabled {
            return CeilingDecision::Accept(None);
        }
        if let Some(until) = account.rcpts.below_limit_at(limit, window) {
            return CeilingDecision::Defer { until };
        }
        account.rcpts.record(now);
        let Some(expires) = account.rcpts.below_limit_at(limit, window) else {
            return CeilingDecision::Accept(None);
        };
        // This recipient reached the ceiling: alert once per window.
        if account.ceiling_alerted_at.is_some_and(|t| t > now - window) {
            return CeilingDecision::Accept(None);
        }
        account.ceiling_alerted_at = Some(now);
        CeilingDecision::Accept(Some(Trip {
            rule: Self::NAME,
            severity: self.severity,
            count: account.rcpts.len() as u64,
            threshold: self.limit,
            window_secs: self.window_secs,
            response: Response::ThrottleRcpt,
            expires,
            message: None,
            summary: None,
            details: None,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defers_past_the_ceiling_until_the_window_moves() {
        let rule = RecipientCeiling {
            limit: 3,
            ..Default::default()
        };
        let mut a = Account::default();
        assert_eq!(rule.on_rcpt(&mut a, 100), CeilingDecision::Accept(None));
        assert_eq!(rule.on_rcpt(&mut a, 101), CeilingDecision::Accept(None));
        let CeilingDecision::Accept(Some(trip)) = rule.on_rcpt(&mut a, 102) else {
            panic!("the third recipient reaches the ceiling and alerts");
        };
        assert_eq!((trip.count, trip.expires), (3, 3700));
        assert_eq!(
            rule.on_rcpt(&mut a, 103),
            CeilingDecision::Defer { until: 3700 }
        );
        assert_eq!(
            rule.on_rcpt(&mut a, 3699),
            CeilingDecision::Defer { until: 3700 }
        );
        // One slot frees at 3700; reaching the ceiling again within the hour does not
        // alert again.
        assert_eq!(rule.on_rcpt(&mut a, 3700), CeilingDecision::Accept(None));
        assert_eq!(
            rule.on_rcpt(&mut a, 3700),
            CeilingDecision::Defer { until: 3701 }
        );
    }

    #[test]
    fn a_new_burst_after_the_window_alerts_again() {
        let rule = RecipientCeiling {
            limit: 2,
            ..Default::default()
        };
        let mut a = Account::default();
        rule.on_rcpt(&mut a, 0);
        assert!(matches!(
            rule.on_rcpt(&mut a, 1),
            CeilingDecision::Accept(Some(_))
        ));
        rule.on_rcpt(&mut a, 10_000);
        assert!(matches!(
            rule.on_rcpt(&mut a, 10_001),
            CeilingDecision::Accept(Some(_))
        ));
    }
}
