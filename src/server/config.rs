//! Server configuration: etcd's flags, the initial cluster, member IDs.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Everything `cairn serve` was told, checked.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// This member's name in `initial_cluster`.
    pub name: String,
    /// Where the WAL and snapshots live.
    pub data_dir: PathBuf,
    /// Addresses the client gRPC server listens on.
    pub listen_client: Vec<SocketAddr>,
    /// Client URLs other members and clients are told about.
    pub advertise_client_urls: Vec<String>,
    /// Addresses the peer (raft) server listens on.
    pub listen_peer: Vec<SocketAddr>,
    /// Every member, by name, with its peer URLs.
    pub initial_cluster: BTreeMap<String, Vec<String>>,
    /// `new` or `existing`.
    pub initial_cluster_state: ClusterState,
    /// Mixed into member and cluster IDs, so two clusters never share IDs.
    pub initial_cluster_token: String,
    /// Take a snapshot after this many applied entries.
    pub snapshot_count: u64,
    /// Entries kept after a snapshot for slow followers.
    pub snapshot_catchup_entries: u64,
    /// `--quota-backend-bytes`: 0 for etcd's default (2 GiB), `u64::MAX`
    /// for none (a negative flag value).
    pub quota_backend_bytes: u64,
    /// Largest request accepted, in bytes.
    pub max_request_bytes: usize,
    /// Most ops in one txn branch.
    pub max_txn_ops: usize,
    /// `--heartbeat-interval`: one raft tick, nominally. Leases count time
    /// in these ticks.
    pub heartbeat_interval: Duration,
    /// `--election-timeout`: a whole number of heartbeat intervals
    /// (checked by [`validate_raft_timing`]).
    pub election_timeout: Duration,
    /// `--experimental-watch-progress-notify-interval`: how often idle
    /// watchers that asked for progress notifications get one.
    pub watch_progress_notify_interval: Duration,
    /// `--auto-compaction-mode` / `--auto-compaction-retention`; `None`: off.
    pub auto_compaction: Option<super::compactor::AutoCompaction>,
    /// `--max-wals`, `--max-snapshots`, `--unsafe-no-fsync`.
    pub storage: crate::storage::StorageOptions,
    /// Keep-alive and stream limits of client gRPC connections.
    pub grpc: GrpcOptions,
    /// TLS on the client and peer ports; the default is plain text.
    pub tls: TlsConfig,
    /// Wall time per raft tick: `heartbeat_interval` unless a simulation
    /// skews a member's clock.
    pub tick_interval: Duration,
    /// Faults the simulator injects into the driver; none outside it.
    pub faults: InjectedFaults,
    /// The HTTP side: the gateway switch and the metrics listeners.
    pub http: HttpConfig,
}

/// The HTTP side of the server (`super::http`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfig {
    /// `--enable-grpc-gateway`: serve the JSON gateway under `/v3/`.
    pub enable_grpc_gateway: bool,
    /// `--listen-metrics-urls`: extra listeners serving the probes,
    /// `/version` and `/metrics`, not the KV API.
    pub listen_metrics: Vec<SocketAddr>,
}

impl Default for HttpConfig {
    /// etcd's defaults: the gateway on, no metrics listener.
    fn default() -> Self {
        HttpConfig {
            enable_grpc_gateway: true,
            listen_metrics: Vec::new(),
        }
    }
}

/// etcd's `--grpc-keepalive-interval`, `--grpc-keepalive-timeout` and
/// `--max-concurrent-streams`, for client connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrpcOptions {
    /// Ping a client connection after it has been idle this long; `None`
    /// (`0` on the command line) never pings.
    pub keepalive_interval: Option<Duration>,
    /// Close a connection whose ping is not answered within this.
    pub keepalive_timeout: Duration,
    /// Concurrent streams one client connection may open.
    pub max_concurrent_streams: u32,
}

impl Default for GrpcOptions {
    /// etcd's defaults: a ping after 2 h idle, 20 s to answer it, no
    /// stream limit short of HTTP/2's.
    fn default() -> Self {
        Self {
            keepalive_interval: Some(Duration::from_secs(2 * 60 * 60)),
            keepalive_timeout: Duration::from_secs(20),
            max_concurrent_streams: u32::MAX,
        }
    }
}

