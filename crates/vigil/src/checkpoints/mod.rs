//! Checkpoints: each agent's own state, kept by vigil so a restarted agent resumes where it
//! was. Versioned (1, 2, 3 … per agent), written compare-and-swap so a zombie copy of an agent
//! cannot overwrite the live one, durable before the answer, the last `keep` versions kept.
//!
//! In an embedded SQLite database in the state dir by default, or in PostgreSQL
//! (`[store] url`). The API serves them on the I/O runtime: the supervision loop never waits
//! for a checkpoint.

mod batch;
mod sql;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use tokio::sync::OnceCell;

use crate::config::StoreConfig;

/// The largest checkpoint document taken.
pub const MAX_DOCUMENT: usize = 1024 * 1024;

/// One version of an agent's checkpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    pub version: i64,
    /// When vigil took it (wall-clock milliseconds).
    pub ts_ms: i64,
    /// The JSON document, exactly as the agent sent it.
    pub document: String,
}

/// What a write expects the latest version to be.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Expect {
    /// No precondition: the write becomes the next version.
    Any,
    /// `If-None-Match: *` or `If-Match: 0`: only when the agent has no checkpoint yet.
    Absent,
    /// `If-Match: *`: only when it has one.
    Exists,
    /// `If-Match: N`: only when N is still the latest version.
    Version(i64),
    /// `If-Match: W/"N"`: a weak tag never matches (RFC 9110 compares strongly).
    Never,
}

/// Why a checkpoint could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached now (PostgreSQL down, pool exhausted): worth a retry.
    #[error("the checkpoint store ({store}) cannot be reached: {source}")]
    Unreachable {
        store: String,
        #[source]
        source: sqlx::Error,
    },
    /// Anything else the database refused (a full disk, a broken file).
    #[error("the checkpoint store ({store}) failed: {source}")]
    Failed {
        store: String,
        #[source]
        source: sqlx::Error,
    },
}

/// Why a checkpoint write was not taken.
#[derive(Debug, thiserror::Error)]
pub enum PutError {
    #[error(
        "the checkpoint changed: version {} is the latest, not the one this write expected",
        current.map_or_else(|| "none".to_string(), |v| v.to_string())
    )]
    Conflict { current: Option<i64> },
    #[error(transparent)]
    Store(#[from] StoreError),
}

enum Pools {
    Sqlite {
        /// One connection: writes are serialized here, never refused as busy, and those that
        /// arrive together share one commit (`batch`).
        write: sqlx::SqlitePool,
        read: sqlx::SqlitePool,
        writer: OnceCell<batch::Writer>,
    },
    Postgres(sqlx::PgPool),
}

/// The checkpoint store, shared by the API's handlers.
pub struct Store {
    pools: Pools,
    /// Where it is, for errors and `vigil check` (a URL without its password).
    pub place: String,
    keep: u32,
    /// The schema, created at the first use that reaches the database.
    ready: OnceCell<()>,
    /// Each agent's latest version and time, for `/status` and the dashboard.
    latest: Mutex<Option<HashMap<String, (i64, i64)>>>,
    /// Found unreachable: fail fast until then (and, for PostgreSQL, until a background probe
    /// reaches it again).
    down: std::sync::Arc<Mutex<Down>>,
}

#[derive(Default)]
struct Down {
    until: Option<std::time::Instant>,
    probing: bool,
}

/// How long requests fail at once after the store was found unreachable.
const FAIL_FAST: std::time::Duration = std::time::Duration::from_secs(2);

