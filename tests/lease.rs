//! etcd's Lease API, driven by etcdctl (3.4, Debian's `etcd-client`) and by
//! the Rust `etcd-client` crate, against a real etcd 3.4 first (proving the
//! expectations are etcd's) and then cairn.
//!
//! Lease IDs are the server's choice and remaining TTLs depend on the clock,
//! so those are checked for shape and range, never for equality. Expiry waits
//! are generous (a 2 s lease may take up to [`EXPIRY_WAIT`] to disappear on a
//! loaded machine); the one timing assertion in the other direction (a lease
//! must not expire before its TTL) only measures an upper bound on the
//! lease's age, so a slow machine can only make it pass more easily.
// The tests spawn server and etcdctl processes and read clocks for their
// deadlines, which the crate's clippy.toml forbids in the sans-IO core.
#![allow(clippy::disallowed_methods)]

mod support;

use std::time::{Duration, Instant};

use etcd_client::{
    Client, EventType, LeaseGrantOptions, LeaseTimeToLiveOptions, PutOptions, WatchOptions,
    WatchResponse, WatchStream,
};
use support::cluster::{Cluster, Server};
use support::compat::{
    expect, expect_error, find_leader, grpc_status, json, next_watch_response, on_each_server,
    on_each_server_client, rev, revision,
};
use support::streaming::Streaming;

/// How long a lease of etcd's minimum TTL (2 s) may take to expire and its
/// keys to vanish.
const EXPIRY_WAIT: Duration = Duration::from_secs(20);
/// How long any single expected message may take to arrive.
const WAIT: Duration = Duration::from_secs(15);

/// etcd's minimum TTL with the default 1 s election timeout:
/// ceil(1.5 * election timeout).
const MIN_TTL: i64 = 2;

/// Parses `lease <16 hex digits> granted with TTL(<ttl>s)\n`, checking the
/// TTL; returns the ID as etcdctl prints it.
#[track_caller]
fn granted(c: &Cluster, ttl: &str, want_ttl: i64) -> String {
    let out = c.ctl(0, &["lease", "grant", ttl]);
    let stdout = out.ok();
    let id = stdout
        .strip_prefix("lease ")
        .and_then(|r| r.split_once(' '))
        .map(|(id, _)| id.to_string())
        .unwrap_or_else(|| panic!("[{:?}] lease grant printed {stdout:?}", c.server));
    assert_eq!(id.len(), 16, "[{:?}] {stdout:?}", c.server);
    assert!(
        id.chars()
            .all(|ch| ch.is_ascii_hexdigit() && !ch.is_ascii_uppercase()),
        "[{:?}] {stdout:?}",
        c.server
    );
    assert_ne!(
        id, "0000000000000000",
        "[{:?}] lease ID 0 is 'no lease'",
        c.server
    );
    assert_eq!(
        stdout,
        format!("lease {id} granted with TTL({want_ttl}s)\n"),
        "[{:?}] lease grant {ttl}",
        c.server
    );
    id
}

/// The remaining TTL in `lease <id> granted with TTL(<g>s), remaining(<r>s)...`.
#[track_caller]
fn remaining(c: &Cluster, line: &str) -> i64 {
    line.split("remaining(")
        .nth(1)
        .and_then(|r| r.split_once("s)"))
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or_else(|| panic!("[{:?}] no remaining TTL in {line:?}", c.server))
}

/// The lease IDs `etcdctl lease list` prints.
#[track_caller]
fn lease_list(c: &Cluster) -> Vec<String> {
    let out = c.ctl(0, &["lease", "list"]);
    let stdout = out.ok();
    let mut lines = stdout.lines();
    let head = lines.next().unwrap_or_default();
    let ids: Vec<String> = lines.map(str::to_string).collect();
    assert_eq!(
        head,
        format!("found {} leases", ids.len()),
        "[{:?}] {stdout:?}",
        c.server
    );
    ids
}

