//! `vigil audit`: read the journal.

use std::path::Path;
use std::time::SystemTime;

use vigil_core::AuditAction;

use crate::audit::{Filter, Record, read};

/// `--since 1h` (a duration ago) or `--since 2026-11-23T10:00:00Z`.
pub fn parse_since(s: &str, now: SystemTime) -> Result<SystemTime, String> {
    crate::audit::parse_since(s, now).map_err(|e| format!("--since {e}"))
}

pub fn check_action(action: &str) -> Result<(), String> {
    if AuditAction::from_name(action).is_some() {
        return Ok(());
    }
    let known: Vec<&str> = AuditAction::ALL.iter().map(|a| a.as_str()).collect();
    Err(format!(
        "--action {action:?} is not an audit action; known actions: {}",
        known.join(", ")
    ))
}

pub fn format_human(r: &Record) -> String {
    let ts = r.ts.replacen('T', " ", 1).trim_end_matches('Z').to_string();
    let mut line = format!(
        "{ts}  {:<20} {:<13} {}",
        r.agent.as_deref().unwrap_or("(vigil)"),
        r.action,
        r.reason
    );
    if let Some(e) = &r.error {
        line.push_str(&format!(" — error: {e}"));
    }
    line
}

pub struct Query<'a> {
    pub state_dir: &'a Path,
    pub filter: Filter,
    pub json: bool,
}

/// Print matching records; returns how many were printed.
pub fn print(q: &Query<'_>) -> std::io::Result<usize> {
    let (records, warnings) = read(&q.state_dir.join("audit.jsonl"), &q.filter)?;
    for w in warnings {
        eprintln!("warning: {w}");
    }
    for r in &records {
        if q.json {
            println!("{}", serde_json::to_string(r).unwrap_or_default());
        } else {
            println!("{}", super::printable(&format_human(r)));
        }
    }
    Ok(records.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn since_accepts_durations_and_timestamps() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(10_000);
        assert_eq!(
            parse_since("1h", now),
            Ok(SystemTime::UNIX_EPOCH + Duration::from_secs(6_400))
        );
        assert_eq!(
            parse_since("1970-01-01T00:00:05Z", now),
            Ok(SystemTime::UNIX_EPOCH + Duration::from_secs(5))
        );
        assert!(
            parse_since("yesterday", now)
                .unwrap_err()
                .contains("RFC 3339")
        );
    }
}
