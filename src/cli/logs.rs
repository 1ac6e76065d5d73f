//! `a2a logs AGENT [-f] [--replica N] [-n NS]`: prints a local agent replica's stdout and
//! stderr, which the node appends to `$A2A_HOME/logs/<namespace>/<agent>/<replica>.log`.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::client::{Error, Result, a2a_home};

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
    let mut file = match std::fs::File::open(&path) {
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
    let mut buf = Vec::new();
    file.read_to_end(&mut buf).map_err(io)?;
    out.write_all(&buf).and_then(|()| out.flush()).map_err(io)?;
    if !args.follow {
        return Ok(());
    }
    let mut pos = buf.len() as u64;
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(pos);
        if len < pos {
            // Truncated or replaced: start again from its beginning.
            pos = 0;
        }
        if len == pos {
            continue;
        }
        file = std::fs::File::open(&path).map_err(io)?;
        file.seek(SeekFrom::Start(pos)).map_err(io)?;
        buf.clear();
        file.read_to_end(&mut buf).map_err(io)?;
        pos += buf.len() as u64;
        out.write_all(&buf).and_then(|()| out.flush()).map_err(io)?;
    }
}
