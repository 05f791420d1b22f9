//! The store's whole state as bytes (for snapshots) and as a hash (for
//! comparing replicas).
//!
//! # Encoding (version 2), little-endian, with `crate::codec`
//!
//! ```text
//! u32 format version (2; 1 is read too: it ends after the keys)
//! i64 current revision
//! i64 compaction revision
//! u64 number of keys, then for each key in ascending key order:
//!     bytes key (u32 length + bytes)
//!     u32 number of versions, then for each, oldest first:
//!         i64 main, i64 sub, i64 create_revision, i64 version, i64 lease
//!         bytes value
//! u32 number of keys changed at the compaction revision whose tombstone or
//! replaced version compaction kept, then for each, in ascending key order:
//!     bytes key
//!     u8 flags: 1 = a tombstone follows, 2 = the replaced version follows
//!     [i64 main, i64 sub]                (the tombstone)
//!     [i64 main, i64 sub, i64 create_revision, i64 version, i64 lease, bytes value]
//! ```
//!
//! A tombstone is a version with `version == 0`. Decoding checks the
//! invariants of the module docs (key order, revision order, no empty
//! history, no leading tombstone, nothing newer than the current revision), so
//! a snapshot that passed its CRC but breaks them is refused, not served.
//! The snapshot file's own CRC (see `snap`) covers these bytes.
//!
//! Decoded keys and values are copied out of the snapshot buffer: sharing it
//! would keep the whole buffer alive for as long as any one value from it.

use super::{index, Error, History, Index, Kept, Result, Revision, Store, Version};
use crate::codec::{put_bytes, put_i64, put_u32, put_u64, put_u8, DecodeError, Reader};
use bytes::Bytes;
use std::collections::BTreeMap;

const FORMAT_VERSION: u32 = 2;

/// A hash of the store's retained history up to a revision, as etcd's HashKV
/// reports it. Replicas that applied the same requests agree on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashKv {
    /// CRC32 over every retained version at or below `revision`.
    pub hash: u32,
    /// The revision hashed up to.
    pub revision: i64,
    /// The compaction revision when the hash was taken.
    pub compact_revision: i64,
}

impl Store {
    /// Encodes the whole state. See the module docs for the format.
    pub fn encode(&self) -> Vec<u8> {
        let mut buf = Vec::new();
        self.encode_into(&mut buf);
        buf
    }

    /// Appends what [`Store::encode`] returns to `buf`, reserving the exact
    /// size first: a snapshot of a large store is written once, in place,
    /// never grown by doubling nor copied.
    pub fn encode_into(&self, buf: &mut Vec<u8>) {
        let size = self.encoded_len();
        buf.reserve(size);
        let start = buf.len();
        // Straight into `buf`: never a second copy of the state.
        self.encode_with(buf, usize::MAX, |_| {});
        debug_assert_eq!(buf.len() - start, size, "the reserved size is exact");
    }

    /// The length of what [`Store::encode`] returns, without encoding.
    pub fn encoded_len(&self) -> usize {
        let kept: usize = (self.kept_deletes.iter())
            .map(|k| {
                5 + k.key.len()
                    + k.tombstone.as_ref().map_or(0, |_| 16)
                    + k.prev.as_ref().map_or(0, |p| 44 + p.value().len())
            })
            .sum();
        32 + kept
            + (self.keys.iter())
                .map(|h| {
                    8 + h[0].key().len() + h.iter().map(|v| 44 + v.value().len()).sum::<usize>()
                })
                .sum::<usize>()
    }

    /// Hands the bytes of [`Store::encode`] to `emit` in pieces of about
    /// `piece_len` bytes (whole keys; a key larger than that is one piece),
    /// so a stream of the state never holds all of it.
    pub fn encode_in_pieces(&self, piece_len: usize, mut emit: impl FnMut(&[u8])) {
        let mut buf = Vec::with_capacity(piece_len.min(1 << 20));
        self.encode_with(&mut buf, piece_len, |b| {
            emit(b);
            b.clear();
        });
        if !buf.is_empty() {
            emit(&buf);
        }
    }

