//! Every audit record vigil writes is built here: this file is the journal's schema. Each
//! function names one kind of record and fixes its reason wording and its metadata keys; the
//! README's "The audit journal" documents the same list. The edge adds `ts` when it writes.

use std::time::Duration;

use crate::audit::{AuditAction, AuditEntry};
use crate::checks::{CheckSpec, Verdict};
use crate::diagnosis::Diagnosis;
use crate::event::{ExitStatus, FailedAction, RunId, SpawnFailure};
use crate::signal::Signal;
use crate::time::{human_duration, millis};

fn entry(agent: &str, action: AuditAction, reason: impl Into<String>) -> AuditEntry {
    AuditEntry::new(Some(agent), action, reason)
}

fn with_diagnosis(entry: AuditEntry, d: Option<&Diagnosis>) -> AuditEntry {
    match d {
        Some(d) => entry.meta("diagnosis", d.to_json()),
        None => entry,
    }
}

/// `start`: the agent is started (autostart, by a person, after a reset).
pub(crate) fn start(agent: &str, reason: impl Into<String>) -> AuditEntry {
    entry(agent, AuditAction::Start, reason)
}

/// `stop`: the agent is asked to stop; `signal` when one is sent.
pub(crate) fn stop(agent: &str, reason: impl Into<String>, signal: Option<Signal>) -> AuditEntry {
    let e = entry(agent, AuditAction::Stop, reason);
    match signal {
        Some(s) => e.meta("signal", s.to_string()),
        None => e,
    }
}

/// `stop` of a stalled agent, with the verdict that decides what follows.
pub(crate) fn stop_stalled(agent: &str, verdict: &Diagnosis, signal: Signal) -> AuditEntry {
    stop(
        agent,
        format!("stopping the stalled agent: {}", verdict.summary()),
        Some(signal),
    )
    .meta("cause", "stall")
    .meta("diagnosis", verdict.to_json())
}

/// The restart budget as an automatic restart leaves it.
pub(crate) struct Budget {
    pub used: u32,
    pub max: u32,
    pub total: u64,
}

/// `restart` decided by vigil after a failure; it counts against the budget.
pub(crate) fn restart_automatic(
    agent: &str,
    reason: impl Into<String>,
    budget: Budget,
    cause: &str,
    diagnosis: Option<&Diagnosis>,
) -> AuditEntry {
    let e = entry(agent, AuditAction::Restart, reason)
        .meta("restarts_in_window", budget.used)
        .meta("budget_remaining", budget.max.saturating_sub(budget.used))
        .meta("total_restarts", budget.total)
        .meta("cause", cause);
    with_diagnosis(e, diagnosis)
}

/// `restart` asked for by a person or a reload; it does not count against the budget.
pub(crate) fn restart_requested(
    agent: &str,
    reason: impl Into<String>,
    signal: Option<Signal>,
) -> AuditEntry {
    let e = entry(agent, AuditAction::Restart, reason);
    match signal {
        Some(s) => e.meta("signal", s.to_string()),
        None => e,
    }
}

/// `exit`: the main process of a run ended (`expected`: vigil asked for it).
pub(crate) fn exit(
    agent: &str,
    pid: Option<u32>,
    status: ExitStatus,
    uptime: Duration,
    expected: bool,
) -> AuditEntry {
    let reason = if expected {
        format!("stopped: {status} after {}", human_duration(uptime))
    } else {
        format!("{status} after {}", human_duration(uptime))
    };
    let mut e = entry(agent, AuditAction::Exit, reason)
        .meta("pid", pid.unwrap_or_default())
        .meta("uptime_s", uptime.as_secs_f64());
    if !expected {
        e = e.unsuccessful();
    }
    if let Some(code) = status.code {
        e = e.meta("exit_code", code);
    }
    if let Some(sig) = status.signal {
        e = e
            .meta("signal", sig.name())
            .meta("core_dumped", status.core_dumped);
    }
    if status.oom_killed {
        e = e.meta("oom_killed", true);
    }
    e
}

