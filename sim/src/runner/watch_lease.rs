//! The watch and lease workloads.
//!
//! Watching clients keep one watch stream open at a time on a random member,
//! with up to three watchers on it over random ranges (the KV keys, one key,
//! the lease keys, everything), some from a revision in the past (so the
//! member catches them up from its history), some with prev_kv or a filter.
//! They send progress requests, cancel watchers and re-create them from the
//! last revision they vouched for + 1, read slowly now and then, and when
//! their stream breaks (crash, pause, a member that stops answering) they
//! move to another member and resume every watcher there.
//!
//! Lease clients grant leases (TTL 5–10 s), attach their own keys to them,
//! keep some alive every TTL/3 on a keep-alive stream, let the others lapse
//! (and probe them later), revoke some, detach keys with a plain put, read
//! their keys, and now and then use a lease they know is gone.
// Under madsim, `Instant::now` is the simulated clock, not the machine's.
#![allow(clippy::disallowed_methods)]

use super::{connect, failed_ret, Shared};
use crate::history::{
    Event, EventKind, Kv, LeaseCall, LeaseOp, LeaseRet, PrevKv, Ret, WatchEnd, WatchRecord,
    WatchResponse,
};
use cairn::proto::etcdserverpb::kv_client::KvClient;
use cairn::proto::etcdserverpb::{
    lease_client::LeaseClient, watch_client::WatchClient, watch_request::RequestUnion,
    LeaseGrantRequest, LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseRevokeRequest,
    PutRequest, RangeRequest, WatchCancelRequest, WatchCreateRequest, WatchProgressRequest,
    WatchRequest,
};
use cairn::proto::etcdserverpb::{
    request_op::Request as OpRequest, DeleteRangeRequest, RequestOp, TxnRequest,
};
use cairn::proto::mvccpb;
use futures::channel::mpsc::{unbounded, UnboundedSender};
use madsim::rand::{thread_rng, Rng};
use madsim::time::{sleep, timeout, Instant};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tonic::codec::Streaming;
use tonic::transport::Channel;

/// Keys each lease client owns: `lease/{client}/{0..LEASE_KEYS}`.
pub(super) const LEASE_KEYS: usize = 4;

pub(super) fn lease_key(client: u32, i: usize) -> String {
    format!("lease/{client}/{i}")
}

fn nanos(start: Instant) -> u64 {
    start.elapsed().as_nanos() as u64
}

/// A value as recorded: a burst's padded values keep their unique head and
/// their length, so the history stays small.
fn value_of(v: &[u8]) -> String {
    if v.len() > 64 {
        format!(
            "{}... ({} bytes)",
            String::from_utf8_lossy(&v[..48]),
            v.len()
        )
    } else {
        String::from_utf8_lossy(v).into_owned()
    }
}

fn event_of(e: &mvccpb::Event) -> Event {
    let kv = e.kv.clone().unwrap_or_default();
    let kind = if e.r#type == mvccpb::event::EventType::Delete as i32 {
        EventKind::Delete
    } else {
        EventKind::Put
    };
    Event {
        kind,
        key: String::from_utf8_lossy(&kv.key).into_owned(),
        value: value_of(&kv.value),
        mod_revision: kv.mod_revision,
        create_revision: kv.create_revision,
        version: kv.version,
        lease: kv.lease,
        prev: e.prev_kv.as_ref().map(|p| PrevKv {
            value: value_of(&p.value),
            mod_revision: p.mod_revision,
            create_revision: p.create_revision,
            version: p.version,
            lease: p.lease,
        }),
    }
}

/// What a watcher asks for.
#[derive(Clone)]
struct Spec {
    key: String,
    range_end: String,
    start_revision: i64,
    prev_kv: bool,
    no_put: bool,
    no_delete: bool,
    fragment: bool,
    progress_notify: bool,
    resumes: Option<usize>,
}

