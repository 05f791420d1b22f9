//! `cairn verify`: the simulator's checkers pointed at a real etcd v3
//! cluster (etcd or cairn).
//!
//! It runs a workload against the given endpoints for `--duration`, records
//! every operation with its invocation and completion time (nanoseconds of
//! the wall clock since the run began) and its outcome, and judges the
//! history with the checkers the simulator uses (`cairn::check`):
//!
//! - **linearizability** of the single-key operations (put, get, delete,
//!   compare-and-swap) and the revision checks across keys;
//! - **watch**: etcd's watch guarantees, per watcher;
//! - **lease**: the lease rules (TTL, nothing outlives its lease, one
//!   revision per expiry, never early);
//! - **multi-key**: two-key txns and ranges at a revision against the
//!   watchers' event log;
//! - **durability**: after the run every key is read linearizably through
//!   every endpoint; each read must be explained by a write no acknowledged
//!   write followed (`cairn::check::durability`), and the reads join the
//!   history for the linearizability check too;
//! - **replicas**: every endpoint's `HashKV` at one revision agrees;
//! - **responses**: watch responses that contradict themselves.
//!
//! An operation that fails with an error proving it did nothing ("no
//! leader", an invalid argument) is failed; every other error, a timeout
//! included, leaves its outcome unknown: it may have taken effect at any
//! point after it was sent, or never.
//!
//! The run uses keys under a fresh prefix (`/cairn-verify/<nonce>/`), so the
//! checkers' assumption of keys that start absent holds on a cluster in use;
//! other clients' writes elsewhere only raise the revision, which the
//! checkers allow.
//!
//! `--local BINARY` starts a 3-member cluster of the binary on loopback
//! itself and kills, pauses and restarts members (`local.rs`);
//! `--nemesis-cmd` runs the user's own fault commands on a schedule. Every
//! fault is recorded with its time and shown in the report.
// Driver code: it reads the clock and runs processes, which the crate's
// clippy.toml keeps out of the sans-IO core.
#![allow(clippy::disallowed_methods)]

mod dial;
mod kubernetes;
mod kv;
mod lease;
mod local;
mod multi;
mod report;
mod timeline;
mod watch;

