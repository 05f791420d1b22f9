//! The watching clients of `cairn verify`, recording what the watch checker
//! (`cairn::check::watch`) judges.
//!
//! A watching client keeps one watch stream open at a time on a random
//! endpoint, with up to three watchers on it: the whole key prefix, one key,
//! either from now (`start_revision` 0) or from a revision in the past (so
//! the member catches it up from its history), half with `prev_kv`. It sends
//! progress requests, cancels a watcher and re-creates it from the last
//! revision it vouched for + 1 (etcd's resumable guarantee), and now and
//! then moves to another endpoint, resuming every watcher there. A stream
//! that breaks, or answers nothing (not even a progress request) for 4 s, is
//! abandoned the same way. At the end each stream sends one last progress
//! request and collects answers for 2 s.
//!
//! The bookkeeping of responses to watchers is the simulator's
//! (`sim/src/runner/watch_lease.rs`), on the real clock.

use super::kv::pick;
use super::Recorder;
use cairn::check::history::{Event, EventKind, PrevKv, WatchEnd, WatchRecord, WatchResponse};
use cairn::proto::etcdserverpb::{
    watch_client::WatchClient, watch_request::RequestUnion, WatchCancelRequest, WatchCreateRequest,
    WatchProgressRequest, WatchRequest,
};
use cairn::proto::mvccpb;
use cairn::rng::SplitMix64;
use futures::channel::mpsc::{unbounded, UnboundedSender};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// What the watching clients watch.
#[derive(Clone)]
pub(crate) struct WatchPlan {
    /// The run's key prefix, and the end of its range.
    pub prefix: String,
    pub prefix_end: String,
    pub keys: Vec<String>,
    /// Send progress requests (`--no-watch-progress` turns them off).
    pub progress: bool,
    /// The revision after the last one before the run: the first prefix
    /// watcher starts there, so the watchers see every write of the run.
    pub first_revision: i64,
    /// Reflectors (list, then watch from the list's revision + 1; relist
    /// after a compaction) instead of random watchers.
    pub kubernetes: bool,
    pub timeout: Duration,
}

