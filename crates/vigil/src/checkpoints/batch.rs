//! SQLite's writes, batched: the writes that arrive while one commit is being made go
//! together into the next transaction, so N agents saving at once cost one fsync, not N. Each
//! is still answered only once its commit is durable, and each keeps its own compare-and-swap
//! (they run one after another inside the transaction).

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

/// At most this many writes share a commit (a transaction stays short).
const MAX_BATCH: usize = 64;

struct Put {
    agent: String,
    expected: Option<i64>,
    document: String,
    now_ms: i64,
    reply: oneshot::Sender<Result<Option<i64>, Arc<sqlx::Error>>>,
}

pub struct Writer {
    queue: mpsc::Sender<Put>,
}

impl Writer {
    /// Its task runs on the runtime that first writes (the API's).
    pub fn start(pool: sqlx::SqlitePool, keep: u32) -> Writer {
        let (queue, rx) = mpsc::channel(1024);
        tokio::spawn(write_batches(pool, keep, rx));
        Writer { queue }
    }

    pub async fn put(
        &self,
        agent: &str,
        expected: Option<i64>,
        document: &str,
        now_ms: i64,
    ) -> Result<Option<i64>, sqlx::Error> {
        let (reply, answer) = oneshot::channel();
        let put = Put {
            agent: agent.to_string(),
            expected,
            document: document.to_string(),
            now_ms,
            reply,
        };
        if self.queue.send(put).await.is_err() {
            return Err(sqlx::Error::PoolClosed);
        }
        match answer.await {
            Ok(Ok(v)) => Ok(v),
            // The error is the batch's: each writer gets it by what it is, not by its words.
            Ok(Err(e)) => Err(match &*e {
                sqlx::Error::Io(io) => {
                    sqlx::Error::Io(std::io::Error::new(io.kind(), io.to_string()))
                }
                sqlx::Error::PoolTimedOut => sqlx::Error::PoolTimedOut,
                other => sqlx::Error::Protocol(other.to_string()),
            }),
            Err(_) => Err(sqlx::Error::PoolClosed),
        }
    }
}

async fn write_batches(pool: sqlx::SqlitePool, keep: u32, mut rx: mpsc::Receiver<Put>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        match commit(&pool, keep, &batch).await {
            Ok(versions) => {
                for (put, v) in batch.into_iter().zip(versions) {
                    let _ = put.reply.send(Ok(v));
                }
            }
            Err(e) => {
                let e = Arc::new(e);
                for put in batch {
                    let _ = put.reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// One transaction for the batch: all of it durable, or none of it.
async fn commit(
    pool: &sqlx::SqlitePool,
    keep: u32,
    batch: &[Put],
) -> Result<Vec<Option<i64>>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let mut versions = Vec::with_capacity(batch.len());
    for p in batch {
        versions.push(
            super::sql::sqlite::put(&mut tx, &p.agent, p.expected, &p.document, p.now_ms, keep)
                .await?,
        );
    }
    tx.commit().await?;
    Ok(versions)
}
