//! The audit journal: `<state_dir>/audit.jsonl`, append-only, one JSON object a line.

mod journal;
mod reader;
mod record;

pub use journal::Journal;
pub use reader::{Filter, read, read_newest};
pub use record::{Record, format_ts};
