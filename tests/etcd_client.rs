//! The Rust `etcd-client` crate against one node: a second real client, with
//! its own generated stubs and its own reading of every response field.
//!
//! Like `tests/etcdctl.rs`, each test runs first against a real etcd when one
//! is installed (proving the expectations are etcd's), then against cairn.
// The harness spawns server processes and reads a clock for its deadlines,
// which the crate's clippy.toml forbids in the sans-IO core.
#![allow(clippy::disallowed_methods)]

mod support;

use etcd_client::{
    Compare, CompareOp, DeleteOptions, GetOptions, PutOptions, SortOrder, SortTarget, Txn, TxnOp,
    TxnOpResponse,
};
use support::compat::{grpc_status, on_each_server_client, rev};

#[tokio::test]
async fn put_get_delete() {
    on_each_server_client(|s, mut c| async move {
        let r = c.put("foo", "bar", None).await.expect("put");
        assert_eq!(rev(r.header()), 2, "[{s:?}] the first write is revision 2");
        assert!(r.prev_key().is_none(), "[{s:?}] prev_kv only when asked");
        let r = c
            .put("foo", "bar2", Some(PutOptions::new().with_prev_key()))
            .await
            .expect("put prev_kv");
        assert_eq!(rev(r.header()), 3, "[{s:?}]");
        let prev = r.prev_key().expect("prev_kv");
        assert_eq!(prev.value(), b"bar", "[{s:?}]");
        assert_eq!(prev.mod_revision(), 2, "[{s:?}]");
        for (k, v) in [("foo2", "baz"), ("a", "1"), ("b", "2")] {
            c.put(k, v, None).await.expect("put");
        }

        // A single key: every field.
        let r = c.get("foo", None).await.expect("get");
        assert_eq!(rev(r.header()), 6, "[{s:?}]");
        assert_eq!(r.count(), 1, "[{s:?}]");
        let kv = &r.kvs()[0];
        assert_eq!(
            (
                kv.key(),
                kv.value(),
                kv.create_revision(),
                kv.mod_revision(),
                kv.version(),
                kv.lease()
            ),
            (&b"foo"[..], &b"bar2"[..], 2, 3, 2, 0),
            "[{s:?}]"
        );

        // Prefix, range, limit and count.
        let r = c
            .get("foo", Some(GetOptions::new().with_prefix()))
            .await
            .expect("get prefix");
        let keys: Vec<&[u8]> = r.kvs().iter().map(|kv| kv.key()).collect();
        assert_eq!(keys, [&b"foo"[..], b"foo2"], "[{s:?}]");
        let r = c
            .get("", Some(GetOptions::new().with_all_keys().with_limit(2)))
            .await
            .expect("get limit");
        assert_eq!(
            (r.kvs().len(), r.count(), r.more()),
            (2, 4, true),
            "[{s:?}]"
        );
        let r = c
            .get("a", Some(GetOptions::new().with_range("foo")))
            .await
            .expect("get range");
        assert_eq!(r.count(), 2, "[{s:?}] [a, foo) holds a and b");
        let r = c
            .get(
                "",
                Some(GetOptions::new().with_all_keys().with_count_only()),
            )
            .await
            .expect("count only");
        assert_eq!((r.count(), r.kvs().len()), (4, 0), "[{s:?}] count_only");
        let r = c
            .get("", Some(GetOptions::new().with_all_keys().with_keys_only()))
            .await
            .expect("keys only");
        assert_eq!(r.kvs().len(), 4, "[{s:?}]");
        assert!(
            r.kvs().iter().all(|kv| kv.value().is_empty()),
            "[{s:?}] keys_only"
        );
        let r = c
            .get(
                "",
                Some(
                    GetOptions::new()
                        .with_all_keys()
                        .with_sort(SortTarget::Mod, SortOrder::Descend)
                        .with_limit(2),
                ),
            )
            .await
            .expect("sorted");
        let keys: Vec<&[u8]> = r.kvs().iter().map(|kv| kv.key()).collect();
        assert_eq!(keys, [&b"b"[..], b"a"], "[{s:?}] newest first");
        let r = c
            .get("foo", Some(GetOptions::new().with_revision(2)))
            .await
            .expect("get at rev");
        assert_eq!(r.kvs()[0].value(), b"bar", "[{s:?}] history");
        assert_eq!(
            rev(r.header()),
            6,
            "[{s:?}] the header has the current revision"
        );

        // Delete: count, prev kvs, one revision for the whole range.
        let r = c
            .delete(
                "foo",
                Some(DeleteOptions::new().with_prefix().with_prev_key()),
            )
            .await
            .expect("delete");
        assert_eq!(r.deleted(), 2, "[{s:?}]");
        assert_eq!(rev(r.header()), 7, "[{s:?}]");
        let prev: Vec<&[u8]> = r.prev_kvs().iter().map(|kv| kv.value()).collect();
        assert_eq!(prev, [&b"bar2"[..], b"baz"], "[{s:?}]");
        let r = c.delete("foo", None).await.expect("delete again");
        assert_eq!(
            (r.deleted(), rev(r.header())),
            (0, 7),
            "[{s:?}] no-op delete"
        );
        let r = c
            .get("foo", Some(GetOptions::new().with_prefix()))
            .await
            .expect("get");
        assert_eq!(r.count(), 0, "[{s:?}]");
    })
    .await;
}

