//! The HTTP/1.1 side of the client port, driven by a plain HTTP/1.1 client
//! (`support::http`) against a real etcd 3.4 first and then cairn, comparing
//! HTTP status and JSON with the header's IDs normalised: the JSON gateway
//! (every call on one keep-alive connection), a watch stream read chunk by
//! chunk, lease keep-alive, `/version`, `/health`, the metrics listener, and
//! gRPC on the same port. `/livez` and `/readyz` are etcd 3.5.11's, which 3.4
//! lacks: those are checked against etcd 3.5's documented output.
// The tests spawn server processes and read clocks for their deadlines.
#![allow(clippy::disallowed_methods)]

mod support;

use std::sync::Mutex;
use std::time::Duration;

use serde_json::{json, Value};
use support::cluster::{free_port, Cluster, Server};
use support::compat::{connect, on_each_server, on_each_server_with};
use support::http::{b64, normalise, Conn, Reply};

/// How long any one read may take.
const WAIT: Duration = Duration::from_secs(15);

fn conn(c: &Cluster) -> Conn {
    Conn::open(&c.endpoint(0), WAIT)
}

/// A reply as the comparison sees it: status and normalised JSON (or text
/// when the body is not JSON).
fn seen(r: &Reply) -> (u16, Value) {
    let body = match serde_json::from_slice::<Value>(&r.body) {
        Ok(mut v) => {
            normalise(&mut v);
            v
        }
        Err(_) => Value::from(r.text()),
    };
    (r.status, body)
}

/// Runs `script` on each server and asserts both saw the same list.
fn same_on_each_server(extra: &[&str], script: impl Fn(&Cluster) -> Vec<(String, (u16, Value))>) {
    let runs = Mutex::new(Vec::new());
    on_each_server_with(extra, |c| runs.lock().unwrap().push((c.server, script(c))));
    let runs = runs.into_inner().unwrap();
    if let [(_, etcd), (_, cairn)] = &runs[..] {
        assert_eq!(etcd.len(), cairn.len());
        for (e, c) in etcd.iter().zip(cairn) {
            assert_eq!(e, c, "etcd (left) and cairn (right) differ at {}", e.0);
        }
    }
}

