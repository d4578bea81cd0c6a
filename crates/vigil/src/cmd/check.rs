//! `vigil check`: validate a config and show what it resolves to.

use serde_json::json;
use vigil_core::human_duration;

use crate::config::{AgentConfig, CheckConfig, Config, Probe};
use crate::logs;

/// Quote an argv for display the way a shell user would type it.
pub fn shell_words(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:@,+%".contains(c))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn size(bytes: u64) -> String {
    if bytes >= 1_000_000 {
        format!("{:.1} MB", bytes as f64 / 1e6)
    } else {
        format!("{:.1} KB", bytes as f64 / 1e3)
    }
}

pub fn render(config: &Config) -> String {
    let mut out = format!(
        "{}: OK — {} agent{}, state dir {}\n",
        config.path.display(),
        config.agents.len(),
        if config.agents.len() == 1 { "" } else { "s" },
        config.state_dir.display()
    );
    if let Some(llm) = &config.diagnosis.llm {
        out.push_str(&format!(
            "LLM advisor: {} model {} at {} · timeout {} · acts on advice with confidence ≥ {} (only ever stricter)\n",
            llm.provider.as_str(),
            llm.model,
            llm.url,
            human_duration(llm.timeout),
            llm.min_confidence
        ));
    }
    for c in &config.notify {
        let events: Vec<&str> = c.events.iter().map(|e| e.as_str()).collect();
        out.push_str(&format!(
            "notify {} ({}): {}{} · dedupe {} · at most {}/min\n",
            c.name,
            c.kind.as_str(),
            if events.is_empty() {
                "only what runbooks send it".to_string()
            } else {
                events.join(", ")
            },
            if c.agents.is_empty() {
                String::new()
            } else {
                format!(" · agents {}", c.agents.join(", "))
            },
            human_duration(c.dedupe),
            c.max_per_minute
        ));
    }
    out.push_str(&format!(
        "checkpoints: {} · the last {} versions kept per agent\n",
        store_place(config),
        config.store.keep
    ));
    if let Some(c) = &config.cluster {
        out.push_str(&format!(
            "cluster: node {} · PostgreSQL {} · leases of {}, renewed every {}\n",
            c.node,
            crate::redact::url(&c.url),
            human_duration(c.lease_ttl),
            human_duration(c.renew_every())
        ));
    }
    let inc = &config.incidents;
    if inc.enabled {
        out.push_str(&format!(
            "incidents: {} agents failing for one cause within {} · a canary every {} (doubling), proven after {} · released {} apart\n",
            inc.min_agents,
            human_duration(inc.window),
            human_duration(inc.probe_every),
            human_duration(inc.probe_for),
            human_duration(inc.spread)
        ));
    } else {
        out.push_str("incidents: off (every agent's failures are its own)\n");
    }
    if let Some(am) = &config.alertmanager {
        out.push_str(&format!(
            "alerts: POST /alertmanager with its token · at most {} runbooks at once{}\n",
            am.policy.max_concurrent,
            if am.policy.self_labels.is_empty() {
                String::new()
            } else {
                let l: Vec<String> = am
                    .policy
                    .self_labels
                    .iter()
                    .map(|(k, v)| format!("{k}=\"{v}\""))
                    .collect();
                format!(" · about vigil itself: {}", l.join(", "))
            }
        ));
    }
    for rb in &config.runbooks {
        let steps: Vec<String> = rb.steps.iter().map(|s| s.label()).collect();
        out.push_str(&format!(
            "runbook {}: on {} → {}: {} (timeout {}, on failure {})\n",
            rb.name,
            matchers(rb),
            rb.agent,
            steps.join(" → "),
            human_duration(rb.timeout),
            match rb.on_failure {
                vigil_core::runbook::OnFailure::Escalate => "escalate",
                vigil_core::runbook::OnFailure::Notify => "notify",
            }
        ));
    }
    for a in &config.agents {
        out.push('\n');
        out.push_str(&render_agent(config, a));
    }
    out
}

