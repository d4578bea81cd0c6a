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
//! Only a process of the agent's own user (`user`, else vigil's) is taken over, or taken for
//! a copy (root's too, for a copy): vigil, often root, stops what it takes over, and a local
//! user must not be able to keep an agent from starting by faking its command line. A pidfile
//! names something only if it is a regular file owned by root or the agent's user that not
//! every user can write: a user who can write `/tmp/bot.pid` must not make vigil signal sshd.
//!
//! Reads /proc: runs on an I/O thread, never on the supervision loop.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use vigil_core::{AgentId, Outside, RunId};

use super::proctree;
use crate::config::{Adopt, AgentConfig};
use crate::redact::Secrets;

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
    /// The user the agent runs as.
    pub uid: u32,
    /// Hidden from what the look reports (a copy's command line may carry the agent's keys).
    pub secrets: Secrets,
}

impl Look {
    /// What to look for before `agent` starts; `own_cwd` is where vigil runs it without `cwd`.
    pub fn for_agent(agent: AgentId, run: RunId, config: &AgentConfig, own_cwd: &Path) -> Look {
        Look {
            agent,
            run,
            argv: config.command.clone(),
            cwd: config.cwd.clone().unwrap_or_else(|| own_cwd.to_path_buf()),
            adopt: config.adopt.clone(),
            uid: config
                .run_as
                .as_ref()
                .map_or_else(|| rustix::process::geteuid().as_raw(), |c| c.uid),
            secrets: config.secrets(),
        }
    }
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
    /// `argv` joined by spaces (what `match` searches).
    line: String,
}

/// Larger pidfiles are not pidfiles.
const PIDFILE_MAX: u64 = 64;
/// A pidfile is written after its process started; by how much its time may seem to come
/// first (coarse file timestamps, clock steps).
const PIDFILE_SLACK_MS: i64 = 2_000;
/// Programs that run other programs: when one matches `adopt`'s `match` beside what it runs,
/// it is not the agent.
const SHELLS: &[&str] = &["sh", "bash", "dash", "zsh", "ksh", "busybox"];

/// Answer every look from one read of the process table. A process goes to one look at
/// most: a second `adopt` naming it is told it is taken.
pub fn look_all(looks: &[Look], own: &Own<'_>) -> Vec<(AgentId, RunId, Outside)> {
    let table = Table::read(own);
    let mut taken: HashSet<u32> = HashSet::new();
    looks
        .iter()
        .map(|l| {
            let found = match table.look(l, own) {
                Outside::Adoptable { pid, .. } if !taken.insert(pid) => Outside::Copy {
                    pid,
                    what: format!(
                        "pid {pid}, which adopt's {} names, is being taken over by another agent",
                        l.adopt.as_ref().map(Adopt::describe).unwrap_or_default()
                    ),
                },
                other => other,
            };
            (l.agent, l.run, found)
        })
        .collect()
}

