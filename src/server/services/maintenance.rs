//! etcd's Maintenance service: Alarm, Status, Defragment, Hash, HashKV and
//! Snapshot; MoveLeader and Downgrade answer UNIMPLEMENTED naming the method.
//!
//! Snapshot streams a backup image (`crate::snap::image`) of a point-in-time
//! copy of the state, in etcd's 32 KiB chunks, then its sha256 in one last
//! message, as etcd does, so `etcdctl snapshot save` works unchanged.
//!
//! Alarm requests go through raft, GET included (as etcd's do), so what a
//! member answers is what the cluster has applied. Status reads this
//! member's own raft and store state; its `errors` list "etcdserver: no
//! leader" when the member knows none, then every active alarm in etcd's text
//! form. Defragment is this member's own business, done in steps between the
//! event loop's batches so writes never wait for it (`crate::node`'s
//! maintenance module); it answers when the last step is done.

use super::receiver_stream;
use super::{mvcc_status, stopping, unexpected, Handle, ResponseStream};
use crate::node::{alarm_errors, NodeError, Response};
use crate::proto::cairnpb::raft_request::Request;
use crate::proto::etcdserverpb::ResponseHeader;
use crate::proto::etcdserverpb::{
    maintenance_server::Maintenance, AlarmRequest, AlarmResponse, DefragmentRequest,
    DefragmentResponse, DowngradeRequest, DowngradeResponse, HashKvRequest, HashKvResponse,
    HashRequest, HashResponse, MoveLeaderRequest, MoveLeaderResponse, SnapshotRequest,
    SnapshotResponse, StatusRequest, StatusResponse,
};
use crate::server::raft_loop::Command;
use crate::snap::image::ImageSource;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};
use tonic::Status;

/// The version cairn reports in Status: the etcd API level it implements.
pub const VERSION: &str = "3.4.0";

/// An UNIMPLEMENTED answer that names the method (etcd's clients print it).
pub fn unimplemented(method: &str) -> Status {
    Status::unimplemented(format!("cairn does not implement {method}"))
}

/// Blob bytes per Snapshot message: etcd's 32 KiB.
const SNAPSHOT_CHUNK: usize = 32 * 1024;

/// Messages of a Snapshot stream queued ahead of a slow client.
const SNAPSHOT_BUFFERED_CHUNKS: usize = 4;

/// Streams `source` as etcd's Snapshot does: chunks of the image with the
/// bytes still to come, then one message holding its sha256. Stops when the
/// client goes away.
fn stream_image(
    source: &ImageSource,
    header: Option<ResponseHeader>,
    mut deliver: impl FnMut(SnapshotResponse) -> bool,
) {
    let total = source.len();
    let mut sent = 0u64;
    let mut sha = Sha256::new();
    let mut buf: Vec<u8> = Vec::with_capacity(SNAPSHOT_CHUNK);
    let mut header = header;
    let mut gone = false;
    let mut send = |chunk: &[u8], gone: &mut bool| {
        if *gone {
            return;
        }
        sent += chunk.len() as u64;
        sha.update(chunk);
        let msg = SnapshotResponse {
            header: header.take(),
            remaining_bytes: total - sent,
            blob: bytes::Bytes::copy_from_slice(chunk),
            version: String::new(),
        };
        *gone = !deliver(msg);
    };
    source.write(SNAPSHOT_CHUNK, |mut piece| {
        while !piece.is_empty() {
            let room = SNAPSHOT_CHUNK - buf.len();
            let (now, later) = piece.split_at(room.min(piece.len()));
            buf.extend_from_slice(now);
            piece = later;
            if buf.len() == SNAPSHOT_CHUNK {
                send(&buf, &mut gone);
                buf.clear();
            }
        }
    });
    if !buf.is_empty() {
        send(&buf, &mut gone);
    }
    let trailer = SnapshotResponse {
        header: None,
        remaining_bytes: 0,
        blob: sha.finalize().to_vec().into(),
        version: String::new(),
    };
    if !gone && deliver(trailer) {
        tracing::info!(total_bytes = total, "sent snapshot to client");
    }
}

/// etcd's Maintenance service.
pub struct MaintenanceService(pub Handle);

