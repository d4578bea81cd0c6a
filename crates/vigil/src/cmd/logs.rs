//! `vigil logs NAME [-n 50] [-f]`.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::Duration;

use crate::logs::{log_path, tail};

pub fn print(state_dir: &Path, name: &str, lines: usize, follow: bool) -> io::Result<bool> {
    let path = log_path(&state_dir.join("logs"), name);
    if !path.exists() {
        return Ok(false);
    }
    // On a terminal an agent's output is shown, not obeyed (no escape sequences); into a pipe
    // or a file it goes as it is.
    let terminal = io::IsTerminal::is_terminal(&io::stdout());
    let mut out = io::stdout().lock();
    for line in tail(&path, lines)? {
        if terminal {
            writeln!(out, "{}", super::printable(&line))?;
        } else {
            writeln!(out, "{line}")?;
        }
    }
    out.flush()?;
    if follow {
        follow_file(&path, terminal)?;
    }
    Ok(true)
}

/// Print what is appended, forever. A shrinking file means it was rotated: start over.
fn follow_file(path: &Path, terminal: bool) -> io::Result<()> {
    let mut pos = std::fs::metadata(path)?.len();
    let mut buf = Vec::new();
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let len = match std::fs::metadata(path) {
            Ok(m) => m.len(),
            Err(_) => continue,
        };
        if len < pos {
            pos = 0;
        }
        if len == pos {
            continue;
        }
        let mut f = File::open(path)?;
        f.seek(SeekFrom::Start(pos))?;
        buf.clear();
        f.take(len - pos).read_to_end(&mut buf)?;
        pos = len;
        let mut out = io::stdout().lock();
        if terminal {
            out.write_all(super::printable(&String::from_utf8_lossy(&buf)).as_bytes())?;
        } else {
            out.write_all(&buf)?;
        }
        out.flush()?;
    }
}
