//! Declared degradation. An agent that pauses on purpose — its exchange rate-limits it, its
//! circuit breaker is open — says so, and is then not judged stalled until the moment it
//! named, bounded by its policy's `max_degraded`. A restart is what makes a rate limit worse.
//!
//! The bound is per episode (from the first declaration until the agent says `ok` or its run
//! ends), so declaring again and again buys no more than `max_degraded` in all. Crashes are
//! never suspended, and neither is anything but a stall.

use std::time::{Duration, Instant};

use super::{Agent, Outbox, Phase, TimerKind};
use crate::checks::CheckOutput;
use crate::event::RunId;
use crate::records;
use crate::time::{Now, later};

/// What an agent declares about itself.
#[derive(Clone, Debug, PartialEq)]
pub enum Declared {
    /// Working, but not fully; `until`: for how long from now it expects to stay so (at most
    /// `max_degraded` counts).
    Degraded {
        reason: String,
        until: Option<Duration>,
    },
    Ok,
}

/// What became of a declaration.
#[derive(Clone, Debug, PartialEq)]
pub struct DeclaredAnswer {
    pub accepted: bool,
    /// `degraded` or `ok`, as the agent now stands.
    pub state: &'static str,
    /// Stall verdicts are not acted on before this (wall-clock milliseconds).
    pub suspended_until_ms: Option<i64>,
    /// In words, for the one who declared.
    pub note: String,
}

/// An agent's declared degradation, for its current run.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Degradation {
    pub run: RunId,
    pub reason: String,
    pub since_ms: i64,
    /// The episode's bound: `since` + `max_degraded`, and its wall-clock twin.
    pub limit: Instant,
    pub limit_ms: i64,
    /// Stall verdicts are suspended until then (monotonic), and its wall-clock twin.
    pub until: Instant,
    pub until_ms: i64,
    /// The suspension is over (its time ran out): the agent is judged as usual.
    pub spent: bool,
    /// The latest stall not acted on (the check and why): judged again when the suspension
    /// ends.
    pub suspended_stall: Option<(usize, String)>,
    /// A stall not acted on was recorded (once per episode).
    pub noted: bool,
    /// When the last `degraded` record was written (a reason that changes at every call is
    /// not journaled at every call), and whether the reason changed since.
    pub recorded: Instant,
    pub unrecorded: bool,
}

/// A degradation as saved across restarts of vigil (wall-clock times; `state.jsonl`).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SavedDegradation {
    pub reason: String,
    pub since_ms: i64,
    pub limit_ms: i64,
    pub until_ms: i64,
    #[serde(default)]
    pub spent: bool,
}

impl Agent {
    /// The run the agent is in now, if any.
    fn live_run(&self) -> Option<RunId> {
        match self.phase {
            Phase::Starting(run) | Phase::Running(run) if run.pid.is_some() => Some(run.id),
            _ => None,
        }
    }

    /// The current run's degradation.
    pub(crate) fn degradation(&self) -> Option<&Degradation> {
        self.degraded
            .as_deref()
            .filter(|d| Some(d.run) == self.live_run())
    }

    /// Stall verdicts are not acted on now.
    pub(crate) fn stall_suspended(&self, now: Instant) -> bool {
        self.degradation()
            .is_some_and(|d| !d.spent && now < d.until)
    }

    /// A declaration by the agent (`run`: the run that sent it, when known).
    pub(crate) fn declare(
        &mut self,
        now: Now,
        run: Option<RunId>,
        declared: Declared,
        out: &mut Outbox,
    ) -> DeclaredAnswer {
        let Some(live) = self.live_run().filter(|r| run.is_none_or(|run| run == *r)) else {
            return DeclaredAnswer {
                accepted: false,
                state: "ok",
                suspended_until_ms: None,
                note: format!(
                    "{} is not running: only a running agent declares its state",
                    self.name()
                ),
            };
        };
        if self.degraded.as_ref().is_some_and(|d| d.run != live) {
            self.degraded = None;
        }
        match declared {
            Declared::Ok => {
                if let Some(d) = self.degraded.take() {
                    self.timers.set(TimerKind::Degraded, None);
                    out.audit(records::degraded_ended(
                        self.name(),
                        &d.reason,
                        "the agent declared itself ok",
                    ));
                    self.judge_suspended_stall(now, d.suspended_stall, out);
                }
                DeclaredAnswer {
                    accepted: true,
                    state: "ok",
                    suspended_until_ms: None,
                    note: "ok: stall checks apply as usual".into(),
                }
            }
            Declared::Degraded { reason, until } => self.degrade(now, live, reason, until, out),
        }
    }

