//! Keeping agents' logs under `log_max_size` without polling: the kernel says which log was
//! written to (the keeper's inotify watch on the logs directory), and only that log's size is
//! looked at — at most once a second per log, however chatty its agent. An idle fleet costs
//! nothing. Rotation (a copy of up to `log_max_size`) happens on the keeper's thread, never on
//! the loop's.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::{debug, warn};

use crate::logs;

/// Writes to one log within this long are looked at once.
pub const SETTLE: Duration = Duration::from_secs(1);

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

/// Rotate those of `written` (every log, after the kernel's event queue overflowed) that have
/// reached their size.
pub fn rotate_written(logs: &Logs, written: &HashSet<OsString>, overflow: bool) {
    let due: Vec<LogFile> = {
        let logs = logs.lock().unwrap_or_else(|e| e.into_inner());
        if overflow {
            logs.values().cloned().collect()
        } else {
            written
                .iter()
                .filter_map(|n| logs.get(n).cloned())
                .collect()
        }
    };
    for log in due {
        match logs::rotate_if_needed(&log.path, log.max_size, log.keep) {
            Ok(true) => debug!("{}: rotated {}", log.agent, log.path.display()),
            Ok(false) => {}
            Err(e) => warn!("{}: cannot rotate {}: {e}", log.agent, log.path.display()),
        }
    }
}
