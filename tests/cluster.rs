//! Three real cairn processes on loopback: crashes (SIGKILL) under write load,
//! elections, catch-up by log and by snapshot, and a clean SIGTERM.
//!
//! The rule checked throughout: every write the cluster acknowledged is
//! readable afterwards from every node, at the revision it was acknowledged
//! with, and no two acknowledged writes share a revision.
// The tests spawn server processes, run writer tasks and measure elapsed time
// for their deadlines: all things the crate's clippy.toml keeps out of the
// sans-IO core.
#![allow(clippy::disallowed_methods)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{Client, ConnectOptions, GetOptions};
use support::cluster::{files_under, Cluster, Server};
use support::compat::find_leader;
use tokio::task::block_in_place;

/// How long an election after a leader crash may take before writes resume.
const ELECTION_BOUND: Duration = Duration::from_secs(15);
/// How long a node may take to catch up with the cluster.
const CATCH_UP_BOUND: Duration = Duration::from_secs(30);
/// Concurrent writer tasks in the load test.
const WRITERS: usize = 4;

/// One acknowledged put.
#[derive(Clone, Debug)]
struct Ack {
    key: String,
    value: String,
    /// The revision in the put's response header.
    revision: i64,
}

async fn connect(url: &str) -> Client {
    connect_with_timeout(url, Duration::from_secs(3)).await
}

/// A client whose requests may take up to `timeout`: on a loaded 2-core CI
/// machine running several clusters at once, a healthy write can take longer
/// than the 3 s the failover tests use to give up on a dead member.
async fn connect_with_timeout(url: &str, timeout: Duration) -> Client {
    let options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(1))
        .with_timeout(timeout);
    Client::connect([url], Some(options))
        .await
        .expect("connect etcd-client")
}

