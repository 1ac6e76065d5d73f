//! The store's write-ahead log, as etcd keeps one beside its B-tree: every group commit is one
//! checksummed record, written and `fdatasync`ed before any of its writers is answered. redb
//! then takes the same writes without an fsync of its own; a periodic durable redb commit (a
//! checkpoint) makes the log's records redundant, and the log starts over from its beginning.
//!
//! The file is zero-filled ahead of time, so an append rewrites blocks that already exist and
//! its `fdatasync` flushes one data block, not the file's size and extents as well. After a
//! restart, the records that continue redb's last durable resourceVersion are applied again;
//! the scan stops at the first record that is torn (bad magic, length or checksum). Records
//! left over from before the last checkpoint carry older resourceVersions and are skipped.
//!
//! Record: magic `u32` | payload length `u32` | CRC-32C of the payload `u32` | payload.
//! Payload: first resourceVersion `u64` | operation count `u32` | operations, each a tag `u8`
//! (1 put, 2 delete), then resource, namespace and name (`u16` length + UTF-8) and, for a
//! put, the object (`u32` length + JSON). Integers are little-endian.

use std::fs::{File, OpenOptions};
use std::io::{self, Read as _};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

const MAGIC: u32 = 0xA2A0_3A1E;
const HEADER: usize = 12;

/// How much of the file is zero-filled ahead of the records.
const PREALLOCATE: u64 = 4 * 1024 * 1024;

/// One write in a record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Put { resource: String, namespace: String, name: String, object: Vec<u8> },
    Delete { resource: String, namespace: String, name: String },
}

/// One group commit: operations with consecutive resourceVersions from `first_rv`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub first_rv: u64,
    pub ops: Vec<Op>,
}

impl Record {
    pub fn last_rv(&self) -> u64 {
        self.first_rv + self.ops.len() as u64 - 1
    }
}

/// A borrowed operation, as the writer appends it.
pub enum OpRef<'a> {
    Put { resource: &'a str, namespace: &'a str, name: &'a str, object: &'a [u8] },
    Delete { resource: &'a str, namespace: &'a str, name: &'a str },
}

pub struct Wal {
    file: File,
    path: PathBuf,
    /// Where the next record goes.
    offset: u64,
    /// The file's size.
    len: u64,
    buf: Vec<u8>,
}

