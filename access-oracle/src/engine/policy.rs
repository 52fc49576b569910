//! Dovecot's auth policy questions, answered from the same state as SMTP.
//!
//! Dovecot asks `allow` before it checks a password (and again after a right one) and
//! then sends a `report` with the outcome (DESIGN section 4). The HTTP side lives in
//! `server/policy.rs`; the decisions live here, as pure functions of the state and
//! `now`:
//!
//! * [`Engine::policy_allow`] only reads. A held account or a blocked address is
//!   refused with the hold's text (Dovecot shows it to the client); an account or an
//!   address with failures in its rule's window at or above the tarpit threshold, but
//!   not yet held, is tarpitted (Dovecot waits that long before it checks the
//!   password); anything else continues.
//! * [`Engine::policy_report`] is a login attempt exactly like the `auth` and `login`
//!   verbs (`Engine::attempt` with [`Origin::Live`]): failures of IMAP, POP3 and SMTP
//!   through Dovecot add up in the same windows, a repeated password (same `pwhash`)
//!   counts once, rules trip and alert, and the Dovecot log lines of the same attempts
//!   are not counted again (`observe.rs`).
//!
//! An attempt the policy itself refused (`policy_reject`) never reached the password
//! check: it is not a wrong password and is only counted in [`PolicyStats`].

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use jiff::Timestamp;

use super::{Attempt, Engine, gate};
use crate::config::policy::PolicyConfig;
use crate::protocol::Outcome;
use crate::state::Origin;

/// What the policy answers besides the holds and blocks: the tarpit and the text of a
/// refusal. Built from `[policy]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicySettings {
    /// Failures of one account within the account rule's window from which its logins
    /// are tarpitted; 0: never.
    pub tarpit_after: u64,
    /// Failures from one address within the address rule's window from which its logins
    /// are tarpitted; 0: never.
    pub tarpit_after_ip: u64,
    /// How long Dovecot waits before it checks the password of a tarpitted login.
    pub tarpit_secs: u64,
    /// A text shown instead of the hold's or block's own, if set.
    pub reject_message: Option<Arc<str>>,
}

impl Default for PolicySettings {
    fn default() -> Self {
        PolicySettings {
            tarpit_after: 3,
            tarpit_after_ip: 10,
            tarpit_secs: 5,
            reject_message: None,
        }
    }
}

impl From<&PolicyConfig> for PolicySettings {
    /// The decision settings of `[policy]`.
    fn from(c: &PolicyConfig) -> Self {
        PolicySettings {
            tarpit_after: c.tarpit_after,
            tarpit_after_ip: c.tarpit_after_ip,
            tarpit_secs: c.tarpit_secs,
            reject_message: c.reject_message.as_deref().map(Arc::from),
        }
    }
}

/// The answer to `allow`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyVerdict {
    /// Go on with the password check (`status` 0).
    Continue,
    /// Wait `secs` seconds, then check the password (`status` = `secs`).
    Tarpit {
        /// The delay.
        secs: u64,
        /// The failures that earned it (account's or address's, whichever is higher).
        failures: u64,
    },
    /// Refuse without checking the password (`status` -1, `msg` shown to the client).
    Reject {
        /// The text for the client.
        message: Arc<str>,
        /// The rule whose hold or block refuses.
        rule: &'static str,
    },
}

/// A `report`: one authentication attempt as Dovecot saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyAttempt<'a> {
    /// The login name tried.
    pub user: &'a str,
    /// The client's address.
    pub ip: Option<IpAddr>,
    /// Dovecot's service: `imap`, `pop3`, `smtp` (Exim's `driver = dovecot`), ...
    pub protocol: &'a str,
    /// The keyed, truncated password hash, to count a repeated password once.
    pub pwhash: Option<u64>,
    /// Dovecot's session id.
    pub session: Option<&'a str>,
    /// Right or wrong password.
    pub result: Outcome,
    /// The SASL mechanism (`mech`), when the site's attributes send it.
    pub mech: Option<&'a str>,
    /// The client's source port (`rport`).
    pub port: Option<u16>,
    /// Whether the connection was encrypted (`tls`).
    pub tls: Option<bool>,
    /// The client's name: Dovecot's `device_id` (its `%{client_id}`, from IMAP `ID`).
    pub client: Option<&'a str>,
}

