//! The journal's mirror in PostgreSQL (`vigil_journal`), for `vigil fleet audit`: the local
//! journal stays the source of truth; this task copies what it has not copied yet, in
//! batches, whenever the loop says it wrote (no polling), on its own connection — a slow or
//! absent database never delays renewals, nor the loop.
//!
//! A record is known by (node, journal, offset): `journal` names the file (its device and
//! inode), `offset` where the line starts in it. The journal only grows, and a cut-short
//! write is taken back before anything follows it, so a whole line's offset is its for good:
//! copying again is harmless (`ON CONFLICT DO NOTHING`), and where to resume is read back from
//! the database at start and after every failure — no gap, no duplicate, across outages and
//! kill -9.

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::Notify;

use crate::audit::Record;

/// How long after a wake the mirror waits for more records to copy along.
const COALESCE: Duration = Duration::from_millis(200);

/// At most this much of the journal per statement.
const BATCH_BYTES: usize = 1 << 20;
const BATCH_LINES: usize = 5_000;

/// What the mirror shows the metrics.
#[derive(Debug, Default)]
pub struct MirrorHealth {
    /// Bytes of the journal not in the database yet.
    pub lag_bytes: AtomicU64,
    /// Records copied since vigil started.
    pub copied: AtomicU64,
}

pub struct Mirror {
    pub pool: PgPool,
    pub node: String,
    pub journal: PathBuf,
    pub wake: Arc<Notify>,
    pub health: Arc<MirrorHealth>,
}

/// One batch read from the journal: complete lines only.
struct Batch {
    /// (offset, length, record) of each line that parses; unreadable lines are skipped.
    records: Vec<(u64, u32, Record)>,
    /// Where the next read starts.
    next: u64,
    file_len: u64,
}

/// The journal file's name for good: its inode and birth time — the same across reboots and
/// renumbered devices, another one when the file is made anew (a deleted state dir restored).
fn journal_id(meta: &std::fs::Metadata) -> String {
    let born = meta
        .created()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    format!("{}-{born}", meta.ino())
}

/// Complete lines from `from` on (at most one batch), and the file's identity.
fn read_batch(path: &PathBuf, from: u64) -> std::io::Result<(String, Batch)> {
    let mut f = std::fs::File::open(path)?;
    let meta = f.metadata()?;
    let len = meta.len();
    let from = from.min(len);
    f.seek(SeekFrom::Start(from))?;
    let mut buf = Vec::with_capacity(((len - from) as usize).min(BATCH_BYTES));
    (&mut f).take(BATCH_BYTES as u64).read_to_end(&mut buf)?;
    let mut records = Vec::new();
    let mut at = 0usize;
    while records.len() < BATCH_LINES {
        let Some(nl) = buf[at..].iter().position(|b| *b == b'\n') else {
            break;
        };
        let line = &buf[at..at + nl];
        if let Ok(r) = serde_json::from_slice::<Record>(line) {
            records.push((from + at as u64, nl as u32 + 1, r));
        }
        at += nl + 1;
    }
    let mut next = from + at as u64;
    if at == 0 && buf.len() == BATCH_BYTES {
        // One line longer than a batch: not copied (vigil's records are far smaller; this is
        // damage), skipped whole so the mirror goes on.
        if let Some(end) = next_newline(&mut f, from + buf.len() as u64)? {
            tracing::warn!(
                "cluster: a journal line of over 1 MiB at offset {from} is not mirrored"
            );
            next = end + 1;
        }
    }
    Ok((
        journal_id(&meta),
        Batch {
            records,
            next,
            file_len: len,
        },
    ))
}

/// Where the next newline is, from `pos` on (`None`: none yet, the line is still being written).
fn next_newline(f: &mut std::fs::File, mut pos: u64) -> std::io::Result<Option<u64>> {
    let mut chunk = vec![0u8; 64 * 1024];
    f.seek(SeekFrom::Start(pos))?;
    loop {
        let n = f.read(&mut chunk)?;
        if n == 0 {
            return Ok(None);
        }
        if let Some(i) = chunk[..n].iter().position(|b| *b == b'\n') {
            return Ok(Some(pos + i as u64));
        }
        pos += n as u64;
    }
}

