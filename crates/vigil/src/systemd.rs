//! vigil under systemd (`Type=notify`, `WatchdogSec=`): `READY=1` once the fleet is started,
//! `WATCHDOG=1` from the supervision loop itself — so a wedged loop stops pinging and systemd
//! restarts vigil (a loop that panics re-executes vigil, see `crash`) — and `STOPPING=1` on
//! the way out. Without `NOTIFY_SOCKET` (not under systemd) all of this is a no-op.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// systemd's variables for vigil itself: never passed on to agents or helper commands (an
/// agent that inherited them could ping systemd on vigil's behalf).
pub const OWN_VARS: [&str; 3] = ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"];

pub struct Systemd {
    socket: UnixDatagram,
    addr: SocketAddr,
    watchdog: Option<Duration>,
}

/// A `NOTIFY_SOCKET` value as an address: a path, or `@name` for an abstract socket.
pub fn socket_addr(notify_socket: &str) -> Option<SocketAddr> {
    match notify_socket.strip_prefix('@') {
        Some(name) => SocketAddr::from_abstract_name(name.as_bytes()).ok(),
        None => SocketAddr::from_pathname(notify_socket).ok(),
    }
}

impl Systemd {
    pub fn from_env() -> Option<Systemd> {
        let addr = socket_addr(&std::env::var("NOTIFY_SOCKET").ok()?)?;
        let socket = UnixDatagram::unbound().ok()?;
        let for_us = std::env::var("WATCHDOG_PID")
            .ok()
            .and_then(|p| p.parse::<u32>().ok())
            .is_none_or(|p| p == std::process::id());
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|u| u.parse::<u64>().ok())
            .filter(|u| *u > 0 && for_us)
            .map(Duration::from_micros);
        Some(Systemd {
            socket,
            addr,
            watchdog,
        })
    }

    /// How often to ping: half the watchdog timeout, as sd_watchdog_enabled(3) advises.
    pub fn ping_every(&self) -> Option<Duration> {
        self.watchdog.map(|w| w / 2)
    }

    pub fn notify(&self, message: &str) {
        if let Err(e) = self.socket.send_to_addr(message.as_bytes(), &self.addr) {
            tracing::warn!("cannot notify systemd ({message:?}): {e}");
        }
    }
}
