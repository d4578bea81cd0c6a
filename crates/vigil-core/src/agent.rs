//! One agent's state machine.
//!
//! Every transition is a method taking `now` and an [`Outbox`]; nothing here performs IO.
//! The [`crate::Supervisor`] routes events to agents and keeps the timer index in sync with
//! the deadlines each agent holds in [`Timers`].

mod advising;

use crate::diagnosis::{Diagnosis, Evidence, Remedy};
use advising::Investigation;
use std::fmt;
use std::time::{Duration, Instant};

use crate::action::Action;
use crate::audit::{AuditAction, AuditEntry};
use crate::budget::RestartHistory;
use crate::checks::{
    CheckOutput, CheckSet, CheckSpec, CheckStatus, NotifyMessage, Observation, Verdict,
};
use crate::event::{AgentId, Command, ExitStatus, Requester};
use crate::policy::{OnExhausted, RestartMode};
use crate::signal::Signal;
use crate::spec::AgentSpec;
use crate::time::{Now, human_duration};

/// The states users see (`vigil status`, metrics, the dashboard).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AgentState {
    Starting,
    Running,
    Backoff,
    Stopping,
    Stopped,
    Quarantined,
}

impl AgentState {
    pub const ALL: [AgentState; 6] = [
        AgentState::Starting,
        AgentState::Running,
        AgentState::Backoff,
        AgentState::Stopping,
        AgentState::Stopped,
        AgentState::Quarantined,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AgentState::Starting => "starting",
            AgentState::Running => "running",
            AgentState::Backoff => "backoff",
            AgentState::Stopping => "stopping",
            AgentState::Stopped => "stopped",
            AgentState::Quarantined => "quarantined",
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
}

/// A failure the policy must answer.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Failure {
    pub reason: String,
    /// `exit`, `stall` or `spawn_failed`: the `cause` of the restart that follows.
    pub cause: &'static str,
    /// How long the failed run lasted, when there was one.
    pub uptime: Option<Duration>,
    /// Already judged (a stall investigated before the stop): not diagnosed again.
    pub verdict: Option<Diagnosis>,
}

/// What to do once a stop has completed.
#[derive(Clone, Debug, PartialEq)]
enum Then {
    Stay,
    Start,
    /// Stopped because it stalled: the policy decides what follows, as for a crash.
    Heal(Failure),
    Remove,
}

#[derive(Clone, Debug, PartialEq)]
enum Phase {
    Stopped,
    /// `pid` is `None` while the spawn is in flight.
    Starting {
        pid: Option<u32>,
        since: Instant,
    },
    Running {
        pid: u32,
        since: Instant,
    },
    Stopping {
        pid: Option<u32>,
        since: Instant,
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
}

/// The agent's deadlines. Every change is recorded so the supervisor can keep its timer
/// index in step without scanning agents.
#[derive(Clone, Debug, Default)]
pub(crate) struct Timers {
    restart: Option<Instant>,
    kill: Option<Instant>,
    stable: Option<Instant>,
    investigate: Option<Instant>,
    /// What the index holds for each check (mirrors `CheckSet` dues).
    checks: Vec<Option<Instant>>,
    /// (kind, old, new) since the supervisor last synced.
    pub changes: Vec<(TimerKind, Option<Instant>, Option<Instant>)>,
}

impl Timers {
    pub fn get(&self, kind: TimerKind) -> Option<Instant> {
        match kind {
            TimerKind::Restart => self.restart,
            TimerKind::Kill => self.kill,
            TimerKind::Stable => self.stable,
            TimerKind::Investigate => self.investigate,
            TimerKind::Check(i) => self.checks.get(i as usize).copied().flatten(),
        }
    }

    pub fn set(&mut self, kind: TimerKind, at: Option<Instant>) {
        let slot = match kind {
            TimerKind::Restart => &mut self.restart,
            TimerKind::Kill => &mut self.kill,
            TimerKind::Stable => &mut self.stable,
            TimerKind::Investigate => &mut self.investigate,
            TimerKind::Check(i) => {
                let i = i as usize;
                if self.checks.len() <= i {
                    self.checks.resize(i + 1, None);
                }
                &mut self.checks[i]
            }
        };
        if *slot != at {
            let old = std::mem::replace(slot, at);
            self.changes.push((kind, old, at));
        }
    }

    /// Every armed timer, for removing an agent.
    pub fn armed(&self) -> Vec<(TimerKind, Instant)> {
        let fixed = [
            (TimerKind::Restart, self.restart),
            (TimerKind::Kill, self.kill),
            (TimerKind::Stable, self.stable),
            (TimerKind::Investigate, self.investigate),
        ];
        let checks = self
            .checks
            .iter()
            .enumerate()
            .map(|(i, at)| (TimerKind::Check(i as u16), *at));
        fixed
            .into_iter()
            .chain(checks)
            .filter_map(|(k, at)| at.map(|at| (k, at)))
            .collect()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum TimerKind {
    Restart,
    Kill,
    Stable,
    /// A stall investigation has waited long enough for evidence and advice.
    Investigate,
    Check(u16),
}

/// Actions produced while handling one input.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    pub actions: std::collections::VecDeque<Action>,
    /// vigil's own pid: never signalled, never adopted, never spawned over.
    pub self_pid: u32,
}

impl Outbox {
    fn push(&mut self, action: Action) {
        self.actions.push_back(action);
    }

