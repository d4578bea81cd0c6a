//! Exclusive placement: an agent that one node of a cluster runs, the node holding its lease.
//!
//! The edge holds the lease in PostgreSQL and reports what the cluster says
//! ([`LeaseNews`]); the core keeps the promise "never two copies": a run is started only
//! under a lease still valid (`spawn` asks [`Agent::lease_for_start`]), and a live run is
//! stopped before its lease can lapse — the stop begins at
//! `valid_until - stop_timeout - margin`, so even its SIGKILL lands before another node may
//! take the lease. `valid_until` errs early (counted from before the renewal was sent), and
//! another node takes an expired lease only by the database's own clock.

use std::time::Instant;

use super::{Agent, Outbox, Phase, Then, TimerKind};
use crate::action::Action;
use crate::event::LeaseNews;
use crate::records;

/// What this node knows of an exclusive agent's lease.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum LeaseView {
    /// No word from the cluster yet (vigil has just started).
    Unknown,
    /// Held here at `epoch`, valid until `valid_until` on this host's clock.
    Held { epoch: u64, valid_until: Instant },
    /// Not held here, and why (`node fra-2 holds it (epoch 7)`); `released`: the epoch this
    /// node gave up (a renewal of it still on its way is stale, never to be acted on).
    NotHeld { why: String, released: Option<u64> },
}

impl Agent {
    /// The epoch a new run may start under: `Ok(None)` for an agent that is not exclusive,
    /// `Err(why)` when this node may not run it now.
    pub(super) fn lease_for_start(&self, now: Instant) -> Result<Option<u64>, String> {
        let Some(view) = self.lease.as_deref() else {
            return Ok(None);
        };
        match view {
            LeaseView::Held { epoch, valid_until } if self.fence_at(*valid_until) > now => {
                Ok(Some(*epoch))
            }
            LeaseView::Held { .. } => Err("its lease is about to lapse".to_string()),
            LeaseView::Unknown => Err("the cluster has not said yet who holds its lease".into()),
            LeaseView::NotHeld { why, .. } => Err(why.clone()),
        }
    }

    /// When a run under a lease valid until `valid_until` must begin to stop.
    fn fence_at(&self, valid_until: Instant) -> Instant {
        let margin = self.spec.exclusive.map(|e| e.margin).unwrap_or_default();
        valid_until
            .checked_sub(self.spec.stop_timeout + margin)
            .unwrap_or(valid_until)
    }

    /// Wanted running, but this node may not run it now: it waits for its lease.
    pub(super) fn enter_standby(&mut self, why: &str, out: &mut Outbox) {
        self.timers.set(TimerKind::Restart, None);
        if !matches!(self.phase, Phase::Standby) {
            out.audit(records::standby(self.name(), why));
        }
        self.phase = Phase::Standby;
    }

    /// The lease held at this moment, if any.
    pub fn lease(&self) -> Option<(u64, Instant)> {
        match self.lease.as_deref() {
            Some(LeaseView::Held { epoch, valid_until }) => Some((*epoch, *valid_until)),
            _ => None,
        }
    }

    /// Why an exclusive agent is not run here (who holds its lease), while it is not.
    pub fn standby_reason(&self) -> Option<&str> {
        match self.lease.as_deref() {
            Some(LeaseView::NotHeld { why, .. }) => Some(why),
            Some(LeaseView::Unknown) => Some("waiting for the cluster's answer"),
            _ => None,
        }
    }

    /// The fencing epoch the current run started under.
    pub fn run_fence(&self) -> Option<u64> {
        self.current().and_then(|r| r.fence)
    }

    pub(crate) fn on_lease(&mut self, now: Instant, news: LeaseNews, out: &mut Outbox) {
        if self.lease.is_none() || self.removed {
            return;
        }
        match news {
            LeaseNews::Held { epoch, valid_until } => self.lease_held(now, epoch, valid_until, out),
            LeaseNews::Elsewhere { holder, epoch } => {
                self.lose_lease(now, &format!("node {holder} holds it (epoch {epoch})"), out)
            }
            LeaseNews::Refused { why } => self.lose_lease(now, &why, out),
            LeaseNews::Move { to } => self.move_to(now, to, out),
        }
    }

    fn lease_held(&mut self, now: Instant, epoch: u64, valid_until: Instant, out: &mut Outbox) {
        if let Some(LeaseView::NotHeld {
            released: Some(gone),
            ..
        }) = self.lease.as_deref()
            && *gone >= epoch
        {
            // The answer to a renewal sent before this node gave the lease up.
            return;
        }
        let before = self
            .lease
            .replace(Box::new(LeaseView::Held { epoch, valid_until }));
        let fence_at = self.fence_at(valid_until);
        self.timers.set(TimerKind::Fence, Some(fence_at));
        let renewed = matches!(
            before.as_deref(),
            Some(LeaseView::Held { epoch: e, .. }) if *e == epoch
        );
        if fence_at <= now {
            // Renewed too late to be of use (the answer took longer than the lease allows for a
            // stop): as good as lapsed.
            self.on_fence_due(now, out);
            return;
        }
        let stale_run =
            matches!(self.phase, Phase::Starting(r) | Phase::Running(r) if r.fence != Some(epoch));
        if !renewed {
            let what = match self.phase {
                Phase::Standby => "starting it here",
                _ if stale_run => "its run started under another epoch: restarting it",
                Phase::Starting(_) | Phase::Running(_) => "its run goes on",
                _ => "it may run here",
            };
            out.audit(records::lease_acquired(self.name(), epoch, what));
        }
        if stale_run {
            // A run from before (adopted as vigil started, or started under an earlier lease
            // of this node) must not act under a fence it no longer holds.
            let run_fence = self
                .run_fence()
                .map_or("none".to_string(), |f| f.to_string());
            let entry = records::fenced(
                self.name(),
                &format!(
                    "it runs under fencing epoch {run_fence}, the lease is now at epoch {epoch}"
                ),
                self.spec.stop_signal,
            );
            self.begin_stop(now, Then::Start, entry, out);
            return;
        }
        if matches!(self.phase, Phase::Standby) {
            self.phase = Phase::Stopped;
            self.spawn(now, true, out);
        }
    }

