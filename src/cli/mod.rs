//! The command line: one file per verb. Handlers return data; [`run`] prints it and picks
//! the exit code.

pub mod apply;
pub mod cancel;
pub mod client;
pub mod crd;
pub mod create;
pub mod delete;
pub mod demo_agent;
pub mod describe;
pub mod diff;
pub mod get;
pub mod input;
pub mod join;
pub mod log_relay;
pub mod logs;
pub mod node;
pub mod operator;
pub mod output;
pub mod peers;
pub mod reply;
pub mod retry;
pub mod run;
pub mod run_input;
pub mod serve;
pub mod store;
pub mod token;
pub mod top;
pub mod user;
pub mod validate;
pub mod values;
pub mod version;
pub mod wait;

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
    /// Apply manifests and follow their workflows to the end (embedded control plane when
    /// no daemon runs); exit 0 when every workflow succeeded.
    Run(run::RunArgs),
    /// Validate manifests, then create or update their objects (server-side apply).
    Apply(apply::ApplyArgs),
    /// Create a Secret (`secret generic`) or a ConfigMap from literals, files and env files.
    Create(create::CreateArgs),
    /// List objects, or show one: tables, YAML, JSON or names; -w to watch.
    Get(get::GetArgs),
    /// Show one object in detail: spec, status, conditions and events.
    Describe(describe::DescribeArgs),
    /// Delete objects by kind and name or by manifest.
    Delete(delete::DeleteArgs),
    /// Show what `apply` would change.
    Diff(diff::DiffArgs),
    /// A live view of agents (CPU, memory, throttling, restarts, tasks in flight), budgets
    /// and running workflows; q quits. --once -o table|json prints one view.
    Top(top::TopArgs),
    /// Wait until an object has a condition or phase, or is deleted.
    Wait(wait::WaitArgs),
    /// Cancel a running workflow: CancelTask for its running tasks, waiting ones Cancelled.
    Cancel(cancel::CancelArgs),
    /// Run a workflow's failed, skipped and cancelled tasks again.
    Retry(retry::RetryArgs),
    /// Answer the question a workflow task's agent asked (InputRequired): the task goes on.
    Reply(reply::ReplyArgs),
    /// Print the output of one task of a workflow.
    Output(output::OutputArgs),
    /// Print a local agent replica's log ($A2A_HOME/logs); -f follows it.
    Logs(logs::LogsArgs),
    /// Check manifests for every mistake, without contacting anything.
    Validate(FileArgs),
    /// Print the CustomResourceDefinitions of the a2a kinds as YAML.
    Crd,
    /// Print the version of a2a and of the protocols it speaks.
    Version(version::VersionArgs),
    /// Run the local control plane: the Kubernetes-shaped API server on 127.0.0.1 (HTTPS, or
    /// --listen ADDR), writing $A2A_HOME/kubeconfig.
    Serve(serve::ServeArgs),
    /// Named users of the local control plane and their roles: create (prints the token),
    /// list, delete.
    User(user::UserArgs),
    /// Join tokens for other hosts (`a2a join`): create (prints the token), list, delete.
    Token(token::TokenArgs),
    /// Join the cluster of another host with a token from `a2a token create` there.
    Join(join::JoinArgs),
    /// The hosts that joined this one: list, delete.
    Node(node::NodeArgs),
    /// The hosts found on the LAN by mDNS (`a2a serve --listen ADDR`): node, URL, skills
    /// digest, free room, version, health. -o table|wide|json.
    Peers(peers::PeersArgs),
    /// Maintain the local server's store offline: `repair` cuts a damaged write-ahead log.
    Store(store::StoreArgs),
    /// Run the Kubernetes operator (what the Helm chart deploys): leader election, Agents as
    /// Deployments and Services, budget status, workflows; /healthz, /readyz, /metrics.
    Operator(operator::OperatorArgs),
    /// Run the sample A2A 1.0 agent (echo, uppercase, wordcount, sleep, allocate, fail, ask, data,
    /// file).
    DemoAgent(demo_agent::DemoAgentArgs),
    /// Copy stdin to a capped log file rotated by renames (run by the node, one per replica).
    #[command(hide = true)]
    LogRelay(log_relay::LogRelayArgs),
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

