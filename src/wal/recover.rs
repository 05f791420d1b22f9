//! Recovery: reading every segment back, cutting a torn tail, and replaying
//! the records into the state the log had when it last synced.
//!
//! The steps, in order:
//!
//! 1. List the directory; keep the names that parse as segments; sort them by
//!    `seq`. Two files with one `seq`, or a hole in the sequence, is
//!    corruption (a lost file is not a torn write).
//! 2. Scan each segment. A bad record in any segment but the last is
//!    corruption. In the last one, a bad record at offset X is a torn write
//!    unless a later valid record's `synced` field is above X (then X was
//!    durable and is damaged: corruption). A torn tail is truncated away and
//!    reported.
//! 3. Replay every record in order (see [`Replay`]).

use super::log::{Recovered, Segment, TornTail};
use super::record::{find_durable_witness, scan_segment, Record};
use super::segment::parse_segment_name;
use super::{Entry, HardState, SnapshotMarker};
use crate::disk::Disk;
use crate::error::{Error, Result};
use bytes::Bytes;

/// The state recovery rebuilt, for [`Wal::open`](super::Wal::open) to take
/// over.
#[derive(Debug)]
pub(super) struct RecoveredLog {
    /// Every segment on disk, oldest first. Never empty.
    pub segments: Vec<Segment>,
    /// The log's last index (the last entry's, or a snapshot marker's that
    /// jumped past it).
    pub last_index: u64,
    /// What the caller gets back.
    pub recovered: Recovered,
}

/// Where a record sits: segment position in the list, and byte offset.
type Loc = (usize, u64);

/// The replay state machine. It mirrors what [`Wal`](super::Wal) does when
/// buffering, so a log replays to exactly what was appended:
///
/// - an entry at `index <= last + 1` drops every entry at or after `index`
///   and becomes the last one; `index > last + 1` is a gap: corruption;
/// - a hard state replaces the previous one;
/// - a snapshot marker replaces the previous one, and if its index is past
///   `last`, the log jumps there (older entries are dropped: the snapshot
///   covers them).
///
/// Only entries above `from_index` are kept, with where each came from.
struct Replay {
    /// The caller's snapshot index.
    from_index: u64,
    /// The log's last index so far.
    last: u64,
    /// Entries above `from_index`, contiguous and ascending.
    entries: Vec<Entry>,
    /// Where each of `entries` was read.
    locs: Vec<Loc>,
    /// Where the current run of the log began: the oldest segment, or the
    /// last snapshot marker that jumped ahead.
    base: Loc,
    /// The last hard state seen.
    hard_state: HardState,
    /// The last snapshot marker seen.
    snapshot: Option<SnapshotMarker>,
}

impl Replay {
    fn entry(&mut self, entry: Entry, loc: Loc) -> Result<(), &'static str> {
        if entry.index == 0 {
            return Err("entry with index 0");
        }
        if entry.index > self.last.saturating_add(1) {
            return Err("entry index leaves a gap in the log");
        }
        let keep = self.entries.partition_point(|e| e.index < entry.index);
        self.entries.truncate(keep);
        self.locs.truncate(keep);
        self.last = entry.index;
        if entry.index > self.from_index {
            self.entries.push(entry);
            self.locs.push(loc);
        }
        Ok(())
    }

    fn snapshot(&mut self, marker: SnapshotMarker, loc: Loc) {
        self.snapshot = Some(marker);
        if marker.index > self.last {
            self.last = marker.index;
            self.entries.clear();
            self.locs.clear();
            self.base = loc;
        }
    }

    /// Checks the log reaches back to `from_index + 1`, so the caller's
    /// snapshot and the returned entries leave no hole between them.
    fn check_reaches_snapshot(&self) -> Result<(), (Loc, &'static str)> {
        if self.last <= self.from_index {
            return Ok(());
        }
        match self.entries.first() {
            Some(first) if first.index == self.from_index + 1 => Ok(()),
            Some(_) => Err((
                self.locs[0],
                "oldest entry after the snapshot index is missing",
            )),
            None => Err((self.base, "log starts after the snapshot index")),
        }
    }
}

/// One segment file found in the directory.
struct Found {
    seq: u64,
    first_index: u64,
    name: String,
}

