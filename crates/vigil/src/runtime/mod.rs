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
mod files_worker;
mod fleet;
mod handler;
mod keeper;
mod look_worker;
mod offload;
mod rotation;
mod runbook_exec;

use std::collections::HashSet;
use std::fs;
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
use crate::driver::cgroup::Cgroups;
use crate::driver::children::main_thread_children;
use crate::driver::process::{RUN_TAG_VAR, STATE_DIR_VAR};
use crate::driver::{Children, ProcessDriver, proctree};
use crate::health::Health;
use crate::metrics::Live;
use crate::state::{SavedAgent, SavedRun, SavedState, StateStore};
use crate::state_lock::{Holder, StateLock};
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
    #[error(transparent)]
    Lock(#[from] crate::state_lock::LockError),
    #[error("cannot watch signals: {0}")]
    Signals(std::io::Error),
    #[error(transparent)]
    Api(#[from] api::StartError),
    #[error("cannot start the offload and log rotation threads: {0}")]
    Worker(std::io::Error),
    #[error("cannot watch agents' exits (epoll): {0}")]
    Exits(std::io::Error),
}

/// `[alertmanager]`'s policy, with what names vigil itself among agents' targets.
pub fn alert_policy(config: &Config) -> vigil_core::AlertPolicy {
    let mut policy = config
        .alertmanager
        .as_ref()
        .map(|a| a.policy.clone())
        .unwrap_or_default();
    policy.self_targets = crate::driver::units::own_unit()
        .map(|u| vec![format!("unit {u}")])
        .unwrap_or_default();
    policy
}

/// The cluster task, with `[cluster]`: after the agents are known (and their runs adopted),
/// so it can name them to the core.
fn start_cluster(
    h: &mut Handler,
    marks_dir: &str,
    commands: Option<mpsc::Sender<api::ApiRequest>>,
    io: &tokio::runtime::Handle,
) {
    let Some(cluster) = h.config.cluster.clone() else {
        return;
    };
    remembered_leases(h, marks_dir);
    let candidates =
        crate::cluster::candidates(&cluster.node, h.fleet.slots().map(|s| &*s.config), |name| {
            h.sup.id(name)
        });
    match crate::cluster::start(
        &cluster,
        Path::new(marks_dir),
        candidates,
        crate::cluster::Links {
            events: h.exec.events.clone(),
            health: &h.health,
            view: h.publisher.subscribe(),
            commands,
        },
        io,
    ) {
        Ok(c) => {
            h.health
                .clustered
                .store(true, std::sync::atomic::Ordering::Relaxed);
            h.exec.cluster = Some(c);
        }
        // The URL was checked when the config was read: this is not expected. Exclusive agents
        // then never get a lease here, and stay on standby, on the record.
        Err(e) => warn!("cannot start the cluster ({e}); exclusive agents stay on standby"),
    }
}

/// Runs adopted as vigil started may go on only as long as the lease they started under was
/// known valid when the last vigil wrote it down — not a moment longer without the cluster's
/// word (a vigil killed during a database outage comes back to a lapsed lease).
fn remembered_leases(h: &mut Handler, marks_dir: &str) {
    let now = crate::clock::now();
    let mut news = Vec::new();
    for agent in h.sup.agents() {
        let Some(exclusive) = agent.spec().exclusive else {
            continue;
        };
        if agent.run().is_none() {
            continue;
        }
        let left = agent.run_fence().and_then(|epoch| {
            crate::cluster::remembered(Path::new(marks_dir), agent.name(), epoch)
                .map(|left| (epoch, left))
        });
        news.push(vigil_core::Event::Lease {
            agent: agent.id(),
            news: match left {
                // The file's deadline is where the stop must begin: the lease is that plus
                // the stop and its margin.
                Some((epoch, left)) => vigil_core::LeaseNews::Held {
                    epoch,
                    valid_until: now.mono + left + agent.spec().stop_timeout + exclusive.margin,
                },
                None => vigil_core::LeaseNews::Refused {
                    why: "its lease was not known valid any more when vigil started (its lease file says so)".into(),
                },
            },
        });
    }
    if !news.is_empty() {
        h.turn(now, handler::Input::Events(news));
    }
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

/// The checkpoint store (reached at once in the background, so a broken one is reported at
/// start) and the registry of live runs' tokens.
fn agent_facing(
    config: &Config,
    state_dir: &Path,
    io: &tokio::runtime::Handle,
) -> api::AgentFacing {
    let store = match crate::checkpoints::Store::open(&config.store, state_dir) {
        Ok(store) => Some(Arc::new(store)),
        Err(e) => {
            warn!("cannot open the checkpoint store ({e}); checkpoints are refused (503)");
            None
        }
    };
    if let Some(store) = store.clone().filter(|s| s.in_use(state_dir)) {
        io.spawn(async move {
            match store.warm_up().await {
                Ok(()) => info!("checkpoints are kept in {}", store.place),
                Err(e) => {
                    warn!("{e}; agents' checkpoints wait for it (their clients keep local copies)")
                }
            }
        });
    }
    api::AgentFacing {
        runs: Default::default(),
        adopted: Default::default(),
        store,
    }
}

pub async fn run(opts: RunOptions) -> Result<(), StartError> {
    let config = opts.config;
    let state_dir = config.state_dir.clone();
    // Before anything in the state dir is touched.
    let lock = StateLock::acquire(&state_dir, Holder::Run)?;
    fs::create_dir_all(config.logs_dir()).map_err(|source| StartError::StateDir {
        path: state_dir.clone(),
        source,
    })?;
    // Every run carries this as its mark: canonical, so that any path to the dir matches.
    let marks_dir = lock.canonical().to_string_lossy().into_owned();
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

    let agent_facing = agent_facing(&config, &state_dir, &opts.io);
    let api = api::start(
        &config.api,
        &state_dir,
        &config.node,
        &opts.io,
        health.clone(),
        agent_facing.clone(),
        config
            .cluster
            .as_ref()
            .and_then(|c| crate::cluster::fleet_view::FleetReader::new(c, &opts.io)),
    )?;
    let fleet_commands = api.commands.clone();
    let token_key = match crate::agent_token::TokenKey::load_or_create(&state_dir) {
        Ok(key) => key,
        Err(e) => {
            warn!(
                "cannot keep the agent token key in the state dir ({e}); agents' tokens will not survive a restart of vigil"
            );
            crate::agent_token::TokenKey::ephemeral()
        }
    };
    if let Some(addr) = api.addr {
        info!("HTTP API, metrics and dashboard on http://{addr}/");
    }

    // Facts from the other threads: check results, evidence, advice, tree watches.
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let notify_senders = Senders::default();
    let (notify_tx, notify_rx) = mpsc::channel(8192);
    let mut notify_listener = match notify::listen(
        lock.canonical(),
        notify_senders.clone(),
        notify_tx,
        api.live.clone(),
    ) {
        Ok(listener) => Some(listener),
        Err(e) => {
            warn!("cannot open the notify socket ({e}); notify checks will see no heartbeats");
            health
                .notify_down
                .store(true, std::sync::atomic::Ordering::Relaxed);
            None
        }
    };
    let notify_socket = notify_listener.as_ref().map(|l| l.address.clone());
    let api_addr = api.addr;
    let restore: keeper::Restore = Box::new({
        let state_dir = state_dir.clone();
        move || {
            crate::state_lock::write_pid_file(&state_dir);
            if let Some(addr) = api_addr {
                let _ = api::write_addr_file(&state_dir, addr);
            }
            if let Some(Err(e)) = notify_listener.as_mut().map(|l| l.rebind()) {
                warn!(
                    "cannot bind the notify socket again ({e}); notify checks will see no heartbeats"
                );
            }
        }
    });
    keeper::start(
        &state_dir,
        &config.logs_dir(),
        offload.watched_logs(),
        restore,
    )
    .map_err(StartError::Worker)?;
    let children = Children::default();
    let cgroups = match Cgroups::detect(&crate::state_lock::dir_hash(lock.canonical())) {
        Ok(cg) => {
            info!(
                "each run gets a cgroup of its own under {}",
                cg.base().display()
            );
            Some(cg)
        }
        Err(e) => {
            warn!(
                "runs get no cgroups ({e}): an agent's processes are known by process group, session and marks only"
            );
            None
        }
    };
    health
        .runs_in_cgroups
        .store(cgroups.is_some(), std::sync::atomic::Ordering::Relaxed);
    let driver = ProcessDriver::new(children.clone()).with_cgroups(cgroups);
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
            credentials: crate::runtime::executor::Credentials {
                key: Arc::new(token_key),
                runs: agent_facing.runs,
                api_url: api.addr.map(|a| {
                    let ip = if a.ip().is_unspecified() {
                        std::net::IpAddr::from([127, 0, 0, 1])
                    } else {
                        a.ip()
                    };
                    format!("http://{}", std::net::SocketAddr::new(ip, a.port()))
                }),
            },
            log_lines: config.diagnosis.log_lines,
            marks_dir: marks_dir.clone(),
        },
        now.wall_ms,
    )
    .map_err(StartError::Exits)?;
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
    h.sup.set_incident_policy(h.config.incidents.clone());
    h.sup
        .set_runbooks(h.config.runbooks.clone(), alert_policy(&h.config));
    let (records_tx, records_rx) = mpsc::unbounded_channel();
    h.records = Some(records_tx);
    h.start_notifier();
    start(
        &mut h,
        &saved,
        &marks_dir,
        now,
        crate::crash::resumes_shutdown(),
    );
    start_cluster(&mut h, &marks_dir, fleet_commands, &opts.io);
    agent_facing
        .adopted
        .store(true, std::sync::atomic::Ordering::Release);
    crate::memory::release_free();
    // Ready once every agent has been started or adopted (the first batch is carried out).
    let watchdog = h.systemd.as_ref().and_then(|sd| sd.ping_every());
    if let Some(sd) = &h.systemd {
        sd.notify(&format!(
            "READY=1\nSTATUS=supervising {} agents",
            h.sup.agents().count()
        ));
        sd.notify("WATCHDOG=1");
    }
    let sources = event_loop::Sources {
        events: events_rx,
        notify: notify_socket.map(|_| notify_rx),
        api: api.requests,
        offload: done_rx,
        records: records_rx,
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
    if let Some(cg) = h.exec.driver.cgroups() {
        cg.finish_removals();
        cg.sweep();
    }
    info!("all agents stopped; bye");
    Ok(())
}

/// A run found alive at startup: from `state.jsonl`, or by its marks (`VIGIL_STATE_DIR` and
/// its `VIGIL_RUN` tag) — a run spawned just before a `kill -9` of the last vigil, or a
/// panic, is known to no state file, but carries its marks wherever it was reparented.
struct Found {
    agent: String,
    run: SavedRun,
    /// Still vigil's child: its exit is collected by its owner, not the orphan reaper.
    child: bool,
    /// Only processes left over from a run whose main process is gone: stopped, never
    /// taken for the agent's run.
    leftover: bool,
}

impl Found {
    /// A run no state file knows, represented by `info`: its main process if that still leads
    /// its session, else a leftover of it.
    fn unsaved(
        agent: &str,
        tag: &str,
        info: &proctree::ProcInfo,
        children: &HashSet<u32>,
    ) -> Found {
        Found {
            agent: agent.to_string(),
            run: SavedRun {
                pid: info.pid,
                start_time: info.start_time,
                started_ms: proctree::started_wall_ms(info).unwrap_or_default(),
                run_tag: tag.to_string(),
                stop_signal: None,
                stop_timeout_ms: None,
                fence: None,
            },
            child: children.contains(&info.pid),
            leftover: info.session != info.pid,
        }
    }

    /// LogSelection of a run's processes stands for it: its main process (it leads its own
    /// session), or, when only leftovers remain, the oldest of them. Higher is better.
    fn rank(p: &proctree::ProcInfo) -> (bool, std::cmp::Reverse<u64>) {
        (p.session == p.pid, std::cmp::Reverse(p.start_time))
    }
}

fn found_runs(saved: &SavedState, driver: &ProcessDriver, marks_dir: &str) -> Vec<Found> {
    let children: HashSet<u32> = main_thread_children(driver.self_pid())
        .into_iter()
        .collect();
    let mut found = found_by_state_and_marks(saved, marks_dir, &children);
    // Runs whose every process dropped its marks are still in their cgroups.
    if let Some(cg) = driver.cgroups() {
        let known: HashSet<String> = found.iter().map(|f| f.run.run_tag.clone()).collect();
        for tag in cg.tags() {
            if known.contains(&tag) {
                continue;
            }
            let Some((agent, _)) = tag.split_once('#') else {
                continue;
            };
            let members: Vec<proctree::ProcInfo> = cg
                .members(&tag)
                .into_iter()
                .filter_map(proctree::stat)
                .collect();
            let Some(info) = members.iter().max_by_key(|p| Found::rank(p)) else {
                continue;
            };
            found.push(Found::unsaved(agent, &tag, info, &children));
        }
        // What an earlier vigil left empty.
        cg.sweep_empty_except(found.iter().map(|f| f.run.run_tag.as_str()));
    }
    found
}

fn found_by_state_and_marks(
    saved: &SavedState,
    marks_dir: &str,
    children: &HashSet<u32>,
) -> Vec<Found> {
    let mut found: Vec<Found> = saved
        .iter()
        .filter_map(|(name, s)| s.run.as_ref().map(|r| (name, r)))
        // A container or unit is looked at by its agent's start instead.
        .filter(|(_, r)| !r.is_external())
        .filter(|(_, r)| ProcessDriver::same_process(r.pid, r.start_time))
        .map(|(name, run)| Found {
            agent: name.clone(),
            run: run.clone(),
            child: false,
            leftover: false,
        })
        .collect();
    let marked = proctree::marked(marks_dir, STATE_DIR_VAR, RUN_TAG_VAR);
    // One run per tag, stood for by its best-ranked process.
    let mut runs: std::collections::BTreeMap<&str, &proctree::ProcInfo> = Default::default();
    for (info, tag) in &marked {
        let better = runs
            .get(tag.as_str())
            .is_none_or(|best| Found::rank(info) > Found::rank(best));
        if better {
            runs.insert(tag, info);
        }
    }
    for f in &mut found {
        f.child = children.contains(&f.run.pid);
    }
    // Looked up by tag and by pid: after a `kill -9` of vigil with 10,000 agents, a scan of
    // `found` per marked run took seconds.
    let mut known_tags: HashSet<String> = found.iter().map(|f| f.run.run_tag.clone()).collect();
    let mut known_pids: HashSet<u32> = found.iter().map(|f| f.run.pid).collect();
    for (tag, info) in runs {
        if known_tags.contains(tag) || known_pids.contains(&info.pid) {
            continue;
        }
        known_tags.insert(tag.to_string());
        known_pids.insert(info.pid);
        let Some((agent, _)) = tag.split_once('#') else {
            continue;
        };
        found.push(Found::unsaved(agent, tag, info, children));
    }
    found
}

/// Register the configured agents, take over the runs a previous vigil left (and stop those
/// of agents no longer configured, or second runs of one agent), then start the rest — or,
/// for a vigil that panicked while stopping, finish the stop.
fn start(h: &mut Handler, saved: &SavedState, marks_dir: &str, now: Now, resume_shutdown: bool) {
    let logs_dir = h.config.logs_dir();
    // The agents' configs move into the fleet (one copy of each, not two).
    let agents = std::mem::take(&mut h.config.agents);
    let configured = agents.len();
    let mut kept: HashSet<String> = agents.iter().map(|a| a.name.clone()).collect();
    h.sup.reserve(configured);
    h.fleet.reserve(configured);
    for agent in agents {
        let memory = saved.get(&agent.name).map(|s| memory_of(s, now));
        let id = h.sup.add(agent.spec(), memory);
        h.fleet.insert(id, agent, &logs_dir);
    }
    // Readers know every agent before anyone can read that vigil has started.
    let registered = h.sup.take_changes();
    h.publisher.note(&registered);
    h.publisher.publish(&h.sup, now);
    let found = found_runs(saved, &h.exec.driver, marks_dir);
    h.write(&[&records::vigil_start(
        env!("CARGO_PKG_VERSION"),
        configured,
        &h.config.path.display().to_string(),
        h.exec.driver.self_pid(),
        found.len(),
    )]);
    for Found {
        agent,
        run,
        child,
        leftover,
    } in found
    {
        let since = now.mono_of(run.started_ms).unwrap_or(now.mono);
        if child {
            // Its exit belongs to the exit watch, not to the orphan reaper.
            h.exec.children.lock().insert(run.pid);
        }
        let wanted = h
            .sup
            .id(&agent)
            .filter(|_| !leftover)
            .filter(|id| h.sup.agent(*id).is_some_and(|a| a.run().is_none()));
        let outside = run.taken_over();
        let adopted = match wanted.and_then(|id| {
            h.sup
                .adopt(now, id, run.pid, since, outside, run.fence)
                .map(|r| (id, r))
        }) {
            Some(adopted) => Some(adopted),
            // Not configured any more, a second run of an agent that already has one, or a run
            // of an agent that must not run (quarantined): stopped on the record.
            None => {
                let name = if h.sup.id(&agent).is_some() {
                    format!("{agent}#{}", run.pid)
                } else {
                    agent.clone()
                };
                warn!(
                    "{name} (pid {}) is still running but is not wanted; stopping it",
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
                let config = AgentConfig::stray(&name, stop_signal, stop_timeout);
                let adopted = h.sup.adopt_stray(now, config.spec(), run.pid, since);
                if let Some((id, _)) = adopted {
                    h.fleet.insert(id, config, &logs_dir);
                    kept.insert(name);
                }
                adopted
            }
        };
        let Some((id, run_id)) = adopted else {
            continue;
        };
        let notify = h
            .fleet
            .get(id)
            .filter(|s| s.config.uses_notify())
            .map(|s| s.secrets());
        if let Some(slot) = h.fleet.get_mut(id) {
            slot.run = Some(RunRecord {
                id: run_id,
                saved: run.clone(),
                main_gone: None,
            });
        }
        h.exec.watch_exit(id, run_id, run.pid, notify);
        if let Some(slot) = h.fleet.get(id) {
            h.exec.adopted(&slot.config.name, run_id, &run);
        }
    }
    // What was saved about agents that are gone from the configuration goes too.
    h.offload.persist(
        saved
            .keys()
            .filter(|name| !kept.contains(*name))
            .map(|name| (name.clone(), None))
            .collect(),
    );
    info!(
        "supervising {configured} agents from {} (state dir {})",
        h.config.path.display(),
        h.config.state_dir.display()
    );
    if resume_shutdown {
        info!("vigil panicked while stopping every agent: finishing the stop");
        crate::crash::note_stopping();
        h.sup.shutdown(now);
    } else {
        h.sup.start_all(now);
    }
    h.settle(now);
    h.publisher.publish(&h.sup, now);
    h.configured();
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
        stalled_since_ms: saved.stalled_since_ms,
        incident: saved.incident.as_ref().map(|h| {
            (
                h.id,
                vigil_core::Cause {
                    key: h.cause.clone(),
                    text: h.cause_text.clone(),
                },
            )
        }),
        degraded: saved.degraded.clone(),
    }
}
