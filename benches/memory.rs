//! Memory per key: loads 1,000,000 keys with 256-byte values into the MVCC
//! store and reports heap bytes per key (from a counting allocator) and the
//! process's resident set size; then overwrites every key once, compacts,
//! and reports heap bytes per key again.
//!
//! Run: `cargo bench --bench memory`. Figures go to docs/benchmarks.md.
//!
//! Values are built the way the server will see them: one buffer per request
//! holding the encoded key and value, with the key and value `Bytes` sharing
//! it (prost decodes `bytes` fields as slices of the request buffer).
// A benchmark reads /proc and the clock; the core's bans don't apply here.
#![allow(clippy::disallowed_methods)]

use bytes::Bytes;
use cairn::mvcc::Store;
use cairn::proto::etcdserverpb::{CompactionRequest, PutRequest};
use prost::Message;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

/// Counts live heap bytes.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged and only
// keeps a counter beside it.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn main() {
    const N: u64 = 1_000_000;
    const VALUE_LEN: usize = 256;
    let value = vec![b'v'; VALUE_LEN];
    let rss_before = rss_bytes().unwrap_or(0);
    let heap_before = LIVE.load(Ordering::Relaxed);
    let mut store = Store::new();
    let start = Instant::now();
    let mut key_bytes = 0u64;
    for i in 0..N {
        let key = format!("/registry/pods/ns{:03}/pod-{:08}", i % 100, i);
        key_bytes += key.len() as u64;
        // Encode and decode as the server would, so key and value share one buffer.
        let wire = PutRequest {
            key: key.into(),
            value: value.clone().into(),
            ..Default::default()
        }
        .encode_to_vec();
        let req = PutRequest::decode(Bytes::from(wire)).expect("decode");
        store.put(&req).expect("put");
        if i % 200_000 == 199_999 {
            eprintln!("loaded {} keys", i + 1);
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let heap = (LIVE.load(Ordering::Relaxed) - heap_before) as f64;
    let rss = rss_bytes().unwrap_or(0).saturating_sub(rss_before) as f64;
    let payload = (key_bytes + N * VALUE_LEN as u64) as f64;
    println!("| keys      | value | avg key | heap/key | overhead/key | RSS growth | load time |");
    println!("|-----------|-------|---------|----------|--------------|------------|-----------|");
    println!(
        "| {N} | {VALUE_LEN} B | {:.0} B | {:.0} B | {:.0} B | {:.0} MiB | {secs:.2} s |",
        key_bytes as f64 / N as f64,
        heap / N as f64,
        (heap - payload) / N as f64,
        rss / (1 << 20) as f64,
    );
    assert_eq!(store.key_count() as u64, N);

    // Every key written again, then the first versions compacted away: what
    // stays is one version per key again, as after a Kubernetes compaction.
    for i in 0..N {
        let key = format!("/registry/pods/ns{:03}/pod-{:08}", i % 100, i);
        let wire = PutRequest {
            key: key.into(),
            value: value.clone().into(),
            ..Default::default()
        }
        .encode_to_vec();
        store
            .put(&PutRequest::decode(Bytes::from(wire)).expect("decode"))
            .expect("put");
    }
    let rev = store.current_revision();
    store
        .compact(&CompactionRequest {
            revision: rev,
            physical: false,
        })
        .expect("compact");
    let heap = (LIVE.load(Ordering::Relaxed) - heap_before) as f64;
    println!(
        "after overwriting every key and compacting: heap/key {:.0} B, overhead/key {:.0} B",
        heap / N as f64,
        (heap - payload) / N as f64,
    );
}
