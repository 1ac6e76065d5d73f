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
//!
//! Between the cgroup join and the credential change the child can also set up a mount
//! namespace (steps the parent planned, see `node::sandbox`) and drop every capability; the
//! daemon's own binary is executed through a descriptor (`execveat`).
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

/// One step of the mount namespace the child sets up, in order (see `node::sandbox`, which
/// builds the list). Paths are absolute; a `slot` names a detached mount tree the child keeps
/// between a `Clone` and its `Attach`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MountOp {
    /// A mount namespace of its own (`unshare(CLONE_NEWNS)`), every mount in it private: no
    /// mount or unmount propagates back to the host.
    Unshare,
    /// A copy of the mount tree at the path, taken now with its current flags
    /// (`open_tree(OPEN_TREE_CLONE | AT_RECURSIVE)`), to put back later with `Attach`.
    Clone { path: CString, slot: usize },
    /// The mount at the path and every one below it read-only (`mount_setattr(AT_RECURSIVE)`),
    /// and nosuid.
    ReadOnlyTree(CString),
    /// The path bound onto itself, read-only: a file or directory inside a mount.
    ReadOnlyBind(CString),
    /// A fresh tmpfs on the path, with these mount options.
    Tmpfs { path: CString, options: CString },
    /// A directory created if missing (for a mount point inside a tmpfs made above).
    Mkdir(CString),
    /// The tree `Clone` took, mounted on the path (`move_mount`).
    Attach { slot: usize, path: CString },
    /// The one mount at the path read-only (not those below it).
    ReadOnly(CString),
}

/// The kernel's `struct mount_attr` for `mount_setattr(2)`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// `struct __user_cap_header_struct` and one `__user_cap_data_struct` for `capset(2)`.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: c_int,
}
#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const AT_RECURSIVE: libc::c_uint = 0x8000;
const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;
const MOUNT_ATTR_RDONLY: u64 = 1;
const MOUNT_ATTR_NOSUID: u64 = 2;
const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// The child's view of a [`MountOp`]: raw pointers into the request's CStrings.
#[repr(C)]
struct RawMountOp {
    kind: u32,
    path: *const libc::c_char,
    options: *const libc::c_char,
    slot: usize,
}

const OP_UNSHARE: u32 = 0;
const OP_CLONE: u32 = 1;
const OP_READ_ONLY_TREE: u32 = 2;
const OP_READ_ONLY_BIND: u32 = 3;
const OP_TMPFS: u32 = 4;
const OP_MKDIR: u32 = 5;
const OP_ATTACH: u32 = 6;
const OP_READ_ONLY: u32 = 7;

impl MountOp {
    fn raw(&self) -> RawMountOp {
        let (kind, path, options, slot) = match self {
            MountOp::Unshare => (OP_UNSHARE, ptr::null(), ptr::null(), 0),
            MountOp::Clone { path, slot } => (OP_CLONE, path.as_ptr(), ptr::null(), *slot),
            MountOp::ReadOnlyTree(p) => (OP_READ_ONLY_TREE, p.as_ptr(), ptr::null(), 0),
            MountOp::ReadOnlyBind(p) => (OP_READ_ONLY_BIND, p.as_ptr(), ptr::null(), 0),
            MountOp::Tmpfs { path, options } => (OP_TMPFS, path.as_ptr(), options.as_ptr(), 0),
            MountOp::Mkdir(p) => (OP_MKDIR, p.as_ptr(), ptr::null(), 0),
            MountOp::Attach { slot, path } => (OP_ATTACH, path.as_ptr(), ptr::null(), *slot),
            MountOp::ReadOnly(p) => (OP_READ_ONLY, p.as_ptr(), ptr::null(), 0),
        };
        RawMountOp { kind, path, options, slot }
    }

    /// What the step does, for an error message.
    pub(crate) fn describe(&self) -> String {
        let show = |c: &CString| c.to_string_lossy().into_owned();
        match self {
            MountOp::Unshare => "create a mount namespace".into(),
            MountOp::Clone { path, .. } => format!("take a copy of the mounts at {}", show(path)),
            MountOp::ReadOnlyTree(p) => format!("make {} read-only", show(p)),
            MountOp::ReadOnlyBind(p) => format!("make {} read-only", show(p)),
            MountOp::Tmpfs { path, .. } => format!("mount a private tmpfs on {}", show(path)),
            MountOp::Mkdir(p) => format!("create the mount point {}", show(p)),
            MountOp::Attach { path, .. } => format!("mount {} writable", show(path)),
            MountOp::ReadOnly(p) => format!("make {} read-only", show(p)),
        }
    }

