//! The `systemd` driver: an agent that is a systemd unit (seed 000's
//! `crypto-agent@BTC_USDT.service`). vigil starts, stops and kills it through systemd's own
//! D-Bus API and waits for each job's result; it learns of its end from the bus's
//! `PropertiesChanged` signals (no polling), with how its main process ended; its evidence is
//! the unit's own journal for that run, read in vigil (`reader.rs`). The unit is systemd's:
//! vigil never writes one.
//!
//! A run of a unit is its `InvocationID` (a new one at every start). Every operation runs on
//! the I/O runtime and answers the core with an event, like the other drivers.

mod bus;
mod jobs;
pub mod journal;
mod own;
mod reader;
mod signal;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::runtime::Handle;
use tokio::sync::mpsc::UnboundedSender;
use tracing::{debug, info, warn};
use vigil_core::{
    AgentId, Event, ExitStatus, FailedAction, Outside, RunId, Signal, SpawnErrorKind, SpawnFailure,
};

use bus::ManagerProxy;
pub use bus::{Bus, BusError, UnitState};
pub use own::{own_cgroup, own_unit};
use reader::Reader;
use signal::{Changed, MainProcess};

use super::link::{Link, Retry};
use crate::driver::Children;

/// How long a start or stop job may take.
const JOB_WAIT: Duration = Duration::from_secs(120);
/// How long a run's end waits for systemd's message about it in the journal (the run's last
/// lines are there before it) before its lines are taken as they are.
const JOURNAL_WAIT: Duration = Duration::from_millis(250);

/// A watched run of a unit.
#[derive(Clone, Debug)]
struct Watched {
    agent: AgentId,
    run: RunId,
    unit: String,
    invocation: String,
    /// When the run's main process started (µs since the epoch, systemd's clock).
    started_us: u64,
    secrets: crate::redact::Secrets,
}

impl Watched {
    fn journal_run(&self) -> reader::Run {
        reader::Run {
            unit: self.unit.clone(),
            invocation: self.invocation.clone(),
            started_us: self.started_us,
        }
    }
}

#[derive(Default)]
struct Watches {
    /// By the unit's object path (what a signal names).
    by_path: HashMap<String, Watched>,
    by_run: HashMap<(AgentId, RunId), String>,
    /// What the last signal said of a watched unit's main process.
    main: HashMap<String, MainProcess>,
    /// Runs being taken over (the look saw the unit running; the read that confirms it is on
    /// its way), by unit: a stop meanwhile reaches the unit by its name.
    pending: HashMap<(AgentId, RunId), String>,
}

impl Watches {
    fn register(&mut self, path: &str, w: Watched) {
        self.pending.remove(&(w.agent, w.run));
        if let Some(old) = self.by_path.insert(path.to_string(), w.clone()) {
            self.by_run.remove(&(old.agent, old.run));
        }
        self.by_run.insert((w.agent, w.run), path.to_string());
    }

    fn end(&mut self, path: &str, invocation: &str) -> Option<Watched> {
        let w = self.by_path.get(path)?;
        if w.invocation != invocation {
            return None;
        }
        let w = self.by_path.remove(path)?;
        self.by_run.remove(&(w.agent, w.run));
        self.main.remove(path);
        Some(w)
    }

    fn of_run(&self, agent: AgentId, run: RunId) -> Option<&Watched> {
        self.by_path.get(self.by_run.get(&(agent, run))?)
    }

    /// The unit of a watched run, or of one being taken over.
    fn unit_of(&self, agent: AgentId, run: RunId) -> Option<String> {
        self.of_run(agent, run)
            .map(|w| w.unit.clone())
            .or_else(|| self.pending.get(&(agent, run)).cloned())
    }
}

#[derive(Clone)]
pub struct UnitDriver {
    shared: Arc<Shared>,
}

struct Shared {
    user: bool,
    /// The connection, once made; replaced when it is lost (the bus restarted).
    bus: Mutex<Option<Arc<Bus>>>,
    watches: Mutex<Watches>,
    link: Link,
    /// The units' journal, read in vigil.
    journal: Reader,
    log_lines: usize,
    children: Children,
    io: Handle,
}

