//! Integration tests of the write-ahead log: what survives a reopen and a
//! crash, rotation and release, raft's overwrites, torn tails at every byte,
//! flipped bits, and failing disks.
//!
//! Every test builds its log on a `MemDisk` (crashable, with a fault hook)
//! unless it says otherwise; one runs on a real directory.
// Tests may use the real file system (for the FsDisk test's temp directory).
#![allow(clippy::disallowed_methods)]

use bytes::Bytes;
use cairn::disk::{Disk, DiskOp, FsDisk, MemDisk};
use cairn::wal::{
    parse_segment_name, scan_segment, Entry, EntryKind, HardState, Record, Recovered,
    SnapshotMarker, TornTail, Wal, WalOptions, HEADER_LEN,
};
use cairn::Error;
use std::io;
use std::sync::{Arc, Mutex};

fn entry(index: u64, term: u64) -> Entry {
    entry_sized(index, term, 16)
}

/// An entry whose data is `len` bytes derived from its index and term, so a
/// wrong entry never compares equal to the right one.
fn entry_sized(index: u64, term: u64, len: usize) -> Entry {
    let data: Vec<u8> = (0..len)
        .map(|i| (index as usize * 31 + term as usize * 7 + i) as u8)
        .collect();
    Entry {
        index,
        term,
        kind: if index.is_multiple_of(5) {
            EntryKind::ConfChange
        } else {
            EntryKind::Normal
        },
        data: Bytes::from(data),
        context: Bytes::from(format!("ctx{index}")),
    }
}

fn entries(range: std::ops::RangeInclusive<u64>, term: u64) -> Vec<Entry> {
    range.map(|i| entry(i, term)).collect()
}

fn hs(term: u64, vote: u64, commit: u64) -> HardState {
    HardState { term, vote, commit }
}

/// Small segments, and released ones removed down to the tail.
fn small(segment_size: u64) -> WalOptions {
    WalOptions {
        segment_size,
        max_segments: 1,
    }
}

fn open(disk: &MemDisk, opts: WalOptions, from_index: u64) -> (Wal<MemDisk>, Recovered) {
    Wal::open(disk.clone(), opts, from_index).expect("open")
}

fn open_err(disk: &MemDisk, opts: WalOptions, from_index: u64) -> Error {
    match Wal::open(disk.clone(), opts, from_index) {
        Ok((_, rec)) => panic!("open succeeded, recovered {rec:?}"),
        Err(err) => err,
    }
}

fn read(disk: &MemDisk, name: &str) -> Vec<u8> {
    disk.clone().read(name).expect("read")
}

/// `(offset, record)` for every record of segment `name`, checking it decodes
/// completely.
fn records(disk: &MemDisk, name: &str) -> Vec<(u64, Record)> {
    let scan = scan_segment(Bytes::from(read(disk, name)));
    assert_eq!(scan.bad, None, "{name} decodes completely");
    scan.records
}

/// Offset of the record holding entry `index` in segment `name`.
fn entry_offset(disk: &MemDisk, name: &str, index: u64) -> u64 {
    records(disk, name)
        .into_iter()
        .find_map(|(off, r)| matches!(r, Record::Entry(e) if e.index == index).then_some(off))
        .unwrap_or_else(|| panic!("entry {index} in {name}"))
}

