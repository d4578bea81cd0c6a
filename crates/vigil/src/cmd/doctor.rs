//! `vigil doctor`: look at the whole fleet now and say what is wrong, who is to blame and
//! what vigil would do — the graph, every guarded file, and every check of every agent probed
//! once, now (checks the agent pushes — notify, api, container health — are read from the
//! running vigil). `--fix` carries the actions out through the running vigil, upstreams first,
//! as a person's requests: a restart runs the agent's file guard before it starts.

use std::collections::{HashMap, HashSet};

use serde_json::{Value, json};
use vigil_core::{CheckKind, Observation, human_duration};

use super::control::{Reply, call, encode, endpoint, fleet_status};
use crate::checks::{CheckRunner, ProbeContext};
use crate::cli::ApiArgs;
use crate::config::{self, AgentConfig, Config, Repair};
use crate::guard::{self, FileStore};

/// What was found about one agent.
struct Finding {
    agent: String,
    /// What is wrong with the agent itself (its checks, its files, its state).
    problems: Vec<String>,
    /// Its guarded files that a start would mend (or cannot).
    files: Vec<String>,
    /// Lines of what is fine, for the report.
    fine: Vec<String>,
    /// The agent upstream whose trouble this is, if any.
    blame: Option<String>,
    /// What vigil would do, in words.
    action: Option<String>,
    /// `--fix` may restart it.
    restart: bool,
}

pub fn doctor(args: &ApiArgs, fix: bool, as_json: bool) -> i32 {
    let config = match config::load(&args.cfg.config, args.cfg.state_dir.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return super::EXIT_USAGE;
        }
    };
    let ep = endpoint(args).ok();
    let status: HashMap<String, Value> = ep.as_ref().and_then(fleet_status).unwrap_or_default();
    let running = !status.is_empty();
    let mut findings = examine(&config, &status);
    blame(&config, &mut findings);
    let edges: usize = config.agents.iter().map(|a| a.depends_on.len()).sum();
    let wrong = findings
        .iter()
        .filter(|f| !f.problems.is_empty() || !f.files.is_empty())
        .count();

    let mut fixed = Vec::new();
    if fix {
        match (&ep, running) {
            (Some(ep), true) => fixed = carry_out(ep, &config, &findings),
            _ => eprintln!("--fix needs a running vigil: nothing was done"),
        }
    }
    if as_json {
        let body = json!({
            "agents": config.agents.len(),
            "edges": edges,
            "vigil_running": running,
            "wrong": wrong,
            "findings": findings.iter().map(|f| json!({
                "agent": f.agent,
                "ok": f.problems.is_empty() && f.files.is_empty(),
                "problems": f.problems,
                "files": f.files,
                "blame": f.blame,
                "action": f.action,
            })).collect::<Vec<_>>(),
            "fixed": fixed,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&body).unwrap_or_default()
        );
    } else {
        print!("{}", report(&config, &findings, running, edges, &fixed));
    }
    if wrong == 0 {
        super::EXIT_OK
    } else {
        super::EXIT_FAILURE
    }
}

