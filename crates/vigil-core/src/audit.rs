//! Audit entries: the core decides what is written; the edge stamps the time and writes it.

use serde_json::{Map, Value};

/// What an audit record is about. Serialized in snake_case (`rate_limited`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AuditAction {
    /// An agent was started (autostart, by a human, or after a reset).
    Start,
    /// An agent's main process ended (expected or not).
    Exit,
    /// An automatic or requested restart.
    Restart,
    /// A requested stop.
    Stop,
    /// The stop signal was not obeyed in time; the tree gets SIGKILL.
    Kill,
    /// A restart is delayed (cooldown or crash-loop backoff).
    Backoff,
    /// A restart was refused because the restart budget is used up.
    RateLimited,
    /// A human must look: the agent is quarantined or waits for a retry.
    Escalated,
    /// The agent is healthy again after a failure.
    Recovered,
    /// A human cleared the restart budget and any quarantine.
    Reset,
    /// A health check's verdict changed (ok, failing, unknown).
    Check,
    /// The agent is alive but its checks say it stopped working: it is stopped and healed.
    Stalled,
    /// The agent's process could not be created.
    SpawnFailed,
    /// A running agent was taken over: left by a previous vigil, or started elsewhere and
    /// named by the agent's `adopt`.
    Adopted,
    /// The agent was not started: a process vigil does not own already runs its command.
    Conflict,
    /// The agent left the configuration.
    Removed,
    /// The advisor's second opinion on a failure, and what vigil did with it.
    Advice,
    /// The advisor could not be asked or gave no usable answer: the rules' verdict stands.
    LlmError,
    /// An action on an agent's processes could not be carried out (a signal refused, …).
    ActionFailed,
    /// An agent is held back because an agent it depends on is down: not started, or not
    /// restarted and its stall verdicts not counted, until that one is back.
    Waiting,
    /// The agent it waited for is back: it is started, or its checks start over.
    Resumed,
    /// A guarded file was invalid or missing, and was repaired before a start.
    FileRepaired,
    /// A state-changing API request was refused (missing or wrong token).
    ApiDenied,
    /// Several agents failed for one cause within a short time: one incident, handled once —
    /// their restarts are held while vigil probes the cause.
    IncidentOpened,
    /// The cause of an incident cleared: the held agents are restarted, spread out.
    IncidentResolved,
    /// An Alertmanager notification (a group of alerts) was received.
    AlertReceived,
    /// An alert was not acted on: about vigil itself, about something vigil does not manage,
    /// or its agent already has a runbook running. The reason says which.
    AlertRefused,
    /// A runbook started for an alert.
    RunbookStarted,
    /// One step of a runbook, with its outcome.
    RunbookStep,
    /// Every step of a runbook succeeded.
    RunbookSucceeded,
    /// A runbook step failed or the runbook timed out; what `on_failure` did follows.
    RunbookFailed,
    /// A runbook was called off (its alert resolved before it ran or while it waited).
    RunbookCancelled,
    /// People were told: a notification channel took one or more notifications.
    Notified,
    /// A notification could not be delivered and was given up (refused by its channel, or
    /// undeliverable for a day); it is kept in the outbox's `failed/`.
    NotifyFailed,
    /// An agent declared itself degraded (its stall verdicts may be suspended for a while).
    Degraded,
    /// A declared degradation ended: declared ok, its time ran out, or its bound was reached.
    DegradedEnded,
    /// This node took an exclusive agent's lease (a new fencing epoch): the agent may run here.
    LeaseAcquired,
    /// This node no longer holds an exclusive agent's lease: not renewed in time, taken by
    /// another node, or given up (a move, a removal).
    LeaseLost,
    /// An exclusive agent's run was stopped because its lease was lost, or is about to lapse:
    /// another node may run it next, and two copies must never run at once.
    Fenced,
    /// An exclusive agent is not run here for now: another node holds its lease, or this node
    /// may not take it (yet).
    Standby,
    /// vigil itself started, reloaded or stopped.
    VigilStart,
    VigilReload,
    VigilStop,
    /// vigil's supervision loop panicked; what it did next is in the reason.
    VigilCrash,
    /// vigil's supervision loop did not run for a while (vigil stopped, the machine
    /// overloaded): signs of life sent meanwhile may still be queued, so agents get grace.
    VigilStalled,
}