/// Lists the segment files in `disk`, sorted by sequence number, checking
/// that the sequence has no duplicates and no holes.
fn list_segments<D: Disk>(disk: &mut D) -> Result<Vec<Found>> {
    let names = disk.list().map_err(|e| Error::io("list", ".", e))?;
    let mut found: Vec<Found> = names
        .into_iter()
        .filter_map(|name| {
            let (seq, first_index) = parse_segment_name(&name)?;
            Some(Found {
                seq,
                first_index,
                name,
            })
        })
        .collect();
    found.sort_by_key(|f| f.seq);
    for pair in found.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        if a.seq == b.seq {
            return Err(corrupt(&b.name, 0, "two segments with one sequence number"));
        }
        if b.seq != a.seq + 1 {
            let missing = format!("{:016x}-*.wal", a.seq + 1);
            return Err(corrupt(&missing, 0, "segment missing from the sequence"));
        }
    }
    Ok(found)
}

fn corrupt(file: &str, offset: u64, reason: impl Into<String>) -> Error {
    Error::Corrupt {
        file: file.to_string(),
        offset,
        reason: reason.into(),
    }
}

/// Recovers the log in `disk`. Returns `None` if the directory holds no
/// segment. May truncate a torn tail (and sync it); writes nothing else.
pub(super) fn recover<D: Disk>(disk: &mut D, from_index: u64) -> Result<Option<RecoveredLog>> {
    let found = list_segments(disk)?;
    let Some(oldest) = found.first() else {
        return Ok(None);
    };
    let mut replay = Replay {
        from_index,
        last: oldest.first_index.saturating_sub(1),
        entries: Vec::new(),
        locs: Vec::new(),
        base: (0, 0),
        hard_state: HardState::default(),
        snapshot: None,
    };
    let mut segments = Vec::with_capacity(found.len());
    let mut torn_tail = None;
    for (pos, f) in found.iter().enumerate() {
        let is_tail = pos + 1 == found.len();
        let buf = Bytes::from(
            disk.read(&f.name)
                .map_err(|e| Error::io("read", &f.name, e))?,
        );
        let scan = scan_segment(buf.clone());
        if let Some(bad) = &scan.bad {
            if !is_tail {
                return Err(corrupt(&f.name, bad.offset, bad.reason));
            }
            if let Some(witness) = find_durable_witness(&buf, bad.offset) {
                let reason = format!(
                    "{}; the record at offset {witness} shows these bytes were synced",
                    bad.reason
                );
                return Err(corrupt(&f.name, bad.offset, reason));
            }
            torn_tail = Some(TornTail {
                file: f.name.clone(),
                offset: bad.offset,
                dropped_bytes: buf.len() as u64 - bad.offset,
            });
        }
        if is_tail {
            // Cut the torn bytes (if any) and make everything left durable,
            // so the `synced` fields of later records tell the truth.
            if torn_tail.is_some() {
                disk.truncate(&f.name, scan.good_len)
                    .map_err(|e| Error::io("truncate", &f.name, e))?;
            }
            disk.sync(&f.name)
                .map_err(|e| Error::io("sync", &f.name, e))?;
        }
        let mut max_index = None;
        let header_records = count_header_records(&scan.records);
        let body_records = (scan.records.len() - header_records) as u64;
        for (offset, record) in scan.records {
            let loc = (pos, offset);
            match record {
                Record::Entry(entry) => {
                    max_index = Some(max_index.unwrap_or(0).max(entry.index));
                    replay
                        .entry(entry, loc)
                        .map_err(|reason| corrupt(&f.name, offset, reason))?;
                }
                Record::HardState(hs) => replay.hard_state = hs,
                Record::Snapshot(marker) => replay.snapshot(marker, loc),
            }
        }
        segments.push(Segment {
            seq: f.seq,
            name: f.name.clone(),
            durable_len: scan.good_len,
            pending: Vec::new(),
            on_disk: true,
            max_index,
            body_records,
        });
    }
    if let Err(((pos, offset), reason)) = replay.check_reaches_snapshot() {
        return Err(corrupt(&found[pos].name, offset, reason));
    }
    Ok(Some(RecoveredLog {
        segments,
        last_index: replay.last,
        recovered: Recovered {
            hard_state: replay.hard_state,
            entries: replay.entries,
            snapshot: replay.snapshot,
            torn_tail,
        },
    }))
}

/// How many of a segment's first records are its header: a hard state,
/// optionally followed by a snapshot marker.
fn count_header_records(records: &[(u64, Record)]) -> usize {
    match records {
        [(_, Record::HardState(_)), (_, Record::Snapshot(_)), ..] => 2,
        [(_, Record::HardState(_)), ..] => 1,
        _ => 0,
    }
}
