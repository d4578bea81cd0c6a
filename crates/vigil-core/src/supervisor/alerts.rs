//! Alerts in, runbooks run: intake (de-duplication, the guard against acting on vigil itself
//! or on anything it does not manage), and each step carried out through the agents' own
//! policy. The guard is checked again before every step: the agent may have left the
//! configuration, or its process may have become vigil's own pid.

use std::time::Instant;

use super::Supervisor;
use crate::action::Action;
use crate::advice::FailureReport;
use crate::agent::RestartRefused;
use crate::diagnosis::{Evidence, FailureCause, Remedy};
use crate::event::AgentId;
use crate::records;
use crate::runbook::{
    Alert, AlertAnswer, OnFailure, Outcome, Run, RunState, SELF_ALERTS, Step, spec::fill,
};
use crate::time::{Now, human_duration, later};

impl Supervisor {
    /// `[[runbooks]]` and `[alertmanager]`. Active runs go on with the runbook they started.
    pub fn set_runbooks(
        &mut self,
        specs: Vec<crate::runbook::RunbookSpec>,
        policy: crate::runbook::AlertPolicy,
    ) {
        self.runbooks.specs = specs;
        self.runbooks.policy = policy;
    }

    pub fn runbook_spec(&self, name: &str) -> Option<&crate::runbook::RunbookSpec> {
        self.runbooks.specs.iter().find(|s| s.name == name)
    }

    /// Runbook runs: active ones in order, then the newest ended ones.
    pub fn runbook_runs(&self) -> impl Iterator<Item = &Run> {
        self.runbooks.runs.iter().chain(self.runbooks.ended.iter())
    }

    /// A notification from Alertmanager (`receiver`, `status` as it sent them). Journals it,
    /// decides each alert, and starts what may start.
    pub fn alerts(
        &mut self,
        now: Now,
        receiver: &str,
        status: &str,
        alerts: Vec<Alert>,
    ) -> AlertAnswer {
        self.tick(now);
        let mut answer = AlertAnswer::default();
        let mut refusals = Vec::new();
        let names: Vec<String> = alerts.iter().map(|a| a.name().to_string()).collect();
        for alert in alerts {
            if !self.runbooks.first_sight(&alert) {
                answer.duplicates += 1;
                continue;
            }
            if !alert.firing {
                answer.cancelled += self.alert_resolved(now.mono, &alert);
                continue;
            }
            match self.intake(now.mono, &alert) {
                Intake::Queued => answer.accepted += 1,
                Intake::Unmatched => answer.unmatched += 1,
                Intake::Refused(agent, why) => {
                    answer.refused += 1;
                    refusals.push(records::alert_refused(&alert, agent.as_deref(), &why));
                }
                Intake::Busy(agent, why) => {
                    // Refused for now only: its next repeat may run once the agent is free.
                    self.runbooks.unsee(&alert);
                    answer.refused += 1;
                    refusals.push(records::alert_refused(&alert, Some(&agent), &why));
                }
            }
        }
        self.out
            .actions
            .push_back(Action::Audit(records::alert_received(
                receiver, status, &names, &answer,
            )));
        for r in refusals {
            self.out.actions.push_back(Action::Audit(r));
        }
        self.pump_runbooks(now);
        self.settle(now);
        answer
    }

    /// Why an alert is about vigil itself, if it is.
    fn about_vigil(&self, alert: &Alert) -> Option<String> {
        if SELF_ALERTS.contains(&alert.name()) {
            return Some(format!("{} is one of vigil's own alerts", alert.name()));
        }
        if alert.labels.get("component").map(String::as_str) == Some("vigil") {
            return Some("it is labelled component=\"vigil\"".into());
        }
        self.runbooks
            .policy
            .self_labels
            .iter()
            .find(|(k, v)| alert.labels.get(k) == Some(v))
            .map(|(k, v)| format!("it is labelled {k}=\"{v}\" ([alertmanager] self_labels)"))
    }

