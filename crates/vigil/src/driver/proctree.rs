//! Finding every process of an agent's run in /proc, including the ones that left its
//! process group (a daemonizing grandchild calls setsid and gets a new group).
//!
//! A run is: its process group and session (the agent is started with setsid, so both equal
//! its main pid), every descendant of its main pid, and the orphans reparented to vigil (a
//! child subreaper) that carry the run's `VIGIL_RUN` tag in their environment, with their
//! descendants.

use std::collections::{HashMap, HashSet};
use std::fs;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcInfo {
    pub pid: u32,
    pub ppid: u32,
    pub pgrp: u32,
    pub session: u32,
    /// Clock ticks after boot: with the pid, identifies one process across pid reuse.
    pub start_time: u64,
    pub zombie: bool,
}

/// Parse `/proc/PID/stat`. The command name may contain spaces and parentheses, so fields
/// are counted from the last `)`.
pub fn parse_stat(text: &str) -> Option<ProcInfo> {
    let pid = text.split_whitespace().next()?.parse().ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is state (field 3 of stat); start_time is field 22.
    Some(ProcInfo {
        pid,
        zombie: matches!(fields.first(), Some(&"Z") | Some(&"X")),
        ppid: fields.get(1)?.parse().ok()?,
        pgrp: fields.get(2)?.parse().ok()?,
        session: fields.get(3)?.parse().ok()?,
        start_time: fields.get(19)?.parse().ok()?,
    })
}

pub fn stat(pid: u32) -> Option<ProcInfo> {
    parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// The process table, read at most once however many runs are looked up in it (reading
/// /proc costs about 10 µs per process), with the orphans vigil has inherited.
pub struct Snapshot {
    procs: std::cell::OnceCell<Table>,
    orphans: Vec<u32>,
}

/// The process table indexed once, so finding a run's members costs what the run has, not
/// what the machine has: children by parent, members by process group and by session, and
/// which processes are alive (not zombies).
pub struct Table {
    children: HashMap<u32, Vec<u32>>,
    groups: HashMap<u32, Vec<u32>>,
    sessions: HashMap<u32, Vec<u32>>,
    /// Live (not zombie) processes, with their start times: a pid plus its start time is one
    /// process, never a later one that reused the pid.
    alive: HashMap<u32, u64>,
}

impl Table {
    pub fn new(procs: Vec<ProcInfo>) -> Table {
        let mut t = Table {
            children: HashMap::new(),
            groups: HashMap::new(),
            sessions: HashMap::new(),
            alive: HashMap::new(),
        };
        for p in procs {
            t.children.entry(p.ppid).or_default().push(p.pid);
            t.groups.entry(p.pgrp).or_default().push(p.pid);
            t.sessions.entry(p.session).or_default().push(p.pid);
            if !p.zombie {
                t.alive.insert(p.pid, p.start_time);
            }
        }
        t
    }

    /// The members of process group `pgrp` in the table.
    pub fn in_group(&self, pgrp: u32) -> impl Iterator<Item = u32> + '_ {
        Table::listed(&self.groups, pgrp)
    }

    /// The start time of a live process in the table.
    pub fn started(&self, pid: u32) -> Option<u64> {
        self.alive.get(&pid).copied()
    }

    fn listed(map: &HashMap<u32, Vec<u32>>, key: u32) -> impl Iterator<Item = u32> + '_ {
        map.get(&key).into_iter().flatten().copied()
    }
}

impl Snapshot {
    /// `orphans`: vigil's children that nobody owns — what the kernel handed it as the
    /// subreaper of its agents' trees (never an agent's main process or a check).
    pub fn new(orphans: Vec<u32>) -> Self {
        Self {
            procs: std::cell::OnceCell::new(),
            orphans,
        }
    }

    pub fn get(&self) -> &Table {
        self.procs.get_or_init(|| Table::new(snapshot()))
    }

    pub fn orphans(&self) -> &[u32] {
        &self.orphans
    }
}