#[test]
fn etcdctl_lease_grant_put_timetolive_revoke() {
    on_each_server(|c| {
        let id = granted(c, "60", 60);
        let other = granted(c, "120", 120);
        assert_ne!(id, other, "[{:?}]", c.server);
        let lease_flag = format!("--lease={id}");
        expect(c, &["put", &lease_flag, "lk1", "v1"], "OK\n");
        expect(c, &["put", &lease_flag, "lk2", "v2"], "OK\n");
        expect(c, &["put", "plain", "p"], "OK\n");
        let before_revoke = revision(c);

        // timetolive: the granted TTL, a remaining TTL a little under it,
        // and the attached keys (in some order) with --keys.
        let out = c.ctl(0, &["lease", "timetolive", &id]);
        let line = out.ok();
        let left = remaining(c, line);
        assert!((50..=60).contains(&left), "[{:?}] {line:?}", c.server);
        assert_eq!(
            line,
            format!("lease {id} granted with TTL(60s), remaining({left}s)\n"),
            "[{:?}]",
            c.server
        );
        let out = c.ctl(0, &["lease", "timetolive", &id, "--keys"]);
        let line = out.ok();
        let left = remaining(c, line);
        assert!((50..=60).contains(&left), "[{:?}] {line:?}", c.server);
        let with_keys = |keys: &str| {
            format!(
                "lease {id} granted with TTL(60s), remaining({left}s), attached keys([{keys}])\n"
            )
        };
        assert!(
            line == with_keys("lk1 lk2") || line == with_keys("lk2 lk1"),
            "[{:?}] {line:?}",
            c.server
        );
        let v = json(c, &["lease", "timetolive", &id, "--keys"]);
        assert_eq!(
            v["id"].as_i64().map(|n| format!("{n:016x}")),
            Some(id.clone()),
            "[{:?}] {v}",
            c.server
        );
        assert_eq!(v["granted-ttl"], 60, "[{:?}] {v}", c.server);
        let mut keys: Vec<String> = v["keys"]
            .as_array()
            .unwrap_or_else(|| panic!("[{:?}] keys: {v}", c.server))
            .iter()
            .map(|k| k.as_str().unwrap_or_default().to_string())
            .collect();
        keys.sort();
        assert_eq!(
            keys,
            ["bGsx", "bGsy"],
            "[{:?}] base64 of lk1, lk2",
            c.server
        );
        let v = json(c, &["get", "lk1"]);
        assert_eq!(
            v["kvs"][0]["lease"].as_i64().map(|n| format!("{n:016x}")),
            Some(id.clone()),
            "[{:?}] the key records its lease: {v}",
            c.server
        );

        // keep-alive --once renews to the full TTL and exits.
        expect(
            c,
            &["lease", "keep-alive", "--once", &id],
            &format!("lease {id} keepalived with TTL(60)\n"),
        );

        let mut listed = lease_list(c);
        listed.sort();
        let mut want = vec![id.clone(), other.clone()];
        want.sort();
        assert_eq!(listed, want, "[{:?}] lease list", c.server);

        // Revoke: the lease's keys go, in one revision; other keys stay.
        expect(
            c,
            &["lease", "revoke", &id],
            &format!("lease {id} revoked\n"),
        );
        assert_eq!(
            revision(c),
            before_revoke + 1,
            "[{:?}] revoking deletes both keys in one revision",
            c.server
        );
        expect(c, &["get", "--prefix", "lk"], "");
        expect(c, &["get", "plain"], "plain\np\n");
        expect(
            c,
            &["lease", "timetolive", &id, "--keys"],
            &format!("lease {id} already expired\n"),
        );
        assert_eq!(
            lease_list(c),
            std::slice::from_ref(&other),
            "[{:?}]",
            c.server
        );

        // Revoking a lease with no keys takes no revision.
        let rev_before = revision(c);
        expect(
            c,
            &["lease", "revoke", &other],
            &format!("lease {other} revoked\n"),
        );
        assert_eq!(revision(c), rev_before, "[{:?}]", c.server);
        assert_eq!(lease_list(c), Vec::<String>::new(), "[{:?}]", c.server);
    });
}

