//! The `docker` driver: an agent that is a Docker (or Podman) container. vigil starts it,
//! signals it and reads its log through the engine's API, and learns of its end, its OOM
//! kill and its HEALTHCHECK from the engine's event stream (no polling). The container is the
//! engine's: vigil never creates or removes one, and a container cannot run twice.
//!
//! Every operation runs on the I/O runtime and answers the core with an event, like the
//! process driver's: `Looked`, `Spawned`/`SpawnFailed`, `LogTail` then `Exited`.

pub mod engine;
mod json_log;
mod own;
mod watch;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::runtime::Handle;
use tokio::sync::mpsc::UnboundedSender;
use tracing::{debug, info, warn};
use vigil_core::{
    AgentId, Event, ExitStatus, FailedAction, Observation, Outside, RunId, Signal, SpawnFailure,
};

use engine::{Engine, EngineError, Health, Seen};
pub use own::{OwnContainer, own_container};
use watch::{ContainerEvent, Death, Ended, Watches};

/// How long an operation waits for the event stream before it gives up (the engine is
/// down): a container whose end vigil could not see must not be started.
const WATCHING_WAIT: Duration = Duration::from_secs(10);

/// How long the event stream is left alone after it broke, at most.
const RECONNECT_MAX: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct DockerDriver {
    shared: Arc<Shared>,
}

struct Shared {
    /// Set once a client could be made (the engine's socket exists): the engine may start
    /// after vigil, as at boot.
    engine: std::sync::OnceLock<Engine>,
    watches: Mutex<Watches>,
    /// Container ids by the name the config gives, once inspected (and proven not vigil's
    /// own): a restart starts the id at once, without asking for it again.
    ids: Mutex<HashMap<String, String>>,
    /// True while the event stream is subscribed.
    watching: tokio::sync::watch::Sender<bool>,
    events: UnboundedSender<Event>,
    log_lines: usize,
    io: Handle,
}

