//! The daemon. Laid out in the order data flows:
//!
//! - `event_loop`: the one `select!`, turning sources (pidfd exits, signals, timers, the API,
//!   the I/O threads) into inputs;
//! - `handler`: synchronous; feeds inputs to the core (`vigil-core` decides everything),
//!   journals each batch of decisions before it is carried out, passes changes on;
//! - `executor`: carries out actions and reports their outcomes as events;
//! - `fleet`: what the edges know of each agent (config, log, current run);
//! - `offload`: persistence, log rotation and config reading, off the loop's thread;
//! - this file: starting up (lock, journal, state, adoption) and shutting down.

mod event_loop;
mod executor;
mod fleet;
mod handler;
mod offload;

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tracing::{info, warn};
use vigil_core::{AgentMemory, Now, Signal, Supervisor, records};

use crate::advisor::Advisor;
use crate::api;
use crate::audit::Journal;
use crate::checks::CheckRunner;
use crate::checks::notify::{self, Senders};
use crate::config::{AgentConfig, Config};
use crate::driver::{Children, ProcessDriver};
use crate::health::Health;
use crate::metrics::Live;
use crate::state::{SavedAgent, SavedState, StateStore};
use executor::{Executor, ExecutorParts};
use fleet::RunRecord;
use handler::Handler;
use offload::Offload;

pub struct RunOptions {
    pub config: Config,
    pub state_dir_override: Option<PathBuf>,
    /// Where probes, and anything else that may block or take long, run.
    pub io: tokio::runtime::Handle,
}

/// Why vigil could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot create state dir {}: {source}", path.display())]
    StateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open {}: {source}", path.display())]
    LockFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("another vigil (pid {pid}) is already running with state dir {}", dir.display())]
    Locked { pid: String, dir: PathBuf },
    #[error("cannot watch signals: {0}")]
    Signals(std::io::Error),
    #[error(transparent)]
    Api(#[from] api::StartError),
    #[error("cannot start the offload worker thread: {0}")]
    Worker(std::io::Error),
}

pub fn make_advisor(config: &Config, live: &Live) -> Option<Arc<Advisor>> {
    let llm = config.diagnosis.llm.clone()?;
    info!(
        "LLM advisor: {} model {} at {} (it can only make decisions stricter)",
        llm.provider.as_str(),
        llm.model,
        llm.url
    );
    Some(Arc::new(Advisor::new(llm, live.clone())))
}

/// Exclusive use of a state dir: two vigils on one state dir would start every agent twice.
struct StateLock {
    _file: File,
}

impl StateLock {
    fn acquire(state_dir: &Path) -> Result<StateLock, StartError> {
        let path = state_dir.join("vigil.pid");
        let lock_file = |source| StartError::LockFile {
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(lock_file)?;
        if rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
            let other = fs::read_to_string(&path).unwrap_or_default();
            return Err(StartError::Locked {
                pid: other.trim().to_string(),
                dir: state_dir.to_path_buf(),
            });
        }
        file.set_len(0).map_err(lock_file)?;
        write!(file, "{}", std::process::id()).map_err(lock_file)?;
        Ok(StateLock { _file: file })
    }
}

pub async fn run(opts: RunOptions) -> Result<(), StartError> {
    let config = opts.config;
    let state_dir = config.state_dir.clone();
    fs::create_dir_all(config.logs_dir()).map_err(|source| StartError::StateDir {
        path: state_dir.clone(),
        source,
    })?;
    let _lock = StateLock::acquire(&state_dir)?;
    if let Err(e) = ProcessDriver::become_subreaper() {
        warn!("cannot become a child subreaper ({e}); orphans of agents will escape to init");
    }
    // Registered before the first spawn so no exit is missed.
    let sig = |kind| signal(kind).map_err(StartError::Signals);
    let (sigchld, sigterm, sigint, sighup) = (
        sig(SignalKind::child())?,
        sig(SignalKind::terminate())?,
        sig(SignalKind::interrupt())?,
        sig(SignalKind::hangup())?,
    );

    let (journal, problem) = Journal::open(&state_dir.join("audit.jsonl"));
    if let Some(w) = problem {
        warn!("{w}");
    }
    let health = Arc::new(Health::new(journal.health()));
    let (store, problems) = StateStore::open(&state_dir);
    for w in problems {
        warn!("{w}");
    }
    let saved = store.state().clone();
    let (done_tx, done_rx) = mpsc::unbounded_channel();
    let offload = Offload::start(store, health.clone(), done_tx).map_err(StartError::Worker)?;

    let api = api::start(&config.api, &state_dir, &opts.io, health.clone())?;
    if let Some(addr) = api.addr {
        info!("HTTP API, metrics and dashboard on http://{addr}/");
    }

    // Facts from the other threads: check results, evidence, advice, tree watches.
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let notify_senders = Senders::default();
    let (notify_tx, notify_rx) = mpsc::channel(8192);
    let notify_socket = match notify::listen(
        &state_dir,
        notify_senders.clone(),
        notify_tx,
        api.live.clone(),
    ) {
        Ok(addr) => Some(addr),
        Err(e) => {
            warn!("cannot open the notify socket ({e}); notify checks will see no heartbeats");
            health
                .notify_down
                .store(true, std::sync::atomic::Ordering::Relaxed);
            None
        }
    };
    let children = Children::default();
    let driver = ProcessDriver::new(children.clone());
    let checks = CheckRunner::new(
        opts.io.clone(),
        events_tx.clone(),
        children.clone(),
        api.live.clone(),
    );
    let now = crate::clock::now();
    let exec = Executor::new(
        ExecutorParts {
            driver: driver.clone(),
            children,
            checks,
            io: opts.io.clone(),
            events: events_tx,
            advisor: make_advisor(&config, &api.live),
            casebook: api.casebook,
            metrics: api.live,
            notify_senders,
            notify_socket: notify_socket.clone(),
            log_lines: config.diagnosis.log_lines,
        },
        now.wall_ms,
    );
    let mut h = Handler::new(
        Supervisor::new(driver.self_pid()),
        exec,
        journal,
        api.publisher,
        offload,
        health,
        api.pending_heartbeats,
        config,
        opts.state_dir_override,
    );
    start(&mut h, &saved, now);
    // Ready once every agent has been started or adopted (the first batch is carried out).
    let watchdog = h.systemd.as_ref().and_then(|sd| sd.ping_every());
    if let Some(sd) = &h.systemd {
        sd.notify(&format!(
            "READY=1\nSTATUS=supervising {} agents",
            h.config.agents.len()
        ));
        sd.notify("WATCHDOG=1");
    }
    let sources = event_loop::Sources {
        exits: Default::default(),
        events: events_rx,
        notify: notify_socket.map(|_| notify_rx),
        api: api.requests,
        offload: done_rx,
        sigchld,
        sigterm,
        sigint,
        sighup,
        watchdog,
    };
    event_loop::run(&mut h, sources).await;

    let _ = fs::remove_file(api::addr_file(&state_dir));
    h.write(&[&records::vigil_stop()]);
    let now = crate::clock::now();
    h.settle(now);
    h.offload.flush();
    info!("all agents stopped; bye");
    Ok(())
}

