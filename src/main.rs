//! The `a2a` binary: parse the command line, start logging, run the verb, print, exit.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    a2a::local::declare_a2a_binary();
    let cli = a2a::cli::Cli::parse();
    a2a::telemetry::init(cli.verbose, cli.log_format);
    a2a::cli::run(cli)
}
