//! `exec` checks: run a command; exit 0 is healthy. The last line it printed is the detail.

use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use vigil_core::Observation;

use crate::command::{self, Helper};
use crate::driver::Children;

const KEEP: usize = 8 * 1024;

pub struct ExecProbe<'a> {
    pub command: &'a [String],
    pub cwd: Option<&'a Path>,
    pub user: Option<&'a crate::config::users::Credentials>,
    pub env: Vec<(OsString, OsString)>,
    pub timeout: Duration,
    pub children: &'a Children,
    pub secrets: &'a crate::redact::Secrets,
}

/// The last line the command printed, redacted like any evidence: it becomes a check's detail,
/// shown in status, the journal and `vigil explain`.
fn last_line(output: &[u8], secrets: &crate::redact::Secrets) -> String {
    let text = String::from_utf8_lossy(output);
    let line = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    crate::redact::line_with(line, secrets)
        .chars()
        .take(200)
        .collect()
}

pub async fn probe(p: ExecProbe<'_>) -> Observation {
    let program = &p.command[0];
    let finished = command::run(Helper {
        command: p.command,
        cwd: p.cwd,
        user: p.user,
        env: p.env,
        timeout: p.timeout,
        keep: KEEP,
        children: p.children,
    })
    .await;
    match finished {
        Err(e) => Observation::Unknown(e.to_string()),
        Ok(f) => match f.status {
            Some(status) if status.is_clean() => {
                Observation::Healthy(last_line(&f.output, p.secrets))
            }
            Some(status) => {
                let line = last_line(&f.output, p.secrets);
                Observation::Unhealthy(if line.is_empty() {
                    format!("{program} {status}")
                } else {
                    format!("{program} {status}: {line}")
                })
            }
            None => Observation::Unhealthy(format!(
                "{program} did not finish within {}",
                vigil_core::human_duration(p.timeout)
            )),
        },
    }
}
