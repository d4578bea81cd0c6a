//! Which agent feeds which: dependencies as the core sees them, and the checks on a graph a
//! configuration must pass (no cycle).
//!
//! An edge `trader → feed` says the trader needs the feed: it starts only once the feed is
//! up (`running`) or proven (`healthy`), and while the feed is not, the trader's failures are
//! the feed's — the trader waits instead of being restarted.

use std::collections::HashMap;

/// How far along an upstream must be for what depends on it to go on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Ready {
    /// Its process is up (and said `READY=1` when its readiness is gated).
    Running,
    /// Up, and every one of its checks has passed in this run, none failing now.
    #[default]
    Healthy,
}

impl Ready {
    pub fn as_str(self) -> &'static str {
        match self {
            Ready::Running => "running",
            Ready::Healthy => "healthy",
        }
    }

    pub fn from_name(s: &str) -> Option<Ready> {
        match s {
            "running" => Some(Ready::Running),
            "healthy" => Some(Ready::Healthy),
            _ => None,
        }
    }
}

/// One upstream of an agent.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Dependency {
    /// The upstream agent's full name (`feed`, `feed@BTC_USDT`).
    pub agent: String,
    pub ready: Ready,
    /// Implied by a check's `produced_by` rather than written in `depends_on`.
    pub implied: bool,
}

/// What a running downstream does once its upstream is back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum OnUpstreamRestart {
    /// Keep running: its checks get their grace period, then the usual rules apply.
    #[default]
    Wait,
    /// Restart it at once (it holds a connection or a state the upstream's restart broke).
    Restart,
}

impl OnUpstreamRestart {
    pub fn as_str(self) -> &'static str {
        match self {
            OnUpstreamRestart::Wait => "wait",
            OnUpstreamRestart::Restart => "restart",
        }
    }
}

/// How far along an agent is, as its dependents see it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Level {
    pub running: bool,
    pub healthy: bool,
}

impl Level {
    pub fn satisfies(self, ready: Ready) -> bool {
        match ready {
            Ready::Running => self.running,
            Ready::Healthy => self.healthy,
        }
    }
}

/// The first cycle among `edges` (agent → the agents it depends on), as the names along it
/// with the first repeated at the end (`a → b → a`); `None` when there is none. Edges naming
/// an agent not in the map end there. Deterministic: agents are visited in name order.
pub fn find_cycle<'a>(edges: &HashMap<&'a str, Vec<&'a str>>) -> Option<Vec<&'a str>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    let mut marks: HashMap<&str, Mark> = HashMap::new();
    let mut names: Vec<&str> = edges.keys().copied().collect();
    names.sort_unstable();
    for root in names {
        if marks.contains_key(root) {
            continue;
        }
        // Iterative depth-first search: a deep chain of thousands must not blow the stack.
        let mut path: Vec<(&str, usize)> = vec![(root, 0)];
        marks.insert(root, Mark::Open);
        while let Some((node, next)) = path.last_mut() {
            let ups = edges.get(*node).map(Vec::as_slice).unwrap_or(&[]);
            if let Some(&up) = ups.get(*next) {
                *next += 1;
                match marks.get(up) {
                    Some(Mark::Open) => {
                        let start = path.iter().position(|(n, _)| *n == up).unwrap_or(0);
                        let mut cycle: Vec<&str> = path[start..].iter().map(|(n, _)| *n).collect();
                        cycle.push(up);
                        return Some(cycle);
                    }
                    Some(Mark::Done) => {}
                    None => {
                        marks.insert(up, Mark::Open);
                        path.push((up, 0));
                    }
                }
            } else {
                marks.insert(*node, Mark::Done);
                path.pop();
            }
        }
    }
    None
}

/// Depth of each agent in the graph: 0 for an agent that depends on nothing, else one more
/// than its deepest upstream. Upstreams not in the map count as depth 0; agents on a cycle
/// (which a valid configuration has not) are left out.
pub fn depths<'a>(edges: &HashMap<&'a str, Vec<&'a str>>) -> HashMap<&'a str, usize> {
    // Kahn's order: an agent is placed once every upstream it has in the map is placed.
    let mut waiting: HashMap<&str, usize> = HashMap::new();
    let mut downs: HashMap<&str, Vec<&str>> = HashMap::new();
    for (name, ups) in edges {
        let known = ups.iter().filter(|u| edges.contains_key(*u)).count();
        waiting.insert(name, known);
        for up in ups.iter().filter(|u| edges.contains_key(*u)) {
            downs.entry(up).or_default().push(name);
        }
    }
    let mut ready: Vec<&str> = waiting
        .iter()
        .filter(|(_, n)| **n == 0)
        .map(|(name, _)| *name)
        .collect();
    let mut depth: HashMap<&str, usize> = HashMap::new();
    while let Some(name) = ready.pop() {
        let d = edges[name]
            .iter()
            .map(|u| depth.get(u).map_or(1, |d| d + 1))
            .max()
            .unwrap_or(0);
        depth.insert(name, d);
        for down in downs.get(name).map(Vec::as_slice).unwrap_or(&[]) {
            if let Some(n) = waiting.get_mut(down) {
                *n -= 1;
                if *n == 0 {
                    ready.push(down);
                }
            }
        }
    }
    depth
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph<'a>(pairs: &[(&'a str, &[&'a str])]) -> HashMap<&'a str, Vec<&'a str>> {
        pairs.iter().map(|(a, ups)| (*a, ups.to_vec())).collect()
    }

    #[test]
    fn a_cycle_is_named_along_its_edges() {
        let g = graph(&[("a", &["b"]), ("b", &["c"]), ("c", &["a"]), ("d", &["a"])]);
        assert_eq!(find_cycle(&g), Some(vec!["a", "b", "c", "a"]));
    }

    #[test]
    fn a_self_dependency_is_a_cycle() {
        let g = graph(&[("a", &["a"])]);
        assert_eq!(find_cycle(&g), Some(vec!["a", "a"]));
    }

    #[test]
    fn a_diamond_is_not_a_cycle() {
        let g = graph(&[
            ("feed", &[]),
            ("p1", &["feed"]),
            ("p2", &["feed"]),
            ("ens", &["p1", "p2"]),
        ]);
        assert_eq!(find_cycle(&g), None);
        let d = depths(&g);
        assert_eq!((d["feed"], d["p1"], d["ens"]), (0, 1, 2));
    }

    #[test]
    fn a_long_chain_does_not_overflow() {
        let names: Vec<String> = (0..20_000).map(|i| format!("a{i}")).collect();
        let g: HashMap<&str, Vec<&str>> = names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let ups = if i > 0 {
                    vec![names[i - 1].as_str()]
                } else {
                    vec![]
                };
                (n.as_str(), ups)
            })
            .collect();
        assert_eq!(find_cycle(&g), None);
        assert_eq!(depths(&g)["a19999"], 19_999);
    }
}
