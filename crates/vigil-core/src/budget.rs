//! The restart budget: at most `max` automatic restarts in any sliding window.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::time::{CENTURY, later};

#[derive(Clone, Debug, Default)]
pub struct RestartHistory {
    /// Instants of automatic restarts, oldest first. Only the last window's worth is kept.
    times: VecDeque<Instant>,
}

impl RestartHistory {
    pub fn from_times(mut times: Vec<Instant>) -> Self {
        times.sort();
        Self {
            times: times.into(),
        }
    }

    pub fn times(&self) -> impl Iterator<Item = Instant> + '_ {
        self.times.iter().copied()
    }

    pub fn len(&self) -> usize {
        self.times.len()
    }

    pub fn is_empty(&self) -> bool {
        self.times.is_empty()
    }

    pub fn last(&self) -> Option<Instant> {
        self.times.back().copied()
    }

    pub fn record(&mut self, at: Instant, window: Duration) {
        self.times.push_back(at);
        self.prune(at, window);
    }

    pub fn clear(&mut self) {
        self.times.clear();
    }

    /// Restarts within `(now - window, now]`.
    pub fn count(&self, now: Instant, window: Duration) -> u32 {
        self.times
            .iter()
            .filter(|t| **t <= now && now.duration_since(**t) < window)
            .count() as u32
    }

    /// Restarts still allowed at `now`.
    pub fn remaining(&self, now: Instant, window: Duration, max: u32) -> u32 {
        max.saturating_sub(self.count(now, window))
    }

    /// The first instant at or after `now` when one more restart fits in the budget.
    pub fn room_at(&self, now: Instant, window: Duration, max: u32) -> Instant {
        if max == 0 {
            // A zero budget never has room; callers treat this as "not before a reset".
            return later(now, CENTURY);
        }
        let recent: Vec<Instant> = self
            .times
            .iter()
            .copied()
            .filter(|t| *t <= now && now.duration_since(*t) < window)
            .collect();
        if (recent.len() as u32) < max {
            return now;
        }
        // The oldest restart that must slide out of the window for one more to fit.
        let must_expire = recent[recent.len() - max as usize];
        later(must_expire, window)
    }

    fn prune(&mut self, now: Instant, window: Duration) {
        while let Some(first) = self.times.front() {
            if now.duration_since(*first) >= window {
                self.times.pop_front();
            } else {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn window_slides() {
        let t0 = Instant::now();
        let w = s(3600);
        let mut h = RestartHistory::default();
        h.record(t0, w);
        h.record(t0 + s(600), w);
        h.record(t0 + s(1200), w);
        assert_eq!(h.count(t0 + s(1200), w), 3);
        // One hour after the first restart it no longer counts: a sliding, not a fixed, window.
        assert_eq!(h.count(t0 + s(3600), w), 2);
        assert_eq!(h.remaining(t0 + s(3600), w, 3), 1);
        assert_eq!(h.room_at(t0 + s(1300), w, 3), t0 + s(3600));
        assert_eq!(h.room_at(t0 + s(4000), w, 3), t0 + s(4000));
    }
}
