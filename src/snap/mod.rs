//! Snapshots: the node's state at one raft index, in checksummed files that
//! are written atomically.
//!
//! # What this module owns
//!
//! Raft's log cannot grow for ever. Once the state machine has applied entry
//! `i`, the driver may write the whole state as of `i` to a snapshot file and
//! let the WAL drop what came before. On restart, recovery loads the newest
//! valid snapshot and replays the WAL after it (ARCHITECTURE.md, "Recovery").
//! A follower too far behind gets the same bytes from the leader in a raft
//! `Snapshot` message. This module owns three things:
//!
//! - **The state container** ([`encode_sections`], [`decode_sections`]): the
//!   bytes that stand for the state machine. A list of tagged sections
//!   ([`SectionKind`]), so the lessor can add its own later without a format
//!   break. This is what goes in raft's `Snapshot.data`.
//! - **The file format** ([`encode_snapshot`], [`decode_snapshot`]): raft's
//!   snapshot metadata (index, term, membership) and the container, behind a
//!   magic, a format version and a CRC-32. The byte layout is specified in
//!   `docs/snapshot.md`.
//! - **The store** ([`SnapStore`]): where files live on a [`Disk`], how one is
//!   written so that a crash never leaves a half-written snapshot that looks
//!   whole, how old ones are pruned, and how the newest valid one is found.
//!
//! It does not decide *when* to snapshot, nor does it touch the WAL: the
//! driver saves a snapshot, then tells the WAL it may release older segments.
//! The order matters (etcd's `raft.go` names it too): the snapshot must be
//! durable before anything it replaces is removed.
//!
//! # Writing a snapshot
//!
//! [`SnapStore::save`] follows the classic atomic-replace recipe, each step a
//! crash point the simulator can stop at:
//!
//! 1. Create `{term:016x}-{index:016x}.snap.tmp`, append the encoded file,
//!    `sync` it. A crash here leaves at most a `.tmp`, which no reader looks
//!    at and the next save removes.
//! 2. Rename the `.tmp` to its final name. The name appears atomically with
//!    contents that are already durable, so a `.snap` is never partial.
//! 3. `sync_dir`, making the rename durable. Until it returns, a crash may
//!    undo the rename; the previous snapshots are all still there.
//! 4. Prune: remove all but the `keep` newest snapshots by index (never the
//!    one just written) and every stale `.tmp`, then `sync_dir` again.
//!
//! Because pruning comes last, an error or crash at any step leaves every
//! snapshot that existed before the call intact. No handle state outlives a
//! call (every save writes a fresh file), so unlike the WAL the store needs
//! no "poisoned" mode: a failed `sync` of a `.tmp` is never retried on the
//! same file, and its contents are never trusted.
//!
//! # Reading
//!
//! [`SnapStore::load_newest`] walks the snapshot files from the newest index
//! down. The first that decodes, passes its CRC and holds the index and term
//! its name promises wins. A newer file that fails is *not* skipped in
//! silence (ARCHITECTURE.md rule 3): it is renamed to `<name>.broken`, as
//! etcd does, so it is not retried on the next start, and it is reported in
//! [`Loaded::rejected`] with an [`Error::Corrupt`](crate::Error::Corrupt)
//! naming the file and the offset. Whether the node may go on from an older
//! snapshot is the caller's call: the WAL must reach back far enough.
//!
//! # Invariants
//!
//! - A file named `*.snap` in the directory is complete and was synced before
//!   it got that name.
//! - No snapshot is removed until a newer one is durable.
//! - After a successful save, at most `keep` snapshots remain (plus the one
//!   just saved, when it is older than those: saving an old snapshot is
//!   allowed but never deletes the data just written).
//! - Nothing decoded is trusted before its CRC passes; decoding never panics
//!   on any input (the `snap_decode` fuzz target checks both decoders).
//!
//! # Errors
//!
//! Disk failures come back as [`Error::Io`](crate::Error::Io) with the
//! operation, the file (`.` for directory operations) and the original
//! `io::Error`, kind intact: a full disk (`StorageFull`) stays a full disk.
//! Decoding errors are [`DecodeError`](crate::codec::DecodeError)s with the
//! offset and the check that failed.
//!
//! # Limits
//!
//! A snapshot is encoded in memory as one buffer and written with one append;
//! reading also takes the whole file. Streaming large states is left for
//! when the state outgrows memory, which the in-memory MVCC store already
//! bounds.
//!
//! [`Disk`]: crate::disk::Disk

mod file;
pub mod image;
mod sections;
mod store;

pub use file::{
    decode_snapshot, encode_snapshot, Snapshot, SnapshotMeta, FORMAT_VERSION, MAGIC, MIN_LEN,
};
pub use sections::{
    decode_sections, encode_sections, encode_sections_with, SectionKind, SectionWriter,
};
pub use store::{parse_snap_name, snap_name, Loaded, SnapStore, DEFAULT_KEEP};
