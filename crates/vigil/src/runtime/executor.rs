//! Carries out the core's actions. Nothing is decided here: each action is done as asked, and
//! how it went comes back to the core as an event — at once for what is done on the loop
//! (a spawn), through the edge channel for what is done on the I/O threads (probes,
//! investigations, advice, tree watches, signals to members outside the process group).

use std::sync::Arc;

use tokio::sync::mpsc::UnboundedSender;
use tracing::{debug, warn};
use vigil_core::{Action, AgentId, Event, FailedAction, FailureReport, Now, RunId, Signal};

use super::fleet::{Fleet, RunRecord};
use crate::advisor::{AdviceError, Advisor};
use crate::casebook::Casebook;
use crate::checks::notify::Senders;
use crate::checks::{CheckRunner, ProbeContext, ProbeJob};
use crate::driver::docker::DockerDriver;
use crate::driver::exits::ExitSet;
use crate::driver::outside::Look;
use crate::driver::process::STATE_DIR_VAR;
use crate::driver::units::UnitDriver;
use crate::driver::{Children, Launch, ProcessDriver, proctree, tree};
use crate::evidence;
use crate::metrics::Live;
use crate::state::SavedRun;

/// A signal for the members of a run outside its process group, sent off the loop.
struct MemberSignal {
    agent: AgentId,
    run: RunId,
    main_pid: u32,
    /// Members of the main's group or session count only if they started before this tick
    /// (or carry the run's tag): when the main's exit was collected, else when the signal was
    /// decided. The members are looked up later, on an I/O thread; by then the main may have
    /// died and its pid gone to a stranger leading a group and session of that id — which
    /// started after the decision, so it is not taken for the run.
    older_than: u64,
    /// For a run taken over from outside vigil (not its child: its pid can be reused before
    /// vigil hears of its end): the main's start time. While the main still has it, its
    /// descendants are the run's; else only what started before `older_than`.
    main_started: Option<u64>,
    /// The main's process group got the signal already: its members are not sent it again.
    group_signalled: bool,
    tag: String,
    signal: Signal,
}

/// Each run's credentials: derived from its tag, live while it runs.
pub struct Credentials {
    pub key: Arc<crate::agent_token::TokenKey>,
    pub runs: crate::agent_token::LiveRuns,
    /// `VIGIL_URL`: where a run reaches the API (none when it is disabled).
    pub api_url: Option<String>,
}

impl Credentials {
    /// The environment of a run about to start (the driver adds its name, `VIGIL_AGENT`): its
    /// token (live from now) and where the API is.
    fn begin(&self, agent: &str, run: RunId, tag: &str) -> Vec<(String, String)> {
        use crate::agent_token::{TOKEN_VAR, URL_VAR};
        let token = self.key.token(tag);
        self.runs.begin(agent, run, &token);
        let mut env = vec![(TOKEN_VAR.to_string(), token)];
        env.extend(self.api_url.clone().map(|u| (URL_VAR.to_string(), u)));
        env
    }
}

pub struct Executor {
    pub driver: ProcessDriver,
    pub children: Children,
    checks: CheckRunner,
    pub(super) io: tokio::runtime::Handle,
    /// Outcomes of work done on the I/O threads.
    pub(super) events: UnboundedSender<Event>,
    pub advisor: Option<Arc<Advisor>>,
    pub casebook: Casebook,
    pub metrics: Live,
    /// Main pids of agents that speak the notify protocol, for attributing datagrams.
    pub notify_senders: Senders,
    /// `NOTIFY_SOCKET` for those agents.
    pub notify_socket: Option<String>,
    /// What each run's `VIGIL_AGENT_TOKEN` is derived from, and the runs whose tokens are live.
    credentials: Credentials,
    /// The state dir, as every run's mark (`VIGIL_STATE_DIR`).
    marks_dir: String,
    /// The cluster task, with `[cluster]`: where leases are given up.
    pub cluster: Option<crate::cluster::Cluster>,
    /// Processes spawned so far (for the `abort-after-spawn:N` fault point of tests).
    spawned: u64,
    /// Makes run tags unique across vigils, even one that re-executed itself on the same pid.
    boot: String,
    /// Log lines kept as a failure's evidence.
    pub log_lines: usize,
    /// The exits of every run's main process, for the loop to wait on.
    pub exits: ExitSet,
    /// Signals for members outside process groups, sent together after a batch (one look at
    /// the process table for all of them).
    member_signals: Vec<MemberSignal>,
    probes: Vec<ProbeJob>,
    /// Agents about to start, to look for outside vigil first: sent together after the
    /// batch, answered by one read of the process table.
    looks: Vec<Look>,
    look_worker: super::look_worker::LookWorker,
    files_worker: super::files_worker::FilesWorker,
    /// vigil's working directory: an agent without `cwd` runs in it.
    own_cwd: std::path::PathBuf,
    /// The docker driver, from the first container agent on.
    docker: Option<DockerDriver>,
    /// The systemd driver, per bus (system, user), from the first unit agent on.
    units: [Option<UnitDriver>; 2],
}