impl UnitDriver {
    /// Follow systemd's signals on the system bus (`user`: the user's own manager), on `io`.
    pub fn start(
        io: Handle,
        events: UnboundedSender<Event>,
        log_lines: usize,
        children: Children,
        user: bool,
    ) -> UnitDriver {
        let driver = UnitDriver {
            shared: Arc::new(Shared {
                user,
                bus: Mutex::new(None),
                watches: Mutex::new(Watches::default()),
                link: Link::new(events),
                journal: Reader::start(user),
                log_lines,
                children,
                io: io.clone(),
            }),
        };
        io.spawn(driver.clone().follow());
        driver
    }

    fn watches(&self) -> MutexGuard<'_, Watches> {
        self.shared
            .watches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn send(&self, event: Event) {
        self.shared.link.send(event);
    }

    fn bus(&self) -> Option<Arc<Bus>> {
        self.shared
            .bus
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    async fn ready(&self) -> Result<Arc<Bus>, BusError> {
        if !self.shared.link.watching().await {
            return Err(BusError::NotWatching);
        }
        self.bus().ok_or(BusError::NotWatching)
    }

    /// The unit's state, proven not to be vigil's own unit.
    async fn state(&self, unit: &str) -> Result<(Arc<Bus>, UnitState), BusError> {
        let bus = self.ready().await?;
        if own_unit() == Some(unit) {
            return Err(BusError::OwnUnit(unit.to_string()));
        }
        let state = bus.state(unit).await?;
        let own_pid = state.main_pid == std::process::id();
        let own_group =
            !state.control_group.is_empty() && own_cgroup() == Some(state.control_group.as_str());
        if own_pid || own_group {
            return Err(BusError::OwnUnit(unit.to_string()));
        }
        Ok((bus, state))
    }

    /// Before a start: is the unit running already? Then its run is taken over.
    pub fn look(&self, agent: AgentId, run: RunId, unit: String) {
        let this = self.clone();
        self.shared.io.spawn(async move {
            let outside = match this.state(&unit).await {
                Ok((_, s)) if s.running() => Outside::Adoptable {
                    pid: s.main_pid,
                    started: s.started_us,
                    age: super::link::age_since(Duration::from_micros(s.started_us)),
                    how: format!("unit {unit}"),
                },
                // Not running, not there, or vigil's own: the start says why.
                Ok(_) | Err(BusError::NoSuchUnit(_) | BusError::OwnUnit(_)) => Outside::Nothing,
                Err(e) => Outside::Unknown {
                    why: crate::errors::chain(&e),
                },
            };
            this.send(Event::Looked {
                agent,
                run,
                outside,
            });
        });
    }

    /// Start the unit and wait for the job: `Spawned` with its main pid once watched.
    pub fn spawn(&self, agent: AgentId, run: RunId, unit: String) {
        let this = self.clone();
        self.shared.io.spawn(async move {
            let event = match this.start_watched(agent, run, &unit).await {
                Ok(Some(pid)) => Event::Spawned { agent, run, pid },
                Ok(None) => Event::SpawnFailed {
                    agent,
                    run,
                    error: SpawnFailure {
                        kind: SpawnErrorKind::Other,
                        message: format!("unit {unit} ended as soon as it started"),
                    },
                },
                Err(e) => Event::SpawnFailed {
                    agent,
                    run,
                    error: SpawnFailure {
                        kind: e.spawn_kind(),
                        message: crate::errors::chain(&e),
                    },
                },
            };
            this.send(event);
        });
    }

    /// `Some(main pid)` when the started run is up and watched; `None` when it ended at once.
    async fn start_watched(
        &self,
        agent: AgentId,
        run: RunId,
        unit: &str,
    ) -> Result<Option<u32>, BusError> {
        let (bus, _) = self.state(unit).await?;
        debug!("systemd: starting unit {unit}");
        self.job(&bus, unit, Job::Start).await?;
        let state = bus.state(unit).await?;
        if !state.running() {
            return Ok(None);
        }
        self.register(agent, run, unit, &state);
        // An end between the read above and the registration sent its signal before anyone
        // listened for this run: read once more.
        let again = bus.state(unit).await?;
        if again.invocation != state.invocation || again.ended() {
            self.ended_now(&state.path, &state.invocation, again).await;
        }
        Ok(Some(state.main_pid))
    }

    fn register(&self, agent: AgentId, run: RunId, unit: &str, state: &UnitState) {
        self.watches().register(
            &state.path,
            Watched {
                agent,
                run,
                unit: unit.to_string(),
                invocation: state.invocation.clone(),
                started_us: state.started_us,
                secrets: state.secrets.clone(),
            },
        );
    }

    /// Take over the running unit a look found; if it is no longer that run, the run is over.
    pub fn adopt(&self, agent: AgentId, run: RunId, unit: String, started_us: u64) {
        self.watches().pending.insert((agent, run), unit.clone());
        let this = self.clone();
        self.shared.io.spawn(async move {
            match this.state(&unit).await {
                // Still its run (a stop sent meanwhile may have it deactivating: its end comes).
                Ok((bus, s)) if s.alive() && s.started_us == started_us => {
                    this.register(agent, run, &unit, &s);
                    match bus.state(&unit).await {
                        Ok(again) if again.invocation != s.invocation || again.ended() => {
                            this.ended_now(&s.path, &s.invocation, again).await
                        }
                        Ok(_) => {}
                        // Not read: ask once more (systemd's signals report the end too).
                        Err(_) => this.check(s.path.clone()).await,
                    }
                }
                _ => {
                    this.watches().pending.remove(&(agent, run));
                    this.shared.link.ended_unseen(agent, run)
                }
            }
        });
    }

    /// The stop signal is a `StopUnit` (the unit's own `KillSignal=` and `TimeoutStopSec=`
    /// apply); SIGKILL after vigil's stop timeout is a `KillUnit` of every process of the unit.
    pub fn signal(&self, agent: AgentId, run: RunId, signal: Signal) {
        let Some(unit) = self.watches().unit_of(agent, run) else {
            return;
        };
        let this = self.clone();
        self.shared.io.spawn(async move {
            let done = async {
                let bus = this.bus().ok_or(BusError::NotWatching)?;
                if signal == Signal::KILL {
                    let manager = bus.manager().await?;
                    let _turn = bus.turn().await;
                    manager
                        .kill_unit(&unit, "all", Signal::KILL.0)
                        .await
                        .map_err(|e| BusError::from_zbus(bus.name, &unit, e))
                } else {
                    this.job(&bus, &unit, Job::Stop).await
                }
            }
            .await;
            if let Err(e) = done {
                warn!("sending {signal} to unit {unit}: {e}");
                this.send(Event::ActionFailed {
                    agent,
                    run,
                    action: FailedAction::Signal(signal),
                    error: crate::errors::chain(&e),
                });
            }
        });
    }

    /// A start or stop job, and its result.
    async fn job(&self, bus: &Bus, unit: &str, job: Job) -> Result<(), BusError> {
        let err = |e| BusError::from_zbus(bus.name, unit, e);
        let manager = bus.manager().await?;
        let turn = bus.turn().await;
        let no_answer = |_| BusError::NoAnswer {
            bus: bus.name,
            what: format!("a job for {unit}"),
        };
        let asked = tokio::time::timeout(bus::CALL_TIMEOUT, async {
            // The connection's `JobRemoved` subscription was made before any job (a job may
            // end before the call that queued it returns).
            match job {
                Job::Start => {
                    // vigil's restart budget decides how often the unit starts: systemd's own
                    // start limit (5 starts in 10 s by default) would refuse vigil's restarts
                    // after a few quick crashes. Nothing to reset is no error.
                    let _ = manager.reset_failed_unit(unit).await;
                    manager.start_unit(unit, "replace").await
                }
                Job::Stop => manager.stop_unit(unit, "replace").await,
            }
        })
        .await;
        drop(turn);
        let path = asked.map_err(no_answer)?.map_err(err)?;
        debug!("systemd: waiting for {path:?} ({unit})");
        let result = tokio::time::timeout(JOB_WAIT, bus.jobs.result_of(path.as_str())).await;
        match result {
            Ok(Ok(r)) if r == "done" => Ok(()),
            Ok(Ok(result)) => Err(BusError::JobFailed {
                unit: unit.to_string(),
                result,
            }),
            _ => Err(BusError::JobFailed {
                unit: unit.to_string(),
                result: "no result".into(),
            }),
        }
    }

    /// The run's journal, as evidence of a stall.
    pub async fn log_tail(&self, agent: AgentId, run: RunId) -> Vec<String> {
        let Some(w) = self.watches().of_run(agent, run).cloned() else {
            return Vec::new();
        };
        let n = self.shared.log_lines;
        let in_vigil = self.shared.journal.so_far(&w.journal_run(), n).await;
        self.evidence(&w, in_vigil).await
    }

    /// The run's lines, redacted: as the in-vigil reader gave them, else (`None`: it could
    /// not) read with `journalctl` now.
    async fn evidence(&self, w: &Watched, in_vigil: Option<Vec<String>>) -> Vec<String> {
        let (lines, how) = match in_vigil {
            Some(lines) => (lines, "in vigil"),
            None => {
                let lines = journal::tail(
                    &w.unit,
                    &w.invocation,
                    self.shared.user,
                    self.shared.log_lines,
                    &self.shared.children,
                )
                .await;
                (lines, "by journalctl")
            }
        };
        debug!("systemd: the run's journal, {how}: {} lines", lines.len());
        lines
            .iter()
            .map(|l| crate::redact::line_with(l, &w.secrets))
            .collect()
    }

    /// Its agent is gone from the config.
    pub fn forget(&self, agent: AgentId) {
        let mut w = self.watches();
        let paths: Vec<String> = w
            .by_run
            .iter()
            .filter(|((a, _), _)| *a == agent)
            .map(|(_, p)| p.clone())
            .collect();
        for p in paths {
            if let Some(old) = w.by_path.remove(&p) {
                w.by_run.remove(&(old.agent, old.run));
            }
            w.main.remove(&p);
        }
        w.pending.retain(|(a, _), _| *a != agent);
    }

    /// The watched run of `path` (`invocation`) ended, as `state` shows: its journal, then
    /// its end, to the core.
    async fn ended_now(&self, path: &str, invocation: &str, state: UnitState) {
        let Some(w) = self.watches().end(path, invocation) else {
            return;
        };
        // The status is this run's only while systemd has not started another.
        let status = if state.invocation == w.invocation {
            bus::exit_status(state.exec_main_code, state.exec_main_status)
        } else {
            ExitStatus::unknown()
        };
        debug!(
            "systemd: unit {} ended: {status} (systemd time {})",
            w.unit, state.exited_us
        );
        let in_vigil = self
            .shared
            .journal
            .ended(
                &w.journal_run(),
                state.exited_us,
                self.shared.log_lines,
                JOURNAL_WAIT,
            )
            .await;
        let lines = self.evidence(&w, in_vigil).await;
        self.send(Event::LogTail {
            agent: w.agent,
            run: w.run,
            lines,
        });
        self.send(Event::Exited {
            agent: w.agent,
            run: w.run,
            status,
            tree_alive: false,
            escaped: Vec::new(),
        });
    }

    /// A signal about a watched unit: has its run ended?
    async fn check(&self, path: String) {
        let Some(w) = self.watches().by_path.get(&path).cloned() else {
            return;
        };
        let Some(bus) = self.bus() else {
            return;
        };
        match bus.state(&w.unit).await {
            Ok(s) if s.invocation != w.invocation || s.ended() => {
                self.ended_now(&path, &w.invocation, s).await
            }
            Ok(_) => {}
            Err(BusError::NoSuchUnit(_)) => {
                self.ended_now(&path, &w.invocation, UnitState::default())
                    .await
            }
            Err(e) => debug!("systemd: reading {}: {e}", w.unit),
        }
    }

    /// Follow the bus for as long as vigil runs; after a break, every watched run is checked
    /// again.
    async fn follow(self) {
        let mut retry = Retry::new("systemd");
        loop {
            let bus = match Bus::connect(self.shared.user).await {
                Ok(bus) => {
                    info!("systemd driver: on the {} bus", bus.name);
                    let bus = Arc::new(bus);
                    *self.shared.bus.lock().unwrap_or_else(|e| e.into_inner()) = Some(bus.clone());
                    bus
                }
                Err(e) => {
                    retry.failed(e).await;
                    continue;
                }
            };
            let stream = async {
                // Every job's result, from before the first job is queued.
                let removed = ManagerProxy::new(&bus.conn)
                    .await?
                    .receive_job_removed()
                    .await?;
                let rule = zbus::MatchRule::builder()
                    .msg_type(zbus::message::Type::Signal)
                    .sender("org.freedesktop.systemd1")
                    .interface("org.freedesktop.DBus.Properties")
                    .member("PropertiesChanged")
                    .path_namespace("/org/freedesktop/systemd1/unit")
                    .build()?;
                debug!("systemd: adding the match for units' changes");
                let stream = zbus::MessageStream::for_match_rule(rule, &bus.conn, None).await?;
                debug!("systemd: subscribing");
                ManagerProxy::new(&bus.conn).await?.subscribe().await?;
                Ok::<_, zbus::Error>((stream, removed))
            };
            let stream = tokio::time::timeout(bus::CALL_TIMEOUT, stream).await;
            let (mut stream, mut removed) = match stream {
                Ok(Ok(s)) => s,
                Err(_) => {
                    retry
                        .failed("systemd did not answer the subscription to its signals in time")
                        .await;
                    continue;
                }
                Ok(Err(e)) => {
                    retry
                        .failed(format!("cannot follow systemd's signals: {e}"))
                        .await;
                    continue;
                }
            };
            retry.succeeded();
            // Jobs' results go to whoever waits for them, for as long as the connection lasts.
            let results = bus.clone();
            self.shared.io.spawn(async move {
                while let Some(signal) = removed.next().await {
                    if let Ok(args) = signal.args() {
                        results.jobs.removed(args.job.as_str(), args.result.clone());
                    }
                }
                results.jobs.clear();
            });
            self.shared.link.set_watching(true);
            let watched: Vec<String> = self.watches().by_path.keys().cloned().collect();
            for path in watched {
                self.check(path).await;
            }
            while let Some(message) = stream.next().await {
                let Ok(message) = message else { break };
                let Some(path) = message.header().path().map(|p| p.as_str().to_string()) else {
                    continue;
                };
                self.signalled(path, &message);
            }
            warn!("systemd driver: the bus connection ended; connecting again");
            self.shared.link.set_watching(false);
            retry.pause().await;
        }
    }
}

impl UnitDriver {
    /// A signal about the unit at `path`: read in order, as they come (a service's signal
    /// comes before its unit's, and says how its main process ended).
    fn signalled(&self, path: String, message: &zbus::message::Message) {
        let mut watches = self.watches();
        let Some(w) = watches.by_path.get(&path) else {
            return;
        };
        debug!("systemd: signal for {path}");
        let end = match signal::changed(message) {
            Changed::Service(main) => {
                watches.main.insert(path, main);
                return;
            }
            Changed::Unit {
                active_state,
                sub_state,
                invocation,
            } => {
                if invocation == w.invocation && !bus::ended(&active_state, &sub_state) {
                    return;
                }
                // How it ended, when the service's signal just before said so.
                watches
                    .main
                    .get(&path)
                    .filter(|m| m.exited_us != 0 && m.pid == 0)
                    .map(|m| UnitState {
                        path: path.clone(),
                        active_state,
                        sub_state,
                        invocation,
                        exited_us: m.exited_us,
                        exec_main_code: m.code,
                        exec_main_status: m.status,
                        ..UnitState::default()
                    })
            }
            Changed::Other => None,
        };
        let invocation = w.invocation.clone();
        drop(watches);
        let this = self.clone();
        self.shared.io.spawn(async move {
            match end {
                Some(state) => this.ended_now(&path, &invocation, state).await,
                // Not all said: ask.
                None => this.check(path).await,
            }
        });
    }
}

enum Job {
    Start,
    Stop,
}
