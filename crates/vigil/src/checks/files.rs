//! `heartbeat` and `file` checks: a file's modification time, or an epoch written inside it.

use std::io::{self, Read};
use std::path::Path;
use std::time::UNIX_EPOCH;

use vigil_core::Observation;

fn wall_ms(t: std::time::SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Epoch seconds (or milliseconds, for values too large to be seconds) as wall-clock ms.
pub fn epoch_to_ms(v: f64) -> Option<i64> {
    if !v.is_finite() || v <= 0.0 {
        return None;
    }
    // 1e11 seconds is the year 5138: anything larger is milliseconds.
    Some(if v > 1e11 {
        v as i64
    } else {
        (v * 1000.0) as i64
    })
}

/// When the agent last touched (or wrote an epoch into) its heartbeat file.
pub fn heartbeat(path: &Path, epoch: bool) -> Observation {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        // No heartbeat yet: the core measures from the start of the run.
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Observation::Progress { at_wall_ms: None };
        }
        Err(e) => return Observation::Unknown(format!("cannot read {}: {e}", path.display())),
    };
    let mtime = meta.modified().map(wall_ms).ok();
    if !epoch {
        return Observation::Progress { at_wall_ms: mtime };
    }
    let mut text = String::new();
    // Not through a symlink: an agent running as another user could point its heartbeat
    // at a file only vigil may read.
    let open = || {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)
    };
    if let Err(e) = open().and_then(|f| f.take(64).read_to_string(&mut text)) {
        return Observation::Unknown(format!("cannot read {}: {e}", path.display()));
    }
    let text = text.trim();
    if text.is_empty() {
        // Caught between truncate and write: the touch itself is the sign of life.
        return Observation::Progress { at_wall_ms: mtime };
    }
    match text.parse::<f64>().ok().and_then(epoch_to_ms) {
        Some(ms) => Observation::Progress {
            at_wall_ms: Some(ms),
        },
        // What it holds is not repeated: the detail is shown to anyone who reads /status.
        None => Observation::Unknown(format!(
            "{} should hold epoch seconds, but holds something else ({} bytes)",
            path.display(),
            text.len()
        )),
    }
}

/// An output the agent produces: its age, and optionally a minimum size.
pub fn output_file(path: &Path, min_size: Option<u64>) -> Observation {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Observation::Progress { at_wall_ms: None };
        }
        Err(e) => return Observation::Unknown(format!("cannot read {}: {e}", path.display())),
    };
    if let Some(min) = min_size
        && meta.len() < min
    {
        return Observation::Unhealthy(format!(
            "{} is {} bytes, less than min_size {min}",
            path.display(),
            meta.len()
        ));
    }
    Observation::Progress {
        at_wall_ms: meta.modified().map(wall_ms).ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_mtime_epoch_and_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let hb = dir.path().join("hb");
        assert_eq!(
            heartbeat(&hb, false),
            Observation::Progress { at_wall_ms: None }
        );
        std::fs::write(&hb, "1700000000\n").unwrap();
        assert_eq!(
            heartbeat(&hb, true),
            Observation::Progress {
                at_wall_ms: Some(1_700_000_000_000)
            }
        );
        std::fs::write(&hb, "1700000000123").unwrap();
        assert_eq!(
            heartbeat(&hb, true),
            Observation::Progress {
                at_wall_ms: Some(1_700_000_000_123)
            }
        );
        std::fs::write(&hb, "soon").unwrap();
        assert!(
            matches!(heartbeat(&hb, true), Observation::Unknown(e) if e.contains("should hold epoch seconds"))
        );
        assert!(matches!(
            heartbeat(&hb, false),
            Observation::Progress {
                at_wall_ms: Some(_)
            }
        ));
        assert!(
            matches!(output_file(&hb, Some(100)), Observation::Unhealthy(e) if e.contains("4 bytes"))
        );
    }
}
