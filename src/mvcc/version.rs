//! One version of a key, and a key's history of versions, laid out for size.
//!
//! # A version: 72 bytes and one buffer
//!
//! A [`Version`] keeps its key and its value in one buffer, `data`, the key
//! first: the store's copy, exactly `key + value` bytes long. Reads hand out
//! slices of it (`Bytes` handles sharing the buffer, no copy). Copying on the
//! way in costs a memcpy per put but means the store no longer keeps a
//! request's buffer alive, with the request's framing in it, for as long as
//! the value lives; and the key index needs no key of its own (see
//! `index.rs`): a history's key is its versions' key. A tombstone's `data` is
//! the key alone, sharing the buffer of the version it deletes (always older,
//! so never outlived by it within a history).
//!
//! Sub revisions are `u32` here, so that the record packs into 72 bytes: a
//! revision changes one key per sub revision, and 2^32 keys do not fit in
//! memory. Decoding refuses a larger one.
//!
//! # A history: one version inline
//!
//! Most keys hold one version (a key written once, or any key right after a
//! compaction), so [`History`] keeps a single version inline, in the index's
//! slot, and only a key with more versions has a `Vec`. `History` is as big
//! as a `Version` (the enum fits in a `Version`'s spare niche).

use super::Revision;
use crate::proto::mvccpb::KeyValue;
use bytes::Bytes;

/// One version of a key: what a read at a revision sees. See the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Version {
    /// Main revision of the change that wrote this version.
    main: i64,
    /// Sub revision of that change.
    sub: u32,
    /// Length of the key at the front of `data`.
    key_len: u32,
    /// Main revision that created the key's current generation; 0 for a tombstone.
    pub(super) create: i64,
    /// Puts since the generation began (1 for the first); 0 for a tombstone.
    pub(super) version: i64,
    /// The lease the key is attached to; 0 for none.
    pub(super) lease: i64,
    /// The key, then the value (empty for a tombstone).
    data: Bytes,
}

impl Version {
    /// A put of `value` to `key` at `rev`, in a buffer of its own.
    pub(super) fn put(
        key: &[u8],
        value: &[u8],
        rev: Revision,
        create: i64,
        version: i64,
        lease: i64,
    ) -> Self {
        let mut data = Vec::with_capacity(key.len() + value.len());
        data.extend_from_slice(key);
        data.extend_from_slice(value);
        Self::from_data(Bytes::from(data), key.len(), rev, create, version, lease)
    }

    /// A put at `rev` keeping `prev`'s value (and so its buffer: same key).
    pub(super) fn put_same_value(
        prev: &Version,
        rev: Revision,
        create: i64,
        version: i64,
        lease: i64,
    ) -> Self {
        Self::from_data(
            prev.data.clone(),
            prev.key_len as usize,
            rev,
            create,
            version,
            lease,
        )
    }

    /// A tombstone at `rev` of the key `of` is a version of, sharing its buffer.
    pub(super) fn tombstone(of: &Version, rev: Revision) -> Self {
        Self::tombstone_of(of.key_bytes(), rev)
    }

    /// A tombstone of `key` at `rev`.
    pub(super) fn tombstone_of(key: Bytes, rev: Revision) -> Self {
        let key_len = key.len();
        Self::from_data(key, key_len, rev, 0, 0, 0)
    }

    /// A version from its parts; `data` is the key then the value.
    fn from_data(
        data: Bytes,
        key_len: usize,
        rev: Revision,
        create: i64,
        version: i64,
        lease: i64,
    ) -> Self {
        assert!(key_len <= data.len(), "the key is part of the data");
        Self {
            main: rev.main,
            sub: u32::try_from(rev.sub).expect("fewer than 2^32 changes in one revision"),
            key_len: u32::try_from(key_len).expect("a key under 4 GiB"),
            create,
            version,
            lease,
            data,
        }
    }

    /// The revision of the change that wrote this version.
    pub(super) fn rev(&self) -> Revision {
        Revision::new(self.main, i64::from(self.sub))
    }

    /// The main revision of the change that wrote this version.
    pub(super) fn main(&self) -> i64 {
        self.main
    }

    pub(super) fn is_tombstone(&self) -> bool {
        self.version == 0
    }

    pub(super) fn key(&self) -> &[u8] {
        &self.data[..self.key_len as usize]
    }

    pub(super) fn value(&self) -> &[u8] {
        &self.data[self.key_len as usize..]
    }

    /// The key, sharing the buffer.
    pub(super) fn key_bytes(&self) -> Bytes {
        self.data.slice(..self.key_len as usize)
    }

