//! `a2a demo-agent`: run the sample A2A 1.0 agent (echo, uppercase, word count, sleep,
//! allocate, fail, ask, data, file) on 127.0.0.1:$A2A_PORT (or `--host`), for the quickstart,
//! for load and fault tests, and for the official A2A TCK (`scripts/tck.sh`).

use clap::Args;

use crate::a2a::server::{self, Binding, DemoAgentConfig, Skill};

#[derive(Args, Debug)]
pub struct DemoAgentArgs {
    /// Port to listen on (0 picks a free one; the address is logged to stderr).
    #[arg(long, env = "A2A_PORT", default_value_t = 0)]
    pub port: u16,
    /// Address to listen on (`0.0.0.0` for every interface).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: std::net::IpAddr,
    /// The URL the agent card advertises for both interfaces (JSON-RPC and HTTP+JSON), e.g.
    /// behind a proxy or a Service (default: `http://` and the Host header the card was asked
    /// by).
    #[arg(long, env = "A2A_ADVERTISE_URL", value_parser = advertise_url)]
    pub advertise_url: Option<String>,
    /// Read the official A2A TCK's message-id prefixes: a `tck-input-required-…` message
    /// starts the `ask` skill, so the TCK's multi-turn requirements can be tested.
    #[arg(long)]
    pub tck_scenarios: bool,
    /// A binding to serve (repeatable), in the order the card lists them, which is the order
    /// a client prefers them (default: jsonrpc, then http-json).
    #[arg(long = "binding", value_enum)]
    pub bindings: Vec<Binding>,
    /// A skill to offer (repeatable; default: all). The first is used when a message names none.
    #[arg(long = "skill", value_enum)]
    pub skills: Vec<Skill>,
    /// Fraction of tasks that fail on purpose (0 to 1).
    #[arg(long, default_value_t = 0.0, value_parser = super::values::fraction)]
    pub fail_rate: f64,
    /// Fraction of tasks during which the process exits with code 3 (0 to 1).
    #[arg(long, default_value_t = 0.0, value_parser = super::values::fraction)]
    pub crash_rate: f64,
    /// Seed for the fault-injection dice, for reproducible runs.
    #[arg(long)]
    pub seed: Option<u64>,
    /// How many tasks to remember for GetTask; the oldest finished ones are forgotten first,
    /// and a message is refused while all of them are unfinished.
    #[arg(long, default_value_t = 10_000)]
    pub max_tasks: usize,
    /// The card does not declare streaming, so clients use `SendMessage` (the streaming
    /// methods still answer): for trying how a2a calls agents that do not stream.
    #[arg(long)]
    pub no_streaming: bool,
}

/// Why the demo agent could not serve.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0:?} is not an absolute http:// or https:// URL with a host and no query, fragment or spaces")]
    AdvertiseUrl(String),
    #[error("starting the runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("serving on {addr}: {source}")]
    Serve {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// An advertised URL: absolute `http` or `https`, with a host and no query or fragment.
fn advertise_url(s: &str) -> Result<String, Error> {
    let rest = s.strip_prefix("http://").or_else(|| s.strip_prefix("https://")).unwrap_or("");
    let host = rest.split('/').next().unwrap_or("");
    if host.is_empty() || s.contains(['?', '#']) || s.chars().any(char::is_whitespace) {
        return Err(Error::AdvertiseUrl(s.to_owned()));
    }
    Ok(s.to_owned())
}

/// Serves until SIGINT or SIGTERM.
pub fn run(args: &DemoAgentArgs) -> Result<(), Error> {
    let config = DemoAgentConfig {
        skills: if args.skills.is_empty() { Skill::ALL.to_vec() } else { args.skills.clone() },
        fail_rate: args.fail_rate,
        crash_rate: args.crash_rate,
        seed: args.seed,
        max_tasks: args.max_tasks,
        advertise_url: args.advertise_url.clone(),
        tck_scenarios: args.tck_scenarios,
        bindings: if args.bindings.is_empty() {
            DemoAgentConfig::default().bindings
        } else {
            let mut seen = Vec::new();
            for b in &args.bindings {
                if !seen.contains(b) {
                    seen.push(*b);
                }
            }
            seen
        },
        // Set by a2a for the agents it runs; every A2A call must then carry it.
        token: std::env::var(crate::controller::credentials::TOKEN_ENV).ok().filter(|t| !t.is_empty()),
        streaming: !args.no_streaming,
    };
    // One thread keeps the agent small; its work is waiting on sockets and timers.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(Error::Runtime)?;
    rt.block_on(async {
        let addr = std::net::SocketAddr::new(args.host, args.port);
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| Error::Listen { addr, source })?;
        server::serve(listener, config, shutdown_signal()).await.map_err(|source| Error::Serve { addr, source })
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
