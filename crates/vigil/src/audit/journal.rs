//! Appending to `audit.jsonl`: every batch is written and fsynced before vigil acts on it.
//!
//! When a batch cannot be written (a full disk, a deleted state dir), vigil keeps supervising
//! — an agent left dead is worse than a decision recorded late — and keeps the records in
//! memory, in order: each later batch first reopens the file and writes what is waiting. A
//! write cut short is trimmed off first, so a torn line never merges with the next record.
//! While records are waiting, `/health` says `degraded`.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::SystemTime;

use vigil_core::AuditEntry;

use super::record::Record;

/// Records kept in memory while the journal cannot be written; beyond this the oldest go
/// (and are counted as dropped).
const BACKLOG_MAX: usize = 100_000;

/// How the journal is doing, for `/health` and metrics (shared with the API threads).
#[derive(Debug, Default)]
pub struct JournalHealth {
    pub failing: AtomicBool,
    pub write_errors: AtomicU64,
    pub waiting: AtomicU64,
    pub dropped: AtomicU64,
}

/// A batch that could not be written (it is kept and retried).
#[derive(Debug, thiserror::Error)]
#[error("cannot write the audit journal {}: {source}", path.display())]
pub struct JournalError {
    pub path: PathBuf,
    pub source: io::Error,
}

pub struct Journal {
    file: Option<File>,
    path: PathBuf,
    /// The file (device, inode) and its length after the last successful sync: anything
    /// beyond, in that same file, is a write that was cut short.
    good: Option<(u64, u64, u64)>,
    backlog: VecDeque<Vec<u8>>,
    health: Arc<JournalHealth>,
    /// Why the last write failed (`None` after a success).
    last_error: Option<io::Error>,
}

impl Journal {
    /// Open for appending. A torn last line (vigil killed mid-write) is closed off with a
    /// newline so it stays one unreadable line and never corrupts the next record; the
    /// returned warning says so. A journal that cannot be opened is not fatal: records wait
    /// in memory (see the module's doc) and the error is returned as the warning.
    pub fn open(path: &Path) -> (Journal, Option<String>) {
        let mut journal = Journal {
            file: None,
            path: path.to_path_buf(),
            good: None,
            backlog: VecDeque::new(),
            health: Arc::default(),
            last_error: None,
        };
        let warning = match journal.reopen() {
            Ok(w) => w,
            Err(e) => {
                journal.health.failing.store(true, Ordering::Relaxed);
                Some(format!(
                    "cannot open the audit journal {}: {e}; records wait in memory until it can be written",
                    path.display()
                ))
            }
        };
        (journal, warning)
    }

    fn reopen(&mut self) -> io::Result<Option<String>> {
        self.file = None;
        let mut file = crate::owned_file::open_creating_dir(&self.path, || {
            OpenOptions::new()
                .create(true)
                .append(true)
                .read(true)
                .open(&self.path)
        })?;
        let meta = file.metadata()?;
        let len = meta.len();
        let mut warning = None;
        let cut_short = self
            .good
            .filter(|(dev, ino, good)| (*dev, *ino) == (meta.dev(), meta.ino()) && *good < len);
        if let Some((_, _, good)) = cut_short {
            // Our own write was cut short: take it back.
            file.set_len(good)?;
        } else if len > 0 && meta.is_file() {
            let mut last = [0u8; 1];
            file.seek(SeekFrom::Start(len - 1))?;
            file.read_exact(&mut last)?;
            if last[0] != b'\n' {
                file.write_all(b"\n")?;
                file.sync_data()?;
                warning = Some(format!(
                    "{}: the last record was cut short (vigil stopped mid-write); it is kept as an unreadable line and skipped by readers",
                    self.path.display()
                ));
            }
        }
        self.good = file.metadata().ok().map(|m| (m.dev(), m.ino(), m.len()));
        self.file = Some(file);
        Ok(warning)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn health(&self) -> Arc<JournalHealth> {
        self.health.clone()
    }

    /// Why the journal could not be written the last time, while that is so.
    pub fn last_error(&self) -> Option<&io::Error> {
        self.last_error.as_ref()
    }

    /// Records are waiting for the journal to be writable again.
    pub fn is_behind(&self) -> bool {
        !self.backlog.is_empty()
    }

    /// Write a batch as consecutive lines with one write and one fsync (group commit), after
    /// whatever earlier batches could not be written. The records are returned either way
    /// (they happened); the error says they are waiting.
    pub fn append<'a>(
        &mut self,
        entries: impl IntoIterator<Item = &'a AuditEntry>,
        at: SystemTime,
    ) -> (Vec<Record>, Result<(), JournalError>) {
        let mut records = Vec::new();
        for entry in entries {
            let record = Record::from_entry(entry, at);
            let mut line = serde_json::to_vec(&record).unwrap_or_default();
            line.push(b'\n');
            self.backlog.push_back(line);
            records.push(record);
        }
        while self.backlog.len() > BACKLOG_MAX {
            self.backlog.pop_front();
            self.health.dropped.fetch_add(1, Ordering::Relaxed);
        }
        if self.backlog.is_empty() {
            return (records, Ok(()));
        }
        let result = match self.flush() {
            Ok(()) => {
                self.last_error = None;
                Ok(())
            }
            Err(source) => {
                self.last_error = Some(io::Error::new(source.kind(), source.to_string()));
                Err(JournalError {
                    path: self.path.clone(),
                    source,
                })
            }
        };
        if result.is_err() {
            self.health.write_errors.fetch_add(1, Ordering::Relaxed);
        }
        self.health
            .failing
            .store(result.is_err(), Ordering::Relaxed);
        self.health
            .waiting
            .store(self.backlog.len() as u64, Ordering::Relaxed);
        (records, result)
    }