impl Store {
    /// The store a config names. Nothing is connected yet: a PostgreSQL that is down when
    /// vigil starts costs checkpoints, never supervision.
    pub fn open(config: &StoreConfig, state_dir: &Path) -> Result<Store, sqlx::Error> {
        let (pools, place) = match &config.url {
            Some(url) => {
                let options: PgConnectOptions = url.parse()?;
                let pool = PgPoolOptions::new()
                    .max_connections(4)
                    .acquire_timeout(std::time::Duration::from_secs(3))
                    .connect_lazy_with(options);
                (Pools::Postgres(pool), crate::redact::url(url))
            }
            None => {
                let path = state_dir.join("checkpoints.db");
                let options = SqliteConnectOptions::new()
                    .filename(&path)
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    // Durable before the answer: the WAL is synced at every commit.
                    .synchronous(SqliteSynchronous::Full)
                    .busy_timeout(std::time::Duration::from_secs(5))
                    // Small pages cache: checkpoints are written once and read at a restart;
                    // a fleet that does not use them should not pay SQLite's default 2 MB.
                    .pragma("cache_size", "-256");
                // Connections (each a thread of sqlx's) close when idle: an idle fleet holds
                // none.
                let idle = Some(std::time::Duration::from_secs(60));
                let write = SqlitePoolOptions::new()
                    .max_connections(1)
                    .min_connections(0)
                    .idle_timeout(idle)
                    .connect_lazy_with(options.clone());
                let read = SqlitePoolOptions::new()
                    .max_connections(2)
                    .min_connections(0)
                    .idle_timeout(idle)
                    .connect_lazy_with(options);
                let writer = OnceCell::new();
                (
                    Pools::Sqlite {
                        write,
                        read,
                        writer,
                    },
                    path.display().to_string(),
                )
            }
        };
        Ok(Store {
            pools,
            place,
            keep: config.keep,
            ready: OnceCell::new(),
            latest: Mutex::new(None),
            down: Default::default(),
        })
    }

    fn error(&self, source: sqlx::Error) -> StoreError {
        let store = self.place.clone();
        // PostgreSQL going away mid-write or starting up (SQLSTATE class 08, connection
        // exceptions; 57P0x, shutdown and startup) is an outage, not a refusal.
        let outage = match &source {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed => true,
            sqlx::Error::Database(e) => e
                .code()
                .is_some_and(|c| c.starts_with("08") || c.starts_with("57P")),
            _ => false,
        };
        if outage {
            let mut down = self.down.lock().unwrap_or_else(|e| e.into_inner());
            down.until = Some(std::time::Instant::now() + FAIL_FAST);
            StoreError::Unreachable { store, source }
        } else {
            StoreError::Failed { store, source }
        }
    }

    /// Found unreachable: answer at once rather than make agents wait out connection
    /// timeouts (their clients keep a local copy meanwhile). PostgreSQL is probed again in the
    /// background, and requests go to it only once a probe got a connection.
    fn check_up(&self) -> Result<(), StoreError> {
        let mut down = self.down.lock().unwrap_or_else(|e| e.into_inner());
        let Some(until) = down.until else {
            return Ok(());
        };
        let unreachable = || StoreError::Unreachable {
            store: self.place.clone(),
            source: sqlx::Error::PoolTimedOut,
        };
        if std::time::Instant::now() < until {
            return Err(unreachable());
        }
        let Pools::Postgres(pool) = &self.pools else {
            down.until = None;
            return Ok(());
        };
        if !down.probing {
            down.probing = true;
            let (pool, state) = (pool.clone(), self.down.clone());
            tokio::spawn(async move {
                let reached = pool.acquire().await.is_ok();
                let mut down = state.lock().unwrap_or_else(|e| e.into_inner());
                down.probing = false;
                down.until = (!reached).then(|| std::time::Instant::now() + FAIL_FAST);
            });
        }
        Err(unreachable())
    }

    /// The schema, once; and each agent's latest version, for the index.
    async fn prepare(&self) -> Result<(), StoreError> {
        self.check_up()?;
        self.ready
            .get_or_try_init(|| async {
                let latest = match &self.pools {
                    Pools::Sqlite { write, .. } => sql::sqlite::prepare(write).await,
                    Pools::Postgres(pool) => sql::postgres::prepare(pool).await,
                }
                .map_err(|e| self.error(e))?;
                *self.latest.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some(latest.into_iter().collect());
                Ok(())
            })
            .await
            .map(|_| ())
    }

