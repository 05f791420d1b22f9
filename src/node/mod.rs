//! The replicated node: raft-rs's `RawNode` around the MVCC store, sans-IO.
//!
//! # What it owns
//!
//! One [`Node`] is one cluster member's consensus and state machine. It owns
//! the `RawNode` (with a [`LogStore`] holding raft's log in memory), the MVCC
//! [`Store`] the log is applied to, and the bookkeeping that turns applied
//! entries and read indexes into replies. It never touches a socket, a file,
//! a clock or a random source: the driver (`crate::server` on tokio, the
//! simulator on madsim) feeds it inputs and carries out its outputs.
//!
//! # Inputs
//!
//! - [`Node::tick`]: one logical clock tick (the driver ticks every 100 ms).
//! - [`Node::step`]: a raft message from a peer.
//! - [`Node::propose`]: a client write with the ID the driver will match the
//!   reply to.
//! - [`Node::read`]: a client range read; serializable reads are answered at
//!   once from local state, linearizable ones wait for a ReadIndex.
//! - [`Node::report_unreachable`], [`Node::report_snapshot`]: what the
//!   transport learned about a peer.
//!
//! # Outputs, and the order the driver must keep
//!
//! [`Node::ready`] hands out a numbered [`Ready`] when raft has work. The
//! node has already applied the committed entries it carried (only entries
//! this member has persisted are ever handed out as committed) and put its
//! entries into raft's in-memory log. Persistence is asynchronous (raft-rs's
//! `advance_append_async`): the driver may call `ready` again, and keep
//! proposing, before earlier Readies are durable. For each Ready, in order:
//!
//! 1. it sends `messages` at once (a leader's appends go out while it fsyncs);
//! 2. it persists, in Ready order: `snapshot` if any (the snapshot file, then
//!    its WAL marker), then `entries` and `hard_state`, fsynced if
//!    `must_sync` (several Readies may share one fsync);
//! 3. once every Ready up to number `n` is durable it calls
//!    [`Node::persisted`]`(n)` and only then sends those Readies'
//!    `persisted_messages`: votes and append acknowledgements promise
//!    durability. Whatever persisting unblocks (a commit, entries to apply,
//!    the leader's commit broadcast) comes out of the next `ready`.
//!
//! Replies to proposals and reads accumulate; [`Node::take_replies`] drains
//! them. A snapshot this node took of its own state (every `snapshot_count`
//! applied entries) waits in [`Node::take_snapshot`] for the driver to save.
//!
//! # Linearizable reads
//!
//! Reads that arrive between two `ready` calls share one ReadIndex request
//! (its context is a batch number). When raft returns the read index, the
//! batch waits until the applied index reaches it, then every read in it is
//! answered from the store. A batch whose ReadIndex got lost (a dropped
//! message, a leader change) is re-issued after an election timeout.
//!
//! # Invariants
//!
//! - The term never goes back and a vote never changes within a term (checked
//!   on every hard state raft hands out, before it is persisted).
//! - `applied <= committed`, and entries are applied exactly once, in order:
//!   `applied` only moves forward by one entry at a time, or jumps to a
//!   snapshot's index when one is installed.
//! - A reply goes out only for a request this node proposed (`proposed`).

mod alarms;
pub mod convert;
mod log_store;
mod logger;
mod maintenance;

pub use alarms::{alarm_error_string, cost, effective_quota, Alarms, DEFAULT_QUOTA_BYTES};
pub use log_store::LogStore;
pub use maintenance::DEFRAG_STEP_KEYS;

use crate::lease::{self, LeaseError, Lessor};
use crate::mvcc::{self, Store};
use crate::planted::{self, Bug};
use crate::proto::cairnpb::{
    raft_request::Request, LeaseExpire, LeaseRecord, MemberAttributes, MemberAttributesList,
    RaftRequest,
};
use crate::proto::etcdserverpb::{
    AlarmMember, AlarmResponse, CompactionResponse, DeleteRangeResponse, LeaseGrantResponse,
    LeaseKeepAliveResponse, LeaseRevokeResponse, PutResponse, RangeRequest, RangeResponse,
    ResponseHeader, TxnResponse,
};
use crate::proto::mvccpb::Event;
use crate::snap::{decode_sections, encode_sections_with, SectionKind};
use prost::Message as _;
use raft::eraftpb::{Entry, EntryType, HardState, Message, Snapshot};
use raft::{RawNode, SnapshotStatus, StateRole};
use std::collections::{BTreeMap, BTreeSet};

