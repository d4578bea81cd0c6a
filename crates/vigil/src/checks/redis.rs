//! `redis` checks: a key holding epoch seconds, or a key whose existence is the heartbeat
//! (written with a TTL). One connection per URL, shared by every agent that uses it.

use std::collections::HashMap;
use std::time::Duration;

use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::Mutex;
use vigil_core::Observation;

use super::files::epoch_to_ms;
use super::sql::redact_url;

#[derive(Default)]
pub struct RedisPools {
    conns: Mutex<HashMap<String, ConnectionManager>>,
}

impl RedisPools {
    async fn conn(&self, url: &str, timeout: Duration) -> Result<ConnectionManager, String> {
        let mut conns = self.conns.lock().await;
        if let Some(c) = conns.get(url) {
            return Ok(c.clone());
        }
        let client = redis::Client::open(url)
            .map_err(|e| format!("bad Redis URL {}: {e}", redact_url(url)))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1);
        let conn = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(|e| format!("{}: {e}", redact_url(url)))?;
        conns.insert(url.to_string(), conn.clone());
        Ok(conn)
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
            Err(e) => return Observation::Unknown(e),
        };
        let shown = redact_url(url);
        if exists {
            return match conn.exists::<_, bool>(key).await {
                // The key is the heartbeat: present means alive now.
                Ok(true) => Observation::Progress {
                    at_wall_ms: Some(crate::runtime::now().wall_ms),
                },
                Ok(false) => Observation::Progress { at_wall_ms: None },
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
}
