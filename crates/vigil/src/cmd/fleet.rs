//! `vigil fleet status` and `vigil fleet move`: the whole cluster, read from (and a move
//! asked of) its PostgreSQL — no node's API needs to be reachable from where it is run.

use std::time::Duration;

use serde_json::Value;

use super::{EXIT_FAILURE, EXIT_OK, EXIT_USAGE};
use crate::config::{ClusterConfig, Config};

fn cluster_of(config: &Config) -> Result<&ClusterConfig, i32> {
    config.cluster.as_ref().ok_or_else(|| {
        eprintln!(
            "{} has no [cluster]: this vigil is not part of a fleet",
            config.path.display()
        );
        EXIT_USAGE
    })
}

/// Runs `f` with a connection to the cluster's database, or says why there is none; its
/// exit code.
fn with_pool(config: &Config, f: impl AsyncFnOnce(&ClusterConfig, sqlx::PgPool) -> i32) -> i32 {
    let cluster = match cluster_of(config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    rt.block_on(async {
        match connect(cluster).await {
            Ok(pool) => f(cluster, pool).await,
            Err(code) => code,
        }
    })
}

fn runtime() -> Result<tokio::runtime::Runtime, i32> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("cannot start: {e}");
            EXIT_FAILURE
        })
}

async fn connect(cluster: &ClusterConfig) -> Result<sqlx::PgPool, i32> {
    let connect = sqlx::pool::PoolOptions::<sqlx::Postgres>::new()
        .max_connections(1)
        .connect(&cluster.url);
    match tokio::time::timeout(Duration::from_secs(10), connect).await {
        Ok(Ok(c)) => Ok(c),
        // The URL holds a password: it is never printed.
        Ok(Err(e)) => {
            eprintln!(
                "cannot reach the cluster's PostgreSQL ({}): {e}",
                crate::redact::url(&cluster.url)
            );
            Err(EXIT_FAILURE)
        }
        Err(_) => {
            eprintln!(
                "the cluster's PostgreSQL ({}) did not answer within 10s",
                crate::redact::url(&cluster.url)
            );
            Err(EXIT_FAILURE)
        }
    }
}

/// `vigil fleet status`.
pub fn status(config: &Config, json_out: bool) -> i32 {
    with_pool(
        config,
        async |cluster, pool| match crate::cluster::fleet_view::read(&pool, cluster.lease_ttl).await
        {
            Ok(fleet) => show_status(&fleet, json_out),
            Err(e) => {
                eprintln!("cannot read the fleet: {e} (has a vigil of this cluster started yet?)");
                EXIT_FAILURE
            }
        },
    )
}

fn show_status(fleet: &Value, json_out: bool) -> i32 {
    if json_out {
        println!("{fleet:#}");
    } else {
        print!("{}", render(fleet));
    }
    // A node down, or an exclusive agent nobody runs: someone should look.
    let node_down = fleet["nodes"]
        .as_array()
        .is_some_and(|n| n.iter().any(|n| n["up"] == false));
    let unheld = fleet["leases"]
        .as_array()
        .is_some_and(|l| l.iter().any(|l| l["holder"].is_null()));
    if node_down || unheld {
        EXIT_FAILURE
    } else {
        EXIT_OK
    }
}

