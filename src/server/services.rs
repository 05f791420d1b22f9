//! The client-facing gRPC services: etcd's KV, Watch, Lease, Maintenance and
//! Cluster, and grpc.health.v1.
//!
//! A service checks a request the way etcd's `v3rpc` layer does (empty keys,
//! sizes, txn limits), turns it into a [`Command`] for the event loop, and
//! waits for the answer with a deadline. Errors carry etcd's gRPC codes and
//! exact messages, so clients that match on them work unchanged.
//!
//! A request carrying etcd's `hasleader: true` metadata (clientv3's
//! `WithRequireLeader`, which kube-apiserver puts on its watches) fails at
//! once with `etcdserver: no leader` when the member knows no leader, rather
//! than waiting out the request timeout; a watch stream opened with it is
//! also ended with that error once the member has gone without a leader for
//! three election timeouts (see `crate::watch`).

mod maintenance;

pub use maintenance::{unimplemented, MaintenanceService, VERSION};

use super::config::MemberInfo;
use super::raft_loop::{Command, ReplyTx, WatchStreamOut};
use crate::lease::{LeaseError, MAX_TTL};
use crate::mvcc::{self, check_delete, check_put, check_range, check_txn, GrpcCode};
use crate::node::{NodeError, Response};
use crate::proto::cairnpb::{raft_request::Request, LeaseRenew, RaftRequest};
use crate::proto::etcdserverpb::{
    cluster_server::Cluster, kv_server::Kv, lease_server::Lease, watch_server::Watch,
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse,
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse,
    LeaseLeasesRequest, LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse,
    LeaseTimeToLiveRequest, LeaseTimeToLiveResponse, Member, MemberAddRequest, MemberAddResponse,
    MemberListRequest, MemberListResponse, MemberPromoteRequest, MemberPromoteResponse,
    MemberRemoveRequest, MemberRemoveResponse, MemberUpdateRequest, MemberUpdateResponse,
    PutRequest, PutResponse, RangeRequest, RangeResponse, ResponseHeader, TxnRequest, TxnResponse,
    WatchRequest, WatchResponse,
};
use crate::proto::health::{
    health_check_response::ServingStatus, health_server::Health, HealthCheckRequest,
    HealthCheckResponse,
};
use futures::Stream;
use prost::Message as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tonic::{Code, Status};

/// How long a client request may wait for the cluster: etcd's 5 s request
/// timeout plus two election timeouts.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(7);

/// What every service shares.
#[derive(Clone)]
pub struct Handle {
    /// Into the event loop.
    pub commands: mpsc::Sender<Command>,
    /// Largest write accepted, in bytes (`--max-request-bytes`).
    pub max_request_bytes: usize,
    /// Most ops in a txn branch (`--max-txn-ops`).
    pub max_txn_ops: usize,
    pub cluster_id: u64,
    pub member_id: u64,
    /// Every member, for MemberList.
    pub members: Arc<Vec<MemberInfo>>,
    /// The number the next watch stream gets.
    pub next_watch_stream: Arc<AtomicU64>,
}

/// Responses a watch stream holds for a client that is slow to read; beyond
/// them, its watchers' events wait in the watch hub (bounded there too).
const WATCH_STREAM_BUFFER: usize = 128;

fn mvcc_status(e: mvcc::Error) -> Status {
    let code = match e.grpc_code() {
        GrpcCode::InvalidArgument => Code::InvalidArgument,
        GrpcCode::OutOfRange => Code::OutOfRange,
    };
    Status::new(code, e.to_string())
}

fn node_status(e: NodeError) -> Status {
    match e {
        NodeError::Mvcc(e) => mvcc_status(e),
        NodeError::Lease(e) => lease_status(e),
        NodeError::NoLeader | NodeError::LeaderChanged => Status::unavailable(e.to_string()),
        NodeError::NoSpace | NodeError::TooManyRequests => {
            Status::resource_exhausted(e.to_string())
        }
        NodeError::Corrupt => Status::data_loss(e.to_string()),
    }
}

fn lease_status(e: LeaseError) -> Status {
    let code = match e {
        LeaseError::NotFound => Code::NotFound,
        LeaseError::Exists => Code::FailedPrecondition,
        LeaseError::TtlTooLarge => Code::OutOfRange,
    };
    Status::new(code, e.to_string())
}

fn stopping() -> Status {
    Status::unavailable("etcdserver: server stopped")
}

/// etcd's gRPC metadata key and value for "fail unless there is a leader"
/// (`rpctypes.MetadataRequireLeaderKey`, `MetadataHasLeader`).
const REQUIRE_LEADER_KEY: &str = "hasleader";
const REQUIRE_LEADER_VALUE: &str = "true";

