//! The etcd semantics Kubernetes relies on (issue #18), each script run
//! against a real etcd 3.4 first (its answers are the expectations) and then
//! cairn: `hasleader` (clientv3's `WithRequireLeader`, which kube-apiserver
//! puts on every watch), periodic progress notifications, compaction as
//! kube-apiserver runs it, paged lists, leases shared by many objects, and an
//! informer over a workload while members are killed.
//!
//! docs/kubernetes.md says what each test stands for.
// The tests spawn server processes and etcdctl, and read clocks for their
// deadlines: all things the crate's clippy.toml keeps out of the sans-IO core.
#![allow(clippy::disallowed_methods)]

mod support;

use std::time::{Duration, Instant};

use etcd_client::{Client, ConnectOptions, EventType, WatchOptions, WatchStream};
use support::cluster::{Cluster, Server};
use support::compat::{find_leader, grpc_status, next_watch_response, revision};
use support::streaming::Streaming;
use tokio::task::block_in_place;

/// How long any single expected message may take to arrive.
const WAIT: Duration = Duration::from_secs(15);

/// A client of node `i` alone; `require_leader` adds etcd's `hasleader`
/// metadata to every request, as clientv3's `WithRequireLeader` does.
async fn client_of(c: &Cluster, i: usize, require_leader: bool) -> Client {
    let options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(Duration::from_secs(20))
        .with_require_leader(require_leader);
    Client::connect([c.node(i).client_url()], Some(options))
        .await
        .expect("connect etcd-client")
}

/// Opens a watch on `key` and waits for its `created` response.
async fn watch_created(s: Server, client: &mut Client, key: &str) -> WatchStream {
    let mut stream = client
        .watch(key, Some(WatchOptions::new().with_prev_key()))
        .await
        .unwrap_or_else(|e| panic!("[{s:?}] watch {key}: {e:?}"));
    let r = next_watch_response(s, &mut stream, WAIT).await;
    assert!(r.created(), "[{s:?}] first response is `created`: {r:?}");
    stream
}

/// The index of a running node that is not the leader.
async fn a_follower(c: &Cluster) -> usize {
    let leader = find_leader(c, WAIT).await;
    (leader + 1) % c.nodes.len()
}

/// The member a watch runs on loses its leader (the other two are killed).
/// A stream opened with `hasleader` ends with `etcdserver: no leader` a few
/// election timeouts later; one opened without it stays open and silent, as
/// etcd keeps it; unary requests and new watches with `hasleader` fail at
/// once. With a quorum back, the same client works again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hasleader_ends_watches_and_fails_requests_without_a_leader() {
    for server in Server::reference_and_cairn() {
        eprintln!("== running against {server:?}");
        let mut c = block_in_place(|| Cluster::start(server, 3, &[]));
        let me = a_follower(&c).await;
        let mut leader_client = client_of(&c, me, true).await;
        let mut plain_client = client_of(&c, me, false).await;
        let mut with = watch_created(server, &mut leader_client, "k").await;
        let mut without = watch_created(server, &mut plain_client, "k").await;
        leader_client.put("k", "1", None).await.expect("put");
        for stream in [&mut with, &mut without] {
            let r = next_watch_response(server, stream, WAIT).await;
            assert_eq!(r.events().len(), 1, "[{server:?}] {r:?}");
        }

        let others: Vec<usize> = (0..3).filter(|&i| i != me).collect();
        block_in_place(|| others.iter().for_each(|&i| c.kill(i)));
        let lost = Instant::now();
        let err = match tokio::time::timeout(Duration::from_secs(30), with.message()).await {
            Ok(Err(e)) => grpc_status(server, e),
            other => panic!("[{server:?}] the hasleader watch did not end: {other:?}"),
        };
        let took = lost.elapsed();
        eprintln!("[{server:?}] hasleader watch ended {took:?} after the quorum was lost");
        assert_eq!(err.code(), tonic::Code::Unavailable, "[{server:?}] {err:?}");
        assert_eq!(err.message(), "etcdserver: no leader", "[{server:?}]");
        // Not before the member could have noticed: an election timeout
        // (1 s) at least.
        assert!(took >= Duration::from_secs(1), "[{server:?}] {took:?}");

        // The watch without hasleader is still open: no error, no event.
        match tokio::time::timeout(Duration::from_secs(2), without.message()).await {
            Err(_) => {}
            Ok(other) => panic!("[{server:?}] plain watch should stay open: {other:?}"),
        }

        // Unary requests and new watches with hasleader fail at once.
        let asked = Instant::now();
        let err = grpc_status(server, leader_client.get("k", None).await.unwrap_err());
        assert_eq!(
            (err.code(), err.message()),
            (tonic::Code::Unavailable, "etcdserver: no leader"),
            "[{server:?}] {err:?}"
        );
        assert!(
            asked.elapsed() < Duration::from_secs(3),
            "[{server:?}] a hasleader read should fail at once, took {:?}",
            asked.elapsed()
        );
        let err = match leader_client.watch("k", None).await {
            Err(e) => grpc_status(server, e),
            Ok(mut s) => panic!(
                "[{server:?}] a new hasleader watch was accepted: {:?}",
                s.message().await
            ),
        };
        assert_eq!(
            (err.code(), err.message()),
            (tonic::Code::Unavailable, "etcdserver: no leader"),
            "[{server:?}] {err:?}"
        );

        // A quorum again: the same client's requests and watches work.
        block_in_place(|| {
            others.iter().for_each(|&i| c.spawn_again(i));
            others.iter().for_each(|&i| c.wait_ready(i, WAIT * 2));
        });
        let mut again = watch_created(server, &mut leader_client, "k").await;
        leader_client.put("k", "2", None).await.expect("put");
        let r = next_watch_response(server, &mut again, WAIT).await;
        assert_eq!(r.events()[0].event_type(), EventType::Put, "[{server:?}]");
    }
}

