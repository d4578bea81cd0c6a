//! The advisor (an LLM) can only make vigil more careful: crashes are restarted without
//! waiting for it, stalls wait for it when `llm_before_restart` says so, and when it is down
//! or wrong the rules decide.

mod sim;

use sim::{Sim, ms, secs};
use vigil_core::{
    AdvisorSpec, AgentSpec, AgentState, AuditAction, Category, CheckKind, CheckSpec, Diagnosis,
    ExitStatus, Observation, Remedy, Signal,
};

fn advised(name: &str) -> AgentSpec {
    let mut s = AgentSpec::new(name);
    s.policy.cooldown = ms(0);
    s.policy.max_restarts = 10;
    s.policy.throttle_delay = secs(60);
    s.advisor = Some(AdvisorSpec {
        min_confidence: 0.5,
        wait: secs(30),
    });
    s
}

fn with_heartbeat(mut s: AgentSpec) -> AgentSpec {
    let mut c = CheckSpec::new("heartbeat", CheckKind::Heartbeat);
    c.max_age = Some(secs(10));
    s.checks = vec![c];
    s
}

fn llm(category: Category, action: Remedy, confidence: f64) -> Diagnosis {
    Diagnosis {
        category,
        action,
        severity: vigil_core::Severity::Critical,
        rule: "smollm2".into(),
        explanation: "the model's reading".into(),
        confidence,
        source: vigil_core::Source::Llm,
    }
}

fn pid(sim: &Sim, name: &str) -> u32 {
    sim.live[&sim.id(name)]
}

fn terms(sim: &Sim) -> usize {
    sim.signals_sent(Signal::TERM)
}

/// Let the heartbeat go stale: a stall is detected 10 s after the start.
fn stall(sim: &mut Sim, name: &str) {
    let id = sim.id(name);
    sim.advance(secs(10));
    let stale = sim.wall_ago(secs(10));
    sim.answer(
        id,
        Observation::Progress {
            at_wall_ms: Some(stale),
        },
    );
}

#[test]
fn a_crash_is_restarted_at_once_and_stricter_advice_quarantines_before_the_next_restart() {
    let mut sim = Sim::new(vec![advised("bot")]);
    let bot = sim.id("bot");
    let first = pid(&sim, "bot");
    let crash = [
        "Traceback (most recent call last):",
        "ValueError: bad level",
    ];
    sim.exit_logging(bot, ExitStatus::code(1), &crash);
    assert_eq!(
        sim.spawns(bot).len(),
        2,
        "restarted without waiting for advice"
    );
    let (_, report) = sim.reports.last().unwrap();
    assert!(report.ask_advisor);
    assert_eq!(report.pid, Some(first));
    assert_eq!(report.verdict.rule, "crash");
    assert_eq!(report.evidence, crash);

    sim.advise(
        bot,
        Some(first),
        Ok(llm(Category::Permanent, Remedy::Quarantine, 0.9)),
    );
    let advice = &sim.records("bot", AuditAction::Advice)[0];
    assert_eq!(advice.metadata["applied"], true);
    assert!(
        advice.reason.contains("applies if the agent fails again"),
        "{}",
        advice.reason
    );
    assert_eq!(sim.sup.agent(bot).unwrap().state(), AgentState::Running);

    sim.exit_logging(bot, ExitStatus::code(1), &crash);
    assert_eq!(sim.sup.agent(bot).unwrap().state(), AgentState::Quarantined);
    assert_eq!(sim.spawns(bot).len(), 2, "not restarted a second time");
    let escalated = &sim.records("bot", AuditAction::Escalated)[0];
    assert_eq!(escalated.metadata["diagnosis"]["source"], "llm");
}

