//! Helpers shared by the differential watch and lease tests (`tests/watch.rs`,
//! `tests/lease.rs`): run a script against etcd and then cairn, run etcdctl
//! and compare its output exactly, connect etcd-client.
#![allow(dead_code)]
// Clocks for the deadlines.
#![allow(clippy::disallowed_methods)]

use std::future::Future;
use std::time::Duration;

use etcd_client::{Client, Error, WatchResponse, WatchStream};

use super::cluster::{Cluster, Server};

/// Runs `script` against a fresh single node of each server (etcd first),
/// started with `extra` flags.
pub fn on_each_server_with(extra: &[&str], script: impl Fn(&Cluster)) {
    for server in Server::reference_and_cairn() {
        eprintln!("== running against {server:?}");
        let cluster = Cluster::start(server, 1, extra);
        script(&cluster);
    }
}

/// Runs `script` against a fresh single node of each server (etcd first).
pub fn on_each_server(script: impl Fn(&Cluster)) {
    on_each_server_with(&[], script)
}

/// Runs `script` against a fresh single node of each server (etcd first),
/// with a client connected to it, the node started with `extra` flags.
pub async fn on_each_server_client_with<F, Fut>(extra: &[&str], script: F)
where
    F: Fn(Server, Client) -> Fut,
    Fut: Future<Output = ()>,
{
    for server in Server::reference_and_cairn() {
        eprintln!("== running against {server:?}");
        let cluster = Cluster::start(server, 1, extra);
        let client = connect(&cluster).await;
        script(server, client).await;
        drop(cluster);
    }
}

/// [`on_each_server_client_with`] without extra flags.
pub async fn on_each_server_client<F, Fut>(script: F)
where
    F: Fn(Server, Client) -> Fut,
    Fut: Future<Output = ()>,
{
    on_each_server_client_with(&[], script).await
}

pub async fn connect(cluster: &Cluster) -> Client {
    let options = etcd_client::ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(5))
        .with_timeout(Duration::from_secs(10));
    Client::connect(cluster.client_urls(), Some(options))
        .await
        .expect("connect etcd-client")
}

/// The next message on a watch stream, failing the test after `timeout`.
pub async fn next_watch_response(
    s: Server,
    stream: &mut WatchStream,
    timeout: Duration,
) -> WatchResponse {
    match tokio::time::timeout(timeout, stream.message()).await {
        Ok(Ok(Some(r))) => r,
        Ok(Ok(None)) => panic!("[{s:?}] the watch stream ended"),
        Ok(Err(e)) => panic!("[{s:?}] watch stream error: {e:?}"),
        Err(_) => panic!("[{s:?}] no watch response within {timeout:?}"),
    }
}

/// Polls every running node's Maintenance.Status until one of them reports
/// itself leader; returns its index. Each probe gives up after 3 s, so a
/// member that hangs does not hold the search up.
pub async fn find_leader(cluster: &Cluster, timeout: Duration) -> usize {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        for (i, node) in cluster.nodes.iter().enumerate() {
            if !node.is_running() {
                continue;
            }
            let options = etcd_client::ConnectOptions::new()
                .with_connect_timeout(Duration::from_secs(1))
                .with_timeout(Duration::from_secs(3));
            let mut c = Client::connect([node.client_url()], Some(options))
                .await
                .expect("connect etcd-client");
            if let Ok(st) = c.status().await {
                let me = st.header().map(|h| h.member_id()).unwrap_or(0);
                if me != 0 && st.leader() == me {
                    return i;
                }
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "[{:?}] no running node reported itself leader within {timeout:?}",
            cluster.server
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The gRPC status inside a client error.
#[track_caller]
pub fn grpc_status(server: Server, e: Error) -> tonic::Status {
    match e {
        Error::GRpcStatus(status) => status,
        other => panic!("[{server:?}] expected a gRPC status, got {other:?}"),
    }
}

pub fn rev(header: Option<&etcd_client::ResponseHeader>) -> i64 {
    header.expect("response header").revision()
}

/// Runs etcdctl on node 0 and asserts it exits 0 with exactly `want` on stdout.
#[track_caller]
pub fn expect(c: &Cluster, args: &[&str], want: &str) {
    let out = c.ctl(0, args);
    assert!(
        out.success(),
        "[{:?}] etcdctl {args:?} failed: {out:#?}",
        c.server
    );
    assert_eq!(
        out.stdout, want,
        "[{:?}] stdout of etcdctl {args:?} (stderr: {})",
        c.server, out.stderr
    );
}

/// Runs etcdctl on node 0 and asserts it fails with exactly `want` as its
/// `Error:` line.
#[track_caller]
pub fn expect_error(c: &Cluster, args: &[&str], want: &str) {
    let out = c.ctl(0, args);
    assert!(
        !out.success(),
        "[{:?}] etcdctl {args:?} should fail: {out:#?}",
        c.server
    );
    assert_eq!(out.error_line(), want, "[{:?}] etcdctl {args:?}", c.server);
}

/// Runs etcdctl with `-w json` on node 0 and parses stdout.
#[track_caller]
pub fn json(c: &Cluster, args: &[&str]) -> serde_json::Value {
    let mut all = args.to_vec();
    all.extend(["-w", "json"]);
    let out = c.ctl(0, &all);
    let stdout = out.ok();
    serde_json::from_str(stdout)
        .unwrap_or_else(|e| panic!("[{:?}] etcdctl {all:?}: bad JSON {e}: {stdout}", c.server))
}

/// `header.revision` of a `get -w json`.
#[track_caller]
pub fn revision(c: &Cluster) -> i64 {
    json(c, &["get", "harness-revision-probe"])["header"]["revision"]
        .as_i64()
        .unwrap_or_else(|| panic!("[{:?}] no header.revision", c.server))
}
