//! `vigil-bench graph-start`: a fleet in a 3-level dependency graph (feeds → predictors →
//! traders, each one depending on one agent of the level above) started from nothing: the
//! time until every agent runs, and a check of the order from the journal — no agent started
//! before the agent it depends on.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde_json::json;

use crate::idle::{StateWatch, wait_within};
use crate::{Daemon, scratch};

/// `n` agents: a tenth of a tenth feeds, a tenth predictors, the rest traders.
fn config(n: usize) -> (String, usize, usize, usize) {
    let feeds = (n / 100).max(1);
    let predictors = (n / 10).saturating_sub(feeds).max(1);
    let traders = n.saturating_sub(feeds + predictors).max(1);
    let list = |k: usize| {
        (0..k)
            .map(|i| format!("\"{i}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    // Template instances depend by name on one instance of the level above (`{instance}` would
    // pair them one to one; these are many to one, as a real fleet's are).
    let mut text = format!(
        "[vigil]\nstate_dir = \"state\"\n\n\
         [agents.feed]\ncommand = [\"sleep\", \"1000000\"]\ninstances = [{}]\n\n",
        list(feeds)
    );
    for p in 0..predictors {
        text.push_str(&format!(
            "[agents.predictor{p}]\ncommand = [\"sleep\", \"1000000\"]\ndepends_on = [\"feed@{}\"]\n\n",
            p % feeds
        ));
    }
    for t in 0..traders {
        text.push_str(&format!(
            "[agents.trader{t}]\ncommand = [\"sleep\", \"1000000\"]\ndepends_on = [\"predictor{}\"]\n\n",
            t % predictors
        ));
    }
    (text, feeds, predictors, traders)
}

pub fn graph_start(vigil: &Path, n: usize) -> Result<serde_json::Value> {
    let dir = scratch("graph");
    let _ = std::fs::remove_dir_all(&dir);
    let (text, feeds, predictors, traders) = config(n);
    let total = feeds + predictors + traders;
    let t0 = Instant::now();
    let mut daemon = Daemon::start(vigil, &dir, &text)?;
    let mut state = StateWatch::new(dir.join("state/state.jsonl"));
    wait_within(
        &mut daemon,
        "every agent running",
        Duration::from_secs(120),
        || {
            state.refresh();
            state.running() >= total
        },
    )?;
    let all_running = t0.elapsed();
    let out_of_order = order_violations(&dir.join("state/audit.jsonl"))?;
    daemon.stop()?;
    println!(
        "graph-start: {total} agents ({feeds} feeds → {predictors} predictors → {traders} traders) \
         all running {:.0} ms after `vigil run`; started before their upstream: {out_of_order}",
        all_running.as_secs_f64() * 1e3
    );
    if out_of_order > 0 {
        bail!("{out_of_order} agents started before the agent they depend on");
    }
    Ok(json!({
        "bench": "graph-start",
        "agents": total,
        "levels": [feeds, predictors, traders],
        "all_running_ms": all_running.as_secs_f64() * 1e3,
        "out_of_order": out_of_order,
    }))
}

/// Agents whose start record comes before their upstream's (by journal order, which is the
/// order vigil decided in).
fn order_violations(journal: &Path) -> Result<usize> {
    let text = std::fs::read_to_string(journal)?;
    let mut started: HashMap<String, usize> = HashMap::new();
    let mut ups: HashMap<String, String> = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let agent = v["agent"].as_str().unwrap_or_default().to_string();
        match v["action"].as_str() {
            Some("start") => {
                started.entry(agent).or_insert(i);
            }
            Some("resumed") => {
                started.entry(agent.clone()).or_insert(i);
                if let Some(up) = v["metadata"]["upstream"].as_str() {
                    ups.insert(agent, up.to_string());
                }
            }
            Some("waiting") => {
                if let Some(up) = v["metadata"]["upstream"].as_str() {
                    ups.insert(agent, up.to_string());
                }
            }
            _ => {}
        }
    }
    Ok(ups
        .iter()
        .filter(|(down, up)| match (started.get(*down), started.get(*up)) {
            (Some(d), Some(u)) => d < u,
            _ => true,
        })
        .count())
}
