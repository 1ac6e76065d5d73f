//! The trust `a2a serve` places in `$A2A_HOME`: before anything in it is used, the home must
//! belong to the daemon's user and be writable by nobody else (nor may any directory above
//! it let another user swap it), and every file it reads or appends to must be a regular file
//! of that user, opened without following symbolic links (`O_NOFOLLOW`), with its secrets
//! readable by that user alone. Whatever fails is refused with one line that names the path
//! and the fix; nothing is changed.
//!
//! The checks are the ones OpenSSH makes of `~/.ssh` (`StrictModes`), with one exception:
//! a world-writable directory above the home is accepted when it has the sticky bit (`/tmp`),
//! since no other user can then rename or remove what is in it.

use std::fs::{File, Metadata};
use std::io::Read as _;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Ownership, mode or type that lets another user change or read what the daemon trusts.
    #[error("{path}: {problem}; {fix}")]
    Unsafe { path: PathBuf, problem: String, fix: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.to_path_buf(), source }
}

/// What a file of the home holds, for the modes it may have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Readable by the owner only: the token, private keys, the kubeconfig.
    Secret,
    /// May be readable by others, never writable by them: certificates, the audit log.
    Public,
}

fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

fn mode_text(mode: u32) -> String {
    format!("{:04o}", mode & 0o7777)
}

/// Creates `dir` (with any missing parents, each 0700) when absent, then checks it and every
/// directory above it.
pub fn prepare_home(dir: &Path) -> Result<()> {
    if std::fs::symlink_metadata(dir).is_err() {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io(dir))?;
    }
    let real = std::fs::canonicalize(dir).map_err(io(dir))?;
    check_private_dir(&real, dir)?;
    let mut above = real.parent();
    while let Some(parent) = above {
        check_ancestor(parent, dir)?;
        above = parent.parent();
    }
    Ok(())
}

/// Creates `dir` 0700 when absent; either way it must be a directory of this user that no one
/// else can write (it is not followed if it is a symbolic link).
pub fn prepare_subdir(dir: &Path) -> Result<()> {
    if let Err(e) = std::fs::DirBuilder::new().mode(0o700).create(dir)
        && e.kind() != std::io::ErrorKind::AlreadyExists
    {
        return Err(io(dir)(e));
    }
    let meta = std::fs::symlink_metadata(dir).map_err(io(dir))?;
    if meta.file_type().is_symlink() {
        return Err(unsafe_path(dir, "is a symbolic link, which a2a does not follow in its home", remove_fix(dir)));
    }
    check_private_dir(dir, dir)
}

fn check_private_dir(real: &Path, named: &Path) -> Result<()> {
    let meta = std::fs::metadata(real).map_err(io(named))?;
    if !meta.is_dir() {
        return Err(unsafe_path(named, "is not a directory", "choose another --home".into()));
    }
    let me = euid();
    if meta.uid() != me {
        return Err(unsafe_path(
            named,
            &format!("is owned by uid {}, not by the user a2a runs as (uid {me})", meta.uid()),
            format!("run `chown {me} {}` or choose another --home", named.display()),
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(unsafe_path(
            named,
            &format!(
                "is writable by {} (mode {}), so another user could plant its token, certificates or logs",
                writers(meta.mode()),
                mode_text(meta.mode())
            ),
            format!("run `chmod 700 {}` or choose another --home", named.display()),
        ));
    }
    Ok(())
}

fn check_ancestor(dir: &Path, home: &Path) -> Result<()> {
    let meta = std::fs::metadata(dir).map_err(io(dir))?;
    let me = euid();
    if meta.uid() != 0 && meta.uid() != me {
        return Err(unsafe_path(
            home,
            &format!("is inside {}, owned by uid {}, who could replace it", dir.display(), meta.uid()),
            "choose a --home whose parent directories belong to root or to you".into(),
        ));
    }
    let sticky = meta.mode() & 0o1000 != 0;
    if meta.mode() & 0o022 != 0 && !sticky {
        return Err(unsafe_path(
            home,
            &format!(
                "is inside {}, writable by {} (mode {}) without the sticky bit, so another user could replace it",
                dir.display(),
                writers(meta.mode()),
                mode_text(meta.mode())
            ),
            format!("run `chmod go-w {}` or choose another --home", dir.display()),
        ));
    }
    Ok(())
}

fn writers(mode: u32) -> &'static str {
    match (mode & 0o020 != 0, mode & 0o002 != 0) {
        (true, true) => "group and others",
        (true, false) => "its group",
        _ => "others",
    }
}

fn unsafe_path(path: &Path, problem: &str, fix: String) -> Error {
    Error::Unsafe { path: path.to_path_buf(), problem: problem.to_string(), fix }
}

fn remove_fix(path: &Path) -> String {
    format!("remove it (`rm {}`) and start again", path.display())
}

/// Checks an open file of the home: a regular file of this user, with `kind`'s modes.
fn check_file(path: &Path, meta: &Metadata, kind: Kind) -> Result<()> {
    if !meta.is_file() {
        return Err(unsafe_path(path, "is not a regular file", remove_fix(path)));
    }
    let me = euid();
    if meta.uid() != me {
        return Err(unsafe_path(
            path,
            &format!(
                "is owned by uid {}, not by the user a2a runs as (uid {me}), so it may have been planted",
                meta.uid()
            ),
            remove_fix(path),
        ));
    }
    let mode = meta.mode();
    match kind {
        Kind::Secret if mode & 0o077 != 0 => Err(unsafe_path(
            path,
            &format!("is a secret readable or writable by others (mode {})", mode_text(mode)),
            format!(
                "if it may have been read or planted, remove it to have a new one made (and hand out the new kubeconfig); \
                 if not, run `chmod 600 {}`",
                path.display()
            ),
        )),
        Kind::Public if mode & 0o022 != 0 => Err(unsafe_path(
            path,
            &format!("is writable by {} (mode {})", writers(mode), mode_text(mode)),
            format!("if it may have been changed, remove it; if not, run `chmod go-w {}`", path.display()),
        )),
        _ => Ok(()),
    }
}

/// Why opening with `O_NOFOLLOW` failed: a symbolic link says so.
fn open_error(path: &Path, e: std::io::Error) -> Error {
    if e.raw_os_error() == Some(libc::ELOOP) {
        unsafe_path(path, "is a symbolic link, which a2a does not follow in its home", remove_fix(path))
    } else {
        io(path)(e)
    }
}

/// Reads a file of the home (not following a symbolic link), after checking it; `None` when
/// it does not exist.
pub fn read(path: &Path, kind: Kind) -> Result<Option<String>> {
    let mut file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(open_error(path, e)),
    };
    check_file(path, &file.metadata().map_err(io(path))?, kind)?;
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(io(path))?;
    Ok(Some(text))
}

