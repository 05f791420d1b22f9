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
//!
//! A stream's first message carries the sender's boot ID. When a peer's boot
//! ID changes, the peer restarted: our stream to it may lead to the process
//! that is gone (a crash closes nothing), so our sender rebuilds it. A mere
//! reconnect (same boot ID) does not: rebuilding on every incoming stream
//! made two members rebuild each other's streams in turn, for ever, losing
//! what was in flight each time.

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
    /// `boot` identifies this process start (never 0).
    pub fn start(
        peers: Vec<(u64, String)>,
        dialer: Dialer,
        events: mpsc::Sender<PeerEvent>,
        drop_rate: f64,
        seed: u64,
        boot: u64,
    ) -> Self {
        let mut out = BTreeMap::new();
        let mut resets = BTreeMap::new();
        for (id, url) in peers {
            let (tx, rx) = mpsc::channel(PEER_QUEUE);
            let reset = Arc::new(Notify::new());
            let dialer = dialer.clone();
            tokio::spawn(sender(
                id,
                url,
                dialer,
                rx,
                events.clone(),
                reset.clone(),
                boot,
            ));
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

/// One peer's sender: connect, stream, reconnect with backoff.
async fn sender(
    id: u64,
    url: String,
    dialer: Dialer,
    mut rx: mpsc::Receiver<Message>,
    events: mpsc::Sender<PeerEvent>,
    reset: Arc<Notify>,
    boot: u64,
) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let client = match dialer.connect(&url).await {
            Some(c) => c,
            None => {
                let _ = events.try_send(PeerEvent::Unreachable(id));
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                // Drop what queued up while the peer was away: raft resends,
                // but it waits for a dropped snapshot's failure to be reported.
                while let Ok(m) = rx.try_recv() {
                    if m.get_msg_type() == MessageType::MsgSnapshot {
                        let _ = events
                            .send(PeerEvent::SnapshotSent { to: id, ok: false })
                            .await;
                    }
                }
                continue;
            }
        };
        backoff = Duration::from_millis(50);
        tracing::debug!(peer = format_args!("{id:x}"), "peer stream open");
        let Some(why) = stream(client, &mut rx, id, &events, &reset, boot).await else {
            return; // the event loop is gone
        };
        tracing::debug!(peer = format_args!("{id:x}"), why, "peer stream closed");
        let _ = events.try_send(PeerEvent::Unreachable(id));
    }
}

/// How a member dials its peers: plain text, or TLS for `https://` peer
/// URLs with the `--peer-*` files.
#[derive(Clone, Default)]
pub struct Dialer {
    #[cfg(not(madsim))]
    tls: Option<Arc<super::tls::ClientTls>>,
}

impl Dialer {
    /// A dialer presenting and checking certificates from `tls`.
    #[cfg(not(madsim))]
    pub fn with_tls(tls: Option<Arc<super::tls::ClientTls>>) -> Self {
        Self { tls }
    }

    async fn connect(&self, url: &str) -> Option<PeerClient<tonic::transport::Channel>> {
        #[cfg(not(madsim))]
        if let (Some(tls), true) = (&self.tls, super::config::is_https(url)) {
            return connect_tls(url, tls.clone()).await;
        }
        let endpoint = tonic::transport::Endpoint::from_shared(url.to_string())
            .ok()?
            .connect_timeout(PEER_IO_TIMEOUT);
        match tokio::time::timeout(PEER_IO_TIMEOUT, endpoint.connect()).await {
            Ok(Ok(channel)) => Some(PeerClient::new(channel)),
            _ => None,
        }
    }
}

