//! Distinct keys seen in a sliding window: exact while few (a small vector of key and
//! last-seen time), a HyperLogLog sketch beyond ([`EXACT_CAP`] keys), so an address
//! spraying a million accounts costs a few KiB, not a million entries.
//!
//! The sketch cannot forget single keys, so beyond the cap the window becomes two
//! tumbling periods of the window's length: the estimate covers the current period and
//! the previous one (between one and two windows). By then the address is far over any
//! sensible threshold; only the order of magnitude matters.

use cardinality_estimator::CardinalityEstimator;

use super::Secs;

/// Keys counted exactly before switching to the sketch.
pub const EXACT_CAP: usize = 64;

/// Distinct keys in a window.
#[derive(Debug, Default)]
pub struct DistinctWindow {
    exact: Vec<(u64, Secs)>,
    sketch: Option<Box<Sketch>>,
}

#[derive(Debug)]
struct Sketch {
    period: i64,
    current: CardinalityEstimator<u64>,
    previous: CardinalityEstimator<u64>,
}

impl DistinctWindow {
    /// Records `key` at `now` and returns the distinct keys in the window.
    pub fn record(&mut self, now: Secs, window_secs: Secs, key: u64) -> u64 {
        let window = window_secs.max(1);
        if let Some(s) = self.sketch.as_deref_mut() {
            let period = now.div_euclid(window);
            if period == s.period + 1 {
                s.previous = std::mem::take(&mut s.current);
            } else if period > s.period + 1 {
                s.previous = CardinalityEstimator::new();
                s.current = CardinalityEstimator::new();
            }
            s.period = s.period.max(period);
            s.current.insert(&key);
            return self.count();
        }
        self.exact.retain(|&(_, t)| t > now - window);
        match self.exact.iter_mut().find(|(k, _)| *k == key) {
            Some(e) => e.1 = e.1.max(now),
            None => self.exact.push((key, now)),
        }
        if self.exact.len() > EXACT_CAP {
            let mut current = CardinalityEstimator::new();
            for (k, _) in self.exact.drain(..) {
                current.insert(&k);
            }
            self.exact.shrink_to_fit();
            self.sketch = Some(Box::new(Sketch {
                period: now.div_euclid(window),
                current,
                previous: CardinalityEstimator::new(),
            }));
        }
        self.count()
    }

    /// Distinct keys recorded (in the window, as of the last record).
    pub fn count(&self) -> u64 {
        match self.sketch.as_deref() {
            Some(s) => {
                let mut both = s.current.clone();
                both.merge(&s.previous);
                both.estimate() as u64
            }
            None => self.exact.len() as u64,
        }
    }

    /// Whether the count is an estimate.
    pub fn is_estimate(&self) -> bool {
        self.sketch.is_some()
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        *self = DistinctWindow::default();
    }

    /// The keys and when each was last seen, while counted exactly (for the snapshot);
    /// empty once the count is an estimate (a sketch is not kept across restarts).
    pub fn exact(&self) -> &[(u64, Secs)] {
        if self.sketch.is_some() {
            &[]
        } else {
            &self.exact
        }
    }

    /// A window counting `keys` exactly, as the snapshot kept them.
    pub fn from_exact(keys: impl IntoIterator<Item = (u64, Secs)>) -> Self {
        DistinctWindow {
            exact: keys.into_iter().take(EXACT_CAP).collect(),
            sketch: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_while_small() {
        let mut w = DistinctWindow::default();
        for k in 0..10 {
            w.record(0, 600, k);
            w.record(if k < 5 { 0 } else { 100 }, 600, k);
        }
        assert_eq!(w.count(), 10);
        assert!(!w.is_estimate());
        assert_eq!(
            w.record(601, 600, 99),
            6,
            "keys last seen at 0 left the window"
        );
    }

    #[test]
    fn estimates_large_sprays_closely() {
        let mut w = DistinctWindow::default();
        let mut last = 0;
        for k in 0..10_000u64 {
            last = w.record(100, 600, k.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        }
        assert!(w.is_estimate());
        let err = (last as f64 - 10_000.0).abs() / 10_000.0;
        assert!(err < 0.05, "estimate {last}");
        // Two periods later the sketch starts over.
        assert!(w.record(100 + 1300, 600, 1) <= 2);
    }

    #[test]
    fn a_clock_stepping_back_keeps_the_counts_sane() {
        let mut w = DistinctWindow::default();
        assert_eq!(w.record(10_000, 600, 1), 1);
        // Stepped back an hour: the key seen "later" still counts, the new one too.
        assert_eq!(w.record(6_400, 600, 2), 2);
        // Key 2 leaves 600 s after its own time; key 1 is still in its window.
        assert_eq!(w.record(7_100, 600, 3), 2);
        // Past key 1's window, only what came since counts.
        assert_eq!(w.record(10_700, 600, 4), 1);
        // The sketch: its period does not go back with the clock, and nothing panics.
        let mut w = DistinctWindow::default();
        for k in 0..200u64 {
            w.record(10_000, 600, k.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        }
        assert!(w.is_estimate());
        let before = w.count();
        assert!(w.record(10_000 - 3_600, 600, 1) >= before);
        // Two periods after the latest, it starts over.
        assert!(w.record(10_000 + 1_300, 600, 2) <= 2);
    }
}
