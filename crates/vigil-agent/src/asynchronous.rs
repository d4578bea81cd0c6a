//! The same for agents on tokio: what may wait on vigil's API runs on the blocking pool, so
//! an agent's runtime never stalls on it.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Agent, Checkpoint, CheckpointError};

/// [`Agent`] for async code. Clones share one agent.
#[derive(Clone)]
pub struct AsyncAgent(Arc<Agent>);

impl AsyncAgent {
    pub fn from_env() -> AsyncAgent {
        AsyncAgent(Arc::new(Agent::from_env()))
    }

    /// The blocking agent inside (its notify-socket calls never block).
    pub fn blocking(&self) -> &Agent {
        &self.0
    }

    /// On the blocking pool when it may wait on the API; at once on the notify socket.
    async fn off_thread(&self, f: impl FnOnce(&Agent) + Send + 'static) {
        if self.0.uses_notify_socket() {
            return f(&self.0);
        }
        let agent = self.0.clone();
        let _ = tokio::task::spawn_blocking(move || f(&agent)).await;
    }

    pub async fn ready(&self) {
        self.0.ready();
    }

    pub async fn heartbeat(&self) {
        self.off_thread(Agent::heartbeat).await;
    }

    pub async fn progress(&self, note: Option<String>) {
        self.off_thread(move |a| a.progress(note.as_deref())).await;
    }

    pub async fn degraded(&self, reason: String, until: Option<SystemTime>) {
        self.off_thread(move |a| a.degraded(&reason, until)).await;
    }

    pub async fn ok(&self) {
        self.off_thread(Agent::ok).await;
    }
}

/// [`Checkpoint`] for async code.
pub struct AsyncCheckpoint<T>(Arc<Mutex<Checkpoint<T>>>);

impl<T: Serialize + DeserializeOwned + Send + 'static> AsyncCheckpoint<T> {
    pub fn new(agent: &AsyncAgent) -> AsyncCheckpoint<T> {
        AsyncCheckpoint(Arc::new(Mutex::new(Checkpoint::new(agent.blocking()))))
    }

    async fn off_thread<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Checkpoint<T>) -> Result<R, CheckpointError> + Send + 'static,
    ) -> Result<R, CheckpointError> {
        let inner = self.0.clone();
        tokio::task::spawn_blocking(move || {
            let mut c = inner.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut c)
        })
        .await
        .unwrap_or_else(|e| {
            Err(CheckpointError::Refused {
                status: 0,
                message: format!("the checkpoint task failed: {e}"),
            })
        })
    }

    /// See [`Checkpoint::save`].
    pub async fn save(&self, state: T) -> Result<Option<i64>, CheckpointError> {
        self.off_thread(move |c| c.save(&state)).await
    }

    /// See [`Checkpoint::load`].
    pub async fn load(&self) -> Result<Option<T>, CheckpointError> {
        self.off_thread(Checkpoint::load).await
    }
}