use cairn::check::history::{History, LeaseOp, MultiOp, WatchRecord};
use cairn::proto::etcdserverpb::maintenance_client::MaintenanceClient;
use cairn::proto::etcdserverpb::{HashKvRequest, StatusRequest};
use clap::Args;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// `cairn verify`'s options.
#[derive(Args, Clone, Debug)]
pub struct VerifyArgs {
    /// Client endpoints of ONE cluster, host:port, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:2379")]
    pub endpoints: Vec<String>,
    /// How long the workload runs (Go duration: 30s, 2m; a bare number is seconds).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub duration: Duration,
    /// The workload: `default` (the simulator's mix plus multi-key txns and
    /// ranges) or `kubernetes` (optimistic-concurrency updates, paged lists,
    /// list-then-watch, compaction).
    #[arg(long, value_enum, default_value_t = Workload::Default)]
    pub workload: Workload,
    /// With --workload kubernetes: time between compactions.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub compact_interval: Duration,
    /// Concurrent key-value clients.
    #[arg(long, default_value_t = 4)]
    pub clients: u32,
    /// Concurrent multi-key clients (two-key txns, ranges at a revision).
    #[arg(long, default_value_t = 2)]
    pub multi_clients: u32,
    /// Concurrent lease clients (grant, keep alive, let lapse, revoke).
    #[arg(long, default_value_t = 2)]
    pub lease_clients: u32,
    /// The cluster's heartbeat interval (etcd's --heartbeat-interval): the
    /// lease checker allows a lease to go this much before its TTL is up.
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    pub tick: Duration,
    /// Concurrent watching clients (each with up to three watchers).
    #[arg(long, default_value_t = 2)]
    pub watchers: u32,
    /// Keys the clients contend on.
    #[arg(long, default_value_t = 5)]
    pub keys: usize,
    /// How long one request may take before its outcome counts as unknown.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub request_timeout: Duration,
    /// Send gets as serializable reads. They need not be linearizable, so
    /// with faults this should fail the linearizability check (a way to see
    /// the checker catch stale reads).
    #[arg(long)]
    pub serializable: bool,
    /// The key prefix of the run [default: /cairn-verify/<nonce>/]; it must
    /// hold no keys when the run starts.
    #[arg(long)]
    pub prefix: Option<String>,
    /// Send no watch progress requests. An etcd without etcd-io/etcd#15237
    /// (Debian's 3.4.23 among them) answers one with the current revision
    /// ahead of events not yet sent to the stream's watchers
    /// (etcd-io/etcd#15220), which the watch checker reports (bookmarkable);
    /// this leaves that guarantee unchecked.
    #[arg(long)]
    pub no_watch_progress: bool,
    /// Seed for the workload's random choices [default: from the clock].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Print one JSON object instead of the text report.
    #[arg(long)]
    pub json: bool,
    /// Write an HTML timeline of the failing sub-history here (on a violation).
    #[arg(long)]
    pub html: Option<PathBuf>,
    /// Do not print the progress line on stderr.
    #[arg(long)]
    pub no_progress: bool,
    /// Start a 3-member cluster of this binary (cairn or etcd) on loopback and
    /// run against it, with the built-in nemesis (--faults); --endpoints is
    /// ignored.
    #[arg(long)]
    pub local: Option<PathBuf>,
    /// With --local: the faults to inject, comma-separated: kill (SIGKILL and
    /// restart), pause (SIGSTOP and SIGCONT); "none" for none.
    #[arg(long, value_delimiter = ',', default_value = "kill,pause")]
    pub faults: Vec<String>,
    /// With --local: strike the member that leads at the time (asked
    /// through Status) rather than one picked at random; a leader change is
    /// what some bugs need.
    #[arg(long)]
    pub strike_leader: bool,
    /// Time between faults (the built-in ones and --nemesis-cmd's).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub fault_interval: Duration,
    /// A shell command to run as a fault, on the schedule of
    /// --fault-interval (repeat for several: they run in turn), with
    /// CAIRN_VERIFY_ENDPOINTS and, with --local, CAIRN_VERIFY_PIDS (the
    /// members' process IDs) in its environment. Its exit status and time
    /// are recorded with the history.
    #[arg(long)]
    pub nemesis_cmd: Vec<String>,
    /// With --local: start every member with `--plant NAME`, switching on
    /// a bug planted on purpose (src/planted.rs; the binary must be a cairn
    /// built with `--features planted-bugs`). Repeatable. For proving the
    /// checkers catch real bugs; such a run should fail.
    #[arg(long, value_parser = parse_bug)]
    pub plant: Vec<String>,
    #[command(flatten)]
    pub tls: dial::TlsArgs,
}

fn parse_bug(name: &str) -> Result<String, String> {
    match cairn::planted::Bug::from_name(name) {
        Some(_) => Ok(name.to_owned()),
        None => Err(format!(
            "no planted bug {name:?} (one of: {})",
            cairn::planted::Bug::ALL.map(|b| b.name()).join(", ")
        )),
    }
}

/// `--workload`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    Default,
    Kubernetes,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    if let Ok(secs) = text.parse::<f64>() {
        if secs >= 0.0 && secs.is_finite() {
            return Ok(Duration::from_secs_f64(secs));
        }
    }
    cairn::server::config::parse_go_duration(text)
}

/// Everything a run records, shared by its clients.
pub(crate) struct Recorder {
    start: Instant,
    pub history: Mutex<History>,
    pub watches: Mutex<Vec<WatchRecord>>,
    pub multi: Mutex<Vec<MultiOp>>,
    pub leases: Mutex<Vec<LeaseOp>>,
    /// Responses that contradicted themselves.
    pub anomalies: Mutex<Vec<String>>,
    /// Faults injected, with their time (ns since the start).
    pub faults: Mutex<Vec<(u64, String)>>,
    /// Errors by kind (gRPC code name, "timeout").
    pub errors: Mutex<BTreeMap<String, u64>>,
    /// Latencies of KV ops with a known outcome, in ns.
    pub latencies: Mutex<Vec<u64>>,
    /// Compactions done (--workload kubernetes).
    pub compactions: Mutex<u64>,
    /// The highest revision any response carried.
    pub head: AtomicI64,
}

