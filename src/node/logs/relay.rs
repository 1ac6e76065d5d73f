//! The log relay's own code: what one relay process does, and nothing of the daemon's. It
//! needs std, `libc` and `rustix` only, so that the small `a2a-log-relay` binary
//! (`src/bin/a2a-log-relay.rs`) compiles this file on its own, without the rest of a2a; the
//! library uses it as [`crate::node::logs`]'s `relay` module (the hidden `a2a log-relay`).

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The default cap of one log file (kubelet's `containerLogMaxSize` is 10Mi).
pub const DEFAULT_MAX_BYTES: u64 = 16 << 20;
/// The default number of files per replica, the live one included.
pub const DEFAULT_MAX_FILES: u32 = 3;
/// The smallest cap accepted: one read from the pipe fits in a file.
pub const MIN_MAX_BYTES: u64 = 4096;
/// The largest number of files accepted.
pub const MAX_MAX_FILES: u32 = 100;

/// How much of a replica's output is kept on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogLimits {
    /// The cap of each file, in bytes.
    pub max_bytes: u64,
    /// How many files: the live one and `max_files - 1` rotated ones.
    pub max_files: u32,
}

impl Default for LogLimits {
    fn default() -> Self {
        LogLimits { max_bytes: DEFAULT_MAX_BYTES, max_files: DEFAULT_MAX_FILES }
    }
}

/// Checked limits: a cap of at least [`MIN_MAX_BYTES`], 2 to [`MAX_MAX_FILES`] files (a
/// single file could only be truncated, which loses the lines just written); the error says
/// which is out of range.
pub fn checked_limits(max_bytes: u64, max_files: u32) -> Result<LogLimits, String> {
    if max_bytes < MIN_MAX_BYTES {
        return Err(format!("a log file cap of {max_bytes} bytes is below the minimum of {MIN_MAX_BYTES}"));
    }
    if !(2..=MAX_MAX_FILES).contains(&max_files) {
        return Err(format!("{max_files} log files per replica: it must be 2 to {MAX_MAX_FILES}"));
    }
    Ok(LogLimits { max_bytes, max_files })
}

/// The rotated file `n` (1 is the newest) of the live log `path`: `<path>.<n>`.
pub fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut s = OsString::from(path.as_os_str());
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

/// The relay's arguments: `--max-bytes B --max-files N [--join FILE]... PATH`, as the node
/// passes them (see `start_relay` in [`crate::node::logs`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayArgs {
    pub limits: LogLimits,
    /// `cgroup.procs` files to write itself into first (one per hierarchy).
    pub join: Vec<PathBuf>,
    /// The live log file (open on stdout).
    pub path: PathBuf,
}

/// Parses the relay's arguments (after the program name): `--max-bytes B`, `--max-files N`
/// (each also as `--flag=value`; defaults [`DEFAULT_MAX_BYTES`], [`DEFAULT_MAX_FILES`]),
/// `--join FILE` (repeatable) and the live file's path; `--` ends the flags. The error names
/// the argument at fault.
pub fn parse_args(args: impl IntoIterator<Item = OsString>) -> Result<RelayArgs, String> {
    let mut args = args.into_iter();
    let (mut max_bytes, mut max_files) = (DEFAULT_MAX_BYTES, DEFAULT_MAX_FILES);
    let mut join = Vec::new();
    let mut path: Option<PathBuf> = None;
    let mut flags = true;
    while let Some(arg) = args.next() {
        let text = arg.to_str();
        let (flag, inline) = match text {
            Some(t) if flags && t.starts_with("--") && t.len() > 2 => match t.split_once('=') {
                Some((f, v)) => (Some(f.to_owned()), Some(OsString::from(v))),
                None => (Some(t.to_owned()), None),
            },
            Some("--") if flags => {
                flags = false;
                continue;
            }
            _ => (None, None),
        };
        let Some(flag) = flag else {
            if path.is_some() {
                return Err(format!("unexpected argument {arg:?}: one log file only"));
            }
            path = Some(PathBuf::from(arg));
            continue;
        };
        let mut value = || inline.clone().or_else(|| args.next()).ok_or_else(|| format!("{flag} needs a value"));
        let number = |v: OsString| -> Result<u64, String> {
            v.to_str().and_then(|s| s.parse().ok()).ok_or_else(|| format!("{flag} {v:?}: not a whole number"))
        };
        match flag.as_str() {
            "--max-bytes" => max_bytes = number(value()?)?,
            "--max-files" => {
                let n = number(value()?)?;
                max_files = u32::try_from(n).map_err(|_| format!("{flag} {n}: too large"))?;
            }
            "--join" => join.push(PathBuf::from(value()?)),
            _ => return Err(format!("unknown flag {flag} (--max-bytes, --max-files, --join)")),
        }
    }
    let path = path.ok_or("the live log file's path is missing")?;
    Ok(RelayArgs { limits: checked_limits(max_bytes, max_files)?, join, path })
}

