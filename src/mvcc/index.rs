//! The key index: every key's entry, in key order, packed densely.
//!
//! # Why not a `BTreeMap` of keys
//!
//! `std`'s B-tree keeps 11 slots per node and splits a full node in two, so a
//! node is half to two-thirds full: with keys inserted in order (as in
//! `benches/memory.rs`, and as Kubernetes creates keys under a prefix) each
//! slot costs nearly twice its size. At 1M keys that was ~100 bytes per key
//! for a 56-byte slot, plus a separate allocation for each key's history.
//!
//! # Shape
//!
//! A two-level tree. The leaves are *chunks*: sorted `Vec`s of up to
//! `chunk_max` entries, grown `step` entries at a time (not doubled), so a
//! chunk's spare capacity is under `step` slots and the slots are ~95% used
//! whatever the insertion order. Above them a `BTreeMap` maps each chunk's
//! *lower bound* to the chunk; with 1M keys that map holds ~10k chunks, so
//! its own overhead is a few bytes per key. A chunk that grows past
//! `chunk_max` splits in two halves; a chunk that falls under a quarter full
//! merges with the next one when both fit.
//!
//! # Invariants
//!
//! 1. The first chunk's bound is the empty key, so every key has a chunk:
//!    the one with the greatest bound `<=` it.
//! 2. A chunk's entries are strictly increasing by key, each `>=` the
//!    chunk's bound and `<` the next chunk's bound.
//! 3. No chunk but the first is empty, none holds more than `chunk_max`.
//! 4. `len` is the number of entries.
//!
//! A bound is a copy of the key it was taken from, not a handle sharing that
//! key's buffer, so removing the key frees the buffer. [`Index::check`]
//! asserts the invariants.

use bytes::Bytes;
use std::collections::BTreeMap;
use std::ops::Bound;

/// An entry that knows its own key.
pub(super) trait Keyed {
    /// The entry's key; never changes while the entry is in the index.
    fn key(&self) -> &[u8];
}

/// The default most entries in one chunk: memmoves of a chunk on insert stay
/// under ~10 KiB with 72-byte entries, and the upper map stays small.
pub const DEFAULT_CHUNK_MAX: usize = 128;

/// Ordered entries in chunks. See the module docs.
#[derive(Debug, Clone)]
pub(super) struct Index<T> {
    /// Chunks by lower bound (invariants 1–3).
    chunks: BTreeMap<Bytes, Vec<T>>,
    /// Number of entries (invariant 4).
    len: usize,
    /// Most entries in one chunk.
    chunk_max: usize,
    /// How many slots a full chunk grows by.
    step: usize,
}

/// Two indexes are equal when they hold equal entries, however chunked: a
/// store decoded from a snapshot equals the store that wrote it.
impl<T: Keyed + PartialEq> PartialEq for Index<T> {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.iter().eq(other.iter())
    }
}

impl<T: Keyed + Eq> Eq for Index<T> {}

/// Lower and upper bound of a key range.
pub(super) type KeyBounds<'a> = (Bound<&'a [u8]>, Bound<&'a [u8]>);

impl<T: Keyed> Index<T> {
    /// An empty index whose chunks hold up to `chunk_max` entries (at least 2).
    pub(super) fn new(chunk_max: usize) -> Self {
        let chunk_max = chunk_max.max(2);
        Self {
            chunks: BTreeMap::from([(Bytes::new(), Vec::new())]),
            len: 0,
            chunk_max,
            step: (chunk_max / 16).max(1),
        }
    }

    /// Number of entries.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// The bound of the chunk `key` belongs to (invariant 1).
    fn bound_of(&self, key: &[u8]) -> &Bytes {
        let below = (Bound::Unbounded, Bound::Included(key));
        let (bound, _) = (self.chunks.range::<[u8], _>(below).next_back())
            .expect("the first chunk's bound is the empty key");
        bound
    }

    /// The chunk `key` belongs to, mutably, with its bound.
    fn chunk_mut(&mut self, key: &[u8]) -> (&Bytes, &mut Vec<T>) {
        let below = (Bound::Unbounded, Bound::Included(key));
        (self.chunks.range_mut::<[u8], _>(below).next_back())
            .expect("the first chunk's bound is the empty key")
    }

