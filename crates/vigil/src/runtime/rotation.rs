//! Keeping agents' logs under `log_max_size` without polling: the kernel says which log was
//! written to (the keeper's inotify watch on the logs directory), and only that log's size is
//! looked at — at most once a second per log, however chatty its agent. An idle fleet costs
//! nothing. Rotation (a copy of up to `log_max_size`) happens on the keeper's thread, never on
//! the loop's.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use crate::logs;

/// Writes to one log within this long are looked at once…
pub const SETTLE: Duration = Duration::from_secs(1);
/// …or as soon as this, when a log is written fast enough to pass its size before then: a
/// fast writer overshoots `log_max_size` by one burst, not by a second of writing.
pub const SETTLE_NEAR_FULL: Duration = Duration::from_millis(10);

/// An agent's log, as rotation needs it.
#[derive(Clone, Debug)]
pub struct LogFile {
    pub agent: String,
    pub path: PathBuf,
    pub max_size: u64,
    pub keep: u32,
}

/// The logs to keep rotated, by file name (shared with the thread that watches them).
pub type Logs = Arc<Mutex<HashMap<OsString, LogFile>>>;

/// Rotates the logs written to, and says how long writes may settle before the next look.
#[derive(Default)]
pub struct Rotator {
    /// Each log's size at the last look, and when: its write rate.
    last_look: HashMap<OsString, (u64, Instant)>,
}

impl Rotator {
    /// Rotate those of `written` (every log, after the kernel's event queue overflowed) that
    /// have reached their size. Returns how long to let writes settle before looking again:
    /// up to [`SETTLE`], but short enough that no log written to can pass its size by more
    /// than about half of it at the rate it was written, and never under
    /// [`SETTLE_NEAR_FULL`].
    pub fn rotate_written(
        &mut self,
        logs: &Logs,
        written: &HashSet<OsString>,
        overflow: bool,
    ) -> Duration {
        let due: Vec<(OsString, LogFile)> = {
            let logs = logs.lock().unwrap_or_else(|e| e.into_inner());
            if overflow {
                logs.iter().map(|(n, l)| (n.clone(), l.clone())).collect()
            } else {
                written
                    .iter()
                    .filter_map(|n| Some((n.clone(), logs.get(n)?.clone())))
                    .collect()
            }
        };
        let now = Instant::now();
        let mut settle = SETTLE;
        for (name, log) in due {
            let (before, rotated) = match logs::rotate_sized(&log.path, log.max_size, log.keep) {
                Ok((len, rotated)) => {
                    if rotated {
                        debug!("{}: rotated {}", log.agent, log.path.display());
                    }
                    (len, rotated)
                }
                Err(e) => {
                    warn!("{}: cannot rotate {}: {e}", log.agent, log.path.display());
                    (std::fs::metadata(&log.path).map_or(0, |m| m.len()), false)
                }
            };
            let after = if rotated {
                std::fs::metadata(&log.path).map_or(0, |m| m.len())
            } else {
                before
            };
            // Bytes written since the last look (a rotation in between counts from zero).
            let rate = match self.last_look.insert(name, (after, now)) {
                Some((len, at)) if now > at => {
                    let grown = if before >= len { before - len } else { before };
                    grown as f64 / (now - at).as_secs_f64()
                }
                // First look: assume it is fast until seen otherwise.
                _ => f64::INFINITY,
            };
            let headroom = log.max_size.saturating_sub(after).max(log.max_size / 2) as f64;
            let until_full =
                Duration::from_secs_f64((headroom / 2.0 / rate).min(SETTLE.as_secs_f64()));
            settle = settle.min(until_full.max(SETTLE_NEAR_FULL));
        }
        self.last_look
            .retain(|_, (_, at)| now.duration_since(*at) < Duration::from_secs(3600));
        settle
    }
}
