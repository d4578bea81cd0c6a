//! Alerts in, runbooks run, with explicit instants: a runbook's restart goes through the
//! agent's budget; repeats run nothing; a resolved alert calls its runbook off; a failed step
//! escalates; and no alert — however it is made — ever makes vigil act on itself or on
//! anything outside its configuration (property-tested).

mod sim;

use std::collections::BTreeMap;
use std::time::Duration;

use proptest::prelude::*;
use sim::{Sim, secs};
use vigil_core::runbook::{Matcher, OnFailure, Step};
use vigil_core::{
    Action, AgentSpec, AgentState, Alert, AlertPolicy, AuditAction, AuditEntry, CheckKind,
    CheckSpec, Observation, RunbookSpec,
};

fn alert(name: &str, agent: &str, fingerprint: &str, firing: bool) -> Alert {
    let mut labels = BTreeMap::new();
    labels.insert("alertname".to_string(), name.to_string());
    labels.insert("agent".to_string(), agent.to_string());
    Alert {
        fingerprint: fingerprint.into(),
        firing,
        labels,
        starts_at: "2026-11-30T10:00:00Z".into(),
    }
}

fn runbook(steps: Vec<Step>, on_failure: OnFailure) -> RunbookSpec {
    RunbookSpec {
        name: "stalled-trader".into(),
        matchers: vec![("alertname".into(), Matcher::Equal("TraderStalled".into()))],
        agent: "{{ labels.agent }}".into(),
        steps,
        timeout: secs(600),
        on_failure,
    }
}

fn fleet(steps: Vec<Step>, on_failure: OnFailure) -> Sim {
    let mut bot = AgentSpec::new("bot");
    bot.policy.max_restarts = 2;
    let mut c = CheckSpec::new("api", CheckKind::Api);
    c.max_age = Some(secs(30));
    bot.checks = vec![c];
    let mut sim = Sim::new(vec![bot, AgentSpec::new("other")]);
    sim.sup
        .set_runbooks(vec![runbook(steps, on_failure)], AlertPolicy::default());
    sim.advance(secs(5));
    sim
}

fn all(sim: &Sim, action: AuditAction) -> Vec<&AuditEntry> {
    sim.audit
        .iter()
        .map(|(_, e)| e)
        .filter(|e| e.action == action)
        .collect()
}

fn send(sim: &mut Sim, alerts: Vec<Alert>) -> vigil_core::AlertAnswer {
    let a = sim.sup.alerts(sim.now, "vigil", "firing", alerts);
    sim.drain();
    a
}

/// The stop signal of a restart is obeyed.
fn obey(sim: &mut Sim, name: &str) {
    let id = sim.id(name);
    if sim.sup.agent(id).unwrap().state() == AgentState::Stopping {
        sim.exit(id, vigil_core::ExitStatus::signal(vigil_core::Signal::TERM));
    }
}

fn beat(sim: &mut Sim, name: &str) {
    let id = sim.id(name);
    sim.sup.api_heartbeat(sim.now, id);
    sim.drain();
}

#[test]
fn an_alert_restarts_its_agent_within_budget_and_waits_until_it_is_healthy() {
    let mut sim = fleet(
        vec![
            Step::Collect,
            Step::Diagnose,
            Step::Restart,
            Step::WaitHealthy(secs(120)),
            Step::Exec {
                argv: vec!["reconcile".into(), "{agent}".into()],
                timeout: secs(30),
            },
            Step::Notify("ops".into()),
        ],
        OnFailure::Escalate,
    );
    let bot = sim.id("bot");
    sim.evidence = vec!["waiting for the order book lock".into()];
    let spawns = sim.spawns(bot).len();
    let a = send(&mut sim, vec![alert("TraderStalled", "bot", "f1", true)]);
    assert_eq!(a.accepted, 1);
    obey(&mut sim, "bot");
    assert_eq!(sim.spawns(bot).len(), spawns + 1, "restarted");
    // The restart counts against the budget, as every automatic restart does.
    let restart = &sim.records("bot", AuditAction::Restart)[0];
    assert_eq!(restart.metadata["cause"], "runbook");
    assert_eq!(restart.metadata["restarts_in_window"], 1);
    // Healthy only with evidence from after the wait began.
    assert!(all(&sim, AuditAction::RunbookSucceeded).is_empty());
    sim.advance(secs(3));
    beat(&mut sim, "bot");
    let ok = all(&sim, AuditAction::RunbookSucceeded);
    assert_eq!(ok.len(), 1, "{:?}", all(&sim, AuditAction::RunbookStep));
    assert_eq!(
        sim.execs,
        vec![vec!["reconcile".to_string(), "bot".to_string()]]
    );
    let steps = all(&sim, AuditAction::RunbookStep);
    assert_eq!(steps.len(), 6);
    assert_eq!(steps[5].metadata["notify"], "ops");

    // Alertmanager repeats the same alert: nothing runs again.
    let a = send(&mut sim, vec![alert("TraderStalled", "bot", "f1", true)]);
    assert_eq!((a.accepted, a.duplicates), (0, 1));
    assert_eq!(all(&sim, AuditAction::RunbookStarted).len(), 1);
}