    fn slot(&self) -> Option<usize> {
        match self {
            MountOp::Clone { slot, .. } | MountOp::Attach { slot, .. } => Some(*slot),
            _ => None,
        }
    }
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
    /// The mount namespace to set up before the credentials change (empty: the daemon's).
    pub mounts: Vec<MountOp>,
    /// Clear the capability bounding set and every capability, so that not even uid 0 keeps
    /// one, before and after executing.
    pub drop_capabilities: bool,
    /// Execute this file (an `O_PATH` descriptor) with `execveat(AT_EMPTY_PATH)` instead of
    /// `candidates`: the daemon's own binary, wherever it lies.
    pub exec_fd: Option<RawFd>,
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
const STEP_CHDIR: i32 = 7;
const STEP_EXEC: i32 = 9;
const STEP_CLOSE: i32 = 10;
/// A mount step failed; `ChildArgs::detail` is its index.
const STEP_MOUNT: i32 = 11;
/// Dropping capabilities failed (bounding set, ambient set or capset).
const STEP_CAPS: i32 = 12;

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
    mounts: *const RawMountOp,
    nmounts: usize,
    /// Detached mount trees between `Clone` and `Attach`, written by the child.
    slots: *mut c_int,
    drop_caps: bool,
    exec_fd: c_int,
    // Written by the child on failure.
    step: i32,
    errno: i32,
    detail: usize,
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
    let mounts: Vec<RawMountOp> = req.mounts.iter().map(MountOp::raw).collect();
    let nslots = req.mounts.iter().filter_map(MountOp::slot).max().map_or(0, |m| m + 1);
    let mut slots: Vec<c_int> = vec![-1; nslots];
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
        mounts: mounts.as_ptr(),
        nmounts: mounts.len(),
        slots: slots.as_mut_ptr(),
        drop_caps: req.drop_capabilities,
        exec_fd: req.exec_fd.unwrap_or(-1),
        step: 0,
        errno: 0,
        detail: 0,
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
    let (step, errno, detail) = unsafe {
        (
            ptr::read_volatile(&raw const args.step),
            ptr::read_volatile(&raw const args.errno),
            ptr::read_volatile(&raw const args.detail),
        )
    };
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
            STEP_MOUNT => io::Error::new(
                source.kind(),
                format!("{}: {source}", req.mounts.get(detail).map_or_else(|| "mount".into(), MountOp::describe)),
            ),
            STEP_CAPS => io::Error::new(source.kind(), format!("drop every capability: {source}")),
            // As the agent's user, in its view of the filesystem: name the directory.
            STEP_CHDIR => io::Error::new(
                source.kind(),
                format!(
                    "change to the working directory {}: {source}",
                    req.dir.as_ref().map_or_else(String::new, |d| d.to_string_lossy().into_owned())
                ),
            ),
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
        for i in 0..a.nmounts {
            if !mount_step(&*a.mounts.add(i), a.slots) {
                a.detail = i;
                return fail(a, STEP_MOUNT);
            }
        }
        if libc::syscall(libc::SYS_prctl, libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return fail(a, 3);
        }
        // The bounding set first (dropping from it needs CAP_SETPCAP, which the user change
        // below takes away): an executed program, even one run as uid 0, gains nothing.
        if a.drop_caps {
            for cap in 0..64 {
                if libc::syscall(libc::SYS_prctl, libc::PR_CAPBSET_DROP, cap, 0, 0, 0) != 0
                    && *libc::__errno_location() != libc::EINVAL
                {
                    return fail(a, STEP_CAPS);
                }
            }
            if libc::syscall(libc::SYS_prctl, libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 {
                return fail(a, STEP_CAPS);
            }
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
        // A change to a non-zero uid has cleared them already; uid 0 keeps them until here.
        if a.drop_caps {
            let header = CapHeader { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
            let none = [CapData { effective: 0, permitted: 0, inheritable: 0 }; 2];
            if libc::syscall(libc::SYS_capset, &header as *const CapHeader, none.as_ptr()) != 0 {
                return fail(a, STEP_CAPS);
            }
        }
        if !a.dir.is_null() && libc::syscall(libc::SYS_chdir, a.dir) != 0 {
            return fail(a, STEP_CHDIR);
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
        if a.exec_fd >= 0 {
            // By descriptor: no path lookup as the new user, so a binary under a directory
            // the agent cannot enter (root's home) still runs, and a binary replaced on disk
            // since the daemon started is still the daemon's own.
            libc::syscall(libc::SYS_execveat, a.exec_fd, c"".as_ptr(), a.argv, a.envp, libc::AT_EMPTY_PATH);
            return fail(a, STEP_EXEC);
        }
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

/// Runs one mount step in the child; `false` with errno set on failure. Raw calls only.
///
/// # Safety
/// `op`'s pointers are live CStrings of the parent; `slots` has room for every slot.
unsafe fn mount_step(op: &RawMountOp, slots: *mut c_int) -> bool {
    // SAFETY: raw system calls on the parent's prepared strings and our own locals.
    unsafe {
        let setattr = |path: *const libc::c_char, flags: libc::c_uint, set: u64| {
            let attr = MountAttr { attr_set: set, attr_clr: 0, propagation: 0, userns_fd: 0 };
            libc::syscall(
                libc::SYS_mount_setattr,
                libc::AT_FDCWD,
                path,
                flags,
                &attr as *const MountAttr,
                std::mem::size_of::<MountAttr>(),
            ) == 0
        };
        match op.kind {
            OP_UNSHARE => {
                libc::syscall(libc::SYS_unshare, libc::CLONE_NEWNS) == 0
                    && libc::syscall(
                        libc::SYS_mount,
                        ptr::null::<libc::c_char>(),
                        c"/".as_ptr(),
                        ptr::null::<libc::c_char>(),
                        libc::MS_REC | libc::MS_PRIVATE,
                        ptr::null::<c_void>(),
                    ) == 0
            }
            OP_CLONE => {
                let fd = libc::syscall(
                    libc::SYS_open_tree,
                    libc::AT_FDCWD,
                    op.path,
                    OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | AT_RECURSIVE,
                );
                if fd < 0 {
                    return false;
                }
                *slots.add(op.slot) = fd as c_int;
                true
            }
            OP_READ_ONLY_TREE => setattr(op.path, AT_RECURSIVE, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID),
            OP_READ_ONLY_BIND => {
                libc::syscall(
                    libc::SYS_mount,
                    op.path,
                    op.path,
                    ptr::null::<libc::c_char>(),
                    libc::MS_BIND | libc::MS_REC,
                    ptr::null::<c_void>(),
                ) == 0
                    && setattr(op.path, AT_RECURSIVE, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID)
            }
            OP_TMPFS => {
                libc::syscall(
                    libc::SYS_mount,
                    c"tmpfs".as_ptr(),
                    op.path,
                    c"tmpfs".as_ptr(),
                    libc::MS_NOSUID | libc::MS_NODEV,
                    op.options.cast::<c_void>(),
                ) == 0
            }
            OP_MKDIR => {
                libc::syscall(libc::SYS_mkdirat, libc::AT_FDCWD, op.path, 0o755) == 0
                    || *libc::__errno_location() == libc::EEXIST
            }
            OP_ATTACH => {
                let fd = *slots.add(op.slot);
                let ok = libc::syscall(
                    libc::SYS_move_mount,
                    fd,
                    c"".as_ptr(),
                    libc::AT_FDCWD,
                    op.path,
                    MOVE_MOUNT_F_EMPTY_PATH,
                ) == 0;
                if ok {
                    libc::syscall(libc::SYS_close, fd);
                }
                ok
            }
            OP_READ_ONLY => setattr(op.path, 0, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID),
            _ => {
                *libc::__errno_location() = libc::EINVAL;
                false
            }
        }
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

/// The local TCP ports that listen (IPv4 and IPv6), from one dump of the kernel's socket
/// table per family: a `sock_diag` netlink request for sockets in `LISTEN` only, so the
/// kernel walks its listening hash and not the established connections. The node calls it
/// once per check for every replica that waits to serve its card; `/proc/net/tcp{,6}` is
/// read instead when netlink is refused.
pub(crate) fn listening_tcp_ports() -> io::Result<std::collections::HashSet<u16>> {
    match diag_listening_ports() {
        Ok(ports) => Ok(ports),
        Err(_) => proc_listening_ports(),
    }
}

/// `SOCK_DIAG_BY_FAMILY` (linux/sock_diag.h).
const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// `TCP_LISTEN` of the kernel's TCP states (net/tcp_states.h).
const TCP_LISTEN: u32 = 10;

fn diag_listening_ports() -> io::Result<std::collections::HashSet<u16>> {
    // SAFETY: socket(2) takes no pointers; a new descriptor is owned below.
    let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, libc::NETLINK_SOCK_DIAG) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut ports = std::collections::HashSet::new();
    let mut buf = vec![0u8; 32 * 1024];
    for (seq, family) in [(1u32, libc::AF_INET as u8), (2, libc::AF_INET6 as u8)] {
        // nlmsghdr (16 bytes) + inet_diag_req_v2 (56 bytes: family, protocol, ext, pad,
        // states, and a zero inet_diag_sockid).
        let mut req = [0u8; 72];
        req[0..4].copy_from_slice(&72u32.to_ne_bytes());
        req[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        req[6..8].copy_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16).to_ne_bytes());
        req[8..12].copy_from_slice(&seq.to_ne_bytes());
        req[16] = family;
        req[17] = libc::IPPROTO_TCP as u8;
        req[20..24].copy_from_slice(&(1u32 << TCP_LISTEN).to_ne_bytes());
        // SAFETY: send(2) reads `req.len()` bytes of our array; the kernel is the peer of a
        // netlink socket that is not bound (address zero).
        if unsafe { libc::send(sock.as_raw_fd(), req.as_ptr().cast::<c_void>(), req.len(), 0) } < 0 {
            return Err(io::Error::last_os_error());
        }
        'dump: loop {
            // SAFETY: recv(2) writes at most `buf.len()` bytes into our buffer.
            let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast::<c_void>(), buf.len(), 0) };
            let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
            if n == 0 {
                break;
            }
            let mut at = 0;
            while at + 16 <= n {
                let word = |o: usize| u32::from_ne_bytes([buf[o], buf[o + 1], buf[o + 2], buf[o + 3]]);
                let len = word(at) as usize;
                let kind = u16::from_ne_bytes([buf[at + 4], buf[at + 5]]);
                if len < 16 || at + len > n {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "a truncated sock_diag message"));
                }
                match i32::from(kind) {
                    libc::NLMSG_DONE => break 'dump,
                    libc::NLMSG_ERROR => {
                        let code = if len >= 20 { word(at + 16) as i32 } else { 0 };
                        return Err(io::Error::from_raw_os_error(-code));
                    }
                    _ if len >= 16 + 6 => {
                        // inet_diag_msg: family, state, timer, retrans, then the socket id
                        // whose first field is the source port, in network order.
                        let p = at + 16 + 4;
                        ports.insert(u16::from_be_bytes([buf[p], buf[p + 1]]));
                    }
                    _ => {}
                }
                // Messages are aligned to 4 bytes.
                at += (len + 3) & !3;
            }
        }
    }
    Ok(ports)
}