/// Probe every check, inspect every guarded file, read the state of every agent.
fn examine(config: &Config, status: &HashMap<String, Value>) -> Vec<Finding> {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return Vec::new();
        }
    };
    let (events, _) = tokio::sync::mpsc::unbounded_channel();
    let runner = CheckRunner::new(
        rt.handle().clone(),
        events,
        Default::default(),
        Default::default(),
    );
    let store = FileStore::new(&config.state_dir);
    let now_ms = crate::clock::now().wall_ms;
    // Every probe at once: a fleet of slow checks takes as long as its slowest.
    let probes = rt.block_on(async {
        let mut tasks = Vec::new();
        for a in &config.agents {
            let live = status.get(&a.name);
            for (i, c) in a.checks.iter().enumerate() {
                let pushed = matches!(
                    c.spec.kind,
                    CheckKind::Notify | CheckKind::Api | CheckKind::ContainerHealth
                );
                if pushed {
                    continue;
                }
                let runner = runner.clone();
                let config = c.clone();
                let ctx = ProbeContext {
                    agent: a.name.clone(),
                    instance: a.instance.clone(),
                    pid: live.and_then(|s| s["pid"].as_u64()).map(|p| p as u32),
                    cwd: a.cwd.clone(),
                    user: a.run_as.clone(),
                    secrets: a.secrets(),
                };
                let name = a.name.clone();
                tasks.push(tokio::spawn(async move {
                    ((name, i), runner.probe_now(config, ctx).await)
                }));
            }
        }
        let mut out = HashMap::new();
        for t in tasks {
            if let Ok((key, o)) = t.await {
                out.insert(key, o);
            }
        }
        out
    });
    config
        .agents
        .iter()
        .map(|a| {
            let mut f = Finding {
                agent: a.name.clone(),
                problems: Vec::new(),
                files: Vec::new(),
                fine: Vec::new(),
                blame: None,
                action: None,
                restart: false,
            };
            let live = status.get(&a.name);
            if let Some(s) = live {
                let state = s["state"].as_str().unwrap_or("?");
                match state {
                    "running" | "starting" | "waiting" => {}
                    "stopped" if s["held"] == true => f.fine.push("stopped by a person".into()),
                    "quarantined" => f.problems.push(format!(
                        "quarantined: {}",
                        s["quarantine_reason"].as_str().unwrap_or("")
                    )),
                    other => f.problems.push(other.to_string()),
                }
            }
            for (i, c) in a.checks.iter().enumerate() {
                let label = c.spec.label();
                match probes.get(&(a.name.clone(), i)) {
                    Some(o) => match judge(o, c.spec.max_age, now_ms) {
                        Ok(detail) => f.fine.push(format!("check {label}: {detail}")),
                        Err(Some(detail)) => f.problems.push(format!("check {label} failing: {detail}")),
                        Err(None) => f.fine.push(format!(
                            "check {label}: unknown ({}) — vigil cannot tell, and restarts no one for it",
                            unknown_detail(o)
                        )),
                    },
                    // Pushed by the agent: as the running vigil last judged it.
                    None => match live.and_then(|s| {
                        s["checks"].as_array()?.iter().find(|x| x["name"] == c.spec.name.as_str()).cloned()
                    }) {
                        Some(x) if x["verdict"] == "failing" => f.problems.push(format!(
                            "check {label} failing: {}",
                            x["detail"].as_str().unwrap_or("")
                        )),
                        Some(x) => f.fine.push(format!("check {label}: {}", x["verdict"].as_str().unwrap_or("?"))),
                        None => f.fine.push(format!("check {label}: pushed by the agent, and no vigil runs to hear it")),
                    },
                }
            }
            for file in &a.files {
                let state = guard::inspect(file);
                let Some(problem) = state.problem() else {
                    f.fine.push(format!("file {}: valid", file.path.display()));
                    continue;
                };
                let good = store.good(&a.name, &file.path);
                let mend = match file.repair {
                    Repair::None => "quarantine it before its next start (repair = \"none\")".to_string(),
                    Repair::Restore if !good.is_empty() => format!(
                        "restore the good copy kept{} before its next start",
                        good[0].run.map(|r| format!(" after run {r}")).unwrap_or_default()
                    ),
                    Repair::Restore | Repair::Defaults if !file.defaults.is_empty() => {
                        "fill in its defaults before its next start (if they cover every required key)".into()
                    }
                    Repair::Restore => "quarantine it before its next start: no good copy is kept yet".into(),
                    Repair::Defaults => "quarantine it: it has no defaults".into(),
                };
                f.files.push(format!("file {} is {problem}: vigil would {mend}", file.path.display()));
            }
            f
        })
        .collect()
}

/// `Ok(detail)` passing, `Err(Some(detail))` failing, `Err(None)` unknown.
fn judge(
    o: &Observation,
    max_age: Option<std::time::Duration>,
    now_ms: i64,
) -> Result<String, Option<String>> {
    match o {
        Observation::Healthy(d) => Ok(if d.is_empty() { "ok".into() } else { d.clone() }),
        Observation::Unhealthy(d) => Err(Some(d.clone())),
        Observation::Unknown(_) => Err(None),
        Observation::Progress { at_wall_ms: None } => Err(Some("no progress at all yet".into())),
        Observation::Progress {
            at_wall_ms: Some(t),
        } => {
            let age = std::time::Duration::from_millis((now_ms - t).max(0) as u64);
            let max = max_age.unwrap_or(std::time::Duration::from_secs(60));
            let text = format!(
                "progress {} ago (max {})",
                human_duration(age),
                human_duration(max)
            );
            if age < max { Ok(text) } else { Err(Some(text)) }
        }
    }
}

fn unknown_detail(o: &Observation) -> String {
    match o {
        Observation::Unknown(e) => e.clone(),
        _ => String::new(),
    }
}

