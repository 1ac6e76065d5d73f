//! The driver for `--allow-unenforced`: no cgroups at all. Processes run with no kernel limits
//! and every Agent's status says so; stats are empty.

use std::path::PathBuf;
use std::time::Duration;

use super::{CgroupDriver, CgroupLimits, CgroupPath, CgroupStats, CgroupVersion, Result};

/// Accepts every request and enforces nothing.
#[derive(Debug, Default)]
pub struct Unenforced;

impl CgroupDriver for Unenforced {
    fn version(&self) -> CgroupVersion {
        CgroupVersion::V2
    }
    fn create(&self, _: &CgroupPath, _: &CgroupLimits) -> Result<()> {
        Ok(())
    }
    fn ensure(&self, _: &CgroupPath, _: &CgroupLimits) -> Result<()> {
        Ok(())
    }
    fn update(&self, _: &CgroupPath, _: &CgroupLimits) -> Result<()> {
        Ok(())
    }
    fn exists(&self, _: &CgroupPath) -> bool {
        true
    }
    fn procs_files(&self, _: &CgroupPath) -> Result<Vec<PathBuf>> {
        Ok(Vec::new())
    }
    fn add_process(&self, _: &CgroupPath, _: u32) -> Result<()> {
        Ok(())
    }
    fn children(&self, _: &CgroupPath) -> Result<Vec<CgroupPath>> {
        Ok(Vec::new())
    }
    fn pids(&self, _: &CgroupPath) -> Result<Vec<u32>> {
        // Adoption checks membership; without cgroups nothing can be proven, so nothing is adopted.
        Ok(Vec::new())
    }
    fn stats(&self, _: &CgroupPath) -> Result<CgroupStats> {
        Ok(CgroupStats::default())
    }
    fn freeze(&self, _: &CgroupPath) -> Result<()> {
        Ok(())
    }
    fn thaw(&self, _: &CgroupPath) -> Result<()> {
        Ok(())
    }
    fn kill_all(&self, _: &CgroupPath) -> Result<()> {
        Ok(())
    }
    fn remove(&self, _: &CgroupPath, _: Duration) -> Result<()> {
        Ok(())
    }
}
