//! Inputs to the core: facts observed at the edges, and requests from people.

use std::fmt;
use std::time::Instant;

use crate::checks::{NotifyMessage, Observation};
use crate::diagnosis::Diagnosis;
use crate::signal::Signal;

/// Index of an agent inside one [`crate::Supervisor`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AgentId(pub u32);

/// One life of an agent (one process started or adopted). Every action and every outcome
/// names its run, so an outcome that arrives for a run that has ended is recognised and
/// dropped. Unique within one [`crate::Supervisor`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RunId(pub u64);

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "run {}", self.0)
    }
}

/// How a process ended, as `waitpid` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ExitStatus {
    pub code: Option<i32>,
    pub signal: Option<Signal>,
    pub core_dumped: bool,
    /// The kernel's OOM killer ended it, as its engine knows (a container's `OOMKilled`).
    pub oom_killed: bool,
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
        }?;
        if self.oom_killed {
            write!(f, ", killed by the OOM killer")?;
        }
        Ok(())
    }
}

/// Why a process could not be created, as the driver knows it (from the errno, never from
/// the wording of a message). The diagnosis maps each kind to a category.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SpawnErrorKind {
    /// The program is not in `PATH`, or an absolute path that does not exist.
    ProgramNotFound,
    /// The program exists but may not be executed (no `x` bit, a directory, noexec mount).
    PermissionDenied,
    /// The working directory does not exist or is not a directory.
    BadWorkingDir,
    /// The command itself is unusable (empty, a NUL byte, not an executable format).
    InvalidCommand,
    /// The agent's log file cannot be opened.
    LogUnavailable,
    /// The disk is full (the log file, or the kernel said ENOSPC).
    DiskFull,
    /// The machine is out of processes or memory for now (EAGAIN, ENOMEM).
    OutOfResources,
    /// The container (or unit) to start does not exist.
    TargetNotFound,
    /// The engine that runs the target (Docker) cannot be reached or refused the start.
    EngineUnavailable,
    /// Anything else.
    Other,
}

impl SpawnErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SpawnErrorKind::ProgramNotFound => "program_not_found",
            SpawnErrorKind::PermissionDenied => "permission_denied",
            SpawnErrorKind::BadWorkingDir => "bad_working_dir",
            SpawnErrorKind::InvalidCommand => "invalid_command",
            SpawnErrorKind::LogUnavailable => "log_unavailable",
            SpawnErrorKind::DiskFull => "disk_full",
            SpawnErrorKind::OutOfResources => "out_of_resources",
            SpawnErrorKind::TargetNotFound => "target_not_found",
            SpawnErrorKind::EngineUnavailable => "engine_unavailable",
            SpawnErrorKind::Other => "other",
        }
    }
}

/// A failed spawn: its kind decides, its message explains.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpawnFailure {
    pub kind: SpawnErrorKind,
    pub message: String,
}

impl fmt::Display for SpawnFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// What a look before a start found running outside vigil's own runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outside {
    /// Nothing: the agent may be started.
    Nothing,
    /// The agent's own process, started by something else, that its `adopt` names: vigil
    /// takes it over instead of starting another.
    Adoptable {
        pid: u32,
        /// Its start time in clock ticks after boot: with the pid, this one process.
        started: u64,
        /// How long it has been running.
        age: std::time::Duration,
        /// How it was found (`pidfile /run/bot.pid`).
        how: String,
    },
    /// A process vigil does not own that runs the agent's command: starting the agent would
    /// make a second copy. `what` says what was found.
    Copy { pid: u32, what: String },
    /// The look could not be made (the engine or the bus did not answer): for a start, the
    /// start itself will say what is wrong.
    Unknown { why: String },
}

/// A guarded file the edge repaired before a start (`files` of an agent).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileRepair {
    pub path: String,
    /// What was wrong with it (`missing`, `not valid JSON: …`, `/risk/max_position missing`).
    pub problem: String,
    /// How it was mended (`restored the copy kept after run 12`, `filled in defaults`).
    pub how: String,
    /// The keys (JSON pointers) the repair added or changed; never their values.
    pub keys: Vec<String>,
    /// Where the bad copy was kept before it was overwritten.
    pub backup: Option<String>,
}

/// What the guard of an agent's files found before a start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FilesVerdict {
    /// Every file is valid (some, maybe, after a repair): the start goes on.
    Ready { repaired: Vec<FileRepair> },
    /// A file is invalid and nothing can mend it: starting would only crash again.
    Broken {
        path: String,
        problem: String,
        /// Files repaired before this one was found broken.
        repaired: Vec<FileRepair>,
    },
}

