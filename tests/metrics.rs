//! `/metrics` against a real etcd 3.4 first and then cairn: each scrape is
//! parsed by a Prometheus text-format parser (`prometheus-parse`), and the
//! metrics etcd's dashboards and alerts use must exist on both with the same
//! type, label names and histogram buckets, and values that mean the same.
//! Also: an HTTP watch whose client closes its socket is freed at once,
//! seen in `etcd_debugging_mvcc_watcher_total`.
// The tests spawn server processes and read clocks for their deadlines.
#![allow(clippy::disallowed_methods)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use prometheus_parse::{Scrape, Value};
use support::cluster::{free_port, Cluster, Server};
use support::compat::connect;
use support::http::{b64, Conn};

const WAIT: Duration = Duration::from_secs(15);

/// The metrics the etcd-mixin and etcd's dashboard read, which cairn serves.
const METRICS: &[&str] = &[
    "etcd_server_has_leader",
    "etcd_server_is_leader",
    "etcd_server_leader_changes_seen_total",
    "etcd_server_proposals_committed_total",
    "etcd_server_proposals_applied_total",
    "etcd_server_proposals_pending",
    "etcd_server_proposals_failed_total",
    "etcd_server_id",
    "etcd_server_version",
    "etcd_cluster_version",
    "etcd_disk_wal_fsync_duration_seconds",
    "etcd_mvcc_db_total_size_in_bytes",
    "etcd_mvcc_db_total_size_in_use_in_bytes",
    "etcd_server_quota_backend_bytes",
    "etcd_debugging_mvcc_keys_total",
    "etcd_debugging_mvcc_watcher_total",
    "etcd_mvcc_put_total",
    "etcd_mvcc_range_total",
    "etcd_mvcc_txn_total",
    "grpc_server_started_total",
    "grpc_server_handled_total",
    "process_resident_memory_bytes",
    "process_cpu_seconds_total",
    "process_open_fds",
];

fn scrape(addr: &str) -> Scrape {
    let r = Conn::open(addr, WAIT).get("/metrics");
    assert_eq!(r.status, 200, "{addr}/metrics");
    assert!(
        r.header("content-type")
            .is_some_and(|t| t.starts_with("text/plain; version=0.0.4")),
        "{:?}",
        r.headers
    );
    Scrape::parse(r.text().lines().map(|l| Ok(l.to_string()))).expect("a Prometheus text scrape")
}

/// What must match between the servers for one metric: its type, its label
/// names, and a histogram's bucket bounds.
fn shape(s: &Scrape, name: &str) -> (String, BTreeSet<String>, Vec<String>) {
    let samples: Vec<_> = s.samples.iter().filter(|x| x.metric == name).collect();
    assert!(!samples.is_empty(), "no {name} in the scrape");
    let kind = match &samples[0].value {
        Value::Counter(_) => "counter",
        Value::Gauge(_) => "gauge",
        Value::Histogram(_) => "histogram",
        Value::Summary(_) => "summary",
        Value::Untyped(_) => "untyped",
    };
    let labels = samples
        .iter()
        .flat_map(|x| x.labels.keys().cloned())
        .collect();
    let buckets = match &samples[0].value {
        Value::Histogram(b) => b.iter().map(|b| b.less_than.to_string()).collect(),
        _ => Vec::new(),
    };
    (kind.to_string(), labels, buckets)
}

