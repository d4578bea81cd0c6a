//! What the core knows about an agent: only what decisions need, never how to run it.

use std::time::Duration;

use crate::advice::AdvisorSpec;
use crate::checks::CheckSpec;
use crate::diagnosis::Rules;
use crate::graph::{Dependency, OnUpstreamRestart};
use crate::policy::{RestartMode, RestartPolicy};
use crate::quiet::Quiet;
use crate::signal::Signal;

#[derive(Clone, Debug, PartialEq)]
pub struct AgentSpec {
    /// `bot`, or `trader@BTC_USDT` for an instance of a template.
    pub name: String,
    pub template: Option<String>,
    pub instance: Option<String>,
    /// What runs it (`process`, `docker`) and what it is in words (`container feed`): shown,
    /// never decided on.
    pub driver: &'static str,
    pub target: Option<String>,
    /// Its target (a systemd unit, a container) lives on without vigil: a vigil killed while
    /// it stopped it may have left it running.
    pub external: bool,
    pub autostart: bool,
    pub restart: RestartMode,
    pub stop_signal: Signal,
    pub stop_timeout: Duration,
    pub policy: RestartPolicy,
    /// Changes whenever anything that shapes the running process changes (command, cwd, env,
    /// logs): a reload restarts the agent then, and applies other changes live.
    pub fingerprint: u64,
    pub checks: Vec<CheckSpec>,
    /// When stall verdicts are suspended.
    pub quiet: Quiet,
    /// How failures are classified before the policy acts on them.
    pub diagnosis: Rules,
    /// An advisor (LLM) gives second opinions, when one is configured.
    pub advisor: Option<AdvisorSpec>,
    /// The agents it needs (`depends_on`, and the producers its checks name): it starts after
    /// them, and while one is down its failures are that one's, not its own.
    pub depends_on: Vec<Dependency>,
    /// It has guarded files (`files`): they are checked (and repaired) before every start,
    /// and kept once a run has proven healthy.
    pub guards_files: bool,
    pub on_upstream_restart: OnUpstreamRestart,
    /// The timeout of the agent's `evidence` command, when it has one: run on a stall before
    /// the agent is stopped.
    pub evidence_timeout: Option<Duration>,
    /// `placement = "exclusive"`: one node of the cluster runs it, the one holding its lease.
    pub exclusive: Option<Exclusive>,
}

/// How an exclusive agent keeps to its lease. The edge holds the lease; the core starts a run
/// only under a lease still valid, and stops it before the lease can lapse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exclusive {
    /// Kept free between the end of a self-fencing stop (`stop_timeout`, then SIGKILL) and the
    /// lease's expiry: the stop begins at `valid_until - stop_timeout - margin`.
    pub margin: Duration,
    /// A run found alive as vigil starts (adopted) keeps running this long while the cluster
    /// has not yet said who holds the lease; stopped at the end of it without an answer.
    pub confirm_within: Duration,
}

impl AgentSpec {
    /// A spec with default policy, for tests and simulations.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            template: None,
            instance: None,
            driver: "process",
            target: None,
            external: false,
            autostart: true,
            restart: RestartMode::Always,
            stop_signal: Signal::TERM,
            stop_timeout: Duration::from_secs(10),
            policy: RestartPolicy::default(),
            fingerprint: 0,
            checks: Vec::new(),
            quiet: Quiet::default(),
            diagnosis: Rules::default(),
            advisor: None,
            evidence_timeout: None,
            exclusive: None,
            depends_on: Vec::new(),
            guards_files: false,
            on_upstream_restart: OnUpstreamRestart::Wait,
        }
    }
}
