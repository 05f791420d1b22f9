//! The write-ahead log: raft's log entries and hard state, made durable.
//!
//! # What it owns
//!
//! The WAL is the only durable copy of raft's log between snapshots. It holds
//! three kinds of facts, each as one *record*:
//!
//! - log [`Entry`]s, in index order, with raft's overwrite rule: an entry
//!   whose index is at or below the last one replaces that index and
//!   everything after it (a follower truncating a conflicting suffix);
//! - the raft [`HardState`] (term, vote, commit): the last one written wins;
//! - [`SnapshotMarker`]s: "a snapshot at this index and term exists". The
//!   last one wins, and it lets the log jump ahead (a follower that installed
//!   a snapshot from its leader continues at `index + 1`).
//!
//! It is a library over a [`Disk`](crate::disk::Disk), the directory the log
//! lives in. It reads no clock and starts no thread: the driver calls
//! [`Wal::sync`] when it wants durability, and many appends share that one
//! fsync (group commit). The on-disk format is specified in `docs/wal.md`;
//! this essay says how the code keeps it.
//!
//! # Segments
//!
//! The log is a sequence of segment files named
//! `{seq:016x}-{first_index:016x}.wal`. `seq` counts up from 0 with no holes;
//! `first_index` is `last_index + 1` at the moment the segment was created.
//! Only the last segment (the *tail*) is ever written. When a record would
//! push the tail past [`WalOptions::segment_size`], the log *rotates*: the
//! old tail is written and fsynced in full, the new file is created, the
//! directory is fsynced, and only then does anything land in the new file.
//! Every segment begins with a *header*: the current hard state and, if one
//! exists, the latest snapshot marker. So a segment never depends on the ones
//! before it for those two facts, and [`Wal::release_to`] can delete a prefix
//! of old segments once a snapshot covers their entries.
//!
//! # Records and the `synced` field
//!
//! Each record is framed by a CRC-32 over its length, type, `synced` field and
//! payload. `synced` is how many bytes of *its own* segment were durable when
//! the record was encoded. Recovery uses it to tell a torn write from damage:
//! if a bad record at offset X is followed by a good record whose `synced` is
//! above X, the bytes at X were once durable, so they were damaged after the
//! fact and recovery stops with [`Error::Corrupt`](crate::Error::Corrupt). If
//! nothing later vouches for X, X is the torn end of an unsynced write and
//! recovery cuts the tail there. See `docs/wal.md` for the limit of this rule.
//!
//! # Buffering and group commit
//!
//! [`Wal::append`], [`Wal::set_hard_state`] and [`Wal::mark_snapshot`] only
//! encode records into a pending buffer per segment; they touch no disk and
//! cannot fail on I/O. Rotation during buffering only *plans* a new segment
//! (its name and header are fixed then). [`Wal::sync`] then does, for each
//! segment with pending bytes in order: create it if it is new (and fsync the
//! directory), one `append` of the whole buffer, one `sync`. A batch that
//! fits in the tail therefore costs exactly one write and one fsync.
//!
//! # Failure
//!
//! A failed disk operation in [`Wal::sync`] or [`Wal::release_to`] returns
//! [`Error::Io`](crate::Error::Io) with the disk's `io::ErrorKind`. Before it
//! returns, `sync` tries to undo the batch on disk (truncate each touched file
//! back to its old length, remove files it created), and the handle is then
//! *poisoned*: every later mutating call returns
//! [`Error::Poisoned`](crate::Error::Poisoned). After a failed fsync nobody
//! knows what is durable, so the node stops and recovers by reopening
//! (ARCHITECTURE.md rule 4). Reopening finds the log as it was before the
//! failed batch, or that batch's torn remains, which recovery cuts off.
//!
//! # Invariants
//!
//! Written here, asserted in the code:
//!
//! 1. Segment `seq`s are consecutive; only the last segment may have been
//!    planned but not yet created on disk, and only a suffix of segments
//!    holds pending bytes.
//! 2. Every record pending for a segment carries `synced` equal to that
//!    segment's durable length, and is written at exactly that offset.
//! 3. A segment created on disk has its header records durable before
//!    anything may release the segments before it.
//! 4. Appended entries never leave a gap: `index <= last_index + 1`.
//! 5. Every on-disk segment's durable length is a record boundary.

mod log;
mod record;
mod recover;
mod segment;

pub use log::{Recovered, TornTail, Wal};
pub use record::{
    scan_segment, BadRecord, Record, SegmentScan, HEADER_LEN, MAX_RECORD_LEN, TYPE_ENTRY,
    TYPE_HARD_STATE, TYPE_SNAPSHOT,
};
pub use segment::{parse_segment_name, segment_name};

use bytes::Bytes;

/// One raft log entry, field for field raft-rs's `eraftpb::Entry`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Entry {
    /// The entry's position in the log, from 1.
    pub index: u64,
    /// The leader's term when the entry was proposed.
    pub term: u64,
    /// What `data` holds.
    pub kind: EntryKind,
    /// The payload (a serialized request or configuration change).
    pub data: Bytes,
    /// Opaque bytes raft carries with the entry.
    pub context: Bytes,
}

/// The kind of a log entry, raft-rs's `eraftpb::EntryType` with the same
/// numbers.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EntryKind {
    /// A client request (or an empty entry a new leader appends).
    #[default]
    Normal = 0,
    /// A single-step membership change (`ConfChange`).
    ConfChange = 1,
    /// A joint-consensus membership change (`ConfChangeV2`).
    ConfChangeV2 = 2,
}

impl EntryKind {
    /// The kind stored as `byte`, if any.
    pub fn from_u8(byte: u8) -> Option<Self> {
        match byte {
            0 => Some(EntryKind::Normal),
            1 => Some(EntryKind::ConfChange),
            2 => Some(EntryKind::ConfChangeV2),
            _ => None,
        }
    }
}

/// Raft's persistent vote state, raft-rs's `eraftpb::HardState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HardState {
    /// The latest term this node has seen.
    pub term: u64,
    /// The node voted for in `term` (0: none).
    pub vote: u64,
    /// The highest index known to be committed.
    pub commit: u64,
}

/// "A snapshot exists at this index and term." Written when the node saves or
/// installs a snapshot; it lets the log resume at `index + 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SnapshotMarker {
    /// The last log index the snapshot covers.
    pub index: u64,
    /// The term of the entry at `index`.
    pub term: u64,
}

/// How the log is laid out on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalOptions {
    /// The size in bytes a segment may reach before the log rotates to a new
    /// one. A segment exceeds it only when a single record is larger.
    pub segment_size: u64,
    /// `--max-wals`: [`Wal::release_to`] removes released segments only while
    /// more than this many are on disk, so the newest ones stay for
    /// inspection as etcd keeps them; 0 keeps every segment. A segment that
    /// holds entries after the release point is never removed, whatever
    /// this says.
    pub max_segments: usize,
}

impl Default for WalOptions {
    /// etcd's: 64 MiB segments, at most 5 kept.
    fn default() -> Self {
        Self {
            segment_size: 64 * 1024 * 1024,
            max_segments: 5,
        }
    }
}
