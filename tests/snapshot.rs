//! Snapshot files: format, atomic save, pruning, corruption and crashes.

use bytes::Bytes;
use cairn::disk::{Disk, DiskOp, FsDisk, MemDisk};
use cairn::snap::{
    decode_sections, decode_snapshot, encode_sections, encode_snapshot, snap_name, SectionKind,
    SnapStore, Snapshot, SnapshotMeta, DEFAULT_KEEP,
};
use cairn::Error;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// A snapshot at `index` whose data is a sections container holding an MVCC
/// section that names the index, so snapshots are told apart by contents too.
fn snap(index: u64, term: u64) -> Snapshot {
    let mvcc = format!("mvcc state at {index}");
    let lease = [0xab_u8, 0, 0xff];
    let data = encode_sections(&[
        (SectionKind::Mvcc, mvcc.as_bytes()),
        (SectionKind::Lease, &lease),
    ]);
    Snapshot {
        meta: SnapshotMeta {
            index,
            term,
            voters: vec![1, 2, 3],
            learners: vec![7],
        },
        data: Bytes::from(data),
    }
}

fn store(disk: &MemDisk) -> SnapStore<MemDisk> {
    SnapStore::new(disk.clone(), DEFAULT_KEEP)
}

/// Loads the newest snapshot, asserting nothing was rejected.
fn load_clean<D: Disk>(store: &mut SnapStore<D>) -> Option<(String, Snapshot)> {
    let loaded = store.load_newest().expect("load");
    assert!(
        loaded.rejected.is_empty(),
        "rejected: {:?}",
        loaded.rejected
    );
    loaded.snapshot
}

fn files(disk: &MemDisk) -> Vec<String> {
    disk.clone().list().expect("list")
}

// ---- format ----

#[test]
fn encode_decode_round_trip_with_sections() {
    let s = snap(42, 5);
    let buf = Bytes::from(encode_snapshot(&s));
    let back = decode_snapshot(buf.clone()).expect("decode");
    assert_eq!(back, s);
    // The data is a slice of the file, not a copy.
    let range = buf.as_ptr_range();
    assert!(range.contains(&back.data.as_ptr()));
    let sections = decode_sections(back.data).expect("sections");
    assert_eq!(sections.len(), 2);
    assert_eq!(sections[0].0, SectionKind::Mvcc);
    assert_eq!(&sections[0].1[..], b"mvcc state at 42");
    assert_eq!(sections[1].0, SectionKind::Lease);
    assert_eq!(&sections[1].1[..], &[0xab, 0, 0xff]);
}

#[test]
fn empty_snapshot_round_trips() {
    let s = Snapshot::default();
    let buf = encode_snapshot(&s);
    assert_eq!(buf.len(), cairn::snap::MIN_LEN);
    assert_eq!(&buf[..8], b"CAIRNSNP");
    assert_eq!(decode_snapshot(Bytes::from(buf)).expect("decode"), s);
}

#[test]
fn decode_snapshot_rejects_truncation_and_trailing_bytes() {
    let buf = encode_snapshot(&snap(3, 1));
    for len in 0..buf.len() {
        assert!(
            decode_snapshot(Bytes::copy_from_slice(&buf[..len])).is_err(),
            "prefix of {len} bytes accepted"
        );
    }
    let mut longer = buf.clone();
    longer.push(0);
    assert!(decode_snapshot(Bytes::from(longer)).is_err());
}

#[test]
fn decode_snapshot_rejects_other_versions_even_with_a_good_crc() {
    let mut buf = encode_snapshot(&snap(3, 1));
    buf[8] = 2;
    let body = buf.len() - 4;
    let crc = crc32fast::hash(&buf[..body]);
    buf[body..].copy_from_slice(&crc.to_le_bytes());
    let err = decode_snapshot(Bytes::from(buf)).unwrap_err();
    assert_eq!(err.what, "unsupported format version");
    assert_eq!(err.offset, 8);
}

