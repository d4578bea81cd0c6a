//! The daemon's one event loop: it turns signals, process exits and timers into core events,
//! and the core's actions into syscalls. Decisions are made only in `vigil-core`.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};
use vigil_core::{
    Action, AgentId, AgentMemory, AuditAction, AuditEntry, Event, ExitStatus, FailureReport, Now,
    Supervisor,
};

use crate::advisor::Advisor;
use crate::api::{self, ApiRequest, CommandResult, Publisher};
use crate::audit::Journal;
use crate::casebook::Casebook;
use crate::checks::notify::{self, Senders};
use crate::checks::{CheckRunner, ProbeContext, ProbeJob};
use crate::config::{self, AgentConfig, Config};
use crate::driver::proctree::Snapshot;
use crate::driver::{Children, ExitWatch, Launch, ProcessDriver};
use crate::evidence;
use crate::logs;
use crate::metrics::Live;
use crate::state::{SavedAgent, SavedRun, SavedState, StateStore};
use crate::systemd::Systemd;

fn make_advisor(config: &Config, live: &Live) -> Option<Arc<Advisor>> {
    let llm = config.diagnosis.llm.clone()?;
    info!(
        "LLM advisor: {} model {} at {} (it can only make decisions stricter)",
        llm.provider.as_str(),
        llm.model,
        llm.url
    );
    Some(Arc::new(Advisor::new(llm, live.clone())))
}

pub fn now() -> Now {
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default();
    Now::new(Instant::now(), wall)
}

/// How often log sizes are checked for rotation.
const HOUSEKEEPING: Duration = Duration::from_secs(5);
/// How often a stopping agent's leftover processes are looked for.
const TREE_POLL: Duration = Duration::from_millis(20);

/// One agent as the edges see it: how to run it and its current run.
struct Slot {
    config: AgentConfig,
    log: PathBuf,
    run: Option<SavedRun>,
    /// Size of the log when the current run started: its evidence is what comes after.
    log_start: u64,
}

struct Runtime {
    sup: Supervisor,
    config: Config,
    state_dir_override: Option<PathBuf>,
    slots: HashMap<AgentId, Slot>,
    /// Live main processes (spawned or adopted), each watched through its pidfd.
    live: HashMap<u32, AgentId>,
    driver: ProcessDriver,
    journal: Journal,
    store: StateStore,
    checks: CheckRunner,
    /// Main pids of agents that speak the notify protocol, for attributing datagrams.
    notify_senders: Senders,
    /// `NOTIFY_SOCKET` for those agents.
    notify_socket: Option<String>,
    /// Runs whose main process ended while stopping, with processes left to wait for.
    watched_trees: HashMap<(AgentId, u32), String>,
    /// Exit watches created since the loop last collected them.
    new_watches: Vec<ExitFuture>,
    /// Runs that ended on their own: orphans that escaped their process group are killed
    /// once the replacement has been started.
    sweeps: Vec<String>,
    run_seq: u64,
    /// Pictures of the fleet and audit records for the HTTP API.
    publisher: Publisher,
    /// Where evidence commands and advisor calls run, and how their results come back.
    io: tokio::runtime::Handle,
    edge_tx: mpsc::UnboundedSender<Event>,
    children: Children,
    metrics: Live,
    /// The last failure of each agent, for `vigil explain`.
    casebook: Casebook,
    /// `[diagnosis.llm]`, when configured.
    advisor: Option<Arc<Advisor>>,
    /// systemd's notify socket, when vigil runs as a `Type=notify` service.
    systemd: Option<Systemd>,
}

/// Exclusive use of a state dir: two vigils on one state dir would start every agent twice.
struct StateLock {
    _file: File,
}

