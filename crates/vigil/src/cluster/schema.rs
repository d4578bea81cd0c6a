//! The cluster's tables in PostgreSQL, created by the first vigil that needs them. Every node
//! runs the same statements at start; an advisory lock makes concurrent starts take turns
//! (concurrent `CREATE TABLE IF NOT EXISTS` of one table can fail in PostgreSQL).

use sqlx::PgPool;

/// Taken while the tables are created: any fixed number, the same on every node.
const SCHEMA_LOCK: i64 = 0x7669_6769_6c00_0001;

const STATEMENTS: &[&str] = &[
    // One row per node: it says it is alive at every renewal round.
    "CREATE TABLE IF NOT EXISTS vigil_nodes (
        node text PRIMARY KEY,
        seen_at timestamptz NOT NULL,
        started_at timestamptz NOT NULL,
        version text NOT NULL,
        pid integer NOT NULL
    )",
    // Which vigil is the node (see `identity`); added to tables made before it.
    "ALTER TABLE vigil_nodes ADD COLUMN IF NOT EXISTS instance text",
    // One row per exclusive agent. `holder` NULL: given up; `epoch` only grows (a new
    // holder takes epoch + 1); `expires_at` is on the database's clock, the only clock the
    // nodes compare; `move_to`: a person's move, which only that node may take.
    "CREATE TABLE IF NOT EXISTS vigil_leases (
        agent text PRIMARY KEY,
        holder text,
        epoch bigint NOT NULL,
        expires_at timestamptz NOT NULL,
        definition text NOT NULL,
        move_to text,
        changed_at timestamptz NOT NULL
    )",
    // What each node says of its agents (the fleet view), rewritten when it changes.
    "CREATE TABLE IF NOT EXISTS vigil_agents (
        node text NOT NULL,
        agent text NOT NULL,
        state text NOT NULL,
        pid bigint,
        epoch bigint,
        restarts bigint NOT NULL,
        note text,
        updated_at timestamptz NOT NULL,
        PRIMARY KEY (node, agent)
    )",
    // Every node's journal, mirrored (the local journal stays the source of truth). A record
    // is known by where it is in its node's journal file: copying it again changes nothing.
    "CREATE TABLE IF NOT EXISTS vigil_journal (
        node text NOT NULL,
        journal text NOT NULL,
        at_offset bigint NOT NULL,
        length integer NOT NULL,
        ts timestamptz NOT NULL,
        agent text,
        action text NOT NULL,
        record jsonb NOT NULL,
        PRIMARY KEY (node, journal, at_offset)
    )",
    "CREATE INDEX IF NOT EXISTS vigil_journal_ts ON vigil_journal (ts)",
    // A person's command for an agent on another node (`vigil fleet restart`): the node takes
    // it when notified (NOTIFY vigil_commands) and writes what came of it.
    "CREATE TABLE IF NOT EXISTS vigil_commands (
        id bigserial PRIMARY KEY,
        node text NOT NULL,
        agent text NOT NULL,
        command text NOT NULL,
        reason text,
        requested_at timestamptz NOT NULL DEFAULT now(),
        taken_at timestamptz,
        outcome text
    )",
];

pub async fn create(pool: &PgPool) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(SCHEMA_LOCK)
        .execute(&mut *tx)
        .await?;
    for s in STATEMENTS {
        sqlx::query(*s).execute(&mut *tx).await?;
    }
    tx.commit().await
}
