//! Declared degradation in the core, with explicit instants: an agent that says it pauses on
//! purpose is not stalled before the time it names, never beyond `max_degraded` per episode,
//! and a crash is never suspended.

mod sim;

use std::time::Duration;

use proptest::prelude::*;
use sim::{Sim, ms, secs};
use vigil_core::{
    AgentMemory, AgentSpec, AuditAction, CheckKind, CheckSpec, Declared, ExitStatus, Signal,
};

/// A bot with a notify check: stalled after 5 s without `WATCHDOG=1`.
fn bot(max_degraded: Duration) -> AgentSpec {
    let mut c = CheckSpec::new("notify", CheckKind::Notify);
    c.max_age = Some(secs(5));
    let mut spec = AgentSpec::new("bot");
    spec.checks = vec![c];
    spec.policy.max_degraded = max_degraded;
    spec.policy.cooldown = Duration::ZERO;
    spec.policy.max_restarts = 1000;
    spec
}

fn degraded(reason: &str, until: Option<Duration>) -> Declared {
    Declared::Degraded {
        reason: reason.into(),
        until,
    }
}

fn stalls(sim: &Sim) -> usize {
    sim.count("bot", AuditAction::Stalled)
}

#[test]
fn a_degraded_agent_is_not_stalled_before_its_declared_time() {
    let mut sim = Sim::new(vec![bot(Duration::from_secs(900))]);
    let b = sim.id("bot");
    sim.advance(secs(1));
    let answer = sim.declare(b, degraded("binance 429, breaker open", Some(secs(60))));
    assert!(answer.accepted);
    assert_eq!(answer.suspended_until_ms, Some(sim.now.wall_ms + 60_000));
    let record = &sim.records("bot", AuditAction::Degraded)[0];
    assert_eq!(record.metadata["declared"], "binance 429, breaker open");
    // Silent from the start: the stall comes at 5 s, and is only noted.
    sim.advance(secs(10));
    assert_eq!(stalls(&sim), 0);
    let noted = sim.records("bot", AuditAction::Degraded);
    assert_eq!(noted.len(), 2, "the suspended stall is recorded once");
    assert!(noted[1].metadata.contains_key("suspended_stall"));
    sim.advance(secs(40));
    assert_eq!(
        sim.count("bot", AuditAction::Degraded),
        2,
        "once per episode"
    );
    // At 61 s exactly: its time is up and the stall is acted on at once.
    sim.advance(ms(9_999));
    assert_eq!(stalls(&sim), 0);
    sim.advance(ms(1));
    assert_eq!(sim.count("bot", AuditAction::DegradedEnded), 1);
    assert_eq!(stalls(&sim), 1);
    assert_eq!(sim.signals_sent(Signal::TERM), 1);
}

#[test]
fn max_degraded_bounds_the_episode_however_often_it_is_declared() {
    let mut sim = Sim::new(vec![bot(secs(30))]);
    let b = sim.id("bot");
    sim.declare(b, degraded("maintenance", Some(secs(3600))));
    for _ in 0..5 {
        sim.advance(secs(5));
        let again = sim.declare(b, degraded("maintenance", Some(secs(3600))));
        assert_eq!(
            again.suspended_until_ms,
            Some(sim.now.wall_ms - sim.elapsed().as_millis() as i64 + 30_000),
            "bounded from the episode's start"
        );
    }
    assert_eq!(stalls(&sim), 0);
    sim.advance(secs(5));
    let ended = &sim.records("bot", AuditAction::DegradedEnded)[0];
    assert!(
        ended.reason.contains("max_degraded allows"),
        "{}",
        ended.reason
    );
    assert_eq!(stalls(&sim), 1);
    // Spent: a further declaration is shown, but suspends nothing.
    sim.exit(b, ExitStatus::signal(Signal::TERM));
    sim.advance(secs(1));
    assert!(
        sim.sup.agent(b).unwrap().declared_degraded().is_none(),
        "a new run starts undegraded"
    );
}

