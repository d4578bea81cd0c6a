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
            Phase::Starting(run) if run.id == id && run.looking => run,
            // An answer for a run this agent no longer starts: nothing was created for it.
            _ => return,
        };
        let outside = match outside {
            Outside::Adoptable { pid, .. } if !out.targetable(pid) => Outside::Copy {
                pid,
                what: format!("pid {pid} is vigil itself or init, never an agent"),
            },
            other => other,
        };
        match outside {
            Outside::Nothing => {
                self.phase = Phase::Starting(Run {
                    looking: false,
                    ..run
                });
                out.push(Action::Spawn {
                    agent: self.id,
                    run: run.id,
                    look_first: false,
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
        match then {
            Then::Start => self.spawn(now, true, out),
            other => self.after_stop(now, other, out),
        }
    }
}