    /// The entry of `key`.
    pub(super) fn get(&self, key: &[u8]) -> Option<&T> {
        let chunk = &self.chunks[&self.bound_of(key)[..]];
        let i = chunk.binary_search_by(|e| e.key().cmp(key)).ok()?;
        Some(&chunk[i])
    }

    /// The entry of `key`, mutably. The caller must not change its key.
    pub(super) fn get_mut(&mut self, key: &[u8]) -> Option<&mut T> {
        let (_, chunk) = self.chunk_mut(key);
        let i = chunk.binary_search_by(|e| e.key().cmp(key)).ok()?;
        Some(&mut chunk[i])
    }

    /// Inserts `entry`, whose key must not be in the index yet.
    pub(super) fn insert(&mut self, entry: T) {
        let (chunk_max, step) = (self.chunk_max, self.step);
        let (bound, chunk) = self.chunk_mut(entry.key());
        let Err(i) = chunk.binary_search_by(|e| e.key().cmp(entry.key())) else {
            panic!("inserted a key the index already holds");
        };
        if chunk.len() == chunk.capacity() {
            // Grow by a step, not by doubling: spare slots are the waste.
            chunk.reserve_exact(step);
        }
        chunk.insert(i, entry);
        let full = (chunk.len() > chunk_max).then(|| bound.clone());
        self.len += 1;
        if let Some(bound) = full {
            self.split(bound);
        }
    }

    /// Splits the chunk at `bound` into two halves.
    fn split(&mut self, bound: Bytes) {
        let chunk = self.chunks.get_mut(&bound).expect("splitting a chunk");
        let right = chunk.split_off(chunk.len() / 2);
        // Exact: in-order inserts never come back to the left half.
        chunk.shrink_to_fit();
        // A copy: the bound must not keep the first key's buffer alive.
        let right_bound = Bytes::copy_from_slice(right[0].key());
        self.chunks.insert(right_bound, right);
    }

    /// Removes and returns the entry of `key`.
    pub(super) fn remove(&mut self, key: &[u8]) -> Option<T> {
        let (step, chunk_max) = (self.step, self.chunk_max);
        let (bound, chunk) = self.chunk_mut(key);
        let i = chunk.binary_search_by(|e| e.key().cmp(key)).ok()?;
        let entry = chunk.remove(i);
        if chunk.capacity() >= chunk.len() + 2 * step {
            chunk.shrink_to(chunk.len() + step);
        }
        let small = (chunk.is_empty() || chunk.len() < chunk_max / 4).then(|| bound.clone());
        self.len -= 1;
        if let Some(bound) = small {
            self.merge_or_drop(bound);
        }
        Some(entry)
    }

    /// Merges the small chunk at `bound` with the next one if both fit in one
    /// chunk, or drops it if it is empty and not the first.
    fn merge_or_drop(&mut self, bound: Bytes) {
        let after = (Bound::Excluded(&bound[..]), Bound::Unbounded);
        let next = (self.chunks.range::<[u8], _>(after).next()).map(|(b, c)| (b.clone(), c.len()));
        let len = self.chunks[&bound].len();
        match next {
            Some((next, next_len)) if len + next_len <= self.chunk_max => {
                let mut moved = self.chunks.remove(&next).expect("the next chunk");
                self.chunks
                    .get_mut(&bound)
                    .expect("the small chunk")
                    .append(&mut moved);
            }
            _ if len == 0 && !bound.is_empty() => {
                self.chunks.remove(&bound);
            }
            _ => {}
        }
    }

