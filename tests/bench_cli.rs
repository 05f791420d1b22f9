//! `cairn bench` against one real cairn process: a short put run must finish
//! every request without an error and print a JSON report whose figures hang
//! together. Speed is not checked (docs/benchmarks.md measures it).
// The test spawns processes and waits on them, which the crate's clippy.toml
// keeps out of the sans-IO core.
#![allow(clippy::disallowed_methods)]

mod support;

use serde_json::Value;
use std::process::Command;
use std::time::Duration;
use support::cluster::{run_with_timeout, Cluster};

#[test]
fn bench_put_reports_json() {
    let cluster = Cluster::single();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cairn"));
    cmd.args(["bench", "put", "--total", "200", "--clients", "4", "--json"])
        .args(["--endpoints", &cluster.endpoint(0)]);
    let out = run_with_timeout(cmd, None, Duration::from_secs(30));
    assert!(out.success(), "cairn bench failed: {out:#?}");
    let report: Value = serde_json::from_str(out.stdout.trim()).expect("one JSON object");
    assert_eq!(report["workload"], "put");
    assert_eq!(report["count"], 200, "{report}");
    assert_eq!(report["errors"], 0, "{report}");
    assert!(report["throughput"].as_f64().unwrap() > 0.0, "{report}");
    let lat = &report["latency_us"];
    let q = |name: &str| {
        lat[name]
            .as_f64()
            .unwrap_or_else(|| panic!("no {name}: {report}"))
    };
    assert!(q("min") > 0.0, "{report}");
    assert!(q("min") <= q("p50"), "{report}");
    assert!(q("p50") <= q("p90"), "{report}");
    assert!(q("p90") <= q("p99"), "{report}");
    assert!(q("p99") <= q("p999"), "{report}");
    assert!(q("p999") <= q("max"), "{report}");
}