    fn audit(&mut self, entry: AuditEntry) {
        self.push(Action::Audit(entry));
    }

    /// Signals are only ever sent to agent processes: never to vigil, init or "all".
    fn signal(&mut self, agent: AgentId, pid: u32, signal: Signal) {
        if self.targetable(pid) {
            self.push(Action::Signal { agent, pid, signal });
        }
    }

    fn kill(&mut self, agent: AgentId, pid: u32) {
        if self.targetable(pid) {
            self.push(Action::Kill { agent, pid });
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
    last_exit: Option<LastExit>,
    last_problem: Option<String>,
    /// The cause of the failure a waiting restart answers.
    last_cause: &'static str,
    /// The note of the command being handled.
    note: Option<String>,
    /// The last log lines of the run that just ended (pid, lines): the failure's evidence.
    log_tail: Option<(u32, Vec<String>)>,
    /// The verdict on the last failure.
    diagnosis: Option<Diagnosis>,
    /// A stricter advice that came after the agent was already restarted: it applies to the
    /// next failure of this episode.
    advice: Option<Diagnosis>,
    /// A stall whose evidence is being gathered before the agent is stopped.
    investigation: Option<Investigation>,
    checks: CheckSet,
    pub(crate) timers: Timers,
    pub(crate) removed: bool,
}

impl Agent {
    pub(crate) fn new(id: AgentId, spec: AgentSpec, memory: Option<AgentMemory>) -> Self {
        let memory = memory.unwrap_or_default();
        let checks = CheckSet::new(spec.checks.clone());
        let phase = match memory.quarantined {
            Some(reason) => Phase::Quarantined { reason },
            None => Phase::Stopped,
        };
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
            last_exit: None,
            last_problem: None,
            last_cause: "exit",
            note: None,
            log_tail: None,
            diagnosis: None,
            advice: None,
            investigation: None,
            checks,
            timers: Timers::default(),
            removed: false,
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
            Phase::Stopped => AgentState::Stopped,
            Phase::Starting { .. } => AgentState::Starting,
            Phase::Running { .. } => AgentState::Running,
            Phase::Stopping { .. } => AgentState::Stopping,
            Phase::Backoff { .. } => AgentState::Backoff,
            Phase::Quarantined { .. } => AgentState::Quarantined,
        }
    }

    /// The main process of the current run, if one exists.
    pub fn pid(&self) -> Option<u32> {
        match self.phase {
            Phase::Starting { pid, .. } | Phase::Stopping { pid, .. } => pid,
            Phase::Running { pid, .. } => Some(pid),
            _ => None,
        }
    }

    /// When the current run's process was created.
    pub fn started_at(&self) -> Option<Instant> {
        match self.phase {
            Phase::Starting {
                pid: Some(_),
                since,
            }
            | Phase::Running { since, .. }
            | Phase::Stopping {
                pid: Some(_),
                since,
                ..
            } => Some(since),
            _ => None,
        }
    }

    pub fn uptime(&self, now: Instant) -> Option<Duration> {
        self.started_at().map(|t| now.saturating_duration_since(t))
    }

    /// A process of this agent may be alive.
    pub fn is_live(&self) -> bool {
        matches!(
            self.phase,
            Phase::Starting { .. } | Phase::Running { .. } | Phase::Stopping { .. }
        )
    }

    pub fn restarts_in_window(&self, now: Instant) -> u32 {
        self.restarts.count(now, self.spec.policy.window)
    }

    pub fn budget_remaining(&self, now: Instant) -> u32 {
        let p = &self.spec.policy;
        self.restarts.remaining(now, p.window, p.max_restarts)
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
        match &self.phase {
            Phase::Quarantined { reason } => Some(reason),
            _ => None,
        }
    }

    pub fn is_held(&self) -> bool {
        self.held
    }

    /// Each check with its latest verdict in the current run.
    pub fn checks(&self) -> impl Iterator<Item = (&CheckSpec, &CheckStatus)> {
        self.checks.checks.iter().map(|c| (&c.spec, &c.status))
    }

    /// The agent's own last `STATUS=` line (notify protocol).
    pub fn status_text(&self) -> Option<&str> {
        self.checks.status_text.as_deref()
    }

    /// Which run of the agent this is (increments at every start); check results carry it.
    pub fn run(&self) -> u64 {
        self.checks.run
    }

    /// Mirror the checks' deadlines into the timer table.
    pub(crate) fn sync_check_timers(&mut self) {
        let n = self.checks.checks.len();
        for i in 0..n {
            let due = self.checks.checks[i].due;
            self.timers.set(TimerKind::Check(i as u16), due);
        }
        for (kind, _) in self.timers.armed() {
            if let TimerKind::Check(i) = kind
                && i as usize >= n
            {
                self.timers.set(kind, None);
            }
        }
    }

    /// Changes whenever something `memory()` or the run to adopt would report changes; cheap
    /// enough to compute around every event.
    pub(crate) fn persist_key(
        &self,
    ) -> (
        usize,
        Option<Instant>,
        u64,
        bool,
        bool,
        u32,
        bool,
        Option<u32>,
    ) {
        (
            self.restarts.len(),
            self.restarts.last(),
            self.total_restarts,
            self.held,
            matches!(self.phase, Phase::Quarantined { .. }),
            self.crash_streak,
            self.escalated,
            self.pid(),
        )
    }

    pub fn memory(&self) -> AgentMemory {
        AgentMemory {
            restarts: self.restarts.times().collect(),
            total_restarts: self.total_restarts,
            held: self.held,
            quarantined: self.quarantine_reason().map(str::to_string),
            crash_streak: self.crash_streak,
            escalated: self.escalated,
        }
    }

    // ----- helpers ----------------------------------------------------------------------

    fn entry(&self, action: AuditAction, reason: impl Into<String>) -> AuditEntry {
        AuditEntry::new(Some(&self.spec.name), action, reason)
    }

    fn spawn(&mut self, now: Instant, out: &mut Outbox) {
        self.phase = Phase::Starting {
            pid: None,
            since: now,
        };
        self.timers.set(TimerKind::Restart, None);
        out.push(Action::Spawn { agent: self.id });
    }

    fn begin_stop(&mut self, now: Instant, then: Then, entry: AuditEntry, out: &mut Outbox) {
        let (pid, since) = match self.phase {
            Phase::Starting { pid, since } => (pid, since),
            Phase::Running { pid, since } => (Some(pid), since),
            _ => return,
        };
        self.forget_investigation();
        out.audit(entry.meta("signal", self.spec.stop_signal.to_string()));
        if let Some(pid) = pid {
            out.signal(self.id, pid, self.spec.stop_signal);
        }
        self.timers
            .set(TimerKind::Kill, Some(now + self.spec.stop_timeout));
        self.timers.set(TimerKind::Stable, None);
        self.checks.stop();
        self.phase = Phase::Stopping {
            pid,
            since,
            then,
            main_exit: None,
        };
    }

    fn restart_now(&mut self, now: Instant, reason: String, cause: &'static str, out: &mut Outbox) {
        let policy = &self.spec.policy;
        self.restarts.record(now, policy.window);
        self.total_restarts += 1;
        let used = self.restarts.count(now, policy.window);
        let entry = self
            .entry(AuditAction::Restart, reason)
            .meta("restarts_in_window", used)
            .meta("budget_remaining", policy.max_restarts.saturating_sub(used))
            .meta("total_restarts", self.total_restarts)
            .meta("cause", cause);
        let entry = match &self.diagnosis {
            Some(d) => entry.meta("diagnosis", d.to_json()),
            None => entry,
        };
        out.audit(entry);
        self.spawn(now, out);
    }

    // ----- commands from people -----------------------------------------------------------

    /// `note` is the person's own words (why), added to the audit reason.
    pub(crate) fn command(
        &mut self,
        now: Instant,
        command: Command,
        by: Requester,
        note: Option<&str>,
        out: &mut Outbox,
    ) -> Result<CommandOutcome, CommandError> {
        self.note = note.map(|n| n.chars().take(200).collect());
        let result = match command {
            Command::Start => self.request_start(now, by, out),
            Command::Stop => Ok(self.request_stop(now, by, out)),
            Command::Restart => self.request_restart(now, by, out),
            Command::Reset => Ok(self.request_reset(now, by, out)),
        };
        self.note = None;
        result
    }

    /// Who asked, for audit reasons: `api`, or `api ("deploying v2")` with a note.
    fn who(&self, by: Requester) -> String {
        match &self.note {
            Some(n) => format!("{} ({n:?})", by.as_str()),
            None => by.as_str().to_string(),
        }
    }

    pub(crate) fn request_start(
        &mut self,
        now: Instant,
        by: Requester,
        out: &mut Outbox,
    ) -> Result<CommandOutcome, CommandError> {
        match &mut self.phase {
            Phase::Quarantined { reason } => Err(CommandError::Quarantined {
                reason: reason.clone(),
            }),
            Phase::Starting { .. } | Phase::Running { .. } => Ok(CommandOutcome::AlreadyRunning),
            Phase::Stopping { then, .. } => {
                *then = Then::Start;
                self.want_running = true;
                self.held = false;
                Ok(CommandOutcome::WillStart)
            }
            Phase::Stopped | Phase::Backoff { .. } => {
                let was_waiting = matches!(self.phase, Phase::Backoff { .. });
                self.want_running = true;
                self.held = false;
                let reason = if was_waiting {
                    format!("started by {} while waiting to restart", self.who(by))
                } else {
                    format!("started by {}", self.who(by))
                };
                out.audit(self.entry(AuditAction::Start, reason));
                self.spawn(now, out);
                Ok(CommandOutcome::Started)
            }
        }
    }

    pub(crate) fn request_stop(
        &mut self,
        now: Instant,
        by: Requester,
        out: &mut Outbox,
    ) -> CommandOutcome {
        self.want_running = false;
        if by.is_human() {
            self.held = true;
        }
        let reason = match by {
            Requester::Shutdown => "vigil is shutting down".to_string(),
            _ => format!("stop requested by {}", self.who(by)),
        };
        match &mut self.phase {
            Phase::Stopped | Phase::Quarantined { .. } => CommandOutcome::AlreadyStopped,
            Phase::Backoff { .. } => {
                self.phase = Phase::Stopped;
                self.timers.set(TimerKind::Restart, None);
                out.audit(self.entry(
                    AuditAction::Stop,
                    format!("{reason} while waiting to restart"),
                ));
                CommandOutcome::Stopped
            }
            Phase::Stopping { then, .. } => {
                if *then != Then::Remove {
                    *then = Then::Stay;
                }
                CommandOutcome::Stopping
            }
            Phase::Starting { .. } | Phase::Running { .. } => {
                let entry = self.entry(AuditAction::Stop, reason);
                self.begin_stop(now, Then::Stay, entry, out);
                CommandOutcome::Stopping
            }
        }
    }

    fn request_restart(
        &mut self,
        now: Instant,
        by: Requester,
        out: &mut Outbox,
    ) -> Result<CommandOutcome, CommandError> {
        match &mut self.phase {
            Phase::Quarantined { reason } => Err(CommandError::Quarantined {
                reason: reason.clone(),
            }),
            Phase::Stopping { then, .. } => {
                *then = Then::Start;
                self.want_running = true;
                self.held = false;
                Ok(CommandOutcome::WillStart)
            }
            Phase::Stopped | Phase::Backoff { .. } => {
                self.want_running = true;
                self.held = false;
                out.audit(self.entry(
                    AuditAction::Restart,
                    format!("restart requested by {}", self.who(by)),
                ));
                self.spawn(now, out);
                Ok(CommandOutcome::Started)
            }
            Phase::Starting { .. } | Phase::Running { .. } => {
                self.want_running = true;
                self.held = false;
                let entry = self.entry(
                    AuditAction::Restart,
                    format!("restart requested by {}", self.who(by)),
                );
                self.begin_stop(now, Then::Start, entry, out);
                Ok(CommandOutcome::Restarting)
            }
        }
    }

    fn request_reset(&mut self, now: Instant, by: Requester, out: &mut Outbox) -> CommandOutcome {
        self.restarts.clear();
        self.crash_streak = 0;
        self.escalated = false;
        self.advice = None;
        let was_down = matches!(
            self.phase,
            Phase::Quarantined { .. } | Phase::Backoff { .. }
        );
        out.audit(self.entry(
            AuditAction::Reset,
            format!(
                "reset by {}: restart budget, backoff and quarantine cleared",
                self.who(by)
            ),
        ));
        if was_down {
            self.phase = Phase::Stopped;
            self.timers.set(TimerKind::Restart, None);
            self.want_running = true;
            self.held = false;
            out.audit(self.entry(AuditAction::Start, "started after reset"));
            self.spawn(now, out);
        }
        CommandOutcome::Reset
    }

    // ----- facts from the edges -----------------------------------------------------------

    /// A live process found at startup, left by a previous vigil.
    pub(crate) fn adopt(&mut self, pid: u32, since: Instant, now: Instant, out: &mut Outbox) {
        if !matches!(self.phase, Phase::Stopped) || !out.targetable(pid) {
            return;
        }
        self.want_running = !self.held;
        self.phase = Phase::Running { pid, since };
        self.checks.new_run();
        self.checks.start(now, since.min(now));
        self.timers.set(
            TimerKind::Stable,
            Some(since.max(now) + self.spec.policy.stable_after),
        );
        out.audit(
            self.entry(
                AuditAction::Adopted,
                "still running from a previous vigil; taken over",
            )
            .meta("pid", pid),
        );
        if self.held {
            let entry = self.entry(
                AuditAction::Stop,
                "was stopped by a human before vigil restarted",
            );
            self.begin_stop(now, Then::Stay, entry, out);
        }
    }

    pub(crate) fn on_spawned(&mut self, now: Instant, pid: u32, out: &mut Outbox) {
        if !out.targetable(pid) {
            // An edge bug must never make vigil manage itself.
            self.on_spawn_failed(now, format!("refusing to manage pid {pid}"), out);
            return;
        }
        match &mut self.phase {
            Phase::Starting { pid: p @ None, .. } => {
                *p = Some(pid);
                self.checks.new_run();
                if self.checks.ready_check().is_some() {
                    // Started only once it says READY=1.
                    self.phase = Phase::Starting {
                        pid: Some(pid),
                        since: now,
                    };
                    self.checks.arm_ready_deadline(now);
                } else {
                    self.become_running(now, pid, now);
                }
            }
            Phase::Stopping {
                pid: p @ None,
                since,
                ..
            } => {
                *p = Some(pid);
                *since = now;
                out.signal(self.id, pid, self.spec.stop_signal);
            }
            // A process nobody asked for must not become a second instance.
            _ => out.kill(self.id, pid),
        }
    }

    pub(crate) fn on_spawn_failed(&mut self, now: Instant, error: String, out: &mut Outbox) {
        match std::mem::replace(&mut self.phase, Phase::Stopped) {
            Phase::Starting { pid: None, .. } => {
                out.audit(
                    self.entry(AuditAction::SpawnFailed, "could not start the process")
                        .failed(error.clone()),
                );
                let failure = Failure {
                    reason: format!("could not start: {error}"),
                    cause: "spawn_failed",
                    uptime: None,
                    verdict: None,
                };
                self.on_failure(now, failure, out);
            }
            Phase::Stopping {
                pid: None, then, ..
            } => {
                self.timers.set(TimerKind::Kill, None);
                self.after_stop(now, then, out);
            }
            other => self.phase = other,
        }
    }

    pub(crate) fn on_exited(
        &mut self,
        now: Instant,
        pid: u32,
        status: ExitStatus,
        tree_alive: bool,
        out: &mut Outbox,
    ) {
        match &mut self.phase {
            Phase::Starting {
                pid: Some(p),
                since,
            }
            | Phase::Running { pid: p, since }
                if *p == pid =>
            {
                let uptime = now.saturating_duration_since(*since);
                let entry = self
                    .entry(
                        AuditAction::Exit,
                        format!("{status} after {}", human_duration(uptime)),
                    )
                    .unsuccessful();
                out.audit(exit_metadata(entry, pid, status, uptime));
                if tree_alive {
                    // Leftovers of a crashed run must never overlap the next run.
                    out.kill(self.id, pid);
                }
                self.timers.set(TimerKind::Stable, None);
                self.forget_investigation();
                self.checks.stop();
                self.phase = Phase::Stopped;
                self.last_exit = Some(LastExit {
                    status,
                    at: now,
                    uptime,
                    expected: false,
                });
                let finished = match self.spec.restart {
                    RestartMode::Always => false,
                    RestartMode::OnFailure => status.is_clean(),
                    RestartMode::Never => true,
                };
                if finished {
                    self.want_running = false;
                    if !status.is_clean() {
                        self.last_problem = Some(status.to_string());
                    }
                    return;
                }
                let failure = Failure {
                    reason: status.to_string(),
                    cause: "exit",
                    uptime: Some(uptime),
                    verdict: None,
                };
                self.on_failure(now, failure, out);
            }
            Phase::Stopping {
                pid: Some(p),
                main_exit,
                ..
            } if *p == pid && main_exit.is_none() => {
                *main_exit = Some(status);
                if tree_alive {
                    out.push(Action::WatchTree {
                        agent: self.id,
                        pid,
                    });
                } else {
                    self.finish_stop(now, out);
                }
            }
            // An exit of a run this agent no longer tracks (already handled).
            _ => {}
        }
    }

    pub(crate) fn on_tree_empty(&mut self, now: Instant, pid: u32, out: &mut Outbox) {
        if let Phase::Stopping {
            pid: Some(p),
            main_exit: Some(_),
            ..
        } = self.phase
            && p == pid
        {
            self.finish_stop(now, out);
        }
    }

    fn finish_stop(&mut self, now: Instant, out: &mut Outbox) {
        let Phase::Stopping {
            pid,
            since,
            then,
            main_exit,
        } = std::mem::replace(&mut self.phase, Phase::Stopped)
        else {
            return;
        };
        self.timers.set(TimerKind::Kill, None);
        let status = main_exit.unwrap_or_default();
        let uptime = now.saturating_duration_since(since);
        let entry = self.entry(
            AuditAction::Exit,
            format!("stopped: {status} after {}", human_duration(uptime)),
        );
        out.audit(exit_metadata(
            entry,
            pid.unwrap_or_default(),
            status,
            uptime,
        ));
        self.last_exit = Some(LastExit {
            status,
            at: now,
            uptime,
            expected: true,
        });
        self.after_stop(now, then, out);
    }

    fn after_stop(&mut self, now: Instant, then: Then, out: &mut Outbox) {
        match then {
            Then::Stay => {}
            Then::Start => self.spawn(now, out),
            Then::Heal(failure) => self.on_failure(now, failure, out),
            Then::Remove => {
                self.removed = true;
                out.push(Action::Forget { agent: self.id });
            }
        }
    }

    pub fn diagnosis(&self) -> Option<&Diagnosis> {
        self.diagnosis.as_ref()
    }

    /// Classify a failure from its evidence (the log tail of the run that ended) and report
    /// it to the edges (explain, metrics, the advisor).
    fn diagnose(&mut self, failure: &Failure, out: &mut Outbox) -> Diagnosis {
        let (pid, lines) = match self.log_tail.take() {
            _ if failure.cause == "spawn_failed" => (None, vec![failure.reason.clone()]),
            Some((pid, lines)) => (Some(pid), lines),
            None => (None, Vec::new()),
        };
        let verdict = self.judge(failure.cause, self.crash_streak, &lines);
        self.report(pid, failure, lines, &verdict, out);
        verdict
    }

    /// The rules' verdict, or a stricter advice kept from the previous failure.
    fn judge(&mut self, cause: &'static str, streak: u32, log: &[String]) -> Diagnosis {
        let verdict = self
            .spec
            .diagnosis
            .classify(&Evidence { cause, streak, log });
        match self.advice.take() {
            Some(advice) if advice.action > verdict.action => Diagnosis {
                explanation: format!(
                    "advisor, after the previous failure: {}",
                    advice.explanation
                ),
                ..advice
            },
            _ => verdict,
        }
    }

    /// A restart cannot help: no restart, a human is told once.
    fn quarantine_diagnosed(&mut self, failure: &Failure, d: &Diagnosis, out: &mut Outbox) {
        let reason = format!(
            "{}; diagnosed {} ({}): a restart cannot help",
            failure.reason,
            d.category.as_str(),
            d.explanation
        );
        out.audit(
            self.entry(
                AuditAction::Escalated,
                format!(
                    "quarantined: {reason}; fix the cause, then run `vigil reset {}`",
                    self.spec.name
                ),
            )
            .unsuccessful()
            .meta("cause", "diagnosis")
            .meta("diagnosis", d.to_json()),
        );
        self.escalated = true;
        self.last_problem = Some(reason.clone());
        self.phase = Phase::Quarantined { reason };
    }

    /// A throttled agent waits at least `throttle_delay`, plus up to half of it again, spread
    /// by name: six bots hit by one 429 storm come back one by one, not in a burst.
    fn throttle_delay(&self) -> Duration {
        let base = self.spec.policy.throttle_delay;
        let spread = self
            .spec
            .name
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
            })
            % 1000;
        base + base / 2 * spread as u32 / 1000
    }