#[test]
fn etcdctl_lease_errors() {
    on_each_server(|c| {
        let not_found = "Error: etcdserver: requested lease not found";
        expect_error(c, &["put", "--lease=1234abcd", "k", "v"], not_found);
        expect(c, &["get", "k"], "");
        assert_eq!(revision(c), 1, "[{:?}] nothing written", c.server);
        expect_error(
            c,
            &["lease", "revoke", "1234abcd"],
            "Error: failed to revoke lease (etcdserver: requested lease not found)",
        );
        let out = c.ctl(0, &["lease", "keep-alive", "--once", "1234abcd"]);
        assert_eq!(out.error_line(), not_found, "[{:?}] {out:#?}", c.server);
        expect(
            c,
            &["lease", "timetolive", "1234abcd"],
            "lease 000000001234abcd already expired\n",
        );
        let v = json(c, &["lease", "timetolive", "1234abcd", "--keys"]);
        assert_eq!(v["ttl"], -1, "[{:?}] {v}", c.server);
        assert_eq!(
            v["granted-ttl"].as_i64().unwrap_or(0),
            0,
            "[{:?}] {v}",
            c.server
        );
        // etcd's largest TTL is 9,000,000,000 s.
        expect_error(
            c,
            &["lease", "grant", "9000000001"],
            "Error: failed to grant lease (etcdserver: too large lease TTL)",
        );
        granted(c, "9000000000", 9_000_000_000);
        // A revoked lease is as unknown as one never granted.
        let id = granted(c, "60", 60);
        expect(
            c,
            &["lease", "revoke", &id],
            &format!("lease {id} revoked\n"),
        );
        expect_error(c, &["put", &format!("--lease={id}"), "k", "v"], not_found);
    });
}

