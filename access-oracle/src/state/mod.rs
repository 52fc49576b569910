//! Live per-account and per-IP state: windows, holds and blocks. Pure data; every method
//! that depends on time takes `now`.
//!
//! Accounts and addresses live in sharded concurrent maps so that verdicts for different
//! accounts never wait on each other. The maps are capped: [`State::sweep`] drops idle
//! entries and, above the cap, the least recently seen ones that hold nothing.

pub mod baseline;
pub mod distinct;
pub mod timeline;
pub mod window;

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::Arc;

use dashmap::DashMap;
use dashmap::mapref::one::RefMut;
use serde::Serialize;

use crate::protocol::Outcome;

pub use baseline::Baseline;
pub use distinct::DistinctWindow;
pub use timeline::{Entry, Origin, Timeline};
pub use window::{CountWindow, DedupWindow, Secs};

/// A response in force until a time: an account hold or an address block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hold {
    /// When it was applied.
    pub since: Secs,
    /// When it ends by itself.
    pub until: Secs,
    /// The rule that applied it, or `admin`.
    pub rule: &'static str,
    /// The text the client sees.
    pub message: Arc<str>,
    /// Permanent failures (deny) rather than temporary ones (defer).
    pub deny: bool,
}

impl Hold {
    /// Whether the hold is in force at `now`.
    pub fn active(&self, now: Secs) -> bool {
        now < self.until
    }
}

/// Puts `new` in `slot` unless what is there is in force and at least as strong (a deny
/// beats a defer; between equals, the later end wins).
pub fn strengthen(slot: &mut Option<Hold>, new: Hold, now: Secs) {
    let keep = slot.as_ref().is_some_and(|old| {
        old.active(now)
            && ((old.deny && !new.deny) || (old.deny == new.deny && old.until >= new.until))
    });
    if !keep {
        *slot = Some(new);
    }
}

/// What is known about one account.
#[derive(Debug, Default)]
pub struct Account {
    /// Failed logins in the rule's window (any protocol), repeats of a password once.
    pub auth_failures: DedupWindow,
    /// Recipients accepted in the ceiling's window.
    pub rcpts: CountWindow,
    /// The hold on the account, if any (possibly expired).
    pub hold: Option<Hold>,
    /// When the recipient ceiling last raised an alert.
    pub ceiling_alerted_at: Option<Secs>,
    /// Lifetime totals since the oracle started tracking the account.
    pub totals: AccountTotals,
    /// Last login or activity.
    pub last_seen: Secs,
    /// Last successful login: when, from where, by which protocol.
    pub last_login: Option<(Secs, Option<IpAddr>, Arc<str>)>,
    /// Recent activity, live and from logs.
    pub timeline: Timeline,
    /// Login attempts the live path reported, not yet matched by their log line; a log
    /// line that matches one is not counted again.
    pub live_attempts: VecDeque<(Secs, Option<IpAddr>, Outcome)>,
    /// Login attempts counted from a log line before the live path reported them (a log
    /// can be faster than the live report); the live report that matches one is not
    /// counted again.
    pub log_attempts: VecDeque<(Secs, Option<IpAddr>, Outcome)>,
    /// When the live path last saw the account submit (MAIL, RCPT, DATA): while it does,
    /// recipients are counted live and the log's arrivals do not count them again.
    pub live_submission_at: Option<Secs>,
    /// Further recipients deferred until then (outbound spike).
    pub throttle: Option<Hold>,
    /// When the outbound-spike rule last fired.
    pub spike_alerted_at: Option<Secs>,
    /// When an attempt on the (disabled) account last raised an alert.
    pub disabled_alerted_at: Option<Secs>,
}

impl Account {
    /// The hold in force at `now`.
    pub fn active_hold(&self, now: Secs) -> Option<&Hold> {
        self.hold.as_ref().filter(|h| h.active(now))
    }
}

/// Lifetime counters of an account.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct AccountTotals {
    /// Successful logins.
    pub logins_ok: u64,
    /// Failed logins.
    pub logins_failed: u64,
    /// Messages (MAIL commands).
    pub messages: u64,
    /// Recipients accepted.
    pub rcpts_accepted: u64,
    /// Recipients deferred or denied by the oracle.
    pub rcpts_refused: u64,
    /// Requests deferred or denied by the oracle.
    pub refused: u64,
}

/// What is known about one source address.
#[derive(Debug, Default)]
pub struct IpRecord {
    /// Failed logins from this address, a repeated (account, password) pair once.
    pub auth_failures: DedupWindow,
    /// The block on authentication from this address, if any.
    pub auth_block: Option<Hold>,
    /// Distinct accounts that failed from this address (password spraying).
    pub accounts_failed: DistinctWindow,
    /// When a request from this (listed) address last raised an alert.
    pub listed_alerted_at: Option<Secs>,
    /// Last activity.
    pub last_seen: Secs,
}

