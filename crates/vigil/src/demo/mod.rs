//! `vigil demo`: a self-healing trading fleet in one command. It runs the real supervisor
//! (`vigil run`, as a child process) on a built-in fleet of `demo-agent` bots, injects the
//! seeds' failures on a seeded schedule, follows the audit journal to show each fault being
//! detected, diagnosed and healed, and ends with a summary. It is a user of vigil like any
//! other: everything it shows comes from the journal.

pub mod agent;
mod faults;
mod fleet;
mod sink;
mod summary;
mod tracker;
mod view;

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use agent::SYMBOLS;
use faults::{Kind, Schedule};
use tracker::Tracker;
use view::View;

use crate::state_lock::{self, Holder, StateLock};

pub use crate::cli::DemoArgs as DemoOptions;

/// The agent every trader depends on.
const FEED: &str = "market-feed";

/// After the duration, faults still being handled get this long to finish.
const SETTLE: Duration = Duration::from_secs(90);

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// Parse `20s..40s` (or one duration for a fixed gap).
pub fn parse_gap(s: &str) -> Result<(Duration, Duration), String> {
    let (lo, hi) = s.split_once("..").unwrap_or((s, s));
    let lo = crate::config::parse_duration(lo.trim())?;
    let hi = crate::config::parse_duration(hi.trim())?;
    if lo.is_zero() || hi < lo {
        return Err(format!(
            "`{s}`: write MIN..MAX with 0 < MIN ≤ MAX, e.g. 20s..40s"
        ));
    }
    Ok((lo, hi))
}