    fn flush(&mut self) -> io::Result<()> {
        let buf: Vec<u8> = self.backlog.iter().flatten().copied().collect();
        // A batch counts as written only if, after its fsync, the journal's path still names
        // the file it went to: one written into a deleted (or moved-away) journal is written
        // again into a new one. Twice at most: a dir deleted over and over is an error.
        let mut reopen = self.file.is_none() || self.health.failing.load(Ordering::Relaxed);
        for _ in 0..3 {
            if reopen {
                self.reopen()?;
            }
            let file = self.file.as_mut().expect("reopened above");
            if let Err(e) = file.write_all(&buf).and_then(|()| file.sync_data()) {
                // Take back at once what was written of the batch: a reader (or a vigil
                // killed now) must never see a fragment of a record.
                if let Some((_, _, good)) = self.good {
                    let _ = file.set_len(good);
                }
                return Err(e);
            }
            if let Some((_, _, len)) = &mut self.good {
                *len += buf.len() as u64;
            }
            if !crate::owned_file::is_stale(file, &self.path) {
                self.backlog.clear();
                return Ok(());
            }
            reopen = true;
        }
        Err(io::Error::other(
            "the journal was deleted again as soon as it was written",
        ))
    }
}

impl Drop for Journal {
    /// Records still waiting get one last try (vigil is exiting, or its loop panicked).
    fn drop(&mut self) {
        if !self.backlog.is_empty() {
            let _ = self.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_core::AuditAction;

    #[test]
    fn records_wait_while_the_disk_is_full_and_are_written_in_order_after() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        std::os::unix::fs::symlink("/dev/full", &path).unwrap();
        let (mut journal, _) = Journal::open(&path);
        let entry = |r: &str| AuditEntry::new(Some("bot"), AuditAction::Start, r);
        let (records, result) = journal.append([&entry("first")], SystemTime::now());
        assert_eq!(records.len(), 1);
        assert!(result.is_err());
        assert!(journal.health.failing.load(Ordering::Relaxed));
        std::fs::remove_file(&path).unwrap();
        let (_, result) = journal.append([&entry("second")], SystemTime::now());
        result.unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let reasons: Vec<String> = text
            .lines()
            .map(|l| serde_json::from_str::<Record>(l).unwrap().reason)
            .collect();
        assert_eq!(reasons, ["first", "second"]);
        assert!(!journal.health.failing.load(Ordering::Relaxed));
        assert_eq!(journal.health.write_errors.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_batch_written_into_a_deleted_journal_is_written_again_into_a_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/audit.jsonl");
        let (mut journal, warning) = Journal::open(&path);
        assert!(warning.is_none(), "the dir is made: {warning:?}");
        let entry = |r: &str| AuditEntry::new(Some("bot"), AuditAction::Start, r);
        journal
            .append([&entry("first")], SystemTime::now())
            .1
            .unwrap();
        std::fs::remove_dir_all(dir.path().join("state")).unwrap();
        journal
            .append([&entry("second")], SystemTime::now())
            .1
            .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("\"second\"") && !text.contains("first"),
            "{text}"
        );
        assert!(!journal.health.failing.load(Ordering::Relaxed));
    }
}
