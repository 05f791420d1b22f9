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
//! and hands it to the event loop. A new incoming stream from a peer means it
//! restarted or lost its connection, so our stream to it is rebuilt too,
//! unless ours is younger than [`RESET_MIN_AGE`] (which keeps two members from
//! resetting each other for ever).

use crate::proto::cairnpb::peer_client::PeerClient;
use crate::proto::cairnpb::peer_server::Peer;
use crate::proto::cairnpb::{PeerAck, PeerMessage};
use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Notify};

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

/// Messages [`Transport::send`] could not hand to a peer's sender.
#[derive(Debug, Default)]
pub struct Undelivered {
    /// Peers whose queue was full or closed.
    pub unreachable: Vec<u64>,
    /// Peers a snapshot message to was dropped.
    pub snapshot_failed: Vec<u64>,
}

impl Undelivered {
    /// Adds what another send could not deliver.
    pub fn extend(&mut self, other: Undelivered) {
        self.unreachable.extend(other.unreachable);
        self.snapshot_failed.extend(other.snapshot_failed);
    }
}

/// The event loop's handle on the per-peer senders.
#[derive(Default)]
pub struct Transport {
    peers: BTreeMap<u64, mpsc::Sender<Message>>,
    /// Per peer: wakes its sender to drop its stream and reconnect.
    resets: Resets,
    /// Messages dropped on purpose, per 2^32 (simulation only; 0 otherwise).
    drop_per_2_32: u64,
    /// Draws the drops.
    rng: super::SplitMix64,
}

impl Transport {
    /// Starts a sender task for every peer (`id`, peer URL).
    pub fn start(
        peers: Vec<(u64, String)>,
        events: mpsc::Sender<PeerEvent>,
        drop_rate: f64,
        seed: u64,
    ) -> Self {
        let mut out = BTreeMap::new();
        let mut resets = BTreeMap::new();
        for (id, url) in peers {
            let (tx, rx) = mpsc::channel(PEER_QUEUE);
            let reset = Arc::new(Notify::new());
            tokio::spawn(sender(id, url, rx, events.clone(), reset.clone()));
            out.insert(id, tx);
            resets.insert(id, reset);
        }
        Self {
            peers: out,
            resets: Arc::new(resets),
            drop_per_2_32: (drop_rate.clamp(0.0, 1.0) * f64::from(u32::MAX)) as u64,
            rng: super::SplitMix64::new(seed),
        }
    }

    /// The handles [`PeerService`] uses to make a sender reconnect.
    pub fn resets(&self) -> Resets {
        self.resets.clone()
    }

    /// Whether to drop the next message (only when a drop rate is set).
    fn drop_one(&mut self) -> bool {
        if self.drop_per_2_32 == 0 {
            return false;
        }
        (self.rng.next_u64() & 0xffff_ffff) < self.drop_per_2_32
    }

    /// Queues messages for their peers. Returns what raft must be told: the
    /// peers whose queue was full or closed, and the peers a snapshot message
    /// to was dropped (raft waits for a snapshot's outcome before it sends
    /// that peer anything else, so a silent drop would stall it for good).
    pub fn send(&mut self, messages: Vec<Message>) -> Undelivered {
        let mut out = Undelivered::default();
        for m in messages {
            let to = m.to;
            let is_snapshot = m.get_msg_type() == MessageType::MsgSnapshot;
            if !self.peers.contains_key(&to) {
                continue;
            }
            let delivered = if self.drop_one() {
                false
            } else if self.peers[&to].try_send(m).is_err() {
                out.unreachable.push(to);
                false
            } else {
                true
            };
            if is_snapshot && !delivered {
                out.snapshot_failed.push(to);
            }
        }
        out
    }
}

/// Per-peer signals that make a sender drop its stream and reconnect.
pub type Resets = Arc<BTreeMap<u64, Arc<Notify>>>;

/// How long a connect, or handing one message to the stream, may take before
/// the stream is presumed dead and rebuilt. A peer that died without closing
/// its connection (a crash, a partition) would otherwise swallow messages for
/// as long as flow control allows.
const PEER_IO_TIMEOUT: Duration = Duration::from_secs(1);

