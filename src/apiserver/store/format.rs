//! The store's format version, recorded as PostgreSQL records its own in `PG_VERSION`: a
//! small file beside the database (`store.format` next to `store.redb`) holding the number
//! and a newline. It is read before anything else of the store is opened, so a store written
//! by a newer a2a is refused before a byte of it changes.
//!
//! - Format 1: the database and write-ahead log of the a2a releases that did not record a
//!   format. A store with a database and no `store.format` is format 1.
//! - Format 2: the same database and log, with `store.format`.
//! - Format 3: values may be Secrets sealed with AES-256-GCM (`k8s:enc:aesgcm:v1:...`,
//!   [`crate::apiserver::seal`]) instead of JSON; an a2a that reads up to format 2 would take
//!   them for damage, so it is told the store is newer.
//!
//! Opening an older store upgrades it in place, one step at a time: the write-ahead log is
//! first applied to the database (so a step only ever converts the database), then each
//! step runs in one durable database transaction and the file is rewritten with the step's
//! version (a new file, `fsync`, `rename`, `fsync` of the directory). A crash between a step
//! and its file leaves the older version recorded and runs the step again on the next start:
//! every step must be idempotent. A new store records the current format before its database
//! is created, so a database is never without a version it was not written in.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use redb::Database;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A store written by a newer a2a: nothing of it is opened or changed.
    #[error(
        "{path}: the store is in format {found}, written by a newer a2a; this a2a reads formats up to \
         {supported} and does not downgrade a store. Run the a2a that wrote it, or restore the copy of \
         the home taken before the upgrade"
    )]
    TooNew { path: PathBuf, found: u32, supported: u32 },
    #[error("{path}: not a store format version (a decimal number and a newline): found {content}")]
    Unreadable { path: PathBuf, content: String },
    #[error("upgrading the store {path} from format {from}: {source}")]
    Upgrade {
        path: PathBuf,
        from: u32,
        #[source]
        source: Box<redb::Error>,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The format this a2a writes.
pub const CURRENT: u32 = 3;

/// The format of a store that has a database and no format file.
pub const UNRECORDED: u32 = 1;

/// The largest format file read; anything longer is not one.
const MAX_LEN: u64 = 64;

/// One upgrade step: from `from` to `from + 1`.
struct Step {
    from: u32,
    what: &'static str,
    run: fn(&Database) -> Result<(), redb::Error>,
}

/// Every step, in order; `STEPS[i].from == i + 1`.
const STEPS: &[Step] = &[
    Step { from: 1, what: "records the format version; the data is unchanged", run: |_| Ok(()) },
    Step { from: 2, what: "Secrets written from now on are encrypted; the data is unchanged", run: |_| Ok(()) },
];

/// What the store at a database path is, before it is opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Found {
    /// Nothing there yet: a new store.
    New,
    /// A store of this format (at most [`CURRENT`]).
    Format(u32),
}

/// The format file of the database at `db`.
pub fn path_of(db: &Path) -> PathBuf {
    db.with_extension("format")
}

/// Reads the format of the store at `db` without changing anything; a format newer than
/// [`CURRENT`], or a format file that is not one, is an error.
pub fn inspect(db: &Path) -> Result<Found> {
    let file = path_of(db);
    let io = |source: std::io::Error| Error::Io { path: file.clone(), source };
    let text = match std::fs::symlink_metadata(&file) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let exists = |p: &Path| std::fs::symlink_metadata(p).is_ok();
            return Ok(if exists(db) || exists(&db.with_extension("wal")) {
                Found::Format(UNRECORDED)
            } else {
                Found::New
            });
        }
        Err(e) => return Err(io(e)),
        Ok(meta) if !meta.is_file() => {
            let what = if meta.file_type().is_symlink() { "a symbolic link" } else { "not a regular file" };
            return Err(Error::Unreadable { path: file, content: what.to_owned() });
        }
        Ok(meta) if meta.len() > MAX_LEN => {
            return Err(Error::Unreadable { path: file, content: format!("a file of {} bytes", meta.len()) });
        }
        Ok(_) => std::fs::read(&file).map_err(io)?,
    };
    let shown = String::from_utf8_lossy(&text).into_owned();
    let version = std::str::from_utf8(&text)
        .ok()
        .and_then(|t| t.strip_suffix('\n'))
        .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|t| t.parse::<u32>().ok())
        .filter(|v| *v >= 1)
        .ok_or_else(|| Error::Unreadable { path: file.clone(), content: format!("{shown:?}") })?;
    if version > CURRENT {
        return Err(Error::TooNew { path: file, found: version, supported: CURRENT });
    }
    Ok(Found::Format(version))
}

