//! The one place the daemon reads the clocks: the core is handed [`Now`], never reads it.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use vigil_core::Now;

pub fn now() -> Now {
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default();
    Now::new(Instant::now(), wall)
}