pub struct ExecutorParts {
    pub driver: ProcessDriver,
    pub children: Children,
    pub checks: CheckRunner,
    pub io: tokio::runtime::Handle,
    pub events: UnboundedSender<Event>,
    pub advisor: Option<Arc<Advisor>>,
    pub casebook: Casebook,
    pub metrics: Live,
    pub notify_senders: Senders,
    pub notify_socket: Option<String>,
    pub credentials: Credentials,
    pub log_lines: usize,
    /// The state dir, canonical: marked on every run.
    pub marks_dir: String,
}

impl Executor {
    pub fn new(p: ExecutorParts, started_ms: i64) -> std::io::Result<Executor> {
        let look_worker = super::look_worker::LookWorker::start(
            p.driver.self_pid(),
            p.marks_dir.clone(),
            p.events.clone(),
        )?;
        let files_worker = super::files_worker::FilesWorker::start(
            crate::guard::FileStore::new(std::path::Path::new(&p.marks_dir)),
            p.events.clone(),
        )?;
        Ok(Executor {
            files_worker,
            boot: format!("{}-{started_ms}", p.driver.self_pid()),
            driver: p.driver,
            children: p.children,
            checks: p.checks,
            io: p.io,
            events: p.events,
            advisor: p.advisor,
            casebook: p.casebook,
            metrics: p.metrics,
            notify_senders: p.notify_senders,
            notify_socket: p.notify_socket,
            credentials: p.credentials,
            marks_dir: p.marks_dir,
            cluster: None,
            spawned: 0,
            log_lines: p.log_lines,
            exits: ExitSet::new()?,
            member_signals: Vec::new(),
            probes: Vec::new(),
            looks: Vec::new(),
            look_worker,
            own_cwd: std::env::current_dir().unwrap_or_else(|_| "/".into()),
            docker: None,
            units: [None, None],
        })
    }

