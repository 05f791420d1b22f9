//! Backup and restore as an operator runs them: `etcdctl snapshot save` from
//! a member of a three-member cluster, then a restore of that file into every
//! member of a fresh three-member cluster, which must serve the same keys at
//! the same revisions (and nothing written after the save). etcd 3.4 first
//! (`etcdctl snapshot restore`), then cairn (`cairn snapshot restore`, with
//! the same flags).
// The tests spawn server and etcdctl processes (std::process, threads, clocks
// in the harness), which the crate's clippy.toml forbids in the sans-IO core.
#![allow(clippy::disallowed_methods)]

mod support;

use serde_json::Value;
use std::path::Path;
use std::process::Command;
use support::cluster::{etcdctl, run_with_timeout, Cluster, CtlOut, Server, CTL_TIMEOUT};
use support::compat::expect;

/// (key, value, create_revision, mod_revision, version, lease != 0).
type Kv = (String, String, i64, i64, i64, bool);

/// Every key as [`Kv`], and
/// the header revision, as `get --prefix -w json` reports them.
fn contents(c: &Cluster, i: usize) -> (Vec<Kv>, i64) {
    let out = c.ctl(i, &["get", "", "--prefix", "-w", "json"]);
    let v: Value = serde_json::from_str(out.ok()).expect("get JSON");
    let b64 = |v: &Value| unbase64(v.as_str().unwrap_or_default());
    let kvs = v["kvs"]
        .as_array()
        .map(|kvs| {
            kvs.iter()
                .map(|kv| {
                    (
                        b64(&kv["key"]),
                        b64(&kv["value"]),
                        kv["create_revision"].as_i64().unwrap(),
                        kv["mod_revision"].as_i64().unwrap(),
                        kv["version"].as_i64().unwrap(),
                        kv["lease"].as_i64().unwrap_or(0) != 0,
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    (kvs, v["header"]["revision"].as_i64().unwrap())
}

/// Standard base64 (as etcdctl's JSON carries keys and values) to text.
fn unbase64(s: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in s.bytes().filter(|c| *c != b'=') {
        let v = ALPHABET.iter().position(|a| *a == c).expect("base64 digit") as u32;
        bits = (bits << 6) | v;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
            bits &= (1 << n) - 1;
        }
    }
    String::from_utf8(out).expect("utf-8")
}

/// Runs the server's restore command for node `i` of `dst`, into its data dir.
fn restore(server: Server, file: &Path, dst: &Cluster, i: usize) -> CtlOut {
    let node = &dst.nodes[i];
    let data_dir = node.data_dir();
    std::fs::remove_dir_all(&data_dir).expect("remove the fresh data dir");
    let flags = [
        format!("--data-dir={}", data_dir.display()),
        format!("--name={}", node.name),
        format!(
            "--initial-cluster={}",
            node.flag("initial-cluster").unwrap()
        ),
        format!(
            "--initial-cluster-token={}",
            node.flag("initial-cluster-token").unwrap()
        ),
        format!("--initial-advertise-peer-urls={}", node.peer_url()),
    ];
    let file = file.display().to_string();
    match server {
        Server::Etcd => {
            let mut args = vec!["snapshot", "restore", file.as_str()];
            args.extend(flags.iter().map(String::as_str));
            etcdctl(&node.endpoint(), &args)
        }
        Server::Cairn => {
            let mut cmd = Command::new(Server::Cairn.binary());
            cmd.args(["snapshot", "restore", &file]).args(&flags);
            run_with_timeout(cmd, None, CTL_TIMEOUT)
        }
    }
}

#[test]
fn snapshot_save_and_restore_into_a_new_cluster() {
    for server in Server::reference_and_cairn() {
        eprintln!("== running against {server:?}");
        let src = Cluster::start(server, 3, &[]);
        expect(&src, &["put", "a", "1"], "OK\n");
        expect(&src, &["put", "b", "2"], "OK\n");
        expect(&src, &["put", "a", "3"], "OK\n");
        expect(&src, &["del", "b"], "1\n");
        let lease = src.ctl(0, &["lease", "grant", "600"]);
        let lease_id = lease.ok().split_whitespace().nth(1).unwrap().to_string();
        expect(&src, &["put", "c", "4", "--lease", &lease_id], "OK\n");
        expect(&src, &["put", "d", &"x".repeat(100_000)], "OK\n");
        let before = contents(&src, 0);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("backup.db");
        let saved = src.ctl(1, &["snapshot", "save", &file.display().to_string()]);
        assert_eq!(
            saved.ok(),
            format!("Snapshot saved at {}\n", file.display()),
            "[{server:?}]"
        );
        // Written after the save: not in the backup.
        expect(&src, &["put", "after", "x"], "OK\n");
        drop(src);

        let mut dst = Cluster::start(server, 3, &[]);
        for i in 0..3 {
            dst.kill(i);
        }
        for i in 0..3 {
            let out = restore(server, &file, &dst, i);
            assert!(out.success(), "[{server:?}] restore member {i}: {out:#?}");
        }
        for i in 0..3 {
            dst.spawn_again(i);
        }
        for i in 0..3 {
            dst.wait_ready(i, support::cluster::START_TIMEOUT);
        }
        for i in 0..3 {
            assert_eq!(contents(&dst, i), before, "[{server:?}] member {i}");
        }
        let leases = dst.ctl(0, &["lease", "list"]);
        assert!(
            leases.ok().contains(&format!(
                "{:x}",
                u64::from_str_radix(&lease_id, 16).unwrap()
            )),
            "[{server:?}] {leases:?}"
        );
        // The restored cluster writes on from the backup's revision.
        let put = dst.ctl(2, &["put", "e", "5", "-w", "json"]);
        let v: Value = serde_json::from_str(put.ok()).unwrap();
        assert_eq!(
            v["header"]["revision"].as_i64(),
            Some(before.1 + 1),
            "[{server:?}]"
        );
    }
}

/// `cairn snapshot status` reads the image etcdctl saved from cairn, and
/// `--bump-revision --mark-compacted` restores at a higher, compacted
/// revision (etcd 3.6's etcdutl flags; etcd 3.4's etcdctl has no such flags,
/// so this one runs against cairn only).
#[test]
fn status_and_bumped_restore() {
    let src = Cluster::start(Server::Cairn, 1, &[]);
    for i in 0..10 {
        expect(&src, &["put", &format!("k{i}"), "v"], "OK\n");
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("backup.db");
    src.ctl(0, &["snapshot", "save", &file.display().to_string()])
        .ok();
    let status = |args: &[&str]| {
        let mut cmd = Command::new(Server::Cairn.binary());
        cmd.args(["snapshot", "status"]).arg(&file).args(args);
        run_with_timeout(cmd, None, CTL_TIMEOUT)
    };
    let json: Value = serde_json::from_str(status(&["-w", "json"]).ok()).unwrap();
    assert_eq!(json["revision"].as_i64(), Some(11));
    assert_eq!(json["totalKey"].as_i64(), Some(10));
    assert_eq!(
        json["totalSize"].as_u64(),
        Some(std::fs::metadata(&file).unwrap().len())
    );
    let table = status(&[]);
    assert!(table.ok().contains("| REVISION |"), "{table:?}");

    // A damaged image is refused.
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    let bad = dir.path().join("bad.db");
    std::fs::write(&bad, &bytes).unwrap();
    let mut cmd = Command::new(Server::Cairn.binary());
    cmd.args(["snapshot", "status"]).arg(&bad);
    let out = run_with_timeout(cmd, None, CTL_TIMEOUT);
    assert!(
        !out.success() && out.stderr.contains("sha256 checksum mismatch"),
        "{out:?}"
    );

    let mut dst = Cluster::start(Server::Cairn, 1, &[]);
    dst.kill(0);
    let node = &dst.nodes[0];
    std::fs::remove_dir_all(node.data_dir()).unwrap();
    let mut cmd = Command::new(Server::Cairn.binary());
    cmd.args(["snapshot", "restore"]).arg(&file).args([
        format!("--data-dir={}", node.data_dir().display()),
        format!("--name={}", node.name),
        format!(
            "--initial-cluster={}",
            node.flag("initial-cluster").unwrap()
        ),
        format!(
            "--initial-cluster-token={}",
            node.flag("initial-cluster-token").unwrap()
        ),
        format!("--initial-advertise-peer-urls={}", node.peer_url()),
        "--bump-revision=1000".to_string(),
        "--mark-compacted".to_string(),
    ]);
    let out = run_with_timeout(cmd, None, CTL_TIMEOUT);
    assert!(out.success(), "{out:?}");
    dst.restart(0);
    let (kvs, rev) = contents(&dst, 0);
    assert_eq!(kvs.len(), 10);
    assert_eq!(rev, 1011);
    let old = dst.ctl(0, &["get", "k0", "--rev=5"]);
    assert_eq!(
        old.error_line(),
        "Error: etcdserver: mvcc: required revision has been compacted"
    );
}

/// Migration from etcd: a snapshot a real etcd 3.4 saved (a bbolt file),
/// restored into a fresh 3-member cluster, serves every key with its create
/// and mod revisions, version and lease, keeps the compaction and the
/// leases, and writes on from etcd's revision. Restored into etcd first
/// (`etcdctl snapshot restore`): the expectation is etcd's own.
#[test]
fn restore_an_etcd_snapshot() {
    if !support::cluster::etcd_available() {
        eprintln!("no etcd binary: the etcd snapshot cannot be made");
        return;
    }
    let src = Cluster::start(Server::Etcd, 1, &[]);
    for (k, v) in [
        ("a", "1"),
        ("b", "2"),
        ("a", "3"),
        ("big", &"x".repeat(50_000)),
    ] {
        expect(&src, &["put", k, v], "OK\n");
    }
    expect(&src, &["del", "b"], "1\n");
    let lease = src.ctl(0, &["lease", "grant", "600"]);
    let lease_id = lease.ok().split_whitespace().nth(1).unwrap().to_string();
    expect(&src, &["put", "c", "4", "--lease", &lease_id], "OK\n");
    expect(&src, &["compact", "3"], "compacted revision 3\n");
    expect(&src, &["put", "a", "5"], "OK\n");
    let before = contents(&src, 0);
    let old_read = src.ctl(0, &["get", "a", "--rev=3"]).ok().to_string();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("etcd.db");
    src.ctl(0, &["snapshot", "save", &file.display().to_string()])
        .ok();
    drop(src);

    for server in Server::reference_and_cairn() {
        eprintln!("== restoring into {server:?}");
        let mut dst = Cluster::start(server, 3, &[]);
        for i in 0..3 {
            dst.kill(i);
        }
        for i in 0..3 {
            let out = restore(server, &file, &dst, i);
            assert!(out.success(), "[{server:?}] restore member {i}: {out:#?}");
        }
        for i in 0..3 {
            dst.spawn_again(i);
        }
        for i in 0..3 {
            dst.wait_ready(i, support::cluster::START_TIMEOUT);
        }
        for i in 0..3 {
            assert_eq!(contents(&dst, i), before, "[{server:?}] member {i}");
        }
        assert_eq!(
            dst.ctl(1, &["get", "a", "--rev=3"]).ok(),
            old_read,
            "[{server:?}]"
        );
        let compacted = dst.ctl(1, &["get", "a", "--rev=2"]);
        assert_eq!(
            compacted.error_line(),
            "Error: etcdserver: mvcc: required revision has been compacted",
            "[{server:?}]"
        );
        let leases = dst.ctl(0, &["lease", "list"]);
        assert!(leases.ok().contains(&lease_id), "[{server:?}] {leases:?}");
        let put = dst.ctl(2, &["put", "e", "5", "-w", "json"]);
        let v: Value = serde_json::from_str(put.ok()).unwrap();
        assert_eq!(
            v["header"]["revision"].as_i64(),
            Some(before.1 + 1),
            "[{server:?}]"
        );
    }
}
