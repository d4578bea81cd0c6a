//! What readers (the HTTP API, metrics, the dashboard, the CLI through the API) see of the
//! fleet: an immutable picture the supervision loop publishes when something changed, and
//! only then. The picture holds facts with their wall-clock times, not ages: ages, uptimes
//! and what is left of a budget are computed by the reader at the moment it reads, so an
//! unchanged fleet needs no new picture, and the loop never serializes anything.

mod publisher;
mod status;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use vigil_core::{Agent, AgentState, CheckKind, Now, Verdict};

pub use publisher::Publisher;
pub use status::{AgentStatus, CheckpointIndex, NOT_RUNNING, status_json};

/// The whole fleet at one moment.
#[derive(Debug)]
pub struct FleetView {
    /// In configuration order.
    pub agents: Vec<Arc<AgentView>>,
    index: Arc<HashMap<String, usize>>,
    /// Audit records written, by action.
    pub actions: Arc<BTreeMap<&'static str, u64>>,
    pub shutting_down: bool,
    /// Fleet incidents: open ones first, then the newest resolved.
    pub incidents: Arc<Vec<IncidentView>>,
    /// Runbook runs: active ones, then the newest ended.
    pub runbooks: Arc<Vec<RunbookView>>,
    /// Incidents opened since vigil started, by cause key.
    pub incidents_by_cause: Arc<BTreeMap<String, u64>>,
    /// Grows with every published picture (a reader caches what it derives per version).
    pub version: u64,
}

impl FleetView {
    /// Before the loop's first picture.
    pub fn empty() -> FleetView {
        FleetView {
            agents: Vec::new(),
            index: Arc::default(),
            actions: Arc::default(),
            shutting_down: false,
            incidents: Arc::default(),
            runbooks: Arc::default(),
            incidents_by_cause: Arc::default(),
            version: 0,
        }
    }

    pub fn agent(&self, name: &str) -> Option<&AgentView> {
        self.index.get(name).map(|i| &*self.agents[*i])
    }

    /// Every instance of a template, in order.
    pub fn instances(&self, template: &str) -> Vec<&AgentView> {
        self.agents
            .iter()
            .filter(|a| a.template.as_deref() == Some(template))
            .map(|a| &**a)
            .collect()
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.agents.iter().map(|a| a.name.as_str())
    }
}

/// One fleet incident. Times are wall-clock milliseconds.
#[derive(Clone, Debug, serde::Serialize)]
pub struct IncidentView {
    pub id: u64,
    /// `rule:database_unreachable`, `target:postgres://db:5432/bots`.
    pub cause: String,
    /// For people.
    pub cause_text: String,
    pub opened: String,
    pub resolved: Option<String>,
    /// Every agent that failed for the cause.
    pub members: Vec<String>,
    /// Agents whose restart is held now (or, once resolved, still to be started).
    pub held: Vec<String>,
    /// The agent started to probe the cause, while it proves itself.
    pub canary: Option<String>,
    pub probes: u32,
}

impl IncidentView {
    pub fn of(i: &vigil_core::Incident, sup: &vigil_core::Supervisor, now: Now) -> IncidentView {
        let name = |id: vigil_core::AgentId| sup.agent(id).map(|a| a.name().to_string());
        IncidentView {
            id: i.id,
            cause: i.cause.key.clone(),
            cause_text: i.cause.text.clone(),
            opened: crate::audit::format_ms(now.wall_of(i.opened)),
            resolved: i.resolved.map(|t| crate::audit::format_ms(now.wall_of(t))),
            members: i.members.iter().map(|(_, n)| n.clone()).collect(),
            held: i.held.iter().filter_map(|a| name(*a)).collect(),
            canary: i.canary.and_then(|(a, _)| name(a)),
            probes: i.probes,
        }
    }

    pub fn is_open(&self) -> bool {
        self.resolved.is_none()
    }
}

