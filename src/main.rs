//! The `cairn` command.
//!
//! - `cairn` or `cairn serve`: run a member (etcd's flags; see `--help`).
//! - `cairn check`: recover a data directory exactly as a starting member
//!   will and print what it found: the first thing to run on a member that
//!   will not start.
//! - `cairn bench <workload>`: a load generator for any etcd v3 endpoints,
//!   cairn or etcd (`src/bench/`; not in the simulation build).
// The binary is driver code: it reads the environment, signals and files.
#![allow(clippy::disallowed_methods)]

#[cfg(not(madsim))]
mod bench;

use cairn::disk::FsDisk;
use cairn::server::config::{
    parse_initial_cluster, parse_url, split_list, ClusterState, ConfigError, ServerConfig,
};
use cairn::storage::{recover, SNAP_DIR, WAL_DIR};
use cairn::wal::WalOptions;
use clap::{Args, Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "cairn",
    version,
    about = "A distributed key-value store that speaks the etcd v3 API"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run a member (the default when no subcommand is given).
    Serve(Box<ServeArgs>),
    /// Recover a data directory as a starting member would, and report on it.
    ///
    /// Creates the directory if it does not exist. Like a starting member, it
    /// truncates a torn tail of the last WAL segment; any other damage is
    /// reported with its file and offset, and the exit code is 1.
    Check {
        /// Path to the data directory.
        #[arg(long, env = "CAIRN_DATA_DIR", default_value = "default.cairn")]
        data_dir: PathBuf,
    },
    /// Load an etcd v3 endpoint (cairn or etcd) and report throughput and latency.
    #[cfg(not(madsim))]
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

/// etcd's flags, each also read from `CAIRN_<FLAG>`.
#[derive(Args, Clone)]
struct ServeArgs {
    /// Human-readable name for this member.
    #[arg(long, env = "CAIRN_NAME", default_value = "default")]
    name: String,
    /// Path to the data directory [default: <name>.cairn].
    #[arg(long, env = "CAIRN_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// URLs to listen on for client traffic.
    #[arg(
        long,
        env = "CAIRN_LISTEN_CLIENT_URLS",
        default_value = "http://127.0.0.1:2379"
    )]
    listen_client_urls: String,
    /// Client URLs to advertise to the rest of the cluster.
    #[arg(
        long,
        env = "CAIRN_ADVERTISE_CLIENT_URLS",
        default_value = "http://127.0.0.1:2379"
    )]
    advertise_client_urls: String,
    /// URLs to listen on for peer (raft) traffic.
    #[arg(
        long,
        env = "CAIRN_LISTEN_PEER_URLS",
        default_value = "http://127.0.0.1:2380"
    )]
    listen_peer_urls: String,
    /// This member's peer URLs, as the rest of the cluster reaches it.
    #[arg(
        long,
        env = "CAIRN_INITIAL_ADVERTISE_PEER_URLS",
        default_value = "http://127.0.0.1:2380"
    )]
    initial_advertise_peer_urls: String,
    /// Every member: name=peer-url[,name=peer-url...] [default: <name>=<initial-advertise-peer-urls>].
    #[arg(long, env = "CAIRN_INITIAL_CLUSTER")]
    initial_cluster: Option<String>,
    /// `new` to bootstrap a cluster, `existing` to rejoin one.
    #[arg(
        long,
        env = "CAIRN_INITIAL_CLUSTER_STATE",
        value_enum,
        default_value = "new"
    )]
    initial_cluster_state: ClusterState,
    /// Token that keeps member and cluster IDs unique across clusters.
    #[arg(
        long,
        env = "CAIRN_INITIAL_CLUSTER_TOKEN",
        default_value = "etcd-cluster"
    )]
    initial_cluster_token: String,
    /// Applied entries between snapshots.
    #[arg(long, env = "CAIRN_SNAPSHOT_COUNT", default_value_t = 100_000)]
    snapshot_count: u64,
    /// Entries kept after a snapshot so slow followers can catch up from the log.
    #[arg(long, env = "CAIRN_SNAPSHOT_CATCHUP_ENTRIES", default_value_t = 5_000)]
    snapshot_catchup_entries: u64,
    /// Backend quota in bytes (reported; not enforced yet).
    #[arg(long, env = "CAIRN_QUOTA_BACKEND_BYTES", default_value_t = 2 * 1024 * 1024 * 1024)]
    quota_backend_bytes: u64,
    /// Largest client request accepted, in bytes.
    #[arg(long, env = "CAIRN_MAX_REQUEST_BYTES", default_value_t = 1_572_864)]
    max_request_bytes: usize,
    /// Most operations in one txn branch.
    #[arg(long, env = "CAIRN_MAX_TXN_OPS", default_value_t = 128)]
    max_txn_ops: usize,
}

