//! `a2a serve`: run the local control plane's API server until SIGTERM or SIGINT.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;

use crate::apiserver::{DEFAULT_PORT, Server, ServerConfig, default_home};

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// The port on 127.0.0.1 to serve HTTPS on (0 picks a free one).
    #[arg(long, default_value_t = DEFAULT_PORT)]
    pub port: u16,
    /// Where the state, certificates, token, kubeconfig and audit log live.
    /// Default: $A2A_HOME, else ~/.a2a.
    #[arg(long, value_name = "DIR")]
    pub home: Option<PathBuf>,
}

/// Serves until a signal; prints one line saying where it listens. Errors are one line each.
pub fn run(args: &ServeArgs, out: &mut dyn Write) -> Result<(), String> {
    let home = args
        .home
        .clone()
        .or_else(default_home)
        .ok_or("cannot tell where to keep state: set A2A_HOME or HOME, or pass --home DIR")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the async runtime: {e}"))?;
    runtime.block_on(async {
        // Handlers first: a signal that arrives once the line below is printed must stop us
        // gracefully, not kill us.
        let signals = Signals::install()?;
        let server = Server::start(ServerConfig::new(&home).port(args.port)).await.map_err(|e| e.to_string())?;
        writeln!(out, "a2a serve: listening on {} (kubeconfig: {})", server.url(), server.kubeconfig().display())
            .and_then(|()| out.flush())
            .map_err(|e| format!("writing output: {e}"))?;
        signals.wait().await;
        tracing::info!("shutting down");
        server.shutdown().await;
        Ok(())
    })
}

struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Result<Signals, String> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM handler: {e}"))?,
            int: signal(SignalKind::interrupt()).map_err(|e| format!("SIGINT handler: {e}"))?,
        })
    }

    async fn wait(mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}
