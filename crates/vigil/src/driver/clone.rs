//! `clone3` for agents: the child is born in its run's cgroup (`CLONE_INTO_CGROUP`), shares
//! vigil's memory until it execs (`CLONE_VM | CLONE_VFORK`, on x86_64), and — where the kernel
//! has `close_range` — shares vigil's descriptor table too, leaving it at once for a private
//! table of three descriptors. Every step of a start then costs the same however many agents
//! vigil runs: no copy of vigil's page tables (they grow with the fleet), and no copy of its
//! descriptor table (a pidfd per agent) for `execve` to walk and close. Starting 10,000 agents
//! took 32 s with the page-table copy, 25 s with the descriptor-table copy alone, 9 s with
//! neither (BENCHMARKS.md, issue #19).

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::ptr;
use std::sync::{Mutex, OnceLock};

/// Everything the child needs, prepared before the clone (it may not allocate).
#[repr(C)]
pub(super) struct Child<'a> {
    pub program: &'a std::ffi::CStr,
    pub argv: &'a [*mut libc::c_char],
    pub envp: &'a [*mut libc::c_char],
    pub out: libc::c_int,
    pub cwd: Option<&'a std::ffi::CStr>,
    /// The user, group and groups it takes before it execs.
    pub ids: Option<&'a crate::config::users::Credentials>,
    /// Why the child could not exec: written by the child into memory it shares with vigil
    /// (the vfork-like clone), or through `report_fd` (the fork-like one).
    pub errno: libc::c_int,
    pub report_fd: libc::c_int,
    /// Set by `clone_child` when the child shares vigil's descriptor table: where its output
    /// and /dev/null wait for it, low in the table.
    pub slots: Option<Slots>,
    /// The descriptor limit vigil was started with, given back to the agent (`fd_limit`).
    pub nofile: Option<libc::rlimit>,
}

/// Two descriptors reserved low in vigil's table when it starts (before it has opened
/// anything): a child that shares vigil's table leaves it with copies of the descriptors
/// below `null + 1` only — `close_range(CLOSE_RANGE_UNSHARE)` copies nothing above — so what
/// it needs must be there. `null` holds /dev/null for good; `out` holds /dev/null too, and the
/// output of the agent being started for the moment of its clone.
#[derive(Clone, Copy, Debug)]
pub struct Slots {
    out: RawFd,
    null: RawFd,
}

static SLOTS: OnceLock<Option<Slots>> = OnceLock::new();
/// One start at a time uses `out` (agents start on the loop, commands on I/O threads).
static SLOT_IN_USE: Mutex<()> = Mutex::new(());

/// Reserve the slots; call first thing in `vigil run`, before any thread or file exists. Where
/// the kernel has no `close_range` (before Linux 5.9) children copy vigil's table as before.
pub fn reserve_slots() {
    SLOTS.get_or_init(|| {
        // SAFETY: `close_range` of one descriptor that cannot be open is a probe with no
        // effect (and no CLOSE_RANGE_UNSHARE: this thread's table must stay shared).
        let probe = unsafe { libc::syscall(libc::SYS_close_range, u32::MAX, u32::MAX, 0) };
        if probe != 0 {
            return None;
        }
        let open_null = || {
            // SAFETY: opening /dev/null with a literal path.
            let fd = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
            (fd >= 0).then_some(fd)
        };
        let (out, null) = (open_null()?, open_null()?);
        // Low enough that a child's copy of everything below them is cheap (a vigil started
        // with many inherited descriptors copies those).
        Some(Slots { out, null })
    });
}

