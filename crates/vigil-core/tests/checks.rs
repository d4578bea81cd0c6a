//! Health checks in the core, with explicit instants: deadlines, thresholds, grace, quiet
//! windows, readiness, and healing through the restart policy.

mod sim;

use std::time::Duration;

use sim::{Sim, ms, secs};
use vigil_core::{
    AgentSpec, AgentState, AuditAction, CheckKind, CheckSpec, ExitStatus, Observation, Quiet,
    QuietWindow, Signal, Verdict,
};

fn agent_with(check: CheckSpec) -> AgentSpec {
    let mut spec = AgentSpec::new("bot");
    spec.checks = vec![check];
    spec
}

fn heartbeat(max_age: Duration) -> CheckSpec {
    let mut c = CheckSpec::new("heartbeat", CheckKind::Heartbeat);
    c.max_age = Some(max_age);
    c
}

fn sql(max_age: Duration, interval: Duration) -> CheckSpec {
    let mut c = CheckSpec::new("decisions", CheckKind::Sql);
    c.max_age = Some(max_age);
    c.interval = interval;
    c
}

fn signalled(sim: &Sim) -> usize {
    sim.signals_sent(Signal::TERM)
}

#[test]
fn a_stale_heartbeat_is_seen_at_max_age_not_at_the_next_poll() {
    let mut spec = agent_with(heartbeat(secs(10)));
    spec.checks[0].interval = secs(300);
    let mut sim = Sim::new(vec![spec]);
    let bot = sim.id("bot");
    // The deadline is the start + max_age: the edge is asked to look then, not before.
    sim.advance(ms(9_999));
    assert!(sim.probes.is_empty());
    sim.advance(ms(1));
    assert_eq!(sim.probes.len(), 1);
    // The file was touched 3s ago: the next look is 10s after that touch.
    sim.answer(
        bot,
        Observation::Progress {
            at_wall_ms: Some(sim.wall_ago(secs(3))),
        },
    );
    sim.advance(ms(6_999));
    assert!(sim.probes.is_empty());
    sim.advance(ms(1));
    assert_eq!(sim.probes.len(), 1);
    // Not touched since: stalled now, exactly max_age after the last touch.
    sim.answer(
        bot,
        Observation::Progress {
            at_wall_ms: Some(sim.wall_ago(secs(10))),
        },
    );
    let stalled = &sim.records("bot", AuditAction::Stalled)[0];
    assert_eq!(stalled.reason, "stalled: heartbeat age=10s > 10s");
    assert_eq!(signalled(&sim), 1);
    assert_eq!(sim.sup.agent(bot).unwrap().state(), AgentState::Stopping);
    // Healing goes through the policy: the first failure restarts at once.
    sim.exit(bot, ExitStatus::signal(Signal::TERM));
    assert_eq!(sim.spawns(bot).len(), 2);
    let restart = &sim.records("bot", AuditAction::Restart)[0];
    assert_eq!(restart.reason, "stalled: heartbeat age=10s > 10s");
}

#[test]
fn notify_watchdogs_keep_an_agent_alive_and_silence_stalls_it_on_time() {
    let mut c = CheckSpec::new("notify", CheckKind::Notify);
    c.max_age = Some(secs(5));
    let mut sim = Sim::new(vec![agent_with(c)]);
    let bot = sim.id("bot");
    for _ in 0..4 {
        sim.advance(secs(4));
        sim.notify(bot, "WATCHDOG=1");
    }
    assert!(sim.records("bot", AuditAction::Stalled).is_empty());
    sim.advance(ms(4_999));
    assert!(sim.records("bot", AuditAction::Stalled).is_empty());
    sim.advance(ms(1));
    assert_eq!(
        sim.records("bot", AuditAction::Stalled)[0].reason,
        "stalled: notify no WATCHDOG=1 for 5s > 5s"
    );
    assert!(
        sim.probes.is_empty(),
        "the core itself saw every sign of life"
    );
}

