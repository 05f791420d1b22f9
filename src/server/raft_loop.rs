//! The event loop: the one task that owns the [`Node`].
//!
//! It feeds the node its inputs (ticks, peer messages, client commands),
//! then runs every `Ready` through the order `crate::node` documents: send
//! its messages, hand its disk work to the persistence worker
//! (`super::persist`, which owns the WAL and the snapshot store), and, once
//! the worker reports it durable, `persisted` and the messages that may only
//! leave after the fsync. The loop never waits for the disk: while an fsync
//! runs it keeps taking proposals, ticking and sending appends, and the
//! worker writes everything queued meanwhile with one fsync (group commit).
//! A storage error ends the loop: the node must stop rather than carry on
//! without knowing what is durable.

use super::peer::{PeerEvent, Transport};
use super::persist::{Done, Job};
use crate::mvcc::{self, HashKv};
use crate::node::convert::{entry_to_wal, hard_state_to_wal};
use crate::node::{Node, NodeError, NodeStatus, Response};
use crate::planted::{self, Bug};
use crate::proto::cairnpb::{raft_request::Request, MemberAttributes};
use crate::proto::etcdserverpb::{
    AlarmMember, LeaseLeasesResponse, LeaseStatus, LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
    RangeRequest, WatchRequest, WatchResponse,
};
use crate::watch::WatchHub;
use raft::eraftpb::Message;
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// Commands drained into the node before one `Ready` (bounds one batch).
const MAX_BATCH: usize = 1024;

/// Readies handed to the persistence worker and not yet durable, at most:
/// past it the loop stops taking client commands (ticks and peer messages
/// still flow) until the disk catches up.
const MAX_UNPERSISTED: usize = 64;

/// Client requests waiting for an answer, at most: past it new ones get
/// etcd's "too many requests" at once (etcd's bound is 5,000 committed but
/// unapplied entries; cairn applies as it commits, so it bounds what it
/// owes instead).
pub const MAX_WAITING: usize = 5000;

/// Where a client's answer goes.
pub type ReplyTx = oneshot::Sender<Result<Response, NodeError>>;

/// What the gRPC services ask of the loop.
pub enum Command {
    /// A write to replicate.
    Propose(Request, ReplyTx),
    /// A range read (linearizable unless it says serializable).
    Read(RangeRequest, ReplyTx),
    /// This member's raft and store status.
    Status(oneshot::Sender<NodeStatus>),
    /// This member's status and the active alarms (Maintenance.Status).
    MaintenanceStatus(oneshot::Sender<(NodeStatus, Vec<AlarmMember>)>),
    /// Defragment this member's store (answered when it is done).
    Defragment(ReplyTx),
    /// A point-in-time copy of the state for a backup (Maintenance.Snapshot).
    Snapshot(oneshot::Sender<(crate::snap::image::ImageSource, NodeStatus)>),
    /// The hash of this member's whole state (Maintenance.Hash).
    Hash(oneshot::Sender<(u32, NodeStatus)>),
    /// The store's hash at a revision.
    HashKv(i64, oneshot::Sender<Result<HashKv, mvcc::Error>>),
    /// Members' published attributes, with this member's status.
    Members(oneshot::Sender<(Vec<MemberAttributes>, NodeStatus)>),
    /// A new watch stream, numbered by the service, and where its responses go.
    WatchOpen(u64, WatchStreamOut),
    /// A request on a watch stream.
    Watch(u64, WatchRequest),
    /// The client is gone: drop the stream's watchers.
    WatchClose(u64),
    /// A lease's remaining time, as this member counts it.
    LeaseTimeToLive(
        LeaseTimeToLiveRequest,
        oneshot::Sender<LeaseTimeToLiveResponse>,
    ),
    /// Every lease.
    LeaseLeases(oneshot::Sender<LeaseLeasesResponse>),
    /// The leader this member knows (0: none), for requests that carry
    /// `hasleader`.
    Leader(oneshot::Sender<u64>),
}

/// Where a watch stream's output goes.
pub struct WatchStreamOut {
    /// Its responses (bounded: a full stream waits in the hub).
    pub responses: mpsc::Sender<WatchResponse>,
    /// Set if the client sent `hasleader`: the error that ends the stream
    /// when the member has had no leader for `no_leader_cancel_ticks`.
    pub ended: Option<oneshot::Sender<NodeError>>,
}

