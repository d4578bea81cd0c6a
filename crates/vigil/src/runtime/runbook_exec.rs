//! A runbook's `exec` step: a command (argv, never a shell) run as the agent's user in its
//! working directory, cut at its timeout, its output's tail redacted like the agent's log.

use vigil_core::{AgentId, Event};

use super::executor::Executor;
use super::fleet::Fleet;
use crate::command::{self, Helper};
use crate::redact;

/// What is kept of the command's output.
const KEEP_BYTES: usize = 8 * 1024;
/// Lines of it that go into the journal.
const SHOWN_LINES: usize = 5;

impl Executor {
    pub(super) fn runbook_exec(
        &mut self,
        fleet: &Fleet,
        agent: AgentId,
        runbook: u64,
        argv: Vec<String>,
        timeout: std::time::Duration,
    ) {
        let events = self.events.clone();
        let Some(slot) = fleet.get(agent) else {
            let _ = events.send(Event::RunbookExec {
                runbook,
                result: Err("the agent is no longer configured".into()),
            });
            return;
        };
        let cwd = slot.config.cwd.clone();
        let user = slot.config.run_as.clone();
        let secrets = slot.secrets();
        let name = slot.config.name.clone();
        let instance = slot.config.instance.clone().unwrap_or_default();
        let children = self.children.clone();
        self.io.spawn(async move {
            let env = vec![
                ("VIGIL_AGENT".into(), name.into()),
                ("VIGIL_INSTANCE".into(), instance.into()),
                ("VIGIL_RUNBOOK_RUN".into(), runbook.to_string().into()),
            ];
            let finished = command::run(Helper {
                command: &argv,
                cwd: cwd.as_deref(),
                user: user.as_ref(),
                env,
                timeout,
                keep: KEEP_BYTES,
                children: &children,
            })
            .await;
            let result = match finished {
                Err(e) => Err(format!("cannot run {}: {e}", argv[0])),
                Ok(f) => {
                    let text = String::from_utf8_lossy(&f.output);
                    let lines: Vec<String> = text
                        .lines()
                        .filter(|l| !l.trim().is_empty())
                        .map(|l| redact::line_with(l, &secrets))
                        .collect();
                    let tail = lines[lines.len().saturating_sub(SHOWN_LINES)..].join(" | ");
                    let said = if tail.is_empty() {
                        String::new()
                    } else {
                        format!(": {tail}")
                    };
                    match f.status {
                        Some(s) if s.is_clean() => Ok(format!("exited with code 0{said}")),
                        Some(s) => Err(format!("{s}{said}")),
                        None => Err(format!(
                            "did not finish within {}; killed{said}",
                            vigil_core::human_duration(timeout)
                        )),
                    }
                }
            };
            let _ = events.send(Event::RunbookExec { runbook, result });
        });
    }
}
