//! Outbound spike: an account sends far more than it usually does. After the account's
//! sending average is learnt (`[baselines] learning_send_hours` hours with sending),
//! recipients in the last `window_secs` above max(`factor` × its hourly average, `floor`)
//! trip the rule: by default further recipients are deferred for the hour (throttle),
//! one alert per window. DESIGN section 5: factor 3, floor 100, high severity.

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::response::{Action, Scope, response_settings, validate_range};
use super::{Recipients, Rule, Severity, Trip};
use crate::problems::Problems;
use crate::track::Secs;
use crate::track::baseline::{BaselineConfig, SendCache};

/// `[rules.outbound_spike]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboundSpike {
    /// `enforce` (default) or `observe`: alert with what would have been done and
    /// refuse nothing (`[responses] mode = "observe"` does so for every rule).
    pub mode: crate::rules::Mode,
    /// Whether the rule runs.
    pub enabled: bool,
    /// The alert's severity.
    pub severity: Severity,
    /// How many times the account's hourly average trips the rule.
    pub factor: f64,
    /// Never trip at or below this many recipients in the window.
    pub floor: u64,
    /// The window recipients are counted in, in seconds.
    pub window_secs: u64,
    /// What to do: `throttle` (defer further RCPT), `alert`, `defer` / `hold_account`,
    /// `deny` or `block_ip`.
    pub response: Action,
    /// How long the response lasts, in seconds.
    pub response_secs: u64,
    /// What the client sees while the response is in force.
    pub message: String,
}

impl Default for OutboundSpike {
    fn default() -> Self {
        OutboundSpike {
            mode: crate::rules::Mode::Enforce,
            enabled: true,
            severity: Severity::High,
            factor: 3.0,
            floor: 100,
            window_secs: 3600,
            response: Action::Throttle,
            response_secs: 3600,
            message: "unusual sending volume for this account, try again later".into(),
        }
    }
}

impl OutboundSpike {
    /// The rule's name in config and alerts.
    pub const NAME: &'static str = "outbound_spike";

    response_settings!(Scope::Sending);

    /// The count above which the account trips.
    pub fn threshold(&self, send: &SendCache) -> u64 {
        ((self.factor * f64::from(send.average)).ceil() as u64).max(self.floor)
    }

    /// Checks `count` recipients in the window; `alerted_at` keeps it to one per window.
    pub fn check(
        &self,
        send: &SendCache,
        config: &BaselineConfig,
        count: u64,
        alerted_at: &mut Option<Secs>,
        user: &str,
        now: Secs,
    ) -> Option<Trip> {
        if !self.enabled || !send.learnt(config, now) {
            return None;
        }
        let threshold = self.threshold(send);
        if count <= threshold || alerted_at.is_some_and(|t| now - t < self.window_secs as Secs) {
            return None;
        }
        *alerted_at = Some(now);
        Some(self.settings().trip(
            self.severity,
            now,
            (count, threshold, self.window_secs),
            format!(
                "account {user} sent to {count} recipients in {}, usually {:.0} per hour (limit {threshold})",
                crate::time::human_secs(self.window_secs),
                send.average
            ),
            json!({
                "recipients": count,
                "threshold": threshold,
                "window_secs": self.window_secs,
                "hourly_average": (f64::from(send.average) * 10.0).round() / 10.0,
                "hourly_peak": send.peak,
            }),
        ))
    }
}

impl Rule for OutboundSpike {
    const NAME: &'static str = Self::NAME;

    fn mode(&self) -> crate::rules::Mode {
        self.mode
    }
    type AccountSlot = Option<Secs>;
    type IpSlot = ();

    fn validate(&self, problems: &mut Problems) {
        validate_range(problems, Self::NAME, "factor", self.factor, 1.0, 1000.0);
        if self.window_secs == 0 || self.window_secs > 86_400 {
            problems.add(format!(
                "[rules.{}] window_secs must be between 1 and 86400, got {}",
                Self::NAME,
                self.window_secs
            ));
        }
        self.settings().validate(problems);
    }

    fn recipients(&self, sent: &Recipients<'_>, alerted_at: &mut Option<Secs>) -> Option<Trip> {
        let now = sent.now;
        let count = sent.rcpts.count_since(now - self.window_secs as Secs) as u64;
        self.check(sent.send, sent.config, count, alerted_at, sent.user, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::track::baseline::Baseline;

    /// The baseline's rate as the rule reads it, copied at `now`.
    fn rate(b: &mut Baseline, now: Secs) -> SendCache {
        let mut send = SendCache::default();
        send.refresh(b, now);
        send
    }

    #[test]
    fn fires_above_three_times_the_average_once_per_window() {
        let config = BaselineConfig {
            learning_secs: 0,
            learning_send_hours: 3,
            ..BaselineConfig::default()
        };
        let rule = OutboundSpike::default();
        let mut b = Baseline::new(0);
        for h in 0..4 {
            b.learn_rcpts(h * 3600, 50);
        }
        let now = 4 * 3600;
        let send = rate(&mut b, now);
        assert_eq!(rule.threshold(&send), 150);
        let mut at = None;
        assert!(
            rule.check(&send, &config, 150, &mut at, "carol", now)
                .is_none()
        );
        let trip = rule
            .check(&send, &config, 151, &mut at, "carol", now)
            .expect("spike");
        assert_eq!(trip.response, super::super::Response::ThrottleRcpt);
        assert!(
            rule.check(&send, &config, 300, &mut at, "carol", now + 60)
                .is_none(),
            "once per window"
        );
    }

    #[test]
    fn quiet_while_learning_and_under_the_floor() {
        let config = BaselineConfig {
            learning_secs: 0,
            learning_send_hours: 3,
            ..BaselineConfig::default()
        };
        let rule = OutboundSpike::default();
        let mut b = Baseline::new(0);
        b.learn_rcpts(0, 5);
        b.learn_rcpts(3600, 5);
        let mut at = None;
        assert!(
            rule.check(&rate(&mut b, 7200), &config, 500, &mut at, "dave", 7200)
                .is_none(),
            "learning"
        );
        b.learn_rcpts(7200, 5);
        b.learn_rcpts(3 * 3600, 5);
        let send = rate(&mut b, 4 * 3600);
        assert_eq!(rule.threshold(&send), 100, "floor");
        assert!(
            rule.check(&send, &config, 100, &mut at, "dave", 4 * 3600)
                .is_none()
        );
        assert!(
            rule.check(&send, &config, 101, &mut at, "dave", 4 * 3600)
                .is_some()
        );
    }
}
