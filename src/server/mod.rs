//! The driver: cairn's server on a real runtime (tokio, tonic, files).
//!
//! [`serve`] recovers a member from its data directory, starts the event
//! loop ([`raft_loop`]) that owns the node and its storage, the peer
//! transport ([`peer`]) and the client gRPC services ([`services`]), and runs
//! until shutdown is signalled or storage fails. On real sockets, client
//! connections reach tonic through `h2shim`, which rewrites the `:authority`
//! that etcdctl's per-endpoint dials send and h2 refuses. Under `--cfg madsim` the same
//! code runs on madsim's simulated runtime and network; [`serve_on`] takes
//! the disks so the simulator can hand in `MemDisk`s that outlive a crash.
//!
//! Shutdown order: stop accepting client requests and give those in flight
//! up to [`CLIENT_DRAIN`] to finish (then close what is still open: watch
//! streams never finish on their own); stop the event loop, which first
//! hands leadership to a peer if this member leads (at most an election
//! timeout) and then syncs the WAL; close the peer servers last, since the
//! hand-over needs them; return.
// Driver code: it reads the clock to seed request IDs and election timeouts.
#![allow(clippy::disallowed_methods)]

pub mod compactor;
pub mod config;
#[cfg(not(madsim))]
pub mod grpc_metrics;
#[cfg(not(madsim))]
pub mod h2shim;
#[cfg(not(madsim))]
pub mod http;
pub mod peer;
pub mod persist;
pub mod raft_loop;
pub mod services;
#[cfg(not(madsim))]
pub mod tls;

use crate::disk::{Disk, FsDisk};
use crate::node::{convert, Node, NodeConfig};
use crate::proto::cairnpb::MemberAttributes;
use crate::proto::etcdserverpb::{
    cluster_server::ClusterServer, kv_server::KvServer, lease_server::LeaseServer,
    maintenance_server::MaintenanceServer, watch_server::WatchServer,
};
use crate::proto::health::health_server::HealthServer;
use crate::storage::{self, SNAP_DIR, WAL_DIR};
use crate::watch::{WatchConfig, WatchHub};
use config::{ConfigError, GrpcOptions, ServerConfig};
use peer::{PeerService, Transport};
use raft_loop::RaftLoop;
use services::{
    ClusterService, Handle, HealthService, KvService, LeaseService, MaintenanceService,
    WatchService,
};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};

/// Why the server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("storage: {0}")]
    Storage(#[from] crate::Error),
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    #[error("listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: tonic::transport::Error,
    },
    #[error("bind {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// Bytes of gRPC framing allowed above `--max-request-bytes`, as in etcd, so an
/// oversized request reaches the server's own check and gets etcd's error.
pub const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// The TLS set-up a member starts with, built (and its files checked) once.
#[derive(Default)]
struct Tls {
    /// How the transport dials its peers.
    dialer: peer::Dialer,
    /// The peer listeners' TLS, for those whose URL is https://.
    #[cfg(not(madsim))]
    peer_server: Option<Arc<tls::ServerTls>>,
    /// The client listeners' TLS, for those whose URL is https://.
    #[cfg(not(madsim))]
    client_server: Option<Arc<tls::ServerTls>>,
}

impl Tls {
    #[cfg(not(madsim))]
    fn load(cfg: &ServerConfig) -> Result<Self, ServeError> {
        let t = &cfg.tls;
        let server = |files: &Option<config::TlsFiles>| {
            files
                .clone()
                .map(|f| tls::ServerTls::server(f, t.settings.clone()).map(Arc::new))
                .transpose()
        };
        let client = t
            .peer
            .clone()
            .map(|f| tls::ClientTls::client(f, t.settings.clone()).map(Arc::new))
            .transpose()?;
        Ok(Self {
            dialer: peer::Dialer::with_tls(client),
            peer_server: server(&t.peer)?,
            client_server: server(&t.client)?,
        })
    }

    /// The simulated network carries no TLS.
    #[cfg(madsim)]
    fn load(_cfg: &ServerConfig) -> Result<Self, ServeError> {
        Ok(Self::default())
    }

