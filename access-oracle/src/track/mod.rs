//! What is counted and learnt, as plain data: sliding windows, distinct counts, an
//! account's baseline and timeline, and a response in force (a hold or block). Every
//! method that depends on time takes `now`. Below the rules (which keep these in their
//! state slots) and the live maps of [`crate::state`].

pub mod baseline;
pub mod distinct;
pub mod timeline;
pub mod window;

use std::sync::Arc;

use serde::Serialize;

pub use baseline::Baseline;
pub use distinct::DistinctWindow;
pub use timeline::{Entry, LoginDetail, Origin, Timeline};
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

/// Which sources an account's hold refuses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldScope {
    /// Every source.
    #[default]
    All,
    /// Sources outside the networks the account logged in from successfully lately:
    /// the owner goes on working from its usual networks during an attack from
    /// elsewhere.
    Unfamiliar,
}

impl HoldScope {
    /// `all` or `unfamiliar`.
    pub fn as_str(self) -> &'static str {
        match self {
            HoldScope::All => "all",
            HoldScope::Unfamiliar => "unfamiliar",
        }
    }
}

/// Who put an account's hold in place, why, and what it refuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldInfo {
    /// The rule, or the administrator (`uid 0 (root)`).
    pub by: Arc<str>,
    /// Why, when the administrator said.
    pub reason: Option<Arc<str>>,
    /// Which sources it refuses.
    pub scope: HoldScope,
    /// With scope `unfamiliar`: the account's familiar networks when the hold began;
    /// requests from them are not refused.
    pub familiar: Vec<ipnet::IpNet>,
}

impl HoldInfo {
    /// Whether the hold lets a request from `ip` through: its scope is `unfamiliar` and
    /// `ip` is in one of the account's familiar networks.
    pub fn spares(&self, ip: Option<std::net::IpAddr>) -> bool {
        self.scope == HoldScope::Unfamiliar
            && ip.is_some_and(|ip| self.familiar.iter().any(|n| n.contains(&ip)))
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

/// A request refused by something in force: a hold or block, or a listing (a disabled
/// account, a listed address); what the gate decides with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The rule (or `admin`) behind what refused.
    pub rule: &'static str,
    /// The text the client sees.
    pub message: Arc<str>,
    /// A permanent failure (deny) rather than a temporary one (defer).
    pub deny: bool,
}

impl Refused {
    /// The refusal a hold or block in force makes.
    pub fn of(h: &Hold) -> Refused {
        Refused {
            rule: h.rule,
            message: h.message.clone(),
            deny: h.deny,
        }
    }
}