#[test]
fn watchdog_usec_from_the_agent_replaces_max_age() {
    let mut c = CheckSpec::new("notify", CheckKind::Notify);
    c.max_age = Some(secs(60));
    let mut sim = Sim::new(vec![agent_with(c)]);
    let bot = sim.id("bot");
    sim.notify(bot, "WATCHDOG=1\nWATCHDOG_USEC=2000000");
    sim.advance(ms(2_100));
    assert_eq!(sim.records("bot", AuditAction::Stalled).len(), 1);
}

#[test]
fn a_ready_gated_agent_is_starting_until_ready_and_stalls_if_never_ready() {
    let mut c = CheckSpec::new("notify", CheckKind::Notify);
    c.max_age = Some(secs(5));
    c.ready = true;
    c.grace = secs(20);
    let mut spec = agent_with(c);
    spec.name = "slow".into();
    let mut never = spec.clone();
    never.name = "never".into();
    let mut sim = Sim::new(vec![spec, never]);
    let (slow, never) = (sim.id("slow"), sim.id("never"));
    sim.advance(secs(15));
    assert_eq!(sim.sup.agent(slow).unwrap().state(), AgentState::Starting);
    sim.notify(slow, "READY=1\nSTATUS=connected to exchange");
    let agent = sim.sup.agent(slow).unwrap();
    assert_eq!(agent.state(), AgentState::Running);
    assert_eq!(agent.status_text(), Some("connected to exchange"));
    sim.advance(ms(5_001));
    assert_eq!(
        sim.records("never", AuditAction::Stalled)[0].reason,
        "not ready: no READY=1 within 20s of the start"
    );
    assert!(
        sim.records("slow", AuditAction::Stalled).len() == 1,
        "and slow stalls 5s after READY"
    );
    let _ = never;
}

#[test]
fn polled_checks_need_consecutive_failures_and_unknown_never_restarts() {
    let mut sim = Sim::new(vec![agent_with(sql(secs(600), secs(30)))]);
    let bot = sim.id("bot");
    // The database is down: unknown, over and over, restarts nobody.
    for _ in 0..25 {
        sim.advance(secs(30));
        sim.answer(bot, Observation::Unknown("connection refused".into()));
    }
    assert_eq!(sim.spawns(bot).len(), 1);
    let agent = sim.sup.agent(bot).unwrap();
    let (_, status) = agent.checks().next().unwrap();
    assert_eq!(status.verdict, Verdict::Unknown);
    assert_eq!(status.detail, "connection refused");
    assert_eq!(
        sim.count("bot", AuditAction::Check),
        1,
        "one record for the change"
    );
    // Back up, and stale: the first failure is not enough (threshold 2), the second is.
    sim.advance(secs(30));
    sim.answer(
        bot,
        Observation::Progress {
            at_wall_ms: Some(sim.wall_ago(secs(1523))),
        },
    );
    assert!(sim.records("bot", AuditAction::Stalled).is_empty());
    sim.advance(secs(30));
    sim.answer(
        bot,
        Observation::Progress {
            at_wall_ms: Some(sim.wall_ago(secs(1553))),
        },
    );
    assert_eq!(
        sim.records("bot", AuditAction::Stalled)[0].reason,
        "stalled: sql decisions age=1553s > 600s"
    );
}

#[test]
fn after_a_restart_progress_is_measured_from_the_new_start() {
    let mut sim = Sim::new(vec![agent_with(sql(secs(60), secs(10)))]);
    let bot = sim.id("bot");
    let newest_row = sim.wall_ago(secs(0));
    sim.advance(secs(70));
    // The probe at 10s found the row fresh; skip to the one that finds it 60s+ old.
    while sim.records("bot", AuditAction::Stalled).is_empty() {
        sim.answer(
            bot,
            Observation::Progress {
                at_wall_ms: Some(newest_row),
            },
        );
        sim.advance(secs(10));
    }
    sim.exit(bot, ExitStatus::signal(Signal::TERM));
    assert_eq!(sim.spawns(bot).len(), 2);
    // The newest row is still the old one, but the new run gets 60s to write one.
    for _ in 0..5 {
        sim.advance(secs(10));
        sim.answer(
            bot,
            Observation::Progress {
                at_wall_ms: Some(newest_row),
            },
        );
    }
    assert_eq!(sim.count("bot", AuditAction::Stalled), 1);
    let (_, status) = sim.sup.agent(bot).unwrap().checks().next().unwrap();
    assert_eq!(status.verdict, Verdict::Ok);
}

