//! The audit journal: `<state_dir>/audit.jsonl`, append-only, one JSON object a line.

mod journal;
mod reader;
mod record;

pub use journal::{Journal, JournalHealth};
pub use reader::{Filter, names, parse_since, read, read_newest};
pub use record::{Record, format_ms, format_ts};
