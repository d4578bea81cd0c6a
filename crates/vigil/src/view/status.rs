//! The status of an agent as `/status`, the dashboard and `vigil status` show it: the
//! published facts, with ages and budgets worked out at the moment of reading.

use std::time::Duration;

use serde::Serialize;

use super::{AgentView, FleetView};
use crate::audit::format_ms;

#[derive(Clone, Debug, Serialize)]
pub struct CheckStatus {
    pub name: String,
    pub kind: &'static str,
    pub verdict: &'static str,
    pub detail: String,
    pub consecutive_failures: u32,
    pub failure_threshold: u32,
    /// Age of the last sign of progress, when the check measures progress.
    pub age_s: Option<f64>,
    pub max_age_s: Option<f64>,
    /// When the verdict was reached.
    pub at: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ExitStatusView {
    pub status: String,
    pub code: Option<i32>,
    pub signal: Option<String>,
    pub at: String,
    pub uptime_s: f64,
    /// vigil asked for it (a stop or a restart).
    pub expected: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct RestartsStatus {
    pub total: u64,
    pub in_window: u32,
    pub window_s: f64,
    pub max: u32,
}

#[derive(Clone, Debug, Serialize)]
pub struct ConflictStatus {
    pub pid: u32,
    pub reason: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct AgentStatus {
    pub name: String,
    pub template: Option<String>,
    pub instance: Option<String>,
    /// `process` or `docker`.
    pub driver: &'static str,
    /// What it is when not a process of vigil's: `container market-feed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    pub state: &'static str,
    pub pid: Option<u32>,
    pub started_at: Option<String>,
    pub uptime_s: Option<f64>,
    pub restarts: RestartsStatus,
    pub budget_remaining: u32,
    /// Failures in a row without a healthy run in between.
    pub consecutive_failures: u32,
    /// A person stopped it; it stays down across vigil restarts until started again.
    pub held: bool,
    pub restart_at: Option<String>,
    pub quarantine_reason: Option<String>,
    /// State `conflict`: the process outside vigil that runs the agent's command.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conflict: Option<ConflictStatus>,
    /// The agent's own `STATUS=` line (notify protocol).
    pub status_text: Option<String>,
    /// It declared itself degraded (`POST /agents/NAME/status`, `DEGRADED=`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub degraded: Option<DegradedStatus>,
    /// Its latest checkpoint, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<CheckpointStatus>,
    /// Exclusive placement: its lease on this node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease: Option<LeaseStatus>,
    pub checks: Vec<CheckStatus>,
    /// The oldest progress among its progress checks, and that check's `max_age`.
    pub progress_age_s: Option<f64>,
    pub progress_max_age_s: Option<f64>,
    pub last_exit: Option<ExitStatusView>,
    pub last_problem: Option<String>,
    /// The verdict on the last failure: `category`, `action`, `rule`, `explanation`, ….
    pub diagnosis: Option<serde_json::Value>,
    /// Stalled, and its evidence (and advice) is being gathered before it is stopped.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub investigating: bool,
    /// Its process was started by something else and taken over (`adopt`): its output is not
    /// in the agent's log, and its exit code is not known.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub adopted: bool,
    /// Has an `api` check: takes `POST /agents/NAME/heartbeat`.
    pub takes_heartbeats: bool,
    /// When the open stall episode began: it stays open across the restarts that try to heal
    /// it, until the agent has proven healthy again.
    pub stalled_since: Option<String>,
    /// Inside one of its quiet windows now: progress is not judged.
    pub quiet: bool,
    /// Running, and every check has passed in this run.
    pub healthy: bool,
    /// The agents it depends on (`depends_on`, and the producers its checks name).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<DependsOnStatus>,
    /// State `waiting`: the upstream it waits for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting_on: Option<WaitingOnStatus>,
}

/// An exclusive agent's lease on this node (`lease` in `/status`).
#[derive(Clone, Serialize, Debug)]
pub struct LeaseStatus {
    /// This node holds it: the agent may run here.
    pub held: bool,
    /// The fencing epoch held (its runs get it as `VIGIL_FENCE`).
    pub epoch: Option<u64>,
    /// How long the lease is known valid without another renewal.
    pub valid_for_s: Option<f64>,
    /// The epoch the current run was started under.
    pub run_epoch: Option<u64>,
    /// Not held here: why (`node fra-2 holds it (epoch 7)`).
    pub standby: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct DegradedStatus {
    pub reason: String,
    pub since: String,
    /// Stall verdicts are not acted on before this; `null` once that time is over.
    pub stall_checks_suspended_until: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct CheckpointStatus {
    pub version: i64,
    pub at: String,
    pub age_s: f64,
}

/// Each agent's latest checkpoint: version and time (wall ms).
pub type CheckpointIndex = std::collections::HashMap<String, (i64, i64)>;

#[derive(Clone, Debug, Serialize)]
pub struct DependsOnStatus {
    pub agent: String,
    /// `running` or `healthy`: how far along it must be.
    pub ready: &'static str,
    /// It is that far along now.
    pub satisfied: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct WaitingOnStatus {
    pub agent: String,
    /// What the upstream is doing (`stalled`, `quarantined`, `crashed, restarting`, …).
    pub upstream_state: String,
    pub since: String,
    pub for_s: f64,
    /// `waiting for feed: stalled 40s`.
    pub text: String,
}

/// What an upstream is doing, in words, as its dependents see it.
fn upstream_state(up: Option<&AgentView>, seen: &str) -> String {
    use vigil_core::AgentState as S;
    let Some(up) = up else {
        return seen.to_string();
    };
    if up.stalled_since_ms.is_some() || up.investigating {
        return "stalled".into();
    }
    match up.state {
        S::Backoff => "crashed, restarting".into(),
        S::Quarantined => "quarantined".into(),
        S::Stopped => "stopped".into(),
        S::Stopping => "stopping".into(),
        S::Conflict => "in conflict".into(),
        S::Starting => "starting".into(),
        S::Waiting => match &up.waiting {
            Some(w) => format!("waiting for {}", w.0),
            None => "waiting".into(),
        },
        S::Running => seen.to_string(),
        S::Standby => "on standby (another node runs it)".into(),
    }
}

/// The verdict shown for a check of an agent that is not starting or running.
pub const NOT_RUNNING: &str = "not_running";

fn ts(ms: i64) -> String {
    format_ms(ms)
}

fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

fn since(now_ms: i64, ms: i64) -> Duration {
    Duration::from_millis(now_ms.saturating_sub(ms).max(0) as u64)
}

impl AgentStatus {
    pub fn of(a: &AgentView, fleet: &FleetView, now_ms: i64) -> AgentStatus {
        let progress = a.progress(now_ms);
        // The checks of a run that is over say nothing about now.
        let live = a.is_live();
        AgentStatus {
            name: a.name.clone(),
            template: a.template.clone(),
            instance: a.instance.clone(),
            driver: a.driver,
            target: a.target.clone(),
            state: a.state.as_str(),
            pid: a.pid,
            started_at: a.started_ms.map(ts),
            uptime_s: a.started_ms.map(|t| secs(since(now_ms, t))),
            restarts: RestartsStatus {
                total: a.total_restarts,
                in_window: a.restarts_in_window(now_ms),
                window_s: secs(a.window),
                max: a.max_restarts,
            },
            budget_remaining: a.budget_remaining(now_ms),
            consecutive_failures: a.crash_streak,
            held: a.held,
            restart_at: a.restart_at_ms.map(ts),
            quarantine_reason: a.quarantine_reason.clone(),
            conflict: a.conflict.as_ref().map(|c| ConflictStatus {
                pid: c.0,
                reason: c.1.clone(),
            }),
            status_text: a.status_text.clone(),
            degraded: a.degraded.as_ref().map(|d| DegradedStatus {
                reason: d.0.clone(),
                since: ts(d.1),
                stall_checks_suspended_until: d.2.map(ts),
            }),
            checkpoint: None,
            lease: a.exclusive.as_ref().map(|x| LeaseStatus {
                held: x.held.is_some(),
                epoch: x.held.map(|h| h.0),
                valid_for_s: x.held.map(|h| secs(since(h.1, now_ms))),
                run_epoch: x.run_fence,
                standby: x.standby.clone(),
            }),
            checks: a
                .checks
                .iter()
                .map(|c| CheckStatus {
                    name: c.name.clone(),
                    kind: c.kind.as_str(),
                    verdict: if live {
                        c.verdict.as_str()
                    } else {
                        NOT_RUNNING
                    },
                    detail: if live {
                        c.detail.clone()
                    } else {
                        String::new()
                    },
                    consecutive_failures: c.consecutive_failures,
                    failure_threshold: c.failure_threshold,
                    age_s: c.progress_age(now_ms).filter(|_| live).map(secs),
                    max_age_s: c.max_age.map(secs),
                    at: c.at_ms.map(ts),
                })
                .collect(),
            progress_age_s: progress.map(|p| secs(p.0)),
            progress_max_age_s: progress.map(|p| secs(p.1)),
            last_exit: a.last_exit.as_ref().map(|e| ExitStatusView {
                status: e.status.to_string(),
                code: e.status.code,
                signal: e.status.signal.map(|s| s.name()),
                at: ts(e.at_ms),
                uptime_s: secs(e.uptime),
                expected: e.expected,
            }),
            last_problem: a.last_problem.clone(),
            diagnosis: a.diagnosis.clone(),
            investigating: a.investigating,
            adopted: a.adopted,
            takes_heartbeats: a.takes_heartbeats,
            stalled_since: a.stalled_since_ms.map(ts),
            quiet: a.is_quiet(now_ms),
            healthy: a.is_healthy(),
            depends_on: a
                .depends_on
                .iter()
                .map(|(agent, ready)| DependsOnStatus {
                    agent: agent.clone(),
                    ready: ready.as_str(),
                    satisfied: fleet
                        .agent(agent)
                        .is_some_and(|up| up.level.satisfies(*ready)),
                })
                .collect(),
            waiting_on: a.waiting.as_ref().map(|w| {
                let (on, seen, since_ms) = &**w;
                let state = upstream_state(fleet.agent(on), seen);
                let waited = since(now_ms, *since_ms);
                WaitingOnStatus {
                    agent: on.clone(),
                    text: format!(
                        "waiting for {on}: {state} {}",
                        vigil_core::human_duration(Duration::from_secs(waited.as_secs()))
                    ),
                    upstream_state: state,
                    since: ts(*since_ms),
                    for_s: secs(waited),
                }
            }),
        }
    }
}

/// `{"at": …, "agents": [...]}`: the whole fleet as of `now_ms`.
impl AgentStatus {
    /// With its latest checkpoint from `index`.
    pub fn with_checkpoint(mut self, index: &CheckpointIndex, now_ms: i64) -> Self {
        self.checkpoint = index.get(&self.name).map(|(version, at)| CheckpointStatus {
            version: *version,
            at: ts(*at),
            age_s: secs(since(now_ms, *at)),
        });
        self
    }
}

pub fn status_json(view: &FleetView, now_ms: i64, checkpoints: &CheckpointIndex) -> Vec<u8> {
    #[derive(Serialize)]
    struct Body<'a> {
        at: String,
        agents: Vec<AgentStatus>,
        /// Open fleet incidents (all of them: `/incidents`).
        incidents: Vec<&'a super::IncidentView>,
    }
    let body = Body {
        at: ts(now_ms),
        incidents: view.incidents.iter().filter(|i| i.is_open()).collect(),
        agents: view
            .agents
            .iter()
            .map(|a| AgentStatus::of(a, view, now_ms).with_checkpoint(checkpoints, now_ms))
            .collect(),
    };
    serde_json::to_vec(&body).unwrap_or_default()
}