    /// Carry out one action (not an `Audit`: the handler writes those). What is known at
    /// once comes back as an event for the core.
    pub fn perform(&mut self, fleet: &mut Fleet, action: Action, now: Now) -> Option<Event> {
        match action {
            Action::Audit(_) => None,
            Action::Spawn {
                agent,
                run,
                look_first: false,
                fence,
            } => self.spawn(fleet, agent, run, fence, now),
            Action::Spawn {
                agent,
                run,
                look_first: true,
                ..
            } => {
                let Some(slot) = fleet.get(agent) else {
                    // Nothing to look for: the spawn that follows reports the missing config.
                    return Some(Event::Looked {
                        agent,
                        run,
                        outside: vigil_core::Outside::Nothing,
                    });
                };
                if let Some(container) = slot.config.target.container() {
                    let container = container.to_string();
                    self.docker().look(agent, run, container);
                    return None;
                }
                if let Some((unit, user)) = slot.config.target.unit() {
                    let unit = unit.to_string();
                    self.units(user).look(agent, run, unit);
                    return None;
                }
                self.looks
                    .push(Look::for_agent(agent, run, &slot.config, &self.own_cwd));
                None
            }
            Action::ReleaseLease { agent, epoch, to } => {
                if let (Some(cluster), Some(slot)) = (&self.cluster, fleet.get(agent)) {
                    cluster.send(crate::cluster::ToCluster::Release {
                        agent: slot.config.name.clone(),
                        epoch,
                        to,
                    });
                }
                None
            }
            Action::GuardFiles { agent, run } => match fleet.get(agent) {
                Some(slot) => {
                    let config = &slot.config;
                    self.files_worker
                        .guard(agent, run, &config.name, &config.files);
                    None
                }
                // Nothing to check: the spawn that follows reports the missing config.
                None => Some(Event::FilesGuarded {
                    agent,
                    run,
                    verdict: vigil_core::FilesVerdict::Ready {
                        repaired: Vec::new(),
                    },
                }),
            },
            Action::KeepFiles { agent, run } => {
                if let Some(slot) = fleet.get(agent) {
                    self.files_worker
                        .keep(run, &slot.config.name, &slot.config.files);
                }
                None
            }
            Action::Adopt {
                agent,
                run,
                pid,
                started,
            } => self.adopt(fleet, agent, run, pid, started, now),
            Action::Signal { agent, run, signal } if is_container_run(fleet, agent, run) => {
                let timeout = stop_timeout_of(fleet, agent, run);
                self.docker().signal(agent, run, signal, timeout);
                None
            }
            Action::Kill { agent, run } if is_container_run(fleet, agent, run) => {
                let timeout = stop_timeout_of(fleet, agent, run);
                self.docker().signal(agent, run, Signal::KILL, timeout);
                None
            }
            Action::Signal { agent, run, signal }
                if let Some(user) = unit_run(fleet, agent, run) =>
            {
                self.units(user).signal(agent, run, signal);
                None
            }
            Action::Kill { agent, run } if let Some(user) = unit_run(fleet, agent, run) => {
                self.units(user).signal(agent, run, Signal::KILL);
                None
            }
            Action::Signal { agent, run, signal } => self.signal(fleet, agent, run, signal),
            Action::Kill { agent, run } => self.signal(fleet, agent, run, Signal::KILL),
            Action::KillEscaped { agent, run, pids } => {
                // At once, on the loop (a handful of pids, each checked again first): they must
                // be gone before anything else of this batch — a restart — runs.
                let tag = &fleet.run(agent, run)?.saved.run_tag;
                let refused = self.driver.kill_escaped(&pids, tag).err()?;
                Some(failed(agent, run, FailedAction::Kill, &refused))
            }
            // A container's processes are the engine's: when its main process is gone, the
            // engine has ended them all.
            Action::WatchTree { agent, run }
                if is_container_run(fleet, agent, run) || unit_run(fleet, agent, run).is_some() =>
            {
                Some(Event::TreeEmpty { agent, run })
            }
            Action::WatchTree { agent, run } => {
                let rec = fleet.run(agent, run)?;
                let (pid, tag) = (rec.saved.pid, rec.saved.run_tag.clone());
                let gone = rec.main_gone.map_or_else(proctree::now_ticks, |g| g.tick);
                let (driver, events) = (self.driver.clone(), self.events.clone());
                self.io.spawn(async move {
                    tree::wait_empty(driver.clone(), pid, tag.clone(), gone).await;
                    driver.remove_cgroup(&tag);
                    let _ = events.send(Event::TreeEmpty { agent, run });
                });
                None
            }
            Action::Forget { agent } => {
                if let Some(docker) = &self.docker {
                    docker.forget(agent);
                }
                for units in self.units.iter().flatten() {
                    units.forget(agent);
                }
                if let Some(slot) = fleet.remove(agent) {
                    self.casebook.forget(&slot.config.name);
                }
                None
            }
            Action::RunCheck {
                agent,
                check,
                generation,
            } => {
                let Some((slot, config)) = fleet
                    .get(agent)
                    .and_then(|s| Some((s, s.config.checks.get(check)?.clone())))
                else {
                    // Every probe gets an answer, or its check would wait for it forever.
                    return Some(Event::CheckResult {
                        agent,
                        check,
                        generation,
                        observation: vigil_core::Observation::Unknown(
                            "vigil has no such check for this agent (a bug)".into(),
                        ),
                    });
                };
                if config.probe == crate::config::Probe::ContainerHealth {
                    let observation = match (&self.docker, slot.run.as_ref()) {
                        (Some(docker), Some(rec)) => docker.health(agent, rec.id),
                        _ => {
                            vigil_core::Observation::Unknown("the container is not running".into())
                        }
                    };
                    return Some(Event::CheckResult {
                        agent,
                        check,
                        generation,
                        observation,
                    });
                }
                // Only an exec check's output can carry the agent's secrets back.
                let secrets = match config.probe {
                    crate::config::Probe::Exec { .. } => slot.secrets(),
                    _ => Default::default(),
                };
                self.probes.push(ProbeJob {
                    agent,
                    check,
                    generation,
                    config,
                    ctx: ProbeContext {
                        agent: slot.config.name.clone(),
                        instance: slot.config.instance.clone(),
                        pid: slot.run.as_ref().map(|r| r.saved.pid),
                        cwd: slot.config.cwd.clone(),
                        user: slot.config.run_as.clone(),
                        secrets,
                    },
                });
                None
            }
            Action::Investigate { agent, run } => {
                self.investigate(fleet, agent, run);
                None
            }
            Action::Diagnosed { agent, report } => {
                self.diagnosed(fleet, agent, *report, now);
                None
            }
            Action::CollectEvidence { agent, runbook } => {
                let run = fleet.get(agent).and_then(|s| s.run.as_ref()).map(|r| r.id);
                self.gather_evidence(fleet, agent, run, move |lines| Event::RunbookEvidence {
                    runbook,
                    lines,
                });
                None
            }
            Action::AdviseRunbook {
                agent,
                runbook,
                report,
            } => {
                self.advise_runbook(fleet, agent, runbook, *report);
                None
            }
            Action::RunbookExec {
                agent,
                runbook,
                argv,
                timeout,
            } => {
                self.runbook_exec(fleet, agent, runbook, argv, timeout);
                None
            }
        }
    }

