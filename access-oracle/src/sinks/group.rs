//! Noise control between a sink's queue and its deliveries: grouping (`group_secs`) and
//! a rate limit (`rate_limit` per `rate_limit_secs`). Plain data driven by the `now` its
//! caller passes; the sink's task asks it what to deliver and when to ask again.
//!
//! **Grouping.** Alerts of one rule for one account (or, without an account, one
//! address) form a group. The first is delivered at once: a person hears of an attack
//! as it starts. Those that follow within `group_secs` of it are held and, when the span
//! ends, delivered as one notification: the latest alert with `group` set to the count
//! (the first included) and the span. While alerts keep coming, each span that ends
//! with some held opens the next one, so a sustained attack makes one notification per
//! `group_secs`; a span that ends with none closes the group. `alerts.jsonl` and the
//! audit trail are written elsewhere and keep every alert.
//!
//! **Rate limit.** At most `rate_limit` notifications per window of `rate_limit_secs`;
//! those held back are counted and, once a window passes with none held back, one
//! summary notification (rule `rate_limit`) says how many, of which rules, over what
//! span. The summary itself is never held back.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use jiff::Timestamp;

use crate::alert::{Alert, Group, human_secs};
use crate::rules::{Response, Severity};
use crate::time::Secs;

/// The rule name of a rate-limit summary.
pub const RATE_LIMIT_RULE: &str = "rate_limit";

/// What a group is about: the rule and the account, else the address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    rule: &'static str,
    subject: String,
}

impl Key {
    fn of(alert: &Alert) -> Key {
        let subject = match (&alert.account, alert.ip) {
            (Some(a), _) => format!("account {a}"),
            (None, Some(ip)) => format!("address {ip}"),
            (None, None) => String::new(),
        };
        Key {
            rule: alert.rule,
            subject,
        }
    }
}

#[derive(Debug)]
struct Open {
    /// When the current span ends.
    ends: Secs,
    /// The first alert's time (of the group, across spans).
    first: Timestamp,
    /// Alerts in the group so far, the first included.
    count: u64,
    /// The latest alert held in this span, if any.
    held: Option<Arc<Alert>>,
}

#[derive(Debug, Default)]
struct Limit {
    /// The current window's start.
    start: Secs,
    /// Notifications let through in it.
    sent: u32,
    /// Held back since the last summary.
    suppressed: u64,
    /// The first and last time one was held back.
    span: Option<(Timestamp, Timestamp)>,
    /// How many of each rule.
    by_rule: BTreeMap<&'static str, u64>,
    /// The worst severity held back.
    severity: Option<Severity>,
}

/// What one call let through, in order, and what it folded away.
#[derive(Debug, Default)]
pub struct Let {
    /// The notifications to deliver now.
    pub deliver: Vec<Arc<Alert>>,
    /// Alerts folded into a group (held to be counted in a later notification).
    pub grouped: u64,
    /// Notifications held back by the rate limit.
    pub suppressed: u64,
}

/// One sink's grouping and rate limit.
#[derive(Debug)]
pub struct Gate {
    group_secs: u64,
    rate_limit: u32,
    rate_limit_secs: u64,
    open: HashMap<Key, Open, foldhash::fast::RandomState>,
    limit: Limit,
}

impl Gate {
    /// A gate grouping over `group_secs` (0: none) and letting `rate_limit`
    /// notifications through per `rate_limit_secs` (0: no limit).
    pub fn new(group_secs: u64, rate_limit: u32, rate_limit_secs: u64) -> Gate {
        Gate {
            group_secs,
            rate_limit,
            rate_limit_secs: rate_limit_secs.max(1),
            open: HashMap::default(),
            limit: Limit::default(),
        }
    }

    /// Whether the gate lets every alert straight through.
    pub fn is_open(&self) -> bool {
        self.group_secs == 0 && self.rate_limit == 0
    }

    /// Takes alerts off the queue at `now`: each is delivered, folded into its group or
    /// held back by the rate limit.
    pub fn offer(&mut self, alerts: &[Arc<Alert>], now: Secs) -> Let {
        let mut out = Let::default();
        let mut candidates = Vec::with_capacity(alerts.len());
        for alert in alerts {
            if self.group_secs == 0 {
                candidates.push(alert.clone());
                continue;
            }
            match self.open.get_mut(&Key::of(alert)) {
                Some(open) => {
                    open.count += 1;
                    open.held = Some(alert.clone());
                    out.grouped += 1;
                }
                None => {
                    self.open.insert(
                        Key::of(alert),
                        Open {
                            ends: now.saturating_add(self.group_secs as Secs),
                            first: alert.time,
                            count: 1,
                            held: None,
                        },
                    );
                    candidates.push(alert.clone());
                }
            }
        }
        self.limit_all(candidates, now, &mut out);
        out
    }