impl IpRecord {
    /// The authentication block in force at `now`.
    pub fn active_auth_block(&self, now: Secs) -> Option<&Hold> {
        self.auth_block.as_ref().filter(|b| b.active(now))
    }
}

/// The state maps' hasher: seeded at random per process, so an attacker choosing
/// account names cannot aim at one bucket, and much cheaper than SipHash on short keys.
pub type Hasher = foldhash::fast::RandomState;

/// The key of the account and baseline maps: an account name, kept inline when it is
/// at most 24 bytes (most are), so a lookup compares it where the map's slot already is
/// instead of following a pointer to another cache line, and a million baselines are a
/// million allocations fewer.
pub type Key = compact_str::CompactString;

/// All live state.
#[derive(Debug)]
pub struct State {
    accounts: DashMap<Key, Account, Hasher>,
    ips: DashMap<IpAddr, IpRecord, Hasher>,
    baselines: DashMap<Key, Box<Baseline>, Hasher>,
    /// Whether anything the snapshot keeps may have changed since it was last written.
    dirty: std::sync::atomic::AtomicBool,
}

impl Default for State {
    fn default() -> Self {
        State {
            accounts: DashMap::with_hasher_and_shard_amount(Hasher::default(), 64),
            ips: DashMap::with_hasher_and_shard_amount(Hasher::default(), 64),
            baselines: DashMap::with_hasher_and_shard_amount(Hasher::default(), 64),
            dirty: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

impl State {
    /// Notes that what the snapshot keeps (baselines, holds, blocks) changed. Read
    /// first: the flag's cache line is only written when it flips.
    pub fn mark_dirty(&self) {
        use std::sync::atomic::Ordering;
        if !self.dirty.load(Ordering::Relaxed) {
            self.dirty.store(true, Ordering::Relaxed);
        }
    }

    /// Whether anything changed since the last call (and clears the flag).
    pub fn take_dirty(&self) -> bool {
        self.dirty.swap(false, std::sync::atomic::Ordering::Relaxed)
    }

    /// The account's baseline, created at `now` when first needed. Lock order: take it
    /// after the account's record, never before.
    pub fn baseline_mut(&self, user: &str, now: Secs) -> RefMut<'_, Key, Box<Baseline>> {
        self.mark_dirty();
        if let Some(r) = self.baselines.get_mut(user) {
            return r;
        }
        self.baselines
            .entry(user.into())
            .or_insert_with(|| Box::new(Baseline::new(now)))
    }

    /// The account's baseline, if any.
    pub fn baseline(
        &self,
        user: &str,
    ) -> Option<dashmap::mapref::one::Ref<'_, Key, Box<Baseline>>> {
        self.baselines.get(user)
    }

    /// Every baseline, for snapshots.
    pub fn baselines(&self) -> &DashMap<Key, Box<Baseline>, Hasher> {
        &self.baselines
    }

    /// How many baselines are kept.
    pub fn baseline_count(&self) -> usize {
        self.baselines.len()
    }

    /// Forgets baselines unused for `retention_secs`, then the least recently used above
    /// `max`. Returns how many were dropped.
    pub fn sweep_baselines(&self, now: Secs, retention_secs: Secs, max: usize) -> usize {
        let before = self.baselines.len();
        self.baselines
            .retain(|_, b| b.last_seen > now - retention_secs);
        let excess = self.baselines.len().saturating_sub(max);
        if excess > 0 {
            let mut old: Vec<(Secs, Key)> = self
                .baselines
                .iter()
                .map(|b| (b.last_seen, b.key().clone()))
                .collect();
            old.sort_unstable();
            for (_, key) in old.into_iter().take(excess) {
                self.baselines.remove(&key);
            }
        }
        before - self.baselines.len()
    }

    /// The account's record, created when first seen. Hold the guard briefly: it locks
    /// the account's shard.
    pub fn account_mut(&self, user: &str) -> RefMut<'_, Key, Account> {
        if let Some(r) = self.accounts.get_mut(user) {
            return r;
        }
        self.accounts.entry(user.into()).or_default()
    }