/// One run of a runbook. Times are wall-clock, RFC 3339.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RunbookView {
    pub id: u64,
    pub runbook: String,
    pub agent: String,
    pub alert: String,
    pub fingerprint: String,
    /// `queued`, `running`, `waiting_healthy`, `succeeded`, `failed`, `cancelled`.
    pub state: &'static str,
    /// The step at work (1-based) and what it is, while it runs.
    pub step: Option<usize>,
    pub step_label: Option<String>,
    pub done: Vec<StepView>,
    pub started: Option<String>,
    pub ended: Option<String>,
    /// How it ended.
    pub outcome: Option<String>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct StepView {
    pub step: String,
    pub ok: bool,
    pub detail: String,
}

impl RunbookView {
    pub fn of(r: &vigil_core::runbook::Run, sup: &vigil_core::Supervisor, now: Now) -> RunbookView {
        use vigil_core::runbook::RunState;
        let at = |t: std::time::Instant| crate::audit::format_ms(now.wall_of(t));
        let (state, ended, outcome) = match &r.state {
            RunState::Queued => ("queued", None, None),
            RunState::Ready | RunState::Awaiting => ("running", None, None),
            RunState::WaitingHealthy { .. } => ("waiting_healthy", None, None),
            RunState::Ended {
                at: t,
                outcome,
                how,
            } => (outcome.as_str(), Some(at(*t)), Some(how.clone())),
        };
        let label = sup
            .runbook_spec(&r.runbook)
            .and_then(|s| s.steps.get(r.step))
            .map(|s| s.label());
        RunbookView {
            id: r.id,
            runbook: r.runbook.clone(),
            agent: r.agent_name.clone(),
            alert: r.alert.clone(),
            fingerprint: r.fingerprint.clone(),
            state,
            step: r.is_active().then_some(r.step + 1),
            step_label: if r.is_active() { label } else { None },
            done: r
                .done
                .iter()
                .map(|(step, ok, detail)| StepView {
                    step: step.clone(),
                    ok: *ok,
                    detail: detail.clone(),
                })
                .collect(),
            started: r.started.map(at),
            ended,
            outcome,
        }
    }
}

/// One agent at the moment it last changed. Times are wall-clock milliseconds.
#[derive(Debug)]
pub struct AgentView {
    pub name: String,
    pub template: Option<String>,
    pub instance: Option<String>,
    pub driver: &'static str,
    /// What it is, in words (`container feed`), when not a process of vigil's.
    pub target: Option<String>,
    pub state: AgentState,
    pub pid: Option<u32>,
    pub started_ms: Option<i64>,
    pub total_restarts: u64,
    /// Automatic restarts still inside the window, oldest first.
    pub restart_ms: Vec<i64>,
    pub window: Duration,
    pub max_restarts: u32,
    /// Restarts by cause (`exit`, `stall`, `spawn_failed`, `retry`, `requested`), counted from
    /// the journal records.
    pub restarts_by_cause: BTreeMap<String, u64>,
    pub crash_streak: u32,
    pub held: bool,
    pub restart_at_ms: Option<i64>,
    pub quarantine_reason: Option<String>,
    /// Not started: this pid, not vigil's, runs its command (and why it counts as a copy).
    pub conflict: Option<Box<(u32, String)>>,
    pub status_text: Option<String>,
    /// What it declared (`degraded`): reason, since, and until when stall verdicts wait.
    pub degraded: Option<Box<(String, i64, Option<i64>)>>,
    pub checks: Vec<CheckView>,
    pub last_exit: Option<ExitView>,
    pub last_problem: Option<String>,
    pub diagnosis: Option<serde_json::Value>,
    pub investigating: bool,
    /// Its process was started by something else and taken over (`adopt`).
    pub adopted: bool,
    pub takes_heartbeats: bool,
    /// An open stall episode began then: stays set across the restarts that try to heal it.
    pub stalled_since_ms: Option<i64>,
    /// Its quiet windows, when it has any (most agents do not).
    pub quiet: Option<Box<vigil_core::Quiet>>,
    /// The agents it depends on, with how far along each must be (`running`, `healthy`).
    pub depends_on: Vec<(String, vigil_core::Ready)>,
    /// How far along it is for the agents that depend on it, as the core judges it.
    pub level: vigil_core::Level,
    /// The upstream it waits for, what that one was doing, and since when.
    pub waiting: Option<Box<(String, String, i64)>>,
    /// Exclusive placement: its lease as this node knows it.
    pub exclusive: Option<Box<ExclusiveView>>,
}

