//! One module per CLI command: most work from files (no daemon needed); `control` talks to
//! a running vigil over its API.

pub mod audit;
pub mod check;
pub mod control;
pub mod explain;
pub mod logs;

use std::path::PathBuf;

use crate::cli::ConfigArgs;
use crate::config;

/// Exit codes shared by every command.
pub const EXIT_OK: i32 = 0;
pub const EXIT_FAILURE: i32 = 1;
pub const EXIT_USAGE: i32 = 2;

/// The state dir for commands that only read files: `--state-dir`, else the config's.
pub fn state_dir(cfg: &ConfigArgs) -> Result<PathBuf, String> {
    if let Some(dir) = &cfg.state_dir {
        return Ok(dir.clone());
    }
    match config::load(&cfg.config, None) {
        Ok(c) => Ok(c.state_dir),
        Err(config::LoadError::Read { path, source }) => Err(format!(
            "cannot read config {path} ({source}); pass -c FILE or --state-dir DIR"
        )),
        Err(e) => Err(e.to_string()),
    }
}
