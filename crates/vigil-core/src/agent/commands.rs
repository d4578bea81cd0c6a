//! What people ask of an agent: start (or start without looking for a copy), stop, restart,
//! reset.

use std::time::Instant;

use super::{Agent, CommandError, CommandOutcome, Outbox, Phase, Then, TimerKind};
use crate::event::{Command, Requester};
use crate::records;

impl Agent {
    /// `note` is the person's own words (why), added to the audit reason.
    pub(crate) fn command(
        &mut self,
        now: Instant,
        command: Command,
        by: Requester,
        note: Option<&str>,
        out: &mut Outbox,
    ) -> Result<CommandOutcome, CommandError> {
        if self.is_being_removed() && command != Command::Stop {
            return Err(CommandError::Removed);
        }
        self.note = note.map(|n| n.chars().take(200).collect());
        // A person decides now: a config failure waiting for its files' check is forgotten,
        // and an incident's hold yields to what they ask.
        self.config_suspect = None;
        if by.is_human() {
            self.leave_incident(now, &self.who(by), out);
        }
        let result = match command {
            Command::Start => self.request_start(now, by, out),
            Command::ForceStart => self.request_force_start(now, by, out),
            Command::Stop => Ok(self.request_stop(now, by, out)),
            Command::Restart => self.request_restart(now, by, out),
            Command::Reset => Ok(self.request_reset(now, by, out)),
        };
        self.note = None;
        result
    }

    /// Who asked, for audit reasons: `api`, or `api ("deploying v2")` with a note.
    fn who(&self, by: Requester) -> String {
        match &self.note {
            Some(n) => format!("{} ({n:?})", by.as_str()),
            None => by.as_str().to_string(),
        }
    }

    pub(crate) fn request_start(
        &mut self,
        now: Instant,
        by: Requester,
        out: &mut Outbox,
    ) -> Result<CommandOutcome, CommandError> {
        match &mut self.phase {
            Phase::Quarantined { reason } => Err(CommandError::Quarantined {
                reason: reason.clone(),
            }),
            // Looking for a copy left running while it was off: the answer now decides as for
            // a start.
            Phase::Starting(_) if self.off_look.is_some() => {
                if let Some(Then::Quarantine(reason)) = &self.off_look {
                    return Err(CommandError::Quarantined {
                        reason: reason.clone(),
                    });
                }
                self.off_look = None;
                self.want_running = true;
                self.held = false;
                out.audit(records::start(
                    self.name(),
                    format!("started by {}", self.who(by)),
                ));
                Ok(CommandOutcome::Started)
            }
            Phase::Starting(_) | Phase::Running(_) => Ok(CommandOutcome::AlreadyRunning),
            Phase::Waiting { .. } => Ok(CommandOutcome::Waiting),
            Phase::Standby => Ok(CommandOutcome::Standby),
            // A copy of a quarantined agent being stopped: quarantined it stays.
            Phase::Stopping {
                then: Then::Quarantine(reason),
                ..
            } => Err(CommandError::Quarantined {
                reason: reason.clone(),
            }),
            Phase::Stopping { then, .. } => {
                *then = Then::Start;
                self.want_running = true;
                self.held = false;
                Ok(CommandOutcome::WillStart)
            }
            Phase::Stopped | Phase::Backoff { .. } | Phase::Conflict { .. } => {
                let reason = match self.phase {
                    Phase::Backoff { .. } => {
                        format!("started by {} while waiting to restart", self.who(by))
                    }
                    Phase::Conflict { pid, .. } => format!(
                        "started by {}; looking again for pid {pid}, which ran its command",
                        self.who(by)
                    ),
                    _ => format!("started by {}", self.who(by)),
                };
                self.leave_rest();
                if self.wait_for_upstream(&reason, out) {
                    return Ok(CommandOutcome::Waiting);
                }
                out.audit(records::start(self.name(), reason));
                self.spawn(now, true, out);
                Ok(CommandOutcome::Started)
            }
        }
    }

