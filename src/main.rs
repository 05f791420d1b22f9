//! The `cairn` command.
//!
//! - `cairn` or `cairn serve`: run a member (etcd's flags; see `--help`).
//! - `cairn check`: recover a data directory exactly as a starting member
//!   will and print what it found: the first thing to run on a member that
//!   will not start.
//! - `cairn bench <workload>`: a load generator for any etcd v3 endpoints,
//!   cairn or etcd (`src/bench/`; not in the simulation build).
//! - `cairn verify`: the simulator's checkers run against any etcd v3
//!   cluster (`src/verify/`, docs/verify.md; not in the simulation build).
// The binary is driver code: it reads the environment, signals and files.
#![allow(clippy::disallowed_methods)]

#[cfg(not(madsim))]
mod bench;
mod config_file;
mod etcd_flags;
#[cfg(not(madsim))]
mod logging;
mod snapshot_cli;
#[cfg(not(madsim))]
mod verify;

use cairn::disk::FsDisk;
use cairn::server::config::{
    is_https, parse_go_duration, parse_initial_cluster, parse_tls_version, parse_url, split_list,
    validate_raft_timing, ClusterState, ConfigError, GrpcOptions, ServerConfig, TlsConfig,
    TlsFiles, TlsSettings,
};
use cairn::storage::{recover, StorageOptions, SNAP_DIR, WAL_DIR};
use cairn::wal::WalOptions;
use clap::parser::ValueSource;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "cairn",
    about = "A distributed key-value store that speaks the etcd v3 API"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Print the version (etcd's format) and exit.
    #[arg(long)]
    version: bool,
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
        #[arg(long, env = "ETCD_DATA_DIR", default_value = "default.cairn")]
        data_dir: PathBuf,
    },
    /// Print the version (etcd's format) and exit.
    Version,
    /// Backup images from `etcdctl snapshot save`: status, and restore into a
    /// new member's data directory (etcdutl's flags).
    #[command(subcommand)]
    Snapshot(snapshot_cli::SnapshotCommand),
    /// Load an etcd v3 endpoint (cairn or etcd) and report throughput and latency.
    #[cfg(not(madsim))]
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Check an etcd v3 cluster (cairn or etcd) keeps its promises: run a
    /// workload, record every operation, and judge the history with the
    /// simulator's checkers (linearizability, watch, durability).
    #[cfg(not(madsim))]
    Verify(Box<verify::VerifyArgs>),
}

