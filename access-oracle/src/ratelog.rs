//! Warnings that an outsider can repeat by the thousand (a wrong API key, a listener at
//! its cap): the first one is logged, the rest are counted and summed up at most once a
//! period, so that a flood of requests cannot flood the log. The counters the callers
//! keep beside a warning still count every occurrence; this only decides which ones
//! become a log line.
//!
//! Time is passed in (`now`), so the tests drive the clock.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often a repeated warning is logged at most, by default.
pub const PERIOD: Duration = Duration::from_secs(60);

/// One kind of warning and what it has held back since its last log line.
#[derive(Debug)]
pub struct Warning<D: Copy> {
    period: Duration,
    state: Mutex<State<D>>,
}

#[derive(Debug)]
struct State<D> {
    /// When the last line was logged; `None` before the first occurrence.
    logged: Option<Instant>,
    /// Occurrences since then that were not logged.
    held_back: u64,
    /// The detail (an address, say) of the latest held-back occurrence.
    last: Option<D>,
}

/// What the caller should log for an occurrence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Log {
    /// Log this occurrence; `held_back` more happened since the previous line and were
    /// not logged (0 for the first).
    Now {
        /// Occurrences not logged since the previous line.
        held_back: u64,
    },
    /// Say nothing: it is counted for the next summary.
    Quiet,
}

/// A summary of occurrences held back, for a periodic line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary<D> {
    /// How many.
    pub held_back: u64,
    /// Over how long (since the previous line).
    pub over: Duration,
    /// The detail of the latest.
    pub last: Option<D>,
}

impl<D: Copy> Warning<D> {
    /// A warning logged at most once per `period` (plus the first occurrence).
    pub const fn new(period: Duration) -> Warning<D> {
        Warning {
            period,
            state: Mutex::new(State {
                logged: None,
                held_back: 0,
                last: None,
            }),
        }
    }

    /// An occurrence at `now` with `detail`: whether to log it.
    pub fn hit(&self, now: Instant, detail: D) -> Log {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match s.logged {
            Some(at) if now.saturating_duration_since(at) < self.period => {
                s.held_back += 1;
                s.last = Some(detail);
                Log::Quiet
            }
            _ => {
                let held_back = std::mem::take(&mut s.held_back);
                s.logged = Some(now);
                s.last = None;
                Log::Now { held_back }
            }
        }
    }

    /// The occurrences held back, once a period has passed since the last line (then
    /// counted as logged at `now`); `None` when there is nothing to say yet. Called by a
    /// periodic task so that the end of a flood is summed up too.
    pub fn summary(&self, now: Instant) -> Option<Summary<D>> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let at = s.logged?;
        let over = now.saturating_duration_since(at);
        if s.held_back == 0 || over < self.period {
            return None;
        }
        s.logged = Some(now);
        Some(Summary {
            held_back: std::mem::take(&mut s.held_back),
            over,
            last: s.last.take(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_is_logged_then_one_line_per_period() {
        let w = Warning::<u32>::new(Duration::from_secs(60));
        let t0 = Instant::now();
        assert_eq!(w.hit(t0, 1), Log::Now { held_back: 0 });
        let (mut logged, mut accounted) = (1, 1);
        for i in 1..9_000u32 {
            // 9,000 occurrences over 90 s.
            let now = t0 + Duration::from_millis(u64::from(i) * 10);
            if let Log::Now { held_back } = w.hit(now, i) {
                logged += 1;
                accounted += 1 + held_back;
            }
        }
        assert_eq!(logged, 2, "the first and one after 60 s");
        let end = t0 + Duration::from_secs(90);
        assert_eq!(
            w.summary(end),
            None,
            "less than a period since the last line"
        );
        let later = t0 + Duration::from_secs(121);
        let s = w.summary(later).unwrap();
        assert_eq!(s.last, Some(8_999));
        assert_eq!(s.over, Duration::from_secs(61));
        assert_eq!(
            w.summary(later + Duration::from_secs(600)),
            None,
            "said once"
        );
        assert_eq!(
            accounted + s.held_back,
            9_000,
            "every occurrence is logged or summed up"
        );
    }

    #[test]
    fn a_logged_line_tells_what_was_held_back_before_it() {
        let w = Warning::<()>::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(w.hit(t0, ()), Log::Now { held_back: 0 });
        for s in 1..=4 {
            assert_eq!(w.hit(t0 + Duration::from_secs(s), ()), Log::Quiet);
        }
        assert_eq!(
            w.hit(t0 + Duration::from_secs(10), ()),
            Log::Now { held_back: 4 }
        );
        assert_eq!(w.summary(t0 + Duration::from_secs(100)), None);
    }
}