/// What a node is configured with. All of it comes from the driver.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This member's raft ID (never 0).
    pub id: u64,
    /// The cluster's ID, reported in every response header.
    pub cluster_id: u64,
    /// Every voting member's ID, this one included.
    pub voters: Vec<u64>,
    /// Election timeout in ticks. Each election's actual timeout is drawn
    /// from `[election_tick, 2 * election_tick)` with the node's own seeded
    /// generator (raft-rs would draw from an unseeded one): members whose
    /// timers run in step (they all restarted at once) must not keep
    /// splitting the vote.
    pub election_tick: usize,
    /// Seeds the election timeout draws.
    pub seed: u64,
    /// Heartbeat interval in ticks.
    pub heartbeat_tick: usize,
    /// Take a snapshot after this many applied entries.
    pub snapshot_count: u64,
    /// Entries kept in the log after a snapshot, for followers slightly behind.
    pub snapshot_catchup_entries: u64,
    /// Limit on ops per txn branch.
    pub max_txn_ops: usize,
    /// Milliseconds per tick of the driver's clock, nominally (its
    /// heartbeat interval; lease TTLs are in seconds).
    pub tick_ms: u64,
    /// The smallest lease TTL granted, in seconds (etcd: 1.5 election
    /// timeouts, rounded up).
    pub min_lease_ttl: i64,
    /// `--quota-backend-bytes`: 0 for etcd's default (2 GiB), `u64::MAX`
    /// for none.
    pub quota_backend_bytes: u64,
}

/// The response to a client request.
#[derive(Debug, Clone, PartialEq)]
pub enum Response {
    Range(RangeResponse),
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
    Compaction(CompactionResponse),
    LeaseGrant(LeaseGrantResponse),
    LeaseRevoke(LeaseRevokeResponse),
    /// A keep-alive was applied (TTL 0: the lease does not exist).
    LeaseRenew(LeaseKeepAliveResponse),
    /// An alarm request was applied.
    Alarm(AlarmResponse),
    /// This member's defragment is done.
    Defragmented,
    /// A member's attributes were recorded, or a lease expiry applied.
    Published,
}

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeError {
    /// The store refused it (deterministically, on every member).
    #[error(transparent)]
    Mvcc(#[from] mvcc::Error),
    /// The lessor refused it (deterministically, on every member).
    #[error(transparent)]
    Lease(#[from] LeaseError),
    /// No leader is known, so the proposal could not be forwarded.
    #[error("etcdserver: no leader")]
    NoLeader,
    /// The leader changed while a linearizable read waited for its read index.
    #[error("etcdserver: leader changed")]
    LeaderChanged,
    /// The write does not fit under the quota, or NOSPACE is active.
    #[error("etcdserver: mvcc: database space exceeded")]
    NoSpace,
    /// The member owes too many answers already (etcd's limit on work in
    /// flight); the client should back off and retry.
    #[error("etcdserver: too many requests")]
    TooManyRequests,
    /// CORRUPT is active: the member refuses writes.
    #[error("etcdserver: corrupt cluster")]
    Corrupt,
}

/// A reply to the request the driver tagged with `id`.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// The ID given to [`Node::propose`] or [`Node::read`].
    pub id: u64,
    /// The outcome.
    pub result: Result<Response, NodeError>,
}

/// Work for the driver; see the module docs for the order.
#[derive(Debug, Default)]
#[must_use]
pub struct Ready {
    /// Send now, before persisting.
    pub messages: Vec<Message>,
    /// A snapshot from the leader, already installed in memory: save it (file,
    /// then WAL marker) before the entries.
    pub snapshot: Option<Snapshot>,
    /// Append to the WAL.
    pub entries: Vec<Entry>,
    /// Write to the WAL.
    pub hard_state: Option<HardState>,
    /// Whether the WAL must be fsynced before `persisted`.
    pub must_sync: bool,
    /// Send after the WAL is durable.
    pub persisted_messages: Vec<Message>,
    /// Raft's number for this Ready: pass it to [`Node::persisted`] once this
    /// Ready and every earlier one are durable.
    pub number: u64,
}

/// A member's state, for Maintenance.Status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeStatus {
    pub leader: u64,
    pub term: u64,
    pub commit: u64,
    pub applied: u64,
    pub revision: i64,
    pub is_leader: bool,
    /// The database size the quota counts (see `alarms`).
    pub db_size: u64,
    /// The bytes the store's retained history holds now.
    pub db_size_in_use: u64,
    /// The quota in force, in bytes.
    pub quota: u64,
}

