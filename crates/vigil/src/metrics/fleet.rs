//! The fleet's metrics, from the loop's latest picture of it: one sample per agent (and per
//! state, restart reason, check) in each family — 18 per agent, 180,000 for 10,000 agents —
//! written by [`exposition`](super::exposition), each agent's label set escaped once.

use vigil_core::AgentState;

use super::exposition::{Kind, family, label_set};
use crate::view::{AgentView, FleetView};

/// Every restart reason, each exported from 0 so that `increase()` counts the first restart.
const RESTART_REASONS: [&str; 5] = ["exit", "stall", "spawn_failed", "retry", "requested"];

/// The labels naming an agent: `agent`, and for an instance of a template `template` and
/// `agent_instance` (not `instance`: that label is the scrape target's, and Prometheus would
/// rename ours).
fn agent_labels(a: &AgentView) -> String {
    match (&a.template, &a.instance) {
        (Some(t), Some(i)) => {
            label_set(&[("agent", &a.name), ("template", t), ("agent_instance", i)])
        }
        _ => label_set(&[("agent", &a.name)]),
    }
}

/// Every family of the fleet, in OpenMetrics text (without `# EOF`), as of `now_ms`.
pub fn write(out: &mut String, view: &FleetView, node: &str, now_ms: i64) {
    let agents = &view.agents;
    let labels: Vec<String> = agents.iter().map(|a| agent_labels(a)).collect();
    let each = || agents.iter().zip(labels.iter().map(String::as_str));

    family(
        out,
        "vigil_build_info",
        "Version of the running vigil and the node it runs on (always 1); join on it to name the host in alerts",
        None,
        Kind::Gauge,
    )
    .sample("", &[("version", env!("CARGO_PKG_VERSION")), ("node", node)], 1u32);
    family(
        out,
        "vigil_agents",
        "Agents in the configuration",
        None,
        Kind::Gauge,
    )
    .sample("", &[], agents.len() as u64);

    let mut f = family(
        out,
        "vigil_agent_info",
        "What runs the agent (always 1): driver is process or docker; target names the container (none for a process); join on agent",
        None,
        Kind::Gauge,
    );
    for (a, l) in each() {
        match a.target.as_deref() {
            Some(target) => f.sample(l, &[("driver", a.driver), ("target", target)], 1u32),
            None => f.sample(l, &[("driver", a.driver)], 1u32),
        }
    }

    let mut f = family(
        out,
        "vigil_agent_up",
        "1 when the agent's process is running (started and not stopping), else 0",
        None,
        Kind::Gauge,
    );
    for (a, l) in each() {
        f.sample(l, &[], u32::from(a.is_up()));
    }

    let mut f = family(
        out,
        "vigil_agent_state",
        "1 for the agent's current state (starting, running, backoff, stopping, stopped, quarantined, conflict, waiting), 0 for the others",
        None,
        Kind::Gauge,
    );
    for (a, l) in each() {
        for s in AgentState::ALL {
            f.sample(l, &[("state", s.as_str())], u32::from(a.state == s));
        }
    }

    let mut f = family(
        out,
        "vigil_agent_restarts",
        "Restarts of the agent, by reason (exit, stall, spawn_failed, retry, requested)",
        None,
        Kind::Counter,
    );
    for (a, l) in each() {
        for reason in RESTART_REASONS {
            let n = a.restarts_by_cause.get(reason).copied().unwrap_or(0);
            f.sample(l, &[("reason", reason)], n);
        }
        for (reason, n) in &a.restarts_by_cause {
            if !RESTART_REASONS.contains(&reason.as_str()) {
                f.sample(l, &[("reason", reason)], *n);
            }
        }
    }

    let mut f = family(
        out,
        "vigil_agent_stalled",
        "1 from vigil's first stall verdict until the agent has proven healthy again (or a person stopped or reset it); stays 1 across the restarts that try to heal it and across restarts of vigil",
        None,
        Kind::Gauge,
    );
    for (a, l) in each() {
        f.sample(l, &[], u32::from(a.stalled_since_ms.is_some()));
    }

    let mut f = family(
        out,
        "vigil_agent_stalled_since",
        "When the open stall episode began, seconds since the Unix epoch (only while stalled)",
        Some("seconds"),
        Kind::Gauge,
    );
    for (a, l) in each() {
        if let Some(ms) = a.stalled_since_ms {
            f.sample(l, &[], ms as f64 / 1000.0);
        }
    }

    let mut f = family(
        out,
        "vigil_agent_degraded",
        "1 while the agent's run declares itself degraded (POST /agents/NAME/status, DEGRADED=), else 0",
        None,
        Kind::Gauge,
    );
    for (a, l) in each() {
        f.sample(l, &[], u32::from(a.degraded.is_some()));
    }

    let mut f = family(
        out,
        "vigil_agent_degraded_suspended",
        "1 while the agent's stall verdicts are suspended by its declared degradation (until its declared time, at most max_degraded), else 0",
        None,
        Kind::Gauge,
    );
    for (a, l) in each() {
        let suspended = a
            .degraded
            .as_ref()
            .and_then(|d| d.2)
            .is_some_and(|until| until > now_ms);
        f.sample(l, &[], u32::from(suspended));
    }

    let mut f = family(
        out,
        "vigil_lease_held",
        "1 while this node holds the exclusive agent's lease (it may run here), else 0 (placement = \"exclusive\" only)",
        None,
        Kind::Gauge,
    );
    for (a, l) in each() {
        if let Some(x) = &a.exclusive {
            f.sample(l, &[], u32::from(x.held.is_some()));
        }
    }

    let mut f = family(
        out,
        "vigil_lease_epoch",
        "The fencing epoch of the exclusive agent's lease held by this node (its runs get it as VIGIL_FENCE; it only grows)",
        None,
        Kind::Gauge,
    );
    for (a, l) in each() {
        if let Some((epoch, _)) = a.exclusive.as_ref().and_then(|x| x.held) {
            f.sample(l, &[], epoch);
        }
    }

    let mut f = family(
        out,
        "vigil_agent_quiet",
        "1 while the agent is inside one of its quiet windows (progress is not judged), else 0",
        None,
        Kind::Gauge,
    );
    for (a, l) in each() {
        f.sample(l, &[], u32::from(a.is_quiet(now_ms)));
    }

    let mut f = family(
        out,
        "vigil_agent_healthy",
        "1 when the agent is running and every check has passed in this run, else 0",
        None,
        Kind::Gauge,
    );
    for (a, l) in each() {
        f.sample(l, &[], u32::from(a.is_healthy()));
    }

    let mut f = family(
        out,
        "vigil_agent_consecutive_failures",
        "Failures (exits, stalls) in a row without a healthy run in between",
        None,
        Kind::Gauge,
    );
    for (a, l) in each() {
        f.sample(l, &[], a.crash_streak);
    }

    let mut f = family(
        out,
        "vigil_agent_restart_budget_remaining",
        "Automatic restarts still allowed in the sliding window",
        None,
        Kind::Gauge,
    );
    for (a, l) in each() {
        f.sample(l, &[], a.budget_remaining(now_ms));
    }

    let mut f = family(
        out,
        "vigil_agent_last_progress_age",
        "Age of the oldest last progress among the agent's progress checks (heartbeat, notify, api, file, sql, redis), measured from the end of its last quiet window at the earliest; only while the agent is starting or running and not quiet",
        Some("seconds"),
        Kind::Gauge,
    );
    for (a, l) in each() {
        if let Some((age, _)) = a.progress(now_ms) {
            f.sample(l, &[], (age.as_secs_f64() * 1000.0).round() / 1000.0);
        }
    }

    let mut f = family(
        out,
        "vigil_check_up",
        "1 when the check passes, 0 when it fails; no sample while it is unknown or pending, or while the agent is not starting or running",
        None,
        Kind::Gauge,
    );
    for (a, l) in each().filter(|(a, _)| a.is_live()) {
        for c in &a.checks {
            if let Some(up) = c.up() {
                f.sample(l, &[("check", &c.name), ("kind", c.kind.as_str())], up);
            }
        }
    }

    let mut f = family(
        out,
        "vigil_actions",
        "Audit records written, by action",
        None,
        Kind::Counter,
    );
    for (action, n) in view.actions.iter() {
        f.sample("", &[("action", action)], *n);
    }

    let mut f = family(
        out,
        "vigil_incidents_open",
        "Fleet incidents open now: several agents failing for one cause, their restarts held while a canary probes it",
        None,
        Kind::Gauge,
    );
    let open = view.incidents.iter().filter(|i| i.is_open()).count();
    f.sample("", &[], open as u64);

    let mut f = family(
        out,
        "vigil_runbooks_active",
        "Runbook runs at work or waiting their turn (alerts taken in: vigil_actions{action=\"alert_received\"})",
        None,
        Kind::Gauge,
    );
    let active = view
        .runbooks
        .iter()
        .filter(|r| matches!(r.state, "queued" | "running" | "waiting_healthy"))
        .count();
    f.sample("", &[], active as u64);

    let mut f = family(
        out,
        "vigil_incidents",
        "Fleet incidents opened since vigil started, by cause (rule:NAME for a diagnosis signature, target:URL for a service the agents' checks found unreachable)",
        None,
        Kind::Counter,
    );
    for (cause, n) in view.incidents_by_cause.iter() {
        f.sample("", &[("cause", cause)], *n);
    }
}