/// A reset (a peer opened a new stream to us) rebuilds our stream to that
/// peer only if ours is at least this old. Without it two members reset each
/// other for ever: A's new stream makes B rebuild, B's new stream makes A
/// rebuild, and so on, each rebuild a new TCP connection that loses the
/// messages in flight. Under `cairn bench` load that was 80–170 reconnects a
/// second per member, forwarded proposals timing out and follower ReadIndex
/// rounds lost for an election timeout (docs/benchmarks.md). A stream younger
/// than this was built after the peer's previous stream, so it is not the
/// stale kind the reset is for; if it is dead anyway, [`PEER_IO_TIMEOUT`]
/// rebuilds it.
const RESET_MIN_AGE: Duration = PEER_IO_TIMEOUT;

/// One peer's sender: connect, stream, reconnect with backoff.
async fn sender(
    id: u64,
    url: String,
    mut rx: mpsc::Receiver<Message>,
    events: mpsc::Sender<PeerEvent>,
    reset: Arc<Notify>,
) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let client = match connect(&url).await {
            Some(c) => c,
            None => {
                let _ = events.try_send(PeerEvent::Unreachable(id));
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                // Drop what queued up while the peer was away: raft resends.
                while rx.try_recv().is_ok() {}
                continue;
            }
        };
        backoff = Duration::from_millis(50);
        if stream(client, &mut rx, id, &events, &reset).await.is_none() {
            return; // the event loop is gone
        }
        let _ = events.try_send(PeerEvent::Unreachable(id));
    }
}

async fn connect(url: &str) -> Option<PeerClient<tonic::transport::Channel>> {
    let endpoint = tonic::transport::Endpoint::from_shared(url.to_string())
        .ok()?
        .connect_timeout(PEER_IO_TIMEOUT);
    match tokio::time::timeout(PEER_IO_TIMEOUT, endpoint.connect()).await {
        Ok(Ok(channel)) => Some(PeerClient::new(channel)),
        _ => None,
    }
}

/// Streams messages to a connected peer until the stream breaks, stalls or
/// is reset (returns `Some`) or the event loop drops the queue (`None`).
async fn stream(
    mut client: PeerClient<tonic::transport::Channel>,
    rx: &mut mpsc::Receiver<Message>,
    id: u64,
    events: &mpsc::Sender<PeerEvent>,
    reset: &Notify,
) -> Option<()> {
    let (tx, mut out_rx) = mpsc::channel::<PeerMessage>(64);
    let outgoing = futures::stream::poll_fn(move |cx| out_rx.poll_recv(cx));
    let call = tokio::spawn(async move { client.stream(outgoing).await });
    let opened = tokio::time::Instant::now();
    let result = loop {
        let msg = tokio::select! {
            msg = rx.recv() => msg,
            () = reset.notified() => {
                if opened.elapsed() >= RESET_MIN_AGE {
                    break Some(());
                }
                continue;
            }
        };
        let Some(msg) = msg else { break None };
        let is_snapshot = msg.get_msg_type() == MessageType::MsgSnapshot;
        let data = match msg.write_to_bytes() {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(peer = id, error = %e, "cannot encode raft message");
                continue;
            }
        };
        let sent =
            tokio::time::timeout(PEER_IO_TIMEOUT, tx.send(PeerMessage { data: data.into() })).await;
        let ok = matches!(sent, Ok(Ok(())));
        if is_snapshot {
            let _ = events.try_send(PeerEvent::SnapshotSent { to: id, ok });
        }
        if !ok || call.is_finished() {
            break Some(());
        }
    };
    call.abort();
    result
}

/// Serves incoming peer streams.
pub struct PeerService {
    /// Into the event loop.
    pub events: mpsc::Sender<PeerEvent>,
    /// A peer that opens a new stream to us has (re)started or lost its old
    /// connection; our stream to it may be dead too, so it is rebuilt.
    pub resets: Resets,
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn stream(
        &self,
        request: tonic::Request<tonic::Streaming<PeerMessage>>,
    ) -> Result<tonic::Response<PeerAck>, tonic::Status> {
        let mut stream = request.into_inner();
        let mut first = true;
        while let Some(m) = stream.message().await? {
            let msg = Message::parse_from_bytes(&m.data)
                .map_err(|e| tonic::Status::invalid_argument(format!("bad raft message: {e}")))?;
            if std::mem::take(&mut first) {
                if let Some(reset) = self.resets.get(&msg.from) {
                    reset.notify_one();
                }
            }
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
