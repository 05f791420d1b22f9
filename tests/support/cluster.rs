//! A harness that runs real server processes on loopback for the compatibility
//! tests (`tests/etcdctl.rs`, `tests/etcd_client.rs`, `tests/cluster.rs`,
//! `tests/bad_input.rs`).
//!
//! # What it does
//!
//! [`Cluster::start`] starts `n` processes of a [`Server`]: cairn (the binary
//! this package builds) or, as a reference, a real etcd 3.4 from
//! `/usr/bin/etcd` (Debian's `etcd-server`). Both take the same flags, so one
//! harness drives both and a test can run the same script against each: a test
//! whose expectation etcd itself does not meet is a wrong test, not a cairn bug.
//!
//! Each node gets:
//! - two free loopback ports (client and peer), found by binding port 0;
//! - its own temporary directory holding the data dir (`data/`) and the log
//!   (`node.log`, the process's stderr and stdout, appended across restarts);
//! - the flags etcd documents: `--name`, `--data-dir`, the four URL flags,
//!   `--initial-cluster`, `--initial-cluster-state`, `--initial-cluster-token`,
//!   plus any extra flags the test passes.
//!
//! [`Cluster::kill`] sends SIGKILL (a crash: nothing is flushed), and
//! [`Cluster::restart`] starts the node again with the same data dir and flags
//! and `--initial-cluster-state existing`. Dropping the cluster kills every
//! process; if the test is panicking, each node's log tail is printed first so
//! the failure shows what the servers said.
//!
//! # Bounds
//!
//! Every wait has a deadline: a node that does not answer within
//! [`START_TIMEOUT`] fails the test with its log; an etcdctl run that takes
//! longer than [`CTL_TIMEOUT`] is killed and fails the test.
//!
//! A node is ready when a linearizable `etcdctl get` through it succeeds: that
//! needs the node to serve gRPC, a leader to exist, and the node to have
//! applied up to the leader's commit index.
#![allow(dead_code)]
// This module runs processes, reads a clock for its deadlines, spawns reader
// threads for child pipes and writes log files: everything the crate's
// clippy.toml keeps out of the sans-IO core.
#![allow(clippy::disallowed_methods)]

use super::certs::Issued;
use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long a node may take from spawn to answering a linearizable read.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one etcdctl invocation may take before the test fails.
pub const CTL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a node may take to exit after SIGTERM or SIGKILL.
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(10);
/// Lines of each node's log printed when a test fails.
const LOG_TAIL_LINES: usize = 200;

/// Which server a [`Cluster`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Server {
    /// The `cairn` binary built by this package.
    Cairn,
    /// A real etcd (3.4 from Debian's `etcd-server`), as the reference.
    Etcd,
}

impl Server {
    /// The path of the server's binary.
    pub fn binary(self) -> PathBuf {
        match self {
            Server::Cairn => PathBuf::from(env!("CARGO_BIN_EXE_cairn")),
            Server::Etcd => find_in_path("etcd").unwrap_or_else(|| PathBuf::from("/usr/bin/etcd")),
        }
    }

    /// The servers a differential test runs against: etcd first when it is
    /// installed (its answers check the test's expectations), then cairn.
    ///
    /// In CI (`CI` set) etcd must be installed: `.ci/run` installs it, and a
    /// reference that silently went missing would let wrong expectations pass.
    ///
    /// `CAIRN_COMPAT_ONLY=etcd` (or `=cairn`) runs one of the two, for working
    /// on the tests themselves.
    pub fn reference_and_cairn() -> Vec<Server> {
        match std::env::var("CAIRN_COMPAT_ONLY").as_deref() {
            Ok("etcd") => return vec![Server::Etcd],
            Ok("cairn") => return vec![Server::Cairn],
            _ => {}
        }
        let mut servers = Vec::new();
        if etcd_available() {
            servers.push(Server::Etcd);
        } else if std::env::var_os("CI").is_some() {
            panic!("CI is set but no etcd binary is installed (apt-get install etcd-server)");
        } else {
            eprintln!(
                "note: no etcd installed; checking cairn against the written expectations only"
            );
        }
        servers.push(Server::Cairn);
        servers
    }
}

