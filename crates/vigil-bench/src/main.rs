//! Benchmarks of the real `vigil` binary. Build everything first, then run from the target dir:
//!
//! ```text
//! cargo build --release --workspace
//! target/release/vigil-bench crash-restart --restarts 300
//! target/release/vigil-bench idle --agents 10,100,1000 --seconds 60
//! target/release/vigil-bench graph-start --agents 1000
//! target/release/vigil-bench api --agents 1000 --seconds 10
//! target/release/vigil-bench advisor --provider openai --url http://127.0.0.1:18080 --model smollm2
//! ```
//!
//! Results go to stdout as a table and, with `--json`, as one JSON object.

mod advisor;
mod alerts;
mod api;
mod chaos;
mod checkpoints;
mod cluster;
mod conn;
mod docker;
mod graph;
mod idle;
mod slow;
mod soak;
mod units;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use serde_json::json;

#[derive(Parser)]
#[command(about = "Benchmarks for vigil (see BENCHMARKS.md)")]
struct Cli {
    /// The vigil binary to measure (default: `vigil` next to this binary)
    #[arg(long, global = true)]
    vigil: Option<PathBuf>,
    /// Also print the results as JSON
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// Time from an agent's exit to the start of its replacement
    CrashRestart {
        #[arg(long, default_value_t = 300)]
        restarts: usize,
        /// How long each agent run lives before it exits
        #[arg(long, default_value_t = 20)]
        lifetime_ms: u64,
        /// Also run a second agent that writes this many MB of log per run and crashes, over
        /// and over (its log is rotated at 10 MB): the measured restarts must not notice
        #[arg(long, default_value_t = 0)]
        noise_mb: u64,
        /// Hold this many slow clients (half-sent requests) against vigil's API while measuring
        #[arg(long, default_value_t = 0)]
        slow_clients: usize,
        /// Run vigil in a cluster on this PostgreSQL (a database is made for the run): its
        /// renewals and the journal's mirror (every restart's records copied) run meanwhile
        #[arg(long)]
        cluster: Option<String>,
    },
    /// For each fleet size of idle agents: the time to start them all, vigil's memory and CPU,
    /// `/status` and `/metrics`, a reload that changes one agent, the time to stop them all
    Idle {
        #[arg(long, value_delimiter = ',', default_value = "10,100,1000")]
        agents: Vec<usize>,
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Run vigil with its HTTP API off (`[api] enabled = false`)
        #[arg(long)]
        no_api: bool,
    },
    /// Time from a heartbeat's age passing max_age to the stop signal reaching the agent
    Stall {
        /// Stalls measured per check kind (heartbeat file, notify)
        #[arg(long, default_value_t = 60)]
        stalls: usize,
        #[arg(long, default_value_t = 200)]
        max_age_ms: u64,
    },
    /// Notify datagrams vigil accepts per second from one agent sending as fast as it can
    NotifyFlood {
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
    },
    /// `/metrics` latency with N agents; `GET /status` and heartbeat throughput with `wrk`,
    /// and crash-to-restart latency while the API is under that load
    Api {
        #[arg(long, default_value_t = 1000)]
        agents: usize,
        /// Length of each load phase
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// Time from a crash to the LLM advisor's verdict in the journal, for fresh evidence and for
    /// evidence seen before (served from the cache). Needs a running model server
    Advisor {
        /// `ollama` or `openai`
        #[arg(long, default_value = "openai")]
        provider: String,
        #[arg(long, default_value = "http://127.0.0.1:18080")]
        url: String,
        #[arg(long, default_value = "smollm2")]
        model: String,
        /// Failures with evidence the model has not seen
        #[arg(long, default_value_t = 5)]
        fresh: usize,
        /// Failures repeating the first one's evidence
        #[arg(long, default_value_t = 5)]
        repeated: usize,
    },
    /// vigil under random faults (kill -9 of vigil, agent crashes and hangs, slow clients):
    /// runs started vs journaled, copies > 1, orphans, torn journal lines
    Chaos {
        #[arg(long, default_value_t = 5.0)]
        minutes: f64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Exclusive agents on a cluster of three vigil nodes sharing a real PostgreSQL: seeded
    /// fault rounds (node killed, cut from the database, vigil killed, moved), failover times,
    /// flaps, and whether any two runs' orders ever interleaved. Needs psql and a Python with
    /// the vigil-agent client
    Cluster {
        #[arg(long, default_value_t = 50)]
        rounds: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, default_value_t = 3)]
        lease_ttl_s: u64,
        /// PostgreSQL (a database is created in it for the run, and dropped)
        #[arg(
            long,
            env = "VIGIL_TEST_POSTGRES_URL",
            default_value = "postgres://postgres@127.0.0.1:5432/test"
        )]
        pg: String,
        /// A Python with the vigil-agent client installed (`pip install ./clients/python`)
        #[arg(long, env = "VIGIL_TEST_PYTHON", default_value = "python3")]
        python: String,
    },
    /// The journal's mirror to PostgreSQL: a backlog of N records copied, records/s
    ClusterMirror {
        #[arg(long, default_value_t = 100_000)]
        records: usize,
        #[arg(
            long,
            env = "VIGIL_TEST_POSTGRES_URL",
            default_value = "postgres://postgres@127.0.0.1:5432/test"
        )]
        pg: String,
    },
    /// Lease renewals of N exclusive agents on one node: statements per renewal period (the
    /// database's own count), vigil's CPU
    ClusterRenewals {
        #[arg(long, default_value_t = 1000)]
        agents: usize,
        #[arg(long, default_value_t = 30)]
        seconds: u64,
        #[arg(
            long,
            env = "VIGIL_TEST_POSTGRES_URL",
            default_value = "postgres://postgres@127.0.0.1:5432/test"
        )]
        pg: String,
    },
    /// Docker containers (needs an engine: DOCKER_HOST): a container's die → vigil's start
    /// request (the engine's share apart), and vigil's CPU and wakeups while watching N
    Docker {
        #[arg(long, default_value_t = 50)]
        restarts: usize,
        #[arg(long, default_value_t = 100)]
        containers: usize,
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
    /// systemd units (needs a systemd host: `.ci/systemd-setup`'s VIGIL_TEST_SYSTEMD_PID and
    /// _SHARE; vigil runs inside it): a unit's end → vigil's start request (systemd's share
    /// apart), and vigil's CPU and wakeups while watching N
    Units {
        #[arg(long, default_value_t = 50)]
        restarts: usize,
        #[arg(long, default_value_t = 100)]
        units: usize,
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
    /// N agents in a 3-level dependency graph started from nothing: the time until all run,
    /// and that none started before the agent it depends on
    GraphStart {
        #[arg(long, default_value_t = 1000)]
        agents: usize,
    },
    /// Alertmanager's webhook: answered (journaled) latency at a steady rate of new alerts,
    /// memory under a stream of repeats, and alert → its runbook's first step
    Alerts {
        #[arg(long, default_value_t = 200)]
        rate: u32,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Repeats of one alert per second
        #[arg(long, default_value_t = 1000)]
        repeats: u32,
        /// Alerts whose runbook restarts an agent (one agent each)
        #[arg(long, default_value_t = 50)]
        runbooks: usize,
    },
    /// Durable checkpoint writes (10 KB, compare-and-swap): one agent's latency, and the rate
    /// of N agents writing at once; SQLite in the state dir, or PostgreSQL with --store-url
    Checkpoints {
        #[arg(long, default_value_t = 8)]
        writers: usize,
        #[arg(long, default_value_t = 8000)]
        writes: usize,
        #[arg(long, default_value_t = 10_240)]
        size: usize,
        /// `postgres://…`: measure PostgreSQL instead of SQLite
        #[arg(long)]
        store_url: Option<String>,
    },
    /// The demo fleet with its faults for N minutes: vigil's RSS over time, the journal's
    /// growth and integrity, checkpoints against the decisions written, orphans
    Soak {
        #[arg(long, default_value_t = 30.0)]
        minutes: f64,
        #[arg(long, default_value_t = 4)]
        seed: u64,
        /// How often vigil is sampled (seconds)
        #[arg(long, default_value_t = 30)]
        every: u64,
    },
    /// vigil's CPU while N agents each have a file check every second
    FileChecks {
        #[arg(long, default_value_t = 1000)]
        agents: usize,
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
}

fn sibling(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let path = exe.parent().context("no parent dir")?.join(name);
    if !path.exists() {
        bail!(
            "{} not found: run `cargo build --release --workspace` first",
            path.display()
        );
    }
    Ok(path)
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let vigil = match cli.vigil {
        Some(p) => p,
        None => sibling("vigil")?,
    };
    let result = match cli.bench {
        Bench::CrashRestart {
            restarts,
            lifetime_ms,
            noise_mb,
            slow_clients,
            cluster,
        } => crash_restart(
            &vigil,
            restarts,
            lifetime_ms,
            noise_mb,
            slow_clients,
            cluster.as_deref(),
        )?,
        Bench::Stall { stalls, max_age_ms } => json!({
            "stall": [stall(&vigil, "file", stalls, max_age_ms)?, stall(&vigil, "notify", stalls, max_age_ms)?]
        }),
        Bench::NotifyFlood { seconds } => notify_flood(&vigil, seconds)?,
        Bench::FileChecks { agents, seconds } => file_checks(&vigil, agents, seconds)?,
        Bench::GraphStart { agents } => graph::graph_start(&vigil, agents)?,
        Bench::Soak {
            minutes,
            seed,
            every,
        } => soak::soak(&vigil, minutes, seed, Duration::from_secs(every))?,
        Bench::Checkpoints {
            writers,
            writes,
            size,
            store_url,
        } => checkpoints::checkpoints(&vigil, writers, writes, size, store_url.as_deref())?,
        Bench::Alerts {
            rate,
            seconds,
            repeats,
            runbooks,
        } => alerts::alerts(&vigil, rate, seconds, repeats, runbooks)?,
        Bench::Chaos { minutes, seed } => chaos::chaos(&vigil, minutes, seed)?,
        Bench::Cluster {
            rounds,
            seed,
            lease_ttl_s,
            pg,
            python,
        } => cluster::cluster(&vigil, rounds, seed, lease_ttl_s, &pg, &python)?,
        Bench::ClusterMirror { records, pg } => cluster::mirror(&vigil, records, &pg)?,
        Bench::ClusterRenewals {
            agents,
            seconds,
            pg,
        } => cluster::renewals(&vigil, agents, seconds, &pg)?,
        Bench::Docker {
            restarts,
            containers,
            seconds,
        } => docker::docker_bench(&vigil, restarts, containers, seconds)?,
        Bench::Units {
            restarts,
            units,
            seconds,
        } => units::units_bench(&vigil, restarts, units, seconds)?,
        Bench::Api { agents, seconds } => api::api(&vigil, agents, seconds)?,
        Bench::Advisor {
            provider,
            url,
            model,
            fresh,
            repeated,
        } => advisor::advisor(&vigil, &provider, &url, &model, fresh, repeated)?,
        Bench::Idle {
            agents,
            seconds,
            no_api,
        } => idle::idle_curve(&vigil, &agents, seconds, !no_api)?,
    };
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    }
    Ok(())
}

struct Daemon {
    child: Child,
    dir: PathBuf,
}

impl Daemon {
    fn start(vigil: &Path, dir: &Path, config: &str) -> Result<Daemon> {
        Daemon::start_logging(vigil, dir, config, "warn")
    }

    /// With `VIGIL_LOG=level` (what it writes is in `vigil.out`).
    fn start_logging(vigil: &Path, dir: &Path, config: &str, level: &str) -> Result<Daemon> {
        Daemon::start_wrapped(vigil, dir, config, level, &[])
    }

    /// Run as `wrap… vigil run …` (inside a container: `nsenter -t PID -a`).
    fn start_wrapped(
        vigil: &Path,
        dir: &Path,
        config: &str,
        level: &str,
        wrap: &[String],
    ) -> Result<Daemon> {
        std::fs::create_dir_all(dir)?;
        // Never collide with a vigil the user runs on the default port.
        let config = if config.contains("[api]") {
            config.to_string()
        } else {
            format!("{config}\n[api]\nlisten = \"127.0.0.1:0\"\n")
        };
        std::fs::write(dir.join("vigil.toml"), config)?;
        let log = std::fs::File::create(dir.join("vigil.out"))?;
        let mut command = match wrap.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(vigil);
                c
            }
            None => Command::new(vigil),
        };
        let child = command
            .args(["run", "-c"])
            .arg(dir.join("vigil.toml"))
            .env("VIGIL_LOG", level)
            .stdout(log.try_clone()?)
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {}", vigil.display()))?;
        Ok(Daemon {
            child,
            dir: dir.to_path_buf(),
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fail with vigil's own output if it has exited.
    fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            let out = std::fs::read_to_string(self.dir.join("vigil.out")).unwrap_or_default();
            bail!("vigil exited ({status}):\n{out}");
        }
        Ok(())
    }

    /// SIGTERM and wait; returns how long the graceful stop took.
    fn stop(self) -> Result<Duration> {
        let dir = self.dir.clone();
        let took = self.stop_keeping_files()?;
        let _ = std::fs::remove_dir_all(dir);
        Ok(took)
    }

    /// [`Daemon::stop`], leaving its directory.
    fn stop_keeping_files(mut self) -> Result<Duration> {
        let t = Instant::now();
        // SAFETY: a plain kill(2) of the daemon this bench started.
        unsafe { libc::kill(self.pid() as libc::pid_t, libc::SIGTERM) };
        self.child.wait()?;
        Ok(t.elapsed())
    }
}

