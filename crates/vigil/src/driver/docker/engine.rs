//! The Docker Engine API, as vigil uses it: inspect, start, kill, logs and the event
//! stream, on the engine's unix socket (`DOCKER_HOST`, else `/var/run/docker.sock`; Podman's
//! Docker-compatible socket works the same way).

use std::collections::HashMap;
use std::time::Duration;

use bollard::Docker;
use bollard::errors::Error as BollardError;
use bollard::models::{ContainerInspectResponse, EventMessage, HealthStatusEnum};
use bollard::query_parameters::{EventsOptions, KillContainerOptions, LogsOptions};
use futures_util::{Stream, StreamExt};
use vigil_core::Signal;

use crate::redact::{self, Secrets};

/// The engine's standard socket.
pub const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";

/// How long one request to the engine may take before it counts as unreachable.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Why an engine operation failed: by the engine's HTTP status, never by its words.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot reach the Docker engine at {host}: {source}")]
    Unreachable {
        host: String,
        #[source]
        source: BollardError,
    },
    #[error("there is no container \"{0}\"")]
    NoSuchContainer(String),
    #[error("the Docker engine refused (HTTP {status}): {message}")]
    Refused { status: u16, message: String },
    #[error("container \"{0}\" is the one vigil itself runs in: vigil never supervises itself")]
    OwnContainer(String),
    #[error("the Docker engine's event stream is not connected, so an exit could go unseen")]
    NotWatching,
}

impl EngineError {
    pub fn spawn_kind(&self) -> vigil_core::SpawnErrorKind {
        use vigil_core::SpawnErrorKind as K;
        match self {
            EngineError::NoSuchContainer(_) => K::TargetNotFound,
            EngineError::Unreachable { .. } | EngineError::NotWatching => K::EngineUnavailable,
            EngineError::Refused { status, .. } if *status >= 500 => K::EngineUnavailable,
            EngineError::Refused { .. } | EngineError::OwnContainer(_) => K::Other,
        }
    }
}

/// What an inspect says about a container.
#[derive(Clone, Debug, Default)]
pub struct Seen {
    pub id: String,
    pub name: String,
    pub running: bool,
    /// Its main process on the engine's host (0 when not running).
    pub pid: u32,
    /// When its current (or last) run started, in nanoseconds since the epoch: with the id,
    /// one run of the container.
    pub started_ns: i64,
    pub exit_code: Option<i64>,
    pub oom_killed: bool,
    pub health: Option<Health>,
    /// The engine's own restart policy (`always`, `unless-stopped`, `on-failure`), when set.
    pub restart_policy: Option<String>,
    /// Its log file, when the engine keeps it with the `json-file` driver.
    pub json_log: Option<std::path::PathBuf>,
    /// The values of its environment's secret-looking variables (`API_KEY=…`): hidden from its
    /// evidence as a process agent's are. Never logged.
    pub secrets: Secrets,
}

impl Seen {
    /// How its last run ended, when it has ended (an exit code the engine reports as i64).
    pub fn code(&self) -> Option<i32> {
        self.exit_code.and_then(|c| i32::try_from(c).ok())
    }
}

/// The container's HEALTHCHECK, as last reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    Starting,
    Healthy,
    /// With the last check's output, when known.
    Unhealthy(Option<String>),
}

impl Health {
    /// From an event's action (`health_status: unhealthy`) or an inspect's status.
    pub fn from_status(status: &str) -> Option<Health> {
        match status.trim() {
            "starting" => Some(Health::Starting),
            "healthy" => Some(Health::Healthy),
            "unhealthy" => Some(Health::Unhealthy(None)),
            _ => None,
        }
    }
}

pub struct Engine {
    client: Docker,
    host: String,
}

impl Engine {
    /// The engine of `DOCKER_HOST`, else the standard socket. Nothing is sent yet.
    pub fn connect() -> Result<Engine, EngineError> {
        let host = std::env::var("DOCKER_HOST")
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| DEFAULT_HOST.to_string());
        let client = Docker::connect_with_host(&host)
            .map_err(|source| EngineError::Unreachable {
                host: host.clone(),
                source,
            })?
            .with_timeout(REQUEST_TIMEOUT);
        Ok(Engine { client, host })
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    fn error(&self, name: &str, e: BollardError) -> EngineError {
        match e {
            BollardError::DockerResponseServerError {
                status_code: 404, ..
            } => EngineError::NoSuchContainer(name.to_string()),
            BollardError::DockerResponseServerError {
                status_code,
                message,
            } => EngineError::Refused {
                status: status_code,
                message: redact::line_with(&message, &Secrets::default()),
            },
            source => EngineError::Unreachable {
                host: self.host.clone(),
                source,
            },
        }
    }

    pub async fn ping(&self) -> Result<(), EngineError> {
        self.client
            .ping()
            .await
            .map(drop)
            .map_err(|e| self.error("", e))
    }

    pub async fn inspect(&self, name: &str) -> Result<Seen, EngineError> {
        let r = self
            .client
            .inspect_container(name, None)
            .await
            .map_err(|e| self.error(name, e))?;
        Ok(seen(r))
    }

