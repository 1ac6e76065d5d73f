//! The audit log: one JSON line per mutating request (failed ones too) and per refused request
//! (403) of any verb, naming the user and its groups, in `audit.log` under
//! the home directory, rotated by size.
//!
//! A request's line is written with one `write(2)` to the file (opened `O_APPEND`) before its
//! answer is sent, so a process that is killed afterwards leaves it in the kernel's page cache:
//! every answered mutation has its line after a crash of the server. The file is `fdatasync`ed
//! once a second, on rotation and on shutdown, not with every request: after a power loss or a
//! kernel crash the last second of lines may be missing (best-effort, as the kube-apiserver's
//! log backend).
//!
//! A line is written whole or not at all: a write that fails halfway (a full disk) is cut off
//! again, and the loss is counted (`a2a_audit_lines_lost_total`) and logged.

use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::metrics::Metrics;

/// How often written lines are synced to disk.
const SYNC_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("audit log {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// When the log is rotated and how many rotated files are kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rotation {
    /// The file is rotated before a line would take it past this size (0: never).
    pub max_bytes: u64,
    /// Rotated files kept (`audit.log.1` the newest); older ones are removed.
    pub max_backups: usize,
}

impl Default for Rotation {
    fn default() -> Self {
        Rotation { max_bytes: 100 * 1024 * 1024, max_backups: 5 }
    }
}

/// What a line says.
pub struct Entry<'a> {
    pub user: &'a str,
    pub groups: &'a [String],
    pub verb: &'a str,
    pub resource: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
    pub code: u16,
}

struct Current {
    file: File,
    len: u64,
    /// Lines written since the last sync.
    dirty: bool,
    /// A failed write left bytes that could not be cut off: the next line starts on a new one.
    broken: bool,
}

struct Shared {
    path: PathBuf,
    rotation: Rotation,
    current: Mutex<Current>,
    metrics: Arc<Metrics>,
}

pub struct Audit {
    shared: Arc<Shared>,
    /// Dropped on close: the sync thread then syncs once more and ends.
    stop: Mutex<Option<mpsc::Sender<()>>>,
    syncer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

fn open_file(path: &Path) -> io::Result<File> {
    OpenOptions::new().append(true).create(true).mode(0o600).custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC).open(path)
}

impl Audit {
    /// Opens (or creates, 0600) the log at `path` and starts the thread that syncs it.
    pub fn open(path: PathBuf, rotation: Rotation, metrics: Arc<Metrics>) -> Result<Audit> {
        let io = |source| Error::Io { path: path.clone(), source };
        let file = open_file(&path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        let shared = Arc::new(Shared {
            path: path.clone(),
            rotation,
            current: Mutex::new(Current { file, len, dirty: false, broken: false }),
            metrics,
        });
        let (stop, stopped) = mpsc::channel::<()>();
        let syncer = std::thread::Builder::new()
            .name("a2a-audit-sync".into())
            .spawn({
                let shared = shared.clone();
                move || {
                    loop {
                        let last = matches!(stopped.recv_timeout(SYNC_EVERY), Err(RecvTimeoutError::Disconnected));
                        shared.sync();
                        if last {
                            break;
                        }
                    }
                }
            })
            .map_err(io)?;
        Ok(Audit { shared, stop: Mutex::new(Some(stop)), syncer: Mutex::new(Some(syncer)) })
    }

    /// Writes the line of one request (before its answer is sent).
    pub fn record(&self, entry: &Entry<'_>) {
        // Written straight from the fields (no JSON tree per request), in this order.
        #[derive(serde::Serialize)]
        struct Line<'a> {
            time: jiff::Timestamp,
            user: &'a str,
            groups: &'a [String],
            verb: &'a str,
            resource: &'a str,
            namespace: &'a str,
            name: &'a str,
            code: u16,
        }
        let mut line = Vec::with_capacity(192);
        line.push(b'\n');
        let _ = serde_json::to_writer(
            &mut line,
            &Line {
                time: jiff::Timestamp::now(),
                user: entry.user,
                groups: entry.groups,
                verb: entry.verb,
                resource: entry.resource,
                namespace: entry.namespace,
                name: entry.name,
                code: entry.code,
            },
        );
        line.push(b'\n');
        self.shared.write(line);
    }

