//! How long the built-in rules take to judge one failure: 50 log lines, as a trading bot
//! writes them, ending in an error no rule knows (the worst case: every rule scans every line).
//!
//! `cargo bench -p vigil-core --bench rules`

use std::hint::black_box;
use std::time::{Duration, Instant};

use vigil_core::diagnosis::Evidence;
use vigil_core::{FailureCause, Remedy, Rules};

fn main() {
    let mut log: Vec<String> = (0..49)
        .map(|i| {
            format!(
                "2026-11-23 10:{:02}:{:02},123 INFO trader.binance: tick BTC/USDT bid=97{i:03}.5 ask=97{i:03}.9 position=0.0{i} pnl=+{i}.42 decisions=1{i}"
            , i / 60, i % 60)
        })
        .collect();
    log.push("ValueError: could not convert string to float: 'NaN%'".into());
    let rules = Rules::default();
    let ev = Evidence {
        cause: FailureCause::Exit,
        spawn_error: None,
        streak: 1,
        log: &log,
        oom_killed: false,
    };
    assert_eq!(rules.classify(&ev).action, Remedy::Restart);
    for _ in 0..100 {
        black_box(rules.classify(black_box(&ev)));
    }
    let mut samples: Vec<Duration> = (0..2000)
        .map(|_| {
            let t = Instant::now();
            black_box(rules.classify(black_box(&ev)));
            t.elapsed()
        })
        .collect();
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    println!(
        "rules, 50 lines, no match: median {:?}, p99 {:?}, max {:?} ({} runs)",
        at(0.5),
        at(0.99),
        samples[samples.len() - 1],
        samples.len()
    );
}
