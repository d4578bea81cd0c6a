//! Where vigil keeps copies of guarded files, in its state dir: the last known good ones (with
//! the run that proved them) and backups of bad ones taken before a repair overwrote them.
//! `files/AGENT/NAME-HASH/good-MS-runN.EXT` and `…/bad-MS.EXT`, readable by vigil's user only
//! (a config file may hold secrets).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// One kept copy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kept {
    pub path: PathBuf,
    /// When it was kept (wall-clock milliseconds).
    pub at_ms: i64,
    /// The run that proved it good (good copies only).
    pub run: Option<u64>,
}

#[derive(Clone, Debug)]
pub struct FileStore {
    root: PathBuf,
}

impl FileStore {
    pub fn new(state_dir: &Path) -> FileStore {
        FileStore {
            root: state_dir.join("files"),
        }
    }

    /// The directory of one guarded file of one agent: its name for people, a hash of its
    /// whole path so two `config.json` in different places never share one.
    fn dir(&self, agent: &str, file: &Path) -> PathBuf {
        use std::os::unix::ffi::OsStrExt;
        let hash = stable_hash(file.as_os_str().as_bytes());
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().replace(['/', '\0'], "_"))
            .unwrap_or_else(|| "file".into());
        self.root
            .join(agent)
            .join(format!("{name}-{:08x}", hash as u32))
    }

    /// Good copies, newest first.
    pub fn good(&self, agent: &str, file: &Path) -> Vec<Kept> {
        self.list(agent, file, "good-")
    }

    /// Backups of bad copies, newest first.
    pub fn bad(&self, agent: &str, file: &Path) -> Vec<Kept> {
        self.list(agent, file, "bad-")
    }

    fn list(&self, agent: &str, file: &Path, prefix: &str) -> Vec<Kept> {
        let Ok(entries) = fs::read_dir(self.dir(agent, file)) else {
            return Vec::new();
        };
        let mut kept: Vec<Kept> = entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let rest = name.strip_prefix(prefix)?;
                let stem = rest.split('.').next()?;
                let mut parts = stem.split('-');
                let at_ms = parts.next()?.parse().ok()?;
                let run = parts
                    .next()
                    .and_then(|r| r.strip_prefix("run"))
                    .and_then(|r| r.parse().ok());
                Some(Kept {
                    path: e.path(),
                    at_ms,
                    run,
                })
            })
            .collect();
        kept.sort_by(|a, b| b.at_ms.cmp(&a.at_ms).then(b.path.cmp(&a.path)));
        kept
    }

    /// Keep `bytes` as the newest good copy, proven by `run`, unless the newest already holds
    /// them; keep at most `keep`. Returns where it was kept, if it was.
    pub fn keep_good(
        &self,
        agent: &str,
        file: &Path,
        bytes: &[u8],
        run: u64,
        keep: usize,
        now_ms: i64,
    ) -> io::Result<Option<PathBuf>> {
        let good = self.good(agent, file);
        if let Some(newest) = good.first()
            && fs::read(&newest.path).is_ok_and(|b| b == bytes)
        {
            return Ok(None);
        }
        let name = format!("good-{now_ms}-run{run}{}", ext(file));
        let path = self.write(agent, file, &name, bytes)?;
        self.prune(agent, file, "good-", keep);
        Ok(Some(path))
    }

    /// Keep a bad copy before it is overwritten; keep at most `keep` of them.
    pub fn keep_bad(
        &self,
        agent: &str,
        file: &Path,
        bytes: &[u8],
        keep: usize,
        now_ms: i64,
    ) -> io::Result<PathBuf> {
        let name = format!("bad-{now_ms}{}", ext(file));
        let path = self.write(agent, file, &name, bytes)?;
        self.prune(agent, file, "bad-", keep);
        Ok(path)
    }

    fn prune(&self, agent: &str, file: &Path, prefix: &str, keep: usize) {
        for old in self.list(agent, file, prefix).into_iter().skip(keep.max(1)) {
            let _ = fs::remove_file(old.path);
        }
    }

    /// Written whole or not at all: a kill -9 mid-write leaves a temporary file, never a torn
    /// copy under a kept name.
    fn write(&self, agent: &str, file: &Path, name: &str, bytes: &[u8]) -> io::Result<PathBuf> {
        let dir = self.dir(agent, file);
        fs::create_dir_all(&dir)?;
        let mut path = dir.join(name);
        // Two copies in one millisecond: the second gets a suffix rather than replace the first.
        let mut n = 1;
        while path.exists() {
            path = dir.join(format!("{name}.{n}"));
            n += 1;
        }
        crate::owned_file::write_durably(&path, bytes)?;
        Ok(path)
    }
}

/// FNV-1a: the same for the same bytes in every build of vigil (kept copies are found again
/// after an upgrade), and cheap.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    vigil_core::fnv::fnv1a(bytes.iter().copied())
}

fn ext(file: &Path) -> String {
    file.extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_copies_are_kept_once_newest_first_and_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path());
        let file = Path::new("/srv/bot/config.json");
        for (i, text) in ["a", "a", "b", "c", "d"].iter().enumerate() {
            store
                .keep_good("bot", file, text.as_bytes(), i as u64, 3, 1000 + i as i64)
                .unwrap();
        }
        let good = store.good("bot", file);
        assert_eq!(good.len(), 3);
        assert_eq!(good[0].run, Some(4));
        assert_eq!(fs::read(&good[0].path).unwrap(), b"d");
        assert_eq!(good[2].run, Some(2), "the repeat of `a` was not kept twice");
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&good[0].path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        store.keep_bad("bot", file, b"{", 2, 5000).unwrap();
        store.keep_bad("bot", file, b"{{", 2, 5000).unwrap();
        assert_eq!(store.bad("bot", file).len(), 2);
    }
}