/// The value of `name` with `labels` (all of them given).
fn value(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let sample = s
        .samples
        .iter()
        .find(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(v)))
        .unwrap_or_else(|| panic!("no {name}{labels:?}"));
    match &sample.value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
        Value::Histogram(b) => b.last().map_or(0.0, |b| b.count),
        Value::Summary(_) => panic!("{name} is a summary"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_scrape_has_etcds_metrics() {
    let mut shapes = Vec::new();
    for server in Server::reference_and_cairn() {
        let port = free_port();
        let flag = format!("--listen-metrics-urls=http://127.0.0.1:{port}");
        let c = Cluster::start(server, 1, &[&flag]);
        let mut client = connect(&c).await;
        client.put("k", "v", None).await.expect("put");
        client.get("k", None).await.expect("get");
        let status = client.status().await.expect("status");
        let member = status.header().expect("header").member_id();
        let s = scrape(&format!("127.0.0.1:{port}"));
        // The client port serves the same metrics.
        let on_client = scrape(&c.endpoint(0));
        assert!(on_client
            .samples
            .iter()
            .any(|x| x.metric == "etcd_server_has_leader"));
        let got: BTreeMap<&str, _> = METRICS.iter().map(|m| (*m, shape(&s, m))).collect();
        assert_eq!(
            value(&s, "etcd_server_has_leader", &[]),
            1.0,
            "[{server:?}]"
        );
        assert_eq!(value(&s, "etcd_server_is_leader", &[]), 1.0, "[{server:?}]");
        assert!(value(&s, "etcd_server_leader_changes_seen_total", &[]) >= 1.0);
        assert!(value(&s, "etcd_mvcc_put_total", &[]) >= 1.0, "[{server:?}]");
        assert!(value(&s, "etcd_disk_wal_fsync_duration_seconds", &[]) >= 1.0);
        assert!(value(&s, "etcd_server_proposals_applied_total", &[]) >= 2.0);
        assert_eq!(
            value(&s, "etcd_debugging_mvcc_keys_total", &[]),
            1.0,
            "[{server:?}]"
        );
        let id = format!("{member:x}");
        assert_eq!(
            value(&s, "etcd_server_id", &[("server_id", &id)]),
            1.0,
            "[{server:?}]"
        );
        let put = [
            ("grpc_method", "Put"),
            ("grpc_code", "OK"),
            ("grpc_type", "unary"),
        ];
        assert!(
            value(&s, "grpc_server_handled_total", &put) >= 1.0,
            "[{server:?}]"
        );
        let unavailable = [("grpc_method", "Put"), ("grpc_code", "Unavailable")];
        assert_eq!(
            value(&s, "grpc_server_handled_total", &unavailable),
            0.0,
            "[{server:?}]"
        );
        assert!(value(&s, "process_resident_memory_bytes", &[]) > 0.0);
        shapes.push((server, got));
    }
    if let [(_, etcd), (_, cairn)] = &shapes[..] {
        for name in METRICS {
            assert_eq!(
                etcd[name], cairn[name],
                "{name}: etcd (left), cairn (right)"
            );
        }
    }
}

/// Raft traffic between two members shows in both directions, labelled by
/// the peer's member ID in hex, with etcd's type and label names.
#[test]
fn peer_traffic_is_counted_by_peer() {
    let mut shapes = Vec::new();
    for server in Server::reference_and_cairn() {
        let c = Cluster::start(server, 2, &[]);
        let mut h = Conn::open(&c.endpoint(0), WAIT);
        h.post(
            "/v3/kv/put",
            &format!(r#"{{"key":"{}","value":"{}"}}"#, b64("k"), b64("v")),
        );
        let members = h.post("/v3/cluster/member/list", "{}").json();
        let me = members["header"]["member_id"].as_str().unwrap().to_string();
        let peer: u64 = members["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["ID"].as_str().unwrap())
            .find(|id| *id != me)
            .unwrap()
            .parse()
            .unwrap();
        let s = scrape(&c.endpoint(0));
        let hex = format!("{peer:x}");
        let sent = value(&s, "etcd_network_peer_sent_bytes_total", &[("To", &hex)]);
        let received = value(
            &s,
            "etcd_network_peer_received_bytes_total",
            &[("From", &hex)],
        );
        assert!(
            sent > 0.0 && received > 0.0,
            "[{server:?}] sent {sent}, received {received}"
        );
        shapes.push((
            shape(&s, "etcd_network_peer_sent_bytes_total"),
            shape(&s, "etcd_network_peer_received_bytes_total"),
        ));
    }
    if let [etcd, cairn] = &shapes[..] {
        assert_eq!(etcd, cairn, "etcd (left), cairn (right)");
    }
}

/// Polls `etcd_debugging_mvcc_watcher_total` until it is `want`.
fn wait_watchers(c: &Cluster, want: f64, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let got = value(
            &scrape(&c.endpoint(0)),
            "etcd_debugging_mvcc_watcher_total",
            &[],
        );
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "[{:?}] {got} watchers, want {want}",
            c.server
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_http_watch_is_freed_when_its_client_closes() {
    for server in Server::reference_and_cairn() {
        let c = Cluster::start(server, 1, &[]);
        wait_watchers(&c, 0.0, WAIT);
        let mut h = Conn::open(&c.endpoint(0), WAIT);
        let create = format!(r#"{{"create_request":{{"key":"{}"}}}}"#, b64("w"));
        h.send("POST", "/v3/watch", create.as_bytes());
        h.read_head();
        let created = h.read_chunk().expect("created");
        assert!(String::from_utf8_lossy(&created).contains("\"created\":true"));
        wait_watchers(&c, 1.0, WAIT);
        drop(h);
        // "At once": well within a second.
        wait_watchers(&c, 0.0, Duration::from_secs(1));
    }
}
