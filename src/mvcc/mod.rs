//! The multi-version key-value store, with etcd v3's revision semantics.
//!
//! # What it is
//!
//! An in-memory map from key to the key's *history*: every version the key has
//! had since the last compaction, oldest first. The store is made durable
//! elsewhere: raft's log (the WAL) holds every request that changed it and
//! snapshots hold its whole state ([`Store::encode`]); recovery loads the
//! newest snapshot and re-applies the log after it. Nothing here touches a
//! disk, a clock or a random source, so every replica that applies the same
//! requests in the same order holds the same bytes, and [`Store::hash_kv`]
//! proves it.
//!
//! # Revisions
//!
//! The store has a *current revision*, 1 when empty. Every request that
//! changes something, a whole txn included, takes exactly the next main
//! revision; its changes get sub revisions 0, 1, 2, ... (see [`Revision`]). A
//! request that changes nothing (a delete that matches no key, a txn of reads)
//! takes no revision.
//!
//! # Key histories and generations
//!
//! A key's history is a list of versions ordered by revision. A put appends a
//! version; a delete appends a *tombstone*. The run of versions from a
//! creation up to and including the tombstone that ends it is a *generation*
//! (etcd's `key_index.go` has worked examples). Within a generation,
//! `create_revision` is the main revision of the put that began it and
//! `version` counts the puts so far (1, 2, ...); a tombstone has version 0,
//! so a key put again after a delete starts over at version 1 with a new
//! create revision.
//!
//! A read at revision `r` sees, for each key, the newest version whose main
//! revision is `<= r`, unless that version is a tombstone.
//!
//! # Compaction
//!
//! [`Store::compact`] at revision `c` drops, for every key, all versions that
//! no read at a revision `>= c` can see: everything older than the newest
//! version at or before `c`, and that version too if it is a tombstone. Reads
//! below `c` then fail with [`Error::Compacted`]; reads above the current
//! revision fail with [`Error::FutureRev`].
//!
//! A watch may start at `c` itself (etcd allows it, and clients re-watch from
//! the `compact_revision` they were told). The puts of revision `c` survive
//! compaction (each is its key's newest version at `c`), but a tombstone at
//! `c` would not, nor the versions the changes of `c` replaced (a watcher's
//! `prev_kv`). So compaction keeps the deletes of revision `c` and the
//! versions its changes replaced apart from the key histories
//! ([`Store::events_from`] serves them), until the next compaction replaces
//! them.
//!
//! # Invariants
//!
//! 1. Versions in a history are strictly increasing by revision, and every
//!    revision is `<= current`.
//! 2. No history is empty or starts with a tombstone: a tombstone always
//!    follows a put of its generation, and compaction drops a tombstone
//!    together with everything before it.
//! 3. `compacted <= current`.
//!
//! [`Store::check_invariants`] asserts them; the model tests call it after
//! every operation.
//!
//! # Size
//!
//! [`Store::bytes_in_use`] is the store's size as the quota counts it: for
//! every retained key its length plus [`KEY_OVERHEAD`] (its map entry), and
//! for every retained version its value plus [`VERSION_OVERHEAD`] (the
//! version record). It is kept up to date by every write, rollback and
//! compaction, never recomputed by a walk, and it is the same on every
//! replica that applied the same requests. `docs/mvcc.md` explains the choice.
//!
//! # Values
//!
//! Keys and values are [`Bytes`]: a value decoded from a request shares the
//! request's buffer, and every response or event that returns it shares it
//! again, without a copy.

mod error;
mod history;
mod index;
mod revision;
mod state;
mod txn;
mod version;
mod write;

pub use error::{Error, GrpcCode};
pub use revision::Revision;
pub use state::{HashKv, ImportedVersion};
pub use txn::{check_delete, check_put, check_range, check_txn};

