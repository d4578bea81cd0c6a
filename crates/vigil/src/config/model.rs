//! The resolved configuration: templates expanded, defaults applied, paths absolute.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::time::Duration;

use vigil_core::{AgentSpec, RestartMode, RestartPolicy, Signal};

#[derive(Clone, Debug)]
pub struct Config {
    /// The file this came from (as given).
    pub path: PathBuf,
    pub state_dir: PathBuf,
    pub agents: Vec<AgentConfig>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct AgentConfig {
    /// `bot`, or `trader@BTC_USDT`.
    pub name: String,
    pub template: Option<String>,
    pub instance: Option<String>,
    /// argv; with `shell = true`, `["/bin/sh", "-c", "<command>"]`.
    pub command: Vec<String>,
    pub cwd: Option<PathBuf>,
    pub env: Vec<(String, String)>,
    pub autostart: bool,
    pub restart: RestartMode,
    pub stop_signal: Signal,
    pub stop_timeout: Duration,
    pub policy: RestartPolicy,
    pub log_max_size: u64,
    pub log_keep: u32,
}

impl AgentConfig {
    /// What the decision core needs to know.
    pub fn spec(&self) -> AgentSpec {
        AgentSpec {
            name: self.name.clone(),
            template: self.template.clone(),
            instance: self.instance.clone(),
            autostart: self.autostart,
            restart: self.restart,
            stop_signal: self.stop_signal,
            stop_timeout: self.stop_timeout,
            policy: self.policy.clone(),
            fingerprint: self.fingerprint(),
        }
    }

    /// Changes when anything about the running process changes, so a reload knows to restart.
    fn fingerprint(&self) -> u64 {
        let mut h = DefaultHasher::new();
        self.command.hash(&mut h);
        self.cwd.hash(&mut h);
        self.env.hash(&mut h);
        self.log_max_size.hash(&mut h);
        self.log_keep.hash(&mut h);
        h.finish()
    }
}

impl Config {
    pub fn logs_dir(&self) -> PathBuf {
        self.state_dir.join("logs")
    }
}
