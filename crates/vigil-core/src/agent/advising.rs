//! Evidence and second opinions: a stalled agent is investigated before it is stopped (its
//! evidence command runs while it is still alive, and with `llm_before_restart` the advisor is
//! heard first); a crashed agent is restarted at once and a later, stricter advice applies
//! before its next restart.

use std::time::{Duration, Instant};

use super::{Agent, Failure, LogTail, Outbox, Phase, Run, Then, TimerKind};
use crate::action::Action;
use crate::advice::{FailureReport, Judgement};
use crate::diagnosis::{Diagnosis, FailureCause, Remedy};
use crate::event::RunId;
use crate::records;
use crate::time::{human_duration, later};

/// Slack on top of the evidence and advisor timeouts, so the edge's own timeout reports first.
const GRACE: Duration = Duration::from_secs(2);

/// A stalled agent whose evidence is being gathered (and maybe judged) before it is stopped.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Investigation {
    run: RunId,
    pid: Option<u32>,
    failure: Failure,
    /// The verdict, once the evidence is in.
    verdict: Option<Diagnosis>,
    /// Waiting for the advisor before acting.
    awaiting_advice: bool,
}

impl Agent {
    /// A stalled agent is being investigated (it still runs, its checks are paused).
    pub fn investigating(&self) -> bool {
        self.investigation.is_some()
    }

    /// How long a stall may wait for evidence and advice, when it waits at all.
    pub(super) fn investigation_wait(&self) -> Option<Duration> {
        let advice = self
            .spec
            .advisor
            .as_ref()
            .filter(|_| self.spec.policy.llm_before_restart)
            .map(|a| a.wait);
        match (self.spec.evidence_timeout, advice) {
            (None, None) => None,
            (evidence, advice) => Some(
                evidence
                    .unwrap_or_default()
                    .saturating_add(advice.unwrap_or_default())
                    .saturating_add(GRACE),
            ),
        }
    }

    pub(super) fn investigate(
        &mut self,
        now: Instant,
        run: Run,
        failure: Failure,
        wait: Duration,
        out: &mut Outbox,
    ) {
        self.checks.stop();
        self.timers.set(TimerKind::Stable, None);
        self.timers
            .set(TimerKind::Investigate, Some(later(now, wait)));
        self.investigation = Some(Box::new(Investigation {
            run: run.id,
            pid: run.pid,
            failure,
            verdict: None,
            awaiting_advice: false,
        }));
        out.push(Action::Investigate {
            agent: self.id,
            run: run.id,
        });
    }

    pub(super) fn forget_investigation(&mut self) {
        self.investigation = None;
        self.timers.set(TimerKind::Investigate, None);
    }

    /// Evidence from the edge: the log tail of an ended run (kept for the exit that follows),
    /// or what an investigation gathered.
    pub(crate) fn on_log_tail(
        &mut self,
        now: Instant,
        run: RunId,
        lines: Vec<String>,
        out: &mut Outbox,
    ) {
        // Lines of a run that is over (a late investigation) are nobody's evidence now.
        let Some(current) = self.current().filter(|r| r.id == run) else {
            return;
        };
        let pid = current.pid;
        let Some(inv) = self
            .investigation
            .as_ref()
            .filter(|inv| inv.run == run && inv.verdict.is_none())
        else {
            self.log_tail = Some(LogTail { run, pid, lines });
            return;
        };
        let failure = inv.failure.clone();
        // If the agent ends on its own meanwhile, its exit is diagnosed from the same lines.
        self.log_tail = Some(LogTail {
            run,
            pid,
            lines: lines.clone(),
        });
        let fresh_episode = failure
            .uptime
            .is_some_and(|u| u >= self.spec.policy.stable_after);
        let streak = if fresh_episode {
            1
        } else {
            self.crash_streak.saturating_add(1)
        };
        let verdict = self.judge(&failure, streak, &lines);
        let asked = self.report(Some(run), pid, &failure, lines, &verdict, out);
        let wait = asked && self.spec.policy.llm_before_restart;
        if let Some(inv) = self.investigation.as_mut() {
            inv.verdict = Some(verdict);
            inv.awaiting_advice = wait;
        }
        if !wait {
            self.conclude_investigation(now, out);
        }
    }

    /// Tell the edges about a judged failure; returns whether the advisor is asked.
    pub(super) fn report(
        &mut self,
        run: Option<RunId>,
        pid: Option<u32>,
        failure: &Failure,
        evidence: Vec<String>,
        verdict: &Diagnosis,
        out: &mut Outbox,
    ) -> bool {
        // Nothing is stricter than quarantine, and a missing program needs no opinion.
        let ask_advisor = self.spec.advisor.is_some()
            && verdict.action != Remedy::Quarantine
            && failure.cause != FailureCause::SpawnFailed;
        out.push(Action::Diagnosed {
            agent: self.id,
            report: Box::new(FailureReport {
                run,
                pid,
                cause: failure.cause,
                reason: failure.reason.clone(),
                uptime: failure.uptime,
                evidence,
                verdict: verdict.clone(),
                ask_advisor,
            }),
        });
        ask_advisor
    }

