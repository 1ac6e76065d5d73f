//! `a2a logs AGENT [-f] [--replica N] [-n NS]`: a local agent replica's stdout and stderr,
//! which its log relay appends to the live file of [`AgentLogs`] and rotates: the rotated
//! files (oldest first), then the live one; `-f` goes on across rotations.

use std::collections::VecDeque;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::client::{Error, Result, a2a_home};
use crate::node::logs::{AgentLogs, MAX_MAX_FILES, rotated};

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

/// A replica's log as one stream: the rotated files (oldest first), the live one, and with
/// `-f` what is written after, across rotations. Reading blocks while `-f` waits for more.
pub struct LogStream {
    /// Files still to read to their end, in order.
    queue: VecDeque<File>,
    /// With `-f`: the live file, read on after its end.
    follow: Option<Follower>,
}

pub fn run(args: &LogsArgs) -> Result<LogStream> {
    let home = a2a_home();
    if [&args.agent, &args.namespace].iter().any(|s| s.is_empty() || s.contains('/') || s.starts_with('.')) {
        return Err(Error::Usage(format!("{:?} in namespace {:?} is not an agent name", args.agent, args.namespace)));
    }
    let logs = AgentLogs::new(&home, &args.namespace, &args.agent);
    let path = logs.live(args.replica);
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let replicas: Vec<String> = logs.replicas().iter().map(u32::to_string).collect();
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
    let ino = file.metadata().map_err(io)?.ino();
    // The rotated files first, oldest first, each opened once: a rotation while they are
    // opened may show the live file again under `.1`, which its inode gives away.
    let mut seen = vec![ino];
    let mut older = Vec::new();
    for n in 1..=MAX_MAX_FILES {
        let Ok(f) = File::open(rotated(&path, n)) else { break };
        let ino = f.metadata().map_err(io)?.ino();
        if !seen.contains(&ino) {
            seen.push(ino);
            older.push(f);
        }
    }
    let mut queue: VecDeque<File> = older.into_iter().rev().collect();
    let follow = if args.follow {
        Some(Follower { path, file, ino })
    } else {
        queue.push_back(file);
        None
    };
    Ok(LogStream { queue, follow })
}

impl Read for LogStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if let Some(f) = self.queue.front_mut() {
                match f.read(buf)? {
                    0 => {
                        self.queue.pop_front();
                        continue;
                    }
                    n => return Ok(n),
                }
            }
            let Some(follower) = &mut self.follow else { return Ok(0) };
            let n = follower.file.read(buf)?;
            if n > 0 {
                return Ok(n);
            }
            if !follower.rotated(&mut self.queue)? {
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

/// `-f`: the live file, read on; when the path names another file (the relay renamed the
/// live one to `.1` and started a new one), the rest of the old one, any file rotated past
/// it meanwhile, then the new one from its start.
struct Follower {
    path: PathBuf,
    file: File,
    ino: u64,
}

impl Follower {
    /// Whether the live file was rotated; if so, queues what is left to read before the new
    /// live file, which it then reads.
    fn rotated(&mut self, queue: &mut VecDeque<File>) -> std::io::Result<bool> {
        let Ok(now) = std::fs::metadata(&self.path) else { return Ok(false) };
        if now.ino() == self.ino {
            return Ok(false);
        }
        let Ok(file) = File::open(&self.path) else { return Ok(false) };
        let ino = file.metadata()?.ino();
        // Rotated: what the relay wrote before the rename is in the open file. Files rotated
        // after it (a fast writer can fill several between two looks): the old file is now
        // `.k`; `.k-1` … `.1` were never seen.
        let at = (1..=MAX_MAX_FILES)
            .find(|n| std::fs::metadata(rotated(&self.path, *n)).map(|m| m.ino() == self.ino).unwrap_or(false));
        let old = std::mem::replace(&mut self.file, file);
        self.ino = ino;
        queue.push_back(old);
        match at {
            Some(k) => queue.extend((1..k).rev().filter_map(|n| File::open(rotated(&self.path, n)).ok())),
            None => eprintln!("a2a logs: the log rotated faster than it was read; some lines were skipped"),
        }
        Ok(true)
    }
}