/// Whether the request asked for a leader (as etcd, only the first value
/// counts).
fn requires_leader(metadata: &tonic::metadata::MetadataMap) -> bool {
    metadata
        .get(REQUIRE_LEADER_KEY)
        .is_some_and(|v| v.as_bytes() == REQUIRE_LEADER_VALUE.as_bytes())
}

impl Handle {
    async fn ask(&self, make: impl FnOnce(ReplyTx) -> Command) -> Result<Response, Status> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(make(tx)).await.map_err(|_| stopping())?;
        match tokio::time::timeout(REQUEST_TIMEOUT, rx).await {
            Ok(Ok(result)) => result.map_err(node_status),
            Ok(Err(_)) => Err(stopping()),
            Err(_) => Err(Status::unavailable("etcdserver: request timed out")),
        }
    }

    /// `etcdserver: no leader` if the request carries `hasleader` and this
    /// member knows no leader; nothing to do otherwise.
    async fn check_leader(&self, metadata: &tonic::metadata::MetadataMap) -> Result<(), Status> {
        if !requires_leader(metadata) {
            return Ok(());
        }
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Leader(tx))
            .await
            .map_err(|_| stopping())?;
        match rx.await.map_err(|_| stopping())? {
            0 => Err(node_status(NodeError::NoLeader)),
            _ => Ok(()),
        }
    }

    async fn propose(&self, request: Request) -> Result<Response, Status> {
        // etcd measures the request as it will travel through raft.
        let size = RaftRequest {
            id: u64::MAX,
            request: Some(request.clone()),
        }
        .encoded_len();
        if size > self.max_request_bytes {
            return Err(Status::invalid_argument("etcdserver: request is too large"));
        }
        self.ask(|tx| Command::Propose(request, tx)).await
    }

    fn header(&self, revision: i64, raft_term: u64) -> Option<ResponseHeader> {
        Some(ResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.member_id,
            revision,
            raft_term,
        })
    }
}

fn unexpected(r: Response) -> Status {
    Status::internal(format!("unexpected response {r:?}"))
}

/// etcd's KV service.
pub struct KvService(pub Handle);

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(
        &self,
        req: tonic::Request<RangeRequest>,
    ) -> Result<tonic::Response<RangeResponse>, Status> {
        self.0.check_leader(req.metadata()).await?;
        let req = req.into_inner();
        check_range(&req).map_err(mvcc_status)?;
        match self.0.ask(|tx| Command::Read(req, tx)).await? {
            Response::Range(r) => Ok(tonic::Response::new(r)),
            other => Err(unexpected(other)),
        }
    }

    async fn put(
        &self,
        req: tonic::Request<PutRequest>,
    ) -> Result<tonic::Response<PutResponse>, Status> {
        self.0.check_leader(req.metadata()).await?;
        let req = req.into_inner();
        check_put(&req).map_err(mvcc_status)?;
        match self.0.propose(Request::Put(req)).await? {
            Response::Put(r) => Ok(tonic::Response::new(r)),
            other => Err(unexpected(other)),
        }
    }

    async fn delete_range(
        &self,
        req: tonic::Request<DeleteRangeRequest>,
    ) -> Result<tonic::Response<DeleteRangeResponse>, Status> {
        self.0.check_leader(req.metadata()).await?;
        let req = req.into_inner();
        check_delete(&req).map_err(mvcc_status)?;
        match self.0.propose(Request::DeleteRange(req)).await? {
            Response::DeleteRange(r) => Ok(tonic::Response::new(r)),
            other => Err(unexpected(other)),
        }
    }

    async fn txn(
        &self,
        req: tonic::Request<TxnRequest>,
    ) -> Result<tonic::Response<TxnResponse>, Status> {
        self.0.check_leader(req.metadata()).await?;
        let req = req.into_inner();
        check_txn(&req, self.0.max_txn_ops).map_err(mvcc_status)?;
        match self.0.propose(Request::Txn(req)).await? {
            Response::Txn(r) => Ok(tonic::Response::new(r)),
            other => Err(unexpected(other)),
        }
    }

    async fn compact(
        &self,
        req: tonic::Request<CompactionRequest>,
    ) -> Result<tonic::Response<CompactionResponse>, Status> {
        self.0.check_leader(req.metadata()).await?;
        match self
            .0
            .propose(Request::Compaction(req.into_inner()))
            .await?
        {
            Response::Compaction(r) => Ok(tonic::Response::new(r)),
            other => Err(unexpected(other)),
        }
    }
}

