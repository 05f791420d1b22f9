//! Hostile and careless HTTP clients: bodies over `--max-request-bytes`
//! (compared with etcd 3.4), a huge chunked body, a client that never
//! finishes its headers, and 10,000 idle keep-alive connections. After each,
//! the server still serves gRPC and HTTP. (Malformed JSON and wrong types
//! are compared with etcd in tests/http.rs.)
// The tests spawn server processes and read clocks for their deadlines.
#![allow(clippy::disallowed_methods)]

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::json;
use support::cluster::{Cluster, Server};
use support::compat::connect;
use support::http::{b64, Conn};

const WAIT: Duration = Duration::from_secs(15);

/// cairn's HTTP header read timeout (src/server/http/mod.rs).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The server answers gRPC and HTTP on fresh connections.
async fn still_serving(c: &Cluster) {
    let mut client = connect(c).await;
    client.put("alive", "yes", None).await.expect("gRPC put");
    let mut h = Conn::open(&c.endpoint(0), WAIT);
    let r = h.post("/v3/kv/range", &json!({"key": b64("alive")}).to_string());
    assert_eq!(r.json()["kvs"][0]["value"], b64("yes"), "[{:?}]", c.server);
}

/// A put of `n` value bytes, as JSON.
fn put_of(n: usize) -> String {
    let value = "x".repeat(n);
    json!({"key": b64("big"), "value": b64(&value)}).to_string()
}

/// Over `--max-request-bytes` the server refuses with etcd's error; over
/// gRPC's limit too, with the size in the message, as etcd's gateway gets
/// it from its gRPC server.
#[tokio::test(flavor = "multi_thread")]
async fn requests_over_the_size_limits_get_etcds_errors() {
    for server in Server::reference_and_cairn() {
        let c = Cluster::start(server, 1, &[]);
        let mut h = Conn::open(&c.endpoint(0), WAIT);
        let r = h.post("/v3/kv/put", &put_of(1_600_000));
        assert_eq!(r.status, 400, "[{server:?}] {}", r.text());
        assert_eq!(
            r.json(),
            json!({"error": "etcdserver: request is too large", "message": "etcdserver: request is too large", "code": 3})
        );
        let mut h = Conn::open(&c.endpoint(0), WAIT);
        let r = h.post("/v3/kv/put", &put_of(2_200_000));
        assert_eq!(r.status, 429, "[{server:?}] {}", r.text());
        let msg = "grpc: received message larger than max (2200010 vs. 2097152)";
        assert_eq!(
            r.json(),
            json!({"error": msg, "message": msg, "code": 8}),
            "[{server:?}]"
        );
        still_serving(&c).await;
    }
}

/// A chunked body that never ends is cut off at cairn's body limit (twice
/// gRPC's message limit) with 413; the memory it can take is bounded. (etcd
/// reads any body whole.)
#[tokio::test(flavor = "multi_thread")]
async fn a_huge_chunked_body_is_refused_with_413() {
    let c = Cluster::start(Server::Cairn, 1, &[]);
    let tcp = TcpStream::connect(c.endpoint(0)).unwrap();
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    let mut writer = tcp.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let head = "POST /v3/kv/put HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
        if writer.write_all(head.as_bytes()).is_err() {
            return 0;
        }
        let chunk = format!("{:x}\r\n{}\r\n", 64 * 1024, "a".repeat(64 * 1024));
        // Up to 64 MiB; the server stops reading long before.
        let mut sent = 0;
        for _ in 0..1024 {
            if writer.write_all(chunk.as_bytes()).is_err() {
                break;
            }
            sent += 64 * 1024;
        }
        sent
    });
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    let mut reader = tcp;
    while let Ok(n) = reader.read(&mut buf) {
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&buf[..n]);
        if reply.windows(4).any(|w| w == b"\r\n\r\n") && reply.ends_with(b"}") {
            break;
        }
    }
    let sent = sender.join().unwrap();
    let text = String::from_utf8_lossy(&reply);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains(r#""code":8"#), "{text}");
    assert!(sent < 64 * 1024 * 1024, "the server read the whole 64 MiB");
    still_serving(&c).await;
}

/// A client that sends half a request's headers and stops holds nothing
/// up, and its connection is closed after the header read timeout. (etcd
/// keeps such a connection for ever.)
#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_never_finishes_its_headers_is_closed() {
    let c = Cluster::start(Server::Cairn, 1, &[]);
    let mut slow = Conn::open(&c.endpoint(0), HEADER_READ_TIMEOUT + WAIT);
    slow.send_raw(b"POST /v3/kv/range HTTP/1.1\r\nHost: x\r\nContent-Le");
    let mut silent = Conn::open(&c.endpoint(0), HEADER_READ_TIMEOUT + WAIT);
    let start = Instant::now();
    still_serving(&c).await;
    assert!(
        slow.closed_by_server(),
        "the slow client's connection is closed"
    );
    assert!(
        silent.closed_by_server(),
        "the silent client's connection is closed"
    );
    let waited = start.elapsed();
    assert!(
        waited >= HEADER_READ_TIMEOUT - Duration::from_secs(2)
            && waited < HEADER_READ_TIMEOUT + Duration::from_secs(10),
        "closed after {waited:?}"
    );
    still_serving(&c).await;
}

/// 10,000 keep-alive connections, each having made one request and then
/// gone idle: the server goes on serving new ones over gRPC and HTTP, and
/// the idle ones still answer. (cairn closes a connection idle for the
/// header read timeout; on a loaded machine opening 10,000 can take longer
/// than that, so what is checked is the connections idle for less.)
#[tokio::test(flavor = "multi_thread")]
async fn ten_thousand_idle_connections() {
    let c = Cluster::start(Server::Cairn, 1, &[]);
    let start = Instant::now();
    let mut idle: Vec<(Conn, Instant)> = (0..10_000)
        .map(|_| {
            let mut h = Conn::open(&c.endpoint(0), WAIT);
            assert_eq!(h.get("/health").status, 200);
            (h, Instant::now())
        })
        .collect();
    eprintln!(
        "10,000 connections opened and answered in {:?}",
        start.elapsed()
    );
    still_serving(&c).await;
    let metrics = Conn::open(&c.endpoint(0), WAIT).get("/metrics").text();
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0)
    };
    let recent = HEADER_READ_TIMEOUT - Duration::from_secs(5);
    let fresh = idle.iter().filter(|(_, t)| t.elapsed() < recent).count();
    eprintln!(
        "with 10,000 connections made ({fresh} idle for under {recent:?}): resident {} bytes, {} fds",
        value("process_resident_memory_bytes"),
        value("process_open_fds")
    );
    assert!(
        fresh > 1000,
        "too slow to test: only {fresh} connections are fresh"
    );
    assert!(
        value("process_open_fds") >= fresh as f64,
        "the idle connections are open"
    );
    for (h, _) in idle.iter_mut().rev().take(fresh / 2).step_by(50) {
        assert_eq!(
            h.get("/health").status,
            200,
            "an idle connection still answers"
        );
    }
}
