//! `[cluster]`, and each agent's `placement` and `nodes`: several hosts, each with its own
//! vigil, sharing one PostgreSQL for the fleet view and for exclusive agents' leases.

use std::time::Duration;

use super::diagnostic::ConfigError;
use super::reader::{At, Cx, Tbl};

const CLUSTER_KEYS: &[&str] = &["url", "url_file", "node", "lease_ttl"];

/// The shortest lease: renewals every third of it must fit a database round trip with room.
const MIN_LEASE_TTL: Duration = Duration::from_secs(2);
const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(10);

/// `[cluster]`.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterConfig {
    /// `postgres://…` (from `url_file`, usually: it holds a password).
    pub url: String,
    /// This node's name (`[cluster] node`, else `[vigil] node`, else the hostname).
    pub node: String,
    pub lease_ttl: Duration,
}

impl ClusterConfig {
    /// How often a holder renews its leases (and a node says it is alive).
    pub fn renew_every(&self) -> Duration {
        self.lease_ttl / 3
    }

    /// Kept free between the end of a self-fencing stop (SIGKILL included) and the lease's
    /// expiry: for the kernel to reap what was killed, and for clocks that drift.
    pub fn margin(&self) -> Duration {
        (self.lease_ttl / 10).min(Duration::from_secs(1))
    }

    /// The longest `stop_timeout` an exclusive agent may have: half the lease, less the
    /// margin. The stop then begins no sooner than half a renewal period after the next
    /// renewal is due — room for that renewal's round trip and for retries of a failed one —
    /// and ends a margin before the lease does.
    pub fn max_stop_timeout(&self) -> Duration {
        (self.lease_ttl / 2).saturating_sub(self.margin())
    }
}

/// Where an agent runs.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum Placement {
    /// On every node whose config has it (each vigil supervises its own copy).
    #[default]
    Local,
    /// On exactly one node of the cluster at a time: the one holding its lease. `nodes`: the
    /// candidates in order of preference (empty: any node whose config has it).
    Exclusive {
        nodes: Vec<String>,
        /// What the core needs to keep to the lease (from `[cluster]`).
        keep: vigil_core::Exclusive,
    },
}

impl Placement {
    pub fn is_exclusive(&self) -> bool {
        matches!(self, Placement::Exclusive { .. })
    }

    /// This node may run it (for an exclusive agent: it is among its candidates).
    pub fn admits(&self, node: &str) -> bool {
        match self {
            Placement::Local => true,
            Placement::Exclusive { nodes, .. } => {
                nodes.is_empty() || nodes.iter().any(|n| n == node)
            }
        }
    }
}

pub fn read_cluster(
    cx: &mut Cx,
    t: &Tbl<'_, '_>,
    base_dir: &std::path::Path,
    vigil_node: (&str, bool),
) -> Option<ClusterConfig> {
    cx.check_keys(t, CLUSTER_KEYS);
    let url = super::store::postgres_url(
        cx,
        t,
        "cluster",
        base_dir,
        "the cluster keeps its nodes, leases and fleet view there",
    );
    if url.is_none() && t.get("url").is_none() && t.get("url_file").is_none() {
        cx.error(
            ConfigError::new(t.span.start..t.span.start, "[cluster] has no `url_file`")
                .hint("url_file = \"/etc/vigil/cluster-url\", a file holding postgres://USER:PASSWORD@HOST/DB"),
        );
    }
    let mut node = vigil_node.0.to_string();
    if let Some(name) = cx.string(t, "node") {
        match super::values::node_name(&name.value) {
            Err(why) => cx.err(name.span, format!("[cluster] node: {why}")),
            Ok(()) if vigil_node.1 && name.value != vigil_node.0 => cx.err(
                name.span,
                format!(
                    "[cluster] node \"{}\" differs from [vigil] node \"{}\": a node has one name",
                    name.value, vigil_node.0
                ),
            ),
            Ok(()) => node = name.value,
        }
    }
    let mut lease_ttl = DEFAULT_LEASE_TTL;
    if let Some(d) = cx.duration(t, "lease_ttl") {
        if d < MIN_LEASE_TTL {
            let span = t
                .get("lease_ttl")
                .map(|v| v.span())
                .unwrap_or(t.span.clone());
            cx.error(
                ConfigError::new(span, "[cluster] lease_ttl must be at least 2s").hint(
                    "the default, 10s, fails an agent over within about 10 s of its node's death",
                ),
            );
        } else {
            lease_ttl = d;
        }
    }
    Some(ClusterConfig {
        url: url?,
        node,
        lease_ttl,
    })
}