impl Mirror {
    pub async fn run(self) {
        // (journal id, next offset), read back from the database when unknown.
        let mut cursor: Option<(String, u64)> = None;
        loop {
            match self.step(&mut cursor).await {
                Ok(true) => continue,
                Ok(false) => {
                    self.wake.notified().await;
                    // What the loop writes over the next moment goes in the same statement:
                    // at most a few statements a second however busy the journal, and the
                    // database's work (on this host, often) kept away from the loop's moments.
                    tokio::time::sleep(COALESCE).await;
                }
                Err(e) => {
                    tracing::debug!("cluster: the journal's mirror waits ({e})");
                    cursor = None;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// Copies one batch; `true` when more is waiting.
    async fn step(&self, cursor: &mut Option<(String, u64)>) -> Result<bool, MirrorError> {
        let path = self.journal.clone();
        let id = tokio::task::spawn_blocking({
            let path = path.clone();
            move || std::fs::metadata(&path).map(|m| journal_id(&m))
        })
        .await??;
        let from = match cursor {
            Some((cid, next)) if *cid == id => *next,
            // A new journal file (a deleted state dir restored): from its start.
            _ => {
                let next: Option<i64> = sqlx::query_scalar(
                    "SELECT max(at_offset + length) FROM vigil_journal WHERE node = $1 AND journal = $2",
                )
                .bind(&self.node)
                .bind(&id)
                .fetch_one(&self.pool)
                .await?;
                next.unwrap_or(0) as u64
            }
        };
        let (read_id, batch) =
            tokio::task::spawn_blocking(move || read_batch(&path, from)).await??;
        if read_id != id {
            *cursor = None;
            return Ok(true);
        }
        if !batch.records.is_empty() {
            self.insert(&id, &batch.records).await?;
            self.health
                .copied
                .fetch_add(batch.records.len() as u64, Ordering::Relaxed);
        }
        *cursor = Some((id, batch.next));
        self.health
            .lag_bytes
            .store(batch.file_len.saturating_sub(batch.next), Ordering::Relaxed);
        // Another batch when this one stopped short of the end (a partial last line waits).
        Ok(batch.next < batch.file_len && batch.next > from)
    }

    async fn insert(
        &self,
        journal: &str,
        records: &[(u64, u32, Record)],
    ) -> Result<(), sqlx::Error> {
        let offsets: Vec<i64> = records.iter().map(|r| r.0 as i64).collect();
        let lengths: Vec<i32> = records.iter().map(|r| r.1 as i32).collect();
        let ts: Vec<&str> = records.iter().map(|r| r.2.ts.as_str()).collect();
        // PostgreSQL's text and jsonb refuse NUL (which a reason quoting an agent's output may
        // hold): it is replaced, or one record would hold the whole mirror back.
        let agents: Vec<Option<String>> = records
            .iter()
            .map(|r| r.2.agent.as_deref().map(no_nul))
            .collect();
        let actions: Vec<String> = records.iter().map(|r| no_nul(&r.2.action)).collect();
        let bodies: Vec<String> = records
            .iter()
            .map(|r| {
                serde_json::to_string(&r.2)
                    .unwrap_or_default()
                    .replace("\\u0000", "\\ufffd")
            })
            .collect();
        sqlx::query(
            "INSERT INTO vigil_journal (node, journal, at_offset, length, ts, agent, action, record)
             SELECT $1, $2, m.o, m.l, m.t::timestamptz, m.a, m.act, m.r::jsonb
             FROM unnest($3::bigint[], $4::int[], $5::text[], $6::text[], $7::text[], $8::text[])
                  AS m(o, l, t, a, act, r)
             ON CONFLICT (node, journal, at_offset) DO NOTHING",
        )
        .bind(&self.node)
        .bind(journal)
        .bind(&offsets)
        .bind(&lengths)
        .bind(&ts)
        .bind(&agents)
        .bind(&actions)
        .bind(&bodies)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

fn no_nul(s: &str) -> String {
    s.replace('\0', "\u{fffd}")
}

#[derive(Debug, thiserror::Error)]
enum MirrorError {
    #[error("cannot read the journal: {0}")]
    Read(#[from] std::io::Error),
    #[error("the database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("the reading thread ended: {0}")]
    Thread(#[from] tokio::task::JoinError),
}
