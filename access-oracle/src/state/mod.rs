//! Live per-account and per-IP state: windows, holds and blocks. Pure data; every method
//! that depends on time takes `now`.
//!
//! Accounts and addresses live in sharded concurrent maps so that verdicts for different
//! accounts never wait on each other. The maps are capped: [`State::sweep`] drops idle
//! entries and, above the cap, the least recently seen ones that hold nothing.

// What is counted and learnt lives in `track` (below the rules); these paths stay for
// the code that names them here.
pub use crate::track::{baseline, distinct, timeline, window};

pub mod blocks;
pub mod journal;

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::Arc;

use dashmap::DashMap;
use dashmap::mapref::one::RefMut;
use serde::Serialize;

use crate::protocol::Outcome;
use crate::rules::{AccountSlots, IpSlots};
use crate::track::baseline::SendCache;

pub use crate::track::{Hold, HoldInfo, HoldScope, strengthen};
pub use baseline::Baseline;
pub use blocks::{Block, Blocks, Sizing};
pub use distinct::DistinctWindow;
pub use timeline::{Entry, Origin, Timeline};
pub use window::{CountWindow, DedupWindow, Secs};

/// What is known about one account: what it did and what is in force on it. What a rule
/// keeps for itself is in its slot ([`Account::rules`]), in this same entry.
#[derive(Debug, Default)]
pub struct Account {
    /// Recipients accepted recently (in the longest recipient rule's window).
    pub rcpts: CountWindow,
    /// The hold on the account, if any (possibly expired).
    pub hold: Option<Hold>,
    /// Who put the hold there, why, and its scope (none: a rule's hold on every source).
    pub hold_info: Option<Box<HoldInfo>>,
    /// Further recipients deferred until then (outbound spike).
    pub throttle: Option<Hold>,
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
    /// The baseline's sending rate, copied hourly, and recipients not yet in it.
    pub send: SendCache,
    /// Every rule's own state about the account.
    pub rules: AccountSlots,
    /// The journal's number of the last change to this entry (0: none since start or
    /// since the snapshot it came from): a replay skips changes the entry already has.
    pub journal_seq: u64,
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

/// What is known about one source address. What a rule keeps for itself is in its slot
/// ([`IpRecord::rules`]).
#[derive(Debug, Default)]
pub struct IpRecord {
    /// Last activity.
    pub last_seen: Secs,
    /// Every rule's own state about the address.
    pub rules: IpSlots,
    /// The journal's number of the last change to this entry (see
    /// [`Account::journal_seq`]).
    pub journal_seq: u64,
}

/// The state maps' hasher: seeded at random per process, so an attacker choosing
/// account names cannot aim at one bucket, and much cheaper than SipHash on short keys.
pub type Hasher = foldhash::fast::RandomState;

/// The key of the account and baseline maps: an account name, kept inline when it is
/// at most 24 bytes (most are), so a lookup compares it where the map's slot already is
/// instead of following a pointer to another cache line, and a million baselines are a
/// million allocations fewer.
pub type Key = compact_str::CompactString;

/// An account's baseline locked for a change; journaled whole when dropped.
pub struct BaselineMut<'a> {
    guard: RefMut<'a, Key, Box<Baseline>>,
    state: &'a State,
}

impl std::ops::Deref for BaselineMut<'_> {
    type Target = Box<Baseline>;

    fn deref(&self) -> &Box<Baseline> {
        &self.guard
    }
}

impl std::ops::DerefMut for BaselineMut<'_> {
    fn deref_mut(&mut self) -> &mut Box<Baseline> {
        &mut self.guard
    }
}

impl Drop for BaselineMut<'_> {
    fn drop(&mut self) {
        self.state.journal(journal::Change::Baseline {
            user: self.guard.key(),
            baseline: &self.guard,
        });
    }
}

/// Familiar networks kept per account.
pub const MAX_FAMILIAR: usize = 16;

