//! Failed logins per account: N distinct failures in a window hold the account.
//!
//! Counts failures of every protocol (SMTP AUTH, IMAP, POP3, ...) together; the same
//! wrong password (same keyed hash) repeated counts once, so a stale client does not
//! lock its owner out. Default: 5 in 5 minutes → hold for 15 minutes.

use serde::{Deserialize, Serialize};

use super::{Failure, FailureCount, FailureSlot, Response, Rule, Severity, Trip, validate_common};
use crate::problems::Problems;
use crate::track::{HoldScope, Secs};

/// `[rules.failed_logins_account]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FailedLoginsAccount {
    /// `enforce` (default) or `observe`: alert with what would have been done and
    /// refuse nothing (`[responses] mode = "observe"` does so for every rule).
    pub mode: crate::rules::Mode,
    /// Whether the rule runs.
    pub enabled: bool,
    /// Distinct failures in the window that trip the rule.
    pub threshold: u64,
    /// The window, in seconds.
    pub window_secs: u64,
    /// How long the account is held, in seconds.
    pub hold_secs: u64,
    /// The alert's severity.
    pub severity: Severity,
    /// What the client sees while the account is held (SMTP 435 / 451, IMAP NO).
    pub message: String,
    /// Which sources a hold refuses: `unfamiliar` (default: not the networks the account
    /// logged in from successfully within `familiar_days`, so an attacker cannot lock
    /// the owner out; when the failures that tripped the hold came from a familiar
    /// network, the hold covers every source) or `all`.
    pub hold_scope: HoldScope,
    /// How long a network stays familiar after the account's last successful login
    /// from it, in days.
    pub familiar_days: u64,
    /// The prefix length of a familiar IPv4 network (24: the /24).
    pub familiar_prefix_v4: u8,
    /// The prefix length of a familiar IPv6 network (64: the /64).
    pub familiar_prefix_v6: u8,
}

impl Default for FailedLoginsAccount {
    fn default() -> Self {
        FailedLoginsAccount {
            mode: crate::rules::Mode::Enforce,
            enabled: true,
            threshold: 5,
            window_secs: 300,
            hold_secs: 900,
            severity: Severity::High,
            message:
                "account temporarily locked after repeated authentication failures, try again later"
                    .into(),
            hold_scope: HoldScope::Unfamiliar,
            familiar_days: 30,
            familiar_prefix_v4: 24,
            familiar_prefix_v6: 64,
        }
    }
}

impl FailedLoginsAccount {
    /// The rule's name in config and alerts.
    pub const NAME: &'static str = "failed_logins_account";

    /// Records a failed login in the account's `slot` and, when the threshold is reached
    /// and the account is not `held` already, reports the trip (the responder holds).
    pub fn on_failure(
        &self,
        slot: &mut FailureSlot,
        held: bool,
        now: Secs,
        pwhash: Option<u64>,
    ) -> Option<Trip> {
        FailureCount {
            name: Self::NAME,
            enabled: self.enabled,
            threshold: self.threshold,
            window_secs: self.window_secs,
            response_secs: self.hold_secs,
            severity: self.severity,
            message: &self.message,
            response: Response::HoldAccount,
        }
        .record(&mut slot.failures, held, now, pwhash)
    }
}

impl Rule for FailedLoginsAccount {
    const NAME: &'static str = Self::NAME;

    fn mode(&self) -> crate::rules::Mode {
        self.mode
    }
    type AccountSlot = FailureSlot;
    type IpSlot = ();

