//! One simulated run: a cluster of real cairn servers on madsim's simulated
//! runtime, network and disks, clients recording a history, a nemesis
//! injecting the seed's faults, and the checks at the end.
//!
//! Everything random derives from the seed: madsim seeds its runtime (task
//! scheduling, network latency, `rand`), and the fault plan comes from
//! [`Swarm::draw`]. The same seed replays the same run, which
//! [`Outcome::trace_hash`] (a hash of the whole history) lets a test verify.
// Under madsim, `Instant::now` is the simulated clock, not the machine's.
#![allow(clippy::disallowed_methods)]

use crate::check::lease::{check_leases, LeaseViolation};
use crate::check::watch::{check_watches, WatchViolation};
use crate::check::{self, Stats, Violation};
use crate::faults::{SeedRng, Swarm};
use crate::history::{Call, Extra, History, Kv, LeaseCall, LeaseOp, Op, Ret, WatchRecord};
use cairn::disk::{DiskOp, MemDisk};
use cairn::proto::etcdserverpb::{
    compare::{CompareResult, CompareTarget, TargetUnion},
    kv_client::KvClient,
    maintenance_client::MaintenanceClient,
    request_op::Request as OpRequest,
    response_op::Response as OpResponse,
    Compare, DeleteRangeRequest, HashKvRequest, PutRequest, RangeRequest, RequestOp, StatusRequest,
    TxnRequest,
};
use cairn::server::config::{ClusterState, InjectedFaults, ServerConfig};
use madsim::net::NetSim;
use madsim::rand::{thread_rng, Rng};
use madsim::runtime::{Handle, NodeHandle};
use madsim::time::{sleep, timeout, Instant};
use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

mod watch_lease;

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    pub seed: u64,
    /// Simulated time clients run for (faults stop a little before).
    pub duration: Duration,
    pub members: usize,
    pub clients: usize,
    /// Clients that watch.
    pub watchers: usize,
    /// Clients that use leases.
    pub lease_clients: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            seed: 0,
            duration: Duration::from_secs(30),
            members: 3,
            clients: 4,
            watchers: 2,
            lease_clients: 2,
        }
    }
}

/// Which check failed.
#[derive(Debug, Clone)]
pub enum Failure {
    /// The history is not linearizable (or its revisions are inconsistent).
    History(Violation),
    /// After every fault healed, the cluster did not serve in time.
    Liveness(String),
    /// Members applied different states.
    Divergence(String),
    /// A range read contradicted itself.
    Range(String),
    /// A watch guarantee broke.
    Watch(WatchViolation),
    /// A lease rule broke.
    Lease(LeaseViolation),
    /// Something panicked: a broken invariant inside the server (raft-rs's
    /// or cairn's own asserts) or in the runner.
    Panic(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::History(v) => write!(f, "history check failed: {v}"),
            Failure::Liveness(s) => write!(f, "liveness: {s}"),
            Failure::Divergence(s) => write!(f, "replica agreement: {s}"),
            Failure::Panic(s) => write!(f, "panic: {s}"),
            Failure::Range(s) => write!(f, "range read: {s}"),
            Failure::Watch(v) => write!(f, "watch check failed: {v}"),
            Failure::Lease(v) => write!(f, "lease check failed: {v}"),
        }
    }
}

/// What one run did and found.
#[derive(Debug)]
pub struct Outcome {
    pub seed: u64,
    pub swarm: Swarm,
    /// FNV-1a over the history's text: equal for equal runs.
    pub trace_hash: u64,
    pub ops: usize,
    pub unknown: usize,
    /// Watchers created, and events they received.
    pub watchers: usize,
    pub watch_events: usize,
    /// Lease client operations.
    pub lease_ops: usize,
    /// Faults the nemesis injected, in order.
    pub faults: Vec<String>,
    /// Members that refused to start because recovery found corruption.
    pub detected_corruption: Vec<String>,
    pub sim_elapsed: Duration,
    pub result: Result<Stats, Failure>,
}

impl Outcome {
    /// The outcome of a run that panicked before it could report.
    pub fn panicked(seed: u64, message: String) -> Self {
        Self {
            seed,
            swarm: Swarm::draw(seed),
            trace_hash: fnv(&message),
            ops: 0,
            unknown: 0,
            watchers: 0,
            watch_events: 0,
            lease_ops: 0,
            faults: Vec::new(),
            detected_corruption: Vec::new(),
            sim_elapsed: Duration::ZERO,
            result: Err(Failure::Panic(message)),
        }
    }
}

