//! The one module with `unsafe`: starting an agent process, and handing free heap back.
//! The crate root is `deny(unsafe_code)`; this module allows it.
//!
//! Why a spawn of our own: a process must join its cgroup *before* it executes the agent (so
//! the kernel accounts every byte and fork from the first instruction, and nothing has to
//! stop and move it later), and must get its own session, `no_new_privs`, its credentials and
//! no stray descriptors at the same point. `Command::pre_exec` offers that point only through
//! `fork`, which copies the page tables of the whole daemon (tens of MB, many threads) and
//! then pays copy-on-write faults in the parent: measured, the largest cost of starting 100
//! agents. So this module does what glibc's `posix_spawn` does — `clone(CLONE_VM |
//! CLONE_VFORK)` onto a small stack of its own, the calling thread suspended until the child
//! has executed — and runs the setup in that child.
//!
//! The child shares the daemon's memory until `execve`, so it may only make raw system calls
//! on data the parent prepared: nothing allocates, takes a lock or touches a Rust runtime.
//! Every signal is blocked in the calling thread across the `clone`, and the child resets
//! every handler to the default before unblocking, so no daemon signal handler can ever run
//! on the child's stack. A failure in the child is reported through the shared argument
//! block (the step and the errno) and the child exits 127; the parent reaps it and returns
//! the error.
#![allow(unsafe_code)]

use std::ffi::{CString, c_int, c_void};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr;

/// Credentials to switch to, after joining the cgroup (writing `cgroup.procs` needs the
/// daemon's).
#[derive(Debug)]
pub(crate) struct Credentials {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

/// Everything the child needs, prepared in the parent.
#[derive(Debug)]
pub(crate) struct SpawnRequest {
    /// Paths to try in order with `execve` (the program, or its PATH candidates): the first
    /// that is not "not found" / "permission denied" wins, as `execvp` does.
    pub candidates: Vec<CString>,
    pub argv: Vec<CString>,
    pub envp: Vec<CString>,
    pub dir: Option<CString>,
    /// `cgroup.procs` of each hierarchy, opened for writing; the child writes `0` (itself).
    pub join: Vec<OwnedFd>,
    pub user: Option<Credentials>,
    /// Become stdin, stdout and stderr (descriptors ≥ 3, close-on-exec in the parent).
    pub stdio: [OwnedFd; 3],
}

/// A started process: its pid and a pidfd taken atomically by `clone` (no window in which
/// the pid could be reaped and reused before the pidfd is open).
#[derive(Debug)]
pub(crate) struct Spawned {
    pub pid: u32,
    pub pidfd: OwnedFd,
}

/// The step of the child's setup that failed, for the error message.
const STEPS: [&str; 9] = [
    "",
    "join the cgroup",
    "create a session",
    "set no_new_privs",
    "set the supplementary groups",
    "set the group id",
    "set the user id",
    "change to the working directory",
    "set up stdin/stdout/stderr",
];
const STEP_EXEC: i32 = 9;
const STEP_CLOSE: i32 = 10;

/// The argument block the child reads, and writes its failure into.
#[repr(C)]
struct ChildArgs {
    candidates: *const *const libc::c_char,
    ncandidates: usize,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    dir: *const libc::c_char,
    join: *const c_int,
    njoin: usize,
    stdio: [c_int; 3],
    set_user: bool,
    uid: u32,
    gid: u32,
    groups: *const libc::gid_t,
    ngroups: usize,
    // Written by the child on failure.
    step: i32,
    errno: i32,
}

/// The kernel's `struct sigaction` for `rt_sigaction` (not glibc's, which differs).
#[repr(C)]
struct KernelSigaction {
    handler: usize,
    flags: u64,
    restorer: usize,
    mask: u64,
}

const STACK_SIZE: usize = 64 * 1024;

/// Starts the process `req` describes; see the module comment.
pub(crate) fn spawn(req: &SpawnRequest) -> io::Result<Spawned> {
    if req.candidates.is_empty() {
        return Err(io::Error::from(io::ErrorKind::NotFound));
    }
    let candidates: Vec<*const libc::c_char> = req.candidates.iter().map(|c| c.as_ptr()).collect();
    let argv: Vec<*const libc::c_char> = req.argv.iter().map(|c| c.as_ptr()).chain([ptr::null()]).collect();
    let envp: Vec<*const libc::c_char> = req.envp.iter().map(|c| c.as_ptr()).chain([ptr::null()]).collect();
    let join: Vec<c_int> = req.join.iter().map(AsRawFd::as_raw_fd).collect();
    let groups: Vec<libc::gid_t> = req.user.as_ref().map(|u| u.groups.clone()).unwrap_or_default();
    let mut args = ChildArgs {
        candidates: candidates.as_ptr(),
        ncandidates: candidates.len(),
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        dir: req.dir.as_ref().map_or(ptr::null(), |d| d.as_ptr()),
        join: join.as_ptr(),
        njoin: join.len(),
        stdio: [req.stdio[0].as_raw_fd(), req.stdio[1].as_raw_fd(), req.stdio[2].as_raw_fd()],
        set_user: req.user.is_some(),
        uid: req.user.as_ref().map_or(0, |u| u.uid),
        gid: req.user.as_ref().map_or(0, |u| u.gid),
        groups: groups.as_ptr(),
        ngroups: groups.len(),
        step: 0,
        errno: 0,
    };
    if args.stdio.iter().any(|fd| *fd < 3) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "stdio descriptors must be above 2"));
    }

    let stack = Stack::new()?;
    let mut pidfd: c_int = -1;
    let flags = libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD | libc::SIGCHLD;
    // SAFETY: `sigfillset`/`pthread_sigmask` on stack-owned sets. `clone` runs `child_main`
    // on a stack of its own in a child that shares our memory; with CLONE_VFORK this thread
    // is suspended until the child has executed or exited, so `args` and everything it
    // points to outlive the child's use of them. `pidfd` receives the pidfd (CLONE_PIDFD).
    let pid = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let pid = libc::clone(child_main, stack.top(), flags, (&raw mut args).cast::<c_void>(), &raw mut pidfd);
        let clone_err = io::Error::last_os_error();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, ptr::null_mut());
        if pid < 0 {
            return Err(clone_err);
        }
        pid
    };
    // SAFETY: CLONE_PIDFD stored a new descriptor that nothing else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    // The child wrote these before it exited (or never, if it executed); it is gone or
    // replaced by the program now, so the reads race with nothing.
    // SAFETY: reads of our own local, which the child may have written through its pointer.
    let (step, errno) =
        unsafe { (ptr::read_volatile(&raw const args.step), ptr::read_volatile(&raw const args.errno)) };
    if step != 0 {
        // Reap the failed child so it does not linger as a zombie.
        let _ = rustix::process::waitid(
            rustix::process::WaitId::PidFd(std::os::fd::AsFd::as_fd(&pidfd)),
            rustix::process::WaitIdOptions::EXITED,
        );
        let source = io::Error::from_raw_os_error(errno);
        return Err(match step {
            STEP_EXEC => source,
            STEP_CLOSE => io::Error::new(source.kind(), format!("close inherited descriptors: {source}")),
            s => io::Error::new(
                source.kind(),
                format!("{}: {source}", STEPS.get(s as usize).copied().unwrap_or("setup")),
            ),
        });
    }
    Ok(Spawned { pid: pid as u32, pidfd })
}