/// An action the edge could not carry out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailedAction {
    Signal(Signal),
    Kill,
    /// Watching a process for its exit.
    WatchExit,
}

impl fmt::Display for FailedAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailedAction::Signal(s) => write!(f, "sending {s}"),
            FailedAction::Kill => f.write_str("sending SIGKILL"),
            FailedAction::WatchExit => f.write_str("watching for the exit"),
        }
    }
}

/// Facts from the edges.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// The process for a `Spawn` action exists.
    Spawned {
        agent: AgentId,
        run: RunId,
        pid: u32,
    },
    /// The answer to a `Spawn` with `look_first`: what runs outside vigil (nothing was created).
    Looked {
        agent: AgentId,
        run: RunId,
        outside: Outside,
    },
    /// The answer to a `GuardFiles`: the agent's files are ready, or broken beyond repair.
    FilesGuarded {
        agent: AgentId,
        run: RunId,
        verdict: FilesVerdict,
    },
    /// The process for a `Spawn` action could not be created.
    SpawnFailed {
        agent: AgentId,
        run: RunId,
        error: SpawnFailure,
    },
    /// The run's main process ended. `tree_alive`: its process group still had members at
    /// that moment; `escaped`: processes of the run that had left the group (orphans
    /// reparented to vigil that carry the run's mark).
    Exited {
        agent: AgentId,
        run: RunId,
        status: ExitStatus,
        tree_alive: bool,
        escaped: Vec<u32>,
    },
    /// Every process of the run's tree is gone.
    TreeEmpty { agent: AgentId, run: RunId },
    /// The last lines of the agent's log when the run ended (redacted), sent just before
    /// `Exited`, or what an investigation gathered: the evidence a failure is judged from.
    LogTail {
        agent: AgentId,
        run: RunId,
        lines: Vec<String>,
    },
    /// The result of a `RunCheck` action.
    CheckResult {
        agent: AgentId,
        check: usize,
        generation: u64,
        observation: Observation,
    },
    /// The advisor's answer about the failure of `run` (reported by `Diagnosed`), or why
    /// there is none (server down, timeout, an answer that does not fit the schema).
    Advice {
        agent: AgentId,
        run: Option<RunId>,
        advice: Result<Diagnosis, String>,
    },
    /// A datagram on the notify socket from a process of `run`.
    Notify {
        agent: AgentId,
        run: RunId,
        message: NotifyMessage,
    },
    /// What a runbook's `collect` gathered.
    RunbookEvidence { runbook: u64, lines: Vec<String> },
    /// The advisor's answer for a runbook's `diagnose` step, or why there is none.
    RunbookAdvice {
        runbook: u64,
        advice: Result<Diagnosis, String>,
    },
    /// How a runbook's `exec` ended: its output's last lines, or why it failed.
    RunbookExec {
        runbook: u64,
        result: Result<String, String>,
    },
    /// What the cluster says about an exclusive agent's lease.
    Lease { agent: AgentId, news: LeaseNews },
    /// An action on `run` could not be carried out.
    ActionFailed {
        agent: AgentId,
        run: RunId,
        action: FailedAction,
        error: String,
    },
}

/// What the cluster (the lease table in PostgreSQL) answered about an exclusive agent's lease.
/// Silence is news too: a lease not renewed in time lapses by the core's own timer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseNews {
    /// This node holds the lease, acquired or renewed, with fencing epoch `epoch` (it grows at
    /// every change of holder). `valid_until` is on this host's clock and errs early: the
    /// lease's duration counted from before the request was sent.
    Held { epoch: u64, valid_until: Instant },
    /// Another node holds it.
    Elsewhere { holder: String, epoch: u64 },
    /// A person moves it to node `to`: the holder stops it and gives its lease up.
    Move { to: String },
    /// Nobody holds it and this node may not take it; `why` says why (a candidate it prefers
    /// is up, a move names another node, this node's definition of the agent differs).
    Refused { why: String },
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
    /// Start without looking for a copy outside vigil: a human has checked that the process
    /// found there is not this agent (or wants two).
    ForceStart,
    Stop,
    Restart,
    Reset,
}

impl Command {
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Start => "start",
            Command::ForceStart => "start --force",
            Command::Stop => "stop",
            Command::Restart => "restart",
            Command::Reset => "reset",
        }
    }
}