impl Recorder {
    fn new() -> Recorder {
        Recorder {
            start: Instant::now(),
            history: Mutex::default(),
            watches: Mutex::default(),
            multi: Mutex::default(),
            leases: Mutex::default(),
            anomalies: Mutex::default(),
            faults: Mutex::default(),
            errors: Mutex::default(),
            latencies: Mutex::default(),
            compactions: Mutex::default(),
            head: AtomicI64::new(1),
        }
    }

    /// Nanoseconds since the run began.
    pub fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    pub fn error(&self, status: &tonic::Status) {
        self.error_kind(&format!("{:?}", status.code()));
    }

    pub fn error_kind(&self, kind: &str) {
        *self
            .errors
            .lock()
            .expect("lock")
            .entry(kind.to_owned())
            .or_default() += 1;
    }

    pub fn latency(&self, d: Duration) {
        self.latencies
            .lock()
            .expect("lock")
            .push(d.as_nanos() as u64);
    }

    pub fn anomaly(&self, what: String) {
        self.anomalies.lock().expect("lock").push(what);
    }

    pub fn fault(&self, what: String) {
        let at = self.now();
        self.faults.lock().expect("lock").push((at, what));
    }
}

/// Runs `cairn verify`.
pub fn main(args: VerifyArgs) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cairn verify: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("cairn verify: {e}");
            ExitCode::from(2)
        }
    }
}

/// The run's result: whether every checker passed.
async fn run(args: VerifyArgs) -> Result<bool, String> {
    if let Some(f) = args
        .faults
        .iter()
        .find(|f| !["kill", "pause", "none"].contains(&f.as_str()))
    {
        return Err(format!(
            "--faults: unknown fault {f:?} (kill, pause or none)"
        ));
    }
    if !args.plant.is_empty() && args.local.is_none() {
        return Err("--plant needs --local (it is given to the members verify starts)".into());
    }
    let mut cluster = match &args.local {
        Some(binary) => {
            let extra: Vec<String> = args.plant.iter().map(|b| format!("--plant={b}")).collect();
            Some(local::LocalCluster::start(binary, &extra).await?)
        }
        None => None,
    };
    let endpoints = match &cluster {
        Some(c) => c.endpoints(),
        None => args.endpoints.clone(),
    };
    // Ctrl-C ends the run without a verdict, but never leaves --local's
    // members running.
    let outcome = tokio::select! {
        outcome = run_on(&args, &endpoints, cluster.as_mut()) => outcome,
        _ = tokio::signal::ctrl_c() => Err("interrupted".to_owned()),
    };
    if let Some(c) = cluster {
        c.stop();
    }
    let outcome = outcome?;
    let passed = outcome.passed();
    if args.json {
        println!("{}", outcome.to_json());
    } else {
        print!("{}", outcome.to_text());
    }
    if let (Some(path), false) = (&args.html, passed) {
        std::fs::write(path, outcome.to_html()).map_err(|e| format!("{}: {e}", path.display()))?;
        eprintln!(
            "cairn verify: timeline of the failing sub-history in {}",
            path.display()
        );
    }
    Ok(passed)
}

