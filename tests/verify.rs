//! `cairn verify` against real servers: it passes on a real cluster (etcd
//! 3.4 first, then cairn) and it fails where it must. Each run is short (a
//! few seconds of workload) so CI stays cheap; docs/verify.md records long
//! runs.
//!
//! - A clean 3-member cluster of etcd and of cairn: every checker passes,
//!   exit code 0, and the JSON report's figures hang together. (Against
//!   etcd 3.4.23 without progress requests: see etcd-io/etcd#15220.)
//! - Three independent single-member clusters given as one cluster's
//!   endpoints: each has its own revision counter and its own data, so the
//!   history cannot be linearizable: exit code 1, linearizability and
//!   durability failed, with a failing sub-history.
//! - `--local` with pauses and serializable reads: a member resumed after
//!   SIGSTOP answers serializable reads from its stale state, which the
//!   linearizability checker must report.
//! - A 3-member cluster serving clients over mutual TLS (etcd 3.4 first):
//!   with `--cacert`, `--cert` and `--key` every checker passes; without a
//!   client certificate the run cannot start (exit code 2).
// The tests spawn processes and wait on them, which the crate's clippy.toml
// keeps out of the sans-IO core.
#![allow(clippy::disallowed_methods)]

mod support;

use serde_json::Value;
use std::process::Command;
use std::time::Duration;
use support::certs::TestCa;
use support::cluster::{run_with_timeout, Cluster, ClusterTls, CtlOut, Server};

/// Runs `cairn verify --json` with `args`; returns the output and the report.
fn verify(args: &[&str]) -> (CtlOut, Value) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cairn"));
    cmd.args(["verify", "--json", "--no-progress"]).args(args);
    let out = run_with_timeout(cmd, None, Duration::from_secs(90));
    let report: Value = serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|e| panic!("not one JSON object ({e}): {out:#?}"));
    (out, report)
}

fn checker<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checkers"]
        .as_array()
        .expect("checkers")
        .iter()
        .find(|c| c["checker"] == name)
        .unwrap_or_else(|| panic!("no checker {name}: {report}"))
}

#[test]
fn a_real_cluster_passes_every_checker() {
    for server in Server::reference_and_cairn() {
        let cluster = Cluster::start(server, 3, &[]);
        let endpoints = cluster.client_urls().join(",");
        let mut args = vec!["--endpoints", &endpoints, "--duration", "6s"];
        if server == Server::Etcd {
            // Debian's etcd 3.4.23 answers a progress request ahead of
            // events not yet sent (etcd-io/etcd#15220, fixed later by
            // etcd-io/etcd#15237), which the watch checker rightly reports.
            args.push("--no-watch-progress");
        }
        let (out, report) = verify(&args);
        assert_eq!(out.code, Some(0), "{server:?}: {report:#}\n{}", out.stderr);
        assert_eq!(report["passed"], true, "{server:?}: {report:#}");
        for name in [
            "linearizability",
            "durability",
            "watch",
            "replicas",
            "responses",
        ] {
            assert_eq!(
                checker(&report, name)["passed"],
                true,
                "{server:?} {name}: {report:#}"
            );
        }
        let ops = report["ops"].as_u64().expect("ops");
        assert!(ops > 100, "{server:?}: only {ops} ops: {report:#}");
        assert!(
            report["events"].as_u64().expect("events") > 0,
            "{server:?}: {report:#}"
        );
        let l = &report["latency_ms"];
        assert!(
            l["p50"].as_f64().unwrap() <= l["p99"].as_f64().unwrap(),
            "{report:#}"
        );
        assert!(report["failing"].is_null(), "{report:#}");
    }
}

#[test]
fn three_single_member_clusters_are_not_one_cluster() {
    let clusters: Vec<Cluster> = (0..3).map(|_| Cluster::single()).collect();
    let endpoints: Vec<String> = clusters.iter().map(|c| c.endpoint(0)).collect();
    let html = tempfile::tempdir().expect("tempdir");
    let html_path = html.path().join("timeline.html");
    let (out, report) = verify(&[
        "--endpoints",
        &endpoints.join(","),
        "--duration",
        "4s",
        "--html",
        html_path.to_str().expect("utf-8 path"),
    ]);
    assert_eq!(out.code, Some(1), "{report:#}\n{}", out.stderr);
    assert_eq!(report["passed"], false, "{report:#}");
    assert_eq!(
        checker(&report, "linearizability")["passed"],
        false,
        "{report:#}"
    );
    // Each endpoint ends with its own values: the others' acknowledged
    // writes are lost as far as its final reads can tell.
    assert_eq!(
        checker(&report, "durability")["passed"],
        false,
        "{report:#}"
    );
    let failing = &report["failing"];
    let ops = failing["ops"].as_array().expect("a failing sub-history");
    assert!(!ops.is_empty() && ops.len() < 200, "{report:#}");
    assert!(
        ops.iter().all(|o| o["invoke_ns"].as_u64().is_some()),
        "{report:#}"
    );
    let page = std::fs::read_to_string(&html_path).expect("the HTML timeline");
    assert!(page.contains("<svg") && page.contains("<rect"), "{page}");
}

