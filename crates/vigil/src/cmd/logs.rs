//! `vigil logs NAME|TEMPLATE|--all [-n 50] [-f]`: agents' logs from the state dir.
//!
//! One agent: its lines as they are. Several (a template's instances, or `--all`): each line
//! prefixed with its agent, the last lines of each in turn, then — with `-f` — new lines from
//! all of them interleaved in the order they are written, each stamped with the time it was
//! read (agents' logs carry no time of their own). New lines are read when the kernel says a
//! log was written (inotify), not by polling.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::mem::MaybeUninit;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};

use crate::logs::{log_path, tail};

/// What to show.
pub enum LogSelection<'a> {
    /// An agent, or a template (every instance).
    Name(&'a str),
    All,
}

/// The agents whose logs exist in `logs_dir` that `which` selects, sorted.
pub fn select(logs_dir: &Path, which: &LogSelection<'_>) -> io::Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(logs_dir)?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".log"))
                .map(str::to_string)
        })
        .filter(|n| selected(which, n))
        .collect();
    names.sort();
    // An exact agent name wins over a template of the same name.
    if let LogSelection::Name(name) = which
        && names.iter().any(|n| n == name)
    {
        return Ok(vec![name.to_string()]);
    }
    Ok(names)
}

fn selected(which: &LogSelection<'_>, agent: &str) -> bool {
    match which {
        LogSelection::All => true,
        LogSelection::Name(name) => {
            agent == *name
                || agent
                    .strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with('@'))
        }
    }
}

/// Print, and follow when asked. `Ok(false)`: no log matched.
pub fn print(
    state_dir: &Path,
    which: &LogSelection<'_>,
    lines: usize,
    follow: bool,
) -> io::Result<bool> {
    let logs_dir = state_dir.join("logs");
    let names = match select(&logs_dir, which) {
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    if names.is_empty() {
        return Ok(false);
    }
    // On a terminal an agent's output is shown, not obeyed (no escape sequences); into a pipe
    // or a file it goes as it is.
    let terminal = io::IsTerminal::is_terminal(&io::stdout());
    // One agent asked for by its own name: its lines as they are. Anything that may hold
    // several (a template, even with one instance so far; --all): each line says whose.
    let exact = matches!(which, LogSelection::Name(n) if names.len() == 1 && names[0] == *n);
    let prefixed = !exact;
    let width = names.iter().map(|n| n.chars().count()).max().unwrap_or(0);
    let out = Output {
        terminal,
        prefixed,
        width,
    };
    {
        let mut stdout = io::stdout().lock();
        for name in &names {
            for line in tail(&log_path(&logs_dir, name), lines)? {
                out.line(&mut stdout, None, name, &line)?;
            }
        }
        stdout.flush()?;
    }
    if follow {
        let follow = if exact {
            &LogSelection::Name(&names[0])
        } else {
            which
        };
        Follower::new(&logs_dir, follow, exact, &names, out)?.run()?;
    }
    Ok(true)
}

#[derive(Clone, Copy)]
struct Output {
    terminal: bool,
    prefixed: bool,
    width: usize,
}

impl Output {
    fn line(
        &self,
        w: &mut impl Write,
        at: Option<&str>,
        agent: &str,
        line: &str,
    ) -> io::Result<()> {
        let line = if self.terminal {
            super::printable(line)
        } else {
            std::borrow::Cow::Borrowed(line)
        };
        match (self.prefixed, at) {
            (false, _) => writeln!(w, "{line}"),
            (true, None) => writeln!(w, "{agent:<width$} | {line}", width = self.width),
            (true, Some(at)) => writeln!(w, "{at} {agent:<width$} | {line}", width = self.width),
        }
    }
}

/// Where each followed log has been read to, and the start of a line not yet ended.
struct Followed {
    pos: u64,
    partial: Vec<u8>,
}

struct Follower<'a> {
    fd: rustix::fd::OwnedFd,
    logs_dir: PathBuf,
    which: &'a LogSelection<'a>,
    /// Only the one agent named: no template's new instances.
    exact: bool,
    logs: HashMap<String, Followed>,
    out: Output,
}

impl<'a> Follower<'a> {
    fn new(
        logs_dir: &Path,
        which: &'a LogSelection<'a>,
        exact: bool,
        names: &[String],
        out: Output,
    ) -> io::Result<Self> {
        let fd = inotify::init(CreateFlags::CLOEXEC)?;
        // The directory, not each file: a log that is rotated, or a new instance's, is seen
        // too.
        inotify::add_watch(
            &fd,
            logs_dir,
            WatchFlags::MODIFY | WatchFlags::CREATE | WatchFlags::MOVED_TO,
        )?;
        let mut logs = HashMap::new();
        for name in names {
            let pos = std::fs::metadata(log_path(logs_dir, name)).map_or(0, |m| m.len());
            logs.insert(
                name.clone(),
                Followed {
                    pos,
                    partial: Vec::new(),
                },
            );
        }
        Ok(Follower {
            fd,
            logs_dir: logs_dir.to_path_buf(),
            which,
            exact,
            logs,
            out,
        })
    }