    /// The TLS of the client listener on `addr`: some if its URL is https://.
    #[cfg(not(madsim))]
    fn client_listener(&self, cfg: &ServerConfig, addr: std::net::SocketAddr) -> ListenerTls {
        let https = cfg.tls.client_https.contains(&addr);
        self.client_server.clone().filter(|_| https)
    }

    /// The TLS of the peer listener on `addr`: some if its URL is https://.
    #[cfg(not(madsim))]
    fn peer_listener(&self, cfg: &ServerConfig, addr: std::net::SocketAddr) -> ListenerTls {
        let https = cfg.tls.peer_https.contains(&addr);
        self.peer_server.clone().filter(|_| https)
    }

    #[cfg(madsim)]
    fn client_listener(&self, _cfg: &ServerConfig, _addr: std::net::SocketAddr) -> ListenerTls {
        NoTls
    }

    #[cfg(madsim)]
    fn peer_listener(&self, _cfg: &ServerConfig, _addr: std::net::SocketAddr) -> ListenerTls {
        NoTls
    }
}

/// A listener's TLS: `None` for plain text (never anything under madsim).
#[cfg(not(madsim))]
pub type ListenerTls = Option<Arc<tls::ServerTls>>;
#[cfg(madsim)]
pub type ListenerTls = NoTls;

/// What a listener has for TLS in the simulation: nothing.
#[cfg(madsim)]
#[derive(Clone, Copy, Debug, Default)]
pub struct NoTls;

/// Recovers from `cfg.data_dir` on the file system and serves until
/// `shutdown` resolves.
pub async fn serve(
    cfg: ServerConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let open = |sub: &str| {
        let dir = cfg.data_dir.join(sub);
        FsDisk::open(&dir)
            .map(|d| d.with_fsync(!cfg.storage.unsafe_no_fsync))
            .map_err(|e| crate::Error::io("open", dir.display().to_string(), e))
    };
    let (wal_disk, snap_disk) = (open(WAL_DIR)?, open(SNAP_DIR)?);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    serve_on(cfg, wal_disk, snap_disk, seed, shutdown).await
}

pub use crate::rng::SplitMix64;

/// The first number of the sequence seeded with `seed`.
fn splitmix(seed: u64) -> u64 {
    SplitMix64::new(seed).next_u64()
}

/// Serves the client services on `addr` until `shutdown` resolves. On real
/// sockets the connections pass through [`h2shim`], which repairs the
/// `:authority` header etcdctl's per-endpoint dials send.
#[cfg(not(madsim))]
async fn serve_clients(
    addr: std::net::SocketAddr,
    router: tonic::transport::server::Router<ClientLayers>,
    tls: ListenerTls,
    api: Arc<http::HttpApi>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    h2shim::serve(listener, router, tls, Some(api), shutdown)
        .await
        .map_err(|source| ServeError::Listen { addr, source })
}

/// Serves the client services on `addr` until `shutdown` resolves: under the
/// simulator, plain tonic on madsim's network.
#[cfg(madsim)]
async fn serve_clients(
    addr: std::net::SocketAddr,
    router: tonic::transport::server::Router,
    _tls: ListenerTls,
    _api: (),
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    router
        .serve_with_shutdown(addr, shutdown)
        .await
        .map_err(|source| ServeError::Listen { addr, source })
}

