//! `vigil-bench alerts`: Alertmanager's webhook into vigil, on one keep-alive connection as
//! Alertmanager sends: how fast a notification is answered (journaled) at a steady rate, the
//! memory of a long stream of repeats, and the time from an alert to its runbook's first step.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Result, bail};
use serde_json::json;

use crate::conn::Conn;
use crate::{Daemon, percentile, scratch};

const TOKEN: &str = "bench-token-0123456789abcdef";

fn config(dir: &Path, bots: usize) -> Result<String> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("am-token"), TOKEN)?;
    let instances: Vec<String> = (0..bots).map(|i| format!("\"{i}\"")).collect();
    Ok(format!(
        "[vigil]\nstate_dir = \"state\"\n\n[alertmanager]\ntoken_file = \"am-token\"\n\
         max_concurrent_runbooks = {bots}\n\n\
         [agents.bot]\ncommand = [\"sleep\", \"1000000\"]\ninstances = [{}]\n\n\
         [[runbooks]]\nname = \"restart\"\nmatch = {{ alertname = \"BenchRestart\" }}\n\
         agent = \"bot@{{{{ labels.instance }}}}\"\nsteps = [{{ restart = true }}]\n",
        instances.join(", ")
    ))
}

fn payload(name: &str, fingerprint: &str, instance: &str) -> String {
    json!({
        "version": "4", "status": "firing", "receiver": "vigil", "groupKey": "{}",
        "alerts": [{
            "status": "firing",
            "labels": { "alertname": name, "instance": instance, "agent": format!("bot@{instance}") },
            "annotations": {},
            "startsAt": "2026-11-30T10:00:00Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "fingerprint": fingerprint,
        }]
    })
    .to_string()
}

/// One notification, as Alertmanager posts it.
fn post(conn: &mut Conn, body: &str) -> Result<(u16, String)> {
    conn.request(
        "POST",
        "/alertmanager",
        &[("Authorization", &format!("Bearer {TOKEN}"))],
        body,
    )
}

fn rss_kb(pid: u32) -> u64 {
    crate::usage(pid).map(|(rss, _)| rss).unwrap_or(0)
}

fn wall_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1e3)
        .unwrap_or_default()
}