/// An exclusive agent's lease, as this node knows it.
#[derive(Debug)]
pub struct ExclusiveView {
    /// Held here: the fencing epoch, and until when (wall-clock ms, erring early).
    pub held: Option<(u64, i64)>,
    /// Not held here: why (who holds it).
    pub standby: Option<String>,
    /// The epoch its current run was started under.
    pub run_fence: Option<u64>,
}

#[derive(Debug)]
pub struct CheckView {
    pub name: String,
    pub kind: CheckKind,
    pub verdict: Verdict,
    pub detail: String,
    pub consecutive_failures: u32,
    pub failure_threshold: u32,
    /// When the verdict was reached.
    pub at_ms: Option<i64>,
    /// The last sign of progress or life.
    pub last_progress_ms: Option<i64>,
    /// The age of the progress the probe saw, as of `at_ms`, when no sign is known.
    pub age: Option<Duration>,
    pub max_age: Option<Duration>,
}

#[derive(Debug)]
pub struct ExitView {
    pub status: vigil_core::ExitStatus,
    pub at_ms: i64,
    pub uptime: Duration,
    pub expected: bool,
}

impl AgentView {
    pub fn of(a: &Agent, now: Now, restarts_by_cause: BTreeMap<String, u64>) -> AgentView {
        let spec = a.spec();
        let wall = |t| now.wall_of(t);
        AgentView {
            name: a.name().to_string(),
            template: spec.template.clone(),
            instance: spec.instance.clone(),
            driver: spec.driver,
            target: spec.target.clone(),
            state: a.state(),
            pid: a.pid(),
            started_ms: a.started_at().map(wall),
            total_restarts: a.total_restarts(),
            restart_ms: a.restart_times().map(wall).collect(),
            window: spec.policy.window,
            max_restarts: spec.policy.max_restarts,
            restarts_by_cause,
            crash_streak: a.crash_streak(),
            held: a.is_held(),
            restart_at_ms: a.restart_at().map(wall),
            quarantine_reason: a.quarantine_reason().map(str::to_string),
            conflict: a
                .conflict()
                .map(|(pid, why)| Box::new((pid, why.to_string()))),
            status_text: a.status_text().map(str::to_string),
            degraded: a
                .declared_degraded()
                .map(|(reason, since, until)| Box::new((reason.to_string(), since, until))),
            checks: a
                .checks()
                .map(|(c, st)| CheckView {
                    name: c.name.clone(),
                    kind: c.kind,
                    verdict: st.verdict,
                    detail: st.detail.clone(),
                    consecutive_failures: st.consecutive_failures,
                    failure_threshold: c.failure_threshold,
                    at_ms: st.at.map(wall),
                    last_progress_ms: st.last_progress.map(wall),
                    age: st.age,
                    max_age: c.max_age,
                })
                .collect(),
            last_exit: a.last_exit().map(|e| ExitView {
                status: e.status,
                at_ms: wall(e.at),
                uptime: e.uptime,
                expected: e.expected,
            }),
            last_problem: a.last_problem().map(str::to_string),
            diagnosis: a.diagnosis().map(|d| d.to_json()),
            investigating: a.investigating(),
            adopted: a.is_adopted(),
            takes_heartbeats: a.checks().any(|(c, _)| c.kind == CheckKind::Api),
            stalled_since_ms: a.stalled_since_ms(),
            quiet: (!spec.quiet.windows.is_empty()).then(|| Box::new(spec.quiet.clone())),
            depends_on: spec
                .depends_on
                .iter()
                .map(|d| (d.agent.clone(), d.ready))
                .collect(),
            level: a.level(),
            waiting: a
                .waiting_on()
                .map(|(on, why, since)| Box::new((on.to_string(), why.to_string(), wall(since)))),
            exclusive: spec.exclusive.map(|_| {
                Box::new(ExclusiveView {
                    held: a.lease().map(|(epoch, until)| (epoch, wall(until))),
                    standby: a.standby_reason().map(str::to_string),
                    run_fence: a.run_fence(),
                })
            }),
        }
    }

