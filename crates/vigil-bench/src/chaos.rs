//! `vigil-bench chaos`: vigil under random faults for N minutes, from a seed, and what it left.
//!
//! Six agents (`sh` loops that record each start with their pid and `VIGIL_RUN`, and touch a
//! heartbeat file that a `file` check watches). Every 100–600 ms one fault, chosen by the seed:
//!
//! - vigil killed with SIGKILL (at whatever point it is), and started again 0–300 ms later;
//! - an agent killed with SIGKILL (a crash);
//! - an agent stopped with SIGSTOP (a hang: its heartbeat goes stale);
//! - a burst of 50 slow clients holding half-sent requests for 2–5 s.
//!
//! Every 20 ms the process table is read: an agent with two live copies is the failure that
//! matters most. At the end vigil is stopped (SIGTERM) and the report says: runs started (by the
//! agents' own records) and spawns journaled (`start` + `restart` records), runs started with
//! no record before them, copies > 1 seen, processes left after vigil stopped, and journal
//! lines that are not whole records.

use std::collections::HashMap;
use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::{Value, json};

const AGENTS: usize = 6;

/// A small, seeded generator (xorshift64*): the same seed gives the same faults.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn marker(i: usize) -> String {
    format!("vigil-chaos-agent-{i}")
}

/// Live pids whose command line contains `needle`.
fn pids_with(needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let zombie = stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
        if !zombie && String::from_utf8_lossy(&cmd).contains(needle) {
            out.push(pid);
        }
    }
    out
}

/// How many distinct runs of an agent are alive: its processes grouped by their `VIGIL_RUN`
/// (a shell's child between fork and exec has the shell's command line, but the same run).
fn runs_alive(needle: &str) -> usize {
    let mut runs: Vec<String> = pids_with(needle)
        .into_iter()
        .filter_map(|pid| {
            let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
            env.split(|b| *b == 0)
                .find_map(|kv| kv.strip_prefix(b"VIGIL_RUN="))
                .map(|v| String::from_utf8_lossy(v).into_owned())
        })
        .collect();
    runs.sort();
    runs.dedup();
    runs.len()
}

/// Signal an agent's process only if the pid is still one of its (a pid scanned a moment ago
/// may have been reused since; this narrows that to the time between two reads).
fn signal_agent(pid: u32, needle: &str, sig: &str) {
    let still = std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle));
    if still {
        signal(pid, sig);
    }
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill").args([sig, &pid.to_string()]).status();
}

fn start_vigil(vigil: &Path, dir: &Path) -> Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("vigil.out"))?;
    Command::new(vigil)
        .args(["run", "-c"])
        .arg(dir.join("vigil.toml"))
        .env("VIGIL_LOG", "warn")
        .stdout(log.try_clone()?)
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .context("start vigil")
}