    /// Act on the stall: stop the agent; the verdict decides what follows.
    fn conclude_investigation(&mut self, now: Instant, out: &mut Outbox) {
        let Some(inv) = self.investigation.take() else {
            return;
        };
        let inv = *inv;
        self.timers.set(TimerKind::Investigate, None);
        let mut failure = inv.failure;
        let verdict = match inv.verdict {
            Some(v) => v,
            // The evidence never came: judge from nothing (a silent hang).
            None => {
                let v = self.judge(&failure, self.crash_streak.saturating_add(1), &[]);
                self.report(Some(inv.run), inv.pid, &failure, Vec::new(), &v, out);
                v
            }
        };
        let entry = records::stop_stalled(self.name(), &verdict, self.spec.stop_signal);
        failure.verdict = Some(verdict);
        // `begin_stop` needs the agent still marked running, which it is.
        self.begin_stop(now, Then::Heal(Box::new(failure)), entry, out);
    }

    pub(super) fn on_investigation_timeout(&mut self, now: Instant, out: &mut Outbox) {
        self.timers.set(TimerKind::Investigate, None);
        let Some(inv) = &self.investigation else {
            return;
        };
        if inv.awaiting_advice {
            let waited = self
                .spec
                .advisor
                .as_ref()
                .map(|a| a.wait)
                .unwrap_or_default();
            out.audit(records::llm_error(
                self.name(),
                format!(
                    "no advice within {}: acting on the rules' verdict",
                    human_duration(waited)
                ),
                "timeout",
            ));
        }
        self.conclude_investigation(now, out);
    }

    /// The advisor's answer (or its failure) about the failure of `run`.
    pub(crate) fn on_advice(
        &mut self,
        now: Instant,
        run: Option<RunId>,
        advice: Result<Diagnosis, String>,
        out: &mut Outbox,
    ) {
        let waiting = self
            .investigation
            .as_ref()
            .is_some_and(|inv| inv.awaiting_advice && Some(inv.run) == run);
        let base = if waiting {
            self.investigation.as_ref().and_then(|i| i.verdict.clone())
        } else {
            self.diagnosis.as_deref().cloned()
        };
        let advice = match advice {
            Ok(advice) => advice,
            Err(error) => {
                let stands = base
                    .as_ref()
                    .map(|b| format!("the rules' verdict stands: {}", b.summary()))
                    .unwrap_or_else(|| "the rules' verdict stands".into());
                out.audit(records::llm_error(
                    self.name(),
                    format!("no advice ({error}); {stands}"),
                    &error,
                ));
                if waiting {
                    self.conclude_investigation(now, out);
                }
                return;
            }
        };
        let Some(base) = base else {
            return;
        };
        let min_confidence = self.spec.advisor.as_ref().map_or(1.0, |a| a.min_confidence);
        let judgement = Judgement::of(&base, &advice, min_confidence);
        let stricter = judgement == Judgement::Stricter;
        let consequence = match (stricter, waiting) {
            (false, _) => String::new(),
            (true, true) => " — applied before the stop".to_string(),
            (true, false) => format!(" — {}", self.late_consequence(advice.action)),
        };
        out.audit(records::advice(
            self.name(),
            &advice,
            &judgement.describe(&base, min_confidence),
            &consequence,
            &base,
            stricter,
        ));
        if waiting {
            if stricter && let Some(inv) = self.investigation.as_mut() {
                inv.verdict = Some(advice);
            }
            self.conclude_investigation(now, out);
        } else if stricter {
            self.apply_late_advice(now, advice, out);
        }
    }

    /// What a stricter advice will do to an agent that was already handled by the rules.
    fn late_consequence(&self, action: Remedy) -> &'static str {
        match (&self.phase, action) {
            (Phase::Backoff { retry: false, .. }, Remedy::Quarantine) => {
                "the waiting restart is cancelled"
            }
            (Phase::Backoff { retry: false, .. }, _) => "the waiting restart is postponed",
            (Phase::Quarantined { .. }, _) => "already quarantined",
            _ => "it applies if the agent fails again",
        }
    }

    fn apply_late_advice(&mut self, now: Instant, advice: Diagnosis, out: &mut Outbox) {
        self.diagnosis = Some(Box::new(advice.clone()));
        match self.phase {
            Phase::Backoff {
                until,
                retry: false,
            } => match advice.action {
                Remedy::Quarantine => {
                    self.timers.set(TimerKind::Restart, None);
                    let failure = Failure {
                        reason: self
                            .last_problem
                            .clone()
                            .unwrap_or_else(|| "failure".into()),
                        cause: self.last_cause,
                        uptime: None,
                        verdict: None,
                        spawn_error: None,
                        run: None,
                        oom_killed: false,
                    };
                    self.quarantine_diagnosed(&failure, &advice, out);
                }
                _ => {
                    let at = later(now, self.throttle_delay());
                    if at > until {
                        self.phase = Phase::Backoff {
                            until: at,
                            retry: false,
                        };
                        self.timers.set(TimerKind::Restart, Some(at));
                    }
                }
            },
            Phase::Quarantined { .. } => {}
            _ => self.advice = Some(Box::new(advice)),
        }
    }
}
