//! SIGTERM in a three-member cluster, each case run against etcd 3.4 first and
//! then cairn: a member exits promptly (within [`STOP_BOUND`]) and cleanly
//! (status 0), idle or under write load, leader or follower, with an open
//! watch stream, and with its peers down; a stopping leader hands leadership
//! to a peer so writes resume without waiting for an election timeout; and no
//! write acknowledged before the stop is lost.
// The tests spawn server processes, run writer tasks and measure elapsed time
// for their deadlines: all things the crate's clippy.toml keeps out of the
// sans-IO core.
#![allow(clippy::disallowed_methods)]

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{Client, ConnectOptions};
use support::cluster::{Cluster, Server};
use support::compat::find_leader;
use tokio::task::block_in_place;

/// How long a member may take from SIGTERM to exit. etcd's own graceful stop
/// (client drain, leadership transfer) takes about a second here.
const STOP_BOUND: Duration = Duration::from_secs(4);
/// How long writes may stall after a leader was stopped. With a hand-over it
/// is a round trip; without one it would be an election timeout or more.
const HANDOVER_BOUND: Duration = Duration::from_secs(3);

async fn connect(urls: Vec<String>) -> Client {
    let options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(1))
        .with_timeout(Duration::from_secs(3));
    Client::connect(urls, Some(options)).await.expect("connect")
}

/// SIGTERMs node `i`, asserting it exits with status 0 within [`STOP_BOUND`].
fn terminate_promptly(cluster: &mut Cluster, i: usize, case: &str) -> Duration {
    let start = Instant::now();
    let status = cluster.terminate(i);
    let took = start.elapsed();
    // etcd re-raises the signal once it has stopped (it dies of SIGTERM);
    // cairn exits 0. Both are clean stops to systemd.
    use std::os::unix::process::ExitStatusExt;
    let clean = match cluster.server {
        Server::Etcd => status.success() || status.signal() == Some(libc::SIGTERM),
        Server::Cairn => status.success(),
    };
    assert!(
        clean,
        "[{:?}] {case}: exited with {status} after SIGTERM\n{}",
        cluster.server,
        cluster.node(i).log_tail()
    );
    assert!(
        took <= STOP_BOUND,
        "[{:?}] {case}: took {took:?} to exit after SIGTERM (bound {STOP_BOUND:?})\n{}",
        cluster.server,
        cluster.node(i).log_tail()
    );
    eprintln!("[{:?}] {case}: exited in {took:?}", cluster.server);
    took
}

/// Client URLs of the nodes other than `i`.
fn others(cluster: &Cluster, i: usize) -> Vec<String> {
    (0..cluster.nodes.len())
        .filter(|&j| j != i)
        .map(|j| cluster.node(j).client_url())
        .collect()
}

