//! Outputs of the core: what the edges must do.

use crate::advice::FailureReport;
use crate::audit::AuditEntry;
use crate::event::AgentId;
use crate::signal::Signal;

#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Append to the journal, durably, before any later action of the same batch runs.
    Audit(AuditEntry),
    /// Create the agent's process; answer with `Spawned` or `SpawnFailed`.
    Spawn { agent: AgentId },
    /// Send `signal` to the process group (and any escaped member) of the run whose main
    /// process is `pid`.
    Signal {
        agent: AgentId,
        pid: u32,
        signal: Signal,
    },
    /// SIGKILL every process left of the run whose main process is `pid`.
    Kill { agent: AgentId, pid: u32 },
    /// The main process is gone but its tree is not: report `TreeEmpty` once it is.
    WatchTree { agent: AgentId, pid: u32 },
    /// The agent left the configuration and has no process: drop everything about it.
    Forget { agent: AgentId },
    /// Probe check `check` of the agent's run `run`; answer with `CheckResult` (cut at the
    /// check's timeout).
    RunCheck {
        agent: AgentId,
        check: usize,
        run: u64,
    },
    /// A stalled agent is about to be stopped: gather its evidence first (the evidence command,
    /// if configured, with the process still alive; then the run's log tail) and answer with
    /// `LogTail`.
    Investigate { agent: AgentId, pid: u32 },
    /// The rules have judged a failure: keep the report for `vigil explain`, count it, and ask
    /// the advisor when the report says so (answer with `Advice`).
    Diagnosed {
        agent: AgentId,
        report: Box<FailureReport>,
    },
}
