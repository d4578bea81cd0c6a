//! A unit's evidence: its own journal lines for one run (`_SYSTEMD_INVOCATION_ID`), from
//! `journalctl` — the journal's own reader, which knows its file format, rotation and
//! permissions — bounded in time and size like every helper command. The caller redacts them.

use std::time::Duration;

use crate::command::{Helper, run};
use crate::driver::Children;

/// How long `journalctl` may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// The last `n` lines the run `invocation` of `unit` wrote (`user`: the user's own manager).
pub async fn tail(
    unit: &str,
    invocation: &str,
    user: bool,
    n: usize,
    children: &Children,
) -> Vec<String> {
    if n == 0 {
        return Vec::new();
    }
    // Not `--user`: that reads only the user's own files, and a journal kept in memory has
    // none (its units' lines are in the system's files).
    let mut command: Vec<String> = vec!["journalctl".into()];
    command.extend([
        if user { "--user-unit" } else { "--unit" }.to_string(),
        unit.to_string(),
        "--lines".into(),
        n.to_string(),
        "--output".into(),
        "cat".into(),
        "--no-pager".into(),
        "--quiet".into(),
    ]);
    // Only this run's lines (none when systemd gave no id).
    if !invocation.is_empty() {
        command.push(format!("_SYSTEMD_INVOCATION_ID={invocation}"));
    }
    if user {
        command.push(format!("_UID={}", rustix::process::getuid().as_raw()));
    }
    let finished = run(Helper {
        command: &command,
        cwd: None,
        user: None,
        env: Vec::new(),
        timeout: TIMEOUT,
        keep: n * 1024,
        children,
    })
    .await;
    match finished {
        Ok(f) => {
            let text = String::from_utf8_lossy(&f.output);
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.len().saturating_sub(n);
            lines[from..].iter().map(|l| l.to_string()).collect()
        }
        Err(e) => vec![format!("(the unit's journal could not be read: {e})")],
    }
}
