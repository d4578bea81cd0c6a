//! Property tests: random fleets, random failures, random human commands, random time.
//! Whatever happens, the promises vigil makes to its users hold.

mod sim;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use sim::{Sim, ms};
use vigil_core::{
    AgentId, AgentSpec, AgentState, AuditAction, Command, ExitStatus, OnExhausted, Requester,
    RestartPolicy, Signal,
};

#[derive(Clone, Debug)]
enum Op {
    Crash {
        agent: usize,
        code: i32,
    },
    /// A process that was asked to stop does so (maybe leaving children behind for a moment).
    ObeyStop {
        agent: usize,
        leave_tree: bool,
    },
    TreeGone {
        agent: usize,
    },
    Advance {
        ms: u64,
    },
    Human {
        agent: usize,
        command: Command,
    },
    /// A pending health probe comes back (healthy, failing or unknown).
    Probe {
        agent: usize,
        outcome: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let agent = 0usize..3;
    prop_oneof![
        4 => (agent.clone(), 0i32..3).prop_map(|(agent, code)| Op::Crash { agent, code }),
        2 => (agent.clone(), any::<bool>()).prop_map(|(agent, leave_tree)| Op::ObeyStop { agent, leave_tree }),
        1 => agent.clone().prop_map(|agent| Op::TreeGone { agent }),
        4 => (1u64..20_000).prop_map(|ms| Op::Advance { ms }),
        3 => (agent.clone(), 0u8..3).prop_map(|(agent, outcome)| Op::Probe { agent, outcome }),
        2 => (agent, prop_oneof![
            Just(Command::Start),
            Just(Command::Stop),
            Just(Command::Restart),
            Just(Command::Reset)
        ]).prop_map(|(agent, command)| Op::Human { agent, command }),
    ]
}

fn policy() -> impl Strategy<Value = RestartPolicy> {
    (
        0u64..5_000,
        1u32..5,
        10_000u64..120_000,
        10u64..2_000,
        1_000u64..30_000,
        prop_oneof![Just(None), (1_000u64..60_000).prop_map(Some)],
    )
        .prop_map(
            |(cooldown, max, window, initial, max_backoff, retry)| RestartPolicy {
                cooldown: ms(cooldown),
                max_restarts: max,
                window: ms(window),
                backoff_initial: ms(initial),
                backoff_max: ms(max_backoff),
                stable_after: ms(30_000),
                on_exhausted: retry
                    .map_or(OnExhausted::Quarantine, |r| OnExhausted::RetryAfter(ms(r))),
                failure_threshold: 2,
                throttle_delay: ms(5_000),
                llm_before_restart: true,
            },
        )
}

/// Per-agent bookkeeping of what the test has asked for.
#[derive(Default)]
struct Intent {
    /// A human stop is in force: no spawn may happen until a human start/restart/reset.
    held: bool,
    spawns_when_held: usize,
    /// Automatic restarts since the last reset.
    automatic: Vec<Instant>,
}

fn run(policies: Vec<RestartPolicy>, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let specs: Vec<AgentSpec> = policies
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut spec = AgentSpec::new(&format!("a{i}"));
            spec.policy = p.clone();
            spec.stop_timeout = ms(5_000);
            // Every agent has a health check, so stalls heal through the policy too.
            let mut check = vigil_core::CheckSpec::new("http", vigil_core::CheckKind::Http);
            check.interval = ms(1_000);
            check.failure_threshold = 1 + (i as u32 % 2);
            spec.checks = vec![check];
            spec
        })
        .collect();
    let names: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
    let mut sim = Sim::new(specs);
    let ids: Vec<AgentId> = names.iter().map(|n| sim.id(n)).collect();
    let mut intents: HashMap<AgentId, Intent> =
        ids.iter().map(|id| (*id, Intent::default())).collect();
    let mut seen_audit = 0;

    for op in ops {
        match op {
            Op::Crash { agent, code } => {
                let id = ids[agent];
                if sim.live.contains_key(&id) {
                    sim.exit(id, ExitStatus::code(code));
                }
            }
            Op::ObeyStop { agent, leave_tree } => {
                let id = ids[agent];
                let stopping = sim.sup.agent(id).unwrap().state() == AgentState::Stopping;
                if stopping && sim.live.contains_key(&id) {
                    sim.exit_with_tree(id, ExitStatus::signal(Signal::TERM), leave_tree);
                }
            }
            Op::TreeGone { agent } => {
                let id = ids[agent];
                if sim.watched.contains_key(&id) {
                    sim.tree_empty(id);
                }
            }
            Op::Advance { ms: n } => sim.advance(ms(n)),
            Op::Probe { agent, outcome } => {
                let id = ids[agent];
                if sim.probes.iter().any(|(a, _, _)| *a == id) {
                    let observation = match outcome {
                        0 => vigil_core::Observation::Healthy("200".into()),
                        1 => vigil_core::Observation::Unhealthy("500".into()),
                        _ => vigil_core::Observation::Unknown("refused".into()),
                    };
                    sim.answer(id, observation);
                }
            }
            Op::Human { agent, command } => {
                let id = ids[agent];
                let ok = sim.command(id, command, Requester::Cli).is_ok();
                let intent = intents.get_mut(&id).unwrap();
                match command {
                    Command::Stop => intent.held = true,
                    _ if ok => {
                        intent.held = false;
                        intent.spawns_when_held = 0;
                    }
                    _ => {}
                }
                if intent.held {
                    intent.spawns_when_held = sim.spawns(id).len();
                }
            }
        }

        // Walk the new audit records and check each promise.
        for (at, entry) in &sim.audit[seen_audit..] {
            let Some(id) = entry.agent.as_deref().and_then(|n| sim.sup.id(n)) else {
                continue;
            };
            let index = ids.iter().position(|x| *x == id).unwrap();
            let policy = &policies[index];
            let intent = intents.get_mut(&id).unwrap();
            match entry.action {
                AuditAction::Reset => intent.automatic.clear(),
                AuditAction::Restart if entry.metadata.contains_key("restarts_in_window") => {
                    intent.automatic.push(*at);
                    let in_window = intent
                        .automatic
                        .iter()
                        .filter(|t| at.duration_since(**t) < policy.window)
                        .count();
                    prop_assert!(
                        in_window as u32 <= policy.max_restarts,
                        "{in_window} automatic restarts within {:?} (max {})",
                        policy.window,
                        policy.max_restarts
                    );
                }
                AuditAction::Backoff => {
                    let delay = Duration::from_millis(entry.metadata["delay_ms"].as_u64().unwrap());
                    prop_assert!(delay <= policy.backoff_max.max(policy.cooldown));
                }
                _ => {}
            }
        }
        seen_audit = sim.audit.len();

        for id in &ids {
            let intent = &intents[id];
            if intent.held {
                prop_assert_eq!(
                    sim.spawns(*id).len(),
                    intent.spawns_when_held,
                    "an agent stopped on purpose was started again"
                );
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn promises_hold_under_any_history(
        policies in proptest::collection::vec(policy(), 3),
        ops in proptest::collection::vec(op(), 1..200),
    ) {
        run(policies, ops)?;
    }
}
