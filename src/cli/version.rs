//! `a2a version`.

use clap::Args;

#[derive(Args, Debug)]
pub struct VersionArgs {
    /// Print only the version number.
    #[arg(long)]
    pub short: bool,
}

/// The version text.
pub fn run(args: &VersionArgs) -> String {
    let version = env!("CARGO_PKG_VERSION");
    if args.short {
        return format!("{version}\n");
    }
    format!("a2a {version}\napi: {}\nA2A protocol: 1.0 (JSON-RPC binding)\n", crate::api::API_VERSION)
}
