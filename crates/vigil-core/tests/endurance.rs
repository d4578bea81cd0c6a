//! Seed 004's "7-day endurance test", in simulated time: six traders for a week with scripted
//! faults — crashes, hangs, rate-limit pauses declared as degradation, crash loops that spend
//! the budget, weekend quiet hours — and the invariants a trading desk relies on checked over
//! the whole week. Runs in about a second.

mod sim;

use std::collections::HashMap;
use std::time::Duration;

use sim::{Sim, secs};
use vigil_core::{
    AgentId, AgentSpec, AgentState, AuditAction, CheckKind, CheckSpec, Command, Declared,
    ExitStatus, Quiet, QuietWindow, Requester,
};

const AGENTS: [&str; 6] = ["btc", "eth", "sol", "bnb", "xrp", "ada"];
const STEP: Duration = Duration::from_secs(30);
const WEEK: Duration = Duration::from_secs(7 * 24 * 3600);

/// xorshift64*: the script is the same at every run.
struct Rng(u64);

impl Rng {
    fn chance(&mut self, p: f64) -> bool {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
        (x >> 11) as f64 / (1u64 << 53) as f64 <= p
    }

    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + (0..64).filter(|_| self.chance(0.5)).count() as u64 * (hi - lo) / 64
    }
}

fn trader(name: &str) -> AgentSpec {
    let mut c = CheckSpec::new("notify", CheckKind::Notify);
    c.max_age = Some(secs(90));
    let mut spec = AgentSpec::new(name);
    spec.checks = vec![c];
    spec.policy.max_restarts = 5;
    spec.policy.window = Duration::from_secs(3600);
    spec.policy.cooldown = secs(10);
    spec.policy.max_degraded = Duration::from_secs(15 * 60);
    spec.quiet = Quiet {
        windows: vec![QuietWindow::parse("Sat 00:00-Sun 23:59 UTC").unwrap()],
    };
    spec
}

/// What a trader is doing, as its own code would.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Doing {
    Trading,
    /// Stuck: alive, no heartbeats, until vigil restarts it.
    Hung,
    /// Rate-limited: declared degraded, pausing until then.
    Paused {
        until: Duration,
    },
    /// Crashes right after every start, this many more times.
    CrashLoop(u32),
}

