//! The one module with `unsafe`: code that runs in the forked child between `fork` and `exec`
//! (`Command::pre_exec`). The crate root is `deny(unsafe_code)`; this module allows it.
//!
//! Why here: a process must join its cgroup *before* it executes the agent (so the kernel
//! accounts every byte and fork from the first instruction, and nothing has to stop and move
//! it later), and must drop privileges and stray descriptors at the same point. Only `pre_exec`
//! offers that point, and it is `unsafe` because the closure runs in a copy of a possibly
//! multi-threaded process: it may only make async-signal-safe calls. Everything below is a raw
//! system call on data prepared by the parent; nothing allocates or takes a lock.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::process::Command;

use rustix::process::{Gid, Uid};

/// What the child does before `exec`, prepared in the parent.
#[derive(Debug)]
pub(crate) struct ChildSetup {
    /// `cgroup.procs` of each hierarchy, opened for writing; the child writes `0` (itself).
    pub join: Vec<OwnedFd>,
    /// Credentials to switch to, after joining (writing `cgroup.procs` needs the old ones).
    pub user: Option<Credentials>,
}

#[derive(Debug)]
pub(crate) struct Credentials {
    pub uid: Uid,
    pub gid: Gid,
    pub groups: Vec<Gid>,
}

/// Arranges for `setup` to run in the child of `cmd`, after std has set up stdio and the
/// working directory and right before `exec`.
pub(crate) fn install(cmd: &mut Command, setup: ChildSetup) {
    // SAFETY: `child_setup` makes only raw system calls (rustix's linux_raw backend and one
    // `syscall`), which are async-signal-safe, and reads data owned by the closure.
    unsafe {
        cmd.pre_exec(move || child_setup(&setup));
    }
}

fn child_setup(s: &ChildSetup) -> io::Result<()> {
    for fd in &s.join {
        rustix::io::write(fd, b"0")?;
    }
    // Its own session and process group: it does not get the daemon's terminal signals and
    // outlives the daemon; stop signals go to the whole group.
    rustix::process::setsid()?;
    rustix::thread::set_no_new_privs(true)?;
    if let Some(c) = &s.user {
        // The child is single-threaded after fork, so the per-thread calls cover the process.
        rustix::thread::set_thread_groups(&c.groups)?;
        rustix::thread::set_thread_gid(c.gid)?;
        rustix::thread::set_thread_uid(c.uid)?;
    }
    close_inherited_fds()
}

/// Marks every descriptor above stderr close-on-exec, so none the daemon holds (sockets, the
/// store, other agents' pipes) leaks into the agent.
fn close_inherited_fds() -> io::Result<()> {
    // SAFETY: close_range(2) with CLOSE_RANGE_CLOEXEC only sets flags on descriptors.
    let rc = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC) };
    if rc == 0 {
        return Ok(());
    }
    // Before Linux 5.11: walk the usual descriptor range instead.
    for fd in 3..4096 {
        // SAFETY: F_SETFD on a descriptor that may not exist only fails with EBADF.
        unsafe {
            libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
        }
    }
    Ok(())
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
