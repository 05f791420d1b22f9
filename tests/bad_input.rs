//! Requests a client should not send: each is refused with etcd's error, the
//! store is unchanged afterwards (same revision, no key written), and the
//! server goes on serving.
//!
//! Typed requests go through the `etcd-client` crate; malformed protobuf goes
//! through a raw tonic channel with a pass-through codec, so the bytes on the
//! wire are exactly the test's.
//!
//! Each test runs first against a real etcd when one is installed (proving the
//! expectations are etcd's), then against cairn.
// The harness spawns server processes and reads a clock for its deadlines,
// which the crate's clippy.toml forbids in the sans-IO core.
#![allow(clippy::disallowed_methods)]

mod support;

use std::future::Future;
use std::time::Duration;

use bytes::{Buf, BufMut};
use etcd_client::{Client, Compare, CompareOp, DeleteOptions, Error, GetOptions, Txn, TxnOp};
use support::cluster::{Cluster, Server};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

/// etcd's default `--max-request-bytes`: 1.5 MiB.
const MAX_REQUEST_BYTES: usize = 1_572_864;
/// etcd's default `--max-txn-ops`.
const MAX_TXN_OPS: usize = 128;

/// One node of each server (etcd first), an etcd-client and a raw channel.
async fn on_each_server<F, Fut>(script: F)
where
    F: Fn(Server, Client, Channel) -> Fut,
    Fut: Future<Output = ()>,
{
    for server in Server::reference_and_cairn() {
        eprintln!("== running against {server:?}");
        let cluster = Cluster::start(server, 1, &[]);
        let url = cluster.client_urls()[0].clone();
        let options = etcd_client::ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(Duration::from_secs(10));
        let client = Client::connect([url.clone()], Some(options))
            .await
            .expect("connect etcd-client");
        let channel = Endpoint::from_shared(url)
            .expect("endpoint")
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .connect()
            .await
            .expect("connect raw channel");
        script(server, client, channel).await;
        drop(cluster);
    }
}

#[track_caller]
fn grpc_status(server: Server, e: Error) -> Status {
    match e {
        Error::GRpcStatus(status) => status,
        other => panic!("[{server:?}] expected a gRPC status, got {other:?}"),
    }
}

/// The store's revision, from a linearizable read's header.
async fn revision(c: &mut Client) -> i64 {
    c.get("revision-probe", None)
        .await
        .expect("get")
        .header()
        .expect("header")
        .revision()
}

/// Asserts the server still takes a write and serves it back.
async fn still_serves(s: Server, c: &mut Client, key: &str) {
    c.put(key, "alive", None)
        .await
        .unwrap_or_else(|e| panic!("[{s:?}] put after bad input: {e:?}"));
    let r = c.get(key, None).await.expect("get after bad input");
    assert_eq!(r.kvs()[0].value(), b"alive", "[{s:?}]");
}

#[tokio::test]
async fn oversized_requests_are_refused() {
    on_each_server(|s, mut c, _| async move {
        let before = revision(&mut c).await;
        let too_big = vec![b'x'; MAX_REQUEST_BYTES + 20 * 1024];

        let e = c
            .put("big", too_big.clone(), None)
            .await
            .expect_err("oversized put");
        let status = grpc_status(s, e);
        assert_eq!(status.code(), Code::InvalidArgument, "[{s:?}] {status:?}");
        assert_eq!(
            status.message(),
            "etcdserver: request is too large",
            "[{s:?}]"
        );

        // The same value inside a txn.
        let txn = Txn::new().and_then([TxnOp::put("big", too_big, None)]);
        let status = grpc_status(s, c.txn(txn).await.expect_err("oversized txn"));
        assert_eq!(status.code(), Code::InvalidArgument, "[{s:?}] {status:?}");
        assert_eq!(
            status.message(),
            "etcdserver: request is too large",
            "[{s:?}]"
        );

        assert_eq!(
            revision(&mut c).await,
            before,
            "[{s:?}] nothing was written"
        );
        let r = c.get("big", None).await.expect("get");
        assert_eq!(r.count(), 0, "[{s:?}]");

        // Just under the limit is fine.
        let fits = vec![b'y'; MAX_REQUEST_BYTES - 64 * 1024];
        let r = c
            .put("fits", fits.clone(), None)
            .await
            .expect("put under the limit");
        assert_eq!(
            r.header().expect("header").revision(),
            before + 1,
            "[{s:?}]"
        );
        let r = c.get("fits", None).await.expect("get");
        assert_eq!(
            r.kvs()[0].value(),
            &fits[..],
            "[{s:?}] the big value reads back whole"
        );
        still_serves(s, &mut c, "after-oversized").await;
    })
    .await;
}

