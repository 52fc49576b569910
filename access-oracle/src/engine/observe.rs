//! Log events into the same engine as live requests, without counting anything twice.
//!
//! The rule (also in `docs/ARCHITECTURE.md`): **what the live path reported is counted
//! live; a log line only adds what the live path did not see.**
//!
//! * An authentication attempt the live path reported (same account, address and outcome,
//!   within [`MATCH_FAIL_SECS`] for failures or [`MATCH_OK_SECS`] for successes) is
//!   matched with its log line and not counted again. Whichever comes first counts: a log
//!   line can beat its live report (Dovecot logs a wrong password before it reports it
//!   to the policy endpoint), and then the live report is the one matched. Unmatched log attempts (servers or
//!   protocols without the library) count like live ones: failures trip the same rules.
//! * A temporary authentication failure in the log (Exim's 435) is not a wrong password:
//!   it is usually the oracle's own deferral. It is not counted.
//! * Dovecot reports each failed attempt (auth process) and then the session's summary
//!   (`auth failed, N attempts`): the summary counts only the attempts its session's own
//!   lines did not already report (all of them with `auth_verbose = no`).
//! * Exim shows a successful SMTP AUTH only as `A=` on each message's arrival: a success
//!   from the same address within [`MATCH_OK_SECS`] of the last one is the same login.
//! * An arrival (`<=` with `A=`) counts its recipients toward the ceiling only if the
//!   live path has not seen the account submit within the ceiling's window; otherwise the
//!   recipients were counted at RCPT time.
//! * Deliveries, deferrals and bounces are tied to the sending account by message id;
//!   Dovecot logouts are merged into the login with the same session id. Both only feed
//!   the account's timeline.
//!
//! A rule that trips on a log event applies its response to the next live request, and
//! raises the same alert.

use std::sync::Arc;

use crate::audit::{self, Kind, Source};
use crate::protocol::{Outcome, Reply};
use crate::sources::{EventKind, LogEvent};
use crate::state::{Entry, Origin, Secs};

use super::{Attempt, Engine};

/// How far apart a live failure and its log line may be, in seconds.
pub const MATCH_FAIL_SECS: Secs = 300;
/// How far apart a live success and its log line may be (an `A=` arrival can come long
/// after the AUTH), in seconds.
pub const MATCH_OK_SECS: Secs = 3600;

/// What a log event did to the state, for `replay`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// For a login attempt: the verdict the live path would have given it.
    pub verdict: Option<Reply>,
    /// Whether the event was counted (not already seen live).
    pub counted: bool,
    /// For an arrival: recipients the live path would have deferred at the ceiling.
    pub rcpts_deferred: u64,
}

impl Engine {
    /// Feeds one log event into the state, on the event's own clock.
    pub fn observe(&self, ev: &LogEvent) -> Observed {
        let secs = ev.time.as_second();
        match ev.kind {
            EventKind::Auth => self.observe_auth(ev, secs),
            EventKind::Arrival => self.observe_arrival(ev, secs),
            EventKind::Delivery | EventKind::Deferral | EventKind::Bounce => {
                let Some(msgid) = ev.msgid.as_deref() else {
                    return Observed::default();
                };
                let Some(owner) = self.messages.get(msgid).map(|m| m.0.clone()) else {
                    return Observed::default();
                };
                let outcome = match ev.kind {
                    EventKind::Delivery => "delivered",
                    EventKind::Deferral => "deferred",
                    _ => "bounced",
                };
                if let Some(mut acct) = self.state.tracked_account_mut(&owner) {
                    acct.timeline.push(Entry::Delivery {
                        time: secs,
                        msgid: Arc::from(msgid),
                        rcpt: ev.recipients.first().map(|r| Arc::from(r.as_str())),
                        outcome,
                    });
                }
                Observed {
                    counted: true,
                    ..Observed::default()
                }
            }
            EventKind::Logout => {
                let Some(user) = ev.user.as_deref() else {
                    return Observed::default();
                };
                let key = self.account_key(user);
                let mut acct = self.state.account_mut(&key);
                acct.last_seen = acct.last_seen.max(secs);
                let bytes = (ev.bytes_in, ev.bytes_out);
                let merged = ev
                    .session
                    .as_deref()
                    .is_some_and(|s| acct.timeline.end_session(s, secs, bytes));
                if !merged {
                    acct.timeline.push(Entry::Session {
                        time: secs,
                        protocol: crate::state::timeline::protocol_arc(protocol_name(ev)),
                        session: ev.session.as_deref().map(Arc::from),
                        bytes_in: ev.bytes_in,
                        bytes_out: ev.bytes_out,
                    });
                }
                drop(acct);
                self.audit_record(|| {
                    let mut r = log_record(Kind::Logout, ev, &key);
                    r.bytes_in = ev.bytes_in;
                    r.bytes_out = ev.bytes_out;
                    r.fetched = ev.fetched;
                    r.deleted = ev.deleted.or(ev.expunged);
                    r
                });
                Observed {
                    counted: true,
                    ..Observed::default()
                }
            }
            EventKind::MailboxAction | EventKind::AdminAction => {
                // Only the audit trail keeps these: who read, moved or deleted what.
                let kind = if ev.kind == EventKind::AdminAction {
                    Kind::Admin
                } else {
                    Kind::Mailbox
                };
                let key = ev.user.as_deref().map(|u| self.account_key(u));
                self.audit_record(|| {
                    let mut r = log_record(kind, ev, key.as_deref().unwrap_or(""));
                    r.user = key.as_deref().map(Into::into);
                    r.action = ev.action.clone();
                    r.admin = ev.admin.clone();
                    r.mailbox = ev.mailbox.clone();
                    r.from_mailbox = ev.from_mailbox.clone();
                    r.uid = ev.uid;
                    r.msgid = ev.msgid.clone();
                    r.message_id = ev.message_id.clone();
                    r.reason = ev.reason.as_deref().map(str::to_string);
                    r
                });
                Observed {
                    counted: true,
                    ..Observed::default()
                }
            }
            _ => Observed::default(),
        }
    }

