//! Scenario tests of the agent lifecycle, with explicit instants.

mod sim;

use sim::{SELF_PID, Sim, ms, secs};
use vigil_core::{
    Action, AgentSpec, AgentState, AuditAction, Command, CommandError, CommandOutcome, Event,
    ExitStatus, OnExhausted, Requester, RestartMode, Signal,
};

fn crash() -> ExitStatus {
    ExitStatus::code(1)
}

#[test]
fn autostart_spawns_agents_and_leaves_the_others_stopped() {
    let mut manual = AgentSpec::new("manual");
    manual.autostart = false;
    let sim = Sim::new(vec![AgentSpec::new("bot"), manual]);
    assert_eq!(
        sim.sup.agent(sim.id("bot")).unwrap().state(),
        AgentState::Running
    );
    assert_eq!(
        sim.sup.agent(sim.id("manual")).unwrap().state(),
        AgentState::Stopped
    );
    assert_eq!(sim.count("bot", AuditAction::Start), 1);
}

#[test]
fn first_crash_after_a_healthy_run_restarts_at_once() {
    let mut sim = Sim::new(vec![AgentSpec::new("bot")]);
    let bot = sim.id("bot");
    sim.advance(secs(30));
    sim.exit(bot, crash());
    let spawns = sim.spawns(bot);
    assert_eq!(spawns.len(), 2);
    assert_eq!(
        spawns[1], sim.now.mono,
        "restart in the same instant as the exit"
    );
    let restart = &sim.records("bot", AuditAction::Restart)[0];
    assert_eq!(restart.reason, "exited with code 1");
    assert_eq!(restart.metadata["budget_remaining"], 2);
    // The exit record comes before the restart record.
    let order: Vec<AuditAction> = sim.audit.iter().map(|(_, e)| e.action).collect();
    assert_eq!(
        order,
        vec![AuditAction::Start, AuditAction::Exit, AuditAction::Restart]
    );
}

#[test]
fn a_second_crash_waits_for_the_cooldown() {
    let mut sim = Sim::new(vec![AgentSpec::new("bot")]);
    let bot = sim.id("bot");
    sim.exit(bot, crash());
    let first_restart = sim.now.mono;
    sim.advance(secs(5));
    sim.exit(bot, ExitStatus::signal(Signal::KILL));
    assert_eq!(sim.sup.agent(bot).unwrap().state(), AgentState::Backoff);
    let backoff = &sim.records("bot", AuditAction::Backoff)[0];
    assert_eq!(backoff.metadata["delay_ms"], 55_000);
    assert!(
        backoff
            .reason
            .starts_with("killed by SIGKILL; restarting in 55s (cooldown")
    );
    sim.advance(secs(55));
    let spawns = sim.spawns(bot);
    assert_eq!(spawns.len(), 3);
    assert_eq!(spawns[2] - first_restart, secs(60));
}

#[test]
fn crash_loop_backoff_doubles_and_never_exceeds_its_maximum() {
    let mut spec = AgentSpec::new("bot");
    spec.policy.cooldown = ms(0);
    spec.policy.max_restarts = 100;
    spec.policy.backoff_initial = secs(1);
    spec.policy.backoff_max = secs(10);
    let mut sim = Sim::new(vec![spec]);
    let bot = sim.id("bot");
    let mut delays = Vec::new();
    for _ in 0..8 {
        sim.exit(bot, crash());
        let before = sim.now.mono;
        sim.advance(secs(60));
        let last_spawn = *sim.spawns(bot).last().unwrap();
        delays.push((last_spawn - before).as_secs());
    }
    assert_eq!(delays, vec![0, 1, 2, 4, 8, 10, 10, 10]);
}