/// Puts unique keys `w<id>-<seq>` until `stop`, recording each acknowledged
/// one. On any error it moves to the next endpoint; an unacknowledged key is
/// never retried (it may or may not have been applied) and never checked.
async fn writer(id: usize, urls: Vec<String>, stop: Arc<AtomicBool>, acks: Arc<Mutex<Vec<Ack>>>) {
    let hard_stop = Instant::now() + Duration::from_secs(120);
    let mut at = id % urls.len();
    let mut client = connect(&urls[at]).await;
    for seq in 0..1_000_000u32 {
        if stop.load(Ordering::Relaxed) || Instant::now() > hard_stop {
            return;
        }
        let key = format!("w{id}-{seq:07}");
        let value = format!("value {id}/{seq}");
        match client.put(key.clone(), value.clone(), None).await {
            Ok(resp) => {
                let revision = resp.header().map(|h| h.revision()).unwrap_or(0);
                assert!(revision > 0, "put {key} acknowledged without a revision");
                acks.lock().expect("acks").push(Ack {
                    key,
                    value,
                    revision,
                });
            }
            Err(_) => {
                at = (at + 1) % urls.len();
                client = connect(&urls[at]).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

fn ack_count(acks: &Mutex<Vec<Ack>>) -> usize {
    acks.lock().expect("acks").len()
}

/// Waits until at least `n` writes are acknowledged; returns how long it took.
async fn wait_acks(acks: &Mutex<Vec<Ack>>, n: usize, timeout: Duration, what: &str) -> Duration {
    let start = Instant::now();
    while ack_count(acks) < n {
        assert!(
            start.elapsed() < timeout,
            "{what}: only {} of {n} writes acknowledged within {timeout:?}",
            ack_count(acks)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

/// Checks the acknowledged writes themselves: each has its own revision.
fn check_unique_revisions(acks: &[Ack]) {
    let mut seen = BTreeMap::new();
    for ack in acks {
        if let Some(other) = seen.insert(ack.revision, &ack.key) {
            panic!(
                "two acknowledged writes share revision {}: {other} and {}",
                ack.revision, ack.key
            );
        }
    }
}

/// Waits until node `i` has applied `revision` (serializable reads, so a node
/// answers from its own state), then checks every ack is on it at its
/// revision, with serializable and then linearizable reads.
async fn check_node_has(cluster: &Cluster, i: usize, acks: &[Ack], prefix: &str) {
    let name = &cluster.node(i).name;
    let max_rev = acks.iter().map(|a| a.revision).max().unwrap_or(0);
    let mut c = connect(&cluster.node(i).client_url()).await;
    let deadline = Instant::now() + CATCH_UP_BOUND;
    loop {
        let got = c
            .get("probe", Some(GetOptions::new().with_serializable()))
            .await
            .ok()
            .and_then(|r| r.header().map(|h| h.revision()));
        if got.is_some_and(|r| r >= max_rev) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{name} did not reach revision {max_rev} within {CATCH_UP_BOUND:?} (at {got:?})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for serializable in [true, false] {
        let mut options = GetOptions::new().with_prefix();
        if serializable {
            options = options.with_serializable();
        }
        let resp = c.get(prefix, Some(options)).await.unwrap_or_else(|e| {
            panic!("{name}: range {prefix:?} (serializable {serializable}): {e:?}")
        });
        let stored: BTreeMap<&[u8], (&[u8], i64)> = resp
            .kvs()
            .iter()
            .map(|kv| (kv.key(), (kv.value(), kv.mod_revision())))
            .collect();
        let mut missing = Vec::new();
        for ack in acks {
            match stored.get(ack.key.as_bytes()) {
                None => missing.push(ack.key.clone()),
                Some(&(value, mod_rev)) => {
                    assert_eq!(
                        value,
                        ack.value.as_bytes(),
                        "{name}: {} has the wrong value (serializable {serializable})",
                        ack.key
                    );
                    assert_eq!(
                        mod_rev, ack.revision,
                        "{name}: {} was acknowledged at revision {} but is stored at {mod_rev} \
                         (serializable {serializable})",
                        ack.key, ack.revision
                    );
                }
            }
        }
        assert!(
            missing.is_empty(),
            "{name} lost {} of {} acknowledged writes (serializable {serializable}), first: {:?}",
            missing.len(),
            acks.len(),
            &missing[..missing.len().min(10)]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_crash_under_write_load() {
    let mut cluster = block_in_place(|| Cluster::start(Server::Cairn, 3, &[]));

    // Every node knows all three members by name.
    for i in 0..3 {
        let mut c = connect(&cluster.node(i).client_url()).await;
        let ml = c.member_list().await.expect("member list");
        let names: BTreeSet<&str> = ml.members().iter().map(|m| m.name()).collect();
        assert_eq!(
            names,
            BTreeSet::from(["n1", "n2", "n3"]),
            "member list on n{}",
            i + 1
        );
    }

    let stop = Arc::new(AtomicBool::new(false));
    let acks = Arc::new(Mutex::new(Vec::new()));
    let urls = cluster.client_urls();
    let tasks: Vec<_> = (0..WRITERS)
        .map(|id| tokio::spawn(writer(id, urls.clone(), stop.clone(), acks.clone())))
        .collect();
    wait_acks(&acks, 100, Duration::from_secs(20), "before the crash").await;

    let leader = find_leader(&cluster, Duration::from_secs(10)).await;
    block_in_place(|| cluster.kill(leader));
    let at_kill = ack_count(&acks);
    eprintln!(
        "killed leader {} after {at_kill} acknowledged writes",
        cluster.node(leader).name
    );

    // Writes resume once a new leader is elected: more than the few that
    // could have been in flight at the crash.
    let took = wait_acks(
        &acks,
        at_kill + 2 * WRITERS + 20,
        ELECTION_BOUND,
        "after the crash",
    )
    .await;
    eprintln!("writes resumed {took:?} after the crash");
    let new_leader = find_leader(&cluster, Duration::from_secs(10)).await;
    assert_ne!(new_leader, leader, "the killed node cannot lead");

    // Keep writing a little under the new leader, then stop.
    let n = ack_count(&acks);
    wait_acks(
        &acks,
        n + 100,
        Duration::from_secs(20),
        "under the new leader",
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("writer task");
    }
    let acks = acks.lock().expect("acks").clone();
    check_unique_revisions(&acks);
    eprintln!("{} writes acknowledged in all", acks.len());

    for i in (0..3).filter(|&i| i != leader) {
        check_node_has(&cluster, i, &acks, "w").await;
    }

    // The crashed node comes back from its own disk and catches up.
    block_in_place(|| cluster.restart(leader));
    check_node_has(&cluster, leader, &acks, "w").await;

    // And the three agree on the whole key space and revision.
    let mut views = Vec::new();
    for i in 0..3 {
        let mut c = connect(&cluster.node(i).client_url()).await;
        let r = c
            .get(
                "",
                Some(GetOptions::new().with_all_keys().with_serializable()),
            )
            .await
            .expect("range all");
        let kvs: Vec<(Vec<u8>, Vec<u8>, i64)> = r
            .kvs()
            .iter()
            .map(|kv| (kv.key().to_vec(), kv.value().to_vec(), kv.mod_revision()))
            .collect();
        views.push((r.header().map(|h| h.revision()), kvs));
    }
    assert!(
        views.windows(2).all(|w| w[0] == w[1]),
        "nodes disagree after catch-up: revisions {:?}, key counts {:?}",
        views.iter().map(|v| v.0).collect::<Vec<_>>(),
        views.iter().map(|v| v.1.len()).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_catches_up_through_snapshot() {
    const KEYS: usize = 300;
    let mut cluster = block_in_place(|| {
        Cluster::start(
            Server::Cairn,
            3,
            &["--snapshot-count=50", "--snapshot-catchup-entries=10"],
        )
    });
    let leader = find_leader(&cluster, Duration::from_secs(10)).await;
    let follower = (leader + 1) % 3;
    block_in_place(|| cluster.kill(follower));

    // Write through the leader while the follower is down: with a snapshot
    // every 50 entries keeping 10, the entries it misses are compacted away.
    let mut c = connect(&cluster.node(leader).client_url()).await;
    let mut acks = Vec::new();
    for i in 0..KEYS {
        let key = format!("s{i:04}");
        let value = format!("snap value {i}");
        let resp = c
            .put(key.clone(), value.clone(), None)
            .await
            .unwrap_or_else(|e| panic!("put {key} through the leader: {e:?}"));
        let revision = resp.header().map(|h| h.revision()).unwrap_or(0);
        acks.push(Ack {
            key,
            value,
            revision,
        });
    }
    check_unique_revisions(&acks);
    let leader_snaps = files_under(&cluster.data_dir(leader).join("snap"));
    assert!(
        !leader_snaps.is_empty(),
        "the leader wrote no snapshot after {KEYS} writes with --snapshot-count=50; data dir: {:?}",
        files_under(&cluster.data_dir(leader))
    );

    block_in_place(|| cluster.restart(follower));
    check_node_has(&cluster, follower, &acks, "s").await;
    let follower_snaps = files_under(&cluster.data_dir(follower).join("snap"));
    assert!(
        !follower_snaps.is_empty(),
        "the follower caught up but holds no snapshot; data dir: {:?}",
        files_under(&cluster.data_dir(follower))
    );

    // It recovers from what it received, after another crash.
    block_in_place(|| cluster.kill(follower));
    block_in_place(|| cluster.restart(follower));
    check_node_has(&cluster, follower, &acks, "s").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_zero_and_restart_keeps_data() {
    let mut cluster = block_in_place(Cluster::single);
    let mut c = connect(&cluster.node(0).client_url()).await;
    c.put("durable", "yes", None).await.expect("put");
    let status = block_in_place(|| cluster.terminate(0));
    assert!(status.success(), "cairn exited with {status} after SIGTERM");

    block_in_place(|| cluster.restart(0));
    let mut c = connect(&cluster.node(0).client_url()).await;
    let r = c.get("durable", None).await.expect("get after restart");
    assert_eq!(r.kvs().first().map(|kv| kv.value()), Some(&b"yes"[..]));
    let rev = r.header().map(|h| h.revision());

    // A crash right after an acknowledged write loses nothing either.
    c.put("crash", "acked", None).await.expect("put");
    block_in_place(|| cluster.kill(0));
    block_in_place(|| cluster.restart(0));
    let mut c = connect(&cluster.node(0).client_url()).await;
    let r = c.get("crash", None).await.expect("get after crash");
    assert_eq!(r.kvs().first().map(|kv| kv.value()), Some(&b"acked"[..]));
    assert_eq!(
        r.header().map(|h| h.revision()),
        rev.map(|r| r + 1),
        "one write after the restart"
    );
}

/// The messages etcd answers a write or a linearizable read with when it has
/// no quorum (all `Unavailable`). "leader changed" is what a read pending on a
/// leader that then stepped down gets.
const NO_QUORUM_MESSAGES: [&str; 4] = [
    "etcdserver: no leader",
    "etcdserver: leader changed",
    "etcdserver: request timed out",
    "etcdserver: request timed out, possibly due to previous leader failure",
];

/// Asserts `result` is a refusal for want of a quorum: the server answered
/// (no client-side timeout) with `Unavailable` and one of etcd's messages.
#[track_caller]
fn assert_no_quorum<T: std::fmt::Debug>(
    server: Server,
    what: &str,
    result: Result<T, etcd_client::Error>,
) {
    match result {
        Err(etcd_client::Error::GRpcStatus(status)) => {
            assert_eq!(
                status.code(),
                tonic::Code::Unavailable,
                "[{server:?}] {what}: {status:?}"
            );
            assert!(
                NO_QUORUM_MESSAGES.contains(&status.message()),
                "[{server:?}] {what}: unexpected message {:?}",
                status.message()
            );
        }
        other => {
            panic!("[{server:?}] {what} without a quorum: expected Unavailable, got {other:?}")
        }
    }
}

/// With two of three nodes down the survivor refuses writes and
/// linearizable reads with etcd's error (it neither hangs nor serves a value
/// it cannot prove current), still answers serializable reads, and takes
/// writes again once a second node is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_loss_refuses_writes_and_linearizable_reads() {
    for server in Server::reference_and_cairn() {
        eprintln!("== running against {server:?}");
        let mut cluster = block_in_place(|| Cluster::start(server, 3, &[]));
        let mut c = connect(&cluster.node(0).client_url()).await;
        c.put("before", "quorum", None).await.expect("put");
        // Let the write reach node 3 too, so it has it for the serializable read.
        let mut c3 = connect(&cluster.node(2).client_url()).await;
        c3.get("before", None)
            .await
            .expect("linearizable read on n3");
        block_in_place(|| {
            cluster.kill(0);
            cluster.kill(1);
        });

        // A client timeout longer than etcd's request timeout (about 7 s with
        // default settings): the server must answer first.
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(1))
            .with_timeout(Duration::from_secs(20));
        let mut c3 = Client::connect([cluster.node(2).client_url()], Some(options))
            .await
            .expect("connect");
        let started = Instant::now();
        // Both at once: each takes the server's full request timeout.
        let mut c3b = c3.clone();
        let (put, get) = tokio::join!(c3.put("during", "no quorum", None), c3b.get("before", None));
        assert_no_quorum(server, "put", put);
        assert_no_quorum(server, "linearizable get", get);
        eprintln!("[{server:?}] refusals took {:?}", started.elapsed());
        let r = c3
            .get("before", Some(GetOptions::new().with_serializable()))
            .await
            .unwrap_or_else(|e| panic!("[{server:?}] serializable get without quorum: {e:?}"));
        assert_eq!(
            r.kvs().first().map(|kv| kv.value()),
            Some(&b"quorum"[..]),
            "[{server:?}]"
        );

        block_in_place(|| cluster.restart(1));
        let deadline = Instant::now() + ELECTION_BOUND;
        loop {
            match c3.put("after", "quorum again", None).await {
                Ok(_) => break,
                Err(e) => assert!(
                    Instant::now() < deadline,
                    "[{server:?}] no write within {ELECTION_BOUND:?} of the quorum's return: {e:?}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Whether "during" appears now is not specified: a timed-out request
        // has an unknown outcome (if n3 led when the others died, the entry
        // sits in its log and may commit once n2 is back), in etcd as here.
        let r = c3.get("before", None).await.expect("linearizable get");
        assert_eq!(r.kvs()[0].value(), b"quorum", "[{server:?}]");
    }
}

/// A leader frozen (SIGSTOP) while the others elect a new one must not serve
/// a stale linearizable read when it wakes up: it either answers with the
/// newer value or refuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_leader_serves_no_stale_reads() {
    for server in Server::reference_and_cairn() {
        eprintln!("== running against {server:?}");
        let mut cluster = block_in_place(|| Cluster::start(server, 3, &[]));
        for round in 0..2 {
            let old = find_leader(&cluster, Duration::from_secs(10)).await;
            let other = (old + 1) % 3;
            let mut c = connect(&cluster.node(other).client_url()).await;
            c.put("k", format!("old {round}"), None).await.expect("put");
            // The old leader has applied it before it freezes.
            let mut cl = connect(&cluster.node(old).client_url()).await;
            let r = cl.get("k", None).await.expect("get on leader");
            assert_eq!(r.kvs()[0].value(), format!("old {round}").as_bytes());

            cluster.pause(old);
            let deadline = Instant::now() + ELECTION_BOUND;
            let new_rev = loop {
                match c.put("k", format!("new {round}"), None).await {
                    Ok(r) => break r.header().map(|h| h.revision()).unwrap_or(0),
                    Err(e) => assert!(
                        Instant::now() < deadline,
                        "[{server:?}] no write within {ELECTION_BOUND:?} of pausing the leader: {e:?}"
                    ),
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            cluster.resume(old);

            // Straight away, before it has heard from anyone.
            let mut cl = connect(&cluster.node(old).client_url()).await;
            match cl.get("k", None).await {
                Ok(r) => {
                    let value = r.kvs().first().map(|kv| kv.value().to_vec());
                    assert_eq!(
                        value.as_deref(),
                        Some(format!("new {round}").as_bytes()),
                        "[{server:?}] round {round}: the woken old leader served a stale \
                         linearizable read (header {:?})",
                        r.header()
                    );
                    let rev = r.header().map(|h| h.revision()).unwrap_or(0);
                    assert!(
                        rev >= new_rev,
                        "[{server:?}] read at {rev} < write at {new_rev}"
                    );
                }
                Err(e) => eprintln!("[{server:?}] round {round}: woken leader refused: {e:?}"),
            }
        }
    }
}

/// History, compaction and the revision counter survive a crash, recovered
/// from a snapshot plus the WAL after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_from_snapshot_keeps_history_and_compaction() {
    let mut cluster = block_in_place(|| {
        Cluster::start(
            Server::Cairn,
            1,
            &["--snapshot-count=10", "--snapshot-catchup-entries=3"],
        )
    });
    let mut c = connect(&cluster.node(0).client_url()).await;
    for i in 2..=36 {
        let r = c.put("k", format!("v{i}"), None).await.expect("put"); // rev i
        assert_eq!(r.header().map(|h| h.revision()), Some(i));
    }
    c.put("other", "x", None).await.expect("put"); // rev 37
    c.compact(20, None).await.expect("compact");
    c.delete("other", None).await.expect("delete"); // rev 38
    assert!(
        !files_under(&cluster.data_dir(0).join("snap")).is_empty(),
        "no snapshot after 37 entries with --snapshot-count=10: {:?}",
        files_under(&cluster.data_dir(0))
    );

    block_in_place(|| {
        cluster.kill(0);
        cluster.restart(0);
    });
    let mut c = connect(&cluster.node(0).client_url()).await;
    let r = c.get("k", None).await.expect("get");
    assert_eq!(
        r.header().map(|h| h.revision()),
        Some(38),
        "revision after recovery"
    );
    let kv = &r.kvs()[0];
    assert_eq!(
        (
            kv.value(),
            kv.create_revision(),
            kv.mod_revision(),
            kv.version()
        ),
        (&b"v36"[..], 2, 36, 35)
    );
    for rev in [20, 27, 35] {
        let r = c
            .get("k", Some(GetOptions::new().with_revision(rev)))
            .await
            .unwrap_or_else(|e| panic!("get at {rev} after recovery: {e:?}"));
        assert_eq!(
            r.kvs()[0].value(),
            format!("v{rev}").as_bytes(),
            "history at {rev}"
        );
    }
    let e = c
        .get("k", Some(GetOptions::new().with_revision(19)))
        .await
        .expect_err("compaction survives recovery");
    match e {
        etcd_client::Error::GRpcStatus(s) => assert_eq!(
            s.message(),
            "etcdserver: mvcc: required revision has been compacted"
        ),
        other => panic!("expected compacted, got {other:?}"),
    }
    let r = c
        .get("other", Some(GetOptions::new().with_revision(37)))
        .await
        .expect("get other at 37");
    assert_eq!(r.kvs()[0].value(), b"x");
    let r = c.get("other", None).await.expect("get other");
    assert_eq!(r.count(), 0, "the delete survives recovery");
    let r = c.put("k", "next", None).await.expect("put");
    assert_eq!(
        r.header().map(|h| h.revision()),
        Some(39),
        "the revision counter goes on"
    );
}

/// etcdctl's `--cluster` forms find every member through MemberList's client
/// URLs and dial each as `http://host:port`: three entries, one leader, and
/// all agree on which.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_cluster_views() {
    for server in Server::reference_and_cairn() {
        eprintln!("== running against {server:?}");
        let cluster = block_in_place(|| Cluster::start(server, 3, &[]));
        // Every node lists every member with its name, peer and client URLs
        // (each member publishes its client URLs to the cluster).
        for i in 0..3 {
            let out = block_in_place(|| cluster.ctl(i, &["member", "list", "-w", "json"]));
            let v: serde_json::Value = serde_json::from_str(out.ok()).expect("member list json");
            let mut listed: Vec<(String, String, String)> = v["members"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|m| {
                    (
                        m["name"].as_str().unwrap_or("").to_string(),
                        m["peerURLs"][0].as_str().unwrap_or("").to_string(),
                        m["clientURLs"][0].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect();
            listed.sort();
            let want: Vec<(String, String, String)> = cluster
                .nodes
                .iter()
                .map(|n| (n.name.clone(), n.peer_url(), n.client_url()))
                .collect();
            assert_eq!(listed, want, "[{server:?}] member list on n{}: {v}", i + 1);
        }
        let (health, status) = block_in_place(|| {
            (
                cluster.ctl(0, &["endpoint", "health", "--cluster"]),
                cluster.ctl(0, &["endpoint", "status", "--cluster", "-w", "json"]),
            )
        });
        assert!(health.success(), "[{server:?}] {health:#?}");
        assert_eq!(
            health.stderr.matches("is healthy").count(),
            3,
            "[{server:?}] {health:#?}"
        );
        assert!(
            status.success(),
            "[{server:?}] endpoint status --cluster: {status:#?}"
        );
        let status: serde_json::Value =
            serde_json::from_str(&status.stdout).expect("endpoint status --cluster -w json");
        let entries = status.as_array().cloned().unwrap_or_default();
        assert_eq!(entries.len(), 3, "[{server:?}] {status}");
        let leaders: BTreeSet<u64> = entries
            .iter()
            .filter_map(|e| e["Status"]["leader"].as_u64())
            .collect();
        assert_eq!(
            leaders.len(),
            1,
            "[{server:?}] members disagree on the leader: {status}"
        );
        let leading = entries
            .iter()
            .filter(|e| e["Status"]["header"]["member_id"].as_u64() == leaders.first().copied())
            .count();
        assert_eq!(
            leading, 1,
            "[{server:?}] exactly one member leads: {status}"
        );
    }
}

/// A write acknowledged by one node is seen by a linearizable read through
/// any other node straight after, with a revision at least the write's; the
/// same through a txn (its compare sees the write too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_visible_through_every_node() {
    for server in Server::reference_and_cairn() {
        eprintln!("== running against {server:?}");
        let cluster = block_in_place(|| Cluster::start(server, 3, &[]));
        let mut clients = Vec::new();
        for i in 0..3 {
            clients.push(
                connect_with_timeout(&cluster.node(i).client_url(), Duration::from_secs(10)).await,
            );
        }
        for round in 0..60usize {
            let (w, r) = (round % 3, (round + 1 + round / 3 % 2) % 3);
            let value = format!("round {round}");
            let put = clients[w]
                .put("rw", value.clone(), None)
                .await
                .unwrap_or_else(|e| panic!("[{server:?}] put via n{}: {e:?}", w + 1));
            let put_rev = put.header().map(|h| h.revision()).unwrap_or(0);
            let got = clients[r]
                .get("rw", None)
                .await
                .unwrap_or_else(|e| panic!("[{server:?}] get via n{}: {e:?}", r + 1));
            assert_eq!(
                got.kvs().first().map(|kv| kv.value()),
                Some(value.as_bytes()),
                "[{server:?}] round {round}: n{} acknowledged a write that a linearizable read \
                 through n{} did not see",
                w + 1,
                r + 1
            );
            assert!(
                got.header().map(|h| h.revision()).unwrap_or(0) >= put_rev,
                "[{server:?}] round {round}"
            );
            let txn = etcd_client::Txn::new()
                .when([etcd_client::Compare::mod_revision(
                    "rw",
                    etcd_client::CompareOp::Equal,
                    put_rev,
                )])
                .and_then([etcd_client::TxnOp::put("rw-seen", value.clone(), None)]);
            let t = clients[(r + 1) % 3]
                .txn(txn)
                .await
                .unwrap_or_else(|e| panic!("[{server:?}] txn: {e:?}"));
            assert!(
                t.succeeded(),
                "[{server:?}] round {round}: a txn through n{} compared against a stale mod revision",
                (r + 1) % 3 + 1
            );
        }
    }
}