    /// After a batch: what is best done for the whole batch at once.
    pub fn finish_batch(&mut self) {
        self.checks.run_batch(std::mem::take(&mut self.probes));
        self.look_outside();
        let signals = std::mem::take(&mut self.member_signals);
        if signals.is_empty() {
            return;
        }
        let (driver, events) = (self.driver.clone(), self.events.clone());
        self.io.spawn_blocking(move || {
            let procs = driver.snapshot();
            for s in signals {
                let main_alive = s
                    .main_started
                    .is_some_and(|st| procs.get().started(s.main_pid) == Some(st));
                let main_gone = (!main_alive).then_some(s.older_than);
                if let Err(e) = driver.signal_members(
                    &procs,
                    s.main_pid,
                    &s.tag,
                    main_gone,
                    s.signal,
                    s.group_signalled,
                ) {
                    let _ = events.send(failed(s.agent, s.run, FailedAction::Signal(s.signal), &e));
                }
            }
        });
    }

    fn spawn(
        &mut self,
        fleet: &mut Fleet,
        agent: AgentId,
        run: RunId,
        fence: Option<u64>,
        now: Now,
    ) -> Option<Event> {
        let Some(slot) = fleet.get_mut(agent) else {
            return Some(Event::SpawnFailed {
                agent,
                run,
                error: vigil_core::SpawnFailure {
                    kind: vigil_core::SpawnErrorKind::Other,
                    message: "vigil has no configuration for this agent (a bug)".into(),
                },
            });
        };
        if let Some(container) = slot.config.target.container() {
            let container = container.to_string();
            slot.run = Some(external_run(slot, run, 0, 0, now.wall_ms));
            self.docker().spawn(agent, run, container);
            return None;
        }
        if let Some((unit, user)) = slot.config.target.unit() {
            let unit = unit.to_string();
            slot.run = Some(external_run(slot, run, 0, 0, now.wall_ms));
            self.units(user).spawn(agent, run, unit);
            return None;
        }
        let tag = format!("{}#{}.{}", slot.config.name, self.boot, run.0);
        slot.log_start = std::fs::metadata(&slot.log).map(|m| m.len()).unwrap_or(0);
        let mut extra_env = vec![(STATE_DIR_VAR.to_string(), self.marks_dir.clone())];
        let notify = slot.config.uses_notify();
        if notify && let Some(socket) = &self.notify_socket {
            extra_env.push(("NOTIFY_SOCKET".to_string(), socket.clone()));
        }
        let name = slot.config.name.clone();
        extra_env.extend(self.credentials.begin(&name, run, &tag));
        if let (Some(epoch), Some(cluster)) = (fence, &self.cluster) {
            extra_env.extend(crate::cluster::fence_env(
                std::path::Path::new(&self.marks_dir),
                &cluster.node,
                &name,
                epoch,
            ));
        }
        let result = self.driver.spawn(&Launch {
            agent: &slot.config,
            log: &slot.log,
            run_tag: &tag,
            extra_env: &extra_env,
        });
        match result {
            Ok(pid) => {
                self.spawned += 1;
                if crate::crash::failpoint(&format!("abort-after-spawn:{}", self.spawned)) {
                    // A `kill -9` of vigil right after this spawn, before anything else.
                    std::process::abort();
                }
                let start_time = ProcessDriver::start_time(pid).unwrap_or_default();
                slot.run = Some(RunRecord {
                    id: run,
                    main_gone: None,
                    saved: SavedRun {
                        pid,
                        start_time,
                        started_ms: now.wall_ms,
                        run_tag: tag,
                        stop_signal: Some(slot.config.stop_signal.name()),
                        stop_timeout_ms: Some(slot.config.stop_timeout.as_millis() as u64),
                        fence,
                    },
                });
                self.credentials.runs.bind(&name, pid);
                let secrets = notify.then(|| slot.secrets());
                self.watch_exit(agent, run, pid, secrets);
                Some(Event::Spawned { agent, run, pid })
            }
            Err(e) => {
                self.credentials.runs.end_agent(&name);
                slot.run = None;
                Some(Event::SpawnFailed {
                    agent,
                    run,
                    error: e.to_failure(),
                })
            }
        }
    }