async fn run_on(
    args: &VerifyArgs,
    endpoints: &[String],
    cluster: Option<&mut local::LocalCluster>,
) -> Result<report::Outcome, String> {
    if endpoints.is_empty() {
        return Err("no endpoints".into());
    }
    let dialer = dial::Dialer::new(&args.tls)?;
    let mut channels = Vec::new();
    for ep in endpoints {
        channels.push(dialer.dial(ep).await?);
    }
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let seed = args.seed.unwrap_or(nonce);
    let prefix = args
        .prefix
        .clone()
        .unwrap_or_else(|| format!("/cairn-verify/{nonce:x}/"));
    let kubernetes = args.workload == Workload::Kubernetes;
    let keys: Vec<String> = (0..args.keys.max(1))
        .map(|i| format!("{prefix}k{i}"))
        .collect();
    let kv_plan = kv::KvPlan {
        keys: keys.clone(),
        serializable: args.serializable,
        timeout: args.request_timeout,
        kubernetes,
    };
    let multi_plan = multi::MultiPlan {
        keys: (0..4).map(|i| format!("{prefix}t{i}")).collect(),
        range: (format!("{prefix}t"), format!("{prefix}u")),
        timeout: args.request_timeout,
    };
    let mut watch_keys = keys;
    watch_keys.extend(multi_plan.keys.iter().cloned());
    let watch_plan = watch::WatchPlan {
        prefix_end: prefix_end(&prefix),
        prefix: prefix.clone(),
        keys: watch_keys,
        progress: !args.no_watch_progress,
        first_revision: start_revision(&channels[0], &prefix).await? + 1,
        kubernetes,
        timeout: args.request_timeout,
    };
    let rec = Arc::new(Recorder::new());
    let until = Instant::now() + args.duration;
    let mut tasks = Vec::new();
    for id in 0..args.clients {
        let (rec, channels, plan) = (rec.clone(), channels.clone(), kv_plan.clone());
        let s = seed.wrapping_add(u64::from(id) * 7919);
        tasks.push(tokio::spawn(kv::client_loop(
            id, rec, channels, plan, s, until,
        )));
    }
    let multi_clients = if kubernetes { 0 } else { args.multi_clients };
    for id in 0..multi_clients {
        let (rec, channels, plan) = (rec.clone(), channels.clone(), multi_plan.clone());
        let s = seed.wrapping_add(2_000_003 + u64::from(id) * 7919);
        tasks.push(tokio::spawn(multi::client_loop(
            id, rec, channels, plan, s, until,
        )));
    }
    for id in 0..args.lease_clients {
        let (rec, channels, prefix) = (rec.clone(), channels.clone(), prefix.clone());
        let s = seed.wrapping_add(3_000_017 + u64::from(id) * 7919);
        tasks.push(tokio::spawn(lease::lease_loop(
            id, rec, channels, prefix, s, until,
        )));
    }
    for id in 0..args.watchers {
        let (rec, channels, plan) = (rec.clone(), channels.clone(), watch_plan.clone());
        let s = seed.wrapping_add(1_000_003 + u64::from(id) * 7919);
        tasks.push(tokio::spawn(watch::watcher_loop(
            id, rec, channels, plan, s, until,
        )));
    }
    if kubernetes {
        let (rec, channels, every) = (rec.clone(), channels.clone(), args.compact_interval);
        tasks.push(tokio::spawn(async move {
            kubernetes::compactor(&rec, channels, every, until).await;
        }));
    }
    let nemesis = local::Nemesis::new(args, endpoints, seed);
    nemesis.run(&rec, cluster, until, !args.no_progress).await;
    for t in tasks {
        let _ = t.await;
    }
    if !args.no_progress && std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        eprintln!();
    }
    let reads = kv::durability_reads(&rec, &channels, &kv_plan).await;
    lease::final_reads(&rec, &channels, &prefix, args.lease_clients).await;
    let replicas = replicas_agree(&channels, endpoints).await;
    let recorded = Arc::try_unwrap(rec).map_err(|_| "a client outlived the run".to_owned())?;
    Ok(report::Outcome::judge(
        recorded,
        report::RunInfo {
            endpoints: endpoints.to_vec(),
            multi_range: (prefix.clone(), prefix_end(&prefix)),
            prefix,
            seed,
            duration: args.duration,
            durability_reads: reads,
            tick: args.tick,
            durability_expected: channels.len() * kv_plan.keys.len(),
            replicas,
        },
    ))
}