fn event_of(e: &mvccpb::Event) -> Event {
    let kv = e.kv.clone().unwrap_or_default();
    let kind = if e.r#type == mvccpb::event::EventType::Delete as i32 {
        EventKind::Delete
    } else {
        EventKind::Put
    };
    let text = |v: &[u8]| String::from_utf8_lossy(v).into_owned();
    Event {
        kind,
        key: text(&kv.key),
        value: text(&kv.value),
        mod_revision: kv.mod_revision,
        create_revision: kv.create_revision,
        version: kv.version,
        lease: kv.lease,
        prev: e.prev_kv.as_ref().map(|p| PrevKv {
            value: text(&p.value),
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
    resumes: Option<usize>,
}

fn random_spec(rng: &mut SplitMix64, plan: &WatchPlan, head: i64) -> Spec {
    let (key, range_end) = if pick(rng, 2) == 0 {
        (plan.prefix.clone(), plan.prefix_end.clone())
    } else {
        (plan.keys[pick(rng, plan.keys.len())].clone(), String::new())
    };
    let start_revision = if pick(rng, 2) == 0 || head <= 1 {
        0
    } else {
        (head - pick(rng, 80) as i64).max(1)
    };
    Spec {
        key,
        range_end,
        start_revision,
        prev_kv: pick(rng, 2) == 0,
        resumes: None,
    }
}

/// The spec that resumes watcher `index` after what it vouched for.
fn resume_spec(rec: &Recorder, index: usize) -> Spec {
    let w = &rec.watches.lock().expect("lock")[index];
    Spec {
        key: w.key.clone(),
        range_end: w.range_end.clone(),
        start_revision: w.vouched() + 1,
        prev_kv: w.prev_kv,
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
    /// the watchers it speaks for (see the simulator's `Session`).
    progress_pending: VecDeque<Vec<usize>>,
    progress_sent: Option<Instant>,
    /// A watcher was canceled for compaction (a reflector relists).
    compacted: bool,
}

impl Session {
    fn create(&mut self, rec: &Recorder, spec: Spec) {
        let index = {
            let mut watches = rec.watches.lock().expect("lock");
            watches.push(WatchRecord {
                client: self.client,
                member: self.member,
                key: spec.key.clone(),
                range_end: spec.range_end.clone(),
                start_revision: spec.start_revision,
                prev_kv: spec.prev_kv,
                no_put: false,
                no_delete: false,
                fragment: false,
                resumes: spec.resumes,
                invoke: rec.now(),
                created: None,
                watch_id: -1,
                responses: Vec::new(),
                progress_requests: Vec::new(),
                end: WatchEnd::NeverCreated,
            });
            watches.len() - 1
        };
        let req = WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                key: spec.key.into_bytes().into(),
                range_end: spec.range_end.into_bytes().into(),
                start_revision: spec.start_revision,
                prev_kv: spec.prev_kv,
                ..Default::default()
            })),
        };
        self.pending.push_back(index);
        let _ = self.tx.unbounded_send(req);
    }

    fn progress(&mut self, rec: &Recorder) {
        let _ = self.tx.unbounded_send(WatchRequest {
            request_union: Some(RequestUnion::ProgressRequest(WatchProgressRequest {})),
        });
        let now = rec.now();
        let covered: Vec<usize> = self
            .open
            .values()
            .chain(&self.pending)
            .copied()
            .filter(|i| !self.canceling.contains(i))
            .collect();
        let mut watches = rec.watches.lock().expect("lock");
        for &index in &covered {
            watches[index].progress_requests.push(now);
        }
        self.progress_pending.push_back(covered);
        self.progress_sent.get_or_insert(Instant::now());
    }

    fn watchers(&self) -> usize {
        self.pending.len() + self.open.len() - self.canceling.len().min(self.open.len())
    }

    fn cancel_and_resume(&mut self, rec: &Recorder, rng: &mut SplitMix64) {
        let open: Vec<(i64, usize)> = self
            .open
            .iter()
            .map(|(&w, &i)| (w, i))
            .filter(|(_, i)| !self.canceling.contains(i))
            .collect();
        if open.is_empty() {
            return;
        }
        let (watch_id, index) = open[pick(rng, open.len())];
        self.canceling.insert(index);
        let _ = self.tx.unbounded_send(WatchRequest {
            request_union: Some(RequestUnion::CancelRequest(WatchCancelRequest { watch_id })),
        });
        let spec = resume_spec(rec, index);
        self.create(rec, spec);
    }

    /// Records one response; returns an anomaly if it makes no sense.
    fn handle(
        &mut self,
        rec: &Recorder,
        r: cairn::proto::etcdserverpb::WatchResponse,
        at: u64,
    ) -> Result<(), String> {
        let header = r.header.as_ref().map_or(0, |h| h.revision);
        let mut watches = rec.watches.lock().expect("lock");
        if r.created {
            let Some(index) = self.pending.pop_front() else {
                return Err(format!("created response with no create pending: {r:?}"));
            };
            let w = &mut watches[index];
            w.created = Some((at, header));
            w.watch_id = r.watch_id;
            w.end = WatchEnd::Open;
            if r.canceled {
                self.compacted |= r.compact_revision > 0;
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
                    "a progress response with no request pending: {r:?}"
                ));
            };
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
            self.compacted |= r.compact_revision > 0;
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
    fn close(self, rec: &Recorder, end: WatchEnd) -> Vec<usize> {
        let mut watches = rec.watches.lock().expect("lock");
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
            // A resume that was never created: resume its origin again.
            if end != WatchEnd::Open {
                resume.extend(watches[index].resumes);
            }
        }
        resume
    }
}

type Responses = tokio::sync::mpsc::UnboundedReceiver<
    Result<Option<cairn::proto::etcdserverpb::WatchResponse>, tonic::Status>,
>;

/// Opens a watch stream on `channel` whose first requests are already in
/// `rx`, with a task forwarding its responses. The requests must go first:
/// etcd (grpc-go) sends nothing, not even the response headers, before it has
/// a response to send.
async fn open_stream(
    channel: Channel,
    rx: futures::channel::mpsc::UnboundedReceiver<WatchRequest>,
) -> Option<(Responses, tokio::task::JoinHandle<()>)> {
    let mut client = WatchClient::new(channel);
    let call = client.watch(rx);
    let stream = match tokio::time::timeout(Duration::from_secs(3), call).await {
        Ok(Ok(s)) => s.into_inner(),
        _ => return None,
    };
    let (fwd, responses) = tokio::sync::mpsc::unbounded_channel();
    let reader = tokio::spawn(async move {
        let mut stream = stream;
        loop {
            let msg = stream.message().await;
            let end = !matches!(msg, Ok(Some(_)));
            if fwd.send(msg).is_err() || end {
                break;
            }
        }
    });
    Some((responses, reader))
}

