//! Signs of life, of work, and of declared degradation, sent to vigil.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::api::Api;
use crate::env::Env;
use crate::notify::Notifier;

/// The same declaration again within this time is not sent again (adapters may declare at
/// every failed call).
const REPEAT_AFTER: Duration = Duration::from_secs(5);

/// One agent's line to vigil. Cheap to share between threads (`&Agent` is enough).
pub struct Agent {
    env: Env,
    notifier: Option<Notifier>,
    api: Option<Api>,
    last_declared: Mutex<Option<(String, Instant)>>,
    warned: AtomicBool,
}

impl Agent {
    /// From the environment vigil gives its runs.
    pub fn from_env() -> Agent {
        Agent::new(Env::from_process())
    }

    pub fn new(env: Env) -> Agent {
        let notifier = env.notify_socket.as_deref().and_then(Notifier::new);
        let api = match (&env.url, &env.agent) {
            (Some(url), Some(agent)) => Some(Api::new(url, agent, env.token.as_deref())),
            _ => None,
        };
        Agent {
            env,
            notifier,
            api,
            last_declared: Mutex::new(None),
            warned: AtomicBool::new(false),
        }
    }

    pub fn env(&self) -> &Env {
        &self.env
    }

    /// Signs of life go to the notify socket (they never wait), not the API.
    pub fn uses_notify_socket(&self) -> bool {
        self.notifier.is_some()
    }

    /// The agent's name as vigil knows it.
    pub fn name(&self) -> Option<&str> {
        self.env.agent.as_deref()
    }

    /// Run by hand: say so once, then stay quiet.
    pub(crate) fn outside_vigil(&self) -> bool {
        if self.env.under_vigil() {
            return false;
        }
        if !self.warned.swap(true, Ordering::Relaxed) {
            eprintln!(
                "vigil-agent: not run by vigil (no VIGIL_URL/VIGIL_AGENT or NOTIFY_SOCKET): heartbeats and status go nowhere, checkpoints stay in a local file"
            );
        }
        true
    }

    /// `READY=1`: started up (for a `notify` check with `ready = true`).
    pub fn ready(&self) {
        self.notify(b"READY=1");
    }

    /// A sign of life: `WATCHDOG=1` on the notify socket, else `POST …/heartbeat` (an `api`
    /// check). Call it where real work is done, not from a timer thread: a timer keeps
    /// beating while the work is stuck.
    pub fn heartbeat(&self) {
        if self.outside_vigil() {
            return;
        }
        if let Some(n) = &self.notifier {
            n.send(b"WATCHDOG=1");
        } else if let Some(api) = &self.api {
            let _ = api.call("POST", "heartbeat", &[], Some("{}"));
        }
    }

    /// A unit of work done: a heartbeat, with what was done as the agent's status line.
    pub fn progress(&self, note: Option<&str>) {
        match (note, &self.notifier) {
            (Some(note), Some(n)) if !self.outside_vigil() => {
                let line = note.replace('\n', " ");
                n.send(format!("WATCHDOG=1\nSTATUS={line}").as_bytes());
            }
            _ => self.heartbeat(),
        }
    }

    /// `STATUS=…`: a line shown in `vigil status`.
    pub fn status(&self, text: &str) {
        self.notify(format!("STATUS={}", text.replace('\n', " ")).as_bytes());
    }

    /// Working, but not fully, on purpose: `until` is when the agent expects to be back. vigil
    /// does not act on a stall of this run before then (at most its policy's `max_degraded`).
    pub fn degraded(&self, reason: &str, until: Option<SystemTime>) {
        let reason = reason.replace('\n', " ");
        let key = format!("degraded:{reason}");
        if self.outside_vigil() || self.repeated(&key) {
            return;
        }
        let unix = until.and_then(|u| u.duration_since(UNIX_EPOCH).ok().map(|d| (u, d)));
        if let Some(n) = &self.notifier {
            let mut msg = format!("DEGRADED={reason}");
            if let Some((_, since_epoch)) = unix {
                msg.push_str(&format!(
                    "\nDEGRADED_UNTIL={:.3}",
                    since_epoch.as_secs_f64()
                ));
            }
            n.send(msg.as_bytes());
        } else if let Some(api) = &self.api {
            let mut body = serde_json::json!({ "state": "degraded", "reason": reason });
            if let Some((at, _)) = unix {
                body["until"] = humantime::format_rfc3339_millis(at).to_string().into();
            }
            let _ = api.call("POST", "status", &[], Some(&body.to_string()));
        }
    }

    /// Back to normal after [`Agent::degraded`]. Also a sign of life: vigil judges a check
    /// still failing the moment the degradation ends, and an agent back at work must not be
    /// taken for stalled by the silence it had declared.
    pub fn ok(&self) {
        if self.outside_vigil() || self.repeated("ok") {
            return;
        }
        if let Some(n) = &self.notifier {
            // One datagram: vigil takes the heartbeat before the declaration.
            n.send(b"WATCHDOG=1\nDEGRADED=0");
        } else if let Some(api) = &self.api {
            let _ = api.call("POST", "heartbeat", &[], Some("{}"));
            let _ = api.call("POST", "status", &[], Some(r#"{"state":"ok"}"#));
        }
    }

    fn notify(&self, message: &[u8]) {
        if !self.outside_vigil()
            && let Some(n) = &self.notifier
        {
            n.send(message);
        }
    }

    /// The same declaration as the last one, a moment ago.
    fn repeated(&self, key: &str) -> bool {
        let mut last = self.last_declared.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if let Some((k, at)) = &*last
            && k == key
            && now.duration_since(*at) < REPEAT_AFTER
        {
            return true;
        }
        *last = Some((key.to_string(), now));
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outside_vigil_everything_is_a_quiet_no_op() {
        let a = Agent::new(Env::default());
        a.ready();
        a.heartbeat();
        a.degraded("x", None);
        a.ok();
        assert!(a.outside_vigil());
    }
}