impl DockerDriver {
    /// Connect to the engine and follow its events, on `io`.
    pub fn start(io: Handle, events: UnboundedSender<Event>, log_lines: usize) -> DockerDriver {
        let driver = DockerDriver {
            shared: Arc::new(Shared {
                engine: std::sync::OnceLock::new(),
                watches: Mutex::new(Watches::default()),
                ids: Mutex::new(HashMap::new()),
                watching: tokio::sync::watch::channel(false).0,
                events,
                log_lines,
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
        let _ = self.shared.events.send(event);
    }

    /// The engine, once its events are followed: an exit that could not be seen must not
    /// follow a start.
    async fn ready(&self) -> Result<&Engine, EngineError> {
        let mut watching = self.shared.watching.subscribe();
        match tokio::time::timeout(WATCHING_WAIT, watching.wait_for(|w| *w)).await {
            Ok(Ok(_)) => self.shared.engine.get().ok_or(EngineError::NotWatching),
            _ => Err(EngineError::NotWatching),
        }
    }

    fn ids(&self) -> MutexGuard<'_, HashMap<String, String>> {
        self.shared.ids.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The container, found and proven not to be vigil's own.
    async fn inspect(&self, container: &str) -> Result<(&Engine, Seen), EngineError> {
        let engine = self.ready().await?;
        let seen = engine.inspect(container).await;
        if let Err(EngineError::NoSuchContainer(_)) = &seen {
            self.ids().remove(container);
        }
        let seen = seen?;
        if own_container().is_some_and(|own| own.id == seen.id) || is_own_ancestor(seen.pid) {
            self.ids().remove(container);
            return Err(EngineError::OwnContainer(container.to_string()));
        }
        self.ids().insert(container.to_string(), seen.id.clone());
        Ok((engine, seen))
    }

    /// Start the container: by the id it had when last inspected, else (or when that id is
    /// gone: the name now names another container) by a new inspect.
    async fn start_container(&self, container: &str) -> Result<(&Engine, String), EngineError> {
        let known = self.ids().get(container).cloned();
        if let Some(id) = known {
            let engine = self.ready().await?;
            debug!("docker: starting container {container} ({})", short(&id));
            match engine.start(&id).await {
                Ok(()) => return Ok((engine, id)),
                Err(EngineError::NoSuchContainer(_)) => {
                    self.ids().remove(container);
                }
                Err(e) => return Err(e),
            }
        }
        let (engine, seen) = self.inspect(container).await?;
        debug!(
            "docker: starting container {container} ({})",
            short(&seen.id)
        );
        engine.start(&seen.id).await?;
        Ok((engine, seen.id))
    }

    /// Before a start: is the container running already? Then it is the agent's, taken over.
    pub fn look(&self, agent: AgentId, run: RunId, container: String) {
        let this = self.clone();
        self.shared.io.spawn(async move {
            let outside = match this.inspect(&container).await {
                Ok((_, seen)) if seen.running && seen.pid > 1 => Outside::Adoptable {
                    pid: seen.pid,
                    started: seen.started_ns.max(0) as u64,
                    age: age_of(seen.started_ns),
                    how: format!("container {} ({})", seen.name, short(&seen.id)),
                },
                // Not running, or not usable: the start says why.
                Ok(_) | Err(_) => Outside::Nothing,
            };
            this.send(Event::Looked {
                agent,
                run,
                outside,
            });
        });
    }

    /// Start the container: `Spawned` with its main pid, once its end would be seen.
    pub fn spawn(&self, agent: AgentId, run: RunId, container: String) {
        let this = self.clone();
        self.shared.io.spawn(async move {
            let started = async {
                let (engine, id) = this.start_container(&container).await?;
                engine.inspect(&id).await
            };
            let event = match started.await {
                Ok(seen) => {
                    if let Some(restart) = &seen.restart_policy {
                        debug!(
                            "container {container} has restart policy {restart}: the engine restarts it too"
                        );
                    }
                    let ended = this.watches().register(
                        agent,
                        run,
                        &seen.id,
                        seen.started_ns,
                        seen.health.clone(),
                        seen.json_log.clone(),
                    );
                    if seen.pid > 1 && ended.is_none() {
                        Event::Spawned {
                            agent,
                            run,
                            pid: seen.pid,
                        }
                    } else {
                        // Gone before its pid could be known: it could not start.
                        Event::SpawnFailed {
                            agent,
                            run,
                            error: SpawnFailure {
                                kind: vigil_core::SpawnErrorKind::Other,
                                message: format!(
                                    "container {container} exited at once{}",
                                    seen.exit_code
                                        .map(|c| format!(" with code {c}"))
                                        .unwrap_or_default()
                                ),
                            },
                        }
                    }
                }
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

    /// Take over the running container a look found: watched from now on. If it is no
    /// longer that run (it ended, or was restarted by something else), the run is over.
    pub fn adopt(&self, agent: AgentId, run: RunId, container: String, started_ns: i64) {
        let this = self.clone();
        self.shared.io.spawn(async move {
            let same_run = match this.inspect(&container).await {
                Ok((_, seen)) if seen.running && seen.started_ns == started_ns => {
                    let registered = this.watches().register(
                        agent,
                        run,
                        &seen.id,
                        started_ns,
                        seen.health,
                        seen.json_log,
                    );
                    match registered {
                        None => return,
                        Some(ended) => Some(ended),
                    }
                }
                _ => None,
            };
            match same_run {
                Some(ended) => this.finish(ended).await,
                None => this.send(Event::Exited {
                    agent,
                    run,
                    status: ExitStatus::unknown(),
                    tree_alive: false,
                    escaped: Vec::new(),
                }),
            }
        });
    }

    /// The run's container gets `signal` (the stop signal, then SIGKILL after the stop
    /// timeout: what `docker stop -t` does, decided and journaled by the core). A run that
    /// already ended has nothing to signal.
    pub fn signal(&self, agent: AgentId, run: RunId, signal: Signal) {
        let Some(id) = self.watches().container_of(agent, run).map(String::from) else {
            return;
        };
        let this = self.clone();
        self.shared.io.spawn(async move {
            let sent = match this.shared.engine.get() {
                Some(engine) => engine.kill(&id, signal).await,
                None => Err(EngineError::NotWatching),
            };
            if let Err(e) = sent {
                warn!("sending {signal} to container {}: {e}", short(&id));
                this.send(Event::ActionFailed {
                    agent,
                    run,
                    action: FailedAction::Signal(signal),
                    error: crate::errors::chain(&e),
                });
            }
        });
    }

    /// The container's HEALTHCHECK as last reported: a check's answer, with no request.
    pub fn health(&self, agent: AgentId, run: RunId) -> Observation {
        match self.watches().health_of(agent, run) {
            None => Observation::Unknown("the container is not running".into()),
            Some(None) => Observation::Unknown(
                "the container has no HEALTHCHECK (or it has not run yet)".into(),
            ),
            Some(Some(Health::Starting)) => {
                Observation::Unknown("its HEALTHCHECK has not passed yet".into())
            }
            Some(Some(Health::Healthy)) => Observation::Healthy("HEALTHCHECK: healthy".into()),
            Some(Some(Health::Unhealthy(output))) => Observation::Unhealthy(match output {
                Some(o) if !o.is_empty() => format!("HEALTHCHECK: unhealthy: {o}"),
                _ => "HEALTHCHECK: unhealthy".into(),
            }),
        }
    }

    /// The run's log since it started, as evidence of a stall.
    pub async fn log_tail(&self, agent: AgentId, run: RunId) -> Vec<String> {
        let watched = self.watches().run_of(agent, run);
        match (watched, self.shared.engine.get()) {
            (Some((id, started_ns)), Some(engine)) => engine
                .log_tail(&id, started_ns, self.shared.log_lines, &Default::default())
                .await
                .unwrap_or_else(|e| vec![format!("(the container's log could not be read: {e})")]),
            _ => Vec::new(),
        }
    }

    /// Its agent is gone from the config: its container is no longer watched.
    pub fn forget(&self, agent: AgentId) {
        self.watches().forget_agent(agent);
    }

    /// A watched run ended: its log and its status (the inspect says whether the OOM killer
    /// did it), then the end, to the core.
    async fn finish(&self, ended: Ended) {
        let Some(engine) = self.shared.engine.get() else {
            return;
        };
        let n = self.shared.log_lines;
        let secrets = crate::redact::Secrets::default();
        // The fast way: the code from the `die`, the OOM kill from the `oom` before it, the
        // log from its file (a few kB read at once). A SIGKILL without an `oom` event asks the
        // engine whether the OOM killer did it.
        let fast = match (&ended.json_log, ended.death.code) {
            (Some(path), Some(code)) if code != 137 || ended.death.oom => {
                json_log::tail(path, ended.started_ns, n, &secrets)
                    .map(|lines| (lines, exit_status(Some(code), ended.death.oom)))
            }
            _ => None,
        };
        let (lines, status) = match fast {
            Some(fast) => fast,
            None => {
                let (lines, seen) = tokio::join!(
                    engine.log_tail(&ended.id, ended.started_ns, n, &secrets),
                    engine.inspect(&ended.id)
                );
                let lines = lines.unwrap_or_else(|e| {
                    vec![format!("(the container's log could not be read: {e})")]
                });
                // The inspect speaks of this run only if it has not been started again since.
                let seen = seen
                    .ok()
                    .filter(|s| s.started_ns == ended.started_ns && !s.running);
                let code = seen
                    .as_ref()
                    .and_then(|s| s.exit_code)
                    .and_then(|c| i32::try_from(c).ok())
                    .or(ended.death.code);
                let oom = ended.death.oom || seen.is_some_and(|s| s.oom_killed);
                (lines, exit_status(code, oom))
            }
        };
        debug!(
            "docker: container {} of run {:?} ended: {status}",
            short(&ended.id),
            ended.run
        );
        self.send(Event::LogTail {
            agent: ended.agent,
            run: ended.run,
            lines,
        });
        self.send(Event::Exited {
            agent: ended.agent,
            run: ended.run,
            status,
            tree_alive: false,
            escaped: Vec::new(),
        });
    }

    /// Follow the engine's events for as long as vigil runs; after a break, from where it
    /// broke, and every watched run checked again (events may have been missed).
    async fn follow(self) {
        let mut since_s = now_s() - 1;
        let mut delay = Duration::from_millis(250);
        let mut said_down = false;
        loop {
            let engine = match self.shared.engine.get() {
                Some(engine) => engine,
                None => match Engine::connect() {
                    Ok(engine) => {
                        info!("docker driver: engine at {}", engine.host());
                        self.shared.engine.get_or_init(|| engine)
                    }
                    Err(e) => {
                        if !said_down {
                            warn!("docker driver: {e}; trying again");
                            said_down = true;
                        }
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(RECONNECT_MAX);
                        continue;
                    }
                },
            };
            if let Err(e) = engine.ping().await {
                if !said_down {
                    warn!("docker driver: {e}; trying again");
                    said_down = true;
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(RECONNECT_MAX);
                continue;
            }
            if said_down {
                info!("docker driver: the engine answers again");
                said_down = false;
            }
            delay = Duration::from_millis(250);
            let mut stream = std::pin::pin!(engine.events(since_s));
            self.shared.watching.send_replace(true);
            self.recheck(engine).await;
            while let Some(item) = stream.next().await {
                match item {
                    Ok(message) => {
                        if let Some(t) = message.time {
                            since_s = since_s.max(t);
                        }
                        self.on_message(message);
                    }
                    Err(e) => {
                        warn!("docker driver: the event stream broke: {e}");
                        break;
                    }
                }
            }
            self.shared.watching.send_replace(false);
            tokio::time::sleep(delay).await;
        }
    }

    fn on_message(&self, message: bollard::models::EventMessage) {
        let Some(actor) = message.actor else { return };
        let Some(id) = actor.id else { return };
        let attributes = actor.attributes.unwrap_or_default();
        let at_ns = message
            .time_nano
            .or(message.time.map(|s| s * 1_000_000_000))
            .unwrap_or(0);
        let action = message.action.unwrap_or_default();
        let event = match action.as_str() {
            "die" => ContainerEvent::Die {
                code: attributes.get("exitCode").and_then(|c| c.parse().ok()),
            },
            "oom" => ContainerEvent::Oom,
            "start" => ContainerEvent::Start,
            a if a.starts_with("health_status") => {
                // Docker: `health_status: unhealthy`; Podman puts it in an attribute.
                let status = a
                    .split_once(':')
                    .map(|(_, s)| s.to_string())
                    .or_else(|| attributes.get("health_status").cloned())
                    .unwrap_or_default();
                match Health::from_status(&status) {
                    Some(h) => ContainerEvent::Health(h),
                    None => return,
                }
            }
            _ => return,
        };
        debug!("docker: {action} of {} (engine time {at_ns})", short(&id));
        let unhealthy = matches!(event, ContainerEvent::Health(Health::Unhealthy(_)));
        let ended = self.watches().on_event(&id, at_ns, event);
        if let Some(ended) = ended {
            let this = self.clone();
            self.shared
                .io
                .spawn(async move { this.finish(ended).await });
        } else if unhealthy {
            // What the failing HEALTHCHECK printed, for the check's answer.
            let this = self.clone();
            self.shared.io.spawn(async move {
                let Some(engine) = this.shared.engine.get() else {
                    return;
                };
                if let Ok(Seen {
                    health: Some(h @ Health::Unhealthy(Some(_))),
                    ..
                }) = engine.inspect(&id).await
                {
                    this.watches()
                        .on_event(&id, at_ns, ContainerEvent::Health(h));
                }
            });
        }
    }

    /// After the stream was (re)connected: a watched run that is no longer running, or is
    /// another run, ended while nobody listened.
    async fn recheck(&self, engine: &Engine) {
        let watched = self.watches().watched();
        for (id, started_ns) in watched {
            let seen = match engine.inspect(&id).await {
                Ok(seen) => Some(seen),
                Err(EngineError::NoSuchContainer(_)) => None,
                Err(_) => continue,
            };
            if seen
                .as_ref()
                .is_some_and(|s| s.running && s.started_ns == started_ns)
            {
                continue;
            }
            let same = seen.filter(|s| s.started_ns == started_ns);
            let death = Death {
                at_ns: now_s() * 1_000_000_000,
                code: same
                    .as_ref()
                    .and_then(|s| s.exit_code)
                    .and_then(|c| i32::try_from(c).ok()),
                oom: same.is_some_and(|s| s.oom_killed),
            };
            let ended = self.watches().end(&id, death);
            if let Some(ended) = ended {
                self.finish(ended).await;
            }
        }
    }
}

/// An engine's exit code as vigil says it: 128+N is death by signal N (how Docker reports a
/// container killed by a signal).
fn exit_status(code: Option<i32>, oom_killed: bool) -> ExitStatus {
    let mut status = match code {
        Some(c) if (129..=128 + 64).contains(&c) => ExitStatus::signal(Signal(c - 128)),
        Some(c) => ExitStatus::code(c),
        None => ExitStatus::unknown(),
    };
    status.oom_killed = oom_killed;
    status
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// How long a run that started at `started_ns` (since the epoch) has been running.
pub fn age_of(started_ns: i64) -> Duration {
    let now_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64);
    Duration::from_nanos(now_ns.saturating_sub(started_ns).max(0) as u64)
}

/// Whether `pid` (on this host) is vigil or one of its ancestors: the container vigil runs
/// in, whatever its id looks like from inside.
fn is_own_ancestor(pid: u32) -> bool {
    if pid <= 1 {
        return false;
    }
    let mut at = std::process::id();
    for _ in 0..64 {
        if at == pid {
            return true;
        }
        match crate::driver::proctree::stat(at).map(|p| p.ppid) {
            Some(parent) if parent > 1 => at = parent,
            _ => return false,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_above_128_is_a_signal_and_an_oom_kill_says_so() {
        assert_eq!(
            exit_status(Some(3), false).to_string(),
            "exited with code 3"
        );
        assert_eq!(exit_status(Some(137), false).signal, Some(Signal::KILL));
        let oom = exit_status(Some(137), true);
        assert!(oom.oom_killed);
        assert!(oom.to_string().contains("OOM killer"), "{oom}");
        assert!(!exit_status(None, false).is_clean());
    }

    #[test]
    fn vigil_and_its_ancestors_are_never_a_target() {
        assert!(is_own_ancestor(std::process::id()));
        let parent = crate::driver::proctree::stat(std::process::id())
            .unwrap()
            .ppid;
        if parent > 1 {
            assert!(is_own_ancestor(parent));
        }
        assert!(
            !is_own_ancestor(1),
            "init is never a container's main process here"
        );
    }
}