/// The etcd flags cairn implements, each also read from `ETCD_<FLAG>` (or
/// `CAIRN_<FLAG>`; see [`alias_cairn_env`]); a flag given on the command
/// line wins over its variable. The etcd flags it accepts without acting on
/// them are in [`etcd_flags`].
#[derive(Args, Clone)]
struct ServeArgs {
    /// Human-readable name for this member.
    #[arg(long, env = "ETCD_NAME", default_value = "default")]
    name: String,
    /// Path to the data directory [default: <name>.cairn].
    #[arg(long, env = "ETCD_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// URLs to listen on for client traffic.
    #[arg(
        long,
        env = "ETCD_LISTEN_CLIENT_URLS",
        default_value = "http://127.0.0.1:2379"
    )]
    listen_client_urls: String,
    /// Client URLs to advertise to the rest of the cluster.
    #[arg(
        long,
        env = "ETCD_ADVERTISE_CLIENT_URLS",
        default_value = "http://127.0.0.1:2379"
    )]
    advertise_client_urls: String,
    /// URLs to listen on for peer (raft) traffic.
    #[arg(
        long,
        env = "ETCD_LISTEN_PEER_URLS",
        default_value = "http://127.0.0.1:2380"
    )]
    listen_peer_urls: String,
    /// This member's peer URLs, as the rest of the cluster reaches it.
    #[arg(
        long,
        env = "ETCD_INITIAL_ADVERTISE_PEER_URLS",
        default_value = "http://127.0.0.1:2380"
    )]
    initial_advertise_peer_urls: String,
    /// Every member: name=peer-url[,name=peer-url...] [default: <name>=<initial-advertise-peer-urls>].
    #[arg(long, env = "ETCD_INITIAL_CLUSTER")]
    initial_cluster: Option<String>,
    /// `new` to bootstrap a cluster, `existing` to rejoin one.
    #[arg(
        long,
        env = "ETCD_INITIAL_CLUSTER_STATE",
        value_enum,
        default_value = "new"
    )]
    initial_cluster_state: ClusterState,
    /// Token that keeps member and cluster IDs unique across clusters.
    #[arg(
        long,
        env = "ETCD_INITIAL_CLUSTER_TOKEN",
        default_value = "etcd-cluster"
    )]
    initial_cluster_token: String,
    /// Applied entries between snapshots.
    #[arg(long, env = "ETCD_SNAPSHOT_COUNT", default_value_t = 100_000)]
    snapshot_count: u64,
    /// Entries kept after a snapshot so slow followers can catch up from the log.
    #[arg(long, env = "ETCD_SNAPSHOT_CATCHUP_ENTRIES", default_value_t = 5_000)]
    snapshot_catchup_entries: u64,
    /// Raise NOSPACE when the store passes this many bytes (0: etcd's
    /// default, 2 GiB; negative: no quota).
    #[arg(
        long,
        env = "ETCD_QUOTA_BACKEND_BYTES",
        default_value_t = 0,
        allow_negative_numbers = true
    )]
    quota_backend_bytes: i64,
    /// Largest client request accepted, in bytes.
    #[arg(long, env = "ETCD_MAX_REQUEST_BYTES", default_value_t = 1_572_864)]
    max_request_bytes: usize,
    /// Most operations in one txn branch.
    #[arg(long, env = "ETCD_MAX_TXN_OPS", default_value_t = 128)]
    max_txn_ops: usize,
    /// Time (in milliseconds) of a heartbeat interval: one raft tick.
    #[arg(long, env = "ETCD_HEARTBEAT_INTERVAL", default_value_t = 100)]
    heartbeat_interval: u64,
    /// Time (in milliseconds) for an election to timeout: at least 5 heartbeat intervals, at most 50000.
    #[arg(long, env = "ETCD_ELECTION_TIMEOUT", default_value_t = 1000)]
    election_timeout: u64,
    /// Duration of periodic watch progress notifications (etcd's default 10m; below 100ms is raised to 100ms).
    #[arg(long, env = "ETCD_EXPERIMENTAL_WATCH_PROGRESS_NOTIFY_INTERVAL", default_value = "10m", value_parser = parse_go_duration)]
    experimental_watch_progress_notify_interval: Duration,
    /// etcd 3.5's name for --snapshot-catchup-entries.
    #[arg(long, env = "ETCD_EXPERIMENTAL_SNAPSHOT_CATCHUP_ENTRIES")]
    experimental_snapshot_catchup_entries: Option<u64>,
    /// Auto-compaction: `periodic` (keep a duration of history) or `revision` (keep a number of revisions).
    #[arg(long, env = "ETCD_AUTO_COMPACTION_MODE", default_value = "periodic")]
    auto_compaction_mode: String,
    /// History to keep: for periodic a duration (`1h`, `30m`; a bare number is hours), for revision a count; 0 is off.
    #[arg(long, env = "ETCD_AUTO_COMPACTION_RETENTION", default_value = "0")]
    auto_compaction_retention: String,
    /// Path to the server configuration file (etcd's YAML). If a file is given, every other flag and ETCD_* variable is ignored.
    #[arg(long, env = "ETCD_CONFIG_FILE")]
    config_file: Option<PathBuf>,
    /// Log level: debug, info, warn, error, panic or fatal (RUST_LOG, when set, wins).
    #[arg(long, env = "ETCD_LOG_LEVEL", default_value = "info", value_parser = ["debug", "info", "warn", "error", "dpanic", "panic", "fatal"], ignore_case = true)]
    log_level: String,
    /// Logger: zap (the only one etcd 3.5 has; cairn logs its own way).
    #[arg(long, env = "ETCD_LOGGER", default_value = "zap", value_parser = ["zap", "capnslog"])]
    logger: String,
    /// Log format: json (zap's fields) or console [default: console on a terminal, json otherwise].
    #[arg(long, env = "ETCD_LOG_FORMAT", value_parser = ["json", "console"])]
    log_format: Option<String>,
    /// Where logs go: default, stderr, stdout, journal (stderr) or file paths, comma-separated.
    #[arg(long, env = "ETCD_LOG_OUTPUTS", default_value = "default")]
    log_outputs: String,
    /// Snapshot files to keep (0 is unlimited). Each holds the whole state, so fewer than etcd's 5.
    #[arg(long, env = "ETCD_MAX_SNAPSHOTS", default_value_t = cairn::snap::DEFAULT_KEEP)]
    max_snapshots: usize,
    /// WAL segment files to keep once a snapshot covers them (0 is unlimited).
    #[arg(long, env = "ETCD_MAX_WALS", default_value_t = 5)]
    max_wals: usize,
    /// Ping a client connection idle this long (0 disables).
    #[arg(long, env = "ETCD_GRPC_KEEPALIVE_INTERVAL", default_value = "2h", value_parser = parse_go_duration)]
    grpc_keepalive_interval: Duration,
    /// Close a client connection whose ping is unanswered this long.
    #[arg(long, env = "ETCD_GRPC_KEEPALIVE_TIMEOUT", default_value = "20s", value_parser = parse_go_duration)]
    grpc_keepalive_timeout: Duration,
    /// Concurrent gRPC streams per client connection.
    #[arg(long, env = "ETCD_MAX_CONCURRENT_STREAMS", default_value_t = u32::MAX)]
    max_concurrent_streams: u32,
    /// Client port TLS: the certificate file (PEM), for https:// client URLs.
    #[arg(long, env = "ETCD_CERT_FILE")]
    cert_file: Option<PathBuf>,
    /// Client port TLS: the certificate's private key (PEM).
    #[arg(long, env = "ETCD_KEY_FILE")]
    key_file: Option<PathBuf>,
    /// Client port TLS: CA certificates (PEM) client certificates must chain to; implies --client-cert-auth, as in etcd.
    #[arg(long, env = "ETCD_TRUSTED_CA_FILE")]
    trusted_ca_file: Option<PathBuf>,
    /// Client port TLS: require client certificates signed by --trusted-ca-file.
    #[arg(long, env = "ETCD_CLIENT_CERT_AUTH", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", default_value = "false", value_parser = clap::value_parser!(bool))]
    client_cert_auth: bool,
    /// Peer TLS: the certificate file (PEM), presented to peers and when dialing them.
    #[arg(long, env = "ETCD_PEER_CERT_FILE")]
    peer_cert_file: Option<PathBuf>,
    /// Peer TLS: the certificate's private key (PEM).
    #[arg(long, env = "ETCD_PEER_KEY_FILE")]
    peer_key_file: Option<PathBuf>,
    /// Peer TLS: CA certificates (PEM) peers' certificates must chain to.
    #[arg(long, env = "ETCD_PEER_TRUSTED_CA_FILE")]
    peer_trusted_ca_file: Option<PathBuf>,
    /// Peer TLS: require peers' client certificates signed by --peer-trusted-ca-file.
    #[arg(long, env = "ETCD_PEER_CLIENT_CERT_AUTH", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", default_value = "false", value_parser = clap::value_parser!(bool))]
    peer_client_cert_auth: bool,
    /// TLS 1.2 cipher suites (Go's names, comma-separated) for both ports; empty: all rustls offers.
    #[arg(long, env = "ETCD_CIPHER_SUITES", default_value = "")]
    cipher_suites: String,
    /// Lowest TLS version: TLS1.2 or TLS1.3 [default: TLS1.2].
    #[arg(long, env = "ETCD_TLS_MIN_VERSION", default_value = "")]
    tls_min_version: String,
    /// Highest TLS version: TLS1.2 or TLS1.3 [default: TLS1.3].
    #[arg(long, env = "ETCD_TLS_MAX_VERSION", default_value = "")]
    tls_max_version: String,
    /// Client port TLS with a generated self-signed certificate (in <data-dir>/fixtures/client), for tests.
    #[arg(long, env = "ETCD_AUTO_TLS", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", default_value = "false", value_parser = clap::value_parser!(bool))]
    auto_tls: bool,
    /// Peer TLS with a generated self-signed certificate (peers are not authenticated), for tests.
    #[arg(long, env = "ETCD_PEER_AUTO_TLS", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", default_value = "false", value_parser = clap::value_parser!(bool))]
    peer_auto_tls: bool,
    /// Validity of the --auto-tls / --peer-auto-tls certificates, in years.
    #[arg(long, env = "ETCD_SELF_SIGNED_CERT_VALIDITY", default_value_t = 1)]
    self_signed_cert_validity: u32,
    /// UNSAFE: skip fsync. Acknowledged writes can be lost on power loss; for tests only.
    #[arg(long, env = "ETCD_UNSAFE_NO_FSYNC", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", default_value = "false", value_parser = clap::value_parser!(bool))]
    unsafe_no_fsync: bool,
    /// Serve the JSON gateway (/v3/...) on the client port.
    #[arg(long, env = "ETCD_ENABLE_GRPC_GATEWAY", default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    enable_grpc_gateway: bool,
    /// URLs to serve /metrics and the health probes on (not the KV API).
    #[arg(long, env = "ETCD_LISTEN_METRICS_URLS", default_value = "")]
    listen_metrics_urls: String,
    /// Testing only, in a build with the `planted-bugs` feature: switch on a
    /// bug planted on purpose (src/planted.rs) by name, for `cairn verify
    /// --plant` to catch. Without the feature the flag does not exist.
    #[cfg(feature = "planted-bugs")]
    #[arg(long, hide = true, value_parser = |s: &str| cairn::planted::Bug::from_name(s).ok_or(format!("no planted bug {s:?}")))]
    plant: Vec<cairn::planted::Bug>,
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
        validate_raft_timing(self.heartbeat_interval, self.election_timeout)?;
        let data_dir = self
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("{}.cairn", self.name)));
        Ok(ServerConfig {
            name: self.name.clone(),
            tls: self.tls_config(&data_dir)?,
            data_dir,
            listen_client: urls(&self.listen_client_urls)?,
            advertise_client_urls: split_list(&self.advertise_client_urls),
            listen_peer: urls(&self.listen_peer_urls)?,
            initial_cluster: parse_initial_cluster(&initial_cluster)?,
            initial_cluster_state: self.initial_cluster_state,
            initial_cluster_token: self.initial_cluster_token.clone(),
            snapshot_count: self.snapshot_count,
            snapshot_catchup_entries: self
                .experimental_snapshot_catchup_entries
                .unwrap_or(self.snapshot_catchup_entries),
            quota_backend_bytes: u64::try_from(self.quota_backend_bytes).unwrap_or(u64::MAX),
            max_request_bytes: self.max_request_bytes,
            max_txn_ops: self.max_txn_ops,
            heartbeat_interval: Duration::from_millis(self.heartbeat_interval),
            election_timeout: Duration::from_millis(self.election_timeout),
            watch_progress_notify_interval: self.experimental_watch_progress_notify_interval,
            auto_compaction: cairn::server::compactor::parse(
                &self.auto_compaction_mode,
                &self.auto_compaction_retention,
            )?,
            storage: StorageOptions {
                wal: WalOptions {
                    max_segments: self.max_wals,
                    ..WalOptions::default()
                },
                max_snapshots: self.max_snapshots,
                unsafe_no_fsync: self.unsafe_no_fsync,
            },
            grpc: GrpcOptions::from_flags(
                self.grpc_keepalive_interval,
                self.grpc_keepalive_timeout,
                self.max_concurrent_streams,
            ),
            tick_interval: Duration::from_millis(self.heartbeat_interval),
            faults: Default::default(),
            http: cairn::server::config::HttpConfig {
                enable_grpc_gateway: self.enable_grpc_gateway,
                listen_metrics: urls(&self.listen_metrics_urls)?,
            },
        })
    }
}