/// Every process on the machine (that is visible to vigil).
pub fn snapshot() -> Vec<ProcInfo> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(stat)
        .collect()
}

/// When a process started, as wall-clock milliseconds (from its start time in clock ticks
/// after boot and the boot time).
pub fn started_wall_ms(info: &ProcInfo) -> Option<i64> {
    wall_ms_of(info.start_time)
}

/// A start time (clock ticks after boot) as wall-clock milliseconds.
pub fn wall_ms_of(start_time: u64) -> Option<i64> {
    Some(boot_wall_s()? * 1000 + (start_time * 1000 / ticks_per_second()) as i64)
}

/// How long ago a process that started at `start_time` (clock ticks after boot) started.
pub fn age_of(start_time: u64) -> std::time::Duration {
    let ticks = now_ticks().saturating_sub(start_time);
    std::time::Duration::from_millis(ticks.saturating_mul(1000) / ticks_per_second())
}

/// The unit of a process's start time (`USER_HZ`).
pub fn ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64
}

/// When the machine booted (`btime` in /proc/stat), read once: it does not change.
fn boot_wall_s() -> Option<i64> {
    static BOOT: std::sync::OnceLock<Option<i64>> = std::sync::OnceLock::new();
    *BOOT.get_or_init(|| {
        fs::read_to_string("/proc/stat")
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("btime "))?
            .trim()
            .parse()
            .ok()
    })
}

/// The value of one variable in a process's environment (needs the same user or root).
pub fn environ_var(pid: u32, key: &str) -> Option<String> {
    let raw = fs::read(format!("/proc/{pid}/environ")).ok()?;
    let prefix = format!("{key}=");
    raw.split(|b| *b == 0)
        .find_map(|kv| kv.strip_prefix(prefix.as_bytes()))
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// Every live process that carries the marks of a run of the vigil on `state_dir`
/// (`VIGIL_STATE_DIR`, and its `VIGIL_RUN` tag), wherever it was reparented: after a
/// `kill -9` of vigil its agents belong to init, and only their marks say whose they are.
/// One look at every process's environment (tens of milliseconds), done at startup.
pub fn marked(state_dir: &str, state_var: &str, tag_var: &str) -> Vec<(ProcInfo, String)> {
    let state_prefix = format!("{state_var}=");
    let tag_prefix = format!("{tag_var}=");
    snapshot()
        .into_iter()
        .filter(|p| !p.zombie)
        .filter_map(|p| {
            let raw = fs::read(format!("/proc/{}/environ", p.pid)).ok()?;
            let mut ours = false;
            let mut tag = None;
            for kv in raw.split(|b| *b == 0) {
                if let Some(v) = kv.strip_prefix(state_prefix.as_bytes()) {
                    ours = v == state_dir.as_bytes();
                } else if let Some(v) = kv.strip_prefix(tag_prefix.as_bytes()) {
                    tag = Some(String::from_utf8_lossy(v).into_owned());
                }
            }
            ours.then_some((p, tag?))
        })
        .collect()
}

/// Now, in the unit of a process's start time (clock ticks since boot).
pub fn now_ticks() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    let hz = ticks_per_second();
    ts.tv_sec as u64 * hz + ts.tv_nsec as u64 * hz / 1_000_000_000
}