/// The same from `/proc/net/tcp` and `/proc/net/tcp6` (state `0A` is `LISTEN`).
fn proc_listening_ports() -> io::Result<std::collections::HashSet<u16>> {
    let mut ports = std::collections::HashSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else { continue };
        for line in text.lines().skip(1) {
            let mut fields = line.split_whitespace();
            let (Some(local), Some(state)) = (fields.nth(1), fields.nth(1)) else { continue };
            if state != "0A" {
                continue;
            }
            if let Some(port) = local.rsplit_once(':').and_then(|(_, p)| u16::from_str_radix(p, 16).ok()) {
                ports.insert(port);
            }
        }
    }
    Ok(ports)
}

#[cfg(test)]
mod listening_tests {
    use super::*;

    /// A listening port is in both tables, IPv4 and IPv6; closed, it is gone.
    #[test]
    fn a_listening_port_is_found_and_a_closed_one_is_not() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let v6 = std::net::TcpListener::bind("[::1]:0").ok();
        for (what, ports) in [("netlink", diag_listening_ports().unwrap()), ("proc", proc_listening_ports().unwrap())] {
            assert!(ports.contains(&port), "{what}: {port} listens");
            if let Some(l) = &v6 {
                assert!(ports.contains(&l.local_addr().unwrap().port()), "{what}: the IPv6 one listens");
            }
        }
        drop(listener);
        assert!(!listening_tcp_ports().unwrap().contains(&port), "closed, {port} no longer listens");
    }
}
