//! Secret files of a replica, as kubelet makes a secret volume: a tmpfs of the replica's own
//! (never on disk, charged to no agent), mounted by the daemon under
//! `<state>/secrets/<home>.<namespace>.<agent>.<replica>`, each Secret's files in a directory
//! of it — files mode 0400, directories 0500, all owned by the agent's user — and then
//! remounted read-only. The agent's mount namespace gets each directory at its `mountPath`
//! (see [`super::sandbox::Confinement`]); the state directory itself is hidden from agents.
//! The tmpfs goes when the replica stops, and is made anew at each start, so a restarted
//! replica sees the Secret as it is then.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rustix::mount::{MountFlags, UnmountFlags};

use crate::api::agent::SECRET_FILES_ROOT;
use crate::controller::config_refs::FileSet;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("secret files: {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Files can be placed only in a mount namespace of the agent's own.
    #[error(
        "spec.secretFiles needs an agent the daemon confines (a daemon running as root): without a mount namespace of its own, files cannot appear at {0}"
    )]
    Unconfined(String),
    /// A `mountPath` outside `/run/secrets` and the private `/tmp` must be a directory of the
    /// host: the daemon creates no directory elsewhere on the host.
    #[error(
        "spec.secretFiles: mountPath {0} does not exist on this host; use a path under /run/secrets or /tmp, or an existing directory"
    )]
    NoMountPoint(String),
}

impl Error {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Io { .. } => "secret_files_io",
            Error::Unconfined(_) => "secret_files_unconfined",
            Error::NoMountPoint(_) => "secret_files_mount_point",
        }
    }
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io { what, path: path.to_path_buf(), source }
}

/// Where a daemon keeps its replicas' secret files.
#[derive(Clone, Debug)]
pub struct SecretFileStore {
    root: PathBuf,
    /// Tells this daemon's directories from another's on the same host (a digest of its home).
    tag: String,
}

/// One directory of files to appear in the agent's view: `source` on the host, `target` in
/// the agent's mount namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileMount {
    pub source: PathBuf,
    pub target: PathBuf,
}

impl SecretFileStore {
    /// Under `state` (the host-wide state directory), for the daemon whose home is `home`.
    pub fn new(state: &Path, home: &Path) -> Self {
        let home = fs::canonicalize(home).unwrap_or_else(|_| home.to_path_buf());
        let digest = ring::digest::digest(&ring::digest::SHA256, home.as_os_str().as_encoded_bytes());
        let tag = digest.as_ref()[..6].iter().map(|b| format!("{b:02x}")).collect();
        SecretFileStore { root: state.join("secrets"), tag }
    }

    /// The directory every replica's tmpfs is mounted under (hidden from agents).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The tmpfs of the replica whose cgroup leaf is `leaf` (`<namespace>.<agent>.<replica>`).
    pub fn dir(&self, leaf: &str) -> PathBuf {
        self.root.join(format!("{}.{leaf}", self.tag))
    }

    /// Makes the replica's tmpfs anew with `sets`, owned by `uid:gid`, and returns what to
    /// mount where in the agent's view.
    pub fn materialize(&self, leaf: &str, uid: u32, gid: u32, sets: &[FileSet]) -> Result<Vec<FileMount>, Error> {
        for set in sets {
            let target = Path::new(&set.mount_path);
            let made_for_it =
                target.starts_with(SECRET_FILES_ROOT) || ["/tmp", "/var/tmp"].iter().any(|p| target.starts_with(p));
            if !made_for_it && !target.is_dir() {
                return Err(Error::NoMountPoint(set.mount_path.clone()));
            }
        }
        if sets.iter().any(|s| Path::new(&s.mount_path).starts_with(SECRET_FILES_ROOT)) {
            // The mount point of the agent's private tmpfs at /run/secrets: an empty directory.
            let run = Path::new(SECRET_FILES_ROOT);
            fs::DirBuilder::new().recursive(true).mode(0o755).create(run).map_err(io("create", run))?;
        }
        let dir = self.dir(leaf);
        self.remove(leaf)?;
        fs::DirBuilder::new().recursive(true).mode(0o711).create(&self.root).map_err(io("create", &self.root))?;
        fs::DirBuilder::new().mode(0o700).create(&dir).map_err(io("create", &dir))?;
        let bytes: usize = sets.iter().flat_map(|s| s.files.iter().map(|(_, v)| v.len())).sum();
        let inodes: usize = sets.iter().map(|s| 2 * s.files.len() + 1).sum::<usize>() + 8;
        let options = format!("mode=0500,uid={uid},gid={gid},size={},nr_inodes={inodes}", bytes + 4096 * (inodes + 4));
        let data = std::ffi::CString::new(options).expect("no NUL in numbers");
        let flags = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
        rustix::mount::mount("tmpfs", &dir, "tmpfs", flags, data.as_c_str()).map_err(|e| Error::Io {
            what: "mount a tmpfs on",
            path: dir.clone(),
            source: e.into(),
        })?;
        let written = write_sets(&dir, uid, gid, sets).and_then(|mounts| {
            rustix::mount::mount_remount(&dir, flags | MountFlags::RDONLY, "").map_err(|e| Error::Io {
                what: "make read-only",
                path: dir.clone(),
                source: e.into(),
            })?;
            Ok(mounts)
        });
        if written.is_err() {
            let _ = self.remove(leaf);
        }
        written
    }

