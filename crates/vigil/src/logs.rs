//! Agent log files: `<state_dir>/logs/NAME.log`, written by the agent itself.
//!
//! The agent gets an O_APPEND descriptor as stdout and stderr, so nothing it writes passes
//! through vigil: a vigil restart can neither block it nor kill it with SIGPIPE. Because the
//! agent keeps its descriptor, rotation copies the file aside and truncates it in place
//! (O_APPEND writers continue at the new end).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

pub fn log_path(logs_dir: &Path, agent: &str) -> PathBuf {
    logs_dir.join(format!("{agent}.log"))
}

fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

/// The descriptor handed to the agent as stdout/stderr. The logs directory is vigil's: when
/// someone deleted it (with the state dir, say), it is made again rather than blamed on the
/// agent.
pub fn open_for_agent(path: &Path) -> io::Result<File> {
    crate::owned_file::open_creating_dir(path, || {
        OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .open(path)
    })
}

/// Rotate when the file has reached `max_size`: NAME.log → NAME.log.1 → … → NAME.log.`keep`.
/// Returns whether it rotated.
pub fn rotate_if_needed(path: &Path, max_size: u64, keep: u32) -> io::Result<bool> {
    let len = match fs::metadata(path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    if len < max_size {
        return Ok(false);
    }
    if keep > 0 {
        let _ = fs::remove_file(rotated(path, keep));
        for n in (1..keep).rev() {
            let from = rotated(path, n);
            if from.exists() {
                fs::rename(&from, rotated(path, n + 1))?;
            }
        }
        copy_then_truncate(path, &rotated(path, 1))?;
    } else {
        OpenOptions::new().write(true).open(path)?.set_len(0)?;
    }
    Ok(true)
}

/// Copy what is there, catch up with what the agent wrote meanwhile, then truncate. Only
/// bytes written between the last catch-up and the truncate (microseconds) can be lost.
fn copy_then_truncate(path: &Path, to: &Path) -> io::Result<()> {
    let mut src = File::open(path)?;
    let mut dst = File::create(to)?;
    let mut copied = 0u64;
    for _ in 0..4 {
        src.seek(SeekFrom::Start(copied))?;
        copied += io::copy(&mut src, &mut dst)?;
        if fs::metadata(path)?.len() <= copied {
            break;
        }
    }
    OpenOptions::new().write(true).open(path)?.set_len(0)?;
    Ok(())
}

/// The last `n` lines of a log, reading backwards from the end so the cost depends on `n`,
/// not on the size of the file.
pub fn tail(path: &Path, n: usize) -> io::Result<Vec<String>> {
    tail_from(path, n, 0)
}

/// The most read from the end of a log for its last lines: they are evidence for a decision
/// taken on the supervision loop, so a log of one 50 MB line costs no more than this.
const MAX_TAIL_BYTES: usize = 64 * 1024;

/// Like [`tail`], but only what was written after byte `from` (one run's output). A file
/// shorter than `from` was rotated meanwhile: then all of it. At most the last
/// [`MAX_TAIL_BYTES`] are read.
pub fn tail_from(path: &Path, n: usize, from: u64) -> io::Result<Vec<String>> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    if n == 0 {
        return Ok(Vec::new());
    }
    let len = file.metadata()?.len();
    let from = if from > len { 0 } else { from };
    let mut pos = len;
    let mut buf: Vec<u8> = Vec::new();
    const CHUNK: u64 = 8192;
    // Stop once the buffer holds n full lines (n+1 newlines, or n if it ends without one).
    while pos > from && buf.iter().filter(|b| **b == b'\n').count() <= n {
        let step = CHUNK.min(pos - from);
        pos -= step;
        let mut chunk = vec![0u8; step as usize];
        file.seek(SeekFrom::Start(pos))?;
        file.read_exact(&mut chunk)?;
        chunk.extend_from_slice(&buf);
        buf = chunk;
        if buf.len() >= MAX_TAIL_BYTES {
            break;
        }
    }
    let text = String::from_utf8_lossy(&buf);
    let mut lines: Vec<&str> = text.split('\n').collect();
    if lines.last() == Some(&"") {
        lines.pop();
    }
    if pos > from && lines.len() > 1 {
        // The first piece may be the end of a longer line.
        lines.remove(0);
    }
    let start = lines.len().saturating_sub(n);
    Ok(lines[start..].iter().map(|l| l.to_string()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn tail_reads_only_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        let mut f = File::create(&path).unwrap();
        for i in 0..10_000 {
            writeln!(f, "line {i}").unwrap();
        }
        assert_eq!(
            tail(&path, 3).unwrap(),
            vec!["line 9997", "line 9998", "line 9999"]
        );
        assert_eq!(tail(&path, 0).unwrap(), Vec::<String>::new());
        assert!(tail(&dir.path().join("none.log"), 5).unwrap().is_empty());
        write!(f, "partial").unwrap();
        assert_eq!(tail(&path, 2).unwrap(), vec!["line 9999", "partial"]);
    }

    #[test]
    fn a_huge_line_costs_a_bounded_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        std::fs::write(&path, "x".repeat(10 * 1024 * 1024)).unwrap();
        let lines = tail(&path, 50).unwrap();
        assert_eq!(lines.len(), 1);
        assert!(lines[0].len() <= MAX_TAIL_BYTES + 8192);
    }

    #[test]
    fn rotation_keeps_the_configured_number_of_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bot.log");
        let mut writer = open_for_agent(&path).unwrap();
        for round in 0..4 {
            writer
                .write_all(format!("round {round}\n").repeat(200).as_bytes())
                .unwrap();
            assert!(rotate_if_needed(&path, 1000, 2).unwrap());
        }
        // The agent's descriptor keeps appending into the truncated file.
        writer.write_all(b"after\n").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "after\n");
        assert!(
            fs::read_to_string(rotated(&path, 1))
                .unwrap()
                .starts_with("round 3")
        );
        assert!(
            fs::read_to_string(rotated(&path, 2))
                .unwrap()
                .starts_with("round 2")
        );
        assert!(!rotated(&path, 3).exists());
        assert!(!rotate_if_needed(&path, 1000, 2).unwrap());
    }
}
