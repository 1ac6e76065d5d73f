//! `a2a store`: offline maintenance of the local API server's store (the server stopped).
//!
//! `a2a store repair --truncate-at OFFSET` cuts the write-ahead log at the damaged record the
//! server named when it refused to start: the records before it are kept (the next start
//! applies them), a copy of the whole log is written beside it first, and every write dropped
//! is listed.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

use crate::apiserver::{default_home, store, wal};

#[derive(Args, Debug, Clone)]
pub struct StoreArgs {
    #[command(subcommand)]
    pub command: StoreCommand,
}

#[derive(Subcommand, Debug, Clone)]
pub enum StoreCommand {
    /// Cut the write-ahead log at a damaged record so that the server starts with the records
    /// before it. A copy of the log is kept (store.wal.damaged-TIME) and the writes dropped are
    /// listed. Run it only with the server stopped.
    Repair(RepairArgs),
}

#[derive(Args, Debug, Clone)]
pub struct RepairArgs {
    /// The offset the server named (where the damaged record starts).
    #[arg(long, value_name = "OFFSET")]
    pub truncate_at: u64,
    /// The write-ahead log. Default: HOME/state/store.wal.
    #[arg(long, value_name = "PATH")]
    pub wal: Option<PathBuf>,
    /// The server's home directory. Default: $A2A_HOME, else ~/.a2a.
    #[arg(long, value_name = "DIR", conflicts_with = "wal")]
    pub home: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot tell where the store is: set A2A_HOME or HOME, or pass --home DIR or --wal PATH")]
    NoHome,
    #[error("{0} does not exist")]
    Missing(PathBuf),
    #[error("reading the database beside the log (is the server still running? stop it first): {0}")]
    Database(#[source] store::Error),
    #[error(transparent)]
    Log(#[from] wal::Error),
}

/// What a repair did, one line each: where the copy is, what was kept, what was dropped.
pub struct Repaired {
    pub lines: Vec<String>,
}

impl std::fmt::Display for Repaired {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.lines.iter().try_for_each(|l| writeln!(f, "{l}"))
    }
}

/// Cuts the log; says what was kept, what was dropped and where the copy is.
pub fn run(args: &StoreArgs) -> Result<Repaired, Error> {
    let StoreCommand::Repair(args) = &args.command;
    let wal_path = match (&args.wal, &args.home) {
        (Some(wal), _) => wal.clone(),
        (None, home) => home.clone().or_else(default_home).ok_or(Error::NoHome)?.join("state").join("store.wal"),
    };
    if !wal_path.exists() {
        return Err(Error::Missing(wal_path));
    }
    // The log of a store written by a newer a2a is not this a2a's to cut.
    store::format::inspect(&wal_path.with_extension("redb")).map_err(|e| Error::Database(e.into()))?;
    // The database tells which records it holds already (those are not writes lost); opening
    // it also fails while a server has it open.
    let durable = store::durable_version(&wal_path.with_extension("redb")).map_err(Error::Database)?;
    let copy = copy_path(&wal_path);
    let done = wal::truncate_at(&wal_path, args.truncate_at, durable, &copy)?;
    let mut lines = vec![
        format!("a copy of the log as it was: {}", done.copy.display()),
        format!(
            "kept: the {} record(s) before offset {} (the database holds resourceVersions up to {durable})",
            done.kept, args.truncate_at
        ),
    ];
    if let Some(why) = done.unreadable {
        lines.push(format!("dropped: the damaged record ({why}); what it held cannot be read"));
    }
    if done.dropped.is_empty() {
        lines.push("dropped: no write the database does not hold".to_string());
    }
    for (offset, record) in &done.dropped {
        for (i, op) in record.ops.iter().enumerate() {
            lines.push(format!("dropped: resourceVersion {} at offset {offset}: {op}", record.first_rv + i as u64));
        }
    }
    lines.push(format!("the log now ends at offset {}; start the server again", args.truncate_at));
    Ok(Repaired { lines })
}

/// `store.wal.damaged-20260101T120000Z` beside the log (`-N` added if that exists).
fn copy_path(wal: &Path) -> PathBuf {
    let stamp = jiff::Timestamp::now().strftime("%Y%m%dT%H%M%SZ").to_string();
    let mut name = wal.as_os_str().to_owned();
    name.push(format!(".damaged-{stamp}"));
    let first = PathBuf::from(&name);
    (1..)
        .map(|n| if n == 1 { first.clone() } else { PathBuf::from(format!("{}-{n}", first.display())) })
        .find(|p| !p.exists())
        .unwrap_or(first)
}
