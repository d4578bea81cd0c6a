//! The agents an agent depends on: how far along it is for its own dependents (`level`), what
//! it does while one of its upstreams is down (it waits: not started, not restarted, its
//! stall verdicts not counted, no budget spent) and once that one is back; and a stall of an
//! output it produces, found by another agent's check (`produced_by`), which is its own.

use std::time::Instant;

use super::{Agent, Failure, Outbox, Phase, Then};
use crate::checks::{CheckSpec, Verdict};
use crate::graph::{Level, OnUpstreamRestart};
use crate::records;
use crate::time::Now;

/// An agent is held back by an upstream that is down.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Waiting {
    /// The upstream's name.
    pub on: String,
    /// What that upstream was doing when the wait began (`stalled`, `quarantined`, …).
    pub why: String,
    pub since: Instant,
    /// Held by this fleet incident rather than by an upstream.
    pub incident: Option<u64>,
    /// The incident's cause (saved with the hold).
    pub cause: Option<crate::incident::Cause>,
}

/// A check of `watcher` found the output of `producer` stale: a stall of `producer`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Blame {
    pub producer: String,
    pub watcher: String,
    pub spec: CheckSpec,
    pub reason: String,
}

impl Agent {
    /// How far along it is, as the agents that depend on it see it. An agent that is itself
    /// waiting, or whose stall is being investigated, is neither running nor healthy for them.
    pub fn level(&self) -> Level {
        let running = matches!(self.phase, Phase::Running(_))
            && self.waiting.is_none()
            && self.investigation.is_none();
        Level {
            running,
            healthy: running && self.checks.healthy(),
        }
    }

    /// Why it is not up, in a word or two, for what waits for it.
    pub(crate) fn down_why(&self) -> String {
        if let Some(w) = &self.waiting {
            return format!("waiting for {}", w.on);
        }
        match &self.phase {
            Phase::Stopped => "stopped",
            Phase::Starting(_) => "starting",
            Phase::Running(_) if self.investigation.is_some() => "stalled",
            Phase::Running(_)
                if self
                    .checks
                    .checks
                    .iter()
                    .any(|c| c.status.verdict == Verdict::Failing) =>
            {
                "failing a check"
            }
            Phase::Running(_) => "not yet healthy",
            Phase::Stopping {
                then: Then::Heal(f),
                ..
            } if f.cause == crate::diagnosis::FailureCause::Stall => "stalled",
            Phase::Stopping { .. } => "stopping",
            Phase::Backoff { .. } => "crashed, waiting to restart",
            Phase::Quarantined { .. } => "quarantined",
            Phase::Conflict { .. } => "in conflict",
            Phase::Waiting { .. } => "waiting",
            Phase::Standby => "on standby (another node's)",
        }
        .to_string()
    }

    /// The upstream it waits for, what that one was doing, and since when.
    pub fn waiting_on(&self) -> Option<(&str, &str, Instant)> {
        self.waiting
            .as_deref()
            .map(|w| (w.on.as_str(), w.why.as_str(), w.since))
    }

    /// The supervisor's verdict on its upstreams: `Some((name, why))` for the first that is
    /// down, `None` when all are up as each edge requires.
    pub(crate) fn set_upstream(
        &mut self,
        now: Instant,
        down: Option<(String, String)>,
        out: &mut Outbox,
    ) {
        // An incident's hold outlasts what upstreams do; its release looks at them again.
        if self
            .waiting
            .as_deref()
            .is_some_and(|w| w.incident.is_some())
        {
            return;
        }
        match (self.waiting.as_deref_mut(), down) {
            (None, None) => {}
            (Some(w), Some((on, why))) => {
                w.on = on;
                w.why = why;
            }
            (None, Some((on, why))) => {
                self.waiting = Some(Box::new(Waiting {
                    on,
                    why,
                    since: now,
                    incident: None,
                    cause: None,
                }));
                self.hold(out);
            }
            (Some(_), None) => {
                if let Some(w) = self.waiting.take() {
                    self.resume(now, *w, out);
                }
            }
        }
    }

    /// An upstream went down: what the agent is doing now is held.
    fn hold(&mut self, out: &mut Outbox) {
        self.checks.upstream_down = true;
        let what = match self.phase {
            Phase::Running(_) | Phase::Starting(_) => {
                // A stall being investigated is the upstream's, not this agent's.
                self.forget_investigation();
                "its stall verdicts and exits are held: it is not restarted and spends no \
                 restart budget until then"
            }
            Phase::Backoff { until, retry } => {
                self.timers.set(super::TimerKind::Restart, None);
                self.phase = Phase::Waiting {
                    backoff: Some((until, retry)),
                };
                "its waiting restart is held until that one is back"
            }
            _ => return,
        };
        if let Some(w) = self.waiting.as_deref() {
            out.audit(records::waiting(&self.spec.name, &w.on, &w.why, what));
        }
    }

