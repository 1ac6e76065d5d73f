//! Logging: `tracing` to stderr (stdout is for command output), as text or JSON lines.

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Installs the global subscriber. `verbosity` counts `-v` flags; `RUST_LOG` overrides it.
pub fn init(verbosity: u8, format: LogFormat) {
    let default = match verbosity {
        0 => "warn,kube_client=off",
        1 => "info,a2a=info",
        2 => "info,a2a=debug",
        _ => "debug,a2a=trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    // A second init (tests) keeps the first subscriber.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
