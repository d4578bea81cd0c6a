//! The core never reads a clock: every entry point receives [`Now`].

use std::time::{Duration, Instant};

/// Longer than any wait vigil will ever schedule: durations beyond it are clamped, so adding
/// a duration to an instant can never overflow (config values are bounded far below it).
pub const CENTURY: Duration = Duration::from_secs(100 * 365 * 86_400);

/// `t + d`, saturating: a duration too large for the clock means "not in this century".
/// (A clock that cannot even hold `t` plus a century — none on Linux, whose instants are 64-bit
/// seconds — gets `t`.)
pub fn later(t: Instant, d: Duration) -> Instant {
    t.checked_add(d.min(CENTURY)).unwrap_or(t)
}

/// Whole milliseconds of `d` as an `i64`, saturating.
pub fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The moment an input is handled.
///
/// `mono` drives every timer (it never jumps); `wall_ms` (milliseconds since the Unix epoch,
/// UTC) is only for calendar questions such as quiet windows and for persisting history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    pub mono: Instant,
    pub wall_ms: i64,
}

impl Now {
    pub fn new(mono: Instant, wall_ms: i64) -> Self {
        Self { mono, wall_ms }
    }

    /// The same clock `d` later (used by tests and simulations to advance time).
    pub fn after(self, d: Duration) -> Self {
        Self {
            mono: later(self.mono, d),
            wall_ms: self.wall_ms.saturating_add(millis(d)),
        }
    }

    /// Wall-clock milliseconds of a monotonic instant, relative to this moment.
    pub fn wall_of(self, t: Instant) -> i64 {
        if t >= self.mono {
            self.wall_ms.saturating_add(millis(t - self.mono))
        } else {
            self.wall_ms.saturating_sub(millis(self.mono - t))
        }
    }

    /// The monotonic instant of a wall-clock time, relative to this moment. Times further in
    /// the past than the monotonic clock can represent are clamped to `None`.
    pub fn mono_of(self, wall_ms: i64) -> Option<Instant> {
        let delta = wall_ms.saturating_sub(self.wall_ms);
        if delta >= 0 {
            Some(later(self.mono, Duration::from_millis(delta as u64)))
        } else {
            self.mono
                .checked_sub(Duration::from_millis(delta.unsigned_abs()))
        }
    }
}

/// A short human form of a duration for reasons and tables: `350ms`, `2.3s`, `5m`, `1h30m`, `2d4h`.
pub fn human_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let secs = d.as_secs();
    if secs < 60 {
        let tenths = (ms % 1000) / 100;
        return if tenths == 0 {
            format!("{secs}s")
        } else {
            format!("{secs}.{tenths}s")
        };
    }
    let (d_, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    for (n, unit) in [(d_, "d"), (h, "h"), (m, "m"), (s, "s")] {
        if n > 0 {
            out.push_str(&format!("{n}{unit}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations_read_naturally() {
        assert_eq!(human_duration(Duration::from_millis(350)), "350ms");
        assert_eq!(human_duration(Duration::from_millis(2300)), "2.3s");
        assert_eq!(human_duration(Duration::from_secs(60)), "1m");
        assert_eq!(human_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(
            human_duration(Duration::from_secs(86_400 + 4 * 3600)),
            "1d4h"
        );
    }

    #[test]
    fn instants_saturate_instead_of_overflowing() {
        let t = Instant::now();
        assert_eq!(later(t, Duration::MAX), later(t, CENTURY));
        let now = Now::new(t, 1_000);
        assert_eq!(now.after(Duration::MAX).mono, later(t, CENTURY));
        assert_eq!(now.wall_of(later(t, CENTURY)), 1_000 + millis(CENTURY));
        assert!(now.mono_of(i64::MAX).is_some());
    }

    #[test]
    fn wall_and_mono_convert_both_ways() {
        let now = Now::new(Instant::now() + Duration::from_secs(100), 1_000_000);
        let past = now.mono - Duration::from_secs(30);
        assert_eq!(now.wall_of(past), 970_000);
        assert_eq!(now.mono_of(970_000), Some(past));
    }
}
