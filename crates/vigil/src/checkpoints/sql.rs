//! The checkpoint table and its statements, for each database. The compare-and-swap is one
//! statement: the next version is inserted only when the latest is the expected one, and the
//! primary key refuses the loser of two writes racing for the same version.

use super::Checkpoint;

fn checkpoint(row: (i64, i64, String)) -> Checkpoint {
    Checkpoint {
        version: row.0,
        ts_ms: row.1,
        document: row.2,
    }
}

pub mod sqlite {
    use sqlx::SqlitePool;

    use super::{Checkpoint, checkpoint};

    pub async fn prepare(pool: &SqlitePool) -> Result<Vec<(String, (i64, i64))>, sqlx::Error> {
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS vigil_checkpoints (
                 agent TEXT NOT NULL,
                 version INTEGER NOT NULL,
                 ts_ms INTEGER NOT NULL,
                 document TEXT NOT NULL,
                 PRIMARY KEY (agent, version)
             )",
        )
        .execute(pool)
        .await?;
        let rows: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT c.agent, c.version, c.ts_ms FROM vigil_checkpoints c
             WHERE c.version = (SELECT MAX(version) FROM vigil_checkpoints WHERE agent = c.agent)",
        )
        .fetch_all(pool)
        .await?;
        Ok(rows.into_iter().map(|(a, v, t)| (a, (v, t))).collect())
    }

    /// One write inside the caller's transaction (several share one commit: one fsync).
    pub async fn put(
        tx: &mut sqlx::SqliteConnection,
        agent: &str,
        expected: Option<i64>,
        document: &str,
        now_ms: i64,
        keep: u32,
    ) -> Result<Option<i64>, sqlx::Error> {
        let version: Option<i64> = sqlx::query_scalar(
            "INSERT INTO vigil_checkpoints (agent, version, ts_ms, document)
             SELECT ?1, COALESCE(MAX(version), 0) + 1, ?2, ?3 FROM vigil_checkpoints
             WHERE agent = ?1
             HAVING ?4 IS NULL OR COALESCE(MAX(version), 0) = ?4
             ON CONFLICT DO NOTHING
             RETURNING version",
        )
        .bind(agent)
        .bind(now_ms)
        .bind(document)
        .bind(expected)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(v) = version {
            sqlx::query("DELETE FROM vigil_checkpoints WHERE agent = ?1 AND version <= ?2")
                .bind(agent)
                .bind(v - i64::from(keep))
                .execute(&mut *tx)
                .await?;
        }
        Ok(version)
    }

    pub async fn history(
        pool: &SqlitePool,
        agent: &str,
        limit: u32,
    ) -> Result<Vec<Checkpoint>, sqlx::Error> {
        let rows: Vec<(i64, i64, String)> = sqlx::query_as(
            "SELECT version, ts_ms, document FROM vigil_checkpoints
             WHERE agent = ?1 ORDER BY version DESC LIMIT ?2",
        )
        .bind(agent)
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await?;
        Ok(rows.into_iter().map(checkpoint).collect())
    }
}

pub mod postgres {
    use sqlx::PgPool;

    use super::{Checkpoint, checkpoint};

    pub async fn prepare(pool: &PgPool) -> Result<Vec<(String, (i64, i64))>, sqlx::Error> {
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS vigil_checkpoints (
                 agent TEXT NOT NULL,
                 version BIGINT NOT NULL,
                 ts_ms BIGINT NOT NULL,
                 document TEXT NOT NULL,
                 PRIMARY KEY (agent, version)
             )",
        )
        .execute(pool)
        .await?;
        let rows: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT DISTINCT ON (agent) agent, version, ts_ms FROM vigil_checkpoints
             ORDER BY agent, version DESC",
        )
        .fetch_all(pool)
        .await?;
        Ok(rows.into_iter().map(|(a, v, t)| (a, (v, t))).collect())
    }

    pub async fn put(
        pool: &PgPool,
        agent: &str,
        expected: Option<i64>,
        document: &str,
        now_ms: i64,
        keep: u32,
    ) -> Result<Option<i64>, sqlx::Error> {
        let mut tx = pool.begin().await?;
        let version: Option<i64> = sqlx::query_scalar(
            "INSERT INTO vigil_checkpoints (agent, version, ts_ms, document)
             SELECT $1, COALESCE(MAX(version), 0) + 1, $2, $3 FROM vigil_checkpoints
             WHERE agent = $1
             HAVING $4::BIGINT IS NULL OR COALESCE(MAX(version), 0) = $4::BIGINT
             ON CONFLICT DO NOTHING
             RETURNING version",
        )
        .bind(agent)
        .bind(now_ms)
        .bind(document)
        .bind(expected)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(v) = version {
            sqlx::query("DELETE FROM vigil_checkpoints WHERE agent = $1 AND version <= $2")
                .bind(agent)
                .bind(v - i64::from(keep))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(version)
    }

    pub async fn history(
        pool: &PgPool,
        agent: &str,
        limit: u32,
    ) -> Result<Vec<Checkpoint>, sqlx::Error> {
        let rows: Vec<(i64, i64, String)> = sqlx::query_as(
            "SELECT version, ts_ms, document FROM vigil_checkpoints
             WHERE agent = $1 ORDER BY version DESC LIMIT $2",
        )
        .bind(agent)
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await?;
        Ok(rows.into_iter().map(checkpoint).collect())
    }
}
