//! One cgroup (v2) per run, where the kernel offers it: the way systemd keeps a service's
//! processes together. A process cannot leave its cgroup by clearing its environment, changing
//! `VIGIL_RUN`, double-forking, `setsid` or being reparented to init — so a run's cgroup names
//! every process of the run, and `cgroup.kill` stops them all at once, including ones forking
//! while they die.
//!
//! Layout: `<vigil's own cgroup>/vigil-<hash of the state dir>/<run tag>`. Under systemd, give
//! vigil's unit `Delegate=yes` (the shipped unit does) so that it may create cgroups below its
//! own. Runs' cgroups outlive vigil like the runs do: the next vigil on the state dir finds
//! them again, and with them any process of the run that escaped every other mark.
//!
//! Where there is no writable cgroup2 hierarchy (a container without one, no delegation, not
//! root), vigil says so once and keeps to process groups, sessions and marks.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

#[derive(Clone, Debug)]
pub struct Cgroups {
    base: Arc<PathBuf>,
    janitor: Arc<Janitor>,
}

/// Removes the cgroups of ended runs, one after another, on a thread of its own: removals side
/// by side only wait for each other on the kernel's cgroup lock (10,000 at once, on as many
/// threads, took seconds), and none of them belongs on the supervision loop.
#[derive(Debug, Default)]
struct Janitor {
    queue: Mutex<Option<Sender<PathBuf>>>,
    worker: Mutex<Option<JoinHandle<()>>>,
}

/// Why runs cannot have cgroups here.
#[derive(Debug, thiserror::Error)]
pub enum CgroupUnavailable {
    #[error("no cgroup2 file system is mounted")]
    NotMounted,
    #[error("vigil's own cgroup is unknown ({0})")]
    OwnUnknown(io::Error),
    #[error("cannot create {}: {source}", path.display())]
    Create { path: PathBuf, source: io::Error },
    #[error("cgroup.kill is missing (Linux 5.14 or later has it)")]
    NoKill,
}

