//! The process's Prometheus metrics, with etcd's names, types, labels and
//! buckets, so etcd's Grafana dashboard and the etcd-mixin alerts work on
//! cairn unchanged. `/metrics` (src/server/http/) renders [`gather`].
//!
//! # What is measured where
//!
//! - Raft and store state (`etcd_server_has_leader`, `is_leader`,
//!   `leader_changes_seen_total`, `proposals_committed_total` and
//!   `proposals_applied_total` (gauges in etcd too, holding the indexes),
//!   `etcd_mvcc_db_total_size*`): sampled from `Maintenance.Status`'s source,
//!   the loop's `Command::Status`, by the driver's sampler once per
//!   heartbeat and at every scrape ([`observe_status`]). A leader change
//!   shorter than a heartbeat is missed.
//! - Watchers and keys (`etcd_debugging_mvcc_watcher_total`,
//!   `etcd_debugging_mvcc_keys_total`): set by the event loop whenever it
//!   answers a status command ([`observe_loop`]).
//! - WAL fsyncs (`etcd_disk_wal_fsync_duration_seconds`): timed around the
//!   loop's one `Wal::sync` call ([`time_wal_fsync`]).
//! - Peer traffic (`etcd_network_peer_{sent,received}_bytes_total`, by `To`
//!   and `From` member ID in hex): the encoded raft messages the peer
//!   transport hands to a peer's stream and receives from one
//!   ([`peer_sent`], [`peer_received`]), gRPC framing not counted.
//! - Requests (`grpc_server_started_total`, `grpc_server_handled_total`,
//!   `etcd_mvcc_{put,range,txn}_total`, `etcd_server_proposals_pending` and
//!   `_failed_total`): counted per RPC by the client server's layer and the
//!   JSON gateway ([`rpc_started`], [`RpcGuard`]). etcd's gateway reaches its
//!   own gRPC server, so it counts gateway calls there too; cairn does the
//!   same. `etcd_mvcc_*_total` count RPCs (etcd counts the ops inside a txn
//!   as well), and proposals pending/failed are the write RPCs in flight and
//!   those that failed for want of a leader or in time.
//! - `process_*`: the prometheus crate's Linux process collector.
//!
//! # Cost
//!
//! Every per-request counter is resolved once, when the registry is built:
//! a request costs a `match` on its path and two or three relaxed atomic
//! adds, no lock, no hash and no allocation. The registry is process-wide
//! (as etcd's is): a process that runs several members (the simulator)
//! counts them together.

use prometheus::{
    exponential_buckets, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
};
use std::sync::OnceLock;
use std::time::Instant;

/// A gRPC method cairn serves: its service, name and streaming kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Method {
    pub service: &'static str,
    pub name: &'static str,
    /// go-grpc-prometheus's `grpc_type`.
    pub kind: &'static str,
}

const fn m(service: &'static str, name: &'static str, kind: &'static str) -> Method {
    Method {
        service,
        name,
        kind,
    }
}

/// Every method of every client service cairn registers.
pub const METHODS: &[Method] = &[
    m("etcdserverpb.KV", "Range", "unary"),
    m("etcdserverpb.KV", "Put", "unary"),
    m("etcdserverpb.KV", "DeleteRange", "unary"),
    m("etcdserverpb.KV", "Txn", "unary"),
    m("etcdserverpb.KV", "Compact", "unary"),
    m("etcdserverpb.Watch", "Watch", "bidi_stream"),
    m("etcdserverpb.Lease", "LeaseGrant", "unary"),
    m("etcdserverpb.Lease", "LeaseRevoke", "unary"),
    m("etcdserverpb.Lease", "LeaseKeepAlive", "bidi_stream"),
    m("etcdserverpb.Lease", "LeaseTimeToLive", "unary"),
    m("etcdserverpb.Lease", "LeaseLeases", "unary"),
    m("etcdserverpb.Cluster", "MemberList", "unary"),
    m("etcdserverpb.Maintenance", "Status", "unary"),
    m("etcdserverpb.Maintenance", "HashKV", "unary"),
    m("grpc.health.v1.Health", "Check", "unary"),
];

/// The index in [`METHODS`] of the method a gRPC path
/// (`/etcdserverpb.KV/Range`) names.
pub fn method_index(path: &str) -> Option<usize> {
    let (service, name) = path.strip_prefix('/')?.split_once('/')?;
    METHODS
        .iter()
        .position(|m| m.service == service && m.name == name)
}

