//! `depends_on` and `produced_by`: which agent feeds which. Read per agent block, resolved once
//! every agent is known (a name may be an agent, an instance, or a whole template), and
//! checked as a whole: every upstream exists, and no cycle.

use std::collections::HashMap;
use std::ops::Range;

use toml::de::DeValue;
use vigil_core::graph::find_cycle;
use vigil_core::{Dependency, OnUpstreamRestart, Ready};

use super::diagnostic::ConfigError;
use super::model::AgentConfig;
use super::placeholders::{Placeholders, check_placeholders};
use super::reader::{At, Cx, Tbl, type_name};
use super::values::did_you_mean;

/// One `depends_on` entry before `{instance}` is substituted.
#[derive(Clone, Debug)]
pub struct DependsOn {
    pub agent: At<String>,
    pub ready: Ready,
}

/// An edge of one agent, with where it was written: resolved by [`resolve`].
#[derive(Clone, Debug)]
pub struct Edge {
    /// The agent that depends (`trader@BTC_USDT`).
    pub from: String,
    /// The upstream as written, placeholders substituted (`feed@BTC_USDT`, `feed`).
    pub to: String,
    pub ready: Ready,
    /// From a check's `produced_by`.
    pub implied: bool,
    pub span: Range<usize>,
}

const ENTRY_KEYS: &[&str] = &["agent", "ready"];
const READY: &[&str] = &["running", "healthy"];

/// `depends_on = ["feed", { agent = "risk", ready = "running" }]`.
pub fn read_depends_on(cx: &mut Cx, t: &Tbl<'_, '_>, scope: &Placeholders<'_>) -> Vec<DependsOn> {
    let Some(value) = t.get("depends_on") else {
        return Vec::new();
    };
    let DeValue::Array(items) = value.get_ref() else {
        cx.error(
            ConfigError::new(
                value.span(),
                format!(
                    "`depends_on` in [{}] must be a list, found {}",
                    t.name,
                    type_name(value.get_ref())
                ),
            )
            .hint("depends_on = [\"feed\"] or [{ agent = \"feed\", ready = \"running\" }]"),
        );
        return Vec::new();
    };
    let mut out = Vec::new();
    for (n, item) in items.iter().enumerate() {
        let entry = match item.get_ref() {
            DeValue::String(s) => Some(DependsOn {
                agent: At {
                    value: s.to_string(),
                    span: item.span(),
                },
                ready: Ready::default(),
            }),
            DeValue::Table(table) => {
                let e = Tbl {
                    name: format!("{}.depends_on[{}]", t.name, n + 1),
                    table,
                    span: item.span(),
                };
                cx.check_keys(&e, ENTRY_KEYS);
                let ready = cx
                    .choice(&e, "ready", READY)
                    .and_then(|r| Ready::from_name(&r.value))
                    .unwrap_or_default();
                match cx.string(&e, "agent") {
                    Some(agent) => Some(DependsOn { agent, ready }),
                    None => {
                        if e.get("agent").is_none() {
                            cx.error(
                                ConfigError::new(
                                    item.span(),
                                    format!("[{}] has no `agent`", e.name),
                                )
                                .hint("{ agent = \"feed\", ready = \"healthy\" }"),
                            );
                        }
                        None
                    }
                }
            }
            other => {
                cx.err(
                    item.span(),
                    format!(
                        "entry {} of `depends_on` in [{}] must be a name or a table, found {}",
                        n + 1,
                        t.name,
                        type_name(other)
                    ),
                );
                None
            }
        };
        if let Some(entry) = entry {
            check_placeholders(cx, &entry.agent, scope);
            out.push(entry);
        }
    }
    out
}

/// `on_upstream_restart = "wait" | "restart"`.
pub fn read_on_upstream_restart(cx: &mut Cx, t: &Tbl<'_, '_>) -> OnUpstreamRestart {
    match cx.choice(t, "on_upstream_restart", &["wait", "restart"]) {
        Some(c) if c.value == "restart" => OnUpstreamRestart::Restart,
        _ => OnUpstreamRestart::Wait,
    }
}

