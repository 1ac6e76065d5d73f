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

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A record that does not decode, followed by intact records the database does not have:
    /// not the torn end of a crashed append but damage in the middle of the log.
    #[error(
        "{path}: the record at offset {offset} is damaged ({reason}), and {following} intact \
         record(s) after it hold acknowledged writes (resourceVersions {first_rv} to {last_rv}); \
         the store does not start without them. The log is left as it is. To start with the \
         records before offset {offset} and drop the rest (a copy of the log is kept), run: \
         a2a store repair --wal {path} --truncate-at {offset}"
    )]
    Damaged { path: PathBuf, offset: u64, reason: &'static str, following: usize, first_rv: u64, last_rv: u64 },
    #[error(
        "{path}: offset {offset} is not where a record of the log starts (records start at {starts}); \
         the first record that does not decode is at offset {end}"
    )]
    NotARecordStart { path: PathBuf, offset: u64, starts: String, end: u64 },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One write in a record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Put { resource: String, namespace: String, name: String, object: Vec<u8> },
    Delete { resource: String, namespace: String, name: String },
}

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (verb, resource, namespace, name) = match self {
            Op::Put { resource, namespace, name, .. } => ("put", resource, namespace, name),
            Op::Delete { resource, namespace, name } => ("delete", resource, namespace, name),
        };
        if namespace.is_empty() {
            write!(f, "{verb} {resource} {name}")
        } else {
            write!(f, "{verb} {resource} {namespace}/{name}")
        }
    }
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

/// What reading the log from its beginning finds.
#[derive(Debug)]
pub struct Scan {
    /// The records that follow one another from offset 0, with their offsets.
    pub records: Vec<(u64, Record)>,
    /// Where they end.
    pub end: u64,
    /// What is at `end`.
    pub tail: Tail,
    /// Intact records after `end` that carry resourceVersions past every one before it (and
    /// past the database's): acknowledged writes that a damaged record cuts off.
    pub cut_off: Vec<(u64, Record)>,
}

/// How the chain of records ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tail {
    /// Zeros (the preallocated space) or the end of the file.
    Clean,
    /// Bytes of records from before the last checkpoint, partly overwritten since.
    Leftover,
    /// A record header whose record does not decode: an append cut short, or damage.
    Torn(&'static str),
}