    fn validate(&self, problems: &mut Problems) {
        validate_common(
            problems,
            Self::NAME,
            ("threshold", self.threshold),
            self.window_secs,
            &self.message,
        );
        if self.familiar_days == 0 || self.familiar_days > 365 {
            problems.add(format!(
                "[rules.{}] familiar_days must be between 1 and 365, got {}",
                Self::NAME,
                self.familiar_days
            ));
        }
        if !(8..=32).contains(&self.familiar_prefix_v4) {
            problems.add(format!(
                "[rules.{}] familiar_prefix_v4 must be between 8 and 32, got {}",
                Self::NAME,
                self.familiar_prefix_v4
            ));
        }
        if !(16..=128).contains(&self.familiar_prefix_v6) {
            problems.add(format!(
                "[rules.{}] familiar_prefix_v6 must be between 16 and 128, got {}",
                Self::NAME,
                self.familiar_prefix_v6
            ));
        }
        if self.hold_secs == 0 || self.hold_secs > 365 * 86_400 {
            problems.add(format!(
                "[rules.{}] hold_secs must be between 1 and 31536000 (a year), got {}",
                Self::NAME,
                self.hold_secs
            ));
        }
    }

    fn account_failure(&self, f: &Failure<'_>, slot: &mut FailureSlot) -> Option<Trip> {
        self.on_failure(slot, f.in_force.is_some(), f.now, f.pwhash)
    }
}

impl FailedLoginsAccount {
    /// The familiar network `ip` belongs to.
    pub fn familiar_network(&self, ip: std::net::IpAddr) -> ipnet::IpNet {
        let len = match ip {
            std::net::IpAddr::V4(_) => self.familiar_prefix_v4.min(32),
            std::net::IpAddr::V6(_) => self.familiar_prefix_v6.min(128),
        };
        ipnet::IpNet::new(ip, len)
            .map(|n| n.trunc())
            .unwrap_or_else(|_| ipnet::IpNet::from(ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::track::Hold;

    /// The account as far as this rule goes: its slot and the hold the responder puts.
    #[derive(Default)]
    struct Account {
        slot: FailureSlot,
        hold: Option<Hold>,
    }

    impl Account {
        fn active_hold(&self, now: Secs) -> Option<&Hold> {
            self.hold.as_ref().filter(|h| h.active(now))
        }
    }

    impl FailedLoginsAccount {
        fn fail(&self, a: &mut Account, now: Secs, pwhash: Option<u64>) -> Option<Trip> {
            let held = a.active_hold(now).is_some();
            self.on_failure(&mut a.slot, held, now, pwhash)
        }
    }

    #[test]
    fn five_distinct_failures_hold_the_account_once() {
        let rule = FailedLoginsAccount::default();
        let mut a = Account::default();
        for i in 0..4 {
            assert_eq!(rule.fail(&mut a, 1000 + i, Some(i as u64)), None);
        }
        let trip = rule
            .fail(&mut a, 1004, Some(4))
            .expect("fifth failure trips");
        assert_eq!(trip.count, 5);
        assert_eq!(trip.expires, 1004 + 900);
        assert_eq!(trip.response, Response::HoldAccount);
        assert_eq!(trip.message.as_deref(), Some(rule.message.as_str()));
        assert!(
            a.hold.is_none(),
            "the rule only reports; the responder holds"
        );
        // What the responder does with the trip.
        a.hold = Some(Hold {
            since: 1004,
            until: trip.expires,
            rule: trip.rule,
            message: trip.message.clone().unwrap(),
            deny: false,
        });
        assert_eq!(
            rule.fail(&mut a, 1006, Some(5)),
            None,
            "no second trip while held"
        );
        assert!(a.active_hold(1904).is_none(), "the hold expires");
    }

    #[test]
    fn the_same_password_counts_once() {
        let rule = FailedLoginsAccount::default();
        let mut a = Account::default();
        for i in 0..10 {
            assert_eq!(rule.fail(&mut a, 1000 + i, Some(0x945)), None);
        }
        assert!(a.hold.is_none());
    }

    #[test]
    fn failures_outside_the_window_do_not_add_up() {
        let rule = FailedLoginsAccount::default();
        let mut a = Account::default();
        for i in 0..20 {
            assert_eq!(rule.fail(&mut a, i * 100, None), None, "failure {i}");
        }
    }

    #[test]
    fn a_disabled_rule_counts_but_never_holds() {
        let rule = FailedLoginsAccount {
            enabled: false,
            ..Default::default()
        };
        let mut a = Account::default();
        for i in 0..10 {
            assert_eq!(rule.fail(&mut a, 1000 + i, None), None);
        }
    }
}