/// The relay: joins its cgroup (writes itself into each `join` file), then copies stdin to
/// the log file open on stdout (`path`), rotating by renames at `limits`. Runs until stdin's
/// last writer is gone; a failed write drops those bytes (counted, and said in the log once
/// writing works again) and reading goes on, so the agent never blocks on a relay that gave
/// up, nor gets SIGPIPE. A cgroup it cannot join is said in the log too.
pub fn relay(path: &Path, limits: LogLimits, join: &[PathBuf]) -> std::io::Result<()> {
    let mut input = File::from(std::io::stdin().as_fd().try_clone_to_owned()?);
    let current = File::from(std::io::stdout().as_fd().try_clone_to_owned()?);
    let mut out = RotatingLog::new(path, limits, current, true);
    for procs in join {
        if let Err(e) = std::fs::write(procs, "0") {
            let note = format!("a2a log-relay: cannot join the cgroup of {}: {e}\n", procs.display());
            out.write(note.as_bytes());
        }
    }
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        out.write(&buf[..n]);
    }
}

/// The live log file and its rotation.
pub struct RotatingLog {
    path: PathBuf,
    limits: LogLimits,
    /// `None` after a failed rotation: opened again at the next write.
    file: Option<File>,
    size: u64,
    /// Bytes that could not be written since the last successful write.
    dropped: u64,
    /// Keep the live file on standard output too (the relay process).
    on_stdout: bool,
    /// The live file is empty or ends with a line end.
    ends_line: bool,
}

impl RotatingLog {
    /// The live file `path`, open as `file` (appending); `on_stdout`: standard output
    /// follows the live file across rotations.
    pub fn new(path: &Path, limits: LogLimits, file: File, on_stdout: bool) -> RotatingLog {
        let size = file.metadata().map_or(0, |m| m.len());
        RotatingLog { path: path.to_path_buf(), limits, file: Some(file), size, dropped: 0, on_stdout, ends_line: true }
    }

    pub fn write(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.file.is_none() && !self.reopen() {
                self.dropped += data.len() as u64;
                return;
            }
            if self.dropped > 0 {
                let note = format!(
                    "a2a log-relay: {} bytes of output were lost (the log could not be written)\n",
                    self.dropped
                );
                self.dropped = 0;
                self.put(note.as_bytes());
            }
            match placement(data, self.size, self.limits.max_bytes, self.ends_line) {
                Placement::Fits => {
                    self.put(data);
                    return;
                }
                Placement::ThenRotate(cut) => {
                    self.put(&data[..cut]);
                    data = &data[cut..];
                    self.rotate();
                }
            }
        }
    }

    fn put(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let Some(file) = self.file.as_mut() else {
            self.dropped += data.len() as u64;
            return;
        };
        match file.write_all(data) {
            Ok(()) => {
                self.size += data.len() as u64;
                self.ends_line = data.last() == Some(&b'\n');
            }
            Err(_) => {
                self.dropped += data.len() as u64;
                // The size is unknown after a short write: read it again.
                self.size = file.metadata().map_or(self.size, |m| m.len());
            }
        }
    }

    /// Carries out the [`rotation`] of the live file, then opens a new live file (0600).
    fn rotate(&mut self) {
        let plan = rotation(&self.path, self.limits.max_files);
        for (from, to) in &plan.shift {
            let _ = std::fs::rename(from, to);
        }
        let (live, first) = &plan.live;
        if std::fs::rename(live, first).is_err() {
            // The directory is gone (the agent was deleted) or not writable: start the file
            // over rather than grow it past its cap.
            if let Some(f) = &self.file {
                let _ = f.set_len(0);
            }
            self.size = 0;
            self.ends_line = true;
            return;
        }
        self.file = None;
        self.reopen();
    }

    fn reopen(&mut self) -> bool {
        let opened = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(&self.path);
        match opened {
            Ok(f) => {
                self.size = f.metadata().map_or(0, |m| m.len());
                self.ends_line = true;
                // Standard output follows the live file, so `/proc/PID/fd/1` names it.
                if self.on_stdout {
                    let _ = rustix::stdio::dup2_stdout(&f);
                }
                self.file = Some(f);
                true
            }
            Err(_) => false,
        }
    }
}