impl MaintenanceService {
    /// Sends `make(tx)` to the event loop and waits for its answer.
    async fn ask_loop<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, Status> {
        let (tx, rx) = oneshot::channel();
        self.0
            .commands
            .send(make(tx))
            .await
            .map_err(|_| stopping())?;
        rx.await.map_err(|_| stopping())
    }
}

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn alarm(
        &self,
        req: tonic::Request<AlarmRequest>,
    ) -> Result<tonic::Response<AlarmResponse>, Status> {
        self.0.check_leader(req.metadata()).await?;
        match self.0.propose(Request::Alarm(req.into_inner())).await? {
            Response::Alarm(r) => Ok(tonic::Response::new(r)),
            other => Err(unexpected(other)),
        }
    }

    async fn status(
        &self,
        req: tonic::Request<StatusRequest>,
    ) -> Result<tonic::Response<StatusResponse>, Status> {
        self.0.check_leader(req.metadata()).await?;
        let (s, alarms) = self.ask_loop(Command::MaintenanceStatus).await?;
        let mut errors = Vec::new();
        if s.leader == 0 {
            errors.push(NodeError::NoLeader.to_string());
        }
        errors.extend(alarm_errors(&alarms));
        Ok(tonic::Response::new(StatusResponse {
            header: self.0.header(s.revision, s.term),
            version: VERSION.to_string(),
            leader: s.leader,
            db_size: s.db_size as i64,
            db_size_in_use: s.db_size_in_use as i64,
            raft_index: s.commit,
            raft_term: s.term,
            raft_applied_index: s.applied,
            errors,
            is_learner: false,
            storage_version: String::new(),
            db_size_quota: i64::try_from(s.quota).unwrap_or(i64::MAX),
        }))
    }

    async fn defragment(
        &self,
        req: tonic::Request<DefragmentRequest>,
    ) -> Result<tonic::Response<DefragmentResponse>, Status> {
        self.0.check_leader(req.metadata()).await?;
        match self.0.ask(Command::Defragment).await? {
            Response::Defragmented => {}
            other => return Err(unexpected(other)),
        }
        let s = self.ask_loop(Command::Status).await?;
        Ok(tonic::Response::new(DefragmentResponse {
            header: self.0.header(s.revision, s.term),
        }))
    }

    async fn hash(
        &self,
        req: tonic::Request<HashRequest>,
    ) -> Result<tonic::Response<HashResponse>, Status> {
        self.0.check_leader(req.metadata()).await?;
        let (hash, s) = self.ask_loop(Command::Hash).await?;
        Ok(tonic::Response::new(HashResponse {
            header: self.0.header(s.revision, s.term),
            hash,
        }))
    }

    async fn hash_kv(
        &self,
        req: tonic::Request<HashKvRequest>,
    ) -> Result<tonic::Response<HashKvResponse>, Status> {
        self.0.check_leader(req.metadata()).await?;
        let rev = req.into_inner().revision;
        let h = self
            .ask_loop(|tx| Command::HashKv(rev, tx))
            .await?
            .map_err(mvcc_status)?;
        Ok(tonic::Response::new(HashKvResponse {
            header: self.0.header(h.revision, 0),
            hash: h.hash,
            compact_revision: h.compact_revision,
            hash_revision: h.revision,
        }))
    }

    type SnapshotStream = ResponseStream<SnapshotResponse>;

    async fn snapshot(
        &self,
        req: tonic::Request<SnapshotRequest>,
    ) -> Result<tonic::Response<Self::SnapshotStream>, Status> {
        self.0.check_leader(req.metadata()).await?;
        let (source, s) = self.ask_loop(Command::Snapshot).await?;
        let header = self.0.header(s.revision, s.term);
        let (tx, rx) = mpsc::channel(SNAPSHOT_BUFFERED_CHUNKS);
        tracing::info!(
            total_bytes = source.len(),
            revision = s.revision,
            "sending snapshot to client"
        );
        // Encoding is CPU work on a copy of the state: off the runtime's
        // worker threads, one chunk ahead of the client at most a few.
        #[cfg(not(madsim))]
        tokio::task::spawn_blocking(move || {
            stream_image(&source, header, |m| tx.blocking_send(Ok(m)).is_ok())
        });
        // The simulator has no blocking threads: encode first, then send.
        #[cfg(madsim)]
        tokio::spawn(async move {
            let mut messages = Vec::new();
            stream_image(&source, header, |m| {
                messages.push(m);
                true
            });
            for m in messages {
                if tx.send(Ok(m)).await.is_err() {
                    return;
                }
            }
        });
        Ok(tonic::Response::new(receiver_stream(rx)))
    }

    async fn move_leader(
        &self,
        _req: tonic::Request<MoveLeaderRequest>,
    ) -> Result<tonic::Response<MoveLeaderResponse>, Status> {
        Err(unimplemented("Maintenance.MoveLeader"))
    }

    async fn downgrade(
        &self,
        _req: tonic::Request<DowngradeRequest>,
    ) -> Result<tonic::Response<DowngradeResponse>, Status> {
        Err(unimplemented("Maintenance.Downgrade"))
    }
}