fn scratch(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("vigil-bench-{name}-{}", std::process::id()))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// The floor no supervisor can beat on this machine right now: from asking the kernel for a
/// new process (posix_spawn, via std) to the agent's first instruction.
fn spawn_floor(agent: &Path, dir: &Path, runs: usize) -> Result<f64> {
    let file = dir.join("floor.txt");
    let mut gaps = Vec::new();
    for _ in 0..runs {
        let _ = std::fs::remove_file(&file);
        let before = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos();
        Command::new(agent).arg(&file).arg("0").status()?;
        let text = std::fs::read_to_string(&file)?;
        let started: u128 = text.lines().next().context("empty")?[6..].parse()?;
        gaps.push(started.saturating_sub(before) as f64 / 1e6);
    }
    gaps.sort_by(|a, b| a.partial_cmp(b).unwrap());
    Ok(percentile(&gaps, 0.5))
}

/// The other floor: appending two journal lines and `fdatasync` on this disk, with the same
/// spacing as the restarts (the device is slower to sync after a pause).
fn fsync_floor(dir: &Path, runs: usize, gap: Duration) -> Result<f64> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("fsync.jsonl"))?;
    let line = br#"{"ts":"2026-11-23T10:00:00.000Z","agent":"crasher","action":"restart","reason":"exited with code 1"}