fn ip(i: usize) -> IpAddr {
    // TEST-NET-1 (RFC 5737): documentation addresses that exist only inside
    // the simulation.
    IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1 + i as u8))
}

fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// One member's disks, held outside the member so they outlive its crashes.
#[derive(Clone, Default)]
struct Disks {
    wal: MemDisk,
    snap: MemDisk,
}

/// Shared between the nemesis, the members and the runner.
#[derive(Default)]
struct Shared {
    history: Mutex<History>,
    /// Members whose server stopped with an error, and why.
    stopped: Mutex<BTreeMap<usize, String>>,
    /// Range and watch responses that contradicted themselves.
    anomalies: Mutex<Vec<String>>,
    watches: Mutex<Vec<WatchRecord>>,
    leases: Mutex<Vec<LeaseOp>>,
}

fn server_config(i: usize, members: usize, skew: f64, faults: InjectedFaults) -> ServerConfig {
    let initial_cluster = (0..members)
        .map(|j| (format!("n{j}"), vec![format!("http://{}:2380", ip(j))]))
        .collect();
    ServerConfig {
        name: format!("n{i}"),
        data_dir: format!("n{i}").into(),
        listen_client: vec![SocketAddr::new(ip(i), 2379)],
        advertise_client_urls: vec![format!("http://{}:2379", ip(i))],
        listen_peer: vec![SocketAddr::new(ip(i), 2380)],
        initial_cluster,
        initial_cluster_state: ClusterState::New,
        initial_cluster_token: "sim".into(),
        snapshot_count: 200,
        snapshot_catchup_entries: 50,
        quota_backend_bytes: 1 << 31,
        max_request_bytes: 1_572_864,
        max_txn_ops: 128,
        heartbeat_interval: Duration::from_millis(100),
        election_timeout: Duration::from_secs(1),
        watch_progress_notify_interval: Duration::from_secs(600),
        auto_compaction: None,
        storage: Default::default(),
        grpc: Default::default(),
        tls: Default::default(),
        tick_interval: Duration::from_secs_f64(0.1 * skew),
        faults,
        http: Default::default(),
    }
}

fn start_member(
    handle: &Handle,
    i: usize,
    members: usize,
    disks: Disks,
    (skew, faults): (f64, InjectedFaults),
    shared: Arc<Shared>,
) -> NodeHandle {
    let cfg = server_config(i, members, skew, faults);
    handle
        .create_node()
        .name(format!("n{i}"))
        .ip(ip(i))
        .init(move || {
            let (cfg, disks, shared) = (cfg.clone(), disks.clone(), shared.clone());
            async move {
                let seed = thread_rng().gen::<u64>();
                let result = cairn::server::serve_on(
                    cfg,
                    disks.wal,
                    disks.snap,
                    seed,
                    std::future::pending(),
                )
                .await;
                if let Err(e) = result {
                    tracing::info!(member = i, error = %e, "member stopped");
                    shared
                        .stopped
                        .lock()
                        .expect("lock")
                        .insert(i, e.to_string());
                }
            }
        })
        .build()
}

async fn connect(i: usize) -> Option<Channel> {
    let ep = Endpoint::from_shared(format!("http://{}:2379", ip(i)))
        .ok()?
        .connect_timeout(Duration::from_secs(1));
    timeout(Duration::from_secs(1), ep.connect())
        .await
        .ok()?
        .ok()
}

fn kv_of(kv: &cairn::proto::mvccpb::KeyValue) -> Kv {
    Kv {
        value: String::from_utf8_lossy(&kv.value).into_owned(),
        mod_revision: kv.mod_revision,
        create_revision: kv.create_revision,
        version: kv.version,
    }
}

/// How a failed request is recorded: a write may have applied unless the
/// error proves it did not.
fn failed_ret(status: &tonic::Status) -> Ret {
    let msg = status.message();
    let not_applied = msg == "etcdserver: no leader"
        || msg == "etcdserver: leader changed"
        || matches!(
            status.code(),
            tonic::Code::InvalidArgument | tonic::Code::OutOfRange
        );
    if not_applied {
        Ret::Failed
    } else {
        Ret::Unknown
    }
}