#[tokio::test]
async fn txn_op_limits() {
    on_each_server(|s, mut c, _| async move {
        let before = revision(&mut c).await;
        let puts = |n: usize| -> Vec<TxnOp> {
            (0..n)
                .map(|i| TxnOp::put(format!("op{i:03}"), "v", None))
                .collect()
        };
        let too_many = "etcdserver: too many operations in txn request";

        for (what, txn) in [
            (
                "129 success ops",
                Txn::new().and_then(puts(MAX_TXN_OPS + 1)),
            ),
            ("129 failure ops", Txn::new().or_else(puts(MAX_TXN_OPS + 1))),
            (
                "129 compares",
                Txn::new().when(
                    (0..=MAX_TXN_OPS)
                        .map(|i| Compare::version(format!("c{i}"), CompareOp::Equal, 0))
                        .collect::<Vec<_>>(),
                ),
            ),
        ] {
            let status = grpc_status(s, c.txn(txn).await.expect_err(what));
            assert_eq!(
                status.code(),
                Code::InvalidArgument,
                "[{s:?}] {what}: {status:?}"
            );
            assert_eq!(status.message(), too_many, "[{s:?}] {what}");
        }
        // Duplicate keys among a txn's puts (or a put inside a deleted range).
        let dup = Txn::new().and_then([TxnOp::put("d", "1", None), TxnOp::put("d", "2", None)]);
        let status = grpc_status(s, c.txn(dup).await.expect_err("duplicate"));
        assert_eq!(status.code(), Code::InvalidArgument, "[{s:?}] {status:?}");
        assert_eq!(
            status.message(),
            "etcdserver: duplicate key given in txn request",
            "[{s:?}]"
        );
        let dup = Txn::new().and_then([
            TxnOp::delete("a", Some(DeleteOptions::new().with_range("z"))),
            TxnOp::put("m", "1", None),
        ]);
        let status = grpc_status(s, c.txn(dup).await.expect_err("put in deleted range"));
        assert_eq!(
            status.message(),
            "etcdserver: duplicate key given in txn request",
            "[{s:?}]"
        );

        assert_eq!(
            revision(&mut c).await,
            before,
            "[{s:?}] nothing was written"
        );
        let r = c
            .get(
                "op",
                Some(GetOptions::new().with_prefix().with_count_only()),
            )
            .await
            .expect("count");
        assert_eq!(r.count(), 0, "[{s:?}]");

        // Exactly the limit is fine, and takes one revision.
        let r = c
            .txn(Txn::new().and_then(puts(MAX_TXN_OPS)))
            .await
            .expect("128 ops");
        assert_eq!(
            r.header().expect("header").revision(),
            before + 1,
            "[{s:?}]"
        );
        let r = c
            .get(
                "op",
                Some(GetOptions::new().with_prefix().with_count_only()),
            )
            .await
            .expect("count");
        assert_eq!(r.count(), MAX_TXN_OPS as i64, "[{s:?}]");
        still_serves(s, &mut c, "after-txn-limits").await;
    })
    .await;
}

#[tokio::test]
async fn range_end_before_key_is_empty() {
    on_each_server(|s, mut c, _| async move {
        for k in ["a", "m", "z"] {
            c.put(k, "v", None).await.expect("put");
        }
        let before = revision(&mut c).await;

        // [z, a) is empty: no keys, count 0, no error.
        let r = c
            .get("z", Some(GetOptions::new().with_range("a")))
            .await
            .expect("reversed range get");
        assert_eq!(
            (r.kvs().len(), r.count(), r.more()),
            (0, 0, false),
            "[{s:?}]"
        );
        assert_eq!(r.header().expect("header").revision(), before, "[{s:?}]");

        // Deleting it deletes nothing and takes no revision.
        let r = c
            .delete(
                "z",
                Some(DeleteOptions::new().with_range("a").with_prev_key()),
            )
            .await
            .expect("reversed range delete");
        assert_eq!((r.deleted(), r.prev_kvs().len()), (0, 0), "[{s:?}]");
        assert_eq!(r.header().expect("header").revision(), before, "[{s:?}]");

        // The same inside a txn.
        let txn = Txn::new().and_then([
            TxnOp::get("z", Some(GetOptions::new().with_range("a"))),
            TxnOp::delete("z", Some(DeleteOptions::new().with_range("a"))),
        ]);
        let r = c.txn(txn).await.expect("reversed range txn");
        assert!(r.succeeded(), "[{s:?}]");
        assert_eq!(r.header().expect("header").revision(), before, "[{s:?}]");

        assert_eq!(revision(&mut c).await, before, "[{s:?}]");
        let r = c
            .get("", Some(GetOptions::new().with_all_keys()))
            .await
            .expect("get all");
        assert_eq!(r.count(), 3, "[{s:?}] every key is still there");
    })
    .await;
}

