//! MVCC store throughput in memory: puts, point reads, prefix ranges and
//! compare-and-swap txns, single-threaded, no raft and no disk.
//!
//! Run: `cargo bench --bench mvcc`. Prints a table; figures go to
//! docs/benchmarks.md. Not a test: nothing here asserts a speed.
// A benchmark measures wall time; the core's ban on clocks doesn't apply here.
#![allow(clippy::disallowed_methods)]

use bytes::Bytes;
use cairn::mvcc::Store;
use cairn::proto::etcdserverpb::{
    compare::{CompareResult, CompareTarget, TargetUnion},
    request_op::Request,
    Compare, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use std::hint::black_box;
use std::time::Instant;

const KEYS: u64 = 100_000;
const VALUE_LEN: usize = 256;

fn key(i: u64) -> Bytes {
    Bytes::from(format!("/registry/pods/ns{:03}/pod-{:08}", i % 100, i))
}

/// A cheap deterministic permutation of 0..KEYS (multiplicative, KEYS-coprime).
fn scrambled(i: u64) -> u64 {
    (i * 7_919) % KEYS
}

fn report(name: &str, ops: u64, start: Instant) {
    let secs = start.elapsed().as_secs_f64();
    println!(
        "| {name:<36} | {ops:>9} | {:>12.0} | {:>9.2} |",
        ops as f64 / secs,
        secs * 1e9 / ops as f64 / 1000.0
    );
}

fn main() {
    let value = Bytes::from(vec![b'v'; VALUE_LEN]);
    println!("| workload                             |       ops |        ops/s |   µs/op   |");
    println!("|--------------------------------------|-----------|--------------|-----------|");

    let mut store = Store::new();
    let start = Instant::now();
    for i in 0..KEYS {
        let req = PutRequest {
            key: key(i),
            value: value.clone(),
            ..Default::default()
        };
        black_box(store.put(&req).expect("put"));
    }
    report("put, new keys (sequential)", KEYS, start);

    let start = Instant::now();
    for i in 0..KEYS {
        let req = PutRequest {
            key: key(scrambled(i)),
            value: value.clone(),
            ..Default::default()
        };
        black_box(store.put(&req).expect("put"));
    }
    report("put, overwrite (random order)", KEYS, start);

    let start = Instant::now();
    for i in 0..KEYS {
        let req = RangeRequest {
            key: key(scrambled(i)),
            ..Default::default()
        };
        black_box(store.range(&req).expect("range"));
    }
    report("range, one key", KEYS, start);

    let n = 2_000;
    let start = Instant::now();
    for i in 0..n {
        // Each namespace prefix holds 1,000 keys.
        let prefix = format!("/registry/pods/ns{:03}/", i % 100);
        let mut end = prefix.clone().into_bytes();
        *end.last_mut().expect("non-empty") += 1;
        let req = RangeRequest {
            key: Bytes::from(prefix),
            range_end: Bytes::from(end),
            limit: 100,
            ..Default::default()
        };
        black_box(store.range(&req).expect("range"));
    }
    report("range, prefix of 1000, limit 100", n, start);

    let start = Instant::now();
    for i in 0..KEYS {
        let k = key(scrambled(i));
        let current = store
            .range(&RangeRequest {
                key: k.clone(),
                ..Default::default()
            })
            .expect("get");
        let mod_rev = current.kvs[0].mod_revision;
        let txn = TxnRequest {
            compare: vec![Compare {
                key: k.clone(),
                target: CompareTarget::Mod as i32,
                result: CompareResult::Equal as i32,
                target_union: Some(TargetUnion::ModRevision(mod_rev)),
                ..Default::default()
            }],
            success: vec![RequestOp {
                request: Some(Request::RequestPut(PutRequest {
                    key: k,
                    value: value.clone(),
                    ..Default::default()
                })),
            }],
            failure: vec![],
        };
        let (resp, _) = store.txn(&txn).expect("txn");
        assert!(resp.succeeded, "uncontended CAS must succeed");
    }
    report("get + txn CAS on mod_revision", KEYS, start);

    let start = Instant::now();
    let rev = store.current_revision() - KEYS as i64;
    black_box(
        store
            .compact(&cairn::proto::etcdserverpb::CompactionRequest {
                revision: rev,
                physical: false,
            })
            .expect("compact"),
    );
    report("compact (one sweep over all keys)", 1, start);

    let start = Instant::now();
    black_box(store.hash_kv(0).expect("hash"));
    report("hash_kv (whole store)", 1, start);

    let start = Instant::now();
    let encoded = store.encode();
    report("encode state (snapshot)", 1, start);
    let size = encoded.len();
    let start = Instant::now();
    black_box(Store::decode(Bytes::from(encoded)).expect("decode"));
    report("decode state (snapshot)", 1, start);
    println!(
        "\n{KEYS} keys, {VALUE_LEN}-byte values; state encoding {:.1} MiB",
        size as f64 / (1 << 20) as f64
    );
}
