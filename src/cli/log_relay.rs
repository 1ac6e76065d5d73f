//! `a2a log-relay` (hidden): what the node runs for each agent replica to write its log
//! files, capped and rotated by renames (see [`crate::node::logs`]). stdin is the agent's
//! output pipe, stdout the live log file.

use std::path::PathBuf;

use clap::{Args, Parser};

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

/// `a2a log-relay` alone: the relay's own few arguments, not the whole command line's parser
/// (building every verb's parser cost about as much CPU as the rest of the relay's start, and
/// the node starts one relay per agent replica). `args` is the command line after `log-relay`.
pub fn main(args: impl Iterator<Item = std::ffi::OsString>) -> std::process::ExitCode {
    #[derive(Parser, Debug)]
    #[command(name = "a2a log-relay")]
    struct Only {
        #[command(flatten)]
        args: LogRelayArgs,
    }
    let only = Only::parse_from(std::iter::once(std::ffi::OsString::from("a2a log-relay")).chain(args));
    match run(&only.args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