/// [`serve`] on the given disks, with randomness drawn from `seed`.
pub async fn serve_on<D: Disk + 'static>(
    cfg: ServerConfig,
    wal_disk: D,
    snap_disk: D,
    seed: u64,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let me = cfg.me()?;
    let members = cfg.members();
    let (wal, snaps, recovered) = storage::recover(wal_disk, snap_disk, &cfg.storage)?;
    for (file, err) in &recovered.rejected_snapshots {
        tracing::warn!(file, error = %err, "rejected a damaged snapshot");
    }
    if let Some(t) = &recovered.wal.torn_tail {
        tracing::warn!(file = %t.file, offset = t.offset, dropped = t.dropped_bytes, "truncated a torn WAL tail");
    }
    let node_cfg = NodeConfig {
        id: me.id,
        cluster_id: cfg.cluster_id(),
        voters: members.iter().map(|m| m.id).collect(),
        // One tick per heartbeat, as etcd. The node draws each election's
        // timeout from [election_tick, 2 * election_tick) with `seed`.
        election_tick: cfg.election_ticks(),
        seed: splitmix(seed ^ me.id),
        heartbeat_tick: 1,
        snapshot_count: cfg.snapshot_count.max(1),
        snapshot_catchup_entries: cfg.snapshot_catchup_entries,
        max_txn_ops: cfg.max_txn_ops,
        tick_ms: cfg.heartbeat_interval.as_millis().max(1) as u64,
        min_lease_ttl: cfg.min_lease_ttl(),
        quota_backend_bytes: cfg.quota_backend_bytes,
    };
    tracing::info!(
        name = %cfg.name, member_id = format_args!("{:x}", me.id), cluster_id = format_args!("{:x}", node_cfg.cluster_id),
        revision = recovered.store.current_revision(), wal_entries = recovered.wal.entries.len(),
        "starting member"
    );
    let node = Node::new(node_cfg.clone(), convert::recovery(recovered))?;

    let (cmd_tx, cmd_rx) = mpsc::channel(4096);
    let (peer_tx, peer_rx) = mpsc::channel(4096);
    let peer_urls = members
        .iter()
        .filter(|m| m.id != me.id)
        .map(|m| (m.id, m.peer_urls[0].clone()))
        .collect();
    let tls = Tls::load(&cfg)?;
    let transport = Transport::start(
        peer_urls,
        tls.dialer.clone(),
        peer_tx.clone(),
        cfg.faults.peer_drop_rate,
        splitmix(seed ^ 0xd809),
        splitmix(seed ^ 0xb007).max(1),
    );
    let resets = transport.resets();
    let (persist, persisted) = persist::spawn(persist::Worker {
        wal,
        snaps,
        sync_latency_max: cfg.faults.sync_latency_max,
        rng: SplitMix64::new(splitmix(seed ^ 0x51ee9)),
    });
    let raft_loop = RaftLoop {
        node,
        persist,
        unpersisted: Default::default(),
        transport,
        waiting: BTreeMap::new(),
        next_id: ((me.id & 0xffff) << 48) | ((seed >> 20) & 0xff_ffff_ffff) << 8,
        tick_interval: cfg.tick_interval,
        attributes: MemberAttributes {
            member_id: me.id,
            name: cfg.name.clone(),
            client_urls: cfg.advertise_client_urls.clone(),
        },
        published: false,
        publish_id: None,
        watches: WatchHub::new(WatchConfig {
            // As etcd: the limit plus gRPC overhead.
            max_response_bytes: cfg.max_request_bytes + GRPC_OVERHEAD_BYTES,
            progress_notify_ticks: cfg.progress_notify_ticks(),
            // etcd ends hasleader watches after three election timeouts.
            no_leader_cancel_ticks: 3 * cfg.election_ticks() as u64,
            ..Default::default()
        }),
        watch_streams: BTreeMap::new(),
    };

    // Clients and peers stop separately: the peers must keep running while
    // a stopping leader hands over, after the clients are gone.
    let (stop_tx, stop_rx) = watch::channel(false);
    let (peer_stop_tx, peer_stop_rx) = watch::channel(false);
    let handle = Handle {
        commands: cmd_tx,
        max_request_bytes: cfg.max_request_bytes,
        max_txn_ops: cfg.max_txn_ops,
        cluster_id: node_cfg.cluster_id,
        member_id: me.id,
        members: Arc::new(members),
        next_watch_stream: Arc::new(AtomicU64::new(1)),
    };
    let (mut servers, mut peer_servers) = (Vec::new(), Vec::new());
    // A server that stops before shutdown (it could not bind) stops the member.
    let (failed_tx, mut failed_rx) = mpsc::channel::<ServeError>(8);
    for addr in cfg.listen_peer.iter().copied() {
        let svc = PeerService {
            events: peer_tx.clone(),
            resets: resets.clone(),
            boots: Default::default(),
        };
        let mut stop = peer_stop_rx.clone();
        let failed = failed_tx.clone();
        let peer_tls = tls.peer_listener(&cfg, addr);
        peer_servers.push(tokio::spawn(async move {
            let stopped = async move {
                let _ = stop.changed().await;
            };
            let served = peer::serve(addr, svc, peer_tls, stopped).await;
            if let Err(err) = served {
                let _ = failed.send(err).await;
            }
        }));
    }
    let max_msg = cfg.max_request_bytes + GRPC_OVERHEAD_BYTES;
    let grpc = cfg.grpc;
    for addr in cfg.listen_client.iter().copied() {
        let h = handle.clone();
        let client_tls = tls.client_listener(&cfg, addr);
        // The simulation has no HTTP side: `()` there.
        #[cfg_attr(madsim, allow(clippy::let_unit_value))]
        let http_api = http_api(&cfg, &h);
        let mut stop = stop_rx.clone();
        let failed = failed_tx.clone();
        servers.push(tokio::spawn(async move {
            let router = client_server_builder(&grpc)
                .add_service(KvServer::new(KvService(h.clone())).max_decoding_message_size(max_msg))
                .add_service(MaintenanceServer::new(MaintenanceService(h.clone())))
                .add_service(ClusterServer::new(ClusterService(h.clone())))
                .add_service(WatchServer::new(WatchService(h.clone())))
                .add_service(LeaseServer::new(LeaseService(h.clone())))
                .add_service(HealthServer::new(HealthService(h)));
            let stopped = async move {
                let _ = stop.changed().await;
            };
            if let Err(err) = serve_clients(addr, router, client_tls, http_api, stopped).await {
                let _ = failed.send(err).await;
            }
        }));
        tracing::info!(%addr, "serving clients");
    }
    #[cfg(not(madsim))]
    for addr in cfg.http.listen_metrics.iter().copied() {
        let api = http_api(&cfg, &handle);
        let (stop, failed) = (stop_rx.clone(), failed_tx.clone());
        servers.push(tokio::spawn(async move {
            if let Err(source) = http::serve_metrics(addr, api, stop).await {
                let _ = failed.send(ServeError::Bind { addr, source }).await;
            }
        }));
        tracing::info!(%addr, "serving metrics and probes");
    }
    // The loop stops when told to, not when the last client server is gone:
    // a stopping leader still has its hand-over to run.
    let commands_open = handle.commands.clone();
    // Background tasks that never finish on their own: aborted at the end.
    #[allow(unused_mut)]
    let mut background: Vec<_> = cfg
        .auto_compaction
        .map(|mode| tokio::spawn(compactor::run(mode, handle.commands.clone())))
        .into_iter()
        .collect();
    #[cfg(not(madsim))]
    background.push(tokio::spawn(http::sample_metrics(
        http_api(&cfg, &handle),
        cfg.heartbeat_interval,
    )));
    drop(handle);

    let (loop_stop_tx, loop_stop_rx) = watch::channel(false);
    let mut loop_task = tokio::spawn(raft_loop.run(cmd_rx, peer_rx, persisted, loop_stop_rx));
    let result = tokio::select! {
        () = shutdown => {
            tracing::info!("shutting down: draining client requests");
            let _ = stop_tx.send(true);
            drain(&mut servers, CLIENT_DRAIN).await;
            let _ = loop_stop_tx.send(true);
            (&mut loop_task).await.unwrap_or(Ok(())).map_err(ServeError::from)
        }
        res = &mut loop_task => {
            let _ = stop_tx.send(true);
            res.unwrap_or(Ok(())).map_err(ServeError::from)
        }
        Some(err) = failed_rx.recv() => {
            let _ = stop_tx.send(true);
            let _ = loop_stop_tx.send(true);
            let _ = (&mut loop_task).await;
            Err(err)
        }
    };
    drop(commands_open);
    let _ = peer_stop_tx.send(true);
    for s in servers.into_iter().chain(peer_servers).chain(background) {
        s.abort();
    }
    result
}