#[test]
fn a_slow_starter_inside_grace_is_not_killed() {
    let mut c = heartbeat(secs(2));
    c.grace = secs(10);
    let mut sim = Sim::new(vec![agent_with(c)]);
    let bot = sim.id("bot");
    sim.advance(secs(10));
    // First look at the end of grace: no heartbeat yet, but that's the start + grace.
    sim.answer(bot, Observation::Progress { at_wall_ms: None });
    assert_eq!(
        sim.count("bot", AuditAction::Stalled),
        1,
        "grace is over: nothing in 10s"
    );

    let mut c = heartbeat(secs(2));
    c.grace = secs(10);
    c.interval = secs(1);
    c.failure_threshold = 1;
    let mut sim = Sim::new(vec![agent_with(c)]);
    let bot = sim.id("bot");
    sim.advance(secs(9));
    assert!(sim.probes.is_empty(), "no verdict inside grace");
    sim.advance(secs(1));
    sim.answer(
        bot,
        Observation::Progress {
            at_wall_ms: Some(sim.wall_ago(ms(500))),
        },
    );
    assert_eq!(sim.count("bot", AuditAction::Stalled), 0);
}

#[test]
fn failing_probes_inside_grace_do_not_count() {
    let mut c = CheckSpec::new("http", CheckKind::Http);
    c.interval = secs(1);
    c.failure_threshold = 1;
    c.grace = secs(5);
    let mut sim = Sim::new(vec![agent_with(c)]);
    let bot = sim.id("bot");
    for _ in 0..4 {
        sim.advance(secs(1));
        sim.answer(bot, Observation::Unhealthy("connection refused".into()));
    }
    let (_, status) = sim.sup.agent(bot).unwrap().checks().next().unwrap();
    assert_eq!(status.detail, "connection refused (within grace)");
    assert_eq!(status.consecutive_failures, 0);
    sim.advance(secs(2));
    sim.answer(bot, Observation::Unhealthy("connection refused".into()));
    assert_eq!(sim.count("bot", AuditAction::Stalled), 1);
}

#[test]
fn quiet_windows_suspend_stall_verdicts_and_progress_counts_from_their_end() {
    let mut spec = agent_with(sql(secs(60), secs(10)));
    // The simulation starts at 2023-11-14T22:13:20Z (a Tuesday): quiet until 22:30.
    spec.quiet = Quiet {
        windows: vec![QuietWindow::parse("daily 22:00-22:29 UTC").unwrap()],
    };
    let mut sim = Sim::new(vec![spec]);
    let bot = sim.id("bot");
    let old = sim.wall_ago(secs(7200));
    // 15 minutes of stale results in the quiet window: nothing happens.
    for _ in 0..90 {
        sim.advance(secs(10));
        if !sim.probes.is_empty() {
            sim.answer(
                bot,
                Observation::Progress {
                    at_wall_ms: Some(old),
                },
            );
        }
    }
    assert_eq!(sim.count("bot", AuditAction::Stalled), 0);
    let (_, status) = sim.sup.agent(bot).unwrap().checks().next().unwrap();
    assert!(
        status.detail.ends_with("(quiet window)"),
        "{}",
        status.detail
    );
    // After 22:30 the agent gets max_age from the end of the window, then stalls.
    let mut stalled_at = None;
    for _ in 0..40 {
        sim.advance(secs(10));
        if !sim.probes.is_empty() {
            sim.answer(
                bot,
                Observation::Progress {
                    at_wall_ms: Some(old),
                },
            );
        }
        if stalled_at.is_none() && sim.count("bot", AuditAction::Stalled) == 1 {
            stalled_at = Some(sim.now.wall_ms);
        }
    }
    let end_of_quiet = 1_700_000_000_000 - (13 * 60 + 20) * 1000 + 30 * 60 * 1000;
    let stalled_at = stalled_at.expect("stalls after the window");
    assert!(
        stalled_at > end_of_quiet + 60_000,
        "not before max_age after the window"
    );
}

