//! The journal on disk: segment files of checksummed records, read back after a crash.
//!
//! A segment is named after the seq of its first record (`00000000000000000001.journal`) and
//! holds records one after another:
//!
//! ```text
//! magic "EJ" | version 1 | kind (u8) | body length (u32 LE) | CRC-32 of body (u32 LE) | body
//! write body:  seq (u64 LE) | method length (u8) | method | key length (u16 LE) | key | payload
//! mark body:   seq (u64 LE) | flags (u8)
//! ```
//!
//! A write record is a forwarded write; a mark record adds flags to an earlier write (a write
//! that got no quorum is marked in doubt). A torn or corrupt record ends a segment: in the
//! last segment it is the tail of a crash and is cut off; anywhere else it is damage and the
//! journal refuses to open.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;

const MAGIC: &[u8; 3] = b"EJ\x01";
const HEADER: usize = 3 + 1 + 4 + 4;
const KIND_WRITE: u8 = 1;
const KIND_MARK: u8 = 2;
/// A record larger than this is damage, not a write (the request body limit is far lower).
const MAX_BODY: usize = 1 << 30;

/// Flags a mark can set on a write.
pub const IN_DOUBT: u8 = 1;

/// One record as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    Write { seq: u64, method: Bytes, key: Bytes, payload: Bytes },
    Mark { seq: u64, flags: u8 },
}

impl Record {
    pub fn seq(&self) -> u64 {
        match self {
            Record::Write { seq, .. } | Record::Mark { seq, .. } => *seq,
        }
    }

    /// Append this record's bytes to ``out``.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut body = Vec::new();
        let kind = match self {
            Record::Write { seq, method, key, payload } => {
                body.extend_from_slice(&seq.to_le_bytes());
                body.push(u8::try_from(method.len()).unwrap_or(u8::MAX));
                body.extend_from_slice(&method[..method.len().min(255)]);
                let key_len = key.len().min(u16::MAX as usize);
                body.extend_from_slice(&(key_len as u16).to_le_bytes());
                body.extend_from_slice(&key[..key_len]);
                body.extend_from_slice(payload);
                KIND_WRITE
            }
            Record::Mark { seq, flags } => {
                body.extend_from_slice(&seq.to_le_bytes());
                body.push(*flags);
                KIND_MARK
            }
        };
        out.extend_from_slice(MAGIC);
        out.push(kind);
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        out.extend_from_slice(&body);
    }
}

/// Decode the record at the start of ``buf``: the record and its length, None when the bytes
/// are torn or corrupt.
pub fn decode(buf: &[u8]) -> Option<(Record, usize)> {
    if buf.len() < HEADER || &buf[..3] != MAGIC {
        return None;
    }
    let kind = buf[3];
    let len = u32::from_le_bytes(buf[4..8].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(buf[8..12].try_into().ok()?);
    if len > MAX_BODY || buf.len() < HEADER + len {
        return None;
    }
    let body = &buf[HEADER..HEADER + len];
    if crc32fast::hash(body) != crc || body.len() < 8 {
        return None;
    }
    let seq = u64::from_le_bytes(body[..8].try_into().ok()?);
    let record = match kind {
        KIND_WRITE => {
            let m = *body.get(8)? as usize;
            let method = body.get(9..9 + m)?;
            let k_at = 9 + m;
            let k = u16::from_le_bytes(body.get(k_at..k_at + 2)?.try_into().ok()?) as usize;
            let key = body.get(k_at + 2..k_at + 2 + k)?;
            let payload = &body[k_at + 2 + k..];
            Record::Write { seq, method: Bytes::copy_from_slice(method),
                            key: Bytes::copy_from_slice(key),
                            payload: Bytes::copy_from_slice(payload) }
        }
        KIND_MARK => Record::Mark { seq, flags: *body.get(8)? },
        _ => return None,
    };
    Some((record, HEADER + len))
}

/// One segment file and the seqs it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    pub path: PathBuf,
    pub first: u64,
    /// The seq of its last write record (``first - 1`` while it has none).
    pub last: u64,
}

pub fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}.journal"))
}

/// Every segment in ``dir``, oldest first.
pub fn list(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut found: Vec<(u64, PathBuf)> = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let first = path.file_name().and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".journal")).and_then(|n| n.parse::<u64>().ok());
        if let Some(first) = first {
            found.push((first, path));
        }
    }
    found.sort();
    Ok(found.into_iter().map(|(_, p)| p).collect())
}

/// Read every record of one segment; the records and the length of the intact prefix.
pub fn read(path: &Path) -> io::Result<(Vec<Record>, u64, u64)> {
    let mut data = Vec::new();
    File::open(path)?.read_to_end(&mut data)?;
    let mut at = 0;
    let mut records = Vec::new();
    while let Some((record, used)) = decode(&data[at..]) {
        records.push(record);
        at += used;
    }
    Ok((records, at as u64, data.len() as u64))
}

/// Cut a segment back to its intact prefix (the tail a crash tore).
pub fn cut(path: &Path, keep: u64) -> io::Result<()> {
    let file = OpenOptions::new().write(true).open(path)?;
    file.set_len(keep)?;
    file.sync_all()
}

/// Open (creating) a segment for appending.
pub fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// Make a new file's directory entry durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Write ``bytes`` and, when ``durable``, wait until the disk has them.
pub fn write(file: &mut File, bytes: &[u8], durable: bool) -> io::Result<()> {
    file.write_all(bytes)?;
    if durable {
        file.sync_data()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_record(seq: u64) -> Record {
        Record::Write { seq, method: Bytes::from_static(b"POST"), key: Bytes::from_static(b"k1"),
                        payload: Bytes::from(format!("body {seq}")) }
    }

    #[test]
    fn records_round_trip_and_damage_is_detected() {
        let mut buf = Vec::new();
        write_record(7).encode(&mut buf);
        Record::Mark { seq: 7, flags: IN_DOUBT }.encode(&mut buf);
        let (first, n) = decode(&buf).unwrap();
        assert_eq!(first, write_record(7));
        let (second, m) = decode(&buf[n..]).unwrap();
        assert_eq!(second, Record::Mark { seq: 7, flags: IN_DOUBT });
        assert_eq!(n + m, buf.len());
        for i in 0..n {
            let mut bad = buf[..n].to_vec();
            bad[i] ^= 0x40;
            assert!(decode(&bad).is_none(), "a flipped byte at {i} went unnoticed");
        }
        assert!(decode(&buf[..n - 1]).is_none(), "a torn record is not a record");
    }

    #[test]
    fn a_torn_tail_is_found_and_cut() {
        let dir = std::env::temp_dir().join(format!("endosec-seg-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = segment_path(&dir, 1);
        let mut buf = Vec::new();
        for seq in 1..=3 {
            write_record(seq).encode(&mut buf);
        }
        let whole = buf.len();
        write_record(4).encode(&mut buf);
        buf.truncate(buf.len() - 3);
        fs::write(&path, &buf).unwrap();
        let (records, intact, len) = read(&path).unwrap();
        assert_eq!(records.len(), 3);
        assert_eq!(intact as usize, whole);
        assert!(len > intact);
        cut(&path, intact).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().len() as usize, whole);
        assert_eq!(list(&dir).unwrap(), vec![path]);
        fs::remove_dir_all(&dir).unwrap();
    }
}