use crate::proto::etcdserverpb::{
    range_request::{SortOrder, SortTarget},
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, ResponseHeader, TxnRequest, TxnResponse,
};
use crate::proto::mvccpb::{Event, KeyValue};
use bytes::Bytes;
use index::{Index, KeyBounds};
use std::ops::Bound;
use version::{History, Version};
use write::WriteTxn;

/// Result of a key-value store operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// etcd's default limit on the ops (and compares) in one txn branch.
pub const DEFAULT_MAX_TXN_OPS: usize = 128;

/// Bytes a retained key counts for besides its own length. The quota's cost
/// model, fixed so that `dbSizeInUse` means the same across releases: it was
/// the size of the key map's entry (a `Bytes` handle and a `Vec` header)
/// before the index was packed (docs/mvcc.md has the measured sizes).
pub const KEY_OVERHEAD: u64 = 56;

/// Bytes a retained version counts for besides its value: the version record
/// (72 bytes, as before and after the packing).
pub const VERSION_OVERHEAD: u64 = 72;

/// What `version` counts for in [`Store::bytes_in_use`].
fn version_bytes(version: &Version) -> u64 {
    VERSION_OVERHEAD + version.value().len() as u64
}

/// What a key's entry, without its versions, counts for.
fn key_bytes(key: &[u8]) -> u64 {
    KEY_OVERHEAD + key.len() as u64
}

/// What a change of a key at exactly the compaction revision needs that
/// compaction would drop, kept for watchers that start there (see the module
/// docs): a delete's tombstone, and the live version the change replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Kept {
    key: Bytes,
    /// The tombstone of a delete at the compaction revision.
    tombstone: Option<Version>,
    /// The live version the change replaced, for `prev_kv`.
    prev: Option<Version>,
}

impl Kept {
    fn bytes(&self) -> u64 {
        key_bytes(&self.key)
            + self.tombstone.as_ref().map_or(0, version_bytes)
            + self.prev.as_ref().map_or(0, version_bytes)
    }
}

/// The newest live version of `history` visible at revision `rev`.
fn visible(history: &[Version], rev: i64) -> Option<&Version> {
    let n = history.partition_point(|v| v.main() <= rev);
    history[..n].last().filter(|v| !v.is_tombstone())
}

/// The keys a request names: `key` alone when `range_end` is empty, else
/// `[key, range_end)`, where a `range_end` of `"\0"` means no upper bound.
fn key_bounds<'a>(key: &'a [u8], range_end: &'a [u8]) -> Option<KeyBounds<'a>> {
    match range_end {
        [] => Some((Bound::Included(key), Bound::Included(key))),
        [0] => Some((Bound::Included(key), Bound::Unbounded)),
        end if end > key => Some((Bound::Included(key), Bound::Excluded(end))),
        _ => None,
    }
}

/// Whether `key` lies within `bounds`.
fn in_bounds(bounds: &KeyBounds<'_>, key: &[u8]) -> bool {
    use std::ops::RangeBounds;
    RangeBounds::<[u8]>::contains(bounds, key)
}

/// A response header carrying only a revision; the server fills in the rest.
fn header(revision: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader {
        revision,
        ..Default::default()
    })
}

/// The in-memory MVCC store. See the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Store {
    /// Every key that has a retained version, with its history (each
    /// history knows its key: the index holds no key of its own).
    keys: Index<History>,
    /// The revision of the newest change (1 for an empty store).
    current: i64,
    /// Reads below this revision are refused; 0 before the first compaction.
    compacted: i64,
    /// Limit on ops per txn branch.
    max_txn_ops: usize,
    /// The size of the retained history (see the module docs), maintained by
    /// every change.
    in_use: u64,
    /// The deletes of the compaction revision (module docs), in key order.
    kept_deletes: Vec<Kept>,
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

impl Store {
    /// An empty store at revision 1.
    pub fn new() -> Self {
        Self {
            keys: Index::new(index::DEFAULT_CHUNK_MAX),
            current: 1,
            compacted: 0,
            max_txn_ops: DEFAULT_MAX_TXN_OPS,
            in_use: 0,
            kept_deletes: Vec::new(),
        }
    }

