//! Creating an agent process: through `clone3` (see `clone`), or `posix_spawn` where clone3
//! is not available (an old kernel, a seccomp filter).
//!
//! Both share vigil's memory with the child until it execs (`CLONE_VFORK`): no copy of vigil's
//! page tables, which makes a restart about half a millisecond faster than fork + exec (what
//! `std::process::Command` must do once a `pre_exec` hook is set, and it needs one for
//! `setsid`), and keeps a start as cheap at 10,000 agents as at one.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::ptr;

use vigil_core::SpawnErrorKind;

pub use super::clone::reserve_slots;
use super::clone::{Child, CloneError, clone_child};

/// Why an agent's process could not be created. The kind (what the diagnosis acts on) comes
/// from the variant and the errno, never from the wording.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("the command is empty")]
    EmptyCommand,
    #[error("{what} contains a NUL byte")]
    NulByte { what: &'static str },
    #[error("{program}: command not found in PATH")]
    NotInPath { program: String },
    #[error("working directory {}: {source}", path.display())]
    WorkingDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open log file {}: {source}", path.display())]
    LogFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{program}: {}", describe_exec(source))]
    Exec {
        program: String,
        source: std::io::Error,
    },
}

fn describe_exec(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::ENOENT) => format!("command not found ({e})"),
        Some(libc::EACCES) => format!("permission denied ({e})"),
        _ => e.to_string(),
    }
}

fn errno_kind(e: &std::io::Error) -> SpawnErrorKind {
    match e.raw_os_error() {
        Some(libc::ENOENT | libc::ENOTDIR | libc::ELOOP | libc::ENAMETOOLONG) => {
            SpawnErrorKind::ProgramNotFound
        }
        Some(libc::EACCES | libc::EPERM | libc::EISDIR) => SpawnErrorKind::PermissionDenied,
        Some(libc::ENOEXEC | libc::E2BIG | libc::EINVAL) => SpawnErrorKind::InvalidCommand,
        Some(libc::ENOSPC | libc::EDQUOT) => SpawnErrorKind::DiskFull,
        Some(libc::EAGAIN | libc::ENOMEM | libc::EMFILE | libc::ENFILE) => {
            SpawnErrorKind::OutOfResources
        }
        _ => SpawnErrorKind::Other,
    }
}

impl SpawnError {
    pub fn kind(&self) -> SpawnErrorKind {
        match self {
            SpawnError::EmptyCommand | SpawnError::NulByte { .. } => SpawnErrorKind::InvalidCommand,
            SpawnError::NotInPath { .. } => SpawnErrorKind::ProgramNotFound,
            SpawnError::WorkingDir { .. } => SpawnErrorKind::BadWorkingDir,
            SpawnError::LogFile { source, .. } => match errno_kind(source) {
                kind @ (SpawnErrorKind::DiskFull | SpawnErrorKind::OutOfResources) => kind,
                _ => SpawnErrorKind::LogUnavailable,
            },
            SpawnError::Exec { source, .. } => errno_kind(source),
        }
    }

    /// What the core is told.
    pub fn to_failure(&self) -> vigil_core::SpawnFailure {
        vigil_core::SpawnFailure {
            kind: self.kind(),
            message: self.to_string(),
        }
    }
}

pub struct SpawnRequest<'a> {
    pub program: &'a Path,
    pub argv: &'a [String],
    pub env: &'a [(OsString, OsString)],
    pub cwd: Option<&'a Path>,
    /// Becomes stdout and stderr; stdin is /dev/null.
    pub output: BorrowedFd<'a>,
    /// Who the process becomes before it execs (`user`/`group`); vigil's own user when unset.
    pub credentials: Option<&'a crate::config::users::Credentials>,
}

