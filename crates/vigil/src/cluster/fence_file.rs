//! The lease, as the agent itself can check it: one small file per exclusive agent in
//! `<state_dir>/fence/`, rewritten at every renewal. vigil may be dead (agents outlive it by
//! design) and then cannot stop anything: the client libraries read this file before acting
//! (`fence_ok()`), and an agent whose lease lapsed stops acting on its own.
//!
//! The deadline is on `CLOCK_BOOTTIME` (it counts a suspended machine's sleep, unlike the
//! monotonic clock, and no one can set it, unlike the wall clock), with the boot it belongs
//! to: a file left from before a reboot is never valid. It is the moment vigil begins to stop
//! the agent when the lease is not renewed, so "fence ok" means the same thing to both.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The agent's environment: `VIGIL_FENCE` (its fencing epoch), `VIGIL_FENCE_FILE`, and
/// `VIGIL_NODE` (the node it runs on: its definition, the same on every node, cannot say).
pub fn fence_env(state_dir: &Path, node: &str, agent: &str, epoch: u64) -> [(String, String); 3] {
    [
        ("VIGIL_FENCE".to_string(), epoch.to_string()),
        ("VIGIL_NODE".to_string(), node.to_string()),
        (
            "VIGIL_FENCE_FILE".to_string(),
            path_of(state_dir, agent).to_string_lossy().into_owned(),
        ),
    ]
}

fn path_of(state_dir: &Path, agent: &str) -> PathBuf {
    // Agent names are letters, digits, `_`, `-`, `.` and one `@`: safe as file names.
    state_dir.join("fence").join(format!("{agent}.json"))
}

/// Milliseconds of `CLOCK_BOOTTIME`.
pub fn boottime_ms() -> i64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    ts.tv_sec * 1000 + ts.tv_nsec / 1_000_000
}

/// This boot's id (`/proc/sys/kernel/random/boot_id`).
fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// What one round decided for the files.
pub enum FenceWrite {
    /// The agent may act until `until` (this host's monotonic clock) under `epoch`.
    Valid {
        agent: String,
        epoch: u64,
        until: Instant,
    },
    /// Its lease is not this node's: the file goes.
    Lapsed { agent: String },
}

/// Writes the files of a round, off the async threads.
pub struct FenceFiles {
    dir: PathBuf,
    boot_id: String,
}

impl FenceFiles {
    pub fn new(state_dir: &Path) -> FenceFiles {
        FenceFiles {
            dir: state_dir.join("fence"),
            boot_id: boot_id(),
        }
    }

    fn file(&self, agent: &str) -> PathBuf {
        self.dir.join(format!("{agent}.json"))
    }

    /// Write (atomically: a reader sees the old file or the new one) or remove each file.
    /// Errors are logged once per round: the agent then finds its file stale, the safe side.
    pub fn apply(&self, writes: Vec<FenceWrite>) {
        if writes.is_empty() {
            return;
        }
        if let Err(e) = std::fs::create_dir_all(&self.dir) {
            tracing::warn!("cannot create {}: {e}", self.dir.display());
            return;
        }
        let now = Instant::now();
        let boot_now = boottime_ms();
        let wall_now = crate::clock::now().wall_ms;
        let mut failed = None;
        for w in writes {
            let result = match w {
                FenceWrite::Valid {
                    agent,
                    epoch,
                    until,
                } => {
                    let left = until.saturating_duration_since(now);
                    self.write(&agent, epoch, left, boot_now, wall_now)
                }
                FenceWrite::Lapsed { agent } => match std::fs::remove_file(self.file(&agent)) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                    _ => Ok(()),
                },
            };
            if let Err(e) = result {
                failed = Some(e);
            }
        }
        if let Some(e) = failed {
            tracing::warn!(
                "cannot write the agents' lease files in {} ({e}): agents that check them stop acting when what they read lapses",
                self.dir.display()
            );
        }
    }

    fn write(
        &self,
        agent: &str,
        epoch: u64,
        left: Duration,
        boot_now: i64,
        wall_now: i64,
    ) -> std::io::Result<()> {
        let left = left.as_millis() as i64;
        let body = serde_json::json!({
            "agent": agent,
            "epoch": epoch,
            "boot_id": self.boot_id,
            "valid_until_boottime_ms": boot_now + left,
            "valid_until_unix_ms": wall_now + left,
        });
        let path = self.file(agent);
        let tmp = self.dir.join(format!(".{agent}.json.tmp"));
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(body.to_string().as_bytes())?;
        drop(f);
        std::fs::rename(&tmp, &path)
    }
}

/// What this node's file says of an agent's lease, as a vigil starts: how long a run of
/// `epoch` may still act, on this boot (`None`: no file, another boot, another epoch, or
/// lapsed — the run must not go on without the cluster's word).
pub fn remembered(state_dir: &Path, agent: &str, epoch: u64) -> Option<Duration> {
    let text = std::fs::read(path_of(state_dir, agent)).ok()?;
    let lease: serde_json::Value = serde_json::from_slice(&text).ok()?;
    if lease["epoch"].as_u64() != Some(epoch) || lease["boot_id"].as_str() != Some(&boot_id()) {
        return None;
    }
    let left = lease["valid_until_boottime_ms"].as_i64()? - boottime_ms();
    (left > 0).then(|| Duration::from_millis(left as u64))
}
