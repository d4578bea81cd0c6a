//! Property tests: random fleets, random failures, log tails, advice, stalls and their
//! investigations, human commands, reloads, adoption, reused pids (vigil's own among them)
//! and random time. Whatever happens, the promises vigil makes to its users hold.

mod sim;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use sim::{SELF_PID, Sim, ms};
use vigil_core::{
    Action, AdvisorSpec, AgentId, AgentSpec, AgentState, AuditAction, Category, CheckKind,
    CheckSpec, Command, Dependency, Diagnosis, Event, ExitStatus, Observation, OnExhausted, Ready,
    Remedy, Requester, RestartPolicy, RunId, Severity, Signal, Source,
};

const AGENTS: usize = 3;

#[derive(Clone, Debug)]
enum Op {
    /// The agent declares itself degraded (for `until_ms`, or without a time) or ok.
    Declare {
        agent: usize,
        until_ms: Option<u64>,
        ok: bool,
    },
    Crash {
        agent: usize,
        code: i32,
        /// Which last words the log holds (see `LOGS`).
        log: usize,
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
    /// A pending health probe comes back (healthy, failing, unknown, old or new progress).
    Probe {
        agent: usize,
        outcome: u8,
    },
    /// A result of a probe started for an earlier run or earlier checks arrives late.
    StaleProbe {
        agent: usize,
    },
    /// The advisor answers the agent's latest question.
    Advise {
        agent: usize,
        remedy: u8,
        confidence: u8,
    },
    /// A stall investigation's evidence comes back.
    Evidence {
        agent: usize,
        log: usize,
    },
    /// What a look before the agent's next start finds outside vigil: nothing, a copy, or
    /// its own process to adopt (vigil's own pid or init among them).
    Outside {
        agent: usize,
        found: u8,
    },
    /// Looks before starts are held back (`hold`), or every held one is answered.
    Looks {
        hold: bool,
    },
    /// A reload keeps the agents of `keep` (a bit mask), maybe with other checks.
    Reload {
        keep: u8,
        other_checks: bool,
    },
}

/// Last words of a run, from nothing to a permanent failure.
const LOGS: &[&[&str]] = &[
    &[],
    &["ccxt.base.errors.AuthenticationError: Invalid API-key"],
    &["binance 429 Too Many Requests"],
    &["sqlite3.OperationalError: database is locked"],
    &["Traceback (most recent call last):", "ZeroDivisionError"],
];

fn op() -> impl Strategy<Value = Op> {
    let agent = 0usize..AGENTS;
    let log = 0usize..LOGS.len();
    prop_oneof![
        4 => (agent.clone(), 0i32..3, log.clone()).prop_map(|(agent, code, log)| Op::Crash { agent, code, log }),
        2 => (agent.clone(), any::<bool>()).prop_map(|(agent, leave_tree)| Op::ObeyStop { agent, leave_tree }),
        1 => agent.clone().prop_map(|agent| Op::TreeGone { agent }),
        4 => (1u64..20_000).prop_map(|ms| Op::Advance { ms }),
        3 => (agent.clone(), 0u8..5).prop_map(|(agent, outcome)| Op::Probe { agent, outcome }),
        1 => agent.clone().prop_map(|agent| Op::StaleProbe { agent }),
        2 => (agent.clone(), 0u8..3, 0u8..10).prop_map(|(agent, remedy, confidence)| Op::Advise { agent, remedy, confidence }),
        2 => (agent.clone(), log).prop_map(|(agent, log)| Op::Evidence { agent, log }),
        1 => (0u8..8, any::<bool>()).prop_map(|(keep, other_checks)| Op::Reload { keep, other_checks }),
        1 => (agent.clone(), 0u8..6).prop_map(|(agent, found)| Op::Outside { agent, found }),
        1 => any::<bool>().prop_map(|hold| Op::Looks { hold }),
        1 => (agent.clone(), prop_oneof![Just(None), (1u64..120_000).prop_map(Some)], any::<bool>())
            .prop_map(|(agent, until_ms, ok)| Op::Declare { agent, until_ms, ok }),
        2 => (agent, prop_oneof![
            Just(Command::Start),
            Just(Command::ForceStart),
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
                max_degraded: ms(60_000),
            },
        )
}

fn checks(i: usize, other: bool) -> Vec<CheckSpec> {
    let mut http = CheckSpec::new("http", CheckKind::Http);
    http.interval = ms(1_000);
    http.failure_threshold = 1 + (i as u32 % 2);
    let mut rows = CheckSpec::new("rows", CheckKind::Sql);
    rows.max_age = Some(ms(10_000));
    rows.interval = ms(if other { 700 } else { 1_500 });
    if other {
        vec![rows, http]
    } else {
        vec![http, rows]
    }
}

/// Agent 0 has an advisor; agent 1 has an evidence command and an advisor; agent 2 neither.
/// With `graph`, agent 2 depends on agent 0 (healthy) and agent 1 (running), and its progress
/// check watches agent 0's output.
fn spec(i: usize, policy: &RestartPolicy, other_checks: bool, graph: bool) -> AgentSpec {
    let mut spec = AgentSpec::new(&format!("a{i}"));
    spec.policy = policy.clone();
    spec.stop_timeout = ms(5_000);
    spec.checks = checks(i, other_checks);
    if graph && i == 2 {
        for (up, ready) in [("a0", Ready::Healthy), ("a1", Ready::Running)] {
            spec.depends_on.push(Dependency {
                agent: up.into(),
                ready,
                implied: false,
            });
        }
        for c in &mut spec.checks {
            if c.kind == CheckKind::Sql {
                c.produced_by = Some("a0".into());
            }
        }
    }
    if i < 2 {
        spec.advisor = Some(AdvisorSpec {
            min_confidence: 0.5,
            wait: ms(8_000),
        });
    }
    if i == 1 {
        spec.evidence_timeout = Some(ms(3_000));
        // Its files are checked before every start (the simulated guard finds them ready).
        spec.guards_files = true;
    }
    spec
}

/// How long a stall of agent `i` may wait for evidence and advice before the stop.
fn investigation_wait(i: usize) -> Duration {
    match i {
        0 => ms(8_000 + 2_000),
        1 => ms(3_000 + 8_000 + 2_000),
        _ => Duration::ZERO,
    }
}

fn remedy(n: u8) -> Remedy {
    Remedy::ALL[n as usize % 3]
}

/// Per-agent bookkeeping of what the test has asked for and seen.
#[derive(Default)]
struct Intent {
    /// A human stop is in force: no spawn may happen until a human start/restart/reset.
    held: bool,
    spawns_when_held: usize,
    /// Automatic restarts since the last reset.
    automatic: Vec<Instant>,
    /// Quarantined since: spawns then must wait for a reset.
    quarantined_spawns: Option<usize>,
    /// Removed by a reload (and not added back).
    removed_spawns: Option<usize>,
    /// Advice reports already answered.
    answered: usize,
    /// Investigations already answered.
    evidence_given: usize,
}

struct Model {
    policies: Vec<RestartPolicy>,
    sim: Sim,
    ids: Vec<AgentId>,
    intents: HashMap<AgentId, Intent>,
    /// Every probe ever asked for: (agent, check, generation).
    all_probes: Vec<(AgentId, usize, u64)>,
    /// Stall investigations started: (agent, run, when).
    investigations: Vec<(AgentId, RunId, Instant)>,
    seen_audit: usize,
    seen_actions: usize,
    graph: bool,
}

fn run(
    policies: Vec<RestartPolicy>,
    adopt: Vec<Option<u32>>,
    ops: Vec<Op>,
    graph: bool,
) -> Result<(), TestCaseError> {
    let specs: Vec<AgentSpec> = (0..AGENTS)
        .map(|i| spec(i, &policies[i], false, graph))
        .collect();
    let mut sim = Sim::new(Vec::new());
    // vigil's own pid, and init's, are in the pool the "kernel" hands out.
    sim.pid_pool = vec![SELF_PID, 101, 1, 102];
    let mut ids = Vec::new();
    for (i, spec) in specs.into_iter().enumerate() {
        let id = sim.sup.add(spec, None);
        ids.push(id);
        // A run left by a previous vigil (possibly with a pid that is not an agent's).
        if let Some(pid) = adopt[i] {
            if let Some(run) = sim.sup.adopt(sim.now, id, pid, sim.now.mono, false, None) {
                sim.pid_of.insert(run, pid);
                sim.live.insert(id, pid);
                sim.runs.insert(id, run);
            }
            prop_assert!(sim.sup.agent(id).unwrap().pid() != Some(SELF_PID));
        }
    }
    sim.sup.start_all(sim.now);
    sim.drain();
    let intents = ids.iter().map(|id| (*id, Intent::default())).collect();
    let mut m = Model {
        policies,
        sim,
        ids,
        intents,
        all_probes: Vec::new(),
        investigations: Vec::new(),
        seen_audit: 0,
        seen_actions: 0,
        graph,
    };
    for op in ops {
        let by_hand = matches!(op, Op::Human { .. } | Op::Reload { .. });
        let before = m.waiting_downstream();
        m.apply(op)?;
        m.check()?;
        m.check_waiting(before, by_hand)?;
    }
    Ok(())
}

/// The downstream agent (a2) while it waits for an upstream: since when, and its restart
/// record then.
struct WaitingSnapshot {
    since: Instant,
    total_restarts: u64,
    restarts: Vec<Instant>,
    spawns: usize,
    actions: usize,
}

impl Model {
    fn waiting_downstream(&self) -> Option<WaitingSnapshot> {
        let id = self.ids[2];
        let a = self.sim.sup.agent(id)?;
        let (_, _, since) = a.waiting_on()?;
        Some(WaitingSnapshot {
            since,
            total_restarts: a.total_restarts(),
            restarts: a.restart_times().collect(),
            spawns: self.sim.spawns(id).len(),
            actions: self.sim.actions.len(),
        })
    }

    /// While an upstream is down without a break, the downstream is never restarted and its
    /// budget never moves (a human's or a reload's restart aside).
    fn check_waiting(
        &self,
        before: Option<WaitingSnapshot>,
        by_hand: bool,
    ) -> Result<(), TestCaseError> {
        let (Some(before), Some(after)) = (before, self.waiting_downstream()) else {
            return Ok(());
        };
        if before.since != after.since || by_hand {
            return Ok(());
        }
        prop_assert_eq!(after.spawns, before.spawns, "a waiting agent was started");
        prop_assert_eq!(
            after.total_restarts,
            before.total_restarts,
            "a waiting agent was restarted"
        );
        prop_assert_eq!(
            &after.restarts,
            &before.restarts,
            "the budget of a waiting agent moved"
        );
        let id = self.ids[2];
        for (_, action) in &self.sim.actions[before.actions..] {
            if let Action::Audit(e) = action
                && e.agent.as_deref() == Some("a2")
            {
                prop_assert!(
                    !matches!(
                        e.action,
                        AuditAction::Restart | AuditAction::Stalled | AuditAction::Escalated
                    ),
                    "a waiting agent was judged: {}",
                    e.reason
                );
            }
            if let Action::Signal { agent, .. } | Action::Kill { agent, .. } = action {
                prop_assert!(
                    *agent != id
                        || self
                            .sim
                            .sup
                            .agent(id)
                            .is_none_or(|a| a.state() != AgentState::Waiting || a.pid().is_none()),
                    "a waiting agent was signalled"
                );
            }
        }
        Ok(())
    }

    fn apply(&mut self, op: Op) -> Result<(), TestCaseError> {
        let sim = &mut self.sim;
        match op {
            Op::Declare {
                agent,
                until_ms,
                ok,
            } => {
                let declared = if ok {
                    vigil_core::Declared::Ok
                } else {
                    vigil_core::Declared::Degraded {
                        reason: "429".into(),
                        until: until_ms.map(ms),
                    }
                };
                if sim.sup.agent(self.ids[agent]).is_some() {
                    sim.declare(self.ids[agent], declared);
                }
            }
            Op::Crash { agent, code, log } => {
                let id = self.ids[agent];
                if sim.live.contains_key(&id) {
                    sim.exit_logging(id, ExitStatus::code(code), LOGS[log]);
                }
            }
            Op::ObeyStop { agent, leave_tree } => {
                let id = self.ids[agent];
                let stopping = sim
                    .sup
                    .agent(id)
                    .is_some_and(|a| a.state() == AgentState::Stopping);
                if stopping && sim.live.contains_key(&id) {
                    sim.exit_with_tree(id, ExitStatus::signal(Signal::TERM), leave_tree);
                }
            }
            Op::TreeGone { agent } => {
                let id = self.ids[agent];
                if sim.watched.contains_key(&id) {
                    sim.tree_empty(id);
                }
            }
            Op::Advance { ms: n } => sim.advance(ms(n)),
            Op::Probe { agent, outcome } => {
                let id = self.ids[agent];
                if sim.probes.iter().any(|(a, _, _)| *a == id) {
                    let observation = match outcome {
                        0 => Observation::Healthy("200".into()),
                        1 => Observation::Unhealthy("500".into()),
                        2 => Observation::Unknown("refused".into()),
                        3 => Observation::Progress {
                            at_wall_ms: Some(sim.wall_ago(ms(60_000))),
                        },
                        _ => Observation::Progress {
                            at_wall_ms: Some(sim.now.wall_ms),
                        },
                    };
                    sim.answer(id, observation);
                }
            }
            Op::StaleProbe { agent } => {
                let id = self.ids[agent];
                if sim.sup.agent(id).is_none() {
                    return Ok(());
                }
                let current = sim.sup.agent(id).unwrap().check_generation();
                let Some(&(_, check, generation)) = self
                    .all_probes
                    .iter()
                    .rfind(|(a, _, g)| *a == id && *g != current)
                else {
                    return Ok(());
                };
                let before: Vec<_> = sim
                    .sup
                    .agent(id)
                    .unwrap()
                    .checks()
                    .map(|(_, s)| s.clone())
                    .collect();
                let records = sim.audit.len();
                sim.sup.handle(
                    sim.now,
                    Event::CheckResult {
                        agent: id,
                        check,
                        generation,
                        observation: Observation::Unhealthy("meant for another run".into()),
                    },
                );
                sim.drain();
                let after: Vec<_> = sim
                    .sup
                    .agent(id)
                    .unwrap()
                    .checks()
                    .map(|(_, s)| s.clone())
                    .collect();
                prop_assert_eq!(before, after, "a result of an old probe changed a check");
                prop_assert_eq!(
                    records,
                    sim.audit.len(),
                    "a result of an old probe was acted on"
                );
            }
            Op::Advise {
                agent,
                remedy: r,
                confidence,
            } => {
                let id = self.ids[agent];
                let intent = self.intents.get_mut(&id).unwrap();
                let asked: Vec<_> = sim
                    .reports
                    .iter()
                    .filter(|(a, r)| *a == id && r.ask_advisor)
                    .map(|(_, r)| r.pid)
                    .collect();
                if intent.answered < asked.len() {
                    let pid = asked[asked.len() - 1];
                    intent.answered = asked.len();
                    let advice = Diagnosis {
                        category: Category::Unknown,
                        action: remedy(r),
                        severity: Severity::Warning,
                        rule: "model".into(),
                        explanation: "the model's reading".into(),
                        confidence: f64::from(confidence) / 10.0,
                        source: Source::Llm,
                    };
                    if pid.is_some() {
                        sim.advise(id, pid, Ok(advice));
                    }
                }
            }
            Op::Evidence { agent, log } => {
                let id = self.ids[agent];
                let intent = self.intents.get_mut(&id).unwrap();
                let asked: Vec<u32> = sim
                    .investigations
                    .iter()
                    .filter(|(a, _)| *a == id)
                    .map(|(_, p)| *p)
                    .collect();
                if intent.evidence_given < asked.len() {
                    intent.evidence_given = asked.len();
                    sim.log_tail(id, asked[asked.len() - 1], LOGS[log]);
                }
            }
            Op::Reload { keep, other_checks } => {
                let kept: Vec<AgentSpec> = (0..AGENTS)
                    .filter(|i| keep & (1 << i) != 0)
                    .map(|i| spec(i, &self.policies[i], other_checks, self.graph))
                    .collect();
                for i in 0..AGENTS {
                    let id = self.ids[i];
                    let spawns = sim.spawns(id).len();
                    let intent = self.intents.get_mut(&id).unwrap();
                    if keep & (1 << i) == 0 {
                        intent.removed_spawns.get_or_insert(spawns);
                    } else if sim.sup.agent(id).is_some() {
                        // Added back before it was forgotten: it may run again.
                        intent.removed_spawns = None;
                    }
                }
                sim.sup.reconcile(sim.now, kept);
                sim.drain();
                // A removed agent that was forgotten and added back is a new agent.
                for i in 0..AGENTS {
                    let name = format!("a{i}");
                    if let Some(id) = sim.sup.id(&name)
                        && id != self.ids[i]
                    {
                        self.ids[i] = id;
                        self.intents.insert(id, Intent::default());
                    }
                }
            }
            Op::Looks { hold } => {
                sim.hold_looks = hold;
                if !hold {
                    sim.answer_looks();
                }
            }
            Op::Outside { agent, found } => {
                let id = self.ids[agent];
                let pid = 900_000 + agent as u32;
                let outside = match found {
                    0 => vigil_core::Outside::Nothing,
                    1 => vigil_core::Outside::Copy {
                        pid,
                        what: "a copy".into(),
                    },
                    5 => vigil_core::Outside::Unknown {
                        why: "the bus did not answer".into(),
                    },
                    n => vigil_core::Outside::Adoptable {
                        pid: [pid, SELF_PID, 1][usize::from(n - 2)],
                        started: 1,
                        age: ms(1_000),
                        how: "pidfile".into(),
                    },
                };
                sim.outside.insert(id, outside);
            }
            Op::Human { agent, command } => {
                let id = self.ids[agent];
                if sim.sup.agent(id).is_none() {
                    return Ok(());
                }
                let ok = sim.command(id, command, Requester::Cli).is_ok();
                let spawns = sim.spawns(id).len();
                let intent = self.intents.get_mut(&id).unwrap();
                match command {
                    Command::Stop => intent.held = true,
                    _ if ok => {
                        intent.held = false;
                        intent.spawns_when_held = 0;
                    }
                    _ => {}
                }
                if command == Command::Reset && ok {
                    intent.quarantined_spawns = None;
                }
                if intent.held {
                    intent.spawns_when_held = spawns;
                }
            }
        }
        Ok(())
    }

    fn check(&mut self) -> Result<(), TestCaseError> {
        let sim = &self.sim;
        for (at, action) in &sim.actions[self.seen_actions..] {
            match action {
                Action::RunCheck {
                    agent,
                    check,
                    generation,
                } => self.all_probes.push((*agent, *check, *generation)),
                Action::Investigate { agent, run } => self.investigations.push((*agent, *run, *at)),
                _ => {}
            }
        }
        self.seen_actions = sim.actions.len();

        // Walk the new audit records and check each promise.
        for (at, entry) in &sim.audit[self.seen_audit..] {
            let Some(i) = entry
                .agent
                .as_deref()
                .and_then(|n| n.strip_prefix('a'))
                .and_then(|n| n.parse::<usize>().ok())
            else {
                continue;
            };
            let policy = &self.policies[i];
            let Some(intent) = sim
                .sup
                .id(&format!("a{i}"))
                .and_then(|id| self.intents.get_mut(&id))
            else {
                continue;
            };
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
                    let throttle = policy.throttle_delay + policy.throttle_delay / 2;
                    prop_assert!(delay <= policy.backoff_max.max(policy.cooldown).max(throttle));
                }
                AuditAction::Advice => {
                    // Advice never loosens a verdict: only a stricter one is applied.
                    let applied = entry.metadata["applied"].as_bool().unwrap();
                    let advised =
                        Remedy::from_name(entry.metadata["advice"]["action"].as_str().unwrap())
                            .unwrap();
                    let ruled =
                        Remedy::from_name(entry.metadata["diagnosis"]["action"].as_str().unwrap())
                            .unwrap();
                    prop_assert!(!applied || advised > ruled, "{}", entry.reason);
                }
                _ => {}
            }
        }
        self.seen_audit = sim.audit.len();

        for (i, id) in self.ids.iter().enumerate() {
            let spawns = sim.spawns(*id).len();
            let intent = self.intents.get_mut(id).unwrap();
            if intent.held {
                prop_assert_eq!(
                    spawns,
                    intent.spawns_when_held,
                    "an agent stopped on purpose was started again"
                );
            }
            if let Some(at_removal) = intent.removed_spawns {
                prop_assert_eq!(spawns, at_removal, "a removed agent was started");
            }
            // Quarantine sticks until a reset.
            let quarantined = sim
                .sup
                .agent(*id)
                .is_some_and(|a| a.state() == AgentState::Quarantined);
            match intent.quarantined_spawns {
                Some(n) => prop_assert_eq!(spawns, n, "a quarantined agent ran before a reset"),
                None if quarantined => intent.quarantined_spawns = Some(spawns),
                None => {}
            }
            // Every stall ends in a stop within its wait.
            let wait = investigation_wait(i);
            for (agent, run, started) in &self.investigations {
                if agent != id || sim.now.mono < *started + wait + ms(1) {
                    continue;
                }
                let stopped = sim.actions.iter().any(|(at, a)| {
                    at >= started
                        && at <= &(*started + wait)
                        && matches!(a, Action::Signal { run: r, .. } if r == run)
                });
                let ended = !sim.runs.values().any(|r| r == run);
                prop_assert!(
                    stopped || ended,
                    "a stall investigated at {:?} was not stopped within {wait:?}",
                    started.duration_since(sim.t0)
                );
            }
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn promises_hold_under_any_history(
        policies in proptest::collection::vec(policy(), AGENTS),
        adopt in proptest::collection::vec(prop_oneof![Just(None), Just(Some(SELF_PID)), Just(Some(1)), Just(Some(90))], AGENTS),
        ops in proptest::collection::vec(op(), 1..200),
        graph in any::<bool>(),
    ) {
        run(policies, adopt, ops, graph)?;
    }
}