/// `kill`: the stop signal was not obeyed within `stop_timeout`.
pub(crate) fn kill_after_timeout(
    agent: &str,
    stop_timeout: Duration,
    stop_signal: Signal,
    pid: Option<u32>,
) -> AuditEntry {
    entry(
        agent,
        AuditAction::Kill,
        format!(
            "still running {} after {}: sending SIGKILL to its process tree",
            human_duration(stop_timeout),
            stop_signal
        ),
    )
    .meta("pid", pid.unwrap_or_default())
}

/// `kill`: processes of a run that ended on its own are left: members of its process group,
/// and `escaped` ones that left the group.
pub(crate) fn kill_leftovers(agent: &str, pid: u32, group: bool, escaped: &[u32]) -> AuditEntry {
    let what = match (group, escaped.len()) {
        (true, 0) => "its process group did not".to_string(),
        (false, n) => format!("{n} process(es) that escaped its process group did not"),
        (true, n) => {
            format!("its process group and {n} process(es) that escaped the group did not")
        }
    };
    entry(
        agent,
        AuditAction::Kill,
        format!("the run of pid {pid} ended but {what}: SIGKILL to what is left"),
    )
    .meta("pid", pid)
    .meta("pids", escaped.to_vec())
}

/// `kill`: a process was created for a run vigil no longer wants (it must not become a
/// second copy).
pub(crate) fn kill_unwanted(agent: &str, run: RunId, pid: u32) -> AuditEntry {
    entry(
        agent,
        AuditAction::Kill,
        format!("pid {pid} was created for {run}, which is no longer wanted: SIGKILL"),
    )
    .meta("pid", pid)
}

/// `backoff`: the restart waits (cooldown, crash-loop backoff, throttling).
pub(crate) fn backoff(
    agent: &str,
    reason: impl Into<String>,
    delay: Duration,
    streak: u32,
    used: u32,
    diagnosis: &Diagnosis,
) -> AuditEntry {
    entry(agent, AuditAction::Backoff, reason)
        .meta("delay_ms", millis(delay))
        .meta("crash_streak", streak)
        .meta("restarts_in_window", used)
        .meta("diagnosis", diagnosis.to_json())
}

/// `rate_limited`: no restart, the budget is used up.
pub(crate) fn rate_limited(
    agent: &str,
    reason: impl Into<String>,
    used: u32,
    max: u32,
) -> AuditEntry {
    entry(agent, AuditAction::RateLimited, reason)
        .unsuccessful()
        .meta("restarts_in_window", used)
        .meta("max_restarts", max)
}

/// `escalated`: quarantined because the diagnosis says a restart cannot help.
pub(crate) fn escalated_diagnosis(agent: &str, reason: &str, d: &Diagnosis) -> AuditEntry {
    entry(
        agent,
        AuditAction::Escalated,
        format!("quarantined: {reason}; fix the cause, then run `vigil reset {agent}`"),
    )
    .unsuccessful()
    .meta("cause", "diagnosis")
    .meta("diagnosis", d.to_json())
}

/// `escalated`: quarantined because a runbook for it failed (`on_failure = "escalate"`).
pub(crate) fn escalated_runbook(agent: &str, reason: &str) -> AuditEntry {
    entry(
        agent,
        AuditAction::Escalated,
        format!("quarantined: {reason}; a human must look, then run `vigil reset {agent}`"),
    )
    .unsuccessful()
    .meta("cause", "runbook")
}

/// `escalated`: quarantined because the budget is used up.
pub(crate) fn escalated_budget_quarantine(agent: &str, reason: &str) -> AuditEntry {
    entry(
        agent,
        AuditAction::Escalated,
        format!("quarantined: {reason}; a human must look, then run `vigil reset {agent}`"),
    )
    .unsuccessful()
    .meta("cause", "budget_exhausted")
    .meta("on_exhausted", "quarantine")
}

/// `escalated`: the budget is used up; vigil tries again after `retry_in`.
pub(crate) fn escalated_budget_retry(agent: &str, budget: &str, retry_in: Duration) -> AuditEntry {
    entry(
        agent,
        AuditAction::Escalated,
        format!(
            "restart budget exhausted ({budget}); retrying in {}",
            human_duration(retry_in)
        ),
    )
    .unsuccessful()
    .meta("cause", "budget_exhausted")
    .meta("on_exhausted", "retry_after")
    .meta("retry_in_ms", millis(retry_in))
}

