//! Outputs of the core: what the edges must do. Every action that touches a process names
//! the run it is about; the edge acts only on processes it can prove belong to that run.

use crate::advice::FailureReport;
use crate::audit::AuditEntry;
use crate::event::{AgentId, RunId};
use crate::signal::Signal;

#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Append to the journal, durably, before any later action of the same batch runs.
    Audit(AuditEntry),
    /// Create the agent's process for `run`; answer with `Spawned` or `SpawnFailed`.
    /// `look_first`: before creating anything, look for the agent already running outside
    /// vigil (its `adopt` target, or a process with its exact command) and answer with
    /// `Looked` instead — the core decides what follows.
    ///
    /// `fence`: for an exclusive agent, the epoch of the lease the run starts under (given to
    /// the agent as `VIGIL_FENCE`, so its own writes can be fenced).
    Spawn {
        agent: AgentId,
        run: RunId,
        look_first: bool,
        fence: Option<u64>,
    },
    /// Give up the agent's lease held at `epoch` (nothing of the agent runs here any more):
    /// to node `to` when a person moved it, else to whichever candidate takes it first.
    ReleaseLease {
        agent: AgentId,
        epoch: u64,
        to: Option<String>,
    },
    /// Before the run's start: check the agent's guarded files (parseable, required keys
    /// present), repair what its `repair` allows (keeping a backup of the bad copy first),
    /// and answer with `FilesGuarded`. Nothing is started meanwhile.
    GuardFiles { agent: AgentId, run: RunId },
    /// The run has proven healthy: keep its guarded files, where valid, as the last known good
    /// copies (with the run that proved them).
    KeepFiles { agent: AgentId, run: RunId },
    /// Take over `pid`, found by a look, as the run's main process: watch it like a spawned
    /// one. `started` (clock ticks after boot) is the process the look saw; if the pid no
    /// longer belongs to it, answer `Exited` (it ended before it could be watched).
    Adopt {
        agent: AgentId,
        run: RunId,
        pid: u32,
        started: u64,
    },
    /// Send `signal` to the run's process group and to its members that left the group.
    Signal {
        agent: AgentId,
        run: RunId,
        signal: Signal,
    },
    /// SIGKILL every process left of the run.
    Kill { agent: AgentId, run: RunId },
    /// SIGKILL these processes, which left the process group of the ended run.
    KillEscaped {
        agent: AgentId,
        run: RunId,
        pids: Vec<u32>,
    },
    /// The main process is gone but its tree is not: report `TreeEmpty` once it is.
    WatchTree { agent: AgentId, run: RunId },
    /// The agent left the configuration and has no process: drop everything about it.
    Forget { agent: AgentId },
    /// Probe check `check` of the agent; answer with `CheckResult` carrying `generation`
    /// (cut at the check's timeout).
    RunCheck {
        agent: AgentId,
        check: usize,
        generation: u64,
    },
    /// A stalled agent is about to be stopped: gather its evidence first (the evidence command,
    /// if configured, with the process still alive; then the run's log tail) and answer with
    /// `LogTail`.
    Investigate { agent: AgentId, run: RunId },
    /// A runbook's `collect` step: the agent's log tail, and its evidence command's output
    /// when it runs; answer with `RunbookEvidence`.
    CollectEvidence { agent: AgentId, runbook: u64 },
    /// A runbook's `exec` step: run `argv` (no shell), cut at `timeout`; answer with
    /// `RunbookExec`.
    RunbookExec {
        agent: AgentId,
        runbook: u64,
        argv: Vec<String>,
        timeout: std::time::Duration,
    },
    /// A runbook's `diagnose` step: ask the advisor about what `collect` gathered (the rules'
    /// verdict is in the report); answer with `RunbookAdvice`. Nothing is kept for `explain`.
    AdviseRunbook {
        agent: AgentId,
        runbook: u64,
        report: Box<FailureReport>,
    },
    /// The rules have judged a failure: keep the report for `vigil explain`, count it, and ask
    /// the advisor when the report says so (answer with `Advice`).
    Diagnosed {
        agent: AgentId,
        report: Box<FailureReport>,
    },
}

impl Action {
    /// The agent the action is about, if any.
    pub fn agent(&self) -> Option<AgentId> {
        match self {
            Action::Audit(_) => None,
            Action::Spawn { agent, .. }
            | Action::Adopt { agent, .. }
            | Action::GuardFiles { agent, .. }
            | Action::KeepFiles { agent, .. }
            | Action::Signal { agent, .. }
            | Action::Kill { agent, .. }
            | Action::KillEscaped { agent, .. }
            | Action::WatchTree { agent, .. }
            | Action::Forget { agent }
            | Action::ReleaseLease { agent, .. }
            | Action::RunCheck { agent, .. }
            | Action::Investigate { agent, .. }
            | Action::CollectEvidence { agent, .. }
            | Action::RunbookExec { agent, .. }
            | Action::AdviseRunbook { agent, .. }
            | Action::Diagnosed { agent, .. } => Some(*agent),
        }
    }
}
