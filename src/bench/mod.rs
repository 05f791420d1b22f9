//! `cairn bench`: a load generator for any etcd v3 endpoint, cairn or etcd.
//!
//! It works the way etcd's own `benchmark` tool does: `--conns` gRPC
//! connections shared by `--clients` concurrent clients, each sending one
//! request at a time (a closed loop), until `--total` requests or
//! `--duration` seconds are done, optionally paced to `--rate` requests per
//! second across all clients. The workloads live in [`workloads`].
//!
//! # What is measured
//!
//! Each client times every request from just before it is sent to just after
//! its response is decoded and records the time in its own HDR histogram
//! (nanoseconds, three significant figures); the histograms are merged at the
//! end. With `--rate`, a request waits for its slot first and the wait is not
//! counted, so a server that falls behind the rate shows as lower throughput,
//! not as higher latency (no coordinated-omission correction).
//!
//! Failed requests are counted by kind: the gRPC status code's name
//! (`Unavailable`, `Unimplemented`, ...), `connect` when a connection cannot be
//! made, `watch-canceled` when a server cancels a watcher. They are not in the
//! latency histogram. A run whose requests all fail still prints its report
//! (count 0 and its errors) and exits with status 1.
//!
//! # Output
//!
//! A text report, or with `--json` one JSON object on stdout. While a run is
//! going and stderr is a terminal, a progress bar is drawn on stderr.
// Driver code: it reads the clock, which the crate's clippy.toml keeps out of
// the sans-IO core.
#![allow(clippy::disallowed_methods)]

mod report;
mod workloads;

use cairn::proto::etcdserverpb::maintenance_client::MaintenanceClient;
use cairn::proto::etcdserverpb::StatusRequest;
use clap::{Args, Subcommand};
use hdrhistogram::Histogram;
use report::{Report, Stats};
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint};

/// Options every workload shares (named as etcd's `benchmark` names them).
#[derive(Args, Clone, Debug)]
pub struct Common {
    /// Client endpoints, host:port, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:2379")]
    pub endpoints: Vec<String>,
    /// gRPC connections, spread over the endpoints.
    #[arg(long, default_value_t = 1)]
    pub conns: usize,
    /// Concurrent clients, spread over the connections.
    #[arg(long, default_value_t = 1)]
    pub clients: usize,
    /// Requests to send in all (default 10000 unless --duration is given).
    #[arg(long)]
    pub total: Option<u64>,
    /// Seconds to run for, instead of a request count.
    #[arg(long)]
    pub duration: Option<f64>,
    /// Requests per second across all clients (0: as fast as they go).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Send everything to the leader (found by asking each endpoint's Status)
    /// instead of spreading connections over all endpoints.
    #[arg(long)]
    pub target_leader: bool,
    /// Print one JSON object instead of the text report.
    #[arg(long)]
    pub json: bool,
    /// Do not draw the progress bar.
    #[arg(long)]
    pub no_progress: bool,
    /// Seed for the random keys and operation choices.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// The workloads.
#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Put keys (etcd benchmark's `put`).
    Put {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        args: workloads::PutArgs,
    },
    /// Range over keys put beforehand (etcd benchmark's `range`).
    Range {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        args: workloads::RangeArgs,
    },
    /// Compare-and-swap: a txn that puts a key if its mod_revision is the
    /// one the client last saw.
    TxnPut {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        args: workloads::TxnPutArgs,
    },
    /// Many watchers on one prefix under a put load: event latency (receive
    /// time minus the put's send time) and event throughput.
    Watch {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        args: workloads::WatchArgs,
    },
    /// A Kubernetes-like mix: optimistic-concurrency updates guarded by
    /// mod_revision, gets, lists by prefix, and watches from a revision.
    K8s {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        args: workloads::K8sArgs,
    },
}

/// Runs `cairn bench <workload>`.
pub fn main(cmd: BenchCommand) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cairn bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (common, report) = runtime.block_on(async {
        match cmd {
            BenchCommand::Put { common, args } => {
                let r = workloads::put(&common, args).await;
                (common, r)
            }
            BenchCommand::Range { common, args } => {
                let r = workloads::range(&common, args).await;
                (common, r)
            }
            BenchCommand::TxnPut { common, args } => {
                let r = workloads::txn_put(&common, args).await;
                (common, r)
            }
            BenchCommand::Watch { common, args } => {
                let r = workloads::watch(&common, args).await;
                (common, r)
            }
            BenchCommand::K8s { common, args } => {
                let r = workloads::k8s(&common, args).await;
                (common, r)
            }
        }
    });
    if common.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_text());
    }
    if report.stats.count == 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// The error kind of a failed gRPC call: the status code's name.