"#;
    let mut times = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        f.write_all(line)?;
        f.write_all(line)?;
        f.sync_data()?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
        std::thread::sleep(gap);
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    Ok(percentile(&times, 0.5))
}

/// The policy of an agent the benches crash over and over: restarted at once, every time.
const RESTART_AT_ONCE: &str = r#"cooldown = "0s"
backoff_initial = "0s"
backoff_max = "0s"
max_restarts = 1000000
window = "1h"
"#;

/// An agent that exits after `lifetime_ms` and is restarted at once, every time; it appends
/// `start <ns>` / `exit <ns>` lines to `times`.
fn crasher(agent: &Path, times: &Path, lifetime_ms: u64) -> String {
    format!(
        r#"[agents.crasher]
command = ["{}", "{}", "{lifetime_ms}"]

[agents.crasher.policy]
{RESTART_AT_ONCE}"#,
        agent.display(),
        times.display()
    )
}

/// Exit-to-next-start gaps (ms) of runs whose exit fell within `[from, to]` (ns), in the
/// order they happened.
fn restart_gaps(times: &str, from: u128, to: u128) -> Vec<f64> {
    let mut gaps = Vec::new();
    let mut last_exit = None;
    for line in times.lines() {
        let Some((kind, ns)) = line.split_once(' ') else {
            continue;
        };
        let Ok(ns) = ns.parse::<u128>() else { continue };
        match kind {
            "exit" => last_exit = Some(ns),
            "start" => {
                if let Some(e) = last_exit.take()
                    && e >= from
                    && e <= to
                {
                    gaps.push(ns.saturating_sub(e) as f64 / 1e6);
                }
            }
            _ => {}
        }
    }
    gaps
}

