//! The one gate: is a request refused by what is already in force?
//!
//! Every verb of the Exim socket (`auth`, `login`, `mail`, `rcpt`, `data`, `connect`) and
//! Dovecot's `allow` ask [`decide`], with the state as it was before the request: a
//! disabled account, a listed or blocked address, a hold, a throttle, the recipient
//! ceiling. One function, so that Exim and Dovecot cannot drift apart: the same standing
//! gives the same decision and the same text whatever the protocol. What the request
//! then adds (a failure counted, a rule tripped) applies from the next request.
//!
//! Strength: a refusal that denies beats one that defers; among equals the first in
//! this order wins: disabled account, listed address, address block, account hold,
//! throttle, ceiling.

use std::sync::Arc;

use crate::state::{Account, Hold, Secs};

/// What a request asks for, as far as the gate is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    /// A login attempt: SMTP AUTH (`auth`), another service (`login`), Dovecot's
    /// `allow` (any protocol).
    Login,
    /// MAIL or DATA of an authenticated account.
    Submit,
    /// RCPT of an authenticated account.
    Rcpt,
    /// A new connection, before any authentication.
    Connect,
}

pub use crate::track::Refused;

/// What is in force for a request's account and address, read before the request is
/// counted. Fields that do not apply are `None`.
#[derive(Debug, Default, Clone, Copy)]
pub struct Standing<'a> {
    /// The account's refusal for being listed as disabled (when its rule refuses).
    pub disabled: Option<&'a Refused>,
    /// The address's refusal for being on a block list (when its rule refuses) or
    /// banned by a CrowdSec decision (`[crowdsec]`).
    pub listed: Option<&'a Refused>,
    /// The account's live entry.
    pub account: Option<&'a Account>,
    /// The address's authentication block (possibly expired).
    pub ip_block: Option<&'a Hold>,
    /// The recipient ceiling: its limit, window and text, when it is enabled.
    pub ceiling: Option<Ceiling<'a>>,
    /// Which refusals are only observed: their rule alerts, nothing is refused.
    pub observing: Observing<'a>,
    /// The request's source address: a hold with scope `unfamiliar` spares the
    /// account's familiar networks.
    pub source: Option<std::net::IpAddr>,
}

/// Observe mode, as the gate needs it: `[responses] mode` and each rule's `mode`.
#[derive(Debug, Default, Clone, Copy)]
pub struct Observing<'a> {
    /// `[responses] mode = "observe"`: no rule's refusal is applied (an
    /// administrator's hold or block, rule `admin`, still is).
    pub all: bool,
    /// The rules, for their own `mode`.
    pub rules: Option<&'a crate::rules::RulesConfig>,
}

impl Observing<'_> {
    /// Whether a refusal by `rule` is only observed.
    pub fn observes(&self, rule: &str) -> bool {
        rule != "admin"
            && (self.all
                || self
                    .rules
                    .is_some_and(|r| r.mode_of(rule) == crate::rules::Mode::Observe))
    }
}

/// The recipient ceiling's settings, as the gate needs them.
#[derive(Debug, Clone, Copy)]
pub struct Ceiling<'a> {
    /// Recipients per window.
    pub limit: u64,
    /// The window.
    pub window_secs: Secs,
    /// The text of the deferral.
    pub message: &'a str,
    /// The rule's name.
    pub rule: &'static str,
}

/// The decision for `ask` given `standing` at `now`: the refusal, or `None` to go on.
pub fn decide(ask: Ask, standing: &Standing<'_>, now: Secs) -> Option<Refused> {
    let account = standing.account;
    let hold = account.and_then(|a| {
        let spared = a
            .hold_info
            .as_ref()
            .is_some_and(|i| i.spares(standing.source));
        a.active_hold(now).filter(|_| !spared)
    });
    let block = standing.ip_block.filter(|b| b.active(now));
    // Offered in the tie-breaking order: the first wins among equals, a deny beats a
    // defer offered before it.
    let mut best: Option<Refused> = None;
    let observing = standing.observing;
    let mut offer = |c: Option<Refused>| {
        if let Some(c) = c
            && !observing.observes(c.rule)
            && best.as_ref().is_none_or(|b| c.deny && !b.deny)
        {
            best = Some(c);
        }
    };
    match ask {
        Ask::Login => {
            offer(standing.disabled.cloned());
            offer(standing.listed.cloned());
            offer(block.map(Refused::of));
            offer(hold.map(Refused::of));
        }
        Ask::Submit => {
            offer(standing.disabled.cloned());
            offer(hold.map(Refused::of));
        }
        Ask::Rcpt => {
            offer(standing.disabled.cloned());
            offer(hold.map(Refused::of));
            offer(
                account
                    .and_then(|a| a.throttle.as_ref())
                    .filter(|t| t.active(now))
                    .map(Refused::of),
            );
            if let (Some(a), Some(c)) = (account, standing.ceiling)
                && a.rcpts.count_since(now - c.window_secs) as u64 >= c.limit
            {
                offer(Some(Refused {
                    rule: c.rule,
                    message: Arc::from(c.message),
                    deny: false,
                }));
            }
        }
        Ask::Connect => {
            offer(standing.listed.cloned());
            // A block that only defers authentication lets the connection in.
            offer(block.filter(|b| b.deny).map(Refused::of));
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hold(rule: &'static str, text: &str, deny: bool) -> Hold {
        Hold {
            since: 0,
            until: 1000,
            rule,
            message: Arc::from(text),
            deny,
        }
    }

    #[test]
    fn deny_beats_defer_and_the_order_breaks_ties() {
        let account = Account {
            hold: Some(hold("failed_logins_account", "held", false)),
            ..Default::default()
        };
        let block = hold("password_spraying", "blocked", true);
        let s = Standing {
            account: Some(&account),
            ip_block: Some(&block),
            ..Default::default()
        };
        let r = decide(Ask::Login, &s, 10).unwrap();
        assert_eq!((r.rule, r.deny), ("password_spraying", true));
        // Submissions look at the account only.
        let r = decide(Ask::Submit, &s, 10).unwrap();
        assert_eq!(&*r.message, "held");
        // Connect: only a block that denies.
        assert_eq!(
            decide(Ask::Connect, &s, 10).unwrap().rule,
            "password_spraying"
        );
        let defer_block = hold("failed_logins_ip", "slow down", false);
        let s = Standing {
            ip_block: Some(&defer_block),
            ..Default::default()
        };
        assert_eq!(decide(Ask::Connect, &s, 10), None);
        assert_eq!(&*decide(Ask::Login, &s, 10).unwrap().message, "slow down");
        // Expired holds refuse nothing.
        assert_eq!(decide(Ask::Login, &s, 1000), None);
    }
}