/// The HTTP side's view of the services (see [`http`]).
#[cfg(not(madsim))]
fn http_api(cfg: &ServerConfig, handle: &Handle) -> Arc<http::HttpApi> {
    Arc::new(http::HttpApi {
        handle: handle.clone(),
        gateway: cfg.http.enable_grpc_gateway,
        quota_backend_bytes: cfg.quota_backend_bytes,
    })
}

/// Under the simulator there is no HTTP side.
#[cfg(madsim)]
fn http_api(_cfg: &ServerConfig, _handle: &Handle) {}

/// How long a stopping member waits for client requests in flight (and for
/// clients to close their connections) before it closes them itself: long
/// enough for a unary request to finish; a watch stream would hold it for
/// ever.
const CLIENT_DRAIN: std::time::Duration = std::time::Duration::from_secs(1);

/// Waits up to `grace` for the servers to finish draining, then aborts the
/// ones still running.
async fn drain(servers: &mut Vec<tokio::task::JoinHandle<()>>, grace: std::time::Duration) {
    let all = futures::future::join_all(servers.iter_mut());
    if tokio::time::timeout(grace, all).await.is_err() {
        tracing::info!("closing client connections still open");
    }
    for s in servers.drain(..) {
        s.abort();
    }
}

/// The layer stack of the client server on the real runtime.
#[cfg(not(madsim))]
pub type ClientLayers = tower::layer::util::Stack<
    tower::util::MapResponseLayer<fn(HttpResponse) -> HttpResponse>,
    tower::layer::util::Stack<grpc_metrics::GrpcMetricsLayer, tower::layer::util::Identity>,
