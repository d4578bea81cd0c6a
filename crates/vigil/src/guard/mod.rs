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

use crate::config::{FileFormat, GuardedFile, Repair};
pub use store::{FileStore, Kept};

/// What a guarded file is now.
#[derive(Debug)]
pub enum FileState {
    Valid {
        doc: Value,
        bytes: Vec<u8>,
        /// Reached through a symbolic link: judged, never kept nor mended.
        linked: bool,
    },
    Missing,
    Invalid {
        /// In words, without any value of the file (`missing /api_key_file`).
        problem: String,
        /// Its bytes, when they could be read (kept as the backup before a repair).
        bytes: Option<Vec<u8>>,
        /// Its tree, when it parsed (missing keys only).
        doc: Option<Value>,
        linked: bool,
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
    let (bytes, linked) = match read_limited(&file.path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return FileState::Missing,
        Err(e) => {
            return FileState::Invalid {
                problem: format!("unreadable ({e})"),
                bytes: None,
                doc: None,
                linked: false,
            };
        }
    };
    judge(file, bytes, linked)
}

/// Judge bytes (the file's, or a kept copy's) against the file's rules.
fn judge(file: &GuardedFile, bytes: Vec<u8>, linked: bool) -> FileState {
    let doc = match document::parse(file.format, &bytes) {
        Ok(d) => d,
        Err(problem) => {
            return FileState::Invalid {
                problem,
                bytes: Some(bytes),
                doc: None,
                linked,
            };
        }
    };
    let missing = missing_keys(file, &doc);
    if missing.is_empty() {
        FileState::Valid { doc, bytes, linked }
    } else {
        FileState::Invalid {
            problem: format!("missing {}", missing.join(", ")),
            bytes: Some(bytes),
            doc: Some(doc),
            linked,
        }
    }
}

/// The required keys `doc` lacks.
fn missing_keys<'f>(file: &'f GuardedFile, doc: &Value) -> Vec<&'f str> {
    file.required
        .iter()
        .filter(|p| document::get(doc, p).is_none())
        .map(String::as_str)
        .collect()
}

/// The file's bytes, and whether a symbolic link was on the way. Only a regular file is
/// read: a FIFO or a device would block the guard's thread (and every start behind it), so
/// it is opened without blocking and refused.
fn read_limited(path: &Path) -> io::Result<(Vec<u8>, bool)> {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    let (fd, linked) = match rustix::fs::openat2(
        rustix::fs::CWD,
        path,
        flags | OFlags::NOFOLLOW,
        Mode::empty(),
        ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    ) {
        Ok(fd) => (fd, false),
        Err(rustix::io::Errno::LOOP) => (rustix::fs::open(path, flags, Mode::empty())?, true),
        Err(e) => return Err(e.into()),
    };
    let st = rustix::fs::fstat(&fd)?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
        return Err(io::Error::other("not a regular file"));
    }
    let mut bytes = Vec::new();
    File::from(fd)
        .take(document::MAX_SIZE + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > document::MAX_SIZE {
        return Err(io::Error::other("larger than 16 MiB"));
    }
    Ok((bytes, linked))
}

/// What a start's check found each file to hold: (path, a hash of its bytes), for the files
/// that were valid (as found, or as mended).
pub type Validated = Vec<(std::path::PathBuf, u64)>;

/// Check every file of `agent` before a start, mending what its `repair` allows.
pub fn guard(
    agent: &str,
    files: &[GuardedFile],
    store: &FileStore,
    now_ms: i64,
) -> (FilesVerdict, Validated) {
    let mut repaired = Vec::new();
    let mut validated = Vec::new();
    for file in files {
        let state = inspect(file);
        if let FileState::Valid { bytes, .. } = &state {
            validated.push((file.path.clone(), store::stable_hash(bytes)));
            continue;
        }
        match mend(agent, file, state, store, now_ms) {
            Ok((r, hash)) => {
                repaired.push(r);
                validated.push((file.path.clone(), hash));
            }
            Err(problem) => {
                let broken = FilesVerdict::Broken {
                    path: file.path.display().to_string(),
                    problem,
                    repaired,
                };
                return (broken, validated);
            }
        }
    }
    (FilesVerdict::Ready { repaired }, validated)
}

