//! The local backend: cgroups (v1 and v2) that the kernel enforces, and agent processes
//! started directly into them.

pub mod cgroup;
pub mod deletion;
pub mod logs;
pub mod ownership;
pub mod pressure;
pub mod process;
pub mod sandbox;
pub mod secret_files;
pub mod spec_hash;
pub mod supervisor;
mod sys;

pub(crate) use sys::{limit_malloc_arenas, release_free_heap};
