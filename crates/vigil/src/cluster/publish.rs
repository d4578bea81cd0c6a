//! The fleet view: each node publishes its agents' states to `vigil_agents`, from the loop's
//! latest picture (never from the loop itself), only the rows that changed since the last
//! publish — in steady state, nothing. `vigil fleet status` reads them, with the nodes'
//! liveness and the leases.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::watch;

use crate::view::FleetView;

/// Publishes on a connection of its own, so neither a slow database nor a row it refuses
/// delays a renewal or counts as the cluster being down.
pub struct Publisher {
    pool: PgPool,
    node: String,
    view: watch::Receiver<Arc<FleetView>>,
    published: HashMap<String, Row>,
}

impl Publisher {
    pub fn new(pool: PgPool, node: String, view: watch::Receiver<Arc<FleetView>>) -> Self {
        Publisher {
            pool,
            node,
            view,
            published: HashMap::new(),
        }
    }

    /// At every new picture (at most one per 100 ms), what changed; after a failure, again a
    /// second later (what was not written is still "changed").
    pub async fn run(mut self) {
        loop {
            let picture = self.view.borrow_and_update().clone();
            let (changed, gone) = changes(&picture, &self.published);
            if !changed.is_empty() || !gone.is_empty() {
                match publish(&self.pool, &self.node, &changed, &gone).await {
                    Ok(()) => {
                        for name in gone {
                            self.published.remove(&name);
                        }
                        self.published.extend(changed);
                    }
                    Err(e) => {
                        tracing::debug!("cluster: cannot publish the agents' states now ({e})");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                }
            }
            if self.view.changed().await.is_err() {
                return;
            }
        }
    }
}

/// What is published of one agent.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    state: &'static str,
    pid: Option<u32>,
    epoch: Option<u64>,
    restarts: u64,
    /// Why it is not running as it should (quarantine, standby, conflict), in words.
    note: Option<String>,
}

fn row_of(a: &crate::view::AgentView) -> Row {
    let x = a.exclusive.as_deref();
    Row {
        state: a.state.as_str(),
        pid: a.pid,
        epoch: x.and_then(|x| x.held.map(|h| h.0)),
        restarts: a.total_restarts,
        // PostgreSQL's text refuses NUL, which an agent's output may carry into a reason.
        note: a
            .quarantine_reason
            .clone()
            .or_else(|| x.and_then(|x| x.standby.clone()))
            .or_else(|| a.conflict.as_ref().map(|c| c.1.clone()))
            .map(|n| n.replace('\0', "\u{fffd}")),
    }
}

/// The rows that changed since `published`, and the agents that are gone.
pub fn changes(
    view: &FleetView,
    published: &HashMap<String, Row>,
) -> (Vec<(String, Row)>, Vec<String>) {
    let changed = view
        .agents
        .iter()
        .map(|a| (a.name.clone(), row_of(a)))
        .filter(|(name, row)| published.get(name) != Some(row))
        .collect();
    let gone = published
        .keys()
        .filter(|name| view.agent(name).is_none())
        .cloned()
        .collect();
    (changed, gone)
}

/// One statement for the changed rows, one for the gone ones (when there are any).
pub async fn publish(
    pool: &PgPool,
    node: &str,
    changed: &[(String, Row)],
    gone: &[String],
) -> Result<(), sqlx::Error> {
    if !changed.is_empty() {
        let col = |f: fn(&Row) -> Option<String>| -> Vec<Option<String>> {
            changed.iter().map(|(_, r)| f(r)).collect()
        };
        let names: Vec<&str> = changed.iter().map(|(n, _)| n.as_str()).collect();
        let states = col(|r| Some(r.state.to_string()));
        let pids: Vec<Option<i64>> = changed.iter().map(|(_, r)| r.pid.map(i64::from)).collect();
        let epochs: Vec<Option<i64>> = changed
            .iter()
            .map(|(_, r)| r.epoch.map(|e| e as i64))
            .collect();
        let restarts: Vec<i64> = changed.iter().map(|(_, r)| r.restarts as i64).collect();
        let notes = col(|r| r.note.clone());
        sqlx::query(
            "INSERT INTO vigil_agents (node, agent, state, pid, epoch, restarts, note, updated_at)
             SELECT $1, m.agent, m.state, m.pid, m.epoch, m.restarts, m.note, now()
             FROM unnest($2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[], $7::text[])
                  AS m(agent, state, pid, epoch, restarts, note)
             ON CONFLICT (node, agent) DO UPDATE SET state = EXCLUDED.state, pid = EXCLUDED.pid,
                epoch = EXCLUDED.epoch, restarts = EXCLUDED.restarts, note = EXCLUDED.note,
                updated_at = now()",
        )
        .bind(node)
        .bind(&names)
        .bind(&states)
        .bind(&pids)
        .bind(&epochs)
        .bind(&restarts)
        .bind(&notes)
        .execute(pool)
        .await?;
    }
    if !gone.is_empty() {
        sqlx::query("DELETE FROM vigil_agents WHERE node = $1 AND agent = ANY($2)")
            .bind(node)
            .bind(gone)
            .execute(pool)
            .await?;
    }
    Ok(())
}