    /// The policy's answer to a failure: restart now, later, or not at all.
    fn on_failure(&mut self, now: Instant, failure: Failure, out: &mut Outbox) {
        let policy = self.spec.policy.clone();
        self.last_problem = Some(failure.reason.clone());
        self.had_failure = true;
        if failure.uptime.is_some_and(|u| u >= policy.stable_after) {
            self.crash_streak = 0;
            self.escalated = false;
        }
        if !self.want_running {
            self.phase = Phase::Stopped;
            return;
        }
        self.crash_streak = self.crash_streak.saturating_add(1);

        let diagnosis = match failure.verdict.clone() {
            Some(verdict) => verdict,
            None => self.diagnose(&failure, out),
        };
        self.diagnosis = Some(diagnosis.clone());
        let at_least = match diagnosis.action {
            Remedy::Quarantine => {
                self.quarantine_diagnosed(&failure, &diagnosis, out);
                return;
            }
            Remedy::Backoff => self.throttle_delay(),
            Remedy::Restart => Duration::ZERO,
        };

        let used = self.restarts.count(now, policy.window);
        if used >= policy.max_restarts {
            self.exhausted(now, &failure, used, out);
            return;
        }

        let backoff = policy.backoff(self.crash_streak);
        let cooldown = self
            .restarts
            .last()
            .map(|t| (t + policy.cooldown).saturating_duration_since(now))
            .unwrap_or_default();
        let delay = backoff.max(cooldown).max(at_least);
        self.last_cause = failure.cause;
        if delay.is_zero() {
            self.restart_now(now, failure.reason, failure.cause, out);
            return;
        }
        let why = if !at_least.is_zero() && at_least >= backoff.max(cooldown) {
            format!("throttled: {}", diagnosis.explanation)
        } else if cooldown >= backoff {
            format!("cooldown of {}", human_duration(policy.cooldown))
        } else {
            format!("crash-loop backoff, failure {} in a row", self.crash_streak)
        };
        let until = now + delay;
        out.audit(
            self.entry(
                AuditAction::Backoff,
                format!(
                    "{}; restarting in {} ({why})",
                    failure.reason,
                    human_duration(delay)
                ),
            )
            .meta("delay_ms", delay.as_millis() as u64)
            .meta("crash_streak", self.crash_streak)
            .meta("restarts_in_window", used)
            .meta("diagnosis", diagnosis.to_json()),
        );
        self.phase = Phase::Backoff {
            until,
            retry: false,
        };
        self.timers.set(TimerKind::Restart, Some(until));
    }

