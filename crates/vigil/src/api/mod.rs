//! The HTTP API, metrics and dashboard (axum, on the I/O runtime).
//!
//! The API never touches the supervisor: it reads the latest [`FleetView`] the loop
//! published (and derives its JSON itself, at most once a second per picture), follows the
//! audit records the loop broadcasts, and sends commands and heartbeats to the loop over a
//! bounded channel.

mod agents;
mod alertmanager;
mod auth;
mod error;
mod events;
mod guard;
mod handlers;
pub(crate) use handlers::parse_command;
mod serve;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use serde::Serialize;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use vigil_core::{Command, Requester};

use crate::casebook::Casebook;
use crate::config::ApiConfig;
use crate::health::Health;
use crate::metrics::{Live, Metrics};
use crate::view::{FleetView, Publisher, status_json};
pub use error::unknown_agent_message;

/// Why the loop took no command at all.
#[derive(Debug, thiserror::Error)]
pub enum CommandRefused {
    /// No agent or template by that name (the message suggests one).
    #[error("{0}")]
    UnknownAgent(String),
    /// A person's change that could not be recorded is not made (see the README's "When the
    /// journal cannot be written").
    #[error(
        "the audit journal {} cannot be written ({error}); vigil makes no change a person asks for \
         until it can record it (crashed agents are still restarted, and recorded once the journal \
         can be written)",
        path.display()
    )]
    JournalUnwritable { path: PathBuf, error: String },
}

/// What the API asks of the supervision loop.
pub enum ApiRequest {
    /// A command for an agent, or for every instance of a template.
    Command {
        target: String,
        command: Command,
        by: Requester,
        note: Option<String>,
        reply: oneshot::Sender<Result<Vec<CommandResult>, CommandRefused>>,
    },
    /// `POST /agents/NAME/heartbeat` (already checked against the snapshot).
    Heartbeat { agent: String },
    /// A refused request, to be journaled.
    Denied { what: String },
    /// `/health` asks whether the loop is turning: answered at once by a loop that is.
    Ping { reply: oneshot::Sender<()> },
    /// `POST /reload`: read the config again, as SIGHUP does; answered with what changed.
    Reload {
        by: Requester,
        reply: oneshot::Sender<Result<ReloadAnswer, CommandRefused>>,
    },
    /// `POST /alertmanager`: a notification from Alertmanager, parsed and checked; answered
    /// once journaled.
    Alerts {
        receiver: String,
        status: String,
        alerts: Vec<vigil_core::Alert>,
        reply: oneshot::Sender<Result<vigil_core::AlertAnswer, CommandRefused>>,
    },
    /// `POST /agents/NAME/status`: what an agent declares about itself.
    Status {
        agent: String,
        /// The run that declared it, when it used its own token (a person's speaks for the
        /// agent's current run).
        run: Option<vigil_core::RunId>,
        declared: vigil_core::Declared,
        reply: oneshot::Sender<Result<StatusAnswer, CommandRefused>>,
    },
    /// `POST /shutdown`: stop every agent and exit, as SIGTERM does.
    Shutdown {
        by: Requester,
        reply: oneshot::Sender<Result<usize, CommandRefused>>,
    },
}

/// What a reload did, or why it changed nothing.
#[derive(Clone, Debug, Serialize)]
pub struct ReloadAnswer {
    pub applied: bool,
    /// Why it was refused (the config's errors, with their places).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub restarted: Vec<String>,
    pub updated: Vec<String>,
    pub unchanged: usize,
}

impl ReloadAnswer {
    pub fn refused(error: String) -> Self {
        ReloadAnswer {
            applied: false,
            error: Some(error),
            added: Vec::new(),
            removed: Vec::new(),
            restarted: Vec::new(),
            updated: Vec::new(),
            unchanged: 0,
        }
    }

    pub fn of(report: &vigil_core::ReloadReport) -> Self {
        ReloadAnswer {
            applied: true,
            error: None,
            added: report.added.clone(),
            removed: report.removed.clone(),
            restarted: report.restarted.clone(),
            updated: report.updated.clone(),
            unchanged: report.unchanged,
        }
    }
}

/// What became of an agent's declaration (`POST /agents/NAME/status`).
#[derive(Clone, Debug, Serialize)]
pub struct StatusAnswer {
    pub agent: String,
    pub accepted: bool,
    pub state: &'static str,
    /// Stall verdicts are not acted on before this (RFC 3339).
    pub stall_checks_suspended_until: Option<String>,
    pub note: String,
}

impl StatusAnswer {
    pub fn of(agent: &str, answer: Option<vigil_core::DeclaredAnswer>) -> Self {
        let answer = answer.unwrap_or(vigil_core::DeclaredAnswer {
            accepted: false,
            state: "ok",
            suspended_until_ms: None,
            note: format!("{agent} is not configured"),
        });
        StatusAnswer {
            agent: agent.to_string(),
            accepted: answer.accepted,
            state: answer.state,
            stall_checks_suspended_until: answer.suspended_until_ms.map(crate::audit::format_ms),
            note: answer.note,
        }
    }
}

