//! The durable outbox: a notification accepted is a file in `state/outbox/` before anything
//! is sent, and is removed only once its channel took it. vigil killed at any moment loses
//! none: files still there are sent after the restart, and the cursor lets the journal's
//! newest records be routed again when vigil died between writing one and accepting its
//! notification (ids make that replay send nothing twice).

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::message::Message;
use crate::owned_file::write_durably;

/// One accepted notification, waiting for its channel.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub message: Message,
    /// When it was accepted (wall-clock ms): it is given up a day later.
    pub accepted_ms: i64,
}

/// The newest journal record routed, and the ids routed at that very time (several records
/// can share a millisecond).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Cursor {
    pub ts: Option<String>,
    #[serde(default)]
    pub ids: Vec<String>,
}

pub struct Outbox {
    dir: PathBuf,
}

impl Outbox {
    pub fn new(state_dir: &Path) -> Outbox {
        Outbox {
            dir: state_dir.join("outbox"),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path_of(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// What waits, oldest first, and a warning per file that could not be read (moved aside
    /// to `damaged/`, never deleted).
    pub fn pending(&self) -> io::Result<(Vec<Entry>, Vec<String>)> {
        let mut entries = Vec::new();
        let mut warnings = Vec::new();
        let listing = match fs::read_dir(&self.dir) {
            Ok(l) => l,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((entries, warnings)),
            Err(e) => return Err(e),
        };
        for item in listing {
            let path = item?.path();
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
            let Some(name) = name.filter(|n| n.ends_with(".json") && !n.starts_with('.')) else {
                continue;
            };
            match fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<Entry>(&b).map_err(|e| e.to_string()))
            {
                Ok(entry) => entries.push(entry),
                Err(why) => {
                    let aside = self.dir.join("damaged").join(&name);
                    let _ = fs::create_dir_all(self.dir.join("damaged"));
                    let _ = fs::rename(&path, &aside);
                    warnings.push(format!(
                        "outbox: {} cannot be read ({why}); moved to {}",
                        path.display(),
                        aside.display()
                    ));
                }
            }
        }
        entries.sort_by_key(|e| e.accepted_ms);
        Ok((entries, warnings))
    }

    /// Keep `entry` durably. Only then is it accepted.
    pub fn accept(&self, entry: &Entry) -> io::Result<()> {
        fs::create_dir_all(&self.dir)?;
        let bytes = serde_json::to_vec(entry).map_err(io::Error::other)?;
        write_durably(&self.path_of(&entry.message.id), &bytes)
    }

    /// Its channel took it.
    pub fn delivered(&self, id: &str) -> io::Result<()> {
        match fs::remove_file(self.path_of(id)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Never to be sent (refused by its channel, or a day old): kept in `failed/` for a human.
    pub fn failed(&self, id: &str) -> io::Result<()> {
        fs::create_dir_all(self.dir.join("failed"))?;
        fs::rename(
            self.path_of(id),
            self.dir.join("failed").join(format!("{id}.json")),
        )
    }

    pub fn cursor(&self) -> Cursor {
        fs::read(self.dir.join("cursor"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Written after the entries it covers are accepted.
    pub fn set_cursor(&self, ts: &str, ids: &HashSet<String>) -> io::Result<()> {
        fs::create_dir_all(&self.dir)?;
        let cursor = Cursor {
            ts: Some(ts.to_string()),
            ids: ids.iter().cloned().collect(),
        };
        write_durably(
            &self.dir.join("cursor"),
            &serde_json::to_vec(&cursor).map_err(io::Error::other)?,
        )
    }
}
