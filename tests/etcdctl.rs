//! etcdctl (3.4, Debian's `etcd-client`) against one cairn node: the outputs a
//! user sees, checked exactly where etcdctl's printer is stable.
//!
//! Each test is a script of etcdctl commands with their expected output. When
//! an `etcd` binary is installed (CI installs Debian's `etcd-server`), the
//! script runs first against a real etcd 3.4: that proves the expectations are
//! etcd's behaviour, not our guess. Then it runs against cairn.
//!
//! Fields that legitimately differ between servers (cluster and member IDs,
//! raft term, database size) are checked for shape and consistency instead of
//! value.
// The tests spawn server and etcdctl processes (std::process, threads, clocks
// in the harness), which the crate's clippy.toml forbids in the sans-IO core.
#![allow(clippy::disallowed_methods)]

mod support;

use serde_json::Value;
use support::cluster::{Cluster, CtlOut};
use support::compat::{expect, expect_error, json, on_each_server, revision};

/// Runs `txn -i` with `stdin` and asserts exactly `want` on stdout.
#[track_caller]
fn expect_txn(c: &Cluster, stdin: &str, want: &str) {
    let out: CtlOut = c.ctl_stdin(0, &["txn", "-i"], stdin);
    assert!(
        out.success(),
        "[{:?}] txn -i <<{stdin:?} failed: {out:#?}",
        c.server
    );
    assert_eq!(out.stdout, want, "[{:?}] txn -i <<{stdin:?}", c.server);
}