/// Opens (creating 0600) a file of the home to append to, not following a symbolic link, and
/// checks it.
pub fn open_append(path: &Path, kind: Kind) -> Result<File> {
    let file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| open_error(path, e))?;
    check_file(path, &file.metadata().map_err(io(path))?, kind)?;
    Ok(file)
}

/// Checks a file of the home that is about to be replaced or used by name (a symbolic link
/// or another user's file there is refused; a missing one is fine).
pub fn check_existing(path: &Path, kind: Kind) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => {
            Err(unsafe_path(path, "is a symbolic link, which a2a does not follow in its home", remove_fix(path)))
        }
        Ok(meta) => check_file(path, &meta, kind),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(path)(e)),
    }
}

/// Writes `contents` to `path` with mode 0600, atomically: a new temporary file beside it
/// (never one left there, nor a link), fsync, rename over `path`, fsync of the directory.
pub fn write_private(path: &Path, contents: &[u8]) -> Result<()> {
    use std::io::Write as _;
    let tmp = path.with_extension("tmp");
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(&tmp)(e)),
    }
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)
            .map_err(|e| open_error(&tmp, e))?;
        f.write_all(contents).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(io(path))?;
    if let Some(dir) = path.parent() {
        File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn a_home_writable_by_others_is_refused_with_the_fix() {
        let top = tempfile::tempdir().unwrap();
        let home = top.path().join("home");
        prepare_home(&home).unwrap();
        assert_eq!(std::fs::metadata(&home).unwrap().mode() & 0o777, 0o700);
        for mode in [0o1777, 0o770, 0o757] {
            chmod(&home, mode);
            let e = prepare_home(&home).unwrap_err().to_string();
            assert!(e.starts_with(&home.display().to_string()), "{e}");
            assert!(e.contains(&format!("chmod 700 {}", home.display())), "{e}");
            assert!(!e.contains('\n'), "{e}");
        }
        chmod(&home, 0o750);
        prepare_home(&home).unwrap();
    }

    #[test]
    fn a_home_inside_a_directory_others_can_write_is_refused_unless_sticky() {
        let top = tempfile::tempdir().unwrap();
        let home = top.path().join("home");
        prepare_home(&home).unwrap();
        chmod(top.path(), 0o777);
        let e = prepare_home(&home).unwrap_err().to_string();
        assert!(e.contains("without the sticky bit"), "{e}");
        chmod(top.path(), 0o1777);
        prepare_home(&home).unwrap();
    }

    #[test]
    fn a_secret_readable_by_others_and_a_symlink_are_refused() {
        let home = tempfile::tempdir().unwrap();
        let token = home.path().join("token");
        std::fs::write(&token, "planted").unwrap();
        chmod(&token, 0o644);
        let e = read(&token, Kind::Secret).unwrap_err().to_string();
        assert!(e.contains("mode 0644") && e.contains("chmod 600"), "{e}");
        assert!(read(&token, Kind::Public).unwrap().is_some());
        chmod(&token, 0o600);
        assert_eq!(read(&token, Kind::Secret).unwrap().as_deref(), Some("planted"));

        let target = home.path().join("elsewhere");
        std::fs::write(&target, "").unwrap();
        let link = home.path().join("audit.log");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = open_append(&link, Kind::Public).unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");
        assert!(read(&link, Kind::Public).is_err());
        assert!(check_existing(&link, Kind::Public).is_err());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "");
        assert_eq!(read(&home.path().join("missing"), Kind::Secret).unwrap(), None);
    }

    #[test]
    fn a_file_of_another_user_is_refused() {
        let home = tempfile::tempdir().unwrap();
        let token = home.path().join("token");
        std::fs::write(&token, "planted").unwrap();
        chmod(&token, 0o600);
        // The tests run as root, as the daemon does.
        rustix::fs::chown(&token, Some(rustix::fs::Uid::from_raw(65534)), None).unwrap();
        let e = read(&token, Kind::Secret).unwrap_err().to_string();
        assert!(e.contains("owned by uid 65534") && e.contains("planted"), "{e}");
    }

    #[test]
    fn writing_replaces_a_planted_temporary_link_without_following_it() {
        let home = tempfile::tempdir().unwrap();
        let target = home.path().join("victim");
        std::fs::write(&target, "keep").unwrap();
        let path = home.path().join("kubeconfig");
        std::os::unix::fs::symlink(&target, path.with_extension("tmp")).unwrap();
        write_private(&path, b"new").unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
    }
}
