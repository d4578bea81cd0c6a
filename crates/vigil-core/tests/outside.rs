//! Copies of an agent that vigil did not start: found by a look before a start, they are
//! either taken over (`adopt`) or keep the agent from starting (a conflict), never doubled.

mod sim;

use sim::{SELF_PID, Sim, secs};
use vigil_core::{
    Action, AgentSpec, AgentState, AuditAction, Command, CommandOutcome, ExitStatus, Outside,
    Requester, Signal,
};

fn manual(name: &str) -> AgentSpec {
    let mut spec = AgentSpec::new(name);
    spec.autostart = false;
    spec
}

fn copy(pid: u32) -> Outside {
    Outside::Copy {
        pid,
        what: format!("pid {pid} runs `python3 bot.py` in /srv/bot"),
    }
}

fn adoptable(pid: u32, age_s: u64) -> Outside {
    Outside::Adoptable {
        pid,
        started: 777,
        age: secs(age_s),
        how: "pidfile /run/bot.pid".into(),
    }
}

#[test]
fn a_copy_running_outside_vigil_keeps_the_agent_from_starting_until_a_human_decides() {
    let mut sim = Sim::new(vec![manual("bot")]);
    let bot = sim.id("bot");
    sim.outside.insert(bot, copy(5000));
    let outcome = sim.command(bot, Command::Start, Requester::Cli).unwrap();
    assert_eq!(outcome, CommandOutcome::Started);
    let agent = sim.sup.agent(bot).unwrap();
    assert_eq!(agent.state(), AgentState::Conflict);
    assert_eq!(agent.conflict().map(|(pid, _)| pid), Some(5000));
    assert!(sim.spawns(bot).is_empty(), "nothing was created");
    assert!(sim.live.is_empty());
    let conflict = &sim.records("bot", AuditAction::Conflict)[0];
    assert!(!conflict.success);
    assert_eq!(conflict.metadata["pid"], 5000);
    assert!(conflict.reason.contains("--force"), "{}", conflict.reason);

    // Time passes: nothing retries on its own (no restart loop against the copy).
    sim.advance(secs(3600));
    assert!(sim.spawns(bot).is_empty());
    assert_eq!(sim.looks[&bot], 1);

    // The copy is still there: a plain start looks again and stays in conflict.
    sim.command(bot, Command::Start, Requester::Cli).unwrap();
    assert_eq!(sim.sup.agent(bot).unwrap().state(), AgentState::Conflict);
    assert_eq!(sim.looks[&bot], 2);

    // The human stopped the copy: the next start starts it.
    sim.outside.remove(&bot);
    sim.command(bot, Command::Start, Requester::Cli).unwrap();
    assert_eq!(sim.sup.agent(bot).unwrap().state(), AgentState::Running);
    assert_eq!(sim.spawns(bot).len(), 1);
}

#[test]
fn start_force_starts_without_looking_and_says_so() {
    let mut sim = Sim::new(vec![manual("bot")]);
    let bot = sim.id("bot");
    sim.outside.insert(bot, copy(5000));
    sim.command(bot, Command::Start, Requester::Cli).unwrap();
    sim.command(bot, Command::ForceStart, Requester::Cli)
        .unwrap();
    assert_eq!(sim.sup.agent(bot).unwrap().state(), AgentState::Running);
    assert_eq!(sim.looks[&bot], 1, "no second look");
    let forced = sim.records("bot", AuditAction::Start).pop().unwrap();
    assert_eq!(forced.metadata["forced_past_pid"], 5000);
    assert!(forced.reason.contains("--force"), "{}", forced.reason);
}

#[test]
fn stopping_an_agent_in_conflict_keeps_it_stopped_and_held() {
    let mut sim = Sim::new(vec![manual("bot")]);
    let bot = sim.id("bot");
    sim.outside.insert(bot, copy(5000));
    sim.command(bot, Command::Start, Requester::Cli).unwrap();
    let outcome = sim.command(bot, Command::Stop, Requester::Cli).unwrap();
    assert_eq!(outcome, CommandOutcome::Stopped);
    let agent = sim.sup.agent(bot).unwrap();
    assert_eq!(agent.state(), AgentState::Stopped);
    assert!(agent.is_held());
    assert_eq!(sim.signals_sent(Signal::TERM), 0, "pid 5000 is not vigil's");
}

