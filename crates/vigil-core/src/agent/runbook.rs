//! What a runbook may do to an agent: restart it through its policy and budget (never around
//! them), wait for it to be healthy with fresh evidence, and quarantine it when the runbook
//! fails and says escalate.

use std::time::Instant;

use super::{Agent, Outbox, Phase, Then};
use crate::checks::Verdict;
use crate::records::{self, Budget};

impl Agent {
    /// A runbook's restart: refused when a restart is not the policy's to give (quarantined,
    /// held, stopped by a person, the budget used up); counted against the budget otherwise.
    pub(crate) fn runbook_restart(
        &mut self,
        now: Instant,
        runbook: &str,
        out: &mut Outbox,
    ) -> Result<&'static str, RestartRefused> {
        let policy = &self.spec.policy;
        match self.phase {
            Phase::Quarantined { ref reason } => {
                return Err(RestartRefused::NotNow(format!(
                    "it is quarantined ({reason})"
                )));
            }
            _ if self.waiting.is_some() || matches!(self.phase, Phase::Waiting { .. }) => {
                let on = self
                    .waiting
                    .as_deref()
                    .map_or("what it depends on", |w| w.on.as_str());
                return Err(RestartRefused::NotNow(format!(
                    "it is held, waiting for {on}"
                )));
            }
            _ if !self.want_running => {
                return Err(RestartRefused::NotNow("it was stopped by a person".into()));
            }
            Phase::Stopping { .. } => {
                return Err(RestartRefused::NotNow("it is being stopped already".into()));
            }
            _ => {}
        }
        let used = self.restarts.count(now, policy.window);
        if used >= policy.max_restarts {
            return Err(RestartRefused::Budget(format!(
                "its restart budget is used up ({used} of {} in the last {})",
                policy.max_restarts,
                crate::time::human_duration(policy.window)
            )));
        }
        self.restarts.record(now, policy.window);
        self.total_restarts += 1;
        let budget = Budget {
            used: used + 1,
            max: policy.max_restarts,
            total: self.total_restarts,
        };
        let entry = records::restart_automatic(
            self.name(),
            format!("restart by runbook {runbook}"),
            budget,
            "runbook",
            None,
        );
        match self.phase {
            Phase::Starting(_) | Phase::Running(_) => {
                let entry = entry.meta("signal", self.spec.stop_signal.to_string());
                self.begin_stop(now, Then::Start, entry, out);
                Ok("restarting it")
            }
            _ => {
                self.leave_rest();
                out.audit(entry);
                self.spawn(now, true, out);
                Ok("starting it")
            }
        }
    }

    /// Running, every check passing, each on evidence newer than `since` (a progress check: a
    /// sign of progress made since then). Without checks: running.
    pub fn healthy_since(&self, since: Instant) -> bool {
        if !self.level().healthy {
            return false;
        }
        self.checks.checks.iter().all(|c| {
            // A progress check (it has a `max_age`): progress made since; any other: a
            // verdict reached since.
            let fresh = if c.spec.max_age.is_some() {
                c.status.last_progress.is_some_and(|t| t >= since)
            } else {
                c.status.at.is_some_and(|t| t >= since)
            };
            c.status.verdict == Verdict::Ok && fresh
        })
    }

    /// A runbook failed and says escalate: quarantined (stopped first if it runs), a human
    /// is told why.
    pub(crate) fn runbook_quarantine(&mut self, now: Instant, reason: String, out: &mut Outbox) {
        if matches!(self.phase, Phase::Quarantined { .. }) {
            return;
        }
        let entry = records::escalated_runbook(self.name(), &reason);
        self.escalated = true;
        self.last_problem = Some(reason.clone());
        match self.phase {
            Phase::Starting(_) | Phase::Running(_) => {
                self.begin_stop(now, Then::Quarantine(reason), entry, out);
            }
            Phase::Stopping { ref mut then, .. } => {
                out.audit(entry);
                *then = Then::Quarantine(reason);
            }
            _ => {
                out.audit(entry);
                self.timers.set(super::TimerKind::Restart, None);
                self.phase = Phase::Quarantined { reason };
            }
        }
        // Whatever it waited for, it now waits for a person; its checks count again when
        // they let it run.
        self.waiting = None;
        self.checks.upstream_down = false;
    }
}

/// Why a runbook's restart was not made.
#[derive(Debug)]
pub(crate) enum RestartRefused {
    /// Not the runbook's to do now: the agent is held, quarantined, stopped by a person or
    /// being stopped. The runbook is called off, never escalated for it.
    NotNow(String),
    /// The policy says no more restarts: the runbook has failed.
    Budget(String),
}