#[test]
fn serializable_reads_with_paused_members_are_caught() {
    // --local starts its own 3-member cairn cluster and pauses members
    // (SIGSTOP, SIGCONT). Serializable reads are answered from a member's
    // local state: from a member that was just resumed, or one that has not
    // applied the latest write yet, they are stale.
    let cairn = env!("CARGO_BIN_EXE_cairn");
    let (out, report) = verify(&[
        "--local",
        cairn,
        "--faults",
        "pause",
        "--fault-interval",
        "2s",
        "--serializable",
        "--duration",
        "8s",
    ]);
    assert_eq!(out.code, Some(1), "{report:#}\n{}", out.stderr);
    assert_eq!(
        checker(&report, "linearizability")["passed"],
        false,
        "{report:#}"
    );
    let faults = report["faults"].as_array().expect("faults");
    assert!(
        faults
            .iter()
            .any(|f| f["fault"].as_str().unwrap_or("").starts_with("pause ")),
        "no pause recorded: {report:#}"
    );
}

#[test]
fn nemesis_commands_run_on_schedule_and_are_recorded() {
    let cluster = Cluster::single();
    let marker = tempfile::tempdir().expect("tempdir");
    let file = marker.path().join("ran");
    let cmd = format!("echo \"$CAIRN_VERIFY_ENDPOINTS\" >> {}", file.display());
    let (out, report) = verify(&[
        "--endpoints",
        &cluster.endpoint(0),
        "--duration",
        "3s",
        "--fault-interval",
        "1s",
        "--nemesis-cmd",
        &cmd,
    ]);
    assert_eq!(out.code, Some(0), "{report:#}\n{}", out.stderr);
    let ran = std::fs::read_to_string(&file).expect("the command ran");
    let runs = ran.lines().count();
    assert!(runs >= 1, "{runs}");
    // Each run was told the endpoints.
    assert!(ran.lines().all(|l| l == cluster.endpoint(0)), "{ran}");
    let faults = report["faults"].as_array().expect("faults");
    let exits = faults
        .iter()
        .filter(|f| f["fault"].as_str().unwrap_or("").ends_with("exited 0"))
        .count();
    assert_eq!(exits, runs, "{report:#}");
}

#[test]
fn the_kubernetes_workload_passes_on_cairn() {
    let cluster = Cluster::start(Server::Cairn, 3, &[]);
    let endpoints = cluster.client_urls().join(",");
    let (out, report) = verify(&[
        "--endpoints",
        &endpoints,
        "--workload",
        "kubernetes",
        "--compact-interval",
        "1s",
        "--duration",
        "5s",
    ]);
    assert_eq!(out.code, Some(0), "{report:#}\n{}", out.stderr);
    assert!(
        report["compactions"].as_u64().expect("compactions") > 0,
        "{report:#}"
    );
    // Paged lists are judged as snapshots by the multi-key checker.
    assert!(
        report["multi_ops"].as_u64().expect("multi_ops") > 0,
        "{report:#}"
    );
    assert_eq!(checker(&report, "multi-key")["passed"], true, "{report:#}");
}

#[test]
fn a_tls_cluster_passes_with_etcdctls_certificate_flags() {
    for server in Server::reference_and_cairn() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = TestCa::new(dir.path(), "ca");
        let tls = ClusterTls {
            ca_file: ca.ca_file.clone(),
            server: ca.issue("server", "member"),
            client: ca.issue("client", "root"),
            client_cert_auth: true,
            peer: false,
            files: true,
        };
        let cluster = Cluster::start_tls(server, 3, &tls, &[]);
        let urls = cluster.client_urls();
        assert!(urls.iter().all(|u| u.starts_with("https://")), "{urls:?}");
        let endpoints = urls.join(",");
        let cacert = format!("--cacert={}", tls.ca_file.display());
        let cert = format!("--cert={}", tls.client.cert_file.display());
        let key = format!("--key={}", tls.client.key_file.display());
        let mut args = vec!["--endpoints", &endpoints, "--duration", "5s", &cacert];
        if server == Server::Etcd {
            args.push("--no-watch-progress");
        }
        // The CA alone: the members require a client certificate, so no
        // connection is made and the run does not start.
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cairn"));
        cmd.args(["verify", "--no-progress"]).args(&args);
        let out = run_with_timeout(cmd, None, Duration::from_secs(60));
        assert_eq!(out.code, Some(2), "{server:?} without --cert: {out:#?}");
        args.extend([cert.as_str(), key.as_str()]);
        let (out, report) = verify(&args);
        assert_eq!(out.code, Some(0), "{server:?}: {report:#}\n{}", out.stderr);
        assert_eq!(report["passed"], true, "{server:?}: {report:#}");
        let ops = report["ops"].as_u64().expect("ops");
        assert!(ops > 50, "{server:?}: only {ops} ops: {report:#}");
        assert!(
            report["events"].as_u64().expect("events") > 0,
            "{server:?}: {report:#}"
        );
    }
}

#[test]
#[cfg(not(feature = "planted-bugs"))]
fn planted_bugs_cannot_be_switched_on_in_a_normal_build() {
    // `cairn serve --plant` exists only with --features planted-bugs
    // (.ci/test builds that binary and proves verify catches the bugs).
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cairn"));
    cmd.args(["serve", "--plant", "reads-without-read-index"]);
    let out = run_with_timeout(cmd, None, Duration::from_secs(20));
    assert_eq!(out.code, Some(2), "{out:#?}");
    assert!(
        out.stderr.contains("unexpected argument '--plant'"),
        "{out:#?}"
    );
    // verify's --plant is for the members --local starts.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cairn"));
    cmd.args(["verify", "--plant", "reads-without-read-index"]);
    let out = run_with_timeout(cmd, None, Duration::from_secs(20));
    assert_eq!(out.code, Some(2), "{out:#?}");
    assert!(out.stderr.contains("--plant needs --local"), "{out:#?}");
}