    fn exhausted(&mut self, now: Instant, failure: &Failure, used: u32, out: &mut Outbox) {
        let policy = &self.spec.policy;
        let budget = format!(
            "{used} of {} restarts used in the last {}",
            policy.max_restarts,
            human_duration(policy.window)
        );
        out.audit(
            self.entry(
                AuditAction::RateLimited,
                format!(
                    "not restarting after {}: restart budget exhausted ({budget})",
                    failure.reason
                ),
            )
            .unsuccessful()
            .meta("restarts_in_window", used)
            .meta("max_restarts", policy.max_restarts),
        );
        match policy.on_exhausted {
            OnExhausted::Quarantine => {
                let reason = format!(
                    "restart budget exhausted ({budget}); last failure: {}",
                    failure.reason
                );
                if !self.escalated {
                    out.audit(
                        self.entry(
                            AuditAction::Escalated,
                            format!(
                                "quarantined: {reason}; a human must look, then run `vigil reset {}`",
                                self.spec.name
                            ),
                        )
                        .unsuccessful()
                        .meta("cause", "budget_exhausted")
                        .meta("on_exhausted", "quarantine"),
                    );
                }
                self.escalated = true;
                self.phase = Phase::Quarantined { reason };
            }
            OnExhausted::RetryAfter(wait) => {
                let until = (now + wait).max(self.restarts.room_at(
                    now,
                    policy.window,
                    policy.max_restarts,
                ));
                if !self.escalated {
                    out.audit(
                        self.entry(
                            AuditAction::Escalated,
                            format!(
                                "restart budget exhausted ({budget}); retrying in {}",
                                human_duration(until - now)
                            ),
                        )
                        .unsuccessful()
                        .meta("cause", "budget_exhausted")
                        .meta("on_exhausted", "retry_after")
                        .meta("retry_in_ms", (until - now).as_millis() as u64),
                    );
                }
                self.escalated = true;
                self.phase = Phase::Backoff { until, retry: true };
                self.timers.set(TimerKind::Restart, Some(until));
            }
        }
    }