impl Scan {
    fn of(data: &[u8], durable: u64) -> Scan {
        let mut records = Vec::new();
        let mut at = 0;
        let tail = loop {
            match decode(data, at) {
                Ok((record, next)) => {
                    records.push((at as u64, record));
                    at = next;
                }
                Err(Bad::End) => break Tail::Clean,
                Err(Bad::NoMagic) => break Tail::Leftover,
                Err(Bad::Damaged(reason)) => break Tail::Torn(reason),
            }
        };
        let mut cut_off = Vec::new();
        // Zeros end the chain too when a lost write left a block of them in the middle: the
        // whole file is looked at, whatever ends the chain.
        {
            // Records written since the last checkpoint follow one another from offset 0, and
            // carry versions past the database's; older ones (overwritten in part since) carry
            // versions the database holds already. An intact newer record beyond the end of
            // the chain can only be one a damaged record cuts off.
            let mut newest = records.iter().map(|(_, r)| r.last_rv()).fold(durable, u64::max);
            let mut p = at + 1;
            while p + HEADER <= data.len() {
                if data[p..p + 4] != MAGIC.to_le_bytes() {
                    p += 1;
                    continue;
                }
                match decode(data, p) {
                    Ok((record, next)) => {
                        if record.last_rv() > newest {
                            newest = record.last_rv();
                            cut_off.push((p as u64, record));
                        }
                        p = next;
                    }
                    Err(_) => p += 1,
                }
            }
        }
        Scan { records, end: at as u64, tail, cut_off }
    }
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

fn open_file(path: &Path, create: bool) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

impl Wal {
    /// Opens (or creates, zero-filled and with its directory entry synced) the log at `path`
    /// and returns it with every intact record in it, in file order. `durable` is the last
    /// resourceVersion the database holds: a damaged record followed by intact records past it
    /// is [`Error::Damaged`], and the file is left untouched. A damaged record at the end (an
    /// append cut short by a crash: never acknowledged) is dropped with a warning. Appends
    /// start at the beginning again: call [`Wal::reset`] only after the records are safe
    /// elsewhere.
    pub fn open(path: &Path, durable: u64) -> Result<(Wal, Vec<Record>)> {
        let io = |source| Error::Io { path: path.to_path_buf(), source };
        let created = !path.exists();
        let mut file = open_file(path, true).map_err(io)?;
        let mut records = Vec::new();
        if created {
            if let Some(dir) = path.parent() {
                File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
            }
        } else {
            let mut data = Vec::new();
            file.read_to_end(&mut data).map_err(io)?;
            let scan = Scan::of(&data, durable);
            if let (Some((offset, first)), Some((_, last))) = (scan.cut_off.first(), scan.cut_off.last()) {
                // The damaged record starts where the chain of intact ones ends.
                let reason = match scan.tail {
                    Tail::Torn(reason) => reason,
                    Tail::Leftover => "no record header where the next record should start",
                    Tail::Clean => "zeros where the next record should start",
                };
                debug_assert!(*offset > scan.end);
                return Err(Error::Damaged {
                    path: path.to_path_buf(),
                    offset: scan.end,
                    reason,
                    following: scan.cut_off.len(),
                    first_rv: first.first_rv,
                    last_rv: last.last_rv(),
                });
            }
            if let Tail::Torn(reason) = scan.tail {
                tracing::warn!(
                    path = %path.display(),
                    offset = scan.end,
                    reason,
                    "the last record of the write-ahead log is torn (an append cut short by a crash, \
                     never acknowledged); starting with the records before it"
                );
            }
            records = scan.records.into_iter().map(|(_, r)| r).collect();
        }
        let len = file.metadata().map_err(io)?.len();
        let mut wal = Wal { file, path: path.to_path_buf(), offset: 0, len, buf: Vec::new() };
        wal.preallocate().map_err(io)?;
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
    ///
    /// When the disk has no room for it ([`is_no_space`]), the log takes the record back
    /// before returning the error: the file is cut back to its size before and the record's
    /// header zeroed and synced, so that it never comes back after a restart (its writers are
    /// told it failed). Any other error, or one while taking the record back, is returned as
    /// [`AppendError::Unknown`]: what is on disk is no longer known.
    pub fn append(&mut self, first_rv: u64, ops: &[OpRef<'_>]) -> Result<(), AppendError> {
        let mut buf = std::mem::take(&mut self.buf);
        let result = self.encode(&mut buf, first_rv, ops).map_err(AppendError::Unknown).and_then(|()| {
            match self.file.write_all_at(&buf, self.offset) {
                Err(e) if is_no_space(&e) => Err(match self.take_back(buf.len() as u64) {
                    Ok(()) => AppendError::NoSpace(e),
                    Err(undo) => AppendError::Unknown(io::Error::new(
                        e.kind(),
                        format!("{e}; then taking the partial record back failed: {undo}"),
                    )),
                }),
                Err(e) => Err(AppendError::Unknown(e)),
                Ok(()) => self.file.sync_data().map_err(AppendError::Unknown),
            }
        });
        if result.is_ok() {
            self.offset += buf.len() as u64;
            self.len = self.len.max(self.offset);
        }
        self.buf = buf;
        result
    }

    fn encode(&self, buf: &mut Vec<u8>, first_rv: u64, ops: &[OpRef<'_>]) -> io::Result<()> {
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
        Ok(())
    }

    /// Undoes a partial write of `n` bytes at the current offset.
    fn take_back(&mut self, n: u64) -> io::Result<()> {
        if self.offset + n > self.len {
            self.file.set_len(self.len)?;
        }
        let header = (self.len - self.offset).min(HEADER as u64) as usize;
        self.file.write_all_at(&[0; HEADER][..header], self.offset)?;
        self.file.sync_all()
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

/// Why an append failed.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// The disk is full; nothing of the record is left in the log.
    #[error("{0}")]
    NoSpace(#[source] io::Error),
    /// The record may or may not be on disk.
    #[error("{0}")]
    Unknown(#[source] io::Error),
}

/// Whether an I/O error means the filesystem (or the user's quota) has no room left.
pub fn is_no_space(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
}

/// Reads the log at `path` as [`Wal::open`] would, changing nothing.
pub fn inspect(path: &Path, durable: u64) -> Result<Scan> {
    let io = |source| Error::Io { path: path.to_path_buf(), source };
    let mut data = Vec::new();
    open_file(path, false).and_then(|mut f| f.read_to_end(&mut data)).map_err(io)?;
    Ok(Scan::of(&data, durable))
}

/// What [`truncate_at`] did.
#[derive(Debug)]
pub struct Truncated {
    /// The copy of the log as it was.
    pub copy: PathBuf,
    /// The records kept (from offset 0 to the cut).
    pub kept: usize,
    /// The intact records at or after the cut that the database does not hold: the writes
    /// dropped.
    pub dropped: Vec<(u64, Record)>,
    /// Why the chain of intact records ended, if the cut dropped a record that cannot be read.
    pub unreadable: Option<&'static str>,
}

/// Cuts the log at `path` at `offset`, a place where one of its records starts or where its
/// chain of intact records ends: everything from there on is zeroed (the records before it
/// stay, and the next start applies them). A copy of the whole log is written beside it first,
/// to `copy` (which must not exist), and synced.
pub fn truncate_at(path: &Path, offset: u64, durable: u64, copy: &Path) -> Result<Truncated> {
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| Error::Io { path: p, source }
    };
    let mut data = Vec::new();
    let mut file = open_file(path, false).map_err(io(path))?;
    file.read_to_end(&mut data).map_err(io(path))?;
    let scan = Scan::of(&data, durable);
    let starts: Vec<u64> = scan.records.iter().map(|(at, _)| *at).chain([scan.end]).collect();
    if !starts.contains(&offset) {
        return Err(Error::NotARecordStart {
            path: path.to_path_buf(),
            offset,
            starts: starts.iter().map(u64::to_string).collect::<Vec<_>>().join(", "),
            end: scan.end,
        });
    }
    {
        use std::io::Write as _;
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(copy)
            .map_err(io(copy))?;
        out.write_all(&data).and_then(|()| out.sync_all()).map_err(io(copy))?;
        if let Some(dir) = copy.parent() {
            File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))?;
        }
    }
    let mut dropped: Vec<(u64, Record)> =
        scan.records.iter().filter(|(at, r)| *at >= offset && r.last_rv() > durable).cloned().collect();
    dropped.extend(scan.cut_off.iter().cloned());
    let kept = scan.records.iter().filter(|(at, _)| *at < offset).count();
    let zeros = vec![0u8; 256 * 1024];
    let mut at = offset;
    while at < data.len() as u64 {
        let n = zeros.len().min((data.len() as u64 - at) as usize);
        file.write_all_at(&zeros[..n], at).map_err(io(path))?;
        at += n as u64;
    }
    file.sync_all().map_err(io(path))?;
    let unreadable = match scan.tail {
        Tail::Torn(reason) if offset <= scan.end => Some(reason),
        Tail::Leftover | Tail::Clean if offset <= scan.end && !scan.cut_off.is_empty() => Some("no record header"),
        _ => None,
    };
    Ok(Truncated { copy: copy.to_path_buf(), kept, dropped, unreadable })
}

/// Why the log ends at some offset.
enum Bad {
    /// Zeros or the end of the file.
    End,
    /// Not a record header.
    NoMagic,
    /// A record header whose record does not decode.
    Damaged(&'static str),
}

/// The record at `at` and where the next one starts, or why there is none.
fn decode(data: &[u8], at: usize) -> Result<(Record, usize), Bad> {
    let Some(header) = data.get(at..at + HEADER) else {
        return Err(if data.len() <= at || data[at..].iter().all(|b| *b == 0) { Bad::End } else { Bad::NoMagic });
    };
    let word = |i: usize| u32::from_le_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
    if word(0) != MAGIC {
        return Err(if header.iter().all(|b| *b == 0) { Bad::End } else { Bad::NoMagic });
    }
    let len = word(4) as usize;
    let payload = (at + HEADER)
        .checked_add(len)
        .and_then(|end| data.get(at + HEADER..end))
        .ok_or(Bad::Damaged("its length runs past the end of the file"))?;
    if crc32c(payload) != word(8) {
        return Err(Bad::Damaged("checksum mismatch"));
    }
    let malformed = Bad::Damaged("checksum matches but the payload is malformed");
    let mut r = Reader { data: payload, at: 0 };
    let first_rv = r.u64().ok_or(Bad::Damaged("checksum matches but the payload is malformed"))?;
    let count = r.u32().ok_or(Bad::Damaged("checksum matches but the payload is malformed"))? as usize;
    if count == 0 {
        return Err(malformed);
    }
    let mut ops = Vec::with_capacity(count.min(4096));
    let mut op = || -> Option<Op> {
        let tag = r.take(1)?[0];
        let resource = r.string()?;
        let namespace = r.string()?;
        let name = r.string()?;
        match tag {
            1 => {
                let n = r.u32()? as usize;
                Some(Op::Put { resource, namespace, name, object: r.take(n)?.to_vec() })
            }
            2 => Some(Op::Delete { resource, namespace, name }),
            _ => None,
        }
    };
    for _ in 0..count {
        ops.push(op().ok_or(Bad::Damaged("checksum matches but the payload is malformed"))?);
    }
    if r.at != payload.len() {
        return Err(malformed);
    }
    Ok((Record { first_rv, ops }, at + HEADER + len))
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
        let (mut wal, records) = Wal::open(&path, 0).unwrap();
        assert!(records.is_empty());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), PREALLOCATE);
        wal.append(1, &[put("a", b"{\"x\":1}"), put("b", b"{}")]).unwrap();
        wal.append(3, &[OpRef::Delete { resource: "a2a.dev/agents", namespace: "default", name: "a" }]).unwrap();
        drop(wal);
        let (_, records) = Wal::open(&path, 0).unwrap();
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

    /// The log of 21 records, and the offset of each.
    fn log_of_21(path: &Path) -> Vec<u64> {
        let (mut wal, _) = Wal::open(path, 0).unwrap();
        let mut offsets = Vec::new();
        for rv in 1..=21 {
            offsets.push(wal.written());
            let name = format!("o{rv}");
            wal.append(rv, &[put(&name, b"{\"spec\":{\"long\":\"value\"}}")]).unwrap();
        }
        offsets
    }

    fn flip(path: &Path, at: u64) {
        let mut data = std::fs::read(path).unwrap();
        data[at as usize] ^= 0x40;
        std::fs::write(path, &data).unwrap();
    }

    #[test]
    fn a_damaged_record_followed_by_intact_ones_refuses_to_open_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal");
        let offsets = log_of_21(&path);
        // One byte inside the 6th record's object, then its length field: both are damage.
        for (at, reason) in [(offsets[5] + HEADER as u64 + 40, "checksum mismatch"), (offsets[5] + 6, "")] {
            let before = std::fs::read(&path).unwrap();
            flip(&path, at);
            let damaged = std::fs::read(&path).unwrap();
            let err = Wal::open(&path, 0).err().expect("a damaged record in the middle");
            let message = err.to_string();
            match &err {
                Error::Damaged { offset, following, first_rv, last_rv, reason: why, .. } => {
                    assert_eq!((*offset, *following, *first_rv, *last_rv), (offsets[5], 15, 7, 21), "{message}");
                    assert!(reason.is_empty() || *why == reason, "{message}");
                }
                other => panic!("{other}"),
            }
            assert!(
                message.contains(&format!("a2a store repair --wal {} --truncate-at {}", path.display(), offsets[5])),
                "{message}"
            );
            assert_eq!(std::fs::read(&path).unwrap(), damaged, "the log is left as it is");
            std::fs::write(&path, &before).unwrap();
        }
        // A block of zeros where the record's header was (a lost write) is damage too.
        let before = std::fs::read(&path).unwrap();
        let mut zeroed = before.clone();
        zeroed[offsets[5] as usize..offsets[5] as usize + 64].fill(0);
        std::fs::write(&path, &zeroed).unwrap();
        let err = Wal::open(&path, 0).err().expect("zeros in the middle");
        assert!(matches!(err, Error::Damaged { offset, following: 15, .. } if offset == offsets[5]), "{err}");
        std::fs::write(&path, &before).unwrap();
        // Records the database holds already do not count: damage among them is harmless.
        flip(&path, offsets[5] + HEADER as u64 + 40);
        let (_, records) = Wal::open(&path, 21).unwrap();
        assert_eq!(records.len(), 5);
    }

    #[test]
    fn a_torn_last_record_is_dropped_and_the_others_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal");
        let offsets = log_of_21(&path);
        // The last append cut short by a crash: its second half never reached the disk.
        let mut data = std::fs::read(&path).unwrap();
        let end = offsets[20] as usize + 40;
        data[end..end + 30].fill(0);
        std::fs::write(&path, &data).unwrap();
        let (_, records) = Wal::open(&path, 0).unwrap();
        assert_eq!(records.len(), 20);
        assert_eq!(records[19].first_rv, 20);
    }