    /// A start that does not look for a copy outside vigil first: the human has seen the
    /// conflict (or `vigil check --live`) and decided. A live, stopping or quarantined agent
    /// answers as to a plain start.
    fn request_force_start(
        &mut self,
        now: Instant,
        by: Requester,
        out: &mut Outbox,
    ) -> Result<CommandOutcome, CommandError> {
        let entry = match self.phase {
            Phase::Conflict { pid, .. } => records::start(
                self.name(),
                format!(
                    "started by {} with --force, next to pid {pid} outside vigil that runs the \
                     same command",
                    self.who(by)
                ),
            )
            .meta("forced_past_pid", pid),
            Phase::Stopped | Phase::Backoff { .. } => records::start(
                self.name(),
                format!(
                    "started by {} with --force, without looking for a copy outside vigil",
                    self.who(by)
                ),
            ),
            _ => return self.request_start(now, by, out),
        };
        self.leave_rest();
        if self.wait_for_upstream(&entry.reason, out) {
            return Ok(CommandOutcome::Waiting);
        }
        out.audit(entry);
        self.spawn(now, false, out);
        Ok(CommandOutcome::Started)
    }

    /// Wanted running while an upstream is down: it waits (on the record, with `asked`, who
    /// asked) instead of starting. Returns whether it waits.
    pub(super) fn wait_for_upstream(&mut self, asked: &str, out: &mut Outbox) -> bool {
        let Some((on, why, _)) = self.waiting_on() else {
            return false;
        };
        let entry = records::waiting(
            self.name(),
            on,
            why,
            &format!("{asked}; not started until then"),
        );
        out.audit(entry);
        self.phase = Phase::Waiting { backoff: None };
        true
    }

    /// Out of stopped, waiting or conflict, wanted running again.
    pub(super) fn leave_rest(&mut self) {
        self.config_suspect = None;
        self.phase = Phase::Stopped;
        self.timers.set(TimerKind::Restart, None);
        self.want_running = true;
        self.held = false;
    }

    pub(crate) fn request_stop(
        &mut self,
        now: Instant,
        by: Requester,
        out: &mut Outbox,
    ) -> CommandOutcome {
        self.want_running = false;
        self.config_suspect = None;
        if by.is_human() {
            self.held = true;
            // A person took it out of service: nothing is stalled any more.
            self.stall_episode = None;
        }
        let reason = match by {
            Requester::Shutdown => "vigil is shutting down".to_string(),
            _ => format!("stop requested by {}", self.who(by)),
        };
        match &mut self.phase {
            // Looking for a copy left running while it was off: what is found is stopped. vigil's
            // own shutdown does not wait for the answer (the next vigil looks again).
            Phase::Starting(_) if self.off_look.is_some() && !matches!(by, Requester::Shutdown) => {
                CommandOutcome::Stopping
            }
            Phase::Stopped | Phase::Quarantined { .. } => CommandOutcome::AlreadyStopped,
            Phase::Conflict { pid, .. } => {
                let pid = *pid;
                self.phase = Phase::Stopped;
                out.audit(records::stop(
                    self.name(),
                    format!("{reason}; it was not started (pid {pid} runs its command outside vigil), and now will not be"),
                    None,
                ));
                CommandOutcome::Stopped
            }
            Phase::Backoff { .. } => {
                self.phase = Phase::Stopped;
                self.timers.set(TimerKind::Restart, None);
                out.audit(records::stop(
                    self.name(),
                    format!("{reason} while waiting to restart"),
                    None,
                ));
                CommandOutcome::Stopped
            }
            Phase::Waiting { .. } => {
                self.phase = Phase::Stopped;
                out.audit(records::stop(
                    self.name(),
                    format!("{reason} while it waited for what it depends on"),
                    None,
                ));
                CommandOutcome::Stopped
            }
            Phase::Standby => {
                self.phase = Phase::Stopped;
                out.audit(records::stop(
                    self.name(),
                    format!("{reason} while on standby (another node may run it)"),
                    None,
                ));
                CommandOutcome::Stopped
            }
            Phase::Stopping { then, .. } => {
                if !matches!(then, Then::Remove | Then::Quarantine(_)) {
                    *then = Then::Stay;
                }
                CommandOutcome::Stopping
            }
            Phase::Starting(_) | Phase::Running(_) => {
                let entry = records::stop(self.name(), reason, Some(self.spec.stop_signal));
                self.begin_stop(now, Then::Stay, entry, out);
                CommandOutcome::Stopping
            }
        }
    }