#[test]
fn probes_never_overlap_and_stale_results_are_dropped() {
    let mut sim = Sim::new(vec![agent_with(sql(secs(600), secs(5)))]);
    let bot = sim.id("bot");
    sim.advance(secs(60));
    assert_eq!(sim.probes.len(), 1, "a hanging probe is not started again");
    let (_, check, run) = sim.probes[0];
    // The agent crashes and restarts; the old run's result is meaningless now.
    sim.exit(bot, ExitStatus::code(1));
    sim.sup.handle(
        sim.now,
        vigil_core::Event::CheckResult {
            agent: bot,
            check,
            generation: run,
            observation: Observation::Unhealthy("late".into()),
        },
    );
    sim.drain();
    let (_, status) = sim.sup.agent(bot).unwrap().checks().next().unwrap();
    assert_eq!(status.verdict, Verdict::Pending);
}

#[test]
fn recovery_is_recorded_when_every_check_passes_after_a_stall() {
    let mut spec = agent_with(heartbeat(secs(5)));
    let mut http = CheckSpec::new("http", CheckKind::Http);
    http.interval = secs(2);
    spec.checks.push(http);
    let mut sim = Sim::new(vec![spec]);
    let bot = sim.id("bot");
    sim.advance(secs(2));
    sim.answer(bot, Observation::Healthy("200 OK".into()));
    sim.advance(secs(3));
    let hb = sim.probes.iter().position(|(_, c, _)| *c == 0).unwrap();
    let probe = sim.probes.remove(hb);
    sim.sup.handle(
        sim.now,
        vigil_core::Event::CheckResult {
            agent: bot,
            check: probe.1,
            generation: probe.2,
            observation: Observation::Progress { at_wall_ms: None },
        },
    );
    sim.drain();
    assert_eq!(sim.count("bot", AuditAction::Stalled), 1);
    sim.exit(bot, ExitStatus::signal(Signal::TERM));
    sim.probes.clear();
    sim.advance(secs(2));
    sim.answer(bot, Observation::Healthy("200 OK".into()));
    assert_eq!(
        sim.count("bot", AuditAction::Recovered),
        0,
        "not every check has passed yet"
    );
    sim.advance(secs(3));
    let hb = sim.probes.iter().position(|(_, c, _)| *c == 0).unwrap();
    let probe = sim.probes.remove(hb);
    sim.sup.handle(
        sim.now,
        vigil_core::Event::CheckResult {
            agent: bot,
            check: probe.1,
            generation: probe.2,
            observation: Observation::Progress {
                at_wall_ms: Some(sim.now.wall_ms),
            },
        },
    );
    sim.drain();
    let recovered = &sim.records("bot", AuditAction::Recovered)[0];
    assert!(recovered.reason.contains("stalled: heartbeat"));
}

#[test]
fn an_agent_that_says_stopping_is_not_killed_for_going_quiet() {
    let mut c = CheckSpec::new("notify", CheckKind::Notify);
    c.max_age = Some(secs(2));
    let mut sim = Sim::new(vec![agent_with(c)]);
    let bot = sim.id("bot");
    sim.notify(bot, "STOPPING=1");
    sim.advance(secs(30));
    assert_eq!(sim.count("bot", AuditAction::Stalled), 0);
    sim.notify(bot, "WATCHDOG=trigger");
    assert_eq!(sim.count("bot", AuditAction::Stalled), 0);
}

#[test]
fn the_agent_can_trigger_its_own_watchdog() {
    let mut c = CheckSpec::new("notify", CheckKind::Notify);
    c.max_age = Some(secs(60));
    let mut sim = Sim::new(vec![agent_with(c)]);
    let bot = sim.id("bot");
    sim.notify(bot, "WATCHDOG=trigger");
    assert_eq!(
        sim.records("bot", AuditAction::Stalled)[0].reason,
        "stalled: notify WATCHDOG=trigger sent by the agent"
    );
}