fn fail(e: client::Error) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::FAILURE
}

/// Prints one line per object, or the error.
fn lines(out: &mut dyn Write, result: client::Result<Vec<apply::Applied>>) -> std::io::Result<()> {
    match result {
        Ok(done) => {
            for d in done {
                writeln!(out, "{d}")?;
            }
            Ok(())
        }
        Err(e) => {
            if let client::Error::Partial { done, .. } = &e {
                for d in done {
                    writeln!(out, "{d}")?;
                }
                out.flush()?;
            }
            eprintln!("error: {e}");
            Err(std::io::Error::other(ReportedError))
        }
    }
}

/// Prints what `a2a get` returned: the objects, the note on stderr when there are none, then
/// (`-w`) each change as it arrives.
async fn print_listing(
    listing: impl std::future::Future<Output = client::Result<get::Listing>>,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let reported = |e: client::Error| {
        eprintln!("error: {e}");
        std::io::Error::other(ReportedError)
    };
    let listing = listing.await.map_err(reported)?;
    if let Some(note) = &listing.note {
        eprintln!("{note}");
    }
    write!(out, "{}", listing.text)?;
    out.flush()?;
    let Some(mut changes) = listing.changes else { return Ok(()) };
    while let Some(text) = futures::TryStreamExt::try_next(&mut changes).await.map_err(reported)? {
        write!(out, "{text}")?;
        out.flush()?;
    }
    Ok(())
}

/// Copies what `from` yields to `out` as it comes, flushed after every read (`logs -f` waits
/// inside its reads).
fn copy_as_read(mut from: impl std::io::Read, out: &mut dyn Write, what: &str) -> std::io::Result<()> {
    let mut buf = vec![0; 64 << 10];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                eprintln!("error: {what}: {e}");
                return Err(std::io::Error::other(ReportedError));
            }
        };
        out.write_all(&buf[..n])?;
        out.flush()?;
    }
}

/// Marks an error already printed, so only the exit code remains to set.
#[derive(Debug)]
struct ReportedError;

impl std::fmt::Display for ReportedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("reported")
    }
}

impl std::error::Error for ReportedError {}

