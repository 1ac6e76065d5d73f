//! `a2a log-relay` (hidden): what the node runs for each agent replica to write its log
//! files, capped and rotated by renames (see [`crate::node::logs`]). stdin is the agent's
//! output pipe, stdout the live log file. The node runs the small `a2a-log-relay` binary
//! instead when it is installed beside `a2a` (the same code, see
//! [`crate::node::logs::RelayProgram`]); this verb is what it falls back to.

use std::path::PathBuf;

use clap::Args;

use crate::node::logs::{self, LogLimits};

#[derive(Args, Debug)]
pub struct LogRelayArgs {
    /// The cap of each log file, in bytes.
    #[arg(long, default_value_t = logs::DEFAULT_MAX_BYTES)]
    pub max_bytes: u64,
    /// How many files to keep, the live one included.
    #[arg(long, default_value_t = logs::DEFAULT_MAX_FILES)]
    pub max_files: u32,
    /// A `cgroup.procs` file to write itself into first (repeatable: one per hierarchy).
    #[arg(long, value_name = "FILE")]
    pub join: Vec<PathBuf>,
    /// The live log file (open on stdout).
    pub path: PathBuf,
}

/// Why the relay stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Limits(#[from] logs::Error),
    #[error("relaying to {}: {source}", path.display())]
    Relay {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub fn run(args: &LogRelayArgs) -> Result<(), Error> {
    let limits = LogLimits::new(args.max_bytes, args.max_files)?;
    logs::relay(&args.path, limits, &args.join).map_err(|source| Error::Relay { path: args.path.clone(), source })
}

/// `a2a log-relay` alone: the relay's own few arguments, parsed as `a2a-log-relay` parses
/// them, not the whole command line's parser (building every verb's parser cost about as much
/// CPU as the rest of the relay's start, and the node may start one relay per agent replica).
/// `args` is the command line after `log-relay`.
pub fn main(args: impl Iterator<Item = std::ffi::OsString>) -> std::process::ExitCode {
    let args = match logs::relay::parse_args(args) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("error: a2a log-relay: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match logs::relay(&args.path, args.limits, &args.join) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(source) => {
            eprintln!("error: {}", Error::Relay { path: args.path, source });
            std::process::ExitCode::FAILURE
        }
    }
}