#[test]
fn api_heartbeats_feed_api_checks() {
    let mut c = CheckSpec::new("api", CheckKind::Api);
    c.max_age = Some(secs(3));
    let mut sim = Sim::new(vec![agent_with(c), AgentSpec::new("plain")]);
    let (bot, plain) = (sim.id("bot"), sim.id("plain"));
    for _ in 0..5 {
        sim.advance(secs(2));
        assert_eq!(sim.sup.api_heartbeat(sim.now, bot), Some(true));
        sim.drain();
    }
    assert_eq!(sim.sup.api_heartbeat(sim.now, plain), Some(false));
    assert_eq!(sim.count("bot", AuditAction::Stalled), 0);
    sim.advance(secs(3));
    assert_eq!(sim.count("bot", AuditAction::Stalled), 1);
}

#[test]
fn a_stall_with_an_exhausted_budget_ends_in_quarantine() {
    let mut spec = agent_with(heartbeat(secs(1)));
    spec.policy.max_restarts = 1;
    spec.policy.cooldown = ms(0);
    let mut sim = Sim::new(vec![spec]);
    let bot = sim.id("bot");
    for _ in 0..2 {
        sim.advance(secs(1));
        sim.answer(bot, Observation::Progress { at_wall_ms: None });
        sim.exit(bot, ExitStatus::signal(Signal::TERM));
        sim.advance(secs(5));
    }
    assert_eq!(sim.sup.agent(bot).unwrap().state(), AgentState::Quarantined);
    assert_eq!(sim.count("bot", AuditAction::Escalated), 1);
}

/// vigil SIGSTOPped for 30 s: when it runs again its timers are long overdue, but the agents'
/// heartbeats of that time wait unread in the socket. Told that its loop stalled, the core
/// measures silence from the moment it runs again: the queued heartbeat arrives, nobody is
/// stalled. Without being told, the same timeline stalls the agent.
#[test]
fn a_stall_of_vigil_itself_is_not_blamed_on_its_agents() {
    for told in [true, false] {
        let mut c = CheckSpec::new("notify", CheckKind::Notify);
        c.max_age = Some(secs(5));
        let mut sim = Sim::new(vec![agent_with(c)]);
        let bot = sim.id("bot");
        sim.advance(secs(4));
        sim.notify(bot, "WATCHDOG=1");
        // Stopped at 4 s, for 30 s: the deadline (9 s) passes while nothing runs.
        sim.now = sim.now.after(secs(30));
        if told {
            sim.sup.loop_stalled(sim.now, secs(25));
            sim.drain();
        }
        sim.advance(ms(0));
        sim.advance(ms(3));
        sim.notify(bot, "WATCHDOG=1");
        sim.advance(secs(4));
        if told {
            assert!(sim.records("bot", AuditAction::Stalled).is_empty());
            let said = sim
                .audit
                .iter()
                .find(|(_, e)| e.action == AuditAction::VigilStalled);
            assert!(said.unwrap().1.reason.contains("did not run for 25s"));
        } else {
            assert_eq!(sim.records("bot", AuditAction::Stalled).len(), 1);
        }
    }
}

/// The condition an operator's alert watches: one stall from the first verdict until the
/// agent has proven healthy, however many restarts try to heal it in between.
#[test]
fn a_stall_stays_one_episode_across_restarts_until_the_agent_proves_healthy() {
    let mut c = CheckSpec::new("notify", CheckKind::Notify);
    c.max_age = Some(secs(5));
    let mut spec = agent_with(c);
    spec.policy.max_restarts = 100;
    let mut sim = Sim::new(vec![spec]);
    let bot = sim.id("bot");
    let since = |sim: &Sim| sim.sup.agent(bot).unwrap().stalled_since_ms();
    assert_eq!(since(&sim), None);
    // Never a first sign of life: stalled at max_age.
    sim.advance(secs(5));
    let first = since(&sim).expect("stalled");
    assert_eq!(first, sim.now.wall_ms);
    for round in 0..3 {
        sim.exit(bot, ExitStatus::signal(Signal::TERM));
        // Restarted (after any backoff); one sign of life, then silent again.
        while sim.sup.agent(bot).unwrap().state() != AgentState::Running {
            sim.advance(ms(100));
        }
        sim.advance(secs(1));
        sim.notify(bot, "WATCHDOG=1");
        assert_eq!(
            since(&sim),
            Some(first),
            "round {round}: still the same stall"
        );
        sim.advance(secs(5));
        assert_eq!(sim.count("bot", AuditAction::Stalled), round + 2);
        assert_eq!(
            since(&sim),
            Some(first),
            "round {round}: a new stall is the same one"
        );
    }
    sim.exit(bot, ExitStatus::signal(Signal::TERM));
    while sim.sup.agent(bot).unwrap().state() != AgentState::Running {
        sim.advance(ms(100));
    }
    // Healthy for less than the period that would stall it: not proven yet.
    for _ in 0..2 {
        sim.advance(secs(2));
        sim.notify(bot, "WATCHDOG=1");
    }
    assert_eq!(since(&sim), Some(first));
    // Judged at the check's next look after that (max_age after the last sign at most).
    for _ in 0..4 {
        sim.advance(secs(2));
        sim.notify(bot, "WATCHDOG=1");
    }
    assert_eq!(
        since(&sim),
        None,
        "healthy for longer than max_age: the stall is over"
    );
    assert_eq!(sim.sup.agent(bot).unwrap().memory().stalled_since_ms, None);
}