    /// Why vigil must not act on `agent` now, if so.
    fn untouchable(&self, agent: AgentId, name: &str) -> Option<String> {
        let Some(a) = self.agent(agent).filter(|a| a.name() == name) else {
            return Some(format!("{name} is no longer configured"));
        };
        if a.pid() == Some(self.out.self_pid) {
            return Some(format!("{name}'s process is vigil itself"));
        }
        if let Some(t) = &a.spec().target
            && self.runbooks.policy.self_targets.iter().any(|s| s == t)
        {
            return Some(format!("{name} is vigil itself ({t})"));
        }
        None
    }

    fn intake(&mut self, now: Instant, alert: &Alert) -> Intake {
        if let Some(why) = self.about_vigil(alert) {
            return Intake::Refused(None, format!("it is about vigil itself: {why}"));
        }
        let Some(spec) = self
            .runbooks
            .specs
            .iter()
            .find(|s| s.matches(&alert.labels))
            .cloned()
        else {
            return Intake::Unmatched;
        };
        let name = match fill(&spec.agent, &alert.labels) {
            Ok(n) => n,
            Err(label) => {
                return Intake::Refused(
                    None,
                    format!(
                        "runbook {} names its agent by the label `{label}`, which the alert lacks",
                        spec.name
                    ),
                );
            }
        };
        let Some(agent) = self.id(&name) else {
            return Intake::Refused(
                None,
                format!(
                    "runbook {} would act on `{name}`, which vigil does not manage",
                    spec.name
                ),
            );
        };
        if let Some(why) = self.untouchable(agent, &name) {
            return Intake::Refused(Some(name), why);
        }
        if let Some(busy) = self.runbooks.active_for(agent) {
            return Intake::Busy(
                name.clone(),
                format!(
                    "runbook {} (run {}) is already at work on {name}: one at a time",
                    busy.runbook, busy.id
                ),
            );
        }
        self.runbooks.last_id += 1;
        self.runbooks.runs.push(Run {
            id: self.runbooks.last_id,
            runbook: spec.name.clone(),
            agent,
            agent_name: name,
            alert: alert.name().to_string(),
            fingerprint: alert.fingerprint.clone(),
            labels: alert.labels.clone(),
            queued: now,
            started: None,
            deadline: None,
            state: RunState::Queued,
            step: 0,
            done: Vec::new(),
            evidence: Vec::new(),
            no_restart: None,
            verdict: None,
            cancel: false,
        });
        Intake::Queued
    }

    /// A resolved alert calls off its runbook: at once when it has not started or waits for
    /// health, else before its next step. Returns how many were called off.
    fn alert_resolved(&mut self, now: Instant, alert: &Alert) -> usize {
        let mut n = 0;
        let ids: Vec<u64> = self
            .runbooks
            .runs
            .iter()
            .filter(|r| r.fingerprint == alert.fingerprint)
            .map(|r| r.id)
            .collect();
        for id in ids {
            n += 1;
            let Some(run) = self.runbooks.get_mut(id) else {
                continue;
            };
            match run.state {
                RunState::Queued | RunState::WaitingHealthy { .. } | RunState::Ready => {
                    self.end_run(now, id, Outcome::Cancelled, "its alert resolved".into());
                }
                _ => run.cancel = true,
            }
        }
        n
    }

    fn end_run(&mut self, now: Instant, id: u64, outcome: Outcome, how: String) {
        let Some(run) = self.runbooks.end(id, now, outcome, how) else {
            return;
        };
        let RunState::Ended { how, .. } = &run.state else {
            return;
        };
        let entry = match outcome {
            Outcome::Cancelled => records::runbook_cancelled(run, how),
            Outcome::Succeeded => {
                let took = now.saturating_duration_since(run.started.unwrap_or(run.queued));
                records::runbook_succeeded(run, took)
            }
            // Journaled by `fail_run`, with what followed.
            Outcome::Failed => return,
        };
        self.out.actions.push_back(Action::Audit(entry));
    }