fn assert_corrupt(err: Error, want_file: &str, want_offset: u64) {
    match err {
        Error::Corrupt { file, offset, .. } => {
            assert_eq!((file.as_str(), offset), (want_file, want_offset), "{file}")
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn reopen_returns_exactly_what_was_synced() {
    let disk = MemDisk::new();
    let (mut wal, rec) = open(&disk, WalOptions::default(), 0);
    assert_eq!(rec, Recovered::default());
    assert_eq!(
        wal.segment_names(),
        vec!["0000000000000000-0000000000000001.wal"]
    );
    wal.append(&entries(1..=10, 1)).unwrap();
    wal.set_hard_state(hs(1, 2, 7)).unwrap();
    wal.mark_snapshot(SnapshotMarker { index: 4, term: 1 })
        .unwrap();
    wal.sync().unwrap();
    // Buffered but never synced: gone after a crash.
    wal.append(&entries(11..=15, 2)).unwrap();
    wal.set_hard_state(hs(2, 3, 12)).unwrap();
    wal.mark_snapshot(SnapshotMarker { index: 12, term: 2 })
        .unwrap();
    assert_eq!(wal.last_index(), 15);
    drop(wal);
    disk.crash();

    let (wal, rec) = open(&disk, WalOptions::default(), 0);
    assert_eq!(rec.entries, entries(1..=10, 1));
    assert_eq!(rec.hard_state, hs(1, 2, 7));
    assert_eq!(rec.snapshot, Some(SnapshotMarker { index: 4, term: 1 }));
    assert_eq!(rec.torn_tail, None);
    assert_eq!(wal.last_index(), 10);
    drop(wal);

    // from_index drops what the caller's snapshot covers.
    let (_, rec) = open(&disk, WalOptions::default(), 4);
    assert_eq!(rec.entries, entries(5..=10, 1));
}

#[test]
fn synced_writes_survive_a_crash_and_later_ones_append_to_the_same_segment() {
    let disk = MemDisk::new();
    let (mut wal, _) = open(&disk, WalOptions::default(), 0);
    wal.append(&entries(1..=3, 1)).unwrap();
    wal.sync().unwrap();
    wal.append(&entries(4..=6, 1)).unwrap();
    wal.set_hard_state(hs(1, 1, 5)).unwrap();
    wal.sync().unwrap();
    wal.append(&entries(7..=9, 1)).unwrap(); // not synced
    disk.crash();
    drop(wal);

    let (mut wal, rec) = open(&disk, WalOptions::default(), 0);
    assert_eq!(rec.entries, entries(1..=6, 1));
    assert_eq!(rec.hard_state, hs(1, 1, 5));
    wal.append(&entries(7..=8, 2)).unwrap();
    wal.sync().unwrap();
    let names = wal.segment_names();
    assert_eq!(names.len(), 1, "a reopened log appends to its last segment");
    disk.crash();
    drop(wal);

    let (wal, rec) = open(&disk, WalOptions::default(), 0);
    let mut want = entries(1..=6, 1);
    want.extend(entries(7..=8, 2));
    assert_eq!(rec.entries, want);
    assert_eq!(wal.segment_names(), names);
}

/// Counts disk operations by kind through the fault hook (which fails none).
fn count_ops(disk: &MemDisk) -> Arc<Mutex<Vec<String>>> {
    let log = Arc::new(Mutex::new(Vec::new()));
    let sink = log.clone();
    disk.set_fault(Some(Box::new(move |op: &DiskOp<'_>| {
        let kind = format!("{op:?}");
        let kind = kind.split('(').next().unwrap_or_default().to_string();
        sink.lock().unwrap().push(kind);
        None
    })));
    log
}

#[test]
fn a_batch_costs_one_append_and_one_sync() {
    let disk = MemDisk::new();
    let (mut wal, _) = open(&disk, WalOptions::default(), 0);
    let ops = count_ops(&disk);
    wal.append(&entries(1..=64, 1)).unwrap();
    wal.set_hard_state(hs(1, 1, 64)).unwrap();
    assert!(ops.lock().unwrap().is_empty(), "buffering touches no disk");
    wal.sync().unwrap();
    assert_eq!(*ops.lock().unwrap(), vec!["Append", "Sync"]);
    ops.lock().unwrap().clear();
    wal.sync().unwrap();
    assert!(
        ops.lock().unwrap().is_empty(),
        "nothing buffered, nothing done"
    );
}

/// Builds a log of `n` entries of 100 bytes in segments of 600 bytes, syncing
/// every 3 entries and bumping the hard state with each sync.
fn rotated_log(n: u64) -> (MemDisk, Wal<MemDisk>) {
    let disk = MemDisk::new();
    let (mut wal, _) = open(&disk, small(600), 0);
    for i in 1..=n {
        wal.append(&[entry_sized(i, 1, 100)]).unwrap();
        if i.is_multiple_of(3) {
            wal.set_hard_state(hs(1, 1, i)).unwrap();
            wal.sync().unwrap();
        }
    }
    wal.sync().unwrap();
    (disk, wal)
}

#[test]
fn rotation_makes_consecutive_segments_named_by_first_index() {
    let (disk, wal) = rotated_log(40);
    let names = wal.segment_names();
    assert!(names.len() >= 8, "{names:?}");
    assert_eq!(
        disk.clone().list().unwrap(),
        names,
        "only segment files exist"
    );
    let mut next_index = 1;
    for (seq, name) in names.iter().enumerate() {
        let (got_seq, first_index) = parse_segment_name(name).expect("a segment name");
        assert_eq!(got_seq, seq as u64);
        assert_eq!(first_index, next_index, "{name} starts at the next index");
        assert!(
            read(&disk, name).len() <= 600,
            "{name} stays within segment_size"
        );
        let recs = records(&disk, name);
        assert!(
            matches!(recs[0], (0, Record::HardState(_))),
            "{name} starts with a hard state"
        );
        let indexes: Vec<u64> = recs
            .iter()
            .filter_map(|(_, r)| match r {
                Record::Entry(e) => Some(e.index),
                _ => None,
            })
            .collect();
        assert_eq!(indexes[0], first_index);
        next_index = indexes[indexes.len() - 1] + 1;
    }
    assert_eq!(next_index, 41);
    drop(wal);

    let (mut wal, rec) = open(&disk, small(600), 0);
    let want: Vec<Entry> = (1..=40).map(|i| entry_sized(i, 1, 100)).collect();
    assert_eq!(rec.entries, want);
    assert_eq!(rec.hard_state, hs(1, 1, 39));
    assert_eq!(wal.segment_names(), names);
    // The reopened log keeps rotating from where it was.
    wal.append(
        &(41..=50)
            .map(|i| entry_sized(i, 1, 100))
            .collect::<Vec<_>>(),
    )
    .unwrap();
    wal.sync().unwrap();
    let more = wal.segment_names();
    assert!(more.len() > names.len());
    assert_eq!(more[..names.len()], names[..]);
}

#[test]
fn a_record_larger_than_a_segment_still_lands() {
    let disk = MemDisk::new();
    let (mut wal, _) = open(&disk, small(100), 0);
    wal.append(&[entry_sized(1, 1, 500), entry_sized(2, 1, 500)])
        .unwrap();
    wal.sync().unwrap();
    assert_eq!(wal.segment_names().len(), 2, "one big record per segment");
    drop(wal);
    let (_, rec) = open(&disk, small(100), 0);
    assert_eq!(
        rec.entries,
        vec![entry_sized(1, 1, 500), entry_sized(2, 1, 500)]
    );
}

#[test]
fn release_to_removes_exactly_the_segments_wholly_below_the_index() {
    let (disk, mut wal) = rotated_log(40);
    let max_of = |name: &str| {
        records(&disk, name)
            .iter()
            .filter_map(|(_, r)| match r {
                Record::Entry(e) => Some(e.index),
                _ => None,
            })
            .max()
            .unwrap()
    };
    // Release to an index in the middle of segment 3.
    let index = max_of(&wal.segment_names()[3]) - 1;
    assert!(index > max_of(&wal.segment_names()[2]));
    wal.mark_snapshot(SnapshotMarker { index, term: 1 })
        .unwrap();
    wal.sync().unwrap();
    let names = wal.segment_names();
    wal.release_to(index).unwrap();
    let left = wal.segment_names();
    assert_eq!(
        left[..],
        names[3..],
        "segments 0..3 end at or below {index}"
    );
    assert_eq!(disk.clone().list().unwrap(), left);
    // Releasing again changes nothing.
    wal.release_to(index).unwrap();
    assert_eq!(wal.segment_names(), left);
    drop(wal);

    disk.crash();
    let (mut wal, rec) = open(&disk, small(600), index);
    let want: Vec<Entry> = (index + 1..=40).map(|i| entry_sized(i, 1, 100)).collect();
    assert_eq!(rec.entries, want);
    assert_eq!(
        rec.hard_state,
        hs(1, 1, 39),
        "the hard state lives in every header"
    );
    assert_eq!(rec.snapshot, Some(SnapshotMarker { index, term: 1 }));
    assert_eq!(wal.segment_names(), left);

    // Releasing everything keeps the tail, and with it the header.
    wal.release_to(u64::MAX).unwrap();
    assert_eq!(wal.segment_names(), vec![names[names.len() - 1].clone()]);
    drop(wal);
    disk.crash();
    let (_, rec) = open(&disk, small(600), 40);
    assert_eq!(rec.entries, vec![]);
    assert_eq!(rec.hard_state, hs(1, 1, 39));
    assert_eq!(rec.snapshot, Some(SnapshotMarker { index, term: 1 }));
    assert!(matches!(
        open_err(&disk, small(600), index),
        Error::Corrupt { .. }
    ));
}

#[test]
fn max_segments_keeps_the_newest_released_segments_and_zero_keeps_all() {
    for (max, want_left) in [(3usize, Some(3usize)), (0, None)] {
        let disk = MemDisk::new();
        let opts = WalOptions {
            segment_size: 600,
            max_segments: max,
        };
        let (mut wal, _) = open(&disk, opts, 0);
        for i in 1..=40 {
            wal.append(&[entry_sized(i, 1, 100)]).unwrap();
            wal.set_hard_state(hs(1, 1, i)).unwrap();
            wal.sync().unwrap();
        }
        let names = wal.segment_names();
        assert!(names.len() > 5, "{names:?}");
        wal.mark_snapshot(SnapshotMarker { index: 40, term: 1 })
            .unwrap();
        wal.sync().unwrap();
        let names = wal.segment_names();
        wal.release_to(40).unwrap();
        let left = wal.segment_names();
        match want_left {
            Some(n) => assert_eq!(left[..], names[names.len() - n..], "--max-wals={max}"),
            None => assert_eq!(left, names, "--max-wals=0 removes nothing"),
        }
        assert_eq!(disk.clone().list().unwrap(), left);
        drop(wal);
        disk.crash();
        let (_, rec) = open(&disk, opts, 40);
        assert_eq!(rec.snapshot, Some(SnapshotMarker { index: 40, term: 1 }));
        assert_eq!(rec.entries, vec![]);
    }
}

#[test]
fn a_log_that_does_not_reach_the_snapshot_is_corrupt() {
    let (disk, mut wal) = rotated_log(40);
    let names = wal.segment_names();
    wal.release_to(20).unwrap();
    let first = wal.segment_names()[0].clone();
    assert_ne!(first, names[0]);
    drop(wal);
    // The caller claims no snapshot, but entries 1.. are gone.
    let first_index = parse_segment_name(&first).unwrap().1;
    let err = open_err(&disk, small(600), 0);
    assert_corrupt(err, &first, entry_offset(&disk, &first, first_index));
    let (_, rec) = open(&disk, small(600), first_index - 1);
    assert_eq!(rec.entries[0].index, first_index);
}

#[test]
fn a_missing_segment_is_corrupt() {
    let (disk, wal) = rotated_log(30);
    let names = wal.segment_names();
    drop(wal);
    disk.clone().remove(&names[2]).unwrap();
    let missing = format!("{}-*.wal", &names[2][..16]);
    assert_corrupt(open_err(&disk, small(600), 0), &missing, 0);
}

#[test]
fn raft_overwrites_survive_reopen() {
    let disk = MemDisk::new();
    let (mut wal, _) = open(&disk, small(400), 0);
    wal.append(&entries(1..=10, 1)).unwrap();
    wal.sync().unwrap();
    // A new leader overwrites 6.. with term 2, then one more.
    wal.append(&entries(6..=8, 2)).unwrap();
    assert_eq!(wal.last_index(), 8);
    wal.sync().unwrap();
    wal.append(&entries(9..=9, 2)).unwrap();
    // And again, overwriting inside one unsynced batch.
    wal.append(&entries(9..=9, 3)).unwrap();
    wal.sync().unwrap();
    assert!(wal.segment_names().len() > 1, "overwrites cross segments");
    drop(wal);

    let (mut wal, rec) = open(&disk, small(400), 0);
    let mut want = entries(1..=5, 1);
    want.extend(entries(6..=8, 2));
    want.extend(entries(9..=9, 3));
    assert_eq!(rec.entries, want);
    assert_eq!(wal.last_index(), 9);
    wal.append(&entries(10..=10, 3)).unwrap();
    wal.sync().unwrap();
}

#[test]
#[should_panic(expected = "leaves a gap")]
fn appending_past_the_end_is_a_programming_error() {
    let disk = MemDisk::new();
    let (mut wal, _) = open(&disk, WalOptions::default(), 0);
    wal.append(&entries(1..=3, 1)).unwrap();
    wal.append(&entries(5..=5, 1)).unwrap();
}

#[test]
#[should_panic(expected = "at or below snapshot index 3")]
fn rewriting_entries_below_a_snapshot_is_a_programming_error() {
    let disk = MemDisk::new();
    let (mut wal, _) = open(&disk, WalOptions::default(), 0);
    wal.append(&entries(1..=5, 1)).unwrap();
    wal.mark_snapshot(SnapshotMarker { index: 3, term: 1 })
        .unwrap();
    wal.append(&entries(4..=4, 2)).unwrap();
    wal.append(&entries(3..=3, 2)).unwrap();
}

#[test]
fn a_snapshot_marker_lets_the_log_skip_ahead() {
    let disk = MemDisk::new();
    let (mut wal, _) = open(&disk, WalOptions::default(), 0);
    wal.append(&entries(1..=3, 1)).unwrap();
    wal.mark_snapshot(SnapshotMarker {
        index: 100,
        term: 4,
    })
    .unwrap();
    assert_eq!(wal.last_index(), 100);
    wal.append(&entries(101..=102, 4)).unwrap();
    wal.sync().unwrap();
    drop(wal);
    let (wal, rec) = open(&disk, WalOptions::default(), 100);
    assert_eq!(rec.entries, entries(101..=102, 4));
    assert_eq!(
        rec.snapshot,
        Some(SnapshotMarker {
            index: 100,
            term: 4
        })
    );
    assert_eq!(wal.last_index(), 102);
    drop(wal);
    // Without the snapshot, entries 4..=100 are nowhere.
    let name = "0000000000000000-0000000000000001.wal";
    assert_corrupt(
        open_err(&disk, WalOptions::default(), 3),
        name,
        entry_offset(&disk, name, 101),
    );
}

/// The log of the torn-tail tests: entries 1..=5 synced, then entry 6 (with
/// `last_len` bytes of data) synced alone. Returns the disk, the segment name,
/// and the segment's length before and after the last record.
fn log_with_last_record(last_len: usize) -> (MemDisk, String, u64, u64) {
    let disk = MemDisk::new();
    let (mut wal, _) = open(&disk, WalOptions::default(), 0);
    wal.append(&entries(1..=5, 1)).unwrap();
    wal.set_hard_state(hs(1, 1, 5)).unwrap();
    wal.sync().unwrap();
    let name = wal.segment_names()[0].clone();
    let before = read(&disk, &name).len() as u64;
    wal.append(&[entry_sized(6, 1, last_len)]).unwrap();
    wal.sync().unwrap();
    let after = read(&disk, &name).len() as u64;
    assert_eq!(
        after - before,
        HEADER_LEN + 8 + 8 + 1 + 4 + last_len as u64 + 4 + 4
    );
    (disk, name, before, after)
}

/// Replaces `name`'s bytes from `at` on with `tail`, durably.
fn rewrite_tail(disk: &MemDisk, name: &str, at: u64, tail: &[u8]) {
    let mut d = disk.clone();
    d.truncate(name, at).unwrap();
    d.append(name, tail).unwrap();
    d.sync(name).unwrap();
}

/// Opens a log whose last record is torn, checks recovery cut exactly that
/// record, then appends and reopens again.
fn check_torn_recovery(disk: &MemDisk, name: &str, before: u64, len_on_disk: u64) {
    let (mut wal, rec) = open(disk, WalOptions::default(), 0);
    assert_eq!(
        rec.entries,
        entries(1..=5, 1),
        "torn at length {len_on_disk}"
    );
    assert_eq!(rec.hard_state, hs(1, 1, 5));
    let want_torn = (len_on_disk > before).then(|| TornTail {
        file: name.to_string(),
        offset: before,
        dropped_bytes: len_on_disk - before,
    });
    assert_eq!(rec.torn_tail, want_torn);
    assert_eq!(
        read(disk, name).len() as u64,
        before,
        "the torn bytes are cut"
    );
    wal.append(&entries(6..=7, 2)).unwrap();
    wal.sync().unwrap();
    drop(wal);
    disk.crash();
    let (_, rec) = open(disk, WalOptions::default(), 0);
    let mut want = entries(1..=5, 1);
    want.extend(entries(6..=7, 2));
    assert_eq!(rec.entries, want);
    assert_eq!(rec.torn_tail, None);
}

#[test]
fn a_torn_last_record_is_cut_at_every_length() {
    let (_, _, before, after) = log_with_last_record(40);
    for len in before..after {
        let (disk, name, _, _) = log_with_last_record(40);
        rewrite_tail(&disk, &name, len, &[]);
        check_torn_recovery(&disk, &name, before, len);
    }
}

#[test]
fn garbage_or_zeros_from_a_sector_boundary_is_a_torn_tail() {
    const SECTOR: u64 = 512;
    let (_, _, before, after) = log_with_last_record(2000);
    let boundaries: Vec<u64> = (before / SECTOR + 1..=after / SECTOR)
        .map(|s| s * SECTOR)
        .filter(|&b| b < after)
        .collect();
    assert!(boundaries.len() >= 3, "the last record spans sectors");
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for &at in &boundaries {
        for fill in ["zeros", "garbage"] {
            let (disk, name, _, _) = log_with_last_record(2000);
            let tail: Vec<u8> = (at..after)
                .map(|_| match fill {
                    "zeros" => 0,
                    _ => {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        seed as u8
                    }
                })
                .collect();
            rewrite_tail(&disk, &name, at, &tail);
            check_torn_recovery(&disk, &name, before, after);
        }
    }
}

#[test]
fn a_flipped_bit_in_an_older_segment_is_corrupt_at_that_record() {
    let (disk, wal) = rotated_log(40);
    let names = wal.segment_names();
    drop(wal);
    let name = &names[2];
    let recs = records(&disk, name);
    assert!(recs.len() >= 3);
    for (i, at) in [(1, 30), (recs.len() / 2, 0), (recs.len() - 1, 9)] {
        let copy = MemDisk::new();
        for n in &names {
            let mut c = copy.clone();
            c.create(n).unwrap();
            c.append(n, &read(&disk, n)).unwrap();
        }
        let offset = recs[i].0;
        copy.corrupt(name, (offset + at) as usize, 0x10).unwrap();
        assert_corrupt(open_err(&copy, small(600), 0), name, offset);
    }
}

/// Three synced batches in one segment: entries 1..=3, 4..=6, 7..=9.
fn three_batches() -> (MemDisk, String) {
    let disk = MemDisk::new();
    let (mut wal, _) = open(&disk, WalOptions::default(), 0);
    for batch in 0..3 {
        wal.append(&entries(batch * 3 + 1..=batch * 3 + 3, 1))
            .unwrap();
        wal.sync().unwrap();
    }
    let name = wal.segment_names()[0].clone();
    (disk, name)
}

#[test]
fn a_flipped_bit_in_the_last_segment_vouched_for_by_later_records_is_corrupt() {
    for index in [2, 4, 5, 6] {
        let (disk, name) = three_batches();
        let offset = entry_offset(&disk, &name, index);
        disk.corrupt(&name, offset as usize + HEADER_LEN as usize + 3, 0x01)
            .unwrap();
        let len = read(&disk, &name).len();
        assert_corrupt(open_err(&disk, WalOptions::default(), 0), &name, offset);
        assert_eq!(
            read(&disk, &name).len(),
            len,
            "nothing truncated: the evidence stays"
        );
    }
}

#[test]
fn damage_to_the_last_synced_batch_looks_torn() {
    // The documented limit: no later record vouches for the last batch, so
    // damage there is indistinguishable from a torn write and is cut.
    let (disk, name) = three_batches();
    let offset = entry_offset(&disk, &name, 8);
    disk.corrupt(&name, offset as usize + 20, 0x01).unwrap();
    let (_, rec) = open(&disk, WalOptions::default(), 0);
    assert_eq!(rec.entries, entries(1..=7, 1));
    assert_eq!(rec.torn_tail.map(|t| t.offset), Some(offset));
}

/// A fault hook that fails the `nth` (from 0) operation matching `which`
/// with `kind`, and no other.
fn fail_nth(disk: &MemDisk, nth: usize, kind: io::ErrorKind, which: fn(&DiskOp<'_>) -> bool) {
    let mut seen = 0;
    disk.set_fault(Some(Box::new(move |op: &DiskOp<'_>| {
        if !which(op) {
            return None;
        }
        seen += 1;
        (seen == nth + 1).then(|| io::Error::from(kind))
    })));
}

/// Synced state A (entries 1..=4, a hard state, a snapshot marker), then a
/// batch B that fails on the disk with `kind`. Checks the error, the
/// poisoning, and that reopening finds exactly A.
fn check_failed_batch(
    opts: WalOptions,
    batch_b: u64,
    inject: impl FnOnce(&MemDisk),
    kind: io::ErrorKind,
) {
    let disk = MemDisk::new();
    let (mut wal, _) = open(&disk, opts, 0);
    wal.append(&entries(1..=4, 1)).unwrap();
    wal.set_hard_state(hs(1, 1, 3)).unwrap();
    wal.mark_snapshot(SnapshotMarker { index: 2, term: 1 })
        .unwrap();
    wal.sync().unwrap();
    let names = wal.segment_names();
    let bytes: Vec<Vec<u8>> = names.iter().map(|n| read(&disk, n)).collect();

    inject(&disk);
    wal.append(&entries(5..=4 + batch_b, 2)).unwrap();
    wal.set_hard_state(hs(2, 2, 4)).unwrap();
    let err = wal.sync().unwrap_err();
    assert_eq!(err.io_kind(), Some(kind), "{err}");
    assert!(matches!(wal.sync(), Err(Error::Poisoned)));
    assert!(matches!(
        wal.append(&entries(5..=5, 2)),
        Err(Error::Poisoned)
    ));
    assert!(matches!(
        wal.set_hard_state(hs(3, 0, 0)),
        Err(Error::Poisoned)
    ));
    assert!(matches!(
        wal.mark_snapshot(SnapshotMarker::default()),
        Err(Error::Poisoned)
    ));
    assert!(matches!(wal.release_to(u64::MAX), Err(Error::Poisoned)));
    drop(wal);
    disk.set_fault(None);

    // The files are exactly as they were, with or without a crash.
    assert_eq!(disk.clone().list().unwrap(), names);
    for (n, b) in names.iter().zip(&bytes) {
        assert_eq!(&read(&disk, n), b, "{n} rolled back");
    }
    for crash in [false, true] {
        if crash {
            disk.crash();
        }
        let (wal, rec) = open(&disk, opts, 0);
        assert_eq!(rec.entries, entries(1..=4, 1));
        assert_eq!(rec.hard_state, hs(1, 1, 3));
        assert_eq!(rec.snapshot, Some(SnapshotMarker { index: 2, term: 1 }));
        assert_eq!(rec.torn_tail, None);
        assert_eq!(wal.last_index(), 4);
        assert_eq!(wal.segment_names(), names);
    }
}

#[test]
fn a_full_disk_on_append_poisons_and_leaves_the_log_as_it_was() {
    check_failed_batch(
        WalOptions::default(),
        3,
        |d| {
            fail_nth(d, 0, io::ErrorKind::StorageFull, |op| {
                matches!(op, DiskOp::Append(..))
            })
        },
        io::ErrorKind::StorageFull,
    );
}

#[test]
fn eio_on_sync_poisons_and_leaves_the_log_as_it_was() {
    check_failed_batch(
        WalOptions::default(),
        3,
        |d| {
            fail_nth(d, 0, io::ErrorKind::Other, |op| {
                matches!(op, DiskOp::Sync(..))
            })
        },
        io::ErrorKind::Other,
    );
}

#[test]
fn a_failure_after_rotation_removes_the_new_segment() {
    // Small segments, a batch big enough to rotate twice, and EIO on the
    // second sync of the batch: the first segment was synced, the second
    // created; both are undone.
    check_failed_batch(
        small(500),
        12,
        |d| {
            fail_nth(d, 1, io::ErrorKind::Other, |op| {
                matches!(op, DiskOp::Sync(..))
            })
        },
        io::ErrorKind::Other,
    );
}

#[test]
fn a_crash_between_creating_a_segment_and_writing_it_recovers() {
    // The new segment is created and its name made durable, then its first
    // write fails and so does every undo; the power goes. The tail is empty:
    // recovery gives it a header, so releasing the older segments is safe.
    let disk = MemDisk::new();
    let (mut wal, _) = open(&disk, small(400), 0);
    wal.append(&entries(1..=5, 1)).unwrap();
    wal.set_hard_state(hs(1, 1, 5)).unwrap();
    wal.sync().unwrap();
    assert_eq!(wal.segment_names().len(), 1);
    let created = Arc::new(Mutex::new(false));
    let seen = created.clone();
    disk.set_fault(Some(Box::new(move |op: &DiskOp<'_>| {
        let mut created = seen.lock().unwrap();
        if let DiskOp::Create(_) = op {
            *created = true;
            return None;
        }
        let fail = *created && !matches!(op, DiskOp::SyncDir);
        fail.then(|| io::Error::from(io::ErrorKind::Other))
    })));
    wal.append(&(6..=20).map(|i| entry(i, 1)).collect::<Vec<_>>())
        .unwrap();
    assert_eq!(
        wal.sync().unwrap_err().io_kind(),
        Some(io::ErrorKind::Other)
    );
    assert!(*created.lock().unwrap(), "the batch rotated");
    drop(wal);
    disk.set_fault(None);
    disk.crash();

    let (mut wal, rec) = open(&disk, small(400), 0);
    let names = wal.segment_names();
    assert_eq!(names.len(), 2, "{names:?}");
    // The first segment's part of the batch was synced; never acknowledged,
    // but a prefix of it may survive. The empty tail got a header.
    let n = rec.entries.len() as u64;
    assert!(n >= 5);
    assert_eq!(
        rec.entries,
        (1..=n).map(|i| entry(i, 1)).collect::<Vec<_>>()
    );
    assert!(
        matches!(records(&disk, &names[1])[..], [(0, Record::HardState(h))] if h == hs(1, 1, 5))
    );
    wal.release_to(u64::MAX).unwrap();
    assert_eq!(wal.segment_names(), names[1..]);
    drop(wal);
    disk.crash();
    let (_, rec) = open(&disk, small(400), n);
    assert_eq!(rec.hard_state, hs(1, 1, 5));
    assert_eq!(rec.entries, vec![]);
}

#[test]
fn reopen_on_a_real_directory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wal");
    let opts = small(4096);
    let (mut wal, rec) = Wal::open(FsDisk::open(&path).unwrap(), opts, 0).unwrap();
    assert_eq!(rec, Recovered::default());
    let all: Vec<Entry> = (1..=100).map(|i| entry_sized(i, 1 + i / 50, 200)).collect();
    for batch in all.chunks(7) {
        wal.append(batch).unwrap();
        wal.set_hard_state(hs(2, 1, batch[0].index)).unwrap();
        wal.sync().unwrap();
    }
    wal.mark_snapshot(SnapshotMarker { index: 50, term: 2 })
        .unwrap();
    wal.sync().unwrap();
    let names = wal.segment_names();
    assert!(names.len() > 3);
    drop(wal);

    let (mut wal, rec) = Wal::open(FsDisk::open(&path).unwrap(), opts, 0).unwrap();
    assert_eq!(rec.entries, all);
    assert_eq!(rec.hard_state, hs(2, 1, 99));
    assert_eq!(rec.snapshot, Some(SnapshotMarker { index: 50, term: 2 }));
    assert_eq!(wal.segment_names(), names);
    wal.release_to(50).unwrap();
    assert!(wal.segment_names().len() < names.len());
    drop(wal);
    let (_, rec) = Wal::open(FsDisk::open(&path).unwrap(), opts, 50).unwrap();
    assert_eq!(rec.entries, all[50..]);
    assert_eq!(rec.hard_state, hs(2, 1, 99));
}