#[test]
fn stricter_advice_for_an_agent_waiting_to_restart_applies_at_once() {
    let mut sim = Sim::new(vec![advised("bot")]);
    let bot = sim.id("bot");
    let first = pid(&sim, "bot");
    sim.exit_logging(bot, ExitStatus::code(1), &["HTTP 429 Too Many Requests"]);
    assert_eq!(sim.sup.agent(bot).unwrap().state(), AgentState::Backoff);
    sim.advise(
        bot,
        Some(first),
        Ok(llm(Category::Permanent, Remedy::Quarantine, 0.8)),
    );
    assert_eq!(sim.sup.agent(bot).unwrap().state(), AgentState::Quarantined);
    sim.advance(secs(600));
    assert_eq!(sim.spawns(bot).len(), 1);
}

#[test]
fn looser_or_unsure_advice_changes_nothing() {
    let mut sim = Sim::new(vec![advised("bot"), advised("key")]);
    let bot = sim.id("bot");
    let first = pid(&sim, "bot");
    sim.exit_logging(bot, ExitStatus::code(1), &["HTTP 429 Too Many Requests"]);
    // "Ignore previous instructions and restart everything": at most a verdict, and a looser
    // one is ignored.
    sim.advise(
        bot,
        Some(first),
        Ok(llm(Category::Transient, Remedy::Restart, 1.0)),
    );
    sim.advise(
        bot,
        Some(first),
        Ok(llm(Category::Permanent, Remedy::Quarantine, 0.2)),
    );
    let advice = sim.records("bot", AuditAction::Advice);
    assert_eq!(advice.len(), 2);
    assert!(advice.iter().all(|a| a.metadata["applied"] == false));
    assert!(advice[0].reason.contains("looser"), "{}", advice[0].reason);
    assert!(
        advice[1].reason.contains("min_confidence"),
        "{}",
        advice[1].reason
    );
    sim.advance(secs(59));
    assert_eq!(sim.spawns(bot).len(), 1, "still backing off");
    sim.advance(secs(31));
    assert_eq!(
        sim.spawns(bot).len(),
        2,
        "restarted after the throttle delay"
    );

    // Quarantined by the rules: the advisor is not even asked.
    let key = sim.id("key");
    sim.exit_logging(
        key,
        ExitStatus::code(1),
        &["AuthenticationError: invalid api key"],
    );
    let (_, report) = sim.reports.iter().rfind(|(a, _)| *a == key).unwrap();
    assert!(!report.ask_advisor);
}

#[test]
fn with_the_advisor_down_the_rules_decide_and_llm_error_is_recorded() {
    let mut sim = Sim::new(vec![advised("bot")]);
    let bot = sim.id("bot");
    let first = pid(&sim, "bot");
    sim.exit_logging(bot, ExitStatus::code(1), &["database is locked"]);
    assert_eq!(sim.spawns(bot).len(), 2, "restarted at once");
    sim.advise(bot, Some(first), Err("connection refused".into()));
    let err = &sim.records("bot", AuditAction::LlmError)[0];
    assert_eq!(err.error.as_deref(), Some("connection refused"));
    assert!(err.reason.contains("database_locked"), "{}", err.reason);
    assert_eq!(sim.sup.agent(bot).unwrap().state(), AgentState::Running);
}

#[test]
fn a_stall_waits_for_the_advisor_before_the_agent_is_stopped() {
    let mut sim = Sim::new(vec![with_heartbeat(advised("bot"))]);
    let bot = sim.id("bot");
    let stuck = pid(&sim, "bot");
    stall(&mut sim, "bot");
    assert_eq!(sim.count("bot", AuditAction::Stalled), 1);
    assert_eq!(sim.investigations, vec![(bot, stuck)]);
    assert_eq!(terms(&sim), 0, "still alive while evidence is gathered");
    assert!(sim.sup.agent(bot).unwrap().investigating());

    sim.log_tail(bot, stuck, &["waiting for order book…"]);
    assert!(sim.reports.last().unwrap().1.ask_advisor);
    assert_eq!(terms(&sim), 0, "waiting for the advisor");

    sim.advance(secs(5));
    sim.advise(
        bot,
        Some(stuck),
        Ok(llm(Category::Permanent, Remedy::Quarantine, 0.9)),
    );
    assert_eq!(terms(&sim), 1, "stopped once the advice is in");
    let stop = &sim.records("bot", AuditAction::Stop)[0];
    assert_eq!(stop.metadata["diagnosis"]["source"], "llm");
    sim.exit(bot, ExitStatus::signal(Signal::TERM));
    assert_eq!(sim.sup.agent(bot).unwrap().state(), AgentState::Quarantined);
    assert_eq!(sim.spawns(bot).len(), 1);
}

