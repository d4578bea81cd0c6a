//! vigil's decision core.
//!
//! Pure logic, no IO, no clock: inputs are [`Event`]s, [`Command`]s and the passing of time
//! (`now` is always an argument); outputs are [`Action`]s polled with
//! [`Supervisor::poll_action`] and one deadline from [`Supervisor::poll_timeout`].
//! The daemon (`crates/vigil`) turns the world into events and actions into syscalls.

pub mod action;
pub mod advice;
pub mod agent;
pub mod audit;
pub mod budget;
pub mod checks;
pub mod diagnosis;
pub mod event;
pub mod fnv;
pub mod graph;
pub mod incident;
pub mod policy;
pub mod quiet;
pub mod records;
pub mod runbook;
pub mod signal;
pub mod spec;
pub mod supervisor;
pub mod time;

pub use action::Action;
pub use advice::{AdvisorSpec, FailureReport, Judgement};
pub use agent::{
    Agent, AgentMemory, AgentState, CommandError, CommandOutcome, Declared, DeclaredAnswer,
    LastExit, SavedDegradation,
};
pub use audit::{AuditAction, AuditEntry};
pub use checks::{CheckKind, CheckSpec, CheckStatus, NotifyMessage, Observation, Verdict};
pub use diagnosis::{Category, Diagnosis, FailureCause, Remedy, Rule, Rules, Severity, Source};
pub use event::{
    AgentId, Command, Event, ExitStatus, FailedAction, FileRepair, FilesVerdict, LeaseNews,
    Outside, Requester, RunId, SpawnErrorKind, SpawnFailure,
};
pub use graph::{Dependency, Level, OnUpstreamRestart, Ready};
pub use incident::{Cause, Incident, IncidentPolicy};
pub use policy::{OnExhausted, RestartDecision, RestartMode, RestartPolicy, Wait};
pub use quiet::{Quiet, QuietWindow};
pub use runbook::{Alert, AlertAnswer, AlertPolicy, RunbookSpec};
pub use signal::Signal;
pub use spec::{AgentSpec, Exclusive};
pub use supervisor::{Changes, ReloadReport, Supervisor};
pub use time::{Now, human_duration};
