//! `sql` checks: the newest timestamp of the agent's work in a database.
//!
//! One connection pool per URL, shared by every agent that uses it. SQLite databases are
//! opened read-only: a health check never writes to the agent's data.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions, SqliteRow};
use sqlx::{Row, TypeInfo, ValueRef};
use vigil_core::Observation;

use super::files::epoch_to_ms;

#[derive(Clone)]
enum Pool {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

#[derive(Default)]
pub struct SqlPools {
    pools: Mutex<HashMap<String, Pool>>,
    /// Whether the last probe of a URL got a connection (absent: not probed yet).
    connected: Mutex<HashMap<String, bool>>,
}

/// A database URL that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("bad database URL {url}: {source}")]
struct BadUrl {
    /// Redacted.
    url: String,
    source: sqlx::Error,
}

impl SqlPools {
    fn pool(&self, url: &str, timeout: Duration) -> Result<Pool, BadUrl> {
        let bad = |source| BadUrl {
            url: crate::redact::url(url),
            source,
        };
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = pools.get(url) {
            return Ok(p.clone());
        }
        let pool = if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)
                .map_err(bad)?
                .read_only(true)
                .create_if_missing(false);
            Pool::Sqlite(
                SqlitePoolOptions::new()
                    .max_connections(2)
                    .acquire_timeout(timeout)
                    .connect_lazy_with(options),
            )
        } else {
            Pool::Postgres(
                PgPoolOptions::new()
                    .max_connections(4)
                    .acquire_timeout(timeout)
                    .connect_lazy(url)
                    .map_err(bad)?,
            )
        };
        pools.insert(url.to_string(), pool.clone());
        Ok(pool)
    }

    pub async fn probe(
        &self,
        url: &str,
        query: &str,
        params: &[String],
        timeout: Duration,
    ) -> Observation {
        let pool = match self.pool(url, timeout) {
            Ok(p) => p,
            Err(e) => return Observation::Unknown(e.to_string()),
        };
        let shown = crate::redact::url(url);
        // The query is the operator's own, from the config; values are always bound.
        let sql = || sqlx::AssertSqlSafe(query);
        match pool {
            Pool::Postgres(pool) => {
                // The pool retries a refused port until its timeout and then says only that it
                // timed out. So: at the first look, and after a look that found no connection,
                // the port is asked first — a refused one is said at once. (Not at every look:
                // each bare connection is a line in the server's log.)
                if pool.size() == 0
                    && !self.connected_last_time(url)
                    && let Some(why) = refused(url, timeout.min(PORT_CHECK)).await
                {
                    self.remember(url, false);
                    return Observation::Unknown(format!("{shown}: {why}"));
                }
                let mut q = sqlx::query(sql());
                for p in params {
                    q = q.bind(p);
                }
                let result = q.fetch_optional(&pool).await;
                let no_connection =
                    matches!(result, Err(sqlx::Error::PoolTimedOut | sqlx::Error::Io(_)));
                self.remember(url, !no_connection);
                match result {
                    Ok(None) => Observation::Progress { at_wall_ms: None },
                    Ok(Some(row)) => pg_value(&row),
                    Err(e) => Observation::Unknown(format!("{shown}: {}", db_error(&e))),
                }
            }
            Pool::Sqlite(pool) => {
                let mut q = sqlx::query(sql());
                for p in params {
                    q = q.bind(p);
                }
                match q.fetch_optional(&pool).await {
                    Ok(None) => Observation::Progress { at_wall_ms: None },
                    Ok(Some(row)) => sqlite_value(&row),
                    Err(e) => Observation::Unknown(format!("{shown}: {}", db_error(&e))),
                }
            }
        }
    }
}

/// How long asking a port may take (a host that drops packets must not eat the probe).
const PORT_CHECK: Duration = Duration::from_secs(1);

impl SqlPools {
    fn connected_last_time(&self, url: &str) -> bool {
        let connected = self.connected.lock().unwrap_or_else(|e| e.into_inner());
        connected.get(url).copied().unwrap_or(false)
    }

    fn remember(&self, url: &str, connected: bool) {
        let mut map = self.connected.lock().unwrap_or_else(|e| e.into_inner());
        map.insert(url.to_string(), connected);
    }
}

/// `connection refused by HOST:PORT` when nothing listens where `url` points (TCP only).
async fn refused(url: &str, timeout: Duration) -> Option<String> {
    let opts = PgConnectOptions::from_str(url).ok()?;
    let host = opts.get_host();
    if host.starts_with('/') {
        return None;
    }
    let port = opts.get_port();
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect((host, port))).await {
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => Some(format!(
            "connection refused by {host}:{port} (database down?)"
        )),
        _ => None,
    }
}