#[tokio::test]
async fn txn_compare_and_swap() {
    on_each_server_client(|s, mut c| async move {
        c.put("lock", "free", None).await.expect("put"); // rev 2

        // CAS that holds: take the lock, read it back in the same txn.
        let txn = Txn::new()
            .when([Compare::value("lock", CompareOp::Equal, "free")])
            .and_then([TxnOp::put("lock", "held", None), TxnOp::get("lock", None)])
            .or_else([TxnOp::get("lock", None)]);
        let r = c.txn(txn).await.expect("txn");
        assert!(r.succeeded(), "[{s:?}]");
        assert_eq!(rev(r.header()), 3, "[{s:?}]");
        let ops = r.op_responses();
        assert_eq!(ops.len(), 2, "[{s:?}]");
        match &ops[1] {
            TxnOpResponse::Get(g) => {
                assert_eq!(g.kvs()[0].value(), b"held", "[{s:?}] reads its own write");
                assert_eq!(g.kvs()[0].mod_revision(), 3, "[{s:?}]");
            }
            other => panic!("[{s:?}] expected a get response, got {other:?}"),
        }

        // The same CAS again fails and runs the else branch; no revision.
        let txn = Txn::new()
            .when([Compare::value("lock", CompareOp::Equal, "free")])
            .and_then([TxnOp::put("lock", "stolen", None)])
            .or_else([TxnOp::get("lock", None)]);
        let r = c.txn(txn).await.expect("txn");
        assert!(!r.succeeded(), "[{s:?}]");
        assert_eq!(rev(r.header()), 3, "[{s:?}] a failed read-only branch");
        match &r.op_responses()[0] {
            TxnOpResponse::Get(g) => assert_eq!(g.kvs()[0].value(), b"held", "[{s:?}]"),
            other => panic!("[{s:?}] expected a get response, got {other:?}"),
        }

        // mod_revision CAS (optimistic concurrency), version and create.
        let txn = Txn::new()
            .when([
                Compare::mod_revision("lock", CompareOp::Equal, 3),
                Compare::version("lock", CompareOp::Equal, 2),
                Compare::create_revision("lock", CompareOp::Equal, 2),
                Compare::create_revision("nothing", CompareOp::Equal, 0),
            ])
            .and_then([
                TxnOp::put("lock", "free", None),
                TxnOp::delete("nothing", None),
                TxnOp::put("other", "x", None),
            ]);
        let r = c.txn(txn).await.expect("txn");
        assert!(r.succeeded(), "[{s:?}]");
        assert_eq!(rev(r.header()), 4, "[{s:?}] one revision per txn");
        let g = c.get("other", None).await.expect("get");
        assert_eq!(g.kvs()[0].mod_revision(), 4, "[{s:?}]");
        let txn = Txn::new()
            .when([Compare::mod_revision("lock", CompareOp::Less, 4)])
            .and_then([TxnOp::put("lock", "late", None)]);
        let r = c.txn(txn).await.expect("txn");
        assert!(!r.succeeded(), "[{s:?}] lock was modified at 4");

        // A compare over a range: every key in it must match.
        let txn = Txn::new()
            .when([Compare::version("l", CompareOp::Greater, 0).with_range("p")])
            .and_then([TxnOp::put("ranged", "ok", None)]);
        let r = c.txn(txn).await.expect("txn");
        assert!(
            r.succeeded(),
            "[{s:?}] lock and other both have version > 0"
        );
        assert_eq!(rev(r.header()), 5, "[{s:?}]");

        // Nested txn.
        let inner = Txn::new()
            .when([Compare::value("lock", CompareOp::Equal, "free")])
            .and_then([TxnOp::put("nested", "yes", None)]);
        let r = c
            .txn(Txn::new().and_then([TxnOp::txn(inner)]))
            .await
            .expect("nested txn");
        assert!(r.succeeded(), "[{s:?}]");
        let g = c.get("nested", None).await.expect("get");
        assert_eq!(g.kvs()[0].value(), b"yes", "[{s:?}]");
        assert_eq!(rev(g.header()), 6, "[{s:?}]");
    })
    .await;
}

