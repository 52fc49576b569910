//! CrowdSec decisions: the addresses and ranges a CrowdSec Local API says to ban
//! (`[crowdsec]`, the bouncer side; `actions/crowdsec.rs` polls the API and hands each
//! answer of its decision stream to [`Decisions::apply`]).
//!
//! The stream is `GET /v1/decisions/stream`: the first call (`startup=true`) lists every
//! decision in force, later ones what was added and deleted since the previous call:
//!
//! ```json
//! {"new": [{"id": 7, "origin": "cscli", "scenario": "manual 'ban' from 'host'",
//!           "scope": "Ip", "type": "ban", "value": "192.0.2.7", "duration": "3h59m58.2s"}],
//!  "deleted": [{"id": 5, "scope": "Range", "value": "198.51.100.0/24", ...}]}
//! ```
//!
//! Only `type = "ban"` with scope `Ip` or `Range` (in any case) is kept: a captcha or
//! throttle decision asks for something the oracle cannot do at AUTH time, and other
//! scopes (a country, an AS) name no address; they are counted as ignored. A decision
//! ends at the time its `duration` gives from the moment it was received, whether or not
//! the stream has said so yet: [`Decisions::banned`] compares with the request's `now`.
//!
//! Lookups take a read lock for the moment it takes to clone an `Arc` of the current
//! table (a longest-prefix trie of networks); an answer of the stream builds a new table
//! aside and swaps it in, so a verdict never waits for the poller. When the Local API
//! cannot be reached, the table stays as it was (decisions still end at their time).

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use ipnet::{IpNet, Ipv4Net};
use prefix_trie::joint::JointPrefixMap;
use serde::Deserialize;
use serde_json::json;

use super::canonical_ip;
use crate::time::Secs;

/// The longest scenario name kept, in characters (the rest is cut).
const MAX_SCENARIO_CHARS: usize = 120;

/// One ban decision as the table keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The Local API's id of the decision.
    pub id: i64,
    /// The address (a /32 or /128) or range banned.
    pub network: IpNet,
    /// When it ends (Unix seconds).
    pub until: Secs,
    /// The scenario that made it (`crowdsecurity/ssh-bf`, `manual 'ban' from 'host'`),
    /// printable ASCII only, cut to 120 characters.
    pub scenario: Arc<str>,
    /// Where it came from (`crowdsec`, `cscli`, `CAPI`, `lists`).
    pub origin: Arc<str>,
}

/// What a ban in force says about an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ban {
    /// The decision.
    pub decision: Decision,
    /// What the client is told: `CrowdSec decision <scenario>`.
    pub text: Arc<str>,
    /// Whether the refusal denies (a permanent failure) rather than defers.
    pub deny: bool,
}

/// One entry of the stream, as the Local API sends it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct StreamDecision {
    /// The decision's id.
    pub id: i64,
    /// `crowdsec`, `cscli`, `CAPI`, `lists`, ...
    pub origin: Option<String>,
    /// The scenario.
    pub scenario: Option<String>,
    /// `Ip` or `Range` (others are ignored).
    pub scope: Option<String>,
    /// `ban`, `captcha`, `throttle`, ...
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// The address or range.
    pub value: Option<String>,
    /// Time left, as a Go duration (`3h59m58.2s`, `-18ms` for one that has ended).
    pub duration: Option<String>,
}

/// One answer of the decision stream.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Stream {
    /// Decisions added (with `startup=true`: every decision in force).
    #[serde(deserialize_with = "null_as_empty")]
    pub new: Vec<StreamDecision>,
    /// Decisions deleted or ended.
    #[serde(deserialize_with = "null_as_empty")]
    pub deleted: Vec<StreamDecision>,
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<StreamDecision>, D::Error> {
    Ok(Option::<Vec<StreamDecision>>::deserialize(d)?.unwrap_or_default())
}

impl Stream {
    /// Reads an answer of the stream.
    pub fn parse(body: &[u8]) -> Result<Stream, String> {
        serde_json::from_slice(body)
            .map_err(|e| format!("the decision stream's answer is not what it should be: {e}"))
    }
}

/// What [`Decisions::apply`] did with one answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    /// Ban decisions added or replaced.
    pub added: usize,
    /// Decisions removed (deleted, or gone from a full list).
    pub removed: usize,
    /// Decisions not kept: another type or scope, a value that is not an address or
    /// range, or a duration already over.
    pub ignored: usize,
    /// Ban decisions in the table afterwards.
    pub in_force: usize,
}

