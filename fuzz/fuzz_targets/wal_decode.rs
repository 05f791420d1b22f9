//! Fuzzes WAL decoding and recovery: it must never panic.
//!
//! Two modes, chosen by the first byte:
//! - raw: the bytes are one segment file; `scan_segment` and a full
//!   `Wal::open` over them must not panic, and must agree with each other;
//! - `W`: the bytes drive a real log (appends, overwrites, hard states,
//!   snapshot markers that skip ahead, syncs, rotations), whose tail is then
//!   damaged (a bit flipped or the file cut) before reopening. Random bytes
//!   rarely pass a CRC, so this is what reaches the replay logic.
#![no_main]
use bytes::Bytes;
use cairn::disk::{Disk, MemDisk};
use cairn::wal::{scan_segment, Entry, HardState, SnapshotMarker, Wal, WalOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match data.split_first() {
        Some((b'W', ops)) => drive_and_damage(ops),
        _ => raw_segment(data),
    }
});

fn raw_segment(data: &[u8]) {
    let scan = scan_segment(Bytes::copy_from_slice(data));
    assert!(scan.good_len <= data.len() as u64);
    assert_eq!(scan.bad.is_none(), scan.good_len == data.len() as u64);
    if let Some(bad) = &scan.bad {
        assert_eq!(bad.offset, scan.good_len);
    }
    // As the only segment of a log, and as the tail after a valid first one.
    for seq in [0u64, 1] {
        let disk = MemDisk::new();
        if seq == 1 {
            drop(Wal::open(disk.clone(), WalOptions::default(), 0).expect("fresh log"));
        }
        let name = format!("{seq:016x}-{:016x}.wal", 1);
        let mut d = disk.clone();
        d.create(&name).expect("create");
        d.append(&name, data).expect("append");
        if let Ok((mut wal, rec)) = Wal::open(
            disk.clone(),
            WalOptions {
                segment_size: 4096,
                max_segments: 1,
            },
            0,
        ) {
            assert_eq!(
                rec.torn_tail.is_some(),
                scan.bad.is_some(),
                "torn iff the scan stopped"
            );
            wal.sync().expect("a recovered log syncs");
        }
    }
}

fn drive_and_damage(ops: &[u8]) {
    let opts = WalOptions {
        segment_size: 256,
        max_segments: 1,
    };
    let disk = MemDisk::new();
    let (mut wal, _) = Wal::open(disk.clone(), opts, 0).expect("fresh log");
    let (ops, damage) = ops.split_at(ops.len().saturating_sub(3));
    // The caller's snapshot is the one the last marker names.
    let mut from_index = 0;
    for &b in ops {
        let arg = u64::from(b >> 3);
        match b & 7 {
            0..=2 => {
                let last = wal.last_index();
                let index = if b & 7 == 2 {
                    // Raft rewrites only entries above the last snapshot.
                    last.saturating_sub(arg % 4).max(from_index + 1)
                } else {
                    last + 1
                };
                let entry = Entry {
                    index,
                    term: arg,
                    data: Bytes::from(vec![b; arg as usize]),
                    ..Entry::default()
                };
                wal.append(&[entry]).expect("append");
            }
            3 => wal
                .set_hard_state(HardState {
                    term: arg,
                    vote: 1,
                    commit: arg,
                })
                .expect("hs"),
            4 => {
                let index = wal.last_index() + arg % 3;
                wal.mark_snapshot(SnapshotMarker { index, term: 1 })
                    .expect("marker");
                from_index = index;
            }
            _ => wal.sync().expect("sync"),
        }
    }
    wal.sync().expect("sync");
    let last_index = wal.last_index();
    let names = wal.segment_names();
    drop(wal);
    // Undamaged, the log reopens to the same last index.
    let (wal, _) = Wal::open(disk.clone(), opts, from_index).expect("reopen undamaged");
    assert_eq!(wal.last_index(), last_index);
    drop(wal);
    if let [which, hi, lo] = *damage {
        let name = &names[usize::from(which) % names.len()];
        let mut d = disk.clone();
        let len = d.len(name).expect("len");
        if len > 0 {
            let at = (u64::from(hi) << 8 | u64::from(lo)) % len;
            if which & 0x80 != 0 {
                d.truncate(name, at).expect("truncate");
            } else {
                disk.corrupt(name, at as usize, 1 << (which & 7))
                    .expect("corrupt");
            }
            let _ = Wal::open(disk.clone(), opts, from_index);
        }
    }
}
