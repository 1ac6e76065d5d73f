//! The store's disk reserve: a file of allocated blocks beside the database that the store
//! gives back to the filesystem when the disk is full, so that it can still checkpoint its
//! log into the database and start again (what PostgreSQL and etcd operators do by hand with
//! a ballast file).
//!
//! While the reserve is not held, the store refuses writes: a write that it acknowledged then
//! could not be made durable at the next checkpoint. The reserve is taken again (and writes
//! resume) once the filesystem has room for it again.

use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The reserve's default size.
pub const DEFAULT_BYTES: u64 = 64 * 1024 * 1024;

/// How often a store without its reserve tries to take it again (on a write or a readiness
/// probe, never in a loop of its own).
const RETRY_EVERY: Duration = Duration::from_millis(500);

#[derive(Debug)]
pub struct Reserve {
    path: PathBuf,
    bytes: u64,
    held: bool,
    last_try: Option<Instant>,
}

impl Reserve {
    /// A reserve of `bytes` at `path`, not taken yet. Zero bytes: no reserve, always held.
    pub fn new(path: PathBuf, bytes: u64) -> Reserve {
        Reserve { path, bytes, held: bytes == 0, last_try: None }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn held(&self) -> bool {
        self.held
    }

    /// Gives the reserve's blocks back to the filesystem.
    pub fn release(&mut self) -> io::Result<()> {
        if self.bytes == 0 {
            return Ok(());
        }
        self.held = false;
        match std::fs::remove_file(&self.path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        sync_parent(&self.path)
    }

    /// Allocates the reserve on disk. `Ok(false)` when the filesystem has no room for it (then
    /// nothing of it stays on disk); at most every [`RETRY_EVERY`] unless `now` is set.
    pub fn take(&mut self, now: bool) -> io::Result<bool> {
        if self.held {
            return Ok(true);
        }
        if !now && self.last_try.is_some_and(|t| t.elapsed() < RETRY_EVERY) {
            return Ok(false);
        }
        self.last_try = Some(Instant::now());
        match self.allocate() {
            Ok(()) => {
                self.held = true;
                Ok(true)
            }
            Err(e) => {
                let _ = std::fs::remove_file(&self.path);
                if super::wal::is_no_space(&e) { Ok(false) } else { Err(e) }
            }
        }
    }

    fn allocate(&self) -> io::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&self.path)?;
        match rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::empty(), 0, self.bytes) {
            Ok(()) => {}
            // Filesystems without fallocate get their blocks written.
            Err(e) if e == rustix::io::Errno::OPNOTSUPP => {
                let zeros = vec![0u8; 1024 * 1024];
                let mut left = self.bytes;
                while left > 0 {
                    let n = zeros.len().min(left as usize);
                    file.write_all(&zeros[..n])?;
                    left -= n as u64;
                }
            }
            Err(e) => return Err(e.into()),
        }
        file.sync_all()?;
        sync_parent(&self.path)
    }
}

fn sync_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) => File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

/// Bytes an unprivileged writer may still allocate on the filesystem holding `path`.
pub fn available(path: &Path) -> io::Result<u64> {
    let stat = rustix::fs::statvfs(path)?;
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_is_allocated_released_and_taken_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.reserve");
        let mut reserve = Reserve::new(path.clone(), 1024 * 1024);
        assert!(!reserve.held());
        assert!(reserve.take(true).unwrap());
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.len(), 1024 * 1024);
        // Blocks really allocated, not a sparse file.
        assert!(std::os::unix::fs::MetadataExt::blocks(&meta) * 512 >= 1024 * 1024);
        reserve.release().unwrap();
        assert!(!path.exists() && !reserve.held());
        assert!(reserve.take(true).unwrap() && path.exists());
        // No reserve at all: always held, no file.
        let none = Reserve::new(dir.path().join("none"), 0);
        assert!(none.held() && !dir.path().join("none").exists());
    }

    #[test]
    fn a_reserve_larger_than_the_free_space_is_not_taken_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let free = available(dir.path()).unwrap();
        let path = dir.path().join("store.reserve");
        let mut reserve = Reserve::new(path.clone(), free.saturating_mul(4).max(1 << 40));
        assert!(!reserve.take(true).unwrap());
        assert!(!reserve.held() && !path.exists());
    }
}