/// gRPC's codes, in order, by go-grpc-prometheus's names.
const CODES: [&str; 17] = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];

/// Every metric, registered once.
pub struct Metrics {
    registry: Registry,
    has_leader: IntGauge,
    is_leader: IntGauge,
    leader_changes: IntCounter,
    last_leader: std::sync::atomic::AtomicU64,
    proposals_committed: IntGauge,
    proposals_applied: IntGauge,
    proposals_pending: IntGauge,
    proposals_failed: IntCounter,
    server_id: IntGaugeVec,
    db_size: IntGauge,
    db_size_in_use: IntGauge,
    quota_backend_bytes: IntGauge,
    keys: IntGauge,
    watchers: IntGauge,
    puts: IntCounter,
    ranges: IntCounter,
    txns: IntCounter,
    wal_fsync: Histogram,
    peer_sent: IntCounterVec,
    peer_received: IntCounterVec,
    /// Each peer's two byte counters, resolved once per peer.
    peers: std::sync::Mutex<std::collections::BTreeMap<u64, (IntCounter, IntCounter)>>,
    /// `grpc_server_started_total`, by method index.
    started: Vec<IntCounter>,
    /// `grpc_server_handled_total`, by method index, then code.
    handled: Vec<[IntCounter; 17]>,
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("a valid gauge");
    r.register(Box::new(g.clone())).expect("registered once");
    g
}

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("a valid counter");
    r.register(Box::new(c.clone())).expect("registered once");
    c
}

impl Metrics {
    fn new() -> Metrics {
        let r = Registry::new();
        let version = crate::server::services::VERSION;
        let labelled = |name: &str, help: &str, label: &str, value: &str| {
            let g = IntGaugeVec::new(Opts::new(name, help), &[label]).expect("a valid gauge");
            r.register(Box::new(g.clone())).expect("registered once");
            g.with_label_values(&[value]).set(1);
            g
        };
        labelled(
            "etcd_server_version",
            "Which version is running. 1 for 'server_version' label with current version.",
            "server_version",
            version,
        );
        let cluster = version.rsplitn(2, '.').last().unwrap_or(version);
        labelled(
            "etcd_cluster_version",
            "Which version is running. 1 for 'cluster_version' label with current cluster version",
            "cluster_version",
            cluster,
        );
        let server_id = IntGaugeVec::new(
            Opts::new(
                "etcd_server_id",
                "Server or member ID in hexadecimal format. 1 for 'server_id' label with current ID.",
            ),
            &["server_id"],
        )
        .expect("a valid gauge");
        r.register(Box::new(server_id.clone()))
            .expect("registered once");
        let wal_fsync = Histogram::with_opts(
            HistogramOpts::new(
                "etcd_disk_wal_fsync_duration_seconds",
                "The latency distributions of fsync called by WAL.",
            )
            .buckets(exponential_buckets(0.001, 2.0, 14).expect("valid buckets")),
        )
        .expect("a valid histogram");
        r.register(Box::new(wal_fsync.clone()))
            .expect("registered once");
        let (started, handled) = grpc_counters(&r);
        let peer_counter = |name: &str, help: &str, label: &str| {
            let c = IntCounterVec::new(Opts::new(name, help), &[label]).expect("a valid counter");
            r.register(Box::new(c.clone())).expect("registered once");
            c
        };
        let peer_sent = peer_counter(
            "etcd_network_peer_sent_bytes_total",
            "The total number of bytes sent to peers.",
            "To",
        );
        let peer_received = peer_counter(
            "etcd_network_peer_received_bytes_total",
            "The total number of bytes received from peers.",
            "From",
        );
        #[cfg(target_os = "linux")]
        let _ = r.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ));
        Metrics {
            has_leader: gauge(
                &r,
                "etcd_server_has_leader",
                "Whether or not a leader exists. 1 is existence, 0 is not.",
            ),
            is_leader: gauge(
                &r,
                "etcd_server_is_leader",
                "Whether or not this member is a leader. 1 if is, 0 otherwise.",
            ),
            leader_changes: counter(
                &r,
                "etcd_server_leader_changes_seen_total",
                "The number of leader changes seen.",
            ),
            last_leader: Default::default(),
            proposals_committed: gauge(
                &r,
                "etcd_server_proposals_committed_total",
                "The total number of consensus proposals committed.",
            ),
            proposals_applied: gauge(
                &r,
                "etcd_server_proposals_applied_total",
                "The total number of consensus proposals applied.",
            ),
            proposals_pending: gauge(
                &r,
                "etcd_server_proposals_pending",
                "The current number of pending proposals to commit.",
            ),
            proposals_failed: counter(
                &r,
                "etcd_server_proposals_failed_total",
                "The total number of failed proposals seen.",
            ),
            server_id,
            db_size: gauge(
                &r,
                "etcd_mvcc_db_total_size_in_bytes",
                "Total size of the underlying database physically allocated in bytes.",
            ),
            db_size_in_use: gauge(
                &r,
                "etcd_mvcc_db_total_size_in_use_in_bytes",
                "Total size of the underlying database logically in use in bytes.",
            ),
            quota_backend_bytes: gauge(
                &r,
                "etcd_server_quota_backend_bytes",
                "Current backend storage quota size in bytes.",
            ),
            keys: gauge(
                &r,
                "etcd_debugging_mvcc_keys_total",
                "Total number of keys.",
            ),
            watchers: gauge(
                &r,
                "etcd_debugging_mvcc_watcher_total",
                "Total number of watchers.",
            ),
            puts: counter(
                &r,
                "etcd_mvcc_put_total",
                "Total number of puts seen by this member.",
            ),
            ranges: counter(
                &r,
                "etcd_mvcc_range_total",
                "Total number of ranges seen by this member.",
            ),
            txns: counter(
                &r,
                "etcd_mvcc_txn_total",
                "Total number of txns seen by this member.",
            ),
            wal_fsync,
            peer_sent,
            peer_received,
            peers: Default::default(),
            started,
            handled,
            registry: r,
        }
    }
}