/// etcd's Cluster service: MemberList (membership is static; the other
/// methods answer UNIMPLEMENTED naming themselves).
pub struct ClusterService(pub Handle);

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_list(
        &self,
        req: tonic::Request<MemberListRequest>,
    ) -> Result<tonic::Response<MemberListResponse>, Status> {
        self.0.check_leader(req.metadata()).await?;
        let (tx, rx) = oneshot::channel();
        self.0
            .commands
            .send(Command::Members(tx))
            .await
            .map_err(|_| stopping())?;
        let (published, status) = rx.await.map_err(|_| stopping())?;
        let members = self
            .0
            .members
            .iter()
            .map(|m| {
                // A member that has not published yet shows no client URLs, as in etcd.
                let attrs = published.iter().find(|a| a.member_id == m.id);
                Member {
                    id: m.id,
                    name: attrs.map_or_else(|| m.name.clone(), |a| a.name.clone()),
                    peer_ur_ls: m.peer_urls.clone(),
                    client_ur_ls: attrs.map(|a| a.client_urls.clone()).unwrap_or_default(),
                    is_learner: false,
                }
            })
            .collect();
        Ok(tonic::Response::new(MemberListResponse {
            header: self.0.header(status.revision, status.term),
            members,
        }))
    }

    async fn member_add(
        &self,
        _req: tonic::Request<MemberAddRequest>,
    ) -> Result<tonic::Response<MemberAddResponse>, Status> {
        Err(unimplemented("Cluster.MemberAdd"))
    }

    async fn member_remove(
        &self,
        _req: tonic::Request<MemberRemoveRequest>,
    ) -> Result<tonic::Response<MemberRemoveResponse>, Status> {
        Err(unimplemented("Cluster.MemberRemove"))
    }

    async fn member_update(
        &self,
        _req: tonic::Request<MemberUpdateRequest>,
    ) -> Result<tonic::Response<MemberUpdateResponse>, Status> {
        Err(unimplemented("Cluster.MemberUpdate"))
    }

    async fn member_promote(
        &self,
        _req: tonic::Request<MemberPromoteRequest>,
    ) -> Result<tonic::Response<MemberPromoteResponse>, Status> {
        Err(unimplemented("Cluster.MemberPromote"))
    }
}

/// grpc.health.v1: SERVING while the member has a leader.
pub struct HealthService(pub Handle);

