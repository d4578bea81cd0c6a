//! Which agent feeds which, with explicit instants: agents start after what they depend on;
//! while an upstream is down its dependents wait (no restart, no budget spent) and the
//! upstream is healed first; once it is back they get their grace period, then the usual
//! rules; a stale output blames its producer.

mod sim;

use std::collections::HashMap;
use std::time::Duration;

use sim::{Sim, ms, secs};
use vigil_core::graph::find_cycle;
use vigil_core::{
    AgentSpec, AgentState, AuditAction, CheckKind, CheckSpec, Command, CommandOutcome, Dependency,
    ExitStatus, Observation, OnUpstreamRestart, Ready, Requester, Signal,
};

/// An agent that proves itself by API heartbeats, at most `max_age` apart.
fn beating(name: &str, max_age: Duration) -> AgentSpec {
    let mut spec = AgentSpec::new(name);
    let mut c = CheckSpec::new("api", CheckKind::Api);
    c.max_age = Some(max_age);
    spec.checks = vec![c];
    spec
}

fn depending(mut spec: AgentSpec, on: &str, ready: Ready) -> AgentSpec {
    spec.depends_on.push(Dependency {
        agent: on.into(),
        ready,
        implied: false,
    });
    spec
}

fn beat(sim: &mut Sim, name: &str) {
    let id = sim.id(name);
    sim.sup.api_heartbeat(sim.now, id);
    sim.drain();
}

fn state(sim: &Sim, name: &str) -> AgentState {
    sim.sup.agent(sim.id(name)).unwrap().state()
}

fn automatic_restarts(sim: &Sim, name: &str) -> usize {
    sim.records(name, AuditAction::Restart)
        .iter()
        .filter(|r| r.metadata.contains_key("restarts_in_window"))
        .count()
}

/// A trader whose file check (max age 60 s, every 10 s) watches `producer`'s output.
fn watching(producer: &str) -> AgentSpec {
    let mut trader = AgentSpec::new("trader");
    let mut file = CheckSpec::new("signals", CheckKind::File);
    file.max_age = Some(secs(60));
    file.interval = secs(10);
    file.produced_by = Some(producer.into());
    trader.checks = vec![file];
    trader
}

/// The watched file stays 90 s old. Progress counts from the start at the earliest: stale
/// from 60 s, stalled at the second failing look.
fn stale_until_stalled(sim: &mut Sim, watcher: vigil_core::AgentId) {
    for _ in 0..7 {
        sim.advance(secs(10));
        sim.answer(
            watcher,
            Observation::Progress {
                at_wall_ms: Some(sim.wall_ago(secs(90))),
            },
        );
    }
}

/// The feed and a trader that needs it healthy; both beat every 10 s at most.
fn pipeline() -> Sim {
    Sim::new(vec![
        depending(beating("trader", secs(10)), "feed", Ready::Healthy),
        beating("feed", secs(10)),
    ])
}

#[test]
fn an_agent_starts_only_once_what_it_depends_on_is_healthy() {
    let mut sim = pipeline();
    let (feed, trader) = (sim.id("feed"), sim.id("trader"));
    // Listed first, the trader still waits: the feed is up but has proven nothing yet.
    assert_eq!(sim.spawns(feed).len(), 1);
    assert!(sim.spawns(trader).is_empty());
    assert_eq!(state(&sim, "trader"), AgentState::Waiting);
    let (on, why, _) = sim.sup.agent(trader).unwrap().waiting_on().unwrap();
    assert_eq!((on, why), ("feed", "not yet healthy"));
    let waiting = &sim.records("trader", AuditAction::Waiting)[0];
    assert_eq!(waiting.metadata["upstream"], "feed");

    sim.advance(secs(3));
    beat(&mut sim, "feed");
    assert_eq!(sim.spawns(trader), vec![sim.now.mono]);
    assert_eq!(state(&sim, "trader"), AgentState::Running);
    let resumed = &sim.records("trader", AuditAction::Resumed)[0];
    assert_eq!(resumed.reason, "feed is back after 3s: starting it");
}

