//! systemd's own D-Bus API, as vigil uses it: the manager (start, stop, kill a unit; the
//! result of a job), and a unit's state (active or not, its run's invocation id, main pid,
//! how its main process ended).

use std::time::Duration;

use zbus::proxy::CacheProperties;
use zbus::{Connection, OwnedObjectPath, proxy};

#[proxy(
    interface = "org.freedesktop.systemd1.Manager",
    default_service = "org.freedesktop.systemd1",
    default_path = "/org/freedesktop/systemd1"
)]
pub trait Manager {
    /// Without a subscriber, systemd sends no signals about units.
    fn subscribe(&self) -> zbus::Result<()>;
    fn load_unit(&self, name: &str) -> zbus::Result<OwnedObjectPath>;
    fn start_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn stop_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn kill_unit(&self, name: &str, whom: &str, signal: i32) -> zbus::Result<()>;
    fn reset_failed_unit(&self, name: &str) -> zbus::Result<()>;
    #[zbus(signal)]
    fn job_removed(
        &self,
        id: u32,
        job: OwnedObjectPath,
        unit: String,
        result: String,
    ) -> zbus::Result<()>;
}

#[proxy(
    interface = "org.freedesktop.systemd1.Unit",
    default_service = "org.freedesktop.systemd1"
)]
pub trait Unit {
    #[zbus(property)]
    fn active_state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn sub_state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn load_state(&self) -> zbus::Result<String>;
    #[zbus(property, name = "InvocationID")]
    fn invocation_id(&self) -> zbus::Result<Vec<u8>>;
    #[zbus(property)]
    fn id(&self) -> zbus::Result<String>;
}

#[proxy(
    interface = "org.freedesktop.systemd1.Service",
    default_service = "org.freedesktop.systemd1"
)]
pub trait Service {
    #[zbus(property, name = "MainPID")]
    fn main_pid(&self) -> zbus::Result<u32>;
    #[zbus(property)]
    fn exec_main_code(&self) -> zbus::Result<i32>;
    #[zbus(property)]
    fn exec_main_status(&self) -> zbus::Result<i32>;
    #[zbus(property)]
    fn exec_main_start_timestamp(&self) -> zbus::Result<u64>;
    #[zbus(property)]
    fn exec_main_exit_timestamp(&self) -> zbus::Result<u64>;
    #[zbus(property)]
    fn restart(&self) -> zbus::Result<String>;
    #[zbus(property, name = "NRestarts")]
    fn n_restarts(&self) -> zbus::Result<u32>;
    #[zbus(property)]
    fn control_group(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn environment(&self) -> zbus::Result<Vec<String>>;
}

/// Why a bus operation failed: by the D-Bus error's name, never by its words.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("cannot reach systemd on the {bus} bus: {source}")]
    Unreachable {
        bus: &'static str,
        #[source]
        source: zbus::Error,
    },
    #[error("there is no unit \"{0}\"")]
    NoSuchUnit(String),
    #[error("systemd refused ({name}): {message}")]
    Refused { name: String, message: String },
    #[error("unit \"{0}\" is the one vigil itself runs in: vigil never supervises itself")]
    OwnUnit(String),
    #[error("the job for {unit} ended with \"{result}\"")]
    JobFailed { unit: String, result: String },
    #[error("systemd's signals are not followed, so an end could go unseen")]
    NotWatching,
    #[error("systemd did not answer on the {bus} bus within 10 s: {what}")]
    NoAnswer { bus: &'static str, what: String },
}

impl BusError {
    pub fn spawn_kind(&self) -> vigil_core::SpawnErrorKind {
        use vigil_core::SpawnErrorKind as K;
        match self {
            BusError::NoSuchUnit(_) => K::TargetNotFound,
            BusError::Unreachable { .. } | BusError::NotWatching | BusError::NoAnswer { .. } => {
                K::EngineUnavailable
            }
            BusError::Refused { .. } | BusError::OwnUnit(_) | BusError::JobFailed { .. } => {
                K::Other
            }
        }
    }

    pub fn from_zbus(bus: &'static str, unit: &str, e: zbus::Error) -> BusError {
        match e {
            zbus::Error::MethodError(name, message, _) => {
                let name = name.as_str().to_string();
                if name == "org.freedesktop.systemd1.NoSuchUnit" {
                    BusError::NoSuchUnit(unit.to_string())
                } else {
                    BusError::Refused {
                        name,
                        message: message.unwrap_or_default(),
                    }
                }
            }
            source => BusError::Unreachable { bus, source },
        }
    }
}

/// How a unit's main process ended, as systemd says (`ExecMainCode`: CLD_EXITED, CLD_KILLED,
/// CLD_DUMPED).
pub fn exit_status(code: i32, status: i32) -> vigil_core::ExitStatus {
    use vigil_core::{ExitStatus, Signal};
    match code {
        1 => ExitStatus::code(status),
        2 => ExitStatus::signal(Signal(status)),
        3 => ExitStatus {
            core_dumped: true,
            ..ExitStatus::signal(Signal(status))
        },
        _ => ExitStatus::unknown(),
    }
}

/// A unit as systemd shows it now.
#[derive(Clone, Debug, Default)]
pub struct UnitState {
    pub path: String,
    pub load_state: String,
    pub active_state: String,
    pub sub_state: String,
    /// Its current (or last) run: a new one at each start.
    pub invocation: String,
    pub main_pid: u32,
    /// When the main process started, µs since the epoch.
    pub started_us: u64,
    /// When it ended (0 while it runs): systemd's own time of the end.
    pub exited_us: u64,
    pub exec_main_code: i32,
    pub exec_main_status: i32,
    /// The unit's own `Restart=`.
    pub restart: String,
    pub control_group: String,
    /// The values of its `Environment=`'s secret-looking variables: hidden from its evidence.
    pub secrets: crate::redact::Secrets,
}

impl UnitState {
    /// Its main process runs.
    pub fn running(&self) -> bool {
        matches!(self.active_state.as_str(), "active" | "reloading") && self.main_pid > 1
    }

