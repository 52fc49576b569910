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
use crate::alert::{Alert, InForceKind};
use crate::audit;
use crate::rules::bad_ip::BadIp;
use crate::rules::disabled_credentials::DisabledCredentials;
use crate::rules::{Response, Trip};
use crate::state::{Hold, Secs, strengthen};

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
        for trip in trips {
            let done = self.apply(trip, subject.user, subject.ip, now.as_second());
            let mut alert = Alert::from_trip(trip, now, subject.user, subject.ip, subject.protocol);
            alert.rdns = subject.rdns.map(str::to_string);
            let action = match &done {
                Some(done) => Some(action_text(done)),
                None => refusal_text(trip, subject),
            };
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
                strengthen(&mut acct.hold, hold(deny), now);
                let target = Target::Account(user.to_string());
                kept(&acct.hold, target, (InForceKind::Hold, InForceKind::Deny))
            }
            Response::BlockIp | Response::DeferIpAuth => {
                let ip = ip.filter(|ip| !self.enrichment().lists.allowed(*ip))?;
                let deny = trip.response == Response::BlockIp;
                let mut rec = self.state.ip_mut(ip);
                rec.last_seen = rec.last_seen.max(now);
                strengthen(&mut rec.auth_block, hold(deny), now);
                let target = Target::Ip(ip);
                kept(
                    &rec.auth_block,
                    target,
                    (InForceKind::Defer, InForceKind::Block),
                )
            }
            Response::ThrottleRcpt => {
                let user = user?;
                let mut acct = self.state.account_mut(user);
                strengthen(&mut acct.throttle, hold(false), now);
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

    /// Queues an alert for the sinks and keeps it for `ctl alerts`.
    fn raise(&self, alert: Alert) {
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
        self.stats.alerts_raised.fetch_add(1, Ordering::Relaxed);
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