/// Runs the parsed command line and returns the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let result = match cli.command {
        Command::Validate(args) => {
            let report = validate::run(&args);
            for s in &report.skipped {
                eprintln!("{s}");
            }
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
        Command::Run(args) => match client::block_on_multi_thread(run::run(&args)) {
            Ok(report) => {
                let _ = write!(out, "{}", report.text);
                // As a shell reports a process killed by the signal: 130 after SIGINT, 143 after SIGTERM.
                if let Some(signal) = report.interrupted {
                    return ExitCode::from(u8::try_from(128 + signal).unwrap_or(1));
                }
                return if report.succeeded { ExitCode::SUCCESS } else { ExitCode::FAILURE };
            }
            Err(e) => return fail(e),
        },
        Command::Apply(args) => lines(&mut out, client::block_on(apply::run(&args))),
        Command::Delete(args) => lines(&mut out, client::block_on(delete::run(&args))),
        Command::Create(args) => match client::block_on(create::run(&args)) {
            Ok(text) => writeln!(out, "{text}"),
            Err(e) => return fail(e),
        },
        Command::Get(args) => client::block_on(print_listing(get::run(&args), &mut out)),
        Command::Describe(args) => match client::block_on(describe::run(&args)) {
            Ok(text) => write!(out, "{text}"),
            Err(e) => return fail(e),
        },
        Command::Top(args) if args.once => match client::block_on(top::once(&args)) {
            Ok(text) => write!(out, "{text}"),
            Err(e) => return fail(e),
        },
        Command::Top(args) => match client::block_on(top::live(&args)) {
            Ok(()) => Ok(()),
            Err(e) => return fail(e),
        },
        Command::Wait(args) => match client::block_on(wait::run(&args)) {
            Ok(text) => writeln!(out, "{text}"),
            Err(e) => return fail(e),
        },
        Command::Diff(args) => match client::block_on(diff::run(&args)) {
            // As `kubectl diff` and `diff`: 0 no changes, 1 changes, 2 trouble.
            Ok(text) if text.is_empty() => Ok(()),
            Ok(text) => {
                let _ = write!(out, "{text}");
                return ExitCode::from(1);
            }
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        },
        Command::Peers(args) => match client::block_on(peers::run(&args)) {
            Ok(text) => writeln!(out, "{text}"),
            Err(e) => return fail(e),
        },
        Command::User(args) => match client::block_on(user::run(&args)) {
            Ok(text) => writeln!(out, "{text}"),
            Err(e) => return fail(e),
        },
        Command::Token(args) => match client::block_on(token::run(&args)) {
            Ok(text) => writeln!(out, "{text}"),
            Err(e) => return fail(e),
        },
        Command::Join(args) => match client::block_on(join::run(&args)) {
            Ok(text) => writeln!(out, "{text}"),
            Err(e) => return fail(e),
        },
        Command::Node(args) => match client::block_on(node::run(&args)) {
            Ok(text) => writeln!(out, "{text}"),
            Err(e) => return fail(e),
        },
        Command::Cancel(args) => match client::block_on(cancel::run(&args)) {
            Ok(text) => writeln!(out, "{text}"),
            Err(e) => return fail(e),
        },
        Command::Retry(args) => match client::block_on(retry::run(&args)) {
            Ok(text) => writeln!(out, "{text}"),
            Err(e) => return fail(e),
        },
        Command::Reply(args) => match client::block_on(reply::run(&args)) {
            Ok(text) => writeln!(out, "{text}"),
            Err(e) => return fail(e),
        },
        Command::Output(args) => match client::block_on(output::run(&args)) {
            Ok((shown, note)) => {
                if let Some(note) = note {
                    eprintln!("{note}");
                }
                match shown {
                    output::Shown::Bytes(bytes) => out.write_all(&bytes),
                    // Byte for byte when piped or redirected; a terminal gets a final newline.
                    output::Shown::Text(text) => {
                        let newline = std::io::IsTerminal::is_terminal(&std::io::stdout())
                            && !text.is_empty()
                            && !text.ends_with('\n');
                        if newline { writeln!(out, "{text}") } else { write!(out, "{text}") }
                    }
                }
            }
            Err(e) => return fail(e),
        },
        Command::Logs(args) => match logs::run(&args) {
            Ok(log) => copy_as_read(log, &mut out, "reading the log"),
            Err(e) => return fail(e),
        },
        Command::Crd => write!(out, "{}", crd::run()),
        Command::Store(args) => match store::run(&args) {
            Ok(repaired) => write!(out, "{repaired}"),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        },
        Command::Serve(args) => match serve::start(&args) {
            // Said once the server is ready: scripts wait for this line.
            Ok(serving) => match writeln!(out, "{}", serving.listening()).and_then(|()| out.flush()) {
                Ok(()) => {
                    serving.wait();
                    Ok(())
                }
                // Even a closed pipe: whoever waits for the line would wait forever.
                Err(e) => {
                    serving.stop();
                    eprintln!("error: writing output: {e}");
                    return ExitCode::FAILURE;
                }
            },
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        },
        Command::Operator(args) => {
            return match operator::run(&args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::DemoAgent(args) => {
            return match demo_agent::run(&args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::LogRelay(args) => {
            return match log_relay::run(&args) {
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
        Err(e) if e.get_ref().is_some_and(|r| r.is::<ReportedError>()) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: writing output: {e}");
            ExitCode::FAILURE
        }
    }
}