    /// What is due at `now`: groups whose span ended, and the rate limit's summary.
    pub fn due(&mut self, now: Secs) -> Let {
        let mut out = Let::default();
        let mut ready = Vec::new();
        let group_secs = self.group_secs as Secs;
        self.open.retain(|_, open| {
            if open.ends > now {
                return true;
            }
            match open.held.take() {
                Some(latest) => {
                    ready.push(grouped(&latest, open));
                    // The attack goes on: the next span starts now, held from the start.
                    open.ends = now.saturating_add(group_secs);
                    true
                }
                None => false,
            }
        });
        ready.sort_by_key(|a| a.time);
        self.limit_all(ready, now, &mut out);
        if let Some(summary) = self.summary(now) {
            out.deliver.push(summary);
        }
        out
    }

    /// Everything held, at shutdown: each group with alerts held, then the summary.
    pub fn flush(&mut self, now: Secs) -> Vec<Arc<Alert>> {
        let mut out: Vec<Arc<Alert>> = self
            .open
            .drain()
            .filter_map(|(_, mut open)| open.held.take().map(|l| grouped(&l, &open)))
            .collect();
        out.sort_by_key(|a| a.time);
        if self.limit.suppressed > 0 {
            self.limit.start = Secs::MIN;
            out.extend(self.summary(now));
        }
        out
    }

