//! The HTTP API, metrics and dashboard (axum, on the I/O runtime).
//!
//! The API never touches the supervisor: it reads the latest [`Snapshot`] the loop
//! published, follows the audit records the loop broadcasts, and sends commands and
//! heartbeats to the loop over a bounded channel.

mod auth;
mod error;
mod events;
mod handlers;
mod publisher;
pub mod snapshot;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicI64;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use serde::Serialize;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use vigil_core::{Command, Requester};

use anyhow::Context;

use crate::casebook::Casebook;
use crate::config::ApiConfig;
use crate::metrics::{Live, Metrics};
pub use error::unknown_agent_message;
pub use publisher::{PUBLISH_DIRTY, Publisher};
pub use snapshot::{Counters, Snapshot};

/// What the API asks of the supervision loop.
pub enum ApiRequest {
    /// A command for an agent, or for every instance of a template.
    Command {
        target: String,
        command: Command,
        by: Requester,
        note: Option<String>,
        reply: oneshot::Sender<Result<Vec<CommandResult>, String>>,
    },
    /// `POST /agents/NAME/heartbeat` (already checked against the snapshot).
    Heartbeat { agent: String },
    /// A refused request, to be journaled.
    Denied { what: String },
}

#[derive(Clone, Debug, Serialize)]
pub struct CommandResult {
    pub agent: String,
    pub ok: bool,
    pub outcome: String,
}

/// Shared by the loop (which writes) and the API (which reads).
pub struct Hub {
    pub snapshot: watch::Receiver<Arc<Snapshot>>,
    /// Audit records as JSON lines, for live feeds.
    pub audit: broadcast::Sender<Arc<str>>,
    pub requests: mpsc::Sender<ApiRequest>,
    pub token: Option<String>,
    pub journal: PathBuf,
    pub started: Instant,
    /// Wall-clock ms of the loop's last turn: a wedged loop shows in `/health`.
    pub loop_beat_ms: AtomicI64,
    pub metrics: Metrics,
    /// Refused requests are journaled at most once a second (and counted meanwhile).
    pub denied: Mutex<(Option<Instant>, u64)>,
    /// Agents with a heartbeat queued for the loop: more heartbeats before the loop takes
    /// it add nothing (it is taken after they arrived), so they are not queued.
    pub pending_heartbeats: Mutex<HashSet<String>>,
    pub casebook: Casebook,
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
        .route("/events", get(events::events))
        .route("/metrics", get(handlers::metrics))
        .route("/agents/{name}/explain", get(handlers::explain))
        .route("/agents/{name}/{command}", post(handlers::command))
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(hub)
}

/// Serve until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, hub: Arc<Hub>) {
    let app = router(hub).into_make_service_with_connect_info::<SocketAddr>();
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!("the HTTP API stopped: {e}");
    }
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
}

/// The file the CLI reads to find a running vigil's API.
pub fn addr_file(state_dir: &Path) -> PathBuf {
    state_dir.join("api.addr")
}

/// Bind the listener (failing loudly: a vigil nobody can see is worse than none) and serve
/// it on the I/O runtime.
pub fn start(
    config: &ApiConfig,
    state_dir: &Path,
    io: &tokio::runtime::Handle,
) -> anyhow::Result<Started> {
    let live = Live::default();
    let casebook = Casebook::default();
    let (snapshot_tx, snapshot_rx) = watch::channel(Arc::new(Snapshot::empty()));
    let (audit_tx, _) = broadcast::channel(1024);
    let (requests_tx, requests) = mpsc::channel(QUEUE);
    let _ = std::fs::remove_file(addr_file(state_dir));
    if !config.enabled {
        return Ok(Started {
            publisher: Publisher::new(snapshot_tx, audit_tx, None),
            requests,
            live,
            casebook,
            addr: None,
        });
    }
    let listener = std::net::TcpListener::bind(config.listen).with_context(|| {
        format!(
            "cannot listen on {} for the HTTP API ([api] listen): is another vigil or program using it? \
             Choose another address, or set [api] enabled = false",
            config.listen
        )
    })?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    std::fs::write(addr_file(state_dir), addr.to_string())
        .with_context(|| format!("cannot write {}", addr_file(state_dir).display()))?;
    let hub = Arc::new(Hub {
        metrics: Metrics::new(snapshot_rx.clone(), &live),
        snapshot: snapshot_rx,
        audit: audit_tx.clone(),
        requests: requests_tx,
        token: config.token.clone(),
        journal: state_dir.join("audit.jsonl"),
        started: Instant::now(),
        loop_beat_ms: AtomicI64::new(crate::runtime::now().wall_ms),
        denied: Mutex::new((None, 0)),
        pending_heartbeats: Mutex::new(HashSet::new()),
        casebook: casebook.clone(),
    });
    let listener = {
        let _entered = io.enter();
        tokio::net::TcpListener::from_std(listener)?
    };
    io.spawn(serve(listener, hub.clone()));
    Ok(Started {
        publisher: Publisher::new(snapshot_tx, audit_tx, Some(hub)),
        requests,
        live,
        casebook,
        addr: Some(addr),
    })
}
