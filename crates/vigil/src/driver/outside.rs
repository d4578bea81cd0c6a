//! Before an agent starts: is it already running, started by something other than vigil?
//!
//! One read of the process table answers every agent of a batch (starting 10,000 agents is
//! one read, not 10,000). For each agent the look finds, in order:
//!
//! 1. its `adopt` target — the pid in its pidfile (unless the file is older than the process
//!    that now has that pid: a stale pidfile, its pid reused), or the one process whose
//!    command line contains its `match` text — to be taken over;
//! 2. else a process that runs exactly the agent's command (same arguments, the program
//!    compared by name, in the same working directory) — a copy, which keeps the agent from
//!    starting;
//! 3. else nothing.
//!
//! vigil's own processes never count: vigil itself and its ancestors, its children (agents,
//! checks), the main processes it watches, and anything carrying its run mark
//! (`VIGIL_STATE_DIR`) — every process an agent of this vigil started.
//!
//! Only a process of the agent's own user is ever taken over (vigil, often root, stops what
//! it adopts), and a pidfile others can write names nothing: a local user who could write
//! `/tmp/bot.pid` must not make vigil signal sshd.
//!
//! Reads /proc: runs on an I/O thread, never on the supervision loop.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use vigil_core::{AgentId, Outside, RunId};

use super::proctree;
use crate::config::Adopt;

/// One agent about to start.
#[derive(Clone, Debug)]
pub struct Look {
    pub agent: AgentId,
    pub run: RunId,
    /// The agent's argv, as vigil would run it.
    pub argv: Vec<String>,
    /// Its working directory (vigil's own when the agent has none).
    pub cwd: PathBuf,
    pub adopt: Option<Adopt>,
    /// The user the agent runs as: only a process of this user is taken over.
    pub uid: u32,
}

/// What is vigil's own, never another's copy.
pub struct Own<'a> {
    pub self_pid: u32,
    /// Main processes vigil watches (spawned or taken over).
    pub watched: &'a HashSet<u32>,
    /// `VIGIL_STATE_DIR`'s value on vigil's runs.
    pub mark: (&'a str, &'a str),
}

/// A process as the look sees it.
struct Proc {
    pid: u32,
    ppid: u32,
    start_time: u64,
    argv: Vec<String>,
}

/// Larger pidfiles are not pidfiles.
const PIDFILE_MAX: u64 = 64;
/// A pidfile is written after its process started; by how much its time may seem to come
/// first (coarse file timestamps, clock steps).
const PIDFILE_SLACK_MS: i64 = 2_000;

/// The user an agent runs as: its `user`, else vigil's own.
pub fn uid_of(agent: &crate::config::AgentConfig) -> u32 {
    agent
        .run_as
        .as_ref()
        .map_or_else(|| rustix::process::geteuid().as_raw(), |c| c.uid)
}

/// Answer every look from one read of the process table.
pub fn look_all(looks: &[Look], own: &Own<'_>) -> Vec<(AgentId, RunId, Outside)> {
    let table = Table::read(own);
    looks
        .iter()
        .map(|l| (l.agent, l.run, table.look(l, own)))
        .collect()
}

struct Table {
    procs: Vec<Proc>,
    /// Index into `procs` by command key (see [`keys_of_process`]).
    by_command: HashMap<(String, Vec<String>), Vec<usize>>,
    /// Start time by pid (of every listed process).
    started: HashMap<u32, u64>,
    parent: HashMap<u32, u32>,
    hz: u64,
    now_ticks: u64,
}

