//! The one response path: what rules tripped is applied here and nowhere else.
//!
//! Rules only report a [`Trip`]; [`Engine::respond`] applies its response (hold the
//! account, block or defer the address, throttle recipients), writes the audit record
//! and raises the alert, after the request's account entry is released. A rule never
//! writes a hold or a block itself. Responses of later kinds (external actions) are
//! added here. Each alert carries its context (`context.rs`): what was done, until when,
//! the `ctl` command that undoes it, and the account's recent activity.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use jiff::Timestamp;

use super::Engine;
use super::context::{Done, Target, action_text};
use crate::actions::Step;
use crate::alert::{Alert, InForceKind};
use crate::audit;
use crate::rules::bad_ip::BadIp;
use crate::rules::disabled_credentials::DisabledCredentials;
use crate::rules::{Response, Trip};
use crate::state::{Hold, Secs, strengthen};

/// What a trip's response would have done, in words, for an observed alert.
fn would_do(trip: &Trip, subject: &Subject<'_>) -> Option<String> {
    let until = Timestamp::from_second(trip.expires).ok()?;
    let who = subject
        .user
        .map(|u| crate::text::escape_controls(u).into_owned());
    let from = subject.ip.map(|ip| ip.to_string());
    Some(match (trip.response, who, from) {
        (Response::HoldAccount, Some(u), _) => format!("hold account {u} until {until}"),
        (Response::DenyAccount, Some(u), _) => format!("refuse account {u} until {until}"),
        (Response::BlockIp, _, Some(ip)) => format!("block {ip} until {until}"),
        (Response::DeferIpAuth, _, Some(ip)) => {
            format!("defer authentication from {ip} until {until}")
        }
        (Response::ThrottleRcpt, Some(u), _) => {
            format!("defer further recipients of {u} until {until}")
        }
        (Response::Refuse, _, _) => "refuse the request".to_string(),
        _ => return None,
    })
}

/// The rule name of the alert raised when an external action gives up on a step.
pub const ACTION_FAILED: &str = "action_failed";

/// Whom a trip is about.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Subject<'a> {
    /// The account, when the event has one.
    pub user: Option<&'a str>,
    /// The source address, when known.
    pub ip: Option<IpAddr>,
    /// The protocol of the event, for the alert.
    pub protocol: Option<&'a str>,
    /// The address's name from the resolver's cache, for the alert.
    pub rdns: Option<&'a str>,
}

impl Engine {
    /// Applies every trip, then records and raises its alert.
    pub(crate) fn respond(&self, trips: &[Trip], subject: &Subject<'_>, now: Timestamp) {
        if trips.is_empty() {
            return;
        }
        let observe_all = self.responses().mode == crate::rules::Mode::Observe;
        let rules = self.rules();
        let secs = now.as_second();
        for trip in trips {
            let observed = observe_all || rules.mode_of(trip.rule) == crate::rules::Mode::Observe;
            // Observed, nothing is put in force, so the rule trips again at each further
            // failure: alert once while what it would have done would be in force, as an
            // enforcing rule does.
            if observed && self.observed_in_force(trip, subject, secs) {
                continue;
            }
            let held = matches!(trip.response, Response::HoldAccount | Response::DenyAccount);
            let info = match subject.user {
                Some(user) if held => self.hold_info(trip, user, subject.ip, secs),
                _ => None,
            };
            let done = if observed {
                None
            } else {
                self.apply(trip, subject.user, subject.ip, secs, info.clone())
            };
            // A repeat offender's block lasts longer than the rule says, and an IPv6
            // address's covers its network: the alert says what was done.
            let block = match (observed, trip.response, subject.ip) {
                (false, Response::BlockIp | Response::DeferIpAuth, Some(ip)) => self
                    .state
                    .blocks()
                    .covering(ip, secs)
                    .filter(|(_, b)| b.hold.rule == trip.rule && b.hold.since == secs),
                _ => None,
            };
            let mut alert = match &block {
                Some((_, b)) if b.hold.until != trip.expires => {
                    let trip = Trip {
                        expires: b.hold.until,
                        ..trip.clone()
                    };
                    Alert::from_trip(&trip, now, subject.user, subject.ip, subject.protocol)
                }
                _ => Alert::from_trip(trip, now, subject.user, subject.ip, subject.protocol),
            };
            if let Some((net, b)) = &block {
                if net.prefix_len() != net.max_prefix_len() {
                    alert.summary.push_str(&format!("; the block covers {net}"));
                }
                if b.repeats > 0 {
                    let memory = self.responses().repeat_memory_secs;
                    let within = if memory >= 86_400 && memory % 86_400 == 0 {
                        format!("{} days", memory / 86_400)
                    } else {
                        crate::time::human_secs(memory)
                    };
                    alert.summary.push_str(&format!(
                        "; repeat offender: blocked {} time(s) before within {within}, so for longer",
                        b.repeats
                    ));
                }
            }
            alert.rdns = subject.rdns.map(str::to_string);
            alert.observed = observed;
            let action = match &done {
                Some(done) => Some(action_text(done)),
                None if observed => Some(match would_do(trip, subject) {
                    Some(what) => format!("observed only: nothing was done (would have: {what})"),
                    None => "observed only: nothing was done".to_string(),
                }),
                None => refusal_text(trip, subject),
            };
            if observed {
                alert.summary = format!("[observed] {}", alert.summary);
            }
            if held {
                // Enforced: the scope of the hold in force (a stronger one may have
                // stayed); observed: the scope it would have had.
                let in_force = match (observed, subject.user) {
                    (false, Some(user)) => self
                        .state
                        .account(user)
                        .and_then(|a| a.hold_info.as_deref().cloned())
                        .map(Box::new),
                    _ => info,
                };
                if let Some(note) = self.scope_note(trip, in_force.as_deref()) {
                    alert.summary.push_str(&note);
                }
            }
            alert.context = Some(Box::new(self.context(subject, done.as_ref(), action, now)));
            self.raise(alert);
        }
    }