/// `action_failed`: the edge could not carry out an action.
pub(crate) fn action_failed(
    agent: &str,
    run: RunId,
    action: FailedAction,
    error: &str,
) -> AuditEntry {
    entry(
        agent,
        AuditAction::ActionFailed,
        format!("{action} to the processes of {run} failed"),
    )
    .failed(error)
    .meta("run", run.0)
}

/// `action_failed`: a look for a copy of the agent outside vigil could not be made.
pub(crate) fn look_failed(agent: &str, problem: &str) -> AuditEntry {
    entry(agent, AuditAction::ActionFailed, problem).failed(problem)
}

/// `recovered`: healthy again after a failure.
pub(crate) fn recovered(agent: &str, reason: impl Into<String>) -> AuditEntry {
    entry(agent, AuditAction::Recovered, reason)
}

/// `reset`: a person cleared the budget, backoff and quarantine.
pub(crate) fn reset(agent: &str, who: &str) -> AuditEntry {
    entry(
        agent,
        AuditAction::Reset,
        format!("reset by {who}: restart budget, backoff and quarantine cleared"),
    )
}

/// `check`: a check's verdict changed.
pub(crate) fn check(
    agent: &str,
    spec: &CheckSpec,
    from: Verdict,
    to: Verdict,
    detail: &str,
) -> AuditEntry {
    let e = entry(
        agent,
        AuditAction::Check,
        format!(
            "{}: {} → {}: {detail}",
            spec.label(),
            from.as_str(),
            to.as_str()
        ),
    )
    .meta("check", spec.name.clone())
    .meta("kind", spec.kind.as_str())
    .meta("verdict", to.as_str())
    .meta("previous", from.as_str());
    // Only a failing verdict is a failure: `unknown` means vigil cannot tell (a probe that
    // could not run), which must not read as the agent failing.
    if to == Verdict::Failing {
        e.unsuccessful()
    } else {
        e
    }
}

/// `stalled`: alive but a check says it stopped working.
pub(crate) fn stalled(
    agent: &str,
    reason: &str,
    spec: &CheckSpec,
    consecutive_failures: u32,
    investigating_for: Option<Duration>,
) -> AuditEntry {
    let e = entry(agent, AuditAction::Stalled, reason)
        .unsuccessful()
        .meta("check", spec.name.clone())
        .meta("kind", spec.kind.as_str())
        .meta("consecutive_failures", consecutive_failures);
    match investigating_for {
        Some(wait) => e.meta("investigating_for_ms", millis(wait)),
        None => e,
    }
}

/// `degraded`: the agent declared itself degraded; `note` says what vigil does about it.
pub(crate) fn degraded(
    agent: &str,
    d: &crate::agent::degraded::Degradation,
    note: &str,
) -> AuditEntry {
    entry(
        agent,
        AuditAction::Degraded,
        format!("{}: {note}", d.reason),
    )
    .meta("declared", d.reason.clone())
    .meta("suspended", !d.spent)
    .meta("until_ms", d.until_ms)
}

/// `degraded_ended`: `why` it ended.
pub(crate) fn degraded_ended(agent: &str, reason: &str, why: &str) -> AuditEntry {
    entry(
        agent,
        AuditAction::DegradedEnded,
        format!("no longer degraded ({reason}): {why}"),
    )
    .meta("declared", reason)
}

/// A stall verdict not acted on: the agent declared itself degraded until `until_ms`.
pub(crate) fn stall_suspended(
    agent: &str,
    stall: &str,
    declared: &str,
    until_ms: i64,
) -> AuditEntry {
    entry(
        agent,
        AuditAction::Degraded,
        format!("{stall}: not acted on, the agent declared itself degraded ({declared})"),
    )
    .meta("declared", declared)
    .meta("suspended_stall", stall)
    .meta("until_ms", until_ms)
}

