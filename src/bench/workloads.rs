//! The workloads of `cairn bench`, each a set of clients driven by one
//! [`Pacer`] in a closed loop.
//!
//! Keys and values: `put` writes fixed-size keys (the key number in decimal,
//! zero-padded to `--key-size`) as etcd's benchmark does; the other workloads
//! write under their own prefix (`/bench/range/`, `/bench/cas/`,
//! `/bench/watch/`, `/registry/pods/`), so runs against one cluster do not
//! disturb each other. Workloads that read first put their keys (`range`,
//! `k8s`), unmeasured.
//!
//! Watch latency needs the put's send time on the receiving side: `watch` and
//! `k8s` write it into the first 8 bytes of each value (nanoseconds since the
//! bench process started, little-endian), and a watcher subtracts it from
//! its receive time. Sender and receiver are the same process, so one clock.

use super::report::Report;
use super::{connect, failed, finish, status_kind, Common, Pacer, Tally};
use bytes::Bytes;
use cairn::proto::etcdserverpb::{
    compare::{CompareResult, CompareTarget, TargetUnion},
    kv_client::KvClient,
    request_op::Request,
    response_op::Response,
    watch_client::WatchClient,
    watch_request::RequestUnion,
    Compare, PutRequest, RangeRequest, RequestOp, TxnRequest, WatchCreateRequest, WatchRequest,
};
use cairn::server::SplitMix64;
use clap::{Args, ValueEnum};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// One client of a closed loop: sends request number `n` and records it.
trait Client: Send + 'static {
    fn run(&mut self, n: u64, tally: &mut Tally) -> impl Future<Output = ()> + Send;
}

/// Runs `clients` until `pacer` says stop; returns their merged tally.
async fn closed_loop<C: Client>(pacer: &Arc<Pacer>, clients: Vec<C>) -> Tally {
    let mut tasks = Vec::new();
    for mut c in clients {
        let pacer = pacer.clone();
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::new();
            while let Some(n) = pacer.next().await {
                c.run(n, &mut tally).await;
                pacer.finished_one();
            }
            tally
        }));
    }
    let mut all = Tally::new();
    for t in tasks {
        match t.await {
            Ok(tally) => all.merge(tally),
            Err(_) => all.error("client-panic".into()),
        }
    }
    all
}

/// A seed for client `i` that differs between clients and between `--seed`s.
fn client_seed(common: &Common, i: usize) -> u64 {
    SplitMix64::new(common.seed ^ ((i as u64) << 32)).next_u64()
}

/// Time since the process's first call: the clock watch latencies use.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// A value of `size` bytes (at least 8) stamped with the current time.
fn stamped_value(size: usize) -> Bytes {
    let mut v = vec![b'v'; size.max(8)];
    let t = u64::try_from(epoch().elapsed().as_nanos()).unwrap_or(u64::MAX);
    v[..8].copy_from_slice(&t.to_le_bytes());
    Bytes::from(v)
}

/// Time since `value` was stamped, if it carries a stamp.
fn stamp_age(value: &[u8]) -> Option<Duration> {
    let t = u64::from_le_bytes(value.get(..8)?.try_into().ok()?);
    let now = u64::try_from(epoch().elapsed().as_nanos()).ok()?;
    now.checked_sub(t).map(Duration::from_nanos)
}

fn put_req(key: Bytes, value: Bytes) -> PutRequest {
    PutRequest {
        key,
        value,
        ..Default::default()
    }
}