    /// Applies the response of a rule that fired: a hold, a block, a throttle, in
    /// force until the trip's `expires`; returns what is in force for it now (the
    /// stronger of what was there and the new one). A trip without a message changes
    /// nothing here: an alert, or the recipient ceiling, whose window is its own
    /// throttle (returned as such, as `ctl release` ends it too).
    fn apply(
        &self,
        trip: &Trip,
        user: Option<&str>,
        ip: Option<IpAddr>,
        now: Secs,
        info: Option<Box<crate::state::HoldInfo>>,
    ) -> Option<Done> {
        let Some(message) = trip.message.clone() else {
            return match (trip.response, user) {
                (Response::ThrottleRcpt, Some(user)) if trip.expires > now => Some(Done {
                    what: InForceKind::Ceiling,
                    on: Target::Account(user.to_string()),
                    until: trip.expires,
                }),
                _ => None,
            };
        };
        let hold = |deny| Hold {
            since: now,
            until: trip.expires,
            rule: trip.rule,
            message: message.clone(),
            deny,
        };
        // What is in force in `slot` after the trip: the hold's kind and end.
        let kept = |slot: &Option<Hold>, target: Target, kinds: (InForceKind, InForceKind)| {
            slot.as_ref().filter(|h| h.active(now)).map(|h| Done {
                what: if h.deny { kinds.1 } else { kinds.0 },
                on: target,
                until: h.until,
            })
        };
        match trip.response {
            Response::HoldAccount | Response::DenyAccount => {
                let user = user?;
                let deny = trip.response == Response::DenyAccount;
                let mut acct = self.state.account_mut(user);
                let new = hold(deny);
                strengthen(&mut acct.hold, new.clone(), now);
                if acct.hold.as_ref() == Some(&new) {
                    acct.hold_info = info;
                }
                self.state.journal_account(user, &mut acct, false);
                let target = Target::Account(user.to_string());
                kept(&acct.hold, target, (InForceKind::Hold, InForceKind::Deny))
            }
            Response::BlockIp | Response::DeferIpAuth => {
                let ip = ip.filter(|ip| !self.enrichment().lists.allowed(*ip))?;
                let deny = trip.response == Response::BlockIp;
                let sizing = self.responses().sizing();
                let net = sizing.network_of(ip);
                let block = self.state.blocks().put(
                    net,
                    hold(deny),
                    Arc::from(trip.rule),
                    None,
                    true,
                    &sizing,
                    now,
                );
                self.send_action(Step::Block {
                    net,
                    until: block.hold.until,
                    by: trip.rule.to_string(),
                    reason: block.hold.message.to_string(),
                });
                let target = Target::Ip(ip);
                kept(
                    &Some(block.hold),
                    target,
                    (InForceKind::Defer, InForceKind::Block),
                )
            }
            Response::ThrottleRcpt => {
                let user = user?;
                let mut acct = self.state.account_mut(user);
                strengthen(&mut acct.throttle, hold(false), now);
                self.state.journal_account(user, &mut acct, false);
                let target = Target::Account(user.to_string());
                kept(
                    &acct.throttle,
                    target,
                    (InForceKind::Throttle, InForceKind::Throttle),
                )
            }
            Response::Alert | Response::Refuse => None,
        }
    }