    /// Write `document` as the agent's next version, if `expect` still holds. Durable when
    /// this returns `Ok`.
    pub async fn put(
        &self,
        agent: &str,
        expect: Expect,
        document: &str,
        now_ms: i64,
    ) -> Result<Checkpoint, PutError> {
        self.prepare().await?;
        let expected = match expect {
            Expect::Any => None,
            Expect::Absent => Some(0),
            Expect::Version(v) => Some(v),
            Expect::Exists => match self.latest(agent).await?.map(|c| c.version) {
                Some(v) => Some(v),
                None => return Err(PutError::Conflict { current: None }),
            },
            Expect::Never => {
                let current = self.latest(agent).await?.map(|c| c.version);
                return Err(PutError::Conflict { current });
            }
        };
        // Without a precondition a write only loses a race with another write of the same
        // instant; it is tried again on top of the winner.
        for _ in 0..5 {
            let written = match &self.pools {
                Pools::Sqlite { write, writer, .. } => {
                    let writer = writer
                        .get_or_init(|| async { batch::Writer::start(write.clone(), self.keep) })
                        .await;
                    writer.put(agent, expected, document, now_ms).await
                }
                Pools::Postgres(pool) => {
                    sql::postgres::put(pool, agent, expected, document, now_ms, self.keep).await
                }
            }
            .map_err(|e| self.error(e))?;
            if let Some(version) = written {
                // Writes that finish out of order never move the index back.
                let mut latest = self.latest.lock().unwrap_or_else(|e| e.into_inner());
                let entry = latest
                    .get_or_insert_default()
                    .entry(agent.to_string())
                    .or_insert((version, now_ms));
                if entry.0 <= version {
                    *entry = (version, now_ms);
                }
                return Ok(Checkpoint {
                    version,
                    ts_ms: now_ms,
                    document: document.to_string(),
                });
            }
            if expected.is_some() {
                break;
            }
        }
        let current = self.latest(agent).await?.map(|c| c.version);
        Err(PutError::Conflict { current })
    }

    /// The agent's latest checkpoint.
    pub async fn latest(&self, agent: &str) -> Result<Option<Checkpoint>, StoreError> {
        Ok(self.history(agent, 1).await?.pop())
    }

    /// The agent's last `limit` checkpoints, newest first.
    pub async fn history(&self, agent: &str, limit: u32) -> Result<Vec<Checkpoint>, StoreError> {
        self.prepare().await?;
        match &self.pools {
            Pools::Sqlite { read, .. } => sql::sqlite::history(read, agent, limit).await,
            Pools::Postgres(pool) => sql::postgres::history(pool, agent, limit).await,
        }
        .map_err(|e| self.error(e))
    }

    /// Each agent's latest version and its time (wall ms), as far as this vigil knows:
    /// empty until the store was first reached.
    pub fn index(&self) -> HashMap<String, (i64, i64)> {
        self.latest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or_default()
    }

    /// Reach the store now (at startup), so a broken one is reported before an agent needs it
    /// and `/status` shows each agent's last checkpoint from the start.
    pub async fn warm_up(&self) -> Result<(), StoreError> {
        self.prepare().await
    }

    /// Worth reaching at startup: PostgreSQL, or a SQLite database that already holds
    /// checkpoints (a fleet that never used them opens nothing until an agent does).
    pub fn in_use(&self, state_dir: &Path) -> bool {
        matches!(self.pools, Pools::Postgres(_)) || state_dir.join("checkpoints.db").exists()
    }

    /// How many versions are kept per agent.
    pub fn keep(&self) -> u32 {
        self.keep
    }
}