impl StateLock {
    fn acquire(state_dir: &Path) -> Result<StateLock> {
        let path = state_dir.join("vigil.pid");
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        if rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
            let other = fs::read_to_string(&path).unwrap_or_default();
            bail!(
                "another vigil (pid {}) is already running with state dir {}",
                other.trim(),
                state_dir.display()
            );
        }
        file.set_len(0)?;
        write!(file, "{}", std::process::id())?;
        Ok(StateLock { _file: file })
    }
}

/// Resolves with the agent, pid and exit status when a watched main process ends.
type ExitFuture = Pin<Box<dyn Future<Output = (AgentId, u32, ExitStatus)>>>;

pub struct RunOptions {
    pub config: Config,
    pub state_dir_override: Option<PathBuf>,
    /// Where probes, and anything else that may block or take long, run.
    pub io: tokio::runtime::Handle,
}

pub async fn run(opts: RunOptions) -> Result<()> {
    let config = opts.config;
    let state_dir = config.state_dir.clone();
    fs::create_dir_all(config.logs_dir())
        .with_context(|| format!("cannot create state dir {}", state_dir.display()))?;
    let _lock = StateLock::acquire(&state_dir)?;
    if let Err(e) = ProcessDriver::become_subreaper() {
        warn!("cannot become a child subreaper ({e}); orphans of agents will escape to init");
    }
    // Registered before the first spawn so no exit is missed.
    let mut sigchld = signal(SignalKind::child())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sighup = signal(SignalKind::hangup())?;

    let journal_path = state_dir.join("audit.jsonl");
    let (journal, torn) = Journal::open(&journal_path)
        .with_context(|| format!("cannot open the audit journal {}", journal_path.display()))?;
    if let Some(w) = torn {
        warn!("{w}");
    }
    let store = StateStore::new(&state_dir);
    let (saved, problem) = store.load();
    if let Some(w) = problem {
        warn!("{w}");
    }

    let api = api::start(&config.api, &state_dir, &opts.io)?;
    if let Some(addr) = api.addr {
        info!("HTTP API, metrics and dashboard on http://{addr}/");
    }
    let mut api_rx = api.requests;

    // Facts from the other threads: check results, notify datagrams.
    let (edge_tx, mut edge_rx) = mpsc::unbounded_channel();
    let notify_senders = Senders::default();
    let (notify_tx, mut notify_rx) = mpsc::channel(8192);
    let notify_socket = match notify::listen(
        &state_dir,
        notify_senders.clone(),
        notify_tx,
        api.live.clone(),
    ) {
        Ok(addr) => Some(addr),
        Err(e) => {
            warn!("cannot open the notify socket ({e}); notify checks will see no heartbeats");
            None
        }
    };
    // Polled by the loop itself: an exit wakes the loop directly, with no task in between.
    let mut exits: FuturesUnordered<ExitFuture> = FuturesUnordered::new();
    let children = Children::default();
    let driver = ProcessDriver::new(children.clone());
    let checks = CheckRunner::new(
        opts.io.clone(),
        edge_tx.clone(),
        children.clone(),
        api.live.clone(),
    );
    let advisor = make_advisor(&config, &api.live);
    let mut rt = Runtime {
        sup: Supervisor::new(driver.self_pid()),
        config: config.clone(),
        state_dir_override: opts.state_dir_override,
        slots: HashMap::new(),
        live: HashMap::new(),
        driver,
        journal,
        store,
        checks,
        notify_senders,
        notify_socket,
        watched_trees: HashMap::new(),
        new_watches: Vec::new(),
        sweeps: Vec::new(),
        run_seq: 0,
        publisher: api.publisher,
        io: opts.io.clone(),
        edge_tx,
        children: children.clone(),
        metrics: api.live,
        casebook: api.casebook,
        advisor,
        systemd: Systemd::from_env(),
    };
    rt.start(saved);
    // Ready once every agent has been started or adopted (the first batch is executed).
    rt.execute();
    let watchdog_every = rt.systemd.as_ref().and_then(Systemd::ping_every);
    if let Some(sd) = &rt.systemd {
        sd.notify(&format!(
            "READY=1\nSTATUS=supervising {} agents",
            rt.slots.len()
        ));
        sd.notify("WATCHDOG=1");
    }
    let mut watchdog = tokio::time::interval(watchdog_every.unwrap_or(Duration::from_secs(3600)));
    watchdog.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    let mut housekeeping = tokio::time::interval(HOUSEKEEPING);
    housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut tree_poll = tokio::time::interval(TREE_POLL);
    tree_poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stop_signals = 0u32;
    let mut orphans_exited = false;
    let mut edge_events = Vec::with_capacity(1024);
    let mut notify_events = Vec::with_capacity(1024);
    let mut api_requests = Vec::with_capacity(1024);
    let mut publish_tick = tokio::time::interval(api::PUBLISH_DIRTY);
    publish_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let mut publish_only = false;
        exits.extend(rt.new_watches.drain(..));
        let deadline = rt.sup.poll_timeout();
        let timer = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            Some((agent, pid, status)) = exits.next() => {
                rt.on_exit(agent, pid, status);
                // Exits that are ready too join the same batch: one journal sync for a burst.
                while let Some(Some((agent, pid, status))) = exits.next().now_or_never() {
                    rt.on_exit(agent, pid, status);
                }
            }
            // Orphans can wait until the restarts of this batch are done.
            _ = sigchld.recv() => orphans_exited = true,
            _ = timer => rt.sup.handle_timeout(now()),
            n = edge_rx.recv_many(&mut edge_events, 1024) => {
                let now = now();
                for event in edge_events.drain(..n) {
                    rt.sup.handle(now, event);
                }
            }
            n = notify_rx.recv_many(&mut notify_events, 1024) => {
                let now = now();
                for event in notify_events.drain(..n) {
                    rt.sup.handle(now, event);
                }
            }
            _ = sigterm.recv() => { stop_signals += 1; rt.on_stop_signal("SIGTERM", stop_signals); }
            _ = sigint.recv() => { stop_signals += 1; rt.on_stop_signal("SIGINT", stop_signals); }
            _ = sighup.recv() => rt.reload(),
            _ = tree_poll.tick(), if !rt.watched_trees.is_empty() => rt.poll_trees(),
            _ = housekeeping.tick() => rt.rotate_logs(),
            // From this loop and nowhere else: if it is wedged, systemd stops hearing from it.
            _ = watchdog.tick(), if watchdog_every.is_some() => {
                if let Some(sd) = &rt.systemd {
                    sd.notify("WATCHDOG=1");
                }
            }
            n = api_rx.recv_many(&mut api_requests, 1024) => {
                for request in api_requests.drain(..n) {
                    rt.on_api(request);
                }
            }
            _ = publish_tick.tick(), if rt.publisher.enabled() => {
                rt.publisher.tick(&rt.sup, now());
                publish_only = true;
            }
        }
        rt.execute();
        rt.sweep_escaped();
        if std::mem::take(&mut orphans_exited) {
            for (pid, status) in children.reap_orphans() {
                debug!("reaped orphan {pid} ({status})");
            }
        }
        if !publish_only {
            rt.publisher.touch(now());
        }
        if rt.sup.is_shutting_down() && rt.sup.is_idle() {
            break;
        }
    }
    let _ = fs::remove_file(api::addr_file(&state_dir));
    rt.record_vigil(AuditEntry::new(
        None,
        AuditAction::VigilStop,
        "every agent stopped; vigil exits",
    ));
    rt.save_state();
    info!("all agents stopped; bye");
    Ok(())
}