fn random_spec(rng: &mut impl Rng, head: i64) -> Spec {
    let (key, range_end) = match rng.gen_range(0..7) {
        0 | 1 => ("k".to_owned(), "l".to_owned()),
        2 => (
            super::KEYS[rng.gen_range(0..super::KEYS.len())].to_owned(),
            String::new(),
        ),
        3 => ("lease/".to_owned(), "lease0".to_owned()),
        4 => ("burst/".to_owned(), "burst0".to_owned()),
        _ => ("\0".to_owned(), "\0".to_owned()),
    };
    let start_revision = if rng.gen_bool(0.5) {
        0
    } else {
        (head - rng.gen_range(0..80)).max(1)
    };
    let filter = rng.gen_range(0..8);
    Spec {
        key,
        range_end,
        start_revision,
        prev_kv: rng.gen_bool(0.5),
        no_put: filter == 0,
        no_delete: filter == 1,
        fragment: rng.gen_bool(0.25),
        progress_notify: rng.gen_bool(0.25),
        resumes: None,
    }
}

/// The spec that resumes watcher `index` after what it vouched for.
fn resume_spec(shared: &Shared, index: usize) -> Spec {
    let w = &shared.watches.lock().expect("lock")[index];
    Spec {
        key: w.key.clone(),
        range_end: w.range_end.clone(),
        start_revision: w.vouched() + 1,
        prev_kv: w.prev_kv,
        no_put: w.no_put,
        no_delete: w.no_delete,
        fragment: w.fragment,
        progress_notify: false,
        resumes: Some(index),
    }
}

/// One watch stream and the watchers on it.
struct Session {
    client: u32,
    member: usize,
    tx: UnboundedSender<WatchRequest>,
    /// Create requests sent and not yet answered, in order.
    pending: VecDeque<usize>,
    /// Created watchers by watch ID.
    open: BTreeMap<i64, usize>,
    /// Watchers the client asked to cancel.
    canceling: BTreeSet<usize>,
    /// Progress requests sent and not yet answered, oldest first, each with
    /// the watchers it speaks for: those whose create went out before it and
    /// whose cancel did not. A stream-level answer (watch ID -1, etcd 3.4)
    /// vouches for each of them that is still open, and not being canceled,
    /// when it arrives.
    progress_pending: VecDeque<Vec<usize>>,
    last_response: Instant,
    progress_sent: Option<Instant>,
}

