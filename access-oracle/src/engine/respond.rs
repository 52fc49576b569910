//! The one response path: what rules tripped is applied here and nowhere else.
//!
//! Rules only report a [`Trip`]; [`Engine::respond`] applies its response (hold the
//! account, block or defer the address, throttle recipients), writes the audit record
//! and raises the alert, after the request's account entry is released. A rule never
//! writes a hold or a block itself. Responses of later kinds (external actions) are
//! added here.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use jiff::Timestamp;

use super::Engine;
use crate::alert::Alert;
use crate::audit;
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
            self.apply(trip, subject.user, subject.ip, now.as_second());
            let mut alert = Alert::from_trip(trip, now, subject.user, subject.ip, subject.protocol);
            alert.rdns = subject.rdns.map(str::to_string);
            self.raise(alert);
        }
    }

    /// Applies the response of a rule that fired: a hold, a block, a throttle, in
    /// force until the trip's `expires`. A trip without a message (the recipient
    /// ceiling, whose window is its own throttle; alerts) changes nothing here.
    fn apply(&self, trip: &Trip, user: Option<&str>, ip: Option<IpAddr>, now: Secs) {
        let Some(message) = trip.message.clone() else {
            return;
        };
        let hold = |deny| Hold {
            since: now,
            until: trip.expires,
            rule: trip.rule,
            message: message.clone(),
            deny,
        };
        match trip.response {
            Response::HoldAccount | Response::DenyAccount => {
                if let Some(user) = user {
                    let deny = trip.response == Response::DenyAccount;
                    strengthen(&mut self.state.account_mut(user).hold, hold(deny), now);
                }
            }
            Response::BlockIp | Response::DeferIpAuth => {
                if let Some(ip) = ip
                    && !self.enrichment().lists.allowed(ip)
                {
                    let deny = trip.response == Response::BlockIp;
                    let mut rec = self.state.ip_mut(ip);
                    rec.last_seen = rec.last_seen.max(now);
                    strengthen(&mut rec.auth_block, hold(deny), now);
                }
            }
            Response::ThrottleRcpt => {
                if let Some(user) = user {
                    strengthen(&mut self.state.account_mut(user).throttle, hold(false), now);
                }
            }
            Response::Alert | Response::Refuse => {}
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