    // ----- timers ---------------------------------------------------------------------------

    pub(crate) fn on_timer(&mut self, now: Instant, kind: TimerKind, out: &mut Outbox) {
        match kind {
            TimerKind::Restart => {
                self.timers.set(TimerKind::Restart, None);
                let Phase::Backoff { retry, .. } = self.phase else {
                    return;
                };
                let policy = &self.spec.policy;
                if self.restarts.count(now, policy.window) >= policy.max_restarts {
                    // The budget can shrink under a waiting restart (a reload lowered it):
                    // wait for room rather than exceed it.
                    let at = self
                        .restarts
                        .room_at(now, policy.window, policy.max_restarts);
                    self.phase = Phase::Backoff { until: at, retry };
                    self.timers.set(TimerKind::Restart, Some(at));
                    return;
                }
                let problem = self
                    .last_problem
                    .clone()
                    .unwrap_or_else(|| "failure".into());
                let (reason, cause) = if retry {
                    (
                        format!(
                            "retrying after the restart budget was exhausted (last failure: {problem})"
                        ),
                        "retry",
                    )
                } else {
                    (problem, self.last_cause)
                };
                self.restart_now(now, reason, cause, out);
            }
            TimerKind::Kill => {
                self.timers.set(TimerKind::Kill, None);
                if let Phase::Stopping { pid: Some(pid), .. } = self.phase {
                    out.audit(
                        self.entry(
                            AuditAction::Kill,
                            format!(
                                "still running {} after {}: sending SIGKILL to its process tree",
                                human_duration(self.spec.stop_timeout),
                                self.spec.stop_signal
                            ),
                        )
                        .meta("pid", pid),
                    );
                    out.kill(self.id, pid);
                }
            }
            TimerKind::Check(_) => {}
            TimerKind::Investigate => self.on_investigation_timeout(now, out),
            TimerKind::Stable => {
                self.timers.set(TimerKind::Stable, None);
                if !matches!(self.phase, Phase::Running { .. }) {
                    return;
                }
                self.crash_streak = 0;
                self.escalated = false;
                self.advice = None;
                // With checks, recovery is judged by the checks passing.
                if self.had_failure && self.checks.is_empty() {
                    self.had_failure = false;
                    out.audit(self.entry(
                        AuditAction::Recovered,
                        format!(
                            "running for {} since the last failure ({})",
                            human_duration(self.spec.policy.stable_after),
                            self.last_problem.as_deref().unwrap_or("unknown")
                        ),
                    ));
                }
            }
        }
    }

