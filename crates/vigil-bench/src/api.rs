//! `vigil-bench api`: the HTTP API under load, and supervision while it is under load.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use serde_json::json;

use crate::{Daemon, crasher, percentile, restart_gaps, scratch, sibling};

/// One request on a fresh connection; returns the status code and body length.
pub fn get(addr: &str, path: &str) -> Result<(u16, usize)> {
    let mut s = TcpStream::connect(addr)?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((code, buf.len()))
}

pub(crate) fn wait_for_addr(daemon: &mut Daemon) -> Result<String> {
    let file = daemon.dir.join("state/api.addr");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        daemon.check_alive()?;
        if let Ok(a) = std::fs::read_to_string(&file)
            && get(a.trim(), "/health").is_ok_and(|(c, _)| c == 200)
        {
            return Ok(a.trim().to_string());
        }
        if Instant::now() > deadline {
            bail!("vigil's API did not come up within 60s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `/metrics` latency (request to last byte, on loopback) with `agents` agents.
fn metrics_latency(vigil: &Path, agents: usize) -> Result<serde_json::Value> {
    let dir = scratch("api-metrics");
    let _ = std::fs::remove_dir_all(&dir);
    let instances: Vec<String> = (0..agents).map(|i| format!("\"{i}\"")).collect();
    let config = format!(
        "[vigil]\nstate_dir = \"state\"\n\n[api]\nlisten = \"127.0.0.1:0\"\n\n\
         [agents.idle]\ncommand = [\"sleep\", \"1000000\"]\ninstances = [{}]\n\n\
         [[agents.idle.checks]]\nkind = \"api\"\nmax_age = \"1h\"\n",
        instances.join(", ")
    );
    let mut daemon = Daemon::start(vigil, &dir, &config)?;
    let addr = wait_for_addr(&mut daemon)?;
    std::thread::sleep(Duration::from_secs(2));
    let mut times = Vec::new();
    let mut size = 0;
    for _ in 0..200 {
        let t = Instant::now();
        let (code, len) = get(&addr, "/metrics")?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
        if code != 200 {
            bail!("/metrics answered {code}");
        }
        size = len;
    }
    let (status_code, status_size) = get(&addr, "/status")?;
    if status_code != 200 {
        bail!("/status answered {status_code}");
    }
    daemon.stop()?;
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let (p50, p99) = (percentile(&times, 0.5), percentile(&times, 0.99));
    println!(
        "/metrics with {agents} agents: median {p50:.2} ms, p99 {p99:.2} ms per scrape ({} KB); /status is {} KB",
        size / 1024,
        status_size / 1024
    );
    Ok(
        json!({ "agents": agents, "metrics_median_ms": p50, "metrics_p99_ms": p99, "metrics_bytes": size, "status_bytes": status_size }),
    )
}

/// Requests per second from `wrk` (1 thread, 32 connections: the other core stays for vigil).
fn wrk(url: &str, seconds: u64, script: Option<&Path>) -> Result<(f64, String)> {
    let mut cmd = Command::new("wrk");
    cmd.args(["-t1", "-c32", &format!("-d{seconds}s"), "--latency"]);
    if let Some(s) = script {
        cmd.arg("-s").arg(s);
    }
    let out = cmd
        .arg(url)
        .output()
        .context("cannot run wrk (apt-get install wrk)")?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let rps = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .with_context(|| format!("no Requests/sec in wrk's output:\n{text}"))?;
    let non2xx = text
        .lines()
        .find(|l| l.contains("Non-2xx"))
        .map(str::to_string)
        .unwrap_or_default();
    Ok((rps, non2xx))
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
}

fn gaps_between(times: &str, from: u128, to: u128) -> Vec<f64> {
    let mut gaps = restart_gaps(times, from, to);
    gaps.sort_by(|a, b| a.partial_cmp(b).unwrap());
    gaps
}

/// The fleet of a home server (six bots and a feed) plus a crasher; `wrk` hammers the API
/// while the crasher's restarts are timed.
fn throughput(vigil: &Path, seconds: u64) -> Result<serde_json::Value> {
    let agent = sibling("vigil-bench-agent")?;
    let dir = scratch("api-load");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let times = dir.join("times.txt");
    let config = format!(
        r#"[vigil]
state_dir = "state"

[api]
listen = "127.0.0.1:0"

[agents.trader]
command = ["sleep", "1000000"]
instances = ["BTC", "ETH", "SOL", "XRP", "DOGE", "ADA"]

[[agents.trader.checks]]
kind = "api"
max_age = "1h"

[agents.feed]
command = ["sleep", "1000000"]

{}"#,
        crasher(&agent, &times, 50)
    );
    let lua = dir.join("heartbeat.lua");
    std::fs::write(
        &lua,
        "wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\n",
    )?;
    let mut daemon = Daemon::start(vigil, &dir, &config)?;
    let addr = wait_for_addr(&mut daemon)?;
    std::thread::sleep(Duration::from_secs(1));

    // Crash-restart with the API idle, for comparison.
    let idle_from = now_ns();
    std::thread::sleep(Duration::from_secs(seconds));
    let idle_to = now_ns();
    let t0 = now_ns();
    let (status_rps, status_errs) = wrk(&format!("http://{addr}/status"), seconds, None)?;
    let (hb_rps, hb_errs) = wrk(
        &format!("http://{addr}/agents/trader@BTC/heartbeat"),
        seconds,
        Some(&lua),
    )?;
    let t1 = now_ns();
    daemon.check_alive()?;
    let text = std::fs::read_to_string(&times)?;
    daemon.stop()?;
    let idle = gaps_between(&text, idle_from, idle_to);
    let loaded = gaps_between(&text, t0, t1);
    if idle.is_empty() || loaded.is_empty() {
        bail!("no restarts measured");
    }
    let stats = |g: &[f64]| (percentile(g, 0.5), percentile(g, 0.99), g.len());
    let (i50, i99, in_) = stats(&idle);
    let (l50, l99, ln) = stats(&loaded);
    println!("GET /status (8 agents): {status_rps:.0} req/s {status_errs}");
    println!("POST /agents/NAME/heartbeat: {hb_rps:.0} req/s {hb_errs}");
    println!(
        "crash-to-restart, API idle:      median {i50:.2} ms, p99 {i99:.2} ms over {in_} restarts"
    );
    println!(
        "crash-to-restart, API under wrk: median {l50:.2} ms, p99 {l99:.2} ms over {ln} restarts"
    );
    Ok(json!({
        "status_rps": status_rps,
        "heartbeat_rps": hb_rps,
        "restart_idle_median_ms": i50, "restart_idle_p99_ms": i99,
        "restart_loaded_median_ms": l50, "restart_loaded_p99_ms": l99,
    }))
}

pub fn api(vigil: &Path, agents: usize, seconds: u64) -> Result<serde_json::Value> {
    let metrics = metrics_latency(vigil, agents)?;
    let load = throughput(vigil, seconds)?;
    Ok(json!({ "metrics": metrics, "load": load }))
}