/// Reads every key in one range and checks the answer against itself: keys
/// ascending and unique, the count matching, no key newer than the header's
/// revision, and each key's metadata consistent. Errors other than a broken
/// response (timeouts, no leader) are not anomalies.
async fn range_all(client: &mut KvClient<Channel>) -> Result<(), String> {
    let req = RangeRequest {
        key: "k".into(),
        range_end: "l".into(),
        ..Default::default()
    };
    let Ok(Ok(resp)) = timeout(Duration::from_secs(3), client.range(req)).await else {
        return Ok(());
    };
    let r = resp.into_inner();
    let rev = r.header.map_or(0, |h| h.revision);
    if r.count != r.kvs.len() as i64 || r.more {
        return Err(format!(
            "range count {} but {} kvs (more={})",
            r.count,
            r.kvs.len(),
            r.more
        ));
    }
    for pair in r.kvs.windows(2) {
        if pair[0].key >= pair[1].key {
            return Err(format!(
                "range keys out of order: {:?} then {:?}",
                pair[0].key, pair[1].key
            ));
        }
    }
    for kv in &r.kvs {
        let ok = kv.mod_revision <= rev && kv.create_revision <= kv.mod_revision && kv.version >= 1;
        if !ok {
            return Err(format!("range at revision {rev} returned {kv:?}"));
        }
    }
    Ok(())
}

/// Sends one call; returns what it got.
async fn perform(client: &mut KvClient<Channel>, call: &Call) -> Result<Ret, tonic::Status> {
    let key = bytes::Bytes::from(call.key().to_string());
    match call {
        Call::Put { value, .. } => {
            let r = client
                .put(PutRequest {
                    key,
                    value: value.clone().into(),
                    ..Default::default()
                })
                .await?
                .into_inner();
            Ok(Ret::Put {
                revision: r.header.map_or(0, |h| h.revision),
            })
        }
        Call::Get { .. } => {
            let r = client
                .range(RangeRequest {
                    key,
                    ..Default::default()
                })
                .await?
                .into_inner();
            Ok(Ret::Get {
                revision: r.header.map_or(0, |h| h.revision),
                kv: r.kvs.first().map(kv_of),
            })
        }
        Call::Delete { .. } => {
            let r = client
                .delete_range(DeleteRangeRequest {
                    key,
                    ..Default::default()
                })
                .await?
                .into_inner();
            Ok(Ret::Delete {
                revision: r.header.map_or(0, |h| h.revision),
                deleted: r.deleted,
            })
        }
        Call::Cas {
            expect_mod_revision,
            value,
            ..
        } => {
            let txn = TxnRequest {
                compare: vec![Compare {
                    key: key.clone(),
                    target: CompareTarget::Mod as i32,
                    result: CompareResult::Equal as i32,
                    target_union: Some(TargetUnion::ModRevision(*expect_mod_revision)),
                    ..Default::default()
                }],
                success: vec![RequestOp {
                    request: Some(OpRequest::RequestPut(PutRequest {
                        key: key.clone(),
                        value: value.clone().into(),
                        ..Default::default()
                    })),
                }],
                failure: vec![RequestOp {
                    request: Some(OpRequest::RequestRange(RangeRequest {
                        key,
                        ..Default::default()
                    })),
                }],
            };
            let r = client.txn(txn).await?.into_inner();
            let kv = match r.responses.first().and_then(|o| o.response.as_ref()) {
                Some(OpResponse::ResponseRange(rr)) => rr.kvs.first().map(kv_of),
                _ => None,
            };
            Ok(Ret::Cas {
                revision: r.header.map_or(0, |h| h.revision),
                succeeded: r.succeeded,
                kv,
            })
        }
    }
}

const KEYS: &[&str] = &["k0", "k1", "k2", "k3", "k4"];

