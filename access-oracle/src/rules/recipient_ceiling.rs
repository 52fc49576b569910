//! Recipient ceiling: at most N accepted recipients per account in a sliding window.
//!
//! Further RCPTs are deferred until the account's count in the window is under the
//! ceiling again ("for the rest of the hour" for a burst); the account is not held, and
//! one alert is raised per window. Default: 200 recipients per hour.

use serde::{Deserialize, Serialize};

use super::{Recipients, Response, Rule, Severity, Trip, validate_common};
use crate::problems::Problems;
use crate::track::{CountWindow, Secs};

/// `[rules.recipient_ceiling]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecipientCeiling {
    /// `enforce` (default) or `observe`: alert with what would have been done and
    /// refuse nothing (`[responses] mode = "observe"` does so for every rule).
    pub mode: crate::rules::Mode,
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
            mode: crate::rules::Mode::Enforce,
            enabled: true,
            limit: 200,
            window_secs: 3600,
            severity: Severity::High,
            message: "hourly recipient limit reached for this account, try again later".into(),
        }
    }
}

impl RecipientCeiling {
    /// The rule's name in config and alerts.
    pub const NAME: &'static str = "recipient_ceiling";

    /// Whether one more recipient fits under the ceiling at `now`, given the account's
    /// recent recipients; `Err(until)` when the ceiling is reached, with when a place
    /// frees again. The gate refuses a RCPT with this; a batch from a log counts each
    /// recipient with it.
    pub fn admits(&self, rcpts: &CountWindow, now: Secs) -> Result<(), Secs> {
        if !self.enabled {
            return Ok(());
        }
        match rcpts.limit_reached(self.limit as usize, now, self.window_secs as Secs) {
            Some(until) => Err(until),
            None => Ok(()),
        }
    }
}

impl Rule for RecipientCeiling {
    const NAME: &'static str = Self::NAME;

    fn mode(&self) -> crate::rules::Mode {
        self.mode
    }
    /// When the rule last raised an alert: once per window.
    type AccountSlot = Option<Secs>;
    type IpSlot = ();

    fn validate(&self, problems: &mut Problems) {
        validate_common(
            problems,
            Self::NAME,
            ("limit", self.limit),
            self.window_secs,
            &self.message,
        );
    }

    /// The recipients just accepted reached the ceiling: alert once per window (the
    /// deferrals that follow are the gate's, from the window itself).
    fn recipients(&self, sent: &Recipients<'_>, alerted_at: &mut Option<Secs>) -> Option<Trip> {
        let now = sent.now;
        let window = self.window_secs as Secs;
        if !self.enabled || alerted_at.is_some_and(|t| t > now - window) {
            return None;
        }
        let expires = sent.rcpts.limit_reached(self.limit as usize, now, window)?;
        *alerted_at = Some(now);
        Some(Trip {
            rule: Self::NAME,
            severity: self.severity,
            count: sent.rcpts.count_since(now - window) as u64,
            threshold: self.limit,
            window_secs: self.window_secs,
            response: Response::ThrottleRcpt,
            expires,
            message: None,
            summary: None,
            details: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::track::baseline::{BaselineConfig, SendCache};

    /// The ceiling's decision on one recipient, as the engine takes it.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum CeilingDecision {
        Accept(Option<Trip>),
        Defer { until: Secs },
    }

    /// What the engine does with one recipient: the gate's check, the count, the hook.
    fn on_rcpt(
        rule: &RecipientCeiling,
        (rcpts, slot): &mut (CountWindow, Option<Secs>),
        now: Secs,
    ) -> CeilingDecision {
        if let Err(until) = rule.admits(rcpts, now) {
            return CeilingDecision::Defer { until };
        }
        rcpts.record(now);
        let sent = Recipients {
            user: "a",
            accepted: 1,
            rcpts,
            send: &SendCache::default(),
            config: &BaselineConfig::default(),
            now,
        };
        CeilingDecision::Accept(rule.recipients(&sent, slot))
    }

    #[test]
    fn defers_past_the_ceiling_until_the_window_moves() {
        let rule = RecipientCeiling {
            limit: 3,
            ..Default::default()
        };
        let a = &mut Default::default();
        assert_eq!(on_rcpt(&rule, a, 100), CeilingDecision::Accept(None));
        assert_eq!(on_rcpt(&rule, a, 101), CeilingDecision::Accept(None));
        let CeilingDecision::Accept(Some(trip)) = on_rcpt(&rule, a, 102) else {
            panic!("the third recipient reaches the ceiling and alerts");
        };
        assert_eq!((trip.count, trip.expires), (3, 3700));
        assert_eq!(
            on_rcpt(&rule, a, 103),
            CeilingDecision::Defer { until: 3700 }
        );
        assert_eq!(
            on_rcpt(&rule, a, 3699),
            CeilingDecision::Defer { until: 3700 }
        );
        // One slot frees at 3700; reaching the ceiling again within the hour does not
        // alert again.
        assert_eq!(on_rcpt(&rule, a, 3700), CeilingDecision::Accept(None));
        assert_eq!(
            on_rcpt(&rule, a, 3700),
            CeilingDecision::Defer { until: 3701 }
        );
    }

    #[test]
    fn a_new_burst_after_the_window_alerts_again() {
        let rule = RecipientCeiling {
            limit: 2,
            ..Default::default()
        };
        let a = &mut Default::default();
        on_rcpt(&rule, a, 0);
        assert!(matches!(
            on_rcpt(&rule, a, 1),
            CeilingDecision::Accept(Some(_))
        ));
        on_rcpt(&rule, a, 10_000);
        assert!(matches!(
            on_rcpt(&rule, a, 10_001),
            CeilingDecision::Accept(Some(_))
        ));
    }
}