#[test]
fn ready_running_starts_as_soon_as_the_upstream_process_is_up() {
    let sim = Sim::new(vec![
        depending(AgentSpec::new("trader"), "feed", Ready::Running),
        beating("feed", secs(10)),
    ]);
    // It waits only for the feed's spawn, not for its first heartbeat.
    assert_eq!(sim.spawns(sim.id("trader")).len(), 1);
    assert_eq!(state(&sim, "trader"), AgentState::Running);
    assert_eq!(sim.records("trader", AuditAction::Resumed).len(), 1);
}

#[test]
fn while_the_upstream_is_down_a_downstream_crash_is_not_restarted_and_spends_no_budget() {
    let mut sim = pipeline();
    let (feed, trader) = (sim.id("feed"), sim.id("trader"));
    beat(&mut sim, "feed");
    beat(&mut sim, "trader");
    let budget = sim
        .sup
        .agent(trader)
        .unwrap()
        .budget_remaining(sim.now.mono);

    // The feed goes silent at 5 s; the trader, fed nothing, goes silent at 8 s.
    sim.advance(secs(5));
    beat(&mut sim, "feed");
    sim.advance(secs(3));
    beat(&mut sim, "trader");
    // 15 s: the feed is stalled and stopped; the trader waits for it.
    sim.advance(secs(7));
    assert_eq!(state(&sim, "feed"), AgentState::Stopping);
    assert_eq!(state(&sim, "trader"), AgentState::Waiting);
    let (_, why, _) = sim.sup.agent(trader).unwrap().waiting_on().unwrap();
    assert_eq!(why, "stalled");
    // 18 s: the trader's own check fails, and is not counted against it.
    sim.advance(secs(3));
    assert_eq!(
        sim.signals_sent(Signal::TERM),
        1,
        "only the feed was stopped"
    );
    assert!(sim.records("trader", AuditAction::Stalled).is_empty());
    // 20 s: the trader crashes: not restarted.
    sim.advance(secs(2));
    sim.exit(trader, ExitStatus::code(1));
    assert_eq!(state(&sim, "trader"), AgentState::Waiting);
    assert_eq!(sim.spawns(trader).len(), 1);
    let held = sim.records("trader", AuditAction::Waiting);
    assert!(
        held.last()
            .unwrap()
            .reason
            .contains("no restart budget spent"),
        "{}",
        held.last().unwrap().reason
    );

    // The feed is healed first (its own budget), and proves itself at 25 s.
    sim.exit(feed, ExitStatus::signal(Signal::TERM));
    assert_eq!(automatic_restarts(&sim, "feed"), 1);
    assert!(
        sim.spawns(trader).len() == 1,
        "the trader waits for the feed"
    );
    sim.advance(secs(5));
    beat(&mut sim, "feed");
    assert_eq!(sim.spawns(trader).len(), 2);
    assert_eq!(automatic_restarts(&sim, "trader"), 0);
    let agent = sim.sup.agent(trader).unwrap();
    assert_eq!(agent.budget_remaining(sim.now.mono), budget);
    assert_eq!(agent.total_restarts(), 0);
    assert_eq!(agent.crash_streak(), 0);
}