/// Counters of the policy endpoint, shown by `ctl status`.
#[derive(Debug, Default)]
pub struct PolicyStats {
    /// `allow` requests answered.
    pub allow: AtomicU64,
    /// `allow` answered with 0.
    pub continued: AtomicU64,
    /// `allow` answered with a tarpit.
    pub tarpitted: AtomicU64,
    /// `allow` answered with a refusal.
    pub rejected: AtomicU64,
    /// `report`s of a right password.
    pub report_ok: AtomicU64,
    /// `report`s of a wrong password (or unknown user).
    pub report_fail: AtomicU64,
    /// `report`s of attempts the policy refused: not counted as failures.
    pub report_refused: AtomicU64,
    /// `report`s of Dovecot's internal failures (2.4 `fail_type`): not counted.
    pub report_internal: AtomicU64,
    /// `report`s without a login name: nothing to count.
    pub report_anonymous: AtomicU64,
    /// Requests refused for a missing or wrong API key (401).
    pub unauthorized: AtomicU64,
    /// Requests refused as malformed (400, 413, 431).
    pub malformed: AtomicU64,
}

impl PolicyStats {
    /// The counters at one moment, as (name, value) pairs.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        vec![
            ("allow", get(&self.allow)),
            ("continued", get(&self.continued)),
            ("tarpitted", get(&self.tarpitted)),
            ("rejected", get(&self.rejected)),
            ("report_ok", get(&self.report_ok)),
            ("report_fail", get(&self.report_fail)),
            ("report_refused", get(&self.report_refused)),
            ("report_internal", get(&self.report_internal)),
            ("report_anonymous", get(&self.report_anonymous)),
            ("unauthorized", get(&self.unauthorized)),
            ("malformed", get(&self.malformed)),
        ]
    }
}

impl Engine {
    /// Answers Dovecot's `allow` for `user` connecting from `ip` over `protocol` (as
    /// Dovecot names it, if it sent one) at `now`. Reads the state only; a refusal
    /// counts as a refused request of the account and is an audit record.
    pub fn policy_allow(
        &self,
        user: &str,
        ip: Option<IpAddr>,
        protocol: Option<&str>,
        settings: &PolicySettings,
        now: Timestamp,
    ) -> PolicyVerdict {
        let stats = &self.stats.policy;
        stats.allow.fetch_add(1, Ordering::Relaxed);
        let verdict = self.policy_decide(user, ip, settings, now);
        let counter = match &verdict {
            PolicyVerdict::Continue => &stats.continued,
            PolicyVerdict::Tarpit { .. } => &stats.tarpitted,
            PolicyVerdict::Reject { message, rule } => {
                let key = self.account_key(user);
                if let Some(mut acct) = self.state.tracked_account_mut(&key) {
                    acct.totals.refused += 1;
                }
                // Dovecot reports this attempt as refused by policy, which is not
                // counted: the refusal is recorded here.
                self.audit_record(|| {
                    let mut r = crate::audit::Record::new(
                        crate::audit::Kind::Auth,
                        crate::audit::Source::Live,
                        now,
                    )
                    .ip(ip)
                    .protocol(protocol);
                    if !key.is_empty() {
                        r.user = Some((*key).into());
                    }
                    r.verdict = Some("deny".into());
                    r.rule = Some((*rule).into());
                    r.reason = Some(message.to_string());
                    r
                });
                &stats.rejected
            }
        };
        counter.fetch_add(1, Ordering::Relaxed);
        verdict
    }