/// Puts `keys` (key i = `key_of(i)`) with up to 32 clients, unmeasured.
/// Returns the store revision after the last put.
async fn prefill(
    common: &Common,
    channels: &[Channel],
    keys: u64,
    key_of: Arc<dyn Fn(u64) -> Bytes + Send + Sync>,
    value: Bytes,
) -> Result<i64, String> {
    let fill = Common {
        total: Some(keys),
        duration: None,
        rate: 0,
        ..common.clone()
    };
    let pacer = Pacer::new(&fill, keys);
    let _bar = pacer.progress(&fill, "prefill");
    let clients = (0..common.clients.clamp(16, 64))
        .map(|i| FillClient {
            kv: KvClient::new(channels[i % channels.len()].clone()),
            key_of: key_of.clone(),
            value: value.clone(),
            revision: 0,
        })
        .collect();
    let tally = closed_loop(&pacer, clients).await;
    if let Some((kind, n)) = tally.errors.iter().next() {
        let example = tally.examples.get(kind).map(String::as_str).unwrap_or("");
        return Err(format!("prefill: {n} puts failed ({kind}: {example})"));
    }
    // The revision after the prefill: a linearizable get of the first key.
    let mut kv = KvClient::new(channels[0].clone());
    let resp = kv
        .range(RangeRequest {
            key: key_of(0),
            ..Default::default()
        })
        .await
        .map_err(|s| format!("prefill: {}: {}", status_kind(&s), s.message()))?;
    Ok(resp.into_inner().header.map(|h| h.revision).unwrap_or(0))
}

struct FillClient {
    kv: KvClient<Channel>,
    key_of: Arc<dyn Fn(u64) -> Bytes + Send + Sync>,
    value: Bytes,
    revision: i64,
}

impl Client for FillClient {
    async fn run(&mut self, n: u64, tally: &mut Tally) {
        let req = put_req((self.key_of)(n), self.value.clone());
        match self.kv.put(req).await {
            Ok(r) => {
                self.revision = r.into_inner().header.map(|h| h.revision).unwrap_or(0);
                tally.record(Duration::from_nanos(1));
            }
            Err(s) => tally.status("", &s),
        }
    }
}

// ---------------------------------------------------------------- put

/// Options of `cairn bench put`.
#[derive(Args, Clone, Debug)]
pub struct PutArgs {
    /// Key size in bytes.
    #[arg(long, default_value_t = 8)]
    key_size: usize,
    /// Value size in bytes.
    #[arg(long, default_value_t = 8)]
    val_size: usize,
    /// Number of distinct keys.
    #[arg(long, default_value_t = 1)]
    key_space_size: u64,
    /// Keys in order (request n writes key n mod key-space) instead of at random.
    #[arg(long)]
    sequential_keys: bool,
}

/// `width` bytes: the decimal digits of `i`, zero-padded (or cut to the
/// last `width` digits).
fn fixed_key(i: u64, width: usize) -> Bytes {
    let s = format!("{i:0width$}");
    Bytes::copy_from_slice(&s.as_bytes()[s.len() - width.min(s.len())..])
}

struct PutClient {
    kv: KvClient<Channel>,
    args: PutArgs,
    rng: SplitMix64,
    value: Bytes,
}

impl Client for PutClient {
    async fn run(&mut self, n: u64, tally: &mut Tally) {
        let space = self.args.key_space_size.max(1);
        let k = if self.args.sequential_keys {
            n % space
        } else {
            self.rng.next_u64() % space
        };
        let req = put_req(fixed_key(k, self.args.key_size), self.value.clone());
        let t = Instant::now();
        match self.kv.put(req).await {
            Ok(_) => tally.record(t.elapsed()),
            Err(s) => tally.status("", &s),
        }
    }
}

/// `cairn bench put`.
pub async fn put(common: &Common, args: PutArgs) -> Report {
    let channels = match connect(common).await {
        Ok(c) => c,
        Err(e) => return failed("put", common, "connect", &e),
    };
    let value = Bytes::from(vec![b'v'; args.val_size]);
    let clients = (0..common.clients.max(1))
        .map(|i| PutClient {
            kv: KvClient::new(channels[i % channels.len()].clone()),
            args: args.clone(),
            rng: SplitMix64::new(client_seed(common, i)),
            value: value.clone(),
        })
        .collect();
    let pacer = Pacer::new(common, 10_000);
    let bar = pacer.progress(common, "put");
    let tally = closed_loop(&pacer, clients).await;
    drop(bar);
    finish("put", common, tally, pacer.elapsed(), BTreeMap::new())
}

// ---------------------------------------------------------------- range

/// Linearizable (`l`) or serializable (`s`) reads.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Consistency {
    L,
    S,
}