/// What agents themselves use: their runs' tokens and the checkpoint store.
#[derive(Clone, Default)]
pub struct AgentFacing {
    pub runs: crate::agent_token::LiveRuns,
    /// Set once the runs found at start are adopted (their tokens known again): before, a
    /// token vigil does not know may be a live run's, and is answered 503, not 401.
    pub adopted: Arc<std::sync::atomic::AtomicBool>,
    /// `None` when it could not be opened (checkpoints then answer 503).
    pub store: Option<Arc<crate::checkpoints::Store>>,
}

#[derive(Clone, Debug, Serialize)]
pub struct CommandResult {
    pub agent: String,
    pub ok: bool,
    pub outcome: String,
}

/// Agents with a heartbeat queued for the loop: more heartbeats before the loop takes it add
/// nothing (it is taken after they arrived), so they are not queued. The loop removes an agent
/// when it takes its heartbeat.
pub type PendingHeartbeats = Arc<Mutex<HashSet<String>>>;

/// `/status`'s JSON, derived from one picture: reused until the picture changes or a second
/// has passed (ages and uptimes move even when nothing else does).
#[derive(Default)]
pub struct StatusCache {
    version: u64,
    built: Option<Instant>,
    body: axum::body::Bytes,
}

/// How stale a cached `/status` may be.
const STATUS_MAX_AGE: Duration = Duration::from_secs(1);

/// Shared by the loop (which writes) and the API (which reads).
pub struct Hub {
    pub view: watch::Receiver<Arc<FleetView>>,
    /// With `[cluster]`: the whole fleet, from the cluster's database (`/fleet`).
    pub fleet: Option<crate::cluster::fleet_view::FleetReader>,
    pub status: Mutex<StatusCache>,
    /// Audit records as JSON lines, for live feeds.
    pub audit: broadcast::Sender<Arc<str>>,
    pub requests: mpsc::Sender<ApiRequest>,
    pub token: Option<String>,
    /// What `POST /alertmanager` requires (`[alertmanager] token_file`).
    pub alert_token: Option<String>,
    /// The names requests may carry in `Host`.
    pub hosts: guard::Hosts,
    pub journal: PathBuf,
    pub started: Instant,
    pub health: Arc<Health>,
    pub metrics: Metrics,
    /// Refused requests are journaled at most once a second (and counted meanwhile).
    pub denied: Mutex<(Option<Instant>, u64)>,
    pub pending_heartbeats: PendingHeartbeats,
    pub casebook: Casebook,
    /// Live runs' tokens (`VIGIL_AGENT_TOKEN`).
    pub runs: crate::agent_token::LiveRuns,
    pub adopted: Arc<std::sync::atomic::AtomicBool>,
    pub store: Option<Arc<crate::checkpoints::Store>>,
}

impl Hub {
    /// Each agent's latest checkpoint, as the store knows it.
    pub fn checkpoints(&self) -> crate::view::CheckpointIndex {
        self.store.as_ref().map(|s| s.index()).unwrap_or_default()
    }

    /// The fleet's status JSON as of now (give or take a second).
    pub fn status_body(&self) -> axum::body::Bytes {
        let view = self.view.borrow().clone();
        let mut cache = self.status.lock().unwrap_or_else(|e| e.into_inner());
        let fresh = cache.version == view.version
            && cache.built.is_some_and(|t| t.elapsed() < STATUS_MAX_AGE);
        if !fresh {
            cache.body =
                status_json(&view, crate::clock::now().wall_ms, &self.checkpoints()).into();
            cache.version = view.version;
            cache.built = Some(Instant::now());
        }
        cache.body.clone()
    }
}

/// Largest request body accepted (commands take at most a short JSON reason).
const BODY_LIMIT: usize = 16 * 1024;

pub fn router(hub: Arc<Hub>) -> Router {
    Router::new()
        .route("/", get(handlers::dashboard))
        .route("/health", get(handlers::health))
        .route("/status", get(handlers::status_all))
        .route("/status/{name}", get(handlers::status_one))
        .route("/audit", get(handlers::audit))
        .route("/incidents", get(handlers::incidents))
        .route("/fleet", get(handlers::fleet))
        .route("/runbooks", get(handlers::runbooks))
        .route(
            "/alertmanager",
            post(alertmanager::receive).layer(DefaultBodyLimit::max(alertmanager::BODY_LIMIT)),
        )
        .route("/events", get(events::events))
        .route("/metrics", get(handlers::metrics))
        .route("/agents/{name}/explain", get(handlers::explain))
        .route(
            "/agents/{name}/checkpoint",
            // The handler reads the body itself (up to 1 MiB), after the token is checked.
            get(agents::get_checkpoint).put(agents::put_checkpoint),
        )
        .route(
            "/agents/{name}/checkpoints",
            get(agents::checkpoint_history),
        )
        .route("/agents/{name}/status", post(agents::post_status))
        .route("/agents/{name}/{command}", post(handlers::command))
        .route("/reload", post(handlers::reload))
        .route("/shutdown", post(handlers::shutdown))
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn(serve::body_in_time))
        // Before the body is read: a request without Alertmanager's token costs nothing.
        .layer(axum::middleware::from_fn_with_state(
            hub.clone(),
            alertmanager::token_first,
        ))
        .layer(axum::middleware::from_fn_with_state(
            hub.clone(),
            guard::guard,
        ))
        .with_state(hub)
}

