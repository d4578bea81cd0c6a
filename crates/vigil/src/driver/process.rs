//! The `process` driver: vigil spawns the agent itself.

use std::io;
use std::os::fd::AsFd;
use std::path::Path;

use rustix::process::{Pid, Signal as OsSignal, getpid, kill_process, kill_process_group};
use vigil_core::Signal;

use super::cgroup::Cgroups;
use super::children::{Children, main_thread_children};
use super::proctree::{self, Snapshot};
use super::spawn::{self, ExecError, SpawnError, SpawnRequest};
use crate::config::AgentConfig;
use crate::logs;

/// The environment variable that tags every process of one run, so orphans that left the
/// process group are still recognised as the agent's.
pub const RUN_TAG_VAR: &str = "VIGIL_RUN";
/// The state dir of the vigil that started the run: with the tag, the run's mark. A vigil
/// started after a `kill -9` of the last one finds its runs by it, wherever they went.
pub const STATE_DIR_VAR: &str = "VIGIL_STATE_DIR";

pub struct Launch<'a> {
    pub agent: &'a AgentConfig,
    pub log: &'a Path,
    pub run_tag: &'a str,
    /// Added by other parts of vigil (NOTIFY_SOCKET, …).
    pub extra_env: &'a [(String, String)],
}

/// A signal the kernel refused (a process that is already gone is not an error).
#[derive(Debug, thiserror::Error)]
#[error("{signal} to {target}: {source}")]
pub struct SignalError {
    pub signal: Signal,
    pub target: String,
    pub source: rustix::io::Errno,
}

#[derive(Clone)]
pub struct ProcessDriver {
    self_pid: u32,
    children: Children,
    /// Each run's cgroup, where the kernel lets vigil make them.
    cgroups: Option<Cgroups>,
}

pub(crate) fn os_signal(sig: Signal) -> Option<OsSignal> {
    OsSignal::from_named_raw(sig.0)
}

fn pid(n: u32) -> Option<Pid> {
    Pid::from_raw(n as i32)
}

/// Signal the process `pid` only if it is still the one that started at `started`: a pidfd
/// pins it while its start time is checked, and carries the signal.
fn signal_verified(
    pid_: u32,
    started: u64,
    os_sig: OsSignal,
    sig: Signal,
) -> Result<(), SignalError> {
    let Some(p) = pid(pid_) else {
        return Ok(());
    };
    let fd = match rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()) {
        Ok(fd) => fd,
        // Gone already.
        Err(rustix::io::Errno::SRCH) => return Ok(()),
        Err(source) => {
            return Err(SignalError {
                signal: sig,
                target: format!("pid {pid_}"),
                source,
            });
        }
    };
    if proctree::stat(pid_).is_none_or(|now| now.start_time != started) {
        // The pid now names another process.
        return Ok(());
    }
    delivered(rustix::process::pidfd_send_signal(&fd, os_sig), sig, || {
        format!("pid {pid_}")
    })
}

/// `Ok` when delivered or when nothing is there any more.
fn delivered(
    result: rustix::io::Result<()>,
    signal: Signal,
    target: impl FnOnce() -> String,
) -> Result<(), SignalError> {
    match result {
        Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
        Err(source) => Err(SignalError {
            signal,
            target: target(),
            source,
        }),
    }
}

impl ProcessDriver {
    pub fn new(children: Children) -> Self {
        Self {
            self_pid: getpid().as_raw_nonzero().get() as u32,
            children,
            cgroups: None,
        }
    }

    /// Give every run a cgroup of its own (see `cgroup`).
    pub fn with_cgroups(mut self, cgroups: Option<Cgroups>) -> Self {
        self.cgroups = cgroups;
        self
    }

    pub fn cgroups(&self) -> Option<&Cgroups> {
        self.cgroups.as_ref()
    }

    pub fn self_pid(&self) -> u32 {
        self.self_pid
    }

    /// Orphaned grandchildren are reparented to vigil instead of init, so they stay
    /// findable and killable.
    pub fn become_subreaper() -> io::Result<()> {
        rustix::process::set_child_subreaper(Some(getpid())).map_err(io::Error::from)
    }