/// Options of `cairn bench range`.
#[derive(Args, Clone, Debug)]
pub struct RangeArgs {
    /// `l`: linearizable (ReadIndex); `s`: serializable (local state).
    #[arg(long, value_enum, default_value = "l")]
    consistency: Consistency,
    /// Keys put before the run; each range starts at one of them at random.
    #[arg(long, default_value_t = 1000)]
    key_space_size: u64,
    /// Keys each range covers.
    #[arg(long, default_value_t = 1)]
    keys_per_range: u64,
    /// Size of the values put before the run.
    #[arg(long, default_value_t = 256)]
    val_size: usize,
    /// Skip putting the keys (they are there from an earlier run).
    #[arg(long)]
    no_prefill: bool,
}

fn range_key(i: u64) -> Bytes {
    Bytes::from(format!("/bench/range/{i:08}"))
}

struct RangeClient {
    kv: KvClient<Channel>,
    args: RangeArgs,
    rng: SplitMix64,
}

impl Client for RangeClient {
    async fn run(&mut self, _n: u64, tally: &mut Tally) {
        let start = self.rng.next_u64() % self.args.key_space_size.max(1);
        let range_end = if self.args.keys_per_range > 1 {
            range_key(start + self.args.keys_per_range)
        } else {
            Bytes::new()
        };
        let req = RangeRequest {
            key: range_key(start),
            range_end,
            serializable: matches!(self.args.consistency, Consistency::S),
            ..Default::default()
        };
        let t = Instant::now();
        match self.kv.range(req).await {
            Ok(_) => tally.record(t.elapsed()),
            Err(s) => tally.status("", &s),
        }
    }
}

/// `cairn bench range`.
pub async fn range(common: &Common, args: RangeArgs) -> Report {
    let channels = match connect(common).await {
        Ok(c) => c,
        Err(e) => return failed("range", common, "connect", &e),
    };
    if !args.no_prefill {
        let value = Bytes::from(vec![b'r'; args.val_size]);
        if let Err(e) = prefill(
            common,
            &channels,
            args.key_space_size,
            Arc::new(range_key),
            value,
        )
        .await
        {
            return failed("range", common, "prefill", &e);
        }
    }
    let clients = (0..common.clients.max(1))
        .map(|i| RangeClient {
            kv: KvClient::new(channels[i % channels.len()].clone()),
            args: args.clone(),
            rng: SplitMix64::new(client_seed(common, i)),
        })
        .collect();
    let pacer = Pacer::new(common, 10_000);
    let bar = pacer.progress(common, "range");
    let tally = closed_loop(&pacer, clients).await;
    drop(bar);
    finish("range", common, tally, pacer.elapsed(), BTreeMap::new())
}

// ---------------------------------------------------------------- txn-put

/// Options of `cairn bench txn-put`.
#[derive(Args, Clone, Debug)]
pub struct TxnPutArgs {
    /// Keys each client cycles through (its own, so conflicts are rare).
    #[arg(long, default_value_t = 100)]
    keys_per_client: u64,
    /// Value size in bytes.
    #[arg(long, default_value_t = 8)]
    val_size: usize,
}

fn compare_mod(key: Bytes, rev: i64) -> Compare {
    Compare {
        result: CompareResult::Equal as i32,
        target: CompareTarget::Mod as i32,
        key,
        target_union: Some(TargetUnion::ModRevision(rev)),
        ..Default::default()
    }
}

/// A txn that puts `value` at `key` if its mod_revision is `rev`, and
/// otherwise reads the key.
fn cas_txn(key: Bytes, rev: i64, value: Bytes) -> TxnRequest {
    TxnRequest {
        compare: vec![compare_mod(key.clone(), rev)],
        success: vec![RequestOp {
            request: Some(Request::RequestPut(put_req(key.clone(), value))),
        }],
        failure: vec![RequestOp {
            request: Some(Request::RequestRange(RangeRequest {
                key,
                ..Default::default()
            })),
        }],
    }
}

/// The mod_revision a CAS txn leaves the key at: the txn's revision when it
/// succeeded, else what the failure branch read (0: no key).
fn cas_outcome(resp: &cairn::proto::etcdserverpb::TxnResponse) -> i64 {
    if resp.succeeded {
        return resp.header.as_ref().map(|h| h.revision).unwrap_or(0);
    }
    match resp.responses.first().and_then(|r| r.response.as_ref()) {
        Some(Response::ResponseRange(r)) => r.kvs.first().map(|kv| kv.mod_revision).unwrap_or(0),
        _ => 0,
    }
}