pub(crate) fn status_kind(s: &tonic::Status) -> String {
    format!("{:?}", s.code())
}

/// Opens `common.conns` connections: all to the leader with
/// `--target-leader`, else round-robin over the endpoints.
pub(crate) async fn connect(common: &Common) -> Result<Vec<Channel>, String> {
    let mut endpoints = common.endpoints.clone();
    if endpoints.is_empty() {
        return Err("no endpoints".into());
    }
    if common.target_leader {
        endpoints = vec![find_leader(&endpoints).await?];
    }
    let mut channels = Vec::new();
    for i in 0..common.conns.max(1) {
        let ep = &endpoints[i % endpoints.len()];
        channels.push(dial(ep).await?);
    }
    Ok(channels)
}

/// One connection to `ep` (host:port or a URL); shared with `cairn verify`.
pub(crate) async fn dial(ep: &str) -> Result<Channel, String> {
    let url = if ep.contains("://") {
        ep.to_string()
    } else {
        format!("http://{ep}")
    };
    Endpoint::from_shared(url)
        .map_err(|e| format!("{ep}: {e}"))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|e| format!("{ep}: {e}"))
}

/// The endpoint whose member is the leader, asking each in turn.
async fn find_leader(endpoints: &[String]) -> Result<String, String> {
    for ep in endpoints {
        let Ok(ch) = dial(ep).await else { continue };
        let Ok(resp) = MaintenanceClient::new(ch).status(StatusRequest {}).await else {
            continue;
        };
        let resp = resp.into_inner();
        let member = resp.header.map(|h| h.member_id).unwrap_or(0);
        if member != 0 && member == resp.leader {
            return Ok(ep.clone());
        }
    }
    Err("no endpoint says it is the leader".into())
}

/// One client's tally: latencies of successful requests, errors by kind.
pub(crate) struct Tally {
    pub(crate) hist: Histogram<u64>,
    pub(crate) errors: BTreeMap<String, u64>,
    /// The first error message seen of each kind.
    pub(crate) examples: BTreeMap<String, String>,
    /// Named counters a workload keeps (e.g. CAS conflicts).
    pub(crate) counters: BTreeMap<String, u64>,
    /// Per-operation histograms for mixed workloads.
    pub(crate) by_op: BTreeMap<String, Histogram<u64>>,
}

impl Tally {
    pub(crate) fn new() -> Self {
        Self {
            hist: new_hist(),
            errors: BTreeMap::new(),
            examples: BTreeMap::new(),
            counters: BTreeMap::new(),
            by_op: BTreeMap::new(),
        }
    }

    pub(crate) fn record(&mut self, elapsed: Duration) {
        let _ = self.hist.record(nanos(elapsed));
    }

    pub(crate) fn record_op(&mut self, op: &str, elapsed: Duration) {
        self.record(elapsed);
        let h = self.by_op.entry(op.to_string()).or_insert_with(new_hist);
        let _ = h.record(nanos(elapsed));
    }

    pub(crate) fn error(&mut self, kind: String) {
        *self.errors.entry(kind).or_default() += 1;
    }

    /// Counts a failed gRPC call under `prefix` + its code's name, keeping
    /// the first message of each kind.
    pub(crate) fn status(&mut self, prefix: &str, s: &tonic::Status) {
        let kind = format!("{prefix}{}", status_kind(s));
        self.examples
            .entry(kind.clone())
            .or_insert_with(|| s.message().to_string());
        self.error(kind);
    }

    pub(crate) fn count(&mut self, name: &str) {
        *self.counters.entry(name.to_string()).or_default() += 1;
    }

    pub(crate) fn merge(&mut self, other: Tally) {
        let _ = self.hist.add(&other.hist);
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
        for (k, v) in other.examples {
            self.examples.entry(k).or_insert(v);
        }
        for (k, v) in other.counters {
            *self.counters.entry(k).or_default() += v;
        }
        for (k, h) in other.by_op {
            let _ = self.by_op.entry(k).or_insert_with(new_hist).add(&h);
        }
    }
}

pub(crate) fn new_hist() -> Histogram<u64> {
    // 1 ns to 5 minutes at three significant figures.
    Histogram::new_with_bounds(1, 300_000_000_000, 3).expect("valid histogram bounds")
}

pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1)
}

/// Hands out request numbers and paces them: the shared state of a closed
/// loop. A client asks for the next number before each request; `None`
/// means the run is over.
pub(crate) struct Pacer {
    next: AtomicU64,
    total: Option<u64>,
    deadline: Option<Instant>,
    start: Instant,
    rate: u64,
    /// Requests finished (successful or not), for the progress bar.
    pub(crate) done: AtomicU64,
}

impl Pacer {
    pub(crate) fn new(common: &Common, default_total: u64) -> Arc<Self> {
        let start = Instant::now();
        let deadline = common
            .duration
            .map(|s| start + Duration::from_secs_f64(s.max(0.0)));
        let total = match (common.total, deadline) {
            (Some(t), _) => Some(t),
            (None, Some(_)) => None,
            (None, None) => Some(default_total),
        };
        Arc::new(Self {
            next: AtomicU64::new(0),
            total,
            deadline,
            start,
            rate: common.rate,
            done: AtomicU64::new(0),
        })
    }

    /// The next request's number, after waiting for its slot under `--rate`.
    pub(crate) async fn next(&self) -> Option<u64> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        if self.total.is_some_and(|t| n >= t) {
            return None;
        }
        if self.rate > 0 {
            let at = self.start + Duration::from_secs_f64(n as f64 / self.rate as f64);
            if self.deadline.is_some_and(|d| at >= d) {
                return None;
            }
            tokio::time::sleep_until(at.into()).await;
        }
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            return None;
        }
        Some(n)
    }

    pub(crate) fn finished_one(&self) {
        self.done.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// Draws a progress bar on stderr until the returned guard is dropped,
    /// when stderr is a terminal and `--no-progress` is not given.
    pub(crate) fn progress(self: &Arc<Self>, common: &Common, label: &str) -> ProgressGuard {
        let on = !common.no_progress && std::io::IsTerminal::is_terminal(&std::io::stderr());
        if !on {
            return ProgressGuard(None);
        }
        let me = self.clone();
        let label = label.to_string();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            loop {
                tick.tick().await;
                me.draw(&label);
            }
        });
        ProgressGuard(Some(task))
    }

    fn draw(&self, label: &str) {
        const WIDTH: usize = 40;
        let done = self.done.load(Ordering::Relaxed);
        let secs = self.elapsed().as_secs_f64();
        let frac = match (self.total, self.deadline) {
            (Some(t), _) if t > 0 => done as f64 / t as f64,
            (_, Some(d)) => {
                let whole = d.duration_since(self.start).as_secs_f64();
                if whole > 0.0 {
                    secs / whole
                } else {
                    1.0
                }
            }
            _ => 1.0,
        };
        let filled = ((frac.clamp(0.0, 1.0)) * WIDTH as f64) as usize;
        let rate = if secs > 0.0 { done as f64 / secs } else { 0.0 };
        eprint!(
            "\r{label} [{}{}] {done} done, {rate:.0}/s, {secs:.1}s ",
            "=".repeat(filled),
            " ".repeat(WIDTH - filled)
        );
    }
}

/// Stops the progress bar and clears its line when dropped.
pub(crate) struct ProgressGuard(Option<tokio::task::JoinHandle<()>>);

impl Drop for ProgressGuard {
    fn drop(&mut self) {
        if let Some(t) = self.0.take() {
            t.abort();
            eprint!("\r{}\r", " ".repeat(100));
        }
    }
}

/// Builds the report of a finished closed loop.
pub(crate) fn finish(
    workload: &str,
    common: &Common,
    tally: Tally,
    elapsed: Duration,
    extra: BTreeMap<String, f64>,
) -> Report {
    Report {
        workload: workload.to_string(),
        endpoints: common.endpoints.join(","),
        conns: common.conns,
        clients: common.clients,
        stats: Stats::from_tally(&tally, elapsed),
        extra,
        by_op: tally
            .by_op
            .iter()
            .map(|(k, h)| (k.clone(), Stats::from_hist(h, elapsed)))
            .collect(),
    }
}

/// A report for a run that could not start (e.g. no connection).
pub(crate) fn failed(workload: &str, common: &Common, kind: &str, msg: &str) -> Report {
    eprintln!("cairn bench {workload}: {msg}");
    let mut tally = Tally::new();
    tally.error(kind.to_string());
    tally.examples.insert(kind.to_string(), msg.to_string());
    finish(workload, common, tally, Duration::ZERO, BTreeMap::new())
}
