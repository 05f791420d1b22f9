//! The Maintenance service as etcdctl (3.4) uses it: the space quota and its
//! NOSPACE alarm, `alarm list|disarm`, `endpoint status`, `defrag`, `endpoint
//! hashkv`, and the NOSPACE recovery path (compact, defragment, disarm, write
//! again). Every script runs against a real etcd 3.4 first, then cairn, with
//! the same small `--quota-backend-bytes`.
// The tests spawn server and etcdctl processes (std::process, threads, clocks
// in the harness), which the crate's clippy.toml forbids in the sans-IO core.
#![allow(clippy::disallowed_methods)]

mod support;

use serde_json::Value;
use support::cluster::{Cluster, Server};
use support::compat::expect;

/// A quota small enough to fill in a few dozen puts on both servers (etcd's
/// bbolt file starts at a few tens of KiB).
const QUOTA: &str = "--quota-backend-bytes=300000";
const NOSPACE: &str = "Error: etcdserver: mvcc: database space exceeded";

/// `endpoint status -w json` of node `i`: its `Status` object.
#[track_caller]
fn status(c: &Cluster, i: usize) -> Value {
    let out = c.ctl(i, &["endpoint", "status", "-w", "json"]);
    let v: Value = serde_json::from_str(out.ok()).expect("status JSON");
    v[0]["Status"].clone()
}

fn member_id(c: &Cluster, i: usize) -> u64 {
    status(c, i)["header"]["member_id"]
        .as_u64()
        .expect("member_id")
}

/// Puts 20 KB values over three keys until a put fails; returns how many
/// succeeded, asserting the failure is etcd's NOSPACE.
#[track_caller]
fn fill(c: &Cluster, node: usize) -> usize {
    let value = "x".repeat(20_000);
    for i in 0..100 {
        let key = format!("k{}", i % 3);
        let out = c.ctl(node, &["put", &key, &value]);
        if !out.success() {
            assert_eq!(out.error_line(), NOSPACE, "[{:?}] put {i}", c.server);
            return i;
        }
    }
    panic!(
        "[{:?}] 100 puts of 20 KB fit under a 300 KB quota",
        c.server
    );
}

/// The NOSPACE alarm raised, listed, refusing what etcd refuses and letting
/// through what etcd lets through, surviving a restart, and the whole way
/// back: compact, (disarm alone is not enough), defragment, disarm, put.
#[test]
fn nospace_alarm_and_recovery_match_etcd() {
    for server in Server::reference_and_cairn() {
        eprintln!("== running against {server:?}");
        // A snapshot every 5 entries: the alarm is restored from a snapshot
        // and the WAL after it.
        let mut c = Cluster::start(server, 1, &[QUOTA, "--snapshot-count=5"]);
        let id = member_id(&c, 0);
        let empty = status(&c, 0);
        assert!(empty.get("errors").is_none(), "[{server:?}] {empty}");
        assert_eq!(empty["leader"].as_u64(), Some(id));

        let fitted = fill(&c, 0);
        assert!(fitted >= 5, "[{server:?}] only {fitted} puts fitted");
        let alarm = format!("memberID:{id} alarm:NOSPACE ");
        expect(&c, &["alarm", "list"], &format!("{alarm}\n"));
        let st = status(&c, 0);
        assert_eq!(st["errors"], serde_json::json!([alarm]), "[{server:?}]");
        assert!(st["dbSize"].as_i64().unwrap() >= st["dbSizeInUse"].as_i64().unwrap());

        // Writes that add data are refused, with the right code...
        let out = c.ctl(0, &["put", "a", "b"]);
        assert_eq!(out.error_line(), NOSPACE, "[{server:?}]");
        assert!(
            out.stderr.contains("code = ResourceExhausted"),
            "[{server:?}] {out:?}"
        );
        let out = c.ctl(0, &["lease", "grant", "10"]);
        assert_eq!(
            out.error_line(),
            "Error: failed to grant lease (etcdserver: mvcc: database space exceeded)"
        );
        let out = c.ctl_stdin(0, &["txn"], "\nput t v\n\n\n");
        assert_eq!(out.error_line(), NOSPACE, "[{server:?}]");
        // ... reads, deletes and txns that only delete are not.
        expect(&c, &["get", "k0", "--keys-only"], "k0\n\n");
        expect(&c, &["del", "k1"], "1\n");
        let out = c.ctl_stdin(0, &["txn"], "\ndel k2\n\n\n");
        assert_eq!(out.ok(), "SUCCESS\n\n1\n", "[{server:?}]");

        // The alarm is replicated state: it survives a crash and restart.
        c.kill(0);
        c.restart(0);
        expect(&c, &["alarm", "list"], &format!("{alarm}\n"));
        let out = c.ctl(0, &["put", "a", "b"]);
        assert_eq!(out.error_line(), NOSPACE, "[{server:?}] after restart");

        // Compaction frees space inside the store, but the database keeps
        // its size until a defragment: disarming alone lets the next put of
        // the size that did not fit raise the alarm again.
        let big = "x".repeat(20_000);
        let rev = status(&c, 0)["header"]["revision"].as_i64().unwrap();
        expect(
            &c,
            &["compact", &rev.to_string()],
            &format!("compacted revision {rev}\n"),
        );
        expect(&c, &["alarm", "disarm"], &format!("{alarm}\n"));
        let out = c.ctl(0, &["put", "a", &big]);
        assert_eq!(
            out.error_line(),
            NOSPACE,
            "[{server:?}] disarmed, not defragmented"
        );
        expect(&c, &["alarm", "list"], &format!("{alarm}\n"));

        let before = status(&c, 0)["dbSize"].as_i64().unwrap();
        let endpoint = c.endpoint(0);
        expect(
            &c,
            &["defrag"],
            &format!("Finished defragmenting etcd member[{endpoint}]\n"),
        );
        let after = status(&c, 0);
        let (size, in_use) = (
            after["dbSize"].as_i64().unwrap(),
            after["dbSizeInUse"].as_i64().unwrap(),
        );
        assert!(
            size < before,
            "[{server:?}] defrag: dbSize {before} -> {size}"
        );
        assert!(in_use <= size, "[{server:?}] in use {in_use} > size {size}");

        expect(&c, &["alarm", "disarm"], &format!("{alarm}\n"));
        expect(&c, &["alarm", "list"], "");
        expect(&c, &["alarm", "disarm"], "");
        expect(&c, &["put", "a", &big], "OK\n");
        expect(&c, &["lease", "list"], "found 0 leases\n");
        assert!(status(&c, 0).get("errors").is_none(), "[{server:?}]");
    }
}