    /// The docker driver, started with the first container agent.
    fn docker(&mut self) -> DockerDriver {
        let (io, events, n) = (self.io.clone(), self.events.clone(), self.log_lines);
        self.docker
            .get_or_insert_with(|| DockerDriver::start(io, events, n))
            .clone()
    }

    /// The systemd driver of the system's (or the user's) manager, started with its first
    /// unit agent.
    fn units(&mut self, user: bool) -> UnitDriver {
        let (io, events, n) = (self.io.clone(), self.events.clone(), self.log_lines);
        let children = self.children.clone();
        self.units[usize::from(user)]
            .get_or_insert_with(|| UnitDriver::start(io, events, n, children, user))
            .clone()
    }

    /// An outcome from the I/O threads, before the core hears of it: a started container's
    /// or unit's main pid joins its run's record.
    pub fn note(&mut self, fleet: &mut Fleet, event: &Event) {
        if let Event::Spawned { agent, run, pid } = *event
            && let Some(slot) = fleet.get_mut(agent)
            && slot.config.target.is_external()
            && let Some(rec) = slot.run.as_mut().filter(|r| r.id == run)
        {
            rec.saved.pid = pid;
        }
    }

    /// Hand the batch's looks to the look worker.
    fn look_outside(&mut self) {
        if self.looks.is_empty() {
            return;
        }
        let watched = self.exits.watched_pids().collect();
        self.look_worker
            .look(std::mem::take(&mut self.looks), watched);
    }