/// Records `version` as the format of the store at `db`, crash-safely: the file is either
/// the old one or the new one, and the new one is on disk when this returns.
pub fn record(db: &Path, version: u32) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let file = path_of(db);
    let tmp = file.with_extension(format!("format.tmp-{}", std::process::id()));
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source: std::io::Error| Error::Io { path, source }
    };
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .map_err(io(&tmp))?;
    out.write_all(format!("{version}\n").as_bytes()).map_err(io(&tmp))?;
    out.sync_all().map_err(io(&tmp))?;
    drop(out);
    if let Err(e) = std::fs::rename(&tmp, &file) {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(&file)(e));
    }
    let dir = file.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

/// Upgrades the open store at `db` from format `from` to [`CURRENT`], one step at a time,
/// recording each step's version once it is durable. The write-ahead log must have been
/// applied to the database already.
pub fn upgrade(db_path: &Path, db: &Database, from: u32) -> Result<()> {
    for step in STEPS.iter().filter(|s| s.from >= from) {
        (step.run)(db).map_err(|e| Error::Upgrade {
            path: db_path.to_path_buf(),
            from: step.from,
            source: Box::new(e),
        })?;
        record(db_path, step.from + 1)?;
        tracing::info!(
            store = %db_path.display(),
            from = step.from,
            to = step.from + 1,
            "upgraded the store's format: {}",
            step.what
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_step_follows_the_one_before_up_to_the_current_format() {
        for (i, step) in STEPS.iter().enumerate() {
            assert_eq!(step.from, i as u32 + 1);
        }
        assert_eq!(STEPS.len() as u32 + 1, CURRENT);
    }

    #[test]
    fn the_format_file_is_read_strictly() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("store.redb");
        assert_eq!(inspect(&db).unwrap(), Found::New);
        std::fs::write(db.with_extension("wal"), b"").unwrap();
        assert_eq!(inspect(&db).unwrap(), Found::Format(UNRECORDED));
        record(&db, 2).unwrap();
        assert_eq!(std::fs::read_to_string(path_of(&db)).unwrap(), "2\n");
        assert_eq!(inspect(&db).unwrap(), Found::Format(2));
        for bad in ["", "2", "two\n", "0\n", "-1\n", " 2\n", "2\n\n", "99999999999\n"] {
            std::fs::write(path_of(&db), bad).unwrap();
            let err = inspect(&db).unwrap_err();
            assert!(matches!(err, Error::Unreadable { .. }), "{bad:?}: {err}");
            assert!(err.to_string().contains("store.format"), "{err}");
        }
        std::fs::write(path_of(&db), "9".repeat(100)).unwrap();
        assert!(inspect(&db).unwrap_err().to_string().contains("a file of 100 bytes"));
        std::fs::remove_file(path_of(&db)).unwrap();
        std::os::unix::fs::symlink("elsewhere", path_of(&db)).unwrap();
        assert!(inspect(&db).unwrap_err().to_string().contains("a symbolic link"));
        std::fs::remove_file(path_of(&db)).unwrap();
        std::fs::write(path_of(&db), "4\n").unwrap();
        let err = inspect(&db).unwrap_err();
        assert!(matches!(err, Error::TooNew { found: 4, supported: CURRENT, .. }), "{err}");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.contains("tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
}