#[test]
fn an_adoptable_process_becomes_the_run_with_its_real_age() {
    let mut sim = Sim::new(vec![manual("bot")]);
    let bot = sim.id("bot");
    sim.outside.insert(bot, adoptable(6000, 90));
    sim.command(bot, Command::Start, Requester::Cli).unwrap();
    let agent = sim.sup.agent(bot).unwrap();
    assert_eq!(agent.state(), AgentState::Running);
    assert_eq!(agent.pid(), Some(6000));
    assert_eq!(agent.uptime(sim.now.mono), Some(secs(90)));
    assert!(sim.spawns(bot).is_empty(), "taken over, not started");
    let adopted = &sim.records("bot", AuditAction::Adopted)[0];
    assert_eq!(adopted.metadata["found_by"], "pidfile /run/bot.pid");
    assert!(sim.actions.iter().any(|(_, a)| matches!(
        a,
        Action::Adopt {
            pid: 6000,
            started: 777,
            ..
        }
    )));

    // It ends: vigil restarts it at once — but looks first, since whatever started it (a
    // shell loop, another supervisor) may have started it again. Nothing there: vigil's own.
    sim.outside.remove(&bot);
    sim.exit(bot, ExitStatus::unknown());
    assert_eq!(sim.looks[&bot], 2);
    assert_eq!(sim.spawns(bot).len(), 1);
    assert_ne!(sim.sup.agent(bot).unwrap().pid(), Some(6000));

    // A human stop goes to the adopted process like to any run.
    sim.command(bot, Command::Stop, Requester::Cli).unwrap();
    assert_eq!(sim.signals_sent(Signal::TERM), 1);
}

#[test]
fn vigil_never_adopts_itself_or_init() {
    for pid in [SELF_PID, 1, 0] {
        let mut sim = Sim::new(vec![manual("bot")]);
        let bot = sim.id("bot");
        sim.outside.insert(bot, adoptable(pid, 5));
        sim.command(bot, Command::Start, Requester::Cli).unwrap();
        let agent = sim.sup.agent(bot).unwrap();
        assert_eq!(agent.state(), AgentState::Conflict, "pid {pid}");
        assert!(
            !sim.actions
                .iter()
                .any(|(_, a)| matches!(a, Action::Adopt { .. })),
            "pid {pid}"
        );
    }
}

#[test]
fn a_restart_after_a_wait_looks_first_and_an_immediate_one_does_not() {
    let mut sim = Sim::new(vec![AgentSpec::new("bot")]);
    let bot = sim.id("bot");
    assert_eq!(sim.looks[&bot], 1, "autostart looks");
    sim.advance(secs(30));
    sim.exit(bot, ExitStatus::code(1));
    assert_eq!(sim.looks[&bot], 1, "an immediate restart does not");
    assert_eq!(sim.spawns(bot).len(), 2);
    // The second crash waits for the cooldown; meanwhile someone starts a copy by hand.
    sim.exit(bot, ExitStatus::code(1));
    assert_eq!(sim.sup.agent(bot).unwrap().state(), AgentState::Backoff);
    sim.outside.insert(bot, copy(7000));
    sim.advance(secs(60));
    assert_eq!(sim.looks[&bot], 2);
    assert_eq!(sim.sup.agent(bot).unwrap().state(), AgentState::Conflict);
    assert_eq!(sim.spawns(bot).len(), 2, "no second copy");
}

