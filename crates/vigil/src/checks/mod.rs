//! Running health checks. The core decides when a check runs and what its result means;
//! this module only probes, one file per kind, on the I/O runtime, and sends the result
//! back as an event.

mod exec;
mod files;
mod http;
pub mod notify;
pub(crate) use http::describe as describe_http_error;
mod redis;
mod sql;

use std::ffi::OsString;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use vigil_core::{AgentId, Event, Observation, human_duration};

use crate::config::{CheckConfig, Probe};
use crate::driver::Children;
use crate::metrics::Live;

/// One `RunCheck` to carry out.
pub struct ProbeJob {
    pub agent: AgentId,
    pub check: usize,
    /// The check generation the result must carry.
    pub generation: u64,
    pub config: CheckConfig,
    pub ctx: ProbeContext,
}

/// What a probe may need to know about the agent's current run.
pub struct ProbeContext {
    pub agent: String,
    pub instance: Option<String>,
    pub pid: Option<u32>,
    pub cwd: Option<PathBuf>,
    /// An exec check runs as the agent's `user`, as the agent does.
    pub user: Option<crate::config::users::Credentials>,
    /// Hidden in what the probe reports (an exec check's output).
    pub secrets: crate::redact::Secrets,
}

#[derive(Clone)]
pub struct CheckRunner {
    io: Handle,
    events: mpsc::UnboundedSender<Event>,
    /// Built at the first `http` probe: loading the system's CA certificates costs memory a
    /// fleet without http checks should not pay.
    http: Arc<std::sync::OnceLock<reqwest::Client>>,
    sql: Arc<sql::SqlPools>,
    redis: Arc<redis::RedisPools>,
    children: Children,
    live: Live,
}

/// A probe that hangs is cut at the check's timeout.
async fn timed(
    timeout: Duration,
    probe: impl Future<Output = Observation>,
    hung: impl FnOnce(String) -> Observation,
) -> Observation {
    match tokio::time::timeout(timeout, probe).await {
        Ok(o) => o,
        Err(_) => hung(format!("no answer within {}", human_duration(timeout))),
    }
}

impl CheckRunner {
    pub fn new(
        io: Handle,
        events: mpsc::UnboundedSender<Event>,
        children: Children,
        live: Live,
    ) -> Self {
        Self {
            io,
            events,
            http: Arc::default(),
            sql: Arc::default(),
            redis: Arc::default(),
            children,
            live,
        }
    }

    fn http_client(&self) -> &reqwest::Client {
        self.http.get_or_init(|| {
            let builder =
                || crate::http_client::builder().redirect(reqwest::redirect::Policy::limited(3));
            crate::http_client::build(builder)
        })
    }

    /// Probe a batch in the background; each result comes back as `Event::CheckResult`.
    /// File probes of the batch share one blocking call: a `stat` takes microseconds, the
    /// hop to a blocking thread costs more.
    pub fn run_batch(&self, jobs: Vec<ProbeJob>) {
        if jobs.is_empty() {
            return;
        }
        let me = self.clone();
        self.io.spawn(async move {
            let (files, others): (Vec<ProbeJob>, Vec<ProbeJob>) = jobs.into_iter().partition(|j| {
                matches!(j.config.probe, Probe::Heartbeat { .. } | Probe::File { .. })
            });
            for job in others {
                let me = me.clone();
                tokio::spawn(async move {
                    let started = std::time::Instant::now();
                    // A probe that panics still answers, or its check would wait forever.
                    let observation = std::panic::AssertUnwindSafe(me.probe(&job))
                        .catch_unwind()
                        .await
                        .unwrap_or_else(|_| {
                            Observation::Unknown("the probe panicked (a bug in vigil)".into())
                        });
                    me.live
                        .observe_check(job.config.spec.kind.as_str(), started.elapsed());
                    me.send(&job, observation);
                });
            }
            if files.is_empty() {
                return;
            }
            let timeout = files
                .iter()
                .map(|j| j.config.spec.timeout)
                .max()
                .unwrap_or_default();
            let keys: Vec<(AgentId, usize, u64)> = files
                .iter()
                .map(|j| (j.agent, j.check, j.generation))
                .collect();
            let live = me.live.clone();
            let probed = tokio::time::timeout(
                timeout,
                tokio::task::spawn_blocking(move || {
                    files
                        .into_iter()
                        .map(|j| {
                            let started = std::time::Instant::now();
                            let o = match &j.config.probe {
                                Probe::Heartbeat { path, epoch } => files::heartbeat(path, *epoch),
                                Probe::File { path, min_size } => {
                                    files::output_file(path, *min_size)
                                }
                                _ => unreachable!("partitioned"),
                            };
                            live.observe_check(j.config.spec.kind.as_str(), started.elapsed());
                            (j, o)
                        })
                        .collect::<Vec<_>>()
                }),
            )
            .await;
            match probed {
                Ok(Ok(results)) => {
                    for (job, observation) in results {
                        me.send(&job, observation);
                    }
                }
                // A hung file system: every probe of the batch is unknown.
                _ => {
                    for (agent, check, generation) in keys {
                        let _ = me.events.send(Event::CheckResult {
                            agent,
                            check,
                            generation,
                            observation: Observation::Unknown(format!(
                                "the file system gave no answer within {}",
                                human_duration(timeout)
                            )),
                        });
                    }
                }
            }
        });
    }