/// The reproduction with etcdctl, which opens its watches with
/// `WithRequireLeader`: `etcdctl watch` on one member, the other two killed.
/// It reports the cancellation and exits instead of waiting for ever.
#[test]
fn etcdctl_watch_exits_when_its_member_loses_the_leader() {
    for server in Server::reference_and_cairn() {
        eprintln!("== running against {server:?}");
        let mut c = Cluster::start(server, 3, &[]);
        // From the next revision, so the put below is seen however late the
        // watch is created; seeing it means the watch is open before the kills.
        let from = format!("--rev={}", revision(&c) + 1);
        let mut w = Streaming::etcdctl(&c.endpoint(0), &["watch", "k", &from]);
        let out = c.ctl(0, &["put", "k", "v"]);
        assert!(out.success(), "[{server:?}] {out:?}");
        let seen = w.wait_stdout("the put", WAIT, |o| o.contains("PUT\nk\nv\n"));
        assert_eq!(seen, "PUT\nk\nv\n", "[{server:?}]");
        c.kill(1);
        c.kill(2);
        let out = w.finish(Duration::from_secs(30));
        assert_eq!(out.code, Some(5), "[{server:?}] {out:#?}");
        assert_eq!(
            out.stderr,
            "watch was canceled (etcdserver: no leader)\n\
             Error: watch is canceled by the server\n",
            "[{server:?}] {out:#?}"
        );
    }
}

