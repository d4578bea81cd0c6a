//! Defects found by using vigil, each pinned by the scenario that showed it.

mod sim;

use std::time::Duration;

use sim::{Sim, ms, secs};
use vigil_core::{
    AgentSpec, AgentState, AuditAction, CheckKind, CheckSpec, Command, CommandError, Event,
    ExitStatus, Observation, OnExhausted, Requester, Signal, Verdict,
};

fn sql(name: &str, max_age: Duration, interval: Duration) -> CheckSpec {
    let mut c = CheckSpec::new(name, CheckKind::Sql);
    c.max_age = Some(max_age);
    c.interval = interval;
    c
}

/// A `start` from a person while a reload is removing the agent must not bring it back.
#[test]
fn a_start_during_removal_does_not_resurrect_the_removed_agent() {
    let mut sim = Sim::new(vec![AgentSpec::new("keep"), AgentSpec::new("gone")]);
    let gone = sim.id("gone");
    sim.sup.reconcile(sim.now, vec![AgentSpec::new("keep")]);
    sim.drain();
    assert_eq!(sim.sup.agent(gone).unwrap().state(), AgentState::Stopping);
    for command in [Command::Start, Command::Restart] {
        let answer = sim.command(gone, command, Requester::Api);
        assert_eq!(answer, Err(CommandError::Removed), "{command:?}");
    }
    let spawns = sim.spawns(gone).len();
    sim.exit(gone, ExitStatus::signal(Signal::TERM));
    assert!(sim.sup.id("gone").is_none(), "forgotten once stopped");
    assert_eq!(sim.spawns(gone).len(), spawns, "never started again");
}

/// Results of probes started for the old checks must not land on the new checks.
#[test]
fn a_reload_that_changes_checks_drops_results_of_the_old_checks() {
    let mut spec = AgentSpec::new("bot");
    spec.checks = vec![sql("rows", secs(600), secs(5))];
    let mut sim = Sim::new(vec![spec.clone()]);
    let bot = sim.id("bot");
    sim.advance(secs(5));
    assert_eq!(sim.probes.len(), 1);
    let (_, check, run) = sim.probes.remove(0);
    // The check at index 0 is now a different one.
    let mut changed = spec.clone();
    changed.checks = vec![sql("orders", secs(60), secs(5))];
    sim.sup.reconcile(sim.now, vec![changed]);
    sim.drain();
    sim.sup.handle(
        sim.now,
        Event::CheckResult {
            agent: bot,
            check,
            generation: run,
            observation: Observation::Unhealthy("meant for `rows`".into()),
        },
    );
    sim.drain();
    let (spec, status) = sim.sup.agent(bot).unwrap().checks().next().unwrap();
    assert_eq!(spec.name, "orders");
    assert_eq!(status.verdict, Verdict::Pending, "{status:?}");
}

/// An agent still waiting for READY=1 keeps its ready deadline across a reload of its checks.
#[test]
fn a_ready_gated_agent_keeps_its_ready_deadline_across_a_reload() {
    let mut ready = CheckSpec::new("notify", CheckKind::Notify);
    ready.max_age = Some(secs(10));
    ready.ready = true;
    let mut spec = AgentSpec::new("slow");
    spec.checks = vec![ready.clone()];
    let mut sim = Sim::new(vec![spec.clone()]);
    let slow = sim.id("slow");
    sim.advance(secs(3));
    let mut changed = spec.clone();
    let mut more = ready.clone();
    more.max_age = Some(secs(12));
    changed.checks = vec![more];
    sim.sup.reconcile(sim.now, vec![changed]);
    sim.drain();
    assert_eq!(sim.sup.agent(slow).unwrap().state(), AgentState::Starting);
    // Never ready: stalled 12 s after its start, not never.
    sim.advance(secs(10));
    let stalled = sim.records("slow", AuditAction::Stalled);
    assert_eq!(stalled.len(), 1, "the ready deadline was lost");
    assert!(
        stalled[0].reason.contains("no READY=1 within 12s"),
        "{}",
        stalled[0].reason
    );
}

/// `recovered` means the new run made progress, not that old progress is still young.
#[test]
fn recovered_needs_progress_made_after_the_restart() {
    let mut spec = AgentSpec::new("bot");
    spec.checks = vec![sql("rows", secs(30), secs(5))];
    let mut sim = Sim::new(vec![spec]);
    let bot = sim.id("bot");
    sim.advance(secs(5));
    let before_crash = sim.wall_ago(secs(1));
    sim.answer(
        bot,
        Observation::Progress {
            at_wall_ms: Some(before_crash),
        },
    );
    sim.exit(bot, ExitStatus::code(1));
    assert_eq!(sim.spawns(bot).len(), 2);
    // After the restart the check still sees the row written before the crash.
    for _ in 0..3 {
        sim.advance(secs(5));
        sim.answer(
            bot,
            Observation::Progress {
                at_wall_ms: Some(before_crash),
            },
        );
    }
    let (_, status) = sim.sup.agent(bot).unwrap().checks().next().unwrap();
    assert_eq!(status.verdict, Verdict::Ok, "young enough to pass");
    assert_eq!(sim.count("bot", AuditAction::Recovered), 0, "but not new");
    // A row written by the new run: now it has recovered.
    sim.advance(secs(5));
    sim.answer(
        bot,
        Observation::Progress {
            at_wall_ms: Some(sim.now.wall_ms),
        },
    );
    assert_eq!(sim.count("bot", AuditAction::Recovered), 1);
}

/// Durations at the edge of what `Duration` holds never make the core panic.
#[test]
fn huge_durations_saturate_instead_of_panicking() {
    let huge = Duration::from_secs(u64::MAX / 2);
    let mut spec = AgentSpec::new("bot");
    spec.stop_timeout = huge;
    spec.policy.cooldown = huge;
    spec.policy.stable_after = huge;
    spec.policy.backoff_max = huge;
    spec.policy.backoff_initial = huge;
    spec.policy.window = huge;
    spec.policy.throttle_delay = huge;
    spec.policy.on_exhausted = OnExhausted::RetryAfter(huge);
    spec.policy.max_restarts = 2;
    let mut check = sql("rows", huge, huge);
    check.grace = huge;
    spec.checks = vec![check];
    let mut sim = Sim::new(vec![spec]);
    let bot = sim.id("bot");
    for _ in 0..4 {
        if sim.live.contains_key(&bot) {
            sim.exit(bot, ExitStatus::code(1));
        }
        sim.advance(secs(1));
    }
    sim.command(bot, Command::Reset, Requester::Cli).unwrap();
    sim.command(bot, Command::Stop, Requester::Cli).unwrap();
    sim.advance(ms(10));
    assert!(sim.sup.poll_timeout().is_some());
}