/// Live (non-zombie) processes belonging to the run whose main process is `main_pid`, each
/// with its start time. While the main process lives (`main_gone` is `None`) its pid, its
/// process group and its session are the run's. Once it is gone (since tick `t`) its pid may
/// belong to a stranger — who may even lead a group and a session of that id — so then a
/// member of that group or session counts only if it carries the run's tag or started before
/// `t` (a process that joined the group later is the child of a member, found as such).
#[allow(clippy::too_many_arguments)]
pub fn run_members(
    table: &Table,
    main_pid: u32,
    run_tag: &str,
    self_pid: u32,
    main_gone: Option<u64>,
    orphans: &[u32],
    env_of: impl Fn(u32) -> Option<String>,
) -> Vec<(u32, u64)> {
    let tagged = |p: &u32| env_of(*p).as_deref() == Some(run_tag);
    let mut roots: Vec<u32> = Vec::new();
    let near =
        Table::listed(&table.groups, main_pid).chain(Table::listed(&table.sessions, main_pid));
    if let Some(gone) = main_gone {
        let before = |p: &u32| table.alive.get(p).is_some_and(|started| *started < gone);
        roots.extend(near.filter(|p| before(p) || tagged(p)));
    } else {
        roots.push(main_pid);
        roots.extend(near);
    }
    // Orphans handed to vigil by the kernel: attributed by the tag they inherited. (Not
    // every child of vigil: that is the whole fleet, and this is one run.)
    roots.extend(
        orphans
            .iter()
            .copied()
            .filter(|p| *p != main_pid)
            .filter(tagged),
    );
    let mut members = HashSet::new();
    while let Some(pid) = roots.pop() {
        if pid <= 1 || pid == self_pid || !members.insert(pid) {
            continue;
        }
        roots.extend(Table::listed(&table.children, pid));
    }
    let mut out: Vec<(u32, u64)> = members
        .into_iter()
        .filter_map(|p| Some((p, *table.alive.get(&p)?)))
        .collect();
    out.sort_unstable();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pid: u32, ppid: u32, pgrp: u32, session: u32) -> ProcInfo {
        ProcInfo {
            pid,
            ppid,
            pgrp,
            session,
            start_time: 0,
            zombie: false,
        }
    }

    #[test]
    fn parses_stat_with_odd_command_names() {
        let line = "4242 (my (bot) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1234 56";
        let info = parse_stat(line).unwrap();
        assert_eq!(
            (info.pid, info.ppid, info.pgrp, info.session),
            (4242, 1, 4242, 4242)
        );
        assert_eq!(info.start_time, 987654);
        assert!(!info.zombie);
    }

    #[test]
    fn finds_group_descendants_and_tagged_orphans() {
        let vigil = 10;
        let procs = vec![
            p(vigil, 1, vigil, vigil),
            p(100, vigil, 100, 100), // main
            p(101, 100, 100, 100),   // child in group
            p(102, 101, 102, 102),   // grandchild that called setsid, parent alive
            p(103, vigil, 103, 103), // daemonized orphan of this run
            p(104, 103, 103, 103),   // its child
            p(200, vigil, 200, 200), // another agent
            p(300, vigil, 300, 300), // an orphan of another run
        ];
        // Its children nobody manages (200 is another agent's main process).
        let orphans = [103, 300];
        let tags = |pid| match pid {
            103 => Some("bot#1".to_string()),
            300 => Some("other#1".to_string()),
            _ => None,
        };
        let members = |procs: Vec<ProcInfo>, gone: Option<u64>| -> Vec<u32> {
            run_members(
                &Table::new(procs),
                100,
                "bot#1",
                vigil,
                gone,
                &orphans,
                tags,
            )
            .into_iter()
            .map(|(pid, _)| pid)
            .collect()
        };
        assert_eq!(members(procs.clone(), None), vec![100, 101, 102, 103, 104]);
        // After the main process is gone (at tick 50; everything above started at 0) the rest
        // is still found.
        let without_main: Vec<_> = procs.iter().copied().filter(|x| x.pid != 100).collect();
        assert_eq!(
            members(without_main.clone(), Some(50)),
            vec![101, 102, 103, 104]
        );
        // A stranger that got pid 100 later (tick 60), leads session and group 100 and has a
        // child of its own, is never the run's.
        let mut reused = without_main;
        reused.push(ProcInfo {
            start_time: 60,
            ..p(100, 1, 100, 100)
        });
        reused.push(ProcInfo {
            start_time: 61,
            ..p(105, 100, 100, 100)
        });
        assert_eq!(members(reused, Some(50)), vec![101, 102, 103, 104]);
    }
}
