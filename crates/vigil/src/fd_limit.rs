//! vigil's own limit on open descriptors, raised to the hard limit at startup: it holds one
//! pidfd per agent, so the usual soft limit of 1024 would stop it from watching the exits of a
//! fleet larger than about a thousand agents. Agents get the soft limit vigil was started
//! with, as systemd does for its services: a program that uses `select()` breaks on
//! descriptors above 1024.

use std::sync::OnceLock;

/// The limit vigil was started with, when it raised its own.
static STARTED_WITH: OnceLock<libc::rlimit> = OnceLock::new();

/// Raise the soft limit to the hard one; returns (before, after) soft limits.
pub fn raise() -> Option<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    if limit.rlim_cur >= limit.rlim_max {
        return Some((limit.rlim_cur, limit.rlim_cur));
    }
    let raised = libc::rlimit {
        rlim_cur: limit.rlim_max,
        rlim_max: limit.rlim_max,
    };
    // SAFETY: setrlimit reads the struct it is given.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        return None;
    }
    let _ = STARTED_WITH.set(limit);
    Some((limit.rlim_cur, raised.rlim_cur))
}

/// The limit an agent gets back before it execs, if vigil raised its own.
pub fn for_agents() -> Option<libc::rlimit> {
    STARTED_WITH.get().copied()
}
