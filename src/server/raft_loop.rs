//! The event loop: the one task that owns the [`Node`], the WAL and the
//! snapshot store.
//!
//! It feeds the node its inputs (ticks, peer messages, client commands),
//! then runs every `Ready` through the order `crate::node` documents: send,
//! save a received snapshot, append and fsync, `persisted`, send what may only
//! leave after the fsync. Many client commands are drained into the node
//! before one `Ready`, so they share one WAL write and one fsync (group
//! commit). A storage error ends the loop: the node must stop rather than
//! carry on without knowing what is durable.

use super::peer::{PeerEvent, Transport};
use crate::disk::Disk;
use crate::mvcc::{self, HashKv};
use crate::node::convert::{entry_to_wal, hard_state_to_wal, snapshot_to_file};
use crate::node::{Node, NodeError, NodeStatus, Response};
use crate::planted::{self, Bug};
use crate::proto::cairnpb::{raft_request::Request, MemberAttributes};
use crate::proto::etcdserverpb::{
    AlarmMember, LeaseLeasesResponse, LeaseStatus, LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
    RangeRequest, WatchRequest, WatchResponse,
};
use crate::snap::SnapStore;
use crate::wal::{SnapshotMarker, Wal};
use crate::watch::WatchHub;
use raft::eraftpb::Snapshot;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// Commands drained into the node before one `Ready` (bounds one batch).
const MAX_BATCH: usize = 1024;

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
pub struct RaftLoop<D: Disk> {
    pub node: Node,
    pub wal: Wal<D>,
    pub snaps: SnapStore<D>,
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
    /// Extra fsync latency the simulator injects (zero otherwise), and the
    /// the generator that draws it.
    pub sync_latency_max: Duration,
    pub rng: super::SplitMix64,
    /// Every watcher of this member.
    pub watches: WatchHub,
    /// Where each watch stream's responses go (bounded: a full stream waits).
    pub watch_streams: BTreeMap<u64, WatchStreamOut>,
}

impl<D: Disk> RaftLoop<D> {
    /// Runs until `shutdown` fires or the command channel closes; then syncs
    /// the WAL. A leader asked to stop first hands leadership to the voter
    /// with the longest log and runs on until it has (at most an election
    /// timeout), as etcd's graceful stop does. Returns a storage error if
    /// one stopped the node.
    pub async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut peers: mpsc::Receiver<PeerEvent>,
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
                        self.wal.sync()?;
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
                cmd = commands.recv() => {
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
            self.process().await?;
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
        self.wal.sync()?;
        Ok(())
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
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

    /// Runs every pending `Ready` through persistence and the transport.
    async fn process(&mut self) -> crate::Result<()> {
        while let Some(rd) = self.node.ready() {
            let mut undelivered = self.transport.send(rd.messages);
            if let Some(snap) = &rd.snapshot {
                self.save_snapshot(snap)?;
            }
            if !rd.entries.is_empty() {
                let entries: Vec<_> = rd.entries.iter().map(entry_to_wal).collect();
                self.wal.append(&entries)?;
            }
            if let Some(hs) = &rd.hard_state {
                if !planted::active(Bug::SkipHardStateSync) {
                    self.wal.set_hard_state(hard_state_to_wal(hs))?;
                }
            }
            // Planted bug: acknowledge now, fsync at the next tick.
            if rd.must_sync && !planted::active(Bug::AckBeforeFsync) {
                crate::metrics::time_wal_fsync(|| self.wal.sync())?;
                self.slow_disk().await;
            }
            let more = self.node.persisted();
            undelivered.extend(self.transport.send(more));
            undelivered.extend(self.transport.send(rd.persisted_messages));
            for peer in undelivered.unreachable {
                self.node.report_unreachable(peer);
            }
            for peer in undelivered.snapshot_failed {
                self.node.report_snapshot(peer, false);
            }
        }
        if let Some(snap) = self.node.take_snapshot() {
            self.save_snapshot(&snap)?;
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

    /// The simulator's slow disk: the loop stalls as it would in a long fsync.
    async fn slow_disk(&mut self) {
        if self.sync_latency_max.is_zero() {
            return;
        }
        let max = self.sync_latency_max.as_micros().max(1) as u64;
        tokio::time::sleep(Duration::from_micros(self.rng.next_u64() % max)).await;
    }

    /// Saves a snapshot durably, then marks it in the WAL and drops the
    /// segments it makes redundant. The file comes first: recovery trusts that
    /// a snapshot exists for every marker.
    fn save_snapshot(&mut self, snap: &Snapshot) -> crate::Result<()> {
        let meta = snap.get_metadata();
        let marker = SnapshotMarker {
            index: meta.index,
            term: meta.term,
        };
        self.snaps.save(&snapshot_to_file(snap))?;
        self.wal.mark_snapshot(marker)?;
        self.wal.sync()?;
        self.wal.release_to(marker.index)?;
        tracing::info!(index = marker.index, term = marker.term, "saved snapshot");
        Ok(())
    }
}
