//! Address blocks: every block in force on an address or a network, whoever put it
//! there (a rule, an administrator with `ctl block`), and what is remembered of past
//! blocks so that a repeat offender is blocked longer.
//!
//! A block covers a network: one IPv4 address is a /32; an IPv6 address blocked by a
//! rule covers its /64 (`[responses] block_prefix_v6`), since one host owns a /64 and
//! changes address within it at will. A request's address is looked up at each prefix
//! length in use (few: 32, 64, 128 and the administrators' CIDRs), one hash lookup each;
//! with no block at all the lookup is one atomic load.
//!
//! Repeats: a network blocked again within `repeat_memory_secs` of its last block's end
//! gets the new block's duration times `repeat_factor` per earlier block, capped at
//! `max_block_secs`.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use ipnet::IpNet;
use serde::Serialize;

use crate::track::{Hold, Secs};

/// A block in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// Since when, until when, which rule (`admin` for `ctl block`), the text the
    /// client sees, whether it denies or only defers authentication.
    pub hold: Hold,
    /// Who put it there: the rule's name, or the administrator (`uid 0 (root)`).
    pub by: Arc<str>,
    /// Why, when an administrator said (`--reason`).
    pub reason: Option<Arc<str>>,
    /// How many blocks of this network came before it within the repeat memory.
    pub repeats: u32,
}

/// How blocks are sized.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sizing {
    /// The prefix length of a rule's block on an IPv4 address (32: the address).
    pub prefix_v4: u8,
    /// The prefix length of a rule's block on an IPv6 address (64).
    pub prefix_v6: u8,
    /// A repeat's duration is multiplied by this per earlier block (1: no growth).
    pub repeat_factor: f64,
    /// The longest a grown block lasts, in seconds.
    pub max_block_secs: u64,
    /// How long after a block's end a new one counts as a repeat.
    pub repeat_memory_secs: u64,
}

impl Default for Sizing {
    fn default() -> Sizing {
        Sizing {
            prefix_v4: 32,
            prefix_v6: 64,
            repeat_factor: 2.0,
            max_block_secs: 7 * 86_400,
            repeat_memory_secs: 30 * 86_400,
        }
    }
}

impl Sizing {
    /// The network a rule's block on `ip` covers.
    pub fn network_of(&self, ip: IpAddr) -> IpNet {
        let len = match ip {
            IpAddr::V4(_) => self.prefix_v4.min(32),
            IpAddr::V6(_) => self.prefix_v6.min(128),
        };
        IpNet::new(ip, len)
            .map(|n| n.trunc())
            .unwrap_or_else(|_| IpNet::from(ip))
    }
}

/// A past block, for repeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Past {
    /// Blocks so far.
    pub count: u32,
    /// When the last one ended (or ends).
    pub until: Secs,
}

#[derive(Debug, Default)]
struct Inner {
    active: HashMap<IpNet, Block>,
    /// Prefix lengths in use, per family (v4, v6), with how many blocks have each: a
    /// lookup tries each length once.
    lens: (BTreeMap<u8, usize>, BTreeMap<u8, usize>),
    past: HashMap<IpNet, Past>,
}

impl Inner {
    fn lens_of(&mut self, net: &IpNet) -> &mut BTreeMap<u8, usize> {
        match net {
            IpNet::V4(_) => &mut self.lens.0,
            IpNet::V6(_) => &mut self.lens.1,
        }
    }

    /// Puts `block` on `net`, replacing what was there.
    fn insert(&mut self, net: IpNet, block: Block) {
        if self.active.insert(net, block).is_none() {
            *self.lens_of(&net).entry(net.prefix_len()).or_default() += 1;
        }
    }

    /// Takes the block off `net`.
    fn remove(&mut self, net: &IpNet) -> Option<Block> {
        let block = self.active.remove(net)?;
        let lens = self.lens_of(net);
        if let Some(n) = lens.get_mut(&net.prefix_len()) {
            *n -= 1;
            if *n == 0 {
                lens.remove(&net.prefix_len());
            }
        }
        Some(block)
    }
}

