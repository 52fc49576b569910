//! Password spraying: one source address failing on many distinct accounts in a window
//! (a few guesses each, under every per-account threshold). Distinct accounts are
//! counted exactly while few, with a HyperLogLog sketch beyond
//! ([`crate::track::distinct::DistinctWindow`]). Default: 10 accounts in 10 minutes →
//! block the address for an hour, high severity.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::response::{Action, Scope, response_settings};
use super::{Failure, Rule, Severity, Trip, validate_common};
use crate::problems::Problems;
use crate::track::{DistinctWindow, Secs};

/// What the rule keeps about an address: the distinct accounts that failed from it.
#[derive(Debug, Default)]
pub struct SprayingSlot {
    /// Distinct accounts failed in the window.
    pub accounts: DistinctWindow,
}

/// `[rules.password_spraying]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PasswordSpraying {
    /// `enforce` (default) or `observe`: alert with what would have been done and
    /// refuse nothing (`[responses] mode = "observe"` does so for every rule).
    pub mode: crate::rules::Mode,
    /// Whether the rule runs.
    pub enabled: bool,
    /// The alert's severity.
    pub severity: Severity,
    /// Distinct accounts failed from one address in the window that trip the rule.
    pub accounts: u64,
    /// The window, in seconds.
    pub window_secs: u64,
    /// What to do: `block_ip` / `deny` (refuse the address), `defer`, or `alert`.
    pub response: Action,
    /// How long the response lasts, in seconds.
    pub response_secs: u64,
    /// What the client sees while the address is blocked.
    pub message: String,
}

impl Default for PasswordSpraying {
    fn default() -> Self {
        PasswordSpraying {
            mode: crate::rules::Mode::Enforce,
            enabled: true,
            severity: Severity::High,
            accounts: 10,
            window_secs: 600,
            response: Action::BlockIp,
            response_secs: 3600,
            message: "too many authentication failures from your address".into(),
        }
    }
}

impl PasswordSpraying {
    /// The rule's name in config and alerts.
    pub const NAME: &'static str = "password_spraying";

    response_settings!(Scope::Ip);

    /// Records a failure on the account whose hash is `account` from `ip` at `now`;
    /// `in_force` names the rule behind the address's block in force, if any.
    pub fn on_failure(
        &self,
        slot: &mut SprayingSlot,
        in_force: Option<&'static str>,
        ip: IpAddr,
        account: u64,
        now: Secs,
    ) -> Option<Trip> {
        let count = slot.accounts.record(now, self.window_secs as Secs, account);
        let blocked_by_us = in_force == Some(Self::NAME);
        if !self.enabled || count < self.accounts || blocked_by_us {
            return None;
        }
        Some(self.settings().trip(
            self.severity,
            now,
            (count, self.accounts, self.window_secs),
            format!(
                "{ip} failed to log in to {count} distinct accounts in {}",
                crate::time::human_secs(self.window_secs)
            ),
            json!({ "accounts": count, "threshold": self.accounts, "window_secs": self.window_secs,
                    "estimated": slot.accounts.is_estimate() }),
        ))
    }
}

impl Rule for PasswordSpraying {
    const NAME: &'static str = Self::NAME;

    fn mode(&self) -> crate::rules::Mode {
        self.mode
    }
    type AccountSlot = ();
    type IpSlot = SprayingSlot;

    fn validate(&self, problems: &mut Problems) {
        validate_common(
            problems,
            Self::NAME,
            ("accounts", self.accounts),
            self.window_secs,
            &self.message,
        );
        self.settings().validate(problems);
    }

    fn address_failure(&self, f: &Failure<'_>, slot: &mut SprayingSlot) -> Option<Trip> {
        self.on_failure(slot, f.in_force, f.ip?, f.account_hash, f.now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_distinct_accounts_trip_repeats_do_not() {
        let rule = PasswordSpraying::default();
        let ip = "203.0.113.9".parse().unwrap();
        let mut rec = SprayingSlot::default();
        for _ in 0..20 {
            assert!(
                rule.on_failure(&mut rec, None, ip, 1, 100).is_none(),
                "one account, many tries"
            );
        }
        for a in 2..10 {
            assert!(rule.on_failure(&mut rec, None, ip, a, 100).is_none());
        }
        let trip = rule
            .on_failure(&mut rec, None, ip, 10, 100)
            .expect("tenth account");
        assert_eq!(trip.response, super::super::Response::BlockIp);
        assert_eq!(trip.count, 10);
        assert_eq!(trip.expires, 3700);
    }

    #[test]
    fn the_window_slides() {
        let rule = PasswordSpraying::default();
        let ip = "203.0.113.9".parse().unwrap();
        let mut rec = SprayingSlot::default();
        for a in 0..9 {
            rule.on_failure(&mut rec, None, ip, a, 0);
        }
        assert!(
            rule.on_failure(&mut rec, None, ip, 99, 700).is_none(),
            "the first nine left the window"
        );
    }
}