/// The unary gateway, all on one connection: KV, txn, compaction, leases
/// (with the `/v3/kv/lease/...` aliases), membership, `/v3beta/`, unknown
/// prefixes and paths, wrong methods, and error bodies.
#[test]
fn gateway_calls_match_etcd() {
    same_on_each_server(&[], |c| {
        let mut h = conn(c);
        let (foo, bar) = (b64("foo"), b64("bar"));
        let calls: Vec<(&str, String)> = vec![
            ("/v3/kv/put", json!({"key": foo, "value": bar}).to_string()),
            ("/v3/kv/put", json!({"key": b64("foo2"), "value": bar, "prev_kv": true}).to_string()),
            ("/v3/kv/put", json!({"key": b64("foo2"), "value": b64("x"), "prev_kv": true}).to_string()),
            ("/v3/kv/range", json!({"key": foo}).to_string()),
            ("/v3/kv/range", json!({"key": foo, "range_end": b64("fop"), "sort_order": "DESCEND", "sort_target": "KEY"}).to_string()),
            // Integers as numbers and as strings, camelCase names too.
            ("/v3/kv/range", json!({"key": foo, "range_end": b64("fop"), "limit": "1", "countOnly": true}).to_string()),
            ("/v3/kv/range", json!({"key": b64("none")}).to_string()),
            ("/v3/kv/range", json!({"key": foo, "revision": 100}).to_string()),
            ("/v3/kv/range", json!({"key": ""}).to_string()),
            ("/v3/kv/range", String::new()),
            ("/v3/kv/range", json!({"key": foo, "unknown_field": 1}).to_string()),
            ("/v3/kv/txn", json!({
                "compare": [{"key": foo, "target": "VALUE", "result": "EQUAL", "value": bar}],
                "success": [{"request_range": {"key": foo}}, {"request_put": {"key": b64("t"), "value": bar}}],
                "failure": [{"request_delete_range": {"key": foo}}],
            }).to_string()),
            ("/v3/kv/txn", json!({
                "compare": [{"key": foo, "target": "VERSION", "result": "GREATER", "version": "5"}],
                "failure": [{"request_delete_range": {"key": b64("t"), "prev_kv": true}}],
            }).to_string()),
            ("/v3/kv/deleterange", json!({"key": b64("foo2"), "prev_kv": true}).to_string()),
            ("/v3/kv/compaction", json!({"revision": 100}).to_string()),
            ("/v3/kv/compaction", json!({"revision": 2}).to_string()),
            ("/v3/kv/range", json!({"key": foo, "revision": 1}).to_string()),
            ("/v3/lease/grant", json!({"TTL": 60, "ID": 7}).to_string()),
            ("/v3/lease/grant", json!({"TTL": "60", "ID": "7"}).to_string()),
            ("/v3/lease/leases", "{}".to_string()),
            ("/v3/kv/lease/leases", "{}".to_string()),
            ("/v3/kv/put", json!({"key": b64("leased"), "value": bar, "lease": 7}).to_string()),
            ("/v3/kv/lease/timetolive", json!({"ID": 8}).to_string()),
            ("/v3/lease/revoke", json!({"ID": 7}).to_string()),
            ("/v3/kv/lease/revoke", json!({"ID": 7}).to_string()),
            ("/v3/kv/range", json!({"key": b64("leased")}).to_string()),
            ("/v3beta/kv/range", json!({"key": foo}).to_string()),
            ("/v3alpha/kv/range", json!({"key": foo}).to_string()),
            ("/v3/nope", "{}".to_string()),
            ("/nope", "{}".to_string()),
        ];
        let mut out = Vec::new();
        for (path, body) in calls {
            let r = h.post(path, &body);
            out.push((format!("POST {path} {body}"), seen(&r)));
        }
        let r = h.get("/v3/kv/range");
        out.push(("GET /v3/kv/range".into(), seen(&r)));
        // Bad JSON: the status and code are grpc-gateway's; the text is the
        // decoder's own (Go's there, serde's here).
        for body in ["{bad", r#"{"key":5}"#, r#"{"limit":"x"}"#, "[1]"] {
            let r = h.post("/v3/kv/range", body);
            let v = r.json();
            out.push((format!("bad {body}"), (r.status, v["code"].clone())));
            assert_eq!(v["error"], v["message"], "[{:?}] {body}: {v}", c.server);
        }
        // The fields of the calls whose values differ between clusters.
        let r = h.post("/v3/cluster/member/list", "{}");
        let members = r.json()["members"].clone();
        out.push((
            "member list".into(),
            (r.status, Value::from(members.as_array().map(Vec::len))),
        ));
        assert_eq!(members[0]["name"], "n1", "[{:?}] {members}", c.server);
        assert_eq!(members[0]["peerURLs"][0], c.node(0).peer_url());
        assert_eq!(members[0]["clientURLs"][0], c.node(0).client_url());
        assert!(members[0]["ID"].is_string(), "IDs are strings: {members}");
        let r = h.post("/v3/maintenance/status", "{}");
        let status = r.json();
        for field in [
            "version",
            "dbSize",
            "leader",
            "raftIndex",
            "raftTerm",
            "raftAppliedIndex",
        ] {
            assert!(
                status[field].is_string(),
                "[{:?}] status has {field}: {status}",
                c.server
            );
        }
        assert_eq!(status["leader"], status["header"]["member_id"]);
        out.push(("status".into(), (r.status, Value::Null)));
        out
    });
}