    /// When [`Gate::due`] next has something to do, if ever.
    pub fn next_due(&self) -> Option<Secs> {
        let groups = self.open.values().map(|o| o.ends).min();
        let summary = (self.limit.suppressed > 0).then(|| {
            self.limit
                .start
                .saturating_add(self.rate_limit_secs as Secs)
        });
        match (groups, summary) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn limit_all(&mut self, alerts: Vec<Arc<Alert>>, now: Secs, out: &mut Let) {
        for alert in alerts {
            if self.admit(now) {
                out.deliver.push(alert);
            } else {
                let l = &mut self.limit;
                l.suppressed += 1;
                let t = alert.time;
                l.span = Some(match l.span {
                    Some((a, b)) => (a.min(t), b.max(t)),
                    None => (t, t),
                });
                *l.by_rule.entry(alert.rule).or_default() += 1;
                l.severity = l.severity.max(Some(alert.severity));
                out.suppressed += 1;
            }
        }
    }

    fn admit(&mut self, now: Secs) -> bool {
        if self.rate_limit == 0 {
            return true;
        }
        self.roll(now);
        if self.limit.sent < self.rate_limit {
            self.limit.sent += 1;
            true
        } else {
            false
        }
    }

    /// Starts a new window when the current one has passed.
    fn roll(&mut self, now: Secs) {
        let window = self.rate_limit_secs as Secs;
        if now >= self.limit.start.saturating_add(window) {
            self.limit.start = now;
            self.limit.sent = 0;
        }
    }

    /// The summary of what was held back, once the window that held it back has passed.
    fn summary(&mut self, now: Secs) -> Option<Arc<Alert>> {
        let l = &self.limit;
        if l.suppressed == 0 || now < l.start.saturating_add(self.rate_limit_secs as Secs) {
            return None;
        }
        let (first, last) = l.span?;
        let rules: Vec<String> = l.by_rule.iter().map(|(r, n)| format!("{r} {n}")).collect();
        let now_ts = Timestamp::from_second(now).unwrap_or(last);
        let summary = format!(
            "{} notifications held back by the rate limit ({} per {}) from {first} to {last}: {}",
            l.suppressed,
            self.rate_limit,
            human_secs(self.rate_limit_secs),
            rules.join(", ")
        );
        let alert = Alert {
            time: now_ts,
            rule: RATE_LIMIT_RULE,
            severity: l.severity.unwrap_or(Severity::Info),
            account: None,
            ip: None,
            rdns: None,
            protocol: None,
            count: l.suppressed,
            counts: serde_json::json!({
                "suppressed": l.suppressed,
                "by_rule": l.by_rule,
                "rate_limit": self.rate_limit,
                "rate_limit_secs": self.rate_limit_secs,
            }),
            threshold: u64::from(self.rate_limit),
            window_secs: self.rate_limit_secs,
            response: Response::Alert,
            expires: now_ts,
            summary,
            group: Some(Group {
                count: l.suppressed,
                first,
                last,
            }),
            context: None,
            observed: false,
        };
        self.limit = Limit::default();
        // The summary opens a window of its own and counts in it.
        self.limit.start = now;
        self.limit.sent = 1;
        Some(Arc::new(alert))
    }
}

fn grouped(latest: &Arc<Alert>, open: &Open) -> Arc<Alert> {
    let mut alert = (**latest).clone();
    alert.group = Some(Group {
        count: open.count,
        first: open.first,
        last: latest.time,
    });
    Arc::new(alert)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Secs = 1_800_000_000;

    fn alert(rule: &'static str, account: &str, at: Secs) -> Arc<Alert> {
        let time = Timestamp::from_second(at).unwrap();
        Arc::new(Alert {
            time,
            rule,
            severity: Severity::High,
            account: Some(account.into()),
            ip: None,
            rdns: None,
            protocol: Some("smtp".into()),
            count: 5,
            counts: serde_json::json!({}),
            threshold: 5,
            window_secs: 300,
            response: Response::Alert,
            expires: time,
            summary: format!("{rule} {account}"),
            group: None,
            context: None,
            observed: false,
        })
    }

    #[test]
    fn the_first_goes_at_once_the_rest_as_one_when_the_span_ends() {
        let mut g = Gate::new(300, 0, 60);
        let first = g.offer(&[alert("r", "alice", T0)], T0);
        assert_eq!(first.deliver.len(), 1);
        assert!(first.deliver[0].group.is_none());
        let more: Vec<_> = (1..5).map(|i| alert("r", "alice", T0 + i * 10)).collect();
        let held = g.offer(&more, T0 + 40);
        assert!(held.deliver.is_empty());
        assert_eq!(held.grouped, 4);
        assert_eq!(g.next_due(), Some(T0 + 300));
        assert!(g.due(T0 + 299).deliver.is_empty());
        let out = g.due(T0 + 300);
        assert_eq!(out.deliver.len(), 1);
        let n = &out.deliver[0];
        let group = n.group.unwrap();
        assert_eq!(group.count, 5);
        assert_eq!(group.first.as_second(), T0);
        assert_eq!(group.last.as_second(), T0 + 40);
        assert!(
            n.headline().contains("5 alerts of r in 40 s"),
            "{}",
            n.headline()
        );
        // A span with nothing held closes the group: the next alert goes at once.
        assert!(g.due(T0 + 600).deliver.is_empty());
        assert_eq!(g.next_due(), None);
        assert_eq!(
            g.offer(&[alert("r", "alice", T0 + 700)], T0 + 700)
                .deliver
                .len(),
            1
        );
    }

    #[test]
    fn a_sustained_attack_makes_one_notification_per_span() {
        let mut g = Gate::new(60, 0, 60);
        let mut delivered = 0;
        for s in 0..600 {
            let now = T0 + s;
            delivered += g.offer(&[alert("r", "alice", now)], now).deliver.len();
            delivered += g.due(now).deliver.len();
        }
        // The first at once, then one per 60 s span.
        assert_eq!(delivered, 1 + 9);
    }

    #[test]
    fn groups_are_per_rule_and_per_account() {
        let mut g = Gate::new(300, 0, 60);
        let out = g.offer(
            &[
                alert("r", "alice", T0),
                alert("r", "bob", T0),
                alert("s", "alice", T0),
                alert("r", "alice", T0 + 1),
            ],
            T0 + 1,
        );
        assert_eq!(out.deliver.len(), 3);
        assert_eq!(out.grouped, 1);
    }

    #[test]
    fn zero_group_secs_delivers_every_alert() {
        let mut g = Gate::new(0, 0, 60);
        assert!(g.is_open());
        let out = g.offer(&[alert("r", "a", T0), alert("r", "a", T0)], T0);
        assert_eq!(out.deliver.len(), 2);
        assert_eq!(g.next_due(), None);
    }

    #[test]
    fn the_rate_limit_holds_back_and_sums_up_when_it_lets_up() {
        let mut g = Gate::new(0, 3, 60);
        let batch: Vec<_> = (0..10)
            .map(|i| alert(if i % 2 == 0 { "a" } else { "b" }, "x", T0 + i))
            .collect();
        let out = g.offer(&batch, T0 + 10);
        assert_eq!(out.deliver.len(), 3);
        assert_eq!(out.suppressed, 7);
        assert_eq!(g.next_due(), Some(T0 + 70));
        assert!(g.due(T0 + 69).deliver.is_empty());
        let out = g.due(T0 + 70);
        assert_eq!(out.deliver.len(), 1);
        let s = &out.deliver[0];
        assert_eq!(s.rule, RATE_LIMIT_RULE);
        assert_eq!(s.count, 7);
        assert_eq!(s.counts["by_rule"]["a"], 3);
        assert_eq!(s.counts["by_rule"]["b"], 4);
        assert_eq!(s.severity, Severity::High);
        assert!(
            s.summary.starts_with("7 notifications held back"),
            "{}",
            s.summary
        );
        // The summary counts in its window: two more go through, the third waits.
        let out = g.offer(
            &[
                alert("a", "x", T0 + 71),
                alert("a", "y", T0 + 71),
                alert("a", "z", T0 + 71),
            ],
            T0 + 71,
        );
        assert_eq!((out.deliver.len(), out.suppressed), (2, 1));
    }

    #[test]
    fn flush_hands_over_what_is_held() {
        let mut g = Gate::new(300, 1, 60);
        g.offer(&[alert("r", "a", T0), alert("r", "a", T0 + 1)], T0 + 1);
        g.offer(&[alert("s", "b", T0 + 2)], T0 + 2);
        let out = g.flush(T0 + 3);
        // The group of r/a (count 2), then the summary of s/b held back by the limit.
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].group.unwrap().count, 2);
        assert_eq!(out[1].rule, RATE_LIMIT_RULE);
        assert_eq!(g.next_due(), None);
    }
}
