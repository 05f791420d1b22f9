//! etcd's flags and `ETCD_*` variables, each case run against etcd 3.4 first
//! and then cairn: a kubeadm-style flag set starts a serving member, the raft
//! timing flags take effect (seen through the smallest lease TTL granted,
//! 1.5 election timeouts rounded up), etcd's variables configure a member,
//! and bad values are refused with etcd's messages.
// The tests spawn server processes and read their output.
#![allow(clippy::disallowed_methods)]

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use support::cluster::{free_port, run_with_timeout, Cluster, Server};

/// `etcdctl lease grant 1` on node 0: the TTL the server actually granted.
fn granted_min_ttl(cluster: &Cluster) -> i64 {
    let out = cluster.ctl(0, &["lease", "grant", "1"]);
    let stdout = out.ok();
    // "lease 694d... granted with TTL(5s)"
    let ttl = stdout
        .split("TTL(")
        .nth(1)
        .and_then(|r| r.split('s').next())
        .and_then(|n| n.parse().ok());
    ttl.unwrap_or_else(|| panic!("[{:?}] lease grant printed {stdout:?}", cluster.server))
}

#[test]
fn kubeadm_style_flags_start_a_serving_member() {
    // The flags of kubeadm's etcd static pod that need no TLS (cairn refuses
    // the TLS ones until it has TLS), plus tuning flags from etcd's sample
    // configuration.
    let metrics = format!("--listen-metrics-urls=http://127.0.0.1:{}", free_port());
    let flags = [
        "--experimental-initial-corrupt-check=true",
        "--experimental-watch-progress-notify-interval=5s",
        metrics.as_str(),
        "--snapshot-count=10000",
        "--max-snapshots=5",
        "--max-wals=5",
        "--quota-backend-bytes=8589934592",
        "--auto-compaction-retention=0",
        "--strict-reconfig-check",
        "--enable-pprof=false",
        "--pre-vote=true",
        "--log-level=info",
        "--logger=zap",
    ];
    for server in Server::reference_and_cairn() {
        let cluster = Cluster::start(server, 1, &flags);
        cluster.ctl(0, &["put", "k", "v"]).ok();
        assert_eq!(
            cluster
                .ctl(0, &["get", "k", "--print-value-only"])
                .ok()
                .trim(),
            "v"
        );
        if server == Server::Cairn {
            let log = std::fs::read_to_string(cluster.node(0).log_path()).unwrap();
            assert!(
                log.contains("--strict-reconfig-check has no effect in cairn"),
                "a flag without effect is named at start:\n{log}"
            );
            // The log is not a terminal: JSON lines, the start line with the
            // retention the flags asked for.
            let start = log
                .lines()
                .find(|l| l.contains("\"msg\":\"starting cairn\""))
                .unwrap_or_else(|| panic!("no JSON start line:\n{log}"));
            let start: serde_json::Value = serde_json::from_str(start).unwrap();
            assert_eq!(start["max_wals"], 5, "{start}");
            assert_eq!(start["max_snapshots"], 5, "{start}");
            assert_eq!(start["level"], "info", "{start}");
        }
    }
}

#[test]
fn raft_timing_flags_take_effect() {
    for server in Server::reference_and_cairn() {
        // Defaults: 1 s election timeout, smallest TTL 2 s.
        let cluster = Cluster::start(server, 1, &[]);
        assert_eq!(granted_min_ttl(&cluster), 2, "[{server:?}] default");
        drop(cluster);
        // 3 s election timeout of 300 ms heartbeats: ceil(1.5 * 3 s) = 5 s.
        let cluster = Cluster::start(
            server,
            1,
            &["--heartbeat-interval=300", "--election-timeout=3000"],
        );
        assert_eq!(
            granted_min_ttl(&cluster),
            5,
            "[{server:?}] 3 s election timeout"
        );
    }
}

#[test]
fn etcd_environment_variables_configure_a_member() {
    for server in Server::reference_and_cairn() {
        let cluster = Cluster::start_with_env(server, &[("ETCD_ELECTION_TIMEOUT", "3000")]);
        assert_eq!(
            granted_min_ttl(&cluster),
            5,
            "[{server:?}] ETCD_ELECTION_TIMEOUT"
        );
    }
}

/// Runs `server` with `args` on free ports in a fresh directory and returns
/// (exit success, stdout + stderr).
fn run_once(server: Server, args: &[&str]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let peer = format!("http://127.0.0.1:{}", free_port());
    let client = format!("http://127.0.0.1:{}", free_port());
    let mut cmd = Command::new(server.binary());
    cmd.current_dir(dir.path())
        .args([
            format!("--listen-peer-urls={peer}"),
            format!("--initial-advertise-peer-urls={peer}"),
            format!("--initial-cluster=default={peer}"),
            format!("--listen-client-urls={client}"),
            format!("--advertise-client-urls={client}"),
        ])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = run_with_timeout(cmd, None, Duration::from_secs(20));
    (out.success(), format!("{}{}", out.stdout, out.stderr))
}

#[test]
fn bad_raft_timing_is_refused_with_etcds_messages() {
    let cases = [
        (
            vec!["--election-timeout=400"],
            "--election-timeout[400ms] should be at least as 5 times as --heartbeat-interval[100ms]",
        ),
        (
            vec!["--election-timeout=60000"],
            "--election-timeout[60000ms] is too long, and should be set less than 50000ms",
        ),
        (
            vec!["--heartbeat-interval=0"],
            "--heartbeat-interval must be >0 (set to 0ms)",
        ),
    ];
    for server in Server::reference_and_cairn() {
        for (args, message) in &cases {
            let (ok, output) = run_once(server, args);
            assert!(!ok, "[{server:?}] {args:?} was accepted:\n{output}");
            assert!(
                output.contains(message),
                "[{server:?}] {args:?}: expected {message:?} in:\n{output}"
            );
        }
    }
}

