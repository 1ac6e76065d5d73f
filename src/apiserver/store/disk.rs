//! The store's durable side: applying writes and the write-ahead log's records to redb, and
//! reading what redb holds.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redb::{Database, ReadableDatabase, ReadableTable};
use serde_json::Value;

use super::{Error, META, OBJECTS, Result, Stored};
use crate::apiserver::wal::{self, OpRef};

/// Whether a database error comes from a full disk.
pub(super) fn is_no_space(e: &redb::Error) -> bool {
    match e {
        redb::Error::Io(e) => wal::is_no_space(e),
        _ => false,
    }
}

/// The operations of a batch, borrowed for the log and redb.
pub(super) fn op_refs(writes: &[(bool, Arc<Stored>)]) -> Vec<OpRef<'_>> {
    writes
        .iter()
        .map(|(put, object)| {
            let k = &object.key;
            if *put {
                OpRef::Put { resource: &k.resource, namespace: &k.namespace, name: &k.name, object: object.durable() }
            } else {
                OpRef::Delete { resource: &k.resource, namespace: &k.namespace, name: &k.name }
            }
        })
        .collect()
}

/// Writes operations and the resourceVersion to redb in one transaction.
pub(super) fn apply(
    db: &Database,
    durability: redb::Durability,
    ops: &[OpRef<'_>],
    rv: u64,
) -> Result<(), redb::Error> {
    let mut tx = db.begin_write()?;
    tx.set_durability(durability).map_err(|e| redb::Error::Io(std::io::Error::other(e.to_string())))?;
    {
        let mut table = tx.open_table(OBJECTS)?;
        for op in ops {
            match op {
                OpRef::Put { resource, namespace, name, object } => {
                    table.insert((*resource, *namespace, *name), *object)?;
                }
                OpRef::Delete { resource, namespace, name } => {
                    table.remove((*resource, *namespace, *name))?;
                }
            }
        }
        let mut meta = tx.open_table(META)?;
        meta.insert("rv", rv)?;
    }
    tx.commit()?;
    Ok(())
}

pub(super) enum ReplayError {
    Redb(redb::Error),
    Gap(String),
}

/// Applies, durably, the log records that continue redb's resourceVersion. Records at or
/// below it are left over from before a checkpoint; one that starts past the next version
/// means writes are missing, and the store refuses to open rather than serve without them.
pub(super) fn replay(db: &Database, wal_path: &Path, records: Vec<wal::Record>) -> Result<(), ReplayError> {
    use wal::Op;
    let durable = durable_rv(db).map_err(ReplayError::Redb)?;
    let mut next = durable + 1;
    let mut ops = Vec::new();
    let mut count = 0;
    for record in &records {
        if record.last_rv() < next {
            continue;
        }
        if record.first_rv != next {
            return Err(ReplayError::Gap(format!(
                "{}: the write-ahead log continues at resourceVersion {} but the database ends at {}",
                wal_path.display(),
                record.first_rv,
                next - 1
            )));
        }
        next = record.last_rv() + 1;
        count += 1;
        ops.extend(record.ops.iter().map(|op| match op {
            Op::Put { resource, namespace, name, object } => OpRef::Put { resource, namespace, name, object },
            Op::Delete { resource, namespace, name } => OpRef::Delete { resource, namespace, name },
        }));
    }
    if ops.is_empty() {
        return Ok(());
    }
    apply(db, redb::Durability::Immediate, &ops, next - 1).map_err(ReplayError::Redb)?;
    tracing::info!(records = count, writes = ops.len(), to = next - 1, "replayed the store's write-ahead log");
    Ok(())
}

/// The last resourceVersion the database holds.
pub(super) fn durable_rv(db: &Database) -> Result<u64, redb::Error> {
    let tx = db.begin_read()?;
    let meta = tx.open_table(META)?;
    Ok(meta.get("rv")?.map(|v| v.value()).unwrap_or(0))
}

/// The last resourceVersion the database at `path` holds (0 if there is none), read without
/// changing anything; fails while a server has it open.
pub fn durable_version(path: &Path) -> Result<u64> {
    if !path.exists() {
        return Ok(0);
    }
    let storage = |e: redb::Error| Error::Storage { path: path.to_path_buf(), source: Box::new(e) };
    let db = redb::ReadOnlyDatabase::open(path).map_err(|e| storage(e.into()))?;
    let tx = db.begin_read().map_err(|e| storage(e.into()))?;
    let meta = match tx.open_table(META) {
        Ok(meta) => meta,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
        Err(e) => return Err(storage(e.into())),
    };
    Ok(meta.get("rv").map_err(|e| storage(e.into()))?.map(|v| v.value()).unwrap_or(0))
}

/// The objects (`resource namespace/name`) the database at `path` and its write-ahead log
/// hold sealed, read without changing anything; fails while a server has the store open.
pub fn sealed_objects(path: &Path) -> Result<Vec<String>> {
    let mut found = Vec::new();
    if !path.exists() {
        return Ok(found);
    }
    let storage = |e: redb::Error| Error::Storage { path: path.to_path_buf(), source: Box::new(e) };
    let durable = {
        let db = redb::ReadOnlyDatabase::open(path).map_err(|e| storage(e.into()))?;
        let tx = db.begin_read().map_err(|e| storage(e.into()))?;
        match tx.open_table(OBJECTS) {
            Ok(table) => {
                for entry in table.iter().map_err(|e| storage(e.into()))? {
                    let (k, v) = entry.map_err(|e| storage(e.into()))?;
                    if crate::apiserver::seal::is_sealed(v.value()) {
                        let (resource, namespace, name) = k.value();
                        found.push(format!("{resource} {namespace}/{name}"));
                    }
                }
            }
            Err(redb::TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(storage(e.into())),
        }
        match tx.open_table(META) {
            Ok(meta) => meta.get("rv").map_err(|e| storage(e.into()))?.map(|v| v.value()).unwrap_or(0),
            Err(redb::TableError::TableDoesNotExist(_)) => 0,
            Err(e) => return Err(storage(e.into())),
        }
    };
    let wal_path = path.with_extension("wal");
    if wal_path.exists() {
        for (_, record) in wal::inspect(&wal_path, durable)?.records {
            // Older records were checkpointed into the database, which was read above.
            if record.last_rv() <= durable {
                continue;
            }
            for op in record.ops {
                if let wal::Op::Put { resource, namespace, name, object } = op
                    && crate::apiserver::seal::is_sealed(&object)
                {
                    found.push(format!("{resource} {namespace}/{name}"));
                }
            }
        }
    }
    found.dedup();
    Ok(found)
}

pub(super) fn stored_rv(object: &Value) -> u64 {
    object.pointer("/metadata/resourceVersion").and_then(Value::as_str).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// Measures the disk's own fsync latency at `dir`, `rounds` times: 4 KiB written and
/// `fdatasync`ed. `in_place`: over blocks of a file already written and synced, as the
/// write-ahead log writes into its preallocated space (only data to flush); otherwise
/// appended to a growing file (each sync also commits the file's new size, i.e. a journal
/// commit on ext4, which on a busy disk can cost ten times more).
pub fn measure_fsync(dir: &Path, rounds: usize, in_place: bool) -> std::io::Result<Vec<Duration>> {
    use std::io::Write as _;
    use std::os::unix::fs::FileExt as _;
    let path = dir.join(".fsync-probe");
    let mut file = std::fs::File::create(&path)?;
    let block = [0u8; 4096];
    if in_place {
        for _ in 0..rounds {
            file.write_all(&block)?;
        }
        file.sync_all()?;
    }
    let mut out = Vec::with_capacity(rounds);
    for i in 0..rounds {
        let t = Instant::now();
        if in_place {
            file.write_all_at(&block, (i * block.len()) as u64)?;
        } else {
            file.write_all(&block)?;
        }
        file.sync_data()?;
        out.push(t.elapsed());
    }
    drop(file);
    std::fs::remove_file(&path)?;
    Ok(out)
}
