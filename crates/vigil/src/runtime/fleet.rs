//! The fleet as the edges see it: for each agent the core knows, how to run it (its config and
//! log) and its current run (pid, start time, tag) — what every action on a process needs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use vigil_core::{AgentId, RunId, Supervisor};

use crate::config::AgentConfig;
use crate::logs;
use crate::state::SavedRun;

/// A run the edge knows: the core's id for it, and how to find and stop its processes.
#[derive(Clone, Debug)]
pub struct RunRecord {
    pub id: RunId,
    pub saved: SavedRun,
    /// When the main process's exit was collected: the tick (as in a process's start time).
    /// From that moment its pid, and perhaps its group id, may name a stranger: no more
    /// signals to its process group, and only members proven older or tagged count.
    pub main_gone: Option<MainGone>,
}

#[derive(Clone, Copy, Debug)]
pub struct MainGone {
    pub tick: u64,
}

pub struct Slot {
    /// Boxed: the map of slots then stays small however large a config is.
    pub config: Box<AgentConfig>,
    pub log: PathBuf,
    pub run: Option<RunRecord>,
    /// Size of the log when the current run started: its evidence is what comes after.
    pub log_start: u64,
}

impl Slot {
    /// What evidence from this agent must not show besides the usual patterns: the values of
    /// its secret-looking env vars.
    pub fn secrets(&self) -> crate::redact::Secrets {
        self.config.secrets()
    }
}

#[derive(Default)]
pub struct Fleet {
    slots: HashMap<AgentId, Slot>,
}

impl Fleet {
    /// Room for `additional` more agents, allocated once (see `Supervisor::reserve`).
    pub fn reserve(&mut self, additional: usize) {
        self.slots.reserve(additional);
    }

    pub fn insert(&mut self, id: AgentId, config: AgentConfig, logs_dir: &Path) {
        let log = logs::log_path(logs_dir, &config.name);
        self.slots.insert(
            id,
            Slot {
                config: Box::new(config),
                log,
                run: None,
                log_start: 0,
            },
        );
    }

    pub fn get(&self, id: AgentId) -> Option<&Slot> {
        self.slots.get(&id)
    }

    pub fn get_mut(&mut self, id: AgentId) -> Option<&mut Slot> {
        self.slots.get_mut(&id)
    }

    pub fn remove(&mut self, id: AgentId) -> Option<Slot> {
        self.slots.remove(&id)
    }

    /// The record of `run`, if it is the agent's latest run.
    pub fn run(&self, id: AgentId, run: RunId) -> Option<&RunRecord> {
        self.slots.get(&id)?.run.as_ref().filter(|r| r.id == run)
    }

    pub fn slots(&self) -> impl Iterator<Item = &Slot> {
        self.slots.values()
    }

    /// The agents a name means: the agent itself, or every instance of a template.
    pub fn resolve(sup: &Supervisor, target: &str) -> Vec<AgentId> {
        match sup.id(target) {
            Some(id) => vec![id],
            None => sup
                .agents()
                .filter(|a| a.spec().template.as_deref() == Some(target))
                .map(|a| a.id())
                .collect(),
        }
    }

    /// Every agent and template name, for "did you mean".
    pub fn known_names(sup: &Supervisor) -> Vec<&str> {
        let mut known: Vec<&str> = Vec::new();
        for a in sup.agents() {
            known.push(a.name());
            known.extend(a.spec().template.as_deref());
        }
        known
    }
}
