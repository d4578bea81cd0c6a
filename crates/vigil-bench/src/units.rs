//! The systemd driver against a real systemd (`.ci/systemd-setup`: Debian's, booted in a
//! container; vigil runs inside it through `nsenter`, as it would on a host):
//!
//! - from a unit's end (systemd's own `ExecMainExitTimestamp`) to vigil's start request,
//!   split into systemd's share (its signal reaching vigil), the run's journal (read in vigil
//!   once systemd's message about the end is there) and the rest of vigil's (deciding,
//!   journaling, asking);
//! - vigil's CPU and wakeups while it watches N running units.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::json;

use crate::{Daemon, RESTART_AT_ONCE, percentile};

struct Host {
    pid: String,
    share: PathBuf,
}

impl Host {
    fn from_env() -> Result<Host> {
        let pid = std::env::var("VIGIL_TEST_SYSTEMD_PID")
            .context("no systemd host: eval \"$(.ci/systemd-setup)\" and export VIGIL_TEST_SYSTEMD_PID VIGIL_TEST_SYSTEMD_SHARE")?;
        let share = std::env::var("VIGIL_TEST_SYSTEMD_SHARE")
            .context("VIGIL_TEST_SYSTEMD_SHARE is not set")?
            .into();
        Ok(Host { pid, share })
    }