impl ServeArgs {
    /// The TLS flags, checked as etcd checks them: an https:// URL needs a
    /// certificate and key; files given for a port without https:// URLs
    /// are ignored with etcd's warning.
    #[cfg_attr(madsim, allow(dead_code))]
    fn tls_config(&self, data_dir: &Path) -> Result<TlsConfig, ConfigError> {
        let settings = TlsSettings {
            cipher_suites: split_list(&self.cipher_suites),
            min_version: parse_tls_version(&self.tls_min_version)?,
            max_version: parse_tls_version(&self.tls_max_version)?,
        };
        #[cfg(not(madsim))]
        settings.validate()?;
        let client = port_files(
            "client",
            (&self.cert_file, &self.key_file),
            &self.trusted_ca_file,
            self.client_cert_auth,
            ("--cert-file", "--key-file"),
            &split_list(&self.listen_client_urls),
            self.auto_tls.then(|| AutoTls {
                dir: data_dir.join("fixtures").join("client"),
                hosts: url_hosts(&self.listen_client_urls),
                years: self.self_signed_cert_validity,
            }),
        )?;
        let mut peer_urls = split_list(&self.listen_peer_urls);
        peer_urls.extend(split_list(&self.initial_advertise_peer_urls));
        if let Some(cluster) = &self.initial_cluster {
            peer_urls.extend(
                split_list(cluster)
                    .iter()
                    .filter_map(|m| Some(m.split_once('=')?.1.to_string())),
            );
        }
        let peer = port_files(
            "peer",
            (&self.peer_cert_file, &self.peer_key_file),
            &self.peer_trusted_ca_file,
            self.peer_client_cert_auth,
            ("--peer-cert-file", "--peer-key-file"),
            &peer_urls,
            self.peer_auto_tls.then(|| AutoTls {
                dir: data_dir.join("fixtures").join("peer"),
                hosts: url_hosts(&self.listen_peer_urls),
                years: self.self_signed_cert_validity,
            }),
        )?;
        let https = |urls: &str| -> Result<Vec<_>, ConfigError> {
            split_list(urls)
                .iter()
                .filter(|u| is_https(u))
                .map(|u| parse_url(u))
                .collect()
        };
        Ok(TlsConfig {
            client,
            client_https: https(&self.listen_client_urls)?,
            peer,
            peer_https: https(&self.listen_peer_urls)?,
            settings,
        })
    }
}