impl GrpcOptions {
    /// From the flags' values. Zero turns pings off (etcd's help: "0 to
    /// disable"); an interval under 1 s is raised to 1 s and a zero timeout
    /// means the default, as grpc-go does under etcd.
    pub fn from_flags(interval: Duration, timeout: Duration, max_streams: u32) -> Self {
        let default = Self::default();
        Self {
            keepalive_interval: (!interval.is_zero()).then(|| interval.max(Duration::from_secs(1))),
            keepalive_timeout: if timeout.is_zero() {
                default.keepalive_timeout
            } else {
                timeout
            },
            max_concurrent_streams: max_streams,
        }
    }
}

/// Faults injected into the driver by the simulator. The default, which
/// `cairn serve` always uses, injects nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct InjectedFaults {
    /// Fraction of outgoing raft messages the transport drops.
    pub peer_drop_rate: f64,
    /// Each WAL fsync takes up to this much longer (a slow disk).
    pub sync_latency_max: Duration,
}

/// Whether this member starts a new cluster or rejoins an existing one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ClusterState {
    New,
    Existing,
}

/// A member as the cluster knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    pub id: u64,
    pub name: String,
    pub peer_urls: Vec<String>,
}

/// Every member of `initial_cluster` with its ID. As in etcd, a member's ID
/// depends on its peer URLs and the cluster token, so every member (and
/// `cairn snapshot restore`) computes the same IDs.
pub fn members_of(initial_cluster: &BTreeMap<String, Vec<String>>, token: &str) -> Vec<MemberInfo> {
    initial_cluster
        .iter()
        .map(|(name, urls)| {
            let mut sorted = urls.clone();
            sorted.sort();
            let joined = sorted.join(",");
            MemberInfo {
                id: fnv1a(&[&joined, token]),
                name: name.clone(),
                peer_urls: urls.clone(),
            }
        })
        .collect()
}

/// A configuration that cannot work.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Whether a URL asks for TLS (`https://`).
pub fn is_https(url: &str) -> bool {
    url.starts_with("https://")
}

/// Parses `http://host:port` or `https://host:port` into a socket address.
pub fn parse_url(url: &str) -> Result<SocketAddr, ConfigError> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| ConfigError(format!("URL {url:?} must start with http:// or https://")))?;
    let hostport = rest.trim_end_matches('/');
    let hostport = hostport.replace("localhost", "127.0.0.1");
    hostport
        .parse()
        .map_err(|_| ConfigError(format!("URL {url:?} needs a numeric IP and a port")))
}

/// Splits a comma-separated flag value.
pub fn split_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// Parses `--initial-cluster`: `name=url[,name=url...]`; a name may repeat
/// for several URLs.
pub fn parse_initial_cluster(value: &str) -> Result<BTreeMap<String, Vec<String>>, ConfigError> {
    let mut members: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for item in split_list(value) {
        let (name, url) = item.split_once('=').ok_or_else(|| {
            ConfigError(format!("--initial-cluster entry {item:?} is not name=url"))
        })?;
        parse_url(url)?;
        members
            .entry(name.to_string())
            .or_default()
            .push(url.to_string());
    }
    if members.is_empty() {
        return Err(ConfigError("--initial-cluster is empty".into()));
    }
    Ok(members)
}

/// FNV-1a, 64 bits: a stable hash for IDs (not for security).
fn fnv1a(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.bytes().chain(std::iter::once(0)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h.max(1)
}

/// Parses a duration as Go's `time.ParseDuration` does (etcd's duration
/// flags): a sequence of decimal numbers with units `ns`, `us`/`µs`, `ms`,
/// `s`, `m`, `h` (`1h30m`, `1.5s`, `100ms`); a bare `0` is zero.
pub fn parse_go_duration(text: &str) -> Result<Duration, String> {
    let invalid = || format!("time: invalid duration {text:?}");
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = text;
    let mut total = 0f64;
    if rest.is_empty() {
        return Err(invalid());
    }
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..number_len].parse().map_err(|_| invalid())?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "" => return Err(format!("time: missing unit in duration {text:?}")),
            unit => return Err(format!("time: unknown unit {unit:?} in duration {text:?}")),
        };
        rest = &rest[unit_len..];
        total += number * seconds;
    }
    Duration::try_from_secs_f64(total).map_err(|_| invalid())
}