/// What recovery hands a node: the state on disk.
#[derive(Debug, Default)]
pub struct Recovery {
    /// The MVCC state as of `snapshot` (empty without one).
    pub store: Store,
    /// The newest snapshot, in raft's form, data included.
    pub snapshot: Option<Snapshot>,
    /// The last hard state from the WAL.
    pub hard_state: HardState,
    /// WAL entries after the snapshot.
    pub entries: Vec<Entry>,
    /// Members' published attributes as of the snapshot.
    pub members: Vec<MemberAttributes>,
    /// Leases as of the snapshot.
    pub leases: Vec<LeaseRecord>,
    /// Alarms as of the snapshot.
    pub alarms: Alarms,
}

/// Linearizable reads waiting on one ReadIndex round.
type ReadBatch = Vec<(u64, RangeRequest)>;

/// One member. See the module docs.
pub struct Node {
    raw: RawNode<LogStore>,
    kv: Store,
    cfg: NodeConfig,
    /// Index of the last entry applied to `kv`.
    applied: u64,
    /// Index of the newest snapshot taken or installed.
    snapshot_index: u64,
    /// Logical time, in ticks since start.
    ticks: u64,
    /// IDs of writes this member proposed and has not answered.
    proposed: BTreeSet<u64>,
    /// Linearizable reads not yet sent for a read index.
    reads_waiting: ReadBatch,
    /// Read index requests in flight: context number -> (tick sent, reads).
    reads_in_flight: BTreeMap<u64, (u64, ReadBatch)>,
    /// Reads whose read index is known, waiting for `applied` to reach it.
    reads_ready: Vec<(u64, ReadBatch)>,
    /// Context number of the next ReadIndex request.
    next_read_ctx: u64,
    /// Replies not yet taken by the driver.
    replies: Vec<Reply>,
    /// A snapshot of this member's own state for the driver to save.
    snapshot_to_save: Option<Snapshot>,
    /// The leader as of the last soft-state change (0: none known).
    leader: u64,
    /// Members' published attributes, by member ID (replicated state).
    members: BTreeMap<u64, MemberAttributes>,
    /// The last hard state raft handed out, for the invariant checks.
    last_hard_state: HardState,
    /// Leases (replicated) and their deadlines (this member's).
    lessor: Lessor,
    /// Draws election timeouts.
    rng: crate::rng::SplitMix64,
    /// (term, role, leader) when the election timeout was last drawn: raft
    /// resets the timeout whenever one of them changes.
    drawn_for: (u64, StateRole, u64),
    /// Events of applied writes not yet taken by the driver (for watchers).
    events: Vec<Event>,
    /// Bumped whenever the store is replaced by a snapshot: watchers must
    /// then catch up from the new store's history.
    store_generation: u64,
    /// The active alarms (replicated).
    alarms: Alarms,
    /// The quota in force, in bytes.
    quota_bytes: u64,
    /// This member's database size (see `alarms`): never below the store's
    /// bytes in use.
    db_size: u64,
    /// When this member last proposed its NOSPACE alarm (ticks).
    nospace_proposed_at: Option<u64>,
    /// The defragment under way, if any.
    defrag: Option<maintenance::Defrag>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.cfg.id)
            .field("applied", &self.applied)
            .finish_non_exhaustive()
    }
}