#[test]
fn cairn_refuses_flags_it_would_ignore_unsafely() {
    for flag in [
        "--client-crl-file=/nonexistent.pem",
        "--peer-cert-allowed-cn=member",
        "--force-new-cluster",
    ] {
        let (ok, output) = run_once(Server::Cairn, &[flag]);
        assert!(!ok, "{flag} was accepted:\n{output}");
        assert!(output.contains("is not supported"), "{flag}: {output}");
    }
    // A misspelt flag fails with a suggestion, as before.
    let (ok, output) = run_once(Server::Cairn, &["--wal-dirr=x"]);
    assert!(!ok);
    assert!(output.contains("--wal-dir"), "{output}");
}

#[test]
fn version_prints_etcds_format() {
    for args in [&["--version"][..], &["version"]] {
        let out = Command::new(Server::Cairn.binary())
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout).unwrap();
        let keys: Vec<&str> = text.lines().filter_map(|l| l.split(": ").next()).collect();
        assert_eq!(
            keys,
            ["cairn Version", "Git SHA", "etcd API", "OS/Arch"],
            "{text}"
        );
    }
}

/// Periodic auto-compaction with a 2 s retention: after a few seconds of
/// writes the first revision is compacted, and a revision written half a
/// second ago is not (etcd keeps at least the retention).
#[test]
fn periodic_auto_compaction_compacts_old_revisions_only() {
    let flags = [
        "--auto-compaction-mode=periodic",
        "--auto-compaction-retention=2s",
    ];
    for server in Server::reference_and_cairn() {
        let cluster = Cluster::start(server, 1, &flags);
        let first = revision_of(&cluster.ctl(0, &["put", "k", "0", "-w", "json"]));
        let mut last = first;
        for i in 1..=50 {
            last = revision_of(&cluster.ctl(0, &["put", "k", &i.to_string(), "-w", "json"]));
            std::thread::sleep(Duration::from_millis(100));
        }
        let old = cluster.ctl(0, &["get", "k", &format!("--rev={first}")]);
        assert!(
            old.error_line()
                .contains("required revision has been compacted"),
            "[{server:?}] revision {first} was not compacted: {old:?}"
        );
        let recent = last - 5;
        let got = cluster.ctl(
            0,
            &["get", "k", &format!("--rev={recent}"), "--print-value-only"],
        );
        assert!(
            got.success(),
            "[{server:?}] recent revision {recent} compacted: {got:?}"
        );
    }
}

fn revision_of(out: &support::cluster::CtlOut) -> i64 {
    let v: serde_json::Value = serde_json::from_str(out.ok()).expect("etcdctl json");
    v["header"]["revision"].as_i64().expect("revision")
}

/// etcd's YAML configuration file, as its sample writes it (durations in
/// nanoseconds, lists as YAML lists, the TLS blocks empty): it configures the
/// member, and the command line's flags and the environment are ignored.
#[test]
fn config_file_configures_the_member_and_overrides_flags_and_env() {
    for server in Server::reference_and_cairn() {
        let dir = tempfile::tempdir().unwrap();
        let (client, peer) = (free_port(), free_port());
        let file = dir.path().join("etcd.conf.yml");
        std::fs::write(
            &file,
            format!(
                "name: 'from-file'
data-dir: {data}
snapshot-count: 10000
heartbeat-interval: 300
election-timeout: 3000
quota-backend-bytes: 0
listen-peer-urls: http://127.0.0.1:{peer}
listen-client-urls: http://127.0.0.1:{client}
max-snapshots: 5
max-wals: 5
initial-advertise-peer-urls: http://127.0.0.1:{peer}
advertise-client-urls: http://127.0.0.1:{client}
initial-cluster: from-file=http://127.0.0.1:{peer}
initial-cluster-token: 'etcd-cluster'
initial-cluster-state: 'new'
strict-reconfig-check: false
grpc-keepalive-timeout: 20000000000
client-transport-security:
  cert-file:
  key-file:
  client-cert-auth: false
  trusted-ca-file:
  auto-tls: false
peer-transport-security:
  cert-file:
  key-file:
  client-cert-auth: false
  trusted-ca-file:
  auto-tls: false
log-level: info
logger: zap
log-outputs: [stderr]
force-new-cluster: false
auto-compaction-mode: periodic
auto-compaction-retention: \"1\"
",
                data = dir.path().join("data").display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("log")).unwrap();
        let mut child = Command::new(server.binary())
            .arg(format!("--config-file={}", file.display()))
            .arg("--name=ignored-flag")
            .env("ETCD_NAME", "ignored-env")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let endpoint = format!("127.0.0.1:{client}");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let members = loop {
            let out = support::cluster::etcdctl(&endpoint, &["member", "list"]);
            if out.success() {
                break out.stdout;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "[{server:?}] not serving:\n{}",
                std::fs::read_to_string(dir.path().join("log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        };
        let lease = support::cluster::etcdctl(&endpoint, &["lease", "grant", "1"]);
        let _ = child.kill();
        let _ = child.wait();
        assert!(members.contains(", from-file, "), "[{server:?}] {members}");
        assert!(
            lease.ok().contains("TTL(5s)"),
            "[{server:?}] the file's 3 s election timeout: {lease:?}"
        );
    }
}
