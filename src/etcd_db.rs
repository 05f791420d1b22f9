//! A read-only reader of the database file etcd's `snapshot save` writes (a
//! bbolt file, then its sha256), for `cairn snapshot restore` to migrate a
//! cluster from etcd: every key's versions with their revisions, versions and
//! leases, the compaction revision, and the leases.
//!
//! # Why our own reader
//!
//! The `bbolt-rs` crate (a port of bbolt) reads and writes bbolt files, but
//! pulls in some thirty crates (a CLI parser, a fake-data generator,
//! memory-mapping and file-locking crates) for what is here a read of three
//! buckets from a file already in memory; on two shared cores that build time
//! is not worth it. The part of the format needed is small and stable
//! (bbolt's `page.go`, `node.go`, `bucket.go`):
//!
//! - The file is pages of `page_size` bytes; page `n` starts at `n * page_size`.
//!   A page starts with a 16-byte header: `u64 id, u16 flags, u16 count,
//!   u32 overflow` (little-endian), flags 1 = branch, 2 = leaf, 4 = meta.
//! - Pages 0 and 1 are meta pages: after the header, `u32 magic (0xED0CDAED),
//!   u32 version (2), u32 page_size, u32 flags, root bucket (u64 root page,
//!   u64 sequence), u64 freelist page, u64 high-water page, u64 txid,
//!   u64 checksum` (FNV-1a 64 of the meta before the checksum). The valid one
//!   with the higher txid is current.
//! - A branch page has `count` 16-byte elements `u32 pos, u32 ksize, u64 page`;
//!   a leaf page `count` 16-byte elements `u32 flags, u32 pos, u32 ksize,
//!   u32 vsize`; `pos` counts from the element itself, the value follows the
//!   key. A leaf element with flag 1 is a sub-bucket: its value is `u64 root
//!   page, u64 sequence`, and root 0 means the bucket's page is inline,
//!   right after those 16 bytes.
//!
//! etcd keeps its keys in bucket `key`, each under its revision (`u64 main`
//! big-endian, `_`, `u64 sub`, and `t` for a tombstone) with an
//! `mvccpb.KeyValue` as value; leases in bucket `lease` (`leasepb.Lease`);
//! the compaction revision under `finishedCompactRev` in bucket `meta`.
//!
//! Every read is bounds-checked and every page visit counted: a damaged or
//! hostile file is an error, never a panic or an endless walk.

use crate::codec::DecodeError;
use crate::proto::mvccpb::KeyValue;
use bytes::Bytes;
use prost::Message as _;
use sha2::{Digest, Sha256};

const MAGIC: u32 = 0xED0C_DAED;
const BRANCH: u16 = 0x01;
const LEAF: u16 = 0x02;
const BUCKET_LEAF: u32 = 0x01;
const PAGE_HEADER: usize = 16;
const ELEMENT: usize = 16;

/// `leasepb.Lease`, as etcd stores it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EtcdLease {
    #[prost(int64, tag = "1")]
    pub id: i64,
    #[prost(int64, tag = "2")]
    pub ttl: i64,
    #[prost(int64, tag = "3")]
    pub remaining_ttl: i64,
}

/// One version of a key as etcd stored it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdVersion {
    pub main: i64,
    pub sub: i64,
    pub tombstone: bool,
    /// For a tombstone, only `key` (and the revision) are meaningful.
    pub kv: KeyValue,
}

/// What a restore takes from an etcd database.
#[derive(Debug, Clone, Default)]
pub struct EtcdData {
    /// Every stored version, in revision order.
    pub versions: Vec<EtcdVersion>,
    pub leases: Vec<EtcdLease>,
    /// `finishedCompactRev`; 0 if never compacted.
    pub compacted: i64,
}

fn bad(offset: usize, what: &'static str) -> DecodeError {
    DecodeError { offset, what }
}

/// Whether `file` is an etcd snapshot: a bbolt database (its first meta
/// page's magic) with a trailer.
pub fn is_etcd_snapshot(file: &[u8]) -> bool {
    file.len() > PAGE_HEADER + 4
        && u32::from_le_bytes(
            file[PAGE_HEADER..PAGE_HEADER + 4]
                .try_into()
                .expect("4 bytes"),
        ) == MAGIC
}