#[tokio::test]
async fn compaction_and_errors() {
    on_each_server_client(|s, mut c| async move {
        for i in 1..=5 {
            c.put("k", format!("v{i}"), None).await.expect("put"); // revs 2..=6
        }
        let r = c.compact(4, None).await.expect("compact");
        assert_eq!(rev(r.header()), 6, "[{s:?}] compaction takes no revision");

        let e = c
            .get("k", Some(GetOptions::new().with_revision(3)))
            .await
            .expect_err("read below compaction");
        let status = grpc_status(s, e);
        assert_eq!(status.code(), tonic::Code::OutOfRange, "[{s:?}] {status:?}");
        assert_eq!(
            status.message(),
            "etcdserver: mvcc: required revision has been compacted",
            "[{s:?}]"
        );
        let r = c
            .get("k", Some(GetOptions::new().with_revision(4)))
            .await
            .expect("read at compaction");
        assert_eq!(r.kvs()[0].value(), b"v3", "[{s:?}]");

        let status = grpc_status(s, c.compact(4, None).await.expect_err("compact twice"));
        assert_eq!(status.code(), tonic::Code::OutOfRange, "[{s:?}] {status:?}");
        assert_eq!(
            status.message(),
            "etcdserver: mvcc: required revision has been compacted",
            "[{s:?}]"
        );
        let status = grpc_status(s, c.compact(7, None).await.expect_err("future"));
        assert_eq!(status.code(), tonic::Code::OutOfRange, "[{s:?}] {status:?}");
        assert_eq!(
            status.message(),
            "etcdserver: mvcc: required revision is a future revision",
            "[{s:?}]"
        );
        let status = grpc_status(
            s,
            c.get("k", Some(GetOptions::new().with_revision(9)))
                .await
                .expect_err("future read"),
        );
        assert_eq!(status.code(), tonic::Code::OutOfRange, "[{s:?}] {status:?}");
        assert_eq!(
            status.message(),
            "etcdserver: mvcc: required revision is a future revision",
            "[{s:?}]"
        );

        // Empty key.
        let status = grpc_status(s, c.put("", "v", None).await.expect_err("empty key"));
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "[{s:?}] {status:?}"
        );
        assert_eq!(
            status.message(),
            "etcdserver: key is not provided",
            "[{s:?}]"
        );

        // Duplicate key in one txn.
        let txn = Txn::new().and_then([TxnOp::put("d", "1", None), TxnOp::put("d", "2", None)]);
        let status = grpc_status(s, c.txn(txn).await.expect_err("duplicate key"));
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "[{s:?}] {status:?}"
        );
        assert_eq!(
            status.message(),
            "etcdserver: duplicate key given in txn request",
            "[{s:?}]"
        );
        let r = c.get("d", None).await.expect("get");
        assert_eq!(
            (r.count(), rev(r.header())),
            (0, 6),
            "[{s:?}] nothing written"
        );
    })
    .await;
}