/// Whether an `etcd` binary is on PATH.
pub fn etcd_available() -> bool {
    find_in_path("etcd").is_some()
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Ports handed out by this process, so two nodes in parallel tests never get
/// the same one between its probe and its bind.
static USED_PORTS: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A loopback port that was free a moment ago and that this process has not
/// handed out before.
pub fn free_port() -> u16 {
    for _ in 0..1000 {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local_addr").port();
        let mut used = USED_PORTS.lock().unwrap_or_else(|e| e.into_inner());
        if used.get_or_insert_with(HashSet::new).insert(port) {
            return port;
        }
    }
    panic!("no free loopback port after 1000 tries");
}

/// What one etcdctl run returned.
#[derive(Debug, Clone)]
pub struct CtlOut {
    /// The exit code (`None` if killed by a signal).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl CtlOut {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// stdout, after asserting the command exited 0.
    #[track_caller]
    pub fn ok(&self) -> &str {
        assert!(self.success(), "etcdctl failed: {self:#?}");
        &self.stdout
    }

    /// The `Error: ...` line etcdctl prints on failure, after asserting the
    /// command failed.
    #[track_caller]
    pub fn error_line(&self) -> &str {
        assert!(!self.success(), "etcdctl unexpectedly succeeded: {self:#?}");
        self.stderr
            .lines()
            .rev()
            .find(|l| l.starts_with("Error:"))
            .unwrap_or_else(|| panic!("no 'Error:' line in etcdctl's stderr: {self:#?}"))
    }
}

/// Runs `ETCDCTL_API=3 etcdctl --endpoints=<endpoint> <args...>`.
pub fn etcdctl(endpoint: &str, args: &[&str]) -> CtlOut {
    etcdctl_stdin(endpoint, args, None)
}

/// Runs etcdctl with `stdin` written to its standard input (for `txn -i`).
pub fn etcdctl_stdin(endpoint: &str, args: &[&str], stdin: Option<&str>) -> CtlOut {
    let mut cmd = Command::new("etcdctl");
    cmd.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .args(args);
    run_with_timeout(cmd, stdin, CTL_TIMEOUT)
}

/// Runs a command with piped stdio, failing the test if it outlives `timeout`.
pub fn run_with_timeout(mut cmd: Command, stdin: Option<&str>, timeout: Duration) -> CtlOut {
    // Keep the caller's etcdctl settings (ETCDCTL_ENDPOINTS and so on) out.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("ETCDCTL_") && key != "ETCDCTL_API" {
            cmd.env_remove(&key);
        }
    }
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let description = format!("{cmd:?}");
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {description}: {e} (is etcd-client installed?)"));
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("piped stdin");
        pipe.write_all(input.as_bytes())
            .expect("write etcdctl stdin");
        // Dropping the pipe closes it: etcdctl reads to EOF.
    }
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(Ok(out)) => CtlOut {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        },
        Ok(Err(e)) => panic!("waiting for {description}: {e}"),
        Err(_) => {
            signal(pid, libc::SIGKILL);
            panic!("{description} did not finish within {timeout:?}");
        }
    }
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) has no memory-safety preconditions; the pid is one of
    // our own children that has not been reaped yet.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// One server process and everything needed to start it again.
pub struct Node {
    /// `--name`: n1, n2, ...
    pub name: String,
    /// The client port on 127.0.0.1.
    pub client_port: u16,
    /// The peer port on 127.0.0.1.
    pub peer_port: u16,
    /// Holds `data/` and `node.log`; removed on drop.
    dir: TempDir,
    /// Every flag but `--initial-cluster-state`.
    args: Vec<String>,
    server: Server,
    /// The running process, if any.
    child: Option<Child>,
    /// How many times this node has been spawned.
    starts: u32,
    /// Pass the configuration as `CAIRN_<FLAG>` environment variables
    /// instead of flags (cairn only).
    via_env: bool,
    /// Environment variables set for the process (after the caller's
    /// `CAIRN_*` and `ETCD_*` are removed).
    env: Vec<(String, String)>,
    /// Serves clients over TLS: etcdctl dials `https://` with `ctl_tls`.
    https: bool,
    /// etcdctl's TLS flags for this node (`--cacert`, `--cert`, `--key`).
    pub ctl_tls: Vec<String>,
}

impl Node {
    /// `127.0.0.1:<client port>` (`https://` first over TLS), as etcdctl's
    /// `--endpoints` takes it.
    pub fn endpoint(&self) -> String {
        match self.https {
            true => format!("https://127.0.0.1:{}", self.client_port),
            false => format!("127.0.0.1:{}", self.client_port),
        }
    }

