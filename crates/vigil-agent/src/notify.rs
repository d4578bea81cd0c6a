//! The notify socket (systemd's sd_notify(3) protocol), as vigil reads it.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// An unconnected datagram socket and vigil's address: each message is addressed on its own,
/// so a restart of vigil (a new socket at the same address) needs nothing from the agent.
pub struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
}

impl Notifier {
    /// `NOTIFY_SOCKET`: a path, or `@name` for an abstract socket.
    pub fn new(value: &str) -> Option<Notifier> {
        let addr = match value.strip_prefix('@') {
            Some(name) => SocketAddr::from_abstract_name(name.as_bytes()).ok()?,
            None => SocketAddr::from_pathname(value).ok()?,
        };
        let socket = UnixDatagram::unbound().ok()?;
        socket.set_nonblocking(true).ok()?;
        Some(Notifier { socket, addr })
    }

    /// Never fails the agent: while vigil restarts nobody listens for a moment.
    pub fn send(&self, message: &[u8]) -> bool {
        self.socket.send_to_addr(message, &self.addr).is_ok()
    }
}
