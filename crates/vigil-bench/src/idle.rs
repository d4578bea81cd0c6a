//! `vigil-bench idle`: what a fleet of idle agents costs — the time to start them all, vigil's
//! memory and CPU while they idle, `/status` and `/metrics`, a reload that changes one agent,
//! and the time to stop them all — at each fleet size, so BENCHMARKS.md shows the curve.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde_json::json;

use crate::{Daemon, idle_usage, scratch};

/// The agent a reload changes (its command gains an argument).
const PROBE: &str = "probe";

/// Every fleet size in turn. The scratch directories are removed only at the end: on an ext4
/// without a journal (this VM's disk), allocating inodes skips over those deleted in the last
/// minutes one by one, so deleting 10,000 log files just before creating 10,000 more measures
/// the file system, not vigil.
pub fn idle_curve(
    vigil: &Path,
    sizes: &[usize],
    seconds: u64,
    api: bool,
) -> Result<serde_json::Value> {
    let mut rows = Vec::new();
    let mut dirs = Vec::new();
    let result = (|| {
        for &n in sizes {
            let dir = scratch(&format!("idle{n}"));
            let _ = std::fs::remove_dir_all(&dir);
            dirs.push(dir.clone());
            rows.push(idle(vigil, &dir, n, seconds, api)?);
        }
        Ok(json!({ "idle": rows }))
    })();
    for dir in dirs {
        let _ = std::fs::remove_dir_all(dir);
    }
    result
}

/// `n` agents: `n - 1` instances of one template, and the probe.
fn config(n: usize, api: bool, probe_arg: &str) -> String {
    let instances: Vec<String> = (1..n).map(|i| format!("\"{i}\"")).collect();
    let idle = if instances.is_empty() {
        String::new()
    } else {
        format!(
            "[agents.idle]\ncommand = [\"sleep\", \"1000000\"]\ninstances = [{}]\n\n",
            instances.join(", ")
        )
    };
    let api = if api {
        "listen = \"127.0.0.1:0\""
    } else {
        "enabled = false"
    };
    format!(
        "[vigil]\nstate_dir = \"state\"\n\n[api]\n{api}\n\n{idle}\
         [agents.{PROBE}]\ncommand = [\"sleep\", \"{probe_arg}\"]\n"
    )
}

/// The machine's own floor: how long starting `n` idle processes takes with nothing else to
/// do (std's `posix_spawn`, one after another; no cgroups, logs or records), and stopping
/// them (SIGKILL to each, then collecting each).
fn spawn_floor(n: usize) -> Result<(Duration, Duration)> {
    let t0 = Instant::now();
    let mut children = Vec::with_capacity(n);
    let spawned = (|| {
        for _ in 0..n {
            children.push(
                std::process::Command::new("sleep")
                    .arg("1000000")
                    .stdin(std::process::Stdio::null())
                    .spawn()?,
            );
        }
        Ok::<_, std::io::Error>(t0.elapsed())
    })();
    std::thread::sleep(Duration::from_secs(1));
    let t1 = Instant::now();
    for c in &mut children {
        let _ = c.kill();
    }
    for c in &mut children {
        let _ = c.wait();
    }
    Ok((spawned?, t1.elapsed()))
}

fn idle(vigil: &Path, dir: &Path, n: usize, seconds: u64, api: bool) -> Result<serde_json::Value> {
    let (floor, kill_floor) = spawn_floor(n)?;
    std::thread::sleep(Duration::from_secs(1));
    let t0 = Instant::now();
    let mut daemon = Daemon::start(vigil, dir, &config(n, api, "1000000"))?;
    let mut state = StateWatch::new(dir.join("state/state.jsonl"));
    wait_until(&mut daemon, "all agents started", || {
        state.refresh();
        state.running() >= n
    })?;
    let start_all = t0.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    let (rss_kib, cpu_pct) = idle_usage(daemon.pid(), seconds)?;

    let views = if api {
        let addr = std::fs::read_to_string(dir.join("state/api.addr"))?;
        Some((
            latency(addr.trim(), "/status")?,
            latency(addr.trim(), "/metrics")?,
        ))
    } else {
        None
    };

    // A reload that changes one agent: from the signal to its new run on record.
    let old_probe = state.pid(PROBE);
    std::fs::write(dir.join("vigil.toml"), config(n, api, "1000001"))?;
    let t2 = Instant::now();
    // SAFETY: a plain kill(2) of the daemon this bench started.
    unsafe { libc::kill(daemon.pid() as libc::pid_t, libc::SIGHUP) };
    wait_until(&mut daemon, "the changed agent restarted", || {
        state.refresh();
        state.pid(PROBE).is_some_and(|p| Some(p) != old_probe)
    })?;
    let reload = t2.elapsed();

    let stop = daemon.stop_keeping_files()?;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let views_text = views
        .as_ref()
        .map(|((s, s_kb), (m, m_kb))| {
            format!(" · /status {s:.1} ms ({s_kb} KB) · /metrics {m:.1} ms ({m_kb} KB)")
        })
        .unwrap_or_default();
    println!(
        "{n:>6} idle agents: all started in {:.0} ms (bare spawns {:.0} ms) · RSS {:.1} MB · CPU {cpu_pct:.3} % of a core over {seconds}s{views_text} · reload changing one agent {:.0} ms · stop all {:.0} ms (bare kills {:.0} ms)",
        ms(start_all),
        ms(floor),
        rss_kib as f64 / 1024.0,
        ms(reload),
        ms(stop),
        ms(kill_floor),
    );
    Ok(json!({
        "agents": n,
        "api": api,
        "start_all_ms": ms(start_all),
        "spawn_floor_ms": ms(floor),
        "rss_mb": rss_kib as f64 / 1024.0,
        "cpu_percent": cpu_pct,
        "seconds": seconds,
        "status_ms": views.as_ref().map(|v| v.0.0),
        "status_kb": views.as_ref().map(|v| v.0.1),
        "metrics_ms": views.as_ref().map(|v| v.1.0),
        "metrics_kb": views.as_ref().map(|v| v.1.1),
        "reload_one_ms": ms(reload),
        "stop_all_ms": ms(stop),
        "kill_floor_ms": ms(kill_floor),
    }))
}