impl Session {
    fn create(&mut self, shared: &Shared, spec: Spec, start: Instant) {
        let index = {
            let mut watches = shared.watches.lock().expect("lock");
            watches.push(WatchRecord {
                client: self.client,
                member: self.member,
                key: spec.key.clone(),
                range_end: spec.range_end.clone(),
                start_revision: spec.start_revision,
                prev_kv: spec.prev_kv,
                no_put: spec.no_put,
                no_delete: spec.no_delete,
                fragment: spec.fragment,
                resumes: spec.resumes,
                invoke: nanos(start),
                created: None,
                watch_id: -1,
                responses: Vec::new(),
                progress_requests: Vec::new(),
                end: WatchEnd::NeverCreated,
            });
            watches.len() - 1
        };
        let mut filters = Vec::new();
        if spec.no_put {
            filters.push(0);
        }
        if spec.no_delete {
            filters.push(1);
        }
        let req = WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                key: spec.key.into_bytes().into(),
                range_end: spec.range_end.into_bytes().into(),
                start_revision: spec.start_revision,
                progress_notify: spec.progress_notify,
                filters,
                prev_kv: spec.prev_kv,
                watch_id: 0,
                fragment: spec.fragment,
            })),
        };
        self.pending.push_back(index);
        let _ = self.tx.unbounded_send(req);
    }

    /// Sends a progress request.
    fn progress(&mut self, shared: &Shared, start: Instant) {
        let _ = self.tx.unbounded_send(WatchRequest {
            request_union: Some(RequestUnion::ProgressRequest(WatchProgressRequest {})),
        });
        let now = nanos(start);
        let covered: Vec<usize> = self
            .open
            .values()
            .chain(&self.pending)
            .copied()
            .filter(|i| !self.canceling.contains(i))
            .collect();
        let mut watches = shared.watches.lock().expect("lock");
        for &index in &covered {
            watches[index].progress_requests.push(now);
        }
        self.progress_pending.push_back(covered);
        self.progress_sent.get_or_insert(Instant::now());
    }

    fn watchers(&self) -> usize {
        self.pending.len() + self.open.len() - self.canceling.len().min(self.open.len())
    }

    /// Records one response; returns an anomaly if it makes no sense.
    fn handle(
        &mut self,
        shared: &Shared,
        r: cairn::proto::etcdserverpb::WatchResponse,
        at: u64,
    ) -> Result<(), String> {
        let header = r.header.as_ref().map_or(0, |h| h.revision);
        let mut watches = shared.watches.lock().expect("lock");
        if r.created {
            let Some(index) = self.pending.pop_front() else {
                return Err(format!("created response with no create pending: {r:?}"));
            };
            let w = &mut watches[index];
            w.created = Some((at, header));
            w.watch_id = r.watch_id;
            w.end = WatchEnd::Open;
            if r.canceled {
                w.end = if r.compact_revision > 0 {
                    WatchEnd::Compacted(r.compact_revision)
                } else {
                    WatchEnd::Refused
                };
            } else if self.open.insert(r.watch_id, index).is_some() {
                return Err(format!(
                    "watch ID {} given out twice on one stream",
                    r.watch_id
                ));
            }
            return Ok(());
        }
        if r.watch_id == -1 && !r.canceled && r.events.is_empty() {
            // The answer to a progress request, for the whole stream.
            let Some(covered) = self.progress_pending.pop_front() else {
                return Err(format!(
                    "a progress response with no progress request pending: {r:?}"
                ));
            };
            // A watcher whose cancel went out since may have left the hub
            // before the answer was made: it is not vouched for.
            let open: BTreeSet<usize> = self
                .open
                .values()
                .copied()
                .filter(|i| !self.canceling.contains(i))
                .collect();
            for index in covered.into_iter().filter(|i| open.contains(i)) {
                watches[index].responses.push(WatchResponse {
                    at,
                    header_revision: header,
                    fragment: r.fragment,
                    canceled: false,
                    compact_revision: 0,
                    events: Vec::new(),
                });
            }
            return Ok(());
        }
        let index = match self.open.get(&r.watch_id) {
            Some(&i) => i,
            None if r.canceled => {
                // A create refused without a created response.
                let Some(index) = self.pending.pop_front() else {
                    return Err(format!("cancel for unknown watch ID {}: {r:?}", r.watch_id));
                };
                watches[index].watch_id = r.watch_id;
                index
            }
            None => {
                return Err(format!(
                    "response for unknown watch ID {}: {r:?}",
                    r.watch_id
                ))
            }
        };
        let w = &mut watches[index];
        w.responses.push(WatchResponse {
            at,
            header_revision: header,
            fragment: r.fragment,
            canceled: r.canceled,
            compact_revision: r.compact_revision,
            events: r.events.iter().map(event_of).collect(),
        });
        if r.canceled {
            self.open.remove(&r.watch_id);
            w.end = if r.compact_revision > 0 {
                WatchEnd::Compacted(r.compact_revision)
            } else if self.canceling.remove(&index) {
                WatchEnd::Canceled
            } else {
                WatchEnd::Refused
            };
        }
        Ok(())
    }

    /// Ends the session: what is still open or pending ends as `end`;
    /// returns the watchers to resume elsewhere.
    fn close(self, shared: &Shared, end: WatchEnd) -> Vec<usize> {
        let mut watches = shared.watches.lock().expect("lock");
        let mut resume = Vec::new();
        for (_, index) in self.open {
            watches[index].end = end;
            if !self.canceling.contains(&index) {
                resume.push(index);
            }
        }
        for index in self.pending {
            watches[index].end = if end == WatchEnd::Open {
                WatchEnd::NeverCreated
            } else {
                end
            };
        }
        resume
    }
}

