//! How vigil itself is doing, shared between the supervision loop (which writes) and the API
//! and metrics (which read): `/health` turns it into `ok` / `degraded`, metrics into counters.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::audit::JournalHealth;

#[derive(Debug, Default)]
pub struct Health {
    pub journal: Arc<JournalHealth>,
    /// Turns of the supervision loop: an idle fleet does not move it.
    pub loop_wakeups: AtomicU64,
    /// The notify socket could not be bound, or its reader stopped.
    pub notify_down: AtomicBool,
    /// Some agent has a notify check (only then is a notify socket that is down a problem).
    pub notify_needed: AtomicBool,
    /// The last write of `state.jsonl` failed (it is retried with the next change).
    pub state_failing: AtomicBool,
    /// Each run has a cgroup of its own: a run's end is proven by its empty cgroup, not only
    /// by the processes vigil can still attribute to it.
    pub runs_in_cgroups: AtomicBool,
    /// This node is in a cluster (`[cluster]`)…
    pub clustered: AtomicBool,
    /// …and the cluster's last round reached its database.
    pub cluster_up: Arc<AtomicBool>,
    /// The journal's mirror in the cluster's database.
    pub mirror: Arc<crate::cluster::MirrorHealth>,
}

impl Health {
    pub fn new(journal: Arc<JournalHealth>) -> Health {
        Health {
            journal,
            ..Health::default()
        }
    }

    /// What is wrong, in words; empty when nothing is.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.journal.failing.load(Ordering::Relaxed) {
            out.push(format!(
                "the audit journal cannot be written: {} record(s) wait in memory and are written once it can",
                self.journal.waiting.load(Ordering::Relaxed)
            ));
        }
        if self.state_failing.load(Ordering::Relaxed) {
            out.push(
                "state.jsonl cannot be written: budgets, stops and quarantines would not survive a restart of vigil"
                    .into(),
            );
        }
        if self.clustered.load(Ordering::Relaxed) && !self.cluster_up.load(Ordering::Relaxed) {
            out.push(
                "the cluster's database does not answer: exclusive agents are stopped before their leases can lapse, and wait on standby"
                    .into(),
            );
        }
        if self.notify_down.load(Ordering::Relaxed) && self.notify_needed.load(Ordering::Relaxed) {
            out.push("the notify socket is not being read: notify checks see no heartbeats".into());
        }
        out
    }
}
