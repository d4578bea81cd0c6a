//! A unit's journal, read inside vigil with systemd's own reader (sd-journal, from
//! `libsystemd.so.0`, loaded when a unit is first supervised: vigil also runs where there is
//! no systemd). A `journalctl` costs ~10 ms to start; this reads the journal files systemd
//! already keeps mapped, in well under one.
//!
//! Why not follow the journal (`journalctl --follow`)? journald tells readers of new entries at
//! most every 250 ms (it coalesces its change notifications), so a follower is that far
//! behind. What journald wrote is in the files at once, though: at a run's end vigil reads them
//! directly, and the run's lines are whole soon after systemd's own message about that end
//! (sent after the main process exited, so after its last output) is there — looked for every
//! millisecond for at most `wait`, only while an end is being judged.
//!
//! A journal handle belongs to one thread: the reader has its own.

use std::collections::VecDeque;
use std::ffi::{CStr, c_char, c_int, c_void};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use libloading::Library;
use tracing::{debug, warn};

/// How often a pending end looks again for systemd's message about it.
const LOOK_AGAIN: Duration = Duration::from_millis(1);
/// After systemd's message, the run's lines are taken once the unit's newest entry has not
/// changed for this long. journald reads the unit's output stream and systemd's message in
/// the same turn of its loop when both wait, in either order, and a busy journald may take a
/// few turns for a burst of output: the message can be written just before the last lines.
const SETTLE: Duration = Duration::from_millis(1);
/// How long past its own wait an answer may take before the caller reads the journal instead
/// (a read that hangs, on a hung file system, must not hold every unit's end).
const ANSWER_MARGIN: Duration = Duration::from_secs(2);
/// The longest line kept (a generous cut: redaction cuts to size later).
const LINE_BYTES: usize = 16 * 1024;

// sd-journal's open flags (sd-journal.h).
const LOCAL_ONLY: c_int = 1;
const SYSTEM: c_int = 4;

/// A run of a unit, as the journal knows it.
#[derive(Clone, Debug)]
pub struct Run {
    pub unit: String,
    pub invocation: String,
    /// When its main process started (µs since the epoch).
    pub started_us: u64,
}

/// What the reader thread is asked.
enum Ask {
    /// The run's last `n` lines once systemd wrote about its end (at or after `exited_us`),
    /// or at `until` whatever is there.
    Ended {
        run: Run,
        exited_us: u64,
        n: usize,
        until: Instant,
        /// Once systemd's message is seen: when the unit's newest entry was last looked at,
        /// and what it was (its time).
        told: Option<(Instant, u64)>,
        reply: tokio::sync::oneshot::Sender<Vec<String>>,
    },
    /// The run's last `n` lines now.
    SoFar {
        run: Run,
        n: usize,
        reply: tokio::sync::oneshot::Sender<Vec<String>>,
    },
}

/// The way to the reader thread. When the journal cannot be read this way (no libsystemd, no
/// journal file vigil may read) the thread is gone and every answer is `None`: the caller runs
/// `journalctl` instead.
#[derive(Clone)]
pub struct Reader {
    asks: mpsc::Sender<Ask>,
}

impl Reader {
    /// Opens the journal (`user`: the user's own) on a thread of its own.
    pub fn start(user: bool) -> Reader {
        let (asks, rx) = mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("vigil-journal".into())
            .spawn(move || match Journal::open(user) {
                Ok(journal) => serve(journal, user, rx),
                Err(e) => warn!("systemd: {e}; a unit's journal is read with journalctl instead"),
            });
        if let Err(e) = spawned {
            warn!("systemd: cannot start the journal reader: {e}");
        }
        Reader { asks }
    }

    /// The last `n` lines of the run `invocation` that ended at `exited_us`, once systemd's
    /// message about that end is in the journal (or after `wait`). `None`: read it otherwise.
    pub async fn ended(
        &self,
        run: &Run,
        exited_us: u64,
        n: usize,
        wait: Duration,
    ) -> Option<Vec<String>> {
        if run.invocation.is_empty() {
            return None;
        }
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.asks
            .send(Ask::Ended {
                run: run.clone(),
                exited_us,
                n,
                until: Instant::now() + wait,
                told: None,
                reply,
            })
            .ok()?;
        tokio::time::timeout(wait + ANSWER_MARGIN, answer)
            .await
            .ok()?
            .ok()
    }