    // ----- health checks ----------------------------------------------------------------------

    fn become_running(&mut self, now: Instant, pid: u32, since: Instant) {
        self.phase = Phase::Running { pid, since };
        self.timers
            .set(TimerKind::Stable, Some(now + self.spec.policy.stable_after));
        self.checks.start(now, since);
    }

    pub(crate) fn on_check_due(&mut self, now: Now, index: usize, out: &mut Outbox) {
        let mut outputs = Vec::new();
        self.checks
            .on_due(index, now, &self.spec.quiet, &mut outputs);
        self.check_outputs(now, outputs, out);
    }

    pub(crate) fn on_check_result(
        &mut self,
        now: Now,
        index: usize,
        run: u64,
        observation: Observation,
        out: &mut Outbox,
    ) {
        let mut outputs = Vec::new();
        self.checks
            .on_result(index, run, observation, now, &self.spec.quiet, &mut outputs);
        self.check_outputs(now, outputs, out);
    }

    /// A `NOTIFY_SOCKET` datagram from a process of this agent's current run.
    pub(crate) fn on_notify(&mut self, now: Now, message: &NotifyMessage, out: &mut Outbox) {
        let (pid, since) = match self.phase {
            Phase::Starting {
                pid: Some(pid),
                since,
            }
            | Phase::Running { pid, since } => (pid, since),
            _ => return,
        };
        let mut outputs = Vec::new();
        let became_ready = self.checks.on_notify(message, now, &mut outputs);
        if became_ready && matches!(self.phase, Phase::Starting { .. }) {
            self.become_running(now.mono, pid, since);
        }
        self.check_outputs(now, outputs, out);
    }