impl Runtime {
    fn start(&mut self, saved: SavedState) {
        let now = now();
        let mut adopted = 0;
        for agent in self.config.agents.clone() {
            let memory = saved.agents.get(&agent.name).map(|s| memory_of(s, now));
            let id = self.sup.add(agent.spec(), memory);
            let log = logs::log_path(&self.config.logs_dir(), &agent.name);
            self.slots.insert(
                id,
                Slot {
                    config: agent,
                    log,
                    run: None,
                    log_start: 0,
                },
            );
        }
        for (name, saved_agent) in &saved.agents {
            let Some(run) = &saved_agent.run else {
                continue;
            };
            if !ProcessDriver::same_process(run.pid, run.start_time) {
                continue;
            }
            match self.sup.id(name) {
                Some(id) => {
                    let since = now.mono_of(run.started_ms).unwrap_or(now.mono);
                    self.sup.adopt(now, id, run.pid, since);
                    if let Some(slot) = self.slots.get_mut(&id) {
                        slot.run = Some(run.clone());
                    }
                    self.watch_exit(id, run.pid);
                    adopted += 1;
                }
                None => {
                    warn!(
                        "{name} (pid {}) is still running but no longer in the configuration; stopping it",
                        run.pid
                    );
                    self.driver.signal(
                        run.pid,
                        &run.run_tag,
                        vigil_core::Signal::TERM,
                        &self.driver.snapshot(),
                    );
                }
            }
        }
        // The API knows every agent before anyone can read that vigil has started.
        self.publisher.publish(&self.sup, now);
        self.record_vigil(
            AuditEntry::new(
                None,
                AuditAction::VigilStart,
                format!(
                    "vigil {} started with {} agents from {}",
                    env!("CARGO_PKG_VERSION"),
                    self.config.agents.len(),
                    self.config.path.display()
                ),
            )
            .meta("pid", self.driver.self_pid())
            .meta("adopted", adopted),
        );
        info!(
            "supervising {} agents from {} (state dir {})",
            self.config.agents.len(),
            self.config.path.display(),
            self.config.state_dir.display()
        );
        self.sup.start_all(now);
        self.execute();
    }

