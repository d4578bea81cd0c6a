//! `exec` checks: run a command; exit 0 is healthy. The last line it printed is the detail.

use std::ffi::OsString;
use std::os::fd::AsFd;
use std::path::Path;
use std::time::Duration;

use rustix::pipe::{PipeFlags, pipe_with};
use rustix::process::{Pid, Signal, kill_process_group};
use tokio::io::AsyncReadExt;
use vigil_core::Observation;

use crate::driver::spawn::{SpawnRequest, resolve_program, spawn_in_new_session};
use crate::driver::{Children, ExitWatch};

/// Output kept for the detail (the end of it).
const KEEP: usize = 8 * 1024;

pub struct ExecProbe<'a> {
    pub command: &'a [String],
    pub cwd: Option<&'a Path>,
    /// VIGIL_AGENT, VIGIL_PID, … for the command.
    pub env: Vec<(OsString, OsString)>,
    pub timeout: Duration,
    pub children: &'a Children,
}

fn last_line(output: &[u8]) -> String {
    let text = String::from_utf8_lossy(output);
    let line = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    line.chars().take(200).collect()
}

pub async fn probe(p: ExecProbe<'_>) -> Observation {
    let program = &p.command[0];
    let path_var = std::env::var_os("PATH");
    let Some(resolved) = resolve_program(program, path_var.as_deref()) else {
        return Observation::Unknown(format!("check command {program:?} not found in PATH"));
    };
    let (read_end, write_end) = match pipe_with(PipeFlags::CLOEXEC) {
        Ok(p) => p,
        Err(e) => return Observation::Unknown(format!("cannot create a pipe: {e}")),
    };
    let mut env: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    for (k, v) in p.env {
        env.retain(|(key, _)| *key != k);
        env.push((k, v));
    }
    let pid = {
        let mut managed = p.children.lock();
        let spawned = spawn_in_new_session(&SpawnRequest {
            program: &resolved,
            argv: p.command,
            env: &env,
            cwd: p.cwd,
            output: write_end.as_fd(),
        });
        match spawned {
            Ok(pid) => {
                managed.insert(pid);
                pid
            }
            Err(e) => {
                return Observation::Unknown(format!("cannot run check command {program:?}: {e}"));
            }
        }
    };
    drop(write_end);
    let watch = match ExitWatch::new(pid) {
        Ok(w) => w,
        Err(e) => {
            p.children.lock().remove(&pid);
            return Observation::Unknown(format!("cannot watch the check command: {e}"));
        }
    };
    let mut output = Vec::new();
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
            if output.len() > 4 * KEEP {
                output.drain(..output.len() - KEEP);
            }
        }
    };
    let run = async {
        let (status, ()) = tokio::join!(watch.wait(), read);
        status
    };
    let result = tokio::time::timeout(p.timeout, run).await;
    let observation = match result {
        Ok(status) if status.is_clean() => Observation::Healthy(last_line(&output)),
        Ok(status) => {
            let line = last_line(&output);
            Observation::Unhealthy(if line.is_empty() {
                format!("{program} {status}")
            } else {
                format!("{program} {status}: {line}")
            })
        }
        Err(_) => {
            // The probe hangs: kill its whole group and collect its exit (a pidfd works on
            // the zombie too), so nothing is left behind.
            if let Some(group) = Pid::from_raw(pid as i32) {
                let _ = kill_process_group(group, Signal::KILL);
            }
            if let Ok(watch) = ExitWatch::new(pid) {
                let _ = tokio::time::timeout(Duration::from_secs(2), watch.wait()).await;
            }
            Observation::Unhealthy(format!(
                "{program} did not finish within {}",
                vigil_core::human_duration(p.timeout)
            ))
        }
    };
    p.children.lock().remove(&pid);
    observation
}