fn crash_restart(
    vigil: &Path,
    restarts: usize,
    lifetime_ms: u64,
    noise_mb: u64,
    slow_clients: usize,
    cluster: Option<&str>,
) -> Result<serde_json::Value> {
    let agent = sibling("vigil-bench-agent")?;
    let dir = scratch("crash");
    let _ = std::fs::remove_dir_all(&dir);
    let times = dir.join("times.txt");
    let noise = if noise_mb > 0 {
        format!(
            r#"
[agents.noisy]
command = ["sh", "-c", "head -c {} /dev/zero | tr '\\0' 'x'; sleep 0.5; exit 1"]
log_max_size = "10MB"
log_keep = 1

[agents.noisy.policy]
cooldown = "0s"
backoff_initial = "0s"
backoff_max = "0s"
max_restarts = 1000000
"#,
            noise_mb * 1_000_000
        )
    } else {
        String::new()
    };
    let cluster = match cluster {
        Some(pg) => format!(
            "\n[cluster]\nurl = \"{}\"\n",
            cluster::scratch_db(pg, "crash")?.1
        ),
        None => String::new(),
    };
    let config = format!(
        "[vigil]\nstate_dir = \"state\"\n\n{}{noise}{cluster}",
        crasher(&agent, &times, lifetime_ms)
    );
    std::fs::create_dir_all(&dir)?;
    let floor = spawn_floor(&agent, &dir, 200)?;
    let sync_floor = fsync_floor(&dir, 100, Duration::from_millis(lifetime_ms))?;
    let mut daemon = Daemon::start(vigil, &dir, &config)?;
    // Restarts count from when the slow clients are in place.
    let mut from_ns = 0u128;
    let slow = if slow_clients > 0 {
        let addr_file = dir.join("state/api.addr");
        let waited = Instant::now();
        while !addr_file.exists() && waited.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let addr: std::net::SocketAddrV4 = std::fs::read_to_string(&addr_file)?.trim().parse()?;
        let clients = slow::SlowClients::start(addr, slow_clients);
        std::thread::sleep(Duration::from_secs(2));
        println!(
            "{slow_clients} slow clients: {} hold half-sent requests inside vigil's connection cap, the rest wait in the kernel",
            clients.holding.load(std::sync::atomic::Ordering::Relaxed)
        );
        from_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos();
        Some(clients)
    } else {
        None
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        daemon.check_alive()?;
        let starts = std::fs::read_to_string(&times)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("start"))
            .filter(|l| l[6..].trim().parse::<u128>().is_ok_and(|t| t >= from_ns))
            .count();
        if starts > restarts {
            break;
        }
        if Instant::now() > deadline {
            bail!("only {starts} starts after 120s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let text = std::fs::read_to_string(&times)?;
    drop(slow);
    daemon.stop()?;

    let mut gaps_ms = restart_gaps(&text, from_ns, u128::MAX);
    gaps_ms.truncate(restarts);
    gaps_ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = gaps_ms.len();
    let mean = gaps_ms.iter().sum::<f64>() / n as f64;
    let (p50, p90, p99, max) = (
        percentile(&gaps_ms, 0.5),
        percentile(&gaps_ms, 0.9),
        percentile(&gaps_ms, 0.99),
        gaps_ms[n - 1],
    );
    let noise = if noise_mb > 0 {
        format!(", beside an agent writing {noise_mb} MB of log per run and crash-looping")
    } else {
        String::new()
    };
    println!(
        "crash-to-restart latency over {n} restarts (agent exit → replacement's first instruction){noise}:"
    );
    println!(
        "  median {p50:.3} ms   p90 {p90:.3} ms   p99 {p99:.3} ms   max {max:.3} ms   mean {mean:.3} ms"
    );
    println!(
        "  floors on this machine right now, no supervisor: spawn → the agent's first instruction {floor:.3} ms, journal append + fdatasync {sync_floor:.3} ms (medians)"
    );
    Ok(json!({
        "bench": "crash-restart",
        "restarts": n,
        "noise_mb": noise_mb,
        "spawn_floor_median_ms": floor,
        "fsync_floor_median_ms": sync_floor,
        "median_ms": p50, "p90_ms": p90, "p99_ms": p99, "max_ms": max, "mean_ms": mean,
    }))
}

/// (RSS in KiB, CPU ticks used so far).
fn usage(pid: u32) -> Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    Ok((rss, ticks))
}

/// Wait `seconds` while vigil (`pid`) idles: its RSS in KiB at the end, and the CPU it used
/// meanwhile, in % of a core.
fn idle_usage(pid: u32, seconds: u64) -> Result<(u64, f64)> {
    let (_, ticks0) = usage(pid)?;
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(seconds));
    let (rss_kib, ticks1) = usage(pid)?;
    let cpu = (ticks1 - ticks0) as f64 / clock_ticks() / t0.elapsed().as_secs_f64() * 100.0;
    Ok((rss_kib, cpu))
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

fn summary(mut values: Vec<f64>) -> (f64, f64, f64, f64) {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = values.len();
    (
        percentile(&values, 0.5),
        percentile(&values, 0.9),
        percentile(&values, 0.99),
        values[n - 1],
    )
}

fn read_lines(path: &Path, prefix: &str) -> Vec<Vec<String>> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with(prefix))
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