impl Node {
    /// Builds a member from what recovery found on disk (or nothing, for a new
    /// member). Fails if raft-rs rejects the configuration.
    pub fn new(cfg: NodeConfig, rec: Recovery) -> raft::Result<Self> {
        let snapshot_index = rec.snapshot.as_ref().map_or(0, |s| s.get_metadata().index);
        let replay_twice: Vec<Entry> = if planted::active(Bug::ApplyTwiceAfterRestart) {
            let commit = rec.hard_state.commit;
            rec.entries
                .iter()
                .filter(|e| e.index > snapshot_index && e.index <= commit)
                .cloned()
                .collect()
        } else {
            Vec::new()
        };
        let last_hard_state = rec.hard_state.clone();
        let store = LogStore::recovered(
            cfg.voters.clone(),
            rec.snapshot,
            rec.hard_state,
            rec.entries,
        );
        let raft_cfg = raft::Config {
            id: cfg.id,
            election_tick: cfg.election_tick,
            min_election_tick: cfg.election_tick,
            max_election_tick: 2 * cfg.election_tick,
            heartbeat_tick: cfg.heartbeat_tick,
            applied: snapshot_index,
            max_size_per_msg: 1024 * 1024,
            max_inflight_msgs: 256,
            pre_vote: true,
            check_quorum: true,
            read_only_option: raft::ReadOnlyOption::Safe,
            ..Default::default()
        };
        raft_cfg.validate()?;
        let mut raw = RawNode::new(&raft_cfg, store, &logger::raft_logger(cfg.id))?;
        // A one-member cluster has nobody to wait for.
        if cfg.voters == [cfg.id] {
            raw.campaign()?;
        }
        let members = rec.members.into_iter().map(|m| (m.member_id, m)).collect();
        let mut lessor = Lessor::new(cfg.min_lease_ttl, cfg.tick_ms);
        lessor.restore(&rec.leases, rec.store.leased_keys(), 0);
        let db_size = rec.store.bytes_in_use();
        let mut node = Self {
            alarms: rec.alarms,
            quota_bytes: alarms::effective_quota(cfg.quota_backend_bytes),
            db_size,
            nospace_proposed_at: None,
            defrag: None,
            rng: crate::rng::SplitMix64::new(cfg.seed),
            drawn_for: (u64::MAX, StateRole::Follower, 0),
            lessor,
            events: Vec::new(),
            store_generation: 0,
            members,
            last_hard_state,
            raw,
            kv: rec.store.with_max_txn_ops(cfg.max_txn_ops),
            cfg,
            applied: snapshot_index,
            snapshot_index,
            ticks: 0,
            proposed: BTreeSet::new(),
            reads_waiting: Vec::new(),
            reads_in_flight: BTreeMap::new(),
            reads_ready: Vec::new(),
            next_read_ctx: 1,
            replies: Vec::new(),
            snapshot_to_save: None,
            leader: 0,
        };
        node.draw_election_timeout();
        for entry in replay_twice {
            // Planted bug: raft will deliver these entries again.
            if let Ok(req) = RaftRequest::decode(entry.data.clone()) {
                let _ = node.apply_request(entry.index, req.request);
            }
        }
        Ok(node)
    }

    /// Advances logical time by one tick.
    pub fn tick(&mut self) {
        self.raw.tick();
        self.ticks += 1;
        // A ReadIndex lost in transit or to a leader change is never
        // answered: retry it after an election timeout.
        let stale_after = self.cfg.election_tick as u64;
        let stale: Vec<u64> = self
            .reads_in_flight
            .iter()
            .filter(|(_, (sent, _))| self.ticks - sent > stale_after)
            .map(|(ctx, _)| *ctx)
            .collect();
        for ctx in stale {
            let (_, reads) = self.reads_in_flight.remove(&ctx).expect("listed above");
            self.reads_waiting.extend(reads);
        }
        if self.raw.raft.state == StateRole::Leader {
            // Expire through the log, so every member deletes the keys at the
            // same revision; retried if the proposal is lost.
            let retry = self.cfg.election_tick as u64;
            for (id, renewed_at) in self.lessor.expired(self.ticks, retry, 64) {
                let data = RaftRequest {
                    id: 0,
                    request: Some(Request::LeaseExpire(LeaseExpire { id, renewed_at })),
                }
                .encode_to_vec();
                let _ = self.raw.propose(Vec::new(), data);
            }
        }
    }

    /// Feeds a raft message from a peer. Messages from unknown members or
    /// stale terms are dropped by raft; nothing a peer sends can panic the node.
    pub fn step(&mut self, msg: Message) {
        if let Err(e) = self.raw.step(msg) {
            tracing::debug!(error = %e, "dropped raft message");
        }
    }

    /// Proposes a client write. The reply arrives once it is applied, or at
    /// once with [`NodeError::NoLeader`] if raft cannot take it.
    pub fn propose(&mut self, id: u64, request: Request) {
        // etcd checks the quota before proposing too, and raises the alarm
        // for a write that would not fit.
        if !self.fits(alarms::cost(&request)) {
            self.raise_nospace();
            self.replies.push(Reply {
                id,
                result: Err(NodeError::NoSpace),
            });
            return;
        }
        let data = RaftRequest {
            id,
            request: Some(request),
        }
        .encode_to_vec();
        match self.raw.propose(Vec::new(), data) {
            Ok(()) => {
                self.proposed.insert(id);
            }
            Err(_) => self.replies.push(Reply {
                id,
                result: Err(NodeError::NoLeader),
            }),
        }
    }

    /// Reads a range: at once from local state if `serializable`, else after
    /// a ReadIndex confirms this member has every committed write.
    pub fn read(&mut self, id: u64, request: RangeRequest) {
        if request.serializable || planted::active(Bug::ReadsWithoutReadIndex) {
            let result = self.range(&request);
            self.replies.push(Reply { id, result });
        } else {
            self.reads_waiting.push((id, request));
        }
    }