#[test]
fn a_runbook_never_goes_around_the_budget() {
    let mut sim = fleet(vec![Step::Restart], OnFailure::Notify);
    for (i, f) in ["a", "b", "c"].iter().enumerate() {
        let mut al = alert("TraderStalled", "bot", f, true);
        al.starts_at = format!("2026-11-30T10:0{i}:00Z");
        send(&mut sim, vec![al]);
        obey(&mut sim, "bot");
        sim.advance(secs(2));
    }
    // Two restarts allowed; the third alert's runbook fails, and says why.
    assert_eq!(all(&sim, AuditAction::RunbookSucceeded).len(), 2);
    let failed = all(&sim, AuditAction::RunbookFailed);
    assert_eq!(failed.len(), 1);
    assert!(
        failed[0].reason.contains("restart budget is used up"),
        "{}",
        failed[0].reason
    );
    // on_failure = "notify": not quarantined.
    assert_ne!(
        sim.sup.agent(sim.id("bot")).unwrap().state(),
        AgentState::Quarantined
    );
}

#[test]
fn a_resolved_alert_calls_off_its_waiting_runbook() {
    let mut sim = fleet(
        vec![Step::WaitHealthy(secs(600)), Step::Restart],
        OnFailure::Escalate,
    );
    let bot = sim.id("bot");
    let spawns = sim.spawns(bot).len();
    send(&mut sim, vec![alert("TraderStalled", "bot", "f1", true)]);
    sim.advance(secs(1));
    let a = sim.sup.alerts(
        sim.now,
        "vigil",
        "resolved",
        vec![alert("TraderStalled", "bot", "f1", false)],
    );
    sim.drain();
    assert_eq!(a.cancelled, 1);
    assert_eq!(all(&sim, AuditAction::RunbookCancelled).len(), 1);
    sim.advance(secs(700));
    assert_eq!(sim.spawns(bot).len(), spawns, "nothing was restarted");
    assert!(all(&sim, AuditAction::RunbookFailed).is_empty());
}

#[test]
fn a_failed_step_escalates_with_the_step_that_failed() {
    let mut sim = fleet(
        vec![
            Step::Exec {
                argv: vec!["false".into()],
                timeout: secs(5),
            },
            Step::Restart,
        ],
        OnFailure::Escalate,
    );
    send(&mut sim, vec![alert("TraderStalled", "bot", "f1", true)]);
    sim.drain();
    let failed = all(&sim, AuditAction::RunbookFailed);
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].metadata["failed_step"], "exec false");
    obey(&mut sim, "bot");
    sim.advance(secs(30));
    assert_eq!(
        sim.sup.agent(sim.id("bot")).unwrap().state(),
        AgentState::Quarantined
    );
    let esc = sim.records("bot", AuditAction::Escalated);
    assert_eq!(esc[0].metadata["cause"], "runbook");
}

#[test]
fn a_diagnosis_that_a_restart_cannot_help_stops_the_runbook_before_it_restarts() {
    let mut sim = fleet(
        vec![Step::Collect, Step::Diagnose, Step::Restart],
        OnFailure::Notify,
    );
    let bot = sim.id("bot");
    sim.evidence = vec!["binance: Invalid API-key, IP, or permissions for action".into()];
    let spawns = sim.spawns(bot).len();
    send(&mut sim, vec![alert("TraderStalled", "bot", "f1", true)]);
    assert_eq!(sim.spawns(bot).len(), spawns);
    let failed = all(&sim, AuditAction::RunbookFailed);
    assert!(
        failed[0].reason.contains("invalid_api_key"),
        "{}",
        failed[0].reason
    );
}

