//! One agent's state machine.
//!
//! Every transition is a method taking `now` and an [`Outbox`]; nothing here performs IO.
//! The [`crate::Supervisor`] routes events to agents and keeps the timer index in sync with
//! the deadlines each agent holds in [`Timers`]. The transitions live in files by concern:
//! `lifecycle` (spawn, stop, exit), `commands` (what people ask), `failure` (what the policy
//! does about a failure), `health` (checks and stalls), `advising` (evidence and advice),
//! `reload` (configuration changes), `looking` (what runs outside vigil before a start),
//! `upstream` (waiting for the agents it depends on, and blame for their outputs).

mod advising;
mod commands;
pub(crate) mod degraded;
mod failure;
mod files;
mod health;
mod incident;
mod lease;
mod lifecycle;
mod looking;
mod reload;
mod runbook;
mod timers;
mod upstream;

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use advising::Investigation;
pub use degraded::{Declared, DeclaredAnswer, SavedDegradation};
pub(crate) use runbook::RestartRefused;
pub(crate) use timers::{TimerKind, Timers};
pub(crate) use upstream::{Blame, Waiting};

use crate::action::Action;
use crate::audit::AuditEntry;
use crate::budget::RestartHistory;
use crate::checks::{CheckSet, CheckSpec, CheckStatus};
use crate::diagnosis::{Diagnosis, FailureCause};
use crate::event::{AgentId, ExitStatus, RunId};
use crate::signal::Signal;
use crate::spec::AgentSpec;

/// The states users see (`vigil status`, metrics, the dashboard).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AgentState {
    Starting,
    Running,
    Backoff,
    Stopping,
    Stopped,
    Quarantined,
    /// Not started: its command already runs outside vigil.
    Conflict,
    /// Exclusive, and run by another node of the cluster (or waiting for its lease).
    Standby,
    /// An agent it depends on is down: not started yet, or running with its failures held
    /// (not restarted, no budget spent) until that agent is back.
    Waiting,
}

impl AgentState {
    pub const ALL: [AgentState; 9] = [
        AgentState::Starting,
        AgentState::Running,
        AgentState::Backoff,
        AgentState::Stopping,
        AgentState::Stopped,
        AgentState::Quarantined,
        AgentState::Conflict,
        AgentState::Waiting,
        AgentState::Standby,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AgentState::Starting => "starting",
            AgentState::Running => "running",
            AgentState::Backoff => "backoff",
            AgentState::Stopping => "stopping",
            AgentState::Stopped => "stopped",
            AgentState::Quarantined => "quarantined",
            AgentState::Conflict => "conflict",
            AgentState::Waiting => "waiting",
            AgentState::Standby => "standby",
        }
    }
}

impl fmt::Display for AgentState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a command was not carried out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommandError {
    /// Quarantined agents only come back through `reset`, so a human reads why first.
    Quarantined {
        reason: String,
    },
    ShuttingDown,
    /// A reload removed it from the configuration; it is being stopped and forgotten.
    Removed,
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandError::Quarantined { reason } => {
                write!(
                    f,
                    "quarantined ({reason}); `reset` clears the quarantine and starts it"
                )
            }
            CommandError::ShuttingDown => write!(f, "vigil is shutting down"),
            CommandError::Removed => write!(
                f,
                "removed from the configuration; it is stopping and will not start again"
            ),
        }
    }
}

/// What a command did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommandOutcome {
    Started,
    AlreadyRunning,
    Stopping,
    Stopped,
    AlreadyStopped,
    Restarting,
    /// The agent is stopping; it will start once it has stopped.
    WillStart,
    Reset,
    /// An agent it depends on is down: it starts once that one is back.
    Waiting,
    /// Exclusive: this node does not hold its lease; it starts here once it does.
    Standby,
}