#[tokio::test]
async fn status_and_member_list() {
    on_each_server_client(|s, mut c| async move {
        c.put("a", "1", None).await.expect("put");
        let st = c.status().await.expect("status");
        let header = st.header().expect("header");
        let me = header.member_id();
        let cluster_id = header.cluster_id();
        assert_ne!(me, 0, "[{s:?}]");
        assert_ne!(header.cluster_id(), 0, "[{s:?}]");
        assert_eq!(header.revision(), 2, "[{s:?}]");
        assert_eq!(st.leader(), me, "[{s:?}] a single node leads");
        assert!(st.raft_term() >= 1, "[{s:?}]");
        assert_eq!(header.raft_term(), st.raft_term(), "[{s:?}]");
        assert!(st.raft_index() >= 1, "[{s:?}]");
        assert!(!st.version().is_empty(), "[{s:?}]");

        let before = st.raft_index();
        c.put("b", "2", None).await.expect("put");
        let st = c.status().await.expect("status");
        assert!(
            st.raft_index() > before,
            "[{s:?}] a write goes through the log"
        );

        let ml = c.member_list().await.expect("member list");
        let members = ml.members();
        assert_eq!(members.len(), 1, "[{s:?}]");
        assert_eq!(members[0].id(), me, "[{s:?}]");
        assert_eq!(members[0].name(), "n1", "[{s:?}]");
        assert_eq!(
            ml.header().map(|h| h.cluster_id()),
            Some(cluster_id),
            "[{s:?}]"
        );
    })
    .await;
}

#[tokio::test]
async fn range_filters_and_put_flags() {
    on_each_server_client(|s, mut c| async move {
        // a: create 2, mod 5, version 2; b: 3/3; c: 4/4; d: 6/6.
        for (k, v) in [
            ("a", "a1"),
            ("b", "b1"),
            ("c", "c1"),
            ("a", "a2"),
            ("d", "d1"),
        ] {
            c.put(k, v, None).await.expect("put");
        }
        let keys = |r: &etcd_client::GetResponse| -> Vec<String> {
            r.kvs()
                .iter()
                .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
                .collect()
        };
        let all = || GetOptions::new().with_all_keys();

        let r = c
            .get("", Some(all().with_min_mod_revision(4)))
            .await
            .expect("get");
        assert_eq!(keys(&r), ["a", "c", "d"], "[{s:?}] min_mod_revision");
        // The count is the range's, before the revision filters.
        assert_eq!(r.count(), 4, "[{s:?}] count ignores the filters");
        let r = c
            .get("", Some(all().with_min_mod_revision(4).with_limit(2)))
            .await
            .expect("get");
        assert_eq!(keys(&r), ["a", "c"], "[{s:?}] filter, then limit");
        assert!(r.more(), "[{s:?}] more after filter and limit");
        let r = c
            .get("", Some(all().with_max_create_revision(3)))
            .await
            .expect("get");
        assert_eq!(keys(&r), ["a", "b"], "[{s:?}] max_create_revision");
        let r = c
            .get(
                "",
                Some(all().with_min_create_revision(4).with_max_mod_revision(4)),
            )
            .await
            .expect("get");
        assert_eq!(keys(&r), ["c"], "[{s:?}] min_create and max_mod");
        let r = c
            .get(
                "",
                Some(
                    all()
                        .with_max_mod_revision(4)
                        .with_sort(SortTarget::Create, SortOrder::Descend),
                ),
            )
            .await
            .expect("get");
        assert_eq!(keys(&r), ["c", "b"], "[{s:?}] filter and sort");

        // ignore_value keeps the value and bumps the version.
        let r = c
            .put("a", "", Some(PutOptions::new().with_ignore_value()))
            .await
            .expect("put ignore_value");
        assert_eq!(rev(r.header()), 7, "[{s:?}]");
        let r = c.get("a", None).await.expect("get");
        let kv = &r.kvs()[0];
        assert_eq!(
            (kv.value(), kv.version(), kv.mod_revision()),
            (&b"a2"[..], 3, 7),
            "[{s:?}]"
        );
        let e = c
            .put("missing", "", Some(PutOptions::new().with_ignore_value()))
            .await
            .expect_err("ignore_value on a missing key");
        let status = grpc_status(s, e);
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "[{s:?}] {status:?}"
        );
        assert_eq!(status.message(), "etcdserver: key not found", "[{s:?}]");
        let e = c
            .put("missing", "v", Some(PutOptions::new().with_ignore_value()))
            .await
            .expect_err("ignore_value with a value");
        let status = grpc_status(s, e);
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "[{s:?}] {status:?}"
        );
        assert_eq!(status.message(), "etcdserver: value is provided", "[{s:?}]");
        let r = c.get("missing", None).await.expect("get");
        assert_eq!(
            (r.count(), rev(r.header())),
            (0, 7),
            "[{s:?}] nothing written"
        );
    })
    .await;
}
