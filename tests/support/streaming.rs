//! Long-running etcdctl processes for the watch and lease tests
//! (`tests/watch.rs`, `tests/lease.rs`): `etcdctl watch` and
//! `etcdctl lease keep-alive` print as events arrive and never exit on their
//! own, so a test spawns one, feeds its stdin, waits (bounded) for what it
//! prints, and kills it.
//!
//! Every wait has a deadline; on timeout the test fails with everything the
//! process printed so far. Dropping a [`Streaming`] kills the process.
#![allow(dead_code)]
// Processes, reader threads and a clock for the deadlines.
#![allow(clippy::disallowed_methods)]

use std::io::{Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::cluster::CtlOut;

/// A spawned `ETCDCTL_API=3 etcdctl` whose output is collected as it comes.
pub struct Streaming {
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
    description: String,
}

fn collect(
    mut pipe: impl Read + Send + 'static,
    into: Arc<Mutex<Vec<u8>>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => into
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend_from_slice(&buf[..n]),
            }
        }
    })
}

impl Streaming {
    /// Spawns `etcdctl --endpoints=<endpoint> <args...>` with piped stdio.
    pub fn etcdctl(endpoint: &str, args: &[&str]) -> Streaming {
        let mut cmd = Command::new("etcdctl");
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("ETCDCTL_") {
                cmd.env_remove(&key);
            }
        }
        cmd.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={endpoint}"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let description = format!("{cmd:?}");
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {description}: {e} (is etcd-client installed?)"));
        let stdin = child.stdin.take();
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let readers = vec![
            collect(child.stdout.take().expect("piped stdout"), stdout.clone()),
            collect(child.stderr.take().expect("piped stderr"), stderr.clone()),
        ];
        Streaming {
            child: Some(child),
            stdin,
            stdout,
            stderr,
            readers,
            description,
        }
    }

    /// Writes `line` and a newline to the process's stdin.
    #[track_caller]
    pub fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .and_then(|()| stdin.flush())
            .unwrap_or_else(|e| panic!("write {line:?} to {}: {e}", self.description));
    }

    /// Everything printed on stdout so far.
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }

    /// Everything printed on stderr so far.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }

    /// Waits until `done(stdout)` holds, failing the test with what was
    /// printed if `timeout` passes or the process exits first.
    #[track_caller]
    pub fn wait_stdout(
        &mut self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let out = self.stdout();
            if done(&out) {
                return out;
            }
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() >= deadline {
                // Let the readers drain what an exited process left behind.
                std::thread::sleep(Duration::from_millis(100));
                let out = self.stdout();
                if done(&out) {
                    return out;
                }
                panic!(
                    "{}: waited {timeout:?} for {what}; exit status {exited:?}\n--- stdout ---\n{out}\n--- stderr ---\n{}",
                    self.description,
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until stdout contains `needle`; returns stdout.
    #[track_caller]
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> String {
        self.wait_stdout(&format!("{needle:?} on stdout"), timeout, |out| {
            out.contains(needle)
        })
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => c.try_wait().expect("try_wait").is_none(),
            None => false,
        }
    }

    /// Closes stdin and waits (bounded) for the process to exit by itself.
    #[track_caller]
    pub fn finish(mut self, timeout: Duration) -> CtlOut {
        self.stdin = None;
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{} did not exit within {timeout:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                    self.description,
                    self.stdout(),
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        self.join_readers();
        CtlOut {
            code: status.code(),
            stdout: self.stdout(),
            stderr: self.stderr(),
        }
    }

    /// Kills the process (SIGKILL) and returns everything it printed.
    pub fn kill(mut self) -> CtlOut {
        let mut child = self.child.take().expect("running");
        let _ = child.kill();
        // Only now close stdin: an interactive etcdctl reports EOF on it.
        self.stdin = None;
        let status = child.wait().expect("wait");
        self.join_readers();
        CtlOut {
            code: status.code(),
            stdout: self.stdout(),
            stderr: self.stderr(),
        }
    }

    fn join_readers(&mut self) {
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
    }
}

impl Drop for Streaming {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            if std::thread::panicking() {
                eprintln!(
                    "----- {} (killed) -----\n--- stdout ---\n{}\n--- stderr ---\n{}",
                    self.description,
                    self.stdout(),
                    self.stderr()
                );
            }
        }
    }
}