#[test]
fn crash_loop_ends_quarantined_with_one_escalation() {
    let mut spec = AgentSpec::new("bot");
    spec.policy.cooldown = ms(0);
    spec.policy.backoff_initial = ms(10);
    let mut sim = Sim::new(vec![spec]);
    let bot = sim.id("bot");
    for _ in 0..4 {
        sim.exit(bot, crash());
        sim.advance(secs(1));
    }
    assert_eq!(sim.count("bot", AuditAction::Restart), 3);
    assert_eq!(sim.count("bot", AuditAction::RateLimited), 1);
    assert_eq!(sim.count("bot", AuditAction::Escalated), 1);
    let agent = sim.sup.agent(bot).unwrap();
    assert_eq!(agent.state(), AgentState::Quarantined);
    assert!(
        agent
            .quarantine_reason()
            .unwrap()
            .contains("3 of 3 restarts used in the last 1h")
    );
    // It stays down even after the window has slid past.
    sim.advance(secs(7200));
    assert_eq!(sim.spawns(bot).len(), 4);
    // Only reset brings it back; start is refused with the reason.
    assert!(matches!(
        sim.command(bot, Command::Start, Requester::Cli),
        Err(CommandError::Quarantined { .. })
    ));
    assert_eq!(
        sim.command(bot, Command::Reset, Requester::Cli),
        Ok(CommandOutcome::Reset)
    );
    assert_eq!(sim.sup.agent(bot).unwrap().state(), AgentState::Running);
    assert_eq!(
        sim.sup.agent(bot).unwrap().budget_remaining(sim.now.mono),
        3
    );
}

#[test]
fn retry_after_waits_then_tries_again_within_the_budget() {
    let mut spec = AgentSpec::new("bot");
    spec.policy.cooldown = ms(0);
    spec.policy.backoff_initial = ms(10);
    spec.policy.max_restarts = 2;
    spec.policy.window = secs(600);
    spec.policy.on_exhausted = OnExhausted::RetryAfter(secs(60));
    let mut sim = Sim::new(vec![spec]);
    let bot = sim.id("bot");
    for _ in 0..3 {
        sim.exit(bot, crash());
        sim.advance(secs(1));
    }
    assert_eq!(sim.sup.agent(bot).unwrap().state(), AgentState::Backoff);
    // 60s is not enough: the first restart happened at t=0 and only leaves the window at 600s.
    sim.advance(secs(300));
    assert_eq!(sim.spawns(bot).len(), 3);
    sim.advance(secs(300));
    assert_eq!(sim.spawns(bot).len(), 4);
    assert_eq!(sim.count("bot", AuditAction::Escalated), 1);
}

#[test]
fn stop_sends_the_stop_signal_then_sigkill_and_never_heals() {
    let mut sim = Sim::new(vec![AgentSpec::new("bot")]);
    let bot = sim.id("bot");
    let run = sim.runs[&bot];
    assert_eq!(
        sim.command(bot, Command::Stop, Requester::Cli),
        Ok(CommandOutcome::Stopping)
    );
    assert!(sim.actions.iter().any(|(_, a)| *a
        == Action::Signal {
            agent: bot,
            run,
            signal: Signal::TERM
        }));
    sim.advance(secs(10));
    assert!(
        sim.actions
            .iter()
            .any(|(_, a)| *a == Action::Kill { agent: bot, run })
    );
    assert_eq!(sim.count("bot", AuditAction::Kill), 1);
    sim.exit(bot, ExitStatus::signal(Signal::KILL));
    assert_eq!(sim.sup.agent(bot).unwrap().state(), AgentState::Stopped);
    sim.advance(secs(86_400));
    assert_eq!(sim.spawns(bot).len(), 1, "a stopped agent is never healed");
    assert!(sim.sup.agent(bot).unwrap().is_held());
}

#[test]
fn stop_waits_for_the_whole_tree() {
    let mut sim = Sim::new(vec![AgentSpec::new("bot")]);
    let bot = sim.id("bot");
    sim.command(bot, Command::Stop, Requester::Cli).unwrap();
    sim.exit_with_tree(bot, ExitStatus::signal(Signal::TERM), true);
    assert_eq!(sim.sup.agent(bot).unwrap().state(), AgentState::Stopping);
    sim.advance(secs(10));
    assert_eq!(
        sim.count("bot", AuditAction::Kill),
        1,
        "stragglers get SIGKILL at the timeout"
    );
    sim.tree_empty(bot);
    assert_eq!(sim.sup.agent(bot).unwrap().state(), AgentState::Stopped);
}

#[test]
fn a_crash_kills_leftovers_before_the_restart() {
    let mut sim = Sim::new(vec![AgentSpec::new("bot")]);
    let bot = sim.id("bot");
    let run = sim.runs[&bot];
    sim.exit_with_tree(bot, crash(), true);
    let kill = sim
        .actions
        .iter()
        .position(|(_, a)| *a == Action::Kill { agent: bot, run })
        .expect("leftovers killed");
    assert_eq!(sim.count("bot", AuditAction::Kill), 1, "on the record");
    let respawn = sim
        .actions
        .iter()
        .rposition(|(_, a)| {
            matches!(
                a,
                Action::Spawn {
                    look_first: false,
                    ..
                }
            )
        })
        .unwrap();
    assert!(kill < respawn);
}