/// Writers that put `w{n}-{seq}` keys through every member until stopped,
/// recording the keys the cluster acknowledged.
struct Load {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(cluster: &Cluster) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let tasks = (0..cluster.nodes.len())
            .map(|n| {
                let (stop, acked) = (stop.clone(), acked.clone());
                let url = cluster.node(n).client_url();
                tokio::spawn(async move {
                    let mut c = connect(vec![url]).await;
                    for seq in 0u64.. {
                        if stop.load(Ordering::Relaxed) {
                            return;
                        }
                        let key = format!("w{n}-{seq}");
                        // A failed or ambiguous put is not acknowledged: only
                        // acknowledged writes are checked afterwards.
                        if c.put(key.as_str(), "v", None).await.is_ok() {
                            acked.lock().unwrap().push(key);
                        } else {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                })
            })
            .collect();
        Load { stop, acked, tasks }
    }

    /// Stops the writers and returns the acknowledged keys.
    async fn finish(self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
        let acked = self.acked.lock().unwrap().clone();
        acked
    }
}

/// Every key in `acked` is readable through `urls`.
async fn assert_all_present(server: Server, urls: Vec<String>, acked: &[String]) {
    assert!(!acked.is_empty(), "[{server:?}] no write was acknowledged");
    let mut c = connect(urls).await;
    let got = c
        .get(
            "w",
            Some(
                etcd_client::GetOptions::new()
                    .with_prefix()
                    .with_keys_only(),
            ),
        )
        .await
        .expect("list after the stop");
    let keys: std::collections::BTreeSet<&[u8]> = got.kvs().iter().map(|kv| kv.key()).collect();
    let lost: Vec<&String> = acked
        .iter()
        .filter(|k| !keys.contains(k.as_bytes()))
        .collect();
    assert!(
        lost.is_empty(),
        "[{server:?}] {} of {} acknowledged writes lost, e.g. {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(5)]
    );
}

/// A put through `urls` succeeds within `bound` of now; returns how long it took.
async fn writes_resume(server: Server, urls: Vec<String>, bound: Duration) -> Duration {
    let start = Instant::now();
    let mut c = connect(urls).await;
    loop {
        if c.put("after-stop", "v", None).await.is_ok() {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < bound,
            "[{server:?}] no write succeeded within {bound:?} of the stop"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_leader_hands_over_and_exits() {
    for server in Server::reference_and_cairn() {
        let mut cluster = block_in_place(|| Cluster::start(server, 3, &[]));
        let leader = find_leader(&cluster, Duration::from_secs(10)).await;
        block_in_place(|| terminate_promptly(&mut cluster, leader, "idle leader"));
        let took = writes_resume(server, others(&cluster, leader), HANDOVER_BOUND).await;
        eprintln!("[{server:?}] writes resumed {took:?} after the leader exited");
        // The stopped member comes back and catches up.
        block_in_place(|| cluster.restart(leader));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_and_follower_under_load_exit_and_lose_nothing() {
    for server in Server::reference_and_cairn() {
        let mut cluster = block_in_place(|| Cluster::start(server, 3, &[]));
        let leader = find_leader(&cluster, Duration::from_secs(10)).await;
        let follower = (leader + 1) % 3;
        let load = Load::start(&cluster);
        tokio::time::sleep(Duration::from_millis(500)).await;
        block_in_place(|| terminate_promptly(&mut cluster, follower, "follower under load"));
        tokio::time::sleep(Duration::from_millis(300)).await;
        block_in_place(|| terminate_promptly(&mut cluster, leader, "leader under load"));
        let acked = load.finish().await;
        block_in_place(|| cluster.restart(follower));
        block_in_place(|| cluster.restart(leader));
        for i in 0..3 {
            assert_all_present(server, vec![cluster.node(i).client_url()], &acked).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_with_an_open_watch_exits() {
    for server in Server::reference_and_cairn() {
        let mut cluster = block_in_place(|| Cluster::start(server, 3, &[]));
        let mut c = connect(vec![cluster.node(1).client_url()]).await;
        let mut stream = c.watch("k", None).await.expect("watch");
        let created = stream.message().await.expect("watch created");
        assert!(created.is_some_and(|r| r.created()));
        block_in_place(|| terminate_promptly(&mut cluster, 1, "member with a watch"));
        // The watcher sees its stream end (or fail), not a stream kept open.
        let ended = tokio::time::timeout(Duration::from_secs(5), stream.message()).await;
        assert!(
            matches!(ended, Ok(Ok(None)) | Ok(Err(_))),
            "[{server:?}] the watch stream stayed open after its member exited: {ended:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_whose_peers_are_down_exits() {
    for server in Server::reference_and_cairn() {
        let mut cluster = block_in_place(|| Cluster::start(server, 3, &[]));
        let leader = find_leader(&cluster, Duration::from_secs(10)).await;
        // Kill both followers: the leader is left alone, at first still
        // believing it leads.
        for i in (0..3).filter(|&i| i != leader) {
            block_in_place(|| cluster.kill(i));
        }
        block_in_place(|| terminate_promptly(&mut cluster, leader, "leader with peers down"));
        // And a lone follower: restart one member alone, then stop it.
        let lone = (leader + 1) % 3;
        block_in_place(|| cluster.spawn_again(lone));
        tokio::time::sleep(Duration::from_secs(2)).await;
        block_in_place(|| terminate_promptly(&mut cluster, lone, "member with no quorum"));
    }
}
