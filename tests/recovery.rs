//! End-to-end recovery of the storage layer: an MVCC store whose requests are
//! logged in the WAL and snapshotted, crashed on a `MemDisk`, and rebuilt from
//! the newest snapshot plus the WAL after it. The rebuilt store must hash the
//! same as the store that was running, up to the last synced entry.

use bytes::Bytes;
use cairn::disk::MemDisk;
use cairn::mvcc::Store;
use cairn::proto::etcdserverpb::PutRequest;
use cairn::snap::{SnapStore, Snapshot, SnapshotMeta};
use cairn::storage::{recover, snapshot_data, StorageOptions};
use cairn::wal::{Entry, EntryKind, HardState, SnapshotMarker, Wal, WalOptions};
use prost::Message;

fn put(i: u64) -> PutRequest {
    PutRequest {
        key: Bytes::from(format!("k{:02}", i % 17)),
        value: Bytes::from(format!("v{i}")),
        ..Default::default()
    }
}

fn entry(index: u64) -> Entry {
    Entry {
        index,
        term: 1,
        kind: EntryKind::Normal,
        data: Bytes::from(put(index).encode_to_vec()),
        context: Bytes::new(),
    }
}

/// Re-applies recovered entries, as the node will.
fn replay(store: &mut Store, entries: &[Entry]) {
    for e in entries {
        let req = PutRequest::decode(e.data.clone()).expect("entry holds a put");
        store.put(&req).expect("put applies");
    }
}

fn opts() -> &'static StorageOptions {
    &StorageOptions {
        wal: WalOptions {
            segment_size: 4096,
            max_segments: 1,
        },
        max_snapshots: 2,
        unsafe_no_fsync: false,
    }
}

/// Saves a snapshot of `store` at `index`, marks it in the WAL and releases
/// the segments below it, in the order a node must: snapshot file first.
fn checkpoint(wal: &mut Wal<MemDisk>, snaps: &mut SnapStore<MemDisk>, store: &Store, index: u64) {
    let meta = SnapshotMeta {
        index,
        term: 1,
        voters: vec![1],
        learners: vec![],
    };
    snaps
        .save(&Snapshot {
            meta,
            data: Bytes::from(snapshot_data(store)),
        })
        .unwrap();
    wal.mark_snapshot(SnapshotMarker { index, term: 1 })
        .unwrap();
    wal.sync().unwrap();
    wal.release_to(index).unwrap();
}

#[test]
fn snapshot_plus_wal_rebuilds_the_store_after_a_crash() {
    let (wal_disk, snap_disk) = (MemDisk::new(), MemDisk::new());
    let (mut wal, mut snaps, rec) = recover(wal_disk.clone(), snap_disk.clone(), opts()).unwrap();
    assert!(rec.snapshot.is_none() && rec.wal.entries.is_empty());
    let mut store = rec.store;
    let mut synced_hash = store.hash_kv(0).unwrap().hash;
    for index in 1..=118u64 {
        wal.append(&[entry(index)]).unwrap();
        wal.set_hard_state(HardState {
            term: 1,
            vote: 1,
            commit: index,
        })
        .unwrap();
        store.put(&put(index)).unwrap();
        if index % 4 == 0 {
            wal.sync().unwrap();
            synced_hash = store.hash_kv(0).unwrap().hash;
        }
        if index == 60 || index == 100 {
            checkpoint(&mut wal, &mut snaps, &store, index);
        }
    }
    // Entries 117 and 118 were appended after the last sync: the crash loses them.
    wal_disk.crash();
    snap_disk.crash();
    drop((wal, snaps));

    let (_wal, _snaps, rec) = recover(wal_disk, snap_disk, opts()).unwrap();
    let (file, snap) = rec.snapshot.expect("a snapshot was saved");
    assert_eq!(snap.meta.index, 100, "newest snapshot {file} is loaded");
    assert_eq!(rec.wal.hard_state.commit, 116);
    assert_eq!(rec.wal.entries.first().map(|e| e.index), Some(101));
    assert_eq!(rec.wal.entries.last().map(|e| e.index), Some(116));
    let mut rebuilt = rec.store;
    replay(&mut rebuilt, &rec.wal.entries);
    assert_eq!(rebuilt.hash_kv(0).unwrap().hash, synced_hash);
    assert_eq!(
        rebuilt.current_revision(),
        117,
        "116 puts on a store that starts at revision 1"
    );
}

#[test]
fn a_corrupt_snapshot_is_refused_and_the_gap_it_leaves_is_an_error() {
    let (wal_disk, snap_disk) = (MemDisk::new(), MemDisk::new());
    let (mut wal, mut snaps, rec) = recover(wal_disk.clone(), snap_disk.clone(), opts()).unwrap();
    let mut store = rec.store;
    for index in 1..=200u64 {
        wal.append(&[entry(index)]).unwrap();
        store.put(&put(index)).unwrap();
        wal.sync().unwrap();
        if index % 50 == 0 {
            checkpoint(&mut wal, &mut snaps, &store, index);
        }
    }
    drop((wal, snaps));
    // Damage the newest snapshot (index 200): recovery falls back to index 150,
    // but the WAL was released up to 200, so entries 151..=200 are gone.
    let newest = cairn::snap::snap_name(1, 200);
    snap_disk.corrupt(&newest, 40, 0x10).unwrap();
    let err = recover(wal_disk, snap_disk.clone(), opts()).unwrap_err();
    assert!(matches!(err, cairn::Error::Corrupt { .. }), "got {err}");
    let mut names = cairn::disk::Disk::list(&mut snap_disk.clone()).unwrap();
    names.sort();
    assert!(
        names.contains(&format!("{newest}.broken")),
        "the bad snapshot is set aside: {names:?}"
    );
}
