//! A node's data directory and the order in which it is recovered.
//!
//! # Layout
//!
//! ```text
//! <data-dir>/
//!   wal/    the write-ahead log segments (see docs/wal.md)
//!   snap/   snapshot files (see docs/snapshot.md)
//! ```
//!
//! Each subdirectory is its own [`Disk`], so the WAL and the snapshot store
//! never see each other's files.
//!
//! # Recovery
//!
//! [`recover`] does what ARCHITECTURE.md's "Recovery" asks, in this order:
//!
//! 1. Load the newest snapshot that passes its checks. Newer ones that fail are
//!    renamed `.broken` and reported, never used.
//! 2. Decode its MVCC section into a [`Store`]. A snapshot whose CRC passed but
//!    whose state does not decode is corruption: recovery stops and names it.
//! 3. Open the WAL from the snapshot's index: every entry after it comes back,
//!    with the last hard state. A torn tail of the last segment is cut off; any
//!    other damage stops recovery with the file and offset. If the snapshot is
//!    ahead of the log (its marker was in a torn tail), the marker is written
//!    again, so the log continues right after the snapshot.
//!
//! Re-applying the returned entries to the store is the node's job: only the
//! node knows what an entry's data means (see issue #3).

use crate::disk::Disk;
use crate::error::{Error, Result};
use crate::mvcc::Store;
use crate::snap::{decode_sections, SectionKind, SnapStore, Snapshot, DEFAULT_KEEP};
use crate::wal::{self, Wal, WalOptions};

/// Subdirectory of the data dir holding the WAL.
pub const WAL_DIR: &str = "wal";
/// Subdirectory of the data dir holding snapshots.
pub const SNAP_DIR: &str = "snap";

/// How a data directory is kept: etcd's `--max-wals`, `--max-snapshots` and
/// `--unsafe-no-fsync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StorageOptions {
    /// WAL layout and `--max-wals` ([`WalOptions::max_segments`]).
    pub wal: WalOptions,
    /// `--max-snapshots`: snapshot files kept; 0 keeps all. A cairn snapshot
    /// holds the whole state (etcd's hold raft metadata beside a bbolt file),
    /// so cairn's default is [`DEFAULT_KEEP`], not etcd's 5.
    pub max_snapshots: usize,
    /// `--unsafe-no-fsync`: the driver opens its disks without fsync. Not
    /// durable: a power loss can lose acknowledged writes.
    pub unsafe_no_fsync: bool,
}

impl Default for StorageOptions {
    fn default() -> Self {
        Self {
            wal: WalOptions::default(),
            max_snapshots: DEFAULT_KEEP,
            unsafe_no_fsync: false,
        }
    }
}

/// Everything recovery found.
#[derive(Debug)]
pub struct Recovered {
    /// The snapshot loaded, with its file name; `None` on a fresh node.
    pub snapshot: Option<(String, Snapshot)>,
    /// Newer snapshots that failed their checks (already renamed `.broken`).
    pub rejected_snapshots: Vec<(String, Error)>,
    /// The MVCC state as of the snapshot (empty without one).
    pub store: Store,
    /// The WAL's hard state and the entries after the snapshot.
    pub wal: wal::Recovered,
}

/// Recovers a node from its snapshot directory and WAL directory. See the
/// module docs for the order and what each failure means.
pub fn recover<D: Disk>(
    wal_disk: D,
    snap_disk: D,
    opts: &StorageOptions,
) -> Result<(Wal<D>, SnapStore<D>, Recovered)> {
    let keep = match opts.max_snapshots {
        0 => usize::MAX,
        n => n,
    };
    let mut snaps = SnapStore::new(snap_disk, keep);
    let loaded = snaps.load_newest()?;
    let store = match &loaded.snapshot {
        Some((file, snap)) => store_from_snapshot(file, snap)?,
        None => Store::new(),
    };
    let from_index = loaded.snapshot.as_ref().map_or(0, |(_, s)| s.meta.index);
    let (mut wal, wal_recovered) = Wal::open(wal_disk, opts.wal, from_index)?;
    if let Some((_, snap)) = &loaded.snapshot {
        if snap.meta.index > wal.last_index() {
            // The snapshot is durable but its WAL marker was lost with an
            // unsynced tail: mark it now, so the log continues after it.
            wal.mark_snapshot(crate::wal::SnapshotMarker {
                index: snap.meta.index,
                term: snap.meta.term,
            })?;
            wal.sync()?;
        }
    }
    Ok((
        wal,
        snaps,
        Recovered {
            snapshot: loaded.snapshot,
            rejected_snapshots: loaded.rejected,
            store,
            wal: wal_recovered,
        },
    ))
}

/// Decodes the MVCC state out of a snapshot's sections.
pub fn store_from_snapshot(file: &str, snap: &Snapshot) -> Result<Store> {
    store_from_data(file, snap.data.clone())
}

/// Decodes the MVCC state out of snapshot data (its sections), as stored in a
/// snapshot file or shipped by the leader in a raft snapshot. `origin` names
/// where the data came from, for the error.
pub fn store_from_data(origin: &str, data: bytes::Bytes) -> Result<Store> {
    let corrupt = |offset: usize, reason: String| Error::Corrupt {
        file: origin.to_string(),
        offset: offset as u64,
        reason,
    };
    let sections =
        decode_sections(data).map_err(|e| corrupt(e.offset, format!("snapshot sections: {e}")))?;
    let mvcc = sections
        .into_iter()
        .find(|(kind, _)| *kind == SectionKind::Mvcc)
        .ok_or_else(|| corrupt(0, "snapshot has no mvcc section".into()))?
        .1;
    Store::decode(mvcc).map_err(|e| corrupt(e.offset, format!("mvcc state: {e}")))
}

/// The snapshot data for `store`: its sections, ready for a [`Snapshot`].
pub fn snapshot_data(store: &Store) -> Vec<u8> {
    crate::snap::encode_sections(&[(SectionKind::Mvcc, &store.encode())])
}
