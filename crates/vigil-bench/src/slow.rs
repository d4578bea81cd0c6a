//! Slow clients: N connections to vigil's API that send half a request and then nothing,
//! held until dropped. Connects are non-blocking, so connections the server does not accept
//! yet (its cap, then the kernel's queue) wait without holding up the benchmark; a thread
//! sends each one its half request as soon as it is connected, and opens it again when the
//! server drops it (the header timeout), so the pressure lasts.

use std::net::SocketAddrV4;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

pub struct SlowClients {
    stop: Arc<AtomicBool>,
    /// Connections that have sent their half request and are held open now.
    pub holding: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

const HALF: &[u8] = b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\n";

fn open(addr: &SocketAddrV4) -> i32 {
    // SAFETY: plain socket calls on a descriptor this function owns.
    unsafe {
        let fd = libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        );
        if fd < 0 {
            return -1;
        }
        let sa = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: addr.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*addr.ip()).to_be(),
            },
            sin_zero: [0; 8],
        };
        libc::connect(
            fd,
            (&sa as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as u32,
        );
        fd
    }
}

impl SlowClients {
    pub fn start(addr: SocketAddrV4, n: usize) -> SlowClients {
        let stop = Arc::new(AtomicBool::new(false));
        let holding = Arc::new(AtomicUsize::new(0));
        let (s, h) = (stop.clone(), holding.clone());
        let thread = std::thread::spawn(move || {
            // (fd, half request sent)
            let mut conns: Vec<(i32, bool)> = (0..n).map(|_| (open(&addr), false)).collect();
            while !s.load(Ordering::Relaxed) {
                let mut held = 0;
                for (fd, sent) in conns.iter_mut() {
                    let mut byte = 0u8;
                    // SAFETY: non-blocking calls on descriptors owned by this thread.
                    unsafe {
                        if *sent {
                            // Closed by the server (EOF or reset)? Then open it again.
                            let r = libc::recv(
                                *fd,
                                (&mut byte as *mut u8).cast(),
                                1,
                                libc::MSG_DONTWAIT,
                            );
                            let errno = *libc::__errno_location();
                            if r == 0 || (r < 0 && errno != libc::EAGAIN) {
                                libc::close(*fd);
                                *fd = open(&addr);
                                *sent = false;
                            } else {
                                held += 1;
                            }
                        } else if *fd >= 0
                            && libc::send(*fd, HALF.as_ptr().cast(), HALF.len(), libc::MSG_NOSIGNAL)
                                > 0
                        {
                            *sent = true;
                            held += 1;
                        }
                    }
                }
                h.store(held, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(200));
            }
            for (fd, _) in conns {
                // SAFETY: closing descriptors this thread opened.
                unsafe { libc::close(fd) };
            }
        });
        SlowClients {
            stop,
            holding,
            thread: Some(thread),
        }
    }
}

impl Drop for SlowClients {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