#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// `clone3(CLONE_INTO_CGROUP)`: the child is born in the run's cgroup, so not even its first
/// fork can happen outside it (moving a process in after `posix_spawn` would race with the
/// agent's own forks). Like `posix_spawn` (and unlike fork), the child shares vigil's memory
/// on a small stack of its own while vigil's spawning thread waits (`CLONE_VM|CLONE_VFORK`)
/// until it has exec'd: a fork would copy vigil's page tables and make every later write of
/// vigil's fault, a cost that grows with vigil's memory and so with the fleet (at 5,000 agents
/// it was most of the time to start them). The child runs only async-signal-safe system calls
/// on what was prepared before — its session, signals, descriptors, then its groups, group and
/// user when the agent has `user` — then `execve`. A step that fails leaves its errno where
/// vigil reads it, as `posix_spawn` does.
pub(super) fn clone_child(
    c: &mut Child<'_>,
    cgroup: Option<BorrowedFd<'_>>,
) -> Result<u32, CloneError> {
    let mut args = CloneArgs {
        flags: if cgroup.is_some() {
            CLONE_INTO_CGROUP
        } else {
            0
        },
        exit_signal: libc::SIGCHLD as u64,
        cgroup: cgroup.map_or(0, |g| g.as_raw_fd() as u64),
        ..CloneArgs::default()
    };
    // The child shares vigil's descriptor table (no copy of a table as long as the fleet), and
    // finds its output in the `out` slot, held there until it has left the table.
    let _slot = match SLOTS.get().copied().flatten() {
        Some(slots) if cfg!(target_arch = "x86_64") => {
            let guard = SLOT_IN_USE.lock().unwrap_or_else(|e| e.into_inner());
            // SAFETY: dup3 onto a descriptor vigil reserved for this and nothing else.
            if unsafe { libc::dup3(c.out, slots.out, libc::O_CLOEXEC) } < 0 {
                return Err(CloneError::Exec(io::Error::last_os_error()));
            }
            args.flags |= libc::CLONE_FILES as u64;
            c.slots = Some(slots);
            Some(SlotGuard {
                slots,
                _guard: guard,
            })
        }
        _ => None,
    };
    // No signal handler of vigil's may run in the child while it shares vigil's memory: all
    // are blocked across the clone; the child sets defaults, then unblocks.
    let mut all = MaybeUninit::<libc::sigset_t>::uninit();
    let mut old = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: plain signal-mask calls on initialised sets.
    unsafe {
        libc::sigfillset(all.as_mut_ptr());
        libc::pthread_sigmask(libc::SIG_SETMASK, all.as_ptr(), old.as_mut_ptr());
    }
    let pid = clone3(&mut args, c);
    // SAFETY: as above; `old` was filled by the first call.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, old.as_ptr(), ptr::null_mut()) };
    let pid = pid?;
    // SAFETY: the child has exec'd or exited: nothing writes this any more.
    let errno = unsafe { ptr::read_volatile(&c.errno) };
    if errno != 0 {
        // The exec failed: collect the child, report why.
        let mut status = 0;
        // SAFETY: waiting for our own child, which has exited.
        unsafe { libc::waitpid(pid as libc::pid_t, &mut status, 0) };
        return Err(CloneError::Exec(io::Error::from_raw_os_error(errno)));
    }
    Ok(pid)
}

/// Why clone3 itself failed: not available here (spawn another way), or the process could
/// not be created.
fn clone_failed(e: io::Error) -> CloneError {
    match e.raw_os_error() {
        Some(
            libc::ENOSYS
            | libc::EPERM
            | libc::EACCES
            | libc::EINVAL
            | libc::E2BIG
            | libc::EOPNOTSUPP
            | libc::EBUSY
            | libc::ENOENT
            | libc::ENODEV,
        ) => CloneError::Clone(e),
        // Out of processes or memory: what posix_spawn would have said too.
        _ => CloneError::Exec(e),
    }
}

/// The child's stack: mapped once per spawning thread (the thread waits while its child runs
/// on it), with a guard page below it.
#[cfg(target_arch = "x86_64")]
fn child_stack() -> io::Result<(u64, u64)> {
    const SIZE: usize = 64 * 1024;
    const GUARD: usize = 4096;
    thread_local! {
        static STACK: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }
    let base = STACK.get();
    if base != 0 {
        return Ok(((base + GUARD) as u64, (SIZE - GUARD) as u64));
    }
    // SAFETY: a fresh anonymous mapping; the guard page is part of it. Never unmapped: one
    // per thread that spawns agents (the loop's), for vigil's lifetime.
    let base = unsafe {
        let p = libc::mmap(
            ptr::null_mut(),
            SIZE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
            -1,
            0,
        );
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        libc::mprotect(p, GUARD, libc::PROT_NONE);
        p as usize
    };
    STACK.set(base);
    Ok(((base + GUARD) as u64, (SIZE - GUARD) as u64))
}