impl Wal {
    /// Opens (or creates, zero-filled and with its directory entry synced) the log at `path`
    /// and returns it with every intact record in it, in file order. Appends start at the
    /// beginning again: call [`Wal::reset`] only after the records are safe elsewhere.
    pub fn open(path: &Path) -> io::Result<(Wal, Vec<Record>)> {
        let created = !path.exists();
        let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(false).mode(0o600).open(path)?;
        let mut records = Vec::new();
        if created {
            if let Some(dir) = path.parent() {
                File::open(dir)?.sync_all()?;
            }
        } else {
            let mut data = Vec::new();
            file.read_to_end(&mut data)?;
            let mut at = 0;
            while let Some((record, next)) = decode(&data, at) {
                records.push(record);
                at = next;
            }
        }
        let len = file.metadata()?.len();
        let mut wal = Wal { file, path: path.to_path_buf(), offset: 0, len, buf: Vec::new() };
        wal.preallocate()?;
        Ok((wal, records))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes of records since the last reset.
    pub fn written(&self) -> u64 {
        self.offset
    }

    /// Appends one record and waits until it is on disk.
    pub fn append(&mut self, first_rv: u64, ops: &[OpRef<'_>]) -> io::Result<()> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        buf.extend_from_slice(&[0; HEADER]);
        buf.extend_from_slice(&first_rv.to_le_bytes());
        buf.extend_from_slice(&(ops.len() as u32).to_le_bytes());
        for op in ops {
            let (tag, resource, namespace, name, object) = match op {
                OpRef::Put { resource, namespace, name, object } => (1u8, resource, namespace, name, Some(object)),
                OpRef::Delete { resource, namespace, name } => (2u8, resource, namespace, name, None),
            };
            buf.push(tag);
            for s in [resource, namespace, name] {
                let len = u16::try_from(s.len()).map_err(|_| io::Error::other(format!("key part too long: {s:?}")))?;
                buf.extend_from_slice(&len.to_le_bytes());
                buf.extend_from_slice(s.as_bytes());
            }
            if let Some(object) = object {
                let len = u32::try_from(object.len()).map_err(|_| io::Error::other("object larger than 4 GiB"))?;
                buf.extend_from_slice(&len.to_le_bytes());
                buf.extend_from_slice(object);
            }
        }
        let payload_len = buf.len() - HEADER;
        let payload_len_u32 = u32::try_from(payload_len).map_err(|_| io::Error::other("record larger than 4 GiB"))?;
        let crc = crc32c(&buf[HEADER..]);
        buf[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        buf[4..8].copy_from_slice(&payload_len_u32.to_le_bytes());
        buf[8..12].copy_from_slice(&crc.to_le_bytes());
        let result = self.file.write_all_at(&buf, self.offset).and_then(|()| self.file.sync_data());
        if result.is_ok() {
            self.offset += buf.len() as u64;
            self.len = self.len.max(self.offset);
        }
        self.buf = buf;
        result
    }

    /// Starts over at the beginning of the file (its records are durable elsewhere now);
    /// a file that grew far past its preallocation is cut back to it.
    pub fn reset(&mut self) -> io::Result<()> {
        self.offset = 0;
        if self.len > 2 * PREALLOCATE {
            self.file.set_len(PREALLOCATE)?;
            self.file.sync_all()?;
            self.len = PREALLOCATE;
        }
        Ok(())
    }

    fn preallocate(&mut self) -> io::Result<()> {
        if self.len >= PREALLOCATE {
            return Ok(());
        }
        let zeros = vec![0u8; 256 * 1024];
        let mut at = self.len;
        while at < PREALLOCATE {
            let n = zeros.len().min((PREALLOCATE - at) as usize);
            self.file.write_all_at(&zeros[..n], at)?;
            at += n as u64;
        }
        self.file.sync_all()?;
        self.len = PREALLOCATE;
        Ok(())
    }
}

/// The record at `at` and where the next one starts, or None where the log ends (zeros, a
/// torn or damaged record, or the end of the file).
fn decode(data: &[u8], at: usize) -> Option<(Record, usize)> {
    let header = data.get(at..at + HEADER)?;
    let word = |i: usize| u32::from_le_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
    if word(0) != MAGIC {
        return None;
    }
    let len = word(4) as usize;
    let payload = data.get(at + HEADER..(at + HEADER).checked_add(len)?)?;
    if crc32c(payload) != word(8) {
        return None;
    }
    let mut r = Reader { data: payload, at: 0 };
    let first_rv = r.u64()?;
    let count = r.u32()? as usize;
    if count == 0 {
        return None;
    }
    let mut ops = Vec::with_capacity(count.min(4096));
    for _ in 0..count {
        let tag = r.take(1)?[0];
        let resource = r.string()?;
        let namespace = r.string()?;
        let name = r.string()?;
        ops.push(match tag {
            1 => {
                let n = r.u32()? as usize;
                Op::Put { resource, namespace, name, object: r.take(n)?.to_vec() }
            }
            2 => Op::Delete { resource, namespace, name },
            _ => return None,
        });
    }
    if r.at != payload.len() {
        return None;
    }
    Some((Record { first_rv, ops }, at + HEADER + len))
}

struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.data.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(s)
    }

    fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Option<u64> {
        let b = self.take(8)?;
        Some(u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
    }

    fn string(&mut self) -> Option<String> {
        let b = self.take(2)?;
        let n = u16::from_le_bytes([b[0], b[1]]) as usize;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
}

/// CRC-32C (Castagnoli), the checksum etcd's and ext4's logs use.
fn crc32c(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 { (c >> 1) ^ 0x82F6_3B78 } else { c >> 1 };
                k += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    let mut crc = !0u32;
    for &b in data {
        crc = TABLE[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put<'a>(name: &'a str, object: &'a [u8]) -> OpRef<'a> {
        OpRef::Put { resource: "a2a.dev/agents", namespace: "default", name, object }
    }

    fn names(records: &[Record]) -> Vec<(u64, usize)> {
        records.iter().map(|r| (r.first_rv, r.ops.len())).collect()
    }

    #[test]
    fn crc32c_matches_the_reference_value() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn records_come_back_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal");
        let (mut wal, records) = Wal::open(&path).unwrap();
        assert!(records.is_empty());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), PREALLOCATE);
        wal.append(1, &[put("a", b"{\"x\":1}"), put("b", b"{}")]).unwrap();
        wal.append(3, &[OpRef::Delete { resource: "a2a.dev/agents", namespace: "default", name: "a" }]).unwrap();
        drop(wal);
        let (_, records) = Wal::open(&path).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(
            records[0].ops[0],
            Op::Put {
                resource: "a2a.dev/agents".into(),
                namespace: "default".into(),
                name: "a".into(),
                object: b"{\"x\":1}".to_vec()
            }
        );
        assert_eq!(records[0].last_rv(), 2);
        assert_eq!(
            records[1],
            Record {
                first_rv: 3,
                ops: vec![Op::Delete {
                    resource: "a2a.dev/agents".into(),
                    namespace: "default".into(),
                    name: "a".into()
                }]
            }
        );
    }

    #[test]
    fn a_torn_or_damaged_record_ends_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal");
        let (mut wal, _) = Wal::open(&path).unwrap();
        wal.append(1, &[put("a", b"{}")]).unwrap();
        let first_end = wal.written();
        wal.append(2, &[put("b", b"{\"long\":\"value\"}")]).unwrap();
        wal.append(3, &[put("c", b"{}")]).unwrap();
        drop(wal);
        // Flip one byte inside the second record's object.
        let mut data = std::fs::read(&path).unwrap();
        data[first_end as usize + HEADER + 40] ^= 0x40;
        std::fs::write(&path, &data).unwrap();
        let (_, records) = Wal::open(&path).unwrap();
        assert_eq!(names(&records), [(1, 1)]);
    }

    #[test]
    fn after_a_reset_old_records_remain_behind_the_new_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal");
        let (mut wal, _) = Wal::open(&path).unwrap();
        wal.append(1, &[put("a", b"{}")]).unwrap();
        wal.append(2, &[put("b", b"{}")]).unwrap();
        wal.reset().unwrap();
        wal.append(3, &[put("c", b"{}")]).unwrap();
        drop(wal);
        // The record of version 3 overwrote version 1's (same size); version 2's follows it.
        // The store skips records at or below its durable version, so that one is harmless.
        let (_, records) = Wal::open(&path).unwrap();
        assert_eq!(names(&records), [(3, 1), (2, 1)]);
    }

    #[test]
    fn a_log_grown_past_its_preallocation_is_cut_back_on_reset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal");
        let (mut wal, _) = Wal::open(&path).unwrap();
        let big = vec![b'x'; (3 * PREALLOCATE) as usize];
        wal.append(1, &[put("big", &big)]).unwrap();
        assert!(std::fs::metadata(&path).unwrap().len() > 2 * PREALLOCATE);
        wal.reset().unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), PREALLOCATE);
        wal.append(2, &[put("a", b"{}")]).unwrap();
        drop(wal);
        let (_, records) = Wal::open(&path).unwrap();
        assert_eq!(names(&records), [(2, 1)]);
    }
}