    /// The transport could not reach `peer`.
    pub fn report_unreachable(&mut self, peer: u64) {
        self.raw.report_unreachable(peer);
    }

    /// The transport finished (or failed) sending a snapshot to `peer`.
    pub fn report_snapshot(&mut self, peer: u64, ok: bool) {
        let status = if ok {
            SnapshotStatus::Finish
        } else {
            SnapshotStatus::Failure
        };
        self.raw.report_snapshot(peer, status);
    }

    /// The next batch of work, if any. See the module docs for what the
    /// driver must do with it; earlier Readies need not be persisted yet.
    pub fn ready(&mut self) -> Option<Ready> {
        if !self.reads_waiting.is_empty() {
            let ctx = self.next_read_ctx;
            self.next_read_ctx += 1;
            self.raw.read_index(ctx.to_le_bytes().to_vec());
            let reads = std::mem::take(&mut self.reads_waiting);
            self.reads_in_flight.insert(ctx, (self.ticks, reads));
        }
        self.draw_election_timeout();
        if !self.raw.has_ready() {
            return None;
        }
        let mut rd = self.raw.ready();
        if let Some(ss) = rd.ss() {
            if ss.leader_id != self.leader {
                self.leader = ss.leader_id;
                if self.leader == self.cfg.id {
                    // The old leader's countdowns are not ours to trust.
                    self.lessor
                        .promote(self.ticks, self.cfg.election_tick as u64);
                }
                // A ReadIndex sent to the old leader will not be answered.
                for (id, _) in std::mem::take(&mut self.reads_in_flight)
                    .into_values()
                    .flat_map(|(_, r)| r)
                {
                    self.replies.push(Reply {
                        id,
                        result: Err(NodeError::LeaderChanged),
                    });
                }
            }
        }
        for rs in rd.take_read_states() {
            let ctx = rs.request_ctx.as_slice().try_into().map(u64::from_le_bytes);
            if let Some((_, reads)) = ctx.ok().and_then(|c| self.reads_in_flight.remove(&c)) {
                self.reads_ready.push((rs.index, reads));
            }
        }
        let snapshot = (!rd.snapshot().is_empty()).then(|| rd.snapshot().clone());
        if let Some(snap) = &snapshot {
            self.install_snapshot(snap);
        }
        self.apply(rd.take_committed_entries());
        let entries = rd.take_entries();
        self.raw.mut_store().append(&entries);
        let hard_state = rd.hs().cloned();
        if let Some(hs) = &hard_state {
            // Raft's safety rests on these: a term never goes back, and a vote
            // cast in a term is never changed within it. Compared with the
            // last hard state raft handed out (installing a snapshot may have
            // raised the log store's term without a vote for it).
            let old = &self.last_hard_state;
            assert!(
                hs.term >= old.term,
                "term went back from {} to {}",
                old.term,
                hs.term
            );
            assert!(
                hs.term > old.term || old.vote == 0 || hs.vote == old.vote,
                "vote changed within term {} from {} to {}",
                hs.term,
                old.vote,
                hs.vote
            );
            self.last_hard_state = hs.clone();
            self.raw.mut_store().set_hard_state(hs.clone());
        }
        let out = Ready {
            messages: rd.take_messages(),
            snapshot,
            entries,
            hard_state,
            must_sync: rd.must_sync(),
            persisted_messages: rd.take_persisted_messages(),
            number: rd.number(),
        };
        // The entries and hard state are in raft's Storage (above), as
        // raft-rs requires before this call.
        self.raw.advance_append_async(rd);
        self.advance_applied();
        Some(out)
    }

    /// The driver made every [`Ready`] up to `number` durable. What that
    /// unblocks comes out of the next [`Node::ready`].
    pub fn persisted(&mut self, number: u64) {
        self.raw.on_persist_ready(number);
        self.advance_applied();
    }

    /// Tells raft how far this node has applied. Raft only accepts an index
    /// it knows is persisted, and an installed snapshot counts as applied
    /// before it is: the report waits for the persistence.
    fn advance_applied(&mut self) {
        let log = &self.raw.raft.raft_log;
        let to = self.applied.min(log.persisted).min(log.committed);
        if to > log.applied {
            self.raw.advance_apply_to(to);
        }
    }

    /// Replies ready for the driver.
    pub fn take_replies(&mut self) -> Vec<Reply> {
        std::mem::take(&mut self.replies)
    }