impl ServeArgs {
    #[cfg_attr(madsim, allow(dead_code))]
    fn config(&self) -> Result<ServerConfig, ConfigError> {
        let urls = |v: &str| {
            split_list(v)
                .iter()
                .map(|u| parse_url(u))
                .collect::<Result<Vec<_>, _>>()
        };
        let advertise_peer = split_list(&self.initial_advertise_peer_urls);
        let initial_cluster = match &self.initial_cluster {
            Some(c) => c.clone(),
            None => advertise_peer
                .iter()
                .map(|u| format!("{}={u}", self.name))
                .collect::<Vec<_>>()
                .join(","),
        };
        Ok(ServerConfig {
            name: self.name.clone(),
            data_dir: self
                .data_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from(format!("{}.cairn", self.name))),
            listen_client: urls(&self.listen_client_urls)?,
            advertise_client_urls: split_list(&self.advertise_client_urls),
            listen_peer: urls(&self.listen_peer_urls)?,
            initial_cluster: parse_initial_cluster(&initial_cluster)?,
            initial_cluster_state: self.initial_cluster_state,
            initial_cluster_token: self.initial_cluster_token.clone(),
            snapshot_count: self.snapshot_count,
            snapshot_catchup_entries: self.snapshot_catchup_entries,
            quota_backend_bytes: self.quota_backend_bytes,
            max_request_bytes: self.max_request_bytes,
            max_txn_ops: self.max_txn_ops,
            tick_interval: cairn::server::raft_loop::TICK,
            faults: Default::default(),
        })
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Check { data_dir }) => match check(&data_dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("cairn: {}: {e}", data_dir.display());
                ExitCode::FAILURE
            }
        },
        Some(Command::Serve(args)) => serve(&args),
        #[cfg(not(madsim))]
        Some(Command::Bench(cmd)) => bench::main(cmd),
        None => serve(&cli.serve),
    }
}

#[cfg(not(madsim))]
fn serve(args: &ServeArgs) -> ExitCode {
    use tracing_subscriber::EnvFilter;
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,raft=warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cfg = match args.config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cairn: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cairn: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(cairn::server::serve(cfg, shutdown_signal()));
    match result {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "member stopped");
            eprintln!("cairn: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(madsim)]
fn serve(_args: &ServeArgs) -> ExitCode {
    eprintln!("cairn: this binary was built for simulation (--cfg madsim); run cairn-sim");
    ExitCode::FAILURE
}

/// Resolves on SIGTERM or SIGINT.
#[cfg(not(madsim))]
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

fn check(data_dir: &Path) -> Result<(), cairn::Error> {
    let open = |sub: &str| {
        let dir = data_dir.join(sub);
        FsDisk::open(&dir).map_err(|e| cairn::Error::io("open", dir.display().to_string(), e))
    };
    let (wal, _snaps, rec) = recover(open(WAL_DIR)?, open(SNAP_DIR)?, WalOptions::default())?;
    println!("data dir      {}", data_dir.display());
    for (file, err) in &rec.rejected_snapshots {
        println!("rejected      snap/{file}: {err}");
    }
    match &rec.snapshot {
        Some((file, s)) => println!(
            "snapshot      snap/{file} (index {}, term {})",
            s.meta.index, s.meta.term
        ),
        None => println!("snapshot      none"),
    }
    let hash = rec.store.hash_kv(0).map_err(|e| cairn::Error::Corrupt {
        file: "snapshot".into(),
        offset: 0,
        reason: e.to_string(),
    })?;
    println!(
        "mvcc          revision {}, compacted {}, {} keys, hash {:08x}",
        rec.store.current_revision(),
        rec.store.compact_revision(),
        rec.store.key_count(),
        hash.hash
    );
    let hs = rec.wal.hard_state;
    println!(
        "hard state    term {}, vote {}, commit {}",
        hs.term, hs.vote, hs.commit
    );
    println!(
        "wal           {} segments, {} entries after the snapshot, last index {}",
        wal.segment_names().len(),
        rec.wal.entries.len(),
        wal.last_index()
    );
    if let Some(t) = &rec.wal.torn_tail {
        println!(
            "torn tail     wal/{} cut at offset {} ({} bytes dropped)",
            t.file, t.offset, t.dropped_bytes
        );
    }
    Ok(())
}
