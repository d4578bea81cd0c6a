//! The keeper of the state dir: one thread, woken by the kernel (inotify), that
//!
//! - rotates agents' logs when they are written to (see `rotation`);
//! - puts back what vigil owns when the state dir is deleted or moved away under it (`rm -rf`,
//!   a tmp cleaner): the dir and its logs dir, `vigil.pid`, `api.addr`, the notify socket.
//!   The journal and `state.jsonl` notice by themselves on their next write (`owned_file`),
//!   and agents' log files are made again at their next spawn. The lock does not need it: it
//!   is not held on a file (`state_lock`).
//!
//! The deletion is seen on the state dir's parent (`IN_DELETE`/`IN_MOVED_FROM` of its name): the
//! dir's own `IN_DELETE_SELF` comes only once nothing holds it any more, and vigil's open
//! journal does. `rm -rf` removes the dir last, after emptying it, and the dir is put back a
//! moment later still ([`SETTLE`]), so that removing a parent too (`rm -rf` of a whole
//! tree) is not fought.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};
use tracing::{info, warn};

use super::rotation::{self, Logs};

/// How long after the state dir was deleted it is made again.
const SETTLE: std::time::Duration = std::time::Duration::from_millis(200);

/// Put back, after the state dir was made again, whatever else vigil keeps in it.
pub type Restore = Box<dyn FnMut() + Send>;

/// Start keeping `state_dir`; the thread lives as long as vigil.
pub fn start(
    state_dir: &Path,
    logs_dir: &Path,
    logs: Logs,
    restore: Restore,
) -> std::io::Result<()> {
    let fd = inotify::init(CreateFlags::CLOEXEC)?;
    let mut keeper = Keeper {
        fd,
        state_dir: state_dir.to_path_buf(),
        logs_dir: logs_dir.to_path_buf(),
        parent_wd: -1,
        state_wd: -1,
        logs_wd: -1,
        logs,
        rotator: rotation::Rotator::default(),
        restore,
    };
    keeper.watch_parent()?;
    keeper.watch_state_dir()?;
    keeper.watch_logs_dir()?;
    std::thread::Builder::new()
        .name("vigil-keeper".into())
        .spawn(move || keeper.run())?;
    Ok(())
}

struct Keeper {
    fd: OwnedFd,
    state_dir: PathBuf,
    logs_dir: PathBuf,
    parent_wd: i32,
    state_wd: i32,
    logs_wd: i32,
    logs: Logs,
    rotator: rotation::Rotator,
    restore: Restore,
}

impl Keeper {
    fn watch_parent(&mut self) -> std::io::Result<()> {
        let parent = self.state_dir.parent().unwrap_or(Path::new("/"));
        let flags = WatchFlags::DELETE | WatchFlags::MOVED_FROM | WatchFlags::ONLYDIR;
        self.parent_wd = inotify::add_watch(&self.fd, parent, flags)?;
        Ok(())
    }

    /// For the logs dir being made again (by a spawn, after only it was deleted).
    fn watch_state_dir(&mut self) -> std::io::Result<()> {
        let flags = WatchFlags::CREATE | WatchFlags::ONLYDIR;
        self.state_wd = inotify::add_watch(&self.fd, &self.state_dir, flags)?;
        Ok(())
    }

    fn watch_logs_dir(&mut self) -> std::io::Result<()> {
        self.logs_wd = inotify::add_watch(&self.fd, &self.logs_dir, WatchFlags::MODIFY)?;
        Ok(())
    }

    fn run(mut self) {
        let mut buf = [MaybeUninit::<u8>::uninit(); 8192];
        loop {
            // Block until something happened; then take every event already queued.
            let mut written: HashSet<OsString> = HashSet::new();
            let mut overflow = false;
            let mut state_dir_gone = false;
            let mut logs_dir_made = false;
            let mut reader = inotify::Reader::new(&self.fd, &mut buf);
            loop {
                match reader.next() {
                    Ok(event) => {
                        let flags = event.events();
                        let wd = event.wd();
                        overflow |= flags.contains(ReadFlags::QUEUE_OVERFLOW);
                        let name = event
                            .file_name()
                            .map(|n| OsStr::from_bytes(n.to_bytes()).to_os_string());
                        if wd == self.parent_wd {
                            state_dir_gone |= flags
                                .intersects(ReadFlags::DELETE | ReadFlags::MOVED_FROM)
                                && name.as_deref() == self.state_dir.file_name();
                        } else if wd == self.state_wd {
                            logs_dir_made |= flags.contains(ReadFlags::CREATE)
                                && name.as_deref() == self.logs_dir.file_name();
                        } else if wd == self.logs_wd
                            && flags.contains(ReadFlags::MODIFY)
                            && let Some(name) = name
                        {
                            written.insert(name);
                        }
                    }
                    Err(rustix::io::Errno::INTR) => continue,
                    Err(e) => {
                        warn!(
                            "watching the state dir stopped ({e}): logs are no longer rotated, and a deleted state dir is not made again"
                        );
                        return;
                    }
                }
                if reader.is_buffer_empty() {
                    break;
                }
            }
            if state_dir_gone {
                self.put_back();
            } else if logs_dir_made && let Err(e) = self.watch_logs_dir() {
                warn!("cannot watch {} again: {e}", self.logs_dir.display());
            }
            if !written.is_empty() || overflow {
                // Writes meanwhile queue up (and merge) in the kernel: one look per log per
                // settle time.
                let settle = self.rotator.rotate_written(&self.logs, &written, overflow);
                std::thread::sleep(settle);
            }
        }
    }

    /// The state dir was deleted or moved away: make it again with everything vigil keeps in
    /// it, and watch the new one.
    fn put_back(&mut self) {
        std::thread::sleep(SETTLE);
        if let Err(e) = std::fs::create_dir_all(&self.logs_dir) {
            warn!(
                "the state dir {} was deleted and cannot be made again: {e}",
                self.state_dir.display()
            );
            return;
        }
        let watched = (self.watch_parent())
            .and_then(|()| self.watch_state_dir())
            .and_then(|()| self.watch_logs_dir());
        if let Err(e) = watched {
            warn!(
                "cannot watch the new state dir {}: {e}",
                self.state_dir.display()
            );
        }
        (self.restore)();
        info!(
            "the state dir {} was deleted or moved away under vigil; made again (the journal and state continue in it)",
            self.state_dir.display()
        );
    }
}