    /// Sets the limit on ops per txn branch (`--max-txn-ops`).
    pub fn with_max_txn_ops(mut self, max: usize) -> Self {
        self.max_txn_ops = max;
        self
    }

    /// Sets how many keys one chunk of the key index holds (see `index.rs`).
    /// For tests: a small chunk makes a few keys split and merge chunks.
    #[doc(hidden)]
    pub fn with_index_chunk(mut self, chunk_max: usize) -> Self {
        let mut keys = Index::new(chunk_max);
        for history in std::mem::replace(&mut self.keys, Index::new(2)).iter() {
            keys.insert(history.clone());
        }
        self.keys = keys;
        self
    }

    /// The revision of the newest change.
    pub fn current_revision(&self) -> i64 {
        self.current
    }

    /// The compaction revision; 0 if the store was never compacted.
    pub fn compact_revision(&self) -> i64 {
        self.compacted
    }

    /// Number of keys with at least one retained version (live or not).
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// The size of the retained history, as the quota counts it (see the
    /// module docs). Constant time: kept up to date by every change.
    pub fn bytes_in_use(&self) -> u64 {
        self.in_use
    }

    /// [`Store::bytes_in_use`] computed by walking every key: what the
    /// maintained figure must equal.
    fn count_bytes(&self) -> u64 {
        let kept: u64 = self.kept_deletes.iter().map(Kept::bytes).sum();
        kept + (self.keys.iter())
            .map(|h| key_bytes(h[0].key()) + h.iter().map(version_bytes).sum::<u64>())
            .sum::<u64>()
    }

    /// Reads a range at `req.revision` (or the newest), as etcd's Range does.
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse> {
        check_range(req)?;
        self.range_at(req, self.current)
    }

    /// Puts one key, taking the next revision.
    pub fn put(&mut self, req: &PutRequest) -> Result<(PutResponse, Vec<Event>)> {
        check_put(req)?;
        self.write(|tx| tx.put(req))
    }

    /// Deletes a key or range. Takes a revision only if a key was deleted.
    pub fn delete_range(
        &mut self,
        req: &DeleteRangeRequest,
    ) -> Result<(DeleteRangeResponse, Vec<Event>)> {
        check_delete(req)?;
        self.write(|tx| Ok(tx.delete_range(req)))
    }

    /// Runs a txn atomically: all its writes share one revision, and an error
    /// anywhere leaves the store unchanged.
    pub fn txn(&mut self, req: &TxnRequest) -> Result<(TxnResponse, Vec<Event>)> {
        check_txn(req, self.max_txn_ops)?;
        self.write(|tx| tx.txn(req))
    }

    /// Compacts the history at `req.revision`. See the module docs.
    pub fn compact(&mut self, req: &CompactionRequest) -> Result<CompactionResponse> {
        let rev = req.revision;
        if rev <= self.compacted {
            return Err(Error::Compacted);
        }
        if rev > self.current {
            return Err(Error::FutureRev);
        }
        self.compacted = rev;
        let mut freed: u64 = self.kept_deletes.drain(..).map(|k| k.bytes()).sum();
        let mut kept = Vec::new();
        self.keys.retain(|history| {
            freed += compact_history(history, rev, &mut kept);
            !history.is_empty()
        });
        self.in_use -= freed;
        self.in_use += kept.iter().map(Kept::bytes).sum::<u64>();
        self.kept_deletes = kept;
        Ok(CompactionResponse {
            header: header(self.current),
        })
    }

    /// Raises the current revision by `n` without changing any key (etcd's
    /// `--bump-revision` on restore): revisions handed out after a restore
    /// are then above any a client saw before it.
    pub fn bump_revision(&mut self, n: i64) {
        self.current += n.max(0);
    }