impl fmt::Display for CommandOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CommandOutcome::Started => "started",
            CommandOutcome::AlreadyRunning => "already running",
            CommandOutcome::Stopping => "stopping",
            CommandOutcome::Stopped => "stopped",
            CommandOutcome::AlreadyStopped => "already stopped",
            CommandOutcome::Restarting => "restarting",
            CommandOutcome::WillStart => "will start once stopped",
            CommandOutcome::Reset => "reset",
            CommandOutcome::Waiting => "waiting for what it depends on; starts once that is back",
            CommandOutcome::Standby => {
                "on standby: this node does not hold its lease (`vigil fleet move` moves it here)"
            }
        })
    }
}

/// How the last run ended.
#[derive(Clone, Debug, PartialEq)]
pub struct LastExit {
    pub status: ExitStatus,
    pub at: Instant,
    pub uptime: Duration,
    /// vigil asked for this exit.
    pub expected: bool,
}

/// What survives a restart of vigil itself.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AgentMemory {
    /// Automatic restarts still inside the window.
    pub restarts: Vec<Instant>,
    pub total_restarts: u64,
    /// A human stopped it: do not autostart it again.
    pub held: bool,
    pub quarantined: Option<String>,
    pub crash_streak: u32,
    pub escalated: bool,
    /// An open stall episode began then (wall-clock milliseconds).
    pub stalled_since_ms: Option<i64>,
    /// A fleet incident held it (its id and cause): after a restart of vigil it is held
    /// again, not started into a cause that may still be there.
    pub incident: Option<(u64, crate::incident::Cause)>,
    /// The current run had declared itself degraded: after a restart of vigil, the run it
    /// adopts keeps what is left of its suspension.
    pub degraded: Option<SavedDegradation>,
}

/// From vigil's first stall verdict until the agent has proven healthy again: the condition
/// an operator's alert watches. It stays open across the restarts that try to heal it (each
/// of which resets the checks) and across restarts of vigil, so a stall vigil keeps "healing"
/// is still one stall.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct StallEpisode {
    /// Wall-clock milliseconds of the first stall verdict.
    pub since_ms: i64,
    /// Every check has passed since then, in the current run.
    pub recovering_since: Option<Instant>,
}

/// A failure the policy must answer.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Failure {
    pub reason: String,
    pub cause: FailureCause,
    /// How long the failed run lasted, when there was one.
    pub uptime: Option<Duration>,
    /// Already judged (a stall investigated before the stop): not diagnosed again.
    pub verdict: Option<Diagnosis>,
    /// The failed spawn's error, judged by its kind.
    pub spawn_error: Option<crate::event::SpawnErrorKind>,
    /// The run that failed (none for a failed spawn): only its own log tail is its evidence.
    pub run: Option<RunId>,
    /// The run was ended by the OOM killer (its engine says so).
    pub oom_killed: bool,
}

/// What to do once a stop has completed.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Then {
    Stay,
    Start,
    /// Stopped because it stalled: the policy decides what follows, as for a crash.
    Heal(Box<Failure>),
    Remove,
    /// Quarantined again (a copy left running by an earlier vigil was stopped).
    Quarantine(String),
    /// Fenced (exclusive placement): it waits for its lease, and gives the lease to node
    /// `release` when a person moved it there.
    Standby {
        release: Option<String>,
    },
}

