//! A run's life: spawned (or adopted), running, stopped, ended; and what is left of it.

use std::time::Instant;

use super::{Agent, Failure, LastExit, Outbox, Phase, Run, Then, TimerKind};
use crate::action::Action;
use crate::audit::AuditEntry;
use crate::diagnosis::FailureCause;
use crate::event::{ExitStatus, FailedAction, RunId, SpawnErrorKind, SpawnFailure};
use crate::policy::RestartMode;
use crate::records;
use crate::time::later;

impl Agent {
    /// Ask the edge for a new process: a new run, starting. `look_first` when the agent was
    /// not running a moment ago (a start, a restart after a wait): a copy may have been
    /// started outside vigil meanwhile, and the edge looks before it creates anything.
    ///
    /// The one place a run begins: an exclusive agent without a valid lease goes to standby
    /// instead, whatever path asked for the start.
    pub(super) fn spawn(&mut self, now: Instant, look_first: bool, out: &mut Outbox) {
        let fence = match self.lease_for_start(now) {
            Ok(fence) => fence,
            Err(why) => {
                self.enter_standby(&why, out);
                return;
            }
        };
        // Guarded files are checked (and mended) before anything is created.
        let guarding = self.spec.guards_files.then_some(look_first);
        let run = Run {
            id: out.new_run(),
            pid: None,
            since: now,
            outside: false,
            looking: look_first || guarding.is_some(),
            guarding,
            fence,
        };
        self.phase = Phase::Starting(run);
        self.timers.set(TimerKind::Restart, None);
        if guarding.is_some() {
            out.push(Action::GuardFiles {
                agent: self.id,
                run: run.id,
            });
            return;
        }
        out.push(Action::Spawn {
            agent: self.id,
            run: run.id,
            look_first,
            fence,
        });
    }

    /// Stop the current run with the stop signal, SIGKILL after `stop_timeout`; `then` says
    /// what follows once every process of the run is gone. `entry` is the record of why.
    pub(super) fn begin_stop(
        &mut self,
        now: Instant,
        then: Then,
        entry: AuditEntry,
        out: &mut Outbox,
    ) {
        let run = match self.phase {
            Phase::Starting(run) if run.looking => {
                self.stop_looking(now, then, entry, out);
                return;
            }
            Phase::Starting(run) | Phase::Running(run) => run,
            _ => return,
        };
        self.forget_investigation();
        out.audit(entry);
        out.signal(self.id, run, self.spec.stop_signal);
        self.timers
            .set(TimerKind::Kill, Some(later(now, self.spec.stop_timeout)));
        self.timers.set(TimerKind::Stable, None);
        self.checks.stop();
        self.phase = Phase::Stopping {
            run,
            then,
            main_exit: None,
        };
    }

    /// The run is up (spawned, or ready when gated by READY=1).
    pub(super) fn become_running(&mut self, now: Instant, run: Run) {
        self.phase = Phase::Running(run);
        self.timers.set(
            TimerKind::Stable,
            Some(later(now, self.spec.policy.stable_after)),
        );
        self.checks.start(now, run.since);
    }

    /// A live process found at startup, left by a previous vigil: it becomes the current run.
    /// `outside`: that vigil had taken it over from something else (`adopt`); `fence`: the
    /// epoch of the lease it was started under (exclusive placement).
    pub(crate) fn adopt(
        &mut self,
        pid: u32,
        since: Instant,
        outside: bool,
        fence: Option<u64>,
        now: crate::time::Now,
        out: &mut Outbox,
    ) -> Option<RunId> {
        let wall = now;
        let now = now.mono;
        if !matches!(self.phase, Phase::Stopped) || !out.targetable(pid) {
            return None;
        }
        let run = Run {
            id: out.new_run(),
            pid: Some(pid),
            since,
            outside,
            looking: false,
            guarding: None,
            fence,
        };
        self.want_running = !self.held;
        self.phase = Phase::Running(run);
        if let Some(saved) = self.restored_degradation.take() {
            self.restore_degradation(wall, run.id, saved);
        }
        self.checks.new_run();
        self.checks.start(now, since.min(now));
        self.timers.set(
            TimerKind::Stable,
            Some(later(since.max(now), self.spec.policy.stable_after)),
        );
        out.audit(records::adopted(self.name(), pid));
        if self.held {
            let entry = records::stop(
                self.name(),
                "was stopped by a human before vigil restarted",
                Some(self.spec.stop_signal),
            );
            self.begin_stop(now, Then::Stay, entry, out);
        } else {
            self.adopted_under_lease(now, out);
        }
        Some(run.id)
    }