    /// Start the agent in its own session (and so its own process group), with its log file
    /// as stdout and stderr. Returns the pid, or why it could not start.
    pub fn spawn(&self, launch: &Launch<'_>) -> Result<u32, SpawnError> {
        let agent = launch.agent;
        let Some(program) = agent.command.first() else {
            return Err(SpawnError::EmptyCommand);
        };
        if let Some(cwd) = &agent.cwd {
            let problem = match std::fs::metadata(cwd) {
                Ok(m) if m.is_dir() => None,
                Ok(_) => Some(io::Error::from_raw_os_error(libc::ENOTDIR)),
                Err(e) => Some(e),
            };
            if let Some(source) = problem {
                return Err(SpawnError::WorkingDir {
                    path: cwd.clone(),
                    source,
                });
            }
        }
        let log = logs::open_for_agent(launch.log).map_err(|source| SpawnError::LogFile {
            path: launch.log.to_path_buf(),
            source,
        })?;

        // vigil's environment, then the agent's, then vigil's own variables.
        let mut env = spawn::inherited_env();
        let mut set = |k: &str, v: &str| {
            env.retain(|(key, _)| key != k);
            env.push((k.into(), v.into()));
        };
        // As systemd's User= does: the user's own HOME, USER and LOGNAME, unless `env` says.
        if let Some(u) = &agent.run_as {
            for (k, v) in u.env() {
                set(k, v);
            }
        }
        for (k, v) in &agent.env {
            set(k, v);
        }
        set("VIGIL_AGENT", &agent.name);
        set("VIGIL_INSTANCE", agent.instance.as_deref().unwrap_or(""));
        set(RUN_TAG_VAR, launch.run_tag);
        for (k, v) in launch.extra_env {
            set(k, v);
        }
        let path_var = env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.clone());
        let Some(resolved) = spawn::resolve_program(program, path_var.as_deref()) else {
            return Err(SpawnError::NotInPath {
                program: program.clone(),
            });
        };
        // Born in its run's cgroup where runs have them (a directory made just now).
        let cgroup = self
            .cgroups
            .as_ref()
            .and_then(|cg| match cg.open(launch.run_tag) {
                Ok(dir) => Some(dir),
                Err(e) => {
                    tracing::warn!("{}: no cgroup for this run ({e})", launch.run_tag);
                    None
                }
            });
        let mut managed = self.children.lock();
        let result = spawn::spawn_in_new_session(
            &SpawnRequest {
                program: &resolved,
                argv: &agent.command,
                env: &env,
                cwd: agent.cwd.as_deref(),
                output: log.as_fd(),
                credentials: agent.run_as.as_ref(),
            },
            cgroup.as_ref().map(|d| d.as_fd()),
        );
        match result {
            Ok(pid) => {
                managed.insert(pid);
                Ok(pid)
            }
            Err(ExecError::NulByte(what)) => Err(SpawnError::NulByte { what }),
            Err(ExecError::Os(source)) => Err(SpawnError::Exec {
                program: program.clone(),
                source,
            }),
        }
    }

    fn safe_target(&self, n: u32) -> bool {
        n > 1 && n != self.self_pid
    }

    /// Send `sig` to the process group led by the run's main process (one syscall).
    pub fn signal_group(&self, main_pid: u32, sig: Signal) -> Result<(), SignalError> {
        let (Some(os_sig), Some(p)) = (os_signal(sig), pid(main_pid)) else {
            return Ok(());
        };
        if !self.safe_target(main_pid) {
            return Ok(());
        }
        delivered(kill_process_group(p, os_sig), sig, || {
            format!("the process group of pid {main_pid}")
        })
    }

    /// Send `sig` to every member of the run found in the process table `procs` (one look
    /// at /proc shared by a batch of runs), group members included (they may have left the
    /// group). Each is signalled through a pidfd opened after checking that the pid still
    /// belongs to the process the table saw (same start time): a pid reused meanwhile is never
    /// hit. Reads /proc: call it off the supervision loop.
    /// `group_signalled`: the main's process group already got this signal (from the loop, a
    /// moment ago): its members are not signalled twice — a second SIGTERM is, to many
    /// programs, "stop now, skip the clean shutdown".
    pub fn signal_members(
        &self,
        procs: &Snapshot,
        main_pid: u32,
        run_tag: &str,
        main_gone: Option<u64>,
        sig: Signal,
        group_signalled: bool,
    ) -> Result<(), SignalError> {
        let Some(os_sig) = os_signal(sig) else {
            return Ok(());
        };
        // SIGKILL goes to the whole cgroup at once first; the cgroup's members are among
        // `members` too, so any other signal reaches each of them once.
        let mut first_error = match sig {
            Signal::KILL => self.kill_cgroup(run_tag),
            _ => None,
        };
        let signalled: std::collections::HashSet<u32> = if group_signalled {
            procs.get().in_group(main_pid).collect()
        } else {
            Default::default()
        };
        for (member, started) in self.members(main_pid, run_tag, main_gone, procs) {
            if !self.safe_target(member) || signalled.contains(&member) {
                continue;
            }
            if let Err(e) = signal_verified(member, started, os_sig, sig) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// SIGKILL everything in the run's cgroup at once (`cgroup.kill`: nothing forks away
    /// meanwhile), if runs have cgroups.
    fn kill_cgroup(&self, run_tag: &str) -> Option<SignalError> {
        let cg = self.cgroups.as_ref()?;
        cg.kill(run_tag).err().map(|e| SignalError {
            signal: Signal::KILL,
            target: format!("the cgroup {}", cg.of(run_tag).display()),
            source: rustix::io::Errno::from_io_error(&e).unwrap_or(rustix::io::Errno::IO),
        })
    }

    /// SIGKILL what is left of a run whose main process is gone: its whole cgroup, and the
    /// orphans outside it that carry the run's tag, each checked again first (still vigil's
    /// unreaped child with the tag, so its pid cannot have been reused).
    pub fn kill_escaped(&self, pids: &[u32], run_tag: &str) -> Result<(), SignalError> {
        let mut first_error = self.kill_cgroup(run_tag);
        let ours = self.tagged_orphans(run_tag, &self.orphans());
        for &n in pids.iter().filter(|p| ours.contains(p)) {
            if let Some(p) = pid(n)
                && self.safe_target(n)
                && let Err(e) = delivered(kill_process(p, OsSignal::KILL), Signal::KILL, || {
                    format!("pid {n}")
                })
            {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Live processes of the run (group, session, descendants, tagged orphans) with their
    /// start times; see [`proctree::run_members`] for what counts once the main is gone.
    pub fn members(
        &self,
        main_pid: u32,
        run_tag: &str,
        main_gone: Option<u64>,
        procs: &Snapshot,
    ) -> Vec<(u32, u64)> {
        let mut members = proctree::run_members(
            procs.get(),
            main_pid,
            run_tag,
            self.self_pid,
            main_gone,
            procs.orphans(),
            |p| proctree::environ_var(p, RUN_TAG_VAR),
        );
        // And whatever is in the run's cgroup: it cannot have left it.
        if let Some(cg) = &self.cgroups {
            for pid in cg.members(run_tag) {
                if self.safe_target(pid)
                    && !members.iter().any(|(m, _)| *m == pid)
                    && let Some(info) = proctree::stat(pid)
                {
                    members.push((pid, info.start_time));
                }
            }
            members.sort_unstable();
        }
        members
    }

    /// Live processes of a run whose main process has gone, with their start times (see
    /// `tree::wait_empty`). Where runs have cgroups, the run's cgroup holds every one of them
    /// and is read instead of the process table — what a run has, not what the machine has;
    /// with the orphans that carry its tag, should one have been moved out.
    pub fn remaining(&self, main_pid: u32, run_tag: &str, main_gone: u64) -> Vec<(u32, u64)> {
        // A run whose cgroup could not be made is looked for in the process table.
        if !self
            .cgroups
            .as_ref()
            .is_some_and(|cg| cg.of(run_tag).exists())
        {
            return self.members(main_pid, run_tag, Some(main_gone), &self.snapshot());
        }
        // The main has been collected, so the run's cgroup holds nothing vigil manages.
        self.escaped_orphans(run_tag)
            .into_iter()
            .filter_map(|p| {
                proctree::stat(p)
                    .filter(|i| !i.zombie)
                    .map(|i| (p, i.start_time))
            })
            .collect()
    }

    /// One syscall: does the run's process group still have members?
    pub fn group_alive(&self, main_pid: u32) -> bool {
        pid(main_pid).is_some_and(|p| rustix::process::test_kill_process_group(p).is_ok())
    }

    /// Orphans vigil inherited that carry the run's tag (they left its process group and
    /// their parent died), and whatever else is in the run's cgroup. Reads vigil's own
    /// children list and the run's cgroup, not the process table.
    pub fn escaped_orphans(&self, run_tag: &str) -> Vec<u32> {
        let mut escaped = self.tagged_orphans(run_tag, &self.orphans());
        if let Some(cg) = &self.cgroups {
            let managed = self.children.lock();
            for pid in cg.members(run_tag) {
                if self.safe_target(pid) && !managed.contains(&pid) && !escaped.contains(&pid) {
                    escaped.push(pid);
                }
            }
        }
        escaped
    }

    /// The orphans vigil has inherited: its main thread's children (agents are born on the
    /// loop's thread, so they are not among them) that nobody manages — a run adopted after
    /// vigil re-executed itself is a child of the main thread too. As long as the orphans,
    /// not the fleet: this is read on every exit.
    pub fn orphans(&self) -> Vec<u32> {
        let mut children = main_thread_children(self.self_pid);
        let managed = self.children.lock();
        children.retain(|c| !managed.contains(c));
        children
    }

    /// Of `orphans`, those that carry the run's tag.
    fn tagged_orphans(&self, run_tag: &str, orphans: &[u32]) -> Vec<u32> {
        orphans
            .iter()
            .copied()
            .filter(|c| proctree::environ_var(*c, RUN_TAG_VAR).as_deref() == Some(run_tag))
            .collect()
    }

    /// A process-table view for one batch of actions.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot::new(self.orphans())
    }

    /// The owner of a child has collected its exit.
    pub fn forget(&self, pid_: u32) {
        self.children.lock().remove(&pid_);
    }

    /// Remove a finished run's cgroup soon, off the calling thread (it stays while anything
    /// is in it).
    pub fn remove_cgroup(&self, run_tag: &str) {
        if let Some(cg) = &self.cgroups {
            cg.remove_later(run_tag);
        }
    }

    /// Whether a process with this pid and start time is still the one vigil started.
    pub fn same_process(pid_: u32, start_time: u64) -> bool {
        proctree::stat(pid_).is_some_and(|p| p.start_time == start_time && !p.zombie)
    }

    pub fn start_time(pid_: u32) -> Option<u64> {
        proctree::stat(pid_).map(|p| p.start_time)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AgentConfig;
    use vigil_core::diagnosis::Evidence;
    use vigil_core::{FailureCause, Remedy, Rules};

    /// What the real driver reports for a mistyped program is judged by the core as a failure
    /// a restart cannot fix.
    #[test]
    fn a_mistyped_program_is_a_permanent_failure_for_the_core() {
        let dir = tempfile::tempdir().unwrap();
        let mut agent = AgentConfig::stray("typo", Signal::TERM, std::time::Duration::ZERO);
        agent.command = vec!["pyhton3".into(), "bot.py".into()];
        let driver = ProcessDriver::new(Children::default());
        let error = driver
            .spawn(&Launch {
                agent: &agent,
                log: &dir.path().join("typo.log"),
                run_tag: "typo#test.1",
                extra_env: &[],
            })
            .unwrap_err();
        let failure = error.to_failure();
        assert_eq!(failure.kind, vigil_core::SpawnErrorKind::ProgramNotFound);
        let verdict = Rules::default().classify(&Evidence {
            cause: FailureCause::SpawnFailed,
            spawn_error: Some(failure.kind),
            streak: 1,
            log: &[failure.message],
            oom_killed: false,
        });
        assert_eq!(verdict.action, Remedy::Quarantine);
    }
}
