//! Before a start: what the edge found running outside vigil's own runs, and what follows —
//! the start, a take-over of the agent's own process started elsewhere (`adopt`), or a
//! conflict that waits for a human. "Never two copies of an agent" covers copies vigil did
//! not start.
//!
//! While the edge looks, nothing exists for the run: a stop asked for meanwhile is done at
//! once (a `/proc` read stuck on a hung process must not hold a stop or vigil's shutdown), and
//! the answer that comes later is for a run that is over, and is dropped.

use std::time::Instant;

use super::{Agent, Outbox, Phase, Run, Then, TimerKind};
use crate::action::Action;
use crate::audit::AuditEntry;
use crate::event::{Outside, RunId};
use crate::records;
use crate::time::later;

impl Agent {
    pub(crate) fn on_looked(
        &mut self,
        now: Instant,
        id: RunId,
        outside: Outside,
        out: &mut Outbox,
    ) {
        let run = match self.phase {
            Phase::Starting(run) if run.id == id && run.looking && run.guarding.is_none() => run,
            // An answer for a run this agent no longer starts: nothing was created for it.
            _ => return,
        };
        if let Some(then) = self.off_look.take() {
            self.found_while_off(now, run, outside, then, out);
            return;
        }
        let outside = match outside {
            Outside::Adoptable { pid, .. } if !out.targetable(pid) => Outside::Copy {
                pid,
                what: format!("pid {pid} is vigil itself or init, never an agent"),
            },
            other => other,
        };
        match outside {
            // Unknown: the start that follows says what is wrong (the engine or bus is down).
            // An upstream fell while it looked: it waits for it rather than starts.
            Outside::Nothing | Outside::Unknown { .. }
                if self.wait_for_upstream("looked before its start", out) => {}
            Outside::Nothing | Outside::Unknown { .. } => {
                self.phase = Phase::Starting(Run {
                    looking: false,
                    ..run
                });
                out.push(Action::Spawn {
                    agent: self.id,
                    run: run.id,
                    look_first: false,
                    fence: run.fence,
                });
            }
            Outside::Adoptable {
                pid,
                started,
                age,
                how,
            } => {
                let run = Run {
                    pid: Some(pid),
                    since: now.checked_sub(age).unwrap_or(now),
                    outside: true,
                    looking: false,
                    ..run
                };
                out.audit(records::adopted_outside(self.name(), pid, &how));
                out.push(Action::Adopt {
                    agent: self.id,
                    run: id,
                    pid,
                    started,
                });
                // Already up: no readiness to wait for.
                self.checks.new_run();
                self.phase = Phase::Running(run);
                self.checks.start(now, run.since);
                self.timers.set(
                    TimerKind::Stable,
                    Some(later(now, self.spec.policy.stable_after)),
                );
            }
            Outside::Copy { pid, what } => {
                out.audit(records::conflict(self.name(), pid, &what));
                self.last_problem = Some(format!("not started: {what}"));
                self.phase = Phase::Conflict { pid, reason: what };
            }
        }
    }

    /// As vigil starts, an agent that must not run — stopped by a person, or quarantined —
    /// whose target lives on without vigil (a unit, a container): a vigil killed while it
    /// stopped it left it running. The edge looks; whatever it finds is taken over and stopped,
    /// and nothing is started.
    pub(crate) fn look_while_off(&mut self, now: Instant, out: &mut Outbox) {
        if !self.spec.external {
            return;
        }
        let then = match &self.phase {
            Phase::Stopped if self.held => Then::Stay,
            Phase::Quarantined { reason } => Then::Quarantine(reason.clone()),
            _ => return,
        };
        self.off_look = Some(then);
        let run = Run {
            id: out.new_run(),
            pid: None,
            since: now,
            outside: false,
            looking: true,
            guarding: None,
            fence: None,
        };
        self.phase = Phase::Starting(run);
        out.push(Action::Spawn {
            agent: self.id,
            run: run.id,
            look_first: true,
            fence: None,
        });
    }

    fn found_while_off(
        &mut self,
        now: Instant,
        run: Run,
        outside: Outside,
        then: Then,
        out: &mut Outbox,
    ) {
        let (pid, started, age, how) = match outside {
            Outside::Adoptable {
                pid,
                started,
                age,
                how,
            } if out.targetable(pid) => (pid, started, age, how),
            Outside::Unknown { why } => {
                // Nobody can tell whether a copy runs: say so, where a person will see it.
                let problem = format!(
                    "could not look for a copy left running by an earlier vigil ({why}); if it \
                     runs, `vigil stop` it"
                );
                out.audit(records::look_failed(self.name(), &problem));
                self.last_problem = Some(problem);
                self.phase = Phase::Stopped;
                self.after_stop(now, then, out);
                return;
            }
            // Nothing runs (or not a run of it): it stays as it was.
            _ => {
                self.phase = Phase::Stopped;
                self.after_stop(now, then, out);
                return;
            }
        };
        let why = match &then {
            Then::Quarantine(reason) => format!("it is quarantined ({reason})"),
            _ => "it was stopped by a person".to_string(),
        };
        out.audit(records::adopted_outside(self.name(), pid, &how));
        out.push(Action::Adopt {
            agent: self.id,
            run: run.id,
            pid,
            started,
        });
        self.phase = Phase::Running(Run {
            pid: Some(pid),
            since: now.checked_sub(age).unwrap_or(now),
            outside: true,
            looking: false,
            ..run
        });
        let entry = records::stop(
            self.name(),
            format!(
                "{why}, yet it runs (an earlier vigil was stopped while stopping it?): \
                 stopping it"
            ),
            Some(self.spec.stop_signal),
        );
        self.begin_stop(now, then, entry, out);
    }

    /// A stop asked for while the edge looks: nothing exists, so the stop is done now. A start
    /// asked for with it (a restart, a reload that changed the command) looks again: the copy
    /// may still be there, the command may be another.
    pub(super) fn stop_looking(
        &mut self,
        now: Instant,
        then: Then,
        mut entry: AuditEntry,
        out: &mut Outbox,
    ) {
        // No signal is sent: there is nothing to send it to.
        entry.metadata.remove("signal");
        out.audit(entry);
        self.phase = Phase::Stopped;
        self.timers.set(TimerKind::Kill, None);
        // A look for a quarantined agent's copy, cut short: it stays quarantined (unless the
        // agent is gone from the config).
        let then = match (self.off_look.take(), then) {
            (Some(Then::Quarantine(_)), Then::Remove) => Then::Remove,
            (Some(Then::Quarantine(reason)), _) => Then::Quarantine(reason),
            (_, then) => then,
        };
        match then {
            Then::Start => self.spawn(now, true, out),
            other => self.after_stop(now, other, out),
        }
    }
}