    pub(crate) fn on_spawned(&mut self, now: Instant, id: RunId, pid: u32, out: &mut Outbox) {
        if !out.targetable(pid) {
            // An edge bug must never make vigil manage itself.
            let error = SpawnFailure {
                kind: SpawnErrorKind::Other,
                message: format!("refusing to manage pid {pid}"),
            };
            self.on_spawn_failed(now, id, error, out);
            return;
        }
        match &mut self.phase {
            Phase::Starting(run) if run.id == id && run.pid.is_none() => {
                run.pid = Some(pid);
                let run = *run;
                self.checks.new_run();
                if self.checks.ready_check().is_some() {
                    // Started only once it says READY=1.
                    self.phase = Phase::Starting(Run { since: now, ..run });
                    self.checks.arm_ready_deadline(now);
                } else {
                    self.become_running(now, run);
                }
            }
            Phase::Stopping { run, .. } if run.id == id && run.pid.is_none() => {
                run.pid = Some(pid);
                run.since = now;
                let run = *run;
                out.signal(self.id, run, self.spec.stop_signal);
            }
            // A process nobody asked for must not become a second instance.
            _ => {
                out.audit(records::kill_unwanted(self.name(), id, pid));
                let run = Run {
                    id,
                    pid: Some(pid),
                    since: now,
                    outside: false,
                    looking: false,
                    guarding: None,
                    fence: None,
                };
                out.kill(self.id, run);
            }
        }
    }

    pub(crate) fn on_spawn_failed(
        &mut self,
        now: Instant,
        id: RunId,
        error: SpawnFailure,
        out: &mut Outbox,
    ) {
        match std::mem::replace(&mut self.phase, Phase::Stopped) {
            Phase::Starting(run) if run.id == id && run.pid.is_none() => {
                self.ended_run_outside = false;
                out.audit(records::spawn_failed(self.name(), &error));
                let failure = Failure {
                    reason: format!("could not start: {error}"),
                    cause: FailureCause::SpawnFailed,
                    uptime: None,
                    verdict: None,
                    spawn_error: Some(error.kind),
                    run: None,
                    oom_killed: false,
                };
                self.on_failure(now, failure, out);
            }
            Phase::Stopping { run, then, .. } if run.id == id && run.pid.is_none() => {
                out.audit(records::spawn_failed(self.name(), &error));
                self.timers.set(TimerKind::Kill, None);
                self.after_stop(now, then, out);
            }
            other => self.phase = other,
        }
    }

    pub(crate) fn on_exited(
        &mut self,
        now: Instant,
        id: RunId,
        status: ExitStatus,
        tree_alive: bool,
        escaped: Vec<u32>,
        out: &mut Outbox,
    ) {
        match &mut self.phase {
            Phase::Starting(run) | Phase::Running(run) if run.id == id && run.pid.is_some() => {
                let run = *run;
                let pid = run.pid.unwrap_or_default();
                let uptime = now.saturating_duration_since(run.since);
                self.ended_run_outside = run.outside;
                out.audit(records::exit(self.name(), run.pid, status, uptime, false));
                // Leftovers of a crashed run must never overlap the next run.
                let escaped: Vec<u32> =
                    escaped.into_iter().filter(|p| out.targetable(*p)).collect();
                if tree_alive || !escaped.is_empty() {
                    out.audit(records::kill_leftovers(
                        self.name(),
                        pid,
                        tree_alive,
                        &escaped,
                    ));
                    if tree_alive {
                        out.kill(self.id, run);
                    } else {
                        out.push(Action::KillEscaped {
                            agent: self.id,
                            run: run.id,
                            pids: escaped,
                        });
                    }
                }
                self.timers.set(TimerKind::Stable, None);
                self.forget_investigation();
                self.checks.stop();
                self.phase = Phase::Stopped;
                self.last_exit = Some(LastExit {
                    status,
                    at: now,
                    uptime,
                    expected: false,
                });
                let finished = match self.spec.restart {
                    RestartMode::Always => false,
                    RestartMode::OnFailure => status.is_clean(),
                    RestartMode::Never => true,
                };
                if finished {
                    self.want_running = false;
                    // Done, and not to be restarted: nothing is stalled any more.
                    self.stall_episode = None;
                    if !status.is_clean() {
                        self.last_problem = Some(status.to_string());
                    }
                    return;
                }
                let failure = Failure {
                    reason: status.to_string(),
                    cause: FailureCause::Exit,
                    uptime: Some(uptime),
                    verdict: None,
                    spawn_error: None,
                    run: Some(run.id),
                    oom_killed: status.oom_killed,
                };
                self.on_failure(now, failure, out);
            }
            Phase::Stopping { run, main_exit, .. } if run.id == id && main_exit.is_none() => {
                *main_exit = Some(status);
                let run = run.id;
                if tree_alive || !escaped.is_empty() {
                    out.push(Action::WatchTree {
                        agent: self.id,
                        run,
                    });
                } else {
                    self.finish_stop(now, out);
                }
            }
            // An exit of a run this agent no longer tracks (already handled).
            _ => {}
        }
    }

