//! One renewal round against PostgreSQL: this node says it is alive, renews every lease it
//! holds, and reads every lease it is a candidate for — all in one statement, whatever the
//! number of agents. Only when a lease is free for this node is a second round trip made, to
//! take it. Every comparison of expiry is made by the database, on its clock.

use std::time::Duration;

use sqlx::PgPool;

/// An exclusive agent this node may be asked to run.
#[derive(Clone, Debug)]
pub struct Candidate {
    pub agent: vigil_core::AgentId,
    pub name: String,
    /// [`crate::config::AgentConfig::definition_hash`].
    pub definition: String,
    /// The nodes it prefers to this one, in order (comma-joined for the statement).
    pub better: Vec<String>,
    /// This node is among its candidates.
    pub admitted: bool,
    /// `stop_timeout` + margin: the lease's file says "valid" until this long before expiry.
    pub fence_lead: Duration,
}

/// What the database says of one candidate's lease.
#[derive(Debug)]
pub struct LeaseRow {
    pub agent: String,
    pub holder: Option<String>,
    pub epoch: Option<i64>,
    pub definition: Option<String>,
    pub move_to: Option<String>,
    /// Until its expiry, on the database's clock (negative: expired that long ago).
    pub remaining_ms: Option<i64>,
    /// Renewed by this round (held here), at this epoch.
    pub renewed_epoch: Option<i64>,
    /// Nodes this one prefers to itself that said they were alive within a lease's time
    /// (the holder not counted).
    pub alive_better: i64,
}

// The node's row is this vigil's only if it holds the node's id, or the vigil that did has
// not been heard of for a lease's time: a second vigil with the same node name renews nothing.
const ROUND: &str = "
WITH beat AS (
    INSERT INTO vigil_nodes (node, seen_at, started_at, version, pid, instance)
    VALUES ($1, now(), now(), $4, $5, $8)
    ON CONFLICT (node) DO UPDATE SET seen_at = now(), version = EXCLUDED.version, pid = EXCLUDED.pid,
        instance = EXCLUDED.instance
    WHERE vigil_nodes.instance IS NULL OR vigil_nodes.instance = EXCLUDED.instance
       OR vigil_nodes.seen_at < now() - make_interval(secs => $2::float8 / 1000)
    RETURNING node
), renewed AS (
    UPDATE vigil_leases l
    SET expires_at = now() + make_interval(secs => $2::float8 / 1000), definition = m.def
    FROM unnest($3::text[], $6::text[]) AS m(agent, def)
    WHERE l.agent = m.agent AND l.holder = $1 AND EXISTS (SELECT 1 FROM beat)
    RETURNING l.agent, l.epoch
)
SELECT m.agent, l.holder, l.epoch, l.definition, l.move_to,
       (extract(epoch FROM l.expires_at - now()) * 1000)::bigint AS remaining_ms,
       r.epoch AS renewed_epoch,
       (SELECT count(*) FROM vigil_nodes n
         WHERE n.node = ANY(string_to_array(m.better, ','))
           AND n.node IS DISTINCT FROM l.holder
           AND n.seen_at > now() - make_interval(secs => $2::float8 / 1000)) AS alive_better,
       b.ours
FROM unnest($3::text[], $7::text[]) AS m(agent, better)
LEFT JOIN vigil_leases l ON l.agent = m.agent
LEFT JOIN renewed r ON r.agent = m.agent
CROSS JOIN (SELECT count(*) AS ours FROM beat) AS b
";

/// Why a round did not count.
#[derive(Debug, thiserror::Error)]
pub enum RoundError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// Another vigil, alive, is this node: nothing was renewed or taken.
    #[error(
        "another vigil is node {node} and is alive (this one is {id}: this state dir's cluster-node.id and this boot): this vigil renews and takes no lease; give each node its own [cluster] node name"
    )]
    NameTaken { node: String, id: String },
}

