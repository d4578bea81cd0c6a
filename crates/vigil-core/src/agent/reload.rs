//! Configuration changes: a new spec for a running agent, or its removal.

use std::time::Instant;

use super::{Agent, Outbox, Phase, Run, Then};
use crate::action::Action;
use crate::checks::CheckSet;
use crate::records;
use crate::spec::AgentSpec;

impl Agent {
    /// Apply a new spec from a reload. Returns whether the agent is restarted for it.
    pub(crate) fn update(&mut self, now: Instant, spec: AgentSpec, out: &mut Outbox) -> bool {
        // Made exclusive, or local again: what it knew of a lease no longer applies, and the
        // run it has was not started under this placement — restarted, through the gate.
        let placement_changed = spec.exclusive.is_some() != self.spec.exclusive.is_some();
        let process_changed = spec.fingerprint != self.spec.fingerprint || placement_changed;
        let checks_changed = spec.checks != self.spec.checks;
        let autostart = spec.autostart;
        if spec.guards_files != self.spec.guards_files {
            self.config_suspect = None;
        }
        self.spec = spec;
        if checks_changed {
            self.replace_checks(now, self.spec.checks.clone());
            // Without checks nothing can prove the stall over, or still there.
            if self.spec.checks.is_empty() {
                self.stall_episode = None;
            }
        }
        if placement_changed {
            self.lease = self
                .spec
                .exclusive
                .is_some()
                .then(|| Box::new(super::lease::LeaseView::Unknown));
            self.timers.set(super::TimerKind::Fence, None);
            if matches!(self.phase, Phase::Standby) {
                // Local now: it runs here as any agent does.
                self.phase = Phase::Stopped;
                out.audit(records::start(
                    self.name(),
                    "placement is local now (reload): it runs on every node that has it",
                ));
                self.spawn(now, true, out);
                return true;
            }
        }
        if let Phase::Stopping { then, .. } = &mut self.phase
            && *then == Then::Remove
        {
            // Removed by an earlier reload and added back before it finished stopping.
            *then = if autostart && !self.held {
                Then::Start
            } else {
                Then::Stay
            };
            return false;
        }
        if !process_changed {
            return false;
        }
        if let Phase::Conflict { pid, .. } = self.phase {
            // The command that ran outside vigil may not be this one any more: look again.
            self.phase = Phase::Stopped;
            out.audit(records::start(
                self.name(),
                format!(
                    "configuration changed (reload); looking again for pid {pid}, which ran its \
                     old command"
                ),
            ));
            self.spawn(now, true, out);
            return true;
        }
        // Looking for a copy of a held or quarantined agent: the answer stops what is found.
        if self.off_look.is_some() {
            return false;
        }
        if matches!(self.phase, Phase::Starting(_) | Phase::Running(_)) {
            let entry = records::restart_requested(
                self.name(),
                "configuration changed (reload)",
                Some(self.spec.stop_signal),
            );
            self.begin_stop(now, Then::Start, entry, out);
            return true;
        }
        false
    }

    /// New checks for the current run. Results of probes started for the old checks carry the
    /// old generation and are dropped; a run still waiting for READY=1 keeps waiting, with the
    /// new checks' deadline (or is running at once if no check gates readiness any more).
    fn replace_checks(&mut self, now: Instant, specs: Vec<crate::checks::CheckSpec>) {
        self.checks = CheckSet::replaced(specs, &self.checks);
        match self.phase {
            Phase::Running(run) => self.checks.start(now, run.since),
            Phase::Starting(run @ Run { pid: Some(_), .. }) => {
                if self.checks.ready_check().is_some() {
                    self.checks.arm_ready_deadline(run.since);
                } else {
                    self.become_running(now, run);
                }
            }
            _ => {}
        }
    }

    /// The agent left the configuration: stop it, then forget it.
    pub(crate) fn remove(&mut self, now: Instant, out: &mut Outbox) {
        out.audit(records::removed(self.name()));
        self.stop_for_removal(now, out);
    }

    /// A run found at startup whose agent is no longer configured: stopped like a removed
    /// agent (stop signal, SIGKILL after `stop_timeout`), then forgotten.
    pub(crate) fn remove_stray(&mut self, now: Instant, out: &mut Outbox) {
        out.audit(records::removed_stray(self.name()));
        self.stop_for_removal(now, out);
    }

    fn stop_for_removal(&mut self, now: Instant, out: &mut Outbox) {
        self.want_running = false;
        match &mut self.phase {
            Phase::Starting(_) | Phase::Running(_) => {
                let entry = records::stop(
                    self.name(),
                    "removed from the configuration",
                    Some(self.spec.stop_signal),
                );
                self.begin_stop(now, Then::Remove, entry, out);
            }
            Phase::Stopping { then, .. } => *then = Then::Remove,
            _ => {
                self.timers.clear();
                self.checks.stop();
                self.removed = true;
                out.push(Action::Forget { agent: self.id });
            }
        }
    }
}