    /// Appends the encoding to `buf`, calling `flush` whenever `buf` holds
    /// `piece_len` bytes or more after a whole key (`flush` may drain it).
    fn encode_with(
        &self,
        buf: &mut Vec<u8>,
        piece_len: usize,
        mut flush: impl FnMut(&mut Vec<u8>),
    ) {
        let mut flush = |buf: &mut Vec<u8>| {
            if buf.len() >= piece_len {
                flush(buf);
            }
        };
        put_u32(buf, FORMAT_VERSION);
        put_i64(buf, self.current);
        put_i64(buf, self.compacted);
        put_u64(buf, self.keys.len() as u64);
        for history in self.keys.iter() {
            put_bytes(buf, history[0].key());
            put_u32(
                buf,
                u32::try_from(history.len()).expect("fewer than 2^32 versions of a key"),
            );
            for v in history.iter() {
                put_version(buf, v);
            }
            flush(buf);
        }
        put_u32(
            buf,
            u32::try_from(self.kept_deletes.len()).expect("fewer than 2^32 keys"),
        );
        for k in &self.kept_deletes {
            put_bytes(buf, &k.key);
            put_u8(
                buf,
                u8::from(k.tombstone.is_some()) | (u8::from(k.prev.is_some()) << 1),
            );
            if let Some(t) = &k.tombstone {
                put_i64(buf, t.main());
                put_i64(buf, t.rev().sub);
            }
            if let Some(p) = &k.prev {
                put_version(buf, p);
            }
            flush(buf);
        }
    }

    /// Decodes a state written by [`Store::encode`], checking its invariants.
    /// The txn limit is the default; set it again with `with_max_txn_ops`.
    pub fn decode(buf: Bytes) -> Result<Self, DecodeError> {
        let mut r = Reader::new(buf);
        let format = r.u32("format version")?;
        if format != 1 && format != FORMAT_VERSION {
            return Err(r.error("unknown mvcc state format version"));
        }
        let current = r.i64("current revision")?;
        let compacted = r.i64("compaction revision")?;
        if current < 1 || compacted < 0 || compacted > current {
            return Err(r.error("revisions out of range"));
        }
        let n_keys = r.u64("key count")?;
        let mut keys = Index::new(index::DEFAULT_CHUNK_MAX);
        let mut prev_key: Option<Bytes> = None;
        for _ in 0..n_keys {
            let key = r.bytes("key")?;
            if key.is_empty() || prev_key.as_ref().is_some_and(|p| *p >= key) {
                return Err(r.error("keys empty or out of order"));
            }
            keys.insert(read_history(&mut r, &key, current)?);
            prev_key = Some(key);
        }
        let kept_deletes = if format == 1 {
            Vec::new()
        } else {
            read_kept(&mut r, compacted)?
        };
        r.finish("trailing bytes after mvcc state")?;
        let mut store = Store {
            keys,
            current,
            compacted,
            max_txn_ops: super::DEFAULT_MAX_TXN_OPS,
            in_use: 0,
            kept_deletes,
        };
        store.in_use = store.count_bytes();
        Ok(store)
    }

    /// Feeds the whole state to `h` (current and compaction revisions, then
    /// what [`Store::hash_kv`] covers at the current revision), for a hash
    /// of the whole store without encoding it.
    pub fn hash_into(&self, h: &mut crc32fast::Hasher) {
        h.update(&self.current.to_le_bytes());
        h.update(&self.compacted.to_le_bytes());
        self.hash_versions(h, self.current);
        let mut scratch = Vec::new();
        for k in &self.kept_deletes {
            put_bytes(&mut scratch, &k.key);
            if let Some(t) = &k.tombstone {
                put_i64(&mut scratch, t.rev().sub);
            }
            if let Some(p) = &k.prev {
                put_version(&mut scratch, p);
            }
        }
        h.update(&scratch);
    }