/// One life of the agent as the core tracks it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Run {
    pub id: RunId,
    /// `None` while the spawn is in flight.
    pub pid: Option<u32>,
    /// When the process was created (or, for a ready-gated agent, became ready).
    pub since: Instant,
    /// Started by something else and taken over (`adopt`): whatever started it may start it
    /// again when it ends, so vigil looks before it restarts it.
    pub outside: bool,
    /// The edge is looking for the agent outside vigil (or checking its files first):
    /// nothing exists for this run yet, and until the answer comes nothing will.
    pub looking: bool,
    /// The edge is checking the agent's guarded files; `Some(look)`: whether a look outside
    /// vigil follows.
    pub guarding: Option<bool>,
    /// Exclusive placement: the fencing epoch of the lease it started under.
    pub fence: Option<u64>,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Phase {
    Stopped,
    Starting(Run),
    Running(Run),
    Stopping {
        run: Run,
        then: Then,
        main_exit: Option<ExitStatus>,
    },
    Backoff {
        until: Instant,
        /// Waiting out an exhausted budget (`on_exhausted = "retry_after"`).
        retry: bool,
    },
    Quarantined {
        reason: String,
    },
    /// A look before the start found `pid`, not vigil's, running the agent's command: it is
    /// not started until a human decides (`start --force`, `adopt`, or stopping that process
    /// and `start`).
    Conflict {
        pid: u32,
        reason: String,
    },
    /// Wanted running, held back until the agent it waits for (`Agent::waiting`) is back.
    /// `backoff`: the restart it was already waiting for, for a failure of its own before the
    /// upstream fell (until when, and whether after an exhausted budget): kept, so an
    /// upstream's blip never cuts a cooldown or a backoff short.
    Waiting {
        backoff: Option<(Instant, bool)>,
    },
    /// Exclusive, wanted running, but this node does not hold its lease: another node runs
    /// it, or this one waits to be allowed to (`Agent::lease` says why).
    Standby,
}

/// Actions produced while handling one input.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    pub actions: VecDeque<Action>,
    /// Stalls found by a check watching another agent's output (`produced_by`): the
    /// supervisor hands each to that agent.
    pub blames: Vec<Blame>,
    /// vigil's own pid: never signalled, never adopted, never spawned over.
    pub self_pid: u32,
    /// The last run id handed out.
    pub last_run: u64,
    /// The fleet's incidents: every failure consults them.
    pub incidents: crate::incident::Incidents,
}

/// Actions the outbox keeps room for once drained: a steady fleet's turn needs a handful; a
/// burst (starting 10,000 agents) needs far more, for a moment.
const OUTBOX_KEPT_ROOM: usize = 256;

impl Outbox {
    /// After a burst, give back the room it needed (an empty queue of 10,000 actions' room
    /// is megabytes held for nothing).
    pub(crate) fn release_room(&mut self) {
        if self.actions.capacity() > 4 * OUTBOX_KEPT_ROOM {
            self.actions.shrink_to(OUTBOX_KEPT_ROOM);
        }
    }

    fn push(&mut self, action: Action) {
        self.actions.push_back(action);
    }

    fn audit(&mut self, entry: AuditEntry) {
        self.push(Action::Audit(entry));
    }

    pub(crate) fn new_run(&mut self) -> RunId {
        self.last_run += 1;
        RunId(self.last_run)
    }

    /// Signals go only to a run whose main process is known and is an agent's: never to vigil,
    /// init or "all".
    fn signal(&mut self, agent: AgentId, run: Run, signal: Signal) {
        if run.pid.is_some_and(|pid| self.targetable(pid)) {
            self.push(Action::Signal {
                agent,
                run: run.id,
                signal,
            });
        }
    }

    fn kill(&mut self, agent: AgentId, run: Run) {
        if run.pid.is_some_and(|pid| self.targetable(pid)) {
            self.push(Action::Kill { agent, run: run.id });
        }
    }

    pub fn targetable(&self, pid: u32) -> bool {
        pid > 1 && pid != self.self_pid
    }
}

