//! Sliding time windows: the counters every rate rule is built on. Pure; time is passed in.
//!
//! Times are the wall clock's, and the wall clock can step back (an NTP correction, an
//! administrator's `date -s`): a `now` earlier than events already kept is normal input.
//! Events stay in time order whatever order they come in, so pruning from the front and
//! the binary searches stay right; an event counts while `now` is less than
//! `window_secs` past its own time, so one from before a step back (in the future of
//! the stepped clock) counts until the clock passes it again.

use std::collections::VecDeque;

pub use crate::time::Secs;

/// Events in a sliding window, where events with the same key count once.
///
/// Used for failed logins: the same wrong password (same keyed hash) repeated by a stale
/// client counts once, an event without a key always counts. At most `cap` events are
/// kept; past that the oldest go first, so memory stays bounded under a flood.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct DedupWindow {
    entries: VecDeque<(Secs, Option<u64>)>,
}

impl DedupWindow {
    /// Records an event at `now` and returns how many distinct events the window holds.
    pub fn record(&mut self, now: Secs, window_secs: Secs, key: Option<u64>, cap: usize) -> usize {
        self.prune(now, window_secs);
        let mut at = now;
        if let Some(key) = key
            && let Some(i) = self.entries.iter().position(|&(_, k)| k == Some(key))
        {
            // A repeat refreshes its time but does not count again; a time from before
            // the clock stepped back is not moved earlier.
            at = at.max(self.entries[i].0);
            self.entries.remove(i);
        }
        // In time order: after a step back of the clock, `now` goes before the events
        // stamped by the clock as it was.
        let i = self.entries.partition_point(|&(t, _)| t <= at);
        self.entries.insert(i, (at, key));
        while self.entries.len() > cap.max(1) {
            self.entries.pop_front();
        }
        self.entries.len()
    }

    /// How many distinct events lie within the window ending at `now`.
    pub fn count(&self, now: Secs, window_secs: Secs) -> usize {
        self.entries
            .iter()
            .filter(|&&(t, _)| t > now - window_secs)
            .count()
    }

    /// Forgets every event.
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// The events kept, oldest first (for the snapshot).
    pub fn entries(&self) -> impl ExactSizeIterator<Item = (Secs, Option<u64>)> + '_ {
        self.entries.iter().copied()
    }

    /// A window holding `entries`, as the snapshot kept them (put in time order).
    pub fn from_entries(entries: impl IntoIterator<Item = (Secs, Option<u64>)>) -> Self {
        let mut entries: Vec<_> = entries.into_iter().collect();
        entries.sort_by_key(|&(t, _)| t);
        DedupWindow {
            entries: entries.into(),
        }
    }

    fn prune(&mut self, now: Secs, window_secs: Secs) {
        while let Some(&(t, _)) = self.entries.front() {
            if t > now - window_secs {
                break;
            }
            self.entries.pop_front();
        }
    }
}

/// Plain event times in a sliding window, for rates (recipients per hour).
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct CountWindow {
    times: VecDeque<Secs>,
}

impl CountWindow {
    /// Drops the events that have left the window ending at `now`.
    pub fn prune(&mut self, now: Secs, window_secs: Secs) {
        while let Some(&t) = self.times.front() {
            if t > now - window_secs {
                break;
            }
            self.times.pop_front();
        }
    }

    /// Records an event at `now`; call [`CountWindow::prune`] first. Kept in time
    /// order: after a step back of the clock, `now` goes before the later times.
    pub fn record(&mut self, now: Secs) {
        match self.times.back() {
            Some(&last) if last > now => {
                let i = self.times.partition_point(|&t| t <= now);
                self.times.insert(i, now);
            }
            _ => self.times.push_back(now),
        }
    }

    /// How many events are recorded (after pruning: how many are in the window).
    pub fn len(&self) -> usize {
        self.times.len()
    }