/// The ban decisions in force, shared (`Arc<Decisions>`) between the engine and the
/// poller.
pub struct Decisions {
    table: RwLock<Arc<Table>>,
    /// Every decision kept, by id: what the next table is built from. Its lock also
    /// serialises updates.
    kept: Mutex<HashMap<i64, Decision>>,
    deny: bool,
    /// Whether `[crowdsec]` is configured (else the table stays empty).
    enabled: bool,
    counters: Counters,
}

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    polls: AtomicU64,
    poll_errors: AtomicU64,
    added: AtomicU64,
    removed: AtomicU64,
    ignored: AtomicU64,
    last_poll: Mutex<Option<Secs>>,
    last_error: Mutex<Option<(Secs, String)>>,
}

/// The lookup table: each network's decisions.
#[derive(Default)]
struct Table {
    nets: JointPrefixMap<IpNet, Vec<Entry>>,
    len: usize,
}

struct Entry {
    decision: Decision,
    text: Arc<str>,
}

impl fmt::Debug for Decisions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decisions")
            .field("in_force", &self.table().len)
            .field("deny", &self.deny)
            .finish()
    }
}

impl Default for Decisions {
    /// No `[crowdsec]`: a table that stays empty.
    fn default() -> Decisions {
        Decisions {
            enabled: false,
            ..Decisions::new(false)
        }
    }
}

impl Decisions {
    /// An empty table whose bans defer (`deny` false) or deny.
    pub fn new(deny: bool) -> Decisions {
        Decisions {
            table: RwLock::new(Arc::new(Table::default())),
            kept: Mutex::new(HashMap::new()),
            deny,
            enabled: true,
            counters: Counters::default(),
        }
    }

    /// Whether `[crowdsec]` is configured.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The ban in force at `now` on the most specific network containing `ip`, if any.
    pub fn banned(&self, ip: IpAddr, now: Secs) -> Option<Ban> {
        let table = self.table();
        if table.len == 0 {
            return None;
        }
        let (_, entry) = table
            .nets
            .cover(&IpNet::from(canonical_ip(ip)))
            .flat_map(|(net, entries)| entries.iter().map(move |e| (net, e)))
            .filter(|(_, e)| e.decision.until > now)
            .max_by_key(|(net, e)| (net.prefix_len(), e.decision.until))?;
        self.counters.hits.fetch_add(1, Ordering::Relaxed);
        Some(Ban {
            decision: entry.decision.clone(),
            text: entry.text.clone(),
            deny: self.deny,
        })
    }

