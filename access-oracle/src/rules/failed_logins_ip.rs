//! Failed logins per source address: N distinct failures in a window defer every further
//! authentication from that address (any account) for a while.
//!
//! A failure is identified by (account, password hash): one client retrying the same
//! wrong password counts once. Default: 20 in 10 minutes → defer AUTH for 1 hour.

use serde::{Deserialize, Serialize};

use super::{FailureCount, Response, Severity, Trip, validate_common};
use crate::config::Problems;
use crate::state::{IpRecord, Secs};

/// `[rules.failed_logins_ip]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FailedLoginsIp {
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

    pub(crate) fn validate(&self, problems: &mut Problems) {
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

    /// Records a failed login from the address; `key` identifies the (account, password
    /// hash) pair, `None` when there is no hash to deduplicate by.
    pub fn on_failure(&self, record: &mut IpRecord, now: Secs, key: Option<u64>) -> Option<Trip> {
        let blocked = record.active_auth_block(now).is_some();
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
        .record(&mut record.auth_failures, blocked, now, key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twenty_distinct_failures_block_the_address() {
        let rule = FailedLoginsIp::default();
        let mut r = IpRecord::default();
        for i in 0..19 {
            assert_eq!(rule.on_failure(&mut r, 100 + i, Some(i as u64)), None);
        }
        let trip = rule.on_failure(&mut r, 119, Some(19)).expect("trips at 20");
        assert_eq!(trip.response, Response::DeferIpAuth);
        assert_eq!(trip.expires, 119 + 3600);
        assert!(
            r.auth_block.is_none(),
            "the rule only reports; the responder blocks"
        );
        // What the responder does with the trip.
        r.auth_block = Some(crate::state::Hold {
            since: 119,
            until: trip.expires,
            rule: trip.rule,
            message: trip.message.clone().unwrap(),
            deny: false,
        });
        assert_eq!(
            rule.on_failure(&mut r, 120, Some(20)),
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
            assert_eq!(rule.on_failure(&mut r, 100 + i, Some(7)), None);
        }
    }
}
