//! What the live state tells its journal: every change the snapshot keeps, at the
//! moment it is made and while the entry's lock is still held, so that the journal's
//! order for one entry is the order of its changes. The journal itself (a file, its
//! format, its replay) is [`crate::persist::journal`]; this module only names the
//! changes, so the state stays below persistence.
//!
//! Account and address changes carry the journal's sequence number back into the entry
//! ([`super::Account::journal_seq`]): a snapshot written while changes go on keeps, per
//! entry, the number of the last change it holds, and the replay skips what the
//! snapshot already has. Baselines, familiar networks and blocks are written whole, so
//! replaying one twice changes nothing.

use std::net::IpAddr;

use ipnet::IpNet;

use super::blocks::{Block, Past};
use super::{Account, Baseline, IpRecord, Secs};

/// One change, borrowed from the live state.
#[derive(Debug, Clone, Copy)]
pub enum Change<'a> {
    /// An account's failed-login window and what is in force on it (hold, its who and
    /// why, throttle), as they are now; `rcpts_cleared` when its recipient count was
    /// reset (a release).
    Account {
        /// The account.
        user: &'a str,
        /// Its entry.
        account: &'a Account,
        /// The recipients counted were forgotten.
        rcpts_cleared: bool,
    },
    /// Recipients accepted and counted for an account at `at`.
    Rcpts {
        /// The account.
        user: &'a str,
        /// When.
        at: Secs,
        /// How many.
        n: u32,
    },
    /// An address's failed-login and sprayed-accounts windows, as they are now.
    Ip {
        /// The address.
        ip: IpAddr,
        /// Its entry.
        record: &'a IpRecord,
    },
    /// An account's baseline, as it is now.
    Baseline {
        /// The account.
        user: &'a str,
        /// Its baseline.
        baseline: &'a Baseline,
    },
    /// An account's familiar networks, as they are now.
    Familiar {
        /// The account.
        user: &'a str,
        /// Each network and when it was last used.
        list: &'a [(IpNet, Secs)],
    },
    /// A network's block (none: lifted) and what is remembered of its past blocks.
    Net {
        /// The network.
        net: IpNet,
        /// The block in force, if any.
        block: Option<&'a Block>,
        /// Its history, if any.
        past: Option<Past>,
    },
}

/// Where changes go. Appending must not wait for a disk: the verdict is on its way.
pub trait Journal: Send + Sync + std::fmt::Debug {
    /// Appends `change` and returns its sequence number (0: not kept).
    fn append(&self, change: Change<'_>) -> u64;
}