    #[test]
    fn truncating_at_the_damaged_record_keeps_a_copy_and_lists_what_it_drops() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal");
        let offsets = log_of_21(&path);
        flip(&path, offsets[5] + HEADER as u64 + 40);
        let damaged = std::fs::read(&path).unwrap();
        let copy = dir.path().join("wal.copy");
        let err = truncate_at(&path, offsets[5] + 1, 0, &copy).expect_err("not a record start");
        assert!(matches!(err, Error::NotARecordStart { end, .. } if end == offsets[5]), "{err}");
        assert!(!copy.exists());
        let done = truncate_at(&path, offsets[5], 0, &copy).unwrap();
        assert_eq!(done.kept, 5);
        let dropped: Vec<u64> = done.dropped.iter().map(|(_, r)| r.first_rv).collect();
        assert_eq!(dropped, (7..=21).collect::<Vec<_>>());
        assert_eq!(std::fs::read(&copy).unwrap(), damaged);
        let (_, records) = Wal::open(&path, 0).unwrap();
        assert_eq!(names(&records), [(1, 1), (2, 1), (3, 1), (4, 1), (5, 1)]);
        // The copy is never overwritten.
        assert!(truncate_at(&path, offsets[5], 0, &copy).is_err());
    }

    #[test]
    fn an_append_that_does_not_fit_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal");
        let (mut wal, _) = Wal::open(&path, 0).unwrap();
        wal.append(1, &[put("a", b"{}")]).unwrap();
        let at = wal.written();
        // What a failed append leaves at worst: the record's start.
        let mut buf = Vec::new();
        wal.encode(&mut buf, 2, &[put("b", b"{}")]).unwrap();
        wal.file.write_all_at(&buf[..buf.len() / 2], at).unwrap();
        wal.take_back(buf.len() as u64).unwrap();
        drop(wal);
        let data = std::fs::read(&path).unwrap();
        assert_eq!(data.len() as u64, PREALLOCATE);
        assert!(data[at as usize..at as usize + HEADER].iter().all(|b| *b == 0));
        let (_, records) = Wal::open(&path, 0).unwrap();
        assert_eq!(names(&records), [(1, 1)]);
    }

    #[test]
    fn after_a_reset_old_records_remain_behind_the_new_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal");
        let (mut wal, _) = Wal::open(&path, 0).unwrap();
        wal.append(1, &[put("a", b"{}")]).unwrap();
        wal.append(2, &[put("b", b"{}")]).unwrap();
        wal.reset().unwrap();
        wal.append(3, &[put("c", b"{}")]).unwrap();
        drop(wal);
        // The record of version 3 overwrote version 1's (same size); version 2's follows it.
        // The store skips records at or below its durable version, so that one is harmless.
        let (_, records) = Wal::open(&path, 0).unwrap();
        assert_eq!(names(&records), [(3, 1), (2, 1)]);
    }

    #[test]
    fn a_log_grown_past_its_preallocation_is_cut_back_on_reset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal");
        let (mut wal, _) = Wal::open(&path, 0).unwrap();
        let big = vec![b'x'; (3 * PREALLOCATE) as usize];
        wal.append(1, &[put("big", &big)]).unwrap();
        assert!(std::fs::metadata(&path).unwrap().len() > 2 * PREALLOCATE);
        wal.reset().unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), PREALLOCATE);
        wal.append(2, &[put("a", b"{}")]).unwrap();
        drop(wal);
        let (_, records) = Wal::open(&path, 0).unwrap();
        assert_eq!(names(&records), [(2, 1)]);
    }
}