/// How many requests may wait for the loop (heartbeats arrive in bursts).
const QUEUE: usize = 8192;

/// What the loop keeps of a started API.
pub struct Started {
    pub publisher: Publisher,
    pub requests: mpsc::Receiver<ApiRequest>,
    pub live: Live,
    /// The last failure of each agent, for `vigil explain`.
    pub casebook: Casebook,
    /// Where it listens (the real port when the config asked for port 0).
    pub addr: Option<SocketAddr>,
    pub pending_heartbeats: PendingHeartbeats,
    /// Another way in for people's commands (from other hosts of a cluster); none without an
    /// API.
    pub commands: Option<mpsc::Sender<ApiRequest>>,
}

/// The file the CLI reads to find a running vigil's API.
pub fn addr_file(state_dir: &Path) -> PathBuf {
    state_dir.join("api.addr")
}

/// Tell the CLI where this vigil's API listens (again, after the state dir was deleted).
pub fn write_addr_file(state_dir: &Path, addr: SocketAddr) -> std::io::Result<()> {
    std::fs::write(addr_file(state_dir), addr.to_string())
}

/// Why the API could not start (vigil does not start without the API it was asked for).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "cannot listen on {addr} for the HTTP API ([api] listen): {source}; is another vigil or \
         program using it? Choose another address, or set [api] enabled = false"
    )]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot write {}: {source}", path.display())]
    AddrFile {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Bind the listener (failing loudly: a vigil nobody can see is worse than none) and serve
/// it on the I/O runtime.
pub fn start(
    config: &ApiConfig,
    state_dir: &Path,
    node: &str,
    io: &tokio::runtime::Handle,
    health: Arc<Health>,
    agents: AgentFacing,
    fleet: Option<crate::cluster::fleet_view::FleetReader>,
) -> Result<Started, StartError> {
    let live = Live::default();
    let casebook = Casebook::default();
    let (requests_tx, requests) = mpsc::channel(QUEUE);
    let _ = std::fs::remove_file(addr_file(state_dir));
    if !config.enabled {
        // Nobody can send requests: the loop sees a closed channel and stops listening to it.
        drop(requests_tx);
        return Ok(Started {
            publisher: Publisher::disabled(),
            requests,
            live,
            casebook,
            addr: None,
            pending_heartbeats: PendingHeartbeats::default(),
            commands: None,
        });
    }
    let (view_tx, view_rx) = watch::channel(Arc::new(FleetView::empty()));
    let (audit_tx, _) = broadcast::channel(1024);
    let listen = |source| StartError::Listen {
        addr: config.listen,
        source,
    };
    let listener = std::net::TcpListener::bind(config.listen).map_err(listen)?;
    listener.set_nonblocking(true).map_err(listen)?;
    let addr = listener.local_addr().map_err(listen)?;
    let listener = {
        let _entered = io.enter();
        tokio::net::TcpListener::from_std(listener).map_err(listen)?
    };
    write_addr_file(state_dir, addr).map_err(|source| StartError::AddrFile {
        path: addr_file(state_dir),
        source,
    })?;
    let hub = Arc::new(Hub {
        metrics: Metrics::new(view_rx.clone(), &live, health.clone(), node),
        view: view_rx,
        fleet,
        status: Mutex::default(),
        audit: audit_tx.clone(),
        requests: requests_tx.clone(),
        token: config.token.clone(),
        alert_token: config.alert_token.clone(),
        hosts: guard::Hosts::new(&config.hosts),
        journal: state_dir.join("audit.jsonl"),
        started: Instant::now(),
        health,
        denied: Mutex::new((None, 0)),
        pending_heartbeats: PendingHeartbeats::default(),
        casebook: casebook.clone(),
        runs: agents.runs,
        adopted: agents.adopted,
        store: agents.store,
    });
    let pending_heartbeats = hub.pending_heartbeats.clone();
    let max_connections = config
        .max_connections
        .unwrap_or_else(serve::default_max_connections);
    io.spawn(serve::serve(listener, router(hub), max_connections));
    Ok(Started {
        publisher: Publisher::new(view_tx, audit_tx),
        requests,
        live,
        casebook,
        addr: Some(addr),
        pending_heartbeats,
        commands: Some(requests_tx),
    })
}
