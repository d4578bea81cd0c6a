//! The loop's synchronous half: one input at a time, with one `now`, handed to the core; then
//! the core's actions, each batch's audit records written (and synced) before any of its
//! other actions runs; then what changed goes to persistence and to readers. No `.await`.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use tracing::{error, info, warn};
use vigil_core::records;
use vigil_core::{Action, AgentId, AuditEntry, Changes, Event, Now, Supervisor};

use super::executor::Executor;
use super::fleet::Fleet;
use super::offload::Offload;
use super::rotation::LogFile;
use crate::api::{ApiRequest, CommandRefused, CommandResult, PendingHeartbeats, ReloadAnswer};
use crate::driver::exits::Exit;
use crate::notifications::Notifier;

type ReloadReply = tokio::sync::oneshot::Sender<Result<ReloadAnswer, CommandRefused>>;
use crate::audit::Journal;
use crate::config::{self, AgentConfig, Config};
use crate::health::Health;
use crate::state::SavedAgent;
use crate::systemd::Systemd;
use crate::view::Publisher;

/// What woke the loop.
pub enum Input {
    Exits(Vec<Exit>),
    Events(Vec<Event>),
    Api(Vec<ApiRequest>),
    /// The core's earliest deadline passed, `late` ago.
    Timer {
        late: std::time::Duration,
    },
    /// SIGCHLD: orphans (inherited as subreaper) may wait to be reaped.
    Orphans,
    /// SIGTERM or SIGINT.
    Stop(&'static str),
    /// SIGHUP.
    Reload,
    /// Records wait for the journal: try to write them again.
    RetryJournal,
    Config(Box<Result<Config, config::LoadError>>),
    /// A change waits to be shown.
    Publish,
    Watchdog,
    /// Records from the edges' own threads (deliveries of notifications), to be journaled.
    Records(Vec<AuditEntry>),
    /// A source closed for good (its arm is disabled from now on).
    Closed(&'static str),
}

pub struct Handler {
    pub sup: Supervisor,
    pub fleet: Fleet,
    pub exec: Executor,
    pub journal: Journal,
    pub publisher: Publisher,
    pub offload: Offload,
    pub health: Arc<Health>,
    pub pending_heartbeats: PendingHeartbeats,
    pub config: Config,
    pub state_dir_override: Option<PathBuf>,
    pub systemd: Option<Systemd>,
    /// Where records worth telling people go (`[notify]`): started with the first channel.
    pub notifier: Option<Notifier>,
    /// Where the notifier sends the records of its deliveries, to be journaled.
    pub records: Option<tokio::sync::mpsc::UnboundedSender<AuditEntry>>,
    stop_signals: u32,
    /// A config is being read; another SIGHUP meanwhile reads it once more after.
    reload_in_flight: bool,
    reload_again: bool,
    /// `vigil reload`s waiting for the config being read now, and for the one after (a
    /// request that came while a read was under way is answered by a read that began after
    /// it, so it sees the file as it was when asked).
    reload_waiting: Vec<ReloadReply>,
    reload_waiting_next: Vec<ReloadReply>,
    /// When the journal last failed to be written.
    journal_failed_at: std::time::Instant,
}

/// How soon records that wait for the journal are tried again when nothing else is written.
const JOURNAL_RETRY: std::time::Duration = std::time::Duration::from_secs(5);
/// A timer that fires this late means the loop itself did not run (vigil stopped, or starved):
/// a healthy loop is never more than milliseconds late.
const LOOP_STALLED: std::time::Duration = std::time::Duration::from_secs(1);

impl Handler {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        sup: Supervisor,
        exec: Executor,
        journal: Journal,
        publisher: Publisher,
        offload: Offload,
        health: Arc<Health>,
        pending_heartbeats: PendingHeartbeats,
        config: Config,
        state_dir_override: Option<PathBuf>,
    ) -> Handler {
        Handler {
            sup,
            fleet: Fleet::default(),
            exec,
            journal,
            publisher,
            offload,
            health,
            pending_heartbeats,
            config,
            state_dir_override,
            systemd: Systemd::from_env(),
            notifier: None,
            records: None,
            stop_signals: 0,
            reload_in_flight: false,
            reload_again: false,
            reload_waiting: Vec::new(),
            reload_waiting_next: Vec::new(),
            journal_failed_at: std::time::Instant::now(),
        }
    }

    /// When records that wait for the journal are tried again (without a new decision to
    /// write, they would wait forever).
    pub fn journal_retry_due(&self) -> Option<std::time::Instant> {
        self.journal
            .is_behind()
            .then(|| self.journal_failed_at + JOURNAL_RETRY)
    }

    /// vigil is done: every agent stopped after a stop signal.
    pub fn finished(&self) -> bool {
        self.sup.is_shutting_down() && self.sup.is_idle()
    }

    pub fn turn(&mut self, now: Now, input: Input) {
        self.health.loop_wakeups.fetch_add(1, Ordering::Relaxed);
        match input {
            Input::Exits(exits) => {
                for exit in exits {
                    self.on_exit(now, exit);
                }
            }
            Input::Events(events) => {
                for event in events {
                    self.exec.note(&mut self.fleet, &event);
                    self.sup.handle(now, event);
                }
            }
            Input::Api(requests) => {
                for request in requests {
                    self.on_api(now, request);
                }
            }
            Input::Timer { late } => {
                if late >= LOOP_STALLED {
                    // Decided before the deadlines are judged: heartbeats of the stall may be
                    // unread still.
                    self.sup.loop_stalled(now, late);
                }
                self.sup.handle_timeout(now)
            }
            Input::Orphans => {
                for (pid, status) in self.exec.children.reap_orphans(self.exec.driver.self_pid()) {
                    tracing::debug!("reaped orphan {pid} ({status})");
                }
            }
            Input::Stop(name) => self.on_stop_signal(now, name),
            Input::Reload => self.request_reload(),
            Input::Config(loaded) => self.apply_reload(now, *loaded),
            Input::Publish => {}
            Input::RetryJournal => self.write(&[]),
            Input::Watchdog => {
                if let Some(sd) = &self.systemd {
                    sd.notify("WATCHDOG=1");
                }
            }
            Input::Records(entries) => self.write(&entries.iter().collect::<Vec<_>>()),
            Input::Closed(source) => self.on_closed(source),
        }
        self.settle(now);
    }

    /// Carry out everything the core decided, then pass on what changed.
    pub fn settle(&mut self, now: Now) {
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
            self.write(&entries);
            let mut outcomes = Vec::new();
            for action in batch {
                if !matches!(action, Action::Audit(_))
                    && let Some(event) = self.exec.perform(&mut self.fleet, action, now)
                {
                    outcomes.push(event);
                }
            }
            self.exec.finish_batch();
            for event in outcomes {
                self.sup.handle(now, event);
            }
        }
        let changes = self.sup.take_changes();
        self.persist(&changes, now);
        self.publisher.note(&changes);
        if self.publisher.due().is_some_and(|at| at <= now.mono) {
            self.publisher.publish(&self.sup, now);
        }
    }