fn matchers(rb: &vigil_core::RunbookSpec) -> String {
    rb.matchers
        .iter()
        .map(|(k, m)| match m {
            vigil_core::runbook::Matcher::Equal(v) => format!("{k}=\"{v}\""),
            vigil_core::runbook::Matcher::Regex(re) => {
                let shown = re
                    .as_str()
                    .trim_start_matches("^(?:")
                    .trim_end_matches(")$");
                format!("{k}=~\"{shown}\"")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn render_agent(config: &Config, a: &AgentConfig) -> String {
    let mut out = a.name.clone();
    if let (Some(t), Some(i)) = (&a.template, &a.instance) {
        out.push_str(&format!("  (template {t}, instance {i})"));
    }
    out.push('\n');
    let row = |k: &str, v: String| format!("  {k:<8} {v}\n");
    match (&a.target, a.target.describe()) {
        (crate::config::Target::Process, _) | (_, None) => {
            out.push_str(&row("command", shell_words(&a.command)))
        }
        (t, Some(what)) => out.push_str(&row(
            "target",
            format!(
                "{what} (driver {}: started, stopped and watched through its API)",
                t.driver()
            ),
        )),
    }
    if let Some(cwd) = &a.cwd {
        out.push_str(&row("cwd", cwd.display().to_string()));
    }
    if !a.env.is_empty() {
        let env: Vec<String> = a
            .shown_env()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        out.push_str(&row("env", env.join(" ")));
    }
    if let Some(u) = &a.run_as {
        out.push_str(&row(
            "user",
            format!("{} (uid {}, gid {})", u.user, u.uid, u.gid),
        ));
    }
    let stop = match &a.target {
        crate::config::Target::Process => format!("stop with {}", a.stop_signal),
        crate::config::Target::Docker { .. } => "stop as docker stop does".to_string(),
        crate::config::Target::Systemd { .. } => "stop through systemd (StopUnit)".to_string(),
    };
    out.push_str(&row(
        "run",
        format!(
            "{} · restart {} · {stop}, SIGKILL after {}",
            if a.autostart {
                "autostart"
            } else {
                "manual start"
            },
            a.restart.as_str(),
            human_duration(a.stop_timeout)
        ),
    ));
    if let crate::config::Placement::Exclusive { nodes, .. } = &a.placement {
        let here = config.cluster.as_ref().map_or("", |c| c.node.as_str());
        out.push_str(&row(
            "placed",
            format!(
                "exclusive: one node at a time, of {}{} · definition {}",
                if nodes.is_empty() {
                    "any node".to_string()
                } else {
                    nodes.join(", ")
                },
                if a.placement.admits(here) {
                    String::new()
                } else {
                    format!(" (not {here}: it stays on standby here)")
                },
                a.definition_hash()
            ),
        ));
    }
    out.push_str(&row("policy", a.policy.summary()));
    for c in &a.checks {
        out.push_str(&row("check", describe_check(c)));
    }
    if !a.depends_on.is_empty() {
        let deps: Vec<String> = a
            .depends_on
            .iter()
            .map(|d| {
                let how = if d.implied { ", by produced_by" } else { "" };
                format!("{} ({}{how})", d.agent, d.ready.as_str())
            })
            .collect();
        let then = match a.on_upstream_restart {
            vigil_core::OnUpstreamRestart::Wait => "",
            vigil_core::OnUpstreamRestart::Restart => " · restarted when one is back",
        };
        out.push_str(&row("needs", format!("{}{then}", deps.join(", "))));
    }
    for f in &a.files {
        out.push_str(&row(
            "file",
            format!(
                "{} ({}, {} required, repair {})",
                f.path.display(),
                f.format.as_str(),
                f.required.len(),
                f.repair.as_str()
            ),
        ));
    }
    if let Some(adopt) = &a.adopt {
        out.push_str(&row(
            "adopt",
            format!("{} (taken over when it already runs)", adopt.describe()),
        ));
    }
    if let Some(e) = &a.evidence {
        out.push_str(&row(
            "evidence",
            format!(
                "{} (on a stall, before the stop; cut after {})",
                shell_words(&e.command),
                human_duration(e.timeout)
            ),
        ));
    }
    let now_ms = crate::clock::now().wall_ms;
    for w in &a.quiet.windows {
        let next = if w.contains(now_ms) {
            "quiet now".to_string()
        } else {
            let start = std::time::UNIX_EPOCH
                + std::time::Duration::from_millis(w.next_start(now_ms) as u64);
            format!("next from {}", humantime::format_rfc3339_seconds(start))
        };
        out.push_str(&row(
            "quiet",
            format!("{w} ({next}); stall verdicts suspended"),
        ));
    }
    // A container's log is the engine's (`docker logs`), a unit's is the journal's: vigil
    // reads them as evidence.
    if a.target.is_external() {
        return out;
    }
    out.push_str(&row(
        "log",
        format!(
            "{} (rotated at {}, {} kept)",
            logs::log_path(&config.logs_dir(), &a.name).display(),
            size(a.log_max_size),
            a.log_keep
        ),
    ));
    out
}

/// One line per check: `sql decisions every 30s: postgres://u:***@db/x … max_age 10m, 2 failures, grace 1m`.
pub fn describe_check(c: &CheckConfig) -> String {
    let s = &c.spec;
    let what = match &c.probe {
        Probe::Heartbeat { path, epoch } => format!(
            "{} ({})",
            path.display(),
            if *epoch { "epoch inside" } else { "mtime" }
        ),
        Probe::Notify => format!(
            "NOTIFY_SOCKET{}",
            if s.ready {
                ", READY=1 gates the start"
            } else {
                ""
            }
        ),
        Probe::Api => "POST /agents/NAME/heartbeat".into(),
        Probe::ContainerHealth => "the container's HEALTHCHECK, from the engine's events".into(),
        Probe::Http { url, expect, body } => {
            let mut t = format!("GET {url} expecting {}", expect.describe());
            if let Some(b) = body {
                t.push_str(&format!(" and /{}/", b.0.as_str()));
            }
            t
        }
        Probe::Exec { command } => shell_words(command),
        Probe::File { path, min_size } => match min_size {
            Some(m) => format!("{} (at least {m} bytes)", path.display()),
            None => path.display().to_string(),
        },
        Probe::Sql { url, query, params } => {
            let mut t = format!("{} `{query}`", crate::redact::url(url));
            if !params.is_empty() {
                t.push_str(&format!(" with {params:?}"));
            }
            t
        }
        Probe::Redis { url, key, exists } => format!(
            "{} key {key}{}",
            crate::redact::url(url),
            if *exists { " (exists)" } else { " (epoch)" }
        ),
    };
    let mut when = if s.kind.is_push() {
        String::new()
    } else {
        format!(
            " every {}, timeout {}",
            human_duration(s.interval),
            human_duration(s.timeout)
        )
    };
    if let Some(age) = s.max_age {
        when.push_str(&format!(", max_age {}", human_duration(age)));
    }
    when.push_str(&format!(
        ", stalled after {} failure{}",
        s.failure_threshold,
        if s.failure_threshold == 1 { "" } else { "s" }
    ));
    if !s.grace.is_zero() {
        when.push_str(&format!(", grace {}", human_duration(s.grace)));
    }
    format!("{}: {what}{when}", s.label())
}

pub fn render_json(config: &Config) -> serde_json::Value {
    let agents: Vec<_> = config
        .agents
        .iter()
        .map(|a| {
            let p = &a.policy;
            json!({
                "name": a.name,
                "template": a.template,
                "instance": a.instance,
                "command": a.command,
                "cwd": a.cwd,
                "env": a.shown_env().into_iter().collect::<std::collections::BTreeMap<_, _>>(),
                "user": a.run_as.as_ref().map(|u| json!({"name": u.user, "uid": u.uid, "gid": u.gid})),
                "autostart": a.autostart,
                "restart": a.restart.as_str(),
                "stop_signal": a.stop_signal.to_string(),
                "stop_timeout_s": a.stop_timeout.as_secs_f64(),
                "log": logs::log_path(&config.logs_dir(), &a.name),
                "log_max_size": a.log_max_size,
                "log_keep": a.log_keep,
                "policy": {
                    "cooldown_s": p.cooldown.as_secs_f64(),
                    "max_restarts": p.max_restarts,
                    "window_s": p.window.as_secs_f64(),
                    "backoff_initial_s": p.backoff_initial.as_secs_f64(),
                    "backoff_max_s": p.backoff_max.as_secs_f64(),
                    "stable_after_s": p.stable_after.as_secs_f64(),
                    "on_exhausted": match p.on_exhausted {
                        vigil_core::OnExhausted::Quarantine => json!("quarantine"),
                        vigil_core::OnExhausted::RetryAfter(d) => json!({"retry_after_s": d.as_secs_f64()}),
                    },
                    "failure_threshold": p.failure_threshold,
                    "throttle_delay_s": p.throttle_delay.as_secs_f64(),
                    "llm_before_restart": p.llm_before_restart,
                },
                "depends_on": a.depends_on.iter().map(|d| json!({
                    "agent": d.agent,
                    "ready": d.ready.as_str(),
                    "implied": d.implied,
                })).collect::<Vec<_>>(),
                "on_upstream_restart": a.on_upstream_restart.as_str(),
                "files": a.files.iter().map(|f| json!({
                    "path": f.path,
                    "format": f.format.as_str(),
                    "required": f.required,
                    "repair": f.repair.as_str(),
                    "keep": f.keep,
                })).collect::<Vec<_>>(),
                "adopt": a.adopt.as_ref().map(|a| a.describe()),
                "evidence": a.evidence.as_ref().map(|e| json!({
                    "command": e.command,
                    "timeout_s": e.timeout.as_secs_f64(),
                })),
                "checks": a.checks.iter().map(|c| json!({
                    "name": c.spec.name,
                    "kind": c.spec.kind.as_str(),
                    "interval_s": c.spec.interval.as_secs_f64(),
                    "timeout_s": c.spec.timeout.as_secs_f64(),
                    "failure_threshold": c.spec.failure_threshold,
                    "grace_s": c.spec.grace.as_secs_f64(),
                    "max_age_s": c.spec.max_age.map(|d| d.as_secs_f64()),
                    "summary": describe_check(c),
                })).collect::<Vec<_>>(),
                "quiet": a.quiet.windows.iter().map(|w| w.text().to_string()).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "config": config.path,
        "state_dir": config.state_dir,
        "agents": agents,
        "notify": config.notify.iter().map(|c| json!({
            "name": c.name,
            "kind": c.kind.as_str(),
            "events": c.events.iter().map(|e| e.as_str()).collect::<Vec<_>>(),
            "agents": c.agents,
            "dedupe_s": c.dedupe.as_secs_f64(),
            "max_per_minute": c.max_per_minute,
        })).collect::<Vec<_>>(),
        "store": { "place": store_place(config), "keep": config.store.keep },
        "cluster": config.cluster.as_ref().map(|c| json!({
            "node": c.node,
            "place": crate::redact::url(&c.url),
            "lease_ttl_s": c.lease_ttl.as_secs_f64(),
            "renew_every_s": c.renew_every().as_secs_f64(),
        })),
        "incidents": {
            "enabled": config.incidents.enabled,
            "min_agents": config.incidents.min_agents,
            "window_s": config.incidents.window.as_secs_f64(),
            "probe_every_s": config.incidents.probe_every.as_secs_f64(),
            "probe_for_s": config.incidents.probe_for.as_secs_f64(),
            "spread_s": config.incidents.spread.as_secs_f64(),
        },
        "alertmanager": config.alertmanager.as_ref().map(|a| json!({
            "max_concurrent_runbooks": a.policy.max_concurrent,
            "self_labels": a.policy.self_labels.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
        })),
        "runbooks": config.runbooks.iter().map(|rb| json!({
            "name": rb.name,
            "match": matchers(rb),
            "agent": rb.agent,
            "steps": rb.steps.iter().map(|s| s.label()).collect::<Vec<_>>(),
            "timeout_s": rb.timeout.as_secs_f64(),
        })).collect::<Vec<_>>(),
    })
}

/// Where checkpoints are kept, fit to show (a URL's password hidden).
fn store_place(config: &Config) -> String {
    match &config.store.url {
        Some(url) => format!("PostgreSQL {}", crate::redact::url(url)),
        None => format!(
            "SQLite {}",
            config.state_dir.join("checkpoints.db").display()
        ),
    }
}
