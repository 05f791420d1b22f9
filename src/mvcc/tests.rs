//! Worked examples of etcd's semantics. The model test in `tests/` covers
//! random sequences; these pin down specific rules.

use super::*;
use crate::proto::etcdserverpb::{
    compare::{CompareResult, CompareTarget, TargetUnion},
    request_op::Request,
    response_op::Response,
    Compare, RequestOp,
};

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn put(s: &mut Store, k: &str, v: &str) -> PutResponse {
    s.put(&PutRequest {
        key: b(k),
        value: b(v),
        ..Default::default()
    })
    .unwrap()
    .0
}

fn get(s: &Store, k: &str) -> Option<KeyValue> {
    let r = s
        .range(&RangeRequest {
            key: b(k),
            ..Default::default()
        })
        .unwrap();
    r.kvs.into_iter().next()
}

fn keys(r: &RangeResponse) -> Vec<String> {
    r.kvs
        .iter()
        .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
        .collect()
}

fn op_put(k: &str, v: &str) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestPut(PutRequest {
            key: b(k),
            value: b(v),
            ..Default::default()
        })),
    }
}

fn op_del(k: &str, end: &str) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
            key: b(k),
            range_end: b(end),
            ..Default::default()
        })),
    }
}

fn op_get(k: &str) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestRange(RangeRequest {
            key: b(k),
            ..Default::default()
        })),
    }
}

fn cmp(k: &str, target: CompareTarget, result: CompareResult, u: TargetUnion) -> Compare {
    Compare {
        key: b(k),
        target: target as i32,
        result: result as i32,
        target_union: Some(u),
        ..Default::default()
    }
}