/// `stalled` of a producer: a check of another agent (`produced_by`) found its output stale.
pub(crate) fn stalled_output(
    agent: &str,
    reason: &str,
    watcher: &str,
    spec: &CheckSpec,
    investigating_for: Option<Duration>,
) -> AuditEntry {
    stalled(
        agent,
        reason,
        spec,
        spec.failure_threshold,
        investigating_for,
    )
    .meta("seen_by", watcher)
}

/// `waiting`: held back because `upstream` is down (`why`); `what` says what is held.
pub(crate) fn waiting(agent: &str, upstream: &str, why: &str, what: &str) -> AuditEntry {
    entry(
        agent,
        AuditAction::Waiting,
        format!("waiting for {upstream} ({why}): {what}"),
    )
    .meta("upstream", upstream)
    .meta("upstream_state", why)
}

/// `resumed`: the upstream it waited for is back; `what` says what follows.
pub(crate) fn resumed(agent: &str, upstream: &str, waited: Duration, what: &str) -> AuditEntry {
    entry(
        agent,
        AuditAction::Resumed,
        format!(
            "{upstream} is back after {}: {what}",
            human_duration(waited)
        ),
    )
    .meta("upstream", upstream)
    .meta("waited_ms", millis(waited))
}

/// `file_repaired`: a guarded file was mended before a start; its keys, never its values.
pub(crate) fn file_repaired(agent: &str, r: &crate::event::FileRepair) -> AuditEntry {
    let e = entry(
        agent,
        AuditAction::FileRepaired,
        format!("{} was {}: {}", r.path, r.problem, r.how),
    )
    .meta("path", r.path.as_str())
    .meta("keys", r.keys.clone());
    match &r.backup {
        Some(b) => e.meta("backup", b.as_str()),
        None => e,
    }
}

/// `spawn_failed`: the process could not be created.
pub(crate) fn spawn_failed(agent: &str, error: &SpawnFailure) -> AuditEntry {
    entry(
        agent,
        AuditAction::SpawnFailed,
        "could not start the process",
    )
    .failed(error.message.clone())
    .meta("error_kind", error.kind.as_str())
}

/// `adopted`: a live run left by a previous vigil is supervised again.
pub(crate) fn adopted(agent: &str, pid: u32) -> AuditEntry {
    entry(
        agent,
        AuditAction::Adopted,
        "still running from a previous vigil; taken over",
    )
    .meta("pid", pid)
}

/// `adopted`: a process started elsewhere, named by the agent's `adopt`, is supervised
/// instead of a new one being started.
pub(crate) fn adopted_outside(agent: &str, pid: u32, how: &str) -> AuditEntry {
    entry(
        agent,
        AuditAction::Adopted,
        format!("already running outside vigil ({how}); taken over instead of starting another"),
    )
    .meta("pid", pid)
    .meta("found_by", how)
}

/// `conflict`: not started, because a process vigil does not own runs the agent's command.
pub(crate) fn conflict(agent: &str, pid: u32, what: &str) -> AuditEntry {
    entry(
        agent,
        AuditAction::Conflict,
        format!(
            "not started: {what} — a second copy would run next to it; stop that process, or \
             `vigil start {agent} --force` to start anyway, or configure `adopt` to take it over"
        ),
    )
    .meta("pid", pid)
    .unsuccessful()
}

/// `removed`: the agent left the configuration.
pub(crate) fn removed(agent: &str) -> AuditEntry {
    entry(
        agent,
        AuditAction::Removed,
        "removed from the configuration (reload)",
    )
}

/// `removed`: a run found at startup belongs to an agent the configuration no longer has.
pub(crate) fn removed_stray(agent: &str) -> AuditEntry {
    entry(
        agent,
        AuditAction::Removed,
        "still running from a previous vigil but no longer in the configuration",
    )
}