    fn inside(&self, args: &[&str], stdin: Option<&str>) -> Result<String> {
        let mut child = Command::new("nsenter")
            .args(["-t", &self.pid, "-a"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        if let Some(text) = stdin {
            child.stdin.take().unwrap().write_all(text.as_bytes())?;
        }
        drop(child.stdin.take());
        let out = child.wait_with_output()?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    fn install(&self, name: &str, exec: &str) -> Result<()> {
        let body = format!("[Service]\nExecStart={exec}\n");
        self.inside(
            &["sh", "-c", &format!("cat > /etc/systemd/system/{name}")],
            Some(&body),
        )?;
        Ok(())
    }

    fn remove(&self, names: &[String]) -> Result<()> {
        for chunk in names.chunks(50) {
            let mut args = vec!["systemctl", "stop"];
            args.extend(chunk.iter().map(String::as_str));
            self.inside(&args, None)?;
        }
        for name in names {
            self.inside(&["rm", "-f", &format!("/etc/systemd/system/{name}")], None)?;
        }
        self.inside(&["systemctl", "daemon-reload"], None)?;
        Ok(())
    }

    fn daemon(&self, vigil: &Path, dir: &Path, config: &str, level: &str) -> Result<Daemon> {
        let wrap = [
            "nsenter".to_string(),
            "-t".into(),
            self.pid.clone(),
            "-a".into(),
            format!("--wdns={}", dir.display()),
        ];
        Daemon::start_wrapped(vigil, dir, config, level, &wrap)
    }
}

/// The pid of the vigil a wrapper (nsenter) started.
fn inner_pid(wrapper: u32) -> Result<u32> {
    let t = Instant::now();
    loop {
        let children = std::fs::read_to_string(format!("/proc/{wrapper}/task/{wrapper}/children"))?;
        if let Some(p) = children.split_whitespace().next() {
            return Ok(p.parse()?);
        }
        if t.elapsed() > Duration::from_secs(5) {
            bail!("nsenter started no vigil");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub fn units_bench(
    vigil: &Path,
    restarts: usize,
    units: usize,
    seconds: u64,
) -> Result<serde_json::Value> {
    let host = Host::from_env()?;
    let restart = restart_latency(&host, vigil, restarts)?;
    let idle = idle_watch(&host, vigil, units, seconds)?;
    Ok(json!({ "bench": "units", "restart": restart, "idle": idle }))
}

fn log_time_us(line: &str) -> Option<i64> {
    let ts = line.split_whitespace().next()?;
    Some(
        chrono::DateTime::parse_from_rfc3339(ts)
            .ok()?
            .timestamp_micros(),
    )
}

fn restart_latency(host: &Host, vigil: &Path, restarts: usize) -> Result<serde_json::Value> {
    let name = format!("vigil-bench-crasher-{}.service", std::process::id());
    host.install(&name, "/bin/sh -c 'sleep 0.3; echo tick; exit 1'")?;
    host.inside(&["systemctl", "daemon-reload"], None)?;
    let dir = host
        .share
        .join(format!("bench-units-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let config = format!(
        r#"[vigil]
state_dir = "state"

[agents.crasher]
driver = "systemd"
unit = "{name}"

[agents.crasher.policy]
{RESTART_AT_ONCE}"#
    );
    let mut daemon = host.daemon(vigil, &dir, &config, "warn,vigil::driver::units=debug")?;
    let out = dir.join("vigil.out");
    let deadline = Instant::now() + Duration::from_secs(30 + restarts as u64 * 2);
    loop {
        daemon.check_alive()?;
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        if text.matches("systemd: starting unit").count() > restarts {
            break;
        }
        if Instant::now() > deadline {
            bail!("not enough restarts of {name} in time:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // vigil runs inside the container: its pid there is not the wrapper's.
    let inner = inner_pid(daemon.pid())?;
    // SAFETY: a plain kill(2) of the vigil this bench started.
    unsafe { libc::kill(inner as libc::pid_t, libc::SIGTERM) };
    daemon.stop_keeping_files()?;
    let text = std::fs::read_to_string(&out)?;
    let _ = std::fs::remove_dir_all(&dir);
    host.remove(std::slice::from_ref(&name))?;

    let (mut total, mut engine, mut own) = (Vec::new(), Vec::new(), Vec::new());
    let (mut journal, mut in_vigil, mut by_journalctl) = (Vec::new(), 0, 0);
    // Ends judged without the run's one line ("tick"): evidence lost to the race with journald.
    let mut without_lines = 0;
    // Signals since the last start request: the end's is the first after systemd's end.
    let mut signals: Vec<i64> = Vec::new();
    let mut ended: Option<(i64, i64)> = None;
    let mut evidence: Option<i64> = None;
    for line in text.lines() {
        let Some(at) = log_time_us(line) else {
            continue;
        };
        if line.contains("systemd: signal for") {
            signals.push(at);
        } else if let Some(rest) = line.split("(systemd time ").nth(1) {
            let exited: i64 = rest.trim_end_matches(')').trim().parse().unwrap_or(0);
            if let Some(s) = signals.iter().find(|s| **s >= exited).copied()
                && exited > 0
            {
                ended = Some((exited, s));
            }
        } else if line.contains("systemd: the run's journal") {
            evidence = Some(at);
            if line.trim_end().ends_with(": 0 lines") {
                without_lines += 1;
            }
            if line.contains("in vigil") {
                in_vigil += 1;
            } else {
                by_journalctl += 1;
            }
        } else if line.contains("systemd: starting unit")
            && let Some((exited, signalled)) = ended.take()
        {
            total.push((at - exited) as f64 / 1e3);
            engine.push((signalled - exited) as f64 / 1e3);
            own.push((at - signalled) as f64 / 1e3);
            if let Some(e) = evidence.take() {
                journal.push((e - signalled).max(0) as f64 / 1e3);
            }
        }
        if line.contains("systemd: starting unit") {
            signals.clear();
        }
    }
    if total.is_empty() {
        bail!("no restart was measured:\n{text}");
    }
    for v in [&mut total, &mut engine, &mut own, &mut journal] {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    }
    let m = |v: &[f64], p| percentile(v, p);
    println!(
        "systemd: a unit's end → vigil's start request, over {} restarts:",
        total.len()
    );
    println!(
        "  median {:.2} ms   p90 {:.2} ms   p99 {:.2} ms   (systemd's share — its end to its first signal reaching vigil — median {:.2} ms; vigil's — the run's journal, decision, request — median {:.2} ms, of which the journal median {:.2} ms; the journal was read in vigil for {in_vigil} ends, by journalctl for {by_journalctl}; ends judged without the run's last line: {without_lines})",
        m(&total, 0.5),
        m(&total, 0.9),
        m(&total, 0.99),
        m(&engine, 0.5),
        m(&own, 0.5),
        m(&journal, 0.5),
    );
    Ok(json!({
        "restarts": total.len(),
        "median_ms": m(&total, 0.5), "p90_ms": m(&total, 0.9), "p99_ms": m(&total, 0.99),
        "systemd_share_median_ms": m(&engine, 0.5),
        "vigil_share_median_ms": m(&own, 0.5),
        "journal_median_ms": m(&journal, 0.5),
        "journal_in_vigil": in_vigil, "journal_by_journalctl": by_journalctl,
        "ends_without_lines": without_lines,
    }))
}

fn idle_watch(host: &Host, vigil: &Path, n: usize, seconds: u64) -> Result<serde_json::Value> {
    let names: Vec<String> = (0..n)
        .map(|i| format!("vigil-bench-idle-{}-{i}.service", std::process::id()))
        .collect();
    for name in &names {
        host.install(name, "/bin/sh -c 'while true; do sleep 3600; done'")?;
    }
    host.inside(&["systemctl", "daemon-reload"], None)?;
    let dir = host
        .share
        .join(format!("bench-units-idle-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut config = String::from("[vigil]\nstate_dir = \"state\"\n");
    for (i, name) in names.iter().enumerate() {
        config.push_str(&format!(
            "\n[agents.u{i}]\ndriver = \"systemd\"\nunit = \"{name}\"\n"
        ));
    }
    let mut daemon = host.daemon(vigil, &dir, &config, "warn")?;
    let t0 = Instant::now();
    let mut watch = crate::idle::StateWatch::new(dir.join("state/state.jsonl"));
    let limit = Duration::from_secs(60 + n as u64);
    crate::idle::wait_within(&mut daemon, &format!("{n} units running"), limit, || {
        watch.refresh();
        watch.running() >= n
    })?;
    let started = t0.elapsed();
    std::thread::sleep(Duration::from_secs(3));
    let pid = inner_pid(daemon.pid())?;
    let (cpu, per_s, rss_kib) = crate::docker::quiet_usage(pid, seconds)?;
    let stop = Instant::now();
    // SAFETY: a plain kill(2) of the vigil this bench started.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    while Path::new(&format!("/proc/{pid}")).exists() && stop.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let stopped = stop.elapsed();
    daemon.stop()?;
    host.remove(&names)?;
    println!(
        "systemd: {n} units started by vigil in {:.1} s; then idle for {seconds} s: vigil CPU {cpu:.3} % of a core, {per_s:.2} wakeups/s (all threads), RSS {:.1} MB; stopped in {:.1} s",
        started.as_secs_f64(),
        rss_kib as f64 / 1024.0,
        stopped.as_secs_f64()
    );
    Ok(json!({
        "units": n, "start_all_s": started.as_secs_f64(), "idle_s": seconds,
        "cpu_percent": cpu, "wakeups_per_s": per_s, "rss_mb": rss_kib as f64 / 1024.0,
        "stop_all_s": stopped.as_secs_f64(),
    }))
}