    fn degrade(
        &mut self,
        now: Now,
        run: RunId,
        reason: String,
        until: Option<Duration>,
        out: &mut Outbox,
    ) -> DeclaredAnswer {
        let max = self.spec.policy.max_degraded;
        let want = until.unwrap_or(max);
        // A new reason is journaled, but not more than once a minute: one that changes
        // sooner is shown at once (status) and journaled at the first declaration after the
        // minute (and in `degraded_ended`, which names the last reason).
        let journal = match &self.degraded {
            None => true,
            Some(d) => {
                (d.reason != reason || d.unrecorded)
                    && now.mono.saturating_duration_since(d.recorded) >= Duration::from_secs(60)
            }
        };
        if let Some(d) = self.degraded.as_deref_mut()
            && d.reason != reason
        {
            d.unrecorded = true;
        }
        let d = self.degraded.get_or_insert_with(|| {
            Box::new(Degradation {
                run,
                reason: reason.clone(),
                since_ms: now.wall_ms,
                limit: later(now.mono, max),
                limit_ms: now.wall_ms + max.as_millis() as i64,
                until: now.mono,
                until_ms: now.wall_ms,
                spent: max.is_zero(),
                suspended_stall: None,
                noted: false,
                recorded: now.mono,
                unrecorded: false,
            })
        });
        d.reason = reason;
        if !d.spent {
            let until = later(now.mono, want).min(d.limit);
            d.until_ms = now.wall_ms + until.saturating_duration_since(now.mono).as_millis() as i64;
            d.until = until;
        }
        let d = d.clone();
        let note = if d.spent {
            if max.is_zero() {
                "degraded: shown, but stall checks still apply (its policy's max_degraded is 0s)"
                    .to_string()
            } else {
                format!(
                    "degraded: shown, but stall checks apply again: this episode has had the {} its policy's max_degraded allows (declare ok first)",
                    crate::human_duration(max)
                )
            }
        } else {
            let bounded = until.is_none_or(|u| u > max);
            format!(
                "degraded: stall checks suspended for {}{}",
                crate::human_duration(d.until.saturating_duration_since(now.mono)),
                if bounded {
                    format!(" (max_degraded = {})", crate::human_duration(max))
                } else {
                    String::new()
                }
            )
        };
        if !d.spent {
            self.timers.set(TimerKind::Degraded, Some(d.until));
        }
        if journal {
            if let Some(d) = self.degraded.as_deref_mut() {
                d.recorded = now.mono;
                d.unrecorded = false;
            }
            out.audit(records::degraded(self.name(), &d, &note));
        }
        DeclaredAnswer {
            accepted: true,
            state: "degraded",
            suspended_until_ms: (!d.spent).then_some(d.until_ms),
            note,
        }
    }

    /// The suspension's time is up: stall checks apply again, on the record.
    pub(crate) fn on_degraded_due(&mut self, now: Now, out: &mut Outbox) {
        let max = self.spec.policy.max_degraded;
        if self.degradation().is_none() {
            // Its run has ended: a new run starts undegraded.
            self.degraded = None;
            return;
        }
        let Some(d) = self.degraded.as_deref_mut().filter(|d| !d.spent) else {
            return;
        };
        let bounded = d.until >= d.limit;
        d.spent = bounded;
        let why = if bounded {
            format!(
                "it has been degraded for the {} its policy's max_degraded allows: stall checks apply again",
                crate::human_duration(max)
            )
        } else {
            "the time it declared has passed: stall checks apply again".to_string()
        };
        let reason = d.reason.clone();
        let suspended = d.suspended_stall.take();
        if !bounded {
            self.degraded = None;
        }
        out.audit(records::degraded_ended(self.name(), &reason, &why));
        self.judge_suspended_stall(now, suspended, out);
    }

    /// The suspension is over: the stall it held back is judged again, through the same path
    /// as any stall (an upstream's wait, a quiet window, a stop under way, an investigation),
    /// if it still stands — still not ready, or the check still failing and counting.
    fn judge_suspended_stall(
        &mut self,
        now: Now,
        stall: Option<(usize, String)>,
        out: &mut Outbox,
    ) {
        let Some((index, reason)) = stall else {
            return;
        };
        if self.checks.still_stalled(index, now, &self.spec.quiet) {
            let stalled = CheckOutput::Stalled {
                index,
                reason,
                triggered: false,
            };
            self.check_outputs(now, vec![stalled], out);
        }
    }

    /// A stall found while suspended: not acted on (recorded once per episode), and kept to be
    /// judged again when the suspension ends.
    pub(crate) fn note_suspended_stall(&mut self, index: usize, reason: &str, out: &mut Outbox) {
        let name = self.spec.name.clone();
        if let Some(d) = self.degraded.as_deref_mut() {
            if !d.noted {
                d.noted = true;
                out.audit(records::stall_suspended(
                    &name, reason, &d.reason, d.until_ms,
                ));
            }
            d.suspended_stall = Some((index, reason.to_string()));
        }
    }

    /// A watcher's blame this agent's degradation holds back (its output is stale on purpose):
    /// recorded once, not kept — the watcher's polled check blames it again if it still holds
    /// once the suspension is over.
    pub(crate) fn note_suspended_blame(&mut self, reason: &str, out: &mut Outbox) {
        let name = self.spec.name.clone();
        if let Some(d) = self.degraded.as_deref_mut()
            && !d.noted
        {
            d.noted = true;
            out.audit(records::stall_suspended(
                &name, reason, &d.reason, d.until_ms,
            ));
        }
    }

    /// For saving across a restart of vigil.
    pub(crate) fn saved_degradation(&self) -> Option<SavedDegradation> {
        let d = self.degradation()?;
        Some(SavedDegradation {
            reason: d.reason.clone(),
            since_ms: d.since_ms,
            limit_ms: d.limit_ms,
            until_ms: d.until_ms,
            spent: d.spent,
        })
    }

    /// A degradation saved by the vigil before this one, for the run it adopted.
    pub(crate) fn restore_degradation(&mut self, now: Now, run: RunId, saved: SavedDegradation) {
        let at = |ms: i64| {
            later(
                now.mono,
                Duration::from_millis((ms - now.wall_ms).max(0) as u64),
            )
        };
        // A time that passed while vigil was down ends at once, on the record.
        let until = at(saved.until_ms);
        let spent = saved.spent;
        self.degraded = Some(Box::new(Degradation {
            run,
            reason: saved.reason,
            since_ms: saved.since_ms,
            limit: at(saved.limit_ms),
            limit_ms: saved.limit_ms,
            until,
            until_ms: saved.until_ms,
            spent,
            suspended_stall: None,
            noted: false,
            recorded: now.mono,
            unrecorded: false,
        }));
        if !spent {
            self.timers.set(TimerKind::Degraded, Some(until));
        }
    }
}
