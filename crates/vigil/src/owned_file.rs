//! Files vigil keeps open in its state dir while someone deletes, moves or replaces the dir
//! (`rm -rf`, a tmp cleaner, a restore from backup). Writes through a descriptor whose name is
//! gone succeed and are lost; so before trusting a write, the file at the path must still be
//! the one written to.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// `path` no longer names `file`: deleted, moved away, or replaced. (An error other than "not
/// found" says nothing either way and counts as not stale.)
pub fn is_stale(file: &File, path: &Path) -> bool {
    let Ok(open) = file.metadata() else {
        return false;
    };
    match fs::metadata(path) {
        Ok(named) => (named.dev(), named.ino()) != (open.dev(), open.ino()),
        Err(e) => e.kind() == io::ErrorKind::NotFound,
    }
}

/// Open with `open`; when the directory is gone, make it again first (it is vigil's).
pub fn open_creating_dir<T>(path: &Path, open: impl Fn() -> io::Result<T>) -> io::Result<T> {
    match open() {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                fs::create_dir_all(dir)?;
            }
            open()
        }
        other => other,
    }
}

/// Put `bytes` at `path` whole or not at all, and durably: written to a temporary file beside
/// it (mode 0600), synced, renamed over `path`, and the directory synced. A crash at any step
/// leaves the old file or the new one, never a mix.
pub fn write_durably(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let tmp = dir.join(format!(".tmp-{}-{name}", std::process::id()));
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deleted_moved_or_replaced_file_is_stale() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/f");
        let open = || File::options().create(true).append(true).open(&path);
        let file = open_creating_dir(&path, open).unwrap();
        assert!(!is_stale(&file, &path));
        fs::rename(&path, dir.path().join("moved")).unwrap();
        assert!(is_stale(&file, &path));
        let other = open().unwrap();
        assert!(is_stale(&file, &path) && !is_stale(&other, &path));
        fs::remove_dir_all(dir.path().join("sub")).unwrap();
        assert!(is_stale(&other, &path));
        let again = open_creating_dir(&path, open).unwrap();
        assert!(!is_stale(&again, &path));
    }
}