/// Resolve every edge to the agents it names and give each agent its dependencies; report
/// an upstream that does not exist and a cycle, where they are written.
pub fn resolve(cx: &mut Cx, agents: &mut [AgentConfig], edges: &[Edge]) {
    let names: Vec<&str> = agents.iter().map(|a| a.name.as_str()).collect();
    let mut templates: HashMap<&str, Vec<&str>> = HashMap::new();
    for a in agents.iter() {
        if let Some(t) = &a.template {
            templates
                .entry(t.as_str())
                .or_default()
                .push(a.name.as_str());
        }
    }
    // (from, to) → the dependency and where it was written.
    let mut resolved: Vec<(String, Dependency, Range<usize>)> = Vec::new();
    for e in edges {
        let targets: Vec<&str> = if names.contains(&e.to.as_str()) {
            vec![e.to.as_str()]
        } else if e.implied && templates.contains_key(e.to.as_str()) {
            // One output has one producer: a stale file is blamed on one agent.
            cx.error(
                ConfigError::new(
                    e.span.clone(),
                    format!(
                        "`produced_by` of `{}` names the template `{}`: name the one agent that produces it",
                        e.from, e.to
                    ),
                )
                .hint(format!("`{}@{{instance}}` for the same instance, or `{}@NAME`", e.to, e.to)),
            );
            continue;
        } else if let Some(instances) = templates.get(e.to.as_str()) {
            instances.clone()
        } else {
            let what = if e.implied {
                "`produced_by`"
            } else {
                "`depends_on`"
            };
            let mut known: Vec<&str> = names.clone();
            known.extend(templates.keys());
            let mut err = ConfigError::new(
                e.span.clone(),
                format!("{what} of `{}`: there is no agent `{}`", e.from, e.to),
            );
            err = match did_you_mean(&e.to, &known) {
                Some(s) => err.hint(format!("did you mean `{s}`?")),
                None => err.hint(
                    "name an agent of this file, an instance (`feed@BTC_USDT`, or \
                     `feed@{instance}` for the same instance), or a template (all its instances)",
                ),
            };
            cx.error(err);
            continue;
        };
        for to in targets {
            resolved.push((
                e.from.clone(),
                Dependency {
                    agent: to.to_string(),
                    ready: e.ready,
                    implied: e.implied,
                },
                e.span.clone(),
            ));
        }
    }

    let mut graph: HashMap<&str, Vec<&str>> = names.iter().map(|n| (*n, Vec::new())).collect();
    for (from, dep, _) in &resolved {
        if let Some(ups) = graph.get_mut(from.as_str()) {
            ups.push(dep.agent.as_str());
        }
    }
    if let Some(cycle) = find_cycle(&graph) {
        let span = resolved
            .iter()
            .find(|(from, dep, _)| from == cycle[0] && dep.agent == cycle[1])
            .map(|(_, _, s)| s.clone())
            .unwrap_or_default();
        cx.error(
            ConfigError::new(span, format!("dependency cycle: {}", cycle.join(" → "))).hint(
                "an agent cannot wait, however indirectly, for itself: remove one of these edges",
            ),
        );
        return;
    }

    for agent in agents.iter_mut() {
        let mut deps: Vec<Dependency> = Vec::new();
        for (_, dep, _) in resolved.iter().filter(|(from, _, _)| *from == agent.name) {
            match deps.iter_mut().find(|d| d.agent == dep.agent) {
                // Written in `depends_on` and implied by a check: what `depends_on` says holds.
                Some(d) if d.implied && !dep.implied => *d = dep.clone(),
                Some(_) => {}
                None => deps.push(dep.clone()),
            }
        }
        agent.depends_on = deps;
    }
}

