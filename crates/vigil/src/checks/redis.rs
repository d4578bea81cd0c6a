//! `redis` checks: a key holding epoch seconds, or a key whose existence is the heartbeat
//! (written with a TTL). One connection per URL, shared by every agent that uses it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::OnceCell;
use vigil_core::Observation;

use super::files::epoch_to_ms;
use crate::redact;

/// Why there is no connection to a Redis.
#[derive(Debug, thiserror::Error)]
enum ConnectError {
    #[error("bad Redis URL {url}: {source}")]
    BadUrl {
        url: String,
        source: redis::RedisError,
    },
    #[error("{url}: {source}")]
    Connect {
        url: String,
        source: redis::RedisError,
    },
}

#[derive(Default)]
pub struct RedisPools {
    /// One cell per URL: the map's lock is held only to find the cell, never across a
    /// connect, so a Redis that hangs delays only the probes of its own URL.
    conns: Mutex<HashMap<String, Arc<OnceCell<ConnectionManager>>>>,
    /// The longest TTL seen per (URL, key) in `exists` mode: the TTL a write gives the key.
    ttls: Mutex<HashMap<(String, String), i64>>,
}

impl RedisPools {
    async fn conn(&self, url: &str, timeout: Duration) -> Result<ConnectionManager, ConnectError> {
        let cell = self
            .conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(url.to_string())
            .or_default()
            .clone();
        let conn = cell
            .get_or_try_init(|| async {
                let client = redis::Client::open(url).map_err(|source| ConnectError::BadUrl {
                    url: redact::url(url),
                    source,
                })?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout))
                    .set_number_of_retries(1);
                ConnectionManager::new_with_config(client, config)
                    .await
                    .map_err(|source| ConnectError::Connect {
                        url: redact::url(url),
                        source,
                    })
            })
            .await?;
        Ok(conn.clone())
    }

    pub async fn probe(
        &self,
        url: &str,
        key: &str,
        exists: bool,
        timeout: Duration,
    ) -> Observation {
        let mut conn = match self.conn(url, timeout).await {
            Ok(c) => c,
            Err(e) => return Observation::Unknown(e.to_string()),
        };
        let shown = redact::url(url);
        if exists {
            return match conn.pttl::<_, i64>(key).await {
                Ok(pttl) => self.dated_by_ttl(url, key, pttl),
                Err(e) => Observation::Unknown(format!("{shown}: {e}")),
            };
        }
        match conn.get::<_, Option<String>>(key).await {
            Ok(None) => Observation::Progress { at_wall_ms: None },
            Ok(Some(v)) => match v.trim().parse::<f64>().ok().and_then(epoch_to_ms) {
                Some(ms) => Observation::Progress {
                    at_wall_ms: Some(ms),
                },
                None => Observation::Unknown(format!(
                    "{key} should hold epoch seconds, but holds {:?}",
                    v.chars().take(40).collect::<String>()
                )),
            },
            Err(e) => Observation::Unknown(format!("{shown}: {e}")),
        }
    }

    /// When a heartbeat key written with a TTL was last written: each write sets the TTL back
    /// to its full length, so a key whose TTL has run down by `d` was written `d` ago. The
    /// full length is the longest TTL seen for the key. A key that merely still exists (left
    /// by a run that has since died) is dated by its last write, not by "now".
    fn dated_by_ttl(&self, url: &str, key: &str, pttl: i64) -> Observation {
        match pttl {
            // No such key: no sign of life.
            -2 => Observation::Progress { at_wall_ms: None },
            -1 => Observation::Unknown(format!(
                "{key} has no expiry: with mode = \"exists\" the agent must write it with a TTL \
                 (SET {key} 1 EX 30), or it would pass forever"
            )),
            left => {
                let mut ttls = self.ttls.lock().unwrap_or_else(|e| e.into_inner());
                let full = ttls
                    .entry((url.to_string(), key.to_string()))
                    .and_modify(|t| *t = (*t).max(left))
                    .or_insert(left);
                let now = crate::clock::now().wall_ms;
                Observation::Progress {
                    at_wall_ms: Some(now - (*full - left)),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_dated_by_how_far_its_ttl_has_run_down() {
        let pools = RedisPools::default();
        let at = |pttl| match pools.dated_by_ttl("redis://x", "hb", pttl) {
            Observation::Progress { at_wall_ms } => at_wall_ms,
            other => panic!("{other:?}"),
        };
        let now = crate::clock::now().wall_ms;
        // First look: just written, as far as anyone can tell.
        assert!(at(30_000).unwrap() >= now);
        // 12 s of the 30 s TTL gone: written 12 s ago.
        let written = at(18_000).unwrap();
        assert!(
            (now - 12_100..=now - 11_900).contains(&written),
            "{written}"
        );
        assert_eq!(at(-2), None);
        assert!(matches!(
            pools.dated_by_ttl("redis://x", "hb", -1),
            Observation::Unknown(_)
        ));
    }
}
