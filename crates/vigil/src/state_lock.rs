//! Exclusive use of a state dir: two vigils on one state dir would run every agent twice.
//!
//! A lock held on a file in the state dir goes with it when someone deletes the dir (`rm -rf`,
//! a tmp cleaner): the next vigil creates a new dir, locks a new file and starts a second copy
//! of every agent. So the lock is held on two things nobody can unlink away:
//!
//! - a listening Unix socket with an *abstract* name (no file: it lives as long as the
//!   process) derived from the state dir's canonical path — the same path gives the same
//!   name, deleted or not; a second vigil cannot bind it, and learns the holder's pid from the
//!   socket's peer credentials;
//! - for `vigil run`, an `flock` on the directory itself, for vigils in different network namespaces (which
//!   do not share abstract names) but the same directory.
//!
//! Both go away when the process does, however it ends: a kill -9 leaves no stale lock.
//! `vigil.pid` is only written for people to read.

use std::fs::File;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Who holds the lock: `vigil run`, or `vigil demo` (which wipes its state dir before it
/// starts its own vigil there, so it must hold a lock of its own first).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Holder {
    Run,
    Demo,
}

impl Holder {
    fn tag(self) -> &'static str {
        match self {
            Holder::Run => "run",
            Holder::Demo => "demo",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Holder::Run => "vigil",
            Holder::Demo => "vigil demo",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("cannot create the state dir {}: {source}", dir.display())]
    Create { dir: PathBuf, source: io::Error },
    #[error("cannot lock the state dir {}: {source}", dir.display())]
    Io { dir: PathBuf, source: io::Error },
    #[error(
        "another {what}{} is already running with state dir {}",
        pid.map(|p| format!(" (pid {p})")).unwrap_or_default(),
        dir.display()
    )]
    Held {
        what: &'static str,
        pid: Option<u32>,
        dir: PathBuf,
    },
}

/// Held until dropped (or the process ends).
#[derive(Debug)]
pub struct StateLock {
    _name: UnixListener,
    /// `vigil run` only: the demo's own vigil takes this one.
    _dir: Option<File>,
    canonical: PathBuf,
}

impl StateLock {
    /// Create the state dir if needed and lock it — before anything in it is touched.
    pub fn acquire(dir: &Path, holder: Holder) -> Result<StateLock, LockError> {
        std::fs::create_dir_all(dir).map_err(|source| LockError::Create {
            dir: dir.to_path_buf(),
            source,
        })?;
        let io_err = |source| LockError::Io {
            dir: dir.to_path_buf(),
            source,
        };
        let canonical = std::fs::canonicalize(dir).map_err(io_err)?;
        let held = |pid| LockError::Held {
            what: holder.what(),
            pid,
            dir: dir.to_path_buf(),
        };
        let name = lock_name(&canonical, holder);
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).map_err(io_err)?;
        let listener = match UnixListener::bind_addr(&addr) {
            Ok(l) => l,
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                let pid = match probe(&name) {
                    Probe::Held(pid) => pid,
                    Probe::Free => None,
                };
                return Err(held(pid));
            }
            Err(e) => return Err(io_err(e)),
        };
        let mut dir_file = None;
        if holder == Holder::Run {
            let file = File::open(&canonical).map_err(io_err)?;
            let exclusive = rustix::fs::FlockOperation::NonBlockingLockExclusive;
            if rustix::fs::flock(&file, exclusive).is_err() {
                return Err(held(None));
            }
            dir_file = Some(file);
            write_pid_file(&canonical);
        }
        Ok(StateLock {
            _name: listener,
            _dir: dir_file,
            canonical,
        })
    }

    /// The state dir's canonical path (what runs carry as their mark).
    pub fn canonical(&self) -> &Path {
        &self.canonical
    }
}

/// `<dir>/vigil.pid`, for people (and `kill`) only: the lock is not in this file. Written
/// again when the state dir was deleted under vigil.
pub fn write_pid_file(dir: &Path) {
    let _ = std::fs::write(dir.join("vigil.pid"), std::process::id().to_string());
}

/// Whether someone holds `holder`'s lock on `dir` now, and their pid when it can be told.
pub fn holder_of(dir: &Path, holder: Holder) -> Probe {
    match std::fs::canonicalize(dir) {
        Ok(canonical) => probe(&lock_name(&canonical, holder)),
        Err(_) => Probe::Free,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    Free,
    /// Held, by this pid when its peer credentials could be read.
    Held(Option<u32>),
}

fn lock_name(canonical: &Path, holder: Holder) -> String {
    format!("vigil/{}/{}", holder.tag(), dir_hash(canonical))
}

/// A short name for a state dir, the same for every path to it and after it is deleted: for
/// abstract socket names (the lock's, the notify socket's fallback).
pub fn dir_hash(canonical: &Path) -> String {
    let digest = Sha256::digest(canonical.as_os_str().as_encoded_bytes());
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// Who listens on `name`. The holder never accepts, so every probe stays in its backlog until
/// the probe closes; the connect is non-blocking so that a full backlog (many probes at once)
/// reads as "held" instead of hanging.
fn probe(name: &str) -> Probe {
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
    let Ok(addr) = SocketAddrUnix::new_abstract_name(name.as_bytes()) else {
        return Probe::Free;
    };
    let flags = SocketFlags::NONBLOCK | SocketFlags::CLOEXEC;
    let Ok(fd) = rustix::net::socket_with(AddressFamily::UNIX, SocketType::STREAM, flags, None)
    else {
        return Probe::Free;
    };
    match rustix::net::connect(&fd, &addr) {
        Ok(()) => Probe::Held(
            rustix::net::sockopt::socket_peercred(&fd)
                .ok()
                .map(|cred| cred.pid.as_raw_nonzero().get() as u32),
        ),
        Err(rustix::io::Errno::AGAIN) => Probe::Held(None),
        Err(_) => Probe::Free,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_and_told_who_holds_it() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let lock = StateLock::acquire(&state, Holder::Run).unwrap();
        match StateLock::acquire(&state, Holder::Run) {
            Err(LockError::Held { pid, .. }) => assert_eq!(pid, Some(std::process::id())),
            other => panic!("{other:?}"),
        }
        let me = Probe::Held(Some(std::process::id()));
        assert_eq!(holder_of(&state, Holder::Run), me);
        // A demo's lock is another lock on the same dir.
        assert_eq!(holder_of(&state, Holder::Demo), Probe::Free);
        // Probes are never accepted: more of them than the backlog holds must still answer.
        for _ in 0..300 {
            assert_ne!(holder_of(&state, Holder::Run), Probe::Free);
        }
        drop(lock);
        assert_eq!(holder_of(&state, Holder::Run), Probe::Free);
        StateLock::acquire(&state, Holder::Run).unwrap();
    }

    #[test]
    fn deleting_the_state_dir_does_not_release_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let _lock = StateLock::acquire(&state, Holder::Run).unwrap();
        std::fs::remove_dir_all(&state).unwrap();
        assert!(matches!(
            StateLock::acquire(&state, Holder::Run),
            Err(LockError::Held { .. })
        ));
    }
}
