//! Appending to `audit.jsonl`: every batch is written and fsynced before vigil acts on it.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use vigil_core::AuditEntry;

use super::record::Record;

pub struct Journal {
    file: File,
    path: PathBuf,
}

impl Journal {
    /// Open for appending. A torn last line (vigil killed mid-write) is closed off with a
    /// newline so it stays one unreadable line and never corrupts the next record; the
    /// returned warning says so.
    pub fn open(path: &Path) -> io::Result<(Journal, Option<String>)> {
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(path)?;
        let len = file.metadata()?.len();
        let mut warning = None;
        if len > 0 {
            let mut last = [0u8; 1];
            file.seek(SeekFrom::Start(len - 1))?;
            file.read_exact(&mut last)?;
            if last[0] != b'\n' {
                file.write_all(b"\n")?;
                file.sync_data()?;
                warning = Some(format!(
                    "{}: the last record was cut short (vigil stopped mid-write); it is kept as an unreadable line and skipped by readers",
                    path.display()
                ));
            }
        }
        Ok((
            Journal {
                file,
                path: path.to_path_buf(),
            },
            warning,
        ))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Write a batch as consecutive lines with one write and one fsync (group commit).
    pub fn append<'a>(
        &mut self,
        entries: impl IntoIterator<Item = &'a AuditEntry>,
        at: SystemTime,
    ) -> io::Result<Vec<Record>> {
        let mut buf = Vec::with_capacity(512);
        let mut records = Vec::new();
        for entry in entries {
            let record = Record::from_entry(entry, at);
            serde_json::to_writer(&mut buf, &record).map_err(io::Error::other)?;
            buf.push(b'\n');
            records.push(record);
        }
        if buf.is_empty() {
            return Ok(records);
        }
        self.file.write_all(&buf)?;
        self.file.sync_data()?;
        Ok(records)
    }
}