/// Objects kube-apiserver writes with a TTL (events) share one lease, granted
/// once and never kept alive. When it expires, all of them are deleted at one
/// revision, and a watcher of their prefix gets every delete in one response.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_lease_for_many_objects_expires_them_at_one_revision() {
    const OBJECTS: usize = 1000;
    for server in Server::reference_and_cairn() {
        eprintln!("== running against {server:?}");
        let c = block_in_place(|| Cluster::start(server, 1, &[]));
        let mut client = client_of(&c, 0, false).await;
        // Long enough to write every object before it expires.
        let lease = client.lease_grant(15, None).await.expect("grant").id();
        for i in 0..OBJECTS {
            let opts = etcd_client::PutOptions::new().with_lease(lease);
            client
                .put(format!("/registry/events/e{i:04}"), "x", Some(opts))
                .await
                .unwrap_or_else(|e| panic!("[{server:?}] put {i}: {e:?}"));
        }
        let opts = WatchOptions::new().with_prefix().with_prev_key();
        let mut stream = client
            .watch("/registry/events/", Some(opts))
            .await
            .expect("watch");
        assert!(next_watch_response(server, &mut stream, WAIT)
            .await
            .created());
        let r = next_watch_response(server, &mut stream, Duration::from_secs(40)).await;
        let events = r.events();
        assert_eq!(
            events.len(),
            OBJECTS,
            "[{server:?}] every delete in one response"
        );
        let revs: std::collections::BTreeSet<i64> = events
            .iter()
            .map(|e| e.kv().expect("kv").mod_revision())
            .collect();
        assert_eq!(revs.len(), 1, "[{server:?}] one revision: {revs:?}");
        assert!(
            events.iter().all(|e| e.event_type() == EventType::Delete
                && e.prev_kv().is_some_and(|kv| kv.lease() == lease)),
            "[{server:?}] deletes of the lease's keys"
        );
        let left = client
            .get(
                "/registry/events/",
                Some(
                    etcd_client::GetOptions::new()
                        .with_prefix()
                        .with_count_only(),
                ),
            )
            .await
            .expect("count");
        assert_eq!(left.count(), 0, "[{server:?}]");
    }
}

/// Compaction as kube-apiserver runs it (a compare-and-swap on
/// `compact_rev_key`, then `Compact(physical)`), a watch from before it
/// canceled with `compact_revision`, and the informer's relist: pages at the
/// list's revision, continued from the last key + `\0`, with `more` and
/// `count` exact, then a watch from the list's
/// revision + 1 that sees every later event exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_and_relist_as_kube_apiserver_does_them() {
    use etcd_client::{CompactionOptions, Compare, CompareOp, GetOptions, Txn, TxnOp};
    const PODS: usize = 10;
    for server in Server::reference_and_cairn() {
        eprintln!("== running against {server:?}");
        let c = block_in_place(|| Cluster::start(server, 1, &[]));
        let mut client = client_of(&c, 0, true).await;
        for i in 0..PODS {
            client
                .put(format!("/registry/pods/p{i:02}"), "v1", None)
                .await
                .expect("put");
        }
        // Two API servers race to compact; the compare-and-swap picks one.
        let cas = |version: i64| {
            Txn::new()
                .when([Compare::version(
                    "compact_rev_key",
                    CompareOp::Equal,
                    version,
                )])
                .and_then([TxnOp::put("compact_rev_key", "x", None)])
        };
        let won = client.txn(cas(0)).await.expect("txn");
        assert!(won.succeeded(), "[{server:?}]");
        let lost = client.txn(cas(0)).await.expect("txn");
        assert!(!lost.succeeded(), "[{server:?}]");
        let rev = won.header().expect("header").revision();
        let opts = CompactionOptions::new().with_physical();
        client.compact(rev, Some(opts)).await.expect("compact");

        // An informer whose watch restarts from before the compaction (its
        // old resource version) is told the compaction revision, and relists.
        // (A watch that had already caught up before the compaction is not
        // canceled, on etcd either; one still catching up races etcd's
        // 100 ms sync loop, so this test does not make one.)
        let opts = WatchOptions::new().with_start_revision(2);
        let mut old = client
            .watch("/registry/pods/p00", Some(opts))
            .await
            .expect("watch");
        let canceled = loop {
            let r = next_watch_response(server, &mut old, WAIT).await;
            if r.canceled() {
                break r;
            }
        };
        assert_eq!(canceled.compact_revision(), rev, "[{server:?}]");

        // The relist: pages of 3 at one revision.
        let end = "/registry/pods0";
        let (mut key, mut list_rev, mut listed) = ("/registry/pods/".to_string(), 0, Vec::new());
        loop {
            let mut opts = GetOptions::new().with_range(end).with_limit(3);
            if list_rev != 0 {
                opts = opts.with_revision(list_rev);
            }
            let page = client.get(key.as_str(), Some(opts)).await.expect("page");
            if list_rev == 0 {
                list_rev = page.header().expect("header").revision();
                // A write between pages must not show in the list.
                client
                    .put("/registry/pods/p05", "v2", None)
                    .await
                    .expect("put");
            }
            assert_eq!(
                page.count() as usize,
                PODS - listed.len(),
                "[{server:?}] count"
            );
            listed.extend(
                page.kvs()
                    .iter()
                    .map(|kv| kv.key_str().unwrap().to_string()),
            );
            assert_eq!(page.more(), listed.len() < PODS, "[{server:?}] more");
            if !page.more() {
                break;
            }
            key = format!("{}\0", listed.last().unwrap());
        }
        let want: Vec<String> = (0..PODS)
            .map(|i| format!("/registry/pods/p{i:02}"))
            .collect();
        assert_eq!(listed, want, "[{server:?}]");

        // The watch from the list's revision + 1 sees each later write once.
        client
            .delete("/registry/pods/p03", None)
            .await
            .expect("delete");
        let opts = WatchOptions::new()
            .with_prefix()
            .with_prev_key()
            .with_progress_notify()
            .with_start_revision(list_rev + 1);
        let mut w = client
            .watch("/registry/pods/", Some(opts))
            .await
            .expect("watch");
        assert!(next_watch_response(server, &mut w, WAIT).await.created());
        let mut seen = Vec::new();
        while seen.len() < 2 {
            let r = next_watch_response(server, &mut w, WAIT).await;
            seen.extend(r.events().iter().map(|e| {
                let kv = e.kv().expect("kv");
                (
                    e.event_type(),
                    kv.key_str().unwrap().to_string(),
                    kv.mod_revision(),
                )
            }));
        }
        let want = vec![
            (
                EventType::Put,
                "/registry/pods/p05".to_string(),
                list_rev + 1,
            ),
            (
                EventType::Delete,
                "/registry/pods/p03".to_string(),
                list_rev + 2,
            ),
        ];
        assert_eq!(seen, want, "[{server:?}]");
        client
            .put("/registry/pods/probe", "x", None)
            .await
            .expect("put");
        let r = next_watch_response(server, &mut w, WAIT).await;
        assert_eq!(
            r.events().len(),
            1,
            "[{server:?}] nothing seen twice: {r:?}"
        );
        assert_eq!(
            r.events()[0].kv().unwrap().key_str().unwrap(),
            "/registry/pods/probe"
        );
    }
}