/// go-grpc-prometheus's two request counters, every method and code
/// initialised (as `InitializeMetrics` does), resolved per method.
fn grpc_counters(r: &Registry) -> (Vec<IntCounter>, Vec<[IntCounter; 17]>) {
    let started = IntCounterVec::new(
        Opts::new(
            "grpc_server_started_total",
            "Total number of RPCs started on the server.",
        ),
        &["grpc_method", "grpc_service", "grpc_type"],
    )
    .expect("a valid counter");
    let handled = IntCounterVec::new(
        Opts::new(
            "grpc_server_handled_total",
            "Total number of RPCs completed on the server, regardless of success or failure.",
        ),
        &["grpc_code", "grpc_method", "grpc_service", "grpc_type"],
    )
    .expect("a valid counter");
    r.register(Box::new(started.clone()))
        .expect("registered once");
    r.register(Box::new(handled.clone()))
        .expect("registered once");
    let s = METHODS
        .iter()
        .map(|m| started.with_label_values(&[m.name, m.service, m.kind]))
        .collect();
    let h = METHODS
        .iter()
        .map(|m| CODES.map(|code| handled.with_label_values(&[code, m.name, m.service, m.kind])))
        .collect();
    (s, h)
}

/// The process's metrics.
pub fn get() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// Every metric in Prometheus's text format (0.0.4).
pub fn gather() -> String {
    let families = get().registry.gather();
    prometheus::TextEncoder::new()
        .encode_to_string(&families)
        .unwrap_or_default()
}

/// What the driver samples from the member's status.
pub struct StatusSample {
    pub member_id: u64,
    pub leader: u64,
    pub is_leader: bool,
    pub commit: u64,
    pub applied: u64,
    pub db_size: u64,
    pub quota_backend_bytes: u64,
}

/// Records a status sample; counts a leader change when the known leader
/// differs from the last sample's (a member that loses its leader and finds
/// the same one again has seen no change, as etcd counts).
pub fn observe_status(s: &StatusSample) {
    use std::sync::atomic::Ordering;
    let m = get();
    m.has_leader.set(i64::from(s.leader != 0));
    m.is_leader.set(i64::from(s.is_leader));
    if s.leader != 0 {
        let before = m.last_leader.swap(s.leader, Ordering::Relaxed);
        if before != s.leader {
            m.leader_changes.inc();
        }
    }
    m.proposals_committed.set(s.commit as i64);
    m.proposals_applied.set(s.applied as i64);
    m.db_size.set(s.db_size as i64);
    m.db_size_in_use.set(s.db_size as i64);
    m.quota_backend_bytes.set(s.quota_backend_bytes as i64);
    m.server_id
        .with_label_values(&[&format!("{:x}", s.member_id)])
        .set(1);
}

