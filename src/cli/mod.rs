//! The command line: one file per verb. Handlers return data; [`run`] prints it and picks
//! the exit code.

pub mod crd;
pub mod input;
pub mod serve;
pub mod validate;
pub mod version;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::telemetry::LogFormat;

/// Orchestrate AI agents the way Kubernetes orchestrates containers.
#[derive(Parser, Debug)]
#[command(name = "a2a", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// More log output on stderr (-v info, -vv debug, -vvv trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// How log lines are written to stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Check manifests for every mistake, without contacting anything.
    Validate(FileArgs),
    /// Print the CustomResourceDefinitions of the a2a kinds as YAML.
    Crd,
    /// Print the version of a2a and of the protocols it speaks.
    Version(version::VersionArgs),
    /// Run the local control plane: the Kubernetes-shaped API server on 127.0.0.1 (HTTPS),
    /// writing $A2A_HOME/kubeconfig.
    Serve(serve::ServeArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// `-f PATH... [-R]`, as in kubectl.
#[derive(Args, Debug, Clone)]
pub struct FileArgs {
    /// A manifest file, a directory of them, or - for stdin. Repeatable.
    #[arg(short = 'f', long = "filename", required = true, value_name = "PATH")]
    pub files: Vec<PathBuf>,
    /// Read directories recursively.
    #[arg(short = 'R', long)]
    pub recursive: bool,
}

/// Runs the parsed command line and returns the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let result = match cli.command {
        Command::Validate(args) => {
            let report = validate::run(&args);
            for e in &report.errors {
                eprintln!("{e}");
            }
            if report.errors.is_empty() {
                let _ = writeln!(out, "{}", report.summary());
                return ExitCode::SUCCESS;
            }
            eprintln!("{}", report.summary());
            return ExitCode::FAILURE;
        }
        Command::Crd => write!(out, "{}", crd::run()),
        Command::Serve(args) => {
            return match serve::run(&args, &mut out) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Version(args) => write!(out, "{}", version::run(&args)),
        Command::Completion { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "a2a", &mut out);
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // A closed pipe (`a2a crd | head`) is not an error worth a message.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: writing output: {e}");
            ExitCode::FAILURE
        }
    }
}