impl Table {
    fn read(own: &Own<'_>) -> Table {
        let mut procs = Vec::new();
        if let Ok(dir) = fs::read_dir("/proc") {
            for pid in dir
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            {
                if pid == own.self_pid || own.watched.contains(&pid) {
                    continue;
                }
                let Some(info) = proctree::stat(pid) else {
                    continue;
                };
                if info.zombie || info.ppid == own.self_pid {
                    continue;
                }
                let argv = cmdline(pid);
                // Kernel threads have no command line.
                if argv.is_empty() {
                    continue;
                }
                procs.push(Proc {
                    pid,
                    ppid: info.ppid,
                    start_time: info.start_time,
                    argv,
                });
            }
        }
        let parent: HashMap<u32, u32> = procs.iter().map(|p| (p.pid, p.ppid)).collect();
        // vigil's parent, its parent's parent, …: never an agent.
        let mut ancestors = HashSet::new();
        let mut at = proctree::stat(own.self_pid).map_or(0, |s| s.ppid);
        while at > 1 && ancestors.insert(at) {
            at = parent.get(&at).copied().unwrap_or(0);
        }
        procs.retain(|p| !ancestors.contains(&p.pid));
        let mut by_command: HashMap<(String, Vec<String>), Vec<usize>> = HashMap::new();
        for (i, p) in procs.iter().enumerate() {
            for key in keys_of_process(&p.argv) {
                by_command.entry(key).or_default().push(i);
            }
        }
        Table {
            started: procs.iter().map(|p| (p.pid, p.start_time)).collect(),
            parent,
            by_command,
            procs,
            // SAFETY: sysconf has no preconditions.
            hz: (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).max(1) as u64,
            now_ticks: proctree::now_ticks(),
        }
    }

    fn look(&self, l: &Look, own: &Own<'_>) -> Outside {
        if let Some(adopt) = &l.adopt
            && let Some(found) = self.adoptable(adopt, l.uid, own)
        {
            return found;
        }
        self.copy_of(l, own).unwrap_or(Outside::Nothing)
    }

    fn age(&self, start_time: u64) -> Duration {
        let ticks = self.now_ticks.saturating_sub(start_time);
        Duration::from_millis(ticks.saturating_mul(1000) / self.hz)
    }