    /// Syncs every line written so far and stops the sync thread.
    pub fn close(&self) {
        drop(self.stop.lock().unwrap_or_else(|p| p.into_inner()).take());
        if let Some(syncer) = self.syncer.lock().unwrap_or_else(|p| p.into_inner()).take()
            && syncer.join().is_err()
        {
            tracing::error!(path = %self.shared.path.display(), "the audit log's sync thread panicked");
        }
    }
}

impl Shared {
    fn current(&self) -> MutexGuard<'_, Current> {
        // Nothing in `Current` is left half-changed by a panic.
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `line` starts with a newline that is only written after a broken line.
    fn write(&self, line: Vec<u8>) {
        let mut current = self.current();
        let bytes = if current.broken { &line[..] } else { &line[1..] };
        let rotation = self.rotation;
        if rotation.max_bytes > 0
            && current.len > 0
            && current.len + bytes.len() as u64 > rotation.max_bytes
            && let Err(e) = self.rotate(&mut current)
        {
            tracing::error!(path = %self.path.display(), error = %e, "rotating the audit log failed; writing on to it");
        }
        let before = current.len;
        match current.file.write_all(bytes) {
            Ok(()) => {
                current.len += bytes.len() as u64;
                current.dirty = true;
                current.broken = false;
            }
            Err(e) => {
                // Whatever part of the line reached the file is cut off again, so that the
                // next line does not continue it.
                match current.file.set_len(before) {
                    Ok(()) => current.len = before,
                    Err(_) => current.broken = true,
                }
                let lost = self.metrics.audit_line_lost();
                tracing::error!(path = %self.path.display(), error = %e, lost, "an audit line could not be written");
            }
        }
    }

    /// `audit.log` becomes `audit.log.1`, `.1` becomes `.2` and so on; the oldest beyond
    /// `max_backups` is removed.
    fn rotate(&self, current: &mut Current) -> io::Result<()> {
        current.file.sync_data()?;
        let backup = |n: usize| {
            let mut name = self.path.as_os_str().to_owned();
            name.push(format!(".{n}"));
            PathBuf::from(name)
        };
        let keep = self.rotation.max_backups;
        match std::fs::remove_file(backup(keep.max(1))) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        for n in (1..keep).rev() {
            match std::fs::rename(backup(n), backup(n + 1)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        if keep == 0 {
            std::fs::remove_file(&self.path)?;
        } else {
            std::fs::rename(&self.path, backup(1))?;
        }
        current.file = open_file(&self.path)?;
        current.len = 0;
        current.dirty = false;
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }

    fn sync(&self) {
        let file = {
            let mut current = self.current();
            if !current.dirty {
                return;
            }
            current.dirty = false;
            current.file.try_clone()
        };
        if let Err(e) = file.and_then(|f| f.sync_data()) {
            tracing::error!(path = %self.path.display(), error = %e, "syncing the audit log failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str) -> Entry<'_> {
        Entry { user: "u", groups: &[], verb: "create", resource: "agents", namespace: "default", name, code: 201 }
    }

    fn lines(path: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?} in {}: {e}", path.display())))
            .collect()
    }

    #[test]
    fn rotation_keeps_the_configured_number_of_files_and_every_line_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let metrics = Arc::new(Metrics::default());
        let audit = Audit::open(path.clone(), Rotation { max_bytes: 1000, max_backups: 3 }, metrics.clone()).unwrap();
        for i in 0..200 {
            audit.record(&entry(&format!("agent-{i:03}")));
        }
        audit.close();
        let mut names: Vec<_> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        assert_eq!(names, ["audit.log", "audit.log.1", "audit.log.2", "audit.log.3"]);
        let mut kept = Vec::new();
        for name in names.iter().rev() {
            let file = dir.path().join(name);
            assert!(std::fs::metadata(&file).unwrap().len() <= 1000, "{name} is larger than the limit");
            kept.extend(lines(&file).into_iter().map(|l| l["name"].as_str().unwrap().to_string()));
        }
        // The newest lines, in order, none missing between the oldest kept and the last.
        let first: usize = kept[0]["agent-".len()..].parse().unwrap();
        let want: Vec<String> = (first..200).map(|i| format!("agent-{i:03}")).collect();
        assert_eq!(kept, want);
        assert_eq!(metrics.audit_lines_lost(), 0);
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&path).unwrap().permissions());
        assert_eq!(mode & 0o777, 0o600);
    }
}
