//! `vigil graph`: which agent feeds which, from the config — as a tree in the terminal, as
//! Graphviz DOT (`--dot`) or as Mermaid (`--mermaid`). With a vigil running, each agent's
//! state is shown and the edges that block now (the downstream waits for that upstream) are
//! marked.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::Value;

use super::control::{endpoint, fleet_status};
use crate::cli::ApiArgs;
use crate::config::{self, Config};

/// How the graph is printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Tree,
    Dot,
    Mermaid,
}

/// What a running vigil says of each agent: (state, the upstream it waits for).
type Live = HashMap<String, (String, Option<String>)>;

pub fn graph(args: &ApiArgs, format: Format) -> i32 {
    let config = match config::load(&args.cfg.config, args.cfg.state_dir.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return super::EXIT_USAGE;
        }
    };
    let live = live(args);
    let out = match format {
        Format::Tree => tree(&config, live.as_ref()),
        Format::Dot => dot(&config, live.as_ref()),
        Format::Mermaid => mermaid(&config, live.as_ref()),
    };
    print!("{out}");
    super::EXIT_OK
}

/// The running vigil's view, when one answers.
fn live(args: &ApiArgs) -> Option<Live> {
    let agents = fleet_status(&endpoint(args).ok()?)?;
    Some(
        agents
            .into_iter()
            .filter_map(|(name, a)| {
                let state = a.get("state")?.as_str()?.to_string();
                let waiting = a
                    .pointer("/waiting_on/agent")
                    .and_then(Value::as_str)
                    .map(str::to_string);
                Some((name, (state, waiting)))
            })
            .collect(),
    )
}

/// upstream → its dependents (with the `ready` each needs), in config order.
fn dependents(config: &Config) -> BTreeMap<&str, Vec<(&str, &'static str)>> {
    let mut downs: BTreeMap<&str, Vec<(&str, &'static str)>> = BTreeMap::new();
    for a in &config.agents {
        for d in &a.depends_on {
            downs
                .entry(d.agent.as_str())
                .or_default()
                .push((a.name.as_str(), d.ready.as_str()));
        }
    }
    downs
}

fn blocking(live: Option<&Live>, down: &str, up: &str) -> bool {
    live.and_then(|l| l.get(down))
        .and_then(|(_, w)| w.as_deref())
        == Some(up)
}

fn state_of(live: Option<&Live>, name: &str) -> String {
    match live.and_then(|l| l.get(name)) {
        Some((_, Some(up))) => format!("  [waiting for {up}]"),
        Some((state, None)) => format!("  [{state}]"),
        None => String::new(),
    }
}

/// Upstreams at the top, what they feed below. An agent fed by several appears under each;
/// its own dependents are shown the first time only.
pub fn tree(config: &Config, live: Option<&Live>) -> String {
    let downs = dependents(config);
    let has_ups: HashSet<&str> = config
        .agents
        .iter()
        .filter(|a| !a.depends_on.is_empty())
        .map(|a| a.name.as_str())
        .collect();
    let mut out = String::new();
    let mut shown: HashSet<&str> = HashSet::new();
    let mut alone = Vec::new();
    for a in &config.agents {
        let name = a.name.as_str();
        if has_ups.contains(name) {
            continue;
        }
        if !downs.contains_key(name) {
            alone.push(name);
            continue;
        }
        out.push_str(&format!("{name}{}\n", state_of(live, name)));
        shown.insert(name);
        branch(name, "", &downs, live, &mut shown, &mut out);
    }
    if !alone.is_empty() {
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str("depending on nothing, feeding nothing:\n");
        for name in alone {
            out.push_str(&format!("  {name}{}\n", state_of(live, name)));
        }
    }
    if out.is_empty() {
        out.push_str("no agents\n");
    }
    out
}

fn branch<'a>(
    up: &'a str,
    indent: &str,
    downs: &BTreeMap<&'a str, Vec<(&'a str, &'static str)>>,
    live: Option<&Live>,
    shown: &mut HashSet<&'a str>,
    out: &mut String,
) {
    let Some(children) = downs.get(up) else {
        return;
    };
    for (i, (down, ready)) in children.iter().enumerate() {
        let last = i + 1 == children.len();
        let (fork, next) = if last {
            ("└─ ", "   ")
        } else {
            ("├─ ", "│  ")
        };
        let blocked = if blocking(live, down, up) {
            "  ◀ BLOCKING"
        } else {
            ""
        };
        let again = shown.contains(down) && downs.contains_key(down);
        out.push_str(&format!(
            "{indent}{fork}{down} (needs it {ready}){}{blocked}{}\n",
            state_of(live, down),
            if again { "  (see above)" } else { "" }
        ));
        if !again {
            shown.insert(down);
            branch(down, &format!("{indent}{next}"), downs, live, shown, out);
        }
    }
}

fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Graphviz: arrows go the way data flows, from the upstream to what it feeds.
pub fn dot(config: &Config, live: Option<&Live>) -> String {
    let mut out = String::from("digraph vigil {\n  rankdir=LR;\n  node [shape=box];\n");
    for a in &config.agents {
        let label = match live.and_then(|l| l.get(&a.name)) {
            Some((state, _)) => format!("{}\\n{state}", a.name),
            None => a.name.clone(),
        };
        out.push_str(&format!(
            "  {} [label={}];\n",
            quoted(&a.name),
            quoted(&label)
        ));
    }
    for a in &config.agents {
        for d in &a.depends_on {
            let style = if blocking(live, &a.name, &d.agent) {
                ", color=red, penwidth=2, style=bold"
            } else if d.implied {
                ", style=dashed"
            } else {
                ""
            };
            out.push_str(&format!(
                "  {} -> {} [label={}{style}];\n",
                quoted(&d.agent),
                quoted(&a.name),
                quoted(d.ready.as_str())
            ));
        }
    }
    out.push_str("}\n");
    out
}

/// Mermaid (a flowchart GitHub and many wikis draw); node ids are positions, labels names.
pub fn mermaid(config: &Config, live: Option<&Live>) -> String {
    let id: HashMap<&str, String> = config
        .agents
        .iter()
        .enumerate()
        .map(|(i, a)| (a.name.as_str(), format!("a{i}")))
        .collect();
    let label = |s: &str| s.replace('"', "#quot;");
    let mut out = String::from("flowchart LR\n");
    for a in &config.agents {
        let text = match live.and_then(|l| l.get(&a.name)) {
            Some((state, _)) => format!("{}<br/>{state}", label(&a.name)),
            None => label(&a.name),
        };
        out.push_str(&format!("  {}[\"{text}\"]\n", id[a.name.as_str()]));
    }
    let mut blocking_edges = Vec::new();
    let mut n = 0;
    for a in &config.agents {
        for d in &a.depends_on {
            let Some(from) = id.get(d.agent.as_str()) else {
                continue;
            };
            let arrow = if d.implied { "-.->" } else { "-->" };
            out.push_str(&format!(
                "  {from} {arrow}|{}| {}\n",
                d.ready.as_str(),
                id[a.name.as_str()]
            ));
            if blocking(live, &a.name, &d.agent) {
                blocking_edges.push(n);
            }
            n += 1;
        }
    }
    for e in blocking_edges {
        out.push_str(&format!("  linkStyle {e} stroke:red,stroke-width:3px\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const CONFIG: &str = r#"
[agents.feed]
command = ["true"]

[agents.predictor]
command = ["true"]
depends_on = ["feed"]

[agents.trader]
command = ["true"]
instances = ["BTC", "ETH"]
depends_on = [{ agent = "predictor", ready = "running" }]

[agents.lonely]
command = ["true"]
"#;

    fn config() -> Config {
        crate::config::parse(Path::new("/tmp/vigil.toml"), CONFIG, None).unwrap()
    }

    #[test]
    fn the_tree_puts_upstreams_first_and_marks_what_blocks() {
        let live: Live = [
            ("feed".to_string(), ("backoff".to_string(), None)),
            (
                "predictor".to_string(),
                ("waiting".to_string(), Some("feed".to_string())),
            ),
        ]
        .into_iter()
        .collect();
        let text = tree(&config(), Some(&live));
        let expected = "\
feed  [backoff]
└─ predictor (needs it healthy)  [waiting for feed]  ◀ BLOCKING
   ├─ trader@BTC (needs it running)
   └─ trader@ETH (needs it running)

depending on nothing, feeding nothing:
  lonely
";
        assert_eq!(text, expected);
    }

    #[test]
    fn dot_and_mermaid_draw_every_edge_the_way_data_flows() {
        let c = config();
        let d = dot(&c, None);
        assert!(
            d.contains("\"feed\" -> \"predictor\" [label=\"healthy\"];"),
            "{d}"
        );
        assert!(
            d.contains("\"predictor\" -> \"trader@ETH\" [label=\"running\"];"),
            "{d}"
        );
        let m = mermaid(&c, None);
        assert!(m.contains("a0 -->|healthy| a1"), "{m}");
        assert!(m.contains("a2[\"trader@BTC\"]"), "{m}");
    }
}