struct CasClient {
    kv: KvClient<Channel>,
    id: usize,
    args: TxnPutArgs,
    /// Last mod_revision seen per key (0: never written).
    revs: Vec<i64>,
    value: Bytes,
}

impl Client for CasClient {
    async fn run(&mut self, n: u64, tally: &mut Tally) {
        let slot = (n % self.args.keys_per_client.max(1)) as usize;
        let key = Bytes::from(format!("/bench/cas/{:04}/{slot:06}", self.id));
        let req = cas_txn(key, self.revs[slot], self.value.clone());
        let t = Instant::now();
        match self.kv.txn(req).await {
            Ok(r) => {
                tally.record(t.elapsed());
                let r = r.into_inner();
                if !r.succeeded {
                    tally.count("cas_conflicts");
                }
                self.revs[slot] = cas_outcome(&r);
            }
            Err(s) => tally.status("", &s),
        }
    }
}

/// `cairn bench txn-put`.
pub async fn txn_put(common: &Common, args: TxnPutArgs) -> Report {
    let channels = match connect(common).await {
        Ok(c) => c,
        Err(e) => return failed("txn-put", common, "connect", &e),
    };
    let value = Bytes::from(vec![b't'; args.val_size]);
    // A per-run tag in the key space would avoid conflicts with an earlier
    // run's keys; instead the first txn on each key learns its revision
    // (a counted conflict) and carries on.
    let clients = (0..common.clients.max(1))
        .map(|i| CasClient {
            kv: KvClient::new(channels[i % channels.len()].clone()),
            id: i,
            revs: vec![0; args.keys_per_client.max(1) as usize],
            args: args.clone(),
            value: value.clone(),
        })
        .collect();
    let pacer = Pacer::new(common, 10_000);
    let bar = pacer.progress(common, "txn-put");
    let tally = closed_loop(&pacer, clients).await;
    drop(bar);
    finish("txn-put", common, tally, pacer.elapsed(), BTreeMap::new())
}

// ---------------------------------------------------------------- watchers

/// Watchers spread over a few streams, all on one prefix, counting events
/// and timing them by the stamp in each value.
struct Watchers {
    /// Reader tasks, one per stream; each returns its tally.
    tasks: Vec<tokio::task::JoinHandle<Tally>>,
    stop: tokio::sync::watch::Sender<bool>,
    created: Arc<AtomicU64>,
    events: Arc<AtomicU64>,
    /// Nanoseconds since `epoch()` of the last event received.
    last_event_ns: Arc<AtomicU64>,
}

fn prefix_end(prefix: &[u8]) -> Bytes {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Bytes::from(end);
        }
    }
    Bytes::from_static(b"\0")
}