    /// A step failed (or the runbook timed out): journaled with what follows.
    fn fail_run(&mut self, now: Instant, id: u64, step: &str, why: &str) {
        let Some(run) = self.runbooks.runs.iter().find(|r| r.id == id).cloned() else {
            return;
        };
        if run.cancel {
            // Its alert resolved meanwhile: what it would escalate is over.
            let how = format!("its alert resolved ({step} had failed: {why})");
            self.end_run(now, id, Outcome::Cancelled, how);
            return;
        }
        let on_failure = self
            .runbooks
            .specs
            .iter()
            .find(|s| s.name == run.runbook)
            .map_or(OnFailure::Escalate, |s| s.on_failure);
        let guarded = self.untouchable(run.agent, &run.agent_name);
        let then = match (on_failure, &guarded) {
            (OnFailure::Escalate, None) => {
                format!("{} is quarantined: a human must look", run.agent_name)
            }
            (OnFailure::Escalate, Some(g)) => format!("not quarantined: {g}"),
            (OnFailure::Notify, _) => "people are told (on_failure = \"notify\")".into(),
        };
        self.out
            .actions
            .push_back(Action::Audit(records::runbook_failed(
                &run, step, why, &then,
            )));
        if on_failure == OnFailure::Escalate && guarded.is_none() {
            let reason = format!(
                "runbook {} for alert {} failed at {step}: {why}",
                run.runbook, run.alert
            );
            self.with_agent(run.agent, |a, out| a.runbook_quarantine(now, reason, out));
        }
        self.end_run(now, id, Outcome::Failed, format!("failed at {step}: {why}"));
    }

    /// Start queued runs while there is room, and carry out every step that can go now.
    pub(super) fn pump_runbooks(&mut self, now: Now) {
        let t = now.mono;
        loop {
            let mut progressed = false;
            let ids: Vec<u64> = self.runbooks.runs.iter().map(|r| r.id).collect();
            for id in ids {
                progressed |= self.advance_run(now, t, id);
            }
            if !progressed {
                break;
            }
        }
    }

    /// One move of one run; `true` if it moved.
    fn advance_run(&mut self, now: Now, t: Instant, id: u64) -> bool {
        let Some(run) = self.runbooks.runs.iter().find(|r| r.id == id).cloned() else {
            return false;
        };
        let spec = self
            .runbooks
            .specs
            .iter()
            .find(|s| s.name == run.runbook)
            .cloned();
        let Some(spec) = spec else {
            self.end_run(
                t,
                id,
                Outcome::Cancelled,
                "its runbook left the configuration".into(),
            );
            return true;
        };
        if let Some(deadline) = run.deadline
            && t >= deadline
        {
            let at = spec
                .steps
                .get(run.step)
                .map_or("the end".into(), Step::label);
            let why = format!("timed out after {}", human_duration(spec.timeout));
            self.fail_run(t, id, &at, &why);
            return true;
        }
        match run.state {
            RunState::Queued => {
                if self.runbooks.running() >= self.runbooks.policy.max_concurrent.max(1) {
                    return false;
                }
                let r = self.runbooks.get_mut(id).expect("found above");
                r.started = Some(t);
                r.deadline = Some(later(t, spec.timeout));
                r.state = RunState::Ready;
                let entry = records::runbook_started(r, spec.steps.len());
                self.out.actions.push_back(Action::Audit(entry));
                true
            }
            RunState::Ready => {
                if run.cancel {
                    self.end_run(t, id, Outcome::Cancelled, "its alert resolved".into());
                    return true;
                }
                let Some(step) = spec.steps.get(run.step).cloned() else {
                    self.end_run(t, id, Outcome::Succeeded, "every step succeeded".into());
                    return true;
                };
                if let Some(why) = self.untouchable(run.agent, &run.agent_name) {
                    self.fail_run(t, id, &step.label(), &why);
                    return true;
                }
                self.start_step(now, &run, &step);
                true
            }
            RunState::WaitingHealthy { since, until } => {
                let healthy = self
                    .agent(run.agent)
                    .is_some_and(|a| a.healthy_since(since));
                if healthy {
                    let took = t.saturating_duration_since(since);
                    self.step_done(
                        t,
                        id,
                        true,
                        format!("healthy after {}", human_duration(took)),
                    );
                    true
                } else if t >= until {
                    let label = spec.steps.get(run.step).map_or(String::new(), Step::label);
                    let why = "not running with every check passing on fresh evidence in time";
                    self.fail_run(t, id, &label, why);
                    true
                } else {
                    false
                }
            }
            RunState::Awaiting | RunState::Ended { .. } => false,
        }
    }

