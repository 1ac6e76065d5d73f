//! `a2a logs AGENT [-f] [--replica N] [-n NS]`: prints a local agent replica's stdout and
//! stderr, which its log relay appends to `$A2A_HOME/logs/<namespace>/<agent>/<replica>.log`
//! and rotates to `<replica>.log.1`, `.2`, …: the rotated files (oldest first), then the live
//! one; `-f` goes on across rotations.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::client::{Error, Result, a2a_home};
use crate::node::logs::{MAX_MAX_FILES, rotated};

#[derive(Args, Debug)]
pub struct LogsArgs {
    /// The agent's name.
    pub agent: String,
    /// Keep printing what the agent writes.
    #[arg(short, long)]
    pub follow: bool,
    /// Which replica.
    #[arg(long, default_value_t = 0)]
    pub replica: u32,
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
}

/// The log file of a replica under `home`.
pub fn log_path(home: &std::path::Path, namespace: &str, agent: &str, replica: u32) -> PathBuf {
    home.join("logs").join(namespace).join(agent).join(format!("{replica}.log"))
}

pub fn run(args: &LogsArgs, out: &mut dyn Write) -> Result<()> {
    let home = a2a_home();
    if [&args.agent, &args.namespace].iter().any(|s| s.is_empty() || s.contains('/') || s.starts_with('.')) {
        return Err(Error::Usage(format!("{:?} in namespace {:?} is not an agent name", args.agent, args.namespace)));
    }
    let path = log_path(&home, &args.namespace, &args.agent, args.replica);
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let dir = path.parent().map(|p| p.to_path_buf()).unwrap_or_default();
            let mut replicas: Vec<String> = std::fs::read_dir(&dir)
                .map(|rd| {
                    rd.filter_map(|e| e.ok())
                        .filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_suffix(".log")).map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            replicas.sort();
            let hint = if replicas.is_empty() {
                "; only agents run by `a2a serve` or `a2a run` on this host have logs here".to_owned()
            } else {
                format!("; replicas with logs: {}", replicas.join(", "))
            };
            return Err(Error::Usage(format!(
                "no log for agent {:?} replica {} in namespace {:?} ({} does not exist){hint}",
                args.agent,
                args.replica,
                args.namespace,
                path.display()
            )));
        }
        Err(e) => return Err(Error::Api(format!("reading {}: {e}", path.display()))),
    };
    let io = |e: std::io::Error| Error::Api(format!("reading {}: {e}", path.display()));
    let mut follower = Follower { path: path.clone(), file, ino: 0 };
    follower.ino = follower.file.metadata().map_err(io)?.ino();
    // The rotated files first, oldest first, each opened once: a rotation while they are
    // opened may show the live file again under `.1`, which its inode gives away.
    let mut seen = vec![follower.ino];
    let mut older = Vec::new();
    for n in 1..=MAX_MAX_FILES {
        let Ok(f) = std::fs::File::open(rotated(&path, n)) else { break };
        let ino = f.metadata().map_err(io)?.ino();
        if !seen.contains(&ino) {
            seen.push(ino);
            older.push(f);
        }
    }
    for mut f in older.into_iter().rev() {
        copy_all(&mut f, out).map_err(io)?;
    }
    copy_all(&mut follower.file, out).map_err(io)?;
    if !args.follow {
        return Ok(());
    }
    loop {
        std::thread::sleep(Duration::from_millis(200));
        follower.step(out).map_err(io)?;
    }
}

/// Everything from `f`'s position to its end, to `out`.
fn copy_all(f: &mut std::fs::File, out: &mut dyn Write) -> std::io::Result<()> {
    std::io::copy(f, out)?;
    out.flush()
}

/// `-f`: reads the open file to its end; when the path names another file (the relay renamed
/// the live one to `.1` and started a new one), finishes the old one, prints any file rotated
/// past it meanwhile, then goes on with the new one from its start.
struct Follower {
    path: PathBuf,
    file: std::fs::File,
    ino: u64,
}

impl Follower {
    fn step(&mut self, out: &mut dyn Write) -> std::io::Result<()> {
        copy_all(&mut self.file, out)?;
        let Ok(now) = std::fs::metadata(&self.path) else { return Ok(()) };
        if now.ino() == self.ino {
            return Ok(());
        }
        // Rotated: what the relay wrote before the rename is in the open file.
        copy_all(&mut self.file, out)?;
        // Files rotated after it (a fast writer can fill several between two looks): the old
        // file is now `.k`; `.k-1` … `.1` were never seen.
        let at = (1..=MAX_MAX_FILES)
            .find(|n| std::fs::metadata(rotated(&self.path, *n)).map(|m| m.ino() == self.ino).unwrap_or(false));
        if let Some(k) = at {
            for n in (1..k).rev() {
                if let Ok(mut f) = std::fs::File::open(rotated(&self.path, n)) {
                    copy_all(&mut f, out)?;
                }
            }
        } else {
            eprintln!("a2a logs: the log rotated faster than it was read; some lines were skipped");
        }
        let Ok(file) = std::fs::File::open(&self.path) else { return Ok(()) };
        self.ino = file.metadata()?.ino();
        self.file = file;
        copy_all(&mut self.file, out)
    }
}