/// The loop's state. See the module docs.
pub struct RaftLoop {
    pub node: Node,
    /// Disk work for the persistence worker.
    pub persist: tokio::sync::mpsc::UnboundedSender<Job>,
    /// Readies sent to the worker and not yet durable: their numbers and the
    /// messages that must wait for it.
    pub unpersisted: VecDeque<(u64, Vec<Message>)>,
    pub transport: Transport,
    /// Clients waiting for a reply, by request ID.
    pub waiting: BTreeMap<u64, ReplyTx>,
    /// The next request ID. IDs start from the member ID and the wall clock
    /// (as etcd's do) so they never repeat across restarts.
    pub next_id: u64,
    /// Wall time per tick.
    pub tick_interval: Duration,
    /// What this member publishes about itself once a leader is known.
    pub attributes: MemberAttributes,
    /// Whether the cluster has applied `attributes` since this start.
    pub published: bool,
    /// The ID of the publish proposal in flight.
    pub publish_id: Option<u64>,
    /// Every watcher of this member.
    pub watches: WatchHub,
    /// Where each watch stream's responses go (bounded: a full stream waits).
    pub watch_streams: BTreeMap<u64, WatchStreamOut>,
}

impl RaftLoop {
    /// Runs until `shutdown` fires or the command channel closes; then lets
    /// the persistence worker finish and sync. A leader asked to stop first
    /// hands leadership to the voter with the longest log and runs on until
    /// it has (at most an election timeout), as etcd's graceful stop does.
    /// Returns a storage error if one stopped the node.
    pub async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut peers: mpsc::Receiver<PeerEvent>,
        mut persisted: mpsc::UnboundedReceiver<Done>,
        mut shutdown: watch::Receiver<bool>,
    ) -> crate::Result<()> {
        let mut ticker = tokio::time::interval(self.tick_interval);
        let mut ticks: u64 = 0;
        // Set once shutdown was asked for while this member led: the tick by
        // which leadership must have moved, or the loop stops anyway.
        let mut handing_over: Option<u64> = None;
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    if planted::active(Bug::AckBeforeFsync) {
                        // The planted bug's deferred fsync.
                        self.queue_disk(Job::Sync)?;
                    }
                    self.node.tick();
                    self.watches.tick(self.node.store());
                    for stream in self.watches.leader_tick(self.node.leader() != 0) {
                        self.end_watch_stream(stream, NodeError::NoLeader);
                    }
                    ticks += 1;
                    if ticks.is_multiple_of(10) {
                        // Drop the senders of clients that gave up (timed out).
                        self.waiting.retain(|_, tx| !tx.is_closed());
                        let gone: Vec<u64> = self
                            .watch_streams
                            .iter()
                            .filter(|(_, out)| out.responses.is_closed())
                            .map(|(id, _)| *id)
                            .collect();
                        for id in gone {
                            self.close_watch_stream(id);
                        }
                    }
                }
                done = persisted.recv() => {
                    match done {
                        Some(Done::Persisted(number)) => self.persisted(number),
                        Some(Done::Failed(e)) => return Err(e),
                        None => return Err(worker_gone()),
                    }
                }
                cmd = commands.recv(), if self.unpersisted.len() < MAX_UNPERSISTED => {
                    let Some(cmd) = cmd else { break };
                    self.command(cmd);
                    for _ in 0..MAX_BATCH {
                        match commands.try_recv() {
                            Ok(cmd) => self.command(cmd),
                            Err(_) => break,
                        }
                    }
                }
                event = peers.recv() => {
                    let Some(event) = event else { break };
                    self.peer_event(event);
                    for _ in 0..MAX_BATCH {
                        match peers.try_recv() {
                            Ok(event) => self.peer_event(event),
                            Err(_) => break,
                        }
                    }
                }
                // A defragment goes on a step at a time between batches.
                () = std::future::ready(()), if self.node.defragmenting() => {
                    self.node.defragment_step();
                }
                _ = shutdown.changed(), if handing_over.is_none() => {
                    let Some(to) = self.node.transfer_leadership() else { break };
                    tracing::info!(transferee = format_args!("{to:x}"), "leader stopping: transferring leadership");
                    handing_over = Some(ticks + self.node.election_tick() as u64);
                }
            }
            self.publish();
            self.process()?;
            self.feed_watchers();
            if let Some(deadline) = handing_over {
                let status = self.node.status();
                if !status.is_leader || ticks >= deadline {
                    tracing::info!(
                        leader = format_args!("{:x}", status.leader),
                        "stopping the event loop"
                    );
                    break;
                }
            }
        }
        // The worker writes what is queued, syncs and stops.
        drop(self.persist);
        while let Some(done) = persisted.recv().await {
            if let Done::Failed(e) = done {
                return Err(e);
            }
        }
        Ok(())
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Propose(_, tx) | Command::Read(_, tx) if self.waiting.len() >= MAX_WAITING => {
                let _ = tx.send(Err(NodeError::TooManyRequests));
            }
            Command::Propose(mut request, tx) => {
                let id = self.next_id();
                if let Request::LeaseGrant(g) = &mut request {
                    if g.id == 0 {
                        // The proposer picks the ID, so every member applies the same one.
                        g.id = (id & i64::MAX as u64).max(1) as i64;
                    }
                }
                self.waiting.insert(id, tx);
                self.node.propose(id, request);
            }
            Command::Read(request, tx) => {
                let id = self.next_id();
                self.waiting.insert(id, tx);
                self.node.read(id, request);
            }
            // Either status refreshes the gauges a scrape reads (the
            // scrape asks for one).
            Command::Status(tx) => {
                self.observe();
                let _ = tx.send(self.node.status());
            }
            Command::MaintenanceStatus(tx) => {
                self.observe();
                let _ = tx.send((self.node.status(), self.node.alarms()));
            }
            Command::Defragment(tx) => {
                let id = self.next_id();
                self.waiting.insert(id, tx);
                self.node.defragment(id);
            }
            Command::Snapshot(tx) => {
                let _ = tx.send((self.node.image_source(), self.node.status()));
            }
            Command::Hash(tx) => {
                let _ = tx.send((self.node.hash(), self.node.status()));
            }
            Command::HashKv(rev, tx) => {
                let _ = tx.send(self.node.store().hash_kv(rev));
            }
            Command::Members(tx) => {
                let _ = tx.send((self.node.members(), self.node.status()));
            }
            Command::WatchOpen(stream, out) => {
                if out.ended.is_some() {
                    self.watches.open_requiring_leader(stream);
                } else {
                    self.watches.open(stream);
                }
                self.watch_streams.insert(stream, out);
            }
            Command::Watch(stream, req) => self.watches.request(stream, req, self.node.store()),
            Command::WatchClose(stream) => self.close_watch_stream(stream),
            Command::LeaseTimeToLive(req, tx) => {
                let mut resp = LeaseTimeToLiveResponse {
                    id: req.id,
                    ttl: -1,
                    ..Default::default()
                };
                if let Some(t) = self.node.lessor().time_to_live(req.id, self.node.ticks()) {
                    resp.ttl = t.remaining;
                    resp.granted_ttl = t.granted;
                    if req.keys {
                        resp.keys = t.keys;
                    }
                }
                self.node
                    .fill_header(&mut resp.header, self.node.store().current_revision());
                let _ = tx.send(resp);
            }
            Command::LeaseLeases(tx) => {
                let mut resp = LeaseLeasesResponse {
                    header: None,
                    leases: (self.node.lessor().ids().into_iter())
                        .map(|id| LeaseStatus { id })
                        .collect(),
                };
                self.node
                    .fill_header(&mut resp.header, self.node.store().current_revision());
                let _ = tx.send(resp);
            }
            Command::Leader(tx) => {
                let _ = tx.send(self.node.leader());
            }
        }
    }

    fn close_watch_stream(&mut self, stream: u64) {
        self.watches.close(stream);
        self.watch_streams.remove(&stream);
    }

    /// Ends a stream the hub has already dropped, telling its client why.
    fn end_watch_stream(&mut self, stream: u64, why: NodeError) {
        if let Some(out) = self.watch_streams.remove(&stream) {
            tracing::info!(stream, reason = %why, "ending watch stream");
            if let Some(ended) = out.ended {
                let _ = ended.send(why);
            }
        }
    }

    /// Hands the events applied since the last round to the watchers, lets
    /// those behind catch up, and sends what fits into each stream.
    fn feed_watchers(&mut self) {
        self.watches.store_generation(self.node.store_generation());
        let events = self.node.take_events();
        self.watches.on_events(&events, self.node.store());
        self.watches.catch_up(self.node.store());
        for stream in self.watches.pending_streams() {
            let Some(tx) = self.watch_streams.get(&stream).map(|o| &o.responses) else {
                self.watches.close(stream);
                continue;
            };
            if tx.is_closed() {
                self.close_watch_stream(stream);
                continue;
            }
            while tx.capacity() > 0 {
                let Some(mut resp) = self.watches.pop(stream) else {
                    break;
                };
                let revision = resp.header.as_ref().map_or(0, |h| h.revision);
                self.node.fill_header(&mut resp.header, revision);
                let _ = tx.try_send(resp);
            }
        }
    }

    /// Proposes this member's attributes (name, client URLs) until the
    /// cluster has applied them once, as etcd's publish does, so MemberList
    /// on any member can show them. Proposed as soon as a leader is known;
    /// proposed again if it fails.
    fn publish(&mut self) {
        if self.published || self.publish_id.is_some() || self.node.status().leader == 0 {
            return;
        }
        let id = self.next_id();
        self.publish_id = Some(id);
        self.node
            .propose(id, Request::Attributes(self.attributes.clone()));
    }

    /// Sets the watcher and key gauges of `/metrics` from the loop's state.
    fn observe(&self) {
        crate::metrics::observe_loop(self.watches.watchers(), self.node.store().key_count());
    }

    fn next_id(&mut self) -> u64 {
        self.next_id = self.next_id.wrapping_add(1);
        self.next_id
    }

    fn peer_event(&mut self, event: PeerEvent) {
        match event {
            PeerEvent::Message(m) => self.node.step(*m),
            PeerEvent::Unreachable(id) => self.node.report_unreachable(id),
            PeerEvent::SnapshotSent { to, ok } => self.node.report_snapshot(to, ok),
        }
    }

    /// Hands every pending `Ready` to the transport and the persistence
    /// worker, and answers the clients whose replies are ready.
    fn process(&mut self) -> crate::Result<()> {
        while let Some(rd) = self.node.ready() {
            let undelivered = self.transport.send(rd.messages);
            self.undelivered(undelivered);
            self.queue_disk(Job::Ready {
                number: rd.number,
                snapshot: rd.snapshot.map(Box::new),
                entries: rd.entries.iter().map(entry_to_wal).collect(),
                hard_state: rd.hard_state.as_ref().map(hard_state_to_wal),
                must_sync: rd.must_sync,
            })?;
            self.unpersisted
                .push_back((rd.number, rd.persisted_messages));
        }
        if let Some(snap) = self.node.take_snapshot() {
            self.queue_disk(Job::Snapshot(Box::new(snap)))?;
        }
        for reply in self.node.take_replies() {
            if Some(reply.id) == self.publish_id {
                self.publish_id = None;
                self.published = reply.result.is_ok();
                if self.published {
                    tracing::info!("published member attributes");
                }
                continue;
            }
            if let Some(tx) = self.waiting.remove(&reply.id) {
                let _ = tx.send(reply.result);
            }
        }
        Ok(())
    }

    /// The worker made every Ready up to `number` durable: tell the node, and
    /// send what had to wait for it.
    fn persisted(&mut self, number: u64) {
        self.node.persisted(number);
        while let Some((n, _)) = self.unpersisted.front() {
            if *n > number {
                break;
            }
            let (_, messages) = self.unpersisted.pop_front().expect("front exists");
            let undelivered = self.transport.send(messages);
            self.undelivered(undelivered);
        }
    }

    fn undelivered(&mut self, undelivered: super::peer::Undelivered) {
        for peer in undelivered.unreachable {
            self.node.report_unreachable(peer);
        }
        for peer in undelivered.snapshot_failed {
            self.node.report_snapshot(peer, false);
        }
    }

    fn queue_disk(&mut self, job: Job) -> crate::Result<()> {
        self.persist.send(job).map_err(|_| worker_gone())
    }
}

/// The persistence worker stopped without saying why (it reports its
/// errors first, so this is a worker that panicked).
fn worker_gone() -> crate::Error {
    crate::Error::Io {
        op: "persist",
        file: "the persistence worker".into(),
        source: std::io::Error::other("stopped without reporting an error"),
    }
}
