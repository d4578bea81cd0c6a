//! Evidence of a stall, gathered while the stuck agent is still alive: its log tail since the
//! run started, then the output of its `evidence` command (`py-spy dump --pid {pid}`, `jstack`,
//! a curl of its debug endpoint…), bounded in time and size and redacted like the log.

use std::path::{Path, PathBuf};

use vigil_core::diagnosis::EVIDENCE_HEADER;

use crate::command::{self, Helper};
use crate::config::EvidenceCommand;
use crate::driver::Children;
use crate::logs;
use crate::redact::{self, Secrets};

/// Output of the evidence command kept at most.
const KEEP_BYTES: usize = 16 * 1024;
const KEEP_LINES: usize = 100;

/// The run's last `n` log lines (from byte `from` of `log`), redacted. Unreadable → none.
pub fn log_tail(log: &Path, n: usize, from: u64, secrets: &Secrets) -> Vec<String> {
    if n == 0 {
        return Vec::new();
    }
    match logs::tail_from(log, n, from) {
        Ok(lines) => lines
            .iter()
            .map(|l| redact::line_with(l, secrets))
            .collect(),
        Err(e) => {
            tracing::debug!("cannot read {}: {e}", log.display());
            Vec::new()
        }
    }
}

/// Run the evidence command against `pid`; its output as evidence lines under a header line
/// that says what ran and how it ended.
pub async fn command_output(
    evidence: &EvidenceCommand,
    pid: u32,
    cwd: Option<PathBuf>,
    children: &Children,
    secrets: &Secrets,
) -> Vec<String> {
    let argv: Vec<String> = evidence
        .command
        .iter()
        .map(|a| a.replace("{pid}", &pid.to_string()))
        .collect();
    let shown = redact::line_with(&argv.join(" "), secrets);
    let finished = command::run(Helper {
        command: &argv,
        cwd: cwd.as_deref(),
        // Run by vigil itself: reading another process's stacks takes privileges an agent's
        // own user usually lacks.
        user: None,
        env: Vec::new(),
        timeout: evidence.timeout,
        keep: KEEP_BYTES,
        children,
    })
    .await;
    let f = match finished {
        Ok(f) => f,
        Err(e) => return vec![format!("{EVIDENCE_HEADER}{shown}: {e} ---")],
    };
    let how = match f.status {
        Some(status) => status.to_string(),
        None => format!("cut after {}", vigil_core::human_duration(evidence.timeout)),
    };
    let text = String::from_utf8_lossy(&f.output);
    let lines: Vec<&str> = text.lines().collect();
    let skip = lines.len().saturating_sub(KEEP_LINES);
    std::iter::once(format!("{EVIDENCE_HEADER}{shown} ({how}) ---"))
        .chain(lines[skip..].iter().map(|l| redact::line_with(l, secrets)))
        .collect()
}