/// The child's stack: anonymous memory with a guard page below it.
struct Stack {
    base: *mut c_void,
    len: usize,
}

impl Stack {
    fn new() -> io::Result<Self> {
        let page = 4096;
        let len = STACK_SIZE + page;
        // SAFETY: a fresh anonymous private mapping; no existing memory is touched.
        let base = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let stack = Stack { base, len };
        // SAFETY: the lowest page of our own mapping becomes the guard page.
        if unsafe { libc::mprotect(base, page, libc::PROT_NONE) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(stack)
    }

    /// The initial stack pointer (the stack grows down), 16-byte aligned.
    fn top(&self) -> *mut c_void {
        // SAFETY: one past the end of our mapping, which is page aligned.
        unsafe { self.base.cast::<u8>().add(self.len).cast() }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // SAFETY: our own mapping; the child has executed or exited (CLONE_VFORK).
        unsafe {
            libc::munmap(self.base, self.len);
        }
    }
}

/// Runs in the child, in the parent's memory, every signal blocked. Raw system calls only.
extern "C" fn child_main(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the parent's `ChildArgs`, alive until this child executes or exits.
    let a = unsafe { &mut *arg.cast::<ChildArgs>() };
    // SAFETY: every call below is a raw system call on descriptors and buffers the parent
    // prepared; the pointers and lengths come from live Vecs and CStrings.
    unsafe {
        let fail = |a: &mut ChildArgs, step: i32| -> c_int {
            a.step = step;
            a.errno = *libc::__errno_location();
            libc::syscall(libc::SYS_exit_group, 127);
            127
        };
        // Every handler back to the default: the daemon's handlers are in memory this child
        // shares, and `execve` keeps ignored signals ignored (SIGPIPE included).
        let dfl = KernelSigaction { handler: 0, flags: 0, restorer: 0, mask: 0 };
        for sig in 1..=64 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    sig,
                    &dfl as *const KernelSigaction,
                    ptr::null_mut::<c_void>(),
                    8,
                );
            }
        }
        for i in 0..a.njoin {
            if libc::syscall(libc::SYS_write, *a.join.add(i), c"0".as_ptr(), 1) != 1 {
                return fail(a, 1);
            }
        }
        // Its own session and process group: it does not get the daemon's terminal signals
        // and outlives the daemon; stop signals go to the whole group.
        if libc::syscall(libc::SYS_setsid) < 0 {
            return fail(a, 2);
        }
        if libc::syscall(libc::SYS_prctl, libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return fail(a, 3);
        }
        if a.set_user {
            // Raw calls change this task only, which is the whole child process.
            if libc::syscall(libc::SYS_setgroups, a.ngroups, a.groups) != 0 {
                return fail(a, 4);
            }
            if libc::syscall(libc::SYS_setresgid, a.gid, a.gid, a.gid) != 0 {
                return fail(a, 5);
            }
            if libc::syscall(libc::SYS_setresuid, a.uid, a.uid, a.uid) != 0 {
                return fail(a, 6);
            }
        }
        if !a.dir.is_null() && libc::syscall(libc::SYS_chdir, a.dir) != 0 {
            return fail(a, 7);
        }
        for (target, fd) in a.stdio.iter().enumerate() {
            if libc::syscall(libc::SYS_dup3, *fd, target as c_int, 0) < 0 {
                return fail(a, 8);
            }
        }
        // Every descriptor above stderr close-on-exec, so none the daemon holds (sockets,
        // the store, other agents' pipes) leaks into the agent.
        if libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC) != 0 {
            if *libc::__errno_location() != libc::ENOSYS {
                return fail(a, STEP_CLOSE);
            }
            // Before Linux 5.11: the usual descriptor range.
            for fd in 3..4096 {
                libc::syscall(libc::SYS_fcntl, fd, libc::F_SETFD, libc::FD_CLOEXEC);
            }
        }
        let empty: u64 = 0;
        libc::syscall(libc::SYS_rt_sigprocmask, libc::SIG_SETMASK, &empty as *const u64, ptr::null_mut::<u64>(), 8);
        // As execvp: a candidate that is missing or not executable lets the next one try;
        // the error reported is EACCES if any candidate had it, else the last one.
        let mut seen_eacces = false;
        for i in 0..a.ncandidates {
            libc::syscall(libc::SYS_execve, *a.candidates.add(i), a.argv, a.envp);
            let e = *libc::__errno_location();
            match e {
                libc::EACCES => seen_eacces = true,
                libc::ENOENT | libc::ENOTDIR | libc::ESTALE | libc::ENODEV | libc::ETIMEDOUT => {}
                _ => break,
            }
        }
        if seen_eacces && matches!(*libc::__errno_location(), libc::ENOENT | libc::ENOTDIR) {
            *libc::__errno_location() = libc::EACCES;
        }
        fail(a, STEP_EXEC)
    }
}