fn db_error(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(d) => match d.code() {
            Some(code) => format!("{} (SQLSTATE {code})", d.message()),
            None => d.message().to_string(),
        },
        sqlx::Error::PoolTimedOut => {
            "no connection within the check's timeout (database down?)".into()
        }
        other => crate::errors::root_cause(other),
    }
}

fn progress(ms: Option<i64>) -> Observation {
    Observation::Progress { at_wall_ms: ms }
}

/// A timestamp given as text: epoch seconds or milliseconds, RFC 3339, `YYYY-MM-DD
/// HH:MM:SS[.fff]` (UTC) or a date (`YYYY-MM-DD`, midnight UTC).
fn text_time(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Ok(v) = s.parse::<f64>() {
        return epoch_to_ms(v);
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_millis());
    }
    for format in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f%#z",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, format) {
            return Some(t.and_utc().timestamp_millis());
        }
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d").ok().map(date_ms)
}

fn date_ms(d: NaiveDate) -> i64 {
    d.and_time(NaiveTime::MIN).and_utc().timestamp_millis()
}

fn unusable(what: &str) -> Observation {
    Observation::Unknown(format!(
        "the query's first column is {what}; it must be a time, a date, epoch seconds or \
         milliseconds, or text holding one of them"
    ))
}

/// The first column as wall-clock milliseconds, decoded by its PostgreSQL type.
fn pg_value(row: &PgRow) -> Observation {
    let Ok(raw) = row.try_get_raw(0) else {
        return Observation::Unknown("the query returned no column".into());
    };
    if raw.is_null() {
        return progress(None);
    }
    let ty = raw.type_info().name().to_string();
    let epoch = |v: Option<f64>| v.and_then(epoch_to_ms);
    let ms = match ty.as_str() {
        "TIMESTAMPTZ" => row
            .try_get::<DateTime<Utc>, _>(0)
            .ok()
            .map(|t| t.timestamp_millis()),
        "TIMESTAMP" => row
            .try_get::<NaiveDateTime, _>(0)
            .ok()
            .map(|t| t.and_utc().timestamp_millis()),
        "DATE" => row.try_get::<NaiveDate, _>(0).ok().map(date_ms),
        "INT8" => epoch(row.try_get::<i64, _>(0).ok().map(|v| v as f64)),
        "INT4" => epoch(row.try_get::<i32, _>(0).ok().map(f64::from)),
        "INT2" => epoch(row.try_get::<i16, _>(0).ok().map(f64::from)),
        "FLOAT8" => epoch(row.try_get::<f64, _>(0).ok()),
        "FLOAT4" => epoch(row.try_get::<f32, _>(0).ok().map(f64::from)),
        // `extract(epoch FROM …)` is NUMERIC since PostgreSQL 14.
        "NUMERIC" => epoch(
            row.try_get::<sqlx::types::Decimal, _>(0)
                .ok()
                .and_then(|d| f64::try_from(d).ok()),
        ),
        "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" => {
            row.try_get::<String, _>(0).ok().and_then(|s| text_time(&s))
        }
        other => return unusable(other),
    };
    match ms {
        Some(ms) => progress(Some(ms)),
        None => unusable(&format!("a {ty} that is not a usable time")),
    }
}

/// The first column as wall-clock milliseconds, decoded by the SQLite storage class of the
/// value (SQLite has no time type: times are text, or numbers of seconds or milliseconds).
fn sqlite_value(row: &SqliteRow) -> Observation {
    let Ok(raw) = row.try_get_raw(0) else {
        return Observation::Unknown("the query returned no column".into());
    };
    if raw.is_null() {
        return progress(None);
    }
    let ty = raw.type_info().name().to_string();
    let ms = match ty.as_str() {
        "INTEGER" | "BOOLEAN" => row
            .try_get::<i64, _>(0)
            .ok()
            .and_then(|v| epoch_to_ms(v as f64)),
        "REAL" | "NUMERIC" => row.try_get::<f64, _>(0).ok().and_then(epoch_to_ms),
        "TEXT" | "DATETIME" | "DATE" | "TIME" => {
            row.try_get::<String, _>(0).ok().and_then(|s| text_time(&s))
        }
        other => return unusable(other),
    };
    match ms {
        Some(ms) => progress(Some(ms)),
        None => unusable(&format!("{ty} that is not a usable time")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_as_text() {
        assert_eq!(text_time("1700000000"), Some(1_700_000_000_000));
        assert_eq!(text_time("2023-11-14T22:13:20Z"), Some(1_700_000_000_000));
        assert_eq!(
            text_time("2023-11-14 22:13:20.500"),
            Some(1_700_000_000_500)
        );
        assert_eq!(text_time("2023-11-14"), Some(1_699_920_000_000));
        assert_eq!(text_time("1700000000500"), Some(1_700_000_000_500));
        assert_eq!(text_time("yesterday"), None);
    }
}