#[test]
fn when_both_fail_the_upstream_is_restarted_first() {
    let mut feed_spec = beating("feed", secs(10));
    feed_spec.policy.cooldown = secs(30);
    let mut sim = Sim::new(vec![
        depending(beating("trader", secs(10)), "feed", Ready::Healthy),
        feed_spec,
    ]);
    let (feed, trader) = (sim.id("feed"), sim.id("trader"));
    beat(&mut sim, "feed");
    beat(&mut sim, "trader");
    sim.advance(secs(1));
    // The feed crashes twice: its cooldown holds its second restart back.
    sim.exit(feed, ExitStatus::code(1));
    sim.exit(feed, ExitStatus::code(1));
    sim.exit(trader, ExitStatus::code(1));
    assert_eq!(state(&sim, "feed"), AgentState::Backoff);
    assert_eq!(state(&sim, "trader"), AgentState::Waiting);
    sim.advance(secs(30));
    let feed_back = sim.spawns(feed)[2];
    assert_eq!(
        sim.spawns(trader).len(),
        1,
        "not before the feed is healthy"
    );
    sim.advance(secs(1));
    beat(&mut sim, "feed");
    let trader_back = sim.spawns(trader)[1];
    assert!(feed_back < trader_back);
    assert_eq!(automatic_restarts(&sim, "trader"), 0);
}

#[test]
fn a_downstream_backing_off_when_its_upstream_falls_keeps_its_own_wait() {
    let mut spec = depending(AgentSpec::new("trader"), "feed", Ready::Running);
    spec.policy.cooldown = secs(30);
    let mut feed_spec = AgentSpec::new("feed");
    feed_spec.policy.cooldown = secs(100);
    let mut sim = Sim::new(vec![spec, feed_spec]);
    let (feed, trader) = (sim.id("feed"), sim.id("trader"));
    sim.advance(secs(1));
    sim.exit(trader, ExitStatus::code(1));
    assert_eq!(
        state(&sim, "trader"),
        AgentState::Running,
        "first crash: at once"
    );
    sim.advance(secs(1));
    sim.exit(trader, ExitStatus::code(1));
    assert_eq!(state(&sim, "trader"), AgentState::Backoff);
    let used = sim
        .sup
        .agent(trader)
        .unwrap()
        .restarts_in_window(sim.now.mono);
    // The feed crashes twice and backs off: the trader's waiting restart is called off.
    sim.exit(feed, ExitStatus::code(1));
    sim.exit(feed, ExitStatus::code(1));
    assert_eq!(state(&sim, "feed"), AgentState::Backoff);
    assert_eq!(state(&sim, "trader"), AgentState::Waiting);
    sim.advance(secs(45));
    assert_eq!(sim.spawns(trader).len(), 2);
    assert_eq!(
        sim.sup
            .agent(trader)
            .unwrap()
            .restarts_in_window(sim.now.mono),
        used
    );
    sim.advance(secs(60));
    assert_eq!(state(&sim, "feed"), AgentState::Running);
    // Its own restart was due long ago: it comes once the feed runs, on its own budget.
    assert_eq!(sim.spawns(trader).len(), 3, "started once the feed runs");
    assert_eq!(
        sim.sup
            .agent(trader)
            .unwrap()
            .restarts_in_window(sim.now.mono),
        used + 1
    );
}

#[test]
fn once_the_upstream_is_back_a_running_downstream_gets_its_grace_then_the_usual_rules() {
    let mut trader = depending(beating("trader", secs(10)), "feed", Ready::Healthy);
    trader.checks[0].grace = secs(20);
    let mut sim = Sim::new(vec![trader, beating("feed", secs(60))]);
    let (feed, trader) = (sim.id("feed"), sim.id("trader"));
    beat(&mut sim, "feed");
    sim.advance(secs(15));
    beat(&mut sim, "trader");
    sim.advance(secs(6));
    beat(&mut sim, "trader");
    // 22 s: the feed crashes and is restarted at once; the trader, fed nothing, goes silent.
    sim.advance(secs(1));
    sim.exit(feed, ExitStatus::code(1));
    assert_eq!(state(&sim, "trader"), AgentState::Waiting);
    // 31 s: the trader's silence is the feed's doing, not counted.
    sim.advance(secs(18));
    assert!(sim.records("trader", AuditAction::Stalled).is_empty());
    // 40 s: the feed proves itself; the trader has been silent for 19 s.
    beat(&mut sim, "feed");
    assert_eq!(state(&sim, "trader"), AgentState::Running);
    let resumed = sim.records("trader", AuditAction::Resumed);
    let resumed = resumed.last().unwrap();
    assert!(resumed.reason.contains("grace"), "{}", resumed.reason);
    // Its grace (20 s from now) holds; still silent after it, it is stalled and restarted
    // through its own policy.
    sim.advance(secs(19));
    assert!(sim.records("trader", AuditAction::Stalled).is_empty());
    sim.advance(secs(2));
    assert_eq!(sim.records("trader", AuditAction::Stalled).len(), 1);
    sim.exit(trader, ExitStatus::signal(Signal::TERM));
    assert_eq!(automatic_restarts(&sim, "trader"), 1);
}

