//! One module per CLI command: most work from files (no daemon needed); `control` talks to
//! a running vigil over its API.

pub mod audit;
pub mod check;
pub mod check_live;
pub mod checkpoint;
pub mod control;
pub mod doctor;
pub mod explain;
pub mod files;
pub mod fleet;
pub mod graph;
pub mod logs;
pub mod notify;

use std::borrow::Cow;
use std::path::PathBuf;

use crate::cli::ConfigArgs;
use crate::config;

/// Exit codes shared by every command.
pub const EXIT_OK: i32 = 0;
pub const EXIT_FAILURE: i32 = 1;
pub const EXIT_USAGE: i32 = 2;

/// Text from agents (their output, their check details) made safe for a terminal: control
/// characters — escape sequences that retitle a terminal, move its cursor or worse — are shown
/// as `�` instead of being obeyed. Tabs and newlines stay.
pub fn printable(s: &str) -> Cow<'_, str> {
    if s.chars().any(|c| c.is_control() && c != '\t' && c != '\n') {
        Cow::Owned(
            s.chars()
                .map(|c| {
                    if c.is_control() && c != '\t' && c != '\n' {
                        '\u{FFFD}'
                    } else {
                        c
                    }
                })
                .collect(),
        )
    } else {
        Cow::Borrowed(s)
    }
}

/// The state dir for commands that only read files: `--state-dir`, else the config's (only its
/// `[vigil]` table is read: a mistake elsewhere does not hide the journal that explains it).
pub fn state_dir(cfg: &ConfigArgs) -> Result<PathBuf, String> {
    if let Some(dir) = &cfg.state_dir {
        return Ok(dir.clone());
    }
    match config::load_head(&cfg.config, None) {
        Ok(c) => Ok(c.state_dir),
        Err(config::LoadError::Read { path, source }) => Err(format!(
            "cannot read config {path} ({source}); pass -c FILE or --state-dir DIR"
        )),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn escapes_are_shown_not_obeyed() {
        assert_eq!(super::printable("ok\tfine\n"), "ok\tfine\n");
        assert_eq!(
            super::printable("\x1b]0;pwned\x07\x1b[2Jboom"),
            "\u{FFFD}]0;pwned\u{FFFD}\u{FFFD}[2Jboom"
        );
    }
}
