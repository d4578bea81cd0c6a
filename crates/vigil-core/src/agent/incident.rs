//! An agent's side of a fleet incident (`crate::incident`): what its failure's cause is, held
//! while the incident is open (no restart, no budget), and started again as the canary or
//! once the cause cleared.

use std::time::Instant;

use super::{Agent, Failure, Outbox, Phase, TimerKind, Waiting};
use crate::checks::Verdict;
use crate::diagnosis::{Category, Diagnosis};
use crate::incident::{Cause, Incident, OnFailure};
use crate::records;

/// Rules that name what went wrong inside one agent, never a cause several share.
const OWN_RULES: &[&str] = &["crash", "hang", "out_of_memory"];

impl Agent {
    /// What this failure may share with other agents' failures: a target of its own checks
    /// that vigil found unreachable (the database they all use), else a diagnosis signature
    /// that points outside the agent (`database_unreachable`, `rate_limited`).
    pub(super) fn shared_cause(&self, d: &Diagnosis) -> Option<Cause> {
        let target = self.checks.checks.iter().find_map(|c| {
            (c.status.verdict == Verdict::Unknown)
                .then_some(c.spec.target.as_deref())
                .flatten()
        });
        if let Some(t) = target {
            return Some(Cause {
                key: format!("target:{t}"),
                text: format!("{t} unreachable"),
            });
        }
        let shared = matches!(d.category, Category::Transient | Category::Throttled)
            && !OWN_RULES.contains(&d.rule.as_str());
        shared.then(|| Cause {
            key: format!("rule:{}", d.rule),
            text: d.rule.clone(),
        })
    }

    /// Ask the fleet's incidents about this failure; `true` when one holds it.
    pub(super) fn incident_holds(
        &mut self,
        now: Instant,
        failure: &Failure,
        d: &Diagnosis,
        out: &mut Outbox,
    ) -> bool {
        let cause = self.shared_cause(d);
        let verdict = out.incidents.on_failure(
            now,
            self.id,
            &self.spec.name,
            self.spec.template.as_deref(),
            cause,
        );
        let OnFailure::Hold { incident, opened } = verdict else {
            return false;
        };
        let Some(inc) = out
            .incidents
            .list
            .iter()
            .find(|i| i.id == incident)
            .cloned()
        else {
            return false;
        };
        if opened {
            let policy = out.incidents.policy.clone();
            out.audit(records::incident_opened(&inc, &policy));
        }
        self.hold_for(
            now,
            &inc,
            &format!("{}: not restarted, no restart budget spent", failure.reason),
            out,
        );
        self.phase = Phase::Waiting { backoff: None };
        true
    }

    fn hold_for(&mut self, now: Instant, inc: &Incident, what: &str, out: &mut Outbox) {
        self.checks.upstream_down = true;
        self.waiting = Some(Box::new(Waiting {
            on: format!("incident {}", inc.id),
            why: inc.cause.text.clone(),
            since: now,
            incident: Some(inc.id),
            cause: Some(inc.cause.clone()),
        }));
        self.last_problem = Some(format!("held by incident {} ({})", inc.id, inc.cause.text));
        out.audit(records::held_by_incident(self.name(), inc, what));
    }

    /// An incident opened while this member waited to restart: that restart is held too.
    pub(crate) fn hold_waiting_restart(
        &mut self,
        now: Instant,
        inc: &Incident,
        out: &mut Outbox,
    ) -> bool {
        let Phase::Backoff { until, retry } = self.phase else {
            return false;
        };
        if self.waiting.is_some() {
            return false;
        }
        self.timers.set(TimerKind::Restart, None);
        self.phase = Phase::Waiting {
            backoff: Some((until, retry)),
        };
        self.hold_for(now, inc, "its waiting restart is held", out);
        true
    }

    /// Start it again: as the incident's canary, or after the cause cleared. `false` when it
    /// was not started: not held by `incident` (any more), or no longer wanted running.
    pub(crate) fn release_from(
        &mut self,
        now: Instant,
        incident: u64,
        what: &str,
        out: &mut Outbox,
    ) -> bool {
        if self
            .waiting
            .as_deref()
            .is_none_or(|w| w.incident != Some(incident))
        {
            return false;
        }
        let Some(w) = self.waiting.take() else {
            return false;
        };
        self.checks.upstream_down = false;
        // Its own waiting restart (from before the incident opened) waited for the same
        // cause: it goes now, like the others, spending no budget on what was not its own.
        if !matches!(self.phase, Phase::Waiting { .. }) || !self.want_running {
            return false;
        }
        let waited = now.saturating_duration_since(w.since);
        out.audit(records::released_by_incident(
            self.name(),
            incident,
            waited,
            what,
        ));
        self.phase = Phase::Stopped;
        self.spawn(now, true, out);
        true
    }

    /// A person acts on an agent an incident holds: the hold yields (the incident goes on
    /// without it), and the person's command decides what follows.
    pub(super) fn leave_incident(&mut self, now: Instant, who: &str, out: &mut Outbox) {
        let Some(incident) = self.waiting.as_deref().and_then(|w| w.incident) else {
            return;
        };
        let Some(w) = self.waiting.take() else { return };
        self.checks.upstream_down = false;
        out.incidents.let_go(now, incident, self.id);
        let waited = now.saturating_duration_since(w.since);
        out.audit(records::released_by_incident(
            self.name(),
            incident,
            waited,
            &format!("{who} acts on it: it leaves the incident's hold"),
        ));
        if let Phase::Waiting { .. } = self.phase {
            self.phase = Phase::Stopped;
            self.timers.set(TimerKind::Restart, None);
        }
    }

    /// The incident holding it, and its cause.
    pub(crate) fn incident_hold(&self) -> Option<(u64, &Cause)> {
        let w = self.waiting.as_deref()?;
        Some((w.incident?, w.cause.as_ref()?))
    }

    /// vigil was restarted while an incident held it: held again, in the incident the book
    /// restores, instead of started. `None` when nothing was saved (or a person's decision,
    /// a quarantine or a stop, came since).
    pub(crate) fn take_restored_hold(&mut self) -> Option<(u64, Cause)> {
        let hold = self.restored_hold.take()?;
        (self.spec.autostart && !self.held && matches!(self.phase, Phase::Stopped)).then_some(hold)
    }

    /// Held by a restored incident (see `take_restored_hold`).
    pub(crate) fn hold_restored(&mut self, now: Instant, inc: &Incident, out: &mut Outbox) {
        self.want_running = true;
        self.phase = Phase::Waiting { backoff: None };
        self.hold_for(
            now,
            inc,
            "held again after vigil restarted: not started until the cause is probed",
            out,
        );
    }

    /// Still starting (a READY=1 not yet sent): a canary is given the time it needs.
    pub fn is_starting(&self) -> bool {
        matches!(self.phase, Phase::Starting(_))
    }

    /// A check on `target` (a `target:` cause) passed on evidence from `since` on: the shared
    /// service answers again.
    pub fn target_ok_since(&self, target: &str, since: Instant) -> bool {
        self.checks.checks.iter().any(|c| {
            c.spec.target.as_deref() == Some(target)
                && c.status.verdict == Verdict::Ok
                && c.status.at.is_some_and(|t| t >= since)
        })
    }
}