    fn policy_decide(
        &self,
        user: &str,
        ip: Option<IpAddr>,
        settings: &PolicySettings,
        now: Timestamp,
    ) -> PolicyVerdict {
        let secs = now.as_second();
        let rules = self.rules();
        let reject = |message: &Arc<str>, rule| PolicyVerdict::Reject {
            message: settings.reject_message.clone().unwrap_or(message.clone()),
            rule,
        };
        let mut failures = 0u64;
        let mut tarpit = false;
        let enrich = self.enrichment();
        let allowed = ip.is_some_and(|ip| enrich.lists.allowed(ip));
        let ip = ip.filter(|_| !allowed);
        // The same gate as the Exim verbs: what is in force before the attempt.
        let key = self.account_key(user);
        let disabled = self.disabled_refusal(&rules, &key, secs);
        let listed = ip.and_then(|ip| self.listed_refusal(&rules, &enrich, ip, secs));
        let block = self.ip_block(ip, secs);
        let acct = self.state.account(&key);
        let standing = gate::Standing {
            disabled: disabled.as_ref(),
            listed: listed.as_ref(),
            account: acct.as_deref(),
            ip_block: block.as_ref(),
            ceiling: None,
            observing: gate::Observing::default(),
            source: ip,
        };
        if let Some(refused) = self.gate(gate::Ask::Login, &standing, secs) {
            return reject(&refused.message, refused.rule);
        }
        // The account's failures do not slow its owner down where a hold would spare it:
        // from its familiar networks (`hold_scope = "unfamiliar"`).
        if let Some(acct) = acct.filter(|_| !self.familiar_to(&rules, &key, ip, secs)) {
            let window = rules.failed_logins_account.window_secs as i64;
            let n = acct
                .rules
                .failed_logins_account
                .failures
                .count(secs, window) as u64;
            failures = n;
            tarpit = settings.tarpit_after > 0 && n >= settings.tarpit_after;
        }
        if let Some(ip) = ip
            && let Some(rec) = self.state.ip(ip)
        {
            let window = rules.failed_logins_ip.window_secs as i64;
            let n = rec.rules.failed_logins_ip.failures.count(secs, window) as u64;
            if settings.tarpit_after_ip > 0 && n >= settings.tarpit_after_ip {
                tarpit = true;
                failures = failures.max(n);
            }
        }
        if tarpit {
            PolicyVerdict::Tarpit {
                secs: settings.tarpit_secs,
                failures,
            }
        } else {
            PolicyVerdict::Continue
        }
    }

    /// Whether `ip` is in one of the networks `key` logged in from within `familiar_days`,
    /// with `[rules.failed_logins_account] hold_scope = "unfamiliar"`.
    fn familiar_to(
        &self,
        rules: &crate::rules::RulesConfig,
        key: &str,
        ip: Option<IpAddr>,
        secs: crate::state::Secs,
    ) -> bool {
        let rule = &rules.failed_logins_account;
        let Some(ip) = ip.filter(|_| rule.hold_scope == crate::state::HoldScope::Unfamiliar) else {
            return false;
        };
        let since = secs.saturating_sub(rule.familiar_days.saturating_mul(86_400) as i64);
        self.state
            .familiar(key, since)
            .iter()
            .any(|n| n.contains(&ip))
    }