#[test]
fn a_stop_while_looking_is_done_at_once_and_the_late_answer_changes_nothing() {
    // What the look finds arrives after the stop.
    for outside in [Outside::Nothing, copy(5000), adoptable(6000, 3)] {
        let mut sim = Sim::new(vec![manual("bot")]);
        let bot = sim.id("bot");
        sim.outside.insert(bot, outside.clone());
        sim.hold_looks = true;
        sim.command(bot, Command::Start, Requester::Cli).unwrap();
        let outcome = sim.command(bot, Command::Stop, Requester::Cli).unwrap();
        assert_eq!(outcome, CommandOutcome::Stopping, "{outside:?}");
        // Nothing existed: stopped without waiting for the look.
        assert_eq!(sim.sup.agent(bot).unwrap().state(), AgentState::Stopped);
        assert!(sim.sup.is_idle());
        sim.answer_looks();
        assert!(sim.spawns(bot).is_empty(), "{outside:?}");
        assert_eq!(sim.sup.agent(bot).unwrap().state(), AgentState::Stopped);
        assert_eq!(sim.signals_sent(Signal::TERM), 0, "{outside:?}");
        assert!(
            !sim.actions
                .iter()
                .any(|(_, a)| matches!(a, Action::Adopt { .. })),
            "not taken over after the stop: {outside:?}"
        );
        assert_eq!(sim.count("bot", AuditAction::Conflict), 0);
        let stop = sim.records("bot", AuditAction::Stop).pop().unwrap();
        assert!(!stop.metadata.contains_key("signal"), "no signal was sent");
    }
}

#[test]
fn a_reload_that_changes_the_command_of_an_agent_in_conflict_looks_again() {
    let mut sim = Sim::new(vec![manual("bot")]);
    let bot = sim.id("bot");
    sim.outside.insert(bot, copy(5000));
    sim.command(bot, Command::Start, Requester::Cli).unwrap();
    sim.outside.remove(&bot);
    let mut changed = manual("bot");
    changed.fingerprint = 99;
    sim.sup.reconcile(sim.now, vec![changed]);
    sim.drain();
    assert_eq!(sim.looks[&bot], 2);
    assert_eq!(sim.sup.agent(bot).unwrap().state(), AgentState::Running);
}

#[test]
fn an_adopted_process_restarted_by_its_own_starter_is_taken_over_again_not_doubled() {
    let mut sim = Sim::new(vec![manual("bot")]);
    let bot = sim.id("bot");
    sim.outside.insert(bot, adoptable(6000, 90));
    sim.command(bot, Command::Start, Requester::Cli).unwrap();
    // A `while true; do ./bot; done` outside vigil starts it again as it ends.
    sim.outside.insert(bot, adoptable(6001, 0));
    sim.exit(bot, ExitStatus::unknown());
    assert_eq!(sim.sup.agent(bot).unwrap().pid(), Some(6001));
    assert!(sim.spawns(bot).is_empty());
}

#[test]
fn a_restart_asked_for_while_looking_looks_again_and_finds_the_copy() {
    let mut sim = Sim::new(vec![manual("bot")]);
    let bot = sim.id("bot");
    sim.outside.insert(bot, copy(5000));
    sim.hold_looks = true;
    sim.command(bot, Command::Start, Requester::Cli).unwrap();
    let outcome = sim.command(bot, Command::Restart, Requester::Cli).unwrap();
    assert_eq!(outcome, CommandOutcome::Restarting);
    sim.hold_looks = false;
    sim.answer_looks();
    assert_eq!(sim.looks[&bot], 2, "the restart looked again");
    assert_eq!(sim.sup.agent(bot).unwrap().state(), AgentState::Conflict);
    assert!(sim.spawns(bot).is_empty(), "no process next to the copy");
}

#[test]
fn start_force_of_a_stopped_agent_does_not_look() {
    let mut sim = Sim::new(vec![manual("bot")]);
    let bot = sim.id("bot");
    sim.outside.insert(bot, copy(5000));
    sim.command(bot, Command::ForceStart, Requester::Cli)
        .unwrap();
    assert_eq!(sim.sup.agent(bot).unwrap().state(), AgentState::Running);
    assert!(!sim.looks.contains_key(&bot));
    let start = sim.records("bot", AuditAction::Start).pop().unwrap();
    assert!(start.reason.contains("without looking"), "{}", start.reason);
}

#[test]
fn vigil_shuts_down_while_a_look_never_answers() {
    let mut sim = Sim::new(vec![manual("bot")]);
    let bot = sim.id("bot");
    sim.hold_looks = true;
    sim.command(bot, Command::Start, Requester::Cli).unwrap();
    // The look is stuck (a /proc read on a hung process).
    sim.sup.shutdown(sim.now);
    sim.drain();
    assert!(
        sim.sup.is_idle(),
        "a stuck look must not hold vigil's shutdown"
    );
}

