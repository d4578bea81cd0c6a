//! The supervision loop's side of the API: it publishes pictures of the fleet and the audit
//! records it writes, and keeps the counters metrics are made of. Cheap enough to call on
//! every turn of the loop; the expensive part (a picture) is rate-limited.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, watch};
use vigil_core::{Now, Supervisor};

use super::{Counters, Hub, Snapshot};
use crate::audit::Record;

/// A changed fleet is shown within this long…
pub const PUBLISH_DIRTY: Duration = Duration::from_millis(100);
/// …and an unchanged one is re-published this often, so ages and uptimes move.
const PUBLISH_IDLE: Duration = Duration::from_secs(1);

pub struct Publisher {
    snapshot: watch::Sender<Arc<Snapshot>>,
    audit: broadcast::Sender<Arc<str>>,
    hub: Option<Arc<Hub>>,
    counters: Counters,
    dirty: bool,
    last: Option<Instant>,
}

impl Publisher {
    pub fn new(
        snapshot: watch::Sender<Arc<Snapshot>>,
        audit: broadcast::Sender<Arc<str>>,
        hub: Option<Arc<Hub>>,
    ) -> Self {
        Self {
            snapshot,
            audit,
            hub,
            counters: Counters::default(),
            dirty: true,
            last: None,
        }
    }

    /// Without an API nobody reads pictures: building them would be wasted work.
    pub fn enabled(&self) -> bool {
        self.hub.is_some()
    }

    /// Something happened in the loop: the next tick publishes.
    pub fn touch(&mut self, now: Now) {
        self.dirty = true;
        if let Some(hub) = &self.hub {
            hub.loop_beat_ms.store(now.wall_ms, Ordering::Relaxed);
        }
    }

    /// Count the records just written and pass them to live feeds.
    pub fn records(&mut self, records: &[Record]) {
        for r in records {
            *self.counters.actions.entry(r.action.clone()).or_default() += 1;
            if r.action == "restart"
                && let Some(agent) = &r.agent
            {
                let cause = r
                    .metadata
                    .get("cause")
                    .and_then(|c| c.as_str())
                    .unwrap_or("requested");
                *self
                    .counters
                    .restarts
                    .entry(agent.clone())
                    .or_default()
                    .entry(cause.to_string())
                    .or_default() += 1;
            }
            if self.audit.receiver_count() > 0
                && let Ok(line) = serde_json::to_string(r)
            {
                let _ = self.audit.send(line.into());
            }
        }
    }

    /// Called on the loop's publish tick: a new picture when something changed, or when the
    /// last one is getting old.
    pub fn tick(&mut self, sup: &Supervisor, now: Now) {
        let due = self
            .last
            .is_none_or(|t| now.mono.saturating_duration_since(t) >= PUBLISH_IDLE);
        if self.dirty || due {
            self.publish(sup, now);
        }
        if let Some(hub) = &self.hub {
            hub.loop_beat_ms.store(now.wall_ms, Ordering::Relaxed);
        }
    }

    /// The loop takes a queued heartbeat: the next one for this agent is queued again.
    pub fn take_heartbeat(&self, agent: &str) {
        if let Some(hub) = &self.hub {
            hub.pending_heartbeats
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(agent);
        }
    }

    /// A new picture now (after a person's command, so its answer and the picture agree).
    pub fn publish(&mut self, sup: &Supervisor, now: Now) {
        if !self.enabled() {
            return;
        }
        self.snapshot
            .send_replace(Arc::new(Snapshot::build(sup, now, &self.counters)));
        self.dirty = false;
        self.last = Some(now.mono);
    }
}
