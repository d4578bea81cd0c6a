//! What vigil puts in the environment of every run it spawns.

use std::path::PathBuf;

/// The variables vigil sets for a run (all absent when run by hand).
#[derive(Clone, Debug, Default)]
pub struct Env {
    /// `VIGIL_URL`: vigil's API, e.g. `http://127.0.0.1:9120`.
    pub url: Option<String>,
    /// `VIGIL_AGENT`: the agent's name (`bot`, `trader@BTC_USDT`).
    pub agent: Option<String>,
    /// `VIGIL_AGENT_TOKEN`: this run's own credential; it ends with the run.
    pub token: Option<String>,
    /// `NOTIFY_SOCKET`: set when the agent has a `notify` check.
    pub notify_socket: Option<String>,
    /// `VIGIL_STATE_DIR`: vigil's state dir.
    pub state_dir: Option<PathBuf>,
    /// `VIGIL_CHECKPOINT_DIR`: where local checkpoint copies go (a choice of the user's).
    pub checkpoint_dir: Option<PathBuf>,
}

impl Env {
    pub fn from_process() -> Env {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Env {
            url: var("VIGIL_URL").map(|u| u.trim_end_matches('/').to_string()),
            agent: var("VIGIL_AGENT"),
            token: var("VIGIL_AGENT_TOKEN"),
            notify_socket: var("NOTIFY_SOCKET"),
            state_dir: var("VIGIL_STATE_DIR").map(PathBuf::from),
            checkpoint_dir: var("VIGIL_CHECKPOINT_DIR").map(PathBuf::from),
        }
    }

    /// Run by vigil (its API or its notify socket is known).
    pub fn under_vigil(&self) -> bool {
        (self.url.is_some() && self.agent.is_some()) || self.notify_socket.is_some()
    }
}