#[test]
fn stopping_a_waiting_agent_cancels_its_restart() {
    let mut sim = Sim::new(vec![AgentSpec::new("bot")]);
    let bot = sim.id("bot");
    sim.exit(bot, crash());
    sim.exit(bot, crash());
    assert_eq!(sim.sup.agent(bot).unwrap().state(), AgentState::Backoff);
    assert_eq!(
        sim.command(bot, Command::Stop, Requester::Api),
        Ok(CommandOutcome::Stopped)
    );
    sim.advance(secs(3600));
    assert_eq!(sim.spawns(bot).len(), 2);
}

#[test]
fn a_stable_run_forgets_the_crash_streak_and_records_recovery() {
    let mut spec = AgentSpec::new("bot");
    spec.policy.stable_after = secs(600);
    let mut sim = Sim::new(vec![spec]);
    let bot = sim.id("bot");
    sim.exit(bot, crash());
    sim.advance(secs(61));
    sim.exit(bot, crash());
    assert_eq!(sim.sup.agent(bot).unwrap().crash_streak(), 2);
    sim.advance(secs(2));
    sim.advance(secs(600));
    assert_eq!(sim.count("bot", AuditAction::Recovered), 1);
    assert_eq!(sim.sup.agent(bot).unwrap().crash_streak(), 0);
    sim.exit(bot, crash());
    assert_eq!(
        *sim.spawns(bot).last().unwrap(),
        sim.now.mono,
        "immediate again"
    );
}

#[test]
fn restart_modes_decide_which_exits_are_failures() {
    let mut on_failure = AgentSpec::new("job");
    on_failure.restart = RestartMode::OnFailure;
    let mut never = AgentSpec::new("once");
    never.restart = RestartMode::Never;
    let mut sim = Sim::new(vec![on_failure, never]);
    let (job, once) = (sim.id("job"), sim.id("once"));
    sim.exit(job, ExitStatus::code(0));
    sim.exit(once, crash());
    sim.advance(secs(3600));
    assert_eq!(sim.sup.agent(job).unwrap().state(), AgentState::Stopped);
    assert_eq!(sim.sup.agent(once).unwrap().state(), AgentState::Stopped);
    assert_eq!(sim.spawns(job).len() + sim.spawns(once).len(), 2);
}

#[test]
fn a_missing_executable_is_quarantined_at_once() {
    let mut spec = AgentSpec::new("bot");
    spec.autostart = false;
    spec.policy.cooldown = ms(0);
    let mut sim = Sim::new(vec![spec]);
    let bot = sim.id("bot");
    sim.failing_spawns.insert(bot);
    sim.command(bot, Command::Start, Requester::Cli).unwrap();
    sim.advance(secs(60));
    // Restarting cannot create a missing program: one attempt, then a human is told.
    assert_eq!(sim.count("bot", AuditAction::SpawnFailed), 1);
    assert_eq!(sim.count("bot", AuditAction::Restart), 0);
    assert_eq!(sim.sup.agent(bot).unwrap().state(), AgentState::Quarantined);
    let escalated = &sim.records("bot", AuditAction::Escalated)[0];
    assert_eq!(escalated.metadata["diagnosis"]["category"], "permanent");
    let failed = &sim.records("bot", AuditAction::SpawnFailed)[0];
    assert_eq!(
        failed.error.as_deref(),
        Some("No such file or directory (os error 2)")
    );
}

#[test]
fn manual_restarts_do_not_use_the_budget() {
    let mut sim = Sim::new(vec![AgentSpec::new("bot")]);
    let bot = sim.id("bot");
    for _ in 0..5 {
        assert_eq!(
            sim.command(bot, Command::Restart, Requester::Cli),
            Ok(CommandOutcome::Restarting)
        );
        sim.exit(bot, ExitStatus::signal(Signal::TERM));
    }
    assert_eq!(sim.spawns(bot).len(), 6);
    assert_eq!(
        sim.sup.agent(bot).unwrap().budget_remaining(sim.now.mono),
        3
    );
}

