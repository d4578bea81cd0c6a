//! Run a short-lived helper command (an `exec` check, an agent's `evidence` command) in its
//! own session, bounded in time and in the output kept: a hanging helper has its whole process
//! group killed, and nothing is left behind.

use std::ffi::OsString;
use std::os::fd::AsFd;
use std::path::Path;
use std::time::Duration;

use rustix::pipe::{PipeFlags, pipe_with};
use rustix::process::{Pid, Signal, kill_process_group};
use tokio::io::AsyncReadExt;
use vigil_core::ExitStatus;

use crate::driver::spawn::{SpawnRequest, resolve_program, spawn_in_new_session};
use crate::driver::{Children, ExitWatch};

pub struct Helper<'a> {
    pub command: &'a [String],
    pub cwd: Option<&'a Path>,
    /// Who it runs as (an exec check runs as its agent's `user`); vigil's user when unset.
    pub user: Option<&'a crate::config::users::Credentials>,
    /// Added to (or replacing entries of) vigil's own environment.
    pub env: Vec<(OsString, OsString)>,
    pub timeout: Duration,
    /// The last this many bytes of stdout+stderr are kept.
    pub keep: usize,
    pub children: &'a Children,
}

/// Why a helper command could not be run at all.
#[derive(Debug, thiserror::Error)]
pub enum HelperError {
    #[error("command {0:?} not found in PATH")]
    NotFound(String),
    #[error("cannot create a pipe: {0}")]
    Pipe(rustix::io::Errno),
    #[error("cannot run command {program:?}: {source}")]
    Spawn {
        program: String,
        source: crate::driver::spawn::ExecError,
    },
    #[error("cannot watch {program:?}: {source}")]
    Watch {
        program: String,
        source: std::io::Error,
    },
}

pub struct Finished {
    /// `None` when it did not finish within the timeout (and was killed).
    pub status: Option<ExitStatus>,
    /// The tail of what it printed (stdout and stderr interleaved).
    pub output: Vec<u8>,
}

/// `Err` says why the command could not be started at all.
pub async fn run(h: Helper<'_>) -> Result<Finished, HelperError> {
    let program = &h.command[0];
    let path_var = std::env::var_os("PATH");
    let Some(resolved) = resolve_program(program, path_var.as_deref()) else {
        return Err(HelperError::NotFound(program.clone()));
    };
    let (read_end, write_end) = pipe_with(PipeFlags::CLOEXEC).map_err(HelperError::Pipe)?;
    let mut env = crate::driver::spawn::inherited_env();
    let identity = h
        .user
        .map(|u| u.env().map(|(k, v)| (OsString::from(k), OsString::from(v))));
    for (k, v) in identity.into_iter().flatten().chain(h.env) {
        env.retain(|(key, _)| *key != k);
        env.push((k, v));
    }
    let pid = {
        let mut managed = h.children.lock();
        let pid = spawn_in_new_session(
            &SpawnRequest {
                program: &resolved,
                argv: h.command,
                env: &env,
                cwd: h.cwd,
                output: write_end.as_fd(),
                credentials: h.user,
            },
            None,
        )
        .map_err(|source| HelperError::Spawn {
            program: program.clone(),
            source,
        })?;
        managed.insert(pid);
        pid
    };
    drop(write_end);
    let watch = match ExitWatch::new(pid) {
        Ok(w) => w,
        Err(source) => {
            h.children.lock().remove(&pid);
            return Err(HelperError::Watch {
                program: program.clone(),
                source,
            });
        }
    };
    let mut output = Vec::new();
    let keep = h.keep.max(1);
    let read = async {
        let Ok(mut pipe) = tokio::net::unix::pipe::Receiver::from_owned_fd(read_end) else {
            return;
        };
        let mut buf = [0u8; 4096];
        while let Ok(n) = pipe.read(&mut buf).await {
            if n == 0 {
                break;
            }
            output.extend_from_slice(&buf[..n]);
            if output.len() > 4 * keep {
                output.drain(..output.len() - keep);
            }
        }
    };
    let both = async {
        let (status, ()) = tokio::join!(watch.wait(), read);
        status
    };
    let status = match tokio::time::timeout(h.timeout, both).await {
        Ok(status) => Some(status),
        Err(_) => {
            // Kill the whole group and collect the exit (a pidfd works on the zombie too).
            if let Some(group) = Pid::from_raw(pid as i32) {
                let _ = kill_process_group(group, Signal::KILL);
            }
            if let Ok(watch) = ExitWatch::new(pid) {
                let _ = tokio::time::timeout(Duration::from_secs(2), watch.wait()).await;
            }
            None
        }
    };
    h.children.lock().remove(&pid);
    if output.len() > keep {
        output.drain(..output.len() - keep);
    }
    Ok(Finished { status, output })
}
