//! Alert rules, one file per rule. A rule is a component: its TOML config struct (its
//! `[rules.NAME]` table, validated as a whole with the rest of the file), the state it
//! keeps about an account or an address (its slot, inline in the live entry), and the
//! [`Rule`] hooks it answers: a successful login, a failure counted against the account
//! or against the address, recipients accepted. A hook is a pure function of its
//! context, its slot and `now`, and returns a [`Trip`] when the rule fires; it writes
//! nothing but its own slot. The engine's one response path applies the trip (a hold, a
//! block) and raises the alert; a trip never changes the verdict of the request that
//! caused it. The verdict itself comes from the engine's gate.
//!
//! A new rule is one new file implementing [`Rule`] plus one line in the `rules!` list
//! below. The listing rules (`disabled_credentials`, `bad_ip`) also refuse requests; the
//! gate asks them.

pub mod bad_ip;
pub mod disabled_credentials;
pub mod distant_logins;
pub mod failed_logins_account;
pub mod failed_logins_ip;
pub mod impossible_travel;
pub mod new_asn;
pub mod new_country;
pub mod outbound_spike;
pub mod password_spraying;
pub mod recipient_ceiling;
mod registry;
pub mod response;

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::enrich::GeoInfo;
use crate::problems::Problems;
use crate::track::baseline::{Baseline, BaselineConfig, SendCache};
use crate::track::{CountWindow, DedupWindow, Secs};

pub use failed_logins_account::FailedLoginsAccount;
pub use failed_logins_ip::FailedLoginsIp;
pub use recipient_ceiling::RecipientCeiling;
pub use response::{Action, Mode, Scope};

/// How bad an alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// For the record.
    Info,
    /// Worth a look.
    Low,
    /// Unusual.
    Medium,
    /// Probably an attack.
    High,
    /// Act now.
    Critical,
}

impl Severity {
    /// The severity as written in config and alerts.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

/// What the oracle did when a rule fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    /// Nothing but the alert.
    Alert,
    /// The account's AUTH, MAIL, RCPT and DATA are deferred until the hold ends.
    HoldAccount,
    /// The account's AUTH, MAIL, RCPT and DATA are denied until the hold ends.
    DenyAccount,
    /// Authentication from the address is deferred until the block ends.
    DeferIpAuth,
    /// Connections and authentication from the address are denied until the block ends.
    BlockIp,
    /// The account's further recipients are deferred until its rate is under the ceiling.
    ThrottleRcpt,
    /// The request itself was refused (a disabled account, a listed address): the
    /// refusal lasts as long as the listing.
    Refuse,
}

impl Response {
    /// The response as written in alerts.
    pub fn as_str(self) -> &'static str {
        match self {
            Response::Alert => "alert",
            Response::HoldAccount => "hold_account",
            Response::DenyAccount => "deny_account",
            Response::DeferIpAuth => "defer_ip_auth",
            Response::BlockIp => "block_ip",
            Response::ThrottleRcpt => "throttle_rcpt",
            Response::Refuse => "refuse",
        }
    }
}

/// A rule firing: what it counted and what it applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trip {
    /// The rule's name, as in the config table.
    pub rule: &'static str,
    /// Its configured severity.
    pub severity: Severity,
    /// What was counted in the window.
    pub count: u64,
    /// The configured threshold.
    pub threshold: u64,
    /// The configured window.
    pub window_secs: u64,
    /// The response applied.
    pub response: Response,
    /// When the response ends.
    pub expires: Secs,
    /// The text clients see while the response is in force; `None` when the trip puts
    /// nothing in force (an alert; the recipient ceiling, whose window is its throttle).
    pub message: Option<Arc<str>>,
    /// The alert's one-line summary, when the rule writes its own.
    pub summary: Option<String>,
    /// What the rule saw, named (the alert's `counts`), when the rule gives it.
    pub details: Option<serde_json::Value>,
}