/// A watching client, until `until`.
pub(super) async fn watcher_loop(
    id: u32,
    members: usize,
    shared: Arc<Shared>,
    start: Instant,
    until: Instant,
) {
    let mut rng = thread_rng();
    let mut target = rng.gen_range(0..members);
    let mut resume: Vec<usize> = Vec::new();
    let mut head: i64 = 1;
    let mut bursts = 0u32;
    // Big values are costly to simulate: one client in twelve makes one big
    // burst, so about one seed in six has fragments.
    let mut big_done = !rng.gen_bool(1.0 / 12.0);
    while Instant::now() < until {
        let Some(ch) = connect(target).await else {
            target = (target + 1) % members;
            sleep(Duration::from_millis(100)).await;
            continue;
        };
        let (tx, rx) = unbounded();
        let stream = match timeout(Duration::from_secs(2), WatchClient::new(ch).watch(rx)).await {
            Ok(Ok(s)) => s.into_inner(),
            _ => {
                target = rng.gen_range(0..members);
                sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // A reader task forwards responses, now and then slowly.
        let (fwd, mut responses) = tokio::sync::mpsc::unbounded_channel();
        let slow = rng.gen_bool(0.3);
        let mut reader_rng = crate::faults::SeedRng::new(rng.gen());
        let reader = tokio::spawn(async move {
            let mut stream = stream;
            loop {
                if slow && reader_rng.chance(0.02) {
                    sleep(Duration::from_millis(200 + reader_rng.below(1800))).await;
                }
                let msg = stream.message().await;
                let end = !matches!(msg, Ok(Some(_)));
                if fwd.send(msg).is_err() || end {
                    break;
                }
            }
        });
        let mut s = Session {
            client: id,
            member: target,
            tx,
            pending: VecDeque::new(),
            open: BTreeMap::new(),
            canceling: BTreeSet::new(),
            progress_pending: VecDeque::new(),
            last_response: Instant::now(),
            progress_sent: None,
        };
        for index in std::mem::take(&mut resume) {
            let spec = resume_spec(&shared, index);
            s.create(&shared, spec, start);
        }
        let mut broken = false;
        let mut next_action = Instant::now();
        while Instant::now() < until && !broken {
            tokio::select! {
                msg = responses.recv() => match msg {
                    Some(Ok(Some(r))) => {
                        head = head.max(r.header.as_ref().map_or(0, |h| h.revision));
                        s.last_response = Instant::now();
                        s.progress_sent = None;
                        if let Err(why) = s.handle(&shared, r, nanos(start)) {
                            shared.anomalies.lock().expect("lock").push(format!("watch client {id}: {why}"));
                            broken = true;
                        }
                    }
                    _ => broken = true,
                },
                _ = madsim::time::sleep_until(next_action) => {
                    next_action = Instant::now() + Duration::from_millis(rng.gen_range(100..600));
                    // A stream that answers nothing, not even a progress request, is dead.
                    if s.progress_sent.is_some_and(|t| t.elapsed() > Duration::from_secs(4)) {
                        broken = true;
                        continue;
                    }
                    match rng.gen_range(0..12) {
                        0..=2 => s.progress(&shared, start),
                        3 => {
                            // Cancel one and resume it from what it vouched for.
                            let open: Vec<(i64, usize)> = s.open.iter().map(|(&w, &i)| (w, i))
                                .filter(|(_, i)| !s.canceling.contains(i)).collect();
                            if !open.is_empty() {
                                let (watch_id, index) = open[rng.gen_range(0..open.len())];
                                s.canceling.insert(index);
                                let _ = s.tx.unbounded_send(WatchRequest {
                                    request_union: Some(RequestUnion::CancelRequest(WatchCancelRequest { watch_id })),
                                });
                                let spec = resume_spec(&shared, index);
                                s.create(&shared, spec, start);
                            }
                        }
                        4 if rng.gen_bool(0.15) => broken = true, // move to another member
                        5 if rng.gen_bool(0.3) => {
                            bursts += 1;
                            let big = !big_done && rng.gen_bool(0.5);
                            big_done |= big;
                            if big {
                                // A watcher that gets the big revision in fragments.
                                let spec = Spec {
                                    key: format!("burst/{id}/"),
                                    range_end: format!("burst/{id}0"),
                                    start_revision: 0,
                                    prev_kv: true,
                                    no_put: false,
                                    no_delete: false,
                                    fragment: true,
                                    progress_notify: false,
                                    resumes: None,
                                };
                                s.create(&shared, spec, start);
                            }
                            burst(id, bursts, target, big, &mut rng);
                        }
                        _ if s.watchers() < 3 => {
                            let spec = random_spec(&mut rng, head);
                            s.create(&shared, spec, start);
                        }
                        _ => {}
                    }
                }
            }
        }
        if !broken {
            // The run is over: one last progress request, so every watcher
            // vouches as far as it can, then collect for a while.
            s.progress(&shared, start);
            let deadline = Instant::now() + Duration::from_secs(2);
            while let Ok(Some(Ok(Some(r)))) = timeout(
                deadline.saturating_duration_since(Instant::now()),
                responses.recv(),
            )
            .await
            {
                if s.handle(&shared, r, nanos(start)).is_err() {
                    break;
                }
            }
        }
        reader.abort();
        resume = s.close(
            &shared,
            if broken {
                WatchEnd::Broken
            } else {
                WatchEnd::Open
            },
        );
        target = rng.gen_range(0..members);
    }
}

/// A lease the client holds.
struct Held {
    id: i64,
    ttl: i64,
    keep: bool,
    granted: Instant,
    next_keepalive: Instant,
}

/// How a failed lease request is recorded.
fn lease_failed(status: &tonic::Status) -> LeaseRet {
    let msg = status.message();
    if failed_ret(status) == Ret::Failed
        || status.code() == tonic::Code::NotFound
        || msg.contains("lease not found")
        || msg.contains("lease already exists")
    {
        LeaseRet::Refused(msg.to_owned())
    } else {
        LeaseRet::Unknown
    }
}

type KeepAlive = (
    UnboundedSender<LeaseKeepAliveRequest>,
    Streaming<LeaseKeepAliveResponse>,
);

/// One keep-alive on the client's stream (opened if needed).
async fn keep_alive(ch: &Channel, stream: &mut Option<KeepAlive>, id: i64) -> LeaseRet {
    if stream.is_none() {
        let (tx, rx) = unbounded();
        match timeout(
            Duration::from_secs(2),
            LeaseClient::new(ch.clone()).lease_keep_alive(rx),
        )
        .await
        {
            Ok(Ok(s)) => *stream = Some((tx, s.into_inner())),
            Ok(Err(status)) => return lease_failed(&status),
            Err(_) => return LeaseRet::Refused("could not open a keep-alive stream".into()),
        }
    }
    let Some((tx, s)) = stream.as_mut() else {
        return LeaseRet::Unknown;
    };
    if tx.unbounded_send(LeaseKeepAliveRequest { id }).is_err() {
        *stream = None;
        return LeaseRet::Refused("keep-alive stream closed".into());
    }
    match timeout(Duration::from_secs(2), s.message()).await {
        Ok(Ok(Some(r))) if r.id == id => LeaseRet::Alive { ttl: r.ttl },
        _ => {
            *stream = None;
            LeaseRet::Unknown
        }
    }
}

/// A lease client, until `until`.
pub(super) async fn lease_loop(
    id: u32,
    members: usize,
    shared: Arc<Shared>,
    start: Instant,
    until: Instant,
) {
    let mut rng = thread_rng();
    let mut target = rng.gen_range(0..members);
    let mut channel: Option<Channel> = None;
    let mut ka: Option<KeepAlive> = None;
    let mut held: Vec<Held> = Vec::new();
    let mut gone: Vec<i64> = Vec::new();
    let mut n = 0u64;
    while Instant::now() < until {
        let Some(ch) = channel.clone() else {
            match connect(target).await {
                Some(ch) => channel = Some(ch),
                None => {
                    target = (target + 1) % members;
                    sleep(Duration::from_millis(100)).await;
                }
            }
            continue;
        };
        n += 1;
        let now = Instant::now();
        let due = held
            .iter()
            .position(|h| h.keep && h.next_keepalive <= now)
            .or_else(|| {
                // Probe a lapsed lease well after it must have expired.
                held.iter().position(|h| {
                    !h.keep && now > h.granted + Duration::from_secs(2 * h.ttl as u64 + 3)
                })
            });
        let call = if let Some(i) = due {
            LeaseCall::KeepAlive { id: held[i].id }
        } else {
            match rng.gen_range(0..20) {
                0..=2 if held.len() < 3 => {
                    let explicit = rng.gen_bool(0.25);
                    LeaseCall::Grant {
                        id: if explicit {
                            (i64::from(id + 1) << 32) | n as i64
                        } else {
                            0
                        },
                        ttl: rng.gen_range(5..=10),
                    }
                }
                3..=10 => {
                    let lease = match rng.gen_range(0..10) {
                        0 => 0,
                        1 if !gone.is_empty() => gone[rng.gen_range(0..gone.len())],
                        _ if !held.is_empty() => held[rng.gen_range(0..held.len())].id,
                        _ => 0,
                    };
                    LeaseCall::Put {
                        key: lease_key(id, rng.gen_range(0..LEASE_KEYS)),
                        value: format!("l{id}-{n}"),
                        lease,
                    }
                }
                11..=15 => LeaseCall::Get {
                    key: lease_key(id, rng.gen_range(0..LEASE_KEYS)),
                },
                16 if !held.is_empty() => LeaseCall::Revoke {
                    id: held[rng.gen_range(0..held.len())].id,
                },
                17 if !held.is_empty() => {
                    // Stop keeping one alive: let it lapse.
                    let i = rng.gen_range(0..held.len());
                    held[i].keep = false;
                    continue;
                }
                _ => {
                    sleep(Duration::from_millis(rng.gen_range(20..200))).await;
                    continue;
                }
            }
        };
        let invoke = nanos(start);
        let ret = match &call {
            LeaseCall::KeepAlive { id: lease } => keep_alive(&ch, &mut ka, *lease).await,
            LeaseCall::Grant { id: lease, ttl } => {
                let req = LeaseGrantRequest {
                    ttl: *ttl,
                    id: *lease,
                };
                match timeout(
                    Duration::from_secs(3),
                    LeaseClient::new(ch.clone()).lease_grant(req),
                )
                .await
                {
                    Ok(Ok(r)) => {
                        let r = r.into_inner();
                        if r.error.is_empty() {
                            LeaseRet::Granted {
                                id: r.id,
                                ttl: r.ttl,
                                revision: r.header.map_or(0, |h| h.revision),
                            }
                        } else {
                            LeaseRet::Refused(r.error)
                        }
                    }
                    Ok(Err(status)) => lease_failed(&status),
                    Err(_) => LeaseRet::Unknown,
                }
            }
            LeaseCall::Revoke { id: lease } => {
                let req = LeaseRevokeRequest { id: *lease };
                match timeout(
                    Duration::from_secs(3),
                    LeaseClient::new(ch.clone()).lease_revoke(req),
                )
                .await
                {
                    Ok(Ok(r)) => LeaseRet::Revoked {
                        revision: r.into_inner().header.map_or(0, |h| h.revision),
                    },
                    Ok(Err(status)) => lease_failed(&status),
                    Err(_) => LeaseRet::Unknown,
                }
            }
            LeaseCall::Put { key, value, lease } => {
                let req = PutRequest {
                    key: key.clone().into_bytes().into(),
                    value: value.clone().into_bytes().into(),
                    lease: *lease,
                    ..Default::default()
                };
                match timeout(Duration::from_secs(3), KvClient::new(ch.clone()).put(req)).await {
                    Ok(Ok(r)) => LeaseRet::Put {
                        revision: r.into_inner().header.map_or(0, |h| h.revision),
                    },
                    Ok(Err(status)) => lease_failed(&status),
                    Err(_) => LeaseRet::Unknown,
                }
            }
            LeaseCall::Get { key } => read(&ch, key).await,
        };
        let complete = (ret != LeaseRet::Unknown).then(|| nanos(start));
        if ret == LeaseRet::Unknown
            || matches!(&ret, LeaseRet::Refused(m) if m.contains("no leader") || m.contains("stream"))
        {
            channel = None;
            ka = None;
            target = rng.gen_range(0..members);
        }
        match (&call, &ret) {
            (LeaseCall::Grant { .. }, LeaseRet::Granted { id: lease, ttl, .. }) => {
                let now = Instant::now();
                held.push(Held {
                    id: *lease,
                    ttl: *ttl,
                    keep: rng.gen_bool(0.6),
                    granted: now,
                    next_keepalive: now + Duration::from_secs_f64(*ttl as f64 / 3.0),
                });
            }
            (LeaseCall::KeepAlive { id: lease }, _) => {
                if let Some(i) = held.iter().position(|h| h.id == *lease) {
                    if !held[i].keep || matches!(ret, LeaseRet::Alive { ttl: 0 }) {
                        gone.push(*lease);
                        held.remove(i);
                    } else {
                        let wait = if matches!(ret, LeaseRet::Alive { .. }) {
                            held[i].ttl as f64 / 3.0
                        } else {
                            0.3
                        };
                        held[i].next_keepalive = Instant::now() + Duration::from_secs_f64(wait);
                    }
                }
            }
            (LeaseCall::Revoke { id: lease }, _) => {
                held.retain(|h| h.id != *lease);
                gone.push(*lease);
            }
            _ => {}
        }
        shared.leases.lock().expect("lock").push(LeaseOp {
            client: id,
            invoke,
            complete,
            call,
            ret,
        });
        sleep(Duration::from_millis(rng.gen_range(10..100))).await;
    }
}

/// A linearizable read of one key, as a lease op's return.
pub(super) async fn read(ch: &Channel, key: &str) -> LeaseRet {
    let req = RangeRequest {
        key: key.to_owned().into_bytes().into(),
        ..Default::default()
    };
    match timeout(Duration::from_secs(3), KvClient::new(ch.clone()).range(req)).await {
        Ok(Ok(r)) => {
            let r = r.into_inner();
            LeaseRet::Get {
                revision: r.header.map_or(0, |h| h.revision),
                kv: r.kvs.first().map(|kv| {
                    (
                        Kv {
                            value: String::from_utf8_lossy(&kv.value).into_owned(),
                            mod_revision: kv.mod_revision,
                            create_revision: kv.create_revision,
                            version: kv.version,
                        },
                        kv.lease,
                    )
                }),
            }
        }
        Ok(Err(status)) => lease_failed(&status),
        Err(_) => LeaseRet::Unknown,
    }
}

/// Keys per burst transaction (etcd's and cairn's limit is 128 ops).
const BURST_KEYS: usize = 100;

/// A burst of writes: 4–12 transactions at once, each putting 50–100 keys
/// of `burst/{client}/` at one revision, so watchers over those keys get
/// hundreds of events at once. With `big`, instead: two transactions one
/// after the other putting 100 keys of 14 KB each, then one deleting them; a
/// watcher with prev_kv gets the second one's revision as more than
/// `max-request-bytes` + 512 KiB, in fragments if it asked for them.
fn burst(id: u32, n: u32, member: usize, big: bool, rng: &mut impl Rng) {
    let put_txn = |t: u32, keys: usize| {
        let ops = (0..keys)
            .map(|i| {
                let mut value = format!("b{id}-{n}-{t}-{i}-").into_bytes();
                if big {
                    value.resize(14_000, b'x');
                }
                RequestOp {
                    request: Some(OpRequest::RequestPut(PutRequest {
                        key: format!("burst/{id}/{i}").into_bytes().into(),
                        value: value.into(),
                        ..Default::default()
                    })),
                }
            })
            .collect();
        TxnRequest {
            compare: Vec::new(),
            success: ops,
            failure: Vec::new(),
        }
    };
    if big {
        let txns = vec![
            put_txn(0, BURST_KEYS),
            put_txn(1, BURST_KEYS),
            TxnRequest {
                compare: Vec::new(),
                success: vec![RequestOp {
                    request: Some(OpRequest::RequestDeleteRange(DeleteRangeRequest {
                        key: format!("burst/{id}/").into_bytes().into(),
                        range_end: format!("burst/{id}0").into_bytes().into(),
                        ..Default::default()
                    })),
                }],
                failure: Vec::new(),
            },
        ];
        tokio::spawn(async move {
            if let Some(ch) = connect(member).await {
                let mut kv = KvClient::new(ch);
                for txn in txns {
                    let _ = timeout(Duration::from_secs(5), kv.txn(txn)).await;
                }
            }
        });
        return;
    }
    for t in 0..rng.gen_range(4..=12) {
        let txn = put_txn(t, rng.gen_range(BURST_KEYS / 2..=BURST_KEYS));
        tokio::spawn(async move {
            if let Some(ch) = connect(member).await {
                let _ = timeout(Duration::from_secs(5), KvClient::new(ch).txn(txn)).await;
            }
        });
    }
}