    /// The value, sharing the buffer.
    pub(super) fn value_bytes(&self) -> Bytes {
        self.data.slice(self.key_len as usize..)
    }

    /// The version as a client sees it; without its value if `keys_only`.
    pub(super) fn to_kv(&self, keys_only: bool) -> KeyValue {
        KeyValue {
            key: self.key_bytes(),
            create_revision: self.create,
            mod_revision: self.main,
            version: self.version,
            value: if keys_only {
                Bytes::new()
            } else {
                self.value_bytes()
            },
            lease: self.lease,
        }
    }
}

/// A key's versions, oldest first; one inline. See the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum History {
    /// The common case: one version, no allocation besides its data.
    One(Version),
    /// Two or more versions (or none, only while compaction empties it).
    Many(Vec<Version>),
}

impl std::ops::Deref for History {
    type Target = [Version];

    fn deref(&self) -> &[Version] {
        match self {
            History::One(v) => std::slice::from_ref(v),
            History::Many(vs) => vs,
        }
    }
}

impl super::index::Keyed for History {
    fn key(&self) -> &[u8] {
        self.first()
            .expect("a history in the index is never empty")
            .key()
    }
}

impl History {
    /// Appends `v`, the newest version.
    pub(super) fn push(&mut self, v: Version) {
        match self {
            History::Many(vs) => vs.push(v),
            History::One(_) => {
                let History::One(first) = std::mem::replace(self, History::Many(Vec::new())) else {
                    unreachable!("matched One")
                };
                *self = History::Many(vec![first, v]);
            }
        }
    }

    /// Keeps the versions for which `keep` holds.
    pub(super) fn retain(&mut self, keep: impl FnMut(&Version) -> bool) {
        self.make_many().retain(keep);
        self.pack();
    }

    /// Removes the oldest `n` versions, returning them.
    pub(super) fn drain_oldest(&mut self, n: usize) -> Vec<Version> {
        if n == 0 {
            self.pack();
            return Vec::new();
        }
        let gone = self.make_many().drain(..n).collect();
        self.pack();
        gone
    }

    /// Gives back spare capacity: one version goes inline again.
    pub(super) fn shrink(&mut self) {
        if let History::Many(vs) = self {
            vs.shrink_to_fit();
        }
        self.pack();
    }

    /// The versions as a `Vec`, making one if there is a single version.
    fn make_many(&mut self) -> &mut Vec<Version> {
        if let History::One(_) = self {
            let History::One(v) = std::mem::replace(self, History::Many(Vec::new())) else {
                unreachable!("matched One")
            };
            *self = History::Many(vec![v]);
        }
        let History::Many(vs) = self else {
            unreachable!("made Many")
        };
        vs
    }

    /// One version back inline; spare capacity past twice the length given back.
    fn pack(&mut self) {
        if let History::Many(vs) = self {
            if vs.len() == 1 {
                *self = History::One(vs.pop().expect("one version"));
            } else if vs.capacity() > 2 * vs.len() {
                vs.shrink_to_fit();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_history_is_no_bigger_than_a_version() {
        assert_eq!(std::mem::size_of::<Version>(), 72);
        assert_eq!(std::mem::size_of::<History>(), 72);
    }

    #[test]
    fn the_key_and_value_share_one_buffer() {
        let v = Version::put(b"key", b"value", Revision::new(2, 0), 2, 1, 0);
        assert_eq!((v.key(), v.value()), (&b"key"[..], &b"value"[..]));
        let kv = v.to_kv(false);
        assert_eq!(
            kv.value.as_ptr(),
            kv.key.as_ptr().wrapping_add(3),
            "value follows key"
        );
        let t = Version::tombstone(&v, Revision::new(3, 0));
        assert!(t.is_tombstone() && t.value().is_empty() && t.key() == b"key");
        assert_eq!(
            t.key().as_ptr(),
            v.key().as_ptr(),
            "a tombstone shares the key"
        );
    }

    #[test]
    fn one_version_is_inline_again_after_compaction() {
        let v = |main| Version::put(b"k", b"v", Revision::new(main, 0), 2, main - 1, 0);
        let mut h = History::One(v(2));
        h.push(v(3));
        h.push(v(4));
        assert!(matches!(h, History::Many(_)));
        assert_eq!(h.drain_oldest(2).len(), 2);
        assert!(matches!(&h, History::One(x) if x.main() == 4));
        h.retain(|_| false);
        assert!(h.is_empty());
    }
}