/// Where the next write to the live file goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Placement {
    /// All of it fits under the cap.
    Fits,
    /// The first `n` bytes (maybe none) go in the live file, which is then rotated.
    ThenRotate(usize),
}

/// Where `data` goes, for a live file of `size` bytes that `ends_line` (empty, or its last
/// byte a line end) under a cap of `max_bytes`: up to the last line end that fits, then a new
/// file. With no line end in the room left, a file that ends with a whole line is rotated
/// first; one that ends inside a line (a line longer than a file, or the pipe's chunks cut
/// lines) gets what fits, and the line goes on in the next file.
fn placement(data: &[u8], size: u64, max_bytes: u64, ends_line: bool) -> Placement {
    let room = usize::try_from(max_bytes.saturating_sub(size)).unwrap_or(usize::MAX);
    if data.len() <= room {
        return Placement::Fits;
    }
    Placement::ThenRotate(match data[..room].iter().rposition(|b| *b == b'\n') {
        Some(i) => i + 1,
        None if size > 0 && ends_line => 0,
        None => room,
    })
}

/// The renames of one rotation of the live log `path` kept as `max_files` files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rotation {
    /// `.N-2` → `.N-1`, …, `.1` → `.2`, in this order (each rename frees the next one's
    /// target); a failed one only loses that older file.
    pub shift: Vec<(PathBuf, PathBuf)>,
    /// The live file → `.1`. When it fails (the directory is gone or not writable), the live
    /// file is emptied instead, so that it never grows past its cap.
    pub live: (PathBuf, PathBuf),
    /// The oldest file, `.N-1`, which the first rename replaces: its lines are gone. Nothing
    /// is deleted otherwise, and nothing is copied.
    pub drops: PathBuf,
}