/// All live state.
#[derive(Debug)]
pub struct State {
    accounts: DashMap<Key, Account, Hasher>,
    ips: DashMap<IpAddr, IpRecord, Hasher>,
    baselines: DashMap<Key, Box<Baseline>, Hasher>,
    /// Address and network blocks.
    blocks: Blocks,
    /// Per account, the networks it logged in from successfully and when last: what
    /// is familiar to it for `hold_scope = "unfamiliar"`.
    familiar: DashMap<Key, Vec<(ipnet::IpNet, Secs)>, Hasher>,
    /// Whether anything the snapshot keeps may have changed since it was last written.
    dirty: std::sync::atomic::AtomicBool,
    /// Where changes are journaled, once the journal is open (after the replay).
    journal: std::sync::OnceLock<Arc<dyn journal::Journal>>,
}

impl Default for State {
    fn default() -> Self {
        State {
            accounts: DashMap::with_hasher_and_shard_amount(Hasher::default(), 64),
            ips: DashMap::with_hasher_and_shard_amount(Hasher::default(), 64),
            baselines: DashMap::with_hasher_and_shard_amount(Hasher::default(), 64),
            blocks: Blocks::default(),
            familiar: DashMap::with_hasher_and_shard_amount(Hasher::default(), 64),
            dirty: std::sync::atomic::AtomicBool::new(false),
            journal: std::sync::OnceLock::new(),
        }
    }
}

impl State {
    /// From now on, tells `journal` every change the snapshot keeps. Set once, after
    /// the snapshot and the journal were read back: what is replayed is not journaled
    /// again.
    pub fn set_journal(&self, journal: Arc<dyn journal::Journal>) {
        let _ = self.blocks.set_journal(journal.clone());
        let _ = self.journal.set(journal);
    }

    /// Journals `change` (returns its number; 0 when no journal is open). What is
    /// journaled is also due in the next snapshot, which lets the journal's older files
    /// go.
    pub fn journal(&self, change: journal::Change<'_>) -> u64 {
        match self.journal.get() {
            Some(j) => {
                self.mark_dirty();
                j.append(change)
            }
            None => 0,
        }
    }

    /// Journals an account's failure window and what is in force on it (call with its
    /// entry locked, after the change).
    pub fn journal_account(&self, user: &str, account: &mut Account, rcpts_cleared: bool) {
        let seq = self.journal(journal::Change::Account {
            user,
            account,
            rcpts_cleared,
        });
        if seq > 0 {
            account.journal_seq = seq;
        }
    }

    /// Journals `n` recipients of an account counted at `at` (call with its entry
    /// locked).
    pub fn journal_rcpts(&self, user: &str, account: &mut Account, at: Secs, n: u32) {
        let seq = self.journal(journal::Change::Rcpts { user, at, n });
        if seq > 0 {
            account.journal_seq = seq;
        }
    }