pub struct Agent {
    id: AgentId,
    spec: AgentSpec,
    phase: Phase,
    /// vigil should keep this agent running (false once stopped on purpose or shutting down).
    want_running: bool,
    /// A human stopped it; remembered across vigil restarts.
    held: bool,
    restarts: RestartHistory,
    total_restarts: u64,
    /// Failures since the last healthy (`stable_after`) run.
    crash_streak: u32,
    /// This failure episode has already been escalated to a human.
    escalated: bool,
    /// A failure happened since the agent was last seen healthy.
    had_failure: bool,
    stall_episode: Option<StallEpisode>,
    last_exit: Option<LastExit>,
    last_problem: Option<String>,
    /// The cause of the failure a waiting restart answers.
    last_cause: FailureCause,
    /// The run that ended last was taken over from outside vigil: its restart looks first.
    ended_run_outside: bool,
    /// The note of the command being handled.
    note: Option<String>,
    /// The last log lines of the run that just ended: the failure's evidence.
    log_tail: Option<LogTail>,
    // Boxed: most agents never have them, and a fleet holds thousands of agents.
    /// The verdict on the last failure.
    diagnosis: Option<Box<Diagnosis>>,
    /// A stricter advice that came after the agent was already restarted: it applies to the
    /// next failure of this episode.
    advice: Option<Box<Diagnosis>>,
    /// A stall whose evidence is being gathered before the agent is stopped.
    investigation: Option<Box<Investigation>>,
    checks: CheckSet,
    pub(crate) timers: Timers,
    pub(crate) removed: bool,
    /// Looking, as vigil starts, for a copy of an agent that must not run (held, quarantined):
    /// what follows once whatever is found is stopped.
    pub(crate) off_look: Option<Then>,
    /// The first agent it depends on that is down, while one is.
    waiting: Option<Box<Waiting>>,
    /// An incident's hold saved by the vigil before this one: applied at the first start.
    restored_hold: Option<(u64, crate::incident::Cause)>,
    /// What the agent declared about itself (`degraded`), for its current run.
    degraded: Option<Box<degraded::Degradation>>,
    /// A degradation saved by the vigil before this one: applied to the run it adopts.
    restored_degradation: Option<SavedDegradation>,
    /// Exclusive placement: what this node knows of the agent's lease (`None`: not exclusive).
    lease: Option<Box<lease::LeaseView>>,
    /// The last run whose guarded files were kept as the last known good.
    files_kept: Option<RunId>,
    /// A failure diagnosed as a config error, restarted only to have its guarded files
    /// checked first: quarantined as diagnosed if they turn out fine.
    config_suspect: Option<Box<(Failure, Diagnosis)>>,
}

impl Agent {
    pub(crate) fn new(id: AgentId, spec: AgentSpec, memory: Option<AgentMemory>) -> Self {
        let memory = memory.unwrap_or_default();
        let checks = CheckSet::new(spec.checks.clone());
        let phase = match memory.quarantined {
            Some(reason) => Phase::Quarantined { reason },
            None => Phase::Stopped,
        };
        let lease = spec
            .exclusive
            .is_some()
            .then(|| Box::new(lease::LeaseView::Unknown));
        Self {
            id,
            spec,
            phase,
            want_running: false,
            held: memory.held,
            restarts: RestartHistory::from_times(memory.restarts),
            total_restarts: memory.total_restarts,
            crash_streak: memory.crash_streak,
            escalated: memory.escalated,
            had_failure: false,
            stall_episode: memory.stalled_since_ms.map(|since_ms| StallEpisode {
                since_ms,
                recovering_since: None,
            }),
            last_exit: None,
            last_problem: None,
            last_cause: FailureCause::Exit,
            ended_run_outside: false,
            note: None,
            log_tail: None,
            diagnosis: None,
            advice: None,
            investigation: None,
            checks,
            timers: Timers::default(),
            removed: false,
            off_look: None,
            waiting: None,
            files_kept: None,
            config_suspect: None,
            restored_hold: memory.incident,
            degraded: None,
            restored_degradation: memory.degraded,
            lease,
        }
    }

    // ----- what the outside may read ---------------------------------------------------