#[test]
fn alerts_about_vigil_or_about_what_it_does_not_manage_are_refused() {
    let mut sim = fleet(vec![Step::Restart], OnFailure::Escalate);
    let mut down = alert("VigilDown", "bot", "v1", true);
    down.labels.insert("component".into(), "vigil".into());
    let mut stalled_vigil = alert("TraderStalled", "bot", "v2", true);
    stalled_vigil
        .labels
        .insert("component".into(), "vigil".into());
    let stranger = alert("TraderStalled", "postgres", "s1", true);
    let mut no_label = alert("TraderStalled", "x", "s2", true);
    no_label.labels.remove("agent");
    let a = send(&mut sim, vec![down, stalled_vigil, stranger, no_label]);
    assert_eq!((a.accepted, a.refused), (0, 4));
    let refused = all(&sim, AuditAction::AlertRefused);
    assert!(refused[0].reason.contains("about vigil itself"));
    assert!(
        refused[2]
            .reason
            .contains("`postgres`, which vigil does not manage")
    );
    assert!(refused[3].reason.contains("the label `agent`"));
    assert!(all(&sim, AuditAction::RunbookStarted).is_empty());
    let received = all(&sim, AuditAction::AlertReceived);
    assert_eq!(received.len(), 1);
}

#[test]
fn configured_self_labels_and_self_targets_are_never_acted_on() {
    let mut sim = fleet(vec![Step::Restart], OnFailure::Escalate);
    sim.sup.set_runbooks(
        vec![runbook(vec![Step::Restart], OnFailure::Escalate)],
        AlertPolicy {
            self_labels: vec![("job".into(), "vigil-self".into())],
            ..AlertPolicy::default()
        },
    );
    let mut a1 = alert("TraderStalled", "bot", "j1", true);
    a1.labels.insert("job".into(), "vigil-self".into());
    let a = send(&mut sim, vec![a1]);
    assert_eq!(a.refused, 1);
    assert!(all(&sim, AuditAction::RunbookStarted).is_empty());
    let _ = Duration::ZERO;
}

