//! The local copy of a checkpoint: what the agent keeps when vigil cannot be reached, and its
//! last synced version otherwise. Written whole or not at all, and durably.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The file's content.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LocalCopy {
    pub agent: String,
    /// The version in vigil this state is (when synced) or was built on (when pending).
    pub version: i64,
    /// Not in vigil yet: written while vigil could not be reached.
    pub pending: bool,
    /// When the agent saved it (Unix seconds).
    pub saved_at: f64,
    pub state: serde_json::Value,
}

/// Where an agent's local copy lives: `VIGIL_CHECKPOINT_DIR`, else `agent-checkpoints/` in
/// vigil's state dir, else `.vigil-checkpoints/` in the working directory.
pub fn path_for(env: &crate::Env, name: &str) -> PathBuf {
    let dir = env
        .checkpoint_dir
        .clone()
        .or_else(|| env.state_dir.as_ref().map(|d| d.join("agent-checkpoints")))
        .unwrap_or_else(|| PathBuf::from(".vigil-checkpoints"));
    let file: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._@-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    dir.join(format!("{}.json", file.trim_start_matches('.')))
}

pub fn read(path: &Path) -> io::Result<Option<LocalCopy>> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// A temporary file beside it, synced, renamed over it, the directory synced: a crash at any
/// step leaves the old copy or the new one.
pub fn write(path: &Path, copy: &LocalCopy) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(&serde_json::to_vec(copy).map_err(io::Error::other)?)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}