    /// Take over the agent's process that something else started: it becomes the run's
    /// main process, watched like a spawned one. It is not vigil's child (no exit status)
    /// and not in a cgroup of vigil's; signals reach it through the pidfd it is watched by,
    /// and its descendants after the batch (see `signal`).
    fn adopt(
        &mut self,
        fleet: &mut Fleet,
        agent: AgentId,
        run: RunId,
        pid: u32,
        started: u64,
        now: Now,
    ) -> Option<Event> {
        let slot = fleet.get_mut(agent)?;
        if let Some(container) = slot.config.target.container() {
            // `started`: when the container's run started (ns), as the look saw it.
            let container = container.to_string();
            let started_ms = (started / 1_000_000) as i64;
            slot.run = Some(external_run(slot, run, pid, started, started_ms));
            self.docker().adopt(agent, run, container, started as i64);
            return None;
        }
        if let Some((unit, user)) = slot.config.target.unit() {
            // `started`: when the unit's main process started (µs), as the look saw it.
            let unit = unit.to_string();
            let started_ms = (started / 1_000) as i64;
            slot.run = Some(external_run(slot, run, pid, started, started_ms));
            self.units(user).adopt(agent, run, unit, started);
            return None;
        }
        slot.log_start = std::fs::metadata(&slot.log).map(|m| m.len()).unwrap_or(0);
        // Whether the pid still has that start time is checked by the watch below.
        let started_ms = proctree::wall_ms_of(started).unwrap_or(now.wall_ms);
        slot.run = Some(RunRecord {
            id: run,
            main_gone: None,
            saved: SavedRun {
                pid,
                start_time: started,
                started_ms,
                // Nothing carries it (the process has no mark of vigil's): it only names the
                // run, and matches no orphan's tag.
                run_tag: format!(
                    "{}{}{pid}.{started}",
                    slot.config.name,
                    crate::state::OUTSIDE_TAG
                ),
                stop_signal: Some(slot.config.stop_signal.name()),
                stop_timeout_ms: Some(slot.config.stop_timeout.as_millis() as u64),
                fence: None,
            },
        });
        // Unless another run already has it (two `adopt`s naming one process).
        if !self.exits.is_watched(pid) {
            match self.exits.watch_started(agent, run, pid, started) {
                Ok(true) => return None,
                Ok(false) => {}
                Err(e) => return Some(failed(agent, run, FailedAction::WatchExit, &e)),
            }
        }
        // It ended (its pid may already be someone else's) before it could be watched, or is
        // another run's: this run is over, and nothing of that pid is vigil's to touch.
        if let Some(rec) = slot.run.as_mut() {
            rec.main_gone = Some(super::fleet::MainGone {
                tick: proctree::now_ticks(),
            });
        }
        Some(Event::Exited {
            agent,
            run,
            status: vigil_core::ExitStatus::unknown(),
            tree_alive: false,
            escaped: Vec::new(),
        })
    }

    /// Watch a main process through its pidfd, in the set the loop waits on.
    /// `notify`: the agent speaks the notify protocol; its datagrams are attributed to this
    /// run, and what they say is redacted with these secrets.
    pub fn watch_exit(
        &mut self,
        agent: AgentId,
        run: RunId,
        pid: u32,
        notify: Option<crate::redact::Secrets>,
    ) {
        if let Some(secrets) = notify {
            self.notify_senders
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(
                    pid,
                    crate::checks::notify::Sender {
                        agent,
                        run,
                        secrets,
                    },
                );
        }
        // No descriptor for it now (EMFILE…): the agent still runs; it is watched as soon as
        // it can be.
        if let Err(e) = self.exits.watch(agent, run, pid) {
            let _ = self
                .events
                .send(failed(agent, run, FailedAction::WatchExit, &e));
        }
    }

    /// A run of `agent` found alive at startup, spawned by a vigil of this state dir: its
    /// token (derived from its tag) works again.
    pub fn adopted(&self, agent: &str, id: RunId, run: &SavedRun) {
        if run.spawned_by_vigil() {
            let token = self.credentials.key.token(&run.run_tag);
            self.credentials.runs.begin(agent, id, &token);
            self.credentials.runs.bind(agent, run.pid);
        }
    }

