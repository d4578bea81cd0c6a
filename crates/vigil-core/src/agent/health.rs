//! Health checks of the running agent, and the stall that follows when they fail.

use std::time::Instant;

use super::{Agent, Failure, Outbox, Phase, Run, Then, TimerKind};
use crate::action::Action;
use crate::checks::{CheckOutput, NotifyMessage, Observation};
use crate::diagnosis::FailureCause;
use crate::records;
use crate::time::Now;

impl Agent {
    /// Mirror the checks' deadlines into the timer table.
    pub(crate) fn sync_check_timers(&mut self) {
        let n = self.checks.checks.len();
        for i in 0..n {
            let due = self.checks.checks[i].due;
            self.timers.set(TimerKind::Check(i as u16), due);
        }
        for (kind, _) in self.timers.armed() {
            if let TimerKind::Check(i) = kind
                && i as usize >= n
            {
                self.timers.set(kind, None);
            }
        }
    }

    /// vigil's own loop did not run until `now`: silence is measured from here at the earliest.
    pub(crate) fn vigil_was_blind(&mut self, now: Instant) {
        self.checks.vigil_was_blind(now);
    }

    pub(crate) fn on_check_due(&mut self, now: Now, index: usize, out: &mut Outbox) {
        let mut outputs = Vec::new();
        self.checks
            .on_due(index, now, &self.spec.quiet, &mut outputs);
        self.check_outputs(now, outputs, out);
    }

    pub(crate) fn on_check_result(
        &mut self,
        now: Now,
        index: usize,
        generation: u64,
        observation: Observation,
        out: &mut Outbox,
    ) {
        let mut outputs = Vec::new();
        self.checks.on_result(
            index,
            generation,
            observation,
            now,
            &self.spec.quiet,
            &mut outputs,
        );
        self.check_outputs(now, outputs, out);
    }

    /// A `NOTIFY_SOCKET` datagram from a process of `id`; a run that has ended (a datagram
    /// queued before its exit was handled) speaks for nobody.
    pub(crate) fn on_notify(
        &mut self,
        now: Now,
        id: crate::event::RunId,
        message: &NotifyMessage,
        out: &mut Outbox,
    ) {
        let run = match self.phase {
            Phase::Starting(run) | Phase::Running(run) if run.pid.is_some() && run.id == id => run,
            _ => return,
        };
        let mut outputs = Vec::new();
        let became_ready = self.checks.on_notify(message, now, &mut outputs);
        if became_ready && matches!(self.phase, Phase::Starting(_)) {
            self.become_running(now.mono, run);
        }
        self.check_outputs(now, outputs, out);
    }

    /// A heartbeat through the API. Returns whether the agent has an `api` check to take it.
    pub(crate) fn on_api_heartbeat(&mut self, now: Now, out: &mut Outbox) -> bool {
        let mut outputs = Vec::new();
        let took = self.checks.on_api_heartbeat(now, &mut outputs);
        self.check_outputs(now, outputs, out);
        took
    }

    fn check_outputs(&mut self, now: Now, outputs: Vec<CheckOutput>, out: &mut Outbox) {
        for output in outputs {
            match output {
                CheckOutput::Probe(index) => out.push(Action::RunCheck {
                    agent: self.id,
                    check: index,
                    generation: self.checks.generation,
                }),
                CheckOutput::Changed { index, from } => {
                    let c = &self.checks.checks[index];
                    out.audit(records::check(
                        self.name(),
                        &c.spec,
                        from,
                        c.status.verdict,
                        &c.status.detail,
                    ));
                }
                CheckOutput::Stalled { index, reason } => {
                    self.stall(now.mono, index, reason, out);
                    return;
                }
                CheckOutput::AllOk => {
                    if self.had_failure {
                        self.had_failure = false;
                        out.audit(records::recovered(
                            self.name(),
                            format!(
                                "every check passes again (last failure: {})",
                                self.last_problem.as_deref().unwrap_or("unknown")
                            ),
                        ));
                    }
                }
            }
        }
    }

    /// Alive but not working: stop it and let the policy decide what follows, as for a crash.
    fn stall(&mut self, now: Instant, index: usize, reason: String, out: &mut Outbox) {
        let run: Run = match self.phase {
            Phase::Starting(run) | Phase::Running(run) => run,
            _ => return,
        };
        self.last_problem = Some(reason.clone());
        let failure = Failure {
            reason: reason.clone(),
            cause: FailureCause::Stall,
            uptime: Some(now.saturating_duration_since(run.since)),
            verdict: None,
            spawn_error: None,
            run: Some(run.id),
        };
        let c = &self.checks.checks[index];
        let (spec, failures) = (c.spec.clone(), c.status.consecutive_failures);
        if run.pid.is_some()
            && let Some(wait) = self.investigation_wait()
        {
            out.audit(records::stalled(
                self.name(),
                &reason,
                &spec,
                failures,
                Some(wait),
            ));
            self.investigate(now, run, failure, wait, out);
            return;
        }
        let entry = records::stalled(self.name(), &reason, &spec, failures, None);
        self.begin_stop(now, Then::Heal(Box::new(failure)), entry, out);
    }
}
