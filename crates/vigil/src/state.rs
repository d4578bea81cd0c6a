//! `<state_dir>/state.json`: what must survive a restart of vigil — restart budgets, stops by
//! a human, quarantines, and the agents still running (so a new vigil adopts them instead of
//! starting second copies).
//!
//! Written atomically (temp file + rename) after every change. It is not fsynced: a machine
//! crash kills the agents too, and the audit journal keeps the durable history.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SavedState {
    pub version: u32,
    pub vigil_pid: u32,
    pub agents: BTreeMap<String, SavedAgent>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SavedAgent {
    /// Wall-clock milliseconds of the automatic restarts still inside the window.
    #[serde(default)]
    pub restarts_ms: Vec<i64>,
    #[serde(default)]
    pub total_restarts: u64,
    #[serde(default)]
    pub held: bool,
    #[serde(default)]
    pub quarantined: Option<String>,
    #[serde(default)]
    pub crash_streak: u32,
    #[serde(default)]
    pub escalated: bool,
    /// The live run: main pid, its /proc start time, when it started, its run tag.
    #[serde(default)]
    pub run: Option<SavedRun>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SavedRun {
    pub pid: u32,
    pub start_time: u64,
    pub started_ms: i64,
    pub run_tag: String,
}

pub struct StateStore {
    path: PathBuf,
}

impl StateStore {
    pub fn new(state_dir: &Path) -> Self {
        Self {
            path: state_dir.join("state.json"),
        }
    }

    /// The saved state, or an empty one with a warning when it is missing or unreadable.
    pub fn load(&self) -> (SavedState, Option<String>) {
        match fs::read(&self.path) {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(state) => (state, None),
                Err(e) => (
                    SavedState::default(),
                    Some(format!(
                        "{} is unreadable ({e}); starting with empty restart history",
                        self.path.display()
                    )),
                ),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => (SavedState::default(), None),
            Err(e) => (
                SavedState::default(),
                Some(format!("cannot read {}: {e}", self.path.display())),
            ),
        }
    }

    pub fn save(&self, state: &SavedState) -> io::Result<()> {
        let tmp = self.path.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(state).map_err(io::Error::other)?;
        fs::write(&tmp, bytes)?;
        fs::rename(&tmp, &self.path)
    }
}