impl Cgroups {
    /// The runs' cgroup directory for the state dir named `hash`, created if needed.
    pub fn detect(hash: &str) -> Result<Cgroups, CgroupUnavailable> {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mount = cgroup2_mount(&mountinfo).ok_or(CgroupUnavailable::NotMounted)?;
        let own = fs::read_to_string("/proc/self/cgroup").map_err(CgroupUnavailable::OwnUnknown)?;
        let own = own_cgroup(&own).ok_or_else(|| {
            CgroupUnavailable::OwnUnknown(io::Error::other("no `0::` line in /proc/self/cgroup"))
        })?;
        let base = mount
            .join(own.trim_start_matches('/'))
            .join(format!("vigil-{hash}"));
        match fs::create_dir(&base) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(source) => return Err(CgroupUnavailable::Create { path: base, source }),
        }
        if !base.join("cgroup.kill").exists() {
            let _ = fs::remove_dir(&base);
            return Err(CgroupUnavailable::NoKill);
        }
        Ok(Cgroups {
            base: Arc::new(base),
            janitor: Arc::default(),
        })
    }

    /// Remove the run's cgroup soon, off the calling thread (it stays while anything is in it;
    /// the sweep at exit takes what is left).
    pub fn remove_later(&self, tag: &str) {
        let dir = self.of(tag);
        let mut queue = self.janitor.queue.lock().unwrap_or_else(|e| e.into_inner());
        if queue.is_none() {
            let (tx, rx) = std::sync::mpsc::channel::<PathBuf>();
            let worker = std::thread::Builder::new()
                .name("vigil-cgroups".into())
                .spawn(move || rx.iter().for_each(|dir| remove_empty(&dir)));
            match worker {
                Ok(worker) => {
                    *queue = Some(tx);
                    *self
                        .janitor
                        .worker
                        .lock()
                        .unwrap_or_else(|e| e.into_inner()) = Some(worker);
                }
                // No thread: removed here and now.
                Err(_) => return remove_empty(&dir),
            }
        }
        if let Some(tx) = queue.as_ref()
            && let Err(unsent) = tx.send(dir)
        {
            remove_empty(&unsent.0);
        }
    }

    /// Wait until every removal asked for so far is done (vigil is exiting).
    pub fn finish_removals(&self) {
        drop(
            self.janitor
                .queue
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take(),
        );
        if let Some(worker) = self
            .janitor
            .worker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            let _ = worker.join();
        }
    }

    pub fn base(&self) -> &Path {
        &self.base
    }

    /// The cgroup of the run tagged `tag` (whether or not it exists).
    pub fn of(&self, tag: &str) -> PathBuf {
        // A tag is `agent#id.n`; a `/` (never in agent names) would leave the directory.
        self.base.join(tag.replace('/', "_"))
    }

    /// Make the run's cgroup and open it, for a spawn straight into it
    /// (`CLONE_INTO_CGROUP`: no moving afterwards, which would race with the agent's forks).
    pub fn open(&self, tag: &str) -> io::Result<fs::File> {
        let dir = self.of(tag);
        match fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        fs::File::open(&dir)
    }

    /// The processes in the run's cgroup now.
    pub fn members(&self, tag: &str) -> Vec<u32> {
        fs::read_to_string(self.of(tag).join("cgroup.procs"))
            .map(|text| text.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    /// SIGKILL every process in the run's cgroup at once (`cgroup.kill`): none can fork away
    /// meanwhile. A cgroup that does not exist has nobody to kill.
    pub fn kill(&self, tag: &str) -> io::Result<()> {
        match fs::write(self.of(tag).join("cgroup.kill"), "1") {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    /// Remove every run's cgroup that is empty, and the base too if nothing is left (vigil
    /// exits, or starts after an earlier vigil left some). Populated ones stay.
    pub fn sweep(&self) {
        for tag in self.tags() {
            let _ = fs::remove_dir(self.of(&tag));
        }
        let _ = fs::remove_dir(self.base.as_path());
    }

    /// Remove the empty cgroups of runs other than `keep` (a live run's cgroup may be empty
    /// for a moment: its main process is moved in just after the spawn).
    pub fn sweep_empty_except<'a>(&self, keep: impl Iterator<Item = &'a str>) {
        let keep: std::collections::HashSet<&str> = keep.collect();
        for tag in self.tags() {
            if !keep.contains(tag.as_str()) {
                let _ = fs::remove_dir(self.of(&tag));
            }
        }
    }

    /// Tags of the runs that have a cgroup here (at startup: runs of an earlier vigil).
    pub fn tags(&self) -> Vec<String> {
        fs::read_dir(self.base.as_path())
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok())
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .filter_map(|e| e.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Remove a run's cgroup once it is empty (a populated one stays, and says so at debug level;
/// one already gone is fine).
fn remove_empty(dir: &Path) {
    if let Err(e) = fs::remove_dir(dir)
        && e.kind() != io::ErrorKind::NotFound
    {
        tracing::debug!("cannot remove {} yet: {e}", dir.display());
    }
}

/// Where the cgroup2 hierarchy is mounted (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on
/// a hybrid system), from `/proc/self/mountinfo`.
fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let fstype = right.split_whitespace().next()?;
        let mount_point = left.split_whitespace().nth(4)?;
        (fstype == "cgroup2").then(|| PathBuf::from(unescape(mount_point)))
    })
}

/// mountinfo escapes spaces and such as `\040`.
fn unescape(s: &str) -> String {
    let mut out = Vec::new();
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8)
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// vigil's own cgroup in the v2 hierarchy: the `0::PATH` line.
fn own_cgroup(proc_self_cgroup: &str) -> Option<String> {
    proc_self_cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|p| p.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_cgroup2_mount_and_its_own_cgroup() {
        let hybrid = "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n\
                      30 25 0:26 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n";
        assert_eq!(cgroup2_mount(hybrid), Some("/sys/fs/cgroup/unified".into()));
        let odd = "41 31 0:38 / /mnt/cg\\040two rw - cgroup2 cgroup2 rw\n";
        assert_eq!(cgroup2_mount(odd), Some("/mnt/cg two".into()));
        assert_eq!(cgroup2_mount("1 2 0:1 / / rw - ext4 /dev/vda rw\n"), None);
        assert_eq!(
            own_cgroup("1:cpu:/\n0::/system.slice/vigil.service\n").as_deref(),
            Some("/system.slice/vigil.service")
        );
    }
}