/// `advice`: the advisor's second opinion and what vigil did with it.
pub(crate) fn advice(
    agent: &str,
    advice: &Diagnosis,
    judgement: &str,
    consequence: &str,
    base: &Diagnosis,
    applied: bool,
) -> AuditEntry {
    entry(
        agent,
        AuditAction::Advice,
        format!(
            "advisor: {} / {} (confidence {:.2}): {} — {judgement}{consequence}",
            advice.category.as_str(),
            advice.action,
            advice.confidence,
            advice.explanation,
        ),
    )
    .meta("advice", advice.to_json())
    .meta("diagnosis", base.to_json())
    .meta("applied", applied)
}

/// `llm_error`: no usable advice; the rules' verdict stands.
pub(crate) fn llm_error(agent: &str, reason: impl Into<String>, error: &str) -> AuditEntry {
    entry(agent, AuditAction::LlmError, reason).failed(error)
}

/// `vigil_start`.
pub fn vigil_start(
    version: &str,
    agents: usize,
    config: &str,
    pid: u32,
    adopted: usize,
) -> AuditEntry {
    AuditEntry::new(
        None,
        AuditAction::VigilStart,
        format!("vigil {version} started with {agents} agents from {config}"),
    )
    .meta("pid", pid)
    .meta("adopted", adopted)
}

/// `vigil_reload` that was applied.
pub fn vigil_reloaded(config: &str, changes: &crate::supervisor::ReloadReport) -> AuditEntry {
    AuditEntry::new(
        None,
        AuditAction::VigilReload,
        format!(
            "reloaded {config}: {} added, {} removed, {} restarted, {} updated in place, {} unchanged",
            changes.added.len(),
            changes.removed.len(),
            changes.restarted.len(),
            changes.updated.len(),
            changes.unchanged
        ),
    )
    .meta("added", changes.added.clone())
    .meta("removed", changes.removed.clone())
    .meta("restarted", changes.restarted.clone())
    .meta("updated", changes.updated.clone())
}

/// `vigil_reload` that was refused: nothing changed.
pub fn vigil_reload_refused(reason: &str, error: &str) -> AuditEntry {
    AuditEntry::new(None, AuditAction::VigilReload, reason).failed(error)
}

/// `vigil_stop`.
pub fn vigil_stop() -> AuditEntry {
    AuditEntry::new(
        None,
        AuditAction::VigilStop,
        "every agent stopped; vigil exits",
    )
}

/// `vigil_crash`: vigil's supervision loop panicked. `then` says what vigil does next.
pub fn vigil_crash(panic: &str, then: &str) -> AuditEntry {
    AuditEntry::new(
        None,
        AuditAction::VigilCrash,
        format!("the supervision loop panicked: {panic}; {then}"),
    )
    .unsuccessful()
}

/// `vigil_stalled`: the supervision loop ran `late` after a deadline (vigil was stopped or
/// starved); deadlines of signs of life start again from now.
pub fn vigil_stalled(late: Duration) -> AuditEntry {
    AuditEntry::new(
        None,
        AuditAction::VigilStalled,
        format!(
            "vigil's supervision loop did not run for {} (vigil stopped, or the machine overloaded); \
             signs of life sent meanwhile may still be queued, so no agent is judged stalled for that time",
            crate::checks::fmt_secs(late)
        ),
    )
    .unsuccessful()
}

/// `api_denied`: a state-changing request without a valid token.
pub fn api_denied(what: impl Into<String>) -> AuditEntry {
    AuditEntry::new(None, AuditAction::ApiDenied, what).unsuccessful()
}

/// `notified`: `channel` took a delivery of `events` (journal actions) about `agents`.
pub fn notified(channel: &str, kind: &str, events: &[String], agent: Option<&str>) -> AuditEntry {
    let what = match events {
        [one] => one.clone(),
        many => format!("{} notifications ({})", many.len(), many.join(", ")),
    };
    AuditEntry::new(
        agent,
        AuditAction::Notified,
        format!("told {channel} ({kind}): {what}"),
    )
    .meta("channel", channel)
    .meta("events", events.to_vec())
}

/// `notify_failed`: a notification of `event` to `channel` is given up.
pub fn notify_failed(
    channel: &str,
    event: &str,
    agent: Option<&str>,
    why: &str,
    kept: &str,
) -> AuditEntry {
    AuditEntry::new(
        agent,
        AuditAction::NotifyFailed,
        format!("could not tell {channel} of {event}; kept in {kept}"),
    )
    .failed(why)
    .meta("channel", channel)
    .meta("event", event)
}

