//! The `a2a` binary: parse the command line, start logging, run the verb, print, exit.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    a2a::local::declare_a2a_binary();
    // The node starts one log relay per agent replica: it parses only its own arguments.
    let mut args = std::env::args_os().skip(1);
    if args.next().is_some_and(|verb| verb == "log-relay") {
        return a2a::cli::log_relay::main(args);
    }
    let cli = a2a::cli::Cli::parse();
    a2a::telemetry::init(cli.verbose, cli.log_format);
    a2a::cli::run(cli)
}