#[test]
fn etcdctl_lease_minimum_ttl_and_expiry() {
    on_each_server(|c| {
        // Asking for less than the minimum gets the minimum.
        granted(c, "0", MIN_TTL);
        granted(c, "2", MIN_TTL);
        granted(c, "3", 3);
        let start = Instant::now();
        let id = granted(c, "1", MIN_TTL);
        expect(c, &["put", &format!("--lease={id}"), "ek", "ev"], "OK\n");
        expect(c, &["put", "keep", "kv"], "OK\n");
        // Not kept alive: the key vanishes, and not before the TTL.
        let deadline = start + EXPIRY_WAIT;
        loop {
            let out = c.ctl(0, &["get", "ek"]);
            if out.ok().is_empty() {
                break;
            }
            assert_eq!(out.ok(), "ek\nev\n", "[{:?}]", c.server);
            assert!(
                Instant::now() < deadline,
                "[{:?}] a {MIN_TTL} s lease's key still there after {EXPIRY_WAIT:?}",
                c.server
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let age = start.elapsed();
        assert!(
            age >= Duration::from_millis(1500),
            "[{:?}] a {MIN_TTL} s lease expired after {age:?}",
            c.server
        );
        expect(
            c,
            &["lease", "timetolive", &id, "--keys"],
            &format!("lease {id} already expired\n"),
        );
        assert!(
            !lease_list(c).contains(&id),
            "[{:?}] an expired lease is not listed",
            c.server
        );
        expect(c, &["get", "keep"], "keep\nkv\n");
    });
}

#[test]
fn etcdctl_lease_keep_alive_keeps_keys() {
    on_each_server(|c| {
        let id = granted(c, "1", MIN_TTL);
        expect(
            c,
            &["put", &format!("--lease={id}"), "alive", "yes"],
            "OK\n",
        );
        // etcdctl renews at a third of the TTL; hold on for twice the TTL.
        let mut keeper = Streaming::etcdctl(&c.endpoint(0), &["lease", "keep-alive", &id]);
        let line = format!("lease {id} keepalived with TTL({MIN_TTL})\n");
        keeper.wait_for(&line, WAIT);
        std::thread::sleep(Duration::from_secs(2 * MIN_TTL as u64 + 1));
        expect(c, &["get", "alive"], "alive\nyes\n");
        assert!(keeper.running(), "[{:?}] keep-alive exited", c.server);
        let out = keeper.kill();
        assert!(
            out.stdout.lines().count() >= 2,
            "[{:?}] several renewals: {out:#?}",
            c.server
        );
        for l in out.stdout.lines() {
            assert_eq!(format!("{l}\n"), line, "[{:?}] {out:#?}", c.server);
        }
        // Once nobody renews, it expires.
        let deadline = Instant::now() + EXPIRY_WAIT;
        while !c.ctl(0, &["get", "alive"]).ok().is_empty() {
            assert!(
                Instant::now() < deadline,
                "[{:?}] the key outlived its lease by {EXPIRY_WAIT:?}",
                c.server
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        // keep-alive on the expired lease reports it and exits.
        let out = c.ctl(0, &["lease", "keep-alive", &id]);
        assert_eq!(
            out.stdout,
            format!("lease {id} expired or revoked.\n"),
            "[{:?}] {out:#?}",
            c.server
        );
    });
}

// ---------------------------------------------------------------------------
// etcd-client
// ---------------------------------------------------------------------------

/// A prefix watch from now, its creation confirmed.
async fn watch_prefix(s: Server, c: &mut Client, prefix: &str) -> WatchStream {
    let mut w = c
        .watch(
            prefix,
            Some(WatchOptions::new().with_prefix().with_prev_key()),
        )
        .await
        .expect("watch");
    let r = next_watch_response(s, &mut w, WAIT).await;
    assert!(r.created(), "[{s:?}] {r:?}");
    w
}

/// Asserts `r` holds exactly the deletes of `keys` (sorted), all at one
/// revision, which it returns.
#[track_caller]
fn assert_deletes_in_one_response(s: Server, r: &WatchResponse, keys: &[&str]) -> i64 {
    let mut got: Vec<String> = r
        .events()
        .iter()
        .map(|e| {
            assert_eq!(e.event_type(), EventType::Delete, "[{s:?}] {r:?}");
            String::from_utf8_lossy(e.kv().unwrap().key()).into_owned()
        })
        .collect();
    got.sort();
    assert_eq!(got, keys, "[{s:?}] every delete in one response: {r:?}");
    let revs: Vec<i64> = r
        .events()
        .iter()
        .map(|e| e.kv().unwrap().mod_revision())
        .collect();
    assert!(
        revs.iter().all(|&m| m == revs[0]),
        "[{s:?}] one revision: {revs:?}"
    );
    revs[0]
}

async fn sorted_keys(c: &mut Client, id: i64) -> Vec<String> {
    let r = c
        .lease_time_to_live(id, Some(LeaseTimeToLiveOptions::new().with_keys()))
        .await
        .expect("time_to_live");
    let mut keys: Vec<String> = r
        .keys()
        .iter()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect();
    keys.sort();
    keys
}

#[tokio::test]
async fn client_grant_ids_and_ttls() {
    on_each_server_client(|s, mut c| async move {
        // A chosen ID.
        let r = c
            .lease_grant(60, Some(LeaseGrantOptions::new().with_id(0x1234)))
            .await
            .expect("grant with id");
        assert_eq!((r.id(), r.ttl()), (0x1234, 60), "[{s:?}]");
        assert_eq!(r.error(), "", "[{s:?}]");
        assert_eq!(rev(r.header()), 1, "[{s:?}] a grant takes no revision");
        // An assigned one: positive and new.
        let r = c.lease_grant(30, None).await.expect("grant");
        let assigned = r.id();
        assert!(assigned > 0, "[{s:?}] assigned ID {assigned}");
        assert_ne!(assigned, 0x1234, "[{s:?}]");
        assert_eq!(r.ttl(), 30, "[{s:?}]");
        // The same ID twice.
        let e = c
            .lease_grant(60, Some(LeaseGrantOptions::new().with_id(0x1234)))
            .await
            .expect_err("duplicate lease ID");
        let status = grpc_status(s, e);
        assert_eq!(
            status.code(),
            tonic::Code::FailedPrecondition,
            "[{s:?}] {status:?}"
        );
        assert_eq!(
            status.message(),
            "etcdserver: lease already exists",
            "[{s:?}]"
        );
        // The minimum TTL, for 1, 0 and negative requests.
        for ask in [1, 0, -5] {
            let r = c.lease_grant(ask, None).await.expect("grant");
            assert_eq!(r.ttl(), MIN_TTL, "[{s:?}] lease_grant({ask})");
        }
        // The maximum.
        let status = grpc_status(
            s,
            c.lease_grant(9_000_000_001, None)
                .await
                .expect_err("too large"),
        );
        assert_eq!(status.code(), tonic::Code::OutOfRange, "[{s:?}] {status:?}");
        assert_eq!(
            status.message(),
            "etcdserver: too large lease TTL",
            "[{s:?}]"
        );

        let r = c.leases().await.expect("leases");
        let mut ids: Vec<i64> = r.leases().iter().map(|l| l.id()).collect();
        ids.sort();
        assert_eq!(ids.len(), 5, "[{s:?}] {ids:?}");
        assert!(
            ids.contains(&0x1234) && ids.contains(&assigned),
            "[{s:?}] {ids:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn client_keep_alive_and_time_to_live() {
    on_each_server_client(|s, mut c| async move {
        let id = c.lease_grant(60, None).await.expect("grant").id();
        for k in ["t/a", "t/b"] {
            c.put(k, "v", Some(PutOptions::new().with_lease(id)))
                .await
                .expect("put with lease");
        }
        let r = c.get("t/a", None).await.expect("get");
        assert_eq!(r.kvs()[0].lease(), id, "[{s:?}] the key records its lease");

        let r = c
            .lease_time_to_live(id, Some(LeaseTimeToLiveOptions::new().with_keys()))
            .await
            .expect("time_to_live");
        assert_eq!((r.id(), r.granted_ttl()), (id, 60), "[{s:?}]");
        assert!((50..=60).contains(&r.ttl()), "[{s:?}] ttl {}", r.ttl());
        assert_eq!(sorted_keys(&mut c, id).await, ["t/a", "t/b"], "[{s:?}]");
        // Without with_keys, no keys.
        let r = c.lease_time_to_live(id, None).await.expect("time_to_live");
        assert!(r.keys().is_empty(), "[{s:?}] keys only when asked");

        // keep_alive: the crate reads the first answer itself; each further
        // request gets the full TTL back.
        let (mut keeper, mut stream) = c.lease_keep_alive(id).await.expect("keep_alive");
        assert_eq!(keeper.id(), id, "[{s:?}]");
        for _ in 0..2 {
            keeper.keep_alive().await.expect("send keep-alive");
            let r = tokio::time::timeout(WAIT, stream.message())
                .await
                .expect("keep-alive answer in time")
                .expect("keep-alive answer")
                .expect("stream open");
            assert_eq!((r.id(), r.ttl()), (id, 60), "[{s:?}]");
            assert!(rev(r.header()) >= 3, "[{s:?}] {r:?}");
        }

        // Unknown leases: keep-alive answers TTL 0 (the crate calls that
        // "lease not found"); time_to_live answers TTL -1, no error.
        match c.lease_keep_alive(0x7777).await {
            Err(etcd_client::Error::LeaseKeepAliveError(m)) => {
                assert_eq!(m, "lease not found", "[{s:?}]")
            }
            other => panic!("[{s:?}] keep_alive of an unknown lease: {other:?}"),
        }
        let r = c
            .lease_time_to_live(0x7777, Some(LeaseTimeToLiveOptions::new().with_keys()))
            .await
            .expect("time_to_live of an unknown lease");
        assert_eq!(
            (r.id(), r.ttl(), r.granted_ttl(), r.keys().len()),
            (0x7777, -1, 0, 0),
            "[{s:?}]"
        );
        let e = c.lease_revoke(0x7777).await.expect_err("revoke unknown");
        let status = grpc_status(s, e);
        assert_eq!(status.code(), tonic::Code::NotFound, "[{s:?}] {status:?}");
        assert_eq!(
            status.message(),
            "etcdserver: requested lease not found",
            "[{s:?}]"
        );
        let e = c
            .put("k", "v", Some(PutOptions::new().with_lease(0x7777)))
            .await
            .expect_err("put with an unknown lease");
        let status = grpc_status(s, e);
        assert_eq!(status.code(), tonic::Code::NotFound, "[{s:?}] {status:?}");
        assert_eq!(
            status.message(),
            "etcdserver: requested lease not found",
            "[{s:?}]"
        );
        let e = c
            .txn(etcd_client::Txn::new().and_then([etcd_client::TxnOp::put(
                "k",
                "v",
                Some(PutOptions::new().with_lease(0x7777)),
            )]))
            .await
            .expect_err("txn put with an unknown lease");
        let status = grpc_status(s, e);
        assert_eq!(status.code(), tonic::Code::NotFound, "[{s:?}] {status:?}");
        assert_eq!(
            status.message(),
            "etcdserver: requested lease not found",
            "[{s:?}]"
        );
    })
    .await;
}

#[tokio::test]
async fn client_revoke_deletes_keys_in_one_revision() {
    on_each_server_client(|s, mut c| async move {
        let id = c.lease_grant(60, None).await.expect("grant").id();
        for k in ["r/1", "r/2", "r/3"] {
            c.put(k, "v", Some(PutOptions::new().with_lease(id)))
                .await
                .expect("put"); // revs 2..=4
        }
        c.put("r/plain", "p", None).await.expect("put"); // 5
        let mut w = watch_prefix(s, &mut c, "r/").await;

        let r = c.lease_revoke(id).await.expect("revoke");
        assert_eq!(rev(r.header()), 6, "[{s:?}] the revoke's revision");
        let resp = next_watch_response(s, &mut w, WAIT).await;
        let at = assert_deletes_in_one_response(s, &resp, &["r/1", "r/2", "r/3"]);
        assert_eq!(at, 6, "[{s:?}]");
        for e in resp.events() {
            let prev = e.prev_kv().expect("prev_kv");
            assert_eq!(prev.lease(), id, "[{s:?}] prev kv has the lease");
        }
        let r = c
            .get("r/", Some(etcd_client::GetOptions::new().with_prefix()))
            .await
            .expect("get");
        assert_eq!(r.count(), 1, "[{s:?}] only r/plain stays");
        assert_eq!(rev(r.header()), 6, "[{s:?}]");
        let r = c.leases().await.expect("leases");
        assert!(r.leases().is_empty(), "[{s:?}] revoked leases go");
        let e = c.lease_revoke(id).await.expect_err("revoke twice");
        assert_eq!(
            grpc_status(s, e).message(),
            "etcdserver: requested lease not found",
            "[{s:?}]"
        );
    })
    .await;
}

#[tokio::test]
async fn client_put_without_lease_detaches() {
    on_each_server_client(|s, mut c| async move {
        let a = c.lease_grant(60, None).await.expect("grant").id();
        let b = c.lease_grant(60, None).await.expect("grant").id();
        for k in ["d/1", "d/2", "d/3"] {
            c.put(k, "v", Some(PutOptions::new().with_lease(a)))
                .await
                .expect("put");
        }
        // d/1: a plain put detaches it. d/2: moved to lease b. d/3: an
        // ignore_lease put keeps lease a.
        c.put("d/1", "w", None).await.expect("put");
        c.put("d/2", "w", Some(PutOptions::new().with_lease(b)))
            .await
            .expect("put");
        c.put("d/3", "w", Some(PutOptions::new().with_ignore_lease()))
            .await
            .expect("put");
        let leases: Vec<i64> = c
            .get("d/", Some(etcd_client::GetOptions::new().with_prefix()))
            .await
            .expect("get")
            .kvs()
            .iter()
            .map(|kv| kv.lease())
            .collect();
        assert_eq!(leases, [0, b, a], "[{s:?}]");
        assert_eq!(sorted_keys(&mut c, a).await, ["d/3"], "[{s:?}]");
        assert_eq!(sorted_keys(&mut c, b).await, ["d/2"], "[{s:?}]");

        // ignore_lease on a missing key.
        let e = c
            .put("d/none", "w", Some(PutOptions::new().with_ignore_lease()))
            .await
            .expect_err("ignore_lease on a missing key");
        let status = grpc_status(s, e);
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "[{s:?}] {status:?}"
        );
        assert_eq!(status.message(), "etcdserver: key not found", "[{s:?}]");

        // Revoking a deletes only d/3.
        c.lease_revoke(a).await.expect("revoke");
        let keys: Vec<String> = c
            .get("d/", Some(etcd_client::GetOptions::new().with_prefix()))
            .await
            .expect("get")
            .kvs()
            .iter()
            .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
            .collect();
        assert_eq!(keys, ["d/1", "d/2"], "[{s:?}]");
        // Deleting a leased key detaches it from the lease.
        c.delete("d/2", None).await.expect("delete");
        assert!(
            sorted_keys(&mut c, b).await.is_empty(),
            "[{s:?}] a deleted key leaves its lease"
        );
    })
    .await;
}

#[tokio::test]
async fn client_lease_expiry_and_keep_alive() {
    on_each_server_client(|s, mut c| async move {
        // Two minimum-TTL leases: one renewed, one left to expire.
        let start = Instant::now();
        let dying = c.lease_grant(1, None).await.expect("grant");
        assert_eq!(dying.ttl(), MIN_TTL, "[{s:?}]");
        let dying = dying.id();
        let kept = c.lease_grant(1, None).await.expect("grant").id();
        for (k, id) in [("e/1", dying), ("e/2", dying), ("e/kept", kept)] {
            c.put(k, "v", Some(PutOptions::new().with_lease(id)))
                .await
                .expect("put");
        }
        let mut w = watch_prefix(s, &mut c, "e/").await;
        let (mut keeper, mut stream) = c.lease_keep_alive(kept).await.expect("keep_alive");

        // Renew `kept` every 500 ms until the other's keys are gone.
        let deadline = start + EXPIRY_WAIT;
        let resp = loop {
            keeper.keep_alive().await.expect("send keep-alive");
            let r = tokio::time::timeout(WAIT, stream.message())
                .await
                .expect("keep-alive answer in time")
                .expect("keep-alive answer")
                .expect("stream open");
            assert_eq!((r.id(), r.ttl()), (kept, MIN_TTL), "[{s:?}]");
            match tokio::time::timeout(Duration::from_millis(500), w.message()).await {
                Ok(m) => break m.expect("watch").expect("watch open"),
                Err(_) => assert!(
                    Instant::now() < deadline,
                    "[{s:?}] a {MIN_TTL} s lease not expired after {EXPIRY_WAIT:?}"
                ),
            }
        };
        let age = start.elapsed();
        assert!(
            age >= Duration::from_millis(1500),
            "[{s:?}] a {MIN_TTL} s lease expired after {age:?}"
        );
        // The expiry is a revoke: every key of the lease in one revision.
        let at = assert_deletes_in_one_response(s, &resp, &["e/1", "e/2"]);
        assert_eq!(rev(resp.header()), at, "[{s:?}] {resp:?}");

        // Keep renewing for another TTL: e/kept stays.
        for _ in 0..(2 * MIN_TTL * 2) {
            keeper.keep_alive().await.expect("send keep-alive");
            let r = tokio::time::timeout(WAIT, stream.message())
                .await
                .expect("keep-alive answer in time")
                .expect("keep-alive answer")
                .expect("stream open");
            assert_eq!(r.ttl(), MIN_TTL, "[{s:?}]");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let r = c
            .get("e/", Some(etcd_client::GetOptions::new().with_prefix()))
            .await
            .expect("get");
        let keys: Vec<&[u8]> = r.kvs().iter().map(|kv| kv.key()).collect();
        assert_eq!(keys, [&b"e/kept"[..]], "[{s:?}]");
        let r = c.lease_time_to_live(dying, None).await.expect("ttl");
        assert_eq!(r.ttl(), -1, "[{s:?}] the expired lease is gone");
        let ids: Vec<i64> = c
            .leases()
            .await
            .expect("leases")
            .leases()
            .iter()
            .map(|l| l.id())
            .collect();
        assert_eq!(ids, [kept], "[{s:?}]");
    })
    .await;
}

/// A client for node `i` alone.
async fn connect_node(cluster: &Cluster, i: usize) -> Client {
    let options = etcd_client::ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(5))
        .with_timeout(Duration::from_secs(10));
    Client::connect([cluster.node(i).client_url()], Some(options))
        .await
        .expect("connect etcd-client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_leases_through_followers_and_leader_failover() {
    for s in Server::reference_and_cairn() {
        eprintln!("== running against {s:?}");
        let mut cluster = tokio::task::block_in_place(|| Cluster::start(s, 3, &[]));
        let leader = find_leader(&cluster, WAIT).await;
        let (f1, f2) = ((leader + 1) % 3, (leader + 2) % 3);
        let mut c1 = connect_node(&cluster, f1).await;
        let mut c2 = connect_node(&cluster, f2).await;

        // Watching before the short lease exists, so its expiry cannot
        // come before the watch.
        let mut w = watch_prefix(s, &mut c2, "f/").await;

        // Everything through followers: grant, put, keep-alive, time_to_live.
        let long = c1.lease_grant(60, None).await.expect("grant").id();
        let r = c1.lease_grant(1, None).await.expect("grant");
        assert_eq!(r.ttl(), MIN_TTL, "[{s:?}] minimum TTL via a follower");
        // Long enough to outlive the failover on most runs, so that the new
        // leader is the one expiring it (an earlier expiry passes too).
        let short = c1.lease_grant(5, None).await.expect("grant").id();
        c2.put("f/long", "v", Some(PutOptions::new().with_lease(long)))
            .await
            .expect("put via follower");
        c2.put("f/short", "v", Some(PutOptions::new().with_lease(short)))
            .await
            .expect("put via follower");
        let mut puts = 0;
        while puts < 2 {
            let r = next_watch_response(s, &mut w, WAIT).await;
            assert!(
                r.events().iter().all(|e| e.event_type() == EventType::Put),
                "[{s:?}] {r:?}"
            );
            puts += r.events().len();
        }
        let (mut keeper, mut stream) = c1.lease_keep_alive(long).await.expect("keep_alive");
        keeper.keep_alive().await.expect("send keep-alive");
        let r = tokio::time::timeout(WAIT, stream.message())
            .await
            .expect("keep-alive answer in time")
            .expect("keep-alive answer")
            .expect("stream open");
        assert_eq!(
            (r.id(), r.ttl()),
            (long, 60),
            "[{s:?}] keep-alive via a follower"
        );
        assert_eq!(
            sorted_keys(&mut c2, long).await,
            ["f/long"],
            "[{s:?}] time_to_live via a follower"
        );

        // The leader dies; the leases live on under the next one.
        tokio::task::block_in_place(|| cluster.kill(leader));
        let new_leader = find_leader(&cluster, WAIT).await;
        assert_ne!(new_leader, leader, "[{s:?}]");
        let r = c1
            .lease_time_to_live(long, Some(LeaseTimeToLiveOptions::new().with_keys()))
            .await
            .expect("time_to_live after failover");
        assert_eq!(r.granted_ttl(), 60, "[{s:?}]");
        assert!(
            r.ttl() > 0,
            "[{s:?}] the lease survives failover: {}",
            r.ttl()
        );

        // The short lease is not renewed: the new leader expires it.
        let resp = next_watch_response(s, &mut w, EXPIRY_WAIT).await;
        assert_deletes_in_one_response(s, &resp, &["f/short"]);

        // The long one can be renewed and revoked under the new leader.
        let (mut keeper, mut stream) = c2.lease_keep_alive(long).await.expect("keep_alive");
        keeper.keep_alive().await.expect("send keep-alive");
        let r = tokio::time::timeout(WAIT, stream.message())
            .await
            .expect("keep-alive answer in time")
            .expect("keep-alive answer")
            .expect("stream open");
        assert_eq!((r.id(), r.ttl()), (long, 60), "[{s:?}]");
        c1.lease_revoke(long).await.expect("revoke after failover");
        let resp = next_watch_response(s, &mut w, WAIT).await;
        assert_deletes_in_one_response(s, &resp, &["f/long"]);
        let r = c2
            .get("f/", Some(etcd_client::GetOptions::new().with_prefix()))
            .await
            .expect("get");
        assert_eq!(r.count(), 0, "[{s:?}]");
        drop(cluster);
    }
}
