//! Control-file I/O shared by both backends. Every error names the path (and the data written).

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{Error, Result};

pub(super) fn write(path: &Path, data: &str) -> Result<()> {
    std::fs::write(path, data).map_err(|source| Error::Write {
        path: path.to_path_buf(),
        data: data.to_owned(),
        source,
    })
}

pub(super) fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::Read { path: path.to_path_buf(), source })
}

thread_local! {
    /// Control files are small: one buffer per thread serves every periodic read.
    static BUF: std::cell::RefCell<String> = std::cell::RefCell::new(String::with_capacity(1024));
}

/// Reads `path` into a reused per-thread buffer and parses it with `parse` (which must not
/// read another file itself): sampling hundreds of cgroups allocates nothing per file.
pub(super) fn read_with<T>(path: &Path, parse: impl FnOnce(&str) -> Result<T>) -> Result<T> {
    use std::io::Read;
    BUF.with(|buf| {
        let mut buf = buf.borrow_mut();
        buf.clear();
        std::fs::File::open(path)
            .and_then(|mut f| f.read_to_string(&mut buf))
            .map_err(|source| Error::Read { path: path.to_path_buf(), source })?;
        parse(&buf)
    })
}

/// One number (`max` is `u64::MAX`) in the text `s` of `path`.
pub(super) fn parse_u64(path: &Path, s: &str) -> Result<u64> {
    let t = s.trim();
    if t == "max" {
        return Ok(u64::MAX);
    }
    t.parse().map_err(|_| parse_err(path, s, "expected a whole number"))
}

/// The values of `keys` in the flat-keyed text `s` of `path` (0 for an absent key).
pub(super) fn parse_keys<const N: usize>(path: &Path, s: &str, keys: [&str; N]) -> Result<[u64; N]> {
    let mut out = [0; N];
    for line in s.lines() {
        let mut it = line.split_whitespace();
        let Some(k) = it.next() else { continue };
        if let Some(i) = keys.iter().position(|want| *want == k) {
            out[i] = it
                .next()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| parse_err(path, s, &format!("bad value for {k:?}")))?;
        }
    }
    Ok(out)
}

fn parse_err(path: &Path, content: &str, reason: &str) -> Error {
    Error::Parse { path: path.to_path_buf(), content: content.chars().take(200).collect(), reason: reason.to_owned() }
}

/// A file holding one number (`max` reads as `u64::MAX`).
pub(super) fn read_u64(path: &Path) -> Result<u64> {
    read_with(path, |s| parse_u64(path, s))
}

/// Like [`read_u64`], but `None` when the file does not exist.
pub(super) fn read_u64_opt(path: &Path) -> Result<Option<u64>> {
    if !path.exists() {
        return Ok(None);
    }
    read_u64(path).map(Some)
}

/// The value of `key` in a flat-keyed file (`key value` lines, e.g. `memory.events`), 0 when
/// the key is absent.
pub(super) fn read_key(path: &Path, key: &str) -> Result<u64> {
    read_with(path, |s| parse_keys(path, s, [key]).map(|[v]| v))
}

/// The pids listed in one `cgroup.procs` file.
pub(super) fn read_procs(path: &Path) -> Result<Vec<u32>> {
    let s = read(path)?;
    s.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.trim().parse().map_err(|_| parse_err(path, &s, "expected one pid per line")))
        .collect()
}

/// Subdirectories (child cgroups) of `dir`.
pub(super) fn child_dirs(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|source| Error::Read { path: dir.to_path_buf(), source })?;
    let mut out = Vec::new();
    for e in entries {
        let e = e.map_err(|source| Error::Read { path: dir.to_path_buf(), source })?;
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            out.push(e.path());
        }
    }
    Ok(out)
}

/// The child cgroups of `path`, whose directory is `dir`, sorted.
pub(super) fn child_paths(path: &super::CgroupPath, dir: &Path) -> Result<Vec<super::CgroupPath>> {
    let mut out = Vec::new();
    for d in child_dirs(dir)? {
        if let Some(name) = d.file_name().and_then(|n| n.to_str()) {
            out.push(path.child(name)?);
        }
    }
    out.sort();
    Ok(out)
}

/// The pids of `dir` and every descendant cgroup.
pub(super) fn procs_recursive(dir: &Path) -> Result<Vec<u32>> {
    let mut pids = read_procs(&dir.join("cgroup.procs"))?;
    for child in child_dirs(dir)? {
        pids.extend(procs_recursive(&child)?);
    }
    pids.sort_unstable();
    pids.dedup();
    Ok(pids)
}

pub(super) fn mkdir(dir: &Path) -> Result<bool> {
    match std::fs::create_dir(dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
        Err(source) => Err(Error::Mkdir { path: dir.to_path_buf(), source }),
    }
}

/// Removes `dir` and its descendant cgroups, deepest first, retrying `EBUSY` (processes that
/// are exiting still count) until `deadline`.
pub(super) fn rmdir_tree(dir: &Path, deadline: Instant) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    for child in child_dirs(dir)? {
        rmdir_tree(&child, deadline)?;
    }
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(source) => {
                return Err(Error::Rmdir { path: dir.to_path_buf(), source });
            }
        }
    }
}

/// Sends SIGKILL to `pid`; a process that is already gone is fine.
pub(super) fn sigkill(pid: u32, cgroup: &Path) -> Result<()> {
    let Some(p) = i32::try_from(pid).ok().and_then(rustix::process::Pid::from_raw) else {
        return Ok(());
    };
    match rustix::process::kill_process(p, rustix::process::Signal::KILL) {
        Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
        Err(e) => Err(Error::Signal { pid, path: cgroup.to_path_buf(), source: e.into() }),
    }
}

/// Polls `done` every few milliseconds until it holds or `timeout` passes.
pub(super) fn wait_until(timeout: Duration, mut done: impl FnMut() -> Result<bool>) -> Result<bool> {
    let deadline = Instant::now() + timeout;
    loop {
        if done()? {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_files_and_numbers_parse_and_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let events = dir.path().join("memory.events");
        std::fs::write(&events, "low 0\nhigh 0\nmax 12\noom 2\noom_kill 1\n").unwrap();
        assert_eq!(read_key(&events, "oom_kill").unwrap(), 1);
        assert_eq!(read_key(&events, "absent").unwrap(), 0);
        let both = read_with(&events, |s| parse_keys(&events, s, ["oom", "max", "absent"])).unwrap();
        assert_eq!(both, [2, 12, 0]);
        let max = dir.path().join("pids.max");
        std::fs::write(&max, "max\n").unwrap();
        assert_eq!(read_u64(&max).unwrap(), u64::MAX);
        std::fs::write(&max, "lots\n").unwrap();
        let e = read_u64(&max).unwrap_err().to_string();
        assert!(e.contains("pids.max") && e.contains("lots"), "{e}");
        assert_eq!(read_u64_opt(&dir.path().join("memory.peak")).unwrap(), None);
        let procs = dir.path().join("cgroup.procs");
        std::fs::write(&procs, "12\n34\n").unwrap();
        assert_eq!(read_procs(&procs).unwrap(), [12, 34]);
    }

    #[test]
    fn write_errors_carry_path_and_data() {
        let e = write(Path::new("/nonexistent-a2a/memory.max"), "123").unwrap_err();
        let s = e.to_string();
        assert!(s.contains("/nonexistent-a2a/memory.max") && s.contains("\"123\""), "{s}");
    }
}