#[test]
fn ok_ends_it_and_a_failing_check_is_then_acted_on() {
    let mut sim = Sim::new(vec![bot(secs(900))]);
    let b = sim.id("bot");
    sim.declare(b, degraded("feed 429", None));
    sim.advance(secs(20));
    assert_eq!(stalls(&sim), 0);
    sim.declare(b, Declared::Ok);
    assert_eq!(sim.count("bot", AuditAction::DegradedEnded), 1);
    assert_eq!(stalls(&sim), 1, "still silent: normal rules apply at once");
}

#[test]
fn a_crash_is_never_suspended() {
    let mut sim = Sim::new(vec![bot(secs(900))]);
    let b = sim.id("bot");
    sim.declare(b, degraded("feed 429", Some(secs(600))));
    sim.exit(b, ExitStatus::code(1));
    assert_eq!(sim.spawns(b).len(), 2, "restarted at once");
    let answer = sim.declare(b, Declared::Ok);
    assert!(answer.accepted, "the new run speaks for itself");
    assert_eq!(
        sim.count("bot", AuditAction::DegradedEnded),
        0,
        "the old run's degradation ended with it"
    );
}

#[test]
fn zero_max_degraded_shows_it_but_suspends_nothing() {
    let mut sim = Sim::new(vec![bot(Duration::ZERO)]);
    let b = sim.id("bot");
    let answer = sim.declare(b, degraded("x", Some(secs(60))));
    assert_eq!(answer.suspended_until_ms, None);
    assert!(answer.note.contains("0s"), "{}", answer.note);
    sim.advance(secs(6));
    assert_eq!(stalls(&sim), 1);
}

#[test]
fn degraded_and_ok_over_the_notify_socket() {
    let mut sim = Sim::new(vec![bot(secs(900))]);
    let b = sim.id("bot");
    let until = (sim.now.wall_ms + 30_000) as f64 / 1000.0;
    sim.notify(
        b,
        &format!("DEGRADED=exchange 429\nDEGRADED_UNTIL={until:.3}"),
    );
    let d = sim.sup.agent(b).unwrap().declared_degraded().unwrap();
    assert_eq!(d.0, "exchange 429");
    assert_eq!(d.2, Some(sim.now.wall_ms + 30_000));
    sim.advance(secs(20));
    assert_eq!(stalls(&sim), 0);
    sim.notify(b, "DEGRADED=0");
    assert!(sim.sup.agent(b).unwrap().declared_degraded().is_none());
    assert_eq!(stalls(&sim), 1);
}

#[test]
fn a_restarted_vigil_keeps_what_is_left_of_the_suspension() {
    let mut sim = Sim::new(vec![bot(secs(900))]);
    let b = sim.id("bot");
    sim.declare(b, degraded("exchange maintenance", Some(secs(120))));
    sim.advance(secs(30));
    let memory: AgentMemory = sim.sup.agent(b).unwrap().memory();
    let saved = memory.degraded.clone().expect("saved with the agent");
    assert_eq!(saved.reason, "exchange maintenance");
    let pid = sim.live[&b];

    // The next vigil adopts the run 5 s later and keeps the remaining 85 s.
    let mut next = Sim::adopting(
        vec![(bot(secs(900)), Some(memory))],
        vec![("bot", pid)],
        saved.since_ms + 35_000,
    );
    let nb = next.id("bot");
    let d = next.sup.agent(nb).unwrap().declared_degraded().unwrap();
    assert_eq!(d.2, Some(saved.until_ms));
    next.advance(secs(84));
    assert_eq!(next.count("bot", AuditAction::Stalled), 0);
    next.advance(secs(1));
    assert_eq!(next.count("bot", AuditAction::DegradedEnded), 1);
    assert_eq!(next.count("bot", AuditAction::Stalled), 1);
}