/// etcd's checks of `--heartbeat-interval` and `--election-timeout`, with
/// its messages.
pub fn validate_raft_timing(heartbeat_ms: u64, election_ms: u64) -> Result<(), ConfigError> {
    if heartbeat_ms == 0 {
        return Err(ConfigError(format!(
            "--heartbeat-interval must be >0 (set to {heartbeat_ms}ms)"
        )));
    }
    if election_ms == 0 {
        return Err(ConfigError(format!(
            "--election-timeout must be >0 (set to {election_ms}ms)"
        )));
    }
    if 5 * heartbeat_ms > election_ms {
        return Err(ConfigError(format!(
            "--election-timeout[{election_ms}ms] should be at least as 5 times as --heartbeat-interval[{heartbeat_ms}ms]"
        )));
    }
    if election_ms > 50_000 {
        return Err(ConfigError(format!(
            "--election-timeout[{election_ms}ms] is too long, and should be set less than 50000ms"
        )));
    }
    Ok(())
}

impl ServerConfig {
    /// The election timeout in ticks (etcd divides, rounding down).
    pub fn election_ticks(&self) -> usize {
        (self.election_timeout.as_millis() / self.heartbeat_interval.as_millis().max(1)).max(1)
            as usize
    }

    /// etcd's smallest lease TTL: 1.5 election timeouts, rounded up to whole
    /// seconds, so a lease outlives a leader election.
    pub fn min_lease_ttl(&self) -> i64 {
        let ms = 3 * self.election_ticks() as u128 * self.heartbeat_interval.as_millis() / 2;
        ms.div_ceil(1000).max(1) as i64
    }

    /// Progress notification period in ticks: etcd raises anything below
    /// 100 ms to 100 ms.
    pub fn progress_notify_ticks(&self) -> u64 {
        let interval = self
            .watch_progress_notify_interval
            .max(Duration::from_millis(100));
        (interval.as_millis() / self.heartbeat_interval.as_millis().max(1)).max(1) as u64
    }

    /// Every member with its ID. As in etcd, a member's ID depends on its peer
    /// URLs and the cluster token, so every member computes the same IDs.
    pub fn members(&self) -> Vec<MemberInfo> {
        members_of(&self.initial_cluster, &self.initial_cluster_token)
    }

    /// This member.
    pub fn me(&self) -> Result<MemberInfo, ConfigError> {
        self.members()
            .into_iter()
            .find(|m| m.name == self.name)
            .ok_or_else(|| {
                ConfigError(format!(
                    "--name {:?} is not in --initial-cluster",
                    self.name
                ))
            })
    }

    /// The cluster's ID: a hash of every member ID and the token.
    pub fn cluster_id(&self) -> u64 {
        let ids: Vec<String> = self.members().iter().map(|m| m.id.to_string()).collect();
        let mut parts: Vec<&str> = ids.iter().map(String::as_str).collect();
        parts.push(&self.initial_cluster_token);
        fnv1a(&parts)
    }
}

/// TLS on the client and peer ports (`super::tls`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsConfig {
    /// `--cert-file`, `--key-file`, `--trusted-ca-file`,
    /// `--client-cert-auth`: for the client listeners in `client_https`.
    pub client: Option<TlsFiles>,
    /// Client listeners whose URL is `https://`.
    pub client_https: Vec<SocketAddr>,
    /// The `--peer-*` files: for the peer listeners in `peer_https`, and
    /// for dialing every peer whose URL is `https://`.
    pub peer: Option<TlsFiles>,
    /// Peer listeners whose URL is `https://`.
    pub peer_https: Vec<SocketAddr>,
    /// Versions and cipher suites, for both ports.
    pub settings: TlsSettings,
}