    fn run(mut self) -> io::Result<()> {
        let mut buf = [MaybeUninit::<u8>::uninit(); 8192];
        loop {
            let mut written: Vec<String> = Vec::new();
            let mut reader = inotify::Reader::new(&self.fd, &mut buf);
            loop {
                match reader.next() {
                    Ok(event) => {
                        if event.events().contains(ReadFlags::IGNORED) {
                            return Err(io::Error::other(format!(
                                "{} was removed: nothing more to follow",
                                self.logs_dir.display()
                            )));
                        }
                        let Some(file) = event.file_name() else {
                            continue;
                        };
                        let file = OsStr::from_bytes(file.to_bytes());
                        let Some(agent) = file.to_str().and_then(|f| f.strip_suffix(".log")) else {
                            continue;
                        };
                        let new = event
                            .events()
                            .intersects(ReadFlags::CREATE | ReadFlags::MOVED_TO);
                        let wanted = if self.exact {
                            matches!(self.which, LogSelection::Name(n) if *n == agent)
                        } else {
                            selected(self.which, agent)
                        };
                        if new && wanted {
                            // A new (or rotated-in) file: read it from its start.
                            self.logs
                                .entry(agent.to_string())
                                .and_modify(|f| {
                                    f.pos = 0;
                                    f.partial.clear();
                                })
                                .or_insert(Followed {
                                    pos: 0,
                                    partial: Vec::new(),
                                });
                        }
                        if self.logs.contains_key(agent) && !written.iter().any(|w| w == agent) {
                            written.push(agent.to_string());
                        }
                    }
                    Err(rustix::io::Errno::INTR) => continue,
                    Err(e) => return Err(e.into()),
                }
                if reader.is_buffer_empty() {
                    break;
                }
            }
            let at = crate::audit::format_ts(std::time::SystemTime::now());
            let at = at.get(11..23).unwrap_or(&at).to_string();
            let mut stdout = io::stdout().lock();
            for agent in written {
                self.read_new(&agent, &at, &mut stdout)?;
            }
            stdout.flush()?;
        }
    }

    /// Print the complete lines appended to `agent`'s log since the last read.
    fn read_new(&mut self, agent: &str, at: &str, w: &mut impl Write) -> io::Result<()> {
        let path = log_path(&self.logs_dir, agent);
        let Some(f) = self.logs.get_mut(agent) else {
            return Ok(());
        };
        let len = match std::fs::metadata(&path) {
            Ok(m) => m.len(),
            Err(_) => return Ok(()),
        };
        if len < f.pos {
            // Rotated (cut or truncated) under us: what is there now is new.
            f.pos = 0;
            f.partial.clear();
        }
        if len == f.pos {
            return Ok(());
        }
        let mut file = File::open(&path)?;
        file.seek(SeekFrom::Start(f.pos))?;
        let mut chunk = Vec::new();
        file.take(len - f.pos).read_to_end(&mut chunk)?;
        f.pos += chunk.len() as u64;
        f.partial.extend_from_slice(&chunk);
        let Some(end) = f.partial.iter().rposition(|b| *b == b'\n') else {
            return Ok(());
        };
        let complete: Vec<u8> = f.partial.drain(..=end).collect();
        let text = String::from_utf8_lossy(&complete);
        for line in text.lines() {
            self.out.line(w, Some(at), agent, line)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_template_selects_its_instances_and_a_name_wins() {
        let dir = tempfile::tempdir().unwrap();
        for n in ["trader@BTC", "trader@ETH", "traders", "feed", "trader"] {
            std::fs::write(dir.path().join(format!("{n}.log")), "").unwrap();
        }
        std::fs::write(dir.path().join("feed.log.1"), "").unwrap();
        let names = |w| select(dir.path(), &w).unwrap();
        assert_eq!(names(LogSelection::Name("trader")), vec!["trader"]);
        std::fs::remove_file(dir.path().join("trader.log")).unwrap();
        assert_eq!(
            names(LogSelection::Name("trader")),
            vec!["trader@BTC", "trader@ETH"]
        );
        assert_eq!(names(LogSelection::Name("feed")), vec!["feed"]);
        assert_eq!(names(LogSelection::All).len(), 4);
        assert!(names(LogSelection::Name("nobody")).is_empty());
    }
}