    /// Whether what an observed `trip` would have done is still "in force": an earlier
    /// observed trip of the same rule on the same account (or address network) would
    /// not have ended yet. If not, notes this one until its end. Responses that put
    /// nothing in force (alerts, refusals by a listing, the ceiling's own window) are
    /// never held back.
    fn observed_in_force(&self, trip: &Trip, subject: &Subject<'_>, now: Secs) -> bool {
        if trip.message.is_none() {
            return false;
        }
        let target: Box<str> = match (trip.response, subject.user, subject.ip) {
            (
                Response::HoldAccount | Response::DenyAccount | Response::ThrottleRcpt,
                Some(user),
                _,
            ) => user.into(),
            (Response::BlockIp | Response::DeferIpAuth, _, Some(ip)) => {
                self.responses().sizing().network_of(ip).to_string().into()
            }
            _ => return false,
        };
        let mut until = self
            .observed
            .entry((trip.rule, target))
            .or_insert(Secs::MIN);
        if *until > now {
            return true;
        }
        *until = trip.expires;
        false
    }

    /// What the scope of a hold means, for its alert's summary: from its `info`, or for
    /// `failed_logins_account` with `hold_scope = "all"` (no info), that.
    fn scope_note(&self, trip: &Trip, info: Option<&crate::state::HoldInfo>) -> Option<String> {
        use crate::state::HoldScope;
        let Some(info) = info else {
            return (trip.rule == crate::rules::FailedLoginsAccount::NAME).then(|| {
                "; scope all (hold_scope = \"all\"): every source is refused".to_string()
            });
        };
        Some(match info.scope {
            HoldScope::Unfamiliar => {
                let nets: Vec<String> = info.familiar.iter().map(|n| n.to_string()).collect();
                format!(
                    "; scope unfamiliar: logins from its familiar networks ({}) go on",
                    nets.join(", ")
                )
            }
            HoldScope::All if info.familiar.is_empty() => {
                "; scope all: the failures came from a familiar network, or none is known"
                    .to_string()
            }
            HoldScope::All => "; scope all".to_string(),
        })
    }

    /// Who a rule's hold on `user` is by and which sources it refuses: for
    /// `failed_logins_account` with `hold_scope = "unfamiliar"`, every source but the
    /// account's familiar networks, unless the failure that tripped it came from one of
    /// them (then every source). Read before the account's entry is locked.
    fn hold_info(
        &self,
        trip: &Trip,
        user: &str,
        ip: Option<IpAddr>,
        now: Secs,
    ) -> Option<Box<crate::state::HoldInfo>> {
        use crate::state::HoldScope;
        let rules = self.rules();
        let rule = &rules.failed_logins_account;
        if trip.rule != crate::rules::FailedLoginsAccount::NAME || rule.hold_scope == HoldScope::All
        {
            return None;
        }
        let since = now.saturating_sub(rule.familiar_days.saturating_mul(86_400) as Secs);
        let familiar = self.state.familiar(user, since);
        let from_familiar = ip.is_some_and(|ip| familiar.iter().any(|n| n.contains(&ip)));
        Some(Box::new(crate::state::HoldInfo {
            by: Arc::from(trip.rule),
            reason: None,
            scope: if from_familiar || familiar.is_empty() {
                HoldScope::All
            } else {
                HoldScope::Unfamiliar
            },
            familiar: if from_familiar { Vec::new() } else { familiar },
        }))
    }