    /// A heartbeat through the API. Returns whether the agent has an `api` check to take it.
    pub(crate) fn on_api_heartbeat(&mut self, now: Now, out: &mut Outbox) -> bool {
        let mut outputs = Vec::new();
        let took = self.checks.on_api_heartbeat(now, &mut outputs);
        self.check_outputs(now, outputs, out);
        took
    }

    fn check_outputs(&mut self, now: Now, outputs: Vec<CheckOutput>, out: &mut Outbox) {
        for output in outputs {
            match output {
                CheckOutput::Probe(index) => out.push(Action::RunCheck {
                    agent: self.id,
                    check: index,
                    run: self.checks.run,
                }),
                CheckOutput::Changed { index, from } => {
                    let c = &self.checks.checks[index];
                    let to = c.status.verdict;
                    let mut entry = self
                        .entry(
                            AuditAction::Check,
                            format!(
                                "{}: {} → {}: {}",
                                c.spec.label(),
                                from.as_str(),
                                to.as_str(),
                                c.status.detail
                            ),
                        )
                        .meta("check", c.spec.name.clone())
                        .meta("kind", c.spec.kind.as_str())
                        .meta("verdict", to.as_str())
                        .meta("previous", from.as_str());
                    if to != Verdict::Ok {
                        entry = entry.unsuccessful();
                    }
                    out.audit(entry);
                }
                CheckOutput::Stalled { index, reason } => {
                    self.stall(now.mono, index, reason, out);
                    return;
                }
                CheckOutput::AllOk => {
                    if self.had_failure {
                        self.had_failure = false;
                        out.audit(self.entry(
                            AuditAction::Recovered,
                            format!(
                                "every check passes again (last failure: {})",
                                self.last_problem.as_deref().unwrap_or("unknown")
                            ),
                        ));
                    }
                }
            }
        }
    }