/// A unit or container agent: its target lives on without vigil.
fn external(name: &str) -> AgentSpec {
    let mut spec = AgentSpec::new(name);
    spec.driver = "systemd";
    spec.external = true;
    spec
}

fn held() -> Option<vigil_core::AgentMemory> {
    Some(vigil_core::AgentMemory {
        held: true,
        ..Default::default()
    })
}

fn quarantined() -> Option<vigil_core::AgentMemory> {
    Some(vigil_core::AgentMemory {
        quarantined: Some("invalid API key".into()),
        ..Default::default()
    })
}

#[test]
fn a_held_unit_an_earlier_vigil_left_running_is_taken_over_and_stopped_not_started() {
    // vigil was killed while it stopped the unit a person asked it to stop: the unit still
    // runs, and the saved state says "held".
    let mut sim = Sim::restarted(
        vec![(external("trader"), held())],
        vec![("trader", adoptable(6000, 30))],
    );
    let trader = sim.id("trader");
    assert_eq!(sim.looks[&trader], 1, "looked for, as vigil started");
    assert!(sim.spawns(trader).is_empty(), "never started");
    assert_eq!(sim.count("trader", AuditAction::Adopted), 1);
    let stop = sim.records("trader", AuditAction::Stop).pop().unwrap();
    assert!(
        stop.reason.contains("stopped by a person"),
        "{}",
        stop.reason
    );
    assert_eq!(sim.signals_sent(Signal::TERM), 1, "the stop reached it");
    assert_eq!(sim.sup.agent(trader).unwrap().state(), AgentState::Stopping);
    sim.exit(trader, ExitStatus::signal(Signal::TERM));
    let agent = sim.sup.agent(trader).unwrap();
    assert_eq!(agent.state(), AgentState::Stopped);
    assert!(agent.is_held(), "still held: the person's stop stands");
    sim.advance(secs(3600));
    assert!(sim.spawns(trader).is_empty());
}

#[test]
fn a_held_unit_found_stopped_stays_so_without_a_word() {
    let sim = Sim::restarted(vec![(external("trader"), held())], Vec::new());
    let trader = sim.id("trader");
    assert_eq!(sim.looks[&trader], 1);
    let agent = sim.sup.agent(trader).unwrap();
    assert_eq!(agent.state(), AgentState::Stopped);
    assert!(agent.is_held());
    assert_eq!(sim.count("trader", AuditAction::Stop), 0);
    assert_eq!(sim.signals_sent(Signal::TERM), 0);
}

#[test]
fn a_quarantined_container_left_running_is_stopped_and_stays_quarantined() {
    let mut sim = Sim::restarted(
        vec![(external("feed"), quarantined())],
        vec![("feed", adoptable(7000, 5))],
    );
    let feed = sim.id("feed");
    // A restart asked meanwhile is refused as for any quarantined agent.
    let refused = sim.command(feed, Command::Restart, Requester::Cli);
    assert!(refused.is_err(), "{refused:?}");
    let stop = sim.records("feed", AuditAction::Stop).pop().unwrap();
    assert!(
        stop.reason.contains("quarantined (invalid API key)"),
        "{}",
        stop.reason
    );
    sim.exit(feed, ExitStatus::signal(Signal::TERM));
    assert_eq!(
        sim.sup.agent(feed).unwrap().state(),
        AgentState::Quarantined
    );
    assert!(sim.spawns(feed).is_empty());
}

#[test]
fn a_person_starting_a_held_unit_while_vigil_looks_gets_it_taken_over_not_stopped() {
    let mut sim = Sim::restarted_holding_looks(
        vec![(external("trader"), held())],
        vec![("trader", adoptable(6000, 30))],
    );
    let trader = sim.id("trader");
    let outcome = sim.command(trader, Command::Start, Requester::Cli).unwrap();
    assert_eq!(outcome, CommandOutcome::Started);
    sim.answer_looks();
    let agent = sim.sup.agent(trader).unwrap();
    assert_eq!(agent.state(), AgentState::Running);
    assert_eq!(agent.pid(), Some(6000));
    assert!(!agent.is_held());
    assert_eq!(sim.signals_sent(Signal::TERM), 0);
    assert!(
        sim.spawns(trader).is_empty(),
        "taken over, not a second copy"
    );
}