pub fn alerts(
    vigil: &Path,
    rate: u32,
    seconds: u64,
    repeats: u32,
    runbooks: usize,
) -> Result<serde_json::Value> {
    let dir = scratch("alerts");
    let _ = std::fs::remove_dir_all(&dir);
    let bots = runbooks.clamp(1, 200);
    let mut daemon = Daemon::start(vigil, &dir, &config(&dir, bots)?)?;
    let addr = crate::api::wait_for_addr(&mut daemon)?;
    let mut conn = Conn::open(&addr)?;

    // 1. A steady stream of new alerts (matching no runbook): answered once journaled.
    let mut lat = Vec::new();
    let every = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let t0 = Instant::now();
    let n = rate as u64 * seconds;
    for i in 0..n {
        let due = t0 + every * i as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let body = payload("BenchUnmatched", &format!("u{i}"), "0");
        let sent = Instant::now();
        let (code, answer) = post(&mut conn, &body)?;
        lat.push(sent.elapsed().as_secs_f64() * 1e3);
        if code != 200 {
            bail!("alert {i}: HTTP {code}: {answer}");
        }
    }
    lat.sort_by(f64::total_cmp);

    // 2. One alert repeated, as Alertmanager's repeat_interval and an HA pair send it.
    let rss_before = rss_kb(daemon.pid());
    let body = payload("BenchUnmatched", "repeated", "0");
    post(&mut conn, &body)?;
    let every = Duration::from_secs_f64(1.0 / f64::from(repeats.max(1)));
    let t0 = Instant::now();
    let total = u64::from(repeats) * seconds;
    let mut dup_lat = Vec::new();
    for i in 0..total {
        let due = t0 + every * i as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let sent = Instant::now();
        let (code, answer) = post(&mut conn, &body)?;
        dup_lat.push(sent.elapsed().as_secs_f64() * 1e3);
        if code != 200 || !answer.contains("\"duplicates\":1") {
            bail!("repeat {i}: HTTP {code}: {answer}");
        }
    }
    let repeats_took = t0.elapsed();
    let rss_after = rss_kb(daemon.pid());
    dup_lat.sort_by(f64::total_cmp);

    // 3. Alerts whose runbook restarts an agent: from sending to the step in the journal.
    let mut sends = Vec::new();
    for i in 0..bots {
        let body = payload("BenchRestart", &format!("r{i}"), &i.to_string());
        let at = wall_ms();
        let sent = Instant::now();
        let (code, answer) = post(&mut conn, &body)?;
        let answered = sent.elapsed().as_secs_f64() * 1e3;
        if code != 200 || !answer.contains("\"accepted\":1") {
            bail!("runbook alert {i}: HTTP {code}: {answer}");
        }
        sends.push((format!("r{i}"), at, answered));
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    let journal = std::fs::read_to_string(dir.join("state/audit.jsonl"))?;
    let mut to_step = Vec::new();
    for line in journal.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if v["action"] != "runbook_step" {
            continue;
        }
        let fp = v["metadata"]["fingerprint"].as_str().unwrap_or_default();
        if let Some((_, at, _)) = sends.iter().find(|(f, _, _)| f == fp) {
            let ts = chrono::DateTime::parse_from_rfc3339(v["ts"].as_str().unwrap_or_default())?;
            let ms = ts.timestamp_micros() as f64 / 1e3;
            to_step.push((ms - at).max(0.0));
        }
    }
    if to_step.len() != sends.len() {
        bail!(
            "{} of {} runbooks reached their first step",
            to_step.len(),
            sends.len()
        );
    }
    to_step.sort_by(f64::total_cmp);
    let mut answered: Vec<f64> = sends.iter().map(|(_, _, a)| *a).collect();
    answered.sort_by(f64::total_cmp);
    daemon.stop()?;

    println!(
        "alerts: {n} new alerts at {rate}/s answered in median {:.2} ms (p90 {:.2}, p99 {:.2}, max {:.2})",
        percentile(&lat, 0.5),
        percentile(&lat, 0.9),
        percentile(&lat, 0.99),
        lat[lat.len() - 1]
    );
    println!(
        "alerts: {total} repeats at {repeats}/s ({:.0}/s achieved) answered in median {:.2} ms; vigil's RSS {:.1} MB before, {:.1} MB after",
        total as f64 / repeats_took.as_secs_f64(),
        percentile(&dup_lat, 0.5),
        rss_before as f64 / 1024.0,
        rss_after as f64 / 1024.0
    );
    println!(
        "alerts: {} alerts whose runbook restarts an agent: the first step is decided and journaled before the answer, \
         answered in median {:.2} ms (p90 {:.2}, max {:.2}); journal timestamps (ms resolution) agree: step ≤ {:.0} ms after sending",
        sends.len(),
        percentile(&answered, 0.5),
        percentile(&answered, 0.9),
        answered[answered.len() - 1],
        to_step[to_step.len() - 1].ceil()
    );
    Ok(json!({
        "bench": "alerts",
        "rate": rate,
        "answered_ms": { "p50": percentile(&lat, 0.5), "p90": percentile(&lat, 0.9), "p99": percentile(&lat, 0.99) },
        "repeats": total,
        "repeats_per_s": total as f64 / repeats_took.as_secs_f64(),
        "repeat_answered_ms_p50": percentile(&dup_lat, 0.5),
        "rss_kb": { "before_repeats": rss_before, "after_repeats": rss_after },
        "alert_to_first_step_ms": { "p50": percentile(&answered, 0.5), "p90": percentile(&answered, 0.9), "journal_max": to_step[to_step.len() - 1] },
    }))
}
