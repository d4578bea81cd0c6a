//! An agent's checkpoint: kept by vigil, with a local copy for when vigil cannot be reached.

use std::marker::PhantomData;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::{Answer, Api};
use crate::local::{self, LocalCopy};
use crate::{Agent, Env};

/// Why a checkpoint was not saved or loaded.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// Another writer saved a newer version since this one read it (a second copy of the
    /// agent, or a person). `load()` first, then save on top of it.
    #[error("the checkpoint changed meanwhile: version {current:?} is the latest in vigil")]
    Conflict { current: Option<i64> },
    /// vigil refused it (a token of an ended run, another agent's name, not JSON, too large).
    #[error("vigil refused the checkpoint: HTTP {status}: {message}")]
    Refused { status: u16, message: String },
    #[error("the local checkpoint copy {}: {source}", path.display())]
    Local {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the checkpoint is not JSON of this type: {0}")]
    Json(#[from] serde_json::Error),
}

/// The agent's state of type `T`, saved to vigil (compare-and-swap on the version this copy
/// last saw) and loaded back after a restart.
pub struct Checkpoint<T> {
    api: Option<Api>,
    agent: String,
    path: PathBuf,
    /// The latest version in vigil as far as this copy knows (0: none).
    version: i64,
    _state: PhantomData<fn() -> T>,
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

impl<T: Serialize + DeserializeOwned> Checkpoint<T> {
    pub fn new(agent: &Agent) -> Checkpoint<T> {
        let name = agent.name().unwrap_or("agent").to_string();
        Checkpoint::with_env(agent.env(), &name)
    }

    /// For an agent named `name` (run by hand, no vigil): only the local file.
    pub fn with_env(env: &Env, name: &str) -> Checkpoint<T> {
        let api = match (&env.url, &env.agent) {
            (Some(url), Some(agent)) => Some(Api::new(url, agent, env.token.as_deref())),
            _ => None,
        };
        Checkpoint {
            api,
            agent: name.to_string(),
            path: local::path_for(env, name),
            version: 0,
            _state: PhantomData,
        }
    }

    /// The version in vigil this copy last saved or loaded (0: none yet).
    pub fn version(&self) -> i64 {
        self.version
    }

    /// Where the local copy is.
    pub fn local_path(&self) -> &std::path::Path {
        &self.path
    }

    fn local_error(&self, source: std::io::Error) -> CheckpointError {
        CheckpointError::Local {
            path: self.path.clone(),
            source,
        }
    }

    fn keep_locally(
        &self,
        state: serde_json::Value,
        version: i64,
        pending: bool,
        saved_at: f64,
    ) -> Result<(), CheckpointError> {
        let copy = LocalCopy {
            agent: self.agent.clone(),
            version,
            pending,
            saved_at,
            state,
        };
        local::write(&self.path, &copy).map_err(|e| self.local_error(e))
    }

    /// Put `document` as the next version after `expected`: `Ok(Some(v))` taken,
    /// `Ok(None)` vigil unreachable, `Err(Conflict)` another version came first.
    fn put(
        &self,
        api: &Api,
        document: &str,
        expected: i64,
    ) -> Result<Option<i64>, CheckpointError> {
        match api.call(
            "PUT",
            "checkpoint",
            &[("If-Match", expected.to_string())],
            Some(document),
        ) {
            Answer::Unreachable => Ok(None),
            Answer::Reply(200 | 201, Some(v), _) => Ok(Some(v)),
            Answer::Reply(412, current, _) => Err(CheckpointError::Conflict { current }),
            Answer::Reply(status, _, body) => Err(refused(status, &body)),
        }
    }

    /// Save `state` as the agent's next version. `Ok(Some(version))`: vigil has it, durably.
    /// `Ok(None)`: vigil could not be reached; it is in the local file (durably) and goes to
    /// vigil at the next save or load that reaches it.
    pub fn save(&mut self, state: &T) -> Result<Option<i64>, CheckpointError> {
        let value = serde_json::to_value(state)?;
        let document = value.to_string();
        let saved_at = now_secs();
        let Some(api) = &self.api else {
            self.keep_locally(value, self.version, false, saved_at)?;
            return Ok(None);
        };
        let mut outcome = self.put(api, &document, self.version);
        if let Err(CheckpointError::Conflict { current: Some(v) }) = outcome
            && self.landed_while_unanswered(api, v)?
        {
            // The last save timed out, yet reached vigil: this save goes on top of it.
            self.version = v;
            outcome = self.put(api, &document, v);
        }
        match outcome {
            Ok(Some(v)) => {
                self.version = v;
                self.keep_locally(value, v, false, saved_at)?;
                Ok(Some(v))
            }
            Ok(None) => {
                self.keep_locally(value, self.version, true, saved_at)?;
                Ok(None)
            }
            Err(CheckpointError::Conflict { current }) => {
                if let Some(v) = current {
                    self.version = v;
                }
                Err(CheckpointError::Conflict { current })
            }
            Err(e) => Err(e),
        }
    }

    /// vigil's version `v` is this copy's pending state: a save that got no answer (a
    /// timeout) but was taken.
    fn landed_while_unanswered(&self, api: &Api, v: i64) -> Result<bool, CheckpointError> {
        let pending = local::read(&self.path)
            .map_err(|e| self.local_error(e))?
            .filter(|c| c.pending && c.version == self.version);
        let Some(pending) = pending else {
            return Ok(false);
        };
        match api.call("GET", "checkpoint", &[], None) {
            Answer::Reply(200, Some(version), body) if version == v => {
                let server: serde_json::Value = serde_json::from_str(&body)?;
                Ok(server["document"] == pending.state)
            }
            _ => Ok(false),
        }
    }

    /// The agent's latest state: vigil's, or the local copy when it is newer (saved while
    /// vigil was unreachable — it is sent to vigil now) or when vigil cannot be reached.
    pub fn load(&mut self) -> Result<Option<T>, CheckpointError> {
        let local = local::read(&self.path).map_err(|e| self.local_error(e))?;
        let Some(api) = &self.api else {
            return self.from_local(local);
        };
        let (server, server_version) = match api.call("GET", "checkpoint", &[], None) {
            Answer::Unreachable => return self.from_local(local),
            Answer::Reply(404, _, _) => (None, 0),
            Answer::Reply(200, _, body) => {
                let v: serde_json::Value = serde_json::from_str(&body)?;
                let version = v["version"].as_i64().unwrap_or(0);
                let ts = v["ts"]
                    .as_str()
                    .and_then(|t| humantime::parse_rfc3339(t).ok())
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .map(|d| d.as_secs_f64())
                    .unwrap_or_default();
                (Some((v["document"].clone(), ts)), version)
            }
            Answer::Reply(status, _, body) => return Err(refused(status, &body)),
        };
        self.version = server_version;
        if let Some(copy) = local.filter(|c| c.pending) {
            let newer = server.as_ref().is_none_or(|(_, ts)| copy.saved_at > *ts);
            if newer {
                // Saved while vigil was away, and nothing newer reached vigil meanwhile.
                if let Some(v) = self.put(api, &copy.state.to_string(), server_version)? {
                    self.version = v;
                    self.keep_locally(copy.state.clone(), v, false, copy.saved_at)?;
                }
                return Ok(Some(serde_json::from_value(copy.state)?));
            }
        }
        match server {
            Some((document, _)) => {
                self.keep_locally(document.clone(), server_version, false, now_secs())?;
                Ok(Some(serde_json::from_value(document)?))
            }
            None => Ok(None),
        }
    }

    fn from_local(&mut self, local: Option<LocalCopy>) -> Result<Option<T>, CheckpointError> {
        match local {
            Some(copy) => {
                self.version = copy.version;
                Ok(Some(serde_json::from_value(copy.state)?))
            }
            None => Ok(None),
        }
    }
}

fn refused(status: u16, body: &str) -> CheckpointError {
    let message = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or_else(|| body.chars().take(200).collect());
    CheckpointError::Refused { status, message }
}
