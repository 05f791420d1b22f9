//! The peer transport: raft messages between members over gRPC streams.
//!
//! Each member runs one sender task per peer. A sender owns a bounded queue
//! ([`PEER_QUEUE`] messages); the event loop only ever `try_send`s into it, so
//! a slow or dead peer can never block the loop or the other peers. When a
//! queue is full the message is dropped and raft is told the peer is
//! unreachable (raft retransmits). A sender keeps one client stream open to
//! its peer and reconnects with exponential backoff (50 ms to 2 s) when it
//! breaks.
//!
//! Incoming streams are served by [`PeerService`], which decodes each message
//! and hands it to the event loop.

use crate::proto::cairnpb::peer_client::PeerClient;
use crate::proto::cairnpb::peer_server::Peer;
use crate::proto::cairnpb::{PeerAck, PeerMessage};
use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::mpsc;

/// Messages queued per peer before new ones are dropped.
pub const PEER_QUEUE: usize = 4096;

/// What the transport tells the event loop.
pub enum PeerEvent {
    /// A message from a peer.
    Message(Box<Message>),
    /// A peer could not be reached.
    Unreachable(u64),
    /// A snapshot message was handed to the peer's stream (`ok`) or lost.
    SnapshotSent { to: u64, ok: bool },
}

/// The event loop's handle on the per-peer senders.
#[derive(Default)]
pub struct Transport {
    peers: BTreeMap<u64, mpsc::Sender<Message>>,
}

impl Transport {
    /// Starts a sender task for every peer (`id`, peer URL).
    pub fn start(peers: Vec<(u64, String)>, events: mpsc::Sender<PeerEvent>) -> Self {
        let mut out = BTreeMap::new();
        for (id, url) in peers {
            let (tx, rx) = mpsc::channel(PEER_QUEUE);
            tokio::spawn(sender(id, url, rx, events.clone()));
            out.insert(id, tx);
        }
        Self { peers: out }
    }

    /// Queues messages for their peers; returns the peers whose queue was
    /// full or closed.
    pub fn send(&self, messages: Vec<Message>) -> Vec<u64> {
        let mut unreachable = Vec::new();
        for m in messages {
            let to = m.to;
            if let Some(tx) = self.peers.get(&to) {
                if tx.try_send(m).is_err() {
                    unreachable.push(to);
                }
            }
        }
        unreachable
    }
}

/// One peer's sender: connect, stream, reconnect with backoff.
async fn sender(
    id: u64,
    url: String,
    mut rx: mpsc::Receiver<Message>,
    events: mpsc::Sender<PeerEvent>,
) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let client = match PeerClient::connect(url.clone()).await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(peer = id, error = %e, "peer connect failed");
                let _ = events.try_send(PeerEvent::Unreachable(id));
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                // Drop what queued up while the peer was away: raft resends.
                while rx.try_recv().is_ok() {}
                continue;
            }
        };
        backoff = Duration::from_millis(50);
        if stream(client, &mut rx, id, &events).await.is_none() {
            return; // the event loop is gone
        }
        let _ = events.try_send(PeerEvent::Unreachable(id));
    }
}

/// Streams messages to a connected peer until the stream breaks (returns
/// `Some`) or the event loop drops the queue (returns `None`).
async fn stream(
    mut client: PeerClient<tonic::transport::Channel>,
    rx: &mut mpsc::Receiver<Message>,
    id: u64,
    events: &mpsc::Sender<PeerEvent>,
) -> Option<()> {
    let (tx, out_rx) = mpsc::channel::<PeerMessage>(64);
    let mut out_rx = out_rx;
    let outgoing = futures::stream::poll_fn(move |cx| out_rx.poll_recv(cx));
    let call = tokio::spawn(async move { client.stream(outgoing).await });
    loop {
        let msg = rx.recv().await?;
        let is_snapshot = msg.get_msg_type() == MessageType::MsgSnapshot;
        let data = match msg.write_to_bytes() {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(peer = id, error = %e, "cannot encode raft message");
                continue;
            }
        };
        let ok = tx.send(PeerMessage { data: data.into() }).await.is_ok();
        if is_snapshot {
            let _ = events.try_send(PeerEvent::SnapshotSent { to: id, ok });
        }
        if !ok || call.is_finished() {
            call.abort();
            return Some(());
        }
    }
}

/// Serves incoming peer streams.
pub struct PeerService {
    /// Into the event loop.
    pub events: mpsc::Sender<PeerEvent>,
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn stream(
        &self,
        request: tonic::Request<tonic::Streaming<PeerMessage>>,
    ) -> Result<tonic::Response<PeerAck>, tonic::Status> {
        let mut stream = request.into_inner();
        while let Some(m) = stream.message().await? {
            let msg = Message::parse_from_bytes(&m.data)
                .map_err(|e| tonic::Status::invalid_argument(format!("bad raft message: {e}")))?;
            if self
                .events
                .send(PeerEvent::Message(Box::new(msg)))
                .await
                .is_err()
            {
                return Err(tonic::Status::unavailable("member is stopping"));
            }
        }
        Ok(tonic::Response::new(PeerAck {}))
    }
}