struct Table {
    procs: Vec<Proc>,
    /// Index into `procs` by command key (see [`keys_of`]), with the path the key's name
    /// stands for.
    by_command: HashMap<Key, Vec<(usize, Option<String>)>>,
    /// Start time by pid (of every listed process).
    started: HashMap<u32, u64>,
    parent: HashMap<u32, u32>,
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
                    line: argv.join(" "),
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
        let mut by_command: HashMap<Key, Vec<(usize, Option<String>)>> = HashMap::new();
        for (i, p) in procs.iter().enumerate() {
            for (key, path) in keys_of(&p.argv) {
                by_command.entry(key).or_default().push((i, path));
            }
        }
        Table {
            started: procs.iter().map(|p| (p.pid, p.start_time)).collect(),
            parent,
            by_command,
            procs,
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

    fn adoptable(&self, adopt: &Adopt, uid: u32, own: &Own<'_>) -> Option<Outside> {
        let how = adopt.describe();
        match adopt {
            Adopt::Pidfile(path) => {
                let (pid, written_ms) = read_pidfile(path, uid)?;
                let started = *self.started.get(&pid)?;
                let started_ms = proctree::wall_ms_of(started)?;
                // A file written before its pid's process started speaks of an earlier one.
                let stale = written_ms + PIDFILE_SLACK_MS < started_ms;
                if stale || real_uid(pid) != Some(uid) || is_marked(pid, own) {
                    return None;
                }
                Some(Outside::Adoptable {
                    pid,
                    started,
                    age: proctree::age_of(started),
                    how,
                })
            }
            Adopt::Match(text) => {
                let matching: Vec<&Proc> = self
                    .procs
                    .iter()
                    .filter(|p| p.line.contains(text.as_str()))
                    .filter(|p| real_uid(p.pid) == Some(uid) && !is_marked(p.pid, own))
                    .collect();
                // A shell running the agent (`sh -c "python3 bot.py …"`) matches as well as
                // the agent: it is passed over for what it runs. Of the rest, the outermost is
                // the agent (a server's workers match as well as their master).
                let is_shell = |p: &Proc| SHELLS.contains(&base_name(&p.argv[0]).as_str());
                let programs: Vec<&Proc> = if matching.iter().all(|p| is_shell(p)) {
                    matching
                } else {
                    matching.into_iter().filter(|p| !is_shell(p)).collect()
                };
                let pids: HashSet<u32> = programs.iter().map(|p| p.pid).collect();
                let outermost: Vec<&Proc> = programs
                    .into_iter()
                    .filter(|p| !self.descends_from_any(p.pid, &pids))
                    .collect();
                match outermost.as_slice() {
                    [] => None,
                    [p] => Some(Outside::Adoptable {
                        pid: p.pid,
                        started: p.start_time,
                        age: proctree::age_of(p.start_time),
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

    /// Whether an ancestor of `pid` is among `pids`.
    fn descends_from_any(&self, pid: u32, pids: &HashSet<u32>) -> bool {
        let mut at = pid;
        for _ in 0..64 {
            match self.parent.get(&at) {
                Some(up) if pids.contains(up) => return true,
                Some(&up) if up > 1 => at = up,
                _ => return false,
            }
        }
        false
    }

    fn copy_of(&self, l: &Look, own: &Own<'_>) -> Option<Outside> {
        let want_cwd = fs::canonicalize(&l.cwd).unwrap_or_else(|_| l.cwd.clone());
        // Both run in `want_cwd` (checked below): a path is compared as resolved there.
        let mut candidates: Vec<usize> = Vec::new();
        for (key, path) in keys_of_agent(&l.argv) {
            for (i, found) in self.by_command.get(&key).into_iter().flatten() {
                if same_program(&want_cwd, path.as_deref(), found.as_deref()) {
                    candidates.push(*i);
                }
            }
        }
        candidates.sort_unstable();
        candidates.dedup();
        for i in candidates {
            let p = &self.procs[i];
            // Another user's process is not this agent (and must not keep it from starting).
            if !matches!(real_uid(p.pid), Some(u) if u == l.uid || u == 0) || is_marked(p.pid, own)
            {
                continue;
            }
            let shown = crate::redact::line_with(&shown(&p.argv), &l.secrets);
            let what = match fs::read_link(format!("/proc/{}/cwd", p.pid)) {
                Ok(cwd) if cwd == want_cwd => format!(
                    "pid {} runs the same command ({shown}) in {}, and vigil did not start it",
                    p.pid,
                    cwd.display()
                ),
                Ok(_) => continue,
                // Ended since the table was read.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                // A root process seen by a vigil that is not root: its directory cannot be
                // read. Taken for a copy — a second instance is worse than a forced start.
                Err(_) => format!(
                    "pid {} runs the same command ({shown}) in a directory vigil cannot read, \
                     and vigil did not start it",
                    p.pid
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

/// A program's (or script's) name and the arguments after it.
type Key = (String, Vec<String>);

/// The keys a command is found by, each with the path its name stands for: its program's
/// name with its arguments (a bare program name is a `PATH` lookup: no path); and, for an
/// interpreter running a script (`python3 ./bot.py --x`), the script's name with the rest
/// (its path relative to the working directory) — so `./bot.py --x`, `python3 bot.py --x`
/// and `/usr/bin/python3 /srv/bot/bot.py --x` in `/srv/bot` all meet, and two `beat.py`s of
/// two directories do not.
fn keys_of(argv: &[String]) -> Vec<(Key, Option<String>)> {
    let program = argv[0].contains('/').then(|| argv[0].clone());
    let mut keys = vec![((base_name(&argv[0]), argv[1..].to_vec()), program)];
    if let Some(script) = argv.get(1)
        && !script.starts_with('-')
    {
        keys.push((
            (base_name(script), argv[2..].to_vec()),
            Some(script.clone()),
        ));
    }
    keys
}

/// Whether two programs of one key are the same, both run in `cwd`: by name when either was
/// found by `PATH`, else by their paths resolved in `cwd`.
fn same_program(cwd: &Path, a: Option<&str>, b: Option<&str>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => resolved(cwd, a) == resolved(cwd, b),
        _ => true,
    }
}

/// `path` made absolute against `cwd`, `.` and `..` removed (without touching the disk).
fn resolved(cwd: &Path, path: &str) -> PathBuf {
    let mut out = PathBuf::new();
    for part in cwd.join(path).components() {
        match part {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// An agent's keys ([`keys_of`]); and for `shell = true` with a plain command (`exec python3
/// bot.py`, no shell syntax), the keys of the words it runs — what the same command typed
/// into a shell runs as.
fn keys_of_agent(argv: &[String]) -> Vec<(Key, Option<String>)> {
    let mut keys = keys_of(argv);
    if let [sh, c, line] = argv
        && SHELLS.contains(&base_name(sh).as_str())
        && c == "-c"
        && !line.contains(|ch: char| "|&;<>()$`\\\"'*?[]~{}=#\n".contains(ch))
    {
        let mut words: Vec<String> = line.split_whitespace().map(str::to_string).collect();
        if words.first().is_some_and(|w| w == "exec") {
            words.remove(0);
        }
        if !words.is_empty() {
            keys.extend(keys_of(&words));
        }
    }
    keys
}

/// Carries this vigil's run mark: started by one of its agents.
fn is_marked(pid: u32, own: &Own<'_>) -> bool {
    proctree::environ_var(pid, own.mark.0).is_some_and(|v| v == own.mark.1)
}

/// The real user of a process (`Uid:` in its status; the owner of `/proc/PID` is root for a
/// process that is not dumpable, whoever runs it).
fn real_uid(pid: u32) -> Option<u32> {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The pid in a pidfile, and when the file was written (wall-clock ms) — if the file can be
/// trusted: a regular file (not a symlink, FIFO or device), owned by root or the agent's user
/// `uid`, not writable by every user. Opened once, checked and read through that one
/// descriptor, so it cannot be swapped between the check and the read.
fn read_pidfile(path: &Path, uid: u32) -> Option<(u32, i64)> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let file = fs::File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    let meta = file.metadata().ok()?;
    let trusted = meta.file_type().is_file()
        && (meta.uid() == 0 || meta.uid() == uid)
        && meta.mode() & 0o002 == 0;
    if !trusted {
        tracing::warn!(
            "{} is not a regular file of root or the agent's user that only they can write: \
             vigil does not take over the pid in it",
            path.display()
        );
        return None;
    }
    let mut text = String::new();
    file.take(PIDFILE_MAX).read_to_string(&mut text).ok()?;
    let pid = text.trim().parse::<u32>().ok().filter(|pid| *pid > 1)?;
    let written = meta
        .modified()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?;
    Some((pid, written.as_millis() as i64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Child, Command};
    use std::time::Duration;

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
            secrets: Secrets::default(),
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
        // The agent's secrets never reach the report.
        let _keyed = outside(&["sleep", "30.6", &tag, "987654321"], dir.path());
        let mut secret = look(&["sleep", "30.6", &tag, "987654321"], dir.path(), None);
        secret.secrets = Secrets::from_env([("API_KEY", "987654321")], &[]);
        match run(secret, &HashSet::new()) {
            Outside::Copy { what, .. } => assert!(!what.contains("987654321"), "{what}"),
            other => panic!("{other:?}"),
        }
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
        // A symlink to a pidfile is not one (it could point anywhere).
        let link = dir.path().join("link.pid");
        std::os::unix::fs::symlink(&pidfile, &link).unwrap();
        assert_eq!(
            run(
                look(&["bot"], dir.path(), Some(Adopt::Pidfile(link))),
                &HashSet::new()
            ),
            Outside::Nothing
        );
        // Two agents whose adopt names one process: the first takes it, the second is told.
        let own = Own {
            self_pid: 1_000_000_000,
            watched: &HashSet::new(),
            mark: ("VIGIL_STATE_DIR", "/nonexistent-test-mark"),
        };
        let mut second = look(&["bot"], dir.path(), adopt.clone());
        second.agent = AgentId(1);
        let both = look_all(&[look(&["bot"], dir.path(), adopt.clone()), second], &own);
        assert!(matches!(both[0].2, Outside::Adoptable { .. }), "{both:?}");
        match &both[1].2 {
            Outside::Copy { what, .. } => assert!(what.contains("another agent"), "{what}"),
            other => panic!("{other:?}"),
        }
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
        let keys = keys_of(&s(&["/usr/bin/python3", "./bot.py", "--symbol", "BTC"]));
        assert!(keys.contains(&(
            ("bot.py".into(), s(&["--symbol", "BTC"])),
            Some("./bot.py".into())
        )));
        assert!(keys.contains(&(
            ("python3".into(), s(&["./bot.py", "--symbol", "BTC"])),
            Some("/usr/bin/python3".into())
        )));
        // One script, however it is named; two scripts of one name in two directories: two.
        let cwd = Path::new("/srv/bot");
        assert!(same_program(cwd, Some("./bot.py"), Some("/srv/bot/bot.py")));
        assert!(same_program(cwd, Some("bot.py"), Some("../bot/./bot.py")));
        assert!(!same_program(
            cwd,
            Some("/tmp/a/beat.py"),
            Some("/tmp/b/beat.py")
        ));
        assert_eq!(
            keys_of_agent(&s(&["/bin/sh", "-c", "python3 bot.py | tee x"])).len(),
            1,
            "shell syntax: only the shell itself"
        );
    }
}
