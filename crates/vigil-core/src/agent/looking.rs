//! Before a start: what the edge found running outside vigil's own runs, and what follows —
//! the start, a take-over of the agent's own process started elsewhere (`adopt`), or a
//! conflict that waits for a human. "Never two copies of an agent" covers copies vigil did
//! not start.

use std::time::Instant;

use super::{Agent, Outbox, Phase, Run, Then, TimerKind};
use crate::action::Action;
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
        let looking = match &self.phase {
            Phase::Starting(run) | Phase::Stopping { run, .. } => run.id == id && run.pid.is_none(),
            _ => false,
        };
        if !looking {
            // An answer for a run this agent no longer starts: nothing was created for it.
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
            Outside::Nothing => match self.phase {
                Phase::Starting(run) => out.push(Action::Spawn {
                    agent: self.id,
                    run: run.id,
                    look_first: false,
                }),
                // Stopped before anything was created.
                _ => self.nothing_to_stop(now, out),
            },
            Outside::Adoptable {
                pid,
                started,
                age,
                how,
            } => self.take_over(now, id, pid, started, age, &how, out),
            Outside::Copy { pid, what } => match self.phase {
                Phase::Starting(_) => {
                    out.audit(records::conflict(self.name(), pid, &what));
                    self.timers.set(TimerKind::Stable, None);
                    self.last_problem = Some(format!("not started: {what}"));
                    self.phase = Phase::Conflict { pid, reason: what };
                }
                _ => self.nothing_to_stop(now, out),
            },
        }
    }

    /// The agent's own process, started elsewhere, becomes the run: watched and healed like a
    /// spawned one. If a stop was asked for meanwhile, the stop goes on, to it.
    #[allow(clippy::too_many_arguments)]
    fn take_over(
        &mut self,
        now: Instant,
        id: RunId,
        pid: u32,
        started: u64,
        age: std::time::Duration,
        how: &str,
        out: &mut Outbox,
    ) {
        let run = Run {
            id,
            pid: Some(pid),
            since: now.checked_sub(age).unwrap_or(now),
            outside: true,
        };
        out.audit(records::adopted_outside(self.name(), pid, how));
        out.push(Action::Adopt {
            agent: self.id,
            run: id,
            pid,
            started,
        });
        self.checks.new_run();
        match &mut self.phase {
            Phase::Starting(_) => {
                // Already up: no readiness to wait for.
                self.phase = Phase::Running(run);
                self.checks.start(now, run.since);
                self.timers.set(
                    TimerKind::Stable,
                    Some(later(now, self.spec.policy.stable_after)),
                );
            }
            Phase::Stopping { run: r, .. } => {
                *r = run;
                out.signal(self.id, run, self.spec.stop_signal);
                // The stop's deadline may have passed while the look ran, with nothing to
                // kill: it counts from now, when there is.
                self.timers
                    .set(TimerKind::Kill, Some(later(now, self.spec.stop_timeout)));
            }
            _ => {}
        }
    }

    /// A stop asked for while the edge was looking: nothing was created, the stop is done.
    fn nothing_to_stop(&mut self, now: Instant, out: &mut Outbox) {
        let Phase::Stopping { then, .. } = std::mem::replace(&mut self.phase, Phase::Stopped)
        else {
            return;
        };
        self.timers.set(TimerKind::Kill, None);
        match then {
            // A start asked for meanwhile (a restart, a reload that changed the command) looks
            // again: the copy may still be there, the command may be another.
            Then::Start => self.spawn(now, true, out),
            other => self.after_stop(now, other, out),
        }
    }
}