/// A watching client, until `until`.
pub(crate) async fn watcher_loop(
    id: u32,
    rec: Arc<Recorder>,
    channels: Vec<Channel>,
    plan: WatchPlan,
    seed: u64,
    until: Instant,
) {
    let mut rng = SplitMix64::new(seed);
    let mut resume: Vec<usize> = Vec::new();
    let mut first = true;
    while Instant::now() < until {
        let target = pick(&mut rng, channels.len());
        let (tx, rx) = unbounded();
        let mut s = Session {
            client: id,
            member: target,
            tx,
            pending: VecDeque::new(),
            open: BTreeMap::new(),
            canceling: BTreeSet::new(),
            progress_pending: VecDeque::new(),
            progress_sent: None,
            compacted: false,
        };
        if plan.kubernetes {
            // A reflector: list, then watch from the list's revision + 1.
            let (prefix, end) = (&plan.prefix, &plan.prefix_end);
            let channel = channels[target].clone();
            if let Some(r) =
                super::kubernetes::list(&rec, 2_000_000 + id, channel, prefix, end, plan.timeout)
                    .await
            {
                let spec = Spec {
                    key: prefix.clone(),
                    range_end: end.clone(),
                    start_revision: r + 1,
                    prev_kv: false,
                    resumes: None,
                };
                s.create(&rec, spec);
            }
        }
        if std::mem::take(&mut first) {
            // The whole prefix from the run's start: the watcher that sees
            // every write of the run.
            let spec = Spec {
                key: plan.prefix.clone(),
                range_end: plan.prefix_end.clone(),
                start_revision: plan.first_revision,
                prev_kv: true,
                resumes: None,
            };
            s.create(&rec, spec);
        }
        for index in std::mem::take(&mut resume) {
            let spec = resume_spec(&rec, index);
            s.create(&rec, spec);
        }
        if s.pending.is_empty() {
            let head = rec.head.load(Ordering::Relaxed);
            s.create(&rec, random_spec(&mut rng, &plan, head));
        }
        let Some((mut responses, reader)) = open_stream(channels[target].clone(), rx).await else {
            rec.error_kind("watch-connect");
            // The creates were never answered; resume what they resumed.
            resume = s.close(&rec, WatchEnd::Broken);
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let channel = &channels[target];
        let broken = session(
            &rec,
            &mut s,
            &mut responses,
            &mut rng,
            &plan,
            channel,
            until,
        )
        .await;
        if !broken {
            // The run is over: one last progress request, so every watcher
            // vouches as far as it can, then collect for a while.
            if plan.progress {
                s.progress(&rec);
            }
            let deadline = Instant::now() + Duration::from_secs(2);
            while let Ok(Some(Ok(Some(r)))) = tokio::time::timeout(
                deadline.saturating_duration_since(Instant::now()),
                responses.recv(),
            )
            .await
            {
                if s.handle(&rec, r, rec.now()).is_err() {
                    break;
                }
            }
        }
        reader.abort();
        let end = if broken {
            WatchEnd::Broken
        } else {
            WatchEnd::Open
        };
        resume = s.close(&rec, end);
    }
}

/// Runs one stream until it breaks (true) or the run ends (false).
async fn session(
    rec: &Recorder,
    s: &mut Session,
    responses: &mut Responses,
    rng: &mut SplitMix64,
    plan: &WatchPlan,
    channel: &Channel,
    until: Instant,
) -> bool {
    let mut next_action = Instant::now();
    while Instant::now() < until {
        tokio::select! {
            msg = responses.recv() => match msg {
                Some(Ok(Some(r))) => {
                    s.progress_sent = None;
                    if let Err(why) = s.handle(rec, r, rec.now()) {
                        rec.anomaly(format!("watch client {}: {why}", s.client));
                        return true;
                    }
                    if plan.kubernetes && s.compacted {
                        return true; // relist
                    }
                }
                _ => return true,
            },
            _ = tokio::time::sleep_until(next_action.into()) => {
                next_action = Instant::now() + Duration::from_millis(100 + pick(rng, 500) as u64);
                // A stream that answers nothing, not even a progress request, is dead.
                if s.progress_sent.is_some_and(|t| t.elapsed() > Duration::from_secs(4)) {
                    return true;
                }
                match pick(rng, 12) {
                    0..=2 if plan.progress => s.progress(rec),
                    3 => s.cancel_and_resume(rec, rng),
                    4 if pick(rng, 8) == 0 => return true, // move to another endpoint
                    5..=7 if plan.kubernetes => {
                        // A list (kube-apiserver's LIST of a resource).
                        let (prefix, end) = (&plan.prefix, &plan.prefix_end);
                        let id = 2_000_000 + s.client;
                        super::kubernetes::list(rec, id, channel.clone(), prefix, end, plan.timeout).await;
                    }
                    _ if s.watchers() < 3 && !plan.kubernetes => {
                        let head = rec.head.load(Ordering::Relaxed);
                        let spec = random_spec(rng, plan, head);
                        s.create(rec, spec);
                    }
                    _ => {}
                }
            }
        }
    }
    false
}