    /// Journal records: logged, written and synced; on failure kept for the next write (the
    /// journal's own backlog) and the failure shows in `/health`.
    pub fn write(&mut self, entries: &[&AuditEntry]) {
        if entries.is_empty() && !self.journal.is_behind() {
            return;
        }
        let was_failing = self.health.journal.failing.load(Ordering::Relaxed);
        entries.iter().for_each(|e| log_entry(e));
        let (written, result) = self
            .journal
            .append(entries.iter().copied(), SystemTime::now());
        match result {
            Ok(()) if was_failing => info!(
                "the audit journal {} is written again; the records that waited are in it",
                self.journal.path().display()
            ),
            Ok(()) => {}
            Err(e) if !was_failing => {
                self.journal_failed_at = std::time::Instant::now();
                error!(
                    "{e}; supervising on — records wait in memory and are written once it can be"
                )
            }
            Err(_) => self.journal_failed_at = std::time::Instant::now(),
        }
        self.publisher.records(&written, &self.sup);
        if let Some(n) = &self.notifier {
            n.offer(&written);
        }
        if let Some(c) = &self.exec.cluster
            && !written.is_empty()
        {
            c.journal_written();
        }
    }

    fn persist(&mut self, changes: &Changes, now: Now) {
        // Forgotten first: a name forgotten and added again in one turn keeps its new state.
        let mut out: Vec<(String, Option<SavedAgent>)> = changes
            .forgotten
            .iter()
            .map(|(_, name)| (name.clone(), None))
            .collect();
        for id in &changes.persist {
            let Some(agent) = self.sup.agent(*id) else {
                continue;
            };
            let m = agent.memory();
            let run = self
                .fleet
                .get(*id)
                .and_then(|s| s.run.as_ref())
                .filter(|r| agent.run() == Some(r.id))
                .map(|r| r.saved.clone());
            out.push((
                agent.name().to_string(),
                Some(SavedAgent {
                    restarts_ms: m.restarts.iter().map(|t| now.wall_of(*t)).collect(),
                    total_restarts: m.total_restarts,
                    held: m.held,
                    quarantined: m.quarantined,
                    crash_streak: m.crash_streak,
                    escalated: m.escalated,
                    stalled_since_ms: m.stalled_since_ms,
                    incident: m.incident.map(|(id, c)| crate::state::SavedHold {
                        id,
                        cause: c.key,
                        cause_text: c.text,
                    }),
                    degraded: m.degraded,
                    run,
                }),
            ));
        }
        self.offload.persist(out);
    }