    fn observe_auth(&self, ev: &LogEvent, secs: Secs) -> Observed {
        let (Some(user), Some(result)) = (ev.user.as_deref(), ev.result) else {
            return Observed::default();
        };
        if result == Outcome::Fail && ev.temporary == Some(true) {
            return Observed::default();
        }
        let key = self.account_key(user);
        // Dovecot's auth process does not name the service; the session's summary or
        // login line does: name it on the entries of that session.
        if let (Some(session), Some(protocol)) = (ev.session.as_deref(), ev.protocol)
            && let Some(mut acct) = self.state.tracked_account_mut(&key)
        {
            acct.timeline
                .name_session_protocol(session, protocol.as_str());
        }
        // Dovecot logs each failed attempt (auth process) and then a summary of the
        // session (login process, with `attempts`): count the summary only for the
        // attempts its session's own lines did not already report.
        let mut repeat = 1;
        if result == Outcome::Fail
            && let Some(session) = ev.session.as_deref()
        {
            let mut seen = self.sessions.entry(session.into()).or_insert((0, secs));
            seen.1 = secs;
            match ev.attempts {
                Some(total) => {
                    repeat = total.saturating_sub(seen.0);
                    seen.0 = seen.0.max(total);
                }
                None => seen.0 += 1,
            }
        }
        if repeat == 0 {
            return Observed::default();
        }
        let attempt = Attempt {
            user,
            ip: ev.ip,
            result,
            pwhash: None,
            protocol: protocol_name(ev),
            session: ev.session.as_deref(),
            origin: Origin::Log,
            client: ev.helo.as_deref(),
            disabled: false,
            line: Some((&ev.file, ev.offset)),
            via: super::Via {
                mech: ev.mech.as_deref(),
                authenticator: ev.authenticator.as_deref(),
                port: ev.port,
                local_port: ev.local_port,
                tls: ev.tls,
                cipher: None,
            },
        };
        if let Some(mut acct) = self.state.tracked_account_mut(&key) {
            // The line of an attempt already counted adds to its entry what the live
            // request did not know (Exim's authenticator name, a port).
            let complete = |acct: &mut crate::state::Account, window| {
                let detail = attempt.detail();
                if !detail.is_empty() {
                    acct.timeline
                        .complete_login(secs, ev.ip, result, window, &detail);
                }
            };
            // Exim logs a successful AUTH once per message (`A=`): a login from the same
            // address within the hour is the same session, not a new login.
            if result == Outcome::Ok
                && ev
                    .protocol
                    .is_none_or(|p| p == crate::sources::Protocol::Smtp)
                && acct.last_login.as_ref().is_some_and(|(t, ip, proto)| {
                    *ip == ev.ip && &**proto == "smtp" && (secs - t).abs() <= MATCH_OK_SECS
                })
            {
                acct.live_attempts.retain(|&(t, ip, r)| {
                    !(r == result && ip == ev.ip && (t - secs).abs() <= MATCH_OK_SECS)
                });
                complete(&mut acct, MATCH_OK_SECS);
                return Observed::default();
            }
            let window = match result {
                Outcome::Ok => MATCH_OK_SECS,
                Outcome::Fail => MATCH_FAIL_SECS,
            };
            let seen_live = acct
                .live_attempts
                .iter()
                .position(|&(t, ip, r)| r == result && ip == ev.ip && (t - secs).abs() <= window);
            if let Some(i) = seen_live {
                acct.live_attempts.remove(i);
                complete(&mut acct, window);
                return Observed::default();
            }
        }
        self.stats
            .log_attempts
            .fetch_add(u64::from(repeat), std::sync::atomic::Ordering::Relaxed);
        let mut verdict = self.attempt(&attempt, ev.time);
        for _ in 1..repeat {
            verdict = self.attempt(&attempt, ev.time);
        }
        Observed {
            verdict: Some(verdict),
            counted: true,
            rcpts_deferred: 0,
        }
    }