    /// Stop it as `docker stop -t` does: its own stop signal (`StopSignal`, else SIGTERM), then
    /// SIGKILL after `timeout`; the engine then knows it was stopped on purpose, and its own
    /// restart policy leaves it stopped.
    pub async fn stop(&self, id: &str, timeout: std::time::Duration) -> Result<(), EngineError> {
        let options = bollard::query_parameters::StopContainerOptions {
            signal: None,
            t: Some(i32::try_from(timeout.as_secs()).unwrap_or(i32::MAX)),
        };
        self.client
            .stop_container(id, Some(options))
            .await
            .map_err(|e| self.error(id, e))
    }

    pub async fn start(&self, id: &str) -> Result<(), EngineError> {
        // Already running answers 304, which is success: a container cannot run twice.
        self.client
            .start_container(id, None)
            .await
            .map_err(|e| self.error(id, e))
    }

    /// Send `signal` to the container's main process. One that is not running (409) has
    /// nothing left to signal.
    pub async fn kill(&self, id: &str, signal: Signal) -> Result<(), EngineError> {
        let options = KillContainerOptions {
            signal: signal.0.to_string(),
        };
        match self.client.kill_container(id, Some(options)).await {
            Err(BollardError::DockerResponseServerError {
                status_code: 409, ..
            }) => Ok(()),
            other => other.map_err(|e| self.error(id, e)),
        }
    }

    /// The container's last `n` log lines since `since_ns` (its run's start), redacted.
    pub async fn log_tail(
        &self,
        id: &str,
        since_ns: i64,
        n: usize,
        secrets: &Secrets,
    ) -> Result<Vec<String>, EngineError> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let options = LogsOptions {
            stdout: true,
            stderr: true,
            // Whole seconds: a line of the second the run started may belong to the run
            // before; the log of one second is what it costs.
            since: i32::try_from(since_ns / 1_000_000_000).unwrap_or(0),
            tail: n.to_string(),
            ..Default::default()
        };
        let mut out: Vec<u8> = Vec::new();
        let mut stream = self.client.logs(id, Some(options));
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.error(id, e))?;
            out.extend_from_slice(chunk.as_ref());
            // A hostile container may write one endless line: keep what evidence needs.
            if out.len() > n * 4096 {
                let cut = out.len() - n * 4096;
                out.drain(..cut);
            }
        }
        let text = String::from_utf8_lossy(&out);
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(n);
        Ok(lines[from..]
            .iter()
            .map(|l| redact::line_with(l, secrets))
            .collect())
    }

    /// Container events from `since_s` on: every kind, picked by the driver (Podman's
    /// compatible API names some differently, `died`).
    pub fn events(
        &self,
        since_s: i64,
    ) -> impl Stream<Item = Result<EventMessage, BollardError>> + use<> {
        let filters = HashMap::from([("type".to_string(), vec!["container".to_string()])]);
        self.client.events(Some(EventsOptions {
            since: Some(since_s.to_string()),
            until: None,
            filters: Some(filters),
        }))
    }
}

fn seen(r: ContainerInspectResponse) -> Seen {
    let state = r.state.unwrap_or_default();
    let started_ns = state
        .started_at
        .as_deref()
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .and_then(|t| t.timestamp_nanos_opt())
        .unwrap_or(0);
    let health = state.health.and_then(|h| {
        let status = h.status?;
        let last = h
            .log
            .and_then(|l| l.last().and_then(|r| r.output.clone()))
            .map(|o| redact::line_with(o.trim(), &Secrets::default()));
        match status {
            HealthStatusEnum::STARTING => Some(Health::Starting),
            HealthStatusEnum::HEALTHY => Some(Health::Healthy),
            HealthStatusEnum::UNHEALTHY => Some(Health::Unhealthy(last)),
            HealthStatusEnum::NONE | HealthStatusEnum::EMPTY => None,
        }
    });
    let env: Vec<(String, String)> = r
        .config
        .as_ref()
        .and_then(|c| c.env.as_ref())
        .map(|env| {
            env.iter()
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .unwrap_or_default();
    let secrets = Secrets::from_env(env.iter().map(|(k, v)| (k, v)), &[]);
    let json_log = r
        .log_path
        .filter(|p| !p.is_empty())
        .filter(|_| {
            r.host_config
                .as_ref()
                .and_then(|h| h.log_config.as_ref())
                .and_then(|l| l.typ.as_deref())
                == Some("json-file")
        })
        .map(std::path::PathBuf::from);
    let restart_policy = r
        .host_config
        .and_then(|h| h.restart_policy)
        .and_then(|p| p.name)
        .map(|n| n.to_string())
        .filter(|n| !n.is_empty() && n != "no");
    Seen {
        id: r.id.unwrap_or_default(),
        name: r
            .name
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_string(),
        running: state.running.unwrap_or(false),
        pid: state
            .pid
            .and_then(|p| u32::try_from(p).ok())
            .unwrap_or_default(),
        started_ns,
        exit_code: state.exit_code,
        oom_killed: state.oom_killed.unwrap_or(false),
        health,
        restart_policy,
        json_log,
        secrets,
    }
}
