//! Identical evidence gets the same advice: a crash-looping agent printing the same error every
//! minute must not cost a model call every minute. Evidence is compared by its template (digits
//! blanked out, so timestamps, ids and prices don't make two identical failures look different).

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::{Duration, Instant};

use vigil_core::{Diagnosis, FailureReport};

/// How long a verdict is reused.
pub const TTL: Duration = Duration::from_secs(3600);
/// Entries kept at most; the oldest go first.
const CAPACITY: usize = 1024;

#[derive(Default)]
pub struct Cache {
    entries: HashMap<u64, (Instant, Diagnosis)>,
}

/// The key of a report's evidence: cause, the rules' verdict and the log template.
pub fn key(report: &FailureReport) -> u64 {
    let mut h = DefaultHasher::new();
    report.cause.hash(&mut h);
    report.verdict.action.hash(&mut h);
    for line in &report.evidence {
        let mut in_digits = false;
        for c in line.chars() {
            let digit = c.is_ascii_digit();
            if !(digit && in_digits) {
                (if digit { '#' } else { c }).hash(&mut h);
            }
            in_digits = digit;
        }
        '\n'.hash(&mut h);
    }
    h.finish()
}

impl Cache {
    pub fn get(&mut self, key: u64, now: Instant) -> Option<Diagnosis> {
        match self.entries.get(&key) {
            Some((at, d)) if now.duration_since(*at) < TTL => Some(d.clone()),
            Some(_) => {
                self.entries.remove(&key);
                None
            }
            None => None,
        }
    }

    pub fn put(&mut self, key: u64, now: Instant, verdict: Diagnosis) {
        if self.entries.len() >= CAPACITY {
            self.entries
                .retain(|_, (at, _)| now.duration_since(*at) < TTL);
            if self.entries.len() >= CAPACITY
                && let Some(oldest) = self.entries.iter().min_by_key(|(_, (at, _))| *at)
            {
                let oldest = *oldest.0;
                self.entries.remove(&oldest);
            }
        }
        self.entries.insert(key, (now, verdict));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_core::{Category, Remedy};

    fn report(lines: &[&str]) -> FailureReport {
        FailureReport {
            run: None,
            pid: Some(1),
            cause: vigil_core::FailureCause::Exit,
            reason: "exited with code 1".into(),
            uptime: None,
            evidence: lines.iter().map(|s| s.to_string()).collect(),
            verdict: Diagnosis {
                category: Category::Unknown,
                action: Remedy::Restart,
                severity: vigil_core::Severity::Info,
                rule: "none".into(),
                explanation: String::new(),
                confidence: 0.3,
                source: vigil_core::Source::Rules,
            },
            ask_advisor: true,
        }
    }

    #[test]
    fn the_same_template_is_the_same_key_for_an_hour() {
        let a = key(&report(&[
            "2026-11-23 10:00:01 order 123 failed: price 101.5",
        ]));
        let b = key(&report(&[
            "2026-11-23 11:42:17 order 98765 failed: price 99.25",
        ]));
        let c = key(&report(&[
            "2026-11-23 11:42:17 order 98765 rejected: price 99.25",
        ]));
        assert_eq!(a, b);
        assert_ne!(a, c);
        let mut cache = Cache::default();
        let t0 = Instant::now();
        cache.put(a, t0, report(&[]).verdict);
        assert!(cache.get(b, t0 + Duration::from_secs(3599)).is_some());
        assert!(cache.get(b, t0 + TTL).is_none());
    }
}
