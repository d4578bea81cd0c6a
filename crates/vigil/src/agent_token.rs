//! Per-run agent credentials. Each run vigil spawns gets `VIGIL_AGENT_TOKEN`: it lets that
//! run, and only it, write its own agent's checkpoint, heartbeat and status — no other agent's,
//! no control endpoint — and it is refused once the run has ended.
//!
//! A token is `vat_` and the HMAC-SHA256 of the run's tag under a key kept in the state dir
//! (`agent-token.key`, 0600). Nothing per run is stored: a vigil restarted after a kill -9
//! finds its runs by their tags (as it does to adopt them) and so knows their tokens again,
//! and a run tag is never reused, so no two runs share a token.

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::{Arc, RwLock};

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use vigil_core::RunId;

pub const TOKEN_VAR: &str = "VIGIL_AGENT_TOKEN";
pub const URL_VAR: &str = "VIGIL_URL";
/// Marks a token as an agent's (and makes one easy to spot in a leaked log).
pub const PREFIX: &str = "vat_";

const KEY_FILE: &str = "agent-token.key";

/// The key agent tokens are derived from.
pub struct TokenKey([u8; 32]);

impl TokenKey {
    /// The state dir's key, created (random, durably, 0600) the first time.
    pub fn load_or_create(state_dir: &Path) -> io::Result<TokenKey> {
        let path = state_dir.join(KEY_FILE);
        match std::fs::read(&path) {
            Ok(bytes) if bytes.len() == 32 => {
                let mut key = [0u8; 32];
                key.copy_from_slice(&bytes);
                return Ok(TokenKey(key));
            }
            // A torn or foreign file: a new key. The tokens of runs alive now stop working
            // (401); the client libraries keep those runs' checkpoints in their local files.
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(|e| io::Error::other(e.to_string()))?;
        crate::owned_file::write_durably(&path, &key)?;
        Ok(TokenKey(key))
    }

    /// A key for this vigil's life only (the state dir cannot keep one).
    pub fn ephemeral() -> TokenKey {
        let mut key = [0u8; 32];
        // Without randomness, tokens are not worth having: no run could be told apart.
        getrandom::fill(&mut key).expect("the kernel's random numbers");
        TokenKey(key)
    }

    /// The token of the run tagged `run_tag`.
    pub fn token(&self, run_tag: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("any key length");
        mac.update(run_tag.as_bytes());
        let tag = mac.finalize().into_bytes();
        format!(
            "{PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tag)
        )
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[derive(Default)]
struct Runs {
    /// A live token's digest → its agent and run.
    agents: HashMap<[u8; 32], (String, RunId)>,
    /// An agent → its live token's digest.
    tokens: HashMap<String, [u8; 32]>,
    /// A live run's main pid → its agent.
    pids: HashMap<u32, String>,
}

/// The runs alive now and their tokens: written by the supervision loop as runs start and
/// end, read by the API for every agent request.
#[derive(Clone, Default)]
pub struct LiveRuns(Arc<RwLock<Runs>>);

impl LiveRuns {
    /// A run of `agent` is about to start with `token` (before its process exists, so its
    /// very first request is known). Any earlier token of the agent stops working.
    pub fn begin(&self, agent: &str, run: RunId, token: &str) {
        let mut runs = self.0.write().unwrap_or_else(|e| e.into_inner());
        let d = digest(token);
        if let Some(old) = runs.tokens.insert(agent.to_string(), d) {
            runs.agents.remove(&old);
        }
        runs.agents.insert(d, (agent.to_string(), run));
    }

    /// The run's main process is `pid`: its exit ends the token.
    pub fn bind(&self, agent: &str, pid: u32) {
        let mut runs = self.0.write().unwrap_or_else(|e| e.into_inner());
        runs.pids.insert(pid, agent.to_string());
    }

    /// The agent has no live run (its spawn failed).
    pub fn end_agent(&self, agent: &str) {
        let mut runs = self.0.write().unwrap_or_else(|e| e.into_inner());
        if let Some(d) = runs.tokens.remove(agent) {
            runs.agents.remove(&d);
        }
        runs.pids.retain(|_, a| a != agent);
    }

    /// A run's main process was collected: its token is refused from now on.
    pub fn ended(&self, pid: u32) {
        let mut runs = self.0.write().unwrap_or_else(|e| e.into_inner());
        if let Some(agent) = runs.pids.remove(&pid)
            && let Some(d) = runs.tokens.remove(&agent)
        {
            runs.agents.remove(&d);
        }
    }

    /// The agent (and its run) whose live run holds `token`. (A lookup by the token's digest:
    /// nothing about a token can be learnt from how long it takes.)
    pub fn agent_of(&self, token: &str) -> Option<(String, RunId)> {
        if !token.starts_with(PREFIX) {
            return None;
        }
        let runs = self.0.read().unwrap_or_else(|e| e.into_inner());
        runs.agents.get(&digest(token)).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_its_runs_alone_and_ends_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let key = TokenKey::load_or_create(dir.path()).unwrap();
        let t1 = key.token("bot#1-2.1");
        let t2 = key.token("bot#1-2.2");
        assert_ne!(t1, t2);
        assert!(t1.starts_with(PREFIX) && t1.len() == PREFIX.len() + 43);
        // The same key after a restart: the same tokens.
        let again = TokenKey::load_or_create(dir.path()).unwrap();
        assert_eq!(again.token("bot#1-2.1"), t1);

        let runs = LiveRuns::default();
        runs.begin("bot", RunId(1), &t1);
        runs.bind("bot", 100);
        assert_eq!(runs.agent_of(&t1), Some(("bot".to_string(), RunId(1))));
        assert_eq!(runs.agent_of(&t2), None);
        assert_eq!(runs.agent_of("vat_nonsense"), None);
        runs.ended(100);
        assert_eq!(runs.agent_of(&t1), None, "a token of a run that ended");
        runs.begin("bot", RunId(2), &t2);
        runs.bind("bot", 101);
        // A stale exit of an earlier pid does not end the new run.
        runs.ended(100);
        assert_eq!(runs.agent_of(&t2), Some(("bot".to_string(), RunId(2))));
        runs.begin("bot", RunId(3), &key.token("bot#1-2.3"));
        assert_eq!(runs.agent_of(&t2), None, "a new run ends the old token");
    }

    #[test]
    fn a_torn_key_file_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(KEY_FILE), b"short").unwrap();
        let key = TokenKey::load_or_create(dir.path()).unwrap();
        assert_eq!(std::fs::read(dir.path().join(KEY_FILE)).unwrap().len(), 32);
        assert_eq!(
            TokenKey::load_or_create(dir.path()).unwrap().token("x"),
            key.token("x")
        );
    }
}