/// An agent's `placement` and `nodes`. `stop_timeout` is made to fit the lease when it was not
/// set by hand (`explicit`), and refused when it was and does not fit.
pub fn read_placement(
    cx: &mut Cx,
    t: &Tbl<'_, '_>,
    cluster: Option<&ClusterConfig>,
    stop_timeout: (&mut Duration, bool),
    process: bool,
) -> Placement {
    let placement = cx.string(t, "placement");
    let nodes = cx.string_list(t, "nodes");
    let exclusive = match placement.as_ref().map(|p| p.value.as_str()) {
        None | Some("local") => false,
        Some("exclusive") => true,
        Some(other) => {
            let span = placement
                .as_ref()
                .map(|p| p.span.clone())
                .unwrap_or_default();
            cx.error(
                ConfigError::new(span, format!("placement \"{other}\" is not known"))
                    .hint("placement = \"local\" (every node runs its own, the default) or \"exclusive\" (one node at a time)"),
            );
            return Placement::Local;
        }
    };
    if !exclusive {
        if let Some(nodes) = nodes {
            cx.err(
                nodes.span,
                format!(
                    "`nodes` in [{}] names candidates for placement = \"exclusive\", which it does not have",
                    t.name
                ),
            );
        }
        return Placement::Local;
    }
    let span = placement.map(|p| p.span).unwrap_or_default();
    let Some(cluster) = cluster else {
        cx.error(
            ConfigError::new(span, "placement = \"exclusive\" needs a [cluster]")
                .hint("[cluster] url_file = \"…\": the nodes agree through PostgreSQL on which one runs it"),
        );
        return Placement::Local;
    };
    if !process {
        cx.err(
            span.clone(),
            "placement = \"exclusive\" is for agents vigil runs as processes (not containers or units, yet)",
        );
    }
    if t.get("adopt").is_some() {
        cx.err(
            span,
            "placement = \"exclusive\" and `adopt` do not go together: a process started outside vigil cannot be fenced",
        );
    }
    let (timeout, explicit) = stop_timeout;
    let max = cluster.max_stop_timeout();
    if *timeout > max {
        if explicit {
            let at = t
                .get("stop_timeout")
                .map(|v| v.span())
                .unwrap_or(t.span.clone());
            cx.error(
                ConfigError::new(
                    at,
                    format!(
                        "stop_timeout {} of an exclusive agent does not fit its lease: at most {} with lease_ttl {}",
                        vigil_core::human_duration(*timeout),
                        vigil_core::human_duration(max),
                        vigil_core::human_duration(cluster.lease_ttl)
                    ),
                )
                .hint("a node that cannot renew the lease must have stopped the agent before another node may start it: lower stop_timeout or raise [cluster] lease_ttl"),
            );
        } else {
            *timeout = max;
        }
    }
    let mut list = Vec::new();
    if let Some(nodes) = nodes {
        if nodes.value.is_empty() {
            cx.err(
                nodes.span.clone(),
                "`nodes` is empty: leave it out to let any node run it",
            );
        }
        for n in nodes.value {
            check_node(cx, &n, &list);
            list.push(n.value);
        }
    }
    Placement::Exclusive {
        nodes: list,
        keep: vigil_core::Exclusive {
            margin: cluster.margin(),
            // A run found alive as vigil starts waits at most one renewal period for the
            // cluster to confirm its lease.
            confirm_within: cluster.renew_every(),
        },
    }
}

fn check_node(cx: &mut Cx, n: &At<String>, seen: &[String]) {
    if let Err(why) = super::values::node_name(&n.value) {
        cx.err(n.span.clone(), format!("node {why}"));
    } else if seen.contains(&n.value) {
        cx.err(
            n.span.clone(),
            format!("node \"{}\" is listed twice", n.value),
        );
    }
}
