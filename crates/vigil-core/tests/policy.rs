//! The restart decision as a pure function: whatever the failures and the policy, the budget
//! holds, waits are bounded, and a first failure after a healthy run restarts at once.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use vigil_core::budget::RestartHistory;
use vigil_core::{OnExhausted, RestartDecision, RestartPolicy, Wait};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn policy() -> impl Strategy<Value = RestartPolicy> {
    (
        0u64..5_000,
        0u32..6,
        1_000u64..120_000,
        0u64..2_000,
        0u64..30_000,
    )
        .prop_map(
            |(cooldown, max, window, initial, max_backoff)| RestartPolicy {
                cooldown: ms(cooldown),
                max_restarts: max,
                window: ms(window),
                backoff_initial: ms(initial),
                backoff_max: ms(max_backoff),
                stable_after: ms(30_000),
                on_exhausted: OnExhausted::Quarantine,
                failure_threshold: 2,
                throttle_delay: ms(5_000),
                llm_before_restart: true,
                max_degraded: ms(60_000),
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    /// Following the decisions (restart now, or when the wait is over if the budget still has
    /// room then, as the agent's restart timer does), no window ever holds more restarts than
    /// the budget allows, and no wait is longer than the policy's longest.
    #[test]
    fn following_the_decisions_never_exceeds_the_budget(
        policy in policy(),
        failures in proptest::collection::vec((0u64..20_000, 0u64..10_000), 1..60),
    ) {
        let t0 = Instant::now();
        let mut history = RestartHistory::default();
        let mut now = t0;
        let mut restarts: Vec<Instant> = Vec::new();
        let mut streak = 0u32;
        for (gap, at_least) in failures {
            now += ms(gap);
            streak += 1;
            let at_least = ms(at_least);
            let at = match policy.decide(&history, streak, at_least, now) {
                RestartDecision::Now { used } => {
                    prop_assert!(used < policy.max_restarts);
                    now
                }
                RestartDecision::Later { delay, why, used } => {
                    prop_assert!(used < policy.max_restarts);
                    prop_assert!(!delay.is_zero());
                    prop_assert!(delay <= policy.backoff_max.max(policy.cooldown).max(at_least));
                    if why == Wait::Throttled {
                        prop_assert!(!at_least.is_zero());
                    }
                    let at = now + delay;
                    // The timer re-checks the budget when it fires.
                    if history.count(at, policy.window) >= policy.max_restarts {
                        history.room_at(at, policy.window, policy.max_restarts)
                    } else {
                        at
                    }
                }
                RestartDecision::Exhausted { used } => {
                    prop_assert!(used >= policy.max_restarts);
                    continue;
                }
            };
            if let Some(last) = history.last() {
                prop_assert!(at >= last + policy.cooldown, "the cooldown is respected");
            }
            history.record(at, policy.window);
            restarts.push(at);
            now = now.max(at);
            let in_window = restarts
                .iter()
                .filter(|t| **t <= at && at.duration_since(**t) < policy.window)
                .count() as u32;
            prop_assert!(
                in_window <= policy.max_restarts,
                "{in_window} restarts within {:?} (max {})",
                policy.window,
                policy.max_restarts
            );
        }
    }

    /// The first failure after a healthy run, with nothing to wait for, restarts at once.
    #[test]
    fn a_first_failure_restarts_at_once(policy in policy()) {
        let decision = policy.decide(&RestartHistory::default(), 1, Duration::ZERO, Instant::now());
        if policy.max_restarts == 0 {
            prop_assert_eq!(decision, RestartDecision::Exhausted { used: 0 });
        } else {
            prop_assert_eq!(decision, RestartDecision::Now { used: 0 });
        }
    }

    /// A retry after exhaustion waits at least what was asked, and never comes before the
    /// budget has room again.
    #[test]
    fn a_retry_waits_for_room(policy in policy(), wait in 0u64..100_000, gaps in proptest::collection::vec(0u64..5_000, 0..8)) {
        let t0 = Instant::now();
        let mut history = RestartHistory::default();
        let mut t = t0;
        for g in gaps {
            t += ms(g);
            history.record(t, policy.window);
        }
        let at = policy.retry_at(&history, t, ms(wait));
        prop_assert!(at >= t + ms(wait));
        if policy.max_restarts > 0 {
            prop_assert!(history.count(at, policy.window) < policy.max_restarts);
        }
    }
}

#[test]
fn huge_policies_decide_without_overflow() {
    let huge = Duration::from_secs(u64::MAX / 4);
    let policy = RestartPolicy {
        cooldown: huge,
        backoff_initial: huge,
        backoff_max: huge,
        window: huge,
        ..RestartPolicy::default()
    };
    let now = Instant::now();
    let mut history = RestartHistory::default();
    history.record(now, policy.window);
    assert!(matches!(
        policy.decide(&history, 40, huge, now),
        RestartDecision::Later { .. }
    ));
    let _ = policy.retry_at(&history, now, huge);
}