/// `If-Match` / `If-None-Match` as an [`Expect`] (`If-Match` first, as RFC 9110 orders
/// them); `None` when a header makes no sense.
pub fn expect_from(if_match: Option<&str>, if_none_match: Option<&str>) -> Option<Expect> {
    let Some(v) = if_match else {
        return match if_none_match {
            None => Some(Expect::Any),
            Some(v) => (v.trim() == "*").then_some(Expect::Absent),
        };
    };
    let v = v.trim();
    if v == "*" {
        return Some(Expect::Exists);
    }
    let (weak, v) = match v.strip_prefix("W/") {
        Some(rest) => (true, rest),
        None => (false, v),
    };
    let version = match v.trim_matches('"').parse::<i64>() {
        Ok(n) if n >= 0 => n,
        _ => return None,
    };
    Some(match (weak, version) {
        (true, _) => Expect::Never,
        (false, 0) => Expect::Absent,
        (false, n) => Expect::Version(n),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preconditions_are_read_as_http_writes_them() {
        assert_eq!(expect_from(None, None), Some(Expect::Any));
        assert_eq!(expect_from(Some("7"), None), Some(Expect::Version(7)));
        assert_eq!(expect_from(Some("\"7\""), None), Some(Expect::Version(7)));
        assert_eq!(expect_from(Some("W/\"7\""), None), Some(Expect::Never));
        assert_eq!(expect_from(Some("0"), None), Some(Expect::Absent));
        assert_eq!(expect_from(None, Some("*")), Some(Expect::Absent));
        assert_eq!(expect_from(Some("*"), None), Some(Expect::Exists));
        assert_eq!(expect_from(Some("3"), Some("*")), Some(Expect::Version(3)));
        assert_eq!(expect_from(Some("seven"), None), None);
        assert_eq!(expect_from(Some("-1"), None), None);
        assert_eq!(expect_from(None, Some("\"3\"")), None);
    }

    fn sqlite_store(dir: &Path, keep: u32) -> Store {
        Store::open(&StoreConfig { url: None, keep }, dir).unwrap()
    }

    #[tokio::test]
    async fn versions_grow_and_a_stale_write_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = sqlite_store(dir.path(), 3);
        let a = store
            .put("bot", Expect::Absent, "{\"n\":1}", 10)
            .await
            .unwrap();
        assert_eq!(a.version, 1);
        let b = store
            .put("bot", Expect::Version(1), "{\"n\":2}", 20)
            .await
            .unwrap();
        assert_eq!(b.version, 2);
        // A zombie that read version 1 cannot overwrite version 2.
        match store.put("bot", Expect::Version(1), "{\"n\":9}", 30).await {
            Err(PutError::Conflict { current }) => assert_eq!(current, Some(2)),
            other => panic!("expected a conflict, got {other:?}"),
        }
        assert!(matches!(
            store.put("bot", Expect::Absent, "{}", 30).await,
            Err(PutError::Conflict { current: Some(2) })
        ));
        let latest = store.latest("bot").await.unwrap().unwrap();
        assert_eq!((latest.version, latest.document.as_str()), (2, "{\"n\":2}"));
        // Only the last `keep` versions stay.
        for n in 3..=6 {
            store
                .put("bot", Expect::Any, &format!("{{\"n\":{n}}}"), n * 10)
                .await
                .unwrap();
        }
        let versions: Vec<i64> = store
            .history("bot", 100)
            .await
            .unwrap()
            .iter()
            .map(|c| c.version)
            .collect();
        assert_eq!(versions, vec![6, 5, 4]);
        assert_eq!(store.index().get("bot"), Some(&(6, 60)));
        assert!(store.latest("other").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn checkpoints_outlive_the_store_that_wrote_them() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = sqlite_store(dir.path(), 20);
            store.put("bot", Expect::Any, "[1,2,3]", 5).await.unwrap();
        }
        let store = sqlite_store(dir.path(), 20);
        store.warm_up().await.unwrap();
        assert_eq!(store.index().get("bot"), Some(&(1, 5)));
        assert_eq!(
            store.latest("bot").await.unwrap().unwrap().document,
            "[1,2,3]"
        );
    }
}