/// A problem of an agent whose upstream has one too is the upstream's: walk up to the first
/// agent in trouble whose own upstreams are fine. Then say what vigil would do.
fn blame(config: &Config, findings: &mut [Finding]) {
    let troubled: HashSet<String> = findings
        .iter()
        .filter(|f| !f.problems.is_empty() || !f.files.is_empty())
        .map(|f| f.agent.clone())
        .collect();
    let by_name: HashMap<&str, &AgentConfig> =
        config.agents.iter().map(|a| (a.name.as_str(), a)).collect();
    let root = |start: &str| -> Option<String> {
        let mut at = start.to_string();
        let mut seen = HashSet::new();
        loop {
            seen.insert(at.clone());
            let up = by_name
                .get(at.as_str())?
                .depends_on
                .iter()
                .find(|d| troubled.contains(&d.agent) && !seen.contains(&d.agent))?;
            at = up.agent.clone();
            if by_name
                .get(at.as_str())
                .is_none_or(|a| !a.depends_on.iter().any(|d| troubled.contains(&d.agent)))
            {
                return Some(at);
            }
        }
    };
    for f in findings.iter_mut() {
        if f.problems.is_empty() && f.files.is_empty() {
            continue;
        }
        f.blame = root(&f.agent);
        f.action = Some(match &f.blame {
            Some(up) => format!("waits for {up}: not restarted, no restart budget spent"),
            None if f.problems.iter().any(|p| p.starts_with("quarantined")) => {
                "nothing until a person runs `vigil reset` (it is quarantined)".into()
            }
            None => {
                f.restart = true;
                if f.files.is_empty() {
                    "restart it through its policy (a stall), or — with --fix — now, as a person's restart".into()
                } else {
                    "mend its files at its next start; --fix restarts it now".into()
                }
            }
        });
    }
}

/// Restart the agents that are to blame, upstreams first; what was done, in words.
fn carry_out(ep: &super::control::Endpoint, config: &Config, findings: &[Finding]) -> Vec<String> {
    let depths = {
        let edges: HashMap<&str, Vec<&str>> = config
            .agents
            .iter()
            .map(|a| {
                (
                    a.name.as_str(),
                    a.depends_on.iter().map(|d| d.agent.as_str()).collect(),
                )
            })
            .collect();
        vigil_core::graph::depths(&edges)
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect::<HashMap<String, usize>>()
    };
    let mut order: Vec<&Finding> = findings.iter().filter(|f| f.restart).collect();
    order.sort_by_key(|f| depths.get(&f.agent).copied().unwrap_or(0));
    let mut done = Vec::new();
    for f in order {
        let body = json!({ "reason": "vigil doctor --fix" });
        let path = format!("/agents/{}/restart", encode(&f.agent));
        let line = match call(ep, reqwest::Method::POST, &path, Some(body)) {
            Reply::Answer(200, _) => format!("{}: restarted", f.agent),
            Reply::Answer(code, body) => format!(
                "{}: not restarted ({code}: {})",
                f.agent,
                body.get("error").and_then(Value::as_str).unwrap_or("")
            ),
            Reply::Unreachable(why) => format!("{}: vigil could not be reached ({why})", f.agent),
        };
        done.push(line);
    }
    done
}

fn report(
    config: &Config,
    findings: &[Finding],
    running: bool,
    edges: usize,
    fixed: &[String],
) -> String {
    let mut out = format!(
        "vigil doctor — {} agents, {edges} dependencies, no cycle; {}\n\n",
        config.agents.len(),
        if running {
            "vigil is running (its view of pushed checks and states is included)"
        } else {
            "no vigil is running (checks probed from here only)"
        }
    );
    let width = findings.iter().map(|f| f.agent.len()).max().unwrap_or(0);
    for f in findings {
        let ok = f.problems.is_empty() && f.files.is_empty();
        let head = if ok { "ok   " } else { "WRONG" };
        let summary = if ok {
            if f.fine.is_empty() {
                "nothing to check".to_string()
            } else {
                f.fine.join("; ")
            }
        } else {
            f.problems
                .iter()
                .chain(&f.files)
                .cloned()
                .collect::<Vec<_>>()
                .join("; ")
        };
        out.push_str(&format!(
            "{head}  {:<width$}  {}\n",
            f.agent,
            super::printable(&summary)
        ));
        if let Some(up) = &f.blame {
            out.push_str(&format!("       {:<width$}  → to blame: {up}\n", ""));
        }
        if let Some(a) = &f.action {
            out.push_str(&format!("       {:<width$}  → vigil: {a}\n", ""));
        }
    }
    let wrong = findings
        .iter()
        .filter(|f| !f.problems.is_empty() || !f.files.is_empty())
        .count();
    out.push_str(&format!(
        "\n{}\n",
        if wrong == 0 {
            "everything is fine".to_string()
        } else {
            format!(
                "{wrong} agent(s) need attention{}",
                if fixed.is_empty() {
                    "; `vigil doctor --fix` carries out what vigil would do"
                } else {
                    ""
                }
            )
        }
    ));
    for line in fixed {
        out.push_str(&format!("fixed: {line}\n"));
    }
    out
}
