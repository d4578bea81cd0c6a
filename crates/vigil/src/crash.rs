//! When vigil's own supervision loop panics, its agents must not be left unsupervised: the
//! panic is journaled (`vigil_crash`) and vigil executes itself again on the same pid — still
//! the parent of its agents, it adopts them as after any restart (and, if it was stopping
//! them, finishes the stop). A vigil that keeps panicking (3 times in 10 minutes) exits
//! instead (code 70) and says so; under systemd, `Restart=always` takes over from there.

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

/// What the last panic said, and where.
static LAST_PANIC: Mutex<Option<String>> = Mutex::new(None);

/// Set by a vigil that re-executed itself: `COUNT:FIRST_MS`.
const RESTARTS_VAR: &str = "VIGIL_CRASH_RESTARTS";
/// Set by a vigil that re-executed itself while it was stopping: the new one stops too.
const RESUME_STOP_VAR: &str = "VIGIL_RESUME_SHUTDOWN";
/// vigil's own variables across a re-execution: never passed on to agents.
pub const OWN_VARS: [&str; 2] = [RESTARTS_VAR, RESUME_STOP_VAR];
/// Panics within the window before vigil gives up instead of coming back.
const MAX_PANICS: u32 = 3;
/// The loop was stopping every agent when it panicked.
static STOPPING: AtomicBool = AtomicBool::new(false);
const RESTARTS_WINDOW_MS: i64 = 10 * 60 * 1000;

pub const EXIT_CRASHED: i32 = 70;

/// Keep the message of a panic (the default hook still prints it).
pub fn install_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".into());
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        *LAST_PANIC.lock().unwrap_or_else(|e| e.into_inner()) = Some(format!("{message}{at}"));
        default(info);
    }));
}

/// The loop has begun stopping every agent: a vigil that comes back after a panic now
/// finishes the stop instead of starting them again.
pub fn note_stopping() {
    STOPPING.store(true, Ordering::Relaxed);
}

/// This vigil was executed by one that panicked while stopping every agent.
pub fn resumes_shutdown() -> bool {
    std::env::var_os(RESUME_STOP_VAR).is_some()
}

/// A fault point for tests of debug builds: `VIGIL_FAILPOINT=name[,name…]`. Always false in
/// release builds.
pub fn failpoint(name: &str) -> bool {
    cfg!(debug_assertions)
        && std::env::var("VIGIL_FAILPOINT").is_ok_and(|v| v.split(',').any(|f| f == name))
}

/// The loop panicked: journal it, then come back (re-exec) or give up. Returns only when
/// giving up (the exit code), or when the re-exec itself failed.
pub fn after_panic(journal: &Path) -> i32 {
    let panic = LAST_PANIC
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .unwrap_or_else(|| "(unknown)".into());
    let now_ms = crate::clock::now().wall_ms;
    let (count, first_ms) = std::env::var(RESTARTS_VAR)
        .ok()
        .and_then(|v| {
            let (c, f) = v.split_once(':')?;
            Some((c.parse::<u32>().ok()?, f.parse::<i64>().ok()?))
        })
        .filter(|(_, first)| now_ms.saturating_sub(*first) < RESTARTS_WINDOW_MS)
        .unwrap_or((0, now_ms));
    // `count` earlier panics in the window, this one makes `count + 1`.
    let again = count + 1 < MAX_PANICS;
    let stopping = STOPPING.load(Ordering::Relaxed);
    let then = match (again, stopping) {
        (true, false) => "vigil starts again on the same pid and adopts its agents".to_string(),
        (true, true) => {
            "vigil starts again on the same pid, adopts its agents and finishes stopping them"
                .to_string()
        }
        (false, _) => format!(
            "it has panicked {MAX_PANICS} times within 10 minutes: vigil exits (code {EXIT_CRASHED}); its agents keep running and the next vigil adopts them"
        ),
    };
    let entry = vigil_core::records::vigil_crash(&panic, &then);
    let (mut j, _) = crate::audit::Journal::open(journal);
    if let (_, Err(e)) = j.append([&entry], SystemTime::now()) {
        eprintln!("error: {e}");
    }
    eprintln!("error: the supervision loop panicked ({panic}); {then}");
    if !again {
        return EXIT_CRASHED;
    }
    use std::os::unix::process::CommandExt;
    let mut again = std::process::Command::new("/proc/self/exe");
    again
        .args(std::env::args_os().skip(1))
        .env(RESTARTS_VAR, format!("{}:{first_ms}", count + 1));
    if stopping {
        again.env(RESUME_STOP_VAR, "1");
    }
    let err = again.exec();
    eprintln!(
        "error: cannot start vigil again ({err}); its agents keep running and the next vigil adopts them"
    );
    EXIT_CRASHED
}