fn render(fleet: &Value) -> String {
    let rows = |key: &str| fleet[key].as_array().cloned().unwrap_or_default();
    let s = |v: &Value| match v {
        Value::Null => "-".to_string(),
        Value::String(s) => super::printable(s).into_owned(),
        other => other.to_string(),
    };
    let mut out = String::new();
    let nodes: Vec<Vec<String>> = rows("nodes")
        .iter()
        .map(|n| {
            vec![
                s(&n["node"]),
                if n["up"] == true { "up" } else { "DOWN" }.to_string(),
                format!("{}s ago", s(&n["seen_s_ago"])),
                s(&n["version"]),
                s(&n["pid"]),
            ]
        })
        .collect();
    out.push_str(&table(
        &["NODE", "STATUS", "LAST SEEN", "VERSION", "PID"],
        &nodes,
    ));
    out.push('\n');
    let leases = rows("leases");
    let agents: Vec<Vec<String>> = rows("agents")
        .iter()
        .map(|a| {
            let lease = leases
                .iter()
                .find(|l| l["agent"] == a["agent"])
                .map(|l| match (&l["holder"], &l["moving_to"]) {
                    (_, Value::String(to)) => format!("moving to {}", super::printable(to)),
                    (Value::String(h), _) if *h == a["node"] => {
                        format!("held, epoch {}", s(&l["epoch"]))
                    }
                    (Value::String(h), _) => format!("{}'s", super::printable(h)),
                    _ => "nobody holds it".to_string(),
                })
                .unwrap_or_else(|| "-".into());
            let mut state = s(&a["state"]).to_uppercase();
            if a["node_up"] == false {
                state.push_str(" (node down)");
            }
            vec![
                s(&a["agent"]),
                s(&a["node"]),
                state,
                s(&a["pid"]),
                s(&a["restarts"]),
                lease,
                s(&a["note"]),
            ]
        })
        .collect();
    out.push_str(&table(
        &["AGENT", "NODE", "STATE", "PID", "RESTARTS", "LEASE", "NOTE"],
        &agents,
    ));
    out
}

fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for r in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            line.push_str(&format!("{c:<w$}  ", w = widths[i]));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `vigil fleet move NAME NODE`: its holder stops it and gives the lease to NODE, which
/// starts it. Waits (up to three leases' time) to say how it went, unless `no_wait`.
pub fn move_agent(config: &Config, agent: &str, node: &str, no_wait: bool) -> i32 {
    with_pool(config, async |cluster, pool| {
        let up: Option<(bool,)> = sqlx::query_as(
            "SELECT seen_at > now() - make_interval(secs => $2::float8) FROM vigil_nodes WHERE node = $1",
        )
        .bind(node)
        .bind(cluster.lease_ttl.as_secs_f64())
        .fetch_optional(&pool)
        .await
        .unwrap_or(None);
        match up {
            None => {
                eprintln!("no node {node} in the cluster (`vigil fleet status` lists them)");
                return EXIT_USAGE;
            }
            Some((false,)) => {
                eprintln!("node {node} is down: it could not take {agent} (`vigil fleet status`)");
                return EXIT_FAILURE;
            }
            Some((true,)) => {}
        }
        // Only a candidate that has the agent may be named: no other node would ever take it.
        // (A node that publishes nothing — its API is off — cannot be told apart: allowed.)
        let said: Result<Vec<(String, Option<String>)>, _> =
            sqlx::query_as("SELECT agent, note FROM vigil_agents WHERE node = $1")
                .bind(node)
                .fetch_all(&pool)
                .await;
        let said = match said {
            Ok(rows) => rows,
            Err(e) => {
                eprintln!("cannot read the fleet: {e}");
                return EXIT_FAILURE;
            }
        };
        let this = said.iter().find(|(a, _)| a == agent);
        match this {
            None if !said.is_empty() => {
                eprintln!("node {node} does not have {agent} in its config: it cannot take it");
                return EXIT_USAGE;
            }
            Some((_, Some(note))) if note.starts_with("this node is not among its nodes") => {
                eprintln!("node {node} is not one of {agent}'s `nodes`: it cannot take it");
                return EXIT_USAGE;
            }
            _ => {}
        }
        let holder = match crate::cluster::leases::request_move(&pool, agent, node).await {
            Ok(Some(holder)) => holder,
            Ok(None) => {
                eprintln!(
                    "{agent} has no lease in the cluster: is it an agent with placement = \"exclusive\"?"
                );
                return EXIT_USAGE;
            }
            Err(e) => {
                eprintln!("cannot ask for the move: {e}");
                return EXIT_FAILURE;
            }
        };
        if holder.as_deref() == Some(node) {
            // Nothing to do: the move is taken back.
            let _ = sqlx::query(
                "UPDATE vigil_leases SET move_to = NULL WHERE agent = $1 AND move_to = $2",
            )
            .bind(agent)
            .bind(node)
            .execute(&pool)
            .await;
            println!("{agent} already runs on {node}");
            return EXIT_OK;
        }
        match &holder {
            Some(h) => println!(
                "{agent}: {} stops it and gives its lease to {node}, which starts it",
                super::printable(h)
            ),
            None => println!("{agent}: nobody holds its lease; {node} takes it"),
        }
        if no_wait {
            return EXIT_OK;
        }
        let deadline = tokio::time::Instant::now() + cluster.lease_ttl * 3 + Duration::from_secs(5);
        loop {
            let now: Option<(Option<String>, i64)> = sqlx::query_as(
                "SELECT holder, epoch FROM vigil_leases WHERE agent = $1 AND expires_at > now()",
            )
            .bind(agent)
            .fetch_optional(&pool)
            .await
            .unwrap_or(None);
            if let Some((Some(h), epoch)) = &now
                && h == node
            {
                println!("{agent} runs on {node} now (fencing epoch {epoch})");
                return EXIT_OK;
            }
            if tokio::time::Instant::now() > deadline {
                eprintln!(
                    "{agent} has not moved to {node} yet (`vigil fleet status` shows where it is; the move stands)"
                );
                return EXIT_FAILURE;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

/// What `vigil fleet audit` selects.
pub struct AuditQuery<'a> {
    pub node: Option<&'a str>,
    /// An agent, or a template for all its instances.
    pub agent: Option<&'a str>,
    pub action: Option<&'a str>,
    pub since: Option<std::time::SystemTime>,
    pub limit: usize,
    pub json: bool,
}

/// `vigil fleet audit`: every node's journal, as mirrored to PostgreSQL, oldest first, each
/// record with its node.
pub fn audit(config: &Config, q: &AuditQuery<'_>) -> i32 {
    if let Some(action) = q.action
        && let Err(e) = super::audit::check_action(action)
    {
        eprintln!("{e}");
        return EXIT_USAGE;
    }
    let since = q.since.map(|t| {
        t.duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default()
    });
    with_pool(config, async |_, pool| {
        let rows: Result<Vec<(String, String)>, _> = sqlx::query_as(
            "SELECT node, record::text FROM (
                SELECT node, record, ts, at_offset FROM vigil_journal
                WHERE ($1::text IS NULL OR node = $1)
                  AND ($2::text IS NULL OR agent = $2 OR agent LIKE $2 || '@%')
                  AND ($3::text IS NULL OR action = $3)
                  AND ($4::float8 IS NULL OR ts >= to_timestamp($4))
                ORDER BY ts DESC, at_offset DESC LIMIT $5) AS newest
             ORDER BY ts, node, at_offset",
        )
        .bind(q.node)
        .bind(q.agent)
        .bind(q.action)
        .bind(since)
        .bind(q.limit as i64)
        .fetch_all(&pool)
        .await;
        match rows {
            Ok(rows) => show_records(rows, q.json),
            Err(e) => {
                eprintln!("cannot read the fleet's journal: {e}");
                EXIT_FAILURE
            }
        }
    })
}

fn show_records(rows: Vec<(String, String)>, json: bool) -> i32 {
    let width = rows.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
    for (node, text) in rows {
        let Ok(record) = serde_json::from_str::<crate::audit::Record>(&text) else {
            continue;
        };
        if json {
            let mut v = serde_json::to_value(&record).unwrap_or_default();
            v["node"] = Value::String(node);
            println!("{v}");
        } else {
            let line = format!("{node:<width$}  {}", super::audit::format_human(&record));
            println!("{}", super::printable(&line));
        }
    }
    EXIT_OK
}

/// `vigil fleet restart NAME`: a person's restart, carried out by the node(s) that run it —
/// NAME may be a template, whose instances may run on several nodes. Waits (10 s) for each
/// node to say what it did.
pub fn restart(config: &Config, name: &str, node: Option<&str>, reason: Option<&str>) -> i32 {
    with_pool(config, async |cluster, pool| {
        // Where it runs now: the nodes that say so (an exclusive agent's standbys do not).
        let targets: Vec<(String, String)> = match sqlx::query_as(
            "SELECT a.node, a.agent FROM vigil_agents a JOIN vigil_nodes n ON n.node = a.node
             WHERE (a.agent = $1 OR a.agent LIKE $1 || '@%')
               AND ($2::text IS NULL OR a.node = $2)
               AND a.state <> 'standby'
               AND n.seen_at > now() - make_interval(secs => $3::float8)
             ORDER BY a.agent, a.node",
        )
        .bind(name)
        .bind(node)
        .bind(cluster.lease_ttl.as_secs_f64())
        .fetch_all(&pool)
        .await
        {
            Ok(t) => t,
            Err(e) => {
                eprintln!("cannot read the fleet: {e}");
                return EXIT_FAILURE;
            }
        };
        if targets.is_empty() {
            eprintln!(
                "{name} runs on no node that is up{} (`vigil fleet status` shows the fleet)",
                node.map(|n| format!(" named {n}")).unwrap_or_default()
            );
            return EXIT_USAGE;
        }
        let mut ids = Vec::new();
        for (node, agent) in &targets {
            let id: Result<(i64,), _> = sqlx::query_as(
                "INSERT INTO vigil_commands (node, agent, command, reason) VALUES ($1, $2, 'restart', $3) RETURNING id",
            )
            .bind(node)
            .bind(agent)
            .bind(reason)
            .fetch_one(&pool)
            .await;
            match id {
                Ok((id,)) => ids.push((id, node.clone(), agent.clone())),
                Err(e) => {
                    eprintln!("cannot send the command to {node}: {e}");
                    return EXIT_FAILURE;
                }
            }
        }
        let notify = format!("NOTIFY {}", crate::cluster::COMMANDS_CHANNEL);
        if let Err(e) = sqlx::query(sqlx::AssertSqlSafe(notify))
            .execute(&pool)
            .await
        {
            eprintln!("cannot notify the nodes: {e}");
            return EXIT_FAILURE;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut code = EXIT_OK;
        for (id, node, agent) in ids {
            loop {
                let outcome: Option<(Option<String>,)> =
                    sqlx::query_as("SELECT outcome FROM vigil_commands WHERE id = $1")
                        .bind(id)
                        .fetch_optional(&pool)
                        .await
                        .unwrap_or(None);
                if let Some((Some(outcome),)) = outcome {
                    if outcome.starts_with("refused") || outcome.starts_with("not carried out") {
                        code = EXIT_FAILURE;
                    }
                    let line = format!("{agent} on {node}: {outcome}");
                    println!("{}", super::printable(&line));
                    break;
                }
                if tokio::time::Instant::now() > deadline {
                    let line = format!(
                        "{agent} on {node}: not answered within 10s (the command waits a minute for it)"
                    );
                    println!("{}", super::printable(&line));
                    code = EXIT_FAILURE;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        code
    })
}

/// `vigil fleet forget NODE`: a node taken out of the fleet for good leaves the fleet view
/// (its row, its agents' rows). Refused while it is up; its journal's copy stays.
pub fn forget(config: &Config, node: &str) -> i32 {
    with_pool(config, async |cluster, pool| {
        let forgotten: Result<Option<(i64,)>, _> = sqlx::query_as(
            "WITH gone AS (
                DELETE FROM vigil_nodes WHERE node = $1
                  AND seen_at < now() - make_interval(secs => $2::float8) RETURNING node
             ), agents AS (
                DELETE FROM vigil_agents WHERE node IN (SELECT node FROM gone) RETURNING 1
             )
             SELECT (SELECT count(*) FROM agents) FROM gone",
        )
        .bind(node)
        .bind(cluster.lease_ttl.as_secs_f64())
        .fetch_optional(&pool)
        .await;
        match forgotten {
            Ok(Some((agents,))) => {
                println!("node {node} forgotten (and its {agents} agents' rows)");
                EXIT_OK
            }
            Ok(None) => {
                eprintln!(
                    "node {node} is not in the fleet, or is up (stop its vigil first; a node that renews comes back)"
                );
                EXIT_USAGE
            }
            Err(e) => {
                eprintln!("cannot forget node {node}: {e}");
                EXIT_FAILURE
            }
        }
    })
}