/// Opens `/dev/null` for stdin, on a descriptor above 2.
pub(crate) fn dev_null() -> io::Result<OwnedFd> {
    let f = std::fs::OpenOptions::new().read(true).write(true).open("/dev/null")?;
    above_stdio(OwnedFd::from(f))
}

/// A pipe, both ends close-on-exec and above 2: (read end, write end).
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [-1 as RawFd; 2];
    // SAFETY: pipe2 writes two descriptors into our array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: two new descriptors nothing else owns.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((above_stdio(r)?, above_stdio(w)?))
}

/// `fd` itself when it is above 2, else a close-on-exec duplicate that is: a daemon started
/// with a closed stdin could otherwise hand out descriptor 0 and the child's stdio moves
/// would overwrite each other.
pub(crate) fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    // SAFETY: F_DUPFD_CLOEXEC returns a new descriptor we then own.
    let dup = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
    if dup < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(dup) })
}

/// How many malloc arenas the daemon's threads share. glibc gives threads up to 8 arenas
/// per core (16 here) and each keeps the memory freed in it; with its request threads,
/// blocking start threads and store commits on many threads, the daemon's resident memory
/// at 500 idle agents was 56–57 MiB, and 47.8 MiB with two arenas — a cap that Java, Ruby
/// and Hadoop daemons commonly set (`MALLOC_ARENA_MAX=2`). Two still let two cores
/// allocate without waiting on each other.
const MALLOC_ARENAS: i32 = 2;

/// Caps the malloc arenas of this process (see [`MALLOC_ARENAS`]); `MALLOC_ARENA_MAX` in
/// the environment wins. Arenas already created stay, so the daemon calls this first.
pub fn limit_malloc_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt(3) takes no pointers; it sets one of glibc's malloc parameters.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS);
    }
}

/// Hands the heap memory glibc holds free back to the kernel. After a burst (hundreds of
/// agents started, their watch events decoded) glibc keeps the freed pages in its arenas,
/// and the daemon's resident memory stays at its peak while it idles for hours.
pub(crate) fn release_free_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim(3) takes no pointers and only walks glibc's own arenas under
    // their locks; any thread may call it at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}