#[test]
fn sections_round_trip_zero_copy() {
    let buf = Bytes::from(encode_sections(&[(SectionKind::Mvcc, b"abc")]));
    let got = decode_sections(buf.clone()).expect("decode");
    assert_eq!(got, vec![(SectionKind::Mvcc, Bytes::from_static(b"abc"))]);
    assert!(buf.as_ptr_range().contains(&got[0].1.as_ptr()));
    // No sections at all is a valid (empty) state.
    assert_eq!(
        decode_sections(Bytes::from(encode_sections(&[]))),
        Ok(vec![])
    );
}

/// A container written by hand: count, then (tag, bytes) pairs.
fn raw_sections(count: u32, sections: &[(u16, &[u8])]) -> Bytes {
    let mut buf = count.to_le_bytes().to_vec();
    for (tag, data) in sections {
        buf.extend_from_slice(&tag.to_le_bytes());
        buf.extend_from_slice(&(data.len() as u64).to_le_bytes());
        buf.extend_from_slice(data);
    }
    Bytes::from(buf)
}

#[test]
fn decode_sections_rejects_unknown_kinds() {
    for tag in [0u16, 5, 0xffff] {
        let err = decode_sections(raw_sections(2, &[(1, b"x"), (tag, b"y")])).unwrap_err();
        assert_eq!(err.what, "unknown section kind", "tag {tag}");
        assert_eq!(err.offset, 4 + 2 + 8 + 1, "tag {tag}");
    }
    // The same container with a known tag decodes, so the tag was the cause.
    assert!(decode_sections(raw_sections(2, &[(1, b"x"), (2, b"y")])).is_ok());
}

#[test]
fn decode_sections_rejects_duplicates() {
    let err = decode_sections(raw_sections(2, &[(1, b"x"), (1, b"y")])).unwrap_err();
    assert_eq!(err.what, "duplicate section kind");
}

#[test]
#[should_panic(expected = "given twice")]
fn encode_sections_refuses_duplicates() {
    encode_sections(&[(SectionKind::Mvcc, b"a"), (SectionKind::Mvcc, b"b")]);
}

#[test]
fn decode_sections_rejects_truncation_and_trailing_bytes() {
    let buf = encode_sections(&[(SectionKind::Mvcc, b"hello"), (SectionKind::Lease, b"")]);
    for len in 0..buf.len() {
        assert!(
            decode_sections(Bytes::copy_from_slice(&buf[..len])).is_err(),
            "prefix of {len} bytes accepted"
        );
    }
    let mut longer = buf.clone();
    longer.push(0);
    assert!(decode_sections(Bytes::from(longer)).is_err());
    // A count that promises more sections than there are bytes for.
    let err = decode_sections(raw_sections(u32::MAX, &[])).unwrap_err();
    assert_eq!(err.what, "section count exceeds the data");
}

// ---- the store ----

#[test]
fn save_and_load_on_mem_disk() {
    let disk = MemDisk::new();
    let mut st = store(&disk);
    assert!(load_clean(&mut st).is_none());
    let name = st.save(&snap(10, 2)).expect("save");
    assert_eq!(name, "0000000000000002-000000000000000a.snap");
    assert_eq!(name, snap_name(2, 10));
    // A fresh store on the same disk, after a crash: the save was durable.
    disk.crash();
    let (got_name, got) = load_clean(&mut store(&disk)).expect("a snapshot");
    assert_eq!(got_name, name);
    assert_eq!(got, snap(10, 2));
}

#[test]
fn save_and_load_on_fs_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("snap");
    {
        let mut st = SnapStore::new(FsDisk::open(&path).expect("open"), DEFAULT_KEEP);
        st.save(&snap(5, 1)).expect("save 5");
        st.save(&snap(9, 2)).expect("save 9");
    }
    let mut st = SnapStore::new(FsDisk::open(&path).expect("reopen"), DEFAULT_KEEP);
    let (name, got) = load_clean(&mut st).expect("a snapshot");
    assert_eq!(name, snap_name(2, 9));
    assert_eq!(got, snap(9, 2));
    assert_eq!(
        st.list().expect("list"),
        vec![snap_name(1, 5), snap_name(2, 9)]
    );
}