/// clone3 with `CLONE_VM | CLONE_VFORK`: returns in vigil once the child has exec'd or exited.
/// The child starts on its own stack and jumps straight into [`child_main`] — it must never
/// return into this function's frame, which belongs to vigil's thread.
#[cfg(target_arch = "x86_64")]
fn clone3(args: &mut CloneArgs, c: &mut Child<'_>) -> Result<u32, CloneError> {
    let (stack, stack_size) = child_stack().map_err(CloneError::Exec)?;
    args.flags |= (libc::CLONE_VM | libc::CLONE_VFORK) as u64;
    args.stack = stack;
    args.stack_size = stack_size;
    let ret: i64;
    // SAFETY: the kernel starts the child with rsp at the top of `stack` (16-byte aligned, so
    // `call` leaves the alignment the ABI expects); the child calls `child_main`, which never
    // returns. rcx and r11 are clobbered by `syscall`, so the child's function and argument
    // travel in r12 and r13, which the kernel leaves as they were. vigil's thread is suspended
    // until the child execs or exits (CLONE_VFORK), so the child has `c` to itself; every
    // signal is blocked meanwhile (see `clone_child`).
    unsafe {
        std::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "xor ebp, ebp",
            "mov rdi, r13",
            "call r12",
            "ud2",
            "2:",
            inlateout("rax") libc::SYS_clone3 => ret,
            in("rdi") args as *mut CloneArgs,
            in("rsi") std::mem::size_of::<CloneArgs>(),
            in("r12") child_main as unsafe extern "C" fn(*mut Child<'_>) -> !,
            in("r13") c as *mut Child<'_>,
            out("rcx") _,
            out("r11") _,
        );
    }
    if ret < 0 {
        return Err(clone_failed(io::Error::from_raw_os_error(-ret as i32)));
    }
    Ok(ret as u32)
}

/// Elsewhere, a fork-like clone3 (the child gets a copy of vigil's memory); the errno comes
/// back through a close-on-exec pipe.
#[cfg(not(target_arch = "x86_64"))]
fn clone3(args: &mut CloneArgs, c: &mut Child<'_>) -> Result<u32, CloneError> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: a plain pipe2 call into a two-element array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(CloneError::Exec(io::Error::last_os_error()));
    }
    let (read_end, write_end) = (fds[0], fds[1]);
    c.report_fd = write_end;
    // SAFETY: clone3 without CLONE_VM is fork: the child has its own copy of memory and runs
    // only async-signal-safe calls (`child_main`) before execve or _exit.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            args as *mut CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if pid == 0 {
        // SAFETY: this is the child.
        unsafe {
            libc::close(read_end);
            child_main(c)
        }
    }
    // SAFETY: closing our copy of the write end; reading at most 4 bytes into an i32.
    unsafe { libc::close(write_end) };
    if pid < 0 {
        let e = io::Error::last_os_error();
        unsafe { libc::close(read_end) };
        return Err(clone_failed(e));
    }
    let mut errno: libc::c_int = 0;
    let got = loop {
        let n = unsafe { libc::read(read_end, (&mut errno as *mut libc::c_int).cast(), 4) };
        if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        break n;
    };
    unsafe { libc::close(read_end) };
    if got == 4 {
        c.errno = errno;
    }
    Ok(pid as u32)
}

