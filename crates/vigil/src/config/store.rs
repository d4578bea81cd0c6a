//! `[store]`: where agents' checkpoints are kept.

use super::reader::{Cx, Tbl};

const STORE_KEYS: &[&str] = &["url", "url_file", "keep"];

/// `[store]`: SQLite in the state dir unless `url` (or `url_file`) names a PostgreSQL.
#[derive(Clone, Debug, PartialEq)]
pub struct StoreConfig {
    /// `postgres://…`; `None`: `checkpoints.db` in the state dir.
    pub url: Option<String>,
    /// Versions kept per agent.
    pub keep: u32,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            url: None,
            keep: 20,
        }
    }
}

pub fn read_store(cx: &mut Cx, t: &Tbl<'_, '_>, base_dir: &std::path::Path) -> StoreConfig {
    cx.check_keys(t, STORE_KEYS);
    let mut c = StoreConfig::default();
    if let Some(n) = cx.integer(t, "keep", 1..100_001) {
        c.keep = n as u32;
    }
    c.url = postgres_url(
        cx,
        t,
        "store",
        base_dir,
        "leave it out to keep checkpoints in SQLite in the state dir",
    );
    c
}

/// `url` or `url_file` (a secret: from a file) of `[section]`, checked to be a PostgreSQL URL;
/// `otherwise` says what leaving it out does. Errors never quote the URL (it may hold a
/// password).
pub(super) fn postgres_url(
    cx: &mut Cx,
    t: &Tbl<'_, '_>,
    section: &str,
    base_dir: &std::path::Path,
    otherwise: &str,
) -> Option<String> {
    let url = match (cx.string(t, "url"), cx.string(t, "url_file")) {
        (Some(_), Some(file)) => {
            cx.err(
                file.span,
                format!("[{section}] takes `url` or `url_file`, not both"),
            );
            None
        }
        (Some(url), None) => Some(url),
        (None, Some(file)) => cx
            .secret_in_file(&file, "url_file", base_dir, 0)
            .map(|value| super::reader::At {
                value,
                span: file.span,
            }),
        (None, None) => None,
    }?;
    if !(url.value.starts_with("postgres://") || url.value.starts_with("postgresql://")) {
        cx.err(
            url.span,
            format!("[{section}] url must be a PostgreSQL URL (postgres://…); {otherwise}"),
        );
        return None;
    }
    match url.value.parse::<sqlx::postgres::PgConnectOptions>() {
        Ok(_) => Some(url.value),
        Err(_) => {
            cx.err(
                url.span,
                format!(
                    "[{section}] url is not a valid PostgreSQL URL (postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE)"
                ),
            );
            None
        }
    }
}