#[test]
fn newest_by_index_wins_not_by_name() {
    let disk = MemDisk::new();
    let mut st = SnapStore::new(disk.clone(), 5);
    // Term 9 sorts after term 3 by name, but index 30 is newer.
    st.save(&snap(20, 9)).expect("save");
    st.save(&snap(30, 3)).expect("save");
    st.save(&snap(25, 4)).expect("save");
    let (name, got) = load_clean(&mut st).expect("a snapshot");
    assert_eq!(name, snap_name(3, 30));
    assert_eq!(got.meta.index, 30);
    assert_eq!(
        st.list().expect("list"),
        vec![snap_name(9, 20), snap_name(4, 25), snap_name(3, 30)]
    );
}

#[test]
fn pruning_keeps_the_keep_newest() {
    for keep in 1..=3 {
        let disk = MemDisk::new();
        let mut st = SnapStore::new(disk.clone(), keep);
        for i in 1..=5u64 {
            st.save(&snap(i * 10, 1)).expect("save");
        }
        let expect: Vec<String> = (1..=5u64)
            .skip(5 - keep)
            .map(|i| snap_name(1, i * 10))
            .collect();
        assert_eq!(st.list().expect("list"), expect, "keep {keep}");
        // And pruning was made durable.
        disk.crash();
        assert_eq!(files(&disk), expect, "keep {keep} after crash");
    }
}

#[test]
fn saving_an_old_snapshot_never_deletes_it() {
    let disk = MemDisk::new();
    let mut st = SnapStore::new(disk.clone(), 1);
    st.save(&snap(50, 2)).expect("save");
    let old = st.save(&snap(10, 1)).expect("save old");
    assert_eq!(st.list().expect("list"), vec![old, snap_name(2, 50)]);
}

#[test]
fn stale_tmp_files_are_removed_by_save() {
    let disk = MemDisk::new();
    let mut d = disk.clone();
    for stale in [format!("{}.tmp", snap_name(1, 7)), "junk.tmp".to_string()] {
        d.create(&stale).expect("create");
        d.append(&stale, b"half a snapsh").expect("append");
    }
    d.create("notes.txt").expect("create");
    d.sync_dir().expect("sync_dir");
    let mut st = store(&disk);
    // A .tmp is never taken for a snapshot.
    assert!(load_clean(&mut st).is_none());
    // Saving the very snapshot whose .tmp is stale replaces it.
    st.save(&snap(7, 1)).expect("save");
    assert_eq!(files(&disk), vec![snap_name(1, 7), "notes.txt".to_string()]);
    disk.crash();
    assert_eq!(files(&disk), vec![snap_name(1, 7), "notes.txt".to_string()]);
}

#[test]
fn a_flipped_bit_anywhere_in_the_newest_is_caught() {
    let old = snap(10, 1);
    let new = Snapshot {
        meta: SnapshotMeta {
            index: 20,
            term: 2,
            voters: vec![1],
            learners: vec![],
        },
        data: Bytes::from(encode_sections(&[(SectionKind::Mvcc, b"kv")])),
    };
    let new_name = snap_name(2, 20);
    let len = encode_snapshot(&new).len();
    for offset in 0..len {
        let disk = MemDisk::new();
        let mut st = store(&disk);
        st.save(&old).expect("save old");
        st.save(&new).expect("save new");
        let mask = 1u8 << (offset % 8);
        disk.corrupt(&new_name, offset, mask).expect("corrupt");

        let loaded = st.load_newest().expect("load");
        let (name, got) = loaded.snapshot.expect("the older snapshot");
        assert_eq!(name, snap_name(1, 10), "offset {offset}");
        assert_eq!(got, old, "offset {offset}");
        assert_eq!(loaded.rejected.len(), 1, "offset {offset}");
        let (file, err) = &loaded.rejected[0];
        assert_eq!(file, &new_name, "offset {offset}");
        match err {
            Error::Corrupt { file, .. } => assert_eq!(file, &new_name),
            other => panic!("offset {offset}: expected Corrupt, got {other:?}"),
        }
        // Renamed aside, durably, so the next start does not try it again.
        disk.crash();
        assert_eq!(
            files(&disk),
            vec![snap_name(1, 10), format!("{new_name}.broken")],
            "offset {offset}"
        );
        let (name, _) = load_clean(&mut store(&disk)).expect("older again");
        assert_eq!(name, snap_name(1, 10));
    }
}