    /// `http://127.0.0.1:<client port>` (or `https://`), as etcd-client takes it.
    pub fn client_url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    /// Runs etcdctl against this node, with its TLS flags.
    pub fn ctl(&self, args: &[&str]) -> CtlOut {
        let mut all: Vec<&str> = self.ctl_tls.iter().map(String::as_str).collect();
        all.extend(args);
        etcdctl(&self.endpoint(), &all)
    }

    pub fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("node.log")
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The value of `--<flag>=...` this node is started with.
    pub fn flag(&self, flag: &str) -> Option<String> {
        let prefix = format!("--{flag}=");
        (self.args.iter()).find_map(|a| a.strip_prefix(&prefix).map(str::to_string))
    }

    fn spawn(&mut self, state: &str) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        self.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open node log");
        writeln!(
            log,
            "===== harness: start #{} of {} ({:?}, --initial-cluster-state {state}) =====",
            self.starts, self.name, self.server
        )
        .expect("write node log");
        let mut cmd = Command::new(self.server.binary());
        if self.server == Server::Cairn {
            cmd.arg("serve");
        }
        // Flags only (or, with `via_env`, our variables only): nothing
        // inherited from the caller's environment.
        for (key, _) in std::env::vars_os() {
            let key_str = key.to_string_lossy();
            if key_str.starts_with("CAIRN_") || key_str.starts_with("ETCD_") {
                cmd.env_remove(&key);
            }
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        let mut args = self.args.clone();
        args.push(format!("--initial-cluster-state={state}"));
        if self.via_env {
            for arg in &args {
                let (flag, value) = arg
                    .strip_prefix("--")
                    .and_then(|a| a.split_once('='))
                    .unwrap_or_else(|| panic!("flag {arg:?} is not --name=value"));
                cmd.env(flag_env_var(flag), value);
            }
        } else {
            cmd.args(&args);
        }
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {:?}: {e}", self.server.binary()));
        self.child = Some(child);
    }

    /// Sends `sig` and waits (bounded) for the process to exit.
    fn stop(&mut self, sig: libc::c_int) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        signal(child.id(), sig);
        // A paused node must run to act on anything but SIGKILL.
        signal(child.id(), libc::SIGCONT);
        let deadline = Instant::now() + EXIT_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                signal(child.id(), libc::SIGKILL);
                let _ = child.wait();
                panic!(
                    "{} did not exit within {EXIT_TIMEOUT:?} of signal {sig}\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The exit status if the process has exited on its own.
    fn exited(&mut self) -> Option<ExitStatus> {
        self.child.as_mut()?.try_wait().expect("try_wait")
    }

    /// The last lines of this node's log, headed by its name.
    pub fn log_tail(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = File::open(self.log_path()) {
            let _ = f.read_to_string(&mut text);
        }
        let lines: Vec<&str> = text.lines().collect();
        let start = lines.len().saturating_sub(LOG_TAIL_LINES);
        format!(
            "----- log of {} ({}), last {} lines -----\n{}\n----- end of log of {} -----",
            self.name,
            self.log_path().display(),
            lines.len() - start,
            lines[start..].join("\n"),
            self.name
        )
    }
}

/// A set of server processes forming one cluster, killed on drop.
pub struct Cluster {
    pub server: Server,
    pub nodes: Vec<Node>,
}

impl Cluster {
    /// One cairn node with default settings, ready to serve.
    pub fn single() -> Cluster {
        Cluster::start(Server::Cairn, 1, &[])
    }

    /// Starts `n` nodes of `server` as one new cluster with `extra` flags on
    /// every node, and waits until each answers a linearizable read.
    pub fn start(server: Server, n: usize, extra: &[&str]) -> Cluster {
        Cluster::start_with(server, n, extra, false, &[], None)
    }

    /// Like [`Cluster::start`] for cairn, with every setting given as a
    /// `CAIRN_<FLAG>` environment variable instead of a flag.
    pub fn start_via_env(n: usize, extra: &[&str]) -> Cluster {
        Cluster::start_with(Server::Cairn, n, extra, true, &[], None)
    }

    /// One node of `server` with these environment variables set.
    pub fn start_with_env(server: Server, env: &[(&str, &str)]) -> Cluster {
        Cluster::start_with(server, 1, &[], false, env, None)
    }

    /// Starts `n` nodes of `server` serving clients (and, with
    /// `tls.peer`, each other) over TLS.
    pub fn start_tls(server: Server, n: usize, tls: &ClusterTls, extra: &[&str]) -> Cluster {
        Cluster::start_tls_with(server, n, tls, true, extra)
    }

