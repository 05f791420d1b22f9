//! [`Wal`]: buffering records, group commit, rotation, release, poisoning.

use super::record::{encode_frame, Record, HEADER_LEN};
use super::recover::recover;
use super::segment::segment_name;
use super::{Entry, HardState, SnapshotMarker, WalOptions};
use crate::disk::Disk;
use crate::error::{Error, Result};

/// What [`Wal::open`] found on disk.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Recovered {
    /// The last hard state written (the default if none was).
    pub hard_state: HardState,
    /// Every entry above the caller's `from_index`, contiguous and ascending,
    /// with raft's overwrites applied.
    pub entries: Vec<Entry>,
    /// The last snapshot marker written, if any.
    pub snapshot: Option<SnapshotMarker>,
    /// The torn end of an unsynced write that recovery cut off, if any.
    pub torn_tail: Option<TornTail>,
}

/// A torn tail recovery truncated away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    /// The segment file it was in (always the last one).
    pub file: String,
    /// The offset the file was truncated to: where the first bad record began.
    pub offset: u64,
    /// How many bytes were cut off.
    pub dropped_bytes: u64,
}

/// One segment, as the log tracks it in memory.
#[derive(Debug)]
pub(super) struct Segment {
    /// Position in the sequence of segments, from 0.
    pub seq: u64,
    /// The file name, `{seq:016x}-{first_index:016x}.wal`.
    pub name: String,
    /// Bytes of the file written and made durable. Always a record boundary.
    pub durable_len: u64,
    /// Encoded records waiting for the next [`Wal::sync`].
    pub pending: Vec<u8>,
    /// Whether the file exists on disk (false: rotation planned it, the next
    /// sync creates it).
    pub on_disk: bool,
    /// The highest entry index the segment holds, written or pending.
    pub max_index: Option<u64>,
    /// Records after the segment's header. A segment whose body is empty
    /// never rotates, so a record larger than `segment_size` still lands.
    pub body_records: u64,
}

impl Segment {
    /// A segment rotation has planned but not yet created.
    fn planned(seq: u64, first_index: u64) -> Self {
        Self {
            seq,
            name: segment_name(seq, first_index),
            durable_len: 0,
            pending: Vec::new(),
            on_disk: false,
            max_index: None,
            body_records: 0,
        }
    }

    /// The segment's length once its pending bytes are written.
    fn len(&self) -> u64 {
        self.durable_len + self.pending.len() as u64
    }
}

/// A step [`Wal::sync`] can undo if a later step fails.
enum Undo {
    /// The sync created this file.
    Remove(String),
    /// The sync appended to this file, which was this long before.
    Truncate(String, u64),
}

/// The write-ahead log over a [`Disk`]. See the [module docs](super).
#[derive(Debug)]
pub struct Wal<D: Disk> {
    /// The directory the segments live in.
    disk: D,
    /// Layout options.
    opts: WalOptions,
    /// Every segment, oldest first, including one rotation may have planned
    /// but not created. Never empty.
    segments: Vec<Segment>,
    /// The index of the last entry appended (or of a snapshot marker that
    /// jumped past it).
    last_index: u64,
    /// The latest hard state, buffered or not: the header of the next segment.
    hard_state: HardState,
    /// The latest snapshot marker, buffered or not: also in the next header.
    snapshot: Option<SnapshotMarker>,
    /// Set when a disk operation failed; every mutating call then fails.
    poisoned: bool,
    /// Reused buffer for encoding one record's payload.
    scratch: Vec<u8>,
}

impl<D: Disk> Wal<D> {
    /// Opens the log in `disk`, creating the first segment if the directory
    /// holds none, and returns what recovery found.
    ///
    /// `from_index` is the index of the snapshot the caller loaded (0 if
    /// none): entries at or below it are not returned, and if the log does
    /// not reach back to `from_index + 1` that is [`Error::Corrupt`]. A torn
    /// tail of the last segment is truncated (and reported in
    /// [`Recovered::torn_tail`]); a bad record anywhere else is
    /// [`Error::Corrupt`] naming the file and offset.
    ///
    /// A fresh log starts at index 1. A caller restoring from a snapshot into
    /// an empty directory calls [`Wal::mark_snapshot`] before appending.
    ///
    /// # Panics
    /// If `opts.segment_size` is 0.
    pub fn open(mut disk: D, opts: WalOptions, from_index: u64) -> Result<(Self, Recovered)> {
        assert!(opts.segment_size > 0, "segment_size must be positive");
        let recovered_log = recover(&mut disk, from_index)?;
        let mut wal = Wal {
            disk,
            opts,
            segments: Vec::new(),
            last_index: 0,
            hard_state: HardState::default(),
            snapshot: None,
            poisoned: false,
            scratch: Vec::new(),
        };
        let recovered = match recovered_log {
            None => {
                wal.segments.push(Segment::planned(0, 1));
                Recovered::default()
            }
            Some(log) => {
                wal.segments = log.segments;
                wal.last_index = log.last_index;
                wal.hard_state = log.recovered.hard_state;
                wal.snapshot = log.recovered.snapshot;
                log.recovered
            }
        };
        // A new first segment, or a tail that crashed (or was torn) before
        // its header was durable, gets its header now: invariant 3.
        if wal.tail().len() == 0 {
            let mut header = Vec::new();
            wal.encode_header(&mut header);
            wal.tail_mut().pending = header;
            wal.sync()?;
        }
        Ok((wal, recovered))
    }

