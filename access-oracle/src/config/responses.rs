//! `[responses]`: how the oracle responds, across rules: enforce or only observe, and how
//! address blocks are sized (the network a block covers, longer blocks for repeat
//! offenders).

use serde::{Deserialize, Serialize};

use crate::problems::Problems;
use crate::rules::Mode;
use crate::state::Sizing;

/// `[responses]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResponsesConfig {
    /// `enforce` (default): rules hold, block and throttle. `observe`: nothing is
    /// refused anywhere; every rule alerts with what it would have done
    /// (`"observed": true`). For rolling out on a live server; a rule's own `mode`
    /// can only make it observe while this enforces.
    pub mode: Mode,
    /// The prefix length a rule's block on an IPv4 address covers (32: the address).
    pub block_prefix_v4: u8,
    /// The prefix length a rule's block on an IPv6 address covers (64: one host's
    /// network, within which it picks addresses at will).
    pub block_prefix_v6: u8,
    /// A network blocked again within `repeat_memory_secs` of its last block's end is
    /// blocked this many times longer per earlier block (1: no growth).
    pub repeat_factor: f64,
    /// The longest a block grown for repeats lasts, in seconds.
    pub max_block_secs: u64,
    /// How long a past block is remembered for repeats, in seconds.
    pub repeat_memory_secs: u64,
}

impl Default for ResponsesConfig {
    fn default() -> ResponsesConfig {
        let s = Sizing::default();
        ResponsesConfig {
            mode: Mode::Enforce,
            block_prefix_v4: s.prefix_v4,
            block_prefix_v6: s.prefix_v6,
            repeat_factor: s.repeat_factor,
            max_block_secs: s.max_block_secs,
            repeat_memory_secs: s.repeat_memory_secs,
        }
    }
}

impl ResponsesConfig {
    /// Adds each problem to `p`.
    pub fn validate(&self, p: &mut Problems) {
        if !(8..=32).contains(&self.block_prefix_v4) {
            p.add(format!(
                "[responses] block_prefix_v4 must be between 8 and 32, got {}",
                self.block_prefix_v4
            ));
        }
        if !(32..=128).contains(&self.block_prefix_v6) {
            p.add(format!(
                "[responses] block_prefix_v6 must be between 32 and 128, got {}",
                self.block_prefix_v6
            ));
        }
        if !(self.repeat_factor >= 1.0 && self.repeat_factor <= 100.0) {
            p.add(format!(
                "[responses] repeat_factor must be between 1 and 100, got {}",
                self.repeat_factor
            ));
        }
        if self.max_block_secs == 0 || self.max_block_secs > 365 * 86_400 {
            p.add(format!(
                "[responses] max_block_secs must be between 1 and 31536000 (a year), got {}",
                self.max_block_secs
            ));
        }
        if self.repeat_memory_secs > 365 * 86_400 {
            p.add(format!(
                "[responses] repeat_memory_secs must be at most 31536000 (a year), got {}",
                self.repeat_memory_secs
            ));
        }
    }

    /// How blocks are sized.
    pub fn sizing(&self) -> Sizing {
        Sizing {
            prefix_v4: self.block_prefix_v4,
            prefix_v6: self.block_prefix_v6,
            repeat_factor: self.repeat_factor,
            max_block_secs: self.max_block_secs,
            repeat_memory_secs: self.repeat_memory_secs,
        }
    }
}