    /// [`Cluster::start_tls`], passing `tls`'s certificate flags to the
    /// servers only if `files` (without, the `extra` flags say where the
    /// certificates come from, e.g. `--auto-tls`); etcdctl then skips
    /// verification.
    pub fn start_tls_with(
        server: Server,
        n: usize,
        tls: &ClusterTls,
        files: bool,
        extra: &[&str],
    ) -> Cluster {
        let mut tls = tls.clone();
        tls.files = files;
        Cluster::start_with(server, n, extra, false, &[], Some(&tls))
    }

    fn start_with(
        server: Server,
        n: usize,
        extra: &[&str],
        via_env: bool,
        env: &[(&str, &str)],
        tls: Option<&ClusterTls>,
    ) -> Cluster {
        assert!(n >= 1);
        assert!(
            !via_env || server == Server::Cairn,
            "only cairn reads CAIRN_ variables"
        );
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let client_scheme = if tls.is_some() { "https" } else { "http" };
        let peer_scheme = if tls.is_some_and(|t| t.peer) {
            "https"
        } else {
            "http"
        };
        let initial_cluster = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("n{}={peer_scheme}://127.0.0.1:{peer}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let token = format!("cairn-test-{}-{}", std::process::id(), ports[0].0);
        let mut nodes = Vec::new();
        for (i, &(client_port, peer_port)) in ports.iter().enumerate() {
            let name = format!("n{}", i + 1);
            let dir = tempfile::Builder::new()
                .prefix(&format!("cairn-{name}-"))
                .tempdir()
                .expect("tempdir");
            let client = format!("{client_scheme}://127.0.0.1:{client_port}");
            let peer = format!("{peer_scheme}://127.0.0.1:{peer_port}");
            let mut args = vec![
                format!("--name={name}"),
                format!("--data-dir={}", dir.path().join("data").display()),
                format!("--listen-client-urls={client}"),
                format!("--advertise-client-urls={client}"),
                format!("--listen-peer-urls={peer}"),
                format!("--initial-advertise-peer-urls={peer}"),
                format!("--initial-cluster={initial_cluster}"),
                format!("--initial-cluster-token={token}"),
            ];
            if let Some(tls) = tls.filter(|t| t.files) {
                args.extend(tls.server_flags());
            }
            args.extend(extra.iter().map(|s| s.to_string()));
            nodes.push(Node {
                name,
                client_port,
                peer_port,
                dir,
                args,
                server,
                child: None,
                starts: 0,
                via_env,
                env: env
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                https: tls.is_some(),
                ctl_tls: tls.map(ClusterTls::etcdctl_flags).unwrap_or_default(),
            });
        }
        let mut cluster = Cluster { server, nodes };
        // Start every node before waiting on any: a multi-node cluster has no
        // leader until a quorum runs.
        for node in &mut cluster.nodes {
            node.spawn("new");
        }
        for i in 0..n {
            cluster.wait_ready(i, START_TIMEOUT);
        }
        cluster
    }

    pub fn node(&self, i: usize) -> &Node {
        &self.nodes[i]
    }

    /// etcdctl's `--endpoints` form of node `i`.
    pub fn endpoint(&self, i: usize) -> String {
        self.nodes[i].endpoint()
    }

    /// Client URLs (`http://...`) of every node.
    pub fn client_urls(&self) -> Vec<String> {
        self.nodes.iter().map(Node::client_url).collect()
    }

    /// Runs etcdctl against node `i`.
    pub fn ctl(&self, i: usize, args: &[&str]) -> CtlOut {
        self.nodes[i].ctl(args)
    }

    /// Runs etcdctl against node `i` with `stdin`.
    pub fn ctl_stdin(&self, i: usize, args: &[&str], stdin: &str) -> CtlOut {
        etcdctl_stdin(&self.endpoint(i), args, Some(stdin))
    }

    /// Waits until node `i` answers a linearizable read, failing the test
    /// (with the node's log) if it exits or `timeout` passes first.
    pub fn wait_ready(&mut self, i: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.nodes[i].exited() {
                self.nodes[i].child = None;
                panic!(
                    "{} exited with {status} while starting\n{}",
                    self.nodes[i].name,
                    self.nodes[i].log_tail()
                );
            }
            let out = self.nodes[i].ctl(&[
                "--dial-timeout=1s",
                "--command-timeout=2s",
                "get",
                "harness-readiness-probe",
            ]);
            if out.success() {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "{} did not answer a linearizable read within {timeout:?}; last etcdctl: {out:#?}\n{}",
                    self.nodes[i].name,
                    self.nodes[i].log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGKILLs node `i` (a crash) and reaps it.
    pub fn kill(&mut self, i: usize) {
        let status = self.nodes[i].stop(libc::SIGKILL);
        assert!(status.is_some(), "{} was not running", self.nodes[i].name);
    }

    /// Freezes node `i` (SIGSTOP): its sockets stay open but it answers
    /// nothing, like a node stuck in a long pause.
    pub fn pause(&mut self, i: usize) {
        let child = self.nodes[i].child.as_ref().expect("node is running");
        signal(child.id(), libc::SIGSTOP);
    }

    /// Lets a paused node `i` run again (SIGCONT).
    pub fn resume(&mut self, i: usize) {
        let child = self.nodes[i].child.as_ref().expect("node is running");
        signal(child.id(), libc::SIGCONT);
    }

    /// SIGTERMs node `i` and returns its exit status.
    pub fn terminate(&mut self, i: usize) -> ExitStatus {
        self.nodes[i]
            .stop(libc::SIGTERM)
            .unwrap_or_else(|| panic!("{} was not running", self.nodes[i].name))
    }

    /// Starts a stopped node `i` again with the same data dir and flags and
    /// `--initial-cluster-state existing`, without waiting for it.
    pub fn spawn_again(&mut self, i: usize) {
        self.nodes[i].spawn("existing");
    }

    /// Starts a stopped node `i` again and waits until it is ready.
    pub fn restart(&mut self, i: usize) {
        self.spawn_again(i);
        self.wait_ready(i, START_TIMEOUT);
    }

    /// Every node's log tail, for a failure message.
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(Node::log_tail)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The data dir of node `i`.
    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.nodes[i].data_dir()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if std::thread::panicking() {
            eprintln!("\n===== {:?} cluster logs (test failed) =====", self.server);
            eprintln!("{}", self.logs());
            return;
        }
        // A panic inside cairn is a bug even when the cluster coped with it.
        if self.server == Server::Cairn {
            for node in &self.nodes {
                let log = std::fs::read_to_string(node.log_path()).unwrap_or_default();
                if log.contains("panicked at") {
                    panic!(
                        "{} panicked during the test\n{}",
                        node.name,
                        node.log_tail()
                    );
                }
            }
        }
    }
}

/// TLS for a test cluster: client URLs are `https://` with `server`'s
/// certificate; with `client_cert_auth` etcdctl must present `client`'s;
/// with `peer`, peer URLs are `https://` too, with mutual TLS and the same
/// certificate as the client port.
#[derive(Clone, Debug)]
pub struct ClusterTls {
    pub ca_file: PathBuf,
    pub server: Issued,
    pub client: Issued,
    pub client_cert_auth: bool,
    pub peer: bool,
    /// Pass the certificate files to the servers (see `start_tls_with`).
    pub files: bool,
}

impl ClusterTls {
    /// The server's TLS flags.
    pub fn server_flags(&self) -> Vec<String> {
        let mut flags = vec![
            format!("--cert-file={}", self.server.cert_file.display()),
            format!("--key-file={}", self.server.key_file.display()),
        ];
        if self.client_cert_auth {
            flags.push(format!("--trusted-ca-file={}", self.ca_file.display()));
            flags.push("--client-cert-auth=true".into());
        }
        if self.peer {
            flags.extend([
                format!("--peer-cert-file={}", self.server.cert_file.display()),
                format!("--peer-key-file={}", self.server.key_file.display()),
                format!("--peer-trusted-ca-file={}", self.ca_file.display()),
                "--peer-client-cert-auth=true".into(),
            ]);
        }
        flags
    }

    /// etcdctl's flags: trust the CA, present the client certificate.
    pub fn etcdctl_flags(&self) -> Vec<String> {
        match self.files {
            true => self.client.etcdctl_flags(&self.ca_file),
            false => vec![
                "--insecure-transport=false".into(),
                "--insecure-skip-tls-verify".into(),
            ],
        }
    }
}

/// The environment variable for a flag: `data-dir` -> `CAIRN_DATA_DIR`.
pub fn flag_env_var(flag: &str) -> String {
    format!("CAIRN_{}", flag.to_uppercase().replace('-', "_"))
}

/// Lists files under `dir` recursively (for checks on a data dir's layout).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}