    /// After a restart of the daemon: removes the tmpfs of every replica of this daemon but
    /// those in `keep` (cgroup leaf names), left by replicas that ended while it was down.
    pub fn sweep(&self, keep: &std::collections::HashSet<String>) {
        let prefix = format!("{}.", self.tag);
        let Ok(entries) = fs::read_dir(&self.root) else { return };
        for name in entries.flatten().filter_map(|e| e.file_name().into_string().ok()) {
            let Some(leaf) = name.strip_prefix(&prefix) else { continue };
            if keep.contains(leaf) {
                continue;
            }
            match self.remove(leaf) {
                Ok(()) => tracing::info!(replica = %leaf, "removed the secret files of a replica that is gone"),
                Err(e) => tracing::warn!(replica = %leaf, error = %e, "removing stray secret files"),
            }
        }
    }

    /// Unmounts and removes the replica's tmpfs, if it has one.
    pub fn remove(&self, leaf: &str) -> Result<(), Error> {
        let dir = self.dir(leaf);
        if !dir.exists() {
            return Ok(());
        }
        match rustix::mount::unmount(&dir, UnmountFlags::DETACH) {
            // Not a mount point (a start that failed half way): only the directory is left.
            Ok(()) | Err(rustix::io::Errno::INVAL) => {}
            Err(e) => return Err(Error::Io { what: "unmount", path: dir, source: e.into() }),
        }
        fs::remove_dir_all(&dir).map_err(io("remove", &dir))
    }
}

fn write_sets(dir: &Path, uid: u32, gid: u32, sets: &[FileSet]) -> Result<Vec<FileMount>, Error> {
    let mut mounts = Vec::new();
    for (i, set) in sets.iter().enumerate() {
        let base = dir.join(i.to_string());
        make_dir(&base, uid, gid)?;
        for (rel, value) in &set.files {
            let path = base.join(rel);
            // Validation keeps `rel` relative and free of `..`: it stays inside `base`.
            let mut parents: Vec<&Path> = path.ancestors().skip(1).take_while(|a| *a != base).collect();
            parents.reverse();
            for p in parents {
                if !p.exists() {
                    make_dir(p, uid, gid)?;
                }
            }
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o400)
                .open(&path)
                .map_err(io("create", &path))?;
            f.write_all(value).map_err(io("write", &path))?;
            std::os::unix::fs::fchown(&f, Some(uid), Some(gid)).map_err(io("chown", &path))?;
        }
        mounts.push(FileMount { source: base, target: PathBuf::from(&set.mount_path) });
    }
    Ok(mounts)
}

fn make_dir(path: &Path, uid: u32, gid: u32) -> Result<(), Error> {
    fs::DirBuilder::new().mode(0o500).create(path).map_err(io("create", path))?;
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(io("chown", path))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    use super::*;

    fn mounted(p: &Path) -> bool {
        let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        info.lines().any(|l| l.split_whitespace().nth(4) == Some(&*p.to_string_lossy()))
    }

    fn set(mount_path: &str, files: &[(&str, &str)]) -> FileSet {
        FileSet {
            secret: "s".into(),
            mount_path: mount_path.into(),
            files: files.iter().map(|(p, v)| (p.to_string(), v.as_bytes().to_vec())).collect(),
        }
    }

    /// On the real kernel (the tests run as root): a read-only tmpfs per replica, files 0400
    /// and directories 0500 owned by the agent, and a sweep that removes only the replicas
    /// not kept.
    #[test]
    fn a_replica_s_files_are_a_read_only_tmpfs_owned_by_the_agent_and_a_sweep_keeps_only_live_ones() {
        if !rustix::process::geteuid().is_root() {
            panic!("this test mounts a tmpfs: run it as root");
        }
        let state = tempfile::tempdir().expect("tempdir");
        let home = tempfile::tempdir().expect("tempdir");
        let store = SecretFileStore::new(state.path(), home.path());
        let uid = 4_000_000_321;
        let sets = [set("/tmp/a", &[("api-key", "sk-1"), ("sub/deep", "x")]), set("/tmp/b", &[])];
        let mounts = store.materialize("default.a.0", uid, uid, &sets).expect("materialize");
        let dir = store.dir("default.a.0");
        assert!(mounted(&dir));
        assert_eq!(mounts[0], FileMount { source: dir.join("0"), target: "/tmp/a".into() });
        let key = dir.join("0/api-key");
        assert_eq!(fs::read_to_string(&key).expect("read"), "sk-1");
        for (path, mode) in
            [(&key, 0o400), (&dir.join("0/sub/deep"), 0o400), (&dir.join("0/sub"), 0o500), (&dir, 0o500)]
        {
            let meta = fs::metadata(path).expect("metadata");
            assert_eq!((meta.permissions().mode() & 0o7777, meta.uid()), (mode, uid), "{}", path.display());
        }
        assert!(fs::write(dir.join("0/new"), "x").is_err(), "read-only, even to root");
        assert!(dir.join("1").is_dir(), "an empty Secret is an empty directory");
        // A second start makes it anew.
        store.materialize("default.a.0", uid, uid, &[set("/tmp/a", &[("other", "v")])]).expect("again");
        assert!(!key.exists() && dir.join("0/other").exists());
        store.materialize("default.b.0", uid, uid, &[set("/tmp/a", &[("k", "v")])]).expect("another");
        store.sweep(&["default.a.0".to_owned()].into_iter().collect());
        assert!(mounted(&dir) && !store.dir("default.b.0").exists(), "the sweep keeps what is kept");
        store.remove("default.a.0").expect("remove");
        assert!(!mounted(&dir) && !dir.exists());
        assert!(matches!(
            store.materialize("default.c.0", uid, uid, &[set("/no/such/dir/here", &[])]),
            Err(Error::NoMountPoint(_))
        ));
    }
}