    fn adoptable(&self, adopt: &Adopt, uid: u32, own: &Own<'_>) -> Option<Outside> {
        let how = adopt.describe();
        match adopt {
            Adopt::Pidfile(path) => {
                let pid = read_pidfile(path)?;
                let started = *self.started.get(&pid)?;
                if is_marked(pid, own) || !written_after_start(path, pid) || owner(pid) != Some(uid)
                {
                    // vigil's own; a stale file whose pid a later process got; another
                    // user's process.
                    return None;
                }
                Some(Outside::Adoptable {
                    pid,
                    started,
                    age: self.age(started),
                    how,
                })
            }
            Adopt::Match(text) => {
                let matching: Vec<&Proc> = self
                    .procs
                    .iter()
                    .filter(|p| p.argv.join(" ").contains(text.as_str()))
                    .filter(|p| owner(p.pid) == Some(uid) && !is_marked(p.pid, own))
                    .collect();
                // `sh -c "python3 bot.py …"` matches as well as the python it runs: the
                // innermost is the agent.
                let pids: HashSet<u32> = matching.iter().map(|p| p.pid).collect();
                let innermost: Vec<&&Proc> = matching
                    .iter()
                    .filter(|p| !matching.iter().any(|q| self.descends(q.pid, p.pid, &pids)))
                    .collect();
                match innermost.as_slice() {
                    [] => None,
                    [p] => Some(Outside::Adoptable {
                        pid: p.pid,
                        started: p.start_time,
                        age: self.age(p.start_time),
                        how,
                    }),
                    many => Some(Outside::Copy {
                        pid: many[0].pid,
                        what: format!(
                            "{} processes match adopt's {how} (pids {}); vigil will not guess which \
                             one is the agent",
                            many.len(),
                            many.iter()
                                .map(|p| p.pid.to_string())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    }),
                }
            }
        }
    }

    /// Whether `pid` descends from `ancestor` (both among `within`, the matching processes).
    fn descends(&self, pid: u32, ancestor: u32, within: &HashSet<u32>) -> bool {
        let mut at = pid;
        for _ in 0..64 {
            let Some(&up) = self.parent.get(&at) else {
                return false;
            };
            if up == ancestor {
                return within.contains(&ancestor);
            }
            at = up;
        }
        false
    }

    fn copy_of(&self, l: &Look, own: &Own<'_>) -> Option<Outside> {
        let mut candidates: Vec<usize> = keys_of_agent(&l.argv)
            .iter()
            .filter_map(|k| self.by_command.get(k))
            .flatten()
            .copied()
            .collect();
        candidates.sort_unstable();
        candidates.dedup();
        let want_cwd = fs::canonicalize(&l.cwd).unwrap_or_else(|_| l.cwd.clone());
        for i in candidates {
            let p = &self.procs[i];
            if is_marked(p.pid, own) {
                continue;
            }
            let cwd = fs::read_link(format!("/proc/{}/cwd", p.pid)).ok();
            let what = match cwd {
                Some(cwd) if cwd == want_cwd => format!(
                    "pid {} runs the same command ({}) in {}, and vigil did not start it",
                    p.pid,
                    shown(&p.argv),
                    cwd.display()
                ),
                Some(_) => continue,
                // Another user's process: its directory cannot be read. Taken for a copy —
                // a second instance is worse than a start a human has to force.
                None => format!(
                    "pid {} runs the same command ({}) in a directory vigil cannot read (another \
                     user's process), and vigil did not start it",
                    p.pid,
                    shown(&p.argv)
                ),
            };
            return Some(Outside::Copy { pid: p.pid, what });
        }
        None
    }
}

/// A command line for a message: at most 200 characters.
fn shown(argv: &[String]) -> String {
    let s = argv.join(" ");
    match s.char_indices().nth(200) {
        Some((cut, _)) => format!("`{}…`", &s[..cut]),
        None => format!("`{s}`"),
    }
}

fn cmdline(pid: u32) -> Vec<String> {
    let Ok(raw) = fs::read(format!("/proc/{pid}/cmdline")) else {
        return Vec::new();
    };
    raw.split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

fn base_name(program: &str) -> String {
    Path::new(program)
        .file_name()
        .map_or_else(|| program.to_string(), |n| n.to_string_lossy().into_owned())
}

/// The keys a process is found by: its program's name with its arguments; and, for an
/// interpreter running a script (`python3 ./bot.py --x`), the script's name with the rest —
/// what an agent whose command is the script itself (`./bot.py --x`) runs as.
fn keys_of_process(argv: &[String]) -> Vec<(String, Vec<String>)> {
    let mut keys = vec![(base_name(&argv[0]), argv[1..].to_vec())];
    if let Some(script) = argv.get(1)
        && !script.starts_with('-')
    {
        keys.push((base_name(script), argv[2..].to_vec()));
    }
    keys
}

/// The keys an agent's command is looked up by: its argv; and for `shell = true` with a
/// plain command (`exec python3 bot.py`, no shell syntax), the words it runs — what the same
/// command typed into a shell runs as.
fn keys_of_agent(argv: &[String]) -> Vec<(String, Vec<String>)> {
    let mut keys = vec![(base_name(&argv[0]), argv[1..].to_vec())];
    if let [sh, c, line] = argv
        && matches!(base_name(sh).as_str(), "sh" | "bash" | "dash")
        && c == "-c"
        && !line.contains(|ch: char| "|&;<>()$`\\\"'*?[]~{}=#\n".contains(ch))
    {
        let mut words: Vec<String> = line.split_whitespace().map(str::to_string).collect();
        if words.first().is_some_and(|w| w == "exec") {
            words.remove(0);
        }
        if !words.is_empty() {
            keys.push((base_name(&words[0]), words[1..].to_vec()));
        }
    }
    keys
}

/// Carries this vigil's run mark: started by one of its agents.
fn is_marked(pid: u32, own: &Own<'_>) -> bool {
    proctree::environ_var(pid, own.mark.0).is_some_and(|v| v == own.mark.1)
}

/// The user a process runs as.
fn owner(pid: u32) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(format!("/proc/{pid}")).ok().map(|m| m.uid())
}

/// The pid in a pidfile not every user can write, and that is not vigil's
/// business to doubt further than its age (see [`written_after_start`]).
fn read_pidfile(path: &Path) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let file = fs::File::open(path).ok()?;
    let meta = file.metadata().ok()?;
    if meta.len() > PIDFILE_MAX || meta.mode() & 0o002 != 0 {
        if meta.mode() & 0o002 != 0 {
            tracing::warn!(
                "{} can be written by every user: vigil does not take over the pid in it",
                path.display()
            );
        }
        return None;
    }
    let text = fs::read_to_string(path).ok()?;
    text.trim().parse::<u32>().ok().filter(|pid| *pid > 1)
}