fn b64(s: &str) -> String {
    // Enough base64 for the short ASCII keys these tests use.
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = s.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn base64_helper_matches_known_values() {
    assert_eq!(b64("foo"), "Zm9v");
    assert_eq!(b64("bar"), "YmFy");
    assert_eq!(b64("ab"), "YWI=");
    assert_eq!(b64("a"), "YQ==");
}

/// Puts six values (revisions 2..=7) used by the get tests.
fn load_get_fixture(c: &Cluster) {
    // A new cluster is at revision 1; each put takes the next one.
    assert_eq!(
        revision(c),
        1,
        "[{:?}] a new store is at revision 1",
        c.server
    );
    expect(c, &["put", "a", "1"], "OK\n"); // rev 2
    expect(c, &["put", "b", "2"], "OK\n"); // rev 3
    expect(c, &["put", "c", "3"], "OK\n"); // rev 4
    expect(c, &["put", "foo", "bar"], "OK\n"); // rev 5
    expect(c, &["put", "foo2", "baz"], "OK\n"); // rev 6
    expect(c, &["put", "foo", "bar2", "--prev-kv"], "OK\nfoo\nbar\n"); // rev 7
    assert_eq!(
        revision(c),
        7,
        "[{:?}] six puts take six revisions",
        c.server
    );
}

#[test]
fn get_prefix_rev_limit() {
    on_each_server(|c| {
        load_get_fixture(c);
        expect(c, &["get", "foo"], "foo\nbar2\n");
        expect(c, &["get", "missing"], "");
        expect(c, &["get", "--prefix", "foo"], "foo\nbar2\nfoo2\nbaz\n");
        // Range [b, foo): b and c.
        expect(c, &["get", "b", "foo"], "b\n2\nc\n3\n");
        expect(
            c,
            &["get", "--from-key", "c"],
            "c\n3\nfoo\nbar2\nfoo2\nbaz\n",
        );
        // History: foo was "bar" at revisions 5 and 6, absent before 5.
        expect(c, &["get", "foo", "--rev=5"], "foo\nbar\n");
        expect(c, &["get", "foo", "--rev=6"], "foo\nbar\n");
        expect(c, &["get", "foo", "--rev=4"], "");
        expect(c, &["get", "--prefix", "", "--rev=3"], "a\n1\nb\n2\n");
        expect(c, &["get", "--prefix", "", "--limit=2"], "a\n1\nb\n2\n");
        expect(c, &["get", "a", "z", "--limit=1"], "a\n1\n");
        expect_error(
            c,
            &["get", "foo", "--rev=8"],
            "Error: etcdserver: mvcc: required revision is a future revision",
        );
    });
}

#[test]
fn get_sort_and_output_options() {
    on_each_server(|c| {
        load_get_fixture(c);
        let all = ["get", "--prefix", ""];
        let run = |extra: &[&str], want: &str| {
            let mut args = all.to_vec();
            args.extend_from_slice(extra);
            expect(c, &args, want);
        };
        run(
            &["--sort-by=KEY", "--order=DESCEND"],
            "foo2\nbaz\nfoo\nbar2\nc\n3\nb\n2\na\n1\n",
        );
        run(
            &["--sort-by=VALUE", "--order=DESCEND"],
            "foo2\nbaz\nfoo\nbar2\nc\n3\nb\n2\na\n1\n",
        );
        run(
            &["--sort-by=VALUE", "--order=ASCEND"],
            "a\n1\nb\n2\nc\n3\nfoo\nbar2\nfoo2\nbaz\n",
        );
        run(
            &["--sort-by=MODIFY", "--order=DESCEND"],
            "foo\nbar2\nfoo2\nbaz\nc\n3\nb\n2\na\n1\n",
        );
        run(
            &["--sort-by=CREATE", "--order=ASCEND"],
            "a\n1\nb\n2\nc\n3\nfoo\nbar2\nfoo2\nbaz\n",
        );
        // --order alone sorts by key.
        run(&["--order=DESCEND", "--limit=2"], "foo2\nbaz\nfoo\nbar2\n");
        // With a sort, the limit applies after sorting: only foo has version 2.
        run(
            &["--sort-by=VERSION", "--order=DESCEND", "--limit=1"],
            "foo\nbar2\n",
        );
        run(
            &["--sort-by=MODIFY", "--order=ASCEND", "--limit=2"],
            "a\n1\nb\n2\n",
        );
        expect(
            c,
            &["get", "--prefix", "foo", "--keys-only"],
            "foo\n\nfoo2\n\n",
        );
        expect(
            c,
            &["get", "--prefix", "foo", "--print-value-only"],
            "bar2\nbaz\n",
        );
        expect(c, &["get", "b", "--print-value-only", "--rev=3"], "2\n");

        // The JSON form: every field of a key-value, count and more.
        let v = json(c, &["get", "foo"]);
        assert_eq!(v["header"]["revision"], 7, "[{:?}] {v}", c.server);
        assert_eq!(v["count"], 1, "[{:?}] {v}", c.server);
        let kv = &v["kvs"][0];
        assert_eq!(kv["key"], b64("foo"), "[{:?}] {v}", c.server);
        assert_eq!(kv["value"], b64("bar2"), "[{:?}] {v}", c.server);
        assert_eq!(kv["create_revision"], 5, "[{:?}] {v}", c.server);
        assert_eq!(kv["mod_revision"], 7, "[{:?}] {v}", c.server);
        assert_eq!(kv["version"], 2, "[{:?}] {v}", c.server);
        assert!(
            v.get("more").is_none(),
            "[{:?}] more is false (omitted): {v}",
            c.server
        );

        // Count is the whole range's size even when the limit cuts it.
        // (etcdctl 3.4 has no --count-only; the JSON count is the same field.)
        let v = json(c, &["get", "--prefix", "", "--limit=2"]);
        assert_eq!(v["count"], 5, "[{:?}] {v}", c.server);
        assert_eq!(v["more"], true, "[{:?}] {v}", c.server);
        assert_eq!(
            v["kvs"].as_array().map(Vec::len),
            Some(2),
            "[{:?}] {v}",
            c.server
        );
        let v = json(c, &["get", "--prefix", "", "--keys-only"]);
        assert!(
            v["kvs"][0].get("value").is_none(),
            "[{:?}] keys-only returns no values: {v}",
            c.server
        );
        assert_eq!(v["kvs"][0]["version"], 1, "[{:?}] {v}", c.server);

        // A range that matches nothing has neither kvs nor count.
        let v = json(c, &["get", "missing"]);
        assert!(v.get("kvs").is_none(), "[{:?}] {v}", c.server);
        assert!(v.get("count").is_none(), "[{:?}] {v}", c.server);
    });
}

#[test]
fn del_prefix_and_prev_kv() {
    on_each_server(|c| {
        for (k, v) in [("k1", "v1"), ("k2", "v2"), ("k3", "v3"), ("x", "y")] {
            expect(c, &["put", k, v], "OK\n");
        }
        let before = revision(c);
        assert_eq!(before, 5, "[{:?}]", c.server);
        // Deleting nothing prints 0 and takes no revision.
        expect(c, &["del", "nothing"], "0\n");
        expect(c, &["del", "--prefix", "nothing"], "0\n");
        assert_eq!(revision(c), before, "[{:?}] an empty delete", c.server);
        expect(
            c,
            &["del", "--prefix", "k", "--prev-kv"],
            "3\nk1\nv1\nk2\nv2\nk3\nv3\n",
        );
        // One delete of three keys is one revision.
        assert_eq!(revision(c), before + 1, "[{:?}]", c.server);
        expect(c, &["get", "--prefix", ""], "x\ny\n");
        expect(
            c,
            &["get", "--prefix", "k", "--rev=5"],
            "k1\nv1\nk2\nv2\nk3\nv3\n",
        );
        expect(c, &["del", "x"], "1\n");
        expect(c, &["get", "--prefix", ""], "");
        // A put after a delete starts a new generation: version 1 again.
        expect(c, &["put", "k1", "again"], "OK\n");
        let v = json(c, &["get", "k1"]);
        assert_eq!(v["kvs"][0]["version"], 1, "[{:?}] {v}", c.server);
        assert_eq!(v["kvs"][0]["create_revision"], 8, "[{:?}] {v}", c.server);
    });
}

/// The prompts `txn -i` prints on stdout before the result.
const TXN_PROMPTS: &str =
    "compares:\nsuccess requests (get, put, del):\nfailure requests (get, put, del):\n";

#[test]
fn txn_interactive_both_branches() {
    on_each_server(|c| {
        expect(c, &["put", "k1", "v1"], "OK\n"); // rev 2: create 2
        expect(c, &["put", "k1", "v2"], "OK\n"); // rev 3: mod 3, version 2

        // value and version compares, both true: the success branch runs.
        expect_txn(
            c,
            "value(\"k1\") = \"v2\"\nversion(\"k1\") = \"2\"\n\nput k2 yes\nget k1\n\nput k2 no\n\n",
            &format!("{TXN_PROMPTS}SUCCESS\n\nOK\n\nk1\nv2\n"),
        );
        expect(c, &["get", "k2"], "k2\nyes\n");

        // mod compare false: the failure branch runs.
        expect_txn(
            c,
            "mod(\"k1\") > \"100\"\n\nput k2 yes2\n\nput k2 no\nget k2\n\n",
            &format!("{TXN_PROMPTS}FAILURE\n\nOK\n\nk2\nno\n"),
        );
        expect(c, &["get", "k2"], "k2\nno\n");

        // mod compare true at the exact revision.
        expect_txn(
            c,
            "mod(\"k1\") = \"3\"\n\nput k3 mod-eq\n\nput k3 mod-ne\n\n",
            &format!("{TXN_PROMPTS}SUCCESS\n\nOK\n"),
        );
        expect(c, &["get", "k3", "--print-value-only"], "mod-eq\n");

        // create compare true, then false.
        expect_txn(
            c,
            "create(\"k1\") = \"2\"\n\ndel k3\n\nput k4 wrong\n\n",
            &format!("{TXN_PROMPTS}SUCCESS\n\n1\n"),
        );
        expect(c, &["get", "k3"], "");
        expect_txn(
            c,
            "create(\"k1\") > \"2\"\n\nput k4 wrong\n\nget k1\n\n",
            &format!("{TXN_PROMPTS}FAILURE\n\nk1\nv2\n"),
        );
        expect(c, &["get", "k4"], "");

        // A missing key has create revision 0: the classic "create if absent".
        expect_txn(
            c,
            "create(\"absent\") = \"0\"\n\nput absent now\n\n\n",
            &format!("{TXN_PROMPTS}SUCCESS\n\nOK\n"),
        );
        expect_txn(
            c,
            "create(\"absent\") = \"0\"\n\nput absent twice\n\n\n",
            &format!("{TXN_PROMPTS}FAILURE\n"),
        );
        expect(c, &["get", "absent", "--print-value-only"], "now\n");

        // value compare false, version less-than false, not-equal true.
        expect_txn(
            c,
            "value(\"k1\") = \"v1\"\n\nput k5 a\n\nput k5 b\n\n",
            &format!("{TXN_PROMPTS}FAILURE\n\nOK\n"),
        );
        expect(c, &["get", "k5", "--print-value-only"], "b\n");
        expect_txn(
            c,
            "version(\"k1\") < \"2\"\n\nput k5 c\n\n\n",
            &format!("{TXN_PROMPTS}FAILURE\n"),
        );
        expect_txn(
            c,
            "value(\"k1\") != \"v1\"\n\nput k5 d\n\n\n",
            &format!("{TXN_PROMPTS}SUCCESS\n\nOK\n"),
        );
        expect(c, &["get", "k5", "--print-value-only"], "d\n");

        // All compares must hold: one false compare of two means failure.
        expect_txn(
            c,
            "value(\"k1\") = \"v2\"\nversion(\"k1\") = \"3\"\n\nput k6 yes\n\nput k6 no\n\n",
            &format!("{TXN_PROMPTS}FAILURE\n\nOK\n"),
        );
        expect(c, &["get", "k6", "--print-value-only"], "no\n");

        // A txn with writes takes exactly one revision, whichever branch runs;
        // a txn with only reads takes none.
        let before = revision(c);
        expect_txn(
            c,
            "\nput t1 a\nput t2 b\ndel k6\n\n\n",
            &format!("{TXN_PROMPTS}SUCCESS\n\nOK\n\nOK\n\n1\n"),
        );
        assert_eq!(
            revision(c),
            before + 1,
            "[{:?}] one txn, one revision",
            c.server
        );
        let v = json(c, &["get", "t1"]);
        assert_eq!(
            v["kvs"][0]["mod_revision"],
            before + 1,
            "[{:?}] {v}",
            c.server
        );
        let v = json(c, &["get", "t2"]);
        assert_eq!(
            v["kvs"][0]["mod_revision"],
            before + 1,
            "[{:?}] {v}",
            c.server
        );
        expect_txn(
            c,
            "\nget t1\n\n\n",
            &format!("{TXN_PROMPTS}SUCCESS\n\nt1\na\n"),
        );
        assert_eq!(revision(c), before + 1, "[{:?}] read-only txn", c.server);
    });
}

#[test]
fn compaction_then_old_revisions_fail() {
    on_each_server(|c| {
        for i in 1..=5 {
            expect(c, &["put", "k", &format!("v{i}")], "OK\n"); // revs 2..=6
        }
        expect(c, &["get", "k", "--rev=3"], "k\nv2\n");
        expect(c, &["compaction", "4"], "compacted revision 4\n");
        let compacted = "Error: etcdserver: mvcc: required revision has been compacted";
        expect_error(c, &["get", "k", "--rev=3"], compacted);
        expect_error(c, &["get", "k", "--rev=2"], compacted);
        // The compaction revision itself and later ones still read.
        expect(c, &["get", "k", "--rev=4"], "k\nv3\n");
        expect(c, &["get", "k", "--rev=6"], "k\nv5\n");
        expect(c, &["get", "k"], "k\nv5\n");
        // Compacting again at or below the line, or past the head, fails.
        expect_error(c, &["compaction", "4"], compacted);
        expect_error(c, &["compaction", "3"], compacted);
        expect_error(
            c,
            &["compaction", "100"],
            "Error: etcdserver: mvcc: required revision is a future revision",
        );
        // Compaction takes no revision; the store still takes writes.
        assert_eq!(revision(c), 6, "[{:?}]", c.server);
        expect(
            c,
            &["compaction", "--physical", "6"],
            "compacted revision 6\n",
        );
        expect_error(c, &["get", "k", "--rev=5"], compacted);
        expect(c, &["put", "k", "v6"], "OK\n");
        expect(c, &["get", "k", "--print-value-only"], "v6\n");
    });
}

#[test]
fn endpoint_status_health_and_member_list() {
    on_each_server(|c| {
        expect(c, &["put", "a", "1"], "OK\n");
        expect(c, &["put", "b", "2"], "OK\n");
        let ep = c.endpoint(0);
        let node = c.node(0);

        // endpoint status -w json: one entry for our endpoint, its header's
        // revision is the store's, and a single node leads itself.
        let v = json(c, &["endpoint", "status"]);
        let entry = &v[0];
        assert_eq!(entry["Endpoint"], ep.as_str(), "[{:?}] {v}", c.server);
        let status = &entry["Status"];
        let member_id = status["header"]["member_id"]
            .as_u64()
            .unwrap_or_else(|| panic!("[{:?}] header.member_id: {v}", c.server));
        assert_ne!(member_id, 0, "[{:?}] {v}", c.server);
        assert_ne!(
            status["header"]["cluster_id"].as_u64().unwrap_or(0),
            0,
            "[{:?}] {v}",
            c.server
        );
        assert_eq!(status["header"]["revision"], 3, "[{:?}] {v}", c.server);
        assert_eq!(
            status["leader"].as_u64(),
            Some(member_id),
            "[{:?}] {v}",
            c.server
        );
        let term = status["raftTerm"].as_u64().unwrap_or(0);
        assert!(term >= 1, "[{:?}] raftTerm: {v}", c.server);
        assert_eq!(
            status["header"]["raft_term"].as_u64(),
            Some(term),
            "[{:?}] {v}",
            c.server
        );
        let index = status["raftIndex"].as_u64().unwrap_or(0);
        // At least the two puts went through the log.
        assert!(index >= 2, "[{:?}] raftIndex: {v}", c.server);
        assert!(
            status["version"].as_str().is_some_and(|s| !s.is_empty()),
            "[{:?}] version: {v}",
            c.server
        );

        // The simple form: endpoint, ID in hex, version, size, is leader, is
        // learner, raft term, raft index, applied index, errors.
        let out = c.ctl(0, &["endpoint", "status"]);
        let line = out.ok().trim_end_matches('\n').to_string();
        let fields: Vec<&str> = line.split(", ").collect();
        assert_eq!(fields.len(), 10, "[{:?}] {line:?}", c.server);
        assert_eq!(fields[0], ep, "[{:?}] {line:?}", c.server);
        assert_eq!(
            fields[1],
            format!("{member_id:x}"),
            "[{:?}] {line:?}",
            c.server
        );
        assert_eq!(fields[4], "true", "[{:?}] is leader: {line:?}", c.server);
        assert_eq!(fields[5], "false", "[{:?}] is learner: {line:?}", c.server);
        assert_eq!(fields[6], term.to_string(), "[{:?}] {line:?}", c.server);
        assert_eq!(fields[9], "", "[{:?}] errors: {line:?}", c.server);

        // endpoint health prints to stderr and exits 0.
        let out = c.ctl(0, &["endpoint", "health"]);
        assert!(out.success(), "[{:?}] {out:#?}", c.server);
        let want = format!("{ep} is healthy: successfully committed proposal: took = ");
        assert!(out.stderr.contains(&want), "[{:?}] {out:#?}", c.server);

        // member list: one started member with our name and URLs.
        let want = format!(
            "{member_id:x}, started, n1, {}, {}, false\n",
            node.peer_url(),
            node.client_url()
        );
        expect(c, &["member", "list"], &want);
        let v = json(c, &["member", "list"]);
        let members = v["members"].as_array().cloned().unwrap_or_default();
        assert_eq!(members.len(), 1, "[{:?}] {v}", c.server);
        assert_eq!(
            members[0]["ID"].as_u64(),
            Some(member_id),
            "[{:?}] {v}",
            c.server
        );
        assert_eq!(members[0]["name"], "n1", "[{:?}] {v}", c.server);
        assert_eq!(
            members[0]["peerURLs"][0],
            node.peer_url(),
            "[{:?}] {v}",
            c.server
        );
        assert_eq!(
            members[0]["clientURLs"][0],
            node.client_url(),
            "[{:?}] {v}",
            c.server
        );
        assert_eq!(
            v["header"]["member_id"].as_u64(),
            Some(member_id),
            "[{:?}] {v}",
            c.server
        );
        // Every response header carries the raft term, this one too.
        assert_eq!(
            v["header"]["raft_term"].as_u64(),
            Some(term),
            "[{:?}] member list header: {v}",
            c.server
        );
    });
}

/// `--endpoints` in URL form (`http://127.0.0.1:port`), as most users and
/// `--cluster` write it. Maintenance.Status dials the endpoint by itself, and
/// etcdctl 3.4 then sends the whole URL as the HTTP/2 `:authority`.
#[test]
fn endpoint_status_with_url_endpoints() {
    on_each_server(|c| {
        let url = c.node(0).client_url();
        let out = support::cluster::etcdctl(&url, &["put", "a", "1"]);
        assert_eq!(out.ok(), "OK\n", "[{:?}]", c.server);
        let out = support::cluster::etcdctl(&url, &["get", "a"]);
        assert_eq!(out.ok(), "a\n1\n", "[{:?}]", c.server);
        let out = support::cluster::etcdctl(&url, &["endpoint", "status", "-w", "json"]);
        assert!(
            out.success() && !out.stderr.contains("Failed"),
            "[{:?}] endpoint status with --endpoints={url}: {out:#?}",
            c.server
        );
        let v: Value = serde_json::from_str(&out.stdout).expect("json");
        assert_eq!(v[0]["Endpoint"], url.as_str(), "[{:?}] {v}", c.server);
        assert_eq!(
            v[0]["Status"]["header"]["revision"], 2,
            "[{:?}] {v}",
            c.server
        );
    });
}
