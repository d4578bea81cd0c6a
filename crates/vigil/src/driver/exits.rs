//! The exits of every agent's main process, through one epoll instance: each main is watched
//! by its own pidfd (the kernel wakes the loop when it exits, nothing polls), and every pidfd
//! is in one epoll set that the loop waits on. A pidfd registered on its own with the async
//! runtime costs about 800 bytes of bookkeeping (its registration, a task's future); in the
//! set it costs a map entry — a fleet of 10,000 agents is 8 MB smaller.
//!
//! Exec checks and evidence commands, short-lived and few, keep their own [`ExitWatch`].
//!
//! [`ExitWatch`]: super::children::ExitWatch

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use rustix::event::epoll;
use rustix::process::{Pid, PidfdFlags, pidfd_open};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use vigil_core::{AgentId, ExitStatus, RunId};

use super::children::collect_exit;

/// A watched main process has ended.
pub struct Exit {
    pub agent: AgentId,
    pub run: RunId,
    pub pid: u32,
    pub status: ExitStatus,
}

/// How soon a watch that could not be set up (no descriptors left) is tried again.
const WATCH_RETRY: Duration = Duration::from_secs(1);
/// Exits read from the kernel at once.
const READ_AT_ONCE: usize = 256;
/// A timeout that does not wait: take what is there.
const NO_WAIT: rustix::time::Timespec = rustix::time::Timespec {
    tv_sec: 0,
    tv_nsec: 0,
};

struct Watched {
    agent: AgentId,
    run: RunId,
    pidfd: OwnedFd,
}

pub struct ExitSet {
    epoll: AsyncFd<OwnedFd>,
    /// By pid (the epoll data of its pidfd).
    watched: HashMap<u32, Watched>,
    /// Exits known without waiting (the process was gone before it could be watched).
    ready: Vec<Exit>,
    /// Mains that could not be watched yet, tried again at `retry_at`.
    unwatched: Vec<(AgentId, RunId, u32, Option<u64>)>,
    retry_at: Option<Instant>,
    events: Vec<epoll::Event>,
}

impl ExitSet {
    /// Must be called inside the runtime that polls [`ExitSet::next`].
    pub fn new() -> io::Result<ExitSet> {
        let fd = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        // SAFETY: the OwnedFd moves into the AsyncFd and stays open as long as it lives.
        let epoll = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
            .map_err(io::Error::from)?;
        Ok(ExitSet {
            epoll,
            watched: HashMap::new(),
            ready: Vec::new(),
            unwatched: Vec::new(),
            retry_at: None,
            events: Vec::with_capacity(READ_AT_ONCE),
        })
    }

    /// Whether anything is watched or waiting to be reported.
    pub fn is_empty(&self) -> bool {
        self.watched.is_empty() && self.ready.is_empty() && self.unwatched.is_empty()
    }

    /// Watch the main process `pid` of the run. An error means it cannot be watched now (no
    /// descriptors left, say): it still runs, and is tried again every second until it can be
    /// — never taken for dead.
    pub fn watch(&mut self, agent: AgentId, run: RunId, pid: u32) -> io::Result<()> {
        self.watch_or_report(agent, run, pid, None)
    }

    /// Watch `pid` only if it is still the process that started at `started` (clock ticks
    /// after boot) — one vigil did not start, found a moment ago, whose pid may have been
    /// reused since. `Ok(false)`: it is not (it has ended), and nothing is watched or reported.
    pub fn watch_started(
        &mut self,
        agent: AgentId,
        run: RunId,
        pid: u32,
        started: u64,
    ) -> io::Result<bool> {
        self.watch_process(agent, run, pid, Some(started))
    }