/// In a three-member cluster every member refuses the same writes and, once
/// each has seen a write that does not fit, lists the same alarms (one per
/// member: etcd raises a member's own alarm where the quota check fails);
/// after each member's defragment one disarm frees them all.
#[test]
fn nospace_is_agreed_by_every_member() {
    for server in Server::reference_and_cairn() {
        eprintln!("== running against {server:?}");
        let c = Cluster::start(server, 3, &[QUOTA]);
        let mut ids: Vec<u64> = (0..3).map(|i| member_id(&c, i)).collect();
        ids.sort_unstable();
        fill(&c, 1);
        for i in 0..3 {
            let out = c.ctl(i, &["put", "a", "b"]);
            assert_eq!(out.error_line(), NOSPACE, "[{server:?}] member {i}");
        }
        let alarmed = agreed_alarms(&c);
        assert!(
            alarmed.iter().all(|m| ids.contains(m)),
            "[{server:?}] {alarmed:?}"
        );
        expect_on(&c, 0, &["del", "k0"], "1\n");
        let rev = status(&c, 0)["header"]["revision"].as_i64().unwrap();
        c.ctl(0, &["compact", &rev.to_string()]).ok();
        for i in 0..3 {
            c.ctl(i, &["defrag"]).ok();
        }
        let disarmed = c.ctl(2, &["alarm", "disarm"]);
        assert_eq!(members_of(c.server, disarmed.ok()), alarmed, "[{server:?}]");
        for i in 0..3 {
            expect_on(&c, i, &["alarm", "list"], "");
            expect_on(&c, i, &["put", &format!("after{i}"), "v"], "OK\n");
        }
    }
}

/// The members named in `alarm list` output (NOSPACE lines only), sorted.
fn members_of(server: Server, listing: &str) -> Vec<u64> {
    let mut out: Vec<u64> = (listing.lines())
        .map(|line| {
            let (member, kind) = line
                .strip_prefix("memberID:")
                .and_then(|l| l.split_once(" alarm:"))
                .unwrap_or_else(|| panic!("[{server:?}] alarm line {line:?}"));
            assert_eq!(kind, "NOSPACE ", "[{server:?}]");
            member.parse().unwrap()
        })
        .collect();
    out.sort_unstable();
    out
}

