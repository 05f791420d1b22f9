//! Model test: the MVCC store against a deliberately naive reference model.
//!
//! The model (`tests/support/model.rs`) keeps a full copy of the key space for
//! every revision and applies each request with the simplest code that states
//! etcd's rules. proptest drives both with the same random sequences of put, delete, range, txn
//! (nested) and compact over a small key set, so operations collide, and
//! asserts every response is identical.

mod support;

use bytes::Bytes;
use cairn::proto::etcdserverpb::{
    compare::{CompareTarget, TargetUnion},
    request_op::Request,
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use proptest::prelude::*;
use support::model::{run, Op};

// ---------------------------------------------------------- generators

const KEYS: &[&str] = &["a", "ab", "b", "c", "d"];
const ENDS: &[&str] = &["", "", "", "b", "c", "e", "\0", "a"];

fn key() -> impl Strategy<Value = Bytes> {
    prop::sample::select(KEYS).prop_map(|k| Bytes::from_static(k.as_bytes()))
}
fn end() -> impl Strategy<Value = Bytes> {
    prop::sample::select(ENDS).prop_map(|k| Bytes::from_static(k.as_bytes()))
}
fn value() -> impl Strategy<Value = Bytes> {
    prop::sample::select(&["", "x", "y", "zz"][..]).prop_map(|k| Bytes::from_static(k.as_bytes()))
}

fn put_req() -> impl Strategy<Value = PutRequest> {
    (key(), value(), 0i64..3, any::<bool>(), 0u8..8).prop_map(
        |(key, value, lease, prev_kv, flags)| {
            let ignore_value = flags == 1 || flags == 3;
            let ignore_lease = flags == 2 || flags == 3;
            PutRequest {
                key,
                value: if ignore_value { Bytes::new() } else { value },
                lease: if ignore_lease { 0 } else { lease },
                prev_kv,
                ignore_value,
                ignore_lease,
            }
        },
    )
}

fn del_req() -> impl Strategy<Value = DeleteRangeRequest> {
    (key(), end(), any::<bool>()).prop_map(|(key, range_end, prev_kv)| DeleteRangeRequest {
        key,
        range_end,
        prev_kv,
    })
}

/// A range request; `revision` is a small number the runner maps onto the
/// revisions that exist (so reads hit current, old, compacted and future ones).
fn range_req() -> impl Strategy<Value = RangeRequest> {
    (
        key(),
        end(),
        -1i64..12,
        0i64..4,
        0i32..3,
        0i32..5,
        any::<bool>(),
        any::<bool>(),
        0u8..6,
    )
        .prop_map(
            |(
                key,
                range_end,
                revision,
                limit,
                sort_order,
                sort_target,
                keys_only,
                count_only,
                filter,
            )| RangeRequest {
                key,
                range_end,
                revision,
                limit,
                sort_order,
                sort_target,
                keys_only,
                count_only: count_only && filter == 0,
                min_mod_revision: if filter == 1 { 3 } else { 0 },
                max_mod_revision: if filter == 2 { 5 } else { 0 },
                min_create_revision: if filter == 3 { 3 } else { 0 },
                max_create_revision: if filter == 4 { 4 } else { 0 },
                ..Default::default()
            },
        )
}

fn compare() -> impl Strategy<Value = Compare> {
    (
        key(),
        prop::sample::select(&["", "", "c", "\0"][..]),
        0i32..4,
        0i32..5,
        0i64..6,
        value(),
    )
        .prop_map(|(key, end, result, target, n, v)| {
            let target_union = match CompareTarget::try_from(target).unwrap() {
                CompareTarget::Version => TargetUnion::Version(n % 3),
                CompareTarget::Create => TargetUnion::CreateRevision(n),
                CompareTarget::Mod => TargetUnion::ModRevision(n),
                CompareTarget::Value => TargetUnion::Value(v),
                CompareTarget::Lease => TargetUnion::Lease(n % 3),
            };
            Compare {
                key,
                range_end: Bytes::from_static(end.as_bytes()),
                result,
                target,
                target_union: Some(target_union),
            }
        })
}

fn txn_req() -> impl Strategy<Value = TxnRequest> {
    let leaf = prop_oneof![
        range_req().prop_map(|r| RequestOp {
            request: Some(Request::RequestRange(r))
        }),
        put_req().prop_map(|p| RequestOp {
            request: Some(Request::RequestPut(p))
        }),
        del_req().prop_map(|d| RequestOp {
            request: Some(Request::RequestDeleteRange(d))
        }),
    ];
    let op = leaf.prop_recursive(2, 12, 4, |inner| {
        (
            prop::collection::vec(compare(), 0..3),
            prop::collection::vec(inner.clone(), 0..4),
            prop::collection::vec(inner, 0..4),
        )
            .prop_map(|(compare, success, failure)| RequestOp {
                request: Some(Request::RequestTxn(TxnRequest {
                    compare,
                    success,
                    failure,
                })),
            })
    });
    (
        prop::collection::vec(compare(), 0..3),
        prop::collection::vec(op.clone(), 0..5),
        prop::collection::vec(op, 0..5),
    )
        .prop_map(|(compare, success, failure)| TxnRequest {
            compare,
            success,
            failure,
        })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => put_req().prop_map(Op::Put),
        2 => del_req().prop_map(Op::Del),
        3 => range_req().prop_map(Op::Range),
        3 => txn_req().prop_map(Op::Txn),
        1 => (0i64..12).prop_map(Op::Compact),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn store_matches_model(ops in prop::collection::vec(op(), 1..40)) {
        run(ops).map_err(TestCaseError::fail)?;
    }
}