    /// Runs `f` in a write transaction at the next revision. Commits if `f`
    /// succeeds (taking the revision only if something changed); rolls back
    /// every change otherwise.
    fn write<R>(
        &mut self,
        f: impl FnOnce(&mut WriteTxn<'_>) -> Result<R>,
    ) -> Result<(R, Vec<Event>)> {
        let mut tx = WriteTxn::begin(self);
        match f(&mut tx) {
            Ok(response) => Ok((response, tx.commit())),
            Err(e) => {
                tx.rollback();
                Err(e)
            }
        }
    }

    /// The range read behind Range and a txn's range ops. `cur` is the newest
    /// revision the reader may see: the store's current revision, or inside a
    /// write txn the revision being written once it has changed something.
    fn range_at(&self, req: &RangeRequest, cur: i64) -> Result<RangeResponse> {
        if req.revision > cur {
            return Err(Error::FutureRev);
        }
        let rev = if req.revision <= 0 { cur } else { req.revision };
        if rev < self.compacted {
            return Err(Error::Compacted);
        }
        let order = SortOrder::try_from(req.sort_order).map_err(|_| Error::InvalidSortOption)?;
        let target = SortTarget::try_from(req.sort_target).map_err(|_| Error::InvalidSortOption)?;
        let filtered = req.min_mod_revision != 0
            || req.max_mod_revision != 0
            || req.min_create_revision != 0
            || req.max_create_revision != 0;
        // etcd sorts ascending by default when the target is not the key.
        let order = match (order, target) {
            (SortOrder::None, t) if t != SortTarget::Key => SortOrder::Ascend,
            (o, _) => o,
        };
        let sorted = !matches!(
            (order, target),
            (SortOrder::None, _) | (SortOrder::Ascend, SortTarget::Key)
        );
        let limit = usize::try_from(req.limit).unwrap_or(0);
        // Without sort or filters the first `limit` keys are the answer, so
        // only those are materialised; `count` still covers the whole range.
        let take = if req.count_only {
            0
        } else if sorted || filtered || limit == 0 {
            usize::MAX
        } else {
            limit
        };

        let mut count = 0i64;
        let mut kvs = Vec::new();
        for version in self.live_at(&req.key, &req.range_end, rev) {
            count += 1;
            if kvs.len() < take {
                // Values are dropped for keys_only after sorting, which may sort by value.
                kvs.push(version.to_kv(req.keys_only && target != SortTarget::Value));
            }
        }
        if filtered {
            kvs.retain(|kv| {
                (req.min_mod_revision == 0 || kv.mod_revision >= req.min_mod_revision)
                    && (req.max_mod_revision == 0 || kv.mod_revision <= req.max_mod_revision)
                    && (req.min_create_revision == 0
                        || kv.create_revision >= req.min_create_revision)
                    && (req.max_create_revision == 0
                        || kv.create_revision <= req.max_create_revision)
            });
        }
        if sorted {
            sort_kvs(&mut kvs, order, target);
        }
        let more = if req.count_only || limit == 0 {
            false
        } else if take == limit {
            count > req.limit
        } else {
            kvs.len() > limit
        };
        kvs.truncate(if limit == 0 { usize::MAX } else { limit });
        if req.keys_only {
            for kv in &mut kvs {
                kv.value = Bytes::new();
            }
        }
        Ok(RangeResponse {
            header: header(cur),
            kvs,
            more,
            count,
        })
    }

    /// The live versions visible at `rev` of the keys `key`/`range_end` name,
    /// in key order.
    fn live_at<'a>(
        &'a self,
        key: &'a [u8],
        range_end: &'a [u8],
        rev: i64,
    ) -> impl Iterator<Item = &'a Version> + 'a {
        key_bounds(key, range_end)
            .into_iter()
            .flat_map(move |bounds| self.keys.range(bounds))
            .filter_map(move |history| visible(history, rev))
    }

