//! Inputs to the core: facts observed at the edges, and requests from people.

use std::fmt;

use crate::checks::{NotifyMessage, Observation};
use crate::diagnosis::Diagnosis;
use crate::signal::Signal;

/// Index of an agent inside one [`crate::Supervisor`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AgentId(pub u32);

/// How a process ended, as `waitpid` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ExitStatus {
    pub code: Option<i32>,
    pub signal: Option<Signal>,
    pub core_dumped: bool,
}

impl ExitStatus {
    pub fn code(code: i32) -> Self {
        Self {
            code: Some(code),
            ..Self::default()
        }
    }

    pub fn signal(sig: Signal) -> Self {
        Self {
            signal: Some(sig),
            ..Self::default()
        }
    }

    /// Neither code nor signal is known (a process vigil adopted but is not the parent of).
    pub fn unknown() -> Self {
        Self::default()
    }

    pub fn is_clean(&self) -> bool {
        self.code == Some(0)
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.code, self.signal) {
            (Some(code), _) => write!(f, "exited with code {code}"),
            (None, Some(sig)) if self.core_dumped => write!(f, "killed by {sig} (core dumped)"),
            (None, Some(sig)) => write!(f, "killed by {sig}"),
            (None, None) => write!(f, "ended (exit status unknown)"),
        }
    }
}

/// Facts from the edges.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// The process for a `Spawn` action exists.
    Spawned { agent: AgentId, pid: u32 },
    /// The process for a `Spawn` action could not be created.
    SpawnFailed { agent: AgentId, error: String },
    /// The agent's main process ended. `tree_alive` is true when other processes of its tree
    /// (its process group) were still there at that moment.
    Exited {
        agent: AgentId,
        pid: u32,
        status: ExitStatus,
        tree_alive: bool,
    },
    /// Every process of the tree whose main process was `pid` is gone.
    TreeEmpty { agent: AgentId, pid: u32 },
    /// The last lines of the agent's log when the run of `pid` ended (redacted), sent just
    /// before `Exited`: the evidence its failure is diagnosed from.
    LogTail {
        agent: AgentId,
        pid: u32,
        lines: Vec<String>,
    },
    /// The result of a `RunCheck` action.
    CheckResult {
        agent: AgentId,
        check: usize,
        run: u64,
        observation: Observation,
    },
    /// The advisor's answer about the failure of the run of `pid` (reported by `Diagnosed`), or
    /// why there is none (server down, timeout, an answer that does not fit the schema).
    Advice {
        agent: AgentId,
        pid: Option<u32>,
        advice: Result<Diagnosis, String>,
    },
    /// A datagram on the notify socket from a process of the agent's current run.
    Notify {
        agent: AgentId,
        message: NotifyMessage,
    },
}

/// Who asked for something: recorded in the audit reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Requester {
    /// `autostart = true` when vigil starts.
    Autostart,
    Cli,
    Api,
    /// A configuration reload (SIGHUP).
    Reload,
    /// vigil is stopping (SIGTERM / SIGINT).
    Shutdown,
}

impl Requester {
    pub fn as_str(self) -> &'static str {
        match self {
            Requester::Autostart => "autostart",
            Requester::Cli => "cli",
            Requester::Api => "api",
            Requester::Reload => "reload",
            Requester::Shutdown => "shutdown",
        }
    }

    /// A person asked (as opposed to vigil's own bookkeeping): such a stop is remembered.
    pub fn is_human(self) -> bool {
        matches!(self, Requester::Cli | Requester::Api)
    }
}

/// What a person can ask for an agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Start,
    Stop,
    Restart,
    Reset,
}

impl Command {
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Start => "start",
            Command::Stop => "stop",
            Command::Restart => "restart",
            Command::Reset => "reset",
        }
    }
}