    /// Buffers `entries`. An entry whose index is at or below
    /// [`Wal::last_index`] replaces that index and everything after it
    /// (raft's truncation of a conflicting suffix). Durable after
    /// [`Wal::sync`].
    ///
    /// # Panics
    /// If an entry's index is 0, above `last_index + 1` (raft never leaves a
    /// gap) or at or below the last snapshot marker (raft never rewrites
    /// committed entries): the caller is broken.
    pub fn append(&mut self, entries: &[Entry]) -> Result<()> {
        self.check_poisoned()?;
        for entry in entries {
            assert!(entry.index > 0, "log entries start at index 1");
            // Entries at or below a snapshot are committed: raft never rewrites them.
            let snap_index = self.snapshot.map_or(0, |m| m.index);
            assert!(
                entry.index > snap_index,
                "entry index {} rewrites the log at or below snapshot index {snap_index}",
                entry.index
            );
            assert!(
                entry.index <= self.last_index.saturating_add(1),
                "entry index {} leaves a gap after last index {}",
                entry.index,
                self.last_index
            );
            self.push_record(&Record::Entry(entry.clone()));
            self.last_index = entry.index;
        }
        Ok(())
    }

    /// Buffers a new hard state. Durable after [`Wal::sync`].
    pub fn set_hard_state(&mut self, hs: HardState) -> Result<()> {
        self.check_poisoned()?;
        self.push_record(&Record::HardState(hs));
        self.hard_state = hs;
        Ok(())
    }

    /// Buffers a snapshot marker. If `m.index` is past [`Wal::last_index`]
    /// the log jumps there, so the next entry may be `m.index + 1`. Durable
    /// after [`Wal::sync`]. Save the snapshot itself durably first: recovery
    /// trusts that a snapshot exists at every marker.
    pub fn mark_snapshot(&mut self, m: SnapshotMarker) -> Result<()> {
        self.check_poisoned()?;
        self.push_record(&Record::Snapshot(m));
        self.snapshot = Some(m);
        self.last_index = self.last_index.max(m.index);
        Ok(())
    }

    /// Group commit: writes everything buffered, with one `append` per
    /// segment touched and one `sync` per segment touched (one of each when
    /// no rotation happened), creating rotated-to segments on the way.
    /// Everything buffered is durable when this returns `Ok`.
    ///
    /// On a disk error, tries to undo the batch on disk, poisons the log and
    /// returns the error with its `io::ErrorKind`.
    pub fn sync(&mut self) -> Result<()> {
        self.check_poisoned()?;
        let Some(first) = self
            .segments
            .iter()
            .position(|s| !s.on_disk || !s.pending.is_empty())
        else {
            return Ok(());
        };
        let mut undo = Vec::new();
        for pos in first..self.segments.len() {
            if let Err(err) = self.flush_segment(pos, &mut undo) {
                self.poisoned = true;
                self.roll_back(&undo);
                return Err(err);
            }
        }
        Ok(())
    }

    /// Removes the oldest segments whose entries all have index `<= index`,
    /// down to [`WalOptions::max_segments`] on disk, as long as a later
    /// segment is on disk (the tail is never removed, and
    /// neither is a segment whose successor has not been created yet). Only
    /// a prefix is removed, so the sequence keeps no holes: a segment with a
    /// higher entry blocks those after it. Each removal is made durable
    /// before the next.
    pub fn release_to(&mut self, index: u64) -> Result<()> {
        self.check_poisoned()?;
        let mut count = 0;
        while count + 1 < self.segments.len() {
            let (seg, next) = (&self.segments[count], &self.segments[count + 1]);
            if !next.on_disk || seg.max_index.is_some_and(|m| m > index) {
                break;
            }
            assert!(
                seg.pending.is_empty(),
                "a segment before an on-disk one is fully written"
            );
            count += 1;
        }
        let on_disk = self.segments.iter().filter(|s| s.on_disk).count();
        count = match self.opts.max_segments {
            0 => 0,
            max => count.min(on_disk.saturating_sub(max)),
        };
        for _ in 0..count {
            let name = self.segments[0].name.clone();
            let result = self
                .disk
                .remove(&name)
                .map_err(|e| Error::io("remove", &name, e))
                .and_then(|()| {
                    self.disk
                        .sync_dir()
                        .map_err(|e| Error::io("sync_dir", &name, e))
                });
            if let Err(err) = result {
                self.poisoned = true;
                return Err(err);
            }
            self.segments.remove(0);
        }
        Ok(())
    }