    fn start_step(&mut self, now: Now, run: &Run, step: &Step) {
        let t = now.mono;
        let id = run.id;
        match step {
            Step::Collect => {
                self.set_state(id, RunState::Awaiting);
                self.out.actions.push_back(Action::CollectEvidence {
                    agent: run.agent,
                    runbook: id,
                });
            }
            Step::Diagnose => {
                let Some(a) = self.agent(run.agent) else {
                    return;
                };
                let verdict = a.spec().diagnosis.classify(&Evidence {
                    cause: FailureCause::Exit,
                    spawn_error: None,
                    streak: 1,
                    log: &run.evidence,
                    oom_killed: false,
                });
                // Rules first; the advisor, where configured, may only make it stricter.
                if a.spec().advisor.is_some() && verdict.action != Remedy::Quarantine {
                    let report = FailureReport {
                        run: a.run(),
                        pid: a.pid(),
                        cause: FailureCause::Exit,
                        reason: format!("alert {} (runbook {})", run.alert, run.runbook),
                        uptime: None,
                        evidence: run.evidence.clone(),
                        verdict: verdict.clone(),
                        ask_advisor: true,
                    };
                    if let Some(r) = self.runbooks.get_mut(id) {
                        r.verdict = Some(Box::new(verdict));
                        r.state = RunState::Awaiting;
                    }
                    self.out.actions.push_back(Action::AdviseRunbook {
                        agent: run.agent,
                        runbook: id,
                        report: Box::new(report),
                    });
                    return;
                }
                self.diagnosed(t, id, &verdict, "");
            }
            Step::Restart => {
                if let Some(why) = run.no_restart.clone() {
                    self.fail_run(
                        t,
                        id,
                        &step.label(),
                        &format!("{why}: a restart cannot help"),
                    );
                    return;
                }
                let name = run.runbook.clone();
                let result = self.with_agent(run.agent, |a, out| a.runbook_restart(t, &name, out));
                match result {
                    Some(Ok(what)) => self.step_done(t, id, true, what.to_string()),
                    Some(Err(RestartRefused::Budget(why))) => {
                        self.fail_run(t, id, &step.label(), &why)
                    }
                    // Held by an incident or an upstream, stopped by a person, quarantined:
                    // not a runbook's to override, and no reason to escalate.
                    Some(Err(RestartRefused::NotNow(why))) => {
                        let how = format!("not restarted: {why}");
                        self.end_run(t, id, Outcome::Cancelled, how);
                    }
                    None => self.fail_run(t, id, &step.label(), "it is no longer configured"),
                }
            }
            Step::WaitHealthy(d) => {
                self.set_state(
                    id,
                    RunState::WaitingHealthy {
                        since: t,
                        until: later(t, *d),
                    },
                );
            }
            Step::Exec { argv, timeout } => {
                let instance = self
                    .agent(run.agent)
                    .and_then(|a| a.spec().instance.clone())
                    .unwrap_or_default();
                let argv: Result<Vec<String>, String> = argv
                    .iter()
                    .map(|arg| {
                        let arg = arg
                            .replace("{agent}", &run.agent_name)
                            .replace("{instance}", &instance);
                        fill(&arg, &run.labels)
                    })
                    .collect();
                let argv = match argv {
                    Ok(a) => a,
                    Err(label) => {
                        let why = format!("the alert has no label `{label}` for its command");
                        self.fail_run(t, id, &step.label(), &why);
                        return;
                    }
                };
                self.set_state(id, RunState::Awaiting);
                self.out.actions.push_back(Action::RunbookExec {
                    agent: run.agent,
                    runbook: id,
                    argv,
                    timeout: *timeout,
                });
            }
            Step::Notify(channel) => {
                let steps: Vec<String> = run
                    .done
                    .iter()
                    .map(|(l, ok, d)| format!("{l}: {} ({d})", if *ok { "ok" } else { "failed" }))
                    .collect();
                let detail = format!(
                    "telling {channel}: alert {} on {}{}",
                    run.alert,
                    run.agent_name,
                    if steps.is_empty() {
                        String::new()
                    } else {
                        format!("; so far: {}", steps.join("; "))
                    }
                );
                self.step_done_with(t, id, true, detail, Some(channel.clone()));
            }
        }
    }

