//! `a2a-log-relay`: what the node runs for each agent replica to write its log files, capped
//! and rotated by renames (see `a2a::node::logs`). stdin is the agent's output pipe, stdout
//! the live log file, open for appending:
//!
//! ```text
//! a2a-log-relay [--max-bytes B] [--max-files N] [--join CGROUP_PROCS]... PATH
//! ```
//!
//! A program of its own, apart from the a2a binary, because the node starts one per replica:
//! it is std, `libc` and `rustix` only (the relay's code, `src/node/logs/relay.rs`, compiled
//! here on its own), so its start is a fraction of an execution of the whole a2a binary.
//! `a2a log-relay` runs the same code.
#![deny(unsafe_code)]

use std::process::ExitCode;

#[allow(dead_code)]
#[path = "../node/logs/relay.rs"]
mod relay;

const USAGE: &str = "usage: a2a-log-relay [--max-bytes B] [--max-files N] [--join CGROUP_PROCS]... PATH \
                     (stdin: the output to keep; stdout: PATH, open for appending)";

fn main() -> ExitCode {
    let args = match relay::parse_args(std::env::args_os().skip(1)) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("a2a-log-relay: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match relay::relay(&args.path, args.limits, &args.join) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("a2a-log-relay: relaying to {}: {e}", args.path.display());
            ExitCode::FAILURE
        }
    }
}
