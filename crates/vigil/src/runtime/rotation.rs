//! Keeping agents' logs under `log_max_size` without polling: the kernel says which log was
//! written to (one inotify watch on the logs directory), and only that log's size is looked
//! at — at most once a second per log, however chatty its agent. An idle fleet costs nothing.
//! Rotation (a copy of up to `log_max_size`) happens on this thread, never on the loop's.

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};
use tracing::{debug, warn};

use crate::logs;

/// Writes to one log within this long are looked at once.
const SETTLE: Duration = Duration::from_secs(1);

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

/// Start watching `dir`; the thread lives as long as vigil.
pub fn start(dir: &Path, logs: Logs) -> std::io::Result<()> {
    let fd = inotify::init(CreateFlags::CLOEXEC)?;
    inotify::add_watch(&fd, dir, WatchFlags::MODIFY)?;
    std::thread::Builder::new()
        .name("vigil-logs".into())
        .spawn(move || watch(fd, logs))?;
    Ok(())
}

fn watch(fd: OwnedFd, logs: Logs) {
    let mut buf = [MaybeUninit::<u8>::uninit(); 8192];
    loop {
        // Block until something was written; then take every event already queued.
        let mut written: HashSet<OsString> = HashSet::new();
        let mut overflow = false;
        let mut reader = inotify::Reader::new(&fd, &mut buf);
        loop {
            match reader.next() {
                Ok(event) => {
                    if event.events().contains(ReadFlags::QUEUE_OVERFLOW) {
                        overflow = true;
                    }
                    if let Some(name) = event.file_name() {
                        written.insert(OsStr::from_bytes(name.to_bytes()).to_os_string());
                    }
                }
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => {
                    warn!("watching agents' logs stopped ({e}): logs are no longer rotated");
                    return;
                }
            }
            if reader.is_buffer_empty() {
                break;
            }
        }
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
        // Writes meanwhile queue up (and merge) in the kernel: one look per log per second.
        std::thread::sleep(SETTLE);
    }
}