    /// Audit records about vigil itself (not decided by the core).
    fn record_vigil(&mut self, entry: AuditEntry) {
        log_entry(&entry);
        match self.journal.append([&entry], SystemTime::now()) {
            Ok(records) => self.publisher.records(&records),
            Err(e) => error!(
                "cannot write the audit journal {}: {e}",
                self.journal.path().display()
            ),
        }
    }

    /// Run the core's actions. The audit records of each batch are written and synced
    /// before any other action of the batch runs.
    fn execute(&mut self) {
        loop {
            let mut batch = Vec::new();
            while let Some(action) = self.sup.poll_action() {
                batch.push(action);
            }
            if batch.is_empty() {
                break;
            }
            let entries: Vec<&AuditEntry> = batch
                .iter()
                .filter_map(|a| match a {
                    Action::Audit(e) => Some(e),
                    _ => None,
                })
                .collect();
            if !entries.is_empty() {
                entries.iter().for_each(|e| log_entry(e));
                match self.journal.append(entries, SystemTime::now()) {
                    Ok(records) => self.publisher.records(&records),
                    // Keeping agents alive matters more than the record; say so loudly.
                    Err(e) => error!(
                        "cannot write the audit journal {}: {e}; acting without a record",
                        self.journal.path().display()
                    ),
                }
            }
            let procs = self.driver.snapshot();
            let mut probes = Vec::new();
            for action in batch {
                match action {
                    Action::RunCheck { agent, check, run } => {
                        probes.extend(self.probe_job(agent, check, run))
                    }
                    other => self.perform(other, &procs),
                }
            }
            self.checks.run_batch(probes);
        }
        if self.sup.take_dirty() {
            self.save_state();
        }
    }

