//! Health checks of the running agent, and the stall that follows when they fail.

use std::time::Instant;

use super::{Agent, Blame, Failure, Outbox, Phase, Run, StallEpisode, Then, TimerKind};
use crate::action::Action;
use crate::checks::{CheckOutput, NotifyMessage, Observation, Verdict};
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
        if let Some(declared) = message.declared(now.wall_ms) {
            self.declare(now, Some(id), declared, out);
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

    pub(super) fn check_outputs(&mut self, now: Now, outputs: Vec<CheckOutput>, out: &mut Outbox) {
        // Nothing is judged stalled inside a quiet window: a stall open when the market
        // closed is over. Still stuck after the window, it is a new stall then (silence is
        // measured from the window's end), not a weekend-long one that pages at once.
        if self.stall_episode.is_some() && self.spec.quiet.is_quiet(now.wall_ms) {
            self.stall_episode = None;
        }
        for output in outputs {
            match output {
                CheckOutput::Probe(index) => out.push(Action::RunCheck {
                    agent: self.id,
                    check: index,
                    generation: self.checks.generation,
                }),
                CheckOutput::Changed { index, from } => {
                    if self.checks.checks[index].status.verdict == Verdict::Failing {
                        self.stall_recovery_broken();
                    }
                    let c = &self.checks.checks[index];
                    out.audit(records::check(
                        self.name(),
                        &c.spec,
                        from,
                        c.status.verdict,
                        &c.status.detail,
                    ));
                }
                // Its upstream is down: the stall is that agent's (it is being healed).
                CheckOutput::Stalled { .. } if self.waiting.is_some() => {}
                CheckOutput::Stalled {
                    index,
                    reason,
                    triggered,
                } => {
                    match self.checks.checks[index].spec.produced_by.clone() {
                        Some(producer) if producer != self.spec.name => {
                            let spec = self.checks.checks[index].spec.clone();
                            out.blames.push(Blame {
                                producer,
                                watcher: self.spec.name.clone(),
                                spec,
                                reason,
                            });
                        }
                        // It said it is degraded on purpose (a rate limit, an open breaker): a
                        // restart would make it worse. Until its declared time, bounded by
                        // `max_degraded`; then this stall is judged again. Not what it says
                        // itself (`WATCHDOG=trigger`).
                        _ if !triggered && self.stall_suspended(now.mono) => {
                            self.note_suspended_stall(index, &reason, out);
                        }
                        _ => {
                            self.stall(now, index, reason, out);
                            return;
                        }
                    }
                }
                CheckOutput::AllOk => {
                    self.stall_recovering(now.mono);
                    self.keep_files(out);
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

    /// Every check passes: the open stall episode ends once that has lasted as long as it
    /// would take to declare a stall again, so an agent that beats once after each restart
    /// and then hangs stays one stall rather than a stall per restart.
    fn stall_recovering(&mut self, now: Instant) {
        let proof = self.checks.stall_proof_period();
        if let Some(episode) = &mut self.stall_episode {
            let since = *episode.recovering_since.get_or_insert(now);
            // Strictly longer: a stall due at the same moment comes first.
            if now.saturating_duration_since(since) > proof {
                self.stall_episode = None;
            }
        }
    }

    /// A failure while recovering from a stall: the proof starts again.
    pub(super) fn stall_recovery_broken(&mut self) {
        if let Some(episode) = &mut self.stall_episode {
            episode.recovering_since = None;
        }
    }

    /// Alive but not working: stop it and let the policy decide what follows, as for a crash.
    fn stall(&mut self, now: Now, index: usize, reason: String, out: &mut Outbox) {
        let c = &self.checks.checks[index];
        let (spec, failures) = (c.spec.clone(), c.status.consecutive_failures);
        let name = self.name().to_string();
        let record = |wait| records::stalled(&name, &reason, &spec, failures, wait);
        self.stall_with(now, reason.clone(), record, out);
    }

    /// A stall, however found: `record(wait)` is its audit record (`wait`: how long its
    /// evidence is gathered first, when it is).
    pub(super) fn stall_with(
        &mut self,
        now: Now,
        reason: String,
        record: impl Fn(Option<std::time::Duration>) -> crate::audit::AuditEntry,
        out: &mut Outbox,
    ) {
        let run: Run = match self.phase {
            // Already being dealt with: its evidence is being gathered before the stop.
            _ if self.investigation.is_some() => return,
            Phase::Starting(run) | Phase::Running(run) => run,
            _ => return,
        };
        match &mut self.stall_episode {
            Some(episode) => episode.recovering_since = None,
            None => {
                self.stall_episode = Some(StallEpisode {
                    since_ms: now.wall_ms,
                    recovering_since: None,
                })
            }
        }
        let now = now.mono;
        self.last_problem = Some(reason.clone());
        let failure = Failure {
            reason,
            cause: FailureCause::Stall,
            uptime: Some(now.saturating_duration_since(run.since)),
            verdict: None,
            spawn_error: None,
            run: Some(run.id),
            oom_killed: false,
        };
        if run.pid.is_some()
            && let Some(wait) = self.investigation_wait()
        {
            out.audit(record(Some(wait)));
            self.investigate(now, run, failure, wait, out);
            return;
        }
        let entry = record(None);
        self.begin_stop(now, Then::Heal(Box::new(failure)), entry, out);
    }
}