    /// Rebuilds the histories of up to `max_keys` keys from `from` (the
    /// first key if `None`) at their exact size: one step of a defragment,
    /// giving back what compaction and overwrites left as spare capacity.
    /// Returns the key to go on from, `None` when the last key is done.
    pub fn shrink_from(&mut self, from: Option<&Bytes>, max_keys: usize) -> Option<Bytes> {
        self.keys
            .for_each_mut_from(from.map(|k| &k[..]), max_keys, History::shrink)
    }

    fn hash_versions(&self, h: &mut crc32fast::Hasher, rev: i64) {
        let mut scratch = Vec::new();
        for history in self.keys.iter() {
            for v in history.iter().take_while(|v| v.main() <= rev) {
                scratch.clear();
                put_bytes(&mut scratch, v.key());
                for n in [v.main(), v.rev().sub, v.create, v.version, v.lease] {
                    put_i64(&mut scratch, n);
                }
                put_bytes(&mut scratch, v.value());
                h.update(&scratch);
            }
        }
    }

    /// A CRC32 over every retained version at or below `revision` (0: the
    /// current one), in key order then revision order: each version's key,
    /// revision, create revision, version, lease and value. Fails like a read
    /// at that revision would.
    pub fn hash_kv(&self, revision: i64) -> Result<HashKv> {
        if revision > self.current {
            return Err(Error::FutureRev);
        }
        let rev = if revision <= 0 {
            self.current
        } else {
            revision
        };
        if rev < self.compacted {
            return Err(Error::Compacted);
        }
        let mut h = crc32fast::Hasher::new();
        self.hash_versions(&mut h, rev);
        Ok(HashKv {
            hash: h.finalize(),
            revision: rev,
            compact_revision: self.compacted,
        })
    }
}

/// Writes a version's numbers and value.
fn put_version(buf: &mut Vec<u8>, v: &Version) {
    for n in [v.main(), v.rev().sub, v.create, v.version, v.lease] {
        put_i64(buf, n);
    }
    put_bytes(buf, v.value());
}

/// Reads what [`put_version`] wrote, a version of `key`. A tombstone's value
/// must be empty.
fn read_version(r: &mut Reader, key: &[u8]) -> Result<Version, DecodeError> {
    let rev = Revision::new(r.i64("main revision")?, r.i64("sub revision")?);
    let (create, version, lease) = (
        r.i64("create revision")?,
        r.i64("version")?,
        r.i64("lease")?,
    );
    let value = r.bytes("value")?;
    if rev.sub < 0 || rev.sub > i64::from(u32::MAX) || (version == 0 && !value.is_empty()) {
        return Err(r.error("version out of order or out of range"));
    }
    // Copied into a buffer of the version's own (see version.rs).
    Ok(Version::put(key, &value, rev, create, version, lease))
}

/// Reads a key's versions, checking the invariants of the module docs.
fn read_history(r: &mut Reader, key: &[u8], current: i64) -> Result<History, DecodeError> {
    let n_versions = r.u32("version count")?;
    if n_versions == 0 {
        return Err(r.error("key with no versions"));
    }
    // Each version takes at least 44 bytes: don't trust the count for the allocation.
    let mut history: Vec<Version> =
        Vec::with_capacity((n_versions as usize).min(r.remaining() / 44));
    for _ in 0..n_versions {
        let v = read_version(r, key)?;
        let ordered = history.last().is_none_or(|p| p.rev() < v.rev());
        let sane = v.version >= 0 && v.main() >= 1 && v.main() <= current;
        if !ordered || !sane || (history.is_empty() && v.is_tombstone()) {
            return Err(r.error("version out of order or out of range"));
        }
        history.push(v);
    }
    let mut history = History::Many(history);
    history.shrink();
    Ok(history)
}

