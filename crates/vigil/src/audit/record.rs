//! The on-disk shape of one audit record (one JSON object per line).

use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use vigil_core::AuditEntry;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// RFC 3339, UTC, milliseconds: `2026-11-23T10:00:00.123Z`.
    pub ts: String,
    /// `null` for records about vigil itself.
    pub agent: Option<String>,
    pub action: String,
    pub reason: String,
    pub success: bool,
    pub error: Option<String>,
    #[serde(default)]
    pub metadata: Map<String, Value>,
}

impl Record {
    pub fn from_entry(entry: &AuditEntry, at: SystemTime) -> Self {
        Self {
            ts: format_ts(at),
            agent: entry.agent.clone(),
            action: entry.action.as_str().to_string(),
            reason: entry.reason.clone(),
            success: entry.success,
            error: entry.error.clone(),
            metadata: entry.metadata.clone(),
        }
    }

    pub fn time(&self) -> Option<SystemTime> {
        humantime::parse_rfc3339_weak(&self.ts).ok()
    }
}

pub fn format_ts(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

/// [`format_ts`] of wall-clock milliseconds since the epoch (before it: the epoch).
pub fn format_ms(ms: i64) -> String {
    format_ts(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64))
}