#[test]
fn on_upstream_restart_restarts_the_downstream_at_once_without_budget() {
    let mut trader = depending(AgentSpec::new("trader"), "feed", Ready::Running);
    trader.on_upstream_restart = OnUpstreamRestart::Restart;
    let mut sim = Sim::new(vec![trader, AgentSpec::new("feed")]);
    let (feed, trader) = (sim.id("feed"), sim.id("trader"));
    sim.advance(secs(5));
    sim.exit(feed, ExitStatus::code(1));
    // The feed is restarted at once; the trader, held for that instant, is restarted too.
    assert_eq!(sim.spawns(feed).len(), 2);
    assert_eq!(state(&sim, "trader"), AgentState::Stopping);
    sim.exit(trader, ExitStatus::signal(Signal::TERM));
    assert_eq!(sim.spawns(trader).len(), 2);
    assert_eq!(automatic_restarts(&sim, "trader"), 0);
    let restart = &sim.records("trader", AuditAction::Restart)[0];
    assert!(
        restart.reason.contains("on_upstream_restart"),
        "{}",
        restart.reason
    );
}

#[test]
fn a_stale_output_blames_its_producer_not_the_watcher() {
    let mut sim = Sim::new(vec![watching("feed"), AgentSpec::new("feed")]);
    let (feed, trader) = (sim.id("feed"), sim.id("trader"));
    stale_until_stalled(&mut sim, trader);
    let stalled = sim.records("feed", AuditAction::Stalled);
    assert_eq!(stalled.len(), 1);
    assert_eq!(stalled[0].metadata["seen_by"], "trader");
    assert!(
        stalled[0]
            .reason
            .starts_with("output stale: file signals age=90s > 60s"),
        "{}",
        stalled[0].reason
    );
    assert!(sim.records("trader", AuditAction::Stalled).is_empty());
    assert_eq!(state(&sim, "feed"), AgentState::Stopping);
    assert_eq!(sim.signals_sent(Signal::TERM), 1);
    // The producer is healed through its own policy and budget.
    sim.exit(feed, ExitStatus::signal(Signal::TERM));
    assert_eq!(automatic_restarts(&sim, "feed"), 1);
    assert_eq!(automatic_restarts(&sim, "trader"), 0);
    assert_eq!(sim.spawns(trader).len(), 1);
}

#[test]
fn a_human_start_of_a_waiting_agent_waits_and_a_stop_ends_the_wait() {
    let mut sim = pipeline();
    let trader = sim.id("trader");
    let outcome = sim.command(trader, Command::Start, Requester::Cli).unwrap();
    assert_eq!(outcome, CommandOutcome::Waiting);
    let outcome = sim.command(trader, Command::Stop, Requester::Cli).unwrap();
    assert_eq!(outcome, CommandOutcome::Stopped);
    beat(&mut sim, "feed");
    assert!(sim.spawns(trader).is_empty(), "a held agent stays stopped");
    assert_eq!(state(&sim, "trader"), AgentState::Stopped);
}