/// Reads an etcd snapshot file: checks its sha256 trailer (as etcdutl's
/// restore does), then the database.
pub fn read_snapshot(file: &[u8]) -> Result<EtcdData, DecodeError> {
    // etcd's test for a trailer: whole pages plus 32 bytes.
    if file.len() % 512 != 32 {
        return Err(bad(
            file.len(),
            "no sha256 trailer (size is not pages + 32)",
        ));
    }
    let (db, sha) = file.split_at(file.len() - 32);
    if Sha256::digest(db)[..] != *sha {
        return Err(bad(db.len(), "sha256 checksum mismatch"));
    }
    read_db(db)
}

/// Reads the buckets a restore needs from a bbolt database in memory.
pub fn read_db(db: &[u8]) -> Result<EtcdData, DecodeError> {
    let bolt = Bolt::open(db)?;
    let mut out = EtcdData::default();
    let root = bolt.root;
    if let Some(b) = bolt.bucket(root, b"key")? {
        bolt.walk(b, &mut |k, v| {
            out.versions.push(version(k, v)?);
            Ok(())
        })?;
    }
    if let Some(b) = bolt.bucket(root, b"lease")? {
        bolt.walk(b, &mut |_, v| {
            out.leases
                .push(EtcdLease::decode(v).map_err(|_| bad(0, "lease does not decode"))?);
            Ok(())
        })?;
    }
    if let Some(b) = bolt.bucket(root, b"meta")? {
        bolt.walk(b, &mut |k, v| {
            if k == b"finishedCompactRev" {
                out.compacted = revision_of(&v)?.0;
            }
            Ok(())
        })?;
    }
    out.versions.sort_by_key(|v| (v.main, v.sub));
    Ok(out)
}

/// A revision key: `u64 main`, `_`, `u64 sub` (big-endian), maybe `t`.
fn revision_of(k: &[u8]) -> Result<(i64, i64, bool), DecodeError> {
    if (k.len() != 17 && k.len() != 18) || k[8] != b'_' || (k.len() == 18 && k[17] != b't') {
        return Err(bad(0, "revision key"));
    }
    let main = i64::from_be_bytes(k[..8].try_into().expect("8 bytes"));
    let sub = i64::from_be_bytes(k[9..17].try_into().expect("8 bytes"));
    Ok((main, sub, k.len() == 18))
}

fn version(k: &[u8], v: Bytes) -> Result<EtcdVersion, DecodeError> {
    let (main, sub, tombstone) = revision_of(k)?;
    let kv = KeyValue::decode(v).map_err(|_| bad(0, "key value does not decode"))?;
    Ok(EtcdVersion {
        main,
        sub,
        tombstone,
        kv,
    })
}

/// Called with each key and value of a bucket.
type EntryFn<'f> = dyn FnMut(&[u8], Bytes) -> Result<(), DecodeError> + 'f;

/// Called with each leaf element: key, value, whether it is a sub-bucket.
type ElementFn<'a, 'f> = dyn FnMut(&'a [u8], &'a [u8], bool) -> Result<(), DecodeError> + 'f;

/// Where a bucket's tree lives: a page of the file, or inline bytes.
#[derive(Clone, Copy)]
enum Tree<'a> {
    Page(u64),
    Inline(&'a [u8]),
}

struct Bolt<'a> {
    db: &'a [u8],
    page_size: usize,
    root: Tree<'a>,
}

fn u16_at(b: &[u8], at: usize) -> Result<u16, DecodeError> {
    b.get(at..at + 2)
        .map(|s| u16::from_le_bytes(s.try_into().expect("2 bytes")))
        .ok_or(bad(at, "past the end"))
}

fn u32_at(b: &[u8], at: usize) -> Result<u32, DecodeError> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes(s.try_into().expect("4 bytes")))
        .ok_or(bad(at, "past the end"))
}

fn u64_at(b: &[u8], at: usize) -> Result<u64, DecodeError> {
    b.get(at..at + 8)
        .map(|s| u64::from_le_bytes(s.try_into().expect("8 bytes")))
        .ok_or(bad(at, "past the end"))
}

fn slice(b: &[u8], at: usize, len: usize) -> Result<&[u8], DecodeError> {
    at.checked_add(len)
        .and_then(|end| b.get(at..end))
        .ok_or(bad(at, "past the end"))
}

/// FNV-1a 64, bbolt's meta checksum.
fn fnv64a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