    fn perform(&mut self, action: Action, procs: &Snapshot) {
        match action {
            Action::Audit(_) => {}
            Action::Spawn { agent } => self.spawn(agent),
            Action::Signal { agent, pid, signal } => {
                if let Some(tag) = self.run_tag(agent, pid) {
                    debug!("sending {signal} to the process tree of pid {pid}");
                    self.driver.signal(pid, &tag, signal, procs);
                }
            }
            Action::Kill { agent, pid } => {
                if let Some(tag) = self.run_tag(agent, pid) {
                    self.driver.kill(pid, &tag, procs);
                }
            }
            Action::WatchTree { agent, pid } => {
                if let Some(tag) = self.run_tag(agent, pid) {
                    self.watched_trees.insert((agent, pid), tag);
                }
            }
            Action::Forget { agent } => {
                if let Some(slot) = self.slots.remove(&agent) {
                    self.casebook.forget(&slot.config.name);
                }
            }
            Action::Investigate { agent, pid } => self.investigate(agent, pid),
            Action::Diagnosed { agent, report } => self.diagnosed(agent, *report),
            Action::RunCheck { agent, check, run } => {
                self.checks
                    .run_batch(self.probe_job(agent, check, run).into_iter().collect());
            }
        }
    }

    fn probe_job(&self, agent: AgentId, check: usize, run: u64) -> Option<ProbeJob> {
        let slot = self.slots.get(&agent)?;
        Some(ProbeJob {
            agent,
            check,
            run,
            config: slot.config.checks.get(check)?.clone(),
            ctx: ProbeContext {
                agent: slot.config.name.clone(),
                instance: slot.config.instance.clone(),
                pid: slot.run.as_ref().map(|r| r.pid),
                cwd: slot.config.cwd.clone(),
            },
        })
    }

    fn run_tag(&self, agent: AgentId, pid: u32) -> Option<String> {
        let run = self.slots.get(&agent)?.run.as_ref()?;
        (run.pid == pid).then(|| run.run_tag.clone())
    }

    fn spawn(&mut self, agent: AgentId) {
        self.run_seq += 1;
        let Some(slot) = self.slots.get_mut(&agent) else {
            return;
        };
        let tag = format!(
            "{}#{}.{}",
            slot.config.name,
            self.driver.self_pid(),
            self.run_seq
        );
        if let Err(e) =
            logs::rotate_if_needed(&slot.log, slot.config.log_max_size, slot.config.log_keep)
        {
            warn!(
                "{}: cannot rotate {}: {e}",
                slot.config.name,
                slot.log.display()
            );
        }
        slot.log_start = std::fs::metadata(&slot.log).map(|m| m.len()).unwrap_or(0);
        let mut extra_env = Vec::new();
        if slot.config.uses_notify()
            && let Some(socket) = &self.notify_socket
        {
            extra_env.push(("NOTIFY_SOCKET".to_string(), socket.clone()));
        }
        let result = self.driver.spawn(&Launch {
            agent: &slot.config,
            log: &slot.log,
            run_tag: &tag,
            extra_env: &extra_env,
        });
        let now = now();
        match result {
            Ok(pid) => {
                slot.run = Some(SavedRun {
                    pid,
                    start_time: ProcessDriver::start_time(pid).unwrap_or_default(),
                    started_ms: now.wall_ms,
                    run_tag: tag,
                });
                self.watch_exit(agent, pid);
                self.sup.handle(now, Event::Spawned { agent, pid });
            }
            Err(error) => {
                slot.run = None;
                self.sup.handle(now, Event::SpawnFailed { agent, error });
            }
        }
    }

    /// Watch a main process through its pidfd; the loop polls the watch.
    fn watch_exit(&mut self, agent: AgentId, pid: u32) {
        self.live.insert(pid, agent);
        if self
            .slots
            .get(&agent)
            .is_some_and(|s| s.config.uses_notify())
        {
            self.notify_senders
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(pid, agent);
        }
        let watch: ExitFuture = match ExitWatch::new(pid) {
            Ok(watch) => Box::pin(async move { (agent, pid, watch.wait().await) }),
            // The process is already gone (and reaped): report it as an exit now.
            Err(e) => {
                debug!("cannot watch pid {pid} ({e}); treating it as exited");
                Box::pin(std::future::ready((agent, pid, ExitStatus::unknown())))
            }
        };
        self.new_watches.push(watch);
    }