/// Keep the files of a run that proved healthy as their last known good copies — only as the
/// run found them at its start (`validated`): an edit made since, which the run never read,
/// proves nothing. A file reached through a symbolic link is never kept.
pub fn keep(
    agent: &str,
    run: u64,
    files: &[GuardedFile],
    validated: &Validated,
    store: &FileStore,
    now_ms: i64,
) {
    for file in files {
        let Some((_, expected)) = validated.iter().find(|(p, _)| *p == file.path) else {
            continue;
        };
        let FileState::Valid {
            bytes,
            linked: false,
            ..
        } = inspect(file)
        else {
            continue;
        };
        if store::stable_hash(&bytes) != *expected {
            continue;
        }
        if let Err(e) = store.keep_good(agent, &file.path, &bytes, run, file.keep, now_ms) {
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
) -> Result<(FileRepair, u64), String> {
    let problem = state.problem().unwrap_or_default();
    let (bad_bytes, bad_doc, linked) = match state {
        FileState::Invalid {
            bytes, doc, linked, ..
        } => (bytes, doc, linked),
        _ => (None, None, false),
    };
    if file.repair == Repair::None {
        return Err(format!("{problem} (repair = \"none\")"));
    }
    if linked {
        // What a link points at may be anyone's file: never copied, never written.
        return Err(format!(
            "{problem}; it is reached through a symbolic link, and vigil mends no file through \
             a link (name the real place)"
        ));
    }
    let before = bad_doc.clone().unwrap_or(Value::Null);
    let mut fix: Option<(Vec<u8>, Vec<String>, String)> = None;
    if file.repair == Repair::Restore {
        for good in store.good(agent, &file.path) {
            let Ok(bytes) = fs::read(&good.path) else {
                continue;
            };
            // Kept under older rules: it must pass today's.
            if let FileState::Valid { doc, bytes, .. } = judge(file, bytes, false) {
                let run = good
                    .run
                    .map_or(String::new(), |r| format!(" after run {r}"));
                let when = crate::audit::format_ms(good.at_ms);
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
        None => fill_defaults(file, &problem, bad_bytes.as_deref(), bad_doc)
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
    let repair = FileRepair {
        path: file.path.display().to_string(),
        problem,
        how,
        keys,
        backup: backup.map(|b| b.display().to_string()),
    };
    Ok((repair, store::stable_hash(&bytes)))
}

/// The file with its missing keys filled from `defaults`: (bytes, keys set). A file that does
/// not parse cannot be filled in; a missing one starts empty. A TOML file is edited as TOML
/// (its dates and times stay what they are); JSON and YAML are written back from the tree.
fn fill_defaults(
    file: &GuardedFile,
    problem: &str,
    bad: Option<&[u8]>,
    doc: Option<Value>,
) -> Result<(Vec<u8>, Vec<String>), String> {
    if file.defaults.is_empty() {
        return Err("it has no defaults".into());
    }
    let mut doc = match doc {
        Some(d) => d,
        None if bad.is_none() => Value::Object(Default::default()),
        None => return Err(format!("defaults cannot mend a file that is {problem}")),
    };
    let mut toml_doc = match (file.format, bad) {
        (FileFormat::Toml, Some(b)) => Some(
            std::str::from_utf8(b)
                .ok()
                .and_then(|t| t.parse::<toml::Table>().ok())
                .ok_or_else(|| format!("defaults cannot mend a file that is {problem}"))?,
        ),
        (FileFormat::Toml, None) => Some(toml::Table::new()),
        _ => None,
    };
    let mut keys = Vec::new();
    for (pointer, value) in &file.defaults {
        if document::get(&doc, pointer).is_some() {
            continue;
        }
        let blocked =
            || format!("{pointer} cannot be set: a value that is not a table is in the way");
        if !document::set(&mut doc, pointer, value.clone()) {
            return Err(blocked());
        }
        if let Some(t) = &mut toml_doc
            && !document::set_toml(t, pointer, value)
        {
            return Err(blocked());
        }
        keys.push(pointer.clone());
    }
    let missing = missing_keys(file, &doc);
    if !missing.is_empty() {
        return Err(format!("no default for {}", missing.join(", ")));
    }
    let bytes = match &toml_doc {
        Some(t) => toml::to_string_pretty(t)
            .map(String::into_bytes)
            .map_err(|e| e.to_string())?,
        None => document::render(file.format, &doc)?,
    };
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
        let (_, validated) = guard("t", std::slice::from_ref(&f), &store, 500);
        keep("t", 7, std::slice::from_ref(&f), &validated, &store, 1_000);
        fs::write(&f.path, &good[..30]).unwrap();
        let (verdict, _) = guard("t", std::slice::from_ref(&f), &store, 2_000);
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
        let FilesVerdict::Broken { problem, .. } =
            guard("t", std::slice::from_ref(&f), &store, 1).0
        else {
            panic!()
        };
        assert!(problem.contains("symbolic link"), "{problem}");
        assert!(
            store.bad("t", &f.path).is_empty(),
            "what a link points at is never copied"
        );
        // A directory on the way a link.
        let real = dir.path().join("real");
        fs::create_dir(&real).unwrap();
        std::os::unix::fs::symlink(&real, dir.path().join("via")).unwrap();
        f.path = dir.path().join("via/BTC.json");
        let FilesVerdict::Broken { problem, .. } = guard("t", &[f], &store, 1).0 else {
            panic!()
        };
        assert!(problem.contains("symbolic link"), "{problem}");
        assert_eq!(fs::read_to_string(&victim).unwrap(), r#"{"a": 1}"#);
        assert!(fs::read_dir(&real).unwrap().next().is_none());
    }

    #[test]
    fn a_fifo_is_refused_without_blocking_and_an_edit_after_the_start_is_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(&dir.path().join("state"));
        let f = file(dir.path(), Repair::None);
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &f.path,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        assert_eq!(
            inspect(&f).problem().as_deref(),
            Some("unreadable (not a regular file)")
        );
        fs::remove_file(&f.path).unwrap();
        fs::write(
            &f.path,
            br#"{"api_key_file": "/k", "risk": {"max_position": 1}}"#,
        )
        .unwrap();
        let (_, validated) = guard("t", std::slice::from_ref(&f), &store, 1);
        fs::write(
            &f.path,
            br#"{"api_key_file": "/k", "risk": {"max_position": 9}}"#,
        )
        .unwrap();
        keep("t", 1, std::slice::from_ref(&f), &validated, &store, 2);
        assert!(
            store.good("t", &f.path).is_empty(),
            "the run never read this one"
        );
    }

    #[test]
    fn toml_defaults_keep_dates_as_dates() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(&dir.path().join("state"));
        let mut f = file(dir.path(), Repair::Defaults);
        f.path = dir.path().join("bot.toml");
        f.format = FileFormat::Toml;
        f.required = vec!["/risk/max_position".into()];
        fs::write(&f.path, "since = 2024-01-01T00:00:00Z\n[risk]\n").unwrap();
        let (verdict, _) = guard("t", std::slice::from_ref(&f), &store, 1);
        assert!(matches!(verdict, FilesVerdict::Ready { .. }), "{verdict:?}");
        let text = fs::read_to_string(&f.path).unwrap();
        assert!(text.contains("since = 2024-01-01T00:00:00Z"), "{text}");
        assert!(text.contains("max_position = 0.1"), "{text}");
    }

    #[test]
    fn missing_keys_are_filled_from_defaults_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(&dir.path().join("state"));
        let f = file(dir.path(), Repair::Defaults);
        fs::write(&f.path, br#"{"api_key_file": "/etc/k"}"#).unwrap();
        let FilesVerdict::Ready { repaired } = guard("t", std::slice::from_ref(&f), &store, 1).0
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
        let v = guard("t", std::slice::from_ref(&none), &store, 1).0;
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
        let FilesVerdict::Broken { problem, .. } = guard("t", &[restore], &store, 1).0 else {
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