/// The members every node lists NOSPACE for, once the lists agree and stop
/// changing (an alarm reaches a member when it applies it).
fn agreed_alarms(c: &Cluster) -> Vec<u64> {
    let mut last = Vec::new();
    for _ in 0..50 {
        let now: Vec<Vec<u64>> = (0..3)
            .map(|i| members_of(c.server, c.ctl(i, &["alarm", "list"]).ok()))
            .collect();
        if !now[0].is_empty() && now.iter().all(|l| *l == now[0]) && now == last {
            return now[0].clone();
        }
        last = now;
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    panic!(
        "[{:?}] the members' alarm lists never agreed: {last:?}",
        c.server
    );
}

#[track_caller]
fn expect_on(c: &Cluster, i: usize, args: &[&str], want: &str) {
    let out = c.ctl(i, args);
    assert_eq!(
        out.ok(),
        want,
        "[{:?}] member {i}: etcdctl {args:?}",
        c.server
    );
}

/// Alarms raised and cleared by hand through the Alarm RPC: CORRUPT refuses
/// every write (etcd's "corrupt cluster", DataLoss) but not reads; GET with
/// a kind lists only that kind; deactivating an alarm that is not raised
/// answers with nothing.
#[tokio::test]
async fn alarm_rpc_activate_deactivate_as_etcd() {
    use etcd_client::{AlarmAction, AlarmOptions, AlarmType};
    support::compat::on_each_server_client(|server, mut client| async move {
        let id = client.status().await.unwrap().header().unwrap().member_id();
        let mut corrupt = AlarmOptions::new();
        corrupt.with_member(id);
        let r = client
            .alarm(
                AlarmAction::Activate,
                AlarmType::Corrupt,
                Some(corrupt.clone()),
            )
            .await
            .unwrap();
        assert_eq!(r.alarms().len(), 1, "[{server:?}]");
        assert_eq!(r.alarms()[0].member_id(), id);
        assert_eq!(r.alarms()[0].alarm(), AlarmType::Corrupt);
        let err = client.put("a", "b", None).await.unwrap_err();
        let st = support::compat::grpc_status(server, err);
        assert_eq!(st.code(), tonic::Code::DataLoss, "[{server:?}] {st:?}");
        assert_eq!(st.message(), "etcdserver: corrupt cluster");
        let err = client.delete("a", None).await.unwrap_err();
        let st = support::compat::grpc_status(server, err);
        assert_eq!(st.message(), "etcdserver: corrupt cluster", "[{server:?}]");
        let listed = client
            .alarm(AlarmAction::Get, AlarmType::None, None)
            .await
            .unwrap();
        assert_eq!(listed.alarms().len(), 1, "[{server:?}]");
        let nospace = client
            .alarm(AlarmAction::Get, AlarmType::Nospace, None)
            .await
            .unwrap();
        assert!(nospace.alarms().is_empty(), "[{server:?}]");
        let none = client
            .alarm(
                AlarmAction::Deactivate,
                AlarmType::Nospace,
                Some(corrupt.clone()),
            )
            .await
            .unwrap();
        assert!(none.alarms().is_empty(), "[{server:?}]");
        let off = client
            .alarm(AlarmAction::Deactivate, AlarmType::Corrupt, Some(corrupt))
            .await
            .unwrap();
        assert_eq!(off.alarms().len(), 1, "[{server:?}]");
        client.put("a", "b", None).await.unwrap();
        let st = client.status().await.unwrap();
        assert!(st.errors().is_empty(), "[{server:?}] {:?}", st.errors());
    })
    .await;
}

/// `/health` while NOSPACE is active: unhealthy with etcd's reason, healthy
/// again with `?exclude=NOSPACE`; `/readyz` is only about CORRUPT, so it
/// stays ready (etcd 3.4 has no `/readyz`: cairn's is checked alone).
#[test]
fn health_reports_the_nospace_alarm_as_etcd() {
    for server in Server::reference_and_cairn() {
        let c = Cluster::start(server, 1, &[QUOTA]);
        let addr = c.endpoint(0);
        let mut http = support::http::Conn::open(&addr, std::time::Duration::from_secs(10));
        let ok = http.request("GET", "/health", b"");
        assert_eq!(
            (ok.status, ok.json()["health"].clone()),
            (200, "true".into()),
            "[{server:?}]"
        );
        fill(&c, 0);
        let sick = http.request("GET", "/health", b"");
        assert_eq!(sick.status, 503, "[{server:?}] {}", sick.text());
        assert_eq!(sick.json()["health"], "false", "[{server:?}]");
        if server == Server::Cairn {
            // etcd 3.4 gives no reason; 3.5's is this.
            assert_eq!(sick.json()["reason"], "ALARM NOSPACE");
            let ready = http.request("GET", "/readyz?verbose", b"");
            assert_eq!(ready.status, 200, "{}", ready.text());
            assert!(
                ready.text().contains("[+]data_corruption ok"),
                "{}",
                ready.text()
            );
        }
        let excluded = http.request("GET", "/health?exclude=NOSPACE", b"");
        assert_eq!(excluded.status, 200, "[{server:?}] {}", excluded.text());
        assert_eq!(excluded.json()["health"], "true", "[{server:?}]");
    }
}