    fn on_exit(&mut self, agent: AgentId, pid: u32, status: ExitStatus) {
        self.live.remove(&pid);
        self.notify_senders
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&pid);
        self.driver.forget(pid);
        let Some(tag) = self.run_tag(agent, pid) else {
            return;
        };
        self.send_log_tail(agent, pid);
        let stopping = self
            .sup
            .agent(agent)
            .is_some_and(|a| a.state() == vigil_core::AgentState::Stopping);
        // A stop waits for the whole tree; a crash only needs the cheap group check now, and
        // escaped orphans are swept after the replacement has started.
        let tree_alive = if stopping {
            self.driver.tree_alive(pid, &tag)
        } else {
            self.sweeps.push(tag);
            self.driver.group_alive(pid)
        };
        self.sup.handle(
            now(),
            Event::Exited {
                agent,
                pid,
                status,
                tree_alive,
            },
        );
    }

    fn on_api(&mut self, request: ApiRequest) {
        match request {
            ApiRequest::Command {
                target,
                command,
                by,
                note,
                reply,
            } => {
                let result = self.api_command(&target, command, by, note.as_deref());
                // The answer goes out with a picture that already shows its effect.
                self.execute();
                self.publisher.publish(&self.sup, now());
                let _ = reply.send(result);
            }
            ApiRequest::Heartbeat { agent } => {
                self.publisher.take_heartbeat(&agent);
                if let Some(id) = self.sup.id(&agent) {
                    self.sup.api_heartbeat(now(), id);
                }
            }
            ApiRequest::Denied { what } => self
                .record_vigil(AuditEntry::new(None, AuditAction::ApiDenied, what).unsuccessful()),
        }
    }

    /// A command for one agent, or for every instance when `target` is a template.
    fn api_command(
        &mut self,
        target: &str,
        command: vigil_core::Command,
        by: vigil_core::Requester,
        note: Option<&str>,
    ) -> Result<Vec<CommandResult>, String> {
        let ids: Vec<AgentId> = match self.sup.id(target) {
            Some(id) => vec![id],
            None => self
                .sup
                .agents()
                .filter(|a| a.spec().template.as_deref() == Some(target))
                .map(|a| a.id())
                .collect(),
        };
        if ids.is_empty() {
            let mut known: Vec<&str> = Vec::new();
            for a in self.sup.agents() {
                known.push(a.name());
                known.extend(a.spec().template.as_deref());
            }
            return Err(api::unknown_agent_message(target, known.into_iter()));
        }
        let now = now();
        let mut results = Vec::with_capacity(ids.len());
        for id in ids {
            let Some(name) = self.sup.agent(id).map(|a| a.name().to_string()) else {
                continue;
            };
            let result = match self.sup.command_with_note(now, id, command, by, note) {
                Some(Ok(outcome)) => CommandResult {
                    agent: name,
                    ok: true,
                    outcome: outcome.to_string(),
                },
                Some(Err(e)) => CommandResult {
                    agent: name,
                    ok: false,
                    outcome: e.to_string(),
                },
                None => continue,
            };
            results.push(result);
        }
        Ok(results)
    }

    /// The evidence a failure is diagnosed from: the run's last log lines, redacted. Read
    /// before the exit is handled, so the decision can use it (≈ 30 µs for 50 lines).
    fn send_log_tail(&mut self, agent: AgentId, pid: u32) {
        let n = self.config.diagnosis.log_lines;
        let Some(slot) = self.slots.get(&agent) else {
            return;
        };
        if n == 0 {
            return;
        }
        let lines = evidence::log_tail(&slot.log, n, slot.log_start);
        self.sup.handle(now(), Event::LogTail { agent, pid, lines });
    }

    /// A stalled agent, still alive: gather its evidence off the loop (the evidence command
    /// may take seconds) and answer with `LogTail`.
    fn investigate(&mut self, agent: AgentId, pid: u32) {
        let Some(slot) = self.slots.get(&agent) else {
            return;
        };
        let (log, from, n) = (
            slot.log.clone(),
            slot.log_start,
            self.config.diagnosis.log_lines,
        );
        let command = slot.config.evidence.clone();
        let cwd = slot.config.cwd.clone();
        let children = self.children.clone();
        let events = self.edge_tx.clone();
        self.io.spawn(async move {
            let mut lines = evidence::log_tail(&log, n, from);
            if let Some(command) = command {
                lines.extend(evidence::command_output(&command, pid, cwd, &children).await);
            }
            let _ = events.send(Event::LogTail { agent, pid, lines });
        });
    }

    /// A failure was judged: keep it for `vigil explain`, count it, and ask the advisor.
    fn diagnosed(&mut self, agent: AgentId, report: FailureReport) {
        let Some(slot) = self.slots.get(&agent) else {
            return;
        };
        let name = slot.config.name.clone();
        let verdict = &report.verdict;
        self.metrics
            .diagnosed(verdict.category.as_str(), verdict.source);
        self.casebook.open(&name, now().wall_ms, report.clone());
        if !report.ask_advisor {
            return;
        }
        let pid = report.pid;
        let events = self.edge_tx.clone();
        let Some(advisor) = self.advisor.clone() else {
            let advice = Err("no advisor is configured any more".to_string());
            let _ = events.send(Event::Advice { agent, pid, advice });
            return;
        };
        let (casebook, live) = (self.casebook.clone(), self.metrics.clone());
        self.io.spawn(async move {
            let advice = advisor.advise(&name, &report).await;
            match &advice {
                Ok(d) => live.diagnosed(d.category.as_str(), "llm"),
                Err(e) => warn!("{name}: no advice from the LLM advisor: {e}"),
            }
            casebook.advised(&name, pid, &advice);
            let _ = events.send(Event::Advice { agent, pid, advice });
        });
    }

    fn sweep_escaped(&mut self) {
        for tag in std::mem::take(&mut self.sweeps) {
            for orphan in self.driver.escaped_orphans(&tag) {
                warn!("killing pid {orphan}, left behind by the ended run {tag}");
                self.driver.kill_pid(orphan);
            }
        }
    }

    /// Report `TreeEmpty` for every watched run of which nothing is left (one /proc read
    /// for all of them).
    fn poll_trees(&mut self) {
        let procs = self.driver.snapshot();
        let gone: Vec<(AgentId, u32)> = self
            .watched_trees
            .iter()
            .filter(|(key, tag)| self.driver.members(key.1, tag, &procs).is_empty())
            .map(|(key, _)| *key)
            .collect();
        for (agent, pid) in gone {
            self.watched_trees.remove(&(agent, pid));
            self.sup.handle(now(), Event::TreeEmpty { agent, pid });
        }
    }

    fn on_stop_signal(&mut self, name: &str, count: u32) {
        let now = now();
        if count == 1 {
            info!("{name}: stopping every agent (send it again to kill them at once)");
            if let Some(sd) = &self.systemd {
                sd.notify("STOPPING=1\nSTATUS=stopping every agent");
            }
            self.sup.shutdown(now);
        } else {
            warn!("{name} again: killing every agent that is still stopping");
            self.sup.hurry(now);
        }
    }

    /// SIGHUP: apply a changed config, or refuse a broken one without touching anything.
    fn reload(&mut self) {
        let loaded = config::load(&self.config.path, self.state_dir_override.as_deref());
        let new = match loaded {
            Ok(c) if c.state_dir != self.config.state_dir => {
                let msg = format!(
                    "state_dir cannot change while vigil runs ({} → {}); restart vigil for that",
                    self.config.state_dir.display(),
                    c.state_dir.display()
                );
                error!("reload refused: {msg}");
                self.record_vigil(
                    AuditEntry::new(None, AuditAction::VigilReload, "reload refused").failed(msg),
                );
                return;
            }
            Ok(c) => c,
            Err(e) => {
                error!("reload refused, nothing changed:\n{e}");
                let summary = match &e {
                    config::LoadError::Invalid(errs) => errs.locations().join("; "),
                    other => other.to_string(),
                };
                self.record_vigil(
                    AuditEntry::new(
                        None,
                        AuditAction::VigilReload,
                        "reload refused: the config has errors",
                    )
                    .failed(summary),
                );
                return;
            }
        };
        // New settings must be in place before the core restarts anything with them.
        for agent in &new.agents {
            if let Some(id) = self.sup.id(&agent.name)
                && let Some(slot) = self.slots.get_mut(&id)
            {
                slot.config = agent.clone();
            }
        }
        let report = self
            .sup
            .reconcile(now(), new.agents.iter().map(AgentConfig::spec).collect());
        for agent in &new.agents {
            if let Some(id) = self.sup.id(&agent.name) {
                self.slots.entry(id).or_insert_with(|| Slot {
                    log: logs::log_path(&new.logs_dir(), &agent.name),
                    config: agent.clone(),
                    run: None,
                    log_start: 0,
                });
            }
        }
        self.record_vigil(
            AuditEntry::new(
                None,
                AuditAction::VigilReload,
                format!(
                    "reloaded {}: {} added, {} removed, {} restarted, {} updated in place, {} unchanged",
                    new.path.display(),
                    report.added.len(),
                    report.removed.len(),
                    report.restarted.len(),
                    report.updated.len(),
                    report.unchanged
                ),
            )
            .meta("added", report.added.clone())
            .meta("removed", report.removed.clone())
            .meta("restarted", report.restarted.clone())
            .meta("updated", report.updated.clone()),
        );
        if new.diagnosis.llm != self.config.diagnosis.llm {
            self.advisor = make_advisor(&new, &self.metrics);
        }
        self.config = new;
    }

    fn rotate_logs(&mut self) {
        for slot in self.slots.values() {
            if slot.run.is_none() {
                continue;
            }
            match logs::rotate_if_needed(&slot.log, slot.config.log_max_size, slot.config.log_keep)
            {
                Ok(true) => debug!("{}: rotated {}", slot.config.name, slot.log.display()),
                Ok(false) => {}
                Err(e) => warn!(
                    "{}: cannot rotate {}: {e}",
                    slot.config.name,
                    slot.log.display()
                ),
            }
        }
    }

    fn save_state(&mut self) {
        let now = now();
        let mut state = SavedState {
            version: 1,
            vigil_pid: self.driver.self_pid(),
            agents: Default::default(),
        };
        for agent in self.sup.agents() {
            let m = agent.memory();
            let run = self
                .slots
                .get(&agent.id())
                .and_then(|s| s.run.clone())
                .filter(|r| agent.pid() == Some(r.pid));
            state.agents.insert(
                agent.name().to_string(),
                SavedAgent {
                    restarts_ms: m.restarts.iter().map(|t| now.wall_of(*t)).collect(),
                    total_restarts: m.total_restarts,
                    held: m.held,
                    quarantined: m.quarantined,
                    crash_streak: m.crash_streak,
                    escalated: m.escalated,
                    run,
                },
            );
        }
        if let Err(e) = self.store.save(&state) {
            warn!(
                "cannot save {}: {e}",
                self.config.state_dir.join("state.json").display()
            );
        }
    }
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

/// Every audit record also goes to vigil's own log, readable at a glance.
fn log_entry(entry: &AuditEntry) {
    let who = entry.agent.as_deref().unwrap_or("vigil");
    let detail = match &entry.error {
        Some(e) => format!("{} ({e})", entry.reason),
        None => entry.reason.clone(),
    };
    if entry.success {
        info!("{who}: {} — {detail}", entry.action.as_str());
    } else {
        warn!("{who}: {} — {detail}", entry.action.as_str());
    }
}
