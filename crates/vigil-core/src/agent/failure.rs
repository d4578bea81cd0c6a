//! What happens after a failure: it is judged (rules, then maybe advice), and the restart
//! policy answers — restart now, later, or quarantine — within the budget.

use std::time::{Duration, Instant};

use super::{Agent, Failure, Outbox, Phase, TimerKind};
use crate::diagnosis::{Diagnosis, Evidence, FailureCause, Remedy};
use crate::policy::{OnExhausted, RestartDecision, Wait};
use crate::records::{self, Budget};
use crate::time::human_duration;

impl Agent {
    /// Classify a failure from its evidence (the log tail of the run that ended, or the spawn
    /// error) and report it to the edges (explain, metrics, the advisor).
    fn diagnose(&mut self, failure: &Failure, out: &mut Outbox) -> Diagnosis {
        let tail = self.log_tail.take();
        let (run, pid, lines) = match tail {
            _ if failure.cause == FailureCause::SpawnFailed => {
                (None, None, vec![failure.reason.clone()])
            }
            // Only the failed run's own lines are its evidence.
            Some(tail) if Some(tail.run) == failure.run => (Some(tail.run), tail.pid, tail.lines),
            _ => (failure.run, None, Vec::new()),
        };
        let verdict = self.judge(failure, self.crash_streak, &lines);
        self.report(run, pid, failure, lines, &verdict, out);
        verdict
    }

    /// The rules' verdict, or a stricter advice kept from the previous failure.
    pub(super) fn judge(&mut self, failure: &Failure, streak: u32, log: &[String]) -> Diagnosis {
        let verdict = self.spec.diagnosis.classify(&Evidence {
            cause: failure.cause,
            spawn_error: failure.spawn_error,
            streak,
            log,
            oom_killed: failure.oom_killed,
        });
        match self.advice.take() {
            Some(advice) if advice.action > verdict.action => Diagnosis {
                explanation: format!(
                    "advisor, after the previous failure: {}",
                    advice.explanation
                ),
                ..*advice
            },
            _ => verdict,
        }
    }

    /// A restart cannot help: no restart, a human is told once.
    pub(super) fn quarantine_diagnosed(
        &mut self,
        failure: &Failure,
        d: &Diagnosis,
        out: &mut Outbox,
    ) {
        let reason = format!(
            "{}; diagnosed {} ({}): a restart cannot help",
            failure.reason,
            d.category.as_str(),
            d.explanation
        );
        out.audit(records::escalated_diagnosis(self.name(), &reason, d));
        self.escalated = true;
        self.last_problem = Some(reason.clone());
        self.phase = Phase::Quarantined { reason };
    }

    /// A throttled agent waits at least `throttle_delay`, plus up to half of it again, spread
    /// by name: six bots hit by one 429 storm come back one by one, not in a burst.
    pub(super) fn throttle_delay(&self) -> Duration {
        let base = self.spec.policy.throttle_delay;
        let spread = crate::fnv::fnv1a(self.spec.name.bytes()) % 1000;
        let extra = (base / 2)
            .checked_mul(spread as u32)
            .map_or(base / 2, |d| d / 1000);
        base.saturating_add(extra)
    }

    /// The policy's answer to a failure: restart now, later, or not at all.
    pub(super) fn on_failure(&mut self, now: Instant, mut failure: Failure, out: &mut Outbox) {
        let policy = self.spec.policy.clone();
        self.last_problem = Some(failure.reason.clone());
        self.had_failure = true;
        self.stall_recovery_broken();
        if failure.uptime.is_some_and(|u| u >= policy.stable_after) {
            self.crash_streak = 0;
            self.escalated = false;
        }
        if !self.want_running {
            self.phase = Phase::Stopped;
            self.stall_episode = None;
            return;
        }
        if self.hold_failure(&failure, out) {
            return;
        }
        self.crash_streak = self.crash_streak.saturating_add(1);

        let diagnosis = match failure.verdict.clone() {
            Some(verdict) => verdict,
            None => self.diagnose(&failure, out),
        };
        self.diagnosis = Some(Box::new(diagnosis.clone()));
        // A cause several agents share is handled once, by an incident, not agent by agent.
        if diagnosis.action != Remedy::Quarantine
            && self.incident_holds(now, &failure, &diagnosis, out)
        {
            self.crash_streak = self.crash_streak.saturating_sub(1);
            return;
        }
        if diagnosis.action == Remedy::Quarantine {
            // Still a failure the incidents must see (a canary that failed otherwise).
            out.incidents
                .on_failure(now, self.id, &self.spec.name, None, None);
        }
        let at_least = match diagnosis.action {
            // Its evidence points at its config, and vigil guards its config files: they are
            // checked (and mended) before the restart, which is called off for a quarantine
            // if nothing was wrong with them.
            Remedy::Quarantine if diagnosis.rule == "config_error" && self.spec.guards_files => {
                self.config_suspect = Some(Box::new((failure.clone(), diagnosis.clone())));
                failure.reason = format!(
                    "{}; diagnosed a config error: its guarded files are checked (and mended) \
                     before the restart",
                    failure.reason
                );
                Duration::ZERO
            }
            Remedy::Quarantine => {
                self.quarantine_diagnosed(&failure, &diagnosis, out);
                return;
            }
            Remedy::Backoff => self.throttle_delay(),
            Remedy::Restart => Duration::ZERO,
        };

        self.last_cause = failure.cause;
        match policy.decide(&self.restarts, self.crash_streak, at_least, now) {
            RestartDecision::Exhausted { used } => self.exhausted(now, &failure, used, out),
            RestartDecision::Now { .. } => {
                // Its own process just ended, nothing can have started a copy meanwhile —
                // unless the run was taken over from something that may start it again.
                let look_first = self.ended_run_outside;
                self.restart_now(now, failure.reason, failure.cause.as_str(), look_first, out)
            }
            RestartDecision::Later { delay, why, used } => {
                let why = match why {
                    Wait::Throttled => format!("throttled: {}", diagnosis.explanation),
                    Wait::Cooldown => format!("cooldown of {}", human_duration(policy.cooldown)),
                    Wait::Backoff => {
                        format!("crash-loop backoff, failure {} in a row", self.crash_streak)
                    }
                };
                let reason = format!(
                    "{}; restarting in {} ({why})",
                    failure.reason,
                    human_duration(delay)
                );
                out.audit(records::backoff(
                    self.name(),
                    reason,
                    delay,
                    self.crash_streak,
                    used,
                    &diagnosis,
                ));
                let until = crate::time::later(now, delay);
                self.phase = Phase::Backoff {
                    until,
                    retry: false,
                };
                self.timers.set(TimerKind::Restart, Some(until));
            }
        }
    }