    /// A snapshot of this member's state to save, when one was taken.
    pub fn take_snapshot(&mut self) -> Option<Snapshot> {
        self.snapshot_to_save.take()
    }

    /// This member's state, for Maintenance.Status.
    pub fn status(&self) -> NodeStatus {
        let raft = &self.raw.raft;
        NodeStatus {
            leader: raft.leader_id,
            term: raft.term,
            commit: raft.raft_log.committed,
            applied: self.applied,
            revision: self.kv.current_revision(),
            is_leader: raft.state == StateRole::Leader,
            db_size: self.db_size,
            db_size_in_use: self.kv.bytes_in_use(),
            quota: self.quota_bytes,
        }
    }

    /// Starts handing leadership to the voter whose log is longest, as
    /// etcd's graceful stop does, so the cluster does not wait an election
    /// timeout for a new leader. Returns the transferee, or `None` when this
    /// member is not the leader or no other voter was heard from lately
    /// (etcd skips the transfer when no peer is connected).
    pub fn transfer_leadership(&mut self) -> Option<u64> {
        let raft = &self.raw.raft;
        if raft.state != StateRole::Leader {
            return None;
        }
        let voters = raft.prs().conf().voters().ids();
        let target = raft
            .prs()
            .iter()
            // A peer not heard from this election timeout may be down:
            // handing over to it would leave the cluster leaderless.
            .filter(|(id, pr)| **id != self.cfg.id && voters.contains(**id) && pr.recent_active)
            .max_by_key(|(id, pr)| (pr.matched, std::cmp::Reverse(**id)))
            .map(|(id, _)| *id)?;
        self.raw.transfer_leader(target);
        Some(target)
    }

    /// The configured election timeout, in ticks.
    pub fn election_tick(&self) -> usize {
        self.cfg.election_tick
    }

    /// This member's ID.
    pub fn id(&self) -> u64 {
        self.cfg.id
    }

    /// Members' published attributes, by member ID.
    pub fn members(&self) -> Vec<MemberAttributes> {
        self.members.values().cloned().collect()
    }

    /// The MVCC store, for reads the driver serves itself (HashKV, watchers
    /// catching up).
    pub fn store(&self) -> &Store {
        &self.kv
    }

    /// The lessor, for the lease queries the driver serves itself.
    pub fn lessor(&self) -> &Lessor {
        &self.lessor
    }

    /// The leader this member knows, 0 if none. Cheap, unlike
    /// [`Node::status`], which sizes the store: it is asked on every tick and
    /// for every request that carries `hasleader`.
    pub fn leader(&self) -> u64 {
        self.raw.raft.leader_id
    }

    /// Logical time, in ticks since this member started.
    pub fn ticks(&self) -> u64 {
        self.ticks
    }

    /// Events of the writes applied since the last call, in revision order.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// Changes whenever a snapshot replaced the store (events between the old
    /// store and the new one are then only in the new store's history).
    pub fn store_generation(&self) -> u64 {
        self.store_generation
    }

    /// Fills the header of a response the driver builds itself.
    pub fn fill_header(&self, header: &mut Option<ResponseHeader>, revision: i64) {
        self.header(header);
        if let Some(h) = header {
            h.revision = revision;
        }
    }

    /// Replaces the timeout raft drew (from its unseeded generator) when it
    /// last reset its election timer, before the next tick can use it.
    /// `ready` runs after every input, so no tick sees raft's own draw.
    fn draw_election_timeout(&mut self) {
        let raft = &self.raw.raft;
        let now = (raft.term, raft.state, raft.leader_id);
        if now == self.drawn_for {
            return;
        }
        self.drawn_for = now;
        let base = self.cfg.election_tick;
        let timeout = base + (self.rng.next_u64() % base as u64) as usize;
        self.raw.raft.set_randomized_election_timeout(timeout);
    }

    /// Fills the header fields only the node knows.
    fn header(&self, header: &mut Option<ResponseHeader>) {
        let h = header.get_or_insert_with(Default::default);
        h.cluster_id = self.cfg.cluster_id;
        h.member_id = self.cfg.id;
        h.raft_term = self.raw.raft.term;
    }

    fn range(&self, req: &RangeRequest) -> Result<Response, NodeError> {
        let mut resp = self.kv.range(req)?;
        self.header(&mut resp.header);
        Ok(Response::Range(resp))
    }

