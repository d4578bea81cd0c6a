//! The systemd notify protocol: one datagram socket for every agent, `NOTIFY_SOCKET` in their
//! environment. The kernel stamps each datagram with the sender's pid (SCM_CREDENTIALS), and
//! a datagram counts only for the agent whose process tree sent it: one agent cannot
//! heartbeat for another.

use std::collections::HashMap;
use std::io::{self, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::sync::{Arc, RwLock};

use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, recvmsg};
use tokio::sync::mpsc;
use tracing::{debug, warn};
use vigil_core::{AgentId, Event, NotifyMessage, RunId};

use crate::driver::proctree;
use crate::metrics::Live;

/// Main pid of each live run of an agent that has a notify check, with the agent and run.
pub type Senders = Arc<RwLock<HashMap<u32, (AgentId, RunId)>>>;

/// Longest path a unix socket address can hold.
const MAX_PATH: usize = 107;

/// Bind the socket and start reading it on a thread of its own. Returns the value for
/// `NOTIFY_SOCKET` (a path, or `@name` for an abstract socket when the path is too long).
///
/// `events` is bounded: a flood of datagrams waits in the socket (and then blocks its
/// senders) instead of growing vigil's memory.
pub fn listen(
    state_dir: &Path,
    senders: Senders,
    events: mpsc::Sender<Event>,
    live: Live,
) -> io::Result<String> {
    let path = state_dir.join("notify.sock");
    let (socket, address) = if path.as_os_str().len() <= MAX_PATH {
        let _ = std::fs::remove_file(&path);
        (UnixDatagram::bind(&path)?, path.display().to_string())
    } else {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("vigil-notify-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
        (UnixDatagram::bind_addr(&addr)?, format!("@{name}"))
    };
    rustix::net::sockopt::set_socket_passcred(&socket, true)?;
    // Bursts of heartbeats from many agents queue here instead of blocking their senders.
    let _ = rustix::net::sockopt::set_socket_recv_buffer_size(&socket, 4 << 20);
    std::thread::Builder::new()
        .name("vigil-notify".into())
        .spawn(move || receive(socket, senders, events, live))?;
    Ok(address)
}

fn receive(socket: UnixDatagram, senders: Senders, events: mpsc::Sender<Event>, live: Live) {
    let mut buf = [0u8; 4096];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmCredentials(1))];
    let mut ignored = 0u64;
    loop {
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let mut iov = [IoSliceMut::new(&mut buf)];
        let received = match recvmsg(&socket, &mut iov, &mut control, RecvFlags::CMSG_CLOEXEC) {
            Ok(r) => r,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => {
                warn!("notify socket: {e}; agents' notify messages are no longer read");
                return;
            }
        };
        let mut sender = None;
        for msg in control.drain() {
            if let RecvAncillaryMessage::ScmCredentials(cred) = msg {
                sender = Some(cred.pid.as_raw_nonzero().get() as u32);
            }
        }
        let bytes = received.bytes.min(buf.len());
        let agent = sender.and_then(|pid| attribute(&senders, pid));
        live.notify(agent.is_some());
        let Some((agent, run)) = agent else {
            ignored += 1;
            if ignored.is_power_of_two() {
                debug!(
                    "notify: ignored {ignored} datagrams from processes that are not agents' (sender {sender:?})"
                );
            }
            continue;
        };
        let message = NotifyMessage::parse(&buf[..bytes]);
        if events
            .blocking_send(Event::Notify {
                agent,
                run,
                message,
            })
            .is_err()
        {
            return;
        }
    }
}

/// The run a sender belongs to: its main process, or any process in its session.
fn attribute(senders: &Senders, pid: u32) -> Option<(AgentId, RunId)> {
    let map = senders.read().unwrap_or_else(|e| e.into_inner());
    if let Some(agent) = map.get(&pid) {
        return Some(*agent);
    }
    let session = proctree::stat(pid)?.session;
    map.get(&session).copied()
}