    /// Its main process still runs (if stopping).
    pub fn alive(&self) -> bool {
        self.running() || (self.active_state == "deactivating" && self.main_pid > 1)
    }

    /// Its run is over.
    pub fn ended(&self) -> bool {
        ended(&self.active_state, &self.sub_state)
    }
}

/// A unit in this state has no run: its main process ended (`activating`/`auto-restart`:
/// systemd waits to restart it itself).
pub fn ended(active_state: &str, sub_state: &str) -> bool {
    matches!(active_state, "inactive" | "failed")
        || (active_state == "activating" && sub_state == "auto-restart")
}

/// One connection to one bus (system or user).
pub struct Bus {
    pub conn: Connection,
    pub name: &'static str,
    /// The bus daemon refuses a connection more than 128 calls waiting for their replies
    /// (`LimitsExceeded`): a hundred units starting at once wait their turn here instead.
    calls: tokio::sync::Semaphore,
    /// The results of the jobs vigil queued.
    pub jobs: super::jobs::Jobs,
}

/// How long systemd may take to answer one call.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Operations in flight on one connection (a state read asks twelve questions at once: ten
/// reads stay under the bus daemon's 128 calls).
const OPERATIONS_IN_FLIGHT: usize = 10;

impl Bus {
    pub async fn connect(user: bool) -> Result<Bus, BusError> {
        let name = if user { "user" } else { "system" };
        let conn = if user {
            Connection::session().await
        } else {
            Connection::system().await
        }
        .map_err(|source| BusError::Unreachable { bus: name, source })?;
        Ok(Bus {
            conn,
            name,
            calls: tokio::sync::Semaphore::new(OPERATIONS_IN_FLIGHT),
            jobs: super::jobs::Jobs::default(),
        })
    }

    /// A turn to talk to the bus (held for one operation).
    pub async fn turn(&self) -> tokio::sync::SemaphorePermit<'_> {
        self.calls.acquire().await.expect("never closed")
    }

    pub async fn manager(&self) -> Result<ManagerProxy<'_>, BusError> {
        ManagerProxy::new(&self.conn)
            .await
            .map_err(|e| BusError::from_zbus(self.name, "", e))
    }

    /// The unit's state, read now (nothing cached).
    pub async fn state(&self, unit: &str) -> Result<UnitState, BusError> {
        let _turn = self.turn().await;
        // A call systemd never answers must not hold a start (or an end) forever.
        tokio::time::timeout(CALL_TIMEOUT, self.read_state(unit))
            .await
            .unwrap_or_else(|_| {
                Err(BusError::NoAnswer {
                    bus: self.name,
                    what: format!("the state of {unit}"),
                })
            })
    }

    async fn read_state(&self, unit: &str) -> Result<UnitState, BusError> {
        tracing::debug!("systemd: reading the state of {unit}");
        let err = |e| BusError::from_zbus(self.name, unit, e);
        let path = self.manager().await?.load_unit(unit).await.map_err(err)?;
        let u = UnitProxy::builder(&self.conn)
            .path(path.clone())
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(err)?;
        let s = ServiceProxy::builder(&self.conn)
            .path(path.clone())
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(err)?;
        // Asked all at once, answered in one round trip's time (a unit that does not exist
        // has these too, with empty values).
        let (
            (load_state, active_state, sub_state, invocation, main_pid, started_us),
            (exited_us, exec_main_code, exec_main_status, restart, control_group, environment),
        ) = tokio::try_join!(
            async {
                tokio::try_join!(
                    u.load_state(),
                    u.active_state(),
                    u.sub_state(),
                    u.invocation_id(),
                    s.main_pid(),
                    s.exec_main_start_timestamp(),
                )
            },
            async {
                tokio::try_join!(
                    s.exec_main_exit_timestamp(),
                    s.exec_main_code(),
                    s.exec_main_status(),
                    s.restart(),
                    s.control_group(),
                    s.environment(),
                )
            },
        )
        .map_err(err)?;
        if load_state == "not-found" {
            return Err(BusError::NoSuchUnit(unit.to_string()));
        }
        let env = environment.iter().filter_map(|kv| kv.split_once('='));
        Ok(UnitState {
            path: path.as_str().to_string(),
            load_state,
            active_state,
            sub_state,
            invocation: super::signal::hex(&invocation),
            main_pid,
            started_us,
            exited_us,
            exec_main_code,
            exec_main_status,
            restart,
            control_group,
            secrets: crate::redact::Secrets::from_env(env, &[]),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systemd_s_exit_codes_read_as_exits_and_signals() {
        assert_eq!(exit_status(1, 7).to_string(), "exited with code 7");
        assert_eq!(exit_status(2, 9).to_string(), "killed by SIGKILL");
        assert!(exit_status(3, 11).core_dumped);
        assert!(!exit_status(0, 0).is_clean(), "nothing known");
    }

    #[test]
    fn a_run_ends_when_its_main_process_does() {
        let s = |active: &str, sub: &str| UnitState {
            active_state: active.into(),
            sub_state: sub.into(),
            main_pid: 42,
            ..Default::default()
        };
        assert!(s("active", "running").running());
        assert!(!s("active", "running").ended());
        assert!(s("failed", "failed").ended());
        assert!(s("inactive", "dead").ended());
        assert!(s("activating", "auto-restart").ended());
        assert!(!s("deactivating", "stop-sigterm").ended(), "still stopping");
    }
}