    fn observe_arrival(&self, ev: &LogEvent, secs: Secs) -> Observed {
        let Some(user) = ev.user.as_deref() else {
            // Not sent by an authenticated account: inbound mail.
            return Observed::default();
        };
        let key = self.account_key(user);
        let rules = self.rules();
        let ceiling = &rules.recipient_ceiling;
        let rcpts = ev
            .rcpt_count
            .map(u64::from)
            .unwrap_or(ev.recipients.len() as u64);
        if let Some(msgid) = ev.msgid.as_deref() {
            self.messages.insert(msgid.into(), (Box::from(&*key), secs));
        }
        let trips;
        let deferred;
        {
            let mut acct = self.state.account_mut(&key);
            acct.last_seen = acct.last_seen.max(secs);
            let counted_live = acct
                .live_submission_at
                .is_some_and(|t| (secs - t).abs() <= ceiling.window_secs as Secs);
            if counted_live {
                // The DATA check already put the message in the timeline: add its id.
                let msgid = ev.msgid.as_deref().map(Arc::from);
                let mut tagged = false;
                for e in acct.timeline.entries_mut() {
                    if let Entry::Sent {
                        time,
                        msgid: id @ None,
                        origin: Origin::Live,
                        ..
                    } = e
                        && (*time - secs).abs() <= MATCH_FAIL_SECS
                    {
                        *id = msgid.clone();
                        tagged = true;
                        break;
                    }
                }
                if !tagged {
                    acct.timeline.push(Entry::Sent {
                        time: secs,
                        msgid,
                        rcpts,
                        ip: ev.ip,
                        origin: Origin::Log,
                    });
                }
                return Observed::default();
            }
            acct.totals.messages += 1;
            acct.timeline.push(Entry::Sent {
                time: secs,
                msgid: ev.msgid.as_deref().map(Arc::from),
                rcpts,
                ip: ev.ip,
                origin: Origin::Log,
            });
            self.audit_record(|| {
                let mut r = log_record(Kind::Sent, ev, &key);
                r.protocol = Some("smtp".into());
                r.msgid = ev.msgid.clone();
                r.message_id = ev.message_id.clone();
                r.rcpts = Some(rcpts);
                r
            });
            let counted = self.count_rcpts(&mut acct, &key, rcpts, secs, &rules);
            deferred = counted.deferred;
            trips = counted.trips;
        }
        self.respond(
            &trips,
            &super::respond::Subject {
                user: Some(&key),
                ip: ev.ip,
                protocol: Some("smtp"),
                rdns: None,
            },
            ev.time,
        );
        Observed {
            verdict: None,
            counted: true,
            rcpts_deferred: deferred,
        }
    }
}

/// An audit record of a log event: its time, account, address, protocol, session, and
/// where in which file it was read.
fn log_record(kind: Kind, ev: &LogEvent, user: &str) -> audit::Record {
    let mut r = audit::Record::new(kind, Source::Log, ev.time)
        .ip(ev.ip)
        .protocol(ev.protocol.map(crate::sources::Protocol::as_str));
    if !user.is_empty() {
        r.user = Some(user.into());
    }
    r.session = ev.session.clone();
    r.file = Some(ev.file.to_string());
    r.offset = Some(ev.offset);
    r
}

/// The event's protocol; [`UNKNOWN_PROTOCOL`] for Dovecot's auth-process lines, which
/// do not say (the session's later lines do).
fn protocol_name(ev: &LogEvent) -> &'static str {
    ev.protocol
        .map_or(UNKNOWN_PROTOCOL, crate::sources::Protocol::as_str)
}

pub use crate::track::timeline::UNKNOWN_PROTOCOL;