    /// Ban decisions in the table (some may have ended since the last answer).
    pub fn len(&self) -> usize {
        self.table().len
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes in one answer of the stream received at `now`. `full`: the answer lists
    /// every decision in force (`startup=true`), so whatever it does not list goes.
    /// Decisions that ended by `now` are dropped.
    pub fn apply(&self, stream: &Stream, full: bool, now: Secs) -> Applied {
        let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        let mut applied = Applied::default();
        let previous = if full {
            std::mem::take(&mut *kept)
        } else {
            HashMap::new()
        };
        for d in &stream.deleted {
            if kept.remove(&d.id).is_some() {
                applied.removed += 1;
            }
        }
        for d in &stream.new {
            match decision(d, now) {
                Some(d) => {
                    kept.insert(d.id, d);
                    applied.added += 1;
                }
                None => {
                    // A decision replaced by one not kept goes.
                    if kept.remove(&d.id).is_some() {
                        applied.removed += 1;
                    }
                    applied.ignored += 1;
                }
            }
        }
        let before_expiry = kept.len();
        kept.retain(|_, d| d.until > now);
        applied.removed += before_expiry - kept.len();
        if full {
            applied.removed += previous.keys().filter(|id| !kept.contains_key(id)).count();
        }
        applied.in_force = kept.len();
        if full || applied.added > 0 || applied.removed > 0 {
            let table = Arc::new(build(&kept));
            *self.table.write().unwrap_or_else(PoisonError::into_inner) = table;
        }
        drop(kept);
        let c = &self.counters;
        c.polls.fetch_add(1, Ordering::Relaxed);
        c.added.fetch_add(applied.added as u64, Ordering::Relaxed);
        c.removed
            .fetch_add(applied.removed as u64, Ordering::Relaxed);
        c.ignored
            .fetch_add(applied.ignored as u64, Ordering::Relaxed);
        *c.last_poll.lock().unwrap_or_else(PoisonError::into_inner) = Some(now);
        applied
    }

    /// Counts a poll that failed at `now`, and why (for `ctl status`). The table stays.
    pub fn poll_failed(&self, error: &str, now: Secs) {
        self.counters.poll_errors.fetch_add(1, Ordering::Relaxed);
        *self
            .counters
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some((now, error.to_string()));
    }

    /// Decisions in force, polls, errors and hits, for `ctl status`.
    pub fn status(&self) -> serde_json::Value {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let last_poll = *c.last_poll.lock().unwrap_or_else(PoisonError::into_inner);
        let last_error = c
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        json!({
            "decisions": self.len(),
            "response": if self.deny { "deny" } else { "defer" },
            "hits": get(&c.hits),
            "polls": get(&c.polls),
            "poll_errors": get(&c.poll_errors),
            "added": get(&c.added),
            "removed": get(&c.removed),
            "ignored": get(&c.ignored),
            "last_poll": last_poll.map(crate::time::rfc3339),
            "last_error": last_error.map(|(at, error)| json!({
                "at": crate::time::rfc3339(at),
                "error": error,
            })),
        })
    }

    fn table(&self) -> Arc<Table> {
        self.table
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

fn build(kept: &HashMap<i64, Decision>) -> Table {
    let mut t = Table::default();
    for d in kept.values() {
        let text: Arc<str> = format!("CrowdSec decision {}", d.scenario).into();
        let entry = Entry {
            decision: d.clone(),
            text,
        };
        match t.nets.get_mut(&d.network) {
            Some(entries) => entries.push(entry),
            None => {
                t.nets.insert(d.network, vec![entry]);
            }
        }
        t.len += 1;
    }
    t
}

/// A stream entry as a kept ban, or `None` when it is not one the table keeps.
fn decision(d: &StreamDecision, now: Secs) -> Option<Decision> {
    if !d.kind.as_deref()?.eq_ignore_ascii_case("ban") {
        return None;
    }
    let scope = d.scope.as_deref()?;
    let value = d.value.as_deref()?.trim();
    let network = if scope.eq_ignore_ascii_case("ip") {
        IpNet::from(value.parse::<IpAddr>().ok()?)
    } else if scope.eq_ignore_ascii_case("range") {
        value.parse::<IpNet>().ok()?.trunc()
    } else {
        return None;
    };
    let left = go_duration_secs(d.duration.as_deref()?)?;
    // Whole seconds, rounded down: a decision never outlasts what the API said.
    let until = now.saturating_add(left.floor() as Secs);
    if until <= now {
        return None;
    }
    Some(Decision {
        id: d.id,
        network: canonical_net(network),
        until,
        scenario: printable(d.scenario.as_deref().unwrap_or("")).into(),
        origin: printable(d.origin.as_deref().unwrap_or("")).into(),
    })
}

/// `s` in printable ASCII (anything else as `?`), cut short: it goes to SMTP clients.
fn printable(s: &str) -> String {
    s.chars()
        .take(MAX_SCENARIO_CHARS)
        .map(|c| if (' '..='~').contains(&c) { c } else { '?' })
        .collect()
}

/// An IPv4-mapped IPv6 network (`::ffff:0:0/96` and longer) as its IPv4 network, the
/// way looked-up addresses are.
fn canonical_net(net: IpNet) -> IpNet {
    if let IpNet::V6(v6) = net
        && let (Some(v4), true) = (v6.addr().to_ipv4_mapped(), v6.prefix_len() >= 96)
        && let Ok(n) = Ipv4Net::new(v4, v6.prefix_len() - 96)
    {
        return IpNet::V4(n);
    }
    net
}

/// A Go duration (`3h59m58.2s`, `1h`, `-18.207821ms`, `1h2m3.5s`, `250µs`) in seconds;
/// `None` when it is not one.
pub fn go_duration_secs(s: &str) -> Option<f64> {
    let s = s.trim();
    let (negative, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest == "0" {
        return Some(0.0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total = 0.0f64;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let number: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * scale;
    }
    Some(if negative { -total } else { total })
}

#[cfg(test)]
mod tests;