#[tonic::async_trait]
impl Health for HealthService {
    async fn check(
        &self,
        req: tonic::Request<HealthCheckRequest>,
    ) -> Result<tonic::Response<HealthCheckResponse>, Status> {
        self.0.check_leader(req.metadata()).await?;
        let (tx, rx) = oneshot::channel();
        self.0
            .commands
            .send(Command::Status(tx))
            .await
            .map_err(|_| stopping())?;
        let s = rx.await.map_err(|_| stopping())?;
        let status = if s.leader != 0 {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        Ok(tonic::Response::new(HealthCheckResponse {
            status: status as i32,
        }))
    }
}

/// A response stream of a bidirectional RPC.
type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// The items of `rx` as a response stream.
fn receiver_stream<T: Send + 'static>(rx: mpsc::Receiver<Result<T, Status>>) -> ResponseStream<T> {
    Box::pin(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

/// etcd's Watch service. The stream's requests go to the event loop's watch
/// hub; its responses come back through a bounded channel.
pub struct WatchService(pub Handle);

#[tonic::async_trait]
impl Watch for WatchService {
    type WatchStream = ResponseStream<WatchResponse>;

    async fn watch(
        &self,
        req: tonic::Request<tonic::Streaming<WatchRequest>>,
    ) -> Result<tonic::Response<Self::WatchStream>, Status> {
        // etcd refuses a new stream at once when it asks for a leader and
        // there is none; one that gets a leader is ended when it is lost.
        self.0.check_leader(req.metadata()).await?;
        let (ended_tx, ended) = match requires_leader(req.metadata()) {
            true => {
                let (tx, rx) = oneshot::channel();
                (Some(tx), Some(rx))
            }
            false => (None, None),
        };
        let mut incoming = req.into_inner();
        let stream = self.0.next_watch_stream.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(WATCH_STREAM_BUFFER);
        let commands = self.0.commands.clone();
        let out = WatchStreamOut {
            responses: tx,
            ended: ended_tx,
        };
        commands
            .send(Command::WatchOpen(stream, out))
            .await
            .map_err(|_| stopping())?;
        tokio::spawn(async move {
            // A client that only closes its sending side keeps its watchers,
            // as in etcd; one whose connection fails loses them.
            loop {
                match incoming.message().await {
                    Ok(Some(req)) => {
                        if commands.send(Command::Watch(stream, req)).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => return,
                    Err(_) => {
                        let _ = commands.send(Command::WatchClose(stream)).await;
                        return;
                    }
                }
            }
        });
        Ok(tonic::Response::new(watch_responses(rx, ended)))
    }
}

/// A watch stream's responses as gRPC sends them: what the loop queued, and,
/// if the loop ends the stream with an error (no leader), that error, after
/// which the stream is over. Responses still queued then are dropped, as etcd
/// drops them when it cancels the stream's context.
fn watch_responses(
    rx: mpsc::Receiver<WatchResponse>,
    ended: Option<oneshot::Receiver<NodeError>>,
) -> ResponseStream<WatchResponse> {
    // The state is `None` once the error is out: nothing follows it.
    Box::pin(futures::stream::unfold(
        Some((rx, ended)),
        |state| async move {
            let (mut rx, mut ended) = state?;
            let Some(why) = ended.as_mut() else {
                return rx.recv().await.map(|r| (Ok(r), Some((rx, None))));
            };
            tokio::select! {
                biased;
                why = why => match why {
                    Ok(e) => Some((Err(node_status(e)), None)),
                    // The loop dropped the stream without a reason: what it
                    // sent is still delivered, then the stream ends.
                    Err(_) => rx.recv().await.map(|r| (Ok(r), Some((rx, None)))),
                },
                r = rx.recv() => r.map(|r| (Ok(r), Some((rx, ended)))),
            }
        },
    ))
}

/// etcd's Lease service. Grants, revokes and keep-alives go through raft;
/// TimeToLive and Leases read this member's lessor.
pub struct LeaseService(pub Handle);

#[tonic::async_trait]
impl Lease for LeaseService {
    type LeaseKeepAliveStream = ResponseStream<LeaseKeepAliveResponse>;

    async fn lease_grant(
        &self,
        req: tonic::Request<LeaseGrantRequest>,
    ) -> Result<tonic::Response<LeaseGrantResponse>, Status> {
        self.0.check_leader(req.metadata()).await?;
        let req = req.into_inner();
        if req.ttl > MAX_TTL {
            return Err(lease_status(LeaseError::TtlTooLarge));
        }
        match self.0.propose(Request::LeaseGrant(req)).await? {
            Response::LeaseGrant(r) => Ok(tonic::Response::new(r)),
            other => Err(unexpected(other)),
        }
    }

    async fn lease_revoke(
        &self,
        req: tonic::Request<LeaseRevokeRequest>,
    ) -> Result<tonic::Response<LeaseRevokeResponse>, Status> {
        self.0.check_leader(req.metadata()).await?;
        match self
            .0
            .propose(Request::LeaseRevoke(req.into_inner()))
            .await?
        {
            Response::LeaseRevoke(r) => Ok(tonic::Response::new(r)),
            other => Err(unexpected(other)),
        }
    }

    async fn lease_keep_alive(
        &self,
        req: tonic::Request<tonic::Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<tonic::Response<Self::LeaseKeepAliveStream>, Status> {
        self.0.check_leader(req.metadata()).await?;
        let mut incoming = req.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let handle = self.0.clone();
        tokio::spawn(async move {
            while let Ok(Some(req)) = incoming.message().await {
                let renew = Request::LeaseRenew(LeaseRenew { id: req.id });
                let item = match handle.propose(renew).await {
                    Ok(Response::LeaseRenew(r)) => Ok(r),
                    Ok(other) => Err(unexpected(other)),
                    Err(e) => Err(e),
                };
                let failed = item.is_err();
                if tx.send(item).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(tonic::Response::new(receiver_stream(rx)))
    }

    async fn lease_time_to_live(
        &self,
        req: tonic::Request<LeaseTimeToLiveRequest>,
    ) -> Result<tonic::Response<LeaseTimeToLiveResponse>, Status> {
        self.0.check_leader(req.metadata()).await?;
        let (tx, rx) = oneshot::channel();
        self.0
            .commands
            .send(Command::LeaseTimeToLive(req.into_inner(), tx))
            .await
            .map_err(|_| stopping())?;
        Ok(tonic::Response::new(rx.await.map_err(|_| stopping())?))
    }

    async fn lease_leases(
        &self,
        req: tonic::Request<LeaseLeasesRequest>,
    ) -> Result<tonic::Response<LeaseLeasesResponse>, Status> {
        self.0.check_leader(req.metadata()).await?;
        let (tx, rx) = oneshot::channel();
        self.0
            .commands
            .send(Command::LeaseLeases(tx))
            .await
            .map_err(|_| stopping())?;
        Ok(tonic::Response::new(rx.await.map_err(|_| stopping())?))
    }
}