/// A codec that sends and receives message bodies as raw bytes.
#[derive(Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let mut body = vec![0; src.remaining()];
        src.copy_to_slice(&mut body);
        Ok(Some(body))
    }
}

/// Sends `body` as the request message of `path`; returns the response body.
async fn raw_call(channel: &Channel, path: &'static str, body: &[u8]) -> Result<Vec<u8>, Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(format!("channel not ready: {e}")))?;
    grpc.unary(
        tonic::Request::new(body.to_vec()),
        PathAndQuery::from_static(path),
        RawCodec,
    )
    .await
    .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn malformed_protobuf_is_refused() {
    on_each_server(|s, mut c, ch| async move {
        c.put("k", "original", None).await.expect("put");
        let before = revision(&mut c).await;

        let garbage: [(&str, &[u8]); 5] = [
            // Field 1 (key), length-delimited, claims 2^32 - 1 bytes.
            ("huge length", &[0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, b'k']),
            // Field 1 with length 5 but 1 byte follows.
            ("truncated bytes", &[0x0a, 0x05, b'k']),
            // Field 2 (value), a varint that never ends.
            ("unterminated varint", &[0x10, 0xff, 0xff, 0xff]),
            // Wire type 7 does not exist.
            ("bad wire type", &[0x0f, 0x01]),
            // Field number 0 is invalid.
            ("field zero", &[0x02, 0x01, b'k']),
        ];
        for (what, body) in garbage {
            for path in [
                "/etcdserverpb.KV/Put",
                "/etcdserverpb.KV/Range",
                "/etcdserverpb.KV/Txn",
            ] {
                let result = raw_call(&ch, path, body).await;
                let status = result
                    .err()
                    .unwrap_or_else(|| panic!("[{s:?}] {what} to {path} was accepted"));
                assert_ne!(status.code(), Code::Ok, "[{s:?}] {what} to {path}");
                assert_ne!(
                    status.code(),
                    Code::Unavailable,
                    "[{s:?}] {what} to {path}: the server must answer, not drop: {status:?}"
                );
            }
        }
        // An empty Put body decodes to a PutRequest without a key.
        let status = raw_call(&ch, "/etcdserverpb.KV/Put", &[])
            .await
            .expect_err("empty put");
        assert_eq!(status.code(), Code::InvalidArgument, "[{s:?}] {status:?}");
        assert_eq!(
            status.message(),
            "etcdserver: key is not provided",
            "[{s:?}]"
        );
        // A method that does not exist.
        let status = raw_call(&ch, "/etcdserverpb.KV/NoSuchMethod", &[0x0a, 0x01, b'k'])
            .await
            .expect_err("unknown method");
        assert_eq!(status.code(), Code::Unimplemented, "[{s:?}] {status:?}");

        assert_eq!(
            revision(&mut c).await,
            before,
            "[{s:?}] nothing was written"
        );
        let r = c.get("k", None).await.expect("get");
        assert_eq!(r.kvs()[0].value(), b"original", "[{s:?}]");

        // The raw path itself works: a well-formed PutRequest {key: "k",
        // value: "raw"} is applied, so the refusals above were about the bytes.
        let reply = raw_call(
            &ch,
            "/etcdserverpb.KV/Put",
            &[0x0a, 0x01, b'k', 0x12, 0x03, b'r', b'a', b'w'],
        )
        .await
        .unwrap_or_else(|e| panic!("[{s:?}] well-formed raw put: {e:?}"));
        // PutResponse { header (field 1): ... }.
        assert_eq!(reply.first(), Some(&0x0a), "[{s:?}] {reply:?}");
        let r = c.get("k", None).await.expect("get");
        assert_eq!(r.kvs()[0].value(), b"raw", "[{s:?}]");
        assert_eq!(
            r.header().expect("header").revision(),
            before + 1,
            "[{s:?}]"
        );
        still_serves(s, &mut c, "after-malformed").await;
    })
    .await;
}

#[tokio::test]
async fn health_service_reports_serving() {
    on_each_server(|s, _, ch| async move {
        // HealthCheckRequest { service: "" } is the empty message; the reply
        // is HealthCheckResponse { status: SERVING (1) }.
        let reply = raw_call(&ch, "/grpc.health.v1.Health/Check", &[])
            .await
            .unwrap_or_else(|e| panic!("[{s:?}] health check: {e:?}"));
        assert_eq!(reply, [0x08, 0x01], "[{s:?}] SERVING");
    })
    .await;
}

/// Asserts a put of `len` bytes is refused as too large, or accepted.
async fn put_of(s: Server, c: &mut Client, len: usize, accepted: bool) {
    let result = c.put(format!("len{len}"), vec![b'v'; len], None).await;
    match (result, accepted) {
        (Ok(_), true) => {}
        (Err(e), false) => {
            let status = grpc_status(s, e);
            assert_eq!(status.code(), Code::InvalidArgument, "[{s:?}] {status:?}");
            assert_eq!(
                status.message(),
                "etcdserver: request is too large",
                "[{s:?}]"
            );
        }
        (result, _) => {
            panic!("[{s:?}] put of {len} bytes: expected accepted={accepted}, got {result:?}")
        }
    }
}

/// Asserts a txn of `n` puts is refused as too many operations, or accepted.
async fn txn_of(s: Server, c: &mut Client, n: usize, accepted: bool) {
    let ops: Vec<TxnOp> = (0..n)
        .map(|i| TxnOp::put(format!("t{n}-{i}"), "v", None))
        .collect();
    match (c.txn(Txn::new().and_then(ops)).await, accepted) {
        (Ok(_), true) => {}
        (Err(e), false) => {
            let status = grpc_status(s, e);
            assert_eq!(status.code(), Code::InvalidArgument, "[{s:?}] {status:?}");
            assert_eq!(
                status.message(),
                "etcdserver: too many operations in txn request",
                "[{s:?}]"
            );
        }
        (result, _) => {
            panic!("[{s:?}] txn of {n} ops: expected accepted={accepted}, got {result:?}")
        }
    }
}

#[tokio::test]
async fn configured_limits_are_enforced() {
    for s in Server::reference_and_cairn() {
        eprintln!("== running against {s:?}");
        let cluster = Cluster::start(s, 1, &["--max-request-bytes=4096", "--max-txn-ops=2"]);
        let mut c = Client::connect(cluster.client_urls(), None)
            .await
            .expect("connect");
        put_of(s, &mut c, 3000, true).await;
        put_of(s, &mut c, 5000, false).await;
        txn_of(s, &mut c, 2, true).await;
        txn_of(s, &mut c, 3, false).await;
        assert_eq!(
            revision(&mut c).await,
            3,
            "[{s:?}] two writes were accepted"
        );
    }
}

/// Every setting can come from a `CAIRN_<FLAG>` variable instead of a flag:
/// the harness passes the ports, data dir, cluster and limits that way, so
/// the node answering at all proves the URLs were read, and the limits prove
/// the rest.
#[tokio::test]
async fn configuration_from_environment() {
    let cluster = Cluster::start_via_env(1, &["--max-txn-ops=2", "--max-request-bytes=4096"]);
    let mut c = Client::connect(cluster.client_urls(), None)
        .await
        .expect("connect");
    txn_of(Server::Cairn, &mut c, 2, true).await;
    txn_of(Server::Cairn, &mut c, 3, false).await;
    put_of(Server::Cairn, &mut c, 5000, false).await;
    let st = c.status().await.expect("status");
    let ml = c.member_list().await.expect("member list");
    assert_eq!(ml.members()[0].name(), "n1", "CAIRN_NAME");
    assert_eq!(st.leader(), ml.members()[0].id());
    assert!(
        cluster.data_dir(0).join("wal").is_dir(),
        "CAIRN_DATA_DIR was not used: {:?}",
        support::cluster::files_under(&cluster.data_dir(0))
    );
}

/// Past the gRPC layer's own limit (max-request-bytes plus 512 KiB of
/// headroom, in etcd as in cairn) a message is refused before it is decoded,
/// with gRPC's code for an oversized message, RESOURCE_EXHAUSTED.
#[tokio::test]
async fn message_over_grpc_limit_is_resource_exhausted() {
    on_each_server(|s, mut c, _| async move {
        let before = revision(&mut c).await;
        let huge = vec![b'z'; 3 * 1024 * 1024];
        let status = grpc_status(s, c.put("huge", huge, None).await.expect_err("huge put"));
        eprintln!("[{s:?}] 3 MiB put: {status:?}");
        assert_eq!(status.code(), Code::ResourceExhausted, "[{s:?}] {status:?}");
        assert_eq!(
            revision(&mut c).await,
            before,
            "[{s:?}] nothing was written"
        );
        still_serves(s, &mut c, "after-huge").await;
    })
    .await;
}
