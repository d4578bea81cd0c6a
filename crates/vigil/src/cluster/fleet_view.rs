//! The whole fleet as the cluster's database knows it: every node (up while it renews), every
//! agent as its node published it, and every lease — for `vigil fleet status` and `/fleet`.

use std::time::Duration;

use serde_json::{Value, json};
use sqlx::PgPool;

/// Reads the fleet for the API (a lazy pool of one connection: nothing is opened until the
/// dashboard asks).
pub struct FleetReader {
    pool: PgPool,
    ttl: Duration,
}

impl FleetReader {
    pub fn new(config: &crate::config::ClusterConfig, io: &tokio::runtime::Handle) -> Option<Self> {
        let options = config
            .url
            .parse::<sqlx::postgres::PgConnectOptions>()
            .ok()?;
        let _guard = io.enter();
        Some(FleetReader {
            pool: sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .acquire_timeout(Duration::from_secs(3))
                .connect_lazy_with(options),
            ttl: config.lease_ttl,
        })
    }

    pub async fn read(&self) -> Result<Value, sqlx::Error> {
        read(&self.pool, self.ttl).await
    }
}

type NodeRow = (String, f64, String, i32);
type AgentRow = (
    String,
    String,
    String,
    Option<i64>,
    Option<i64>,
    i64,
    Option<String>,
    f64,
);
type LeaseRow = (String, Option<String>, i64, f64, Option<String>);

/// Every node, agent and lease, as JSON.
pub async fn read(pool: &sqlx::PgPool, ttl: Duration) -> Result<Value, sqlx::Error> {
    let nodes: Vec<NodeRow> = sqlx::query_as(
        "SELECT node, extract(epoch FROM now() - seen_at)::float8, version, pid
         FROM vigil_nodes ORDER BY node",
    )
    .fetch_all(pool)
    .await?;
    let agents: Vec<AgentRow> = sqlx::query_as(
        "SELECT node, agent, state, pid, epoch, restarts, note,
                extract(epoch FROM now() - updated_at)::float8
         FROM vigil_agents ORDER BY agent, node",
    )
    .fetch_all(pool)
    .await?;
    let leases: Vec<LeaseRow> = sqlx::query_as(
        "SELECT agent, holder, epoch, extract(epoch FROM expires_at - now())::float8, move_to
         FROM vigil_leases ORDER BY agent",
    )
    .fetch_all(pool)
    .await?;
    let alive = |seen: f64| seen < ttl.as_secs_f64();
    let node_up: std::collections::HashMap<&str, bool> =
        nodes.iter().map(|n| (n.0.as_str(), alive(n.1))).collect();
    Ok(json!({
        "nodes": nodes.iter().map(|(node, seen, version, pid)| json!({
            "node": node, "up": alive(*seen), "seen_s_ago": round(*seen),
            "version": version, "pid": pid,
        })).collect::<Vec<_>>(),
        "agents": agents.iter().map(|(node, agent, state, pid, epoch, restarts, note, _)| json!({
            "agent": agent, "node": node,
            // A node that stopped saying it is alive: what it last said may be stale.
            "node_up": node_up.get(node.as_str()).copied().unwrap_or(false),
            "state": state, "pid": pid, "epoch": epoch, "restarts": restarts, "note": note,
        })).collect::<Vec<_>>(),
        "leases": leases.iter().map(|(agent, holder, epoch, left, move_to)| json!({
            "agent": agent,
            "holder": holder.as_ref().filter(|_| *left > 0.0),
            "epoch": epoch,
            "expires_in_s": round(*left),
            "moving_to": move_to,
        })).collect::<Vec<_>>(),
    }))
}

fn round(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}