    /// Records Dovecot's `report` of an attempt whose password was checked: the same
    /// path as the `auth` and `login` verbs.
    pub fn policy_report(&self, at: &PolicyAttempt<'_>, now: Timestamp) {
        let counter = match at.result {
            Outcome::Ok => &self.stats.policy.report_ok,
            Outcome::Fail => &self.stats.policy.report_fail,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.attempt(
            &Attempt {
                user: at.user,
                ip: at.ip,
                result: at.result,
                pwhash: at.pwhash,
                protocol: at.protocol,
                session: at.session,
                origin: Origin::Live,
                client: at.client,
                disabled: false,
                line: None,
                via: super::Via {
                    mech: at.mech,
                    port: at.port,
                    tls: at.tls,
                    ..super::Via::default()
                },
            },
            now,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::Alert;
    use crate::config::{Config, RawConfig};
    use crate::protocol::parse_line;
    use tokio::sync::mpsc;

    fn engine() -> (Engine, mpsc::Receiver<Arc<Alert>>) {
        let config = Config::from_raw(RawConfig::default()).unwrap();
        Engine::new(&config, t(0))
    }

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    fn report(e: &Engine, user: &str, from: &str, protocol: &str, pwhash: u64, ok: bool, at: i64) {
        e.policy_report(
            &PolicyAttempt {
                user,
                ip: ip(from),
                protocol,
                pwhash: Some(pwhash),
                session: Some("sess"),
                result: if ok { Outcome::Ok } else { Outcome::Fail },
                mech: Some("PLAIN"),
                port: Some(40000),
                tls: Some(true),
                client: None,
            },
            t(at),
        );
    }

    fn settings(after: u64, after_ip: u64) -> PolicySettings {
        PolicySettings {
            tarpit_after: after,
            tarpit_after_ip: after_ip,
            tarpit_secs: 2,
            reject_message: None,
        }
    }

    #[test]
    fn an_unknown_account_continues_and_is_not_tracked() {
        let (e, _rx) = engine();
        let v = e.policy_allow("nobody", ip("192.0.2.1"), None, &settings(3, 10), t(0));
        assert_eq!(v, PolicyVerdict::Continue);
        assert_eq!(e.state().account_count(), 0, "allow only reads");
        assert_eq!(e.state().ip_count(), 0);
    }

    #[test]
    fn failures_over_imap_and_smtp_add_up_to_a_hold_that_refuses_every_protocol() {
        let (e, mut rx) = engine();
        let s = settings(0, 0);
        for i in 0..3 {
            assert_eq!(
                e.policy_allow("alice", ip("198.51.100.7"), None, &s, t(i)),
                PolicyVerdict::Continue
            );
            report(&e, "alice", "198.51.100.7", "imap", i as u64, false, i);
        }
        // Two more through Exim's dovecot authenticator: Dovecot says protocol smtp.
        for i in 3..5 {
            report(&e, "alice", "203.0.113.9", "smtp", i as u64, false, i);
        }
        let alert = rx.try_recv().expect("the fifth failure trips the rule");
        assert_eq!(alert.rule, "failed_logins_account");
        assert_eq!(alert.count, 5);
        // The hold answers every protocol: Dovecot's allow, and the Exim socket.
        match e.policy_allow("alice", ip("192.0.2.50"), None, &s, t(10)) {
            PolicyVerdict::Reject { message, rule } => {
                assert_eq!(rule, "failed_logins_account");
                assert!(
                    message.starts_with("account temporarily locked"),
                    "{message}"
                );
            }
            other => panic!("held account: {other:?}"),
        }
        let cmd = parse_line(b"auth user=alice ip=192.0.2.50 result=ok").unwrap();
        assert!(e.handle(&cmd, t(11)).to_string().starts_with("defer "));
        assert_eq!(e.stats.policy.rejected.load(Ordering::Relaxed), 1);
        assert_eq!(
            e.state().account("alice").unwrap().totals.refused,
            2,
            "the policy refusal and the SMTP deferral"
        );
        // The hold ends: Dovecot's logins continue again.
        assert_eq!(
            e.policy_allow("alice", ip("192.0.2.50"), None, &s, t(5 + 900)),
            PolicyVerdict::Continue
        );
    }

    #[test]
    fn a_repeated_password_counts_once_across_protocols() {
        let (e, mut rx) = engine();
        for i in 0..10 {
            let protocol = ["imap", "pop3", "smtp"][i % 3];
            report(&e, "bob", "198.51.100.8", protocol, 0x0a13, false, i as i64);
        }
        assert!(rx.try_recv().is_err(), "one stale password is no attack");
        let acct = e.state().account("bob").unwrap();
        assert_eq!(acct.rules.failed_logins_account.failures.count(10, 300), 1);
        assert_eq!(acct.totals.logins_failed, 10);
    }

    #[test]
    fn an_ongoing_brute_force_is_tarpitted_below_the_hold() {
        let (e, _rx) = engine();
        let s = settings(2, 0);
        report(&e, "carol", "198.51.100.9", "imap", 1, false, 0);
        assert_eq!(
            e.policy_allow("carol", ip("198.51.100.9"), None, &s, t(1)),
            PolicyVerdict::Continue
        );
        report(&e, "carol", "198.51.100.9", "imap", 2, false, 1);
        assert_eq!(
            e.policy_allow("carol", ip("198.51.100.10"), None, &s, t(2)),
            PolicyVerdict::Tarpit {
                secs: 2,
                failures: 2
            },
            "the account's failures, from any address"
        );
        // Out of the rule's window (300 s): no more tarpit.
        assert_eq!(
            e.policy_allow("carol", ip("198.51.100.9"), None, &s, t(302)),
            PolicyVerdict::Continue
        );
        assert_eq!(e.stats.policy.tarpitted.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn an_address_failing_on_many_accounts_is_tarpitted_then_blocked() {
        let (e, mut rx) = engine();
        let s = settings(0, 4);
        for i in 0..4 {
            report(&e, &format!("user{i}"), "203.0.113.66", "pop3", 7, false, i);
        }
        assert_eq!(
            e.policy_allow("someone", ip("203.0.113.66"), None, &s, t(5)),
            PolicyVerdict::Tarpit {
                secs: 2,
                failures: 4
            }
        );
        assert_eq!(
            e.policy_allow("someone", ip("203.0.113.67"), None, &s, t(5)),
            PolicyVerdict::Continue,
            "another address is not concerned"
        );
        for i in 4..20 {
            report(&e, &format!("user{i}"), "203.0.113.66", "pop3", 7, false, 6);
        }
        // Ten distinct accounts: password spraying blocks the address (before the
        // twenty failures of failed_logins_ip, whose block would be weaker).
        assert_eq!(rx.try_recv().unwrap().rule, "password_spraying");
        match e.policy_allow("someone", ip("203.0.113.66"), None, &s, t(7)) {
            PolicyVerdict::Reject { rule, message } => {
                assert_eq!(rule, "password_spraying");
                assert!(
                    message.starts_with("too many authentication failures"),
                    "{message}"
                );
            }
            other => panic!("blocked address: {other:?}"),
        }
    }

    #[test]
    fn the_configured_reject_message_replaces_the_holds() {
        let (e, _rx) = engine();
        for i in 0..5 {
            report(&e, "dave", "192.0.2.9", "imap", i, false, i as i64);
        }
        let s = PolicySettings {
            reject_message: Some("[ALERT] contact the help desk".into()),
            ..settings(0, 0)
        };
        assert_eq!(
            e.policy_allow("dave", None, None, &s, t(6)),
            PolicyVerdict::Reject {
                message: "[ALERT] contact the help desk".into(),
                rule: "failed_logins_account"
            }
        );
    }

    #[test]
    fn account_names_follow_the_engines_case_rule() {
        let (e, _rx) = engine();
        for i in 0..5 {
            report(&e, "Erin", "192.0.2.9", "imap", i, false, i as i64);
        }
        assert!(matches!(
            e.policy_allow("ERIN", None, None, &settings(0, 0), t(6)),
            PolicyVerdict::Reject { .. }
        ));
    }

    #[test]
    fn a_success_is_a_login_in_the_timeline() {
        let (e, _rx) = engine();
        report(&e, "frank", "198.51.100.20", "pop3", 1, true, 0);
        let acct = e.state().account("frank").unwrap();
        assert_eq!(acct.totals.logins_ok, 1);
        let (_, from, protocol) = acct.last_login.clone().unwrap();
        assert_eq!(from, ip("198.51.100.20"));
        assert_eq!(&*protocol, "pop3");
        assert_eq!(e.stats.policy.report_ok.load(Ordering::Relaxed), 1);
    }
}
