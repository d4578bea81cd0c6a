//! Work the supervision loop hands off so that its thread only supervises: persisting
//! `state.jsonl` (appended and fsynced, batched) and reading the config on a reload. One
//! worker thread, jobs in order; results the loop must act on come back over a channel. Log
//! rotation is on the keeper's thread (`keeper`), woken by the kernel when a log is written.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::mpsc::UnboundedSender;
use tracing::{error, info, warn};

use super::rotation::{LogFile, Logs};
use crate::config::{self, Config, LoadError};
use crate::health::Health;
use crate::state::{SavedAgent, StateStore};

/// How long a shutdown waits for the last state to be written.
const FLUSH_WAIT: Duration = Duration::from_secs(10);

enum Job {
    Persist(Vec<(String, Option<SavedAgent>)>),
    LoadConfig {
        path: PathBuf,
        state_dir: Option<PathBuf>,
    },
    Flush(mpsc::SyncSender<()>),
}

/// What the worker hands back to the loop.
pub enum Done {
    Config(Box<Result<Config, LoadError>>),
}

pub struct Offload {
    tx: Option<mpsc::Sender<Job>>,
    worker: Option<JoinHandle<()>>,
    /// The logs the rotation thread keeps under their size.
    logs: Logs,
}

impl Offload {
    pub fn start(
        store: StateStore,
        health: Arc<Health>,
        done: UnboundedSender<Done>,
    ) -> std::io::Result<Offload> {
        let logs = Logs::default();
        let (tx, rx) = mpsc::channel();
        let worker = std::thread::Builder::new()
            .name("vigil-offload".into())
            .spawn(move || {
                Worker {
                    store,
                    health,
                    done,
                }
                .run(rx)
            })?;
        Ok(Offload {
            tx: Some(tx),
            worker: Some(worker),
            logs,
        })
    }

    /// The logs to keep rotated, for the keeper's thread.
    pub fn watched_logs(&self) -> Logs {
        self.logs.clone()
    }

    fn send(&self, job: Job) {
        if let Some(tx) = &self.tx
            && tx.send(job).is_err()
        {
            error!("the offload worker is gone: state and log rotation are no longer handled");
        }
    }

    pub fn persist(&self, changes: Vec<(String, Option<SavedAgent>)>) {
        if !changes.is_empty() {
            self.send(Job::Persist(changes));
        }
    }

    /// The logs to keep rotated from now on.
    pub fn logs(&self, logs: Vec<LogFile>) {
        let by_name = logs
            .into_iter()
            .filter_map(|l| Some((l.path.file_name()?.to_os_string(), l)))
            .collect();
        *self.logs.lock().unwrap_or_else(|e| e.into_inner()) = by_name;
    }

    pub fn load_config(&self, path: PathBuf, state_dir: Option<PathBuf>) {
        self.send(Job::LoadConfig { path, state_dir });
    }

    /// Wait (bounded) until everything sent so far is on disk.
    pub fn flush(&self) {
        let (ack, done) = mpsc::sync_channel(1);
        self.send(Job::Flush(ack));
        if done.recv_timeout(FLUSH_WAIT).is_err() {
            warn!("the last state was not written within {FLUSH_WAIT:?}");
        }
    }
}

impl Drop for Offload {
    /// Whatever was sent is finished before vigil goes (or re-executes itself).
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

struct Worker {
    store: StateStore,
    health: Arc<Health>,
    done: UnboundedSender<Done>,
}

impl Worker {
    fn run(mut self, rx: mpsc::Receiver<Job>) {
        let mut waiting: Option<Job> = None;
        loop {
            let job = match waiting.take() {
                Some(job) => job,
                None => match rx.recv() {
                    Ok(job) => job,
                    Err(_) => return,
                },
            };
            match job {
                Job::Persist(mut changes) => {
                    // Everything already queued goes in the same write and sync.
                    while let Ok(next) = rx.try_recv() {
                        match next {
                            Job::Persist(more) => changes.extend(more),
                            other => {
                                waiting = Some(other);
                                break;
                            }
                        }
                    }
                    self.persist(changes);
                }
                Job::LoadConfig { path, state_dir } => {
                    let loaded = config::load(&path, state_dir.as_deref());
                    let _ = self.done.send(Done::Config(Box::new(loaded)));
                }
                Job::Flush(ack) => {
                    let _ = ack.send(());
                }
            }
        }
    }

    fn persist(&mut self, changes: Vec<(String, Option<SavedAgent>)>) {
        let was_failing = self.health.state_failing.load(Ordering::Relaxed);
        match self.store.apply(changes) {
            Ok(()) => {
                if was_failing {
                    info!("state.jsonl is written again");
                }
                self.health.state_failing.store(false, Ordering::Relaxed);
            }
            Err(e) => {
                if !was_failing {
                    error!(
                        "cannot write state.jsonl ({e}); retried with the next change — until then a restart of vigil would forget budgets, stops and quarantines"
                    );
                }
                self.health.state_failing.store(true, Ordering::Relaxed);
            }
        }
    }
}
