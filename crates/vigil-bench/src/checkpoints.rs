//! `vigil-bench checkpoints`: durable checkpoint writes (`PUT /agents/NAME/checkpoint`, 10 KB
//! documents, compare-and-swap on the version) — the latency one agent sees, and the rate
//! many agents get together — into SQLite in the state dir, or into PostgreSQL.

use std::path::Path;
use std::time::Instant;

use anyhow::{Result, bail};
use serde_json::json;

use crate::conn::Conn;
use crate::{Daemon, percentile, scratch};

/// A trading bot's state of about `size` bytes: positions and recent fills.
fn document(size: usize, n: usize) -> String {
    let mut fills = Vec::new();
    let mut doc = json!({"last_processed_ts": n, "pnl": 1234.5, "positions": {"BTC_USDT": 0.25}});
    while doc.to_string().len() < size {
        fills.push(json!({"id": fills.len(), "side": "buy", "qty": 0.001, "price": 97_000.5}));
        doc["fills"] = json!(fills);
    }
    doc.to_string()
}

pub fn checkpoints(
    vigil: &Path,
    writers: usize,
    writes: usize,
    size: usize,
    store_url: Option<&str>,
) -> Result<serde_json::Value> {
    let dir = scratch("checkpoints");
    let instances: Vec<String> = (0..writers).map(|i| format!("\"{i}\"")).collect();
    let store = match store_url {
        Some(url) => format!("\n[store]\nurl = \"{url}\"\n"),
        None => String::new(),
    };
    let config = format!(
        "[vigil]\nstate_dir = \"state\"\n{store}\n[agents.bot]\ncommand = [\"sleep\", \"1000000\"]\ninstances = [{}]\n",
        instances.join(", ")
    );
    let mut daemon = Daemon::start(vigil, &dir, &config)?;
    let addr = crate::api::wait_for_addr(&mut daemon)?;
    // A run of this bench starts from version 0 on a fresh SQLite; on PostgreSQL, from
    // whatever an earlier run left: read it first.
    let tag = std::process::id();
    let doc = document(size, 0);

    let one = |i: usize, n: usize, latencies: &mut Vec<f64>| -> Result<()> {
        let mut conn = Conn::open(&addr)?;
        let path = format!("/agents/bot@{i}/checkpoint");
        let mut version = 0i64;
        if let Ok((200, body)) = conn.request("GET", &path, &[], "") {
            version = serde_json::from_str::<serde_json::Value>(&body)?["version"]
                .as_i64()
                .unwrap_or(0);
        }
        for _ in 0..n {
            let t = Instant::now();
            let v = version.to_string();
            let (code, body) = conn.request("PUT", &path, &[("If-Match", &v)], &doc)?;
            latencies.push(t.elapsed().as_secs_f64() * 1000.0);
            if code != 200 && code != 201 {
                bail!("PUT {path}: HTTP {code}: {body}");
            }
            version += 1;
        }
        Ok(())
    };

    // One agent writing back to back: the latency of a durable write.
    let mut alone = Vec::new();
    one(0, writes.min(2000), &mut alone)?;
    alone.sort_by(f64::total_cmp);

    // Every agent at once: the rate.
    let t = Instant::now();
    let all: Vec<Vec<f64>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..writers)
            .map(|i| {
                let one = &one;
                s.spawn(move || {
                    let mut l = Vec::new();
                    one(i, writes / writers, &mut l).map(|_| l)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("writer"))
            .collect::<Result<Vec<_>>>()
    })?;
    let took = t.elapsed().as_secs_f64();
    let mut together: Vec<f64> = all.into_iter().flatten().collect();
    together.sort_by(f64::total_cmp);
    let rate = together.len() as f64 / took;
    let rss = crate::usage(daemon.pid()).map(|(rss, _)| rss).unwrap_or(0);
    daemon.check_alive()?;
    daemon.stop()?;

    let where_ = if store_url.is_some() {
        "PostgreSQL"
    } else {
        "SQLite"
    };
    println!(
        "checkpoint PUT, {} B documents, durable, into {where_} (run {tag}):",
        doc.len()
    );
    println!(
        "  one agent, back to back: {} writes, median {:.2} ms, p99 {:.2} ms",
        alone.len(),
        percentile(&alone, 0.5),
        percentile(&alone, 0.99)
    );
    println!(
        "  {writers} agents at once: {} writes in {took:.2} s = {rate:.0}/s, median {:.2} ms, p99 {:.2} ms; vigil RSS {:.1} MB",
        together.len(),
        percentile(&together, 0.5),
        percentile(&together, 0.99),
        rss as f64 / 1024.0
    );
    Ok(json!({
        "store": where_,
        "document_bytes": doc.len(),
        "alone": { "writes": alone.len(), "median_ms": percentile(&alone, 0.5), "p99_ms": percentile(&alone, 0.99) },
        "together": { "writers": writers, "writes": together.len(), "per_second": rate,
                      "median_ms": percentile(&together, 0.5), "p99_ms": percentile(&together, 0.99) },
        "rss_kb": rss,
    }))
}
