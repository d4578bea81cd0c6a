//! Guarded files (`[[agents.NAME.files]]`): before every start each is checked — there,
//! readable, parseable in its format, every required key present — and an invalid one is
//! mended as its `repair` allows: the last known good copy put back, or missing keys filled
//! from `defaults`; always after a backup of the bad copy, never by quoting a value. Run off
//! the supervision loop (`runtime::files_worker`); the core decides what the verdict means.

pub mod document;
pub mod store;

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde_json::Value;
use vigil_core::{FileRepair, FilesVerdict};

use crate::config::{GuardedFile, Repair};
pub use store::{FileStore, Kept};

/// What a guarded file is now.
#[derive(Debug)]
pub enum FileState {
    Valid {
        doc: Value,
        bytes: Vec<u8>,
    },
    Missing,
    Invalid {
        /// In words, without any value of the file (`missing /api_key_file`).
        problem: String,
        /// Its bytes, when they could be read (kept as the backup before a repair).
        bytes: Option<Vec<u8>>,
        /// Its tree, when it parsed (missing keys only).
        doc: Option<Value>,
    },
}

impl FileState {
    pub fn problem(&self) -> Option<String> {
        match self {
            FileState::Valid { .. } => None,
            FileState::Missing => Some("missing".into()),
            FileState::Invalid { problem, .. } => Some(problem.clone()),
        }
    }
}

/// Read and judge a file against its rules.
pub fn inspect(file: &GuardedFile) -> FileState {
    let bytes = match read_limited(&file.path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return FileState::Missing,
        Err(e) => {
            return FileState::Invalid {
                problem: format!("unreadable ({e})"),
                bytes: None,
                doc: None,
            };
        }
    };
    judge(file, bytes)
}

/// Judge bytes (the file's, or a kept copy's) against the file's rules.
fn judge(file: &GuardedFile, bytes: Vec<u8>) -> FileState {
    let doc = match document::parse(file.format, &bytes) {
        Ok(d) => d,
        Err(problem) => {
            return FileState::Invalid {
                problem,
                bytes: Some(bytes),
                doc: None,
            };
        }
    };
    let missing: Vec<&str> = file
        .required
        .iter()
        .filter(|p| document::get(&doc, p).is_none())
        .map(String::as_str)
        .collect();
    if missing.is_empty() {
        FileState::Valid { doc, bytes }
    } else {
        FileState::Invalid {
            problem: format!("missing {}", missing.join(", ")),
            bytes: Some(bytes),
            doc: Some(doc),
        }
    }
}