#[test]
fn a_person_stopping_a_stalled_agent_ends_the_stall_and_vigil_remembers_an_open_one() {
    let mut c = CheckSpec::new("notify", CheckKind::Notify);
    c.max_age = Some(secs(5));
    let mut sim = Sim::new(vec![agent_with(c.clone())]);
    let bot = sim.id("bot");
    sim.advance(secs(5));
    let first = sim.sup.agent(bot).unwrap().stalled_since_ms().unwrap();
    // What a restarted vigil is given back keeps the stall open.
    let memory = sim.sup.agent(bot).unwrap().memory();
    assert_eq!(memory.stalled_since_ms, Some(first));
    let mut again = vigil_core::Supervisor::new(1);
    let id = again.add(agent_with(c), Some(memory));
    assert_eq!(again.agent(id).unwrap().stalled_since_ms(), Some(first));
    // A stop by a person takes it out of service: nothing is stalled any more.
    let stopped = sim.command(bot, vigil_core::Command::Stop, vigil_core::Requester::Api);
    assert!(stopped.is_ok());
    assert_eq!(sim.sup.agent(bot).unwrap().stalled_since_ms(), None);
}

/// A stall open when a quiet window begins is over: the market closed. Still stuck after the
/// window, the agent starts a new stall then, not one that has lasted all weekend.
#[test]
fn a_quiet_window_ends_an_open_stall() {
    let mut spec = agent_with(sql(secs(60), secs(10)));
    spec.policy.max_restarts = 1000;
    // The simulation starts at 2023-11-14T22:13:20Z.
    spec.quiet = Quiet {
        windows: vec![QuietWindow::parse("daily 22:20-22:29 UTC").unwrap()],
    };
    let mut sim = Sim::new(vec![spec]);
    let bot = sim.id("bot");
    let old = sim.wall_ago(secs(7200));
    let since = |sim: &Sim| sim.sup.agent(bot).unwrap().stalled_since_ms();
    let step = |sim: &mut Sim| {
        sim.advance(secs(10));
        if !sim.probes.is_empty() {
            sim.answer(
                bot,
                Observation::Progress {
                    at_wall_ms: Some(old),
                },
            );
        }
        if sim.sup.agent(bot).unwrap().state() == AgentState::Stopping {
            sim.exit(bot, ExitStatus::signal(Signal::TERM));
        }
    };
    // 22:13:20 → 22:18:20: stalled, restarted, stalled again — one stall.
    for _ in 0..30 {
        step(&mut sim);
    }
    let first = since(&sim).expect("stalled before the window");
    let window_start = 1_700_000_000_000 + (6 * 60 + 40) * 1000;
    assert!(first < window_start);
    // Into the window: the stall is over.
    for _ in 0..18 {
        step(&mut sim);
    }
    assert_eq!(since(&sim), None);
    // After the window (22:29) and max_age: a new stall, begun after the window.
    for _ in 0..70 {
        step(&mut sim);
    }
    let again = since(&sim).expect("stalled again after the window");
    assert!(again > window_start + 9 * 60 * 1000, "{again}");
}