/// Dials `url` (https://) over TCP and our own TLS handshake; tonic sees a
/// plain connection, so it never tries TLS of its own.
#[cfg(not(madsim))]
async fn connect_tls(
    url: &str,
    tls: Arc<super::tls::ClientTls>,
) -> Option<PeerClient<tonic::transport::Channel>> {
    let uri: http::Uri = url.parse().ok()?;
    let host = uri
        .host()?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(443);
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{}", uri.authority()?))
        .ok()?
        .connect_timeout(PEER_IO_TIMEOUT);
    let connector = tower::service_fn(move |_: http::Uri| {
        let (tls, host) = (tls.clone(), host.clone());
        async move {
            let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let conn = tls.connect(&host, tcp).await.inspect_err(|e| {
                tracing::warn!(peer_url = %format!("https://{host}:{port}"), error = %e, "TLS handshake with a peer failed");
            })?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(conn))
        }
    });
    match tokio::time::timeout(PEER_IO_TIMEOUT, endpoint.connect_with_connector(connector)).await {
        Ok(Ok(channel)) => Some(PeerClient::new(channel)),
        _ => None,
    }
}

/// Serves the peer service on `addr` until `shutdown`, over TLS when `tls`
/// is given (the listener's URL was https://).
pub async fn serve(
    addr: std::net::SocketAddr,
    svc: PeerService,
    tls: super::ListenerTls,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), super::ServeError> {
    let svc = crate::proto::cairnpb::peer_server::PeerServer::new(svc)
        .max_decoding_message_size(usize::MAX);
    let router = tonic::transport::Server::builder().add_service(svc);
    #[cfg(madsim)]
    let super::NoTls = tls;
    #[cfg(not(madsim))]
    if let Some(tls) = tls {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| super::ServeError::Bind { addr, source })?;
        return router
            .serve_with_incoming_shutdown(super::tls::incoming(listener, tls), shutdown)
            .await
            .map_err(|source| super::ServeError::Listen { addr, source });
    }
    router
        .serve_with_shutdown(addr, shutdown)
        .await
        .map_err(|source| super::ServeError::Listen { addr, source })
}

/// Streams messages to a connected peer until the stream breaks, stalls or
/// is reset (returns why) or the event loop drops the queue (`None`).
async fn stream(
    mut client: PeerClient<tonic::transport::Channel>,
    rx: &mut mpsc::Receiver<Message>,
    id: u64,
    events: &mpsc::Sender<PeerEvent>,
    reset: &Notify,
    mut boot: u64,
) -> Option<&'static str> {
    let (tx, mut out_rx) = mpsc::channel::<PeerMessage>(64);
    let outgoing = futures::stream::poll_fn(move |cx| out_rx.poll_recv(cx));
    let call = tokio::spawn(async move { client.stream(outgoing).await });
    let result = loop {
        let msg = tokio::select! {
            msg = rx.recv() => msg,
            () = reset.notified() => break Some("the peer reconnected to us"),
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
        crate::metrics::peer_sent(id, data.len());
        let message = PeerMessage {
            data: data.into(),
            boot: std::mem::take(&mut boot),
        };
        let sent = tokio::time::timeout(PEER_IO_TIMEOUT, tx.send(message)).await;
        let ok = matches!(sent, Ok(Ok(())));
        if is_snapshot {
            // Awaited, not tried: raft stalls that peer until it hears.
            let _ = events.send(PeerEvent::SnapshotSent { to: id, ok }).await;
        }
        if !ok {
            break Some("a send timed out");
        }
        if call.is_finished() {
            break Some("the call ended");
        }
    };
    call.abort();
    result
}

/// Serves incoming peer streams.
pub struct PeerService {
    /// Into the event loop.
    pub events: mpsc::Sender<PeerEvent>,
    /// Makes our sender to a peer rebuild its stream when the peer restarted.
    pub resets: Resets,
    /// The boot ID each peer's last stream started with.
    pub boots: Arc<std::sync::Mutex<BTreeMap<u64, u64>>>,
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
            crate::metrics::peer_received(msg.from, m.data.len());
            if std::mem::take(&mut first) && m.boot != 0 {
                let before = self
                    .boots
                    .lock()
                    .expect("the boot map is never left half-updated")
                    .insert(msg.from, m.boot);
                if before.is_some_and(|b| b != m.boot) {
                    if let Some(reset) = self.resets.get(&msg.from) {
                        tracing::debug!(peer = format_args!("{:x}", msg.from), "peer restarted");
                        reset.notify_one();
                    }
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