#[test]
fn process_agents_are_not_looked_for_while_held() {
    // A process agent's leftovers are found by the state and run marks instead.
    let sim = Sim::restarted(vec![(manual("bot"), held())], Vec::new());
    assert!(sim.looks.is_empty());
}

#[test]
fn a_reset_while_a_quarantined_copy_is_stopped_starts_it_after_the_stop() {
    let mut sim = Sim::restarted(
        vec![(external("feed"), quarantined())],
        vec![("feed", adoptable(7000, 5))],
    );
    let feed = sim.id("feed");
    sim.command(feed, Command::Reset, Requester::Cli).unwrap();
    sim.outside.clear();
    sim.exit(feed, ExitStatus::signal(Signal::TERM));
    let agent = sim.sup.agent(feed).unwrap();
    assert_eq!(agent.state(), AgentState::Running);
    assert_eq!(sim.spawns(feed).len(), 1);
}

#[test]
fn a_quarantine_is_kept_and_saved_while_a_copy_is_looked_for_and_stopped() {
    let mut sim = Sim::restarted_holding_looks(
        vec![(external("feed"), quarantined())],
        vec![("feed", adoptable(7000, 5))],
    );
    let feed = sim.id("feed");
    let saved = |sim: &Sim| sim.sup.agent(feed).unwrap().memory().quarantined;
    assert_eq!(
        saved(&sim).as_deref(),
        Some("invalid API key"),
        "while looking"
    );
    sim.answer_looks();
    assert_eq!(
        saved(&sim).as_deref(),
        Some("invalid API key"),
        "while stopping"
    );
    // A person's stop meanwhile does not lift the quarantine.
    sim.command(feed, Command::Stop, Requester::Cli).unwrap();
    sim.exit(feed, ExitStatus::signal(Signal::TERM));
    assert_eq!(
        sim.sup.agent(feed).unwrap().state(),
        AgentState::Quarantined
    );
}

#[test]
fn vigil_s_shutdown_does_not_wait_for_the_look_for_a_held_copy() {
    let mut sim = Sim::restarted_holding_looks(
        vec![
            (external("feed"), quarantined()),
            (external("trader"), held()),
        ],
        Vec::new(),
    );
    sim.sup.shutdown(sim.now);
    sim.drain();
    assert!(sim.sup.is_idle(), "nothing waits for the looks' answers");
    let feed = sim.id("feed");
    assert_eq!(
        sim.sup.agent(feed).unwrap().state(),
        AgentState::Quarantined
    );
    assert!(sim.sup.agent(sim.id("trader")).unwrap().is_held());
}

#[test]
fn a_look_that_cannot_be_made_is_said_and_the_agent_stays_held() {
    let sim = Sim::restarted(
        vec![(external("trader"), held())],
        vec![(
            "trader",
            Outside::Unknown {
                why: "systemd did not answer on the system bus within 10 s".into(),
            },
        )],
    );
    let trader = sim.id("trader");
    let failed = sim
        .records("trader", AuditAction::ActionFailed)
        .pop()
        .unwrap();
    assert!(failed.reason.contains("vigil stop"), "{}", failed.reason);
    let agent = sim.sup.agent(trader).unwrap();
    assert_eq!(agent.state(), AgentState::Stopped);
    assert!(agent.is_held());
    assert!(sim.spawns(trader).is_empty());
}

#[test]
fn a_start_that_cannot_look_starts_and_lets_the_start_say_what_is_wrong() {
    let mut sim = Sim::restarted(
        vec![(manual("bot"), None)],
        vec![(
            "bot",
            Outside::Unknown {
                why: "the engine did not answer".into(),
            },
        )],
    );
    let bot = sim.id("bot");
    sim.command(bot, Command::Start, Requester::Cli).unwrap();
    assert_eq!(sim.spawns(bot).len(), 1);
}