    /// This node does not hold the lease (any more): what runs here of the agent is stopped.
    fn lose_lease(&mut self, now: Instant, why: &str, out: &mut Outbox) {
        let released = match self.lease.as_deref() {
            Some(LeaseView::NotHeld { released, .. }) => *released,
            _ => None,
        };
        let before = self.lease.replace(Box::new(LeaseView::NotHeld {
            why: why.to_string(),
            released,
        }));
        self.timers.set(TimerKind::Fence, None);
        match before.as_deref() {
            Some(LeaseView::Held { epoch, .. }) => {
                out.audit(records::lease_lost(self.name(), *epoch, why))
            }
            // On standby already: the record says who runs it now, once per change.
            Some(LeaseView::NotHeld { why: was, .. }) if was == why => {}
            _ if matches!(self.phase, Phase::Standby) => {
                out.audit(records::standby(self.name(), why))
            }
            _ => {}
        }
        self.fence_run(now, why, None, out);
    }

    /// Stop what runs of the agent because it may not run here; `release`: give the lease to
    /// that node once stopped.
    fn fence_run(&mut self, now: Instant, why: &str, release: Option<String>, out: &mut Outbox) {
        match &mut self.phase {
            Phase::Starting(_) | Phase::Running(_) => {
                let entry = records::fenced(self.name(), why, self.spec.stop_signal);
                self.begin_stop(now, Then::Standby { release }, entry, out);
            }
            Phase::Stopping { then, .. } => {
                // Stopping already: it does not start again here once stopped.
                // (A move waits until it is stopped: the edge repeats it while it stands.)
                if matches!(then, Then::Start | Then::Heal(_)) {
                    *then = Then::Standby { release };
                }
            }
            Phase::Backoff { .. } => self.enter_standby(why, out),
            Phase::Stopped
            | Phase::Standby
            | Phase::Quarantined { .. }
            | Phase::Conflict { .. }
            | Phase::Waiting { .. } => {
                if let Some(to) = release {
                    self.release_lease(Some(to), out);
                }
            }
        }
    }

    /// A person moves the agent to node `to`: stopped here, then its lease is given to `to`.
    fn move_to(&mut self, now: Instant, to: String, out: &mut Outbox) {
        if !matches!(self.lease.as_deref(), Some(LeaseView::Held { .. })) {
            return;
        }
        let why = format!("moved to node {to} by a person");
        self.fence_run(now, &why, Some(to), out);
    }

    /// Once stopped: give the lease up (to `to` for a move).
    pub(super) fn release_lease(&mut self, to: Option<String>, out: &mut Outbox) {
        let Some(LeaseView::Held { epoch, .. }) = self.lease.as_deref().cloned() else {
            return;
        };
        let why = match &to {
            Some(node) => format!("given to node {node} (moved by a person)"),
            None => "given up".to_string(),
        };
        out.audit(records::lease_lost(self.name(), epoch, &why));
        self.lease = Some(Box::new(LeaseView::NotHeld {
            why: why.clone(),
            released: Some(epoch),
        }));
        self.timers.set(TimerKind::Fence, None);
        out.push(Action::ReleaseLease {
            agent: self.id,
            epoch,
            to,
        });
    }

    /// The lease was not renewed in time (or, for a run adopted as vigil started, the cluster
    /// did not answer in time): what runs stops before the lease can lapse.
    pub(super) fn on_fence_due(&mut self, now: Instant, out: &mut Outbox) {
        self.timers.set(TimerKind::Fence, None);
        let why = match self.lease.as_deref() {
            Some(LeaseView::Held { .. }) => {
                "its lease was not renewed in time (the cluster's database did not answer)"
            }
            Some(LeaseView::Unknown) => {
                "the cluster did not confirm its lease in time after vigil started"
            }
            _ => return,
        };
        self.lose_lease(now, why, out);
    }

    /// A run adopted as vigil starts: it goes on only once the cluster confirms this node
    /// holds its lease at the run's epoch, and no longer than `confirm_within` without that.
    pub(super) fn adopted_under_lease(&mut self, now: Instant, out: &mut Outbox) {
        let Some(exclusive) = self.spec.exclusive else {
            return;
        };
        match self.lease.as_deref().cloned() {
            Some(LeaseView::Unknown) => self.timers.set(
                TimerKind::Fence,
                Some(crate::time::later(now, exclusive.confirm_within)),
            ),
            Some(LeaseView::Held { epoch, valid_until }) => {
                self.lease_held(now, epoch, valid_until, out)
            }
            Some(LeaseView::NotHeld { why, .. }) => self.fence_run(now, &why, None, out),
            None => {}
        }
    }
}