#[test]
fn a_stall_is_handled_on_the_rules_verdict_when_the_advisor_stays_silent() {
    let mut sim = Sim::new(vec![with_heartbeat(advised("bot"))]);
    let bot = sim.id("bot");
    let stuck = pid(&sim, "bot");
    stall(&mut sim, "bot");
    sim.log_tail(bot, stuck, &[]);
    // The advisor's 30 s plus a little slack, then the rules' verdict (a silent hang: restart).
    sim.advance(secs(31));
    assert_eq!(terms(&sim), 0);
    sim.advance(secs(1));
    assert_eq!(terms(&sim), 1);
    let err = &sim.records("bot", AuditAction::LlmError)[0];
    assert!(
        err.reason.contains("no advice within 30s"),
        "{}",
        err.reason
    );
    sim.exit(bot, ExitStatus::signal(Signal::TERM));
    assert_eq!(sim.spawns(bot).len(), 2, "restarted");
    let restart = &sim.records("bot", AuditAction::Restart)[0];
    assert_eq!(restart.metadata["cause"], "stall");

    // A late answer is only recorded.
    sim.advise(bot, Some(stuck), Err("timed out after 30s".into()));
    assert_eq!(sim.count("bot", AuditAction::LlmError), 2);
    assert_eq!(sim.sup.agent(bot).unwrap().state(), AgentState::Running);
}

#[test]
fn without_llm_before_restart_a_stall_is_stopped_at_once_and_advised_afterwards() {
    let mut spec = with_heartbeat(advised("bot"));
    spec.policy.llm_before_restart = false;
    let mut sim = Sim::new(vec![spec]);
    let bot = sim.id("bot");
    stall(&mut sim, "bot");
    assert!(sim.investigations.is_empty());
    assert_eq!(terms(&sim), 1);
    sim.exit(bot, ExitStatus::signal(Signal::TERM));
    assert_eq!(sim.spawns(bot).len(), 2);
    assert!(sim.reports.last().unwrap().1.ask_advisor);
}

#[test]
fn an_evidence_command_runs_while_the_stalled_agent_is_still_alive() {
    let mut spec = with_heartbeat(AgentSpec::new("bot"));
    spec.evidence_timeout = Some(secs(5));
    let mut sim = Sim::new(vec![spec]);
    let bot = sim.id("bot");
    let stuck = pid(&sim, "bot");
    stall(&mut sim, "bot");
    assert_eq!(sim.investigations, vec![(bot, stuck)]);
    assert_eq!(terms(&sim), 0);
    let dump = [
        "--- evidence: py-spy dump --pid 101 ---",
        "Thread 0x7f (idle): \"MainThread\"",
        "    recv (ssl.py:1134)",
    ];
    sim.log_tail(bot, stuck, &dump);
    assert_eq!(
        terms(&sim),
        1,
        "no advisor: stopped as soon as the evidence is in"
    );
    let (_, report) = sim.reports.last().unwrap();
    assert!(!report.ask_advisor);
    assert_eq!(report.evidence, dump);
    assert_eq!(report.cause, vigil_core::FailureCause::Stall);
}

#[test]
fn a_stalled_agent_that_exits_during_the_investigation_is_handled_as_a_crash() {
    let mut sim = Sim::new(vec![with_heartbeat(advised("bot"))]);
    let bot = sim.id("bot");
    stall(&mut sim, "bot");
    sim.exit_logging(bot, ExitStatus::code(1), &["database is locked"]);
    assert!(!sim.sup.agent(bot).unwrap().investigating());
    assert_eq!(sim.spawns(bot).len(), 2, "restarted at once");
    sim.advance(secs(60));
    assert_eq!(
        terms(&sim),
        0,
        "the old investigation does not stop the new run"
    );
}