/// A keep-alive over HTTP: one `{"result": ...}` chunk per request message,
/// and the response ends after the body does; an unknown lease has no TTL.
#[test]
fn lease_keepalive_streams_like_etcd() {
    same_on_each_server(&[], |c| {
        let mut h = conn(c);
        assert_eq!(
            h.post("/v3/lease/grant", r#"{"TTL":60,"ID":9}"#).status,
            200
        );
        h.send("POST", "/v3/lease/keepalive", br#"{"ID":9} {"ID":"10"}"#);
        let (status, headers) = h.read_head();
        assert!(headers
            .iter()
            .any(|(n, v)| n == "transfer-encoding" && v == "chunked"));
        let mut out = vec![("status".to_string(), (status, Value::Null))];
        while let Some(chunk) = h.read_chunk() {
            assert_eq!(chunk.last(), Some(&b'\n'), "a chunk ends with a newline");
            let mut v: Value = serde_json::from_slice(&chunk).unwrap();
            normalise(&mut v);
            out.push(("chunk".into(), (200, v)));
        }
        // The connection is still usable.
        assert_eq!(h.get("/health").status, 200);
        out
    });
}

/// Watch over HTTP, read chunk by chunk: created first, then each event in
/// its own chunk; a compacted start is canceled with compact_revision; a
/// watch with a bad range is answered in the stream.
#[test]
fn watch_streams_one_chunk_per_response() {
    same_on_each_server(&[], |c| {
        let mut writer = conn(c);
        for v in ["1", "2", "3"] {
            assert_eq!(
                writer
                    .post(
                        "/v3/kv/put",
                        &json!({"key": b64("w"), "value": b64(v)}).to_string()
                    )
                    .status,
                200
            );
        }
        let mut out = Vec::new();
        let read = |h: &mut Conn, what: &str, out: &mut Vec<(String, (u16, Value))>| {
            let chunk = h.read_chunk().expect("a chunk");
            assert_eq!(chunk.last(), Some(&b'\n'), "a chunk ends with a newline");
            let mut v: Value = serde_json::from_slice(&chunk).expect("one JSON message per chunk");
            normalise(&mut v);
            out.push((what.to_string(), (200, v)));
        };
        // From revision 3: created, then the history, then a live event.
        let mut h = conn(c);
        let create = json!({"create_request": {"key": b64("w"), "start_revision": 3}});
        h.send("POST", "/v3/watch", create.to_string().as_bytes());
        let (status, _) = h.read_head();
        out.push(("watch".into(), (status, Value::Null)));
        read(&mut h, "created", &mut out);
        read(&mut h, "history", &mut out);
        writer.post(
            "/v3/kv/put",
            &json!({"key": b64("w"), "value": b64("4"), "prev_kv": true}).to_string(),
        );
        read(&mut h, "live", &mut out);
        writer.post("/v3/kv/deleterange", &json!({"key": b64("w")}).to_string());
        read(&mut h, "delete", &mut out);
        drop(h);
        // A compacted start revision.
        writer.post("/v3/kv/compaction", r#"{"revision":4}"#);
        let mut h = conn(c);
        let create = json!({"create_request": {"key": b64("w"), "start_revision": 2}});
        h.send("POST", "/v3/watch", create.to_string().as_bytes());
        h.read_head();
        read(&mut h, "compacted created", &mut out);
        read(&mut h, "compacted canceled", &mut out);
        // etcd 3.4 leaves the revision out of a canceled response's header;
        // cairn's watch service (the same over gRPC) puts it in. Not an HTTP
        // matter: compared without it.
        if let Some(header) = out
            .last_mut()
            .and_then(|o| o.1 .1["result"]["header"].as_object_mut())
        {
            header.remove("revision");
        }
        out
    });
}

/// A watch request body sent in chunks is read as it arrives: a second
/// watcher and a cancel sent after the first responses take effect while
/// the request is still open.
#[test]
fn watch_requests_are_read_as_they_arrive() {
    same_on_each_server(&[], |c| {
        let mut h = conn(c);
        // etcd's server streams a chunked request body to its gateway only
        // once it has answered `Expect: 100-continue` (curl sends it).
        h.send_raw(b"POST /v3/watch HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n");
        let chunk = |h: &mut Conn, msg: Value| {
            let body = msg.to_string();
            h.send_raw(format!("{:x}\r\n{body}\r\n", body.len()).as_bytes());
        };
        let mut out = Vec::new();
        let next = |h: &mut Conn, what: &str, out: &mut Vec<(String, (u16, Value))>| {
            let mut v: Value = serde_json::from_slice(&h.read_chunk().expect("a chunk")).unwrap();
            normalise(&mut v);
            out.push((what.to_string(), (200, v)));
        };
        chunk(
            &mut h,
            json!({"create_request": {"key": b64("a"), "watch_id": 5}}),
        );
        let (status, _) = h.read_head();
        out.push(("status".into(), (status, Value::Null)));
        next(&mut h, "created 5", &mut out);
        chunk(
            &mut h,
            json!({"create_request": {"key": b64("b"), "watch_id": 6}}),
        );
        next(&mut h, "created 6", &mut out);
        chunk(&mut h, json!({"cancel_request": {"watch_id": 5}}));
        next(&mut h, "canceled 5", &mut out);
        let mut w = conn(c);
        w.post(
            "/v3/kv/put",
            &json!({"key": b64("a"), "value": b64("1")}).to_string(),
        );
        w.post(
            "/v3/kv/put",
            &json!({"key": b64("b"), "value": b64("2")}).to_string(),
        );
        next(&mut h, "event on b only", &mut out);
        out
    });
}

/// An HTTP client and a gRPC client on the same port see each other's
/// writes; gRPC connections made after HTTP ones still work.
#[tokio::test(flavor = "multi_thread")]
async fn grpc_and_http_share_the_client_port() {
    for server in Server::reference_and_cairn() {
        let c = Cluster::start(server, 1, &[]);
        let mut h = conn(&c);
        assert_eq!(
            h.post(
                "/v3/kv/put",
                &json!({"key": b64("shared"), "value": b64("http")}).to_string()
            )
            .status,
            200
        );
        let mut client = connect(&c).await;
        let got = client.get("shared", None).await.expect("gRPC get");
        assert_eq!(got.kvs()[0].value(), b"http", "[{server:?}]");
        client.put("shared", "grpc", None).await.expect("gRPC put");
        let r = h.post("/v3/kv/range", &json!({"key": b64("shared")}).to_string());
        assert_eq!(r.json()["kvs"][0]["value"], b64("grpc"), "[{server:?}]");
        drop(h);
        let mut again = connect(&c).await;
        again.get("shared", None).await.expect("gRPC after HTTP");
    }
}

/// `/version` and `/health` (plain and serializable) on the client port;
/// on the metrics port `/health` answers and the KV API does not.
#[test]
fn version_health_and_the_metrics_port() {
    let metrics_port = Mutex::new(0u16);
    let runs = Mutex::new(Vec::new());
    for server in Server::reference_and_cairn() {
        let port = free_port();
        *metrics_port.lock().unwrap() = port;
        let flag = format!("--listen-metrics-urls=http://127.0.0.1:{port}");
        let c = Cluster::start(server, 1, &[&flag]);
        let mut h = conn(&c);
        let v = h.get("/version");
        assert_eq!(v.status, 200);
        assert_eq!(v.header("content-type"), Some("application/json"));
        let body = v.json();
        let server_version = body["etcdserver"].as_str().unwrap().to_string();
        let minor: Vec<&str> = server_version.split('.').take(2).collect();
        assert_eq!(
            body["etcdcluster"],
            format!("{}.0", minor.join(".")),
            "[{server:?}] {body}"
        );
        assert_eq!(body.as_object().unwrap().len(), 2, "[{server:?}] {body}");
        let mut out = Vec::new();
        for path in [
            "/health",
            "/health?serializable=true",
            "/health?exclude=NOSPACE",
        ] {
            let r = h.get(path);
            out.push((path.to_string(), (r.status, Value::from(r.text()))));
        }
        let r = h.post("/health", "");
        out.push(("POST /health".into(), (r.status, Value::Null)));
        let mut m = Conn::open(&format!("127.0.0.1:{port}"), WAIT);
        for path in ["/health", "/v3/kv/range", "/version"] {
            let r = m.request(if path == "/health" { "GET" } else { "POST" }, path, b"{}");
            out.push((format!("metrics {path}"), (r.status, Value::from(r.text()))));
        }
        runs.lock().unwrap().push((server, out));
    }
    let runs = runs.into_inner().unwrap();
    if let [(_, etcd), (_, cairn)] = &runs[..] {
        assert_eq!(etcd, cairn, "etcd (left), cairn (right)");
    }
}

/// `/livez` and `/readyz` as etcd 3.5.11 answers them (3.4 has neither), on
/// the client port and the metrics port.
#[test]
fn livez_and_readyz_are_etcd_35s() {
    let port = free_port();
    let flag = format!("--listen-metrics-urls=http://127.0.0.1:{port}");
    let c = Cluster::start(Server::Cairn, 1, &[&flag]);
    for addr in [c.endpoint(0), format!("127.0.0.1:{port}")] {
        let mut h = Conn::open(&addr, WAIT);
        let expect = |h: &mut Conn, path: &str, status: u16, body: &str| {
            let r = h.get(path);
            assert_eq!(
                (r.status, r.text().as_str()),
                (status, body),
                "{addr}{path}"
            );
        };
        expect(&mut h, "/livez", 200, "ok\n");
        expect(
            &mut h,
            "/livez?verbose",
            200,
            "[+]serializable_read ok\nok\n",
        );
        expect(&mut h, "/readyz", 200, "ok\n");
        expect(
            &mut h,
            "/readyz?verbose",
            200,
            "[+]data_corruption ok\n[+]serializable_read ok\n[+]linearizable_read ok\nok\n",
        );
        expect(
            &mut h,
            "/readyz?verbose&exclude=linearizable_read",
            200,
            "[+]data_corruption ok\n[+]serializable_read ok\nok\n",
        );
        expect(&mut h, "/readyz/linearizable_read", 200, "ok\n");
        expect(&mut h, "/readyz/nope", 404, "404 page not found\n");
        let r = h.post("/livez", "");
        assert_eq!(r.status, 405);
        assert_eq!(r.header("allow"), Some("GET"));
    }
}

/// With one member of two down there is no leader: `/health` is 503 and
/// false on both servers (cairn adds etcd 3.5's reason); serializable
/// `/health` and `/livez` stay 200, `/readyz` fails its linearizable read.
#[test]
fn health_is_false_without_a_leader() {
    for server in Server::reference_and_cairn() {
        let mut c = Cluster::start(server, 2, &[]);
        c.kill(1);
        let mut h = conn(&c);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        // A request in flight when the leader goes may fail its read
        // first ("RANGE ERROR:..."); once the member knows it has no leader,
        // the reason is that.
        let settled = "{\"health\":\"false\",\"reason\":\"RAFT NO LEADER\"}\n";
        let r = loop {
            let r = h.get("/health");
            let done = match server {
                Server::Cairn => r.text() == settled,
                Server::Etcd => r.status != 200,
            };
            if done || std::time::Instant::now() > deadline {
                break r;
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        assert_eq!(r.status, 503, "[{server:?}] {}", r.text());
        assert_eq!(r.json()["health"], "false", "[{server:?}]");
        if server == Server::Cairn {
            assert_eq!(r.text(), settled);
            assert_eq!(h.get("/livez").status, 200);
            let ready = h.get("/readyz");
            assert_eq!(ready.status, 503);
            assert!(
                ready.text().starts_with(
                    "[+]data_corruption ok\n[+]serializable_read ok\n[-]linearizable_read failed: "
                ),
                "{}",
                ready.text()
            );
        }
    }
}

/// A watch asking for a leader (`Grpc-Metadata-hasleader: true`, forwarded
/// as gRPC metadata) on a member without one: the stream's error, as
/// grpc-gateway writes it when it comes before any message.
#[test]
fn a_stream_error_is_grpc_gateways() {
    let runs = Mutex::new(Vec::new());
    for server in Server::reference_and_cairn() {
        let mut c = Cluster::start(server, 2, &[]);
        c.kill(1);
        let mut h = conn(&c);
        // Until the member itself says it has no leader.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let range = json!({"key": b64("w")}).to_string();
        loop {
            h.send_with(
                "POST",
                "/v3/kv/range",
                &["Grpc-Metadata-hasleader: true"],
                range.as_bytes(),
            );
            if h.read_reply().status == 503 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "[{server:?}] still a leader"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let create = json!({"create_request": {"key": b64("w")}}).to_string();
        h.send_with(
            "POST",
            "/v3/watch",
            &["Grpc-Metadata-hasleader: true"],
            create.as_bytes(),
        );
        let (status, _) = h.read_head();
        let chunk = h.read_chunk().expect("the error chunk");
        // The error chunk, unlike a result, has no newline after it.
        let text = String::from_utf8(chunk).unwrap();
        assert!(
            h.read_chunk().is_none(),
            "[{server:?}] the error ends the stream"
        );
        runs.lock().unwrap().push((server, (status, text)));
    }
    let runs = runs.into_inner().unwrap();
    if let [(_, etcd), (_, cairn)] = &runs[..] {
        assert_eq!(etcd, cairn, "etcd (left), cairn (right)");
    }
}

/// `--enable-grpc-gateway=false` takes `/v3/` away and leaves the probes.
#[test]
fn the_gateway_can_be_turned_off() {
    on_each_server_with(&["--enable-grpc-gateway=false"], |c| {
        let mut h = conn(c);
        let r = h.post("/v3/kv/range", &json!({"key": b64("foo")}).to_string());
        assert_eq!(
            (r.status, r.text().as_str()),
            (404, "404 page not found\n"),
            "[{:?}]",
            c.server
        );
        assert_eq!(h.get("/health").status, 200, "[{:?}]", c.server);
    });
}

/// Both servers answer HTTP/1.1 on a connection that does not start with
/// the HTTP/2 preface, even one whose first byte is the preface's (`POST`
/// and `PRI` share the `P`), and answer pipelined requests in order.
#[test]
fn http1_is_told_from_http2_per_connection() {
    on_each_server(|c| {
        let mut h = conn(c);
        // Sent a byte at a time, so the server sees `P` alone first.
        let post = b"POST /v3/kv/range HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}";
        for b in post {
            h.send_raw(&[*b]);
        }
        assert_eq!(
            h.read_reply().status,
            400,
            "[{:?}] key is not provided",
            c.server
        );
        h.send_raw(
            b"GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /health HTTP/1.1\r\nHost: x\r\n\r\n",
        );
        // Two pipelined requests, two answers.
        assert_eq!(h.read_reply().status, 200, "[{:?}]", c.server);
        assert_eq!(h.read_reply().status, 200, "[{:?}]", c.server);
    });
}
