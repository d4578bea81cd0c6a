//! `vigil-bench-agent FILE [LIFETIME_MS]`: appends `start <ns>` when it starts and
//! `exit <ns>` just before it exits with code 1 (wall clock, nanoseconds since the epoch).

use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

fn main() {
    let started = ns();
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .expect("usage: vigil-bench-agent FILE [LIFETIME_MS]");
    let lifetime: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(20);
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap();
    writeln!(f, "start {started}").unwrap();
    std::thread::sleep(Duration::from_millis(lifetime));
    writeln!(f, "exit {}", ns()).unwrap();
    std::process::exit(1);
}