    /// Alive but not working: stop it and let the policy decide what follows, as for a crash.
    fn stall(&mut self, now: Instant, index: usize, reason: String, out: &mut Outbox) {
        let (pid, since) = match self.phase {
            Phase::Starting { pid, since } => (pid, since),
            Phase::Running { pid, since } => (Some(pid), since),
            _ => return,
        };
        let c = &self.checks.checks[index];
        let entry = self
            .entry(AuditAction::Stalled, reason.clone())
            .unsuccessful()
            .meta("check", c.spec.name.clone())
            .meta("kind", c.spec.kind.as_str())
            .meta("consecutive_failures", c.status.consecutive_failures);
        self.last_problem = Some(reason.clone());
        let failure = Failure {
            reason,
            cause: "stall",
            uptime: Some(now.saturating_duration_since(since)),
            verdict: None,
        };
        if let Some(pid) = pid
            && let Some(wait) = self.investigation_wait()
        {
            out.audit(entry.meta("investigating_for_ms", wait.as_millis() as u64));
            self.investigate(now, pid, failure, wait, out);
            return;
        }
        self.begin_stop(now, Then::Heal(failure), entry, out);
    }

    // ----- configuration changes --------------------------------------------------------------

    /// Apply a new spec from a reload. Returns whether the agent is restarted for it.
    pub(crate) fn update(&mut self, now: Instant, spec: AgentSpec, out: &mut Outbox) -> bool {
        let process_changed = spec.fingerprint != self.spec.fingerprint;
        let autostart = spec.autostart;
        if spec.checks != self.spec.checks {
            let run = self.checks.run;
            self.checks = CheckSet::new(spec.checks.clone());
            self.checks.run = run;
            if let Phase::Running { since, .. } = self.phase {
                self.checks.start(now, since);
            }
        }
        self.spec = spec;
        if let Phase::Stopping { then, .. } = &mut self.phase
            && *then == Then::Remove
        {
            // Removed by an earlier reload and added back before it finished stopping.
            *then = if autostart && !self.held {
                Then::Start
            } else {
                Then::Stay
            };
            return false;
        }
        if !process_changed {
            return false;
        }
        if matches!(self.phase, Phase::Starting { .. } | Phase::Running { .. }) {
            let entry = self.entry(AuditAction::Restart, "configuration changed (reload)");
            self.begin_stop(now, Then::Start, entry, out);
            return true;
        }
        false
    }

    /// The agent left the configuration: stop it, then forget it.
    pub(crate) fn remove(&mut self, now: Instant, out: &mut Outbox) {
        self.want_running = false;
        out.audit(self.entry(
            AuditAction::Removed,
            "removed from the configuration (reload)",
        ));
        match &mut self.phase {
            Phase::Starting { .. } | Phase::Running { .. } => {
                let entry = self.entry(AuditAction::Stop, "removed from the configuration");
                self.begin_stop(now, Then::Remove, entry, out);
            }
            Phase::Stopping { then, .. } => *then = Then::Remove,
            _ => {
                for (kind, _) in self.timers.armed() {
                    self.timers.set(kind, None);
                }
                self.checks.stop();
                self.removed = true;
                out.push(Action::Forget { agent: self.id });
            }
        }
    }
}

fn exit_metadata(entry: AuditEntry, pid: u32, status: ExitStatus, uptime: Duration) -> AuditEntry {
    let mut entry = entry
        .meta("pid", pid)
        .meta("uptime_s", uptime.as_secs_f64());
    if let Some(code) = status.code {
        entry = entry.meta("exit_code", code);
    }
    if let Some(sig) = status.signal {
        entry = entry
            .meta("signal", sig.name())
            .meta("core_dumped", status.core_dumped);
    }
    entry
}