    fn exhausted(&mut self, now: Instant, failure: &Failure, used: u32, out: &mut Outbox) {
        self.config_suspect = None;
        let policy = self.spec.policy.clone();
        let budget = format!(
            "{used} of {} restarts used in the last {}",
            policy.max_restarts,
            human_duration(policy.window)
        );
        out.audit(records::rate_limited(
            self.name(),
            format!(
                "not restarting after {}: restart budget exhausted ({budget})",
                failure.reason
            ),
            used,
            policy.max_restarts,
        ));
        match policy.on_exhausted {
            OnExhausted::Quarantine => {
                let reason = format!(
                    "restart budget exhausted ({budget}); last failure: {}",
                    failure.reason
                );
                if !self.escalated {
                    out.audit(records::escalated_budget_quarantine(self.name(), &reason));
                }
                self.escalated = true;
                self.phase = Phase::Quarantined { reason };
            }
            OnExhausted::RetryAfter(wait) => {
                let until = policy.retry_at(&self.restarts, now, wait);
                if !self.escalated {
                    out.audit(records::escalated_budget_retry(
                        self.name(),
                        &budget,
                        until.saturating_duration_since(now),
                    ));
                }
                self.escalated = true;
                self.phase = Phase::Backoff { until, retry: true };
                self.timers.set(TimerKind::Restart, Some(until));
            }
        }
    }

    /// `look_first` after a wait: something may have started a copy meanwhile.
    fn restart_now(
        &mut self,
        now: Instant,
        reason: String,
        cause: &str,
        look_first: bool,
        out: &mut Outbox,
    ) {
        let policy = &self.spec.policy;
        self.restarts.record(now, policy.window);
        self.total_restarts += 1;
        let budget = Budget {
            used: self.restarts.count(now, policy.window),
            max: policy.max_restarts,
            total: self.total_restarts,
        };
        out.audit(records::restart_automatic(
            self.name(),
            reason,
            budget,
            cause,
            self.diagnosis.as_deref(),
        ));
        self.spawn(now, look_first, out);
    }

    /// A waiting restart is due.
    pub(super) fn on_restart_due(&mut self, now: Instant, out: &mut Outbox) {
        self.timers.set(TimerKind::Restart, None);
        let Phase::Backoff { retry, .. } = self.phase else {
            return;
        };
        let policy = &self.spec.policy;
        if self.restarts.count(now, policy.window) >= policy.max_restarts {
            // The budget can shrink under a waiting restart (a reload lowered it): wait for
            // room rather than exceed it.
            let at = self
                .restarts
                .room_at(now, policy.window, policy.max_restarts);
            self.phase = Phase::Backoff { until: at, retry };
            self.timers.set(TimerKind::Restart, Some(at));
            return;
        }
        let problem = self
            .last_problem
            .clone()
            .unwrap_or_else(|| "failure".into());
        let (reason, cause) = if retry {
            (
                format!(
                    "retrying after the restart budget was exhausted (last failure: {problem})"
                ),
                "retry",
            )
        } else {
            (problem, self.last_cause.as_str())
        };
        self.restart_now(now, reason, cause, true, out);
    }

    /// The run has been up for `stable_after`: the failure episode is over.
    pub(super) fn on_stable_due(&mut self, out: &mut Outbox) {
        self.timers.set(TimerKind::Stable, None);
        if !matches!(self.phase, Phase::Running(_)) {
            return;
        }
        self.crash_streak = 0;
        self.escalated = false;
        self.advice = None;
        // Without checks, a run that lasted is the proof its files are good.
        if self.checks.is_empty() {
            self.keep_files(out);
        }
        // With checks, recovery is judged by the checks passing.
        if self.had_failure && self.checks.is_empty() {
            self.had_failure = false;
            out.audit(records::recovered(
                self.name(),
                format!(
                    "running for {} since the last failure ({})",
                    human_duration(self.spec.policy.stable_after),
                    self.last_problem.as_deref().unwrap_or("unknown")
                ),
            ));
        }
    }
}
