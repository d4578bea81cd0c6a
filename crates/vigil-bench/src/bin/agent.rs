//! The agent the benchmarks supervise. No dependencies, so it starts as fast as a program can.
//!
//! ```text
//! vigil-bench-agent FILE [LIFETIME_MS]
//!     append `start <ns>`, live LIFETIME_MS, append `exit <ns>`, exit 1
//! vigil-bench-agent stall FILE BEATS EVERY_MS notify|file:PATH
//!     heartbeat BEATS times, then stop; when SIGTERM comes, append `stall <last_beat_ns> <sigterm_ns>`
//! vigil-bench-agent flood SECONDS FILE
//!     send WATCHDOG=1 to NOTIFY_SOCKET as fast as possible; append `sent <count> <seconds>`
//! ```
//!
//! Times are wall-clock nanoseconds since the epoch.

use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

fn append(path: &str, line: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    writeln!(f, "{line}").unwrap();
}

static TERM_AT: AtomicU64 = AtomicU64::new(0);

extern "C" fn on_term(_: i32) {
    TERM_AT.store(ns(), Ordering::SeqCst);
}

unsafe extern "C" {
    fn signal(signum: i32, handler: extern "C" fn(i32)) -> usize;
    fn pause() -> i32;
}

fn notify_socket() -> UnixDatagram {
    let addr = std::env::var("NOTIFY_SOCKET").expect("NOTIFY_SOCKET");
    let socket = UnixDatagram::unbound().unwrap();
    if let Some(name) = addr.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        let a = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        socket.connect_addr(&a).unwrap();
    } else {
        socket.connect(&addr).unwrap();
    }
    socket
}

fn stall(out: &str, beats: u32, every: Duration, via: &str) {
    // SAFETY: the handler only stores into an atomic.
    unsafe {
        signal(15, on_term);
    }
    let socket = (via == "notify").then(notify_socket);
    let mut last = 0;
    for _ in 0..beats {
        match (&socket, via.strip_prefix("file:")) {
            (Some(s), _) => {
                s.send(b"WATCHDOG=1").unwrap();
            }
            (None, Some(path)) => {
                let now = SystemTime::now();
                std::fs::File::create(path)
                    .unwrap()
                    .set_modified(now)
                    .unwrap();
                last = now.duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64;
            }
            _ => panic!("via must be notify or file:PATH"),
        }
        if socket.is_some() {
            last = ns();
        }
        std::thread::sleep(every);
    }
    while TERM_AT.load(Ordering::SeqCst) == 0 {
        // SAFETY: pause returns after any signal handler ran.
        unsafe {
            pause();
        }
    }
    append(
        out,
        &format!("stall {last} {}", TERM_AT.load(Ordering::SeqCst)),
    );
    std::process::exit(0);
}

fn flood(seconds: f64, out: &str) {
    let socket = notify_socket();
    let start = Instant::now();
    let limit = Duration::from_secs_f64(seconds);
    let mut sent: u64 = 0;
    while start.elapsed() < limit {
        for _ in 0..1000 {
            socket.send(b"WATCHDOG=1").unwrap();
        }
        sent += 1000;
    }
    append(
        out,
        &format!("sent {sent} {}", start.elapsed().as_secs_f64()),
    );
    std::thread::sleep(Duration::from_secs(3600));
}

fn main() {
    let started = ns();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("stall") => stall(
            &args[1],
            args[2].parse().unwrap(),
            Duration::from_millis(args[3].parse().unwrap()),
            &args[4],
        ),
        Some("flood") => flood(args[1].parse().unwrap(), &args[2]),
        Some(path) => {
            let lifetime: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(20);
            append(path, &format!("start {started}"));
            std::thread::sleep(Duration::from_millis(lifetime));
            append(path, &format!("exit {}", ns()));
            std::process::exit(1);
        }
        None => eprintln!("usage: see the source"),
    }
}