    /// Its process is meant to be up: its checks and progress describe the present. For an
    /// agent that is stopped, quarantined or waiting to restart they describe a run that is
    /// over, and are not shown as current.
    pub fn is_live(&self) -> bool {
        matches!(self.state, AgentState::Starting | AgentState::Running) || self.is_waiting_alive()
    }

    /// Its process runs while it waits for an upstream (its failures are held).
    pub fn is_waiting_alive(&self) -> bool {
        self.state == AgentState::Waiting && self.pid.is_some()
    }

    /// Its process is up: running, or running while it waits for an upstream.
    pub fn is_up(&self) -> bool {
        self.state == AgentState::Running || self.is_waiting_alive()
    }

    /// Inside one of its quiet windows at `now_ms`: progress is not judged.
    pub fn is_quiet(&self, now_ms: i64) -> bool {
        self.quiet.as_ref().is_some_and(|q| q.is_quiet(now_ms))
    }

    /// Running, and every check has passed in this run (none failing, unknown or pending).
    pub fn is_healthy(&self) -> bool {
        self.state == AgentState::Running && self.checks.iter().all(|c| c.verdict == Verdict::Ok)
    }

    /// Silence is measured from the end of the last quiet window at the earliest, as the core
    /// measures it: a market that just opened has not been silent all weekend.
    fn silence_floor_ms(&self, now_ms: i64) -> Option<i64> {
        self.quiet.as_ref().and_then(|q| q.last_end(now_ms))
    }

    /// Automatic restarts within the window that ends at `now_ms`.
    pub fn restarts_in_window(&self, now_ms: i64) -> u32 {
        let window = vigil_core::time::millis(self.window);
        self.restart_ms
            .iter()
            .filter(|t| **t <= now_ms && now_ms.saturating_sub(**t) < window)
            .count() as u32
    }

    pub fn budget_remaining(&self, now_ms: i64) -> u32 {
        self.max_restarts
            .saturating_sub(self.restarts_in_window(now_ms))
    }

    /// The oldest progress among its progress checks relative to what each allows, as
    /// (age, max_age).
    /// Nothing while the agent is not live or is inside a quiet window.
    pub fn progress(&self, now_ms: i64) -> Option<(Duration, Duration)> {
        if !self.is_live() || self.is_quiet(now_ms) {
            return None;
        }
        let floor = self.silence_floor_ms(now_ms);
        let mut worst: Option<(Duration, Duration)> = None;
        for c in &self.checks {
            let age = c.progress_age(now_ms).map(|age| match floor {
                Some(f) => age.min(Duration::from_millis(now_ms.saturating_sub(f).max(0) as u64)),
                None => age,
            });
            if let (Some(age), Some(max)) = (age, c.max_age) {
                let ratio =
                    |(a, m): (Duration, Duration)| a.as_secs_f64() / m.as_secs_f64().max(1e-9);
                if worst.is_none_or(|w| ratio((age, max)) > ratio(w)) {
                    worst = Some((age, max));
                }
            }
        }
        worst
    }
}

impl CheckView {
    /// Age of the last progress at `now_ms`, for checks that measure progress.
    pub fn progress_age(&self, now_ms: i64) -> Option<Duration> {
        if self.max_age.is_none() || matches!(self.kind, CheckKind::Http | CheckKind::Exec) {
            return None;
        }
        let live = self
            .last_progress_ms
            .map(|t| Duration::from_millis(now_ms.saturating_sub(t).max(0) as u64));
        if matches!(self.kind, CheckKind::Notify | CheckKind::Api) {
            // The agent's own signs arrive as they happen: their age is exact at any moment.
            live.or(self.age)
        } else {
            // A probe sees progress only when it looks: its age as of that look, or the age
            // would climb between looks and drop at each one (a file touched every second
            // would show 1 s, 2 s, … 5 s, 1 s).
            self.age.or(live)
        }
    }

    /// 1 when passing, 0 when failing; nothing while unknown or pending.
    pub fn up(&self) -> Option<i64> {
        match self.verdict {
            Verdict::Ok => Some(1),
            Verdict::Failing => Some(0),
            Verdict::Unknown | Verdict::Pending => None,
        }
    }
}