/// One port's certificate files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// `--cert-file`: the certificate chain this member presents (PEM).
    pub cert_file: PathBuf,
    /// `--key-file`: its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// `--trusted-ca-file`: CA certificates (PEM) a client's certificate
    /// must chain to; on the peer port, also those the peers' server
    /// certificates must chain to.
    pub trusted_ca_file: Option<PathBuf>,
    /// `--client-cert-auth`: require a client certificate signed by the CA.
    pub client_cert_auth: bool,
    /// Generated by `--auto-tls` / `--peer-auto-tls`: a member dialing a
    /// peer with these files does not verify the peer's certificate (no CA
    /// signed it), as etcd's `InsecureSkipVerify` for self-signed certificates.
    pub self_signed: bool,
}

/// A TLS protocol version as etcd's flags name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    /// `TLS1.2`.
    V12,
    /// `TLS1.3`.
    V13,
}

/// What both ports share: `--cipher-suites`, `--tls-min-version`,
/// `--tls-max-version`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSettings {
    /// TLS 1.2 cipher suites by Go's names; empty: every suite rustls has.
    pub cipher_suites: Vec<String>,
    /// `None`: TLS 1.2.
    pub min_version: Option<TlsVersion>,
    /// `None`: the highest there is (TLS 1.3).
    pub max_version: Option<TlsVersion>,
}

/// Parses `--tls-min-version` / `--tls-max-version` with etcd's message.
pub fn parse_tls_version(value: &str) -> Result<Option<TlsVersion>, ConfigError> {
    match value {
        "" => Ok(None),
        "TLS1.2" => Ok(Some(TlsVersion::V12)),
        "TLS1.3" => Ok(Some(TlsVersion::V13)),
        other => Err(ConfigError(format!(
            "unexpected TLS version {other:?} (must be one of: TLS1.2, TLS1.3)"
        ))),
    }
}

/// etcd's name for a TLS version.
pub fn version_name(v: TlsVersion) -> &'static str {
    match v {
        TlsVersion::V12 => "TLS1.2",
        TlsVersion::V13 => "TLS1.3",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_clusters_parse() {
        assert_eq!(parse_url("http://127.0.0.1:2379").unwrap().port(), 2379);
        assert_eq!(
            parse_url("http://localhost:2380/").unwrap().to_string(),
            "127.0.0.1:2380"
        );
        assert_eq!(parse_url("https://127.0.0.1:2379").unwrap().port(), 2379);
        assert!(is_https("https://127.0.0.1:2379") && !is_https("http://127.0.0.1:2379"));
        assert!(parse_url("unix://x").is_err());
        let c = parse_initial_cluster("a=http://127.0.0.1:1,b=http://127.0.0.1:2").unwrap();
        assert_eq!(c.len(), 2);
        assert!(parse_initial_cluster("a").is_err());
    }

    #[test]
    fn durations_parse_as_go_parses_them() {
        let ms = |t: &str| parse_go_duration(t).map(|d| d.as_millis());
        assert_eq!(ms("10m"), Ok(600_000));
        assert_eq!(ms("1h30m"), Ok(5_400_000));
        assert_eq!(ms("1.5s"), Ok(1_500));
        assert_eq!(ms("100ms"), Ok(100));
        assert_eq!(ms("0"), Ok(0));
        assert_eq!(
            parse_go_duration("5").unwrap_err(),
            "time: missing unit in duration \"5\""
        );
        assert!(parse_go_duration("").is_err());
        assert!(parse_go_duration("1x").is_err());
        assert!(parse_go_duration("-1s").is_err());
    }

    #[test]
    fn raft_timing_is_checked_as_etcd_checks_it() {
        assert!(validate_raft_timing(100, 1000).is_ok());
        assert!(
            validate_raft_timing(100, 500).is_ok(),
            "exactly 5x is allowed"
        );
        assert!(validate_raft_timing(100, 50_000).is_ok());
        let err = validate_raft_timing(100, 400).unwrap_err().0;
        assert_eq!(
            err,
            "--election-timeout[400ms] should be at least as 5 times as --heartbeat-interval[100ms]"
        );
        let err = validate_raft_timing(100, 60_000).unwrap_err().0;
        assert_eq!(
            err,
            "--election-timeout[60000ms] is too long, and should be set less than 50000ms"
        );
        assert_eq!(
            validate_raft_timing(0, 1000).unwrap_err().0,
            "--heartbeat-interval must be >0 (set to 0ms)"
        );
    }
}