>;

/// The client gRPC server builder. On the real runtime it counts requests
/// for `/metrics` ([`grpc_metrics`]) and rewrites tonic's answer to an
/// oversized message into etcd's (see [`etcd_size_error`]);
/// madsim's simulated server takes no layers.
#[cfg(not(madsim))]
pub fn client_server_builder(grpc: &GrpcOptions) -> tonic::transport::Server<ClientLayers> {
    let rewrite: fn(HttpResponse) -> HttpResponse = etcd_size_error;
    // The counters see the code after the rewrite: the outer layer is the
    // first one added.
    tonic::transport::Server::builder()
        .http2_keepalive_interval(grpc.keepalive_interval)
        .http2_keepalive_timeout(Some(grpc.keepalive_timeout))
        .max_concurrent_streams(grpc.max_concurrent_streams)
        .layer(grpc_metrics::GrpcMetricsLayer)
        .layer(tower::util::MapResponseLayer::new(rewrite))
}

/// The simulated network has no HTTP/2 to tune.
#[cfg(madsim)]
fn client_server_builder(_grpc: &GrpcOptions) -> tonic::transport::Server {
    tonic::transport::Server::builder()
}

#[cfg(not(madsim))]
pub type HttpResponse = ::http::Response<tonic::body::Body>;

/// tonic answers a request over `max_decoding_message_size` with OutOfRange
/// and its own text; etcd (grpc-go) answers ResourceExhausted "grpc: received
/// message larger than max (N vs. M)". etcd's clients read OutOfRange as a
/// compacted or future revision, so the code matters: rewrite it.
#[cfg(not(madsim))]
fn etcd_size_error(mut resp: HttpResponse) -> HttpResponse {
    let Some(status) = tonic::Status::from_header_map(resp.headers()) else {
        return resp;
    };
    let text = status.message();
    if status.code() != tonic::Code::OutOfRange
        || !text.starts_with("Error, decoded message length too large")
    {
        return resp;
    }
    let numbers: Vec<&str> = text
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .collect();
    if let [found, limit] = numbers[..] {
        let etcd = tonic::Status::resource_exhausted(format!(
            "grpc: received message larger than max ({found} vs. {limit})"
        ));
        let _ = etcd.add_header(resp.headers_mut());
    }
    resp
}