fn stall(vigil: &Path, via: &str, stalls: usize, max_age_ms: u64) -> Result<serde_json::Value> {
    let agent = sibling("vigil-bench-agent")?;
    let dir = scratch(&format!("stall-{via}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let out = dir.join("stalls.txt");
    let hb = dir.join("hb");
    let (via_arg, check) = match via {
        "file" => (
            format!("file:{}", hb.display()),
            format!("kind = \"heartbeat\"\npath = \"{}\"", hb.display()),
        ),
        _ => ("notify".to_string(), "kind = \"notify\"".to_string()),
    };
    let config = format!(
        r#"[vigil]
state_dir = "state"

[agents.staller]
command = ["{agent}", "stall", "{out}", "3", "20", "{via_arg}"]

[[agents.staller.checks]]
{check}
max_age = "{max_age_ms}ms"
interval = "1h"

[agents.staller.policy]
cooldown = "0s"
backoff_initial = "0s"
backoff_max = "0s"
max_restarts = 1000000
"#,
        agent = agent.display(),
        out = out.display(),
    );
    let mut daemon = Daemon::start(vigil, &dir, &config)?;
    let deadline = Instant::now() + Duration::from_secs(300);
    while read_lines(&out, "stall").len() < stalls {
        daemon.check_alive()?;
        if Instant::now() > deadline {
            bail!("not enough stalls within 300s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let lines = read_lines(&out, "stall");
    daemon.stop()?;
    let late: Vec<f64> = lines
        .iter()
        .take(stalls)
        .map(|f| {
            let last: u64 = f[1].parse().unwrap();
            let term: u64 = f[2].parse().unwrap();
            (term as f64 - last as f64) / 1e6 - max_age_ms as f64
        })
        .collect();
    let n = late.len();
    let (p50, p90, p99, max) = summary(late);
    println!(
        "stall detection ({via}, max_age {max_age_ms} ms, {n} stalls): from the heartbeat's age passing max_age to SIGTERM in the agent: median {p50:.2} ms  p90 {p90:.2} ms  p99 {p99:.2} ms  max {max:.2} ms"
    );
    Ok(
        json!({"via": via, "stalls": n, "median_ms": p50, "p90_ms": p90, "p99_ms": p99, "max_ms": max}),
    )
}

fn notify_flood(vigil: &Path, seconds: f64) -> Result<serde_json::Value> {
    let agent = sibling("vigil-bench-agent")?;
    let dir = scratch("flood");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let out = dir.join("flood.txt");
    let config = format!(
        r#"[vigil]
state_dir = "state"

[agents.flooder]
command = ["{agent}", "flood", "{seconds}", "{out}"]

[[agents.flooder.checks]]
kind = "notify"
max_age = "1h"
"#,
        agent = agent.display(),
        out = out.display(),
    );
    let mut daemon = Daemon::start(vigil, &dir, &config)?;
    std::thread::sleep(Duration::from_millis(500));
    let (_, ticks0) = usage(daemon.pid())?;
    let t0 = Instant::now();
    while read_lines(&out, "sent").is_empty() {
        daemon.check_alive()?;
        std::thread::sleep(Duration::from_millis(20));
    }
    let (rss, ticks1) = usage(daemon.pid())?;
    let cpu = (ticks1 - ticks0) as f64 / clock_ticks() / t0.elapsed().as_secs_f64();
    let line = read_lines(&out, "sent").remove(0);
    daemon.stop()?;
    let sent: f64 = line[1].parse()?;
    let secs: f64 = line[2].parse()?;
    let rate = sent / secs;
    println!(
        "notify flood: {rate:.0} datagrams/s accepted ({sent:.0} in {secs:.1}s); vigil used {:.0} % of a core ({:.0} datagrams per core-second), RSS {:.1} MB",
        cpu * 100.0,
        rate / cpu.max(0.01),
        rss as f64 / 1024.0
    );
    Ok(
        json!({"datagrams_per_s": rate, "vigil_cpu_cores": cpu, "per_core_second": rate / cpu.max(0.01), "rss_mb": rss as f64 / 1024.0}),
    )
}

fn file_checks(vigil: &Path, n: usize, seconds: u64) -> Result<serde_json::Value> {
    let dir = scratch("filechecks");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let output = dir.join("output");
    std::fs::write(&output, "x")?;
    let instances: Vec<String> = (0..n).map(|i| format!("\"{i}\"")).collect();
    let config = format!(
        r#"[vigil]
state_dir = "state"

[agents.worker]
command = ["sleep", "1000000"]
instances = [{}]

[[agents.worker.checks]]
kind = "file"
path = "{}"
max_age = "1h"
interval = "1s"
"#,
        instances.join(", "),
        output.display()
    );
    let mut daemon = Daemon::start(vigil, &dir, &config)?;
    let mut state = idle::StateWatch::new(dir.join("state/state.jsonl"));
    while {
        state.refresh();
        state.running() < n
    } {
        daemon.check_alive()?;
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_secs(3));
    let (rss, cpu) = idle_usage(daemon.pid(), seconds)?;
    daemon.stop()?;
    println!(
        "{n} agents with a 1s file check: vigil CPU {cpu:.2} % of a core over {seconds}s, RSS {:.1} MB",
        rss as f64 / 1024.0
    );
    Ok(json!({"agents": n, "cpu_percent": cpu, "rss_mb": rss as f64 / 1024.0, "seconds": seconds}))
}