    fn on_exit(&mut self, now: Now, exit: Exit) {
        let Exit {
            agent,
            run,
            pid,
            status,
        } = exit;
        // A process taken over from outside vigil was never in its children or notify sets;
        // its pid may already be another's.
        if !self
            .fleet
            .run(agent, run)
            .is_some_and(|r| r.saved.taken_over())
        {
            self.exec.exited(pid);
        }
        let Some(slot) = self.fleet.get_mut(agent) else {
            return;
        };
        let Some(rec) = slot.run.as_mut().filter(|r| r.id == run) else {
            return;
        };
        rec.main_gone = Some(super::fleet::MainGone {
            tick: crate::driver::proctree::now_ticks(),
        });
        let tag = rec.saved.run_tag.clone();
        let slot = &*slot;
        // The evidence a failure is judged from, read before the exit is handled (≈ 30 µs
        // for 50 lines).
        if self.exec.log_lines > 0 {
            let (n, secrets) = (self.exec.log_lines, slot.secrets());
            let lines = crate::evidence::log_tail(&slot.log, n, slot.log_start, &secrets);
            self.sup.handle(now, Event::LogTail { agent, run, lines });
        }
        let tree_alive = self.exec.driver.group_alive(pid);
        let escaped = self.exec.driver.escaped_orphans(&tag);
        let gone = !tree_alive && escaped.is_empty();
        self.sup.handle(
            now,
            Event::Exited {
                agent,
                run,
                status,
                tree_alive,
                escaped,
            },
        );
        if gone {
            self.exec.driver.remove_cgroup(&tag);
        }
    }