    /// The upstream it waited for is back.
    pub(super) fn resume(&mut self, now: Instant, w: Waiting, out: &mut Outbox) {
        self.checks.upstream_down = false;
        let waited = now.saturating_duration_since(w.since);
        match self.phase {
            Phase::Waiting {
                backoff: Some((until, retry)),
            } => {
                // Its own failure, from before the upstream fell, still has its wait and its
                // budget: the restart comes when it was due (at once if that has passed).
                let at = until.max(now);
                out.audit(records::resumed(
                    self.name(),
                    &w.on,
                    waited,
                    &format!(
                        "its own restart is due in {}",
                        crate::time::human_duration(at.saturating_duration_since(now))
                    ),
                ));
                self.phase = Phase::Backoff { until: at, retry };
                if at > now {
                    self.timers.set(super::TimerKind::Restart, Some(at));
                } else {
                    self.on_restart_due(now, out);
                }
            }
            Phase::Waiting { backoff: None } => {
                out.audit(records::resumed(self.name(), &w.on, waited, "starting it"));
                self.phase = Phase::Stopped;
                self.spawn(now, true, out);
            }
            Phase::Running(_) if self.spec.on_upstream_restart == OnUpstreamRestart::Restart => {
                let entry = records::restart_requested(
                    self.name(),
                    format!(
                        "{} is back after {}: restarting it (on_upstream_restart = \"restart\")",
                        w.on,
                        crate::time::human_duration(waited)
                    ),
                    Some(self.spec.stop_signal),
                )
                .meta("upstream", w.on.as_str());
                self.begin_stop(now, Then::Start, entry, out);
            }
            Phase::Running(_) | Phase::Starting(_) => {
                self.checks.resume_after_upstream(now);
                out.audit(records::resumed(
                    self.name(),
                    &w.on,
                    waited,
                    "its checks start over with their grace period, then the usual rules apply",
                ));
            }
            _ => {}
        }
    }

    /// A failure while an upstream is down is that upstream's: no diagnosis, no restart, no
    /// budget. Returns whether it was held.
    pub(super) fn hold_failure(&mut self, failure: &Failure, out: &mut Outbox) -> bool {
        let Some(w) = self.waiting.as_deref() else {
            return false;
        };
        out.audit(records::waiting(
            self.name(),
            &w.on,
            &w.why,
            &format!(
                "{}: not restarted, no restart budget spent; it starts once {} is back",
                failure.reason, w.on
            ),
        ));
        self.phase = Phase::Waiting { backoff: None };
        true
    }

    /// A stall this agent's check found in an output whose producer is not configured (any
    /// more): it is this agent's own, as without `produced_by`.
    pub(crate) fn own_stall(&mut self, now: Now, blame: Blame, out: &mut Outbox) {
        if !matches!(self.phase, Phase::Running(_) | Phase::Starting(_))
            || self.investigation.is_some()
        {
            return;
        }
        if self.stall_suspended(now.mono) {
            self.note_suspended_blame(&blame.reason, out);
            return;
        }
        let name = self.name().to_string();
        let failures = blame.spec.failure_threshold;
        let record = |wait| records::stalled(&name, &blame.reason, &blame.spec, failures, wait);
        self.stall_with(now, blame.reason.clone(), record, out);
    }

    /// A check of another agent found this agent's output stale: a stall of this agent.
    pub(crate) fn blamed(&mut self, now: Now, blame: Blame, out: &mut Outbox) {
        // Already stalled, stopping, down or held back: that is being dealt with.
        if !matches!(self.phase, Phase::Running(_))
            || self.investigation.is_some()
            || self.waiting.is_some()
        {
            return;
        }
        if self.stall_suspended(now.mono) {
            self.note_suspended_blame(&blame.reason, out);
            return;
        }
        let reason = format!(
            "output stale: {} (seen by {})",
            blame.reason.trim_start_matches("stalled: "),
            blame.watcher
        );
        let name = self.name().to_string();
        let record =
            |wait| records::stalled_output(&name, &reason, &blame.watcher, &blame.spec, wait);
        self.stall_with(now, reason.clone(), record, out);
    }
}