registry::rules! {
    /// Failed logins per account.
    failed_logins_account: FailedLoginsAccount,
    /// Failed logins per source address.
    failed_logins_ip: FailedLoginsIp,
    /// Recipients per account per window.
    recipient_ceiling: RecipientCeiling,
    /// One address failing on many distinct accounts.
    password_spraying: password_spraying::PasswordSpraying,
    /// A successful login from a country the account has not used.
    new_country: new_country::NewCountry,
    /// A successful login from an ASN the account has not used.
    new_asn: new_asn::NewAsn,
    /// Two successful logins too far apart for the time between them.
    impossible_travel: impossible_travel::ImpossibleTravel,
    /// Two successful logins far apart within a short time (after impossible_travel:
    /// it stays quiet when that one fired).
    distant_logins: distant_logins::DistantLogins,
    /// Recipients per hour far above the account's own average.
    outbound_spike: outbound_spike::OutboundSpike,
    /// Any attempt on a disabled or expired account.
    disabled_credentials: disabled_credentials::DisabledCredentials,
    /// A source address on a block list.
    bad_ip: bad_ip::BadIp,
}

/// A rule: its config is the implementing type, deserialized from its table.
///
/// Every hook has a default that does nothing, so a rule answers only the ones it
/// needs. A hook gets its context and its own slot, and may change only the slot.
pub trait Rule {
    /// The rule's name: its table (`[rules.NAME]`) and what alerts say.
    const NAME: &'static str;
    /// What the rule keeps about one account (`()` for nothing).
    type AccountSlot: Default + fmt::Debug + Send + Sync;
    /// What the rule keeps about one source address (`()` for nothing).
    type IpSlot: Default + fmt::Debug + Send + Sync;

    /// Checks the rule's settings, adding each problem.
    fn validate(&self, problems: &mut Problems);

    /// Whether the rule's responses are applied (`mode` in its table).
    fn mode(&self) -> Mode;

    /// A failed login, counted against the account.
    fn account_failure(&self, _: &Failure<'_>, _: &mut Self::AccountSlot) -> Option<Trip> {
        None
    }

    /// A failed login, counted against the source address (not for allow-listed ones).
    fn address_failure(&self, _: &Failure<'_>, _: &mut Self::IpSlot) -> Option<Trip> {
        None
    }

    /// A successful login from a located address, before the baseline learns it;
    /// `earlier` holds what the rules before this one tripped on the same login.
    fn login_ok(
        &self,
        _: &LoginOk<'_>,
        _earlier: &[Trip],
        _: &mut Self::AccountSlot,
    ) -> Option<Trip> {
        None
    }

    /// Recipients accepted for an account (already counted in [`Recipients::rcpts`]).
    fn recipients(&self, _: &Recipients<'_>, _: &mut Self::AccountSlot) -> Option<Trip> {
        None
    }
}

/// A failed login, as the failure hooks see it.
#[derive(Debug, Clone, Copy)]
pub struct Failure<'a> {
    /// The account (its key).
    pub user: &'a str,
    /// The source address, when known.
    pub ip: Option<IpAddr>,
    /// What identifies a repeat of the same wrong password on this account (the keyed
    /// password hash), so that it counts once.
    pub pwhash: Option<u64>,
    /// What identifies a repeat of the same (account, password) pair from the address
    /// (given to the address hooks).
    pub pair: Option<u64>,
    /// A hash of the account name, for distinct accounts per address (given to the
    /// address hooks).
    pub account_hash: u64,
    /// The rule behind the hold (account hooks) or block (address hooks) in force before
    /// this failure, if any.
    pub in_force: Option<&'static str>,
    /// When.
    pub now: Secs,
}

/// A successful login from a located address, as the login hooks see it.
#[derive(Debug, Clone, Copy)]
pub struct LoginOk<'a> {
    /// The account (its key).
    pub user: &'a str,
    /// The source address.
    pub ip: IpAddr,
    /// What is known about the address.
    pub geo: &'a GeoInfo,
    /// The account's baseline, before it learns this login.
    pub baseline: &'a Baseline,
    /// The baseline settings (learning period).
    pub config: &'a BaselineConfig,
    /// When.
    pub now: Secs,
}

/// Recipients accepted for an account, as the recipient hooks see them.
#[derive(Debug, Clone, Copy)]
pub struct Recipients<'a> {
    /// The account (its key).
    pub user: &'a str,
    /// How many were accepted now.
    pub accepted: u64,
    /// Every recipient accepted recently, these included.
    pub rcpts: &'a CountWindow,
    /// The account's sending rate, from its baseline.
    pub send: &'a SendCache,
    /// The baseline settings (learning period).
    pub config: &'a BaselineConfig,
    /// When.
    pub now: Secs,
}