/// The child, between the clone and `execve`: no allocation, no locks, no unwinding — only
/// system calls on what `c` holds.
unsafe extern "C" fn child_main(c: *mut Child<'_>) -> ! {
    // SAFETY: see `clone3`; `c` is ours until we exec or exit.
    unsafe {
        let c = &mut *c;
        libc::setsid();
        // Default dispositions for everything (Rust ignores SIGPIPE) before anything is
        // unblocked: a handler of vigil's must never run here.
        for sig in 1..65 {
            libc::signal(sig, libc::SIG_DFL);
        }
        let mut none = MaybeUninit::<libc::sigset_t>::uninit();
        libc::sigemptyset(none.as_mut_ptr());
        libc::sigprocmask(libc::SIG_SETMASK, none.as_ptr(), ptr::null_mut());
        match c.slots {
            Some(slots) => {
                // Leave vigil's table for one of our own holding only what is below the
                // slots (CLOSE_RANGE_UNSHARE copies nothing above `first`): until then, not
                // one descriptor of the shared table may change.
                let first = slots.out.max(slots.null) as u32 + 1;
                if libc::syscall(
                    libc::SYS_close_range,
                    first,
                    u32::MAX,
                    libc::CLOSE_RANGE_UNSHARE,
                ) != 0
                {
                    fail(c);
                }
                libc::dup2(slots.null, 0);
                libc::dup2(slots.out, 1);
                libc::dup2(slots.out, 2);
                // Everything else goes, inherited descriptors of vigil's included.
                libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
            }
            None => {
                // Raw system calls where glibc's wrapper is a cancellation point: that would
                // touch the state of vigil's thread, whose memory this child shares.
                let null = libc::syscall(
                    libc::SYS_openat,
                    libc::AT_FDCWD,
                    c"/dev/null".as_ptr(),
                    libc::O_RDONLY,
                ) as libc::c_int;
                if null > 0 {
                    libc::dup2(null, 0);
                    libc::syscall(libc::SYS_close, null);
                }
                libc::dup2(c.out, 1);
                libc::dup2(c.out, 2);
            }
        }
        if let Some(limit) = &c.nofile {
            libc::syscall(
                libc::SYS_prlimit64,
                0,
                libc::RLIMIT_NOFILE,
                limit as *const libc::rlimit,
                ptr::null_mut::<libc::rlimit>(),
            );
        }
        // Groups before the group, the group before the user: after setuid the others are no
        // longer allowed. Raw system calls, not glibc's: in a multi-threaded program glibc's
        // setuid signals every thread to change too and waits for them, and this child (of a
        // raw clone3 glibc knows nothing of) would wait forever for threads it does not have.
        // Ambient capabilities go first: a vigil that holds CAP_SETUID without being root
        // must not hand any to its agents.
        let became = match c.ids {
            None => true,
            Some(ids) => {
                libc::prctl(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
                    0 as libc::c_ulong,
                    0 as libc::c_ulong,
                    0 as libc::c_ulong,
                );
                libc::syscall(libc::SYS_setgroups, ids.groups.len(), ids.groups.as_ptr()) == 0
                    && libc::syscall(libc::SYS_setresgid, ids.gid, ids.gid, ids.gid) == 0
                    && libc::syscall(libc::SYS_setresuid, ids.uid, ids.uid, ids.uid) == 0
            }
        };
        if became && c.cwd.is_none_or(|dir| libc::chdir(dir.as_ptr()) == 0) {
            libc::execve(
                c.program.as_ptr(),
                c.argv.as_ptr() as _,
                c.envp.as_ptr() as _,
            );
        }
        fail(c)
    }
}

/// The child could not go on: leave the errno where vigil reads it, and exit.
unsafe fn fail(c: &mut Child<'_>) -> ! {
    // SAFETY: as in `child_main`.
    unsafe {
        let errno = *libc::__errno_location();
        // Never 0: vigil takes 0 for "it exec'd".
        c.errno = if errno == 0 { libc::ENOEXEC } else { errno };
        if c.report_fd >= 0 {
            libc::syscall(
                libc::SYS_write,
                c.report_fd,
                (&c.errno as *const libc::c_int).cast::<libc::c_void>(),
                4usize,
            );
        }
        libc::_exit(127);
    }
}

/// Puts /dev/null back in the `out` slot (the agent's log is not held open by vigil), then
/// lets the next start use it.
struct SlotGuard {
    slots: Slots,
    _guard: std::sync::MutexGuard<'static, ()>,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        // SAFETY: dup3 between two descriptors vigil reserved.
        unsafe { libc::dup3(self.slots.null, self.slots.out, libc::O_CLOEXEC) };
    }
}

/// Why `clone_child` did not start the program.
pub(super) enum CloneError {
    /// clone3 itself is not available here: spawn another way.
    Clone(io::Error),
    /// The process could not be created or could not exec: the spawn failed.
    Exec(io::Error),
}