#[test]
fn a_three_level_graph_starts_level_by_level() {
    let mut specs = Vec::new();
    for i in 0..3 {
        specs.push(depending(
            AgentSpec::new(&format!("trader{i}")),
            "predictor",
            Ready::Running,
        ));
    }
    specs.push(depending(
        beating("predictor", secs(10)),
        "feed",
        Ready::Healthy,
    ));
    specs.push(beating("feed", secs(10)));
    let mut sim = Sim::new(specs);
    assert_eq!(state(&sim, "predictor"), AgentState::Waiting);
    assert_eq!(state(&sim, "trader0"), AgentState::Waiting);
    let (on, why, _) = sim
        .sup
        .agent(sim.id("trader0"))
        .unwrap()
        .waiting_on()
        .unwrap();
    assert_eq!((on, why), ("predictor", "waiting for feed"));
    sim.advance(ms(500));
    beat(&mut sim, "feed");
    for i in 0..3 {
        assert_eq!(state(&sim, &format!("trader{i}")), AgentState::Running);
    }
    let firsts: HashMap<&str, _> = ["feed", "predictor", "trader1"]
        .into_iter()
        .map(|n| (n, sim.spawns(sim.id(n))[0]))
        .collect();
    assert!(firsts["feed"] < firsts["predictor"]);
    assert!(firsts["predictor"] <= firsts["trader1"]);
}

#[test]
fn a_cycle_is_found_and_named() {
    let edges: HashMap<&str, Vec<&str>> = [
        ("trader", vec!["ensemble"]),
        ("ensemble", vec!["trader"]),
        ("feed", vec![]),
    ]
    .into_iter()
    .collect();
    assert_eq!(
        find_cycle(&edges),
        Some(vec!["ensemble", "trader", "ensemble"])
    );
}

#[test]
fn a_reload_that_removes_the_upstream_releases_what_waited_for_it() {
    let mut feed = AgentSpec::new("feed");
    feed.autostart = false;
    let trader = depending(AgentSpec::new("trader"), "feed", Ready::Running);
    let mut sim = Sim::new(vec![trader.clone(), feed]);
    assert_eq!(state(&sim, "trader"), AgentState::Waiting);
    // Its only dependency is dropped: nothing would ever look at it again.
    let mut alone = trader;
    alone.depends_on.clear();
    sim.sup.reconcile(sim.now, vec![alone]);
    sim.drain();
    assert_eq!(state(&sim, "trader"), AgentState::Running);
    assert!(
        sim.sup
            .agent(sim.id("trader"))
            .unwrap()
            .waiting_on()
            .is_none()
    );
}

#[test]
fn a_stale_output_of_a_producer_not_configured_is_the_watchers_own_stall() {
    let mut sim = Sim::new(vec![watching("ghost")]);
    let trader = sim.id("trader");
    stale_until_stalled(&mut sim, trader);
    assert_eq!(sim.records("trader", AuditAction::Stalled).len(), 1);
    assert_eq!(state(&sim, "trader"), AgentState::Stopping);
}

#[test]
fn one_failing_probe_below_its_threshold_does_not_hold_the_dependents() {
    let mut feed = AgentSpec::new("feed");
    let mut http = CheckSpec::new("http", CheckKind::Http);
    http.interval = secs(1);
    http.failure_threshold = 3;
    feed.checks = vec![http];
    let mut sim = Sim::new(vec![
        depending(AgentSpec::new("trader"), "feed", Ready::Healthy),
        feed,
    ]);
    let feed = sim.id("feed");
    sim.advance(secs(1));
    sim.answer(feed, Observation::Healthy("200".into()));
    assert_eq!(state(&sim, "trader"), AgentState::Running);
    sim.advance(secs(1));
    sim.answer(feed, Observation::Unhealthy("500".into()));
    assert_eq!(
        state(&sim, "trader"),
        AgentState::Running,
        "a blip is not a fall"
    );
    assert_eq!(
        sim.records("trader", AuditAction::Waiting).len(),
        1,
        "only at the start"
    );
}