impl Watchers {
    /// Opens `streams` watch streams over `channels` and asks for `watchers`
    /// watchers on `prefix` from `start_revision` (0: from now). Returns once
    /// the requests are sent; [`Watchers::wait_created`] waits for the
    /// server's answers.
    async fn start(
        channels: &[Channel],
        streams: usize,
        watchers: usize,
        prefix: &[u8],
        start_revision: i64,
    ) -> Self {
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let created = Arc::new(AtomicU64::new(0));
        let events = Arc::new(AtomicU64::new(0));
        let last_event_ns = Arc::new(AtomicU64::new(0));
        let streams = streams.clamp(1, watchers.max(1));
        let mut tasks = Vec::new();
        for s in 0..streams {
            // Watchers s, s + streams, s + 2*streams, ... go on stream s.
            let n = (watchers + streams - 1 - s) / streams;
            let (tx, rx) = futures::channel::mpsc::unbounded();
            for _ in 0..n {
                let req = WatchRequest {
                    request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                        key: Bytes::copy_from_slice(prefix),
                        range_end: prefix_end(prefix),
                        start_revision,
                        ..Default::default()
                    })),
                };
                let _ = tx.unbounded_send(req);
            }
            let mut client = WatchClient::new(channels[s % channels.len()].clone())
                .max_decoding_message_size(64 << 20);
            let (created, events, last) = (created.clone(), events.clone(), last_event_ns.clone());
            let mut stop_rx = stop_rx.clone();
            tasks.push(tokio::spawn(async move {
                let mut tally = Tally::new();
                // `tx` lives as long as the reader: dropping it would end the
                // request stream, and servers close the watch stream then.
                let _tx = tx;
                let mut stream = match client.watch(rx).await {
                    Ok(s) => s.into_inner(),
                    Err(s) => {
                        tally.status("watch-", &s);
                        return tally;
                    }
                };
                loop {
                    let msg = tokio::select! {
                        m = stream.message() => m,
                        _ = stop_rx.changed() => break,
                    };
                    match msg {
                        Ok(Some(resp)) => {
                            if resp.created {
                                created.fetch_add(1, Ordering::Relaxed);
                            }
                            if resp.canceled {
                                tally
                                    .examples
                                    .entry("watch-canceled".into())
                                    .or_insert_with(|| resp.cancel_reason.clone());
                                tally.error("watch-canceled".into());
                            }
                            for ev in &resp.events {
                                let Some(kv) = &ev.kv else { continue };
                                if let Some(age) = stamp_age(&kv.value) {
                                    tally.record(age);
                                }
                                events.fetch_add(1, Ordering::Relaxed);
                            }
                            if !resp.events.is_empty() {
                                let now =
                                    u64::try_from(epoch().elapsed().as_nanos()).unwrap_or(u64::MAX);
                                last.fetch_max(now, Ordering::Relaxed);
                            }
                        }
                        Ok(None) => {
                            tally.error("watch-stream-ended".into());
                            break;
                        }
                        Err(s) => {
                            tally.status("watch-", &s);
                            break;
                        }
                    }
                }
                tally
            }));
        }
        Self {
            tasks,
            stop,
            created,
            events,
            last_event_ns,
        }
    }

    /// Waits until `want` watchers are created, a stream fails, or `limit`.
    async fn wait_created(&self, want: u64, limit: Duration) -> bool {
        let until = Instant::now() + limit;
        while Instant::now() < until {
            if self.created.load(Ordering::Relaxed) >= want {
                return true;
            }
            if self.tasks.iter().any(|t| t.is_finished()) {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    /// Waits until `want` events have arrived, or nothing new for `quiet`.
    async fn wait_events(&self, want: u64, quiet: Duration) {
        let mut seen = self.events.load(Ordering::Relaxed);
        let mut since = Instant::now();
        while self.events.load(Ordering::Relaxed) < want && since.elapsed() < quiet {
            tokio::time::sleep(Duration::from_millis(10)).await;
            let now = self.events.load(Ordering::Relaxed);
            if now != seen {
                seen = now;
                since = Instant::now();
            }
        }
    }

    /// Stops every reader and returns their merged tally.
    async fn finish(self) -> Tally {
        let _ = self.stop.send(true);
        let mut all = Tally::new();
        for t in self.tasks {
            match t.await {
                Ok(tally) => all.merge(tally),
                Err(_) => all.error("watch-panic".into()),
            }
        }
        all
    }
}

// ---------------------------------------------------------------- watch

/// Options of `cairn bench watch`.
#[derive(Args, Clone, Debug)]
pub struct WatchArgs {
    /// Watchers, all on the prefix.
    #[arg(long, default_value_t = 1000)]
    watchers: usize,
    /// Watch streams the watchers share (spread over the connections).
    #[arg(long, default_value_t = 10)]
    streams: usize,
    /// The prefix watched and written.
    #[arg(long, default_value = "/bench/watch/")]
    prefix: String,
    /// Distinct keys the puts write under the prefix.
    #[arg(long, default_value_t = 100)]
    key_space_size: u64,
    /// Value size in bytes (at least 8: the send time).
    #[arg(long, default_value_t = 64)]
    val_size: usize,
}

struct StampedPutClient {
    kv: KvClient<Channel>,
    prefix: String,
    space: u64,
    val_size: usize,
}

impl Client for StampedPutClient {
    async fn run(&mut self, n: u64, tally: &mut Tally) {
        let key = Bytes::from(format!("{}{:08}", self.prefix, n % self.space.max(1)));
        let t = Instant::now();
        match self
            .kv
            .put(put_req(key, stamped_value(self.val_size)))
            .await
        {
            Ok(_) => tally.record(t.elapsed()),
            Err(s) => tally.status("", &s),
        }
    }
}

/// `cairn bench watch`: the main figures are event delivery (count, events
/// per second from the first put to the last event, latency from put send to
/// event receipt); `extra` holds the put side.
pub async fn watch(common: &Common, args: WatchArgs) -> Report {
    let channels = match connect(common).await {
        Ok(c) => c,
        Err(e) => return failed("watch", common, "connect", &e),
    };
    let _ = epoch();
    let watchers = Watchers::start(
        &channels,
        args.streams,
        args.watchers,
        args.prefix.as_bytes(),
        0,
    )
    .await;
    let ready = watchers
        .wait_created(args.watchers as u64, Duration::from_secs(30))
        .await;
    if !ready {
        let tally = watchers.finish().await;
        let mut extra = BTreeMap::new();
        extra.insert("watchers".into(), args.watchers as f64);
        let mut r = finish("watch", common, tally, Duration::ZERO, extra);
        r.stats.count = 0;
        if r.stats.errors.is_empty() {
            r.stats.errors.insert("watch-create-timeout".into(), 1);
        }
        return r;
    }
    let clients = (0..common.clients.max(1))
        .map(|i| StampedPutClient {
            kv: KvClient::new(channels[i % channels.len()].clone()),
            prefix: args.prefix.clone(),
            space: args.key_space_size,
            val_size: args.val_size,
        })
        .collect();
    let first_put_ns = u64::try_from(epoch().elapsed().as_nanos()).unwrap_or(0);
    let pacer = Pacer::new(common, 1_000);
    let bar = pacer.progress(common, "watch");
    let puts = closed_loop(&pacer, clients).await;
    drop(bar);
    let put_elapsed = pacer.elapsed();
    let expected = puts.hist.len() * args.watchers as u64;
    watchers.wait_events(expected, Duration::from_secs(5)).await;
    let last_ns = watchers.last_event_ns.load(Ordering::Relaxed);
    let mut events = watchers.finish().await;
    let span = Duration::from_nanos(last_ns.saturating_sub(first_put_ns));
    let put_stats = super::report::Stats::from_tally(&puts, put_elapsed);
    for (k, v) in &puts.errors {
        *events.errors.entry(format!("put-{k}")).or_default() += v;
    }
    let mut extra = BTreeMap::new();
    extra.insert("watchers".into(), args.watchers as f64);
    extra.insert("streams".into(), args.streams as f64);
    extra.insert("puts".into(), put_stats.count as f64);
    extra.insert("put_throughput".into(), put_stats.throughput);
    extra.insert("put_p99_us".into(), put_stats.latency_us[3]);
    extra.insert("events_expected".into(), expected as f64);
    finish("watch", common, events, span, extra)
}

// ---------------------------------------------------------------- k8s

/// Options of `cairn bench k8s`.
#[derive(Args, Clone, Debug)]
pub struct K8sArgs {
    /// Objects put before the run, spread over the namespaces.
    #[arg(long, default_value_t = 1000)]
    objects: u64,
    /// Namespaces (a list reads one namespace's objects).
    #[arg(long, default_value_t = 10)]
    namespaces: u64,
    /// Object size in bytes.
    #[arg(long, default_value_t = 1024)]
    val_size: usize,
    /// Percent of operations that are updates (get, then a txn guarded by
    /// the object's mod_revision).
    #[arg(long, default_value_t = 50)]
    update_pct: u64,
    /// Percent of operations that are gets of one object; the rest are lists.
    #[arg(long, default_value_t = 30)]
    get_pct: u64,
    /// Watchers on the whole prefix, from the revision after the prefill.
    #[arg(long, default_value_t = 10)]
    watchers: usize,
}

const K8S_PREFIX: &str = "/registry/pods/";

fn k8s_key(i: u64, namespaces: u64) -> Bytes {
    Bytes::from(format!(
        "{K8S_PREFIX}ns{:03}/pod-{i:06}",
        i % namespaces.max(1)
    ))
}

struct K8sClient {
    kv: KvClient<Channel>,
    args: K8sArgs,
    rng: SplitMix64,
}

impl K8sClient {
    /// A GuaranteedUpdate: read the object, write it back if unchanged.
    async fn update(&mut self, key: Bytes) -> Result<bool, tonic::Status> {
        let got = self
            .kv
            .range(RangeRequest {
                key: key.clone(),
                ..Default::default()
            })
            .await?
            .into_inner();
        let rev = got.kvs.first().map(|kv| kv.mod_revision).unwrap_or(0);
        let txn = cas_txn(key, rev, stamped_value(self.args.val_size));
        Ok(self.kv.txn(txn).await?.into_inner().succeeded)
    }
}

impl Client for K8sClient {
    async fn run(&mut self, _n: u64, tally: &mut Tally) {
        let a = &self.args;
        let roll = self.rng.next_u64() % 100;
        let obj = self.rng.next_u64() % a.objects.max(1);
        let t = Instant::now();
        let (op, result) = if roll < a.update_pct {
            let key = k8s_key(obj, a.namespaces);
            match self.update(key).await {
                Ok(true) => ("update", Ok(())),
                Ok(false) => {
                    tally.count("update_conflicts");
                    ("update", Ok(()))
                }
                Err(s) => ("update", Err(s)),
            }
        } else if roll < a.update_pct + a.get_pct {
            let req = RangeRequest {
                key: k8s_key(obj, a.namespaces),
                ..Default::default()
            };
            ("get", self.kv.range(req).await.map(|_| ()))
        } else {
            let ns = format!("{K8S_PREFIX}ns{:03}/", obj % a.namespaces.max(1));
            let req = RangeRequest {
                range_end: prefix_end(ns.as_bytes()),
                key: Bytes::from(ns),
                limit: 500,
                ..Default::default()
            };
            ("list", self.kv.range(req).await.map(|_| ()))
        };
        match result {
            Ok(()) => tally.record_op(op, t.elapsed()),
            Err(s) => tally.status(&format!("{op}-"), &s),
        }
    }
}

/// `cairn bench k8s`.
pub async fn k8s(common: &Common, args: K8sArgs) -> Report {
    let channels = match connect(common).await {
        Ok(c) => c,
        Err(e) => return failed("k8s", common, "connect", &e),
    };
    let _ = epoch();
    let ns = args.namespaces;
    let value = stamped_value(args.val_size);
    let rev = match prefill(
        common,
        &channels,
        args.objects,
        Arc::new(move |i| k8s_key(i, ns)),
        value,
    )
    .await
    {
        Ok(r) => r,
        Err(e) => return failed("k8s", common, "prefill", &e),
    };
    let watchers = Watchers::start(
        &channels,
        args.watchers.min(4),
        args.watchers,
        K8S_PREFIX.as_bytes(),
        rev + 1,
    )
    .await;
    // A server without Watch fails the watchers; the mix runs regardless.
    let _ = watchers
        .wait_created(args.watchers as u64, Duration::from_secs(10))
        .await;
    let clients = (0..common.clients.max(1))
        .map(|i| K8sClient {
            kv: KvClient::new(channels[i % channels.len()].clone()),
            args: args.clone(),
            rng: SplitMix64::new(client_seed(common, i)),
        })
        .collect();
    let pacer = Pacer::new(common, 10_000);
    let bar = pacer.progress(common, "k8s");
    let mut tally = closed_loop(&pacer, clients).await;
    drop(bar);
    let elapsed = pacer.elapsed();
    let writes = tally
        .by_op
        .get("update")
        .map(|h| h.len())
        .unwrap_or(0)
        .saturating_sub(tally.counters.get("update_conflicts").copied().unwrap_or(0));
    let expected = writes * args.watchers as u64;
    watchers.wait_events(expected, Duration::from_secs(3)).await;
    let events = watchers.events.load(Ordering::Relaxed);
    let w = watchers.finish().await;
    for (k, v) in &w.errors {
        *tally.errors.entry(k.clone()).or_default() += v;
    }
    let mut extra = BTreeMap::new();
    extra.insert("watch_events".into(), events as f64);
    extra.insert("watch_events_expected".into(), expected as f64);
    if !w.hist.is_empty() {
        extra.insert(
            "watch_event_p99_us".into(),
            w.hist.value_at_quantile(0.99) as f64 / 1000.0,
        );
    }
    finish("k8s", common, tally, elapsed, extra)
}