fn arb_alert() -> impl Strategy<Value = Alert> {
    (
        prop::sample::select(vec![
            "TraderStalled",
            "VigilDown",
            "VigilAbsent",
            "AgentDown",
            "",
        ]),
        prop::option::of(prop::sample::select(vec![
            "bot", "other", "vigil", "postgres", "", "bot@x",
        ])),
        prop::option::of(prop::sample::select(vec!["vigil", "agent"])),
        "[a-f0-9]{1,3}",
        any::<bool>(),
        0u8..3,
    )
        .prop_map(|(name, agent, component, fp, firing, start)| {
            let mut labels = BTreeMap::new();
            labels.insert("alertname".into(), name.to_string());
            if let Some(a) = agent {
                labels.insert("agent".into(), a.to_string());
            }
            if let Some(c) = component {
                labels.insert("component".into(), c.to_string());
            }
            // Alerts about vigil are marked, so the test can follow them.
            let about_self = component == Some("vigil") || name.starts_with("Vigil");
            Alert {
                fingerprint: if about_self { format!("self-{fp}") } else { fp },
                firing,
                labels,
                starts_at: format!("2026-11-30T10:0{start}:00Z"),
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn no_alert_makes_vigil_act_on_itself_or_outside_its_config(
        groups in prop::collection::vec(prop::collection::vec(arb_alert(), 0..6), 1..8),
        waits in prop::collection::vec(0u64..30, 8),
    ) {
        let mut sim = fleet(
            vec![Step::Collect, Step::Restart, Step::WaitHealthy(secs(5)), Step::Exec {
                argv: vec!["x".into()], timeout: secs(1) }],
            OnFailure::Escalate,
        );
        let configured: Vec<_> = ["bot", "other"].iter().map(|n| sim.id(n)).collect();
        let before = sim.actions.len();
        for (i, group) in groups.into_iter().enumerate() {
            let started_before = all(&sim, AuditAction::RunbookStarted).len();
            sim.sup.alerts(sim.now, "vigil", "firing", group);
            sim.drain();
            // A runbook started now is never for an alert about vigil itself.
            for e in &all(&sim, AuditAction::RunbookStarted)[started_before..] {
                let fp = e.metadata["fingerprint"].as_str().unwrap();
                prop_assert!(!fp.starts_with("self-"), "acted on an alert about vigil: {e:?}");
                prop_assert!(e.agent.as_deref() == Some("bot") || e.agent.as_deref() == Some("other"));
            }
            if i % 2 == 0 { beat(&mut sim, "bot"); }
            sim.advance(secs(waits[i % waits.len()]));
        }
        // Every action the alerts led to names a configured agent, and none touches vigil.
        for (_, action) in &sim.actions[before..] {
            if let Some(agent) = action.agent() {
                prop_assert!(configured.contains(&agent), "{action:?}");
            }
            if let Action::Adopt { pid, .. } = action {
                prop_assert!(*pid != sim::SELF_PID);
            }
        }
        for e in all(&sim, AuditAction::RunbookStarted) {
            prop_assert!(matches!(e.agent.as_deref(), Some("bot") | Some("other")));
        }
        let _ = Observation::Healthy(String::new());
    }
}

#[test]
fn a_runbook_never_quarantines_an_agent_held_by_an_incident() {
    let mut sim = fleet(vec![Step::Restart], OnFailure::Escalate);
    // Three bots lose their database: an incident holds them.
    let mut specs = Vec::new();
    for i in 1..=3 {
        let mut s = AgentSpec::new(&format!("db@{i}"));
        s.template = Some("db".into());
        specs.push(s);
    }
    for s in specs {
        sim.sup.add(s, None);
    }
    sim.sup.start_all(sim.now);
    sim.drain();
    sim.advance(secs(5));
    for i in 1..=3 {
        let id = sim.id(&format!("db@{i}"));
        sim.exit_logging(
            id,
            vigil_core::ExitStatus::code(1),
            &["psycopg2.OperationalError: could not connect to server: Connection refused"],
        );
    }
    assert_eq!(
        sim.sup.agent(sim.id("db@3")).unwrap().state(),
        AgentState::Waiting
    );
    // Prometheus says it is down (it is: held): the runbook is called off, not escalated.
    send(&mut sim, vec![alert("TraderStalled", "db@3", "d1", true)]);
    assert!(all(&sim, AuditAction::RunbookFailed).is_empty());
    let cancelled = all(&sim, AuditAction::RunbookCancelled);
    assert_eq!(cancelled.len(), 1);
    assert!(
        cancelled[0].reason.contains("held"),
        "{}",
        cancelled[0].reason
    );
    assert_eq!(
        sim.sup.agent(sim.id("db@3")).unwrap().state(),
        AgentState::Waiting
    );
}

#[test]
fn the_advisor_may_make_a_runbooks_diagnosis_stricter() {
    let mut sim = fleet(
        vec![Step::Collect, Step::Diagnose, Step::Restart],
        OnFailure::Notify,
    );
    // An agent with an advisor: its verdict on the evidence is asked for after the rules'.
    let mut spec = sim.sup.agent(sim.id("bot")).unwrap().spec().clone();
    spec.advisor = Some(vigil_core::AdvisorSpec {
        min_confidence: 0.5,
        wait: secs(60),
    });
    sim.sup
        .reconcile(sim.now, vec![spec, AgentSpec::new("other")]);
    sim.drain();
    sim.advance(secs(5));
    let bot = sim.id("bot");
    sim.evidence = vec!["order rejected: account restricted by compliance".into()];
    sim.runbook_advice = Some(vigil_core::Diagnosis {
        category: vigil_core::Category::Permanent,
        action: vigil_core::Remedy::Quarantine,
        severity: vigil_core::Severity::Critical,
        rule: "account_restricted".into(),
        explanation: "the account is restricted: a restart cannot lift it".into(),
        confidence: 0.9,
        source: vigil_core::Source::Llm,
    });
    let spawns = sim.spawns(bot).len();
    send(&mut sim, vec![alert("TraderStalled", "bot", "f1", true)]);
    assert_eq!(
        sim.spawns(bot).len(),
        spawns,
        "not restarted on the advisor's word"
    );
    let steps = all(&sim, AuditAction::RunbookStep);
    assert!(
        steps[1].reason.contains("by llm") && steps[1].reason.contains("stricter"),
        "{}",
        steps[1].reason
    );
    assert_eq!(all(&sim, AuditAction::RunbookFailed).len(), 1);
}
