//! `vigil-bench soak --minutes N`: the demo fleet (six traders and their feed, faults every
//! 20–40 s, checkpoints every decision) for N minutes, watched from outside: vigil's memory
//! over time, the journal's growth, every journal line a whole record, every trader's
//! checkpoint agreeing with the decisions it wrote, and no process left behind.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::conn::Conn;
use crate::scratch;

const SYMBOLS: [&str; 6] = [
    "BTC_USDT", "ETH_USDT", "SOL_USDT", "BNB_USDT", "XRP_USDT", "ADA_USDT",
];

/// The `vigil run` the demo started (its child).
fn vigil_of(demo: u32) -> Option<u32> {
    let children = std::fs::read_to_string(format!("/proc/{demo}/task/{demo}/children")).ok()?;
    children
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .find(|pid: &u32| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.split(|b| *b == 0).any(|a| a == b"run"))
        })
}

/// Live processes carrying the state dir's mark (`VIGIL_STATE_DIR`): after vigil has stopped,
/// orphans.
fn marked(dir: &Path) -> usize {
    let mark = format!("VIGIL_STATE_DIR={}", dir.display());
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return 0;
    };
    procs
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter(|e| {
            std::fs::read(e.path().join("environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|kv| kv == mark.as_bytes()))
        })
        .count()
}

struct Sample {
    at_s: f64,
    rss_kb: u64,
    journal_bytes: u64,
    records: usize,
}

fn journal(dir: &Path) -> (u64, usize, usize) {
    let text = std::fs::read_to_string(dir.join("audit.jsonl")).unwrap_or_default();
    let torn = text
        .lines()
        .filter(|l| serde_json::from_str::<Value>(l).is_err())
        .count();
    (text.len() as u64, text.lines().count(), torn)
}

/// Each trader's checkpoint (`decisions`) against its rows in the demo's database.
fn checkpoints_vs_decisions(dir: &Path, addr: &str) -> Result<Vec<(String, i64, i64)>> {
    let db = dir.join("demo/trading.db");
    let mut out = Vec::new();
    let mut conn = Conn::open(addr)?;
    for symbol in SYMBOLS {
        let (code, body) = conn.request(
            "GET",
            &format!("/agents/trader@{symbol}/checkpoint"),
            &[],
            "",
        )?;
        let saved = if code == 200 {
            serde_json::from_str::<Value>(&body)?["document"]["decisions"]
                .as_i64()
                .unwrap_or(0)
        } else {
            0
        };
        // python3's sqlite3 reads the demo's WAL database beside a running writer.
        let rows = Command::new("python3")
            .arg("-c")
            .arg("import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); print(c.execute('SELECT count(*) FROM decisions WHERE symbol=?', (sys.argv[2],)).fetchone()[0])")
            .arg(&db)
            .arg(symbol)
            .output()
            .context("python3 (to read the demo's SQLite database)")?;
        let rows: i64 = String::from_utf8_lossy(&rows.stdout)
            .trim()
            .parse()
            .unwrap_or(-1);
        out.push((format!("trader@{symbol}"), saved, rows));
    }
    Ok(out)
}

pub fn soak(vigil: &Path, minutes: f64, seed: u64, every: Duration) -> Result<Value> {
    let dir = scratch("soak");
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let out = std::fs::File::create(
        std::env::temp_dir().join(format!("vigil-soak-{}.out", std::process::id())),
    )?;
    let duration = Duration::from_secs_f64(minutes * 60.0);
    let mut demo = Command::new(vigil)
        .args([
            "demo",
            "--seed",
            &seed.to_string(),
            "--port",
            &port.to_string(),
        ])
        .arg("--duration")
        .arg(format!("{}s", duration.as_secs()))
        .arg("--state-dir")
        .arg(&dir)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .context("cannot start vigil demo")?;
    let started = Instant::now();
    let mut samples: Vec<Sample> = Vec::new();
    let mut agreement = Vec::new();
    let mut next = started;
    let status = loop {
        if let Some(status) = demo.try_wait()? {
            break status;
        }
        if Instant::now() >= next {
            next += every;
            if let Some(pid) = vigil_of(demo.id()) {
                let (bytes, records, _) = journal(&dir);
                let rss = crate::usage(pid).map(|(rss, _)| rss).unwrap_or(0);
                samples.push(Sample {
                    at_s: started.elapsed().as_secs_f64(),
                    rss_kb: rss,
                    journal_bytes: bytes,
                    records,
                });
                eprintln!(
                    "[{:>5.0}s] vigil RSS {:.1} MB, journal {} records ({:.0} KB)",
                    started.elapsed().as_secs_f64(),
                    rss as f64 / 1024.0,
                    records,
                    bytes as f64 / 1024.0
                );
            }
            // Near the end, while vigil still answers: the traders' checkpoints.
            if started.elapsed() + every >= duration
                && agreement.is_empty()
                && let Ok(addr) = std::fs::read_to_string(dir.join("api.addr"))
            {
                agreement = checkpoints_vs_decisions(&dir, addr.trim()).unwrap_or_default();
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let (bytes, records, torn) = journal(&dir);
    std::thread::sleep(Duration::from_millis(500));
    let orphans = marked(&dir);
    if samples.is_empty() {
        bail!("the demo ended before any sample ({status})");
    }
    let first = samples
        .iter()
        .find(|s| s.at_s >= 60.0)
        .unwrap_or(&samples[0]);
    let last = samples.last().unwrap();
    let peak = samples.iter().map(|s| s.rss_kb).max().unwrap_or(0);
    let growth_per_hour_kb = if last.at_s > first.at_s {
        (last.rss_kb as f64 - first.rss_kb as f64) / (last.at_s - first.at_s) * 3600.0
    } else {
        0.0
    };
    let summary = std::fs::read_to_string(
        std::env::temp_dir().join(format!("vigil-soak-{}.out", std::process::id())),
    )
    .unwrap_or_default();
    let summary: String = summary
        .lines()
        .skip_while(|l| !l.contains("summary"))
        .collect::<Vec<_>>()
        .join("\n");
    println!("{summary}");
    println!(
        "soak {minutes} min (seed {seed}): demo {status}; vigil RSS {:.1} MB after the first minute → {:.1} MB at the end (peak {:.1} MB, {:+.0} KB/h)",
        first.rss_kb as f64 / 1024.0,
        last.rss_kb as f64 / 1024.0,
        peak as f64 / 1024.0,
        growth_per_hour_kb
    );
    println!(
        "  journal: {records} records, {:.0} KB ({:.0} records/min), {torn} lines not whole records; processes left after the demo: {orphans}",
        bytes as f64 / 1024.0,
        records as f64 / (started.elapsed().as_secs_f64() / 60.0)
    );
    let mismatched: Vec<&(String, i64, i64)> = agreement
        .iter()
        .filter(|(_, saved, rows)| saved != rows)
        .collect();
    println!(
        "  checkpoints: {} traders, decisions saved in checkpoints {} vs decision rows {}; disagreeing: {:?}",
        agreement.len(),
        agreement.iter().map(|a| a.1).sum::<i64>(),
        agreement.iter().map(|a| a.2).sum::<i64>(),
        mismatched
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(json!({
        "minutes": minutes, "seed": seed, "demo_ok": status.success(),
        "rss_kb": samples.iter().map(|s| json!([s.at_s, s.rss_kb])).collect::<Vec<_>>(),
        "journal": { "records": records, "bytes": bytes, "torn_lines": torn,
                     "growth": samples.iter().map(|s| json!([s.at_s, s.records, s.journal_bytes])).collect::<Vec<_>>() },
        "orphans": orphans,
        "checkpoints": agreement.iter().map(|(a, s, r)| json!({"agent": a, "saved": s, "rows": r})).collect::<Vec<_>>(),
    }))
}
