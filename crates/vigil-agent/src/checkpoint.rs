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
    /// `Ok(None)` not kept by vigil now (unreachable, its store down, or this run's token
    /// not known to it — a vigil that just restarted), `Err(Conflict)` another version came
    /// first.
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
            Answer::Unreachable | Answer::Reply(401, ..) => Ok(None),
            Answer::Reply(200 | 201, Some(v), _) => Ok(Some(v)),
            // (vigil sends an ETag; its body says the same.)
            Answer::Reply(200 | 201, None, body) => {
                let v: serde_json::Value = serde_json::from_str(&body)?;
                Ok(v["version"].as_i64())
            }
            Answer::Reply(412, current, _) => Err(CheckpointError::Conflict { current }),
            Answer::Reply(status, _, body) => Err(refused(status, &body)),
        }
    }

    /// vigil's latest: `Ok(None)` when it cannot be asked now; `Ok(Some(None))` when it has
    /// no checkpoint for the agent; else its document and version.
    #[allow(clippy::type_complexity)]
    fn fetch(
        &self,
        api: &Api,
    ) -> Result<Option<Option<(serde_json::Value, i64)>>, CheckpointError> {
        match api.call("GET", "checkpoint", &[], None) {
            Answer::Unreachable | Answer::Reply(401, ..) => Ok(None),
            Answer::Reply(200, _, body) => {
                let v: serde_json::Value = serde_json::from_str(&body)?;
                let version = v["version"].as_i64().unwrap_or(0);
                Ok(Some(Some((v["document"].clone(), version))))
            }
            // "No checkpoint yet" says so (`checkpoint: null`); any other 404 is an agent
            // vigil does not know.
            Answer::Reply(404, _, body)
                if serde_json::from_str::<serde_json::Value>(&body)
                    .is_ok_and(|v| v.get("checkpoint").is_some_and(|c| c.is_null())) =>
            {
                Ok(Some(None))
            }
            Answer::Reply(status, _, body) => Err(refused(status, &body)),
        }
    }

    /// The local copy, best effort once vigil has the state (a read-only directory must not
    /// turn a saved checkpoint into an error).
    fn keep_synced(&self, state: serde_json::Value, version: i64, saved_at: f64) {
        let _ = self.keep_locally(state, version, false, saved_at);
    }

    /// Save `state` as the agent's next version. `Ok(Some(version))`: vigil has it, durably.
    /// `Ok(None)`: vigil could not keep it now; it is in the local file (durably) and goes to
    /// vigil at the next save or load that reaches it. `Err(Conflict)`: another writer saved
    /// since this copy last read — `load()`, then save again.
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
            // The last save got no answer, yet was taken: this one goes on top of it.
            self.version = v;
            outcome = self.put(api, &document, v);
        }
        match outcome? {
            Some(v) => {
                self.version = v;
                self.keep_synced(value, v, saved_at);
                Ok(Some(v))
            }
            None => {
                // Built on the version this copy last saw: sent later with that as If-Match.
                self.keep_locally(value, self.version, true, saved_at)?;
                Ok(None)
            }
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
        Ok(
            matches!(self.fetch(api)?, Some(Some((doc, version))) if version == v && doc == pending.state),
        )
    }

    /// The agent's latest state. vigil's, when it can be asked — after sending it a copy
    /// saved while it was away, if vigil has nothing newer than what that copy was built on
    /// (a newer version in vigil, written by someone else meanwhile, wins and the copy is
    /// dropped). The local copy when vigil cannot be asked, or has none (a new store).
    pub fn load(&mut self) -> Result<Option<T>, CheckpointError> {
        let local = local::read(&self.path).map_err(|e| self.local_error(e))?;
        let Some(api) = &self.api else {
            return self.state_from_local(local);
        };
        let Some(server) = self.fetch(api)? else {
            return self.state_from_local(local);
        };
        let server_version = server.as_ref().map_or(0, |(_, v)| *v);
        self.version = server_version;
        if let Some(copy) = local {
            let landed = server.as_ref().is_some_and(|(doc, _)| *doc == copy.state);
            let send = if copy.pending {
                // Nothing reached vigil since the copy's base (or vigil has less than that: a
                // lost or restored store): it becomes the next version.
                !landed && copy.version >= server_version
            } else {
                // vigil lost it (a new store, a deleted database): the copy is all there is.
                server.is_none()
            };
            if landed {
                self.keep_synced(copy.state.clone(), server_version, copy.saved_at);
            }
            if send {
                match self.put(api, &copy.state.to_string(), server_version) {
                    Ok(Some(v)) => {
                        self.version = v;
                        self.keep_synced(copy.state.clone(), v, copy.saved_at);
                    }
                    // vigil went away again: the copy stays pending, and is the state.
                    Ok(None) => {}
                    // Someone wrote between the look and the send: theirs is newer and wins.
                    Err(CheckpointError::Conflict { .. }) => {
                        return match self.fetch(api)? {
                            Some(Some((document, version))) => {
                                self.version = version;
                                self.keep_synced(document.clone(), version, now_secs());
                                Ok(Some(serde_json::from_value(document)?))
                            }
                            _ => Ok(Some(serde_json::from_value(copy.state)?)),
                        };
                    }
                    Err(e) => return Err(e),
                }
                return Ok(Some(serde_json::from_value(copy.state)?));
            }
        }
        match server {
            Some((document, version)) => {
                self.keep_synced(document.clone(), version, now_secs());
                Ok(Some(serde_json::from_value(document)?))
            }
            None => Ok(None),
        }
    }

    fn state_from_local(&mut self, local: Option<LocalCopy>) -> Result<Option<T>, CheckpointError> {
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