/// The plan of one rotation, which the relay carries out (renames only).
pub fn rotation(path: &Path, max_files: u32) -> Rotation {
    let last = max_files.max(2) - 1;
    Rotation {
        shift: (1..last).rev().map(|n| (rotated(path, n), rotated(path, n + 1))).collect(),
        live: (path.to_path_buf(), rotated(path, 1)),
        drops: rotated(path, last),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_in(dir: &Path, limits: LogLimits) -> RotatingLog {
        let path = dir.join("0.log");
        let file = OpenOptions::new().create(true).append(true).open(&path).unwrap();
        RotatingLog::new(&path, limits, file, false)
    }

    fn read(p: &Path) -> String {
        std::fs::read_to_string(p).unwrap_or_default()
    }

    #[test]
    fn a_write_past_the_cap_renames_and_keeps_whole_lines() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = log_in(dir.path(), LogLimits { max_bytes: 10, max_files: 3 });
        let live = dir.path().join("0.log");
        let ino = |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
        log.write(b"aaaa\nbbbb\n");
        let first = ino(&live);
        log.write(b"cc\n");
        // The full file was renamed, not copied: `.1` is the same inode.
        assert_eq!(ino(&rotated(&live, 1)), first);
        assert_eq!(read(&rotated(&live, 1)), "aaaa\nbbbb\n");
        assert_eq!(read(&live), "cc\n");
        // Split after the last whole line that fits.
        log.write(b"dddd\neeeeee\n");
        assert_eq!(read(&live), "eeeeee\n");
        assert_eq!(read(&rotated(&live, 1)), "cc\ndddd\n");
        assert_eq!(read(&rotated(&live, 2)), "aaaa\nbbbb\n");
        // More than max_files: the oldest goes; never a `.3`.
        log.write(b"ffffffffffffffffffffffff");
        assert!(!rotated(&live, 3).exists());
        for p in [live.clone(), rotated(&live, 1), rotated(&live, 2)] {
            assert!(std::fs::metadata(&p).unwrap().len() <= 10, "{} over its cap", p.display());
        }
        // A line longer than a file is cut at the cap.
        assert_eq!(read(&rotated(&live, 1)), "ffffffffff");
        assert_eq!(read(&live), "ffff");
        // A line cut by the pipe's chunks at the cap goes on in the next file.
        log.write(b"gg\nhh");
        log.write(b"hh\n");
        assert_eq!(read(&rotated(&live, 1)), "ffffgg\nhhh");
        assert_eq!(read(&live), "h\n");
    }

    #[test]
    fn a_write_fills_the_file_up_to_a_whole_line_then_rotates() {
        type Row = (&'static str, &'static [u8], u64, u64, bool, Placement);
        #[rustfmt::skip]
        let table: Vec<Row> = vec![
            ("it fits", b"abc\n", 0, 10, true, Placement::Fits),
            ("it fits exactly", b"abc\n", 6, 10, true, Placement::Fits),
            ("cut after the last line end that fits", b"dddd\neeeeee\n", 3, 10, true, Placement::ThenRotate(5)),
            ("no line end fits: a whole-line file rotates first", b"abcdefgh\n", 5, 10, true, Placement::ThenRotate(0)),
            ("no line end fits in an empty file: cut at the cap", b"ffffffffffffff", 0, 10, true, Placement::ThenRotate(10)),
            ("a file ending inside a line gets what fits", b"hhhhhh", 6, 10, false, Placement::ThenRotate(4)),
            ("a full file rotates before anything", b"x", 10, 10, true, Placement::ThenRotate(0)),
            ("a file over its cap (the cap was lowered) rotates", b"x\n", 50, 10, false, Placement::ThenRotate(0)),
        ];
        for (what, data, size, cap, ends_line, want) in table {
            assert_eq!(placement(data, size, cap, ends_line), want, "{what}");
        }
    }

    #[test]
    fn a_rotation_shifts_the_older_files_up_and_drops_the_oldest() {
        let live = Path::new("/logs/0.log");
        let f = |n: u32| rotated(live, n);
        let plan = rotation(live, 4);
        assert_eq!(plan.shift, vec![(f(2), f(3)), (f(1), f(2))]);
        assert_eq!(plan.live, (live.to_path_buf(), f(1)));
        assert_eq!(plan.drops, f(3));
        // Two files: the live one and `.1`, which the live one replaces.
        let plan = rotation(live, 2);
        assert!(plan.shift.is_empty());
        assert_eq!((plan.live, plan.drops), ((live.to_path_buf(), f(1)), f(1)));
    }

    #[test]
    fn the_relay_s_arguments_parse_as_the_node_passes_them_and_bad_ones_are_named() {
        let args = |a: &[&str]| parse_args(a.iter().map(OsString::from));
        let got = args(&["--max-bytes", "4096", "--max-files", "2", "--join", "/a", "--join=/b", "/l/0.log"]).unwrap();
        assert_eq!(got.limits, LogLimits { max_bytes: 4096, max_files: 2 });
        assert_eq!(got.join, [PathBuf::from("/a"), PathBuf::from("/b")]);
        assert_eq!(got.path, PathBuf::from("/l/0.log"));
        let got = args(&["--max-bytes=8192", "--", "--odd-name.log"]).unwrap();
        assert_eq!(got.limits, LogLimits { max_bytes: 8192, max_files: DEFAULT_MAX_FILES });
        assert_eq!(got.path, PathBuf::from("--odd-name.log"));
        #[rustfmt::skip]
        let bad: [(&[&str], &str); 8] = [
            (&[], "path is missing"),
            (&["--max-bytes", "12k", "x"], "--max-bytes \"12k\": not a whole number"),
            (&["--max-bytes", "100", "x"], "below the minimum of 4096"),
            (&["--max-files", "1", "x"], "must be 2 to 100"),
            (&["--max-files", "99999999999", "x"], "too large"),
            (&["x", "--join"], "--join needs a value"),
            (&["--follow", "x"], "unknown flag --follow"),
            (&["x", "y"], "unexpected argument \"y\""),
        ];
        for (a, want) in bad {
            let e = args(a).unwrap_err();
            assert!(e.contains(want), "{a:?}: {e}");
        }
    }
}