/// One client: random operations against random members until `until`.
async fn client_loop(id: u32, members: usize, shared: Arc<Shared>, start: Instant, until: Instant) {
    let mut rng = thread_rng();
    let mut target = rng.gen_range(0..members);
    let mut client: Option<KvClient<Channel>> = None;
    let mut seen: BTreeMap<String, i64> = BTreeMap::new();
    let mut n = 0u64;
    while Instant::now() < until {
        let Some(c) = client.as_mut() else {
            match connect(target).await {
                Some(ch) => client = Some(KvClient::new(ch)),
                None => {
                    target = (target + 1) % members;
                    sleep(Duration::from_millis(100)).await;
                }
            }
            continue;
        };
        n += 1;
        if rng.gen_range(0..12) == 0 {
            // A range over every key. The history checker judges single-key
            // operations; a range is checked here for internal consistency.
            if let Err(why) = range_all(c).await {
                shared
                    .anomalies
                    .lock()
                    .expect("lock")
                    .push(format!("client {id}: {why}"));
            }
            continue;
        }
        let key = KEYS[rng.gen_range(0..KEYS.len())].to_string();
        let value = format!("c{id}-{n}");
        let call = match rng.gen_range(0..10) {
            0..=2 => Call::Put { key, value },
            3..=5 => Call::Get { key },
            6 => Call::Delete { key },
            _ => Call::Cas {
                expect_mod_revision: seen.get(&key).copied().unwrap_or(0),
                key,
                value,
            },
        };
        let invoke = start.elapsed().as_nanos() as u64;
        let ret = match timeout(Duration::from_secs(3), perform(c, &call)).await {
            Ok(Ok(ret)) => ret,
            Ok(Err(status)) => {
                let ret = failed_ret(&status);
                client = None;
                target = rng.gen_range(0..members);
                ret
            }
            Err(_) => {
                client = None;
                target = rng.gen_range(0..members);
                Ret::Unknown
            }
        };
        match &ret {
            Ret::Get { kv, .. } | Ret::Cas { kv, .. } => {
                seen.insert(
                    call.key().to_string(),
                    kv.as_ref().map_or(0, |k| k.mod_revision),
                );
            }
            _ => {}
        }
        let complete = (!matches!(ret, Ret::Unknown)).then(|| start.elapsed().as_nanos() as u64);
        shared.history.lock().expect("lock").push(Op {
            client: id,
            invoke,
            complete,
            call,
            ret,
        });
        sleep(Duration::from_millis(rng.gen_range(0..20))).await;
    }
}

/// Compacts the history now and then, a little behind the head, so reads
/// and compaction race as they do in a real cluster.
async fn compactor_loop(members: usize, until: Instant) {
    let mut rng = thread_rng();
    while Instant::now() < until {
        sleep(Duration::from_millis(rng.gen_range(1000..3000))).await;
        let Some(ch) = connect(rng.gen_range(0..members)).await else {
            continue;
        };
        let status = timeout(
            Duration::from_secs(2),
            MaintenanceClient::new(ch.clone()).status(StatusRequest {}),
        )
        .await;
        let Ok(Ok(status)) = status else { continue };
        let revision = status.into_inner().header.map_or(0, |h| h.revision) - 20;
        if revision > 1 {
            let req = cairn::proto::etcdserverpb::CompactionRequest {
                revision,
                physical: false,
            };
            let _ = timeout(Duration::from_secs(2), KvClient::new(ch).compact(req)).await;
        }
    }
}

/// The faults in force, so they can be healed.
struct Nemesis {
    handle: Handle,
    members: Vec<NodeHandle>,
    disks: Vec<Disks>,
    swarm: Swarm,
    log: Vec<String>,
    /// Members currently killed or paused (never more than a minority).
    down: BTreeMap<usize, &'static str>,
    /// Member that got a flipped bit (at most one, a minority of three).
    flipped: Option<usize>,
    start: Instant,
}

impl Nemesis {
    fn note(&mut self, what: String) {
        let t = self.start.elapsed().as_secs_f64();
        tracing::info!("nemesis at {t:.1}s: {what}");
        self.log.push(format!("{t:.1}s {what}"));
    }

    fn minority(&self) -> usize {
        (self.members.len() - 1) / 2
    }