    /// A watched main process has been collected: it is no longer vigil's to track.
    pub fn exited(&self, pid: u32) {
        self.notify_senders
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&pid);
        self.credentials.runs.ended(pid);
        self.driver.forget(pid);
    }

    /// The process group gets the signal now (one syscall on the loop); members that left
    /// the group get it after the batch, from an I/O thread. The group only while it is
    /// proven the run's: the main process is alive (its pid cannot be reused before vigil
    /// collects it). Not once it has been collected, even in this very turn: its pid and, if
    /// the group had no other member, its group id are free from that moment, and a stranger
    /// started meanwhile may lead a group of that id (seen under pid pressure: the
    /// `a_reused_pid_is_never_signalled` test's stranger, killed by another vigil's turn).
    /// What is left of the run is reached member by member, each proven by its start time.
    fn signal(
        &mut self,
        fleet: &Fleet,
        agent: AgentId,
        run: RunId,
        signal: Signal,
    ) -> Option<Event> {
        let rec = fleet.run(agent, run)?;
        let (pid, tag) = (rec.saved.pid, rec.saved.run_tag.clone());
        let taken_over = rec.saved.taken_over();
        debug!("sending {signal} to the process tree of pid {pid}");
        self.member_signals.push(MemberSignal {
            agent,
            run,
            main_pid: pid,
            older_than: rec.main_gone.map_or_else(proctree::now_ticks, |g| g.tick),
            main_started: (taken_over && rec.main_gone.is_none()).then_some(rec.saved.start_time),
            group_signalled: false,
            tag,
            signal,
        });
        if rec.main_gone.is_some() {
            return None;
        }
        if taken_over {
            // Not vigil's child: its pid proves nothing. Its pidfd, opened when it was taken
            // over, reaches it and only it; its descendants get the signal after the batch.
            let refused = self.exits.signal(pid, signal).err()?;
            warn!("sending {signal} to pid {pid}: {refused}");
            return Some(failed(agent, run, FailedAction::Signal(signal), &refused));
        }
        let Err(refused) = self.driver.signal_group(pid, signal) else {
            if let Some(m) = self.member_signals.last_mut() {
                m.group_signalled = true;
            }
            return None;
        };
        warn!("{refused}");
        Some(failed(agent, run, FailedAction::Signal(signal), &refused))
    }

    /// A stalled agent, still alive: gather its evidence off the loop (the evidence command
    /// may take seconds) and answer with `LogTail`.
    fn investigate(&mut self, fleet: &Fleet, agent: AgentId, run: RunId) {
        if fleet.run(agent, run).is_none() {
            return;
        }
        self.gather_evidence(fleet, agent, Some(run), move |lines| Event::LogTail {
            agent,
            run,
            lines,
        });
    }

    /// The agent's evidence: its log tail (of `run`, or of its log file when it has no run),
    /// then its evidence command's output while a process runs; answered with `answer`.
    pub(super) fn gather_evidence(
        &mut self,
        fleet: &Fleet,
        agent: AgentId,
        run: Option<RunId>,
        answer: impl FnOnce(Vec<String>) -> Event + Send + 'static,
    ) {
        let Some(slot) = fleet.get(agent) else {
            return;
        };
        let pid = run
            .and_then(|r| fleet.run(agent, r))
            .map(|rec| rec.saved.pid);
        let (log, from, n) = (slot.log.clone(), slot.log_start, self.log_lines);
        let command = slot.config.evidence.clone();
        let cwd = slot.config.cwd.clone();
        let secrets = slot.secrets();
        let children = self.children.clone();
        let events = self.events.clone();
        enum Source {
            File,
            Container(DockerDriver),
            Unit(UnitDriver),
            Nothing,
        }
        let source = match (slot.config.target.unit(), run) {
            (_, None) if slot.config.target.container().is_some() => Source::Nothing,
            (Some(_), None) => Source::Nothing,
            _ if slot.config.target.container().is_some() => Source::Container(self.docker()),
            (Some((_, user)), Some(_)) => Source::Unit(self.units(user)),
            (None, _) => Source::File,
        };
        self.io.spawn(async move {
            let mut lines = match (source, run) {
                (Source::Container(docker), Some(run)) => docker.log_tail(agent, run).await,
                (Source::Unit(units), Some(run)) => units.log_tail(agent, run).await,
                (Source::File, _) => evidence::log_tail(&log, n, from, &secrets),
                _ => Vec::new(),
            };
            if let (Some(command), Some(pid)) = (command, pid) {
                let output = evidence::command_output(&command, pid, cwd, &children, &secrets);
                lines.extend(output.await);
            }
            let _ = events.send(answer(lines));
        });
    }

    /// A runbook's `diagnose` step asks the advisor (nothing kept for `explain`: no failure).
    fn advise_runbook(
        &mut self,
        fleet: &Fleet,
        agent: AgentId,
        runbook: u64,
        report: FailureReport,
    ) {
        let events = self.events.clone();
        let (Some(slot), Some(advisor)) = (fleet.get(agent), self.advisor.clone()) else {
            let advice = Err(AdviceError::NotConfigured.to_string());
            let _ = events.send(Event::RunbookAdvice { runbook, advice });
            return;
        };
        let name = slot.config.name.clone();
        let live = self.metrics.clone();
        self.io.spawn(async move {
            let advice = advisor
                .advise(&name, &report)
                .await
                .map_err(|e| e.to_string());
            if let Ok(d) = &advice {
                live.diagnosed(d.category.as_str(), "llm");
            }
            let _ = events.send(Event::RunbookAdvice { runbook, advice });
        });
    }

    /// A failure was judged: keep it for `vigil explain`, count it, and ask the advisor.
    fn diagnosed(&mut self, fleet: &Fleet, agent: AgentId, report: FailureReport, now: Now) {
        let Some(slot) = fleet.get(agent) else {
            return;
        };
        let name = slot.config.name.clone();
        let verdict = &report.verdict;
        self.metrics
            .diagnosed(verdict.category.as_str(), verdict.source.as_str());
        self.casebook.open(&name, now.wall_ms, report.clone());
        if !report.ask_advisor {
            return;
        }
        let run = report.run;
        let events = self.events.clone();
        let Some(advisor) = self.advisor.clone() else {
            let advice = Err(AdviceError::NotConfigured.to_string());
            let _ = events.send(Event::Advice { agent, run, advice });
            return;
        };
        let (casebook, live) = (self.casebook.clone(), self.metrics.clone());
        self.io.spawn(async move {
            let advice = advisor.advise(&name, &report).await.map_err(|e| {
                warn!("{name}: no advice from the LLM advisor: {e}");
                e.to_string()
            });
            if let Ok(d) = &advice {
                live.diagnosed(d.category.as_str(), "llm");
            }
            casebook.advised(&name, run, &advice);
            let _ = events.send(Event::Advice { agent, run, advice });
        });
    }
}

