//! The decision engine: a request and `now` in, a verdict out, rules applied on the way.
//!
//! For each request the verdict is decided from the state *before* the request (a hold,
//! a block, the recipient ceiling), then the request is recorded and the rules run. So a
//! rule that trips never changes the outcome of the request that tripped it (the fifth
//! wrong password still gets Exim's 535); its response applies from the next request.
//! Alerts go to a bounded queue; the verdict never waits for a sink.

mod observe;
pub mod policy;
pub mod stats;

use std::borrow::Cow;
use std::collections::VecDeque;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};

use jiff::Timestamp;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::alert::Alert;
use crate::config::Config;
use crate::protocol::{Command, Outcome, Reply};
use crate::rules::recipient_ceiling::CeilingDecision;
use crate::rules::{RulesConfig, Trip};
use crate::state::{Account, Entry, Hold, Origin, Secs, State};
pub use observe::{Observed, UNKNOWN_PROTOCOL};
pub use stats::Stats;

/// The engine: state, rules and the alert queue, shared by every connection.
pub struct Engine {
    rules: RwLock<Arc<RulesConfig>>,
    case_sensitive: bool,
    state: State,
    alerts: mpsc::Sender<Arc<Alert>>,
    recent: Mutex<VecDeque<Arc<Alert>>>,
    recent_cap: usize,
    /// Counters.
    pub stats: Stats,
    started: Timestamp,
    /// Exim message ids of messages sent by accounts, for their deliveries and bounces.
    messages: dashmap::DashMap<Box<str>, (Box<str>, Secs)>,
    /// Dovecot sessions: failed attempts their auth lines reported, and when last seen.
    sessions: dashmap::DashMap<Box<str>, (u32, Secs)>,
}

/// A login attempt, from SMTP AUTH or another protocol, live or from a log.
pub(crate) struct Attempt<'a> {
    pub(crate) user: &'a str,
    pub(crate) ip: Option<IpAddr>,
    pub(crate) result: Outcome,
    pub(crate) pwhash: Option<u64>,
    pub(crate) protocol: &'a str,
    pub(crate) session: Option<&'a str>,
    pub(crate) origin: Origin,
}

/// How many live login attempts an account remembers for matching their log lines.
const LIVE_ATTEMPTS_KEPT: usize = 16;

impl Engine {
    /// Builds the engine and the receiving end of its alert queue.
    pub fn new(config: &Config, now: Timestamp) -> (Engine, mpsc::Receiver<Arc<Alert>>) {
        let (tx, rx) = mpsc::channel(config.alert_queue_capacity);
        let engine = Engine {
            rules: RwLock::new(Arc::new(config.rules.clone())),
            case_sensitive: config.case_sensitive_accounts,
            state: State::default(),
            alerts: tx,
            recent: Mutex::new(VecDeque::new()),
            recent_cap: config.recent_alerts,
            stats: Stats::default(),
            started: now,
            messages: dashmap::DashMap::new(),
            sessions: dashmap::DashMap::new(),
        };
        (engine, rx)
    }