/// One port's files, if any of its `urls` is https://; etcd's error when one
/// is and no certificate was given, its warning when none is and one was.
fn port_files(
    port: &str,
    (cert, key): (&Option<PathBuf>, &Option<PathBuf>),
    ca: &Option<PathBuf>,
    client_cert_auth: bool,
    (cert_flag, key_flag): (&str, &str),
    urls: &[String],
    auto: Option<AutoTls>,
) -> Result<Option<TlsFiles>, ConfigError> {
    let Some(url) = urls.iter().find(|u| is_https(u)) else {
        if cert.is_some() || key.is_some() {
            tracing::warn!(
                "scheme is HTTP while key and cert files are present; ignoring key and cert files ({port} URLs: {})",
                urls.join(",")
            );
        }
        return Ok(None);
    };
    if let (Some(auto), None, None) = (&auto, cert, key) {
        return auto.files().map(Some);
    }
    if auto.is_some() {
        tracing::warn!("ignoring {port} auto TLS since certs given");
    }
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some(TlsFiles {
            cert_file: cert.clone(),
            key_file: key.clone(),
            trusted_ca_file: ca.clone(),
            client_cert_auth: client_cert_auth || ca.is_some(),
            self_signed: false,
        })),
        _ => Err(ConfigError(format!(
            "TLS key/cert ({cert_flag}, {key_flag}) must be provided for {port} url {url} with HTTPS scheme"
        ))),
    }
}