impl AuditAction {
    pub const ALL: &'static [AuditAction] = &[
        AuditAction::Start,
        AuditAction::Exit,
        AuditAction::Restart,
        AuditAction::Stop,
        AuditAction::Kill,
        AuditAction::Backoff,
        AuditAction::RateLimited,
        AuditAction::Escalated,
        AuditAction::Recovered,
        AuditAction::Reset,
        AuditAction::Check,
        AuditAction::Stalled,
        AuditAction::SpawnFailed,
        AuditAction::Adopted,
        AuditAction::Conflict,
        AuditAction::Removed,
        AuditAction::Advice,
        AuditAction::LlmError,
        AuditAction::ActionFailed,
        AuditAction::Waiting,
        AuditAction::Resumed,
        AuditAction::FileRepaired,
        AuditAction::ApiDenied,
        AuditAction::IncidentOpened,
        AuditAction::IncidentResolved,
        AuditAction::AlertReceived,
        AuditAction::AlertRefused,
        AuditAction::RunbookStarted,
        AuditAction::RunbookStep,
        AuditAction::RunbookSucceeded,
        AuditAction::RunbookFailed,
        AuditAction::RunbookCancelled,
        AuditAction::Notified,
        AuditAction::NotifyFailed,
        AuditAction::Degraded,
        AuditAction::DegradedEnded,
        AuditAction::LeaseAcquired,
        AuditAction::LeaseLost,
        AuditAction::Fenced,
        AuditAction::Standby,
        AuditAction::VigilStart,
        AuditAction::VigilReload,
        AuditAction::VigilStop,
        AuditAction::VigilCrash,
        AuditAction::VigilStalled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::Start => "start",
            AuditAction::Exit => "exit",
            AuditAction::Restart => "restart",
            AuditAction::Stop => "stop",
            AuditAction::Kill => "kill",
            AuditAction::Backoff => "backoff",
            AuditAction::RateLimited => "rate_limited",
            AuditAction::Escalated => "escalated",
            AuditAction::Recovered => "recovered",
            AuditAction::Reset => "reset",
            AuditAction::Check => "check",
            AuditAction::Stalled => "stalled",
            AuditAction::SpawnFailed => "spawn_failed",
            AuditAction::Adopted => "adopted",
            AuditAction::Conflict => "conflict",
            AuditAction::Removed => "removed",
            AuditAction::Advice => "advice",
            AuditAction::LlmError => "llm_error",
            AuditAction::ActionFailed => "action_failed",
            AuditAction::Waiting => "waiting",
            AuditAction::Resumed => "resumed",
            AuditAction::FileRepaired => "file_repaired",
            AuditAction::ApiDenied => "api_denied",
            AuditAction::IncidentOpened => "incident_opened",
            AuditAction::IncidentResolved => "incident_resolved",
            AuditAction::AlertReceived => "alert_received",
            AuditAction::AlertRefused => "alert_refused",
            AuditAction::RunbookStarted => "runbook_started",
            AuditAction::RunbookStep => "runbook_step",
            AuditAction::RunbookSucceeded => "runbook_succeeded",
            AuditAction::RunbookFailed => "runbook_failed",
            AuditAction::RunbookCancelled => "runbook_cancelled",
            AuditAction::Notified => "notified",
            AuditAction::NotifyFailed => "notify_failed",
            AuditAction::Degraded => "degraded",
            AuditAction::DegradedEnded => "degraded_ended",
            AuditAction::LeaseAcquired => "lease_acquired",
            AuditAction::LeaseLost => "lease_lost",
            AuditAction::Fenced => "fenced",
            AuditAction::Standby => "standby",
            AuditAction::VigilStart => "vigil_start",
            AuditAction::VigilReload => "vigil_reload",
            AuditAction::VigilStop => "vigil_stop",
            AuditAction::VigilCrash => "vigil_crash",
            AuditAction::VigilStalled => "vigil_stalled",
        }
    }

    pub fn from_name(s: &str) -> Option<AuditAction> {
        Self::ALL.iter().copied().find(|a| a.as_str() == s)
    }
}

/// One decision or fact for the journal. `ts` is added when it is written.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditEntry {
    /// `None` for records about vigil itself.
    pub agent: Option<String>,
    pub action: AuditAction,
    pub reason: String,
    pub success: bool,
    pub error: Option<String>,
    pub metadata: Map<String, Value>,
}

impl AuditEntry {
    pub fn new(agent: Option<&str>, action: AuditAction, reason: impl Into<String>) -> Self {
        Self {
            agent: agent.map(str::to_string),
            action,
            reason: reason.into(),
            success: true,
            error: None,
            metadata: Map::new(),
        }
    }

    pub fn failed(mut self, error: impl Into<String>) -> Self {
        self.success = false;
        self.error = Some(error.into());
        self
    }

    pub fn unsuccessful(mut self) -> Self {
        self.success = false;
        self
    }

    pub fn meta(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.metadata.insert(key.to_string(), value.into());
        self
    }
}