/// `waiting` for an incident: a failure of `agent` is the incident's, its restart is held.
pub(crate) fn held_by_incident(
    agent: &str,
    inc: &crate::incident::Incident,
    what: &str,
) -> AuditEntry {
    entry(
        agent,
        AuditAction::Waiting,
        format!("held by incident {} ({}): {what}", inc.id, inc.cause.text),
    )
    .meta("incident", inc.id)
    .meta("cause", inc.cause.key.as_str())
}

/// `resumed` from an incident: started as its canary, or after the cause cleared.
pub(crate) fn released_by_incident(
    agent: &str,
    incident: u64,
    waited: Duration,
    what: &str,
) -> AuditEntry {
    entry(
        agent,
        AuditAction::Resumed,
        format!(
            "incident {incident}, held {}: {what}",
            human_duration(waited)
        ),
    )
    .meta("incident", incident)
    .meta("waited_ms", millis(waited))
}

fn incident_members(inc: &crate::incident::Incident) -> Vec<String> {
    inc.members.iter().map(|(_, n)| n.clone()).collect()
}

/// `incident_opened`: several agents failed for one cause.
pub(crate) fn incident_opened(
    inc: &crate::incident::Incident,
    policy: &crate::incident::IncidentPolicy,
) -> AuditEntry {
    let members = incident_members(inc);
    AuditEntry::new(
        None,
        AuditAction::IncidentOpened,
        format!(
            "incident {}: {} agents failed with {} within {} ({}); their restarts are held, \
             spending no restart budget, while vigil probes the cause: one agent at a time is \
             started as a canary, every {} at first",
            inc.id,
            members.len(),
            inc.cause.text,
            human_duration(policy.window),
            members.join(", "),
            human_duration(policy.probe_every)
        ),
    )
    .unsuccessful()
    .meta("incident", inc.id)
    .meta("cause", inc.cause.key.as_str())
    .meta("members", members)
}

/// `incident_resolved`: the cause cleared (`how`); the held agents start `spread` apart.
pub(crate) fn incident_resolved(
    inc: &crate::incident::Incident,
    lasted: Duration,
    how: &str,
    spread: Duration,
) -> AuditEntry {
    let held = inc.releases_pending();
    AuditEntry::new(
        None,
        AuditAction::IncidentResolved,
        format!(
            "incident {} ({}) resolved after {}: {how}; {}",
            inc.id,
            inc.cause.text,
            human_duration(lasted),
            match held {
                0 => "no agent is held".to_string(),
                n => format!(
                    "starting the {n} held agent(s) {} apart",
                    human_duration(spread)
                ),
            }
        ),
    )
    .meta("incident", inc.id)
    .meta("cause", inc.cause.key.as_str())
    .meta("members", incident_members(inc))
    .meta("duration_ms", millis(lasted))
    .meta("probes", inc.probes)
}

/// `alert_received`: a notification from Alertmanager, and what became of its alerts.
pub fn alert_received(
    receiver: &str,
    status: &str,
    names: &[String],
    answer: &crate::runbook::AlertAnswer,
) -> AuditEntry {
    AuditEntry::new(
        None,
        AuditAction::AlertReceived,
        format!(
            "{} alert(s) {status} from Alertmanager ({}): {} runbook(s) started or queued, \
             {} repeat(s), {} refused, {} cancelled, {} matching no runbook",
            names.len(),
            names.join(", "),
            answer.accepted,
            answer.duplicates,
            answer.refused,
            answer.cancelled,
            answer.unmatched
        ),
    )
    .meta("receiver", receiver)
    .meta("status", status)
    .meta("alerts", names.to_vec())
}