pub fn run(o: DemoOptions) -> i32 {
    match demo(o) {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

fn prepare(dir: &std::path::Path) -> Result<(), String> {
    // The demo wipes its state dir: never one that holds anything but an earlier demo.
    let foreign = std::fs::read_dir(dir)
        .map(|mut entries| entries.next().is_some())
        .unwrap_or(false)
        && !dir.join("demo.toml").exists();
    if foreign {
        return Err(format!(
            "{} is not empty and holds no earlier demo (no demo.toml): the demo starts from a clean state dir and will not wipe it; pass a new or empty --state-dir",
            dir.display()
        ));
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    // Each run starts from scratch: no budgets, quarantines or rows from the last one.
    for old in [
        "audit.jsonl",
        "state.json",
        "state.jsonl",
        "api.addr",
        "vigil.log",
    ] {
        let _ = std::fs::remove_file(dir.join(old));
    }
    for old in ["logs", "demo", "files"] {
        let _ = std::fs::remove_dir_all(dir.join(old));
    }
    std::fs::create_dir_all(dir.join("demo/faults"))
        .map_err(|e| format!("cannot create {}: {e}", dir.join("demo").display()))?;
    fleet::write_trader_configs(dir)?;
    fleet::create_db(&dir.join("demo/trading.db"))
}

fn start_vigil(exe: &std::path::Path, dir: &std::path::Path) -> Result<Child, String> {
    let log = std::fs::File::create(dir.join("vigil.log")).map_err(|e| e.to_string())?;
    Command::new(exe)
        .args(["run", "-c"])
        .arg(dir.join("demo.toml"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        // Its own process group: Ctrl-C reaches the demo, which stops vigil in order.
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", exe.display()))
}

fn vigil_log_tail(dir: &std::path::Path) -> String {
    let text = std::fs::read_to_string(dir.join("vigil.log")).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

fn demo(o: DemoOptions) -> Result<bool, String> {
    let view = View::new();
    let seed = o.seed.unwrap_or_else(|| wall_ms() as u64 % 100_000);
    let dir = o
        .state_dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join("vigil-demo"));
    let dir = std::path::absolute(&dir).map_err(|e| e.to_string())?;
    // Held for the whole demo, and taken before anything of an earlier demo is wiped: a
    // second demo on this dir stops here, not after deleting the first one's journal.
    let _lock = StateLock::acquire(&dir, Holder::Demo).map_err(|e| e.to_string())?;
    if let state_lock::Probe::Held(pid) = state_lock::holder_of(&dir, Holder::Run) {
        let pid = pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
        return Err(format!(
            "a vigil{pid} is running with state dir {}: stop it, or pass another --state-dir",
            dir.display()
        ));
    }
    prepare(&dir)?;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find vigil's binary: {e}"))?;
    let llm = o.llm_url.as_deref().map(|url| fleet::LlmChoice {
        provider: &o.llm_provider,
        url,
        model: &o.llm_model,
    });
    let (sink_port, told) = sink::start()?;
    let config_path = dir.join("demo.toml");
    std::fs::write(
        &config_path,
        fleet::config(&fleet::FleetOptions {
            exe: &exe,
            port: o.port,
            llm,
            sink_port,
        }),
    )
    .map_err(|e| format!("cannot write {}: {e}", config_path.display()))?;

    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(
            libc::SIGINT,
            on_stop_signal as *const () as libc::sighandler_t,
        );
        libc::signal(
            libc::SIGTERM,
            on_stop_signal as *const () as libc::sighandler_t,
        );
    }
    let mut child = start_vigil(&exe, &dir)?;
    let addr_file = dir.join("api.addr");
    let deadline = Instant::now() + Duration::from_secs(15);
    let addr = loop {
        if let Ok(a) = std::fs::read_to_string(&addr_file)
            && !a.trim().is_empty()
        {
            break a.trim().to_string();
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "vigil stopped at once ({status}):\n{}\n(is port {} taken? try --port)",
                vigil_log_tail(&dir),
                o.port
            ));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return Err(format!("vigil did not start:\n{}", vigil_log_tail(&dir)));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let me = exe.display();
    let cfg = config_path.display();
    println!(
        "{}\n  dashboard  http://{addr}/\n  config     {cfg}\n  try        {me} status -c {cfg}\n             {me} explain -c {cfg} trader@BTC_USDT\n  logs       {}\n  runs {} with a fault every {}–{} (Ctrl-C to stop early){}\n",
        view.bold(&format!(
            "vigil demo — six trading bots and their market feed, self-healing (seed {seed})"
        )),
        dir.join("logs").display(),
        vigil_core::human_duration(o.duration),
        vigil_core::human_duration(o.fault_every.0),
        vigil_core::human_duration(o.fault_every.1),
        if o.llm_url.is_some() {
            "\n  an LLM advisor gives second opinions"
        } else {
            ""
        }
    );

    let mut tracker = Tracker::new(dir.join("audit.jsonl"));
    let mut schedule = Schedule::new(seed);
    let traders: Vec<String> = SYMBOLS.iter().map(|s| format!("trader@{s}")).collect();
    let started = Instant::now();
    let end = started + o.duration;
    // Let the fleet warm up (rows in the table, first heartbeats) before the first fault.
    let mut next_fault = started + o.fault_every.0.min(Duration::from_secs(10));
    let mut group = 0;
    let mut settling = false;
    let mut vigil_died = None;
    loop {
        tracker.poll(&view);
        for title in told.try_iter() {
            tracker.totals.told += 1;
            view.line("people", "told", &format!("demo-sink got: {title}"));
        }
        if STOP.load(Ordering::Relaxed) {
            view.say("stopping (Ctrl-C)…");
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            vigil_died = Some(status);
            break;
        }
        let now = Instant::now();
        if now < end && now >= next_fault {
            group += 1;
            if inject(&mut schedule, &mut tracker, &traders, &dir, group, &view) {
                next_fault = now + schedule.rng().between(o.fault_every.0, o.fault_every.1);
            } else {
                // Everyone is busy healing: try again shortly.
                next_fault = now + Duration::from_secs(1);
            }
        }
        if now >= end {
            let open = tracker.open_faults();
            if open == 0 || now >= end + SETTLE {
                break;
            }
            if !settling {
                settling = true;
                view.say(&format!(
                    "time is up: waiting (at most {}) for {open} fault(s) still being handled",
                    vigil_core::human_duration(SETTLE)
                ));
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    // Stop vigil (and with it every agent), then read its last records.
    if vigil_died.is_none() {
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    tracker.poll(&view);
    for title in told.try_iter() {
        tracker.totals.told += 1;
        view.line("people", "told", &format!("demo-sink got: {title}"));
    }
    if let Some(status) = vigil_died {
        eprintln!(
            "vigil exited unexpectedly ({status}):\n{}",
            vigil_log_tail(&dir)
        );
        return Ok(false);
    }
    let (table, all_handled) = summary::render(&tracker, seed);
    println!("\n{}\n{table}", view.bold("summary"));
    println!(
        "the journal, logs and config stay in {} (vigil audit -c {cfg})",
        dir.display()
    );
    Ok(all_handled)
}

/// Inject the next fault; false when nothing can be injected right now.
fn inject(
    schedule: &mut Schedule,
    tracker: &mut Tracker,
    traders: &[String],
    dir: &std::path::Path,
    group: usize,
    view: &View,
) -> bool {
    let feed = FEED.to_string();
    let free: Vec<&String> = traders.iter().filter(|a| !tracker.busy(a)).collect();
    let up: Vec<&String> = traders
        .iter()
        .filter(|a| !tracker.quarantined.get(*a).copied().unwrap_or(false))
        .collect();
    let all_calm = up.iter().all(|a| !tracker.busy(a)) && !tracker.busy(&feed);
    let storm_ok = !up.is_empty() && all_calm;
    let Some(kind) = schedule.next_kind(|k| match k {
        Kind::RateLimit => storm_ok,
        // Every trader waits for the feed: only when none is busy with a fault of its own.
        Kind::FeedHang => all_calm,
        _ => !free.is_empty() && !tracker.busy(&feed),
    }) else {
        return false;
    };
    let targets: Vec<&String> = match kind {
        Kind::RateLimit => up,
        Kind::FeedHang => vec![&feed],
        _ => vec![free[schedule.rng().below(free.len())]],
    };
    let at = wall_ms();
    for agent in &targets {
        let who = agent.trim_start_matches("trader@");
        if kind == Kind::ConfigCorrupt {
            // Cut short, as by a crash in the middle of writing it.
            let path = dir.join("demo/config").join(format!("{who}.json"));
            let text = std::fs::read(&path).unwrap_or_default();
            if let Err(e) = std::fs::write(&path, &text[..text.len().min(25)]) {
                view.say(&format!("cannot inject a fault: {e}"));
                return false;
            }
        }
        if let Err(e) = std::fs::write(dir.join("demo/faults").join(who), kind.name()) {
            view.say(&format!("cannot inject a fault: {e}"));
            return false;
        }
        tracker.injected(kind, agent, group, at);
    }
    let who = if targets.len() > 1 {
        format!("{} traders", targets.len())
    } else {
        targets[0].to_string()
    };
    view.line(&who, "fault", kind.label());
    true
}