#[test]
fn a_file_whose_contents_disagree_with_its_name_is_rejected() {
    let disk = MemDisk::new();
    let mut d = disk.clone();
    let liar = snap_name(1, 99);
    d.create(&liar).expect("create");
    d.append(&liar, &encode_snapshot(&snap(5, 1)))
        .expect("append");
    let loaded = store(&disk).load_newest().expect("load");
    assert!(loaded.snapshot.is_none());
    assert_eq!(loaded.rejected.len(), 1);
    assert!(matches!(
        &loaded.rejected[0].1,
        Error::Corrupt { offset: 12, .. }
    ));
    assert_eq!(files(&disk), vec![format!("{liar}.broken")]);
}

#[test]
fn every_newer_broken_snapshot_is_reported() {
    let disk = MemDisk::new();
    let mut st = SnapStore::new(disk.clone(), 3);
    for i in 1..=3u64 {
        st.save(&snap(i, 1)).expect("save");
    }
    disk.corrupt(&snap_name(1, 3), 0, 0xff).expect("corrupt");
    disk.corrupt(&snap_name(1, 2), 30, 0x10).expect("corrupt");
    let loaded = st.load_newest().expect("load");
    let rejected: Vec<&String> = loaded.rejected.iter().map(|(f, _)| f).collect();
    assert_eq!(rejected, vec![&snap_name(1, 3), &snap_name(1, 2)]);
    assert_eq!(loaded.snapshot.expect("oldest").0, snap_name(1, 1));
}

#[test]
fn a_read_error_is_an_io_error_not_a_rejection() {
    let disk = MemDisk::new();
    let mut st = store(&disk);
    st.save(&snap(1, 1)).expect("save");
    disk.set_fault(Some(Box::new(|op| {
        matches!(op, DiskOp::Read(_)).then(|| io::Error::other("EIO"))
    })));
    let err = st.load_newest().unwrap_err();
    assert_eq!(err.io_kind(), Some(io::ErrorKind::Other));
    assert!(matches!(&err, Error::Io { op: "read", file, .. } if *file == snap_name(1, 1)));
    disk.set_fault(None);
    // Nothing was renamed aside.
    assert_eq!(files(&disk), vec![snap_name(1, 1)]);
}

// ---- failures and crashes during save ----

/// Counts the disk operations one save makes, so the crash test can stop at
/// each.
fn ops_in_save(before: &[Snapshot], s: &Snapshot) -> usize {
    let disk = MemDisk::new();
    let mut st = store(&disk);
    for b in before {
        st.save(b).expect("save");
    }
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    disk.set_fault(Some(Box::new(move |_| {
        c.fetch_add(1, Ordering::SeqCst);
        None
    })));
    st.save(s).expect("save");
    count.load(Ordering::SeqCst)
}

#[test]
fn a_crash_at_any_point_of_save_leaves_old_or_new_never_partial() {
    let before = [snap(10, 1), snap(20, 1)];
    let new = snap(30, 2);
    let total = ops_in_save(&before, &new);
    assert!(total >= 8, "save made only {total} disk operations");
    let mut saw_old = false;
    let mut saw_new = false;
    for stop in 0..=total {
        let disk = MemDisk::new();
        let mut st = store(&disk);
        for b in &before {
            st.save(b).expect("save");
        }
        // Power fails before operation `stop`: it and everything after fail.
        let count = Arc::new(AtomicUsize::new(0));
        let c = count.clone();
        disk.set_fault(Some(Box::new(move |_| {
            (c.fetch_add(1, Ordering::SeqCst) >= stop).then(|| io::Error::other("power lost"))
        })));
        let result = st.save(&new);
        assert_eq!(result.is_ok(), stop == total, "stop {stop}");
        disk.set_fault(None);
        disk.crash();

        let (name, got) = load_clean(&mut store(&disk)).expect("some snapshot");
        if name == snap_name(2, 30) {
            assert_eq!(got, new, "stop {stop}");
            saw_new = true;
        } else {
            assert_eq!(name, snap_name(1, 20), "stop {stop}");
            assert_eq!(got, before[1], "stop {stop}");
            saw_old = true;
            // The older snapshots are all intact.
            assert_eq!(
                files(&disk),
                vec![snap_name(1, 10), snap_name(1, 20)],
                "stop {stop}"
            );
        }
        // The .tmp's name is never made durable: sync_dir runs after the rename.
        assert!(
            files(&disk).iter().all(|f| !f.ends_with(".tmp")),
            "stop {stop}: a .tmp survived the crash"
        );
    }
    assert!(saw_old && saw_new, "the crash points covered both outcomes");
}