/// `--auto-tls` or `--peer-auto-tls`: where the generated files go, the
/// hosts they are for, and for how long.
#[cfg_attr(madsim, allow(dead_code))]
struct AutoTls {
    dir: PathBuf,
    hosts: Vec<String>,
    years: u32,
}

impl AutoTls {
    #[cfg(not(madsim))]
    fn files(&self) -> Result<TlsFiles, ConfigError> {
        cairn::server::tls::self_signed(&self.dir, &self.hosts, self.years)
    }

    #[cfg(madsim)]
    fn files(&self) -> Result<TlsFiles, ConfigError> {
        Err(ConfigError("no TLS in the simulation".into()))
    }
}

/// The hosts of a comma-separated URL list, without ports (for a
/// certificate's names).
fn url_hosts(urls: &str) -> Vec<String> {
    split_list(urls)
        .iter()
        .filter_map(|u| {
            let rest = u.split_once("://").map_or(u.as_str(), |(_, r)| r);
            let hostport = rest.split('/').next()?;
            let host = hostport.rsplit_once(':').map_or(hostport, |(h, _)| h);
            Some(
                host.trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_string(),
            )
        })
        .collect()
}

/// The etcd API level cairn reports (Maintenance.Status `version`).
const ETCD_API: &str = cairn::server::services::VERSION;