/// The event loop's gauges: watchers and keys.
pub fn observe_loop(watchers: usize, keys: usize) {
    let m = get();
    m.watchers.set(watchers as i64);
    m.keys.set(keys as i64);
}

/// Runs the WAL's fsync, timing it. The driver's loop calls it; the clock is
/// read here, never by the core.
#[allow(clippy::disallowed_methods)]
pub fn time_wal_fsync<T>(sync: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let out = sync();
    get().wal_fsync.observe(start.elapsed().as_secs_f64());
    out
}

/// Runs `f` on the byte counters of peer `id` (`To`, `From`), made on first
/// use: an uncontended lock and a map lookup per raft message.
fn with_peer(id: u64, f: impl FnOnce(&(IntCounter, IntCounter))) {
    let m = get();
    let mut peers = m.peers.lock().unwrap_or_else(|e| e.into_inner());
    let counters = peers.entry(id).or_insert_with(|| {
        let hex = format!("{id:x}");
        (
            m.peer_sent.with_label_values(&[&hex]),
            m.peer_received.with_label_values(&[&hex]),
        )
    });
    f(counters);
}

/// `bytes` of raft messages handed to the stream to peer `to`.
pub fn peer_sent(to: u64, bytes: usize) {
    with_peer(to, |c| c.0.inc_by(bytes as u64));
}

/// `bytes` of a raft message received from peer `from`.
pub fn peer_received(from: u64, bytes: usize) {
    with_peer(from, |c| c.1.inc_by(bytes as u64));
}

/// Counts the start of a call of [`METHODS`]`[method]` and returns the
/// guard that counts its end.
pub fn rpc_started(method: usize) -> RpcGuard {
    let m = get();
    m.started[method].inc();
    let name = METHODS[method].name;
    match name {
        "Put" => m.puts.inc(),
        "Range" => m.ranges.inc(),
        "Txn" => m.txns.inc(),
        _ => {}
    }
    let write = is_write(name);
    if write {
        m.proposals_pending.inc();
    }
    RpcGuard {
        method,
        write,
        code: None,
    }
}

/// Calls that go through raft.
fn is_write(name: &str) -> bool {
    matches!(
        name,
        "Put" | "DeleteRange" | "Txn" | "Compact" | "LeaseGrant" | "LeaseRevoke"
    )
}

/// A call in progress; dropped when it ends. Without a code set it ends as
/// Canceled (the client went away).
pub struct RpcGuard {
    method: usize,
    write: bool,
    code: Option<usize>,
}

impl RpcGuard {
    /// The call's gRPC code (as `tonic::Code as i32`).
    pub fn finish(&mut self, code: i32) {
        self.code = Some(usize::try_from(code).unwrap_or(2).min(16));
    }
}

impl Drop for RpcGuard {
    fn drop(&mut self) {
        let m = get();
        let code = self.code.unwrap_or(1);
        m.handled[self.method][code].inc();
        if self.write {
            m.proposals_pending.dec();
            // Unavailable (no leader, leader changed, stopped) or timed out.
            if code == 14 || code == 4 {
                m.proposals_failed.inc();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_to_methods() {
        let i = method_index("/etcdserverpb.KV/Range").unwrap();
        assert_eq!(METHODS[i].name, "Range");
        assert!(method_index("/etcdserverpb.KV/Nope").is_none());
        assert!(method_index("nope").is_none());
    }

    #[test]
    fn a_call_is_counted_started_and_handled_with_its_code() {
        let i = method_index("/etcdserverpb.KV/Put").unwrap();
        let m = get();
        let (started, ok, pending) = (
            m.started[i].get(),
            m.handled[i][0].get(),
            m.proposals_pending.get(),
        );
        {
            let mut g = rpc_started(i);
            assert_eq!(m.proposals_pending.get(), pending + 1);
            g.finish(0);
        }
        assert_eq!(m.started[i].get(), started + 1);
        assert_eq!(m.handled[i][0].get(), ok + 1);
        let text = gather();
        assert!(text.contains(
            "grpc_server_handled_total{grpc_code=\"Unavailable\",grpc_method=\"Put\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"} 0"
        ));
        assert!(text.contains("# TYPE etcd_disk_wal_fsync_duration_seconds histogram"));
        assert!(text.contains("etcd_disk_wal_fsync_duration_seconds_bucket{le=\"8.192\"}"));
    }
}