    /// Asserts the invariants listed in the module docs. For tests and fuzzing.
    pub fn check_invariants(&self) {
        assert_eq!(
            self.in_use,
            self.count_bytes(),
            "the maintained size matches the history"
        );
        assert!(
            (self.kept_deletes.iter())
                .all(|k| (k.tombstone.iter())
                    .all(|t| t.is_tombstone() && t.main() == self.compacted)),
            "kept deletes are tombstones of the compaction revision"
        );
        assert!(
            self.compacted <= self.current,
            "compacted {} > current {}",
            self.compacted,
            self.current
        );
        self.keys.check();
        for history in self.keys.iter() {
            assert!(!history.is_empty(), "a key with an empty history");
            let key = history[0].key();
            assert!(!key.is_empty(), "empty key in the index");
            assert!(
                history.iter().all(|v| v.key() == key),
                "key {key:?}: every version holds the key"
            );
            assert!(
                !matches!(history, History::Many(vs) if vs.len() < 2),
                "key {key:?}: one version is kept inline"
            );
            assert!(
                !history[0].is_tombstone(),
                "key {key:?} history starts with a tombstone"
            );
            for pair in history.windows(2) {
                assert!(
                    pair[0].rev() < pair[1].rev(),
                    "key {key:?} history out of order"
                );
            }
            let last = history.last().expect("checked non-empty");
            assert!(
                last.main() <= self.current,
                "key {key:?} has a future revision"
            );
        }
    }
}

/// Sorts range results as etcd does, but stably: ties keep key order, so the
/// result is deterministic (Go's `sort.Sort` is not).
fn sort_kvs(kvs: &mut [KeyValue], order: SortOrder, target: SortTarget) {
    let cmp = |a: &KeyValue, b: &KeyValue| match target {
        SortTarget::Key => a.key.cmp(&b.key),
        SortTarget::Version => a.version.cmp(&b.version),
        SortTarget::Create => a.create_revision.cmp(&b.create_revision),
        SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
        SortTarget::Value => a.value.cmp(&b.value),
    };
    match order {
        SortOrder::Descend => kvs.sort_by(|a, b| cmp(b, a)),
        _ => kvs.sort_by(cmp),
    }
}

/// Compacts one key's history at `rev` (module docs), pushing onto `kept`
/// what a watcher starting at `rev` needs that compaction drops. Returns the
/// bytes freed, the key's own if no version is left.
fn compact_history(history: &mut History, rev: i64, kept: &mut Vec<Kept>) -> u64 {
    // Keep the newest version at or before `rev`, unless it is a tombstone.
    let n = history.partition_point(|v| v.main() <= rev);
    if let Some(last) = history[..n].last().filter(|v| v.main() == rev) {
        let prev = (n.checked_sub(2).map(|p| &history[p]))
            .filter(|p| !p.is_tombstone())
            .cloned();
        let tombstone = last.is_tombstone().then(|| last.clone());
        if tombstone.is_some() || prev.is_some() {
            kept.push(Kept {
                key: last.key_bytes(),
                tombstone,
                prev,
            });
        }
    }
    let keep_from = match history[..n].last() {
        Some(v) if v.is_tombstone() => n,
        Some(_) if crate::planted::active(crate::planted::Bug::CompactionDropsNewest) => n,
        Some(_) => n - 1,
        None => 0,
    };
    let key_freed = (keep_from == history.len()).then(|| key_bytes(history[0].key()));
    // Also gives back what an overwritten key no longer needs: memory bounds the data set.
    let gone = history.drain_oldest(keep_from);
    key_freed.unwrap_or(0) + gone.iter().map(version_bytes).sum::<u64>()
}

#[cfg(test)]
mod tests;

impl Store {
    /// The version the change to `key` at the compaction revision replaced,
    /// if compaction kept it (module docs).
    fn kept_prev(&self, key: &[u8]) -> Option<&Version> {
        let i = (self.kept_deletes)
            .binary_search_by(|k| k.key[..].cmp(key))
            .ok()?;
        self.kept_deletes[i].prev.as_ref()
    }
}