impl RulesConfig {
    /// The longest window a recipient rule counts in, in seconds: how long an
    /// account's recipients are kept.
    pub fn recipient_window_secs(&self) -> u64 {
        self.recipient_ceiling
            .window_secs
            .max(self.outbound_spike.window_secs)
    }

    /// The longest window any rule counts in, in seconds.
    pub fn longest_window_secs(&self) -> u64 {
        [
            self.failed_logins_account.window_secs,
            self.failed_logins_ip.window_secs,
            self.recipient_ceiling.window_secs,
            self.password_spraying.window_secs,
            self.outbound_spike.window_secs,
        ]
        .into_iter()
        .max()
        .unwrap_or(0)
    }
}

/// What a failed-login rule keeps about its subject: the failures in its window.
#[derive(Debug, Default)]
pub struct FailureSlot {
    /// Failed logins in the window, a repeat (same key) once.
    pub failures: DedupWindow,
}

/// The shared core of the failed-login rules: count a failure in a window and, when the
/// threshold is reached and nothing is in force, report the trip (with its message: the
/// responder puts the hold or block).
pub(crate) struct FailureCount<'a> {
    pub(crate) name: &'static str,
    pub(crate) enabled: bool,
    pub(crate) threshold: u64,
    pub(crate) window_secs: u64,
    pub(crate) response_secs: u64,
    pub(crate) severity: Severity,
    pub(crate) message: &'a str,
    pub(crate) response: Response,
}

impl FailureCount<'_> {
    /// Records one failure (`key` identifies repeats that count once) at `now`; trips
    /// when the count reaches the threshold and no response is `in_force` already (the
    /// responder applies the trip's response, this rule never writes it).
    pub(crate) fn record(
        &self,
        window: &mut DedupWindow,
        in_force: bool,
        now: Secs,
        key: Option<u64>,
    ) -> Option<Trip> {
        let count = window.record(
            now,
            self.window_secs as Secs,
            key,
            self.threshold as usize * 4,
        ) as u64;
        if !self.enabled || count < self.threshold || in_force {
            return None;
        }
        Some(Trip {
            rule: self.name,
            severity: self.severity,
            count,
            threshold: self.threshold,
            window_secs: self.window_secs,
            response: self.response,
            expires: now + self.response_secs as Secs,
            message: Some(Arc::from(self.message)),
            summary: None,
            details: None,
        })
    }
}

/// The most events a failure window keeps; thresholds above it could never trip.
pub const MAX_WINDOW_EVENTS: u64 = 10_000;

/// Checks the settings every counting rule shares.
pub(crate) fn validate_common(
    problems: &mut Problems,
    table: &str,
    threshold: (&str, u64),
    window_secs: u64,
    message: &str,
) {
    if threshold.1 == 0 || threshold.1 > MAX_WINDOW_EVENTS {
        problems.add(format!(
            "[rules.{table}] {} must be between 1 and {MAX_WINDOW_EVENTS}, got {}",
            threshold.0, threshold.1
        ));
    }
    if window_secs == 0 || window_secs > 31 * 86_400 {
        problems.add(format!(
            "[rules.{table}] window_secs must be between 1 and 2678400 (31 days), got {window_secs}"
        ));
    }
    validate_message(problems, &format!("[rules.{table}] message"), message);
}

/// Checks a text that an SMTP client will see.
pub(crate) fn validate_message(problems: &mut Problems, what: &str, message: &str) {
    if message.trim().is_empty() {
        problems.add(format!("{what} must not be empty"));
    } else if message.len() > 400 {
        problems.add(format!("{what} is {} bytes, limit 400", message.len()));
    } else if message.chars().any(char::is_control) {
        problems.add(format!(
            "{what} must be one line without control characters"
        ));
    } else if matches!(
        message.trim().to_ascii_lowercase().as_str(),
        "yes" | "no" | "true" | "false" | "1" | "0"
    ) {
        problems.add(format!(
            "{what} {message:?} would read as a plain answer in an Exim server_condition"
        ));
    }
}
