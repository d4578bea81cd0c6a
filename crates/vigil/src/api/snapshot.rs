//! What the API shows: an immutable picture of the fleet, built by the supervision loop and
//! published to the API threads. The status JSON is serialized once per picture, not once
//! per request.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant, UNIX_EPOCH};

use serde::Serialize;
use vigil_core::{Agent, AgentState, CheckKind, Now, Supervisor, Verdict};

use crate::audit::format_ts;

/// Counts that only grow, for Prometheus counters.
#[derive(Clone, Debug, Default)]
pub struct Counters {
    /// Audit records written, by action.
    pub actions: BTreeMap<String, u64>,
    /// Restarts, by agent and cause (`exit`, `stall`, `spawn_failed`, `retry`, `requested`).
    pub restarts: HashMap<String, BTreeMap<String, u64>>,
}

#[derive(Clone, Debug, Serialize)]
pub struct CheckView {
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
pub struct ExitView {
    pub status: String,
    pub code: Option<i32>,
    pub signal: Option<String>,
    pub at: String,
    pub uptime_s: f64,
    /// vigil asked for it (a stop or a restart).
    pub expected: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct RestartsView {
    pub total: u64,
    pub in_window: u32,
    pub window_s: f64,
    pub max: u32,
}

#[derive(Clone, Debug, Serialize)]
pub struct AgentStatus {
    pub name: String,
    pub template: Option<String>,
    pub instance: Option<String>,
    pub state: &'static str,
    pub pid: Option<u32>,
    pub started_at: Option<String>,
    pub uptime_s: Option<f64>,
    pub restarts: RestartsView,
    pub budget_remaining: u32,
    /// Failures in a row without a healthy run in between.
    pub consecutive_failures: u32,
    /// A person stopped it; it stays down across vigil restarts until started again.
    pub held: bool,
    pub restart_at: Option<String>,
    pub quarantine_reason: Option<String>,
    /// The agent's own `STATUS=` line (notify protocol).
    pub status_text: Option<String>,
    pub checks: Vec<CheckView>,
    /// The oldest progress among its progress checks, and that check's `max_age`.
    pub progress_age_s: Option<f64>,
    pub progress_max_age_s: Option<f64>,
    pub last_exit: Option<ExitView>,
    pub last_problem: Option<String>,
    /// The verdict on the last failure: `category`, `action`, `rule`, `explanation`, ….
    pub diagnosis: Option<serde_json::Value>,
    /// Stalled, and its evidence (and advice) is being gathered before it is stopped.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub investigating: bool,
    /// Has an `api` check: takes `POST /agents/NAME/heartbeat`.
    pub takes_heartbeats: bool,
}

#[derive(Debug)]
pub struct Snapshot {
    pub agents: Vec<AgentStatus>,
    index: HashMap<String, usize>,
    /// `{"at": …, "agents": [...]}`, ready to send.
    pub status_json: axum::body::Bytes,
    pub counters: Counters,
    pub shutting_down: bool,
}

fn wall(now: Now, t: Instant) -> String {
    let ms = now.wall_of(t).max(0) as u64;
    format_ts(UNIX_EPOCH + Duration::from_millis(ms))
}

fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

fn agent_status(a: &Agent, now: Now) -> AgentStatus {
    let spec = a.spec();
    let mut progress: Option<(f64, f64)> = None;
    let checks = a
        .checks()
        .map(|(c, st)| {
            let age = st
                .last_progress
                .map(|t| now.mono.saturating_duration_since(t))
                .or(st.age)
                .filter(|_| {
                    c.max_age.is_some() && !matches!(c.kind, CheckKind::Http | CheckKind::Exec)
                });
            if let (Some(age), Some(max)) = (age, c.max_age) {
                // The worst progress relative to what is allowed.
                let ratio = age.as_secs_f64() / max.as_secs_f64().max(1e-9);
                let worse = progress.is_none_or(|(a0, m0)| ratio > a0 / m0.max(1e-9));
                if worse {
                    progress = Some((secs(age), secs(max)));
                }
            }
            CheckView {
                name: c.name.clone(),
                kind: c.kind.as_str(),
                verdict: st.verdict.as_str(),
                detail: st.detail.clone(),
                consecutive_failures: st.consecutive_failures,
                failure_threshold: c.failure_threshold,
                age_s: age.map(secs),
                max_age_s: c.max_age.map(secs),
                at: st.at.map(|t| wall(now, t)),
            }
        })
        .collect();
    let policy = &spec.policy;
    AgentStatus {
        name: a.name().to_string(),
        template: spec.template.clone(),
        instance: spec.instance.clone(),
        state: a.state().as_str(),
        pid: a.pid(),
        started_at: a.started_at().map(|t| wall(now, t)),
        uptime_s: a.uptime(now.mono).map(secs),
        restarts: RestartsView {
            total: a.total_restarts(),
            in_window: a.restarts_in_window(now.mono),
            window_s: secs(policy.window),
            max: policy.max_restarts,
        },
        budget_remaining: a.budget_remaining(now.mono),
        consecutive_failures: a.crash_streak(),
        held: a.is_held(),
        restart_at: a.restart_at().map(|t| wall(now, t)),
        quarantine_reason: a.quarantine_reason().map(str::to_string),
        status_text: a.status_text().map(str::to_string),
        checks,
        progress_age_s: progress.map(|p| p.0),
        progress_max_age_s: progress.map(|p| p.1),
        last_exit: a.last_exit().map(|e| ExitView {
            status: e.status.to_string(),
            code: e.status.code,
            signal: e.status.signal.map(|s| s.name()),
            at: wall(now, e.at),
            uptime_s: secs(e.uptime),
            expected: e.expected,
        }),
        last_problem: a.last_problem().map(str::to_string),
        diagnosis: a.diagnosis().map(|d| d.to_json()),
        investigating: a.investigating(),
        takes_heartbeats: a.checks().any(|(c, _)| c.kind == CheckKind::Api),
    }
}

impl Snapshot {
    pub fn build(sup: &Supervisor, now: Now, counters: &Counters) -> Snapshot {
        let agents: Vec<AgentStatus> = sup.agents().map(|a| agent_status(a, now)).collect();
        let index = agents
            .iter()
            .enumerate()
            .map(|(i, a)| (a.name.clone(), i))
            .collect();
        #[derive(Serialize)]
        struct Body<'a> {
            at: String,
            agents: &'a [AgentStatus],
        }
        let body = Body {
            at: format_ts(UNIX_EPOCH + Duration::from_millis(now.wall_ms.max(0) as u64)),
            agents: &agents,
        };
        let status_json = serde_json::to_vec(&body).unwrap_or_default().into();
        Snapshot {
            agents,
            index,
            status_json,
            counters: counters.clone(),
            shutting_down: sup.is_shutting_down(),
        }
    }

    /// Before the loop's first picture.
    pub fn empty() -> Snapshot {
        Snapshot {
            agents: Vec::new(),
            index: HashMap::new(),
            status_json: axum::body::Bytes::from_static(b"{\"at\":null,\"agents\":[]}"),
            counters: Counters::default(),
            shutting_down: false,
        }
    }

    pub fn agent(&self, name: &str) -> Option<&AgentStatus> {
        self.index.get(name).map(|i| &self.agents[*i])
    }

    /// Every instance of a template, in order.
    pub fn instances(&self, template: &str) -> Vec<&AgentStatus> {
        self.agents
            .iter()
            .filter(|a| a.template.as_deref() == Some(template))
            .collect()
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.agents.iter().map(|a| a.name.as_str())
    }
}

/// The state names, in the order metrics list them.
pub fn state_names() -> impl Iterator<Item = &'static str> {
    AgentState::ALL.iter().map(|s| s.as_str())
}

/// A check is up (1), down (0), or unknown (no series).
pub fn check_up(verdict: &str) -> Option<i64> {
    match verdict {
        v if v == Verdict::Ok.as_str() => Some(1),
        v if v == Verdict::Failing.as_str() => Some(0),
        _ => None,
    }
}
