//! Agent log files: `<state_dir>/logs/NAME.log`, written by the agent itself.
//!
//! The agent gets an O_APPEND descriptor as stdout and stderr, so nothing it writes passes
//! through vigil: a vigil restart can neither block it nor kill it with SIGPIPE. Because the
//! agent keeps its descriptor, rotation moves the head of the file aside while the agent goes
//! on appending (see `move_head`).

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
    rotate_sized(path, max_size, keep).map(|(_, rotated)| rotated)
}

/// [`rotate_if_needed`], also saying how long the log was when looked at (0 when missing).
pub fn rotate_sized(path: &Path, max_size: u64, keep: u32) -> io::Result<(u64, bool)> {
    let len = match fs::metadata(path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((0, false)),
        Err(e) => return Err(e),
    };
    if len < max_size {
        return Ok((len, false));
    }
    let to = if keep > 0 {
        let _ = fs::remove_file(rotated(path, keep));
        for n in (1..keep).rev() {
            let from = rotated(path, n);
            if from.exists() {
                fs::rename(&from, rotated(path, n + 1))?;
            }
        }
        Some(rotated(path, 1))
    } else {
        None
    };
    move_head(path, to.as_deref())?;
    Ok((len, true))
}

/// Move the start of the live log into `to` (or drop it), while the agent goes on appending.
///
/// The agent holds its own O_APPEND descriptor, so the file cannot be renamed away under it.
/// Where the file system can (ext4, XFS), the head is copied out and then cut off the file in
/// one step (`FALLOC_FL_COLLAPSE_RANGE`, whole blocks): whatever the agent appends meanwhile
/// lands after the cut, and no line is lost (one may be split between the two files, which
/// read in order join it again). Elsewhere (tmpfs) the file is copied, caught up with and
/// truncated: only what is written between the last catch-up and the truncate (microseconds)
/// can be lost. Rotated files get the live log's permissions.
fn move_head(path: &Path, to: Option<&Path>) -> io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let live = OpenOptions::new().read(true).write(true).open(path)?;
    let meta = live.metadata()?;
    let block = meta.blksize().max(512);
    // Whole blocks, and never up to the end (the kernel refuses a collapse that reaches it).
    let head = meta.len().saturating_sub(1) / block * block;
    let mut dst = match to {
        Some(to) => {
            let dst = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(meta.mode() & 0o777)
                .open(to)?;
            // `mode` is filtered by the umask: set it exactly.
            dst.set_permissions(fs::Permissions::from_mode(meta.mode() & 0o777))?;
            Some(dst)
        }
        None => None,
    };
    if head > 0 {
        if let Some(dst) = dst.as_mut() {
            io::copy(&mut (&live).take(head), dst)?;
        }
        let collapse = rustix::fs::FallocateFlags::COLLAPSE_RANGE;
        match rustix::fs::fallocate(&live, collapse, 0, head) {
            Ok(()) => return Ok(()),
            Err(rustix::io::Errno::OPNOTSUPP | rustix::io::Errno::INVAL) => {}
            Err(e) => return Err(e.into()),
        }
    }
    // No collapse here: catch up with what the agent wrote meanwhile, then truncate.
    let mut copied = head.min(meta.len());
    if let Some(dst) = dst.as_mut() {
        let mut src = File::open(path)?;
        for _ in 0..4 {
            src.seek(SeekFrom::Start(copied))?;
            copied += io::copy(&mut src, dst)?;
            if fs::metadata(path)?.len() <= copied {
                break;
            }
        }
    }
    live.set_len(0)?;
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

    /// A writer appending as fast as it can while its log is rotated over and over: read in
    /// order, the rotated files and the live log hold every line, once (this file system can
    /// collapse ranges: ext4 here). Rotated files keep the live log's permissions.
    #[test]
    fn rotation_under_a_fast_writer_loses_no_line_and_keeps_permissions() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fast.log");
        let mut writer = open_for_agent(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let lines = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let mut burst = String::new();
                    for _ in 0..50 {
                        burst.push_str(&format!("line {n} of the fast writer\n"));
                        n += 1;
                    }
                    writer.write_all(burst.as_bytes()).unwrap();
                }
                n
            })
        };
        let mut rotations = 0;
        let started = std::time::Instant::now();
        while started.elapsed() < std::time::Duration::from_millis(1500) {
            if rotate_if_needed(&path, 64 * 1024, 10_000).unwrap() {
                rotations += 1;
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let written = lines.join().unwrap();
        assert!(rotations > 10, "rotated {rotations} times");
        let mut all = Vec::new();
        for n in (1..=rotations).rev() {
            let rotated_path = rotated(&path, n);
            let mode = fs::metadata(&rotated_path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", rotated_path.display());
            all.extend(fs::read(&rotated_path).unwrap());
        }
        all.extend(fs::read(&path).unwrap());
        let text = String::from_utf8(all).unwrap();
        let numbers: Vec<u64> = text
            .lines()
            .map(|l| l.split(' ').nth(1).unwrap().parse().unwrap())
            .collect();
        assert_eq!(numbers.len() as u64, written, "every line, once");
        assert!(
            numbers.iter().enumerate().all(|(i, n)| *n == i as u64),
            "in order"
        );
    }
}
