//! When vigil's own supervision loop panics, its agents must not be left unsupervised: the
//! panic is journaled (`vigil_crash`) and vigil executes itself again on the same pid — still
//! the parent of its agents, it adopts them as after any restart. A vigil that keeps
//! panicking (3 times in 10 minutes) exits instead (code 70) and says so; under systemd,
//! `Restart=always` takes over from there.

use std::path::Path;
use std::sync::Mutex;
use std::time::SystemTime;

/// What the last panic said, and where.
static LAST_PANIC: Mutex<Option<String>> = Mutex::new(None);

/// Set by a vigil that re-executed itself: `COUNT:FIRST_MS`.
const RESTARTS_VAR: &str = "VIGIL_CRASH_RESTARTS";
const MAX_RESTARTS: u32 = 3;
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
        .filter(|(_, first)| now_ms - first < RESTARTS_WINDOW_MS)
        .unwrap_or((0, now_ms));
    let again = count < MAX_RESTARTS;
    let then = if again {
        "vigil starts again on the same pid and adopts its agents".to_string()
    } else {
        format!(
            "it has panicked {} times within 10 minutes: vigil exits (code {EXIT_CRASHED}); its agents keep running and the next vigil adopts them",
            count + 1
        )
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
    let err = std::process::Command::new("/proc/self/exe")
        .args(std::env::args_os().skip(1))
        .env(RESTARTS_VAR, format!("{}:{first_ms}", count + 1))
        .exec();
    eprintln!(
        "error: cannot start vigil again ({err}); its agents keep running and the next vigil adopts them"
    );
    EXIT_CRASHED
}
