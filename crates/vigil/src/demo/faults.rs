//! What goes wrong in the demo, when, and to whom — decided by a seeded generator, so a run
//! can be repeated with `--seed`.

use std::time::Duration;

/// The seeds' failures, one per kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// A Python-like traceback and exit 1: restarted at once.
    Crash,
    /// Alive, no heartbeat, no rows: the notify check sees it.
    Hang,
    /// Alive, heartbeats still flowing, no new decision rows: only the `sql` check sees it.
    Stall,
    /// `sqlite3.OperationalError: database is locked`: transient, restarted at once.
    DbLocked,
    /// Binance -2015: a restart cannot help, quarantined after one failure.
    InvalidKey,
    /// A 429 storm hitting every trader at once: back off, come back spread out.
    RateLimit,
    /// The market feed hangs: every trader (which depends on it) waits, none is restarted;
    /// the feed is healed first and the traders resume.
    FeedHang,
    /// A trader's config file is cut short and the trader dies reading it: vigil restores
    /// the last known good copy before the restart.
    ConfigCorrupt,
}

impl Kind {
    pub const ALL: [Kind; 8] = [
        Kind::Crash,
        Kind::Hang,
        Kind::Stall,
        Kind::DbLocked,
        Kind::InvalidKey,
        Kind::RateLimit,
        Kind::FeedHang,
        Kind::ConfigCorrupt,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Crash => "crash",
            Kind::Hang => "hang",
            Kind::Stall => "stall",
            Kind::DbLocked => "db_locked",
            Kind::InvalidKey => "invalid_key",
            Kind::RateLimit => "rate_limit",
            Kind::FeedHang => "feed_hang",
            Kind::ConfigCorrupt => "config_corrupt",
        }
    }

    pub fn from_name(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == s)
    }

    /// How the summary names it.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Crash => "crash (traceback)",
            Kind::Hang => "hang (no heartbeat)",
            Kind::Stall => "stall (heartbeat, no rows)",
            Kind::DbLocked => "database is locked",
            Kind::InvalidKey => "invalid API key",
            Kind::RateLimit => "429 storm (all traders)",
            Kind::FeedHang => "market feed hang",
            Kind::ConfigCorrupt => "config file corrupted",
        }
    }
}

/// SplitMix64: small, fast, and the same sequence for the same seed on every machine.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    pub fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        lo + (hi.saturating_sub(lo)).mul_f64(self.unit())
    }
}

/// The order of faults: every kind once (shuffled) so even a short demo shows them all, then
/// kinds at random.
pub struct Schedule {
    rng: Rng,
    first_round: Vec<Kind>,
}

impl Schedule {
    pub fn new(seed: u64) -> Schedule {
        let mut rng = Rng::new(seed);
        let mut first_round = Kind::ALL.to_vec();
        for i in (1..first_round.len()).rev() {
            first_round.swap(i, rng.below(i + 1));
        }
        first_round.reverse();
        Schedule { rng, first_round }
    }

    pub fn rng(&mut self) -> &mut Rng {
        &mut self.rng
    }

    /// The next kind to inject; `possible` says whether a kind can be injected now (a storm
    /// needs every trader healthy, an agent needs to be free).
    pub fn next_kind(&mut self, possible: impl Fn(Kind) -> bool) -> Option<Kind> {
        if let Some(i) = self.first_round.iter().rposition(|k| possible(*k)) {
            return Some(self.first_round.remove(i));
        }
        if !self.first_round.is_empty() {
            return None;
        }
        // After the first round: no more invalid keys (each one takes a trader away for good).
        let kinds: Vec<Kind> = Kind::ALL
            .into_iter()
            .filter(|k| *k != Kind::InvalidKey && possible(*k))
            .collect();
        (!kinds.is_empty()).then(|| kinds[self.rng.below(kinds.len())])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_the_same_faults_and_the_first_round_has_every_kind() {
        let order = |seed| {
            let mut s = Schedule::new(seed);
            (0..10)
                .map(|_| s.next_kind(|_| true).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(order(7), order(7));
        assert_ne!(order(7), order(8));
        let mut first: Vec<Kind> = order(7)[..8].to_vec();
        first.sort();
        assert_eq!(first, Kind::ALL.to_vec());
        assert!(!order(7)[8..].contains(&Kind::InvalidKey));
    }
}