/// Register the configured agents, take over the runs a previous vigil left (and stop those
/// of agents no longer configured), then start the rest.
fn start(h: &mut Handler, saved: &SavedState, now: Now) {
    let logs_dir = h.config.logs_dir();
    for agent in h.config.agents.clone() {
        let memory = saved.get(&agent.name).map(|s| memory_of(s, now));
        let id = h.sup.add(agent.spec(), memory);
        h.fleet.insert(id, agent, &logs_dir);
    }
    let alive: Vec<(&String, &crate::state::SavedRun)> = saved
        .iter()
        .filter_map(|(name, s)| s.run.as_ref().map(|r| (name, r)))
        .filter(|(_, r)| ProcessDriver::same_process(r.pid, r.start_time))
        .collect();
    h.write(&[&records::vigil_start(
        env!("CARGO_PKG_VERSION"),
        h.config.agents.len(),
        &h.config.path.display().to_string(),
        h.exec.driver.self_pid(),
        alive.len(),
    )]);
    for (name, run) in alive {
        let since = now.mono_of(run.started_ms).unwrap_or(now.mono);
        let adopted = match h.sup.id(name) {
            Some(id) => h.sup.adopt(now, id, run.pid, since).map(|r| (id, r)),
            None => {
                warn!(
                    "{name} (pid {}) is still running but no longer in the configuration; stopping it",
                    run.pid
                );
                let stop_signal = run
                    .stop_signal
                    .as_deref()
                    .and_then(Signal::from_name)
                    .unwrap_or(Signal::TERM);
                let stop_timeout = run
                    .stop_timeout_ms
                    .map_or(Duration::from_secs(10), Duration::from_millis);
                let config = AgentConfig::stray(name, stop_signal, stop_timeout);
                let adopted = h.sup.adopt_stray(now, config.spec(), run.pid, since);
                if let Some((id, _)) = adopted {
                    h.fleet.insert(id, config, &logs_dir);
                }
                adopted
            }
        };
        let Some((id, run_id)) = adopted else {
            continue;
        };
        let notify = h.fleet.get(id).is_some_and(|s| s.config.uses_notify());
        if let Some(slot) = h.fleet.get_mut(id) {
            slot.run = Some(RunRecord {
                id: run_id,
                saved: run.clone(),
            });
        }
        h.exec.watch_exit(id, run_id, run.pid, notify);
    }
    info!(
        "supervising {} agents from {} (state dir {})",
        h.config.agents.len(),
        h.config.path.display(),
        h.config.state_dir.display()
    );
    h.sup.start_all(now);
    h.settle(now);
    // Readers see every agent before anyone can read that vigil has started.
    h.publisher.publish(&h.sup, now);
    h.offload.logs(h.log_files());
}

fn memory_of(saved: &SavedAgent, now: Now) -> AgentMemory {
    AgentMemory {
        restarts: saved
            .restarts_ms
            .iter()
            .filter_map(|ms| now.mono_of(*ms))
            .collect(),
        total_restarts: saved.total_restarts,
        held: saved.held,
        quarantined: saved.quarantined.clone(),
        crash_streak: saved.crash_streak,
        escalated: saved.escalated,
    }
}