fn print_version() {
    println!("cairn Version: {}", env!("CARGO_PKG_VERSION"));
    println!("Git SHA: {}", env!("CAIRN_GIT_SHA"));
    println!("etcd API: {ETCD_API}");
    println!(
        "OS/Arch: {}/{}",
        std::env::consts::OS,
        std::env::consts::ARCH
    );
}

/// `CAIRN_<FLAG>` is read as `ETCD_<FLAG>` where that is not set, so both
/// names work; etcd's own name wins when both are set.
fn alias_cairn_env() {
    let aliases: Vec<(String, std::ffi::OsString)> = std::env::vars_os()
        .filter_map(|(key, value)| {
            let rest = key.to_str()?.strip_prefix("CAIRN_")?;
            let etcd = format!("ETCD_{rest}");
            std::env::var_os(&etcd).is_none().then_some((etcd, value))
        })
        .collect();
    for (key, value) in aliases {
        // Single-threaded: nothing else reads the environment yet.
        std::env::set_var(key, value);
    }
}

/// Warnings for flags given both on the command line and in the environment
/// (the flag wins, as in etcd; etcd refuses to start, cairn says which won).
fn shadowed_env(cmd: &clap::Command, matches: &clap::ArgMatches) -> Vec<String> {
    cmd.get_arguments()
        .filter(|a| matches.value_source(a.get_id().as_str()) == Some(ValueSource::CommandLine))
        .filter_map(|a| a.get_env())
        .filter(|env| std::env::var_os(env).is_some_and(|v| !v.is_empty()))
        .map(|env| {
            format!(
                "environment variable {} is shadowed by the command-line flag",
                env.to_string_lossy()
            )
        })
        .collect()
}

/// Parses `--config-file`'s YAML as the whole configuration, as etcd does:
/// the other flags and the environment are ignored. Returns the parse and
/// what to log about it.
fn from_config_file(
    cmd: &clap::Command,
    path: &Path,
) -> Result<(Cli, clap::ArgMatches, Vec<String>), String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let is_flag =
        |f: &str| f != "config-file" && cmd.get_arguments().any(|a| a.get_long() == Some(f));
    let (args, mut notes) = config_file::to_args(&text, is_flag)?;
    let matches = cmd
        .clone()
        .mut_args(|a| a.env(None))
        .try_get_matches_from(std::iter::once("cairn".to_string()).chain(args))
        .map_err(|e| e.render().to_string())?;
    let cli = Cli::from_arg_matches(&matches).map_err(|e| e.render().to_string())?;
    notes.push(format!(
        "loaded server configuration from {}; other command line flags and environment variables are ignored",
        path.display()
    ));
    Ok((cli, matches, notes))
}