    /// Journals an address's failure windows (call with its entry locked).
    pub fn journal_ip(&self, ip: IpAddr, record: &mut IpRecord) {
        let seq = self.journal(journal::Change::Ip { ip, record });
        if seq > 0 {
            record.journal_seq = seq;
        }
    }

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
    /// The baseline is journaled whole when the guard is dropped.
    pub fn baseline_mut(&self, user: &str, now: Secs) -> BaselineMut<'_> {
        self.mark_dirty();
        let guard = match self.baselines.get_mut(user) {
            Some(r) => r,
            None => self
                .baselines
                .entry(user.into())
                .or_insert_with(|| Box::new(Baseline::new(now))),
        };
        BaselineMut { guard, state: self }
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
    pub fn active_holds(&self, now: Secs) -> Vec<(String, Hold, Option<HoldInfo>)> {
        let mut v: Vec<_> = self
            .accounts
            .iter()
            .filter_map(|e| {
                e.active_hold(now).map(|h| {
                    let info = e.hold_info.as_deref().cloned();
                    (e.key().to_string(), h.clone(), info)
                })
            })
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

    /// Every address and network block.
    pub fn blocks(&self) -> &Blocks {
        &self.blocks
    }

    /// Notes a successful login of `user` from `net` at `now` (the newest
    /// [`MAX_FAMILIAR`] networks are kept).
    pub fn learn_familiar(&self, user: &str, net: ipnet::IpNet, now: Secs) {
        let mut list = match self.familiar.get_mut(user) {
            Some(l) => l,
            None => self.familiar.entry(user.into()).or_default(),
        };
        match list.iter_mut().find(|(n, _)| *n == net) {
            Some((_, last)) => *last = (*last).max(now),
            None => {
                if list.len() >= MAX_FAMILIAR
                    && let Some(oldest) = list
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, (_, t))| *t)
                        .map(|(i, _)| i)
                {
                    list.swap_remove(oldest);
                }
                list.push((net, now));
                self.mark_dirty();
            }
        }
        self.journal(journal::Change::Familiar { user, list: &list });
    }

    /// The networks `user` logged in from successfully at or after `since`.
    pub fn familiar(&self, user: &str, since: Secs) -> Vec<ipnet::IpNet> {
        self.familiar
            .get(user)
            .map(|l| {
                l.iter()
                    .filter(|(_, t)| *t >= since)
                    .map(|(n, _)| *n)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Calls `f` with every account's familiar networks (for the snapshot).
    pub fn for_each_familiar(&self, mut f: impl FnMut(&str, &[(ipnet::IpNet, Secs)])) {
        for e in self.familiar.iter() {
            f(e.key(), e.value());
        }
    }

    /// Puts back an account's familiar networks as the snapshot kept them.
    pub fn restore_familiar(&self, user: &str, list: Vec<(ipnet::IpNet, Secs)>) {
        self.familiar.insert(user.into(), list);
    }

    /// Forgets networks last used before `before`, and accounts left with none.
    pub fn sweep_familiar(&self, before: Secs) {
        self.familiar.retain(|_, l| {
            l.retain(|(_, t)| *t >= before);
            !l.is_empty()
        });
    }

    /// Hands the recipients an account counted since its last hourly copy of the
    /// baseline's rate to the baseline (lock order: the account, then its baseline).
    fn flush_send(&self, key: &str, a: &mut Account) {
        if a.send.pending > 0 {
            let mut b = self.baseline_mut(key, a.send.pending_at);
            a.send.flush(&mut b);
        }
    }

    /// Hands one account's pending recipients to its baseline (before it is shown).
    pub fn flush_send_of(&self, user: &str) {
        if let Some(mut a) = self.accounts.get_mut(user) {
            let (key, a) = a.pair_mut();
            self.flush_send(key, a);
        }
    }

    /// Hands every account's pending recipients to its baseline: before a snapshot, so
    /// that it holds the hour in progress.
    pub fn flush_sends(&self) {
        for mut e in self.accounts.iter_mut() {
            let (key, a) = e.pair_mut();
            if a.send.pending > 0 {
                let mut b = self.baseline_mut(key, a.send.pending_at);
                a.send.flush(&mut b);
            }
        }
    }

    /// Drops entries idle for longer than `idle_secs` that hold nothing in force, then, while
    /// more than `max_accounts` remain, the least recently seen of those without a hold.
    /// Returns how many entries were dropped.
    pub fn sweep(&self, now: Secs, idle_secs: Secs, max_accounts: usize) -> usize {
        let before = self.accounts.len() + self.ips.len();
        self.accounts.retain(|key, a| {
            let keep = a.last_seen > now - idle_secs || a.active_hold(now).is_some();
            if !keep {
                self.flush_send(key, a);
            }
            keep
        });
        self.ips.retain(|_, r| r.last_seen > now - idle_secs);
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
                if let Some((key, mut a)) = self.accounts.remove(&key) {
                    self.flush_send(&key, &mut a);
                }
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