    /// The account's record, if tracked, for reading.
    pub fn account(&self, user: &str) -> Option<dashmap::mapref::one::Ref<'_, Key, Account>> {
        self.accounts.get(user)
    }

    /// The account's record for changing, only if it is tracked.
    pub fn tracked_account_mut(&self, user: &str) -> Option<RefMut<'_, Key, Account>> {
        self.accounts.get_mut(user)
    }

    /// The address's record for changing, only if it is tracked.
    pub fn tracked_ip_mut(&self, ip: IpAddr) -> Option<RefMut<'_, IpAddr, IpRecord>> {
        self.ips.get_mut(&ip)
    }

    /// The address's record, created when first seen.
    pub fn ip_mut(&self, ip: IpAddr) -> RefMut<'_, IpAddr, IpRecord> {
        self.ips.entry(ip).or_default()
    }

    /// The address's record, if tracked.
    pub fn ip(&self, ip: IpAddr) -> Option<dashmap::mapref::one::Ref<'_, IpAddr, IpRecord>> {
        self.ips.get(&ip)
    }

    /// How many accounts are tracked.
    pub fn account_count(&self) -> usize {
        self.accounts.len()
    }

    /// How many addresses are tracked.
    pub fn ip_count(&self) -> usize {
        self.ips.len()
    }

    /// Accounts with a hold in force at `now`, with their holds.
    pub fn active_holds(&self, now: Secs) -> Vec<(String, Hold)> {
        let mut v: Vec<_> = self
            .accounts
            .iter()
            .filter_map(|e| e.active_hold(now).map(|h| (e.key().to_string(), h.clone())))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Calls `f` with every tracked account (for the snapshot); each map shard is read
    /// locked while its accounts are visited.
    pub fn for_each_account(&self, mut f: impl FnMut(&str, &Account)) {
        for e in self.accounts.iter() {
            f(e.key(), e.value());
        }
    }

    /// Calls `f` with every tracked address (for the snapshot).
    pub fn for_each_ip(&self, mut f: impl FnMut(IpAddr, &IpRecord)) {
        for e in self.ips.iter() {
            f(*e.key(), e.value());
        }
    }

    /// Addresses with an authentication block in force at `now`.
    pub fn active_ip_blocks(&self, now: Secs) -> Vec<(IpAddr, Hold)> {
        let mut v: Vec<_> = self
            .ips
            .iter()
            .filter_map(|e| e.active_auth_block(now).map(|b| (*e.key(), b.clone())))
            .collect();
        v.sort_by_key(|x| x.0);
        v
    }

    /// Drops entries idle for longer than `idle_secs` that hold nothing in force, then, while
    /// more than `max_accounts` remain, the least recently seen of those without a hold.
    /// Returns how many entries were dropped.
    pub fn sweep(&self, now: Secs, idle_secs: Secs, max_accounts: usize) -> usize {
        let before = self.accounts.len() + self.ips.len();
        self.accounts
            .retain(|_, a| a.last_seen > now - idle_secs || a.active_hold(now).is_some());
        self.ips
            .retain(|_, r| r.last_seen > now - idle_secs || r.active_auth_block(now).is_some());
        let excess = self.accounts.len().saturating_sub(max_accounts);
        if excess > 0 {
            let mut idle: Vec<(Secs, Key)> = self
                .accounts
                .iter()
                .filter(|a| a.active_hold(now).is_none())
                .map(|a| (a.last_seen, a.key().clone()))
                .collect();
            idle.sort_unstable();
            for (_, key) in idle.into_iter().take(excess) {
                self.accounts.remove(&key);
            }
        }
        before - (self.accounts.len() + self.ips.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hold(until: Secs) -> Hold {
        Hold {
            since: 0,
            until,
            rule: "test",
            message: "held".into(),
            deny: false,
        }
    }

    #[test]
    fn holds_expire() {
        let h = hold(100);
        assert!(h.active(99));
        assert!(!h.active(100));
    }

    #[test]
    fn sweep_keeps_held_and_recent_accounts() {
        let s = State::default();
        s.account_mut("old").last_seen = 0;
        s.account_mut("recent").last_seen = 1000;
        {
            let mut held = s.account_mut("held");
            held.last_seen = 0;
            held.hold = Some(hold(5000));
        }
        s.ip_mut("192.0.2.1".parse().unwrap()).last_seen = 0;
        assert_eq!(s.sweep(2000, 1500, 100), 2);
        assert!(s.account("old").is_none());
        assert!(s.account("recent").is_some());
        assert!(s.account("held").is_some());
    }

    #[test]
    fn sweep_enforces_the_cap_oldest_first() {
        let s = State::default();
        for i in 0..10 {
            s.account_mut(&format!("u{i}")).last_seen = i;
        }
        s.sweep(10, 1000, 7);
        assert_eq!(s.account_count(), 7);
        assert!(s.account("u0").is_none());
        assert!(s.account("u9").is_some());
    }
}