/// kubeadm runs etcd with `--experimental-watch-progress-notify-interval=5s`
/// (here 1 s, to keep the test short): an idle watcher that asked for
/// progress notifications gets an empty response at about that interval,
/// whose header carries the store's current revision (writes to other keys
/// included), which kube-apiserver uses to keep its cache's revision fresh.
/// A watcher that did not ask gets none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_notifications_at_the_configured_interval() {
    for server in Server::reference_and_cairn() {
        let flags = ["--experimental-watch-progress-notify-interval=1s"];
        let c = block_in_place(|| Cluster::start(server, 1, &flags));
        let mut client = client_of(&c, 0, false).await;
        let opts = WatchOptions::new().with_progress_notify();
        let mut w = client
            .watch("/registry/idle", Some(opts))
            .await
            .expect("watch");
        assert!(next_watch_response(server, &mut w, WAIT).await.created());
        let mut quiet = watch_created(server, &mut client, "/registry/quiet").await;
        client.put("/registry/other", "x", None).await.expect("put");
        let rev = block_in_place(|| revision(&c));
        let mut at = Vec::new();
        while at.len() < 3 {
            let r = next_watch_response(server, &mut w, WAIT).await;
            assert!(r.events().is_empty() && !r.canceled(), "[{server:?}] {r:?}");
            assert_eq!(
                r.header().map(|h| h.revision()),
                Some(rev),
                "[{server:?}] a progress notification carries the current revision"
            );
            at.push(Instant::now());
        }
        for gap in at.windows(2).map(|p| p[1] - p[0]) {
            assert!(
                gap > Duration::from_millis(500) && gap < Duration::from_millis(2500),
                "[{server:?}] notifications {gap:?} apart, want about 1 s"
            );
        }
        let none = tokio::time::timeout(Duration::from_millis(2500), quiet.message()).await;
        assert!(
            none.is_err(),
            "[{server:?}] the watcher without progress_notify got {none:?}"
        );
    }
}
