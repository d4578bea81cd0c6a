//! Knowing when processes end.
//!
//! Every child vigil cares about (agent main processes, exec checks) is watched through its
//! own pidfd: the exit wakes exactly the task that waits for it, on its own thread, and that
//! task collects the exit status with `waitid(P_PIDFD)`. vigil is also a child subreaper, so
//! it inherits the orphans of its agents' trees; on SIGCHLD those — and only those — are
//! reaped by [`Children::reap_orphans`].

use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex, MutexGuard};

use rustix::process::{
    Pid, PidfdFlags, WaitId, WaitIdOptions, WaitIdStatus, WaitOptions, pidfd_open, waitid, waitpid,
};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use vigil_core::{ExitStatus, Signal};

/// Pids that have an owner waiting for them; the orphan reaper leaves them alone.
pub type Managed = HashSet<u32>;

#[derive(Clone, Default)]
pub struct Children {
    managed: Arc<Mutex<Managed>>,
}

impl Children {
    /// Hold this across a spawn and insert the new pid before releasing it, so the orphan
    /// reaper can never collect a child that exits at once.
    pub fn lock(&self) -> MutexGuard<'_, Managed> {
        self.managed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reap every exited child that nobody waits for (orphans inherited as subreaper).
    pub fn reap_orphans(&self, self_pid: u32) -> Vec<(u32, ExitStatus)> {
        let managed = self.lock();
        let mut reaped = Vec::new();
        for pid in main_thread_children(self_pid) {
            if managed.contains(&pid) {
                continue;
            }
            let Some(p) = Pid::from_raw(pid as i32) else {
                continue;
            };
            if let Ok(Some((_, status))) = waitpid(Some(p), WaitOptions::NOHANG) {
                reaped.push((pid, exit_status(status.as_raw())));
            }
        }
        reaped
    }
}

/// Children of vigil's main thread (zombies included): every orphan the kernel handed it as a
/// subreaper — orphans go to the thread group's leader while it lives — and runs adopted
/// after vigil re-executed itself; not the agents it spawned since (they are the loop
/// thread's children). One small read, not a scan of the process table.
pub fn main_thread_children(self_pid: u32) -> Vec<u32> {
    fs::read_to_string(format!("/proc/self/task/{self_pid}/children"))
        .map(|s| {
            s.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Decode a raw `wait` status (the layout is the same on every Linux architecture).
pub fn exit_status(raw: i32) -> ExitStatus {
    let termsig = raw & 0x7f;
    if termsig == 0 {
        ExitStatus::code((raw >> 8) & 0xff)
    } else {
        ExitStatus {
            code: None,
            signal: Some(Signal(termsig)),
            core_dumped: raw & 0x80 != 0,
            oom_killed: false,
        }
    }
}

fn from_waitid(s: &WaitIdStatus) -> ExitStatus {
    match (s.exit_status(), s.terminating_signal()) {
        (Some(code), _) => ExitStatus::code(code),
        (None, Some(sig)) => ExitStatus {
            code: None,
            signal: Some(Signal(sig)),
            core_dumped: s.dumped(),
            oom_killed: false,
        },
        (None, None) => ExitStatus::unknown(),
    }
}

/// A pidfd that becomes readable when its process exits.
pub struct ExitWatch {
    fd: AsyncFd<OwnedFd>,
}

impl ExitWatch {
    /// Must be called inside the tokio runtime that will await the exit.
    pub fn new(pid: u32) -> io::Result<ExitWatch> {
        let pid = Pid::from_raw(pid as i32).ok_or_else(|| io::Error::other("bad pid"))?;
        let fd = pidfd_open(pid, PidfdFlags::empty())?;
        // SAFETY: the OwnedFd moves into the AsyncFd and stays open as long as it lives.
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
            .map_err(io::Error::from)?;
        Ok(ExitWatch { fd })
    }

    /// Wait for the exit without collecting it (the orphan reaper or its owner does that).
    pub async fn exited(self) {
        let _ = self.fd.readable().await;
    }

    /// Wait for the exit and collect the status. For a process vigil is not the parent of
    /// (adopted from a previous vigil) the status is unknown.
    pub async fn wait(self) -> ExitStatus {
        if self.fd.readable().await.is_err() {
            return ExitStatus::unknown();
        }
        collect_exit(self.fd.get_ref().as_fd())
    }
}

/// Collect the status of the process behind `pidfd`, which has exited. For a process vigil is
/// not the parent of (adopted from a previous vigil) the status is unknown.
pub(crate) fn collect_exit(pidfd: BorrowedFd<'_>) -> ExitStatus {
    match waitid(WaitId::PidFd(pidfd), WaitIdOptions::EXITED) {
        Ok(Some(status)) => from_waitid(&status),
        _ => ExitStatus::unknown(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_wait_statuses() {
        assert_eq!(exit_status(0), ExitStatus::code(0));
        assert_eq!(exit_status(3 << 8), ExitStatus::code(3));
        assert_eq!(exit_status(9), ExitStatus::signal(Signal::KILL));
        assert!(exit_status(11 | 0x80).core_dumped);
    }
}