#[test]
fn a_week_of_faults_keeps_every_promise() {
    let mut sim = Sim::new(AGENTS.iter().map(|n| trader(n)).collect());
    let ids: Vec<AgentId> = AGENTS.iter().map(|n| sim.id(n)).collect();
    let mut rng = Rng(0x5eed_0004);
    let mut doing: HashMap<AgentId, Doing> = ids.iter().map(|id| (*id, Doing::Trading)).collect();
    let mut runs: HashMap<AgentId, Option<vigil_core::RunId>> = HashMap::new();
    // (agent, from, to): when a declared degradation suspends stall verdicts.
    let mut suspended: Vec<(String, Duration, Duration)> = Vec::new();
    let mut faults: HashMap<&str, u32> = HashMap::new();
    let mut resets = 0;

    while sim.elapsed() < WEEK {
        sim.advance(STEP);
        let now = sim.elapsed();
        for (i, id) in ids.iter().enumerate() {
            let agent = sim.sup.agent(*id).unwrap();
            let run = agent.run();
            let state = agent.state();
            // A new run starts trading (a hang or a pause ends with the run).
            if runs.get(id) != Some(&run) {
                runs.insert(*id, run);
                if !matches!(doing[id], Doing::CrashLoop(_)) {
                    doing.insert(*id, Doing::Trading);
                }
            }
            if state == AgentState::Quarantined {
                // A person looks at it within two hours and resets it.
                if rng.chance(STEP.as_secs_f64() / 7200.0) {
                    doing.insert(*id, Doing::Trading);
                    sim.command(*id, Command::Reset, Requester::Cli).unwrap();
                    resets += 1;
                }
                continue;
            }
            if !sim.live.contains_key(id) {
                continue;
            }
            match doing[id] {
                Doing::CrashLoop(0) => {
                    doing.insert(*id, Doing::Trading);
                }
                Doing::CrashLoop(n) => {
                    doing.insert(*id, Doing::CrashLoop(n - 1));
                    sim.exit(*id, ExitStatus::code(1));
                    continue;
                }
                Doing::Hung => continue,
                Doing::Paused { until } if now < until => continue,
                Doing::Paused { .. } => {
                    doing.insert(*id, Doing::Trading);
                    sim.declare(*id, Declared::Ok);
                }
                Doing::Trading => {}
            }
            sim.notify(*id, "WATCHDOG=1");
            // Faults, per trader and hour: 5 % crash, 2 % hang, 6 % rate limit, 0.5 % loop.
            let per_step = STEP.as_secs_f64() / 3600.0;
            if rng.chance(0.05 * per_step) {
                *faults.entry("crash").or_default() += 1;
                sim.exit(*id, ExitStatus::code(1));
            } else if rng.chance(0.02 * per_step) {
                *faults.entry("hang").or_default() += 1;
                doing.insert(*id, Doing::Hung);
            } else if rng.chance(0.06 * per_step) {
                *faults.entry("rate_limit").or_default() += 1;
                let pause = secs(rng.between(60, 1800));
                let answer = sim.declare(
                    *id,
                    Declared::Degraded {
                        reason: format!("{} 429, breaker open", AGENTS[i]),
                        until: Some(pause),
                    },
                );
                if let Some(until_ms) = answer.suspended_until_ms {
                    let to = now + Duration::from_millis((until_ms - sim.now.wall_ms) as u64);
                    suspended.push((AGENTS[i].to_string(), now, to));
                }
                doing.insert(*id, Doing::Paused { until: now + pause });
            } else if rng.chance(0.005 * per_step) {
                *faults.entry("crash_loop").or_default() += 1;
                doing.insert(*id, Doing::CrashLoop(8));
                sim.exit(*id, ExitStatus::code(1));
            }
        }
    }

    let at = |t: std::time::Instant| t - sim.t0;
    let records = |action: AuditAction| -> Vec<(Duration, String)> {
        sim.audit
            .iter()
            .filter(|(_, e)| e.action == action)
            .map(|(t, e)| (at(*t), e.agent.clone().unwrap_or_default()))
            .collect()
    };

    // Budgets: never more than 5 automatic restarts of one agent in any hour.
    let restarts = records(AuditAction::Restart);
    for name in AGENTS {
        let times: Vec<Duration> = restarts
            .iter()
            .filter(|(_, a)| a == name)
            .map(|(t, _)| *t)
            .collect();
        for (i, t) in times.iter().enumerate() {
            let in_hour = times[i..]
                .iter()
                .take_while(|u| **u < *t + secs(3600))
                .count();
            assert!(
                in_hour <= 5,
                "{name}: {in_hour} restarts in the hour from {t:?}"
            );
        }
    }
    // Declared degradation: no stall acted on while one was suspended, and none longer than
    // max_degraded.
    for (t, agent) in records(AuditAction::Stalled) {
        assert!(
            !suspended
                .iter()
                .any(|(a, from, to)| *a == agent && *from <= t && t < *to),
            "{agent} stalled at {t:?} while its declared degradation suspended that"
        );
        // Quiet hours: Saturday and Sunday (UTC) judge no progress.
        let wall = sim.now.wall_ms - (sim.elapsed() - t).as_millis() as i64;
        assert!(
            !trader(&agent).quiet.is_quiet(wall),
            "{agent} stalled at {t:?}, inside its quiet window"
        );
    }
    for (_, from, to) in &suspended {
        assert!(*to - *from <= Duration::from_secs(15 * 60));
    }
    // Nobody is left for dead: at the end each trader runs, or waits for its restart, or is
    // quarantined (told, loudly).
    for id in &ids {
        let state = sim.sup.agent(*id).unwrap().state();
        assert!(
            matches!(
                state,
                AgentState::Running
                    | AgentState::Starting
                    | AgentState::Backoff
                    | AgentState::Stopping
                    | AgentState::Quarantined
            ),
            "{state:?}"
        );
    }
    let escalations = records(AuditAction::Escalated).len();
    let stalls = records(AuditAction::Stalled).len();
    let suspended_stalls = sim
        .audit
        .iter()
        .filter(|(_, e)| {
            e.action == AuditAction::Degraded && e.metadata.contains_key("suspended_stall")
        })
        .count();
    eprintln!(
        "a week of 6 traders: faults {faults:?}; {} restarts, {stalls} stalls acted on, {suspended_stalls} stalls suspended by declared degradation, {escalations} escalations, {resets} resets by a person, {} audit records",
        restarts.len(),
        sim.audit.len()
    );
    assert!(
        faults.values().sum::<u32>() > 40,
        "the script faulted enough"
    );
    assert!(
        suspended_stalls > 0 && escalations > 0 && stalls > 0,
        "every path was taken"
    );
}