    /// The main processes watched now, or waiting to be.
    pub fn watched_pids(&self) -> impl Iterator<Item = u32> + '_ {
        self.watched
            .keys()
            .copied()
            .chain(self.unwatched.iter().map(|u| u.2))
    }

    pub fn is_watched(&self, pid: u32) -> bool {
        self.watched.contains_key(&pid) || self.unwatched.iter().any(|u| u.2 == pid)
    }

    /// Send `sig` to the watched process `pid` through its pidfd: to that process and no
    /// other, even if it has ended and its pid was reused (a process vigil took over is not
    /// its child: its pid can be reused before vigil hears of its end). `Ok` if it has ended.
    pub fn signal(&self, pid: u32, sig: vigil_core::Signal) -> io::Result<()> {
        let (Some(w), Some(sig)) = (self.watched.get(&pid), super::process::os_signal(sig)) else {
            return Ok(());
        };
        match rustix::process::pidfd_send_signal(&w.pidfd, sig) {
            Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Watch it; if it is gone already (and reaped), report its exit.
    fn watch_or_report(
        &mut self,
        agent: AgentId,
        run: RunId,
        pid: u32,
        started: Option<u64>,
    ) -> io::Result<()> {
        if !self.watch_process(agent, run, pid, started)? {
            self.ready.push(Exit {
                agent,
                run,
                pid,
                status: ExitStatus::unknown(),
            });
        }
        Ok(())
    }

    /// `Ok(false)`: gone already (or, with `started`, no longer that process). An error:
    /// it cannot be watched now, and is tried again later.
    fn watch_process(
        &mut self,
        agent: AgentId,
        run: RunId,
        pid: u32,
        started: Option<u64>,
    ) -> io::Result<bool> {
        match self.add(agent, run, pid, started) {
            Ok(()) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(false),
            Err(e) => {
                self.unwatched.push((agent, run, pid, started));
                self.retry_at
                    .get_or_insert_with(|| Instant::now() + WATCH_RETRY);
                Err(e)
            }
        }
    }

    fn add(
        &mut self,
        agent: AgentId,
        run: RunId,
        pid: u32,
        started: Option<u64>,
    ) -> io::Result<()> {
        let p = Pid::from_raw(pid as i32).ok_or_else(|| io::Error::other("bad pid"))?;
        let pidfd = pidfd_open(p, PidfdFlags::empty())?;
        // Checked after the pidfd is open: if the pid still has that start time now, the
        // pidfd (opened before) is of that process — its pid could not be reused meanwhile.
        if let Some(started) = started
            && super::proctree::stat(pid).is_none_or(|s| s.start_time != started || s.zombie)
        {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
        epoll::add(
            self.epoll.get_ref(),
            &pidfd,
            epoll::EventData::new_u64(u64::from(pid)),
            epoll::EventFlags::IN,
        )?;
        // A pid already watched: either the same process watched again (the latest watch
        // stands for it), or a new process with the pid of one that has exited (pids wrapped
        // around) — whose exit is reported now, not dropped with its pidfd (which takes it
        // out of the set) before its event was read.
        if let Some(old) = self.watched.insert(pid, Watched { agent, run, pidfd })
            && has_exited(&old.pidfd)
        {
            self.ready.push(exit_of(pid, old));
        }
        Ok(())
    }

    /// The next exits: at least one, with every other already known (one turn of the loop
    /// for a burst). Cancel-safe: nothing is taken from the kernel before it is returned.
    pub async fn next(&mut self) -> Vec<Exit> {
        loop {
            if !self.ready.is_empty() {
                return std::mem::take(&mut self.ready);
            }
            let retry = async {
                match self.retry_at {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                guard = self.epoll.readable() => {
                    let Ok(mut guard) = guard else {
                        // The epoll descriptor itself failed (never seen): nothing to wait on.
                        return std::future::pending().await;
                    };
                    guard.clear_ready();
                }
                () = retry => {}
            }
            self.collect();
            self.retry();
        }
    }

    /// Read what the kernel has, and collect each exited main's status.
    fn collect(&mut self) {
        loop {
            self.events.clear();
            let read = epoll::wait(
                self.epoll.get_ref(),
                rustix::buffer::spare_capacity(&mut self.events),
                Some(&NO_WAIT),
            );
            if read.is_err() || self.events.is_empty() {
                return;
            }
            let full = self.events.len() == self.events.capacity();
            for i in 0..self.events.len() {
                let pid = self.events[i].data.u64() as u32;
                if let Some(w) = self.watched.remove(&pid) {
                    self.ready.push(exit_of(pid, w));
                }
            }
            if !full {
                return;
            }
        }
    }

    fn retry(&mut self) {
        if self.retry_at.is_none_or(|at| at > Instant::now()) {
            return;
        }
        self.retry_at = None;
        for (agent, run, pid, started) in std::mem::take(&mut self.unwatched) {
            // A failure puts it back in the list, and sets the next try.
            let _ = self.watch_or_report(agent, run, pid, started);
        }
    }
}

/// A pidfd is readable once its process has exited.
fn has_exited(pidfd: &OwnedFd) -> bool {
    let mut fds = [rustix::event::PollFd::new(
        pidfd,
        rustix::event::PollFlags::IN,
    )];
    rustix::event::poll(&mut fds, Some(&NO_WAIT)).is_ok_and(|n| n > 0)
}

/// Collect the exit of a watched process that has ended.
fn exit_of(pid: u32, w: Watched) -> Exit {
    Exit {
        agent: w.agent,
        run: w.run,
        pid,
        status: collect_exit(w.pidfd.as_fd()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;
    use vigil_core::Signal;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// Exits of real children come back with their status, each once, whatever order they
    /// end in; a pid that is already gone is reported at once, as an exit of unknown status.
    #[test]
    fn reports_each_exit_once_with_its_status() {
        runtime().block_on(async {
            let mut set = ExitSet::new().unwrap();
            assert!(set.is_empty());
            // Collected by the set (waitid on their pidfds), not by `Child::wait`.
            let spawn = |cmd: &mut Command| cmd.spawn().map(|c| c.id()).unwrap();
            let code_pid = spawn(Command::new("sh").args(["-c", "exit 3"]));
            let killed_pid = spawn(Command::new("sleep").arg("730010"));
            set.watch(AgentId(0), RunId(1), code_pid).unwrap();
            set.watch(AgentId(1), RunId(2), killed_pid).unwrap();
            // SAFETY: signalling a child this test started.
            unsafe { libc::kill(killed_pid as i32, libc::SIGKILL) };
            let mut seen = HashMap::new();
            while seen.len() < 2 {
                for exit in set.next().await {
                    assert!(seen.insert(exit.pid, exit.status).is_none());
                }
            }
            assert_eq!(seen[&code_pid], ExitStatus::code(3));
            assert_eq!(seen[&killed_pid], ExitStatus::signal(Signal::KILL));
            assert!(set.is_empty());

            // A pid watched again after its process ended: the ended one is reported, with its
            // status, never lost with its watch.
            let pid = spawn(Command::new("sleep").arg("730011"));
            set.watch(AgentId(3), RunId(4), pid).unwrap();
            // SAFETY: signalling a child this test started.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            while !has_exited(&set.watched[&pid].pidfd) {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            set.watch(AgentId(4), RunId(5), pid).unwrap();
            let first = set.next().await;
            assert_eq!((first[0].agent, first[0].run), (AgentId(3), RunId(4)));
            assert_eq!(first[0].status, ExitStatus::signal(Signal::KILL));
            let second = set.next().await;
            assert_eq!(second[0].agent, AgentId(4));
            assert!(set.is_empty());

            // No process has this pid (above pid_max): it is reported without waiting.
            set.watch(AgentId(2), RunId(3), 4_194_304 + 7).unwrap();
            let gone = set.next().await;
            assert_eq!(gone.len(), 1);
            assert_eq!(gone[0].status, ExitStatus::unknown());
            assert!(set.is_empty());
        });
    }
}