/// The revision before the run: the prefix must hold no keys yet, so the
/// watchers that start right after it see every write of the run.
async fn start_revision(channel: &Channel, prefix: &str) -> Result<i64, String> {
    use cairn::proto::etcdserverpb::{kv_client::KvClient, RangeRequest};
    let req = RangeRequest {
        key: prefix.to_owned().into_bytes().into(),
        range_end: prefix_end(prefix).into_bytes().into(),
        count_only: true,
        ..Default::default()
    };
    let mut client = KvClient::new(channel.clone());
    let r = tokio::time::timeout(Duration::from_secs(10), client.range(req))
        .await
        .map_err(|_| "the first read timed out".to_owned())?
        .map_err(|e| format!("the first read failed: {}", e.message()))?
        .into_inner();
    if r.count > 0 {
        return Err(format!(
            "the prefix {prefix:?} already holds {} keys",
            r.count
        ));
    }
    Ok(r.header.map_or(0, |h| h.revision))
}

/// The end of the range of keys starting with `prefix` (etcd's prefix end).
fn prefix_end(prefix: &str) -> String {
    let mut bytes = prefix.as_bytes().to_vec();
    while let Some(last) = bytes.pop() {
        if last < 0x7f {
            bytes.push(last + 1);
            return String::from_utf8_lossy(&bytes).into_owned();
        }
    }
    "\0".to_owned()
}

/// Whether every endpoint's `HashKV` agrees at one revision that all of them
/// have applied: `Ok(revision)`, or what disagreed.
async fn replicas_agree(channels: &[Channel], endpoints: &[String]) -> Result<i64, String> {
    let mut revision = i64::MAX;
    for (ch, ep) in channels.iter().zip(endpoints) {
        let mut client = MaintenanceClient::new(ch.clone());
        let status = client.status(StatusRequest {});
        let r = tokio::time::timeout(Duration::from_secs(5), status)
            .await
            .map_err(|_| format!("{ep}: Status timed out"))?
            .map_err(|e| format!("{ep}: Status: {}", e.message()))?
            .into_inner();
        revision = revision.min(r.header.map_or(0, |h| h.revision));
    }
    let mut first: Option<(String, u32, i64)> = None;
    for (ch, ep) in channels.iter().zip(endpoints) {
        let mut client = MaintenanceClient::new(ch.clone());
        let call = client.hash_kv(HashKvRequest { revision });
        let r = tokio::time::timeout(Duration::from_secs(10), call)
            .await
            .map_err(|_| format!("{ep}: HashKV timed out"))?
            .map_err(|e| format!("{ep}: HashKV at {revision}: {}", e.message()))?
            .into_inner();
        match &first {
            None => first = Some((ep.clone(), r.hash, r.compact_revision)),
            Some((ep0, hash, compact)) if (*hash, *compact) != (r.hash, r.compact_revision) => {
                return Err(format!(
                    "at revision {revision}, {ep0} has hash {hash} (compacted at {compact}) but {ep} has \
                     hash {} (compacted at {})",
                    r.hash, r.compact_revision
                ));
            }
            Some(_) => {}
        }
    }
    Ok(revision)
}

/// Draws the progress line: elapsed time, ops, errors, faults.
pub(crate) fn progress_line(rec: &Recorder, total: Duration, redraw: bool) {
    let ops = rec.history.lock().expect("lock").len();
    let errors: u64 = rec.errors.lock().expect("lock").values().sum();
    let faults = rec.faults.lock().expect("lock").len();
    let elapsed = Duration::from_nanos(rec.now()).min(total);
    let line = format!(
        "cairn verify: {:>5.1}/{:.0}s  {ops} ops  {errors} errors  {faults} faults  head revision {}",
        elapsed.as_secs_f64(),
        total.as_secs_f64(),
        rec.head.load(Ordering::Relaxed)
    );
    if redraw {
        eprint!("\r{line}   ");
    } else {
        eprintln!("{line}");
    }
}