/// Reads what compaction kept of the changes at the compaction revision,
/// checking each is in key order, its tombstone of that revision, its
/// replaced version live and older.
fn read_kept(r: &mut Reader, compacted: i64) -> Result<Vec<Kept>, DecodeError> {
    let n = r.u32("kept count")? as usize;
    let mut out: Vec<Kept> = Vec::with_capacity(n.min(r.remaining() / 5));
    for _ in 0..n {
        let key = Bytes::copy_from_slice(&r.bytes("kept key")?);
        let flags = r.u8("kept flags")?;
        if flags == 0 || flags > 3 {
            return Err(r.error("kept flags"));
        }
        let tombstone = match flags & 1 {
            0 => None,
            _ => {
                let rev = Revision::new(r.i64("main revision")?, r.i64("sub revision")?);
                if rev.main != compacted || rev.sub < 0 || rev.sub > i64::from(u32::MAX) {
                    return Err(r.error("kept version out of order or out of range"));
                }
                Some(Version::tombstone_of(key.clone(), rev))
            }
        };
        let prev = match flags & 2 {
            0 => None,
            _ => Some(read_version(r, &key)?),
        };
        let ordered = out.last().is_none_or(|p| p.key < key) && !key.is_empty();
        // The replaced version is older than the change that replaced it; it
        // may be of the compaction revision itself (a txn that put a key and
        // then deleted it), so only `<=` holds against `compacted`.
        let sane = (prev.as_ref()).is_none_or(|p| {
            !p.is_tombstone()
                && p.main() <= compacted
                && p.main() >= 1
                && tombstone.as_ref().is_none_or(|t| p.rev() < t.rev())
        });
        if !ordered || !sane {
            return Err(r.error("kept version out of order or out of range"));
        }
        out.push(Kept {
            key,
            tombstone,
            prev,
        });
    }
    Ok(out)
}

/// One version of a key from another store (an etcd database), for
/// [`Store::import`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedVersion {
    pub key: Bytes,
    pub main: i64,
    pub sub: i64,
    /// A delete: the other fields but the key and revision are ignored.
    pub tombstone: bool,
    pub create: i64,
    pub version: i64,
    pub lease: i64,
    pub value: Bytes,
}

impl Store {
    /// Builds a store from another store's versions (any order), compacted
    /// at `compacted`: each key's history in revision order, leading
    /// tombstones dropped (compaction drops them here), the current
    /// revision the newest one seen. Checks what [`Store::decode`] checks.
    pub fn import(
        versions: impl IntoIterator<Item = ImportedVersion>,
        compacted: i64,
    ) -> Result<Self, DecodeError> {
        let bad = |what| DecodeError { offset: 0, what };
        let mut keys: BTreeMap<Bytes, Vec<Version>> = BTreeMap::new();
        let mut current = compacted.max(1);
        for v in versions {
            if v.key.is_empty() || v.main < 1 || v.sub < 0 || v.sub > i64::from(u32::MAX) {
                return Err(bad("imported version out of range"));
            }
            let rev = Revision::new(v.main, v.sub);
            let version = match v.tombstone {
                true => Version::tombstone_of(Bytes::copy_from_slice(&v.key), rev),
                false if v.version >= 1 && v.create >= 1 && v.create <= v.main => {
                    Version::put(&v.key, &v.value, rev, v.create, v.version, v.lease)
                }
                false => return Err(bad("imported version out of range")),
            };
            current = current.max(v.main);
            keys.entry(v.key).or_default().push(version);
        }
        keys.retain(|_, history| {
            history.sort_by_key(|v| v.rev());
            let live = history
                .iter()
                .position(|v| !v.is_tombstone())
                .unwrap_or(history.len());
            history.drain(..live);
            !history.is_empty()
        });
        for history in keys.values() {
            if history.windows(2).any(|w| w[0].rev() >= w[1].rev()) {
                return Err(bad("two versions of a key at one revision"));
            }
        }
        let mut index = Index::new(index::DEFAULT_CHUNK_MAX);
        for (_, history) in keys {
            let mut history = History::Many(history);
            history.shrink();
            index.insert(history);
        }
        let mut store = Store {
            keys: index,
            current,
            compacted,
            max_txn_ops: super::DEFAULT_MAX_TXN_OPS,
            in_use: 0,
            kept_deletes: Vec::new(),
        };
        store.in_use = store.count_bytes();
        Ok(store)
    }
}