#[test]
fn reload_adds_removes_and_restarts_only_what_changed() {
    let mut sim = Sim::new(vec![
        AgentSpec::new("keep"),
        AgentSpec::new("gone"),
        AgentSpec::new("changed"),
        AgentSpec::new("tuned"),
    ]);
    let keep_pid = sim.live[&sim.id("keep")];
    let mut changed = AgentSpec::new("changed");
    changed.fingerprint = 7;
    let mut tuned = AgentSpec::new("tuned");
    tuned.policy.max_restarts = 10;
    let report = sim.sup.reconcile(
        sim.now,
        vec![
            AgentSpec::new("keep"),
            changed,
            tuned,
            AgentSpec::new("new"),
        ],
    );
    sim.drain();
    assert_eq!(report.added, vec!["new"]);
    assert_eq!(report.removed, vec!["gone"]);
    assert_eq!(report.restarted, vec!["changed"]);
    assert_eq!(report.updated, vec!["tuned"]);
    assert_eq!(report.unchanged, 1);
    let (gone, changed) = (sim.id("gone"), sim.id("changed"));
    sim.exit(gone, ExitStatus::signal(Signal::TERM));
    sim.exit(changed, ExitStatus::signal(Signal::TERM));
    assert!(sim.sup.id("gone").is_none());
    assert_eq!(sim.sup.agent(changed).unwrap().state(), AgentState::Running);
    assert_eq!(
        sim.live[&sim.id("keep")],
        keep_pid,
        "untouched agents keep running"
    );
    assert_eq!(
        sim.sup.agent(sim.id("new")).unwrap().state(),
        AgentState::Running
    );
    let tuned = sim.sup.agent(sim.id("tuned")).unwrap();
    assert_eq!(tuned.budget_remaining(sim.now.mono), 10);
}

#[test]
fn shutdown_stops_everything_and_restarts_nothing() {
    let mut sim = Sim::new(vec![AgentSpec::new("a"), AgentSpec::new("b")]);
    sim.sup.shutdown(sim.now);
    sim.drain();
    assert!(!sim.sup.is_idle());
    for name in ["a", "b"] {
        let id = sim.id(name);
        sim.exit(id, ExitStatus::signal(Signal::TERM));
    }
    assert!(sim.sup.is_idle());
    assert_eq!(
        sim.sup
            .command(sim.now, sim.id("a"), Command::Start, Requester::Cli),
        Some(Err(CommandError::ShuttingDown))
    );
    // A shutdown is not a human's stop: the agents start again with the next vigil.
    assert!(!sim.sup.agent(sim.id("a")).unwrap().is_held());
}

#[test]
fn vigil_never_manages_its_own_pid() {
    let mut spec = AgentSpec::new("bot");
    spec.autostart = false;
    let mut sim = Sim::new(vec![spec]);
    let bot = sim.id("bot");
    sim.sup
        .command(sim.now, bot, Command::Start, Requester::Cli)
        .unwrap()
        .unwrap();
    // An edge reporting vigil's own pid as the agent's must not make it a target.
    let spawn = sim.sup.poll_action();
    assert!(matches!(spawn, Some(Action::Audit(_))));
    let Some(Action::Spawn { run, .. }) = sim.sup.poll_action() else {
        panic!("a spawn")
    };
    sim.sup.handle(
        sim.now,
        Event::Spawned {
            agent: bot,
            run,
            pid: SELF_PID,
        },
    );
    sim.drain();
    assert_eq!(sim.count("bot", AuditAction::SpawnFailed), 1);
    assert_ne!(sim.sup.agent(bot).unwrap().pid(), Some(SELF_PID));
    sim.sup
        .adopt(sim.now, bot, SELF_PID, sim.now.mono, false, None);
    sim.drain();
    assert_ne!(sim.sup.agent(bot).unwrap().pid(), Some(SELF_PID));
}

#[test]
fn adopted_agents_are_supervised_like_spawned_ones() {
    let mut spec = AgentSpec::new("bot");
    spec.autostart = true;
    let t0 = std::time::Instant::now();
    let mut sup = vigil_core::Supervisor::new(SELF_PID);
    let bot = sup.add(spec, None);
    let now = vigil_core::Now::new(t0 + secs(100), 0);
    sup.adopt(now, bot, 777, t0, false, None);
    sup.start_all(now);
    let mut actions = Vec::new();
    while let Some(a) = sup.poll_action() {
        actions.push(a);
    }
    assert!(matches!(&actions[..], [Action::Audit(e)] if e.action == AuditAction::Adopted));
    let agent = sup.agent(bot).unwrap();
    assert_eq!(agent.pid(), Some(777));
    assert_eq!(agent.uptime(now.mono), Some(secs(100)));
}