fn main() -> ExitCode {
    alias_cairn_env();
    let cmd = etcd_flags::extend(Cli::command());
    let mut matches = cmd.clone().get_matches();
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if cli.version {
        print_version();
        return ExitCode::SUCCESS;
    }
    let mut notes = Vec::new();
    let file = match &cli.command {
        Some(Command::Serve(args)) => args.config_file.clone(),
        None => cli.serve.config_file.clone(),
        _ => None,
    };
    if let Some(path) = file {
        match from_config_file(&cmd, &path) {
            Ok((c, m, mut n)) => {
                (cli, matches) = (c, m);
                notes.append(&mut n);
            }
            Err(e) => {
                eprintln!("cairn: --config-file {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        }
    }
    // The flags cairn accepts without acting on them, checked where they
    // were given: at the top level or after `serve`.
    let (serve_cmd, serve_matches) = match matches.subcommand() {
        Some(("serve", m)) => (
            cmd.find_subcommand("serve").expect("serve").clone(),
            m.clone(),
        ),
        _ => (cmd, matches),
    };
    let mut warnings = match etcd_flags::check(&serve_matches) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("cairn: {e}");
            return ExitCode::FAILURE;
        }
    };
    warnings.extend(shadowed_env(&serve_cmd, &serve_matches));
    warnings.extend(notes);
    match cli.command {
        Some(Command::Version) => {
            print_version();
            ExitCode::SUCCESS
        }
        Some(Command::Check { data_dir }) => match check(&data_dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("cairn: {}: {e}", data_dir.display());
                ExitCode::FAILURE
            }
        },
        Some(Command::Snapshot(cmd)) => snapshot_cli::main(cmd),
        Some(Command::Serve(args)) => serve(&args, &warnings),
        #[cfg(not(madsim))]
        Some(Command::Bench(cmd)) => bench::main(cmd),
        #[cfg(not(madsim))]
        Some(Command::Verify(args)) => verify::main(*args),
        None => serve(&cli.serve, &warnings),
    }
}

/// The log filter for `--log-level` (RUST_LOG wins when set). raft-rs's own
/// chatter is shown at debug only.
#[cfg(not(madsim))]
fn log_filter(level: &str) -> tracing_subscriber::EnvFilter {
    let level = match level.to_ascii_lowercase().as_str() {
        "dpanic" | "panic" | "fatal" => "error".to_string(),
        l => l.to_string(),
    };
    let raft = if level == "debug" { "debug" } else { "warn" };
    tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("{level},raft={raft}")))
}

#[cfg(not(madsim))]
fn serve(args: &ServeArgs, warnings: &[String]) -> ExitCode {
    let outputs = split_list(&args.log_outputs);
    if let Err(e) = logging::init(
        log_filter(&args.log_level),
        args.log_format.as_deref(),
        &outputs,
    ) {
        eprintln!("cairn: {e}");
        return ExitCode::FAILURE;
    }
    for w in warnings {
        tracing::warn!("{w}");
    }
    #[cfg(feature = "planted-bugs")]
    for bug in &args.plant {
        cairn::planted::plant(*bug);
        tracing::warn!(
            bug = bug.name(),
            "planted bug switched on: this member is broken on purpose"
        );
    }
    if args.logger == "capnslog" {
        tracing::warn!("--logger=capnslog has no effect in cairn: it logs its own way (etcd 3.5 removed capnslog)");
    }
    let cfg = match args.config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cairn: {e}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"), git_sha = env!("CAIRN_GIT_SHA"), etcd_api = ETCD_API,
        name = %cfg.name, data_dir = %cfg.data_dir.display(),
        listen_client_urls = %args.listen_client_urls, advertise_client_urls = %args.advertise_client_urls,
        listen_peer_urls = %args.listen_peer_urls, initial_advertise_peer_urls = %args.initial_advertise_peer_urls,
        heartbeat_interval_ms = args.heartbeat_interval, election_timeout_ms = args.election_timeout,
        fsync = if cfg.storage.unsafe_no_fsync { "OFF (--unsafe-no-fsync)" } else { "on (every acknowledged write is on disk)" },
        max_wals = cfg.storage.wal.max_segments, max_snapshots = cfg.storage.max_snapshots,
        "starting cairn"
    );
    if cfg.storage.unsafe_no_fsync {
        tracing::warn!(
            "--unsafe-no-fsync: cairn does not fsync its WAL or snapshots; a power loss or kernel crash can lose acknowledged \
             writes and break the cluster's guarantees. Use it for tests only"
        );
    }
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
fn serve(_args: &ServeArgs, _warnings: &[String]) -> ExitCode {
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
    let (wal, _snaps, rec) = recover(open(WAL_DIR)?, open(SNAP_DIR)?, &StorageOptions::default())?;
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
