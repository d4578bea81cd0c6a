//! `vigil check --live`: what vigil would find on this machine now before starting each
//! agent — its own process to take over (`adopt`), a copy it did not start (the agent would
//! go to `conflict`), or nothing; for a container, what its engine says of it.

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
        .filter(|(_, a)| !a.target.is_external())
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
            Outside::Unknown { why } => ("unknown", format!("could not look: {why}"), None),
        };
        text.push_str(&format!("  {name}: {line}\n"));
        rows.push(json!({ "name": name, "outside": verdict, "pid": pid, "detail": line }));
    }
    let mut problems = 0;
    for c in external(config) {
        if c.problem {
            problems += 1;
        }
        text.push_str(&format!("  {}: {}\n", c.name, c.line));
        rows.push(json!({ "name": c.name, "outside": c.verdict, "pid": c.pid, "detail": c.line }));
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
        conflicts: conflicts + problems,
    }
}

/// What an engine (Docker, systemd) says of one container or unit agent.
struct ExternalLook {
    name: String,
    verdict: &'static str,
    line: String,
    pid: Option<u32>,
    /// vigil could not supervise it as configured.
    problem: bool,
}

fn look(
    name: &str,
    verdict: &'static str,
    line: String,
    pid: Option<u32>,
    problem: bool,
) -> ExternalLook {
    ExternalLook {
        name: name.to_string(),
        verdict,
        line,
        pid,
        problem,
    }
}

/// Each container and unit agent, as its engine sees it now (one question each).
fn external(config: &Config) -> Vec<ExternalLook> {
    let agents: Vec<&crate::config::AgentConfig> = config
        .agents
        .iter()
        .filter(|a| a.target.is_external())
        .collect();
    if agents.is_empty() {
        return Vec::new();
    }
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(async {
            let mut out = containers(&agents).await;
            out.extend(units(&agents).await);
            out
        }),
        Err(e) => agents
            .iter()
            .map(|a| look(&a.name, "unknown", format!("cannot ask: {e}"), None, true))
            .collect(),
    }
}

async fn containers(agents: &[&crate::config::AgentConfig]) -> Vec<ExternalLook> {
    use crate::driver::docker::engine::{Engine, EngineError};
    let agents: Vec<(&str, &str)> = agents
        .iter()
        .filter_map(|a| Some((a.name.as_str(), a.target.container()?)))
        .collect();
    if agents.is_empty() {
        return Vec::new();
    }
    let engine = match Engine::connect() {
        Ok(e) => e,
        Err(e) => {
            return agents
                .iter()
                .map(|(n, _)| look(n, "unknown", e.to_string(), None, true))
                .collect();
        }
    };
    let mut out = Vec::new();
    for (name, container) in agents {
        let row = match engine.inspect(container).await {
            Ok(seen) if crate::driver::docker::own_container().is_some_and(|o| o.id == seen.id) => {
                look(
                    name,
                    "refused",
                    format!(
                        "container {container} is the one this vigil runs in: it would never be supervised"
                    ),
                    None,
                    true,
                )
            }
            Ok(seen) => {
                let mut line = if seen.running {
                    format!(
                        "would take over container {container} ({}), running for {}",
                        &seen.id[..seen.id.len().min(12)],
                        vigil_core::human_duration(crate::driver::docker::age_of(seen.started_ns))
                    )
                } else {
                    format!("container {container} exists and is not running: vigil would start it")
                };
                if let Some(policy) = &seen.restart_policy {
                    line.push_str(&format!(
                        "; WARNING: its engine restarts it too (restart policy \"{policy}\"): two healers fight — set it to \"no\" (docker update --restart no {container}; compose: restart: \"no\")"
                    ));
                }
                let verdict = if seen.running { "adopt" } else { "clear" };
                look(name, verdict, line, seen.running.then_some(seen.pid), false)
            }
            Err(EngineError::NoSuchContainer(_)) => look(
                name,
                "missing",
                format!(
                    "MISSING: there is no container {container}: create it (docker create / compose up --no-start); vigil never creates one"
                ),
                None,
                true,
            ),
            Err(e) => look(name, "unknown", e.to_string(), None, true),
        };
        out.push(row);
    }
    out
}

async fn units(agents: &[&crate::config::AgentConfig]) -> Vec<ExternalLook> {
    use crate::driver::units::{Bus, BusError};
    let mut out = Vec::new();
    for a in agents {
        let Some((unit, user)) = a.target.unit() else {
            continue;
        };
        let name = a.name.as_str();
        let bus = match Bus::connect(user).await {
            Ok(bus) => bus,
            Err(e) => {
                out.push(look(name, "unknown", e.to_string(), None, true));
                continue;
            }
        };
        let row = match bus.state(unit).await {
            _ if !user && crate::driver::units::own_unit() == Some(unit) => look(
                name,
                "refused",
                format!("unit {unit} is the one this vigil runs in: it would never be supervised"),
                None,
                true,
            ),
            Ok(s) => {
                let mut line = if s.running() {
                    format!("would take over unit {unit} (pid {})", s.main_pid)
                } else {
                    format!("unit {unit} is {}: vigil would start it", s.active_state)
                };
                if s.restart != "no" && !s.restart.is_empty() {
                    line.push_str(&format!(
                        "; WARNING: systemd restarts it too (Restart={}): two healers fight — set Restart=no (systemctl edit {unit}: [Service] Restart=no)",
                        s.restart
                    ));
                }
                let verdict = if s.running() { "adopt" } else { "clear" };
                look(
                    name,
                    verdict,
                    line,
                    s.running().then_some(s.main_pid),
                    false,
                )
            }
            Err(BusError::NoSuchUnit(_)) => look(
                name,
                "missing",
                format!("MISSING: there is no unit {unit}: install it; vigil never writes one"),
                None,
                true,
            ),
            Err(e) => look(name, "unknown", e.to_string(), None, true),
        };
        out.push(row);
    }
    out
}