#[test]
fn crash_after_tmp_written_before_rename_loads_the_old_one() {
    let disk = MemDisk::new();
    let mut st = store(&disk);
    st.save(&snap(10, 1)).expect("save");
    // The .tmp is written and synced; then the rename fails (the process dies).
    disk.set_fault(Some(Box::new(|op| {
        matches!(op, DiskOp::Rename(..) | DiskOp::Remove(_)).then(|| io::Error::other("died"))
    })));
    let err = st.save(&snap(20, 1)).unwrap_err();
    assert!(matches!(err, Error::Io { op: "rename", .. }), "{err:?}");
    // Before the crash the synced .tmp is there, complete.
    let tmp = format!("{}.tmp", snap_name(1, 20));
    assert!(files(&disk).contains(&tmp));
    disk.set_fault(None);
    disk.crash();
    let (name, got) = load_clean(&mut store(&disk)).expect("the old snapshot");
    assert_eq!(name, snap_name(1, 10));
    assert_eq!(got, snap(10, 1));
}

/// Saves two snapshots, then a third with `fault` installed; returns the
/// error and checks the first two are intact and no .tmp is left.
fn save_fails_with(fault: impl FnMut(&DiskOp<'_>) -> Option<io::Error> + Send + 'static) -> Error {
    let disk = MemDisk::new();
    let mut st = store(&disk);
    st.save(&snap(10, 1)).expect("save");
    st.save(&snap(20, 1)).expect("save");
    disk.set_fault(Some(Box::new(fault)));
    let err = st.save(&snap(30, 1)).unwrap_err();
    disk.set_fault(None);
    assert_eq!(files(&disk), vec![snap_name(1, 10), snap_name(1, 20)]);
    for crashed in [false, true] {
        if crashed {
            disk.crash();
        }
        let (name, got) = load_clean(&mut store(&disk)).expect("older snapshot");
        assert_eq!(name, snap_name(1, 20));
        assert_eq!(got, snap(20, 1));
    }
    err
}

#[test]
fn a_failed_sync_is_an_error_with_its_kind() {
    let err = save_fails_with(|op| matches!(op, DiskOp::Sync(_)).then(|| io::Error::other("EIO")));
    assert_eq!(err.io_kind(), Some(io::ErrorKind::Other));
    assert!(
        matches!(&err, Error::Io { op: "sync", file, .. } if *file == format!("{}.tmp", snap_name(1, 30))),
        "{err:?}"
    );
}

#[test]
fn a_full_disk_is_an_error_with_its_kind() {
    let err = save_fails_with(|op| {
        matches!(op, DiskOp::Append(..)).then(|| io::ErrorKind::StorageFull.into())
    });
    assert_eq!(err.io_kind(), Some(io::ErrorKind::StorageFull));
    assert!(matches!(&err, Error::Io { op: "append", .. }), "{err:?}");
}

#[test]
fn a_failed_directory_sync_keeps_older_snapshots() {
    let disk = MemDisk::new();
    let mut st = store(&disk);
    st.save(&snap(10, 1)).expect("save");
    st.save(&snap(20, 1)).expect("save");
    disk.set_fault(Some(Box::new(|op| {
        matches!(op, DiskOp::SyncDir).then(|| io::Error::other("EIO"))
    })));
    let err = st.save(&snap(30, 1)).unwrap_err();
    assert!(matches!(&err, Error::Io { op: "sync_dir", .. }), "{err:?}");
    assert_eq!(err.io_kind(), Some(io::ErrorKind::Other));
    disk.set_fault(None);
    // Nothing was pruned: the rename may or may not survive, the old ones do.
    disk.crash();
    assert_eq!(files(&disk), vec![snap_name(1, 10), snap_name(1, 20)]);
}

#[test]
#[should_panic(expected = "at least one")]
fn keep_zero_is_refused() {
    let _ = SnapStore::new(MemDisk::new(), 0);
}
