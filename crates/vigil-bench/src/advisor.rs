//! `vigil-bench advisor`: how long a real LLM advisor takes to judge a failure — from the
//! agent's exit (in the journal) to the `advice` record — for fresh evidence and for evidence
//! seen before (the cache). The agent prints 50 log lines like a trading bot, then crashes.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde_json::{Value, json};

use crate::{Daemon, percentile, scratch};

/// Seconds since midnight of an RFC 3339 UTC timestamp (`2026-11-23T14:38:38.335Z`).
fn seconds_of_day(ts: &str) -> Option<f64> {
    let time = ts.split('T').nth(1)?.trim_end_matches('Z');
    let mut parts = time.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

fn records(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("state/audit.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// A word made of letters (digits don't count in the cache's template), new for each `i`.
fn word(i: usize) -> String {
    let mut n = i + 1;
    let mut w = String::new();
    while n > 0 {
        w.push((b'a' + (n % 26) as u8) as char);
        n /= 26;
    }
    w
}

pub fn advisor(
    vigil: &Path,
    provider: &str,
    url: &str,
    model: &str,
    fresh: usize,
    repeated: usize,
) -> Result<Value> {
    let dir = scratch("advisor");
    // The agent waits for `go`, prints 49 ticks and an error naming the word in `go`, exits.
    let script = r#"while [ ! -e go ]; do sleep 0.02; done; w=$(cat go); rm go; i=0; while [ $i -lt 49 ]; do echo "2026-11-23 10:00:$i INFO trader.binance: tick BTC/USDT bid=97$i.5 ask=97$i.9 position=0.0$i pnl=+$i.42"; i=$((i+1)); done; echo "ValueError: unexpected field $w in order book update"; exit 1"#;
    let config = format!(
        r#"[vigil]
state_dir = "state"

[defaults.policy]
cooldown = "0s"
max_restarts = 100000
backoff_max = "0s"
backoff_initial = "0s"

[agents.bot]
cwd = "."
command = ["sh", "-c", {script:?}]

[diagnosis.llm]
provider = "{provider}"
url = "{url}"
model = "{model}"
timeout = "120s"
"#
    );
    let mut daemon = Daemon::start(vigil, &dir, &config)?;
    let mut latencies: Vec<(bool, f64)> = Vec::new();
    let mut errors = Vec::new();
    for i in 0..fresh + repeated {
        let cold = i < fresh;
        let w = if cold { word(i) } else { word(0) };
        // A stricter advice may have quarantined the bot: this measures latency, not verdicts.
        let _ = std::process::Command::new(vigil)
            .args(["reset", "bot", "-c"])
            .arg(dir.join("vigil.toml"))
            .output();
        std::fs::write(dir.join("go"), w)?;
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            daemon.check_alive()?;
            let recs = records(&dir);
            let answers: Vec<&Value> = recs
                .iter()
                .filter(|r| r["action"] == "advice" || r["action"] == "llm_error")
                .collect();
            if answers.len() > i {
                let answer = answers[i];
                let exit = recs
                    .iter()
                    .filter(|r| r["action"] == "exit")
                    .nth(i)
                    .expect("an exit before its advice");
                if answer["action"] == "llm_error" {
                    errors.push(answer["error"].clone());
                } else {
                    let at = |r: &Value| seconds_of_day(r["ts"].as_str().unwrap_or_default());
                    if let (Some(a), Some(e)) = (at(answer), at(exit)) {
                        latencies.push((cold, (a - e) * 1000.0));
                    }
                }
                break;
            }
            if Instant::now() > deadline {
                bail!("no advice within 180 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    daemon.stop()?;
    let summarize = |cold: bool| {
        let mut v: Vec<f64> = latencies
            .iter()
            .filter(|(c, _)| *c == cold)
            .map(|(_, ms)| *ms)
            .collect();
        v.sort_by(f64::total_cmp);
        if v.is_empty() {
            return json!(null);
        }
        json!({"n": v.len(), "median_ms": percentile(&v, 0.5), "max_ms": v[v.len() - 1]})
    };
    let (cold, cached) = (summarize(true), summarize(false));
    println!("advisor {provider} {model} at {url}: exit → advice record");
    println!("  fresh evidence (50 lines): {cold}");
    println!("  evidence seen before:      {cached}");
    println!("  errors: {}", errors.len());
    Ok(json!({"advisor": {"fresh": cold, "repeated": cached, "errors": errors}}))
}