    pub fn id(&self) -> AgentId {
        self.id
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    pub fn spec(&self) -> &AgentSpec {
        &self.spec
    }

    pub fn state(&self) -> AgentState {
        match self.phase {
            Phase::Starting(_) | Phase::Running(_) if self.waiting.is_some() => AgentState::Waiting,
            Phase::Stopped => AgentState::Stopped,
            Phase::Starting(_) => AgentState::Starting,
            Phase::Running(_) => AgentState::Running,
            Phase::Stopping { .. } => AgentState::Stopping,
            Phase::Backoff { .. } => AgentState::Backoff,
            Phase::Quarantined { .. } => AgentState::Quarantined,
            Phase::Conflict { .. } => AgentState::Conflict,
            Phase::Waiting { .. } => AgentState::Waiting,
            Phase::Standby => AgentState::Standby,
        }
    }

    /// The run that may have a process: starting, running or stopping.
    pub(crate) fn current(&self) -> Option<Run> {
        match &self.phase {
            Phase::Starting(run) | Phase::Running(run) | Phase::Stopping { run, .. } => Some(*run),
            _ => None,
        }
    }

    /// The current run, if a process may exist for it.
    pub fn run(&self) -> Option<RunId> {
        self.current().map(|r| r.id)
    }

    /// The main process of the current run, if one exists.
    pub fn pid(&self) -> Option<u32> {
        self.current().and_then(|r| r.pid)
    }

    /// When the current run's process was created.
    pub fn started_at(&self) -> Option<Instant> {
        self.current().filter(|r| r.pid.is_some()).map(|r| r.since)
    }

    pub fn uptime(&self, now: Instant) -> Option<Duration> {
        self.started_at().map(|t| now.saturating_duration_since(t))
    }

    /// The current run's process was started by something else and taken over (`adopt`).
    pub fn is_adopted(&self) -> bool {
        self.current().is_some_and(|r| r.outside)
    }

    /// A process of this agent may be alive.
    pub fn is_live(&self) -> bool {
        self.current().is_some()
    }

    /// Being stopped because a reload removed it; it is forgotten once stopped.
    pub fn is_being_removed(&self) -> bool {
        matches!(
            self.phase,
            Phase::Stopping {
                then: Then::Remove,
                ..
            }
        )
    }

    pub fn restarts_in_window(&self, now: Instant) -> u32 {
        self.restarts.count(now, self.spec.policy.window)
    }

    pub fn budget_remaining(&self, now: Instant) -> u32 {
        let p = &self.spec.policy;
        self.restarts.remaining(now, p.window, p.max_restarts)
    }

    /// The automatic restarts still inside the window, oldest first.
    pub fn restart_times(&self) -> impl Iterator<Item = Instant> + '_ {
        self.restarts.times()
    }

    pub fn total_restarts(&self) -> u64 {
        self.total_restarts
    }

    pub fn crash_streak(&self) -> u32 {
        self.crash_streak
    }

    pub fn last_exit(&self) -> Option<&LastExit> {
        self.last_exit.as_ref()
    }

    /// The last thing that went wrong, in words.
    pub fn last_problem(&self) -> Option<&str> {
        self.last_problem.as_deref()
    }

    /// When a waiting agent will be restarted.
    pub fn restart_at(&self) -> Option<Instant> {
        match self.phase {
            Phase::Backoff { until, .. } => Some(until),
            _ => None,
        }
    }

    pub fn quarantine_reason(&self) -> Option<&str> {
        match (&self.phase, &self.off_look) {
            (Phase::Quarantined { reason }, _) => Some(reason),
            // A copy left running is being looked for or stopped: quarantined it stays (and is
            // saved so, should vigil die meanwhile).
            (
                Phase::Stopping {
                    then: Then::Quarantine(reason),
                    ..
                },
                _,
            )
            | (_, Some(Then::Quarantine(reason))) => Some(reason),
            _ => None,
        }
    }

    /// The process outside vigil that keeps the agent from starting, and why.
    pub fn conflict(&self) -> Option<(u32, &str)> {
        match &self.phase {
            Phase::Conflict { pid, reason } => Some((*pid, reason)),
            _ => None,
        }
    }

    pub fn is_held(&self) -> bool {
        self.held
    }

    /// When the open stall episode began (wall-clock milliseconds), if one is open.
    pub fn stalled_since_ms(&self) -> Option<i64> {
        self.stall_episode.map(|e| e.since_ms)
    }