    /// What an external action did with a step: an audit record, and an alert when it
    /// gave up (a block the firewall does not hold is one the administrator must know).
    pub fn action_report(&self, report: crate::actions::Report) {
        let now = Timestamp::from_second(report.at).unwrap_or_else(|_| Timestamp::now());
        let net = report.step.net();
        let single = (net.prefix_len() == net.max_prefix_len()).then(|| net.addr());
        let until = match &report.step {
            crate::actions::Step::Block { until, .. } => Timestamp::from_second(*until).ok(),
            crate::actions::Step::Unblock { .. } => None,
        };
        let what = if report.expiry {
            format!("{}: {} (the block ended)", report.action, report.step)
        } else {
            format!("{}: {}", report.action, report.step)
        };
        self.audit_record(|| {
            let mut r =
                audit::Record::new(audit::Kind::Action, audit::Source::Oracle, now).ip(single);
            r.action = Some(report.step.verb().into());
            r.result = Some(match report.outcome {
                Ok(()) => crate::protocol::Outcome::Ok,
                Err(_) => crate::protocol::Outcome::Fail,
            });
            r.reason = Some(match &report.outcome {
                Ok(()) => what.clone(),
                Err(e) => format!(
                    "{what}: given up after {} attempts: {}",
                    report.attempts,
                    crate::text::escape_controls(e)
                ),
            });
            r.until = until;
            r
        });
        let Err(error) = &report.outcome else {
            return;
        };
        let summary = format!(
            "{what} failed after {} attempts: {}",
            report.attempts,
            crate::text::escape_controls(error)
        );
        let alert = Alert {
            time: now,
            rule: ACTION_FAILED,
            severity: crate::rules::Severity::High,
            account: None,
            ip: single,
            rdns: None,
            protocol: None,
            count: u64::from(report.attempts),
            counts: serde_json::json!({
                "action": report.action,
                "step": report.step.verb(),
                "network": net.to_string(),
                "attempts": report.attempts,
                "error": error,
            }),
            threshold: 0,
            window_secs: 0,
            response: Response::Alert,
            expires: until.unwrap_or(now),
            summary,
            group: None,
            context: None,
            observed: false,
        };
        self.raise(alert);
    }

    /// Queues an alert for the sinks and keeps it for `ctl alerts`.
    pub(super) fn raise(&self, alert: Alert) {
        self.audit_record(|| {
            let mut r = audit::Record::new(audit::Kind::Alert, audit::Source::Oracle, alert.time)
                .ip(alert.ip)
                .protocol(alert.protocol.as_deref());
            r.user = alert.account.as_deref().map(Into::into);
            r.rule = Some(alert.rule.into());
            r.severity = Some(alert.severity);
            r.response = Some(alert.response);
            r.until = (alert.response != Response::Alert).then_some(alert.expires);
            r.reason = Some(alert.summary.clone());
            r.undo = alert.context.as_ref().and_then(|c| c.undo.clone());
            r
        });
        let alert = Arc::new(alert);
        // A rule that fired may have put a hold or block in place: snapshot it.
        self.state.mark_dirty();
        self.stats.alert_raised(alert.rule, alert.severity);
        {
            let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
            if recent.len() >= self.recent_cap.max(1) {
                recent.pop_front();
            }
            recent.push_back(alert.clone());
        }
        if self.alerts.try_send(alert.clone()).is_err() {
            self.stats.alerts_dropped.fetch_add(1, Ordering::Relaxed);
            tracing::error!(rule = alert.rule, summary = %alert.summary,
                "alert queue full or closed; alert not delivered to sinks");
        }
    }
}

/// What a refusal by a listing (the accounts file, a block list) did, in words: no `ctl`
/// command undoes it; the listing does, while it lists.
fn refusal_text(trip: &Trip, subject: &Subject<'_>) -> Option<String> {
    if trip.response != Response::Refuse {
        return None;
    }
    Some(match (trip.rule, subject.user, subject.ip) {
        (DisabledCredentials::NAME, Some(user), _) => format!(
            "requests of account {user} refused while it is listed as disabled (no ctl command ends this: the listing does)"
        ),
        (BadIp::NAME, _, Some(ip)) => format!(
            "requests from {ip} refused while a block list lists it (no ctl command ends this: the list does)"
        ),
        _ => "request refused (no ctl command ends this)".into(),
    })
}