#[test]
fn revisions_versions_and_generations() {
    let mut s = Store::new();
    assert_eq!(s.current_revision(), 1);
    assert_eq!(put(&mut s, "a", "1").header.unwrap().revision, 2);
    put(&mut s, "a", "2");
    let kv = get(&s, "a").unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 3, 2));
    let (d, events) = s
        .delete_range(&DeleteRangeRequest {
            key: b("a"),
            ..Default::default()
        })
        .unwrap();
    assert_eq!((d.deleted, d.header.unwrap().revision), (1, 4));
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kv.as_ref().unwrap().mod_revision, 4);
    assert!(get(&s, "a").is_none());
    put(&mut s, "a", "3");
    let kv = get(&s, "a").unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (5, 5, 1));
    // Old revisions stay readable.
    let old = s
        .range(&RangeRequest {
            key: b("a"),
            revision: 3,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(old.kvs[0].value, b("2"));
    assert_eq!(
        old.header.unwrap().revision,
        5,
        "header carries the current revision"
    );
}

#[test]
fn deleting_nothing_takes_no_revision() {
    let mut s = Store::new();
    put(&mut s, "a", "1");
    let (d, events) = s
        .delete_range(&DeleteRangeRequest {
            key: b("zzz"),
            ..Default::default()
        })
        .unwrap();
    assert_eq!((d.deleted, s.current_revision()), (0, 2));
    assert!(events.is_empty());
}

#[test]
fn range_limit_count_sort_and_filters() {
    let mut s = Store::new();
    for (k, v) in [("k1", "c"), ("k2", "a"), ("k3", "b"), ("x", "z")] {
        put(&mut s, k, v);
    }
    put(&mut s, "k2", "a2");
    let prefix = RangeRequest {
        key: b("k"),
        range_end: b("l"),
        ..Default::default()
    };
    let r = s.range(&prefix).unwrap();
    assert_eq!(keys(&r), ["k1", "k2", "k3"]);
    assert_eq!((r.count, r.more), (3, false));

    let r = s
        .range(&RangeRequest {
            limit: 2,
            ..prefix.clone()
        })
        .unwrap();
    assert_eq!(keys(&r), ["k1", "k2"]);
    assert_eq!((r.count, r.more), (3, true));

    let r = s
        .range(&RangeRequest {
            sort_order: SortOrder::Descend as i32,
            sort_target: SortTarget::Value as i32,
            limit: 2,
            ..prefix.clone()
        })
        .unwrap();
    assert_eq!(keys(&r), ["k1", "k3"], "values c > b > a2");
    assert!(r.more);

    // Target other than key with order NONE sorts ascending.
    let r = s
        .range(&RangeRequest {
            sort_target: SortTarget::Mod as i32,
            ..prefix.clone()
        })
        .unwrap();
    assert_eq!(keys(&r), ["k1", "k3", "k2"]);

    let r = s
        .range(&RangeRequest {
            min_mod_revision: 3,
            max_mod_revision: 4,
            ..prefix.clone()
        })
        .unwrap();
    assert_eq!(keys(&r), ["k3"], "k2 was modified at 6, k1 at 2");
    assert_eq!(r.count, 3, "count ignores filters");

    let r = s
        .range(&RangeRequest {
            count_only: true,
            ..prefix.clone()
        })
        .unwrap();
    assert_eq!((r.kvs.len(), r.count), (0, 3));

    let r = s
        .range(&RangeRequest {
            keys_only: true,
            ..prefix.clone()
        })
        .unwrap();
    assert!(r.kvs.iter().all(|kv| kv.value.is_empty()));

    let all = RangeRequest {
        key: b("\0"),
        range_end: b("\0"),
        ..Default::default()
    };
    assert_eq!(s.range(&all).unwrap().count, 4);
    let from_k2 = RangeRequest {
        key: b("k2"),
        range_end: b("\0"),
        ..Default::default()
    };
    assert_eq!(keys(&s.range(&from_k2).unwrap()), ["k2", "k3", "x"]);
    let backwards = RangeRequest {
        key: b("k3"),
        range_end: b("k1"),
        ..Default::default()
    };
    assert_eq!(s.range(&backwards).unwrap().count, 0);
    let bad_sort = RangeRequest {
        sort_order: 9,
        ..prefix
    };
    assert_eq!(s.range(&bad_sort).unwrap_err(), Error::InvalidSortOption);
}

#[test]
fn put_options() {
    let mut s = Store::new();
    s.put(&PutRequest {
        key: b("a"),
        value: b("v1"),
        lease: 7,
        ..Default::default()
    })
    .unwrap();
    let (r, _) = s
        .put(&PutRequest {
            key: b("a"),
            ignore_value: true,
            prev_kv: true,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(r.prev_kv.unwrap().value, b("v1"));
    let kv = get(&s, "a").unwrap();
    assert_eq!(
        (kv.value, kv.lease),
        (b("v1"), 0),
        "ignore_value keeps the value, not the lease"
    );
    s.put(&PutRequest {
        key: b("a"),
        value: b("v2"),
        lease: 9,
        ..Default::default()
    })
    .unwrap();
    s.put(&PutRequest {
        key: b("a"),
        value: b("v3"),
        ignore_lease: true,
        ..Default::default()
    })
    .unwrap();
    let kv = get(&s, "a").unwrap();
    assert_eq!((kv.value, kv.lease), (b("v3"), 9));

    let rev = s.current_revision();
    let missing = PutRequest {
        key: b("nope"),
        ignore_value: true,
        ..Default::default()
    };
    assert_eq!(s.put(&missing).unwrap_err(), Error::KeyNotFound);
    assert_eq!(s.current_revision(), rev);
    let both = PutRequest {
        key: b("a"),
        value: b("x"),
        ignore_value: true,
        ..Default::default()
    };
    assert_eq!(s.put(&both).unwrap_err(), Error::ValueProvided);
    let empty = PutRequest::default();
    assert_eq!(s.put(&empty).unwrap_err(), Error::EmptyKey);
}

#[test]
fn txn_takes_one_revision_and_sees_its_own_writes() {
    let mut s = Store::new();
    put(&mut s, "a", "1");
    let req = TxnRequest {
        compare: vec![cmp(
            "a",
            CompareTarget::Value,
            CompareResult::Equal,
            TargetUnion::Value(b("1")),
        )],
        success: vec![
            op_put("a", "2"),
            op_put("b", "x"),
            op_get("a"),
            op_del("c", ""),
        ],
        failure: vec![op_get("a")],
    };
    let (r, events) = s.txn(&req).unwrap();
    assert!(r.succeeded);
    assert_eq!(r.header.unwrap().revision, 3);
    assert_eq!(s.current_revision(), 3);
    assert_eq!(events.len(), 2);
    let revs: Vec<_> = s
        .range(&RangeRequest {
            key: b("a"),
            range_end: b("c"),
            ..Default::default()
        })
        .unwrap()
        .kvs
        .iter()
        .map(|kv| kv.mod_revision)
        .collect();
    assert_eq!(revs, [3, 3]);
    match &r.responses[2].response {
        Some(Response::ResponseRange(rr)) => assert_eq!(rr.kvs[0].value, b("2")),
        other => panic!("expected a range response, got {other:?}"),
    }
    // Now the compare fails and the failure branch runs without a new revision.
    let (r, events) = s.txn(&req).unwrap();
    assert!(!r.succeeded);
    assert!(events.is_empty());
    assert_eq!(s.current_revision(), 3);
}

#[test]
fn txn_compares_on_every_target_and_over_ranges() {
    let mut s = Store::new();
    put(&mut s, "p/1", "a");
    put(&mut s, "p/2", "b");
    let holds = |s: &mut Store, c: Compare| {
        s.txn(&TxnRequest {
            compare: vec![c],
            ..Default::default()
        })
        .unwrap()
        .0
        .succeeded
    };
    use CompareResult::*;
    use CompareTarget::*;
    assert!(holds(
        &mut s,
        cmp("p/1", Version, Equal, TargetUnion::Version(1))
    ));
    assert!(holds(
        &mut s,
        cmp("p/2", Create, Greater, TargetUnion::CreateRevision(2))
    ));
    assert!(holds(
        &mut s,
        cmp("p/1", Mod, Less, TargetUnion::ModRevision(3))
    ));
    assert!(holds(
        &mut s,
        cmp("p/1", Lease, Equal, TargetUnion::Lease(0))
    ));
    assert!(holds(
        &mut s,
        cmp("p/1", Value, NotEqual, TargetUnion::Value(b("z")))
    ));
    // A missing key compares as zero, except on value.
    assert!(holds(
        &mut s,
        cmp("nope", Create, Equal, TargetUnion::CreateRevision(0))
    ));
    assert!(!holds(
        &mut s,
        cmp("nope", Value, Equal, TargetUnion::Value(Bytes::new()))
    ));
    // Over a range, every key must match.
    let mut c = cmp("p/", Version, Equal, TargetUnion::Version(1));
    c.range_end = b("p0");
    assert!(holds(&mut s, c.clone()));
    put(&mut s, "p/2", "c");
    assert!(!holds(&mut s, c));
}

#[test]
fn nested_txn_compares_read_the_starting_state() {
    let mut s = Store::new();
    put(&mut s, "a", "1");
    let nested = TxnRequest {
        compare: vec![cmp(
            "a",
            CompareTarget::Value,
            CompareResult::Equal,
            TargetUnion::Value(b("1")),
        )],
        success: vec![op_put("n", "saw-old-a")],
        failure: vec![op_put("n", "saw-new-a")],
    };
    let req = TxnRequest {
        success: vec![
            op_put("a", "2"),
            RequestOp {
                request: Some(Request::RequestTxn(nested)),
            },
        ],
        ..Default::default()
    };
    s.txn(&req).unwrap();
    assert_eq!(get(&s, "n").unwrap().value, b("saw-old-a"));
    assert_eq!(get(&s, "n").unwrap().mod_revision, 3);
}

#[test]
fn txn_duplicate_key_rules() {
    let s = Store::new();
    let check = |success: Vec<RequestOp>| {
        check_txn(
            &TxnRequest {
                success,
                ..Default::default()
            },
            128,
        )
    };
    assert_eq!(
        check(vec![op_put("a", "1"), op_put("a", "2")]),
        Err(Error::DuplicateKey)
    );
    assert_eq!(
        check(vec![op_del("a", "c"), op_put("b", "2")]),
        Err(Error::DuplicateKey)
    );
    assert_eq!(
        check(vec![op_del("a", ""), op_put("a", "2")]),
        Err(Error::DuplicateKey)
    );
    assert_eq!(
        check(vec![op_del("a", "c"), op_del("b", "d")]),
        Ok(()),
        "deletes may overlap"
    );
    assert_eq!(check(vec![op_put("a", "1"), op_get("a")]), Ok(()));
    let branches = TxnRequest {
        success: vec![op_put("a", "1")],
        failure: vec![op_put("a", "2")],
        ..Default::default()
    };
    let nested = |t: TxnRequest| RequestOp {
        request: Some(Request::RequestTxn(t)),
    };
    assert_eq!(
        check(vec![nested(branches.clone())]),
        Ok(()),
        "then/else never both run"
    );
    assert_eq!(
        check(vec![nested(branches.clone()), op_put("a", "3")]),
        Err(Error::DuplicateKey)
    );
    assert_eq!(
        check(vec![nested(branches), op_del("a", "b")]),
        Err(Error::DuplicateKey)
    );
    assert_eq!(
        check(vec![RequestOp { request: None }]),
        Err(Error::KeyNotFound)
    );
    let many = (0..129).map(|i| op_get(&format!("k{i}"))).collect();
    assert_eq!(check(many), Err(Error::TooManyOps));
    drop(s);
}

#[test]
fn failed_txn_changes_nothing() {
    let mut s = Store::new();
    put(&mut s, "a", "1");
    let before = s.clone();
    let req = TxnRequest {
        success: vec![
            op_put("b", "1"),
            op_del("a", ""),
            RequestOp {
                request: Some(Request::RequestPut(PutRequest {
                    key: b("missing"),
                    ignore_value: true,
                    ..Default::default()
                })),
            },
        ],
        ..Default::default()
    };
    assert_eq!(s.txn(&req).unwrap_err(), Error::KeyNotFound);
    assert_eq!(s, before);
    let future_read = TxnRequest {
        success: vec![
            op_put("b", "1"),
            RequestOp {
                request: Some(Request::RequestRange(RangeRequest {
                    key: b("b"),
                    revision: 3,
                    ..Default::default()
                })),
            },
        ],
        ..Default::default()
    };
    assert_eq!(s.txn(&future_read).unwrap_err(), Error::FutureRev);
    assert_eq!(s, before);
}

#[test]
fn compaction_keeps_the_newest_version_at_or_before() {
    let mut s = Store::new();
    put(&mut s, "a", "1"); // 2
    put(&mut s, "a", "2"); // 3
    put(&mut s, "b", "1"); // 4
    s.delete_range(&DeleteRangeRequest {
        key: b("b"),
        ..Default::default()
    })
    .unwrap(); // 5
    put(&mut s, "a", "3"); // 6
    assert_eq!(
        s.compact(&CompactionRequest {
            revision: 7,
            ..Default::default()
        })
        .unwrap_err(),
        Error::FutureRev
    );
    s.compact(&CompactionRequest {
        revision: 5,
        ..Default::default()
    })
    .unwrap();
    s.check_invariants();
    assert_eq!(s.key_count(), 1, "b's generation ended at 5 and is gone");
    let at = |s: &Store, rev| {
        s.range(&RangeRequest {
            key: b("a"),
            revision: rev,
            ..Default::default()
        })
    };
    assert_eq!(at(&s, 4).unwrap_err(), Error::Compacted);
    assert_eq!(at(&s, 5).unwrap().kvs[0].value, b("2"));
    assert_eq!(at(&s, 6).unwrap().kvs[0].value, b("3"));
    assert_eq!(
        s.compact(&CompactionRequest {
            revision: 5,
            ..Default::default()
        })
        .unwrap_err(),
        Error::Compacted
    );
}

#[test]
fn encode_decode_and_hash() {
    let mut s = Store::new();
    put(&mut s, "a", "1");
    put(&mut s, "b", "2");
    s.delete_range(&DeleteRangeRequest {
        key: b("a"),
        ..Default::default()
    })
    .unwrap();
    put(&mut s, "a", "3");
    let decoded = Store::decode(Bytes::from(s.encode())).unwrap();
    assert_eq!(decoded, s);
    assert_eq!(decoded.hash_kv(0).unwrap(), s.hash_kv(0).unwrap());
    let h4 = s.hash_kv(4).unwrap();
    put(&mut s, "c", "x");
    assert_eq!(
        s.hash_kv(4).unwrap(),
        h4,
        "hash at a revision ignores later writes"
    );
    assert_ne!(s.hash_kv(0).unwrap().hash, h4.hash);
    let mut bytes = s.encode();
    bytes.truncate(bytes.len() - 1);
    assert!(Store::decode(Bytes::from(bytes)).is_err());
}

#[test]
fn shrink_from_steps_over_every_key_and_changes_nothing() {
    let mut s = Store::new();
    for i in 0..25 {
        for v in 0..3 {
            s.put(&PutRequest {
                key: format!("k{i:02}").into_bytes().into(),
                value: format!("v{v}").into_bytes().into(),
                ..Default::default()
            })
            .unwrap();
        }
    }
    s.compact(&CompactionRequest {
        revision: s.current_revision(),
        ..Default::default()
    })
    .unwrap();
    let before = s.clone();
    let (mut next, mut steps) = (None, 0);
    loop {
        next = s.shrink_from(next.as_ref(), 10);
        steps += 1;
        if next.is_none() {
            break;
        }
    }
    assert_eq!(steps, 3);
    assert_eq!(s, before);
    s.check_invariants();
}
