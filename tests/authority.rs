//! etcdctl's per-endpoint dials send the endpoint URL, scheme and all, as the
//! HTTP/2 `:authority`; h2 refuses it, so the server relays client
//! connections through `server::h2shim`. This test runs the real binary and
//! the real etcdctl (skipped, with a note, where etcdctl is not installed).
#![cfg(not(madsim))]
// Test driver: it runs processes and polls with a deadline.
#![allow(clippy::disallowed_methods)]

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const ETCDCTL: &str = "etcdctl";

/// A running `cairn` member, killed on drop.
struct Member {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local address").port()
}

impl Member {
    fn start() -> Member {
        let dir = tempfile::tempdir().expect("temp dir");
        let (port, peer_port) = (free_port(), free_port());
        let client = format!("http://127.0.0.1:{port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let child = Command::new(env!("CARGO_BIN_EXE_cairn"))
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start cairn");
        Member {
            child,
            port,
            _dir: dir,
        }
    }

    /// Runs etcdctl against `endpoint` with `args`.
    fn etcdctl(&self, endpoint: &str, args: &[&str]) -> Output {
        Command::new(ETCDCTL)
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={endpoint}"))
            .arg("--dial-timeout=2s")
            .arg("--command-timeout=5s")
            .args(args)
            .output()
            .expect("run etcdctl")
    }

    /// Waits until a plain `get` (which never hit the bug) succeeds.
    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let endpoint = format!("127.0.0.1:{}", self.port);
        loop {
            let out = self.etcdctl(&endpoint, &["get", "x"]);
            if out.status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "cairn did not become ready: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).expect("utf-8 output")
}

/// The number after `"revision":` in etcdctl's JSON.
fn revision(json: &str) -> i64 {
    let at = json
        .find("\"revision\":")
        .expect("a revision in the status")
        + 11;
    let digits: String = json[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().expect("a numeric revision")
}

fn etcdctl_installed() -> bool {
    let found = std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| Path::new(&dir).join(ETCDCTL).is_file())
    });
    // CI installs etcdctl (.ci/run): there, a missing etcdctl is a failure.
    assert!(
        found || std::env::var_os("CI").is_none(),
        "{ETCDCTL} is not on PATH"
    );
    if !found {
        eprintln!("skipping: {ETCDCTL} is not on PATH");
    }
    found
}

#[test]
fn etcdctl_endpoint_status_with_a_url_endpoint() {
    if !etcdctl_installed() {
        return;
    }
    let member = Member::start();
    member.wait_ready();
    let url = format!("http://127.0.0.1:{}", member.port);

    ok(&member.etcdctl(&url, &["put", "k", "v1"]), "put");
    ok(&member.etcdctl(&url, &["put", "k", "v2"]), "put");
    let got = ok(
        &member.etcdctl(&url, &["get", "k", "--print-value-only"]),
        "get",
    );
    assert_eq!(got.trim(), "v2");

    let status = ok(
        &member.etcdctl(&url, &["endpoint", "status", "-w", "json"]),
        "endpoint status",
    );
    assert!(status.contains(&url), "status names the endpoint: {status}");
    // The empty store is at revision 1; two puts make it 3.
    assert_eq!(revision(&status), 3, "status: {status}");

    let health = member.etcdctl(&url, &["endpoint", "health", "--cluster"]);
    ok(&health, "endpoint health --cluster");
    let cluster = ok(
        &member.etcdctl(&url, &["endpoint", "status", "--cluster"]),
        "endpoint status --cluster",
    );
    assert!(cluster.contains(&url), "cluster status: {cluster}");
}