    /// Probe one check now and wait for its observation (`vigil doctor`); cut at its timeout.
    pub async fn probe_now(&self, config: CheckConfig, ctx: ProbeContext) -> Observation {
        let job = ProbeJob {
            agent: AgentId(0),
            check: 0,
            generation: 0,
            config,
            ctx,
        };
        let timeout = job.config.spec.timeout;
        timed(timeout, self.probe(&job), Observation::Unknown).await
    }

    fn send(&self, job: &ProbeJob, observation: Observation) {
        let _ = self.events.send(Event::CheckResult {
            agent: job.agent,
            check: job.check,
            generation: job.generation,
            observation,
        });
    }

    async fn probe(&self, job: &ProbeJob) -> Observation {
        let timeout = job.config.spec.timeout;
        let ctx = &job.ctx;
        match &job.config.probe {
            Probe::Heartbeat { path, epoch } => {
                let (path, epoch) = (path.clone(), *epoch);
                self.blocking(timeout, move || files::heartbeat(&path, epoch))
                    .await
            }
            Probe::File { path, min_size } => {
                let (path, min_size) = (path.clone(), *min_size);
                self.blocking(timeout, move || files::output_file(&path, min_size))
                    .await
            }
            Probe::Http { url, expect, body } => {
                timed(
                    timeout,
                    http::probe(self.http_client(), url, expect, body.as_ref()),
                    |why| Observation::Unhealthy(format!("GET {url}: {why}")),
                )
                .await
            }
            Probe::Exec { command } => {
                let mut env: Vec<(OsString, OsString)> =
                    vec![("VIGIL_AGENT".into(), ctx.agent.clone().into())];
                env.push((
                    "VIGIL_INSTANCE".into(),
                    ctx.instance.clone().unwrap_or_default().into(),
                ));
                if let Some(pid) = ctx.pid {
                    env.push(("VIGIL_PID".into(), pid.to_string().into()));
                }
                exec::probe(exec::ExecProbe {
                    command,
                    cwd: ctx.cwd.as_deref(),
                    user: ctx.user.as_ref(),
                    env,
                    timeout,
                    children: &self.children,
                    secrets: &ctx.secrets,
                })
                .await
            }
            // A database or Redis that does not answer is the target's problem, not the
            // agent's: unknown, never a restart.
            Probe::Sql { url, query, params } => {
                timed(
                    timeout,
                    self.sql.probe(url, query, params, timeout),
                    |why| Observation::Unknown(format!("{}: {why}", crate::redact::url(url))),
                )
                .await
            }
            Probe::Redis { url, key, exists } => {
                timed(
                    timeout,
                    self.redis.probe(url, key, *exists, timeout),
                    |why| Observation::Unknown(format!("{}: {why}", crate::redact::url(url))),
                )
                .await
            }
            Probe::Notify | Probe::Api | Probe::ContainerHealth => {
                Observation::Unknown("this kind of check is never probed".into())
            }
        }
    }

    /// File system calls can hang (a dead NFS mount): off the async threads, with a timeout.
    async fn blocking(
        &self,
        timeout: Duration,
        f: impl FnOnce() -> Observation + Send + 'static,
    ) -> Observation {
        timed(
            timeout,
            async {
                tokio::task::spawn_blocking(f)
                    .await
                    .unwrap_or_else(|e| Observation::Unknown(e.to_string()))
            },
            |why| Observation::Unknown(format!("the file system gave {why}")),
        )
        .await
    }
}