pub fn chaos(vigil: &Path, minutes: f64, seed: u64) -> Result<Value> {
    let dir = super::scratch("chaos");
    std::fs::create_dir_all(&dir)?;
    let mut config = String::from(
        "[api]\nlisten = \"127.0.0.1:0\"\n\n[defaults]\nstop_timeout = \"1s\"\n\n\
         [defaults.policy]\ncooldown = \"0s\"\nbackoff_initial = \"50ms\"\nbackoff_max = \"1s\"\n\
         max_restarts = 1000000\nwindow = \"1m\"\n",
    );
    for i in 0..AGENTS {
        let starts = dir.join(format!("starts-{i}"));
        let hb = dir.join(format!("hb-{i}"));
        config += &format!(
            "\n[agents.a{i}]\ncommand = [\"sh\", \"-c\", \"echo \\\"$$ $VIGIL_RUN\\\" >> {starts}; while :; do touch {hb}; sleep 0.2; done\", \"{m}\"]\n\
             [[agents.a{i}.checks]]\nkind = \"heartbeat\"\npath = \"{hb}\"\nmax_age = \"2s\"\n",
            starts = starts.display(),
            hb = hb.display(),
            m = marker(i),
        );
    }
    std::fs::write(dir.join("vigil.toml"), config)?;
    let mut rng = Rng(seed.max(1));
    let mut child = start_vigil(vigil, &dir)?;
    let started = Instant::now();
    let until = started + Duration::from_secs_f64(minutes * 60.0);
    let mut faults: HashMap<&str, u64> = HashMap::new();
    let mut most_copies = [0usize; AGENTS];
    let mut twice = 0u64;
    let mut slow: Vec<(Instant, Vec<TcpStream>)> = Vec::new();
    let mut next_fault = Instant::now() + Duration::from_secs(1);
    while Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
        for (i, most) in most_copies.iter_mut().enumerate() {
            let n = runs_alive(&marker(i));
            *most = (*most).max(n);
            if n > 1 {
                twice += 1;
            }
        }
        slow.retain(|(until, _)| Instant::now() < *until);
        if Instant::now() < next_fault {
            continue;
        }
        next_fault = Instant::now() + Duration::from_millis(100 + rng.below(500));
        match rng.below(100) {
            0..=14 => {
                *faults.entry("vigil killed").or_default() += 1;
                signal(child.id(), "-KILL");
                child.wait()?;
                std::thread::sleep(Duration::from_millis(rng.below(300)));
                child = start_vigil(vigil, &dir)?;
            }
            15..=64 => {
                let m = marker(rng.below(AGENTS as u64) as usize);
                if let Some(pid) = pids_with(&m).first() {
                    *faults.entry("agent crashed").or_default() += 1;
                    signal_agent(*pid, &m, "-KILL");
                }
            }
            65..=89 => {
                let m = marker(rng.below(AGENTS as u64) as usize);
                if let Some(pid) = pids_with(&m).first() {
                    *faults.entry("agent hung").or_default() += 1;
                    signal_agent(*pid, &m, "-STOP");
                }
            }
            _ => {
                let addr = std::fs::read_to_string(dir.join(".vigil/api.addr")).unwrap_or_default();
                let mut held = Vec::new();
                for _ in 0..50 {
                    if let Ok(mut s) = TcpStream::connect(addr.trim()) {
                        let _ = s.write_all(b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\n");
                        held.push(s);
                    }
                }
                *faults.entry("slow clients").or_default() += 1;
                let hold = Duration::from_millis(2000 + rng.below(3000));
                slow.push((Instant::now() + hold, held));
            }
        }
    }
    slow.clear();
    // The end: a graceful stop, then whatever is left is an orphan.
    signal(child.id(), "-TERM");
    child.wait()?;
    std::thread::sleep(Duration::from_millis(500));
    let orphans: usize = (0..AGENTS).map(|i| pids_with(&marker(i)).len()).sum();
    for i in 0..AGENTS {
        for pid in pids_with(&marker(i)) {
            signal_agent(pid, &marker(i), "-KILL");
        }
    }

    let journal = std::fs::read_to_string(dir.join(".vigil/audit.jsonl")).unwrap_or_default();
    let mut torn = 0;
    let mut decided: HashMap<String, u64> = HashMap::new();
    for line in journal.lines() {
        match serde_json::from_str::<Value>(line) {
            Ok(r) if r["action"] == "start" || r["action"] == "restart" => {
                *decided
                    .entry(r["agent"].as_str().unwrap_or("").to_string())
                    .or_default() += 1;
            }
            Ok(_) => {}
            Err(_) => torn += 1,
        }
    }
    let mut runs = 0u64;
    let mut journaled = 0u64;
    let mut unjournaled = 0u64;
    for i in 0..AGENTS {
        let starts = std::fs::read_to_string(dir.join(format!("starts-{i}"))).unwrap_or_default();
        let n = starts.lines().count() as u64;
        let d = decided.get(&format!("a{i}")).copied().unwrap_or(0);
        runs += n;
        journaled += d;
        unjournaled += n.saturating_sub(d);
    }
    let copies = most_copies.iter().copied().max().unwrap_or(0);
    println!(
        "chaos for {minutes} min (seed {seed}): faults {faults:?}\n  runs started {runs}, spawns journaled {journaled}, runs with no record before them {unjournaled}\n  most copies of one agent at once {copies} (samples with two or more: {twice}), processes left after vigil stopped {orphans}, journal lines not whole records {torn}"
    );
    let ok = unjournaled == 0 && copies <= 1 && orphans == 0;
    if ok {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        println!("  kept for a look: {}", dir.display());
    }
    Ok(json!({
        "chaos": {
            "minutes": minutes, "seed": seed, "faults": faults,
            "runs_started": runs, "spawns_journaled": journaled, "unjournaled_runs": unjournaled,
            "most_copies": copies, "samples_with_copies": twice, "orphans": orphans,
            "torn_journal_lines": torn, "ok": ok,
        }
    }))
}
