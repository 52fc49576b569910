//! Failed logins per source address: N distinct failures in a window defer every further
//! authentication from that address (any account) for a while.
//!
//! A failure is identified by (account, password hash): one client retrying the same
//! wrong password counts once. Default: 20 in 10 minutes → defer AUTH for 1 hour.

use serde::{Deserialize, Serialize};

use super::{Failure, FailureCount, FailureSlot, Response, Rule, Severity, Trip, validate_common};
use crate::problems::Problems;
use crate::track::Secs;

/// `[rules.failed_logins_ip]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FailedLoginsIp {
    /// `enforce` (default) or `observe`: alert with what would have been done and
    /// refuse nothing (`[responses] mode = "observe"` does so for every rule).
    pub mode: crate::rules::Mode,
    /// Whether the rule runs.
    pub enabled: bool,
    /// Distinct failures in the window that trip the rule.
    pub threshold: u64,
    /// The window, in seconds.
    pub window_secs: u64,
    /// How long authentication from the address is deferred, in seconds.
    pub block_secs: u64,
    /// The alert's severity.
    pub severity: Severity,
    /// What the client sees while the address is blocked.
    pub message: String,
}

impl Default for FailedLoginsIp {
    fn default() -> Self {
        FailedLoginsIp {
            mode: crate::rules::Mode::Enforce,
            enabled: true,
            threshold: 20,
            window_secs: 600,
            block_secs: 3600,
            severity: Severity::High,
            message: "too many authentication failures from your address, try again later".into(),
        }
    }
}

impl FailedLoginsIp {
    /// The rule's name in config and alerts.
    pub const NAME: &'static str = "failed_logins_ip";

    /// Records a failed login from the address in its `slot` (`key` identifies the
    /// (account, password hash) pair, `None` when there is no hash to deduplicate by)
    /// and, when the threshold is reached and the address is not `blocked` already,
    /// reports the trip (the responder blocks).
    pub fn on_failure(
        &self,
        slot: &mut FailureSlot,
        blocked: bool,
        now: Secs,
        key: Option<u64>,
    ) -> Option<Trip> {
        FailureCount {
            name: Self::NAME,
            enabled: self.enabled,
            threshold: self.threshold,
            window_secs: self.window_secs,
            response_secs: self.block_secs,
            severity: self.severity,
            message: &self.message,
            response: Response::DeferIpAuth,
        }
        .record(&mut slot.failures, blocked, now, key)
    }
}

impl Rule for FailedLoginsIp {
    const NAME: &'static str = Self::NAME;

    fn mode(&self) -> crate::rules::Mode {
        self.mode
    }
    type AccountSlot = ();
    type IpSlot = FailureSlot;

    fn validate(&self, problems: &mut Problems) {
        validate_common(
            problems,
            Self::NAME,
            ("threshold", self.threshold),
            self.window_secs,
            &self.message,
        );
        if self.block_secs == 0 || self.block_secs > 365 * 86_400 {
            problems.add(format!(
                "[rules.{}] block_secs must be between 1 and 31536000 (a year), got {}",
                Self::NAME,
                self.block_secs
            ));
        }
    }

    fn address_failure(&self, f: &Failure<'_>, slot: &mut FailureSlot) -> Option<Trip> {
        self.on_failure(slot, f.in_force.is_some(), f.now, f.pair)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::track::Hold;

    /// The address as far as this rule goes: its slot and the block the responder puts.
    #[derive(Default)]
    struct IpRecord {
        slot: FailureSlot,
        auth_block: Option<Hold>,
    }

    impl IpRecord {
        fn active_auth_block(&self, now: Secs) -> Option<&Hold> {
            self.auth_block.as_ref().filter(|b| b.active(now))
        }
    }

    impl FailedLoginsIp {
        fn fail(&self, r: &mut IpRecord, now: Secs, key: Option<u64>) -> Option<Trip> {
            let blocked = r.active_auth_block(now).is_some();
            self.on_failure(&mut r.slot, blocked, now, key)
        }
    }

    #[test]
    fn twenty_distinct_failures_block_the_address() {
        let rule = FailedLoginsIp::default();
        let mut r = IpRecord::default();
        for i in 0..19 {
            assert_eq!(rule.fail(&mut r, 100 + i, Some(i as u64)), None);
        }
        let trip = rule.fail(&mut r, 119, Some(19)).expect("trips at 20");
        assert_eq!(trip.response, Response::DeferIpAuth);
        assert_eq!(trip.expires, 119 + 3600);
        assert!(
            r.auth_block.is_none(),
            "the rule only reports; the responder blocks"
        );
        // What the responder does with the trip.
        r.auth_block = Some(Hold {
            since: 119,
            until: trip.expires,
            rule: trip.rule,
            message: trip.message.clone().unwrap(),
            deny: false,
        });
        assert_eq!(
            rule.fail(&mut r, 120, Some(20)),
            None,
            "not again while blocked"
        );
        assert!(r.active_auth_block(3718).is_some());
        assert!(r.active_auth_block(3719).is_none());
    }

    #[test]
    fn a_repeated_pair_counts_once() {
        let rule = FailedLoginsIp::default();
        let mut r = IpRecord::default();
        for i in 0..50 {
            assert_eq!(rule.fail(&mut r, 100 + i, Some(7)), None);
        }
    }
}