    fn install_snapshot(&mut self, snap: &Snapshot) {
        let index = snap.get_metadata().index;
        let store = crate::storage::store_from_data("raft snapshot", snap.data.clone())
            // The leader encoded it with the same code; failing here means a broken invariant.
            .unwrap_or_else(|e| {
                panic!("snapshot at index {index} from the leader does not decode: {e}")
            });
        self.kv = store.with_max_txn_ops(self.cfg.max_txn_ops);
        self.members = members_from_data(&snap.data)
            .into_iter()
            .map(|m| (m.member_id, m))
            .collect();
        let leases = leases_from_data(&snap.data);
        self.lessor
            .restore(&leases, self.kv.leased_keys(), self.ticks);
        self.alarms = alarms_from_data(&snap.data);
        self.db_size = self.db_size.max(self.kv.bytes_in_use());
        self.events.clear();
        self.store_generation += 1;
        self.raw.mut_store().apply_snapshot(snap.clone());
        self.applied = index;
        self.snapshot_index = index;
        self.serve_reads();
    }

    fn apply(&mut self, entries: Vec<Entry>) {
        if let Some(last) = entries.last() {
            let committed = self.raw.raft.raft_log.committed;
            assert!(
                last.index <= committed,
                "applying {} past the commit index {committed}",
                last.index
            );
        }
        for entry in entries {
            assert_eq!(
                entry.index,
                self.applied + 1,
                "entries are applied in order, exactly once"
            );
            self.applied = entry.index;
            if entry.get_entry_type() != EntryType::EntryNormal || entry.data.is_empty() {
                // Leader no-ops; membership is static, so no conf changes are proposed.
                continue;
            }
            let req = match RaftRequest::decode(entry.data.clone()) {
                Ok(r) => r,
                Err(e) => {
                    // Every member sees the same bytes, so skipping is deterministic.
                    tracing::error!(index = entry.index, error = %e, "skipping undecodable entry");
                    continue;
                }
            };
            let result = self.apply_guarded(entry.index, req.request);
            if self.proposed.remove(&req.id) {
                self.replies.push(Reply { id: req.id, result });
            }
        }
        self.serve_reads();
        self.maybe_snapshot();
    }

    fn apply_request(
        &mut self,
        index: u64,
        request: Option<Request>,
    ) -> Result<Response, NodeError> {
        let (mut response, events) = match request {
            Some(Request::Attributes(a)) => {
                self.members.insert(a.member_id, a);
                return Ok(Response::Published);
            }
            Some(Request::Put(r)) => {
                if r.lease != 0 && !r.ignore_lease && !self.lessor.exists(r.lease) {
                    return Err(LeaseError::NotFound.into());
                }
                let (resp, events) = self.kv.put(&r)?;
                (Response::Put(resp), events)
            }
            Some(Request::DeleteRange(r)) => {
                let (resp, events) = self.kv.delete_range(&r)?;
                (Response::DeleteRange(resp), events)
            }
            Some(Request::Txn(r)) => {
                if self
                    .kv
                    .txn_leases(&r)
                    .iter()
                    .any(|id| !self.lessor.exists(*id))
                {
                    return Err(LeaseError::NotFound.into());
                }
                let (resp, events) = self.kv.txn(&r)?;
                (Response::Txn(resp), events)
            }
            Some(Request::Compaction(r)) => (Response::Compaction(self.kv.compact(&r)?), vec![]),
            Some(Request::LeaseGrant(r)) => {
                let ttl = self.lessor.grant(&r, index, self.ticks)?;
                let resp = LeaseGrantResponse {
                    header: None,
                    id: r.id,
                    ttl,
                    error: String::new(),
                };
                (Response::LeaseGrant(resp), vec![])
            }
            Some(Request::LeaseRevoke(r)) => {
                let keys = self.lessor.revoke(r.id)?;
                let events = self.kv.delete_keys(&keys);
                (
                    Response::LeaseRevoke(LeaseRevokeResponse::default()),
                    events,
                )
            }
            Some(Request::LeaseRenew(r)) => {
                let ttl = self.lessor.renew(r.id, index, self.ticks).unwrap_or(0);
                let resp = LeaseKeepAliveResponse {
                    header: None,
                    id: r.id,
                    ttl,
                };
                (Response::LeaseRenew(resp), vec![])
            }
            Some(Request::LeaseExpire(r)) => {
                let keys = self.lessor.expire(r.id, r.renewed_at).unwrap_or_default();
                let events = self.kv.delete_keys(&keys);
                (Response::Published, events)
            }
            Some(Request::Alarm(a)) => {
                // `apply_guarded` answers alarm requests; kept total here.
                return Ok(Response::Alarm(self.alarms.apply(&a)));
            }
            None => return Err(mvcc::Error::KeyNotFound.into()),
        };
        if !events.is_empty() {
            self.lessor.on_events(&events);
            self.events.extend(events);
        }
        let revision = self.kv.current_revision();
        let header = match &mut response {
            Response::Range(r) => &mut r.header,
            Response::Put(r) => &mut r.header,
            Response::DeleteRange(r) => &mut r.header,
            Response::Txn(r) => &mut r.header,
            Response::Compaction(r) => &mut r.header,
            Response::LeaseGrant(r) => &mut r.header,
            Response::LeaseRevoke(r) => &mut r.header,
            Response::LeaseRenew(r) => &mut r.header,
            Response::Alarm(r) => &mut r.header,
            Response::Published | Response::Defragmented => return Ok(response),
        };
        if header.is_none() {
            *header = Some(ResponseHeader {
                revision,
                ..Default::default()
            });
        }
        self.header(header);
        Ok(response)
    }

