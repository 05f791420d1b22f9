//! Server configuration: etcd's flags, the initial cluster, member IDs.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

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
    /// Backend quota in bytes (reported; not yet enforced).
    pub quota_backend_bytes: u64,
    /// Largest request accepted, in bytes.
    pub max_request_bytes: usize,
    /// Most ops in one txn branch.
    pub max_txn_ops: usize,
    /// Wall time per raft tick ([`super::raft_loop::TICK`] unless a
    /// simulation skews a member's clock).
    pub tick_interval: std::time::Duration,
    /// Faults the simulator injects into the driver; none outside it.
    pub faults: InjectedFaults,
}

/// Faults injected into the driver by the simulator. The default, which
/// `cairn serve` always uses, injects nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct InjectedFaults {
    /// Fraction of outgoing raft messages the transport drops.
    pub peer_drop_rate: f64,
    /// Each WAL fsync takes up to this much longer (a slow disk).
    pub sync_latency_max: std::time::Duration,
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

/// A configuration that cannot work.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Parses `http://host:port` into a socket address. Only plain HTTP: cairn
/// has no TLS yet.
pub fn parse_url(url: &str) -> Result<SocketAddr, ConfigError> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        ConfigError(format!(
            "URL {url:?} must start with http:// (TLS is not supported yet)"
        ))
    })?;
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

impl ServerConfig {
    /// Every member with its ID. As in etcd, a member's ID depends on its peer
    /// URLs and the cluster token, so every member computes the same IDs.
    pub fn members(&self) -> Vec<MemberInfo> {
        self.initial_cluster
            .iter()
            .map(|(name, urls)| {
                let mut sorted = urls.clone();
                sorted.sort();
                let joined = sorted.join(",");
                MemberInfo {
                    id: fnv1a(&[&joined, &self.initial_cluster_token]),
                    name: name.clone(),
                    peer_urls: urls.clone(),
                }
            })
            .collect()
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
        assert!(parse_url("https://127.0.0.1:2379").is_err());
        let c = parse_initial_cluster("a=http://127.0.0.1:1,b=http://127.0.0.1:2").unwrap();
        assert_eq!(c.len(), 2);
        assert!(parse_initial_cluster("a").is_err());
    }
}