/// Every address block.
#[derive(Debug, Default)]
pub struct Blocks {
    inner: RwLock<Inner>,
    /// Blocks in the table (possibly expired): 0 makes a lookup one load.
    len: AtomicUsize,
    /// Where each change is journaled (with the table's lock held, so in order).
    journal: std::sync::OnceLock<Arc<dyn super::journal::Journal>>,
}

impl Blocks {
    /// Journals every change from now on (see [`super::State::set_journal`]).
    pub(super) fn set_journal(
        &self,
        journal: Arc<dyn super::journal::Journal>,
    ) -> Result<(), Arc<dyn super::journal::Journal>> {
        self.journal.set(journal)
    }

    /// Journals `net` as `inner` now has it.
    fn journal(&self, inner: &Inner, net: IpNet) {
        if let Some(j) = self.journal.get() {
            j.append(super::journal::Change::Net {
                net,
                block: inner.active.get(&net),
                past: inner.past.get(&net).copied(),
            });
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The strongest block covering `ip` in force at `now` (a deny beats a defer; then
    /// the later end), with its network.
    pub fn covering(&self, ip: IpAddr, now: Secs) -> Option<(IpNet, Block)> {
        if self.len.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let inner = self.read();
        let lens = match ip {
            IpAddr::V4(_) => &inner.lens.0,
            IpAddr::V6(_) => &inner.lens.1,
        };
        let mut best: Option<(IpNet, &Block)> = None;
        for &len in lens.keys() {
            let Ok(net) = IpNet::new(ip, len).map(|n| n.trunc()) else {
                continue;
            };
            if let Some(b) = inner.active.get(&net).filter(|b| b.hold.active(now)) {
                let better = best
                    .is_none_or(|(_, o)| (b.hold.deny, b.hold.until) > (o.hold.deny, o.hold.until));
                if better {
                    best = Some((net, b));
                }
            }
        }
        best.map(|(n, b)| (n, b.clone()))
    }

    /// Puts a block on `net` from `now` for `secs` seconds, grown for a repeat by
    /// `sizing` when `grow` (rule blocks grow; an administrator's lasts as asked). A
    /// block in force that is at least as strong is kept. Returns the block in force
    /// afterwards.
    #[allow(clippy::too_many_arguments)]
    pub fn put(
        &self,
        net: IpNet,
        mut hold: Hold,
        by: Arc<str>,
        reason: Option<Arc<str>>,
        grow: bool,
        sizing: &Sizing,
        now: Secs,
    ) -> Block {
        let net = net.trunc();
        let mut inner = self.write();
        let memory = sizing.repeat_memory_secs as Secs;
        let repeats = inner
            .past
            .get(&net)
            .filter(|p| p.until.saturating_add(memory) > now)
            .map_or(0, |p| p.count);
        if grow && repeats > 0 {
            let secs = (hold.until - hold.since).max(0) as f64;
            let grown = secs * sizing.repeat_factor.max(1.0).powi(repeats as i32);
            let capped = grown.min(sizing.max_block_secs as f64).max(secs);
            hold.until = hold.since.saturating_add(capped as Secs);
        }
        let new = Block {
            hold,
            by,
            reason,
            repeats,
        };
        if let Some(old) = inner.active.get(&net)
            && old.hold.active(now)
            && ((old.hold.deny && !new.hold.deny)
                || (old.hold.deny == new.hold.deny && old.hold.until >= new.hold.until))
        {
            return old.clone();
        }
        inner.past.insert(
            net,
            Past {
                count: repeats + 1,
                until: new.hold.until,
            },
        );
        inner.insert(net, new.clone());
        self.len.store(inner.active.len(), Ordering::Relaxed);
        self.journal(&inner, net);
        new
    }

    /// Lifts the blocks in force at `now` on `net` and on every network inside it
    /// (`ctl unblock 192.0.2.7` lifts that address's /32; `ctl unblock 2001:db8::/48`
    /// every block inside it), and the block covering a single address given as /32 or
    /// /128 (its /64). Returns what was lifted.
    pub fn lift(&self, net: IpNet, now: Secs) -> Vec<(IpNet, Block)> {
        let net = net.trunc();
        let single = net.prefix_len() == net.max_prefix_len();
        let mut inner = self.write();
        let lifted: Vec<IpNet> = inner
            .active
            .iter()
            .filter(|(n, b)| {
                b.hold.active(now) && (net.contains(*n) || (single && n.contains(&net.addr())))
            })
            .map(|(n, _)| *n)
            .collect();
        let mut out = Vec::new();
        for n in lifted {
            if let Some(b) = inner.remove(&n) {
                // Lifted early: remember it ended now, for repeats.
                if let Some(p) = inner.past.get_mut(&n) {
                    p.until = p.until.min(now);
                }
                self.journal(&inner, n);
                out.push((n, b));
            }
        }
        self.len.store(inner.active.len(), Ordering::Relaxed);
        out.sort_by_key(|(n, _)| *n);
        out
    }

    /// Every block in force at `now`, by network.
    pub fn active(&self, now: Secs) -> Vec<(IpNet, Block)> {
        let mut v: Vec<_> = self
            .read()
            .active
            .iter()
            .filter(|(_, b)| b.hold.active(now))
            .map(|(n, b)| (*n, b.clone()))
            .collect();
        v.sort_by_key(|(n, _)| *n);
        v
    }

    /// What is remembered of past blocks (for the snapshot).
    pub fn past(&self) -> Vec<(IpNet, Past)> {
        let mut v: Vec<_> = self.read().past.iter().map(|(n, p)| (*n, *p)).collect();
        v.sort_by_key(|(n, _)| *n);
        v
    }

    /// Puts back a block and its history as the snapshot kept them.
    pub fn restore(&self, net: IpNet, block: Block, past: Option<Past>) {
        let net = net.trunc();
        let mut inner = self.write();
        if let Some(p) = past {
            inner.past.insert(net, p);
        }
        inner.insert(net, block);
        self.len.store(inner.active.len(), Ordering::Relaxed);
    }

    /// Takes the block off `net` (lifted while the journal was kept) and puts back its
    /// history as it was then.
    pub fn restore_lifted(&self, net: IpNet, past: Option<Past>) {
        let net = net.trunc();
        let mut inner = self.write();
        inner.remove(&net);
        match past {
            Some(p) => inner.past.insert(net, p),
            None => inner.past.remove(&net),
        };
        self.len.store(inner.active.len(), Ordering::Relaxed);
    }

    /// Puts back the history of a network with no block in force.
    pub fn restore_past(&self, net: IpNet, past: Past) {
        self.write().past.insert(net.trunc(), past);
    }

    /// Forgets blocks that ended and history older than the repeat memory. Returns the
    /// networks whose block ended since the last sweep.
    pub fn sweep(&self, now: Secs, sizing: &Sizing) -> Vec<IpNet> {
        let mut inner = self.write();
        let ended: Vec<IpNet> = inner
            .active
            .iter()
            .filter(|(_, b)| !b.hold.active(now))
            .map(|(n, _)| *n)
            .collect();
        for n in &ended {
            inner.remove(n);
        }
        let memory = sizing.repeat_memory_secs as Secs;
        inner
            .past
            .retain(|_, p| p.until.saturating_add(memory) > now);
        self.len.store(inner.active.len(), Ordering::Relaxed);
        ended
    }

    /// Forgets every block and all history.
    pub fn clear(&self) {
        let mut inner = self.write();
        *inner = Inner::default();
        self.len.store(0, Ordering::Relaxed);
    }

    /// Blocks in the table (in force or ended but not yet swept).
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hold(since: Secs, secs: Secs, deny: bool) -> Hold {
        Hold {
            since,
            until: since + secs,
            rule: "password_spraying",
            message: Arc::from("blocked"),
            deny,
        }
    }

    fn put(b: &Blocks, net: &str, at: Secs, secs: Secs, grow: bool) -> Block {
        b.put(
            net.parse().unwrap(),
            hold(at, secs, true),
            Arc::from("password_spraying"),
            None,
            grow,
            &Sizing::default(),
            at,
        )
    }

    #[test]
    fn an_address_a_network_and_ipv6_neighbours_are_covered() {
        let b = Blocks::default();
        assert!(b.covering("192.0.2.7".parse().unwrap(), 0).is_none());
        let s = Sizing::default();
        let v6 = s.network_of("2001:db8:1:2:aaaa::1".parse().unwrap());
        assert_eq!(v6.to_string(), "2001:db8:1:2::/64");
        assert_eq!(
            s.network_of("192.0.2.7".parse().unwrap()).to_string(),
            "192.0.2.7/32"
        );
        put(&b, &v6.to_string(), 100, 900, false);
        put(&b, "198.51.100.0/24", 100, 900, false);
        let hit = |ip: &str| {
            b.covering(ip.parse().unwrap(), 200)
                .map(|(n, _)| n.to_string())
        };
        assert_eq!(
            hit("2001:db8:1:2:ffff::9").as_deref(),
            Some("2001:db8:1:2::/64")
        );
        assert_eq!(hit("2001:db8:1:3::1"), None);
        assert_eq!(hit("198.51.100.200").as_deref(), Some("198.51.100.0/24"));
        assert_eq!(hit("198.51.101.1"), None);
        // Ended blocks cover nothing.
        assert!(b.covering("198.51.100.1".parse().unwrap(), 1000).is_none());
    }

    #[test]
    fn repeats_grow_by_the_factor_up_to_the_cap() {
        let b = Blocks::default();
        let first = put(&b, "192.0.2.7/32", 0, 3600, true);
        assert_eq!((first.repeats, first.hold.until), (0, 3600));
        let second = put(&b, "192.0.2.7/32", 4000, 3600, true);
        assert_eq!((second.repeats, second.hold.until), (1, 4000 + 7200));
        let third = put(&b, "192.0.2.7/32", 20_000, 3600, true);
        assert_eq!((third.repeats, third.hold.until), (2, 20_000 + 14_400));
        // Capped at a week.
        let mut at = 40_000;
        let mut last = third;
        for _ in 0..10 {
            last = put(&b, "192.0.2.7/32", at, 3600, true);
            at = last.hold.until + 1;
        }
        assert_eq!(last.hold.until - last.hold.since, 7 * 86_400);
        // Forgotten after the repeat memory: back to the rule's duration.
        let fresh = put(&b, "192.0.2.7/32", at + 31 * 86_400, 3600, true);
        assert_eq!(
            (fresh.repeats, fresh.hold.until - fresh.hold.since),
            (0, 3600)
        );
    }

    #[test]
    fn a_stronger_block_in_force_is_kept() {
        let b = Blocks::default();
        put(&b, "192.0.2.7/32", 0, 3600, false);
        let kept = b.put(
            "192.0.2.7/32".parse().unwrap(),
            hold(10, 60, false),
            Arc::from("x"),
            None,
            false,
            &Sizing::default(),
            10,
        );
        assert_eq!(kept.hold.until, 3600);
    }

    #[test]
    fn lifting_an_address_lifts_the_network_that_covers_it() {
        let b = Blocks::default();
        put(&b, "2001:db8::/64", 0, 3600, false);
        put(&b, "192.0.2.0/24", 0, 3600, false);
        put(&b, "192.0.2.7/32", 0, 3600, false);
        let lifted = b.lift("2001:db8::5/128".parse().unwrap(), 10);
        assert_eq!(lifted.len(), 1);
        assert!(b.covering("2001:db8::5".parse().unwrap(), 10).is_none());
        // A /24 lifts the blocks inside it.
        assert_eq!(b.lift("192.0.2.0/24".parse().unwrap(), 10).len(), 2);
        assert!(b.is_empty());
        // Lifted early: the history says it ended then.
        assert_eq!(
            b.past()
                .iter()
                .find(|(n, _)| n.prefix_len() == 24)
                .unwrap()
                .1
                .until,
            10
        );
    }

    #[test]
    fn sweep_forgets_what_ended_and_names_it() {
        let b = Blocks::default();
        put(&b, "192.0.2.7/32", 0, 60, false);
        put(&b, "192.0.2.8/32", 0, 600, false);
        let ended = b.sweep(100, &Sizing::default());
        assert_eq!(ended, ["192.0.2.7/32".parse::<IpNet>().unwrap()]);
        assert_eq!(b.len(), 1);
        assert_eq!(b.past().len(), 2);
    }
}
