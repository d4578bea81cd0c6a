//! Exclusive placement: may this run act now?
//!
//! An agent with `placement = "exclusive"` runs on one node of a vigil cluster at a time, the
//! node holding its lease. vigil stops it before the lease can lapse — but a vigil that is
//! itself dead cannot stop anything, and agents outlive vigil by design. So vigil keeps the
//! lease's end in a file (`VIGIL_FENCE_FILE`), rewritten at every renewal, and the run's
//! fencing epoch in `VIGIL_FENCE`. Before each action that must never happen twice, ask
//! [`fence_ok`]: once the lease lapsed, or another node took it (a higher epoch), the answer
//! is `false` and the agent must stop acting.
//!
//! The deadline is on `CLOCK_BOOTTIME` (no one can set it; it counts a suspended machine's
//! sleep), tied to this boot: a file left from before a reboot is never valid.

use std::time::Duration;

/// The fencing epoch the run was started under (`VIGIL_FENCE`), `None` for an agent that is
/// not exclusive. Put it in the writes that must be fenced (a row keeping the highest epoch
/// seen refuses a write from an older run).
pub fn fence_epoch() -> Option<u64> {
    std::env::var("VIGIL_FENCE").ok()?.parse().ok()
}

/// May this run act now? `true` for an agent that is not exclusive (nothing to fence); for an
/// exclusive one, only while its lease file names this run's epoch, this boot and a deadline
/// still ahead. Any doubt (no file, an unreadable one, another epoch) is `false`. One small
/// file read: call it before every action that must not happen twice.
pub fn fence_ok() -> bool {
    match std::env::var_os("VIGIL_FENCE_FILE") {
        None => true,
        Some(path) => fence_ok_at(std::path::Path::new(&path), fence_epoch(), boottime()),
    }
}

#[derive(serde::Deserialize)]
struct Lease {
    epoch: u64,
    boot_id: String,
    valid_until_boottime_ms: u64,
}

fn fence_ok_at(path: &std::path::Path, epoch: Option<u64>, now: Option<Duration>) -> bool {
    let (Some(epoch), Some(now)) = (epoch, now) else {
        return false;
    };
    let Ok(text) = std::fs::read(path) else {
        return false;
    };
    let Ok(lease) = serde_json::from_slice::<Lease>(&text) else {
        return false;
    };
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    lease.epoch == epoch
        && lease.boot_id == boot.trim()
        && (now.as_millis() as u64) < lease.valid_until_boottime_ms
}

/// `CLOCK_BOOTTIME`, the clock vigil writes the deadline on (the standard library's
/// monotonic clock does not count a suspended machine's sleep). `/proc/uptime` is that clock
/// at centisecond resolution: enough for leases of seconds, without unsafe code or a
/// dependency.
fn boottime() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/uptime").ok()?;
    let secs: f64 = text.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boot_id() -> String {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .unwrap()
            .trim()
            .to_string()
    }

    fn write(dir: &std::path::Path, epoch: u64, boot: &str, until_ms: u64) -> std::path::PathBuf {
        let path = dir.join("a.json");
        let body = serde_json::json!({
            "agent": "a", "epoch": epoch, "boot_id": boot,
            "valid_until_boottime_ms": until_ms, "valid_until_unix_ms": 0,
        });
        std::fs::write(&path, body.to_string()).unwrap();
        path
    }

    #[test]
    fn valid_only_for_this_epoch_this_boot_and_a_deadline_ahead() {
        let dir = tempfile::tempdir().unwrap();
        let now = boottime().unwrap();
        let ahead = now.as_millis() as u64 + 5_000;
        let p = write(dir.path(), 7, &boot_id(), ahead);
        assert!(fence_ok_at(&p, Some(7), Some(now)));
        assert!(!fence_ok_at(&p, Some(6), Some(now)), "another epoch");
        assert!(!fence_ok_at(&p, None, Some(now)), "no epoch of its own");
        assert!(
            !fence_ok_at(&p, Some(7), Some(now + Duration::from_secs(6))),
            "lapsed"
        );
        let p = write(dir.path(), 7, "another-boot", ahead);
        assert!(!fence_ok_at(&p, Some(7), Some(now)), "another boot");
        std::fs::write(&p, "{broken").unwrap();
        assert!(!fence_ok_at(&p, Some(7), Some(now)), "unreadable");
        std::fs::remove_file(&p).unwrap();
        assert!(!fence_ok_at(&p, Some(7), Some(now)), "missing");
    }
}