    /// The run's last `n` lines so far. `None`: read them otherwise.
    pub async fn so_far(&self, run: &Run, n: usize) -> Option<Vec<String>> {
        if run.invocation.is_empty() {
            return None;
        }
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.asks
            .send(Ask::SoFar {
                run: run.clone(),
                n,
                reply,
            })
            .ok()?;
        tokio::time::timeout(ANSWER_MARGIN, answer).await.ok()?.ok()
    }
}

/// The reader thread: answers what it can at once; ends whose message has not arrived yet are
/// looked at again every millisecond, together.
fn serve(mut journal: Journal, user: bool, asks: mpsc::Receiver<Ask>) {
    let mut pending: Vec<Ask> = Vec::new();
    loop {
        let next = if pending.is_empty() {
            asks.recv().ok()
        } else {
            match asks.recv_timeout(LOOK_AGAIN) {
                Ok(ask) => Some(ask),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
        };
        match next {
            Some(ask) => pending.push(ask),
            None if pending.is_empty() => return,
            None => {}
        }
        journal.refresh();
        let now = Instant::now();
        let mut waiting = Vec::new();
        for ask in pending.drain(..) {
            match ask {
                Ask::SoFar { run, n, reply } => {
                    let _ = reply.send(journal.lines(&run, n, user));
                }
                Ask::Ended {
                    run,
                    exited_us,
                    n,
                    until,
                    mut told,
                    reply,
                } => {
                    let mut settled = false;
                    match told {
                        None => {
                            if journal.manager_wrote_since(&run.invocation, exited_us, user) {
                                told = Some((now, journal.newest_of(&run, user)));
                            }
                        }
                        Some((at, newest)) if now >= at + SETTLE => {
                            let latest = journal.newest_of(&run, user);
                            settled = latest == newest;
                            told = Some((now, latest));
                        }
                        Some(_) => {}
                    }
                    if settled || now >= until || reply.is_closed() {
                        if told.is_none() {
                            debug!(
                                "systemd: no journal message about the end of {} ({})",
                                run.unit, run.invocation
                            );
                        }
                        let _ = reply.send(journal.lines(&run, n, user));
                    } else {
                        waiting.push(Ask::Ended {
                            run,
                            exited_us,
                            n,
                            until,
                            told,
                            reply,
                        });
                    }
                }
            }
        }
        pending = waiting;
    }
}

/// Why the journal cannot be read in vigil.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot load libsystemd.so.0: {0}")]
    Library(#[from] libloading::Error),
    #[error("sd_journal_open failed: {0}")]
    Open(std::io::Error),
    #[error("no journal file can be read (is vigil's user in the systemd-journal or adm group?)")]
    NoFiles,
    #[error("cannot watch the journal's files for rotation: {0}")]
    Watch(std::io::Error),
}

type Handle = *mut c_void;

/// The sd-journal functions vigil uses (see sd-journal(3)); every call returns a negative errno
/// on failure.
struct Api {
    open: unsafe extern "C" fn(*mut Handle, c_int) -> c_int,
    close: unsafe extern "C" fn(Handle),
    get_fd: unsafe extern "C" fn(Handle) -> c_int,
    process: unsafe extern "C" fn(Handle) -> c_int,
    has_runtime_files: unsafe extern "C" fn(Handle) -> c_int,
    has_persistent_files: unsafe extern "C" fn(Handle) -> c_int,
    add_match: unsafe extern "C" fn(Handle, *const c_void, usize) -> c_int,
    flush_matches: unsafe extern "C" fn(Handle),
    seek_tail: unsafe extern "C" fn(Handle) -> c_int,
    previous: unsafe extern "C" fn(Handle) -> c_int,
    get_data: unsafe extern "C" fn(Handle, *const c_char, *mut *const c_void, *mut usize) -> c_int,
    get_realtime_usec: unsafe extern "C" fn(Handle, *mut u64) -> c_int,
    // Keeps the functions above loaded.
    _library: Library,
}

impl Api {
    fn load() -> Result<Api, libloading::Error> {
        // SAFETY: libsystemd's initialisers have no requirements; each symbol is given the
        // signature sd-journal.h declares for it.
        unsafe {
            let library = Library::new("libsystemd.so.0")?;
            Ok(Api {
                open: *library.get(b"sd_journal_open\0")?,
                close: *library.get(b"sd_journal_close\0")?,
                get_fd: *library.get(b"sd_journal_get_fd\0")?,
                process: *library.get(b"sd_journal_process\0")?,
                has_runtime_files: *library.get(b"sd_journal_has_runtime_files\0")?,
                has_persistent_files: *library.get(b"sd_journal_has_persistent_files\0")?,
                add_match: *library.get(b"sd_journal_add_match\0")?,
                flush_matches: *library.get(b"sd_journal_flush_matches\0")?,
                seek_tail: *library.get(b"sd_journal_seek_tail\0")?,
                previous: *library.get(b"sd_journal_previous\0")?,
                get_data: *library.get(b"sd_journal_get_data\0")?,
                get_realtime_usec: *library.get(b"sd_journal_get_realtime_usec\0")?,
                _library: library,
            })
        }
    }
}

/// An open journal: only ever used by the thread that opened it.
struct Journal {
    api: Api,
    handle: Handle,
}

impl Drop for Journal {
    fn drop(&mut self) {
        // SAFETY: the handle came from sd_journal_open and is closed once.
        unsafe { (self.api.close)(self.handle) }
    }
}

impl Journal {
    fn open(user: bool) -> Result<Journal, OpenError> {
        let api = Api::load()?;
        let mut handle: Handle = std::ptr::null_mut();
        // A user's units write to the user's own journal files when the journal is kept on
        // disk, and to the system's when it is kept in memory: every file the user may read.
        let flags = LOCAL_ONLY | if user { 0 } else { SYSTEM };
        // SAFETY: `handle` is a valid place for the new handle.
        let r = unsafe { (api.open)(&mut handle, flags) };
        if r < 0 || handle.is_null() {
            return Err(OpenError::Open(std::io::Error::from_raw_os_error(-r)));
        }
        let journal = Journal { api, handle };
        // SAFETY: a valid handle, on its own thread.
        let (runtime, persistent) = unsafe {
            (
                (journal.api.has_runtime_files)(journal.handle),
                (journal.api.has_persistent_files)(journal.handle),
            )
        };
        if runtime <= 0 && persistent <= 0 {
            return Err(OpenError::NoFiles);
        }
        // The journal's inotify watch: new and rotated files are noticed when `process` is
        // called (the events simply wait in the kernel meanwhile — nothing wakes vigil).
        // Without it a rotated file would go unseen: then `journalctl` is used instead.
        // SAFETY: a valid handle.
        let fd = unsafe { (journal.api.get_fd)(journal.handle) };
        if fd < 0 {
            return Err(OpenError::Watch(std::io::Error::from_raw_os_error(-fd)));
        }
        Ok(journal)
    }

    /// Notice files journald added or rotated since the last look.
    fn refresh(&mut self) {
        // SAFETY: a valid handle.
        unsafe { (self.api.process)(self.handle) };
    }

    /// Entries matching every `field=value` (fields ANDed), newest first, at most `n`:
    /// `each` gets each one.
    fn newest(&mut self, matches: &[String], n: usize, mut each: impl FnMut(&mut Journal) -> bool) {
        // SAFETY: a valid handle; every match is a buffer of the length given.
        unsafe {
            (self.api.flush_matches)(self.handle);
            for m in matches {
                if (self.api.add_match)(self.handle, m.as_ptr().cast(), m.len()) < 0 {
                    (self.api.flush_matches)(self.handle);
                    return;
                }
            }
            if (self.api.seek_tail)(self.handle) < 0 {
                return;
            }
        }
        for _ in 0..n {
            // SAFETY: a valid handle.
            if unsafe { (self.api.previous)(self.handle) } <= 0 || !each(self) {
                break;
            }
        }
    }

    /// The value of `field` in the current entry.
    fn field(&self, field: &CStr) -> Option<Vec<u8>> {
        let mut data: *const c_void = std::ptr::null();
        let mut len = 0usize;
        // SAFETY: a valid handle positioned on an entry; sd-journal sets `data`/`len` to
        // "FIELD=value", valid until the handle moves — copied out at once.
        let bytes = unsafe {
            if (self.api.get_data)(self.handle, field.as_ptr(), &mut data, &mut len) < 0
                || data.is_null()
            {
                return None;
            }
            std::slice::from_raw_parts(data.cast::<u8>(), len)
        };
        let prefix = field.to_bytes().len() + 1;
        bytes.get(prefix..).map(<[u8]>::to_vec)
    }

    fn realtime(&self) -> u64 {
        let mut at = 0u64;
        // SAFETY: a valid handle positioned on an entry.
        unsafe { (self.api.get_realtime_usec)(self.handle, &mut at) };
        at
    }

    /// When the unit's newest entry was written (µs), whichever run it is of.
    fn newest_of(&mut self, run: &Run, user: bool) -> u64 {
        let mut at = 0;
        self.newest(&unit_matches(run, user), 1, |j| {
            at = j.realtime();
            false
        });
        at
    }

    /// The run's own last `n` lines, oldest first: the unit's lines journald tagged with the
    /// run's invocation id, and those it could not tag (it learns the run from the process,
    /// and a line read after the process is gone has none) written since the run started.
    fn lines(&mut self, run: &Run, n: usize, user: bool) -> Vec<String> {
        let mut lines = VecDeque::new();
        // Newest first: later runs' lines are skipped, the first of an earlier run ends it.
        self.newest(&unit_matches(run, user), 4 * n + 256, |j| {
            let at = j.realtime();
            let whose = match j.field(c"_SYSTEMD_INVOCATION_ID") {
                Some(id) => Whose::of(id == run.invocation.as_bytes(), at >= run.started_us),
                None => Whose::of(at >= run.started_us, at >= run.started_us),
            };
            match whose {
                Whose::This => {
                    if let Some(message) = j.field(c"MESSAGE") {
                        lines.push_front(text(message));
                    }
                    lines.len() < n
                }
                Whose::Later => true,
                Whose::Earlier => false,
            }
        });
        lines.into()
    }

    /// systemd (the manager: pid 1, or the user's manager) wrote about the run at or after
    /// `since_us`. The journal's trusted fields say who wrote: a unit's process can add any
    /// field of its own, `INVOCATION_ID` too.
    fn manager_wrote_since(&mut self, invocation: &str, since_us: u64, user: bool) -> bool {
        let matches = if user {
            vec![
                format!("USER_INVOCATION_ID={invocation}"),
                "_COMM=systemd".to_string(),
                own_uid(),
            ]
        } else {
            vec![format!("INVOCATION_ID={invocation}"), "_PID=1".to_string()]
        };
        let mut told = false;
        self.newest(&matches, 1, |j| {
            told = j.realtime() >= since_us;
            false
        });
        told
    }
}

/// The matches for the entries the unit's processes wrote.
fn unit_matches(run: &Run, user: bool) -> Vec<String> {
    if user {
        vec![format!("_SYSTEMD_USER_UNIT={}", run.unit), own_uid()]
    } else {
        vec![format!("_SYSTEMD_UNIT={}", run.unit)]
    }
}

/// The match for entries written by vigil's own user (a user's units and manager).
fn own_uid() -> String {
    format!("_UID={}", rustix::process::getuid().as_raw())
}

/// Whose a line of the unit is, read newest first.
enum Whose {
    This,
    Later,
    Earlier,
}

impl Whose {
    fn of(this_run: bool, since_its_start: bool) -> Whose {
        match (this_run, since_its_start) {
            (true, _) => Whose::This,
            (false, true) => Whose::Later,
            (false, false) => Whose::Earlier,
        }
    }
}

fn text(mut bytes: Vec<u8>) -> String {
    if bytes.len() > LINE_BYTES {
        bytes.truncate(LINE_BYTES);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}