#[test]
fn a_bot_degraded_before_it_is_ready_is_judged_when_the_suspension_ends() {
    let mut spec = bot(secs(30));
    spec.checks[0].ready = true;
    let mut sim = Sim::new(vec![spec]);
    let b = sim.id("bot");
    // Still starting (no READY=1): the exchange is down, it says so.
    sim.notify(b, "DEGRADED=exchange down at startup");
    sim.advance(secs(29));
    assert_eq!(stalls(&sim), 0);
    sim.advance(secs(1));
    let stalled = sim.records("bot", AuditAction::Stalled);
    assert_eq!(
        stalled.len(),
        1,
        "never ready: judged once the 30 s are over"
    );
    assert!(
        stalled[0].reason.starts_with("not ready"),
        "{}",
        stalled[0].reason
    );
}

#[test]
fn what_the_agent_triggers_itself_is_never_suspended() {
    let mut sim = Sim::new(vec![bot(secs(900))]);
    let b = sim.id("bot");
    sim.declare(b, degraded("feed 429", Some(secs(600))));
    sim.notify(b, "WATCHDOG=trigger");
    assert_eq!(stalls(&sim), 1);
}

#[test]
fn a_suspension_ending_inside_a_quiet_window_acts_on_nothing() {
    let mut spec = bot(secs(900));
    // The simulation starts at 2023-11-14T22:13:20Z: quiet from 22:15.
    spec.quiet = vigil_core::Quiet {
        windows: vec![vigil_core::QuietWindow::parse("daily 22:15-23:00 UTC").unwrap()],
    };
    let mut sim = Sim::new(vec![spec]);
    let b = sim.id("bot");
    sim.declare(b, degraded("exchange maintenance", Some(secs(120))));
    sim.advance(secs(10));
    assert_eq!(
        sim.count("bot", AuditAction::Degraded),
        2,
        "the stall held back"
    );
    // 22:15:20: the suspension ends inside the quiet window.
    sim.advance(secs(110));
    assert_eq!(sim.count("bot", AuditAction::DegradedEnded), 1);
    assert_eq!(stalls(&sim), 0, "the market is closed: nothing is judged");
}

#[test]
fn a_consumers_degradation_does_not_hide_its_producers_stall() {
    let mut trader = AgentSpec::new("trader");
    let mut file = CheckSpec::new("signals", CheckKind::File);
    file.max_age = Some(secs(60));
    file.interval = secs(10);
    file.produced_by = Some("feed".into());
    trader.checks = vec![file];
    let mut sim = Sim::new(vec![trader, AgentSpec::new("feed")]);
    let t = sim.id("trader");
    sim.declare(t, degraded("paused by its operator", Some(secs(600))));
    for _ in 0..7 {
        sim.advance(secs(10));
        sim.answer(
            t,
            vigil_core::Observation::Progress {
                at_wall_ms: Some(sim.wall_ago(secs(90))),
            },
        );
    }
    assert_eq!(
        sim.count("feed", AuditAction::Stalled),
        1,
        "the producer is blamed"
    );
    assert_eq!(sim.count("trader", AuditAction::Stalled), 0);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Whatever an agent declares and whenever, a silent agent is stalled no later than the
    /// later of: when it would have been anyway, and its last declaration before the stall plus
    /// `max_degraded`.
    #[test]
    fn no_declaration_buys_more_than_max_degraded(
        script in proptest::collection::vec((0u64..20_000, 0u64..120_000, any::<bool>()), 1..12),
        max in 1u64..60,
    ) {
        let max = secs(max);
        let mut sim = Sim::new(vec![bot(max)]);
        let b = sim.id("bot");
        let natural = secs(5);
        let mut last_declaration = Duration::ZERO;
        for (wait, until, ok) in script {
            sim.advance(ms(wait));
            if stalls(&sim) > 0 {
                break;
            }
            last_declaration = sim.elapsed();
            let declared = if ok { Declared::Ok } else { degraded("r", Some(ms(until))) };
            sim.declare(b, declared);
        }
        sim.advance(secs(600));
        let first = sim
            .audit
            .iter()
            .find(|(_, e)| e.action == AuditAction::Stalled)
            .map(|(at, _)| *at - sim.t0)
            .expect("stalled in the end");
        prop_assert!(
            first <= natural.max(last_declaration + max),
            "stalled at {first:?}; natural {natural:?}, last declaration {last_declaration:?}, max {max:?}"
        );
    }
}