impl<'a> Bolt<'a> {
    fn open(db: &'a [u8]) -> Result<Self, DecodeError> {
        let meta = |at: usize| -> Result<(u64, usize, u64), DecodeError> {
            let m = at + PAGE_HEADER;
            if u32_at(db, m)? != MAGIC || u32_at(db, m + 4)? != 2 {
                return Err(bad(m, "not a bbolt version 2 meta page"));
            }
            let page_size = u32_at(db, m + 8)? as usize;
            let txid = u64_at(db, m + 48)?;
            if fnv64a(slice(db, m, 56)?) != u64_at(db, m + 56)? {
                return Err(bad(m + 56, "meta page checksum"));
            }
            Ok((txid, page_size, u64_at(db, m + 16)?))
        };
        let first = meta(0)?;
        if !(512..=1 << 20).contains(&first.1) {
            return Err(bad(PAGE_HEADER + 8, "page size"));
        }
        let (_, page_size, root) = match meta(first.1) {
            Ok(second) if second.0 > first.0 && second.1 == first.1 => second,
            _ => first,
        };
        Ok(Self {
            db,
            page_size,
            root: Tree::Page(root),
        })
    }

    /// The bytes of the page `tree` starts at (its overflow included).
    fn page(&self, tree: Tree<'a>) -> Result<&'a [u8], DecodeError> {
        match tree {
            Tree::Inline(b) => Ok(b),
            Tree::Page(id) => {
                let at = usize::try_from(id)
                    .ok()
                    .and_then(|i| i.checked_mul(self.page_size))
                    .ok_or(bad(0, "page id"))?;
                let overflow = u32_at(self.db, at + 12)? as usize;
                let len = (overflow + 1)
                    .checked_mul(self.page_size)
                    .ok_or(bad(at, "overflow"))?;
                slice(self.db, at, len.min(self.db.len().saturating_sub(at)))
            }
        }
    }

    /// Calls `f` with every key and value of the leaf elements under
    /// `tree`, in order; sub-buckets are passed with `is_bucket`.
    fn visit(
        &self,
        tree: Tree<'a>,
        budget: &mut usize,
        f: &mut ElementFn<'a, '_>,
    ) -> Result<(), DecodeError> {
        *budget = budget
            .checked_sub(1)
            .ok_or(bad(0, "too many pages visited"))?;
        let p = self.page(tree)?;
        let flags = u16_at(p, 8)?;
        let count = u16_at(p, 10)? as usize;
        for i in 0..count {
            let e = PAGE_HEADER + i * ELEMENT;
            if flags & BRANCH != 0 {
                let child = u64_at(p, e + 8)?;
                self.visit(Tree::Page(child), budget, f)?;
            } else if flags & LEAF != 0 {
                let eflags = u32_at(p, e)?;
                let pos = u32_at(p, e + 4)? as usize;
                let (ksize, vsize) = (u32_at(p, e + 8)? as usize, u32_at(p, e + 12)? as usize);
                let key = slice(p, e + pos, ksize)?;
                let value = slice(p, e + pos + ksize, vsize)?;
                f(key, value, eflags & BUCKET_LEAF != 0)?;
            } else {
                return Err(bad(0, "neither a branch nor a leaf page"));
            }
        }
        Ok(())
    }

    /// The sub-bucket `name` of the bucket at `tree`, if it exists.
    fn bucket(&self, tree: Tree<'a>, name: &[u8]) -> Result<Option<Tree<'a>>, DecodeError> {
        let mut found = None;
        let mut budget = self.db.len() / self.page_size + 1;
        self.visit(tree, &mut budget, &mut |k, v, is_bucket| {
            if is_bucket && k == name {
                let root = u64_at(v, 0)?;
                found = Some(match root {
                    0 => Tree::Inline(slice(v, 16, v.len().saturating_sub(16))?),
                    id => Tree::Page(id),
                });
            }
            Ok(())
        })?;
        Ok(found)
    }

    /// Every key and value of the bucket at `tree` (not its sub-buckets).
    fn walk(&self, tree: Tree<'a>, f: &mut EntryFn<'_>) -> Result<(), DecodeError> {
        let mut budget = self.db.len() / self.page_size + 1;
        self.visit(tree, &mut budget, &mut |k, v, is_bucket| {
            if is_bucket {
                return Ok(());
            }
            f(k, Bytes::copy_from_slice(v))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn damaged_input_is_an_error_not_a_panic() {
        assert!(!is_etcd_snapshot(b"short"));
        assert!(read_snapshot(&[0u8; 544]).is_err());
        assert!(read_db(&[0u8; 8192]).is_err());
        assert_eq!(
            revision_of(b"\0\0\0\0\0\0\0\x05_\0\0\0\0\0\0\0\x01t").unwrap(),
            (5, 1, true)
        );
        assert!(revision_of(b"nope").is_err());
    }
}