    pub fn diagnosis(&self) -> Option<&Diagnosis> {
        self.diagnosis.as_deref()
    }

    /// Each check with its latest verdict in the current run.
    pub fn checks(&self) -> impl Iterator<Item = (&CheckSpec, &CheckStatus)> {
        self.checks.checks.iter().map(|c| (&c.spec, &c.status))
    }

    /// What its current run declared: `(reason, since_ms, suspended_until_ms)`; the last is
    /// `None` once the suspension of stall verdicts is over.
    pub fn declared_degraded(&self) -> Option<(&str, i64, Option<i64>)> {
        self.degradation().map(|d| {
            (
                d.reason.as_str(),
                d.since_ms,
                (!d.spent).then_some(d.until_ms),
            )
        })
    }

    /// The agent's own last `STATUS=` line (notify protocol).
    pub fn status_text(&self) -> Option<&str> {
        self.checks.status_text.as_deref()
    }

    /// The generation check results must carry to be applied (it changes at every start and
    /// whenever the checks change).
    pub fn check_generation(&self) -> u64 {
        self.checks.generation
    }

    /// Changes whenever something `memory()` or the live run would report changes; cheap
    /// enough to compute around every event.
    pub(crate) fn persist_key(&self) -> PersistKey {
        PersistKey {
            restarts: self.restarts.len(),
            last_restart: self.restarts.last(),
            total_restarts: self.total_restarts,
            held: self.held,
            quarantined: self.quarantine_reason().is_some(),
            crash_streak: self.crash_streak,
            escalated: self.escalated,
            stalled_since_ms: self.stalled_since_ms(),
            run: self.current().map(|r| (r.id, r.pid)),
            incident: self.incident_hold().map(|(id, _)| id),
            // Not the deadline: a declaration without `until` moves it at every call, and the
            // state is not written again for that (a restart of vigil then keeps the earlier
            // deadline: the careful side).
            degraded: self
                .degradation()
                .map(|d| (d.since_ms, d.spent, crate::fnv::fnv1a(d.reason.bytes()))),
        }
    }

    pub fn memory(&self) -> AgentMemory {
        AgentMemory {
            restarts: self.restarts.times().collect(),
            total_restarts: self.total_restarts,
            held: self.held,
            quarantined: self.quarantine_reason().map(str::to_string),
            crash_streak: self.crash_streak,
            escalated: self.escalated,
            stalled_since_ms: self.stalled_since_ms(),
            incident: self.incident_hold().map(|(id, c)| (id, c.clone())),
            degraded: self.saved_degradation(),
        }
    }
}

/// The evidence of a run that ended (or is being investigated).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct LogTail {
    pub run: RunId,
    pub pid: Option<u32>,
    pub lines: Vec<String>,
}

/// What must be saved about an agent, reduced to what tells whether it changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PersistKey {
    restarts: usize,
    last_restart: Option<Instant>,
    total_restarts: u64,
    held: bool,
    quarantined: bool,
    crash_streak: u32,
    escalated: bool,
    stalled_since_ms: Option<i64>,
    run: Option<(RunId, Option<u32>)>,
    incident: Option<u64>,
    degraded: Option<(i64, bool, u64)>,
}

impl Agent {
    /// A deadline of this agent has come.
    pub(crate) fn on_timer(&mut self, now: crate::time::Now, kind: TimerKind, out: &mut Outbox) {
        match kind {
            TimerKind::Restart => self.on_restart_due(now.mono, out),
            TimerKind::Kill => self.on_kill_due(out),
            TimerKind::Stable => self.on_stable_due(out),
            TimerKind::Investigate => self.on_investigation_timeout(now.mono, out),
            TimerKind::Check(i) => self.on_check_due(now, i as usize, out),
            TimerKind::Degraded => self.on_degraded_due(now, out),
            TimerKind::Fence => self.on_fence_due(now.mono, out),
        }
    }
}