/// Says this node is alive, renews what it holds, reads the rest.
pub async fn round(
    pool: &PgPool,
    node: &str,
    instance: &str,
    ttl: Duration,
    candidates: &[Candidate],
) -> Result<Vec<LeaseRow>, RoundError> {
    let names: Vec<&str> = candidates.iter().map(|c| c.name.as_str()).collect();
    let defs: Vec<&str> = candidates.iter().map(|c| c.definition.as_str()).collect();
    let better: Vec<String> = candidates.iter().map(|c| c.better.join(",")).collect();
    type Row = (
        String,
        Option<String>,
        Option<i64>,
        Option<String>,
        Option<String>,
        Option<i64>,
        Option<i64>,
        i64,
        i64,
    );
    let rows = sqlx::query_as::<_, Row>(ROUND)
        .bind(node)
        .bind(ttl.as_millis() as f64)
        .bind(&names)
        .bind(env!("CARGO_PKG_VERSION"))
        .bind(std::process::id() as i32)
        .bind(&defs)
        .bind(&better)
        .bind(instance)
        .fetch_all(pool)
        .await?;
    // The node's row was not this vigil's: nothing was renewed (every row says so; with no
    // candidates there is no lease at stake).
    if rows.first().is_some_and(|r| r.8 == 0) {
        return Err(RoundError::NameTaken {
            node: node.to_string(),
            id: instance.to_string(),
        });
    }
    Ok(rows
        .into_iter()
        .map(
            |(
                agent,
                holder,
                epoch,
                definition,
                move_to,
                remaining_ms,
                renewed_epoch,
                alive_better,
                _,
            )| {
                LeaseRow {
                    agent,
                    holder,
                    epoch,
                    definition,
                    move_to,
                    remaining_ms,
                    renewed_epoch,
                    alive_better,
                }
            },
        )
        .collect())
}

/// Takes the leases of `agents` (name, definition) that are still free for this node, in
/// one statement (after creating the rows of agents never seen before). Returns the leases
/// taken, with their new epochs.
pub async fn acquire(
    pool: &PgPool,
    node: &str,
    ttl: Duration,
    agents: &[(String, String)],
) -> Result<Vec<(String, i64)>, sqlx::Error> {
    let names: Vec<&str> = agents.iter().map(|a| a.0.as_str()).collect();
    let defs: Vec<&str> = agents.iter().map(|a| a.1.as_str()).collect();
    sqlx::query(
        "INSERT INTO vigil_leases (agent, holder, epoch, expires_at, definition, changed_at)
         SELECT m.agent, NULL, 0, now(), m.def, now() FROM unnest($1::text[], $2::text[]) AS m(agent, def)
         ON CONFLICT (agent) DO NOTHING",
    )
    .bind(&names)
    .bind(&defs)
    .execute(pool)
    .await?;
    // Checked again under the row's lock: of two nodes racing for one lease, the second
    // finds it unexpired and takes nothing.
    sqlx::query_as::<_, (String, i64)>(
        "UPDATE vigil_leases l
         SET holder = $1, epoch = l.epoch + 1, expires_at = now() + make_interval(secs => $2::float8 / 1000),
             definition = m.def, move_to = NULL, changed_at = now()
         FROM unnest($3::text[], $4::text[]) AS m(agent, def)
         WHERE l.agent = m.agent
           AND (l.holder IS NULL OR l.expires_at < now())
           AND (l.move_to IS NULL OR l.move_to = $1)
           AND (l.definition = m.def OR l.move_to = $1 OR l.epoch = 0)
         RETURNING l.agent, l.epoch",
    )
    .bind(node)
    .bind(ttl.as_millis() as f64)
    .bind(&names)
    .bind(&defs)
    .fetch_all(pool)
    .await
}

/// Gives up a lease this node holds at `epoch` (nothing of the agent runs here any more);
/// `to`: only that node may take it next (a person's move).
pub async fn release(
    pool: &PgPool,
    node: &str,
    agent: &str,
    epoch: u64,
    to: Option<&str>,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE vigil_leases SET holder = NULL, expires_at = now(), move_to = $4, changed_at = now()
         WHERE agent = $1 AND holder = $2 AND epoch = $3",
    )
    .bind(agent)
    .bind(node)
    .bind(epoch as i64)
    .bind(to)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// A person's move of `agent` to `node`: its holder stops it and gives it to that node.
/// Returns the holder at that moment (`None`: nobody holds it; the node takes it at once).
pub async fn request_move(
    pool: &PgPool,
    agent: &str,
    node: &str,
) -> Result<Option<Option<String>>, sqlx::Error> {
    let row: Option<(Option<String>,)> = sqlx::query_as(
        "UPDATE vigil_leases SET move_to = $2, changed_at = now() WHERE agent = $1
         RETURNING CASE WHEN holder IS NOT NULL AND expires_at > now() THEN holder END",
    )
    .bind(agent)
    .bind(node)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| r.0))
}
