//! Whether the store takes writes: not after a failure that leaves the disk's state unknown,
//! and not while the disk has no room for the store's reserve.

use std::path::Path;

use super::{Error, Result, Writer};
use crate::apiserver::reserve::Reserve;

/// Whether the store takes writes.
pub(super) struct Health {
    /// Why nothing is written any more (until a restart), after a failure that leaves what is
    /// on disk unknown (as PostgreSQL stops after a failed fsync).
    pub(super) failed: Option<String>,
    /// Writes are taken only while the reserve is held.
    pub(super) reserve: Reserve,
}

impl Health {
    /// Ok when a write may be committed now; tries to take the reserve again if it is not
    /// held (at most twice a second).
    pub(super) fn check(&mut self, path: &Path) -> Result<()> {
        if let Some(why) = &self.failed {
            let message = format!("the store stopped writing after an earlier failure ({why}); restart the server");
            return Err(Error::Storage {
                path: path.to_path_buf(),
                source: Box::new(redb::Error::Io(std::io::Error::other(message))),
            });
        }
        if self.reserve.held() {
            return Ok(());
        }
        match self.reserve.take(false) {
            Ok(true) => {
                tracing::info!(reserve = %self.reserve.path().display(), "the disk has room again: the store takes writes");
                Ok(())
            }
            Ok(false) => {
                Err(Error::OutOfSpace { path: self.reserve.path().to_path_buf(), bytes: self.reserve.bytes() })
            }
            Err(e) => {
                tracing::warn!(reserve = %self.reserve.path().display(), error = %e, "taking the store's reserve failed");
                Err(Error::OutOfSpace { path: self.reserve.path().to_path_buf(), bytes: self.reserve.bytes() })
            }
        }
    }
}

impl Writer {
    pub(super) fn reserve_bytes(&self) -> u64 {
        self.health().reserve.bytes()
    }

    /// Gives the reserve back to the filesystem: writes are refused until it is taken again.
    pub(super) fn release_reserve(&self) {
        let mut health = self.health();
        if !health.reserve.held() {
            return;
        }
        let bytes = health.reserve.bytes();
        match health.reserve.release() {
            Ok(()) => tracing::warn!(
                reserve = %health.reserve.path().display(),
                bytes,
                "the disk is full: the store gave back its reserve and refuses writes until the disk has room for it again"
            ),
            Err(e) => {
                tracing::error!(reserve = %health.reserve.path().display(), error = %e, "giving back the store's reserve failed")
            }
        }
    }
}