    /// Injects one random enabled fault.
    async fn strike(&mut self, rng: &mut impl Rng) {
        let n = self.members.len();
        let m = rng.gen_range(0..n);
        match rng.gen_range(0..7) {
            0 if self.swarm.partitions => {
                let net = NetSim::current();
                match rng.gen_range(0..3) {
                    0 => {
                        // Random halves.
                        let side: Vec<bool> = (0..n).map(|_| rng.gen_bool(0.5)).collect();
                        for a in 0..n {
                            for b in 0..n {
                                if side[a] != side[b] {
                                    net.clog_link(self.members[a].id(), self.members[b].id());
                                }
                            }
                        }
                        self.note(format!("partition {side:?}"));
                    }
                    1 => {
                        // The leader when it can be found, else anyone.
                        let m = leader(n).await.unwrap_or(m);
                        net.clog_node(self.members[m].id());
                        self.note(format!("isolate n{m}"));
                    }
                    _ => {
                        let b = (m + 1 + rng.gen_range(0..n - 1)) % n;
                        net.clog_link(self.members[m].id(), self.members[b].id());
                        self.note(format!("one-way link n{m} -> n{b} cut"));
                    }
                }
            }
            1 if self.swarm.latency => {
                let max = rng.gen_range(5..50);
                NetSim::current().update_config(|c| {
                    c.send_latency = Duration::from_millis(1)..Duration::from_millis(max)
                });
                self.note(format!("latency up to {max} ms"));
            }
            2 if self.swarm.crashes
                && self.down.len() < self.minority()
                && !self.down.contains_key(&m) =>
            {
                self.handle.kill(self.members[m].id());
                let torn = self.swarm.torn_writes;
                let mut r = SeedRng::new(rng.gen());
                for disk in [&self.disks[m].wal, &self.disks[m].snap] {
                    disk.crash_with(|_, durable_len, tail| {
                        crash_tail(&mut r, torn, durable_len, tail)
                    });
                }
                self.down.insert(m, "killed");
                self.note(format!("kill n{m}"));
            }
            3 if self.swarm.pauses
                && self.down.len() < self.minority()
                && !self.down.contains_key(&m) =>
            {
                self.handle.pause(self.members[m].id());
                self.down.insert(m, "paused");
                self.note(format!("pause n{m}"));
            }
            4 if self.swarm.disk_errors
                && self.down.len() < self.minority()
                && !self.down.contains_key(&m) =>
            {
                let kind = if rng.gen_bool(0.5) {
                    io::ErrorKind::StorageFull
                } else {
                    io::ErrorKind::Other
                };
                let mut r = SeedRng::new(rng.gen());
                for disk in [&self.disks[m].wal, &self.disks[m].snap] {
                    let mut r = SeedRng::new(r.next_u64());
                    disk.set_fault(Some(Box::new(move |op| {
                        let writes = matches!(op, DiskOp::Append(..) | DiskOp::Sync(_));
                        (writes && r.chance(0.2)).then(|| io::Error::from(kind))
                    })));
                }
                // The member stops at its first failed write; heal restarts it.
                self.down.insert(m, "disk-errors");
                self.note(format!("disk errors ({kind:?}) on n{m}"));
            }
            5 if self.swarm.bit_flips && self.flipped.is_none() => {
                if let Some(what) = flip_a_bit(&self.disks[m], rng) {
                    self.flipped = Some(m);
                    self.note(format!("bit flip on n{m}: {what}"));
                }
            }
            6 if self.swarm.power_loss && self.down.is_empty() => {
                let torn = self.swarm.torn_writes;
                for i in 0..n {
                    self.handle.kill(self.members[i].id());
                }
                for i in 0..n {
                    let mut r = SeedRng::new(rng.gen());
                    for disk in [&self.disks[i].wal, &self.disks[i].snap] {
                        disk.crash_with(|_, durable_len, tail| {
                            crash_tail(&mut r, torn, durable_len, tail)
                        });
                    }
                }
                self.note("power loss: every member crashed".into());
                sleep(Duration::from_millis(rng.gen_range(200..2000))).await;
                for i in 0..n {
                    self.handle.restart(self.members[i].id());
                }
                self.note("power back: every member restarted".into());
            }
            _ => {}
        }
    }

    /// Ends every fault: reconnect, normal latency, resume, restart.
    fn heal(&mut self) {
        let net = NetSim::current();
        for a in &self.members {
            net.unclog_node(a.id());
            for b in &self.members {
                net.unclog_link(a.id(), b.id());
            }
        }
        NetSim::current().update_config(|c| {
            c.send_latency = Duration::from_millis(1)..Duration::from_millis(10)
        });
        for (m, why) in std::mem::take(&mut self.down) {
            match why {
                "paused" => self.handle.resume(self.members[m].id()),
                _ => {
                    for disk in [&self.disks[m].wal, &self.disks[m].snap] {
                        disk.set_fault(None);
                    }
                    // madsim's restart keeps the node's sockets bound; a kill releases them.
                    self.handle.kill(self.members[m].id());
                    self.handle.restart(self.members[m].id());
                }
            }
        }
    }
}

/// The member that is leader now, asked of each member in turn.
async fn leader(members: usize) -> Option<usize> {
    let mut ids = Vec::new();
    let mut leader_id = 0;
    for m in 0..members {
        let mut client = MaintenanceClient::new(connect(m).await?);
        let status = timeout(Duration::from_secs(1), client.status(StatusRequest {}))
            .await
            .ok()?
            .ok()?;
        let status = status.into_inner();
        ids.push(status.header.map_or(0, |h| h.member_id));
        leader_id = leader_id.max(status.leader);
    }
    ids.iter().position(|&id| id == leader_id && id != 0)
}

