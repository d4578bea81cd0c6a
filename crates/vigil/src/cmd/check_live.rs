//! `vigil check --live`: what vigil would find on this machine now before starting each
//! agent — its own process to take over (`adopt`), a copy it did not start (the agent would
//! go to `conflict`), or nothing.

use std::collections::HashSet;

use serde_json::{Value, json};
use vigil_core::{AgentId, Outside, RunId};

use crate::config::Config;
use crate::driver::outside::{self, Look};
use crate::driver::process::STATE_DIR_VAR;

/// One line per agent, and whether any would be kept from starting.
pub struct LiveReport {
    pub text: String,
    pub json: Value,
    pub conflicts: usize,
}

pub fn report(config: &Config) -> LiveReport {
    let own_cwd = std::env::current_dir().unwrap_or_else(|_| "/".into());
    let looks: Vec<Look> = config
        .agents
        .iter()
        .enumerate()
        .map(|(i, a)| Look::for_agent(AgentId(i as u32), RunId(0), a, &own_cwd))
        .collect();
    // A running vigil's agents carry its state dir as their mark: they are not copies.
    let mark = std::fs::canonicalize(&config.state_dir)
        .unwrap_or_else(|_| config.state_dir.clone())
        .to_string_lossy()
        .into_owned();
    let watched = HashSet::new();
    let own = outside::Own {
        self_pid: std::process::id(),
        watched: &watched,
        mark: (STATE_DIR_VAR, &mark),
    };
    let found = outside::look_all(&looks, &own);
    let mut text = String::from("\nOn this machine now (before each agent would start):\n");
    let mut rows = Vec::new();
    let mut conflicts = 0;
    for (agent, _, outside) in found {
        let name = &config.agents[agent.0 as usize].name;
        let (verdict, line, pid) = match &outside {
            Outside::Nothing => ("clear", "not running outside vigil".to_string(), None),
            Outside::Adoptable { pid, how, age, .. } => (
                "adopt",
                format!(
                    "would take over pid {pid} ({how}), running for {}",
                    vigil_core::human_duration(*age)
                ),
                Some(*pid),
            ),
            Outside::Copy { pid, what } => {
                conflicts += 1;
                (
                    "conflict",
                    format!("CONFLICT: {what}; it would not be started"),
                    Some(*pid),
                )
            }
        };
        text.push_str(&format!("  {name}: {line}\n"));
        rows.push(json!({ "name": name, "outside": verdict, "pid": pid, "detail": line }));
    }
    if conflicts > 0 {
        text.push_str(
            "\nA conflicting process is not vigil's: stop it, or configure `adopt` so vigil takes \
             it over, or start the agent anyway with `vigil start NAME --force`.\n",
        );
    }
    LiveReport {
        text,
        json: Value::Array(rows),
        conflicts,
    }
}
