//! etcd's operational flags, each case run against etcd 3.4 first and then
//! cairn: `--log-outputs` (zap's JSON lines in a file), gRPC
//! `--max-concurrent-streams` and `--grpc-keepalive-*` seen from a client,
//! `--max-snapshots` seen in the data dir; and cairn's `--unsafe-no-fsync`
//! and `--log-format` (etcd 3.4 has neither).
// The tests spawn server processes, read their logs and time them.
#![allow(clippy::disallowed_methods)]

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use support::cluster::{files_under, Cluster, Server};
use support::compat::connect;

/// The first line of `path` as JSON, waiting for it to be written.
fn first_json_line(path: &Path) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if let Some(line) = text.lines().next() {
            return serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{}: not a JSON line ({e}): {line}", path.display()));
        }
        assert!(Instant::now() < deadline, "{} stays empty", path.display());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn log_outputs_writes_zaps_json_lines_to_a_file() {
    for server in Server::reference_and_cairn() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("member.log");
        let outputs = format!("--log-outputs={}", path.display());
        let cluster = Cluster::start(server, 1, &["--logger=zap", &outputs]);
        cluster.ctl(0, &["put", "k", "v"]).ok();
        let first = first_json_line(&path);
        for field in ["level", "ts", "caller", "msg"] {
            assert!(
                first[field].is_string(),
                "[{server:?}] no {field:?}: {first}"
            );
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for line in text.lines() {
            serde_json::from_str::<serde_json::Value>(line)
                .unwrap_or_else(|e| panic!("[{server:?}] not JSON ({e}): {line}"));
        }
        if server == Server::Cairn {
            assert!(text.contains("\"msg\":\"starting cairn\""), "{text}");
        }
    }
}

#[test]
fn log_format_console_writes_plain_text_even_to_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("member.log");
    let outputs = format!("--log-outputs={}", path.display());
    let _cluster = Cluster::start(Server::Cairn, 1, &["--log-format=console", &outputs]);
    let text = std::fs::read_to_string(&path).unwrap();
    let start = text
        .lines()
        .find(|l| l.contains("starting cairn"))
        .unwrap_or_else(|| panic!("no start line:\n{text}"));
    assert!(!start.starts_with('{'), "{start}");
    assert!(start.contains("INFO"), "{start}");
}

#[test]
fn unsafe_no_fsync_serves_and_says_so_loudly() {
    let cluster = Cluster::start(Server::Cairn, 1, &["--unsafe-no-fsync"]);
    cluster.ctl(0, &["put", "k", "v"]).ok();
    assert_eq!(
        cluster
            .ctl(0, &["get", "k", "--print-value-only"])
            .ok()
            .trim(),
        "v"
    );
    let log = std::fs::read_to_string(cluster.node(0).log_path()).unwrap();
    assert!(log.contains("OFF (--unsafe-no-fsync)"), "{log}");
    let warning = log
        .lines()
        .find(|l| l.contains("can lose acknowledged"))
        .unwrap_or_else(|| panic!("no warning:\n{log}"));
    assert!(warning.contains("\"level\":\"warn\""), "{warning}");
}

/// With one stream allowed per connection, a client's second request waits
/// while a watch holds the only stream, and goes through once it closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_concurrent_streams_holds_back_streams_past_the_limit() {
    for server in Server::reference_and_cairn() {
        for (flags, limited) in [(vec!["--max-concurrent-streams=1"], true), (vec![], false)] {
            let cluster = tokio::task::block_in_place(|| Cluster::start(server, 1, &flags));
            let mut client = connect(&cluster).await;
            let watch = client.watch("w", None).await.expect("watch");
            let get = tokio::time::timeout(Duration::from_secs(2), client.get("k", None)).await;
            assert_eq!(get.is_err(), limited, "[{server:?}] {flags:?}: {get:?}");
            drop(watch);
            let get = tokio::time::timeout(Duration::from_secs(10), client.get("k", None)).await;
            assert!(
                matches!(get, Ok(Ok(_))),
                "[{server:?}] {flags:?} after the watch closed: {get:?}"
            );
        }
    }
}

/// An HTTP/2 client that opens a connection and then never answers: with
/// `--grpc-keepalive-interval=1s --grpc-keepalive-timeout=1s` the server
/// pings it and closes the connection; with etcd's defaults it stays open.
#[test]
fn grpc_keepalive_closes_connections_that_do_not_answer_pings() {
    for server in Server::reference_and_cairn() {
        let cases = [
            (
                vec![
                    "--grpc-keepalive-interval=1s",
                    "--grpc-keepalive-timeout=1s",
                ],
                true,
            ),
            (vec![], false),
        ];
        for (flags, closes) in cases {
            let cluster = Cluster::start(server, 1, &flags);
            let addr = cluster.node(0).endpoint();
            let (closed, pinged) = silent_http2_client(&addr, Duration::from_secs(6));
            assert_eq!(closed, closes, "[{server:?}] {flags:?}: connection closed");
            if closes {
                assert!(pinged, "[{server:?}] closed without a PING first");
            }
        }
    }
}

/// Connects to `addr`, sends the HTTP/2 preface and an empty SETTINGS frame,
/// then only reads for `watch`: whether the server closed the connection,
/// and whether it sent a PING (frame type 6) first.
fn silent_http2_client(addr: &str, watch: Duration) -> (bool, bool) {
    let mut conn = TcpStream::connect(addr).expect("connect");
    conn.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
    conn.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).unwrap();
    conn.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let (mut bytes, mut buf) = (Vec::new(), [0u8; 4096]);
    let deadline = Instant::now() + watch;
    let closed = loop {
        if Instant::now() > deadline {
            break false;
        }
        match conn.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break true,
        }
    };
    (closed, frame_types(&bytes).contains(&6))
}

/// The types of the whole frames in `bytes`.
fn frame_types(mut bytes: &[u8]) -> Vec<u8> {
    let mut types = Vec::new();
    while bytes.len() >= 9 {
        let len = u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]) as usize;
        types.push(bytes[3]);
        bytes = &bytes[(9 + len).min(bytes.len())..];
    }
    types
}

/// Snapshot files a member keeps: etcd's `member/snap/*.snap`, cairn's
/// `snap/*.snap`.
fn snap_files(cluster: &Cluster) -> usize {
    files_under(&cluster.data_dir(0))
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "snap"))
        .count()
}

/// `--snapshot-count=20 --max-snapshots=3`: after many snapshots the member
/// keeps three files (etcd purges every 30 s, so this waits for it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_snapshots_bounds_the_snapshot_files_kept() {
    for server in Server::reference_and_cairn() {
        let flags = ["--snapshot-count=20", "--max-snapshots=3"];
        let cluster = tokio::task::block_in_place(|| Cluster::start(server, 1, &flags));
        let mut client = connect(&cluster).await;
        for i in 0..300 {
            client.put(format!("k{i}"), "v", None).await.expect("put");
        }
        let deadline = Instant::now() + Duration::from_secs(45);
        let mut seen = snap_files(&cluster);
        while seen != 3 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(500)).await;
            seen = snap_files(&cluster);
        }
        assert_eq!(seen, 3, "[{server:?}] snapshot files kept");
    }
}
