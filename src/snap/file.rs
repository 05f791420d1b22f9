//! The snapshot file format: encoding and checked decoding.
//!
//! The layout is specified in `docs/snapshot.md`; in short (little-endian):
//!
//! ```text
//! offset  size        field
//! 0       8           magic "CAIRNSNP"
//! 8       4           u32 format version (1)
//! 12      8           u64 index   (raft index of the last entry the state covers)
//! 20      8           u64 term    (term of that entry)
//! 28      4 + 8*n     voters:   u32 count n, then n u64 node ids
//! ..      4 + 8*m     learners: u32 count m, then m u64 node ids
//! ..      8 + len     data:     u64 len, then len bytes (a sections container)
//! end-4   4           u32 CRC-32 (IEEE, crc32fast) of every byte before it
//! ```
//!
//! # Decoding order
//!
//! [`decode_snapshot`] checks the magic, then the version (the version decides
//! where the CRC sits and what it covers), then the CRC over everything before
//! the last four bytes, and only then reads a length or count. No field is
//! trusted before its checksum passed; even so every length is checked against
//! the bytes left, so a CRC-valid but malformed buffer is an error, not a
//! panic. Bytes left over after the data are an error too, which makes the
//! encoding canonical: `encode_snapshot(decode_snapshot(x)?) == x`.

use crate::codec::{put_u32, put_u64, DecodeError, Reader};
use bytes::Bytes;

/// First bytes of every snapshot file.
pub const MAGIC: &[u8; 8] = b"CAIRNSNP";
/// The format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Where the index field starts (after magic and version).
pub const INDEX_OFFSET: usize = 8 + 4;
/// Size of the trailing CRC.
const CRC_LEN: usize = 4;
/// The smallest possible file: magic, version, index, term, two empty id
/// lists, an empty data field and the CRC.
pub const MIN_LEN: usize = 8 + 4 + 8 + 8 + 4 + 4 + 8 + CRC_LEN;

/// What raft's `SnapshotMetadata` says about a snapshot, `ConfState` included.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotMeta {
    /// Index of the last log entry the state includes.
    pub index: u64,
    /// Term of that entry.
    pub term: u64,
    /// Voting members as of `index` (raft's `ConfState.voters`), in raft's order.
    pub voters: Vec<u64>,
    /// Non-voting members as of `index` (raft's `ConfState.learners`).
    pub learners: Vec<u64>,
}

/// A snapshot: metadata plus the state container (see [`super::encode_sections`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Where in the log this state stands, and the membership at that point.
    pub meta: SnapshotMeta,
    /// The encoded state sections. Opaque at this layer.
    pub data: Bytes,
}

fn put_ids(buf: &mut Vec<u8>, ids: &[u64]) {
    let count = u32::try_from(ids.len()).expect("fewer than 2^32 members");
    put_u32(buf, count);
    for id in ids {
        put_u64(buf, *id);
    }
}

fn read_ids(r: &mut Reader, what: &'static str) -> Result<Vec<u64>, DecodeError> {
    let count = r.u32(what)? as usize;
    if count > r.remaining() / 8 {
        return Err(r.error(what));
    }
    (0..count).map(|_| r.u64(what)).collect()
}

/// Encodes `s` as a complete snapshot file, CRC included.
pub fn encode_snapshot(s: &Snapshot) -> Vec<u8> {
    let (head, tail) = encode_snapshot_parts(s);
    let mut buf = Vec::with_capacity(head.len() + s.data.len() + tail.len());
    buf.extend_from_slice(&head);
    buf.extend_from_slice(&s.data);
    buf.extend_from_slice(&tail);
    buf
}

/// The file [`encode_snapshot`] returns, as the bytes before `s.data` and the
/// bytes after it: written one after the other they make the file, without
/// a copy of the data (which can be most of the process's memory).
pub fn encode_snapshot_parts(s: &Snapshot) -> (Vec<u8>, [u8; 4]) {
    let m = &s.meta;
    let mut head = Vec::with_capacity(MIN_LEN - 4 + 8 * (m.voters.len() + m.learners.len()));
    head.extend_from_slice(MAGIC);
    put_u32(&mut head, FORMAT_VERSION);
    put_u64(&mut head, m.index);
    put_u64(&mut head, m.term);
    put_ids(&mut head, &m.voters);
    put_ids(&mut head, &m.learners);
    put_u64(&mut head, s.data.len() as u64);
    let mut crc = crc32fast::Hasher::new();
    crc.update(&head);
    crc.update(&s.data);
    (head, crc.finalize().to_le_bytes())
}

/// Decodes and verifies a snapshot file. `data` in the result is a slice of
/// `buf`: no copy. See the module docs for the order of the checks.
pub fn decode_snapshot(buf: Bytes) -> Result<Snapshot, DecodeError> {
    let mut head = Reader::new(buf.clone());
    if head.take(MAGIC.len(), "magic")?[..] != MAGIC[..] {
        return Err(DecodeError {
            offset: 0,
            what: "bad magic",
        });
    }
    if head.u32("format version")? != FORMAT_VERSION {
        return Err(DecodeError {
            offset: MAGIC.len(),
            what: "unsupported format version",
        });
    }
    if buf.len() < MIN_LEN {
        return Err(DecodeError {
            offset: buf.len(),
            what: "truncated snapshot",
        });
    }
    let body_len = buf.len() - CRC_LEN;
    let mut tail = Reader::new(buf.slice(body_len..));
    let stored_crc = tail.u32("crc")?;
    if crc32fast::hash(&buf[..body_len]) != stored_crc {
        return Err(DecodeError {
            offset: body_len,
            what: "crc mismatch",
        });
    }

    // The checksum passed: read the fields, still bounds-checked.
    let mut r = Reader::new(buf.slice(..body_len));
    r.take(MAGIC.len() + 4, "header")?;
    let index = r.u64("index")?;
    let term = r.u64("term")?;
    let voters = read_ids(&mut r, "voters")?;
    let learners = read_ids(&mut r, "learners")?;
    let data_len = r.u64("data length")?;
    let data_len = usize::try_from(data_len).map_err(|_| r.error("data length"))?;
    let data = r.take(data_len, "data")?;
    r.finish("bytes after the data")?;
    Ok(Snapshot {
        meta: SnapshotMeta {
            index,
            term,
            voters,
            learners,
        },
        data,
    })
}