/// What a crash leaves of a file's unsynced tail (FoundationDB's
/// AsyncFileNonDurable model): lost, kept, or torn at a 512-byte or 4 KiB
/// boundary with garbage in the torn sector.
fn crash_tail(r: &mut SeedRng, torn_writes: bool, durable_len: usize, tail: &[u8]) -> Vec<u8> {
    if !torn_writes {
        return Vec::new();
    }
    match r.below(3) {
        0 => Vec::new(),
        1 => tail.to_vec(),
        _ => {
            let sector = if r.below(2) == 0 { 512 } else { 4096 };
            let end = durable_len + tail.len();
            let cut = durable_len + r.below(tail.len() as u64 + 1) as usize;
            let boundary = (cut / sector * sector).max(durable_len);
            let mut kept = tail[..boundary - durable_len].to_vec();
            let garbage_end = (boundary + sector).min(end.max(boundary + 1));
            kept.extend((boundary..garbage_end).map(|_| r.next_u64() as u8));
            kept
        }
    }
}

/// Flips one bit in the first half of a synced WAL segment or snapshot (the
/// last synced batch of a WAL is indistinguishable from a torn write, see
/// docs/wal.md, so the simulator leaves it alone). Returns what it hit.
fn flip_a_bit(disks: &Disks, rng: &mut impl Rng) -> Option<String> {
    let (name, disk) = if rng.gen_bool(0.5) {
        ("wal", &disks.wal)
    } else {
        ("snap", &disks.snap)
    };
    let mut d = disk.clone();
    let files = cairn::disk::Disk::list(&mut d).ok()?;
    let file = files.get(rng.gen_range(0..files.len().max(1)))?.clone();
    let len = cairn::disk::Disk::len(&mut d, &file).ok()? as usize;
    if len < 64 {
        return None;
    }
    let offset = rng.gen_range(0..len / 2);
    disk.corrupt(&file, offset, 1 << rng.gen_range(0..8)).ok()?;
    Some(format!("{name}/{file} at {offset}"))
}