/// `alert_refused`: an alert vigil will not act on, and why.
pub(crate) fn alert_refused(
    alert: &crate::runbook::Alert,
    agent: Option<&str>,
    why: &str,
) -> AuditEntry {
    AuditEntry::new(
        agent,
        AuditAction::AlertRefused,
        format!("alert {} not acted on: {why}", alert.name()),
    )
    .unsuccessful()
    .meta("alertname", alert.name())
    .meta("fingerprint", alert.fingerprint.as_str())
}

fn run_entry(run: &crate::runbook::Run, action: AuditAction, reason: String) -> AuditEntry {
    entry(&run.agent_name, action, reason)
        .meta("runbook", run.runbook.as_str())
        .meta("run", run.id)
        .meta("alertname", run.alert.as_str())
        .meta("fingerprint", run.fingerprint.as_str())
}

/// `runbook_started`.
pub(crate) fn runbook_started(run: &crate::runbook::Run, steps: usize) -> AuditEntry {
    run_entry(
        run,
        AuditAction::RunbookStarted,
        format!(
            "runbook {} (run {}) for alert {}: {steps} step(s)",
            run.runbook, run.id, run.alert
        ),
    )
}

/// `runbook_step`: one step and its outcome.
pub(crate) fn runbook_step(
    run: &crate::runbook::Run,
    label: &str,
    ok: bool,
    detail: &str,
) -> AuditEntry {
    let e = run_entry(
        run,
        AuditAction::RunbookStep,
        format!(
            "runbook {} step {} ({label}): {detail}",
            run.runbook,
            run.step + 1
        ),
    )
    .meta("step", run.step + 1)
    .meta("label", label);
    if ok { e } else { e.failed(detail) }
}

/// `runbook_succeeded`.
pub(crate) fn runbook_succeeded(run: &crate::runbook::Run, took: Duration) -> AuditEntry {
    run_entry(
        run,
        AuditAction::RunbookSucceeded,
        format!(
            "runbook {} for alert {}: every step succeeded in {}",
            run.runbook,
            run.alert,
            human_duration(took)
        ),
    )
}

/// `runbook_failed`: at which step, why, and what follows.
pub(crate) fn runbook_failed(
    run: &crate::runbook::Run,
    step: &str,
    why: &str,
    then: &str,
) -> AuditEntry {
    run_entry(
        run,
        AuditAction::RunbookFailed,
        format!(
            "runbook {} for alert {} failed at {step}: {why}; {then}",
            run.runbook, run.alert
        ),
    )
    .failed(why)
    .meta("failed_step", step)
}

/// `runbook_cancelled`.
pub(crate) fn runbook_cancelled(run: &crate::runbook::Run, why: &str) -> AuditEntry {
    run_entry(
        run,
        AuditAction::RunbookCancelled,
        format!(
            "runbook {} for alert {} called off: {why}",
            run.runbook, run.alert
        ),
    )
}

// ----- exclusive placement: leases ------------------------------------------------------

/// `lease_acquired`: this node holds the agent's lease at `epoch`.
pub(crate) fn lease_acquired(agent: &str, epoch: u64, what: &str) -> AuditEntry {
    entry(
        agent,
        AuditAction::LeaseAcquired,
        format!("this node holds its lease (fencing epoch {epoch}): {what}"),
    )
    .meta("epoch", epoch)
}

/// `lease_lost`: this node no longer holds the lease it held at `epoch`; `why` says why.
pub(crate) fn lease_lost(agent: &str, epoch: u64, why: &str) -> AuditEntry {
    entry(
        agent,
        AuditAction::LeaseLost,
        format!("its lease (epoch {epoch}) is no longer this node's: {why}"),
    )
    .meta("epoch", epoch)
}

/// `fenced`: the run is stopped because its lease is lost or about to lapse.
pub(crate) fn fenced(agent: &str, why: &str, signal: Signal) -> AuditEntry {
    entry(
        agent,
        AuditAction::Fenced,
        format!("stopping it: {why}; another node may run it next, never two at once"),
    )
    .meta("signal", signal.to_string())
}

/// `standby`: the agent is not run on this node for now; `why` says who runs it or why not.
pub(crate) fn standby(agent: &str, why: &str) -> AuditEntry {
    entry(agent, AuditAction::Standby, format!("not run here: {why}"))
}