    fn serve_reads(&mut self) {
        let applied = self.applied;
        let (now, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.reads_ready)
            .into_iter()
            .partition(|(index, _)| *index <= applied);
        self.reads_ready = later;
        for (id, req) in now.into_iter().flat_map(|(_, reads)| reads) {
            let result = self.range(&req);
            self.replies.push(Reply { id, result });
        }
    }

    fn maybe_snapshot(&mut self) {
        if self.applied - self.snapshot_index < self.cfg.snapshot_count {
            return;
        }
        let members = MemberAttributesList {
            members: self.members(),
        }
        .encode_to_vec();
        // The previous snapshot's data is not needed once this one exists:
        // let it go first, so the process never holds two.
        self.raw.mut_store().release_snapshot_data();
        let leases = self.lessor.encode();
        let alarms = self.alarms.encode();
        let kv = &self.kv;
        // The MVCC state (nearly all of it) is written in place, and last, so
        // nothing appended after it makes the buffer grow.
        let data = encode_sections_with(&mut [
            (
                SectionKind::Lease,
                Box::new(|b: &mut Vec<u8>| b.extend_from_slice(&leases)),
            ),
            (
                SectionKind::Members,
                Box::new(|b: &mut Vec<u8>| b.extend_from_slice(&members)),
            ),
            (
                SectionKind::Alarms,
                Box::new(|b: &mut Vec<u8>| b.extend_from_slice(&alarms)),
            ),
            (
                SectionKind::Mvcc,
                Box::new(|b: &mut Vec<u8>| kv.encode_into(b)),
            ),
        ]);
        let mut snap = Snapshot {
            data: data.into(),
            ..Default::default()
        };
        let meta = snap.mut_metadata();
        meta.index = self.applied;
        meta.term = raft::Storage::term(self.raw.store(), self.applied)
            .expect("the applied entry is in the log");
        meta.set_conf_state(self.raw.store().conf_state().clone());
        let keep_from = self
            .applied
            .saturating_sub(self.cfg.snapshot_catchup_entries)
            + 1;
        self.raw.mut_store().set_snapshot(snap.clone(), keep_from);
        self.snapshot_index = self.applied;
        self.snapshot_to_save = Some(snap);
    }
}

#[cfg(test)]
mod tests;

/// One section of snapshot data, if present and the data decodes.
fn section(data: &bytes::Bytes, kind: SectionKind) -> Option<bytes::Bytes> {
    decode_sections(data.clone())
        .ok()?
        .into_iter()
        .find(|(k, _)| *k == kind)
        .map(|(_, bytes)| bytes)
}

/// Members' attributes out of snapshot data; none if the section is absent
/// (a snapshot from before members published) or does not decode.
pub fn members_from_data(data: &bytes::Bytes) -> Vec<MemberAttributes> {
    section(data, SectionKind::Members)
        .and_then(|bytes| MemberAttributesList::decode(bytes).ok())
        .map(|l| l.members)
        .unwrap_or_default()
}

/// Leases out of snapshot data; none if the section is absent.
pub fn leases_from_data(data: &bytes::Bytes) -> Vec<LeaseRecord> {
    section(data, SectionKind::Lease)
        .map(lease::records_from_section)
        .unwrap_or_default()
}

/// Alarms out of snapshot data; none if the section is absent.
pub fn alarms_from_data(data: &bytes::Bytes) -> Alarms {
    Alarms::from_section(section(data, SectionKind::Alarms))
}

/// The active alarms as etcd's Status lists them in `errors`.
pub fn alarm_errors(alarms: &[AlarmMember]) -> Vec<String> {
    alarms.iter().map(alarm_error_string).collect()
}
