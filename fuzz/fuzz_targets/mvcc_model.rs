//! Fuzzes the MVCC store against the naive reference model of
//! `tests/support/model.rs`: the input bytes choose a sequence of put,
//! delete, range, txn (nested) and compact requests over a small key set; any
//! difference between store and model, or a broken invariant, is a crash.
#![no_main]

#[path = "../../tests/support/model.rs"]
mod model;

use bytes::Bytes;
use cairn::proto::etcdserverpb::{
    compare::TargetUnion, request_op::Request, Compare, DeleteRangeRequest, PutRequest,
    RangeRequest, RequestOp, TxnRequest,
};
use libfuzzer_sys::fuzz_target;
use model::Op;

const KEYS: &[&[u8]] = &[b"a", b"ab", b"b", b"c", b"d"];
const ENDS: &[&[u8]] = &[b"", b"", b"b", b"c", b"e", b"\0", b"a"];
const VALUES: &[&[u8]] = &[b"", b"x", b"y", b"zz"];

/// Hands out input bytes; zeros once they run out.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }
    fn pick(&mut self, from: &[&'static [u8]]) -> Bytes {
        Bytes::from_static(from[self.byte() as usize % from.len()])
    }
    fn small(&mut self, n: u8) -> i64 {
        i64::from(self.byte() % n)
    }
    fn flag(&mut self) -> bool {
        self.byte() & 1 == 1
    }

    fn put(&mut self) -> PutRequest {
        let flags = self.byte() % 6;
        let (ignore_value, ignore_lease) = (flags == 1 || flags == 3, flags == 2 || flags == 3);
        PutRequest {
            key: self.pick(KEYS),
            value: if ignore_value {
                Bytes::new()
            } else {
                self.pick(VALUES)
            },
            lease: if ignore_lease { 0 } else { self.small(3) },
            prev_kv: self.flag(),
            ignore_value,
            ignore_lease,
        }
    }
    fn del(&mut self) -> DeleteRangeRequest {
        DeleteRangeRequest {
            key: self.pick(KEYS),
            range_end: self.pick(ENDS),
            prev_kv: self.flag(),
        }
    }
    fn range(&mut self) -> RangeRequest {
        let filter = self.byte() % 6;
        RangeRequest {
            key: self.pick(KEYS),
            range_end: self.pick(ENDS),
            revision: self.small(13) - 1,
            limit: self.small(4),
            sort_order: self.small(3) as i32,
            sort_target: self.small(5) as i32,
            keys_only: self.flag(),
            count_only: filter == 0 && self.flag(),
            min_mod_revision: if filter == 1 { 3 } else { 0 },
            max_mod_revision: if filter == 2 { 5 } else { 0 },
            min_create_revision: if filter == 3 { 3 } else { 0 },
            max_create_revision: if filter == 4 { 4 } else { 0 },
            ..Default::default()
        }
    }
    fn compare(&mut self) -> Compare {
        let target = self.small(5) as i32;
        let n = self.small(6);
        let target_union = match target {
            0 => TargetUnion::Version(n % 3),
            1 => TargetUnion::CreateRevision(n),
            2 => TargetUnion::ModRevision(n),
            3 => TargetUnion::Value(self.pick(VALUES)),
            _ => TargetUnion::Lease(n % 3),
        };
        Compare {
            key: self.pick(KEYS),
            range_end: self.pick(&[b"", b"", b"c", b"\0"]),
            result: self.small(4) as i32,
            target,
            target_union: Some(target_union),
        }
    }
    fn ops(&mut self, depth: u8) -> Vec<RequestOp> {
        (0..self.byte() % 5)
            .map(|_| {
                let request = match self.byte() % if depth > 0 { 4 } else { 3 } {
                    0 => Request::RequestRange(self.range()),
                    1 => Request::RequestPut(self.put()),
                    2 => Request::RequestDeleteRange(self.del()),
                    _ => Request::RequestTxn(self.txn(depth - 1)),
                };
                RequestOp {
                    request: Some(request),
                }
            })
            .collect()
    }
    fn txn(&mut self, depth: u8) -> TxnRequest {
        TxnRequest {
            compare: (0..self.byte() % 3).map(|_| self.compare()).collect(),
            success: self.ops(depth),
            failure: self.ops(depth),
        }
    }
    fn op(&mut self) -> Op {
        match self.byte() % 5 {
            0 => Op::Put(self.put()),
            1 => Op::Del(self.del()),
            2 => Op::Range(self.range()),
            3 => Op::Txn(self.txn(2)),
            _ => Op::Compact(self.small(12)),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let mut ops = Vec::new();
    while !input.0.is_empty() && ops.len() < 64 {
        ops.push(input.op());
    }
    if let Err(diff) = model::run(ops) {
        panic!("store and model disagree: {diff}");
    }
});