fn read_limited(path: &Path) -> io::Result<Vec<u8>> {
    let f = File::open(path)?;
    if f.metadata()?.is_dir() {
        return Err(io::Error::other("a directory, not a file"));
    }
    let mut bytes = Vec::new();
    f.take(document::MAX_SIZE + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > document::MAX_SIZE {
        return Err(io::Error::other("larger than 16 MiB"));
    }
    Ok(bytes)
}

/// Check every file of `agent` before a start, mending what its `repair` allows.
pub fn guard(agent: &str, files: &[GuardedFile], store: &FileStore, now_ms: i64) -> FilesVerdict {
    let mut repaired = Vec::new();
    for file in files {
        let state = inspect(file);
        if matches!(state, FileState::Valid { .. }) {
            continue;
        }
        match mend(agent, file, state, store, now_ms) {
            Ok(r) => repaired.push(r),
            Err(problem) => {
                return FilesVerdict::Broken {
                    path: file.path.display().to_string(),
                    problem,
                    repaired,
                };
            }
        }
    }
    FilesVerdict::Ready { repaired }
}

/// Keep the valid files of a run that proved healthy as their last known good copies.
pub fn keep(agent: &str, run: u64, files: &[GuardedFile], store: &FileStore, now_ms: i64) {
    for file in files {
        if let FileState::Valid { bytes, .. } = inspect(file)
            && let Err(e) = store.keep_good(agent, &file.path, &bytes, run, file.keep, now_ms)
        {
            tracing::warn!(
                "{agent}: cannot keep a good copy of {}: {e}",
                file.path.display()
            );
        }
    }
}

/// Mend one invalid file; the problem that stays when it cannot be mended.
fn mend(
    agent: &str,
    file: &GuardedFile,
    state: FileState,
    store: &FileStore,
    now_ms: i64,
) -> Result<FileRepair, String> {
    let problem = state.problem().unwrap_or_default();
    let (bad_bytes, bad_doc) = match state {
        FileState::Invalid { bytes, doc, .. } => (bytes, doc),
        _ => (None, None),
    };
    if file.repair == Repair::None {
        return Err(format!("{problem} (repair = \"none\")"));
    }
    let before = bad_doc.clone().unwrap_or(Value::Null);
    let mut fix: Option<(Vec<u8>, Vec<String>, String)> = None;
    if file.repair == Repair::Restore {
        for good in store.good(agent, &file.path) {
            let Ok(bytes) = fs::read(&good.path) else {
                continue;
            };
            // Kept under older rules: it must pass today's.
            if let FileState::Valid { doc, bytes } = judge(file, bytes) {
                let run = good
                    .run
                    .map_or(String::new(), |r| format!(" after run {r}"));
                let when = crate::audit::format_ts(
                    std::time::UNIX_EPOCH
                        + std::time::Duration::from_millis(good.at_ms.max(0) as u64),
                );
                let keys = document::changed_keys(&before, &doc);
                fix = Some((
                    bytes,
                    keys,
                    format!("restored the good copy kept{run} ({when})"),
                ));
                break;
            }
        }
    }
    let fix = match fix {
        Some(f) => f,
        None => fill_defaults(file, &problem, bad_bytes.is_some(), bad_doc)
            .map(|(bytes, keys)| (bytes, keys, "filled in its defaults".to_string()))
            .map_err(|why| match file.repair {
                Repair::Restore => format!("{problem}, and no good copy is kept yet ({why})"),
                _ => format!("{problem} ({why})"),
            })?,
    };
    let (bytes, keys, how) = fix;
    let backup = match &bad_bytes {
        Some(bad) => Some(
            store
                .keep_bad(agent, &file.path, bad, file.keep, now_ms)
                .map_err(|e| {
                    format!("{problem}, and no backup of it could be kept ({e}): not repaired")
                })?,
        ),
        None => None,
    };
    replace(&file.path, &bytes)
        .map_err(|e| format!("{problem}, and it could not be rewritten ({e})"))?;
    if let Some(still) = inspect(file).problem() {
        return Err(format!("{problem}; after the repair it is still {still}"));
    }
    Ok(FileRepair {
        path: file.path.display().to_string(),
        problem,
        how,
        keys,
        backup: backup.map(|b| b.display().to_string()),
    })
}

/// The file with its missing keys filled from `defaults`: (bytes, keys set). A file that does
/// not parse cannot be filled in; a missing one starts empty.
fn fill_defaults(
    file: &GuardedFile,
    problem: &str,
    existed: bool,
    doc: Option<Value>,
) -> Result<(Vec<u8>, Vec<String>), String> {
    if file.defaults.is_empty() {
        return Err("it has no defaults".into());
    }
    let mut doc = match doc {
        Some(d) => d,
        None if !existed => Value::Object(Default::default()),
        None => return Err(format!("defaults cannot mend a file that is {problem}")),
    };
    let mut keys = Vec::new();
    for (pointer, value) in &file.defaults {
        if document::get(&doc, pointer).is_none() {
            if !document::set(&mut doc, pointer, value.clone()) {
                return Err(format!(
                    "{pointer} cannot be set: a value that is not a table is in the way"
                ));
            }
            keys.push(pointer.clone());
        }
    }
    let missing: Vec<&str> = file
        .required
        .iter()
        .filter(|p| document::get(&doc, p).is_none())
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        return Err(format!("no default for {}", missing.join(", ")));
    }
    let bytes = document::render(file.format, &doc)?;
    Ok((bytes, keys))
}