/// Why `posix_spawn` did not start the process.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("{0} contains a NUL byte")]
    NulByte(&'static str),
    #[error(transparent)]
    Os(#[from] io::Error),
}

fn cstring(bytes: &[u8], what: &'static str) -> Result<CString, ExecError> {
    CString::new(bytes).map_err(|_| ExecError::NulByte(what))
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

/// vigil's own environment as agents and helper commands inherit it: without systemd's
/// notify variables and vigil's own crash-recovery variables, which are vigil's alone.
pub fn inherited_env() -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
    std::env::vars_os()
        .filter(|(k, _)| {
            !crate::systemd::OWN_VARS
                .iter()
                .chain(crate::crash::OWN_VARS.iter())
                .any(|own| k == own)
        })
        .collect()
}

/// Find `program` the way a shell would: as given when it contains a `/`, else in `PATH`.
pub fn resolve_program(program: &str, path_var: Option<&OsStr>) -> Option<PathBuf> {
    if program.contains('/') {
        return Some(PathBuf::from(program));
    }
    let default_path = OsString::from("/usr/local/bin:/usr/bin:/bin");
    let search = path_var.unwrap_or(&default_path);
    std::env::split_paths(search)
        .map(|dir| dir.join(program))
        .find(|candidate| {
            rustix::fs::access(candidate, rustix::fs::Access::EXEC_OK).is_ok()
                && candidate.is_file()
        })
}

/// Start a process in a new session (so also a new process group) with default signal
/// dispositions and an empty signal mask — born inside `cgroup` (a cgroup directory's
/// descriptor) when given. Returns its pid.
pub fn spawn_in_new_session(
    req: &SpawnRequest<'_>,
    cgroup: Option<BorrowedFd<'_>>,
) -> Result<u32, ExecError> {
    let program = cstring(req.program.as_os_str().as_bytes(), "the program path")?;
    let args: Vec<CString> = req
        .argv
        .iter()
        .map(|a| cstring(a.as_bytes(), "an argument"))
        .collect::<Result<_, _>>()?;
    let env: Vec<CString> = req
        .env
        .iter()
        .map(|(k, v)| {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            cstring(&kv, "an environment variable")
        })
        .collect::<Result<_, _>>()?;
    let cwd = req
        .cwd
        .map(|c| cstring(c.as_os_str().as_bytes(), "the working directory"))
        .transpose()?;
    let mut argv: Vec<*mut libc::c_char> = args.iter().map(|a| a.as_ptr() as *mut _).collect();
    argv.push(ptr::null_mut());
    let mut envp: Vec<*mut libc::c_char> = env.iter().map(|e| e.as_ptr() as *mut _).collect();
    envp.push(ptr::null_mut());
    let out = req.output.as_raw_fd();
    let ids = req.credentials;
    // Where the child shares vigil's memory (x86_64), clone3 is the way to start anything;
    // elsewhere only what posix_spawn cannot do (a cgroup, another user) takes it.
    if cfg!(target_arch = "x86_64") || cgroup.is_some() || ids.is_some() {
        let mut child = Child {
            program: &program,
            argv: &argv,
            envp: &envp,
            out,
            cwd: cwd.as_deref(),
            ids,
            errno: 0,
            report_fd: -1,
            slots: None,
            nofile: crate::fd_limit::for_agents(),
        };
        match clone_child(&mut child, cgroup) {
            Ok(pid) => return Ok(pid),
            Err(CloneError::Exec(e)) => return Err(e.into()),
            // posix_spawn cannot change the user: without clone3 there is no other way.
            Err(CloneError::Clone(e)) if ids.is_some() => return Err(e.into()),
            // No clone3 here (an old kernel, a seccomp filter): spawn without a cgroup.
            Err(CloneError::Clone(e)) => {
                static SAID: std::sync::Once = std::sync::Once::new();
                SAID.call_once(|| match cgroup {
                    Some(_) => tracing::warn!(
                        "cannot start agents inside their cgroups (clone3: {e}); they start in vigil's"
                    ),
                    None => tracing::debug!("clone3 is not available ({e}): posix_spawn instead"),
                });
            }
        }
    }

    // SAFETY: every pointer handed to libc points into a CString or Vec that outlives the
    // call; the attribute and file-action objects are initialised before use and destroyed
    // on every path.
    unsafe {
        let mut actions = MaybeUninit::<libc::posix_spawn_file_actions_t>::uninit();
        check(libc::posix_spawn_file_actions_init(actions.as_mut_ptr()))?;
        let mut attr = MaybeUninit::<libc::posix_spawnattr_t>::uninit();
        if let Err(e) = check(libc::posix_spawnattr_init(attr.as_mut_ptr())) {
            libc::posix_spawn_file_actions_destroy(actions.as_mut_ptr());
            return Err(e.into());
        }
        let result = (|| -> io::Result<u32> {
            let fa = actions.as_mut_ptr();
            let at = attr.as_mut_ptr();
            check(libc::posix_spawn_file_actions_addopen(
                fa,
                0,
                c"/dev/null".as_ptr(),
                libc::O_RDONLY,
                0,
            ))?;
            check(libc::posix_spawn_file_actions_adddup2(fa, out, 1))?;
            check(libc::posix_spawn_file_actions_adddup2(fa, out, 2))?;
            if let Some(dir) = &cwd {
                check(libc::posix_spawn_file_actions_addchdir_np(fa, dir.as_ptr()))?;
            }
            let mut none = MaybeUninit::<libc::sigset_t>::uninit();
            libc::sigemptyset(none.as_mut_ptr());
            check(libc::posix_spawnattr_setsigmask(at, none.as_ptr()))?;
            // Rust ignores SIGPIPE; the agent must get default dispositions for everything.
            let mut all = MaybeUninit::<libc::sigset_t>::uninit();
            libc::sigfillset(all.as_mut_ptr());
            check(libc::posix_spawnattr_setsigdefault(at, all.as_ptr()))?;
            let flags = libc::POSIX_SPAWN_SETSID as libc::c_int
                | libc::POSIX_SPAWN_SETSIGMASK
                | libc::POSIX_SPAWN_SETSIGDEF;
            check(libc::posix_spawnattr_setflags(at, flags as libc::c_short))?;
            let mut pid: libc::pid_t = 0;
            check(libc::posix_spawn(
                &mut pid,
                program.as_ptr(),
                fa,
                at,
                argv.as_ptr(),
                envp.as_ptr(),
            ))?;
            Ok(pid as u32)
        })();
        libc::posix_spawnattr_destroy(attr.as_mut_ptr());
        libc::posix_spawn_file_actions_destroy(actions.as_mut_ptr());
        Ok(result?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_like_a_shell() {
        assert_eq!(
            resolve_program("./bot.py", None),
            Some(PathBuf::from("./bot.py"))
        );
        let sh = resolve_program("sh", Some(OsStr::new("/nonexistent:/bin:/usr/bin"))).unwrap();
        assert!(sh.ends_with("sh"));
        assert_eq!(resolve_program("no-such-program-xyz", None), None);
    }

    #[test]
    fn spawn_errors_are_classified_by_errno() {
        let exec = |errno| SpawnError::Exec {
            program: "bot".into(),
            source: std::io::Error::from_raw_os_error(errno),
        };
        assert_eq!(exec(libc::ENOENT).kind(), SpawnErrorKind::ProgramNotFound);
        assert_eq!(exec(libc::EACCES).kind(), SpawnErrorKind::PermissionDenied);
        assert_eq!(exec(libc::ENOEXEC).kind(), SpawnErrorKind::InvalidCommand);
        assert_eq!(exec(libc::EAGAIN).kind(), SpawnErrorKind::OutOfResources);
        let log = SpawnError::LogFile {
            path: "x.log".into(),
            source: std::io::Error::from_raw_os_error(libc::ENOSPC),
        };
        assert_eq!(log.kind(), SpawnErrorKind::DiskFull);
        let log = SpawnError::LogFile {
            path: "x.log".into(),
            source: std::io::Error::from_raw_os_error(libc::EMFILE),
        };
        assert_eq!(log.kind(), SpawnErrorKind::OutOfResources);
        assert!(
            exec(libc::ENOENT)
                .to_string()
                .starts_with("bot: command not found")
        );
    }
}