/// Poll `done` every 2 ms for up to two minutes, failing early if vigil exits.
fn wait_until(daemon: &mut Daemon, what: &str, done: impl FnMut() -> bool) -> Result<()> {
    wait_within(daemon, what, Duration::from_secs(120), done)
}

/// Poll `done` until it holds, while the daemon lives, for at most `limit`.
pub fn wait_within(
    daemon: &mut Daemon,
    what: &str,
    limit: Duration,
    mut done: impl FnMut() -> bool,
) -> Result<()> {
    let t0 = Instant::now();
    while !done() {
        daemon.check_alive()?;
        if t0.elapsed() > limit {
            bail!("{what}: not within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(())
}

/// Median time of five requests on fresh connections (request to last byte, loopback), and
/// the size of the answer in KB.
fn latency(addr: &str, path: &str) -> Result<(f64, usize)> {
    let mut times = Vec::new();
    let mut size = 0;
    for _ in 0..5 {
        let t = Instant::now();
        let (code, len) = crate::api::get(addr, path)?;
        if code != 200 {
            bail!("GET {path}: {code}");
        }
        times.push(t.elapsed().as_secs_f64() * 1e3);
        size = len / 1024;
    }
    times.sort_by(f64::total_cmp);
    Ok((times[times.len() / 2], size))
}

/// `state.jsonl` read as vigil appends it: only what is new since the last look (reading and
/// parsing the whole file every 2 ms would take the CPU vigil is being measured on). The last
/// line for an agent wins; a rewrite (compaction: a new, shorter file) is read again whole.
pub struct StateWatch {
    path: PathBuf,
    inode: u64,
    offset: u64,
    partial: Vec<u8>,
    pids: HashMap<String, Option<u64>>,
}

impl StateWatch {
    pub fn new(path: PathBuf) -> StateWatch {
        StateWatch {
            path,
            inode: 0,
            offset: 0,
            partial: Vec::new(),
            pids: HashMap::new(),
        }
    }

    pub fn refresh(&mut self) {
        let Ok(mut file) = std::fs::File::open(&self.path) else {
            return;
        };
        let Ok(meta) = file.metadata() else {
            return;
        };
        if meta.ino() != self.inode || meta.len() < self.offset {
            self.inode = meta.ino();
            self.offset = 0;
            self.partial.clear();
            self.pids.clear();
        }
        let mut new = Vec::new();
        if file.seek(SeekFrom::Start(self.offset)).is_err() || file.read_to_end(&mut new).is_err() {
            return;
        }
        self.offset += new.len() as u64;
        self.partial.extend_from_slice(&new);
        let Some(end) = self.partial.iter().rposition(|b| *b == b'\n') else {
            return;
        };
        let whole: Vec<u8> = self.partial.drain(..=end).collect();
        for line in whole.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(line) else {
                continue;
            };
            let name = v["agent"].as_str().unwrap_or_default().to_string();
            self.pids.insert(name, v["state"]["run"]["pid"].as_u64());
        }
    }

    pub fn running(&self) -> usize {
        self.pids.values().filter(|p| p.is_some()).count()
    }

    fn pid(&self, agent: &str) -> Option<u64> {
        self.pids.get(agent).copied().flatten()
    }
}