/// The pidfile was written after its pid's process started — else the pid was reused by a
/// later process and the file speaks of one that is gone.
fn written_after_start(path: &Path, pid: u32) -> bool {
    let (Some(info), Ok(meta)) = (proctree::stat(pid), fs::metadata(path)) else {
        return false;
    };
    let (Some(started_ms), Ok(modified)) = (proctree::started_wall_ms(&info), meta.modified())
    else {
        return false;
    };
    let Ok(written) = modified.duration_since(std::time::UNIX_EPOCH) else {
        return false;
    };
    written.as_millis() as i64 + PIDFILE_SLACK_MS >= started_ms
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Child, Command};

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|a| a.to_string()).collect()
    }

    /// A process group of the test's, killed whole when dropped (a shell's children too).
    struct Reaped(Child);
    impl Drop for Reaped {
        fn drop(&mut self) {
            // SAFETY: kill has no memory preconditions; the group is the child's own.
            unsafe { libc::kill(-(self.0.id() as i32), libc::SIGKILL) };
            let _ = self.0.wait();
        }
    }

    /// A process started "elsewhere": by the test, not by the vigil being simulated (whose
    /// pid is made up, so the test's children are not its children).
    fn outside(argv: &[&str], cwd: &Path) -> Reaped {
        use std::os::unix::process::CommandExt;
        let child = Command::new(argv[0])
            .args(&argv[1..])
            .current_dir(cwd)
            .process_group(0)
            .spawn()
            .unwrap();
        // Until it has exec'd, its command line is the test's.
        for _ in 0..200 {
            if cmdline(child.id()).first().map(String::as_str) == Some(argv[0]) {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Reaped(child)
    }

    fn look(argv: &[&str], cwd: &Path, adopt: Option<Adopt>) -> Look {
        Look {
            agent: AgentId(0),
            run: RunId(1),
            argv: s(argv),
            cwd: cwd.to_path_buf(),
            adopt,
            uid: rustix::process::geteuid().as_raw(),
        }
    }

    fn run(l: Look, watched: &HashSet<u32>) -> Outside {
        let own = Own {
            self_pid: 1_000_000_000,
            watched,
            mark: ("VIGIL_STATE_DIR", "/nonexistent-test-mark"),
        };
        look_all(&[l], &own).remove(0).2
    }

    #[test]
    fn the_same_command_in_the_same_directory_is_a_copy_and_elsewhere_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        let tag = format!("{}", std::process::id());
        let copy = outside(&["sleep", "30.1", &tag], dir.path());
        match run(
            look(&["sleep", "30.1", &tag], dir.path(), None),
            &HashSet::new(),
        ) {
            Outside::Copy { pid, what } => {
                assert_eq!(pid, copy.0.id());
                assert!(what.contains("sleep 30.1"), "{what}");
            }
            other => panic!("{other:?}"),
        }
        // The program by its path finds it too.
        assert!(matches!(
            run(
                look(&["/bin/sleep", "30.1", &tag], dir.path(), None),
                &HashSet::new()
            ),
            Outside::Copy { .. }
        ));
        // Another directory, or other arguments: not this agent.
        assert_eq!(
            run(
                look(&["sleep", "30.1", &tag], other.path(), None),
                &HashSet::new()
            ),
            Outside::Nothing
        );
        assert_eq!(
            run(
                look(&["sleep", "30.2", &tag], dir.path(), None),
                &HashSet::new()
            ),
            Outside::Nothing
        );
        // A process vigil watches is its own.
        let watched = HashSet::from([copy.0.id()]);
        assert_eq!(
            run(look(&["sleep", "30.1", &tag], dir.path(), None), &watched),
            Outside::Nothing
        );
    }

    #[test]
    fn a_shell_agent_finds_the_command_typed_by_hand() {
        let dir = tempfile::tempdir().unwrap();
        let tag = format!("{}", std::process::id());
        let _copy = outside(&["sleep", "30.3", &tag], dir.path());
        let line = format!("exec sleep 30.3 {tag}");
        assert!(matches!(
            run(
                look(&["/bin/sh", "-c", &line], dir.path(), None),
                &HashSet::new()
            ),
            Outside::Copy { .. }
        ));
    }

    #[test]
    fn a_pidfile_names_the_process_to_adopt_unless_it_is_stale() {
        let dir = tempfile::tempdir().unwrap();
        let tag = format!("{}", std::process::id());
        let bot = outside(&["sleep", "30.4", &tag], dir.path());
        let pidfile = dir.path().join("bot.pid");
        fs::write(&pidfile, format!("{}\n", bot.0.id())).unwrap();
        let adopt = Some(Adopt::Pidfile(pidfile.clone()));
        match run(look(&["bot"], dir.path(), adopt.clone()), &HashSet::new()) {
            Outside::Adoptable {
                pid, started, how, ..
            } => {
                assert_eq!(pid, bot.0.id());
                assert_eq!(Some(started), crate::driver::ProcessDriver::start_time(pid));
                assert_eq!(how, format!("pidfile {}", pidfile.display()));
            }
            other => panic!("{other:?}"),
        }
        // Written long before its pid's process started: the pid was reused.
        let old = std::time::SystemTime::now() - Duration::from_secs(3600);
        fs::File::options()
            .write(true)
            .open(&pidfile)
            .unwrap()
            .set_modified(old)
            .unwrap();
        assert_eq!(
            run(look(&["bot"], dir.path(), adopt.clone()), &HashSet::new()),
            Outside::Nothing
        );
        // A pidfile others can write names nothing (whoever wrote it).
        use std::os::unix::fs::PermissionsExt;
        fs::write(&pidfile, format!("{}\n", bot.0.id())).unwrap();
        fs::set_permissions(&pidfile, fs::Permissions::from_mode(0o666)).unwrap();
        assert_eq!(
            run(look(&["bot"], dir.path(), adopt.clone()), &HashSet::new()),
            Outside::Nothing
        );
        fs::set_permissions(&pidfile, fs::Permissions::from_mode(0o644)).unwrap();
        // Another user's process is not taken over.
        let mut other_user = look(&["bot"], dir.path(), adopt.clone());
        other_user.uid += 1;
        assert_eq!(run(other_user, &HashSet::new()), Outside::Nothing);
        // Garbage, a dead pid, pid 1: nothing to adopt.
        for text in ["not a pid", "1", "4194304999", ""] {
            fs::write(&pidfile, text).unwrap();
            assert_eq!(
                run(look(&["bot"], dir.path(), adopt.clone()), &HashSet::new()),
                Outside::Nothing,
                "{text:?}"
            );
        }
    }

    #[test]
    fn a_match_adopts_the_one_innermost_process_and_refuses_to_guess_between_two() {
        let dir = tempfile::tempdir().unwrap();
        let tag = format!("{}", std::process::id() + 7);
        // A shell wrapping the bot: both command lines contain the text.
        let line = format!("sleep 30.5 {tag}; true");
        let wrapper = outside(&["sh", "-c", &line], dir.path());
        let adopt = Some(Adopt::Match(format!("30.5 {tag}")));
        let mut found = Outside::Nothing;
        for _ in 0..100 {
            found = run(look(&["bot"], dir.path(), adopt.clone()), &HashSet::new());
            if matches!(found, Outside::Adoptable { pid, .. } if pid != wrapper.0.id()) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let Outside::Adoptable { pid, .. } = found else {
            panic!("{found:?}")
        };
        assert_ne!(pid, wrapper.0.id(), "the sleep inside, not the shell");
        assert_eq!(cmdline(pid)[0], "sleep");

        let _second = outside(&["sleep", "30.5", &tag], dir.path());
        match run(look(&["bot"], dir.path(), adopt), &HashSet::new()) {
            Outside::Copy { what, .. } => assert!(what.contains("2 processes"), "{what}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn keys_cover_scripts_run_by_their_interpreter() {
        let keys = keys_of_process(&s(&["/usr/bin/python3", "./bot.py", "--symbol", "BTC"]));
        assert!(keys.contains(&("bot.py".into(), s(&["--symbol", "BTC"]))));
        assert!(keys.contains(&("python3".into(), s(&["./bot.py", "--symbol", "BTC"]))));
        assert_eq!(
            keys_of_agent(&s(&["/bin/sh", "-c", "python3 bot.py | tee x"])).len(),
            1,
            "shell syntax: only the shell itself"
        );
    }
}