/// Whether the run is a container's — by the run itself, not the agent's config: a reload
/// that turns a process agent into a container (or back) stops the old run as what it is.
fn is_container_run(fleet: &Fleet, agent: AgentId, run: RunId) -> bool {
    fleet
        .run(agent, run)
        .is_some_and(|r| r.saved.is_container())
}

/// The run's own stop timeout (the one it was started with).
fn stop_timeout_of(fleet: &Fleet, agent: AgentId, run: RunId) -> std::time::Duration {
    fleet
        .run(agent, run)
        .and_then(|r| r.saved.stop_timeout_ms)
        .map_or(
            std::time::Duration::from_secs(10),
            std::time::Duration::from_millis,
        )
}

/// The run of a unit (`Some(user)`), by the run itself.
fn unit_run(fleet: &Fleet, agent: AgentId, run: RunId) -> Option<bool> {
    fleet.run(agent, run).and_then(|r| r.saved.unit_bus())
}

/// A container's or unit's run, as saved: its main pid (0 until started) and when it started
/// (the engine's ns, systemd's µs).
fn external_run(
    slot: &super::fleet::Slot,
    run: RunId,
    pid: u32,
    started_ns: u64,
    started_ms: i64,
) -> RunRecord {
    RunRecord {
        id: run,
        main_gone: None,
        saved: SavedRun {
            pid,
            start_time: started_ns,
            started_ms,
            run_tag: format!(
                "{}{}{}",
                slot.config.name,
                match slot.config.target.unit() {
                    Some((_, true)) => crate::state::USER_UNIT_TAG,
                    Some((_, false)) => crate::state::UNIT_TAG,
                    None => crate::state::CONTAINER_TAG,
                },
                run.0
            ),
            stop_signal: Some(slot.config.stop_signal.name()),
            stop_timeout_ms: Some(slot.config.stop_timeout.as_millis() as u64),
            fence: None,
        },
    }
}

fn failed(agent: AgentId, run: RunId, action: FailedAction, e: &dyn std::error::Error) -> Event {
    Event::ActionFailed {
        agent,
        run,
        action,
        error: crate::errors::chain(e),
    }
}