    fn request_restart(
        &mut self,
        now: Instant,
        by: Requester,
        out: &mut Outbox,
    ) -> Result<CommandOutcome, CommandError> {
        let reason = format!("restart requested by {}", self.who(by));
        if let Some(Then::Quarantine(reason)) = &self.off_look {
            return Err(CommandError::Quarantined {
                reason: reason.clone(),
            });
        }
        match &mut self.phase {
            Phase::Quarantined { reason } => Err(CommandError::Quarantined {
                reason: reason.clone(),
            }),
            // A copy of a quarantined agent being stopped: quarantined it stays.
            Phase::Stopping {
                then: Then::Quarantine(reason),
                ..
            } => Err(CommandError::Quarantined {
                reason: reason.clone(),
            }),
            Phase::Stopping { then, .. } => {
                *then = Then::Start;
                self.want_running = true;
                self.held = false;
                Ok(CommandOutcome::WillStart)
            }
            Phase::Waiting { .. } => Ok(CommandOutcome::Waiting),
            Phase::Standby => Ok(CommandOutcome::Standby),
            Phase::Stopped | Phase::Backoff { .. } | Phase::Conflict { .. } => {
                self.leave_rest();
                if self.wait_for_upstream(&reason, out) {
                    return Ok(CommandOutcome::Waiting);
                }
                out.audit(records::restart_requested(self.name(), reason, None));
                self.spawn(now, true, out);
                Ok(CommandOutcome::Started)
            }
            Phase::Starting(_) | Phase::Running(_) => {
                self.want_running = true;
                self.held = false;
                let entry =
                    records::restart_requested(self.name(), reason, Some(self.spec.stop_signal));
                self.begin_stop(now, Then::Start, entry, out);
                Ok(CommandOutcome::Restarting)
            }
        }
    }

    fn request_reset(&mut self, now: Instant, by: Requester, out: &mut Outbox) -> CommandOutcome {
        self.restarts.clear();
        self.crash_streak = 0;
        self.escalated = false;
        self.advice = None;
        self.stall_episode = None;
        let was_down = matches!(
            self.phase,
            Phase::Quarantined { .. } | Phase::Backoff { .. } | Phase::Conflict { .. }
        );
        out.audit(records::reset(self.name(), &self.who(by)));
        if let Phase::Waiting { backoff } = &mut self.phase {
            // Its own waiting restart is forgiven too: it starts once its upstream is back.
            *backoff = None;
        }
        // A quarantined agent's copy being looked for or stopped as vigil started: the reset
        // starts it as it would the quarantined agent (the copy, if any, is taken over).
        let looking_off = matches!(self.off_look, Some(Then::Quarantine(_)));
        let stopping_off = matches!(
            self.phase,
            Phase::Stopping {
                then: Then::Quarantine(_),
                ..
            }
        );
        if looking_off || stopping_off {
            if looking_off {
                self.off_look = None;
            }
            if let Phase::Stopping { then, .. } = &mut self.phase {
                *then = Then::Start;
            }
            self.want_running = true;
            self.held = false;
            out.audit(records::start(
                self.name(),
                "started after reset (once the copy found running is taken over or stopped)",
            ));
            return CommandOutcome::Reset;
        }
        if was_down {
            self.leave_rest();
            if self.wait_for_upstream("reset", out) {
                return CommandOutcome::Reset;
            }
            out.audit(records::start(self.name(), "started after reset"));
            self.spawn(now, true, out);
        }
        CommandOutcome::Reset
    }
}