    /// Whether nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.times.is_empty()
    }

    /// How many recorded times are after `since`.
    pub fn count_since(&self, since: Secs) -> usize {
        self.times.len() - self.times.partition_point(|&t| t <= since)
    }

    /// When the count will drop below `limit` again, if it is at or above it now.
    pub fn below_limit_at(&self, limit: usize, window_secs: Secs) -> Option<Secs> {
        let len = self.times.len();
        if limit == 0 || len < limit {
            return None;
        }
        self.times.get(len - limit).map(|t| t + window_secs)
    }

    /// When the count of events in the window ending at `now` will drop below `limit`
    /// again, if it is at or above it now (older events kept, e.g. for a longer window,
    /// are not counted).
    pub fn limit_reached(&self, limit: usize, now: Secs, window_secs: Secs) -> Option<Secs> {
        let first = self.times.partition_point(|&t| t <= now - window_secs);
        let in_window = self.times.len() - first;
        if limit == 0 || in_window < limit {
            return None;
        }
        self.times
            .get(first + in_window - limit)
            .map(|t| t + window_secs)
    }

    /// Forgets every event.
    pub fn clear(&mut self) {
        self.times.clear();
    }

    /// The times kept, oldest first (for the snapshot).
    pub fn times(&self) -> impl ExactSizeIterator<Item = Secs> + '_ {
        self.times.iter().copied()
    }

    /// A window holding `times`, as the snapshot kept them (put in order).
    pub fn from_times(times: impl IntoIterator<Item = Secs>) -> Self {
        let mut times: Vec<Secs> = times.into_iter().collect();
        times.sort_unstable();
        CountWindow {
            times: times.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedup_window_counts_a_repeated_key_once() {
        let mut w = DedupWindow::default();
        for i in 0..10 {
            assert_eq!(w.record(100 + i, 300, Some(0xabc), 64), 1);
        }
        assert_eq!(w.record(110, 300, Some(0xdef), 64), 2);
        assert_eq!(w.record(111, 300, None, 64), 3);
        assert_eq!(w.record(112, 300, None, 64), 4);
    }

    #[test]
    fn dedup_window_forgets_old_events() {
        let mut w = DedupWindow::default();
        w.record(0, 300, Some(1), 64);
        w.record(100, 300, Some(2), 64);
        assert_eq!(w.count(299, 300), 2);
        assert_eq!(w.count(300, 300), 1);
        assert_eq!(w.record(400, 300, Some(3), 64), 1);
    }

    #[test]
    fn dedup_window_is_bounded() {
        let mut w = DedupWindow::default();
        for i in 0..1000 {
            w.record(i, 10_000, None, 50);
        }
        assert_eq!(w.count(1000, 10_000), 50);
    }

    #[test]
    fn count_window_tells_when_it_falls_below_a_limit() {
        let mut w = CountWindow::default();
        for t in [10, 20, 30] {
            w.record(t);
        }
        assert_eq!(w.below_limit_at(4, 3600), None);
        assert_eq!(w.below_limit_at(3, 3600), Some(3610));
        assert_eq!(w.below_limit_at(2, 3600), Some(3620));
        w.prune(3610, 3600);
        assert_eq!(w.len(), 2);
    }

    #[test]
    fn dedup_window_counts_right_when_the_clock_steps_back() {
        let mut w = DedupWindow::default();
        assert_eq!(w.record(1000, 300, None, 64), 1);
        // The clock steps back: the event at 1000 lies ahead of it and still counts.
        assert_eq!(w.record(100, 300, None, 64), 2);
        assert_eq!(w.count(100, 300), 2);
        // The event at 100 leaves the window at 400; the one at 1000 stays (it went
        // after the later one in arrival, and is not counted in its place).
        assert_eq!(w.record(500, 300, None, 64), 2);
        assert_eq!(w.count(500, 300), 2);
        let times: Vec<Secs> = w.entries().map(|(t, _)| t).collect();
        assert_eq!(times, [500, 1000], "kept in time order");
        // Past the window of the latest: everything before has gone.
        assert_eq!(w.record(1400, 300, None, 64), 1);
        // A repeat from after the step keeps the later time of its first count.
        let mut w = DedupWindow::default();
        w.record(1000, 300, Some(7), 64);
        assert_eq!(w.record(100, 300, Some(7), 64), 1);
        assert_eq!(w.entries().collect::<Vec<_>>(), [(1000, Some(7))]);
        // Bounded as before: the oldest go first.
        let mut w = DedupWindow::default();
        for t in (0..100).rev() {
            w.record(10_000 + t, 10_000, None, 10);
        }
        let times: Vec<Secs> = w.entries().map(|(t, _)| t).collect();
        assert_eq!(times, (90..100).map(|t| 10_000 + t).collect::<Vec<_>>());
    }

    #[test]
    fn count_window_stays_in_order_when_the_clock_steps_back() {
        let mut w = CountWindow::default();
        w.record(1000);
        w.prune(100, 300);
        w.record(100);
        w.prune(250, 300);
        w.record(250);
        assert_eq!(w.times().collect::<Vec<_>>(), [100, 250, 1000]);
        assert_eq!(w.count_since(150), 2);
        assert_eq!(w.count_since(-50), 3);
        // Under three when the event at 100 leaves, under two when the one at 250 does.
        assert_eq!(w.limit_reached(3, 250, 300), Some(400));
        assert_eq!(w.limit_reached(2, 250, 300), Some(550));
        w.prune(500, 300);
        assert_eq!(w.times().collect::<Vec<_>>(), [250, 1000]);
        w.prune(1300, 300);
        assert!(w.is_empty());
    }
}
