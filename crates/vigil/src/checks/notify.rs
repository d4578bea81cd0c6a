//! The systemd notify protocol: one datagram socket for every agent, `NOTIFY_SOCKET` in their
//! environment. The kernel stamps each datagram with the sender's pid (SCM_CREDENTIALS), and
//! a datagram counts only for the agent whose process tree sent it: one agent cannot
//! heartbeat for another.

use std::collections::HashMap;
use std::io::{self, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, recvmsg};
use tokio::sync::mpsc;
use tracing::{debug, warn};
use vigil_core::{AgentId, Event, NotifyMessage, RunId};

use crate::driver::proctree;
use crate::metrics::Live;

/// Main pid of each live run of an agent that has a notify check, with the agent and run.
pub type Senders = Arc<RwLock<HashMap<u32, Sender>>>;

/// Who a datagram speaks for, and the secrets its words must not carry.
#[derive(Clone, Debug)]
pub struct Sender {
    pub agent: AgentId,
    pub run: RunId,
    /// What the agent says about itself (`STATUS=`, `DEGRADED=`) is shown and journaled:
    /// redacted here, on this thread, never on the supervision loop.
    pub secrets: crate::redact::Secrets,
}

/// Longest path a unix socket address can hold.
const MAX_PATH: usize = 107;

/// The notify socket, bound: its `NOTIFY_SOCKET` value, and what it takes to bind it again.
pub struct Listener {
    /// The value for `NOTIFY_SOCKET`: a path, or `@name` for an abstract socket.
    pub address: String,
    /// Where it is bound in the file system (`None`: abstract, nothing to lose).
    path: Option<PathBuf>,
    /// The bound socket (a second descriptor of the reader thread's), to stop its reader.
    current: UnixDatagram,
    reader: Reader,
}

#[derive(Clone)]
struct Reader {
    senders: Senders,
    events: mpsc::Sender<Event>,
    live: Live,
}

/// Bind the socket and start reading it on a thread of its own.
///
/// The address depends only on the state dir (`<state_dir>/notify.sock`, or, when that path is
/// too long for a socket, an abstract name made from the state dir's canonical path), so it is
/// the same after vigil restarts: an agent that sends each message to `NOTIFY_SOCKET` (as
/// `sd_notify` does) reaches the next vigil too.
///
/// `events` is bounded: a flood of datagrams waits in the socket (and then blocks its
/// senders) instead of growing vigil's memory.
pub fn listen(
    state_dir: &Path,
    senders: Senders,
    events: mpsc::Sender<Event>,
    live: Live,
) -> io::Result<Listener> {
    let path = state_dir.join("notify.sock");
    let reader = Reader {
        senders,
        events,
        live,
    };
    let (socket, address, path) = if path.as_os_str().len() <= MAX_PATH {
        (bind_path(&path)?, path.display().to_string(), Some(path))
    } else {
        use std::os::linux::net::SocketAddrExt;
        let canonical = std::fs::canonicalize(state_dir).unwrap_or_else(|_| state_dir.into());
        let name = abstract_name(&canonical);
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
        (UnixDatagram::bind_addr(&addr)?, format!("@{name}"), None)
    };
    let current = start_reading(socket, &reader)?;
    Ok(Listener {
        address,
        path,
        current,
        reader,
    })
}

impl Listener {
    /// Bind the socket's path again after it was deleted (with the state dir): a new socket
    /// and reader thread take over, and the old reader is ended (its socket can no longer be
    /// reached). An abstract socket cannot be deleted and is left alone.
    pub fn rebind(&mut self) -> io::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let socket = bind_path(path)?;
        let old = std::mem::replace(&mut self.current, start_reading(socket, &self.reader)?);
        // Wakes the old reader with an empty read: it ends.
        rustix::net::shutdown(&old, rustix::net::Shutdown::Read)?;
        Ok(())
    }
}

fn bind_path(path: &Path) -> io::Result<UnixDatagram> {
    let _ = std::fs::remove_file(path);
    UnixDatagram::bind(path)
}

/// `vigil/notify/` and a hash of the state dir's canonical path.
fn abstract_name(canonical: &Path) -> String {
    format!("vigil/notify/{}", crate::state_lock::dir_hash(canonical))
}

/// Configure `socket` and read it on a thread of its own; returns a second descriptor of it.
fn start_reading(socket: UnixDatagram, reader: &Reader) -> io::Result<UnixDatagram> {
    rustix::net::sockopt::set_socket_passcred(&socket, true)?;
    // Bursts of heartbeats from many agents queue here instead of blocking their senders.
    let _ = rustix::net::sockopt::set_socket_recv_buffer_size(&socket, 4 << 20);
    let handle = socket.try_clone()?;
    let r = reader.clone();
    std::thread::Builder::new()
        .name("vigil-notify".into())
        .spawn(move || receive(socket, r.senders, r.events, r.live))?;
    Ok(handle)
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
        // Every datagram carries credentials (SO_PASSCRED); an empty read without them is
        // the socket shut down for reading: a rebound socket has taken over.
        if received.bytes == 0 && sender.is_none() {
            return;
        }
        let bytes = received.bytes.min(buf.len());
        let agent = sender.and_then(|pid| attribute(&senders, pid));
        live.notify(agent.is_some());
        let Some(Sender {
            agent,
            run,
            secrets,
        }) = agent
        else {
            ignored += 1;
            if ignored.is_power_of_two() {
                debug!(
                    "notify: ignored {ignored} datagrams from processes that are not agents' (sender {sender:?})"
                );
            }
            continue;
        };
        let mut message = NotifyMessage::parse(&buf[..bytes]);
        for text in [&mut message.status, &mut message.degraded]
            .into_iter()
            .flatten()
        {
            *text = crate::redact::line_with(text, &secrets);
        }
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
fn attribute(senders: &Senders, pid: u32) -> Option<Sender> {
    let map = senders.read().unwrap_or_else(|e| e.into_inner());
    if let Some(sender) = map.get(&pid) {
        return Some(sender.clone());
    }
    let session = proctree::stat(pid)?.session;
    map.get(&session).cloned()
}
