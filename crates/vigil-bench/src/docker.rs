//! The docker driver against a real engine (`DOCKER_HOST`; `.ci/docker-setup` starts one):
//!
//! - from a container's `die` (the engine's own timestamp) to vigil's start request for it,
//!   split into the engine's share (the event reaching vigil) and vigil's (judging the end,
//!   reading the container's log, deciding, asking); and the engine's own start after that;
//! - vigil's CPU and wakeups while it watches N running containers.
//!
//! Times come from vigil's debug log (`docker: die of …`, `docker: starting container …`,
//! microseconds, the same clock as the engine's on one host).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::json;

use crate::{Daemon, RESTART_AT_ONCE, clock_ticks, percentile, scratch, usage};

const IMAGE: &str = "local/busybox:1";

fn docker(args: &[&str]) -> Result<String> {
    let out = Command::new("docker")
        .args(args)
        .output()
        .context("the docker CLI")?;
    if !out.status.success() {
        bail!(
            "docker {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

pub fn docker_bench(
    vigil: &Path,
    restarts: usize,
    containers: usize,
    seconds: u64,
) -> Result<serde_json::Value> {
    if std::env::var("DOCKER_HOST").is_err() && !Path::new("/var/run/docker.sock").exists() {
        bail!(
            "no Docker engine: set DOCKER_HOST (eval \"$(.ci/docker-setup)\"; export DOCKER_HOST=$VIGIL_TEST_DOCKER_HOST)"
        );
    }
    docker(&["image", "inspect", IMAGE]).context("the image .ci/docker-setup imports")?;
    let restart = restart_latency(vigil, restarts)?;
    let idle = idle_watch(vigil, containers, seconds)?;
    Ok(json!({ "bench": "docker", "restart": restart, "idle": idle }))
}

/// A log line's timestamp (`2026-11-30T10:53:19.603039Z …`) in ns since the epoch.
fn log_time_ns(line: &str) -> Option<i64> {
    let ts = line.split_whitespace().next()?;
    chrono::DateTime::parse_from_rfc3339(ts)
        .ok()?
        .timestamp_nanos_opt()
}

fn restart_latency(vigil: &Path, restarts: usize) -> Result<serde_json::Value> {
    let name = format!("vigil-bench-crasher-{}", std::process::id());
    let _ = docker(&["rm", "-f", &name]);
    docker(&[
        "create",
        "--name",
        &name,
        "--network",
        "none",
        IMAGE,
        "sh",
        "-c",
        "sleep 0.3; exit 1",
    ])?;
    let dir = scratch("docker");
    let _ = std::fs::remove_dir_all(&dir);
    let config = format!(
        r#"[vigil]
state_dir = "state"

[agents.crasher]
driver = "docker"
container = "{name}"

[agents.crasher.policy]
{RESTART_AT_ONCE}"#
    );
    let mut daemon =
        Daemon::start_logging(vigil, &dir, &config, "warn,vigil::driver::docker=debug")?;
    let out = dir.join("vigil.out");
    let deadline = Instant::now() + Duration::from_secs(30 + restarts as u64 * 2);
    loop {
        daemon.check_alive()?;
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        let starts = text.matches("docker: starting container").count();
        if starts > restarts {
            break;
        }
        if Instant::now() > deadline {
            bail!("only {starts} starts of {name} in time");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    daemon.stop_keeping_files()?;
    let text = std::fs::read_to_string(&out)?;
    let _ = std::fs::remove_dir_all(&dir);
    // Each die, as the engine stamped it and as vigil received it; then vigil's request.
    let (mut total, mut engine, mut own) = (Vec::new(), Vec::new(), Vec::new());
    let mut die: Option<(i64, i64)> = None;
    for line in text.lines() {
        let Some(at) = log_time_ns(line) else {
            continue;
        };
        if let Some(rest) = line.split("docker: die of ").nth(1) {
            let stamped = rest
                .split("engine time ")
                .nth(1)
                .and_then(|s| s.trim_end_matches(')').trim().parse::<i64>().ok());
            die = stamped.map(|s| (s, at));
        } else if line.contains("docker: starting container")
            && let Some((stamped, received)) = die.take()
        {
            total.push((at - stamped) as f64 / 1e6);
            engine.push((received - stamped) as f64 / 1e6);
            own.push((at - received) as f64 / 1e6);
        }
    }
    // The engine's own start, from vigil's request to the container's `start` event.
    let starts = docker(&[
        "events",
        "--since",
        "10m",
        "--until",
        "0s",
        "--filter",
        &format!("container={name}"),
        "--filter",
        "event=start",
        "--format",
        "{{.TimeNano}}",
    ])?;
    let start_events: Vec<i64> = starts
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    let requests: Vec<i64> = text
        .lines()
        .filter(|l| l.contains("docker: starting container"))
        .filter_map(log_time_ns)
        .collect();
    let mut engine_start: Vec<f64> = requests
        .iter()
        .filter_map(|r| {
            start_events
                .iter()
                .find(|s| *s >= r)
                .map(|s| (s - r) as f64 / 1e6)
        })
        .collect();
    let _ = docker(&["rm", "-f", &name]);
    if total.is_empty() {
        bail!("no restart was measured:\n{text}");
    }
    for v in [&mut total, &mut engine, &mut own, &mut engine_start] {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    }
    let m = |v: &[f64], p| {
        if v.is_empty() {
            f64::NAN
        } else {
            percentile(v, p)
        }
    };
    println!(
        "docker: container die → vigil's start request, over {} restarts:",
        total.len()
    );
    println!(
        "  median {:.2} ms   p90 {:.2} ms   p99 {:.2} ms   (the engine's share — its event reaching vigil — median {:.2} ms; vigil's — log, inspect, decision, request — median {:.2} ms)",
        m(&total, 0.5),
        m(&total, 0.9),
        m(&total, 0.99),
        m(&engine, 0.5),
        m(&own, 0.5)
    );
    println!(
        "  then the engine's own start (request → its `start` event): median {:.1} ms",
        m(&engine_start, 0.5)
    );
    Ok(json!({
        "restarts": total.len(),
        "median_ms": m(&total, 0.5), "p90_ms": m(&total, 0.9), "p99_ms": m(&total, 0.99),
        "engine_share_median_ms": m(&engine, 0.5),
        "vigil_share_median_ms": m(&own, 0.5),
        "engine_start_median_ms": m(&engine_start, 0.5),
    }))
}

/// While vigil (`pid`) idles for `seconds`: its CPU (% of a core), its wakeups per second
/// (all threads), its RSS at the end (KiB).
pub fn quiet_usage(pid: u32, seconds: u64) -> Result<(f64, f64, u64)> {
    let (_, ticks0) = usage(pid)?;
    let wake0 = wakeups(pid);
    let t = Instant::now();
    std::thread::sleep(Duration::from_secs(seconds));
    let (rss_kib, ticks1) = usage(pid)?;
    let wake1 = wakeups(pid);
    let elapsed = t.elapsed().as_secs_f64();
    let cpu = (ticks1 - ticks0) as f64 / clock_ticks() / elapsed * 100.0;
    Ok((cpu, (wake1 - wake0) as f64 / elapsed, rss_kib))
}

/// Voluntary context switches of every thread of `pid`: how often it woke up.
fn wakeups(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(|t| t.ok())
        .filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok())
        .filter_map(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
                .and_then(|v| v.trim().parse::<u64>().ok())
        })
        .sum()
}

fn idle_watch(vigil: &Path, n: usize, seconds: u64) -> Result<serde_json::Value> {
    let prefix = format!("vigil-bench-idle-{}", std::process::id());
    let names: Vec<String> = (0..n).map(|i| format!("{prefix}-{i}")).collect();
    for name in &names {
        let _ = docker(&["rm", "-f", name]);
        docker(&[
            "create",
            "--name",
            name,
            "--network",
            "none",
            IMAGE,
            "sleep",
            "1000000",
        ])?;
    }
    let dir = scratch("docker-idle");
    let _ = std::fs::remove_dir_all(&dir);
    let mut config = String::from("[vigil]\nstate_dir = \"state\"\n");
    for (i, name) in names.iter().enumerate() {
        config.push_str(&format!(
            "\n[agents.c{i}]\ndriver = \"docker\"\ncontainer = \"{name}\"\nstop_timeout = \"1s\"\n"
        ));
    }
    let mut daemon = Daemon::start(vigil, &dir, &config)?;
    let t0 = Instant::now();
    let mut watch = crate::idle::StateWatch::new(dir.join("state/state.jsonl"));
    let limit = Duration::from_secs(60 + n as u64);
    crate::idle::wait_within(
        &mut daemon,
        &format!("{n} containers running"),
        limit,
        || {
            watch.refresh();
            watch.running() >= n
        },
    )?;
    let started = t0.elapsed();
    std::thread::sleep(Duration::from_secs(3));
    let (cpu, per_s, rss_kib) = quiet_usage(daemon.pid(), seconds)?;
    let stopped = daemon.stop()?;
    for name in &names {
        let _ = docker(&["rm", "-f", name]);
    }
    println!(
        "docker: {n} containers started by vigil in {:.1} s; then idle for {seconds} s: vigil CPU {cpu:.3} % of a core, {per_s:.2} wakeups/s (all threads), RSS {:.1} MB; stopped in {:.1} s",
        started.as_secs_f64(),
        rss_kib as f64 / 1024.0,
        stopped.as_secs_f64()
    );
    Ok(json!({
        "containers": n, "start_all_s": started.as_secs_f64(), "idle_s": seconds,
        "cpu_percent": cpu, "wakeups_per_s": per_s, "rss_mb": rss_kib as f64 / 1024.0,
        "stop_all_s": stopped.as_secs_f64(),
    }))
}