/// Runs one seed. Call inside a madsim runtime seeded with `opts.seed`.
pub async fn scenario(opts: Options) -> Outcome {
    let handle = Handle::current();
    let swarm = Swarm::draw(opts.seed);
    let shared = Arc::new(Shared::default());
    let start = Instant::now();
    let mut rng = thread_rng();
    let disks: Vec<Disks> = (0..opts.members).map(|_| Disks::default()).collect();
    let mut skews = Vec::new();
    let members: Vec<NodeHandle> = (0..opts.members)
        .map(|i| {
            let skew = if swarm.clock_skew {
                rng.gen_range(0.9..1.1)
            } else {
                1.0
            };
            skews.push(skew);
            let faults = InjectedFaults {
                peer_drop_rate: if swarm.message_drops {
                    rng.gen_range(0.0..0.1)
                } else {
                    0.0
                },
                sync_latency_max: if swarm.disk_latency {
                    Duration::from_millis(rng.gen_range(1..20))
                } else {
                    Duration::ZERO
                },
            };
            start_member(
                &handle,
                i,
                opts.members,
                disks[i].clone(),
                (skew, faults),
                shared.clone(),
            )
        })
        .collect();

    let until = start + opts.duration;
    let mut clients = Vec::new();
    let compactor = handle.create_node().name("compactor").ip(ip(98)).build();
    clients.push(compactor.spawn(compactor_loop(opts.members, until)));
    for c in 0..opts.clients {
        let node = handle
            .create_node()
            .name(format!("client{c}"))
            .ip(ip(100 + c))
            .build();
        let shared = shared.clone();
        let members = opts.members;
        clients.push(node.spawn(client_loop(c as u32, members, shared, start, until)));
    }
    for c in 0..opts.watchers {
        let node = handle
            .create_node()
            .name(format!("watcher{c}"))
            .ip(ip(110 + c))
            .build();
        let shared = shared.clone();
        let members = opts.members;
        clients.push(node.spawn(watch_lease::watcher_loop(
            c as u32, members, shared, start, until,
        )));
    }
    for c in 0..opts.lease_clients {
        let node = handle
            .create_node()
            .name(format!("leaser{c}"))
            .ip(ip(120 + c))
            .build();
        let shared = shared.clone();
        let members = opts.members;
        clients.push(node.spawn(watch_lease::lease_loop(
            c as u32, members, shared, start, until,
        )));
    }

    let mut nemesis = Nemesis {
        handle: handle.clone(),
        members: members.clone(),
        disks: disks.clone(),
        swarm: swarm.clone(),
        log: Vec::new(),
        down: BTreeMap::new(),
        flipped: None,
        start,
    };
    // Faults come and go until shortly before the clients stop.
    let faults_until = until - Duration::from_secs(5).min(opts.duration / 2);
    sleep(Duration::from_secs(2)).await;
    while Instant::now() < faults_until {
        nemesis.strike(&mut rng).await;
        sleep(Duration::from_millis(rng.gen_range(500..3000))).await;
        if rng.gen_bool(0.5) {
            nemesis.heal();
            nemesis.note("heal".into());
        }
    }
    nemesis.heal();
    nemesis.note("heal all".into());
    for c in clients {
        let _ = c.await;
    }

    // A member that found corruption in its own storage must refuse to start
    // (and stay down); every other member must serve again.
    let checker = handle.create_node().name("checker").ip(ip(99)).build();
    let members_n = opts.members;
    let check_shared = shared.clone();
    let flipped = nemesis.flipped;
    let lease_clients = opts.lease_clients as u32;
    let result =
        checker
            .spawn(async move {
                final_checks(members_n, check_shared, start, flipped, lease_clients).await
            })
            .await
            .unwrap_or_else(|_| Err(Failure::Liveness("checker task died".into())));

    let history = std::mem::take(&mut *shared.history.lock().expect("lock"));
    let detected_corruption: Vec<String> = shared
        .stopped
        .lock()
        .expect("lock")
        .iter()
        .filter(|(_, e)| e.contains("corrupt"))
        .map(|(m, e)| format!("n{m}: {e}"))
        .collect();
    let anomalies = std::mem::take(&mut *shared.anomalies.lock().expect("lock"));
    let extra = Extra {
        watches: std::mem::take(&mut *shared.watches.lock().expect("lock")),
        leases: std::mem::take(&mut *shared.leases.lock().expect("lock")),
        min_tick_factor: skews.iter().copied().fold(1.0, f64::min),
        max_tick_nanos: (0.1 * skews.iter().copied().fold(1.0, f64::max) * 1e9) as u64,
        multi: Vec::new(),
    };
    let result = result
        .and_then(|()| match anomalies.first() {
            Some(a) => Err(Failure::Range(format!("{a} ({} in all)", anomalies.len()))),
            None => Ok(()),
        })
        .and_then(|()| check::check(&history).map_err(Failure::History))
        .and_then(|stats| {
            let w = check_watches(&history, &extra).map_err(Failure::Watch)?;
            let l = check_leases(&extra).map_err(Failure::Lease)?;
            tracing::info!(?w, ?l, "watch and lease checks");
            Ok(stats)
        });
    let unknown = history.iter().filter(|o| o.ret == Ret::Unknown).count();
    Outcome {
        seed: opts.seed,
        swarm,
        trace_hash: fnv(&format!("{history:?}{extra:?}")),
        ops: history.len(),
        unknown,
        watchers: extra.watches.len(),
        watch_events: extra
            .watches
            .iter()
            .flat_map(|w| &w.responses)
            .map(|r| r.events.len())
            .sum(),
        lease_ops: extra.leases.len(),
        faults: nemesis.log,
        detected_corruption,
        sim_elapsed: start.elapsed(),
        result,
    }
}