/// Replace the file at `path` whole (a kill -9 midway leaves the old file or the new one,
/// never half of each), keeping its owner and mode (a new file: the directory's owner, 0600).
///
/// vigil may run as root for agents that run as other users, who may own the directory: so
/// it never writes through a symbolic link. The directory is opened once with no link
/// anywhere on its path (`RESOLVE_NO_SYMLINKS`), and everything after happens relative to
/// that open directory — a link swapped in meanwhile cannot send the write elsewhere; the
/// temporary file is created exclusively, and the rename replaces the name itself.
fn replace(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags};
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::other("no file name"))?;
    let dirfd = rustix::fs::openat2(
        rustix::fs::CWD,
        dir,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )
    .map_err(|e| match e {
        rustix::io::Errno::LOOP => io::Error::other(format!(
            "a symbolic link is on the way to {}: vigil does not write through links (name the real place)",
            dir.display()
        )),
        e => io::Error::from(e),
    })?;
    let (mode, owner) = match rustix::fs::statat(&dirfd, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st)
            if rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Symlink =>
        {
            return Err(io::Error::other(
                "it is a symbolic link: vigil does not write through links",
            ));
        }
        Ok(st) => (st.st_mode & 0o7777, Some((st.st_uid, st.st_gid))),
        Err(_) => {
            let st = rustix::fs::fstat(&dirfd)?;
            (0o600, Some((st.st_uid, st.st_gid)))
        }
    };
    let tmp = format!(".{}.vigil-{}", name.to_string_lossy(), std::process::id());
    let _ = rustix::fs::unlinkat(&dirfd, tmp.as_str(), AtFlags::empty());
    let fd = rustix::fs::openat(
        &dirfd,
        tmp.as_str(),
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )?;
    let mut f = File::from(fd);
    let written = (|| {
        f.write_all(bytes)?;
        if let Some((uid, gid)) = owner {
            // Only root may give a file away; anyone else keeps it as theirs.
            match std::os::unix::fs::fchown(&f, Some(uid), Some(gid)) {
                Err(e) if e.kind() != io::ErrorKind::PermissionDenied => return Err(e),
                _ => {}
            }
        }
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.sync_all()?;
        rustix::fs::renameat(&dirfd, tmp.as_str(), &dirfd, name)?;
        rustix::fs::fsync(&dirfd).map_err(io::Error::from)
    })();
    if written.is_err() {
        let _ = rustix::fs::unlinkat(&dirfd, tmp.as_str(), AtFlags::empty());
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FileFormat;
    use serde_json::json;

    fn file(dir: &Path, repair: Repair) -> GuardedFile {
        GuardedFile {
            path: dir.join("BTC.json"),
            format: FileFormat::Json,
            required: vec!["/api_key_file".into(), "/risk/max_position".into()],
            defaults: vec![("/risk/max_position".into(), json!(0.1))],
            repair,
            keep: 3,
        }
    }

    #[test]
    fn a_truncated_file_is_restored_from_its_last_good_copy_with_a_backup() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(&dir.path().join("state"));
        let f = file(dir.path(), Repair::Restore);
        let good =
            br#"{"api_key_file": "/etc/k", "secret": "hunter2", "risk": {"max_position": 0.5}}"#;
        fs::write(&f.path, good).unwrap();
        keep("t", 7, std::slice::from_ref(&f), &store, 1_000);
        fs::write(&f.path, &good[..30]).unwrap();
        let verdict = guard("t", std::slice::from_ref(&f), &store, 2_000);
        let FilesVerdict::Ready { repaired } = verdict else {
            panic!("{verdict:?}")
        };
        assert_eq!(fs::read(&f.path).unwrap(), good);
        assert!(
            repaired[0].problem.starts_with("not valid JSON"),
            "{:?}",
            repaired[0]
        );
        assert!(
            repaired[0]
                .how
                .starts_with("restored the good copy kept after run 7")
        );
        let backup = repaired[0].backup.as_ref().unwrap();
        assert_eq!(fs::read(backup).unwrap(), &good[..30]);
        assert!(!format!("{repaired:?}").contains("hunter2"));
    }

    #[test]
    fn a_file_behind_a_symbolic_link_is_never_written() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(&dir.path().join("state"));
        let victim = dir.path().join("victim");
        fs::write(&victim, r#"{"a": 1}"#).unwrap();
        let mut f = file(dir.path(), Repair::Defaults);
        f.required = vec!["/risk/max_position".into()];
        // The file itself a link.
        std::os::unix::fs::symlink(&victim, &f.path).unwrap();
        let FilesVerdict::Broken { problem, .. } = guard("t", std::slice::from_ref(&f), &store, 1)
        else {
            panic!()
        };
        assert!(problem.contains("symbolic link"), "{problem}");
        // A directory on the way a link.
        let real = dir.path().join("real");
        fs::create_dir(&real).unwrap();
        std::os::unix::fs::symlink(&real, dir.path().join("via")).unwrap();
        f.path = dir.path().join("via/BTC.json");
        let FilesVerdict::Broken { problem, .. } = guard("t", &[f], &store, 1) else {
            panic!()
        };
        assert!(problem.contains("symbolic link is on the way"), "{problem}");
        assert_eq!(fs::read_to_string(&victim).unwrap(), r#"{"a": 1}"#);
        assert!(fs::read_dir(&real).unwrap().next().is_none());
    }

    #[test]
    fn missing_keys_are_filled_from_defaults_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(&dir.path().join("state"));
        let f = file(dir.path(), Repair::Defaults);
        fs::write(&f.path, br#"{"api_key_file": "/etc/k"}"#).unwrap();
        let FilesVerdict::Ready { repaired } = guard("t", std::slice::from_ref(&f), &store, 1)
        else {
            panic!()
        };
        assert_eq!(repaired[0].problem, "missing /risk/max_position");
        assert_eq!(repaired[0].keys, vec!["/risk/max_position"]);
        let doc: Value = serde_json::from_slice(&fs::read(&f.path).unwrap()).unwrap();
        assert_eq!(doc["risk"]["max_position"], 0.1);
    }

    #[test]
    fn what_cannot_be_mended_is_broken_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(&dir.path().join("state"));
        let none = file(dir.path(), Repair::None);
        fs::write(&none.path, br#"{"risk": {}}"#).unwrap();
        let v = guard("t", std::slice::from_ref(&none), &store, 1);
        assert_eq!(
            v,
            FilesVerdict::Broken {
                path: none.path.display().to_string(),
                problem: "missing /api_key_file, /risk/max_position (repair = \"none\")".into(),
                repaired: Vec::new(),
            }
        );
        assert_eq!(fs::read(&none.path).unwrap(), br#"{"risk": {}}"#);
        // No good copy yet, and no default for the key file.
        let restore = file(dir.path(), Repair::Restore);
        let FilesVerdict::Broken { problem, .. } = guard("t", &[restore], &store, 1) else {
            panic!()
        };
        assert!(
            problem.contains("no good copy is kept yet (no default for /api_key_file)"),
            "{problem}"
        );
        assert!(
            store.bad("t", &none.path).is_empty(),
            "nothing written, nothing backed up"
        );
    }
}
