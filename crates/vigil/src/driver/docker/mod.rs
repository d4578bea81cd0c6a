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

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::runtime::Handle;
use tokio::sync::mpsc::UnboundedSender;
use tracing::{debug, info, warn};
use vigil_core::{
    AgentId, Event, ExitStatus, FailedAction, Observation, Outside, RunId, Signal, SpawnFailure,
};

use super::link::{Link, Retry};
use engine::{Engine, EngineError, Health, Seen};
pub use own::{OwnContainer, own_container};
use watch::{ContainerEvent, Death, Ended, Watches};

#[derive(Clone)]
pub struct DockerDriver {
    shared: Arc<Shared>,
}

struct Shared {
    /// Set once a client could be made (the engine's socket exists): the engine may start
    /// after vigil, as at boot.
    engine: std::sync::OnceLock<Engine>,
    watches: Mutex<Watches>,
    /// True while the event stream is subscribed.
    link: Link,
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
                link: Link::new(events),
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
        self.shared.link.send(event);
    }

    /// The engine, once its events are followed: an exit that could not be seen must not
    /// follow a start.
    async fn ready(&self) -> Result<&Engine, EngineError> {
        if !self.shared.link.watching().await {
            return Err(EngineError::NotWatching);
        }
        self.shared.engine.get().ok_or(EngineError::NotWatching)
    }

    /// The container, found and proven not to be vigil's own.
    async fn inspect(&self, container: &str) -> Result<(&Engine, Seen), EngineError> {
        let engine = self.ready().await?;
        let seen = engine.inspect(container).await?;
        if own_container().is_some_and(|own| own.id == seen.id) || is_own_ancestor(seen.pid) {
            return Err(EngineError::OwnContainer(container.to_string()));
        }
        Ok((engine, seen))
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
                // Not running, not there, or vigil's own: the start says why.
                Ok(_) | Err(EngineError::NoSuchContainer(_) | EngineError::OwnContainer(_)) => {
                    Outside::Nothing
                }
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

    /// Start the container: `Spawned` with its main pid, once its end would be seen.
    ///
    /// Started by its name, which the engine resolves at that moment: a container that
    /// compose recreated under the name is the one started, never the old one by its id.
    pub fn spawn(&self, agent: AgentId, run: RunId, container: String) {
        let this = self.clone();
        self.shared.io.spawn(async move {
            let started = async {
                let engine = this.ready().await?;
                debug!("docker: starting container {container}");
                engine.start(&container).await?;
                let (_, seen) = this.inspect(&container).await?;
                Ok::<_, EngineError>(seen)
            };
            let seen = match started.await {
                Ok(seen) => seen,
                Err(e) => {
                    return this.send(Event::SpawnFailed {
                        agent,
                        run,
                        error: SpawnFailure {
                            kind: e.spawn_kind(),
                            message: crate::errors::chain(&e),
                        },
                    });
                }
            };
            if let Some(restart) = &seen.restart_policy {
                warn!(
                    "container {container} has restart policy \"{restart}\": the engine restarts it too, and two healers fight (docker update --restart no {container})"
                );
            }
            let failed = |message: String| Event::SpawnFailed {
                agent,
                run,
                error: SpawnFailure {
                    kind: vigil_core::SpawnErrorKind::Other,
                    message,
                },
            };
            if !seen.running || seen.pid <= 1 {
                // Gone before its pid could be known: it could not start.
                let code = seen.exit_code.map(|c| format!(" with code {c}"));
                return this.send(failed(format!(
                    "container {container} exited at once{}",
                    code.unwrap_or_default()
                )));
            }
            let ended = {
                let mut watches = this.watches();
                if watches.is_watched(&seen.id) {
                    drop(watches);
                    return this.send(failed(format!(
                        "container {container} is already another agent's"
                    )));
                }
                let ended = watches.register(agent, run, &seen);
                // Sent under the lock: its end, found by another task, comes after it.
                this.send(Event::Spawned {
                    agent,
                    run,
                    pid: seen.pid,
                });
                ended
            };
            // It ended between the inspect and the registration: a short run, ended.
            if let Some(ended) = ended {
                this.finish(ended).await;
            }
        });
    }

    /// Take over the running container a look found: watched from now on. If it is no
    /// longer that run (it ended, or was restarted by something else), the run is over. A
    /// stop meanwhile reaches it by its name.
    pub fn adopt(&self, agent: AgentId, run: RunId, container: String, started_ns: i64) {
        self.watches().pending(agent, run, &container);
        let this = self.clone();
        self.shared.io.spawn(async move {
            // An engine that does not answer for a moment has not ended the container.
            let mut seen = this.inspect(&container).await;
            for _ in 0..10 {
                match &seen {
                    Err(EngineError::Unreachable { .. } | EngineError::NotWatching) => {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        seen = this.inspect(&container).await;
                    }
                    Err(EngineError::Refused { status, .. }) if *status >= 500 => {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        seen = this.inspect(&container).await;
                    }
                    _ => break,
                }
            }
            let ended = match seen {
                Ok((_, seen)) if seen.running && seen.started_ns == started_ns => {
                    let mut watches = this.watches();
                    if watches.is_watched(&seen.id) {
                        watches.not_pending(agent, run);
                        None
                    } else {
                        match watches.register(agent, run, &seen) {
                            None => return,
                            Some(ended) => Some(ended),
                        }
                    }
                }
                _ => {
                    this.watches().not_pending(agent, run);
                    None
                }
            };
            match ended {
                Some(ended) => this.finish(ended).await,
                None => this.shared.link.ended_unseen(agent, run),
            }
        });
    }

    /// Stop the run's container as `docker stop -t stop_timeout` does (its own stop signal,
    /// then SIGKILL; the engine's restart policy then leaves it stopped); `Signal::KILL` (the
    /// core's, after the stop timeout) kills it at once. A run that already ended has
    /// nothing to signal.
    pub fn signal(&self, agent: AgentId, run: RunId, signal: Signal, stop_timeout: Duration) {
        let Some(id) = self.watches().container_of(agent, run).map(String::from) else {
            return;
        };
        let this = self.clone();
        self.shared.io.spawn(async move {
            let sent = match this.shared.engine.get() {
                Some(engine) if signal == Signal::KILL => engine.kill(&id, signal).await,
                Some(engine) => engine.stop(&id, stop_timeout).await,
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
        let (watched, secrets) = {
            let w = self.watches();
            (w.run_of(agent, run), w.secrets_of(agent, run))
        };
        match (watched, self.shared.engine.get()) {
            (Some((id, started_ns)), Some(engine)) => engine
                .log_tail(&id, started_ns, self.shared.log_lines, &secrets)
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
        // Set before any run could be watched.
        let Some(engine) = self.shared.engine.get() else {
            return;
        };
        let n = self.shared.log_lines;
        let secrets = ended.secrets.clone();
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
                let code = seen.as_ref().and_then(Seen::code).or(ended.death.code);
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
        let mut retry = Retry::new("docker");
        loop {
            let engine = match self.shared.engine.get() {
                Some(engine) => engine,
                None => match Engine::connect() {
                    Ok(engine) => {
                        info!("docker driver: engine at {}", engine.host());
                        self.shared.engine.get_or_init(|| engine)
                    }
                    Err(e) => {
                        retry.failed(e).await;
                        continue;
                    }
                },
            };
            if let Err(e) = engine.ping().await {
                retry.failed(e).await;
                continue;
            }
            retry.succeeded();
            let mut stream = std::pin::pin!(engine.events(since_s));
            self.shared.link.set_watching(true);
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
            self.shared.link.set_watching(false);
            retry.pause().await;
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
            // Podman's compatible API may say `died`.
            "die" | "died" => ContainerEvent::Die {
                code: attributes.get("exitCode").and_then(|c| c.parse().ok()),
            },
            "oom" => ContainerEvent::Oom,
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
        } else if unhealthy && let Some(started_ns) = self.watches().started_of(&id) {
            // What the failing HEALTHCHECK printed, for the check's answer (of this run only).
            let this = self.clone();
            self.shared.io.spawn(async move {
                let Some(engine) = this.shared.engine.get() else {
                    return;
                };
                if let Ok(Seen {
                    health: Some(Health::Unhealthy(Some(output))),
                    started_ns: seen_started,
                    ..
                }) = engine.inspect(&id).await
                    && seen_started == started_ns
                {
                    this.watches().unhealthy_output(&id, started_ns, output);
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
                code: same.as_ref().and_then(Seen::code),
                oom: same.is_some_and(|s| s.oom_killed),
            };
            let ended = self.watches().end_run(&id, started_ns, death);
            if let Some(ended) = ended {
                // Each on its own: a slow engine does not hold the others' ends back.
                let this = self.clone();
                self.shared
                    .io
                    .spawn(async move { this.finish(ended).await });
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
    super::link::age_since(Duration::from_nanos(started_ns.max(0) as u64))
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