/// After healing: the cluster serves within a bounded time (liveness), every
/// key is read back through every serving member (so a lost acknowledged
/// write shows up in the history), and serving members agree on the hash.
async fn final_checks(
    members: usize,
    shared: Arc<Shared>,
    start: Instant,
    flipped: Option<usize>,
    lease_clients: u32,
) -> Result<(), Failure> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut serving = Vec::new();
    for m in 0..members {
        let corrupt = |shared: &Shared| {
            shared
                .stopped
                .lock()
                .expect("lock")
                .get(&m)
                .is_some_and(|e| e.contains("corrupt"))
        };
        loop {
            if corrupt(&shared) {
                break; // detected its own corruption and stopped: expected
            }
            if let Some(ch) = connect(m).await {
                let mut c = KvClient::new(ch);
                let probe = RangeRequest {
                    key: "k0".into(),
                    ..Default::default()
                };
                match timeout(Duration::from_secs(2), c.range(probe)).await {
                    Ok(Ok(_)) => {
                        serving.push(m);
                        break;
                    }
                    other => {
                        tracing::debug!(member = m, result = ?other.map(|r| r.map(|_| ())), "liveness probe")
                    }
                }
            }
            if Instant::now() > deadline {
                if Some(m) == flipped
                    || shared
                        .stopped
                        .lock()
                        .expect("lock")
                        .get(&m)
                        .is_some_and(|e| e.contains("corrupt"))
                {
                    break; // detected its own corruption and stopped: expected
                }
                return Err(Failure::Liveness(format!(
                    "n{m} did not serve within 30 s of healing"
                )));
            }
            sleep(Duration::from_millis(200)).await;
        }
    }
    if serving.len() * 2 <= members {
        return Err(Failure::Liveness(format!(
            "only {serving:?} serve after healing"
        )));
    }
    for &m in &serving {
        let Some(ch) = connect(m).await else {
            return Err(Failure::Liveness(format!("n{m} stopped answering")));
        };
        let mut c = KvClient::new(ch);
        for key in KEYS {
            // A read may be lost in transit and time out; a client retries.
            let mut answered = None;
            for _ in 0..3 {
                let call = Call::Get {
                    key: key.to_string(),
                };
                let invoke = start.elapsed().as_nanos() as u64;
                if let Ok(Ok(ret)) = timeout(Duration::from_secs(5), perform(&mut c, &call)).await {
                    let complete = Some(start.elapsed().as_nanos() as u64);
                    answered = Some(Op {
                        client: 1000 + m as u32,
                        invoke,
                        complete,
                        call,
                        ret,
                    });
                    break;
                }
            }
            let op = answered.ok_or_else(|| {
                Failure::Liveness(format!("final read of {key} on n{m} failed 3 times"))
            })?;
            shared.history.lock().expect("lock").push(op);
        }
        // Every lease key too: none may outlive its lease.
        let Some(ch) = connect(m).await else {
            return Err(Failure::Liveness(format!("n{m} stopped answering")));
        };
        for c in 0..lease_clients {
            for i in 0..watch_lease::LEASE_KEYS {
                let key = watch_lease::lease_key(c, i);
                let invoke = start.elapsed().as_nanos() as u64;
                let ret = watch_lease::read(&ch, &key).await;
                if matches!(ret, crate::history::LeaseRet::Get { .. }) {
                    let complete = Some(start.elapsed().as_nanos() as u64);
                    shared.leases.lock().expect("lock").push(LeaseOp {
                        client: 1000 + m as u32,
                        invoke,
                        complete,
                        call: LeaseCall::Get { key },
                        ret,
                    });
                }
            }
        }
    }
    agree(&serving).await
}

/// Serving members reach the same applied index and hash the same history.
async fn agree(serving: &[usize]) -> Result<(), Failure> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut statuses = Vec::new();
        for &m in serving {
            let ch = connect(m)
                .await
                .ok_or_else(|| Failure::Liveness(format!("n{m} unreachable for status")))?;
            let s = MaintenanceClient::new(ch)
                .status(StatusRequest {})
                .await
                .map_err(|e| Failure::Liveness(format!("status of n{m}: {e}")))?
                .into_inner();
            statuses.push((m, s.raft_applied_index, s.header.map_or(0, |h| h.revision)));
        }
        let applied: Vec<u64> = statuses.iter().map(|s| s.1).collect();
        if applied.iter().all(|&a| a == applied[0]) {
            let head = statuses.iter().map(|s| s.2).min().unwrap_or(0);
            // Every retained revision must hash the same on every member: check
            // the head and a spread of revisions back to the compaction point.
            let mut revision = head;
            for _ in 0..6 {
                let mut hashes = Vec::new();
                for &m in serving {
                    let ch = connect(m)
                        .await
                        .ok_or_else(|| Failure::Liveness(format!("n{m} unreachable for hash")))?;
                    let h = MaintenanceClient::new(ch)
                        .hash_kv(HashKvRequest { revision })
                        .await
                        .map_err(|e| {
                            Failure::Divergence(format!("hash of n{m} at {revision}: {e}"))
                        })?
                        .into_inner();
                    hashes.push((m, h.hash, h.compact_revision));
                }
                if hashes
                    .iter()
                    .any(|h| (h.1, h.2) != (hashes[0].1, hashes[0].2))
                {
                    return Err(Failure::Divergence(format!(
                        "at revision {revision}, (member, hash, compacted): {hashes:?}"
                    )));
                }
                let compacted = hashes[0].2.max(1);
                if revision <= compacted {
                    break;
                }
                revision = compacted + (revision - compacted) / 2;
            }
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Failure::Divergence(format!(
                "applied indexes never converged: {statuses:?}"
            )));
        }
        sleep(Duration::from_millis(200)).await;
    }
}