    pub(crate) fn on_tree_empty(&mut self, now: Instant, id: RunId, out: &mut Outbox) {
        if let Phase::Stopping {
            run,
            main_exit: Some(_),
            ..
        } = &self.phase
            && run.id == id
        {
            self.finish_stop(now, out);
        }
    }

    /// The edge could not act on the run's processes: it goes on the record (unsuccessful,
    /// so alerts and `vigil audit` show it) and becomes the agent's last problem.
    pub(crate) fn on_action_failed(
        &mut self,
        id: RunId,
        action: FailedAction,
        error: &str,
        out: &mut Outbox,
    ) {
        out.audit(records::action_failed(self.name(), id, action, error));
        self.last_problem = Some(format!("{action} failed: {error}"));
    }

    fn finish_stop(&mut self, now: Instant, out: &mut Outbox) {
        let Phase::Stopping {
            run,
            then,
            main_exit,
        } = std::mem::replace(&mut self.phase, Phase::Stopped)
        else {
            return;
        };
        self.timers.set(TimerKind::Kill, None);
        self.ended_run_outside = run.outside;
        let status = main_exit.unwrap_or_default();
        let uptime = now.saturating_duration_since(run.since);
        out.audit(records::exit(self.name(), run.pid, status, uptime, true));
        self.last_exit = Some(LastExit {
            status,
            at: now,
            uptime,
            expected: true,
        });
        self.after_stop(now, then, out);
    }

    pub(super) fn after_stop(&mut self, now: Instant, then: Then, out: &mut Outbox) {
        match then {
            Then::Stay => {}
            // Its own run just ended: nothing to look for — unless that run was taken over
            // from outside vigil, whose starter may start it again.
            // A restart (asked for, or a reload's) while an upstream is down waits for it.
            Then::Start => {
                if !self.wait_for_upstream("restart", out) {
                    self.spawn(now, self.ended_run_outside, out)
                }
            }
            Then::Heal(failure) => self.on_failure(now, *failure, out),
            Then::Remove => {
                self.removed = true;
                out.push(Action::Forget { agent: self.id });
            }
            Then::Quarantine(reason) => self.phase = Phase::Quarantined { reason },
            Then::Standby { release } => {
                if release.is_some() {
                    self.release_lease(release, out);
                }
                let why = self
                    .standby_reason()
                    .unwrap_or("its lease is not this node's")
                    .to_string();
                self.enter_standby(&why, out);
            }
        }
    }

    /// The stop signal was not obeyed in time: SIGKILL to the whole tree.
    pub(super) fn on_kill_due(&mut self, out: &mut Outbox) {
        self.timers.set(TimerKind::Kill, None);
        if let Phase::Stopping { run, .. } = self.phase
            && run.pid.is_some()
        {
            out.audit(records::kill_after_timeout(
                self.name(),
                self.spec.stop_timeout,
                self.spec.stop_signal,
                run.pid,
            ));
            out.kill(self.id, run);
        }
    }
}