#[cfg(test)]
mod tests {
    use crate::config::parse;
    use std::path::Path;

    fn errors(text: &str) -> String {
        match parse(Path::new("/tmp/vigil.toml"), text, None) {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_cycle_is_named_with_its_place() {
        let text = "[agents.a]\ncommand = [\"true\"]\ndepends_on = [\"b\"]\n\n\
                    [agents.b]\ncommand = [\"true\"]\ndepends_on = [{ agent = \"a\" }]\n";
        let e = errors(text);
        assert!(e.contains("dependency cycle: a → b → a"), "{e}");
        assert!(e.contains(":3:"), "line of the first edge: {e}");
    }

    #[test]
    fn an_unknown_upstream_is_named_with_a_suggestion() {
        let text = "[agents.feed]\ncommand = [\"true\"]\n\n\
                    [agents.trader]\ncommand = [\"true\"]\ndepends_on = [\"fed\"]\n";
        let e = errors(text);
        assert!(
            e.contains("`depends_on` of `trader`: there is no agent `fed`"),
            "{e}"
        );
        assert!(e.contains("did you mean `feed`?"), "{e}");
    }

    #[test]
    fn produced_by_names_one_agent_not_a_template() {
        let text = "[agents.feed]\ncommand = [\"true\"]\ninstances = [\"A\", \"B\"]\n\n\
                    [agents.trader]\ncommand = [\"true\"]\n\
                    [[agents.trader.checks]]\nkind = \"file\"\npath = \"s\"\nmax_age = \"1m\"\n\
                    produced_by = \"feed\"\n";
        let e = errors(text);
        assert!(
            e.contains("`produced_by` of `trader` names the template `feed`"),
            "{e}"
        );
    }

    #[test]
    fn templates_resolve_per_instance_and_whole() {
        let text = r#"
[agents.feed]
command = ["true"]
instances = ["A", "B"]

[agents.trader]
command = ["true"]
instances = ["A", "B"]
depends_on = ["feed@{instance}", { agent = "risk", ready = "running" }]
on_upstream_restart = "restart"

[[agents.trader.checks]]
kind = "file"
path = "signals/{instance}.json"
max_age = "2m"
produced_by = "feed@{instance}"

[agents.risk]
command = ["true"]

[agents.report]
command = ["true"]
depends_on = ["feed"]
"#;
        let c = parse(Path::new("/tmp/vigil.toml"), text, None).unwrap();
        let get = |n: &str| c.agents.iter().find(|a| a.name == n).unwrap();
        let trader = get("trader@B").spec();
        let deps: Vec<(&str, &str, bool)> = trader
            .depends_on
            .iter()
            .map(|d| (d.agent.as_str(), d.ready.as_str(), d.implied))
            .collect();
        assert_eq!(
            deps,
            vec![("feed@B", "healthy", false), ("risk", "running", false)]
        );
        assert_eq!(trader.checks[0].produced_by.as_deref(), Some("feed@B"));
        assert_eq!(
            trader.on_upstream_restart,
            vigil_core::OnUpstreamRestart::Restart
        );
        let report: Vec<String> = get("report")
            .depends_on
            .iter()
            .map(|d| d.agent.clone())
            .collect();
        assert_eq!(report, vec!["feed@A", "feed@B"]);
    }

    #[test]
    fn produced_by_alone_implies_a_running_dependency() {
        let text = r#"
[agents.feed]
command = ["true"]

[agents.trader]
command = ["true"]
[[agents.trader.checks]]
kind = "file"
path = "signals.json"
max_age = "2m"
produced_by = "feed"
"#;
        let c = parse(Path::new("/tmp/vigil.toml"), text, None).unwrap();
        let deps = &c.agents[1].depends_on;
        assert_eq!(deps.len(), 1);
        assert_eq!(
            (deps[0].agent.as_str(), deps[0].ready, deps[0].implied),
            ("feed", vigil_core::Ready::Running, true)
        );
    }
}