    fn set_state(&mut self, id: u64, state: RunState) {
        if let Some(r) = self.runbooks.get_mut(id) {
            r.state = state;
        }
    }

    fn step_done(&mut self, t: Instant, id: u64, ok: bool, detail: String) {
        self.step_done_with(t, id, ok, detail, None);
    }

    /// The current step is over: journaled, and the run moves to the next.
    fn step_done_with(
        &mut self,
        t: Instant,
        id: u64,
        ok: bool,
        detail: String,
        notify: Option<String>,
    ) {
        let label = {
            let Some(run) = self.runbooks.runs.iter().find(|r| r.id == id) else {
                return;
            };
            self.runbooks
                .specs
                .iter()
                .find(|s| s.name == run.runbook)
                .and_then(|s| s.steps.get(run.step))
                .map_or(String::new(), Step::label)
        };
        if !ok {
            self.fail_run(t, id, &label, &detail);
            return;
        }
        let Some(run) = self.runbooks.get_mut(id) else {
            return;
        };
        let mut entry = records::runbook_step(run, &label, true, &detail);
        if let Some(channel) = notify {
            entry = entry.meta("notify", channel);
        }
        run.done.push((label, true, detail));
        run.step += 1;
        run.state = RunState::Ready;
        self.out.actions.push_back(Action::Audit(entry));
    }

    /// The verdict of a `diagnose` step (`advice`: what the advisor added, if asked).
    fn diagnosed(
        &mut self,
        t: Instant,
        id: u64,
        verdict: &crate::diagnosis::Diagnosis,
        advice: &str,
    ) {
        let detail = format!(
            "diagnosed {} ({}, {}, by {}): {}{advice}",
            verdict.rule,
            verdict.category.as_str(),
            verdict.action.as_str(),
            verdict.source.as_str(),
            verdict.explanation
        );
        if verdict.action == Remedy::Quarantine
            && let Some(r) = self.runbooks.get_mut(id)
        {
            r.no_restart = Some(detail.clone());
        }
        self.step_done(t, id, true, detail);
    }

    /// The advisor's answer for a `diagnose` step: stricter advice, sure enough, replaces the
    /// rules' verdict; anything else leaves it.
    pub(super) fn on_runbook_advice(
        &mut self,
        now: Now,
        id: u64,
        advice: Result<crate::diagnosis::Diagnosis, String>,
    ) {
        let Some(run) = self.runbooks.awaiting(id) else {
            return;
        };
        let Some(base) = run.verdict.take() else {
            return;
        };
        let agent = run.agent;
        let min = self
            .agent(agent)
            .and_then(|a| a.spec().advisor.as_ref())
            .map_or(1.0, |s| s.min_confidence);
        let (verdict, note) = match advice {
            Ok(d) => {
                let j = crate::advice::Judgement::of(&base, &d, min);
                let note = format!(
                    "; the advisor: {} ({})",
                    d.action.as_str(),
                    j.describe(&base, min)
                );
                match j {
                    crate::advice::Judgement::Stricter => (d, note),
                    _ => (*base, note),
                }
            }
            Err(e) => (
                *base,
                format!("; no advice ({e}): the rules' verdict stands"),
            ),
        };
        self.diagnosed(now.mono, id, &verdict, &note);
    }

    /// What the edge gathered for a `collect` step.
    pub(super) fn on_runbook_evidence(&mut self, now: Now, id: u64, lines: Vec<String>) {
        let Some(run) = self.runbooks.awaiting(id) else {
            return;
        };
        let n = lines.len();
        run.evidence = lines;
        self.step_done(now.mono, id, true, format!("{n} line(s) of evidence"));
    }

    /// How an `exec` step ended.
    pub(super) fn on_runbook_exec(&mut self, now: Now, id: u64, result: Result<String, String>) {
        if self.runbooks.awaiting(id).is_none() {
            return;
        }
        match result {
            Ok(out) => self.step_done(now.mono, id, true, out),
            Err(why) => self.step_done(now.mono, id, false, why),
        }
    }
}

enum Intake {
    Queued,
    Unmatched,
    Refused(Option<String>, String),
    /// Its agent has a runbook at work.
    Busy(String, String),
}