    fn on_api(&mut self, now: Now, request: ApiRequest) {
        match request {
            ApiRequest::Command {
                target,
                command,
                by,
                note,
                reply,
            } => {
                let result = self.api_command(now, &target, command, by, note.as_deref());
                // The answer goes out with a picture that already shows its effect.
                self.settle(now);
                self.publisher.publish(&self.sup, now);
                let _ = reply.send(result);
            }
            ApiRequest::Heartbeat { agent } => {
                self.pending_heartbeats
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&agent);
                if let Some(id) = self.sup.id(&agent) {
                    self.sup.api_heartbeat(now, id);
                }
            }
            ApiRequest::Denied { what } => self.write(&[&records::api_denied(what)]),
            ApiRequest::Status {
                agent,
                run,
                declared,
                reply,
            } => {
                let Some(id) = self.sup.id(&agent) else {
                    let known = crate::runtime::fleet::Fleet::known_names(&self.sup);
                    let message = crate::api::unknown_agent_message(&agent, known.into_iter());
                    let _ = reply.send(Err(crate::api::CommandRefused::UnknownAgent(message)));
                    return;
                };
                let declared = match declared {
                    vigil_core::Declared::Degraded { reason, until } => {
                        let secrets = self.fleet.get(id).map(|s| s.secrets()).unwrap_or_default();
                        vigil_core::Declared::Degraded {
                            reason: crate::redact::line_with(&reason, &secrets),
                            until,
                        }
                    }
                    ok => ok,
                };
                let answer = self.sup.declare(now, id, run, declared);
                self.settle(now);
                let _ = reply.send(Ok(crate::api::StatusAnswer::of(&agent, answer)));
            }
            ApiRequest::Alerts {
                receiver,
                status,
                alerts,
                reply,
            } => {
                // Taken only when it can be recorded: otherwise a 503, and Alertmanager sends
                // it again later.
                if let Err(refused) = self.journal_gate() {
                    let _ = reply.send(Err(refused));
                    return;
                }
                let answer = self.sup.alerts(now, &receiver, &status, alerts);
                self.settle(now);
                let _ = reply.send(Ok(answer));
            }
            ApiRequest::Ping { reply } => {
                let _ = reply.send(());
            }
            ApiRequest::Reload { by, reply } => {
                if let Err(refused) = self.journal_gate() {
                    let _ = reply.send(Err(refused));
                    return;
                }
                info!("reload asked by {}", by.as_str());
                if self.reload_in_flight {
                    self.reload_waiting_next.push(reply);
                } else {
                    self.reload_waiting.push(reply);
                }
                self.request_reload();
            }
            ApiRequest::Shutdown { by, reply } => {
                if let Err(refused) = self.journal_gate() {
                    let _ = reply.send(Err(refused));
                    return;
                }
                let live = self.sup.agents().filter(|a| a.is_live()).count();
                let _ = reply.send(Ok(live));
                // Asking again (a retried `vigil shutdown`) changes nothing: only a second
                // signal means "kill them now".
                if self.stop_signals == 0 {
                    self.on_stop_signal(now, &format!("shutdown asked by {}", by.as_str()));
                }
            }
        }
    }

    /// What a person changes must be on the record: while records wait for the journal, one
    /// more try (space may have been freed), else no change.
    fn journal_gate(&mut self) -> Result<(), CommandRefused> {
        if self.journal.is_behind() {
            self.write(&[]);
        }
        match self
            .journal
            .last_error()
            .filter(|_| self.journal.is_behind())
        {
            Some(error) => Err(CommandRefused::JournalUnwritable {
                path: self.journal.path().to_path_buf(),
                error: error.to_string(),
            }),
            None => Ok(()),
        }
    }

    fn answer_reloads(&mut self, answer: ReloadAnswer) {
        for reply in self.reload_waiting.drain(..) {
            let _ = reply.send(Ok(answer.clone()));
        }
    }

    /// A command for one agent, or for every instance when `target` is a template.
    fn api_command(
        &mut self,
        now: Now,
        target: &str,
        command: vigil_core::Command,
        by: vigil_core::Requester,
        note: Option<&str>,
    ) -> Result<Vec<CommandResult>, CommandRefused> {
        let ids: Vec<AgentId> = Fleet::resolve(&self.sup, target);
        if ids.is_empty() {
            let known = Fleet::known_names(&self.sup);
            let message = crate::api::unknown_agent_message(target, known.into_iter());
            return Err(CommandRefused::UnknownAgent(message));
        }
        self.journal_gate()?;
        let mut results = Vec::with_capacity(ids.len());
        for id in ids {
            let Some(name) = self.sup.agent(id).map(|a| a.name().to_string()) else {
                continue;
            };
            let (ok, outcome) = match self.sup.command_with_note(now, id, command, by, note) {
                Some(Ok(outcome)) => (true, outcome.to_string()),
                Some(Err(e)) => (false, e.to_string()),
                None => continue,
            };
            results.push(CommandResult {
                agent: name,
                ok,
                outcome,
            });
        }
        Ok(results)
    }

    fn on_stop_signal(&mut self, now: Now, name: &str) {
        self.stop_signals += 1;
        if self.stop_signals == 1 {
            crate::crash::note_stopping();
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

    fn on_closed(&mut self, source: &'static str) {
        match source {
            "notify" => {
                self.health.notify_down.store(true, Ordering::Relaxed);
                error!(
                    "the notify socket's reader stopped: notify checks see no heartbeats any more"
                );
            }
            "offload" => {
                error!("the offload worker stopped: reloads and log rotation no longer work")
            }
            // The API is off, or its server has stopped: nothing to hear from any more.
            _ => {}
        }
    }

    /// SIGHUP: read the config on the offload worker; it comes back as `Input::Config`.
    fn request_reload(&mut self) {
        if crate::crash::failpoint("panic-on-reload") {
            panic!("failpoint panic-on-reload");
        }
        if self.reload_in_flight {
            self.reload_again = true;
            return;
        }
        self.reload_in_flight = true;
        self.offload
            .load_config(self.config.path.clone(), self.state_dir_override.clone());
    }

    /// Apply a changed config, or refuse a broken one without touching anything.
    fn apply_reload(&mut self, now: Now, loaded: Result<Config, config::LoadError>) {
        self.reload_in_flight = false;
        let answer = self.reload(now, loaded);
        self.answer_reloads(answer);
        self.reload_waiting = std::mem::take(&mut self.reload_waiting_next);
        if std::mem::take(&mut self.reload_again) {
            self.request_reload();
        }
    }

    fn reload(&mut self, now: Now, loaded: Result<Config, config::LoadError>) -> ReloadAnswer {
        let mut new = match loaded {
            Ok(c) if c.state_dir != self.config.state_dir => {
                let msg = format!(
                    "state_dir cannot change while vigil runs ({} → {}); restart vigil for that",
                    self.config.state_dir.display(),
                    c.state_dir.display()
                );
                error!("reload refused: {msg}");
                self.write(&[&records::vigil_reload_refused("reload refused", &msg)]);
                return ReloadAnswer::refused(msg);
            }
            Ok(c) => c,
            Err(e) => {
                error!("reload refused, nothing changed:\n{e}");
                let summary = match &e {
                    config::LoadError::Invalid(errs) => errs.locations().join("; "),
                    other => other.to_string(),
                };
                self.write(&[&records::vigil_reload_refused(
                    "reload refused: the config has errors",
                    &summary,
                )]);
                // Places and messages, not the file's lines: those may hold a token or an
                // inline secret, and the API answers whoever may ask for a reload.
                return ReloadAnswer::refused(match &e {
                    config::LoadError::Invalid(errs) => errs.locations().join("\n"),
                    other => other.to_string(),
                });
            }
        };
        if new.cluster != self.config.cluster {
            // Leases, their timing and this node's name must not change under running agents,
            // and exclusive agents' stop timeouts were checked against the new lease, not the
            // one in force.
            let msg = "[cluster] changed: it can only change with a restart of vigil (systemctl restart vigil); nothing was applied".to_string();
            error!("reload refused: {msg}");
            self.write(&[&records::vigil_reload_refused("reload refused", &msg)]);
            return ReloadAnswer::refused(msg);
        }
        let agents = std::mem::take(&mut new.agents);
        // New settings must be in place before the core restarts anything with them.
        for agent in &agents {
            if let Some(id) = self.sup.id(&agent.name)
                && let Some(slot) = self.fleet.get_mut(id)
            {
                *slot.config = agent.clone();
            }
        }
        let report = self
            .sup
            .reconcile(now, agents.iter().map(AgentConfig::spec).collect());
        // The configs live in the fleet (one copy each).
        for agent in agents {
            if let Some(id) = self.sup.id(&agent.name)
                && self.fleet.get(id).is_none()
            {
                self.fleet.insert(id, agent, &new.logs_dir());
            }
        }
        self.write(&[&records::vigil_reloaded(
            &new.path.display().to_string(),
            &report,
        )]);
        if new.diagnosis.llm != self.config.diagnosis.llm {
            self.exec.advisor = super::make_advisor(&new, &self.exec.metrics);
        }
        self.exec.log_lines = new.diagnosis.log_lines;
        self.sup.set_incident_policy(new.incidents.clone());
        self.sup
            .set_runbooks(new.runbooks.clone(), super::alert_policy(&new));
        let channels_changed = new.notify != self.config.notify;
        if new.store != self.config.store {
            // Agents' checkpoints must not move under them mid-run: a new store is opened
            // by the next vigil.
            tracing::warn!(
                "[store] changed: it takes effect at the next start of vigil; checkpoints stay in {} until then",
                self.config.store.url.as_deref().map_or_else(
                    || "the state dir's checkpoints.db".to_string(),
                    crate::redact::url
                )
            );
        }
        let mut new = new;
        new.store = self.config.store.clone();
        new.cluster = self.config.cluster.clone();
        new.node = self.config.node.clone();
        self.config = new;
        if let (Some(cluster), Some(c)) = (&self.exec.cluster, &self.config.cluster) {
            let sup = &self.sup;
            cluster.send(crate::cluster::ToCluster::Candidates(
                crate::cluster::candidates(&c.node, self.fleet.slots().map(|s| &*s.config), |n| {
                    sup.id(n)
                }),
            ));
        }
        if channels_changed {
            match &mut self.notifier {
                Some(n) => n.reconfigure(self.config.notify.clone()),
                None => self.start_notifier(),
            }
        }
        self.configured();
        ReloadAnswer::of(&report)
    }

    /// The notification thread, once there is a channel (a vigil that tells nobody runs none).
    pub fn start_notifier(&mut self) {
        if self.notifier.is_some() || self.config.notify.is_empty() {
            return;
        }
        let Some(records) = self.records.clone() else {
            return;
        };
        match Notifier::start(
            self.config.notify.clone(),
            &self.config.state_dir,
            &self.config.node,
            records,
            self.exec.metrics.clone(),
        ) {
            Ok(n) => self.notifier = Some(n),
            Err(e) => warn!("cannot start the notification thread ({e}): nobody will be told"),
        }
    }

    /// Tell the offload worker which logs to keep rotated, and `/health` whether a notify
    /// socket is needed (after startup and every reload).
    pub fn configured(&self) {
        self.health.notify_needed.store(
            self.fleet.slots().any(|s| s.config.uses_notify()),
            Ordering::Relaxed,
        );
        self.offload.logs(self.log_files());
    }

    /// The logs the offload worker keeps rotated.
    fn log_files(&self) -> Vec<LogFile> {
        self.fleet
            .slots()
            .map(|s| LogFile {
                agent: s.config.name.clone(),
                path: s.log.clone(),
                max_size: s.config.log_max_size,
                keep: s.config.log_keep,
            })
            .collect()
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