    /// The rules in force.
    pub fn rules(&self) -> Arc<RulesConfig> {
        self.rules.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the rules (on reload); state is kept.
    pub fn set_rules(&self, rules: RulesConfig) {
        *self.rules.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(rules);
    }

    /// The live state, for the admin socket and the sweeper.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// When the engine started.
    pub fn started(&self) -> Timestamp {
        self.started
    }

    /// The name under which an account is tracked.
    pub fn account_key<'a>(&self, user: &'a str) -> Cow<'a, str> {
        if self.case_sensitive || !user.chars().any(char::is_uppercase) {
            Cow::Borrowed(user)
        } else {
            Cow::Owned(user.to_lowercase())
        }
    }

    /// Decides on one request at `now`.
    pub fn handle(&self, cmd: &Command, now: Timestamp) -> Reply {
        self.stats.request(cmd.verb());
        let secs = now.as_second();
        let reply = match cmd {
            Command::Ping => Reply::Pong,
            Command::Auth(a) => self.attempt(
                &Attempt {
                    user: &a.user,
                    ip: a.ip,
                    result: a.result,
                    pwhash: a.pwhash,
                    protocol: "smtp",
                    session: None,
                    origin: Origin::Live,
                },
                now,
            ),
            Command::Login(l) => self.attempt(
                &Attempt {
                    user: &l.user,
                    ip: l.ip,
                    result: l.result,
                    pwhash: l.pwhash,
                    protocol: &l.protocol,
                    session: l.session.as_deref(),
                    origin: Origin::Live,
                },
                now,
            ),
            Command::Mail(m) => self.submission(&m.user, secs, |acct| {
                acct.totals.messages += 1;
            }),
            Command::Rcpt(r) => self.rcpt(&r.user, r.ip, now),
            Command::Data(d) => self.submission(&d.user, secs, |acct| {
                acct.timeline.push(Entry::Sent {
                    time: secs,
                    msgid: d.msgid.as_deref().map(Arc::from),
                    rcpts: d.rcpts.unwrap_or(0),
                    ip: d.ip,
                    origin: Origin::Live,
                });
            }),
            // Nothing blocks whole connections yet (lists and spraying blocks will).
            Command::Connect(_) => Reply::Accept,
        };
        self.stats.reply(&reply);
        reply
    }

    /// MAIL and DATA of an account: deferred while it is held, else `accepted` runs.
    fn submission(&self, user: &str, secs: Secs, accepted: impl FnOnce(&mut Account)) -> Reply {
        let mut acct = self.state.account_mut(&self.account_key(user));
        acct.last_seen = secs;
        acct.live_submission_at = Some(secs);
        if let Some(h) = acct.active_hold(secs) {
            let reply = Reply::Defer(h.message.to_string());
            acct.totals.refused += 1;
            return reply;
        }
        accepted(&mut acct);
        Reply::Accept
    }

    pub(crate) fn attempt(&self, at: &Attempt<'_>, now: Timestamp) -> Reply {
        let secs = now.as_second();
        let user = self.account_key(at.user);
        let rules = self.rules();
        let mut trips: Vec<Trip> = Vec::new();
        let mut reply = {
            let mut acct = self.state.account_mut(&user);
            acct.last_seen = secs;
            let reply = match acct.active_hold(secs) {
                Some(h) => Reply::Defer(h.message.to_string()),
                None => Reply::Accept,
            };
            let protocol: Arc<str> = Arc::from(at.protocol);
            acct.timeline.push(Entry::Login {
                time: secs,
                protocol: protocol.clone(),
                ip: at.ip,
                result: at.result,
                session: at.session.map(Arc::from),
                logout: None,
                bytes_in: None,
                bytes_out: None,
                origin: at.origin,
            });
            if at.origin == Origin::Live {
                if acct.live_attempts.len() >= LIVE_ATTEMPTS_KEPT {
                    acct.live_attempts.pop_front();
                }
                acct.live_attempts.push_back((secs, at.ip, at.result));
            }
            match at.result {
                Outcome::Ok => {
                    acct.totals.logins_ok += 1;
                    acct.last_login = Some((secs, at.ip, protocol));
                }
                Outcome::Fail => {
                    acct.totals.logins_failed += 1;
                    if let Some(trip) = rules
                        .failed_logins_account
                        .on_failure(&mut acct, secs, at.pwhash)
                    {
                        trips.push(trip);
                    }
                }
            }
            reply
        };
        if let Some(ip) = at.ip {
            if at.result == Outcome::Fail {
                let key = at.pwhash.map(|h| {
                    let mut hasher = DefaultHasher::new();
                    (&*user, h).hash(&mut hasher);
                    hasher.finish()
                });
                let mut rec = self.state.ip_mut(ip);
                rec.last_seen = secs;
                if reply == Reply::Accept
                    && let Some(b) = rec.active_auth_block(secs)
                {
                    reply = Reply::Defer(b.message.to_string());
                }
                if let Some(trip) = rules.failed_logins_ip.on_failure(&mut rec, secs, key) {
                    trips.push(trip);
                }
            } else if reply == Reply::Accept
                // A success creates no record: only read an existing one.
                && let Some(rec) = self.state.ip(ip)
                && let Some(b) = rec.active_auth_block(secs)
            {
                reply = Reply::Defer(b.message.to_string());
            }
        }
        // A log event is a record of what already happened: nobody refused it.
        if reply != Reply::Accept && at.origin == Origin::Live {
            self.state.account_mut(&user).totals.refused += 1;
        }
        let protocol = (at.protocol != UNKNOWN_PROTOCOL).then_some(at.protocol);
        for trip in &trips {
            self.raise(Alert::from_trip(trip, now, Some(&user), at.ip, protocol));
        }
        reply
    }

    fn rcpt(&self, user: &str, ip: Option<IpAddr>, now: Timestamp) -> Reply {
        let secs = now.as_second();
        let user = self.account_key(user);
        let rules = self.rules();
        let (reply, trip) = {
            let mut acct = self.state.account_mut(&user);
            acct.last_seen = secs;
            acct.live_submission_at = Some(secs);
            if let Some(h) = acct.active_hold(secs) {
                let reply = Reply::Defer(h.message.to_string());
                acct.totals.rcpts_refused += 1;
                acct.totals.refused += 1;
                return reply;
            }
            match rules.recipient_ceiling.on_rcpt(&mut acct, secs) {
                CeilingDecision::Accept(trip) => {
                    acct.totals.rcpts_accepted += 1;
                    (Reply::Accept, trip)
                }
                CeilingDecision::Defer { .. } => {
                    acct.totals.rcpts_refused += 1;
                    acct.totals.refused += 1;
                    (Reply::Defer(rules.recipient_ceiling.message.clone()), None)
                }
            }
        };
        if let Some(trip) = trip {
            self.raise(Alert::from_trip(&trip, now, Some(&user), ip, Some("smtp")));
        }
        reply
    }

    /// Queues an alert for the sinks and keeps it for `ctl alerts`.
    fn raise(&self, alert: Alert) {
        let alert = Arc::new(alert);
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

    /// The most recent alerts, newest last.
    pub fn recent_alerts(&self, limit: usize) -> Vec<Arc<Alert>> {
        let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        recent
            .iter()
            .skip(recent.len().saturating_sub(limit))
            .cloned()
            .collect()
    }

    /// What is known about an account, as shown by `ctl account`.
    pub fn account_report(&self, user: &str, now: Timestamp) -> Value {
        let secs = now.as_second();
        let key = self.account_key(user);
        let rules = self.rules();
        let Some(acct) = self.state.account(&key) else {
            return json!({ "account": key, "tracked": false, "hold": null });
        };
        let fa = &rules.failed_logins_account;
        let rc = &rules.recipient_ceiling;
        let mut rcpts = acct.rcpts.clone();
        rcpts.prune(secs, rc.window_secs as Secs);
        json!({
            "account": key,
            "tracked": true,
            "hold": acct.active_hold(secs).map(hold_json),
            "failed_logins": {
                "count": acct.auth_failures.count(secs, fa.window_secs as Secs),
                "threshold": fa.threshold,
                "window_secs": fa.window_secs,
            },
            "recipients": {
                "count": rcpts.len(),
                "limit": rc.limit,
                "window_secs": rc.window_secs,
                "throttled_until": rcpts
                    .below_limit_at(rc.limit as usize, rc.window_secs as Secs)
                    .map(ts),
            },
            "totals": acct.totals,
            "last_seen": ts(acct.last_seen),
            "timeline": acct.timeline.entries().map(timeline_json).collect::<Vec<_>>(),
            "last_login": acct.last_login.as_ref().map(|(t, ip, proto)| json!({
                "time": ts(*t), "ip": ip, "protocol": &**proto,
            })),
        })
    }

    /// Releases an account: ends its hold and forgets its failures and recipient count,
    /// so it does not trip again on old events. Returns what was cleared.
    pub fn release(&self, user: &str, now: Timestamp) -> Value {
        let key = self.account_key(user);
        let Some(mut acct) = self.state.tracked_account_mut(&key) else {
            return json!({ "account": key, "released": false, "reason": "account not tracked" });
        };
        let hold = acct.hold.take().filter(|h| h.active(now.as_second()));
        acct.auth_failures.clear();
        let throttled = !acct.rcpts.is_empty();
        acct.rcpts.clear();
        json!({
            "account": key,
            "released": true,
            "hold": hold.as_ref().map(hold_json),
            "cleared_recipient_count": throttled,
        })
    }

    /// Lifts an authentication block from an address.
    pub fn unblock(&self, ip: IpAddr, now: Timestamp) -> Value {
        let Some(mut rec) = self.state.tracked_ip_mut(ip) else {
            return json!({ "ip": ip, "unblocked": false, "reason": "address not tracked" });
        };
        let block = rec.auth_block.take().filter(|b| b.active(now.as_second()));
        rec.auth_failures.clear();
        json!({ "ip": ip, "unblocked": block.is_some(), "block": block.as_ref().map(hold_json) })
    }

    /// Forgets idle entries; run periodically.
    pub fn sweep(&self, now: Timestamp, idle_secs: u64, max_accounts: usize) -> usize {
        let secs = now.as_second();
        self.messages
            .retain(|_, (_, seen)| *seen > secs - idle_secs as Secs);
        self.sessions
            .retain(|_, (_, seen)| *seen > secs - observe::MATCH_OK_SECS);
        self.state.sweep(secs, idle_secs as Secs, max_accounts)
    }

    /// Holds and blocks in force, for `ctl status`.
    pub fn responses_in_force(&self, now: Timestamp) -> Value {
        let secs = now.as_second();
        json!({
            "holds": self.state.active_holds(secs).into_iter()
                .map(|(user, h)| { let mut v = hold_json(&h); v["account"] = json!(user); v })
                .collect::<Vec<_>>(),
            "ip_blocks": self.state.active_ip_blocks(secs).into_iter()
                .map(|(ip, h)| { let mut v = hold_json(&h); v["ip"] = json!(ip); v })
                .collect::<Vec<_>>(),
        })
    }
}

fn ts(secs: Secs) -> String {
    Timestamp::from_second(secs)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// A timeline entry with its times as RFC 3339.
fn timeline_json(e: &Entry) -> Value {
    let mut v = serde_json::to_value(e).unwrap_or(Value::Null);
    for key in ["time", "logout"] {
        if let Some(secs) = v.get(key).and_then(Value::as_i64) {
            v[key] = json!(ts(secs));
        }
    }
    v
}

fn hold_json(h: &Hold) -> Value {
    json!({
        "since": ts(h.since),
        "until": ts(h.until),
        "rule": h.rule,
        "message": &*h.message,
    })
}

#[cfg(test)]
mod tests;