    /// The index of the last entry appended (buffered or not), or of a
    /// snapshot marker that jumped past it; 0 for an empty log.
    pub fn last_index(&self) -> u64 {
        self.last_index
    }

    /// The names of the segment files on disk, oldest first.
    pub fn segment_names(&self) -> Vec<String> {
        self.segments
            .iter()
            .filter(|s| s.on_disk)
            .map(|s| s.name.clone())
            .collect()
    }

    fn check_poisoned(&self) -> Result<()> {
        if self.poisoned {
            Err(Error::Poisoned)
        } else {
            Ok(())
        }
    }

    fn tail(&self) -> &Segment {
        self.segments.last().expect("the log always has a segment")
    }

    fn tail_mut(&mut self) -> &mut Segment {
        self.segments
            .last_mut()
            .expect("the log always has a segment")
    }

    /// Encodes a segment header (the current hard state, then the snapshot
    /// marker if any) into `out`, for a segment with nothing durable yet.
    fn encode_header(&mut self, out: &mut Vec<u8>) {
        let mut records = vec![Record::HardState(self.hard_state)];
        records.extend(self.snapshot.map(Record::Snapshot));
        for record in &records {
            self.scratch.clear();
            record.encode_payload(&mut self.scratch);
            encode_frame(out, record, 0, &self.scratch);
        }
    }

    /// Encodes `record` into the tail's pending buffer, rotating first if it
    /// would push a tail with a non-empty body past `segment_size`.
    fn push_record(&mut self, record: &Record) {
        self.scratch.clear();
        record.encode_payload(&mut self.scratch);
        let frame_len = HEADER_LEN + self.scratch.len() as u64;
        let tail = self.tail();
        if tail.body_records > 0 && tail.len() + frame_len > self.opts.segment_size {
            self.plan_rotation();
            // The header went through `scratch`: encode the record again.
            self.scratch.clear();
            record.encode_payload(&mut self.scratch);
        }
        let tail = self
            .segments
            .last_mut()
            .expect("the log always has a segment");
        let offset = tail.len();
        encode_frame(&mut tail.pending, record, tail.durable_len, &self.scratch);
        assert_eq!(tail.len(), offset + frame_len, "frame length as computed");
        tail.body_records += 1;
        if let Record::Entry(e) = record {
            tail.max_index = Some(tail.max_index.map_or(e.index, |m| m.max(e.index)));
        }
    }

    /// Plans the next segment: its name and header are fixed now; the next
    /// sync writes the old tail out, fsyncs it, then creates this one.
    fn plan_rotation(&mut self) {
        let tail = self.tail();
        let mut next = Segment::planned(tail.seq + 1, self.last_index.saturating_add(1));
        let mut header = Vec::new();
        self.encode_header(&mut header);
        next.pending = header;
        self.segments.push(next);
    }

    /// Writes segment `pos`'s pending bytes: creates the file first if it is
    /// new (and fsyncs the directory), then one append and one sync.
    fn flush_segment(&mut self, pos: usize, undo: &mut Vec<Undo>) -> Result<()> {
        let Wal { disk, segments, .. } = self;
        let seg = &mut segments[pos];
        assert!(
            !seg.pending.is_empty(),
            "every segment from the first unwritten one on has pending bytes"
        );
        if seg.on_disk {
            undo.push(Undo::Truncate(seg.name.clone(), seg.durable_len));
        } else {
            disk.create(&seg.name)
                .map_err(|e| Error::io("create", &seg.name, e))?;
            undo.push(Undo::Remove(seg.name.clone()));
            seg.on_disk = true;
            disk.sync_dir()
                .map_err(|e| Error::io("sync_dir", &seg.name, e))?;
        }
        disk.append(&seg.name, &seg.pending)
            .map_err(|e| Error::io("append", &seg.name, e))?;
        disk.sync(&seg.name)
            .map_err(|e| Error::io("sync", &seg.name, e))?;
        seg.durable_len += seg.pending.len() as u64;
        seg.pending.clear();
        Ok(())
    }

    /// Best effort: puts every file `sync` touched back as it was. Errors
    /// are dropped on purpose: the log is poisoned whatever happens here, and
    /// the error the caller needs is the one that got us here.
    fn roll_back(&mut self, undo: &[Undo]) {
        let mut removed = false;
        for step in undo.iter().rev() {
            match step {
                Undo::Remove(name) => {
                    removed |= self.disk.remove(name).is_ok();
                }
                Undo::Truncate(name, len) => {
                    if self.disk.truncate(name, *len).is_ok() {
                        let _ = self.disk.sync(name);
                    }
                }
            }
        }
        if removed {
            let _ = self.disk.sync_dir();
        }
    }
}
