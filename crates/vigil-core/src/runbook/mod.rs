//! Runbooks: steps vigil runs when an alert arrives. This module keeps their state — which
//! alerts were seen, which runs wait, run and ended, and at which step — and the supervisor
//! (`supervisor/alerts.rs`) carries each step out through the same policy and journal as
//! everything else.

pub mod spec;

use std::collections::{HashSet, VecDeque};
use std::time::Instant;

pub use spec::{
    Alert, AlertAnswer, AlertPolicy, Matcher, OnFailure, RunbookSpec, SELF_ALERTS, Step,
};

use crate::event::AgentId;

/// Alerts remembered for de-duplication (fingerprint + start): memory stays flat however
/// long the stream of repeats.
const SEEN_MAX: usize = 20_000;
/// Ended runs kept for `/runbooks`.
const KEEP_ENDED: usize = 50;

/// Where a run is.
#[derive(Clone, Debug, PartialEq)]
pub enum RunState {
    /// Waiting for a free slot (`max_concurrent`).
    Queued,
    /// Its current step is to be carried out.
    Ready,
    /// The edge is carrying out its current step (collecting, executing).
    Awaiting,
    /// `wait_healthy`: fresh evidence of health since `since`, by `until`.
    WaitingHealthy { since: Instant, until: Instant },
    /// Over: how, and what it came to in words.
    Ended {
        at: Instant,
        outcome: Outcome,
        how: String,
    },
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every step succeeded.
    Succeeded,
    /// A step failed or the runbook timed out (`runbook_failed`).
    Failed,
    /// Called off: its alert resolved, its runbook left the config, or its agent was not
    /// the runbook's to act on (`runbook_cancelled`).
    Cancelled,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::Cancelled => "cancelled",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Run {
    pub id: u64,
    pub runbook: String,
    pub agent: AgentId,
    pub agent_name: String,
    /// The alert's name, fingerprint and labels.
    pub alert: String,
    pub fingerprint: String,
    pub labels: std::collections::BTreeMap<String, String>,
    pub queued: Instant,
    pub started: Option<Instant>,
    pub deadline: Option<Instant>,
    pub state: RunState,
    /// Index of the current step.
    pub step: usize,
    /// Each step's outcome so far: (label, ok, detail).
    pub done: Vec<(String, bool, String)>,
    /// What `collect` gathered, for `diagnose`.
    pub evidence: Vec<String>,
    /// `diagnose` found that a restart cannot help: why.
    pub no_restart: Option<String>,
    /// The rules' verdict while the advisor is asked.
    pub verdict: Option<Box<crate::diagnosis::Diagnosis>>,
    /// Its alert resolved while a step ran: called off before the next.
    pub cancel: bool,
}

impl Run {
    pub fn is_active(&self) -> bool {
        !matches!(self.state, RunState::Ended { .. })
    }
}

/// (fingerprint, start, status), hashed (FNV-1a).
fn sight_key(alert: &Alert) -> u64 {
    let firing = if alert.firing { "1" } else { "0" };
    crate::fnv::fnv1a_parts(
        [alert.fingerprint.as_str(), alert.starts_at.as_str(), firing],
        0xff,
    )
}

#[derive(Debug, Default)]
pub(crate) struct Runbooks {
    pub specs: Vec<RunbookSpec>,
    pub policy: AlertPolicy,
    /// Runs queued or at work, in the order they came. Only these are looked at after each
    /// input and for deadlines.
    pub runs: Vec<Run>,
    /// The newest ended runs (newest last), kept for views only.
    pub ended: VecDeque<Run>,
    /// Alerts seen, by a hash of (fingerprint, start, status): fixed-size, whatever a sender
    /// puts in those strings.
    seen: HashSet<u64>,
    seen_order: VecDeque<u64>,
    pub last_id: u64,
}

impl Runbooks {
    /// `true` the first time this alert (fingerprint + start) is seen.
    pub fn first_sight(&mut self, alert: &Alert) -> bool {
        let h = sight_key(alert);
        if !self.seen.insert(h) {
            return false;
        }
        self.seen_order.push_back(h);
        while self.seen_order.len() > SEEN_MAX {
            if let Some(old) = self.seen_order.pop_front() {
                self.seen.remove(&old);
            }
        }
        true
    }

    /// Forget that `alert` was seen (refused for now only: its repeat may run).
    pub fn unsee(&mut self, alert: &Alert) {
        self.seen.remove(&sight_key(alert));
    }

    pub fn active_for(&self, agent: AgentId) -> Option<&Run> {
        self.runs.iter().find(|r| r.agent == agent)
    }

    pub fn get_mut(&mut self, id: u64) -> Option<&mut Run> {
        self.runs.iter_mut().find(|r| r.id == id)
    }

    /// Run `id`, if the edge is carrying out its current step (an answer for it is due).
    pub fn awaiting(&mut self, id: u64) -> Option<&mut Run> {
        self.get_mut(id).filter(|r| r.state == RunState::Awaiting)
    }

    pub fn running(&self) -> usize {
        self.runs
            .iter()
            .filter(|r| r.state != RunState::Queued)
            .count()
    }

    /// The earliest deadline of an active run.
    pub fn next_due(&self) -> Option<Instant> {
        self.runs
            .iter()
            .flat_map(|r| {
                let wait = match r.state {
                    RunState::WaitingHealthy { until, .. } => Some(until),
                    _ => None,
                };
                [r.deadline, wait]
            })
            .flatten()
            .min()
    }

    /// Run `id` has ended: out of the active ones, into the kept ones (the oldest kept goes).
    pub fn end(&mut self, id: u64, now: Instant, outcome: Outcome, how: String) -> Option<&Run> {
        let pos = self.runs.iter().position(|r| r.id == id)?;
        let mut run = self.runs.remove(pos);
        run.state = RunState::Ended {
            at: now,
            outcome,
            how,
        };
        if self.ended.len() >= KEEP_ENDED {
            self.ended.pop_front();
        }
        self.ended.push_back(run);
        self.ended.back()
    }
}
