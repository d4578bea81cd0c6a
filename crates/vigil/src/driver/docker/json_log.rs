//! A container's log read from its `json-file` log (the engine's default log driver), at the
//! moment of its `die`: the engine has finished writing it by then (it waits for the
//! container's output to be copied before it reports the end), but it still holds the
//! container for its clean-up, and a log or inspect request through the API waits ~10 ms for
//! that. The file (`LogPath`, which the API gives) is read in microseconds. Any other log
//! driver, or a file vigil may not read, goes through the API instead.
//!
//! One JSON object per line: `{"log":"text\n","stream":"stdout","time":"2026-…Z"}`.

use std::path::Path;

use serde::Deserialize;

use crate::redact::{self, Secrets};

#[derive(Deserialize)]
struct Entry {
    log: String,
    time: String,
}

/// The last `n` lines written since `since_ns` (the run's start), redacted; `None` when the
/// file cannot be read (the caller asks the API).
pub fn tail(path: &Path, since_ns: i64, n: usize, secrets: &Secrets) -> Option<Vec<String>> {
    // A run's lines are the newest: the last n lines of the file hold its last n (or all of
    // them, when it wrote fewer).
    let raw = crate::logs::tail_from(path, n, 0).ok()?;
    if raw.is_empty() && std::fs::metadata(path).is_err() {
        return None;
    }
    Some(
        raw.iter()
            .filter_map(|line| serde_json::from_str::<Entry>(line).ok())
            .filter(|e| {
                chrono::DateTime::parse_from_rfc3339(&e.time)
                    .ok()
                    .and_then(|t| t.timestamp_nanos_opt())
                    .is_some_and(|t| t >= since_ns)
            })
            .map(|e| redact::line_with(e.log.trim_end_matches(['\n', '\r']), secrets))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_run_s_own_lines_redacted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c-json.log");
        std::fs::write(
            &path,
            concat!(
                r#"{"log":"the run before\n","stream":"stdout","time":"2026-11-30T10:00:00.000000001Z"}"#,
                "\n",
                r#"{"log":"feed up\n","stream":"stdout","time":"2026-11-30T10:00:05.5Z"}"#,
                "\n",
                "not json at all\n",
                r#"{"log":"binance 429 api_key=SECRETSECRET\n","stream":"stderr","time":"2026-11-30T10:00:06Z"}"#,
                "\n",
            ),
        )
        .unwrap();
        let since = chrono::DateTime::parse_from_rfc3339("2026-11-30T10:00:05Z")
            .unwrap()
            .timestamp_nanos_opt()
            .unwrap();
        let lines = tail(&path, since, 10, &Secrets::default()).unwrap();
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert_eq!(lines[0], "feed up");
        assert!(!lines[1].contains("SECRETSECRET"), "{}", lines[1]);
        assert_eq!(
            tail(&dir.path().join("gone"), since, 10, &Secrets::default()),
            None
        );
    }
}
