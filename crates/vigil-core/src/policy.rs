//! When and how often vigil may restart an agent.

use std::time::{Duration, Instant};

use crate::budget::RestartHistory;
use crate::time::{human_duration, later};

/// What happens when an agent has used its whole restart budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnExhausted {
    /// Stay down until a human runs `vigil reset NAME`.
    Quarantine,
    /// Try again after this long (and never before the budget has room again).
    RetryAfter(Duration),
}

/// Which exits are restarted at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestartMode {
    /// Every exit that vigil did not ask for is a failure (long-running agents).
    Always,
    /// Exit code 0 means "done"; anything else is a failure.
    OnFailure,
    /// Never restart; an exit just ends the agent.
    Never,
}

impl RestartMode {
    pub fn as_str(self) -> &'static str {
        match self {
            RestartMode::Always => "always",
            RestartMode::OnFailure => "on-failure",
            RestartMode::Never => "never",
        }
    }
}

/// Why a restart waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// The diagnosis asked for a pause (rate-limited).
    Throttled,
    /// Too soon after the previous restart.
    Cooldown,
    /// Crash-loop backoff.
    Backoff,
}

/// What the policy allows after a failure. `used`: automatic restarts in the window so far.
#[must_use]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestartDecision {
    Now {
        used: u32,
    },
    Later {
        delay: Duration,
        why: Wait,
        used: u32,
    },
    /// The restart budget is used up.
    Exhausted {
        used: u32,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestartPolicy {
    /// Minimum time between two automatic restarts of one agent.
    pub cooldown: Duration,
    /// At most this many automatic restarts in any sliding `window`.
    pub max_restarts: u32,
    pub window: Duration,
    /// Crash-loop backoff: the second failure in a row waits `backoff_initial`, each further one
    /// twice as long, capped at `backoff_max`.
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// A run this long counts as healthy: the crash streak and escalation are forgotten.
    pub stable_after: Duration,
    pub on_exhausted: OnExhausted,
    /// Consecutive failing verdicts of one check before the agent counts as failed.
    pub failure_threshold: u32,
    /// The shortest wait before restarting an agent diagnosed as rate-limited.
    pub throttle_delay: Duration,
    /// A stalled agent waits for the advisor's verdict (up to its timeout) before it is
    /// stopped. Crashed agents never wait: they are restarted at once and the advice applies
    /// before their next restart.
    pub llm_before_restart: bool,
    /// The longest an agent's declared degradation suspends stall verdicts, per episode
    /// (zero: never).
    pub max_degraded: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            cooldown: Duration::from_secs(60),
            max_restarts: 3,
            window: Duration::from_secs(3600),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            stable_after: Duration::from_secs(600),
            on_exhausted: OnExhausted::Quarantine,
            failure_threshold: 2,
            throttle_delay: Duration::from_secs(120),
            llm_before_restart: true,
            max_degraded: Duration::from_secs(15 * 60),
        }
    }
}

impl RestartPolicy {
    /// Crash-loop backoff for the `streak`-th failure in a row (1 = the first failure after a
    /// healthy run, which is restarted at once).
    pub fn backoff(&self, streak: u32) -> Duration {
        if streak <= 1 {
            return Duration::ZERO;
        }
        let doublings = (streak - 2).min(62);
        let factor = 1u64 << doublings;
        let initial = u64::try_from(self.backoff_initial.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(initial.saturating_mul(factor)).min(self.backoff_max)
    }

    /// The policy's answer to a failure that may be restarted: now, later, or not at all.
    /// `history` holds the automatic restarts so far, `streak` counts failures in a row (this
    /// one included), `at_least` is the shortest wait the diagnosis asks for.
    pub fn decide(
        &self,
        history: &RestartHistory,
        streak: u32,
        at_least: Duration,
        now: Instant,
    ) -> RestartDecision {
        let used = history.count(now, self.window);
        if used >= self.max_restarts {
            return RestartDecision::Exhausted { used };
        }
        let backoff = self.backoff(streak);
        let cooldown = history
            .last()
            .map(|t| later(t, self.cooldown).saturating_duration_since(now))
            .unwrap_or_default();
        let delay = backoff.max(cooldown).max(at_least);
        if delay.is_zero() {
            return RestartDecision::Now { used };
        }
        let why = if !at_least.is_zero() && at_least >= backoff.max(cooldown) {
            Wait::Throttled
        } else if cooldown >= backoff {
            Wait::Cooldown
        } else {
            Wait::Backoff
        };
        RestartDecision::Later { delay, why, used }
    }

    /// When a restart waiting out an exhausted budget may happen: after `wait`, and never
    /// before the budget has room again.
    pub fn retry_at(&self, history: &RestartHistory, now: Instant, wait: Duration) -> Instant {
        later(now, wait).max(history.room_at(now, self.window, self.max_restarts))
    }

    /// One line for `vigil check` and the README.
    pub fn summary(&self) -> String {
        let exhausted = match self.on_exhausted {
            OnExhausted::Quarantine => "quarantine".to_string(),
            OnExhausted::RetryAfter(d) => format!("retry after {}", human_duration(d)),
        };
        format!(
            "cooldown {} · max {} restarts per {} · backoff {}→{}, reset after {} stable · on exhausted: {} · failure threshold {}",
            human_duration(self.cooldown),
            self.max_restarts,
            human_duration(self.window),
            human_duration(self.backoff_initial),
            human_duration(self.backoff_max),
            human_duration(self.stable_after),
            exhausted,
            self.failure_threshold,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_second_failure_and_caps() {
        let p = RestartPolicy::default();
        assert_eq!(p.backoff(1), Duration::ZERO);
        assert_eq!(p.backoff(2), Duration::from_secs(1));
        assert_eq!(p.backoff(3), Duration::from_secs(2));
        assert_eq!(p.backoff(10), Duration::from_secs(256));
        assert_eq!(p.backoff(11), Duration::from_secs(300));
        assert_eq!(p.backoff(u32::MAX), Duration::from_secs(300));
    }
}