    /// The entries whose keys lie within `bounds`, in key order.
    pub(super) fn range<'a>(&'a self, bounds: KeyBounds<'a>) -> impl Iterator<Item = &'a T> + 'a {
        let (start, end) = bounds;
        let from = match start {
            Bound::Included(k) | Bound::Excluded(k) => k,
            Bound::Unbounded => &[][..],
        };
        let first_bound = self.bound_of(from);
        let mut chunks = (self.chunks)
            .range::<[u8], _>((Bound::Included(&first_bound[..]), Bound::Unbounded))
            .map(|(_, c)| c.as_slice());
        let first = chunks.next().unwrap_or_default();
        // Only the first chunk can hold keys before the start (invariant 2).
        let skip = first.partition_point(|e| match start {
            Bound::Included(k) => e.key() < k,
            Bound::Excluded(k) => e.key() <= k,
            Bound::Unbounded => false,
        });
        (first[skip..].iter())
            .chain(chunks.flatten())
            .take_while(move |e| match end {
                Bound::Included(k) => e.key() <= k,
                Bound::Excluded(k) => e.key() < k,
                Bound::Unbounded => true,
            })
    }

    /// Every entry, in key order.
    pub(super) fn iter(&self) -> impl Iterator<Item = &T> + '_ {
        self.chunks.values().flatten()
    }

    /// Keeps the entries for which `keep` returns true (it may change an
    /// entry but not its key), then merges chunks left under half full.
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&mut T) -> bool) {
        for chunk in self.chunks.values_mut() {
            chunk.retain_mut(&mut keep);
        }
        self.chunks
            .retain(|bound, c| bound.is_empty() || !c.is_empty());
        self.len = self.chunks.values().map(Vec::len).sum();
        if self.chunks.len() > 1 && self.len < self.chunks.len() * self.chunk_max / 2 {
            self.repack();
        }
    }

    /// Rebuilds the chunks three-quarters full, at their exact size.
    fn repack(&mut self) {
        let per_chunk = (self.chunk_max * 3 / 4).max(1);
        let mut entries = std::mem::take(&mut self.chunks).into_values().flatten();
        let mut first: Vec<T> = entries.by_ref().take(per_chunk).collect();
        first.shrink_to_fit();
        self.chunks.insert(Bytes::new(), first);
        loop {
            let mut chunk: Vec<T> = entries.by_ref().take(per_chunk).collect();
            if chunk.is_empty() {
                break;
            }
            chunk.shrink_to_fit();
            self.chunks
                .insert(Bytes::copy_from_slice(chunk[0].key()), chunk);
        }
    }

    /// Calls `f` on up to `max` entries from `from` (the first if `None`) and
    /// gives the chunks it went through back their spare capacity. Returns the
    /// key to go on from, `None` after the last entry.
    pub(super) fn for_each_mut_from(
        &mut self,
        from: Option<&[u8]>,
        max: usize,
        mut f: impl FnMut(&mut T),
    ) -> Option<Bytes> {
        let from = from.unwrap_or_default();
        let first_bound = self.bound_of(from).clone();
        let mut left = max;
        let chunks = self
            .chunks
            .range_mut::<[u8], _>((Bound::Included(&first_bound[..]), Bound::Unbounded));
        for (_, chunk) in chunks {
            for i in chunk.partition_point(|e| e.key() < from)..chunk.len() {
                if left == 0 {
                    return Some(Bytes::copy_from_slice(chunk[i].key()));
                }
                f(&mut chunk[i]);
                left -= 1;
            }
            chunk.shrink_to_fit();
        }
        None
    }

    /// Asserts the invariants of the module docs.
    pub(super) fn check(&self) {
        let (first, _) = self.chunks.iter().next().expect("an index has a chunk");
        assert!(first.is_empty(), "the first chunk's bound is the empty key");
        let mut prev: Option<&[u8]> = None;
        let mut len = 0;
        let bounds: Vec<&Bytes> = self.chunks.keys().collect();
        for (i, (bound, chunk)) in self.chunks.iter().enumerate() {
            assert!(i == 0 || !chunk.is_empty(), "empty chunk at {bound:?}");
            assert!(
                chunk.len() <= self.chunk_max,
                "oversized chunk at {bound:?}"
            );
            for e in chunk {
                assert!(prev.is_none_or(|p| p < e.key()), "keys out of order");
                assert!(e.key() >= &bound[..], "key below its chunk's bound");
                if let Some(next) = bounds.get(i + 1) {
                    assert!(e.key() < &next[..], "key at or above the next bound");
                }
                prev = Some(e.key());
            }
            len += chunk.len();
        }
        assert_eq!(len, self.len, "the entry count");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone, PartialEq, Eq)]
    struct E(Vec<u8>, u32);
    impl Keyed for E {
        fn key(&self) -> &[u8] {
            &self.0
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u8, u32),
        Remove(u8),
        Bump(u8),
        Retain(u8),
        Range(u8, u8),
        Walk(u8, usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (any::<u8>(), any::<u32>()).prop_map(|(k, v)| Op::Insert(k, v)),
            2 => any::<u8>().prop_map(Op::Remove),
            1 => any::<u8>().prop_map(Op::Bump),
            1 => any::<u8>().prop_map(Op::Retain),
            2 => (any::<u8>(), any::<u8>()).prop_map(|(a, b)| Op::Range(a, b)),
            1 => (any::<u8>(), 0..20usize).prop_map(|(a, n)| Op::Walk(a, n)),
        ]
    }

    /// Keys of one or two bytes, so prefixes and the empty bound are exercised.
    fn key(k: u8) -> Vec<u8> {
        if k.is_multiple_of(3) {
            vec![k / 4]
        } else {
            vec![k / 4, k]
        }
    }

    /// Runs `ops` against the index and a `BTreeMap` model.
    fn run(chunk_max: usize, ops: &[Op]) {
        let mut index: Index<E> = Index::new(chunk_max);
        let mut model: BTreeMap<Vec<u8>, u32> = BTreeMap::new();
        for op in ops {
            match *op {
                Op::Insert(k, v) => {
                    if let Some(e) = index.get_mut(&key(k)) {
                        e.1 = v;
                    } else {
                        index.insert(E(key(k), v));
                    }
                    model.insert(key(k), v);
                }
                Op::Remove(k) => {
                    let got = index.remove(&key(k)).map(|e| e.1);
                    assert_eq!(got, model.remove(&key(k)));
                }
                Op::Bump(k) => {
                    if let Some(e) = index.get_mut(&key(k)) {
                        e.1 += 1;
                    }
                    if let Some(v) = model.get_mut(&key(k)) {
                        *v += 1;
                    }
                }
                Op::Retain(m) => {
                    let m = u32::from(m % 4) + 1;
                    index.retain(|e| e.1 % m != 0);
                    model.retain(|_, v| *v % m != 0);
                }
                Op::Range(a, b) => {
                    let (a, b) = (key(a), key(b));
                    let got: Vec<_> = index
                        .range((Bound::Included(&a), Bound::Excluded(&b)))
                        .map(|e| (e.0.clone(), e.1))
                        .collect();
                    let want: Vec<_> = if a < b {
                        model
                            .range(a.clone()..b.clone())
                            .map(|(k, v)| (k.clone(), *v))
                            .collect()
                    } else {
                        Vec::new()
                    };
                    assert_eq!(got, want);
                    let got: Vec<_> = index
                        .range((Bound::Excluded(&a), Bound::Unbounded))
                        .map(|e| e.0.clone())
                        .collect();
                    let want: Vec<_> = model
                        .range::<Vec<u8>, _>((Bound::Excluded(&a), Bound::Unbounded))
                        .map(|(k, _)| k.clone())
                        .collect();
                    assert_eq!(got, want);
                }
                Op::Walk(a, n) => {
                    let mut seen = Vec::new();
                    let next =
                        index.for_each_mut_from(Some(&key(a)), n, |e| seen.push(e.0.clone()));
                    let mut want = model.range(key(a)..).map(|(k, _)| k.clone());
                    let want_seen: Vec<_> = want.by_ref().take(n).collect();
                    assert_eq!(seen, want_seen);
                    assert_eq!(next.map(|b| b.to_vec()), want.next());
                }
            }
            index.check();
            assert_eq!(index.len(), model.len());
            let all: Vec<_> = index.iter().map(|e| (e.0.clone(), e.1)).collect();
            let want: Vec<_> = model.iter().map(|(k, v)| (k.clone(), *v)).collect();
            assert_eq!(all, want);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn index_matches_a_btreemap(chunk_max in 2..9usize, ops in prop::collection::vec(op(), 1..200)) {
            run(chunk_max, &ops);
        }
    }

    #[test]
    fn chunks_split_and_merge_back() {
        let mut index = Index::new(4);
        for k in 0..100u8 {
            index.insert(E(vec![k], 0));
        }
        index.check();
        assert!(index.chunks.len() >= 25, "100 keys in chunks of at most 4");
        for k in 0..100u8 {
            index.remove(&[k]);
            index.check();
        }
        assert_eq!(index.chunks.len(), 1, "emptied chunks merge or go");
    }

    #[test]
    fn in_order_inserts_fill_the_slots() {
        let mut index = Index::new(DEFAULT_CHUNK_MAX);
        for k in 0..100_000u32 {
            index.insert(E(k.to_be_bytes().to_vec(), 0));
        }
        let slots: usize = index.chunks.values().map(Vec::capacity).sum();
        assert!(
            slots * 100 < index.len() * 110,
            "{slots} slots for {} entries",
            index.len()
        );
    }
}
