//! Faults for `cairn verify`: a 3-member cluster it starts itself on
//! loopback (`--local BINARY`, cairn or etcd: both take etcd's flags), and
//! the nemesis that kills, pauses and restarts its members or runs the
//! user's own commands (`--nemesis-cmd`) on a schedule.
//!
//! The schedule: every `--fault-interval` the nemesis either heals what is
//! broken (restarts a killed member, resumes a paused one) or, when nothing
//! is, strikes one member with one of the enabled faults; so at most one
//! member (a minority) is down at a time. The member is picked at random,
//! or with `--strike-leader` it is the one whose Status says it leads. A `--nemesis-cmd` runs in its turn
//! on the same ticks, with `CAIRN_VERIFY_ENDPOINTS` (the client endpoints,
//! comma-separated) in its environment and, with `--local`,
//! `CAIRN_VERIFY_PIDS` (the members' process IDs in order, empty for a
//! member that is down). Five seconds before the clients stop (a quarter of the
//! run if that is shorter) everything is healed, so the final reads find a
//! whole cluster. Every fault and heal is recorded with its time.

use super::{progress_line, Recorder, VerifyArgs};
use cairn::rng::SplitMix64;
use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MEMBERS: usize = 3;

/// One member of the local cluster.
struct Member {
    name: String,
    args: Vec<String>,
    client_url: String,
    log: PathBuf,
    child: Option<Child>,
    paused: bool,
}

/// A 3-member cluster of one binary on loopback, in a temporary directory.
pub(crate) struct LocalCluster {
    binary: PathBuf,
    dir: PathBuf,
    members: Vec<Member>,
}

fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind 127.0.0.1:0: {e}"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("local_addr: {e}"))
}

impl LocalCluster {
    /// Starts the members and waits until each answers through a leader.
    /// `extra` is given to every member after the cluster's flags.
    pub async fn start(binary: &Path, extra: &[String]) -> Result<LocalCluster, String> {
        let nonce = std::process::id();
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!("cairn-verify-{nonce}-{started:x}"));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut ports = Vec::new();
        for _ in 0..MEMBERS {
            ports.push((free_port()?, free_port()?));
        }
        let initial: Vec<String> = (0..MEMBERS)
            .map(|i| format!("m{i}=http://127.0.0.1:{}", ports[i].1))
            .collect();
        let mut members = Vec::new();
        for (i, (client, peer)) in ports.iter().enumerate() {
            let client_url = format!("http://127.0.0.1:{client}");
            let peer_url = format!("http://127.0.0.1:{peer}");
            let data = dir.join(format!("m{i}.data"));
            let mut args = vec![
                format!("--name=m{i}"),
                format!("--data-dir={}", data.display()),
                format!("--listen-client-urls={client_url}"),
                format!("--advertise-client-urls={client_url}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster={}", initial.join(",")),
                format!("--initial-cluster-token=cairn-verify-{nonce}"),
            ];
            args.extend(extra.iter().cloned());
            members.push(Member {
                name: format!("m{i}"),
                args,
                client_url,
                log: dir.join(format!("m{i}.log")),
                child: None,
                paused: false,
            });
        }
        let mut cluster = LocalCluster {
            binary: binary.to_owned(),
            dir,
            members,
        };
        for i in 0..MEMBERS {
            cluster.spawn(i, "new")?;
        }
        cluster.wait_ready(Duration::from_secs(30)).await?;
        Ok(cluster)
    }

    fn spawn(&mut self, i: usize, state: &str) -> Result<(), String> {
        let m = &mut self.members[i];
        let log = File::options()
            .create(true)
            .append(true)
            .open(&m.log)
            .map_err(|e| format!("{}: {e}", m.log.display()))?;
        let err = log.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new(&self.binary)
            .args(&m.args)
            .arg(format!("--initial-cluster-state={state}"))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("{}: {e}", self.binary.display()))?;
        m.child = Some(child);
        m.paused = false;
        Ok(())
    }

    /// The members' process IDs, comma-separated in member order (empty
    /// for a member that is down).
    fn pids(&self) -> String {
        let pids: Vec<String> = self
            .members
            .iter()
            .map(|m| {
                m.child
                    .as_ref()
                    .map_or(String::new(), |c| c.id().to_string())
            })
            .collect();
        pids.join(",")
    }

    /// The members' client endpoints.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }

    async fn wait_ready(&self, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        for m in &self.members {
            loop {
                if serves(&m.client_url).await {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(format!(
                        "{} did not serve within {limit:?}; its log: {}",
                        m.name,
                        m.log.display()
                    ));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        Ok(())
    }

    fn signal(&self, i: usize, sig: &str) -> Result<(), String> {
        let Some(child) = &self.members[i].child else {
            return Err(format!("{} is not running", self.members[i].name));
        };
        let status = Command::new("kill")
            .args([sig, &child.id().to_string()])
            .status()
            .map_err(|e| format!("kill {sig}: {e}"))?;
        status
            .success()
            .then_some(())
            .ok_or_else(|| format!("kill {sig} {} failed", child.id()))
    }

    fn kill(&mut self, i: usize) -> Result<(), String> {
        if let Some(mut child) = self.members[i].child.take() {
            child.kill().map_err(|e| e.to_string())?;
            let _ = child.wait();
        }
        Ok(())
    }

    /// Kills every member and removes the cluster's directory.
    pub fn stop(mut self) {
        for i in 0..MEMBERS {
            if self.members[i].paused {
                let _ = self.signal(i, "-CONT");
            }
            let _ = self.kill(i);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether a linearizable get through `endpoint` succeeds.
async fn serves(endpoint: &str) -> bool {
    use cairn::proto::etcdserverpb::{kv_client::KvClient, RangeRequest};
    let Ok(ch) = crate::bench::dial(endpoint).await else {
        return false;
    };
    let req = RangeRequest {
        key: "cairn-verify-ready".into(),
        ..Default::default()
    };
    let mut client = KvClient::new(ch);
    let call = client.range(req);
    matches!(
        tokio::time::timeout(Duration::from_secs(2), call).await,
        Ok(Ok(_))
    )
}

/// The member that says it leads (its Status's member ID is the leader's),
/// if one does.
async fn leader_index(c: &LocalCluster) -> Option<usize> {
    use cairn::proto::etcdserverpb::{maintenance_client::MaintenanceClient, StatusRequest};
    for (i, m) in c.members.iter().enumerate() {
        if m.child.is_none() || m.paused {
            continue;
        }
        let Ok(ch) = crate::bench::dial(&m.client_url).await else {
            continue;
        };
        let mut client = MaintenanceClient::new(ch);
        let call = client.status(StatusRequest {});
        let Ok(Ok(r)) = tokio::time::timeout(Duration::from_secs(2), call).await else {
            continue;
        };
        let r = r.into_inner();
        if r.leader != 0 && r.header.is_some_and(|h| h.member_id == r.leader) {
            return Some(i);
        }
    }
    None
}

/// What the nemesis left broken, to heal next.
enum Broken {
    Killed(usize),
    Paused(usize),
}

/// The fault schedule of a run.
pub(crate) struct Nemesis {
    kill: bool,
    pause: bool,
    strike_leader: bool,
    commands: Vec<String>,
    /// The cluster's endpoints, for the commands' environment.
    endpoints: Vec<String>,
    interval: Duration,
    total: Duration,
    rng: SplitMix64,
}

impl Nemesis {
    pub fn new(args: &VerifyArgs, endpoints: &[String], seed: u64) -> Nemesis {
        let has = |f: &str| args.local.is_some() && args.faults.iter().any(|x| x == f);
        Nemesis {
            kill: has("kill"),
            pause: has("pause"),
            strike_leader: args.strike_leader,
            commands: args.nemesis_cmd.clone(),
            endpoints: endpoints.to_vec(),
            interval: args.fault_interval.max(Duration::from_millis(100)),
            total: args.duration,
            rng: SplitMix64::new(seed ^ 0x006e_656d_6573_6973),
        }
    }

    /// Runs the schedule until `until`, drawing the progress line.
    pub async fn run(
        mut self,
        rec: &Recorder,
        mut cluster: Option<&mut super::local::LocalCluster>,
        until: Instant,
        progress: bool,
    ) {
        let heal_at = until - Duration::from_secs(5).min(self.total / 4);
        let mut next = Instant::now() + self.interval;
        let mut broken: Option<Broken> = None;
        let mut command = 0;
        let mut healed = false;
        // On a terminal the line is redrawn; elsewhere one line every 10 s.
        let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let mut next_line = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(250)).await;
            if progress && (tty || Instant::now() >= next_line) {
                next_line = Instant::now() + Duration::from_secs(10);
                progress_line(rec, self.total, tty);
            }
            let now = Instant::now();
            if now >= heal_at && !healed {
                healed = true;
                if let (Some(c), Some(b)) = (cluster.as_deref_mut(), broken.take()) {
                    heal(rec, c, b);
                }
                continue;
            }
            if healed || now < next {
                continue;
            }
            next = now + self.interval;
            if !self.commands.is_empty() {
                let mut env = vec![("CAIRN_VERIFY_ENDPOINTS", self.endpoints.join(","))];
                if let Some(c) = cluster.as_deref() {
                    env.push(("CAIRN_VERIFY_PIDS", c.pids()));
                }
                run_command(rec, &self.commands[command % self.commands.len()], env).await;
                command += 1;
            }
            let Some(c) = cluster.as_deref_mut() else {
                continue;
            };
            if let Some(b) = broken.take() {
                heal(rec, c, b);
            } else {
                let leader = match self.strike_leader {
                    true => leader_index(c).await,
                    false => None,
                };
                broken = self.strike(rec, c, leader);
            }
        }
    }

    /// Strikes `member`, or one picked at random.
    fn strike(
        &mut self,
        rec: &Recorder,
        c: &mut LocalCluster,
        member: Option<usize>,
    ) -> Option<Broken> {
        let random = (self.rng.next_u64() % MEMBERS as u64) as usize;
        let i = member.unwrap_or(random);
        let name = match member {
            Some(_) => format!("{} (the leader)", c.members[i].name),
            None => c.members[i].name.clone(),
        };
        let use_kill = match (self.kill, self.pause) {
            (true, true) => self.rng.next_u64().is_multiple_of(2),
            (k, p) if k || p => k,
            _ => return None,
        };
        if use_kill {
            match c.kill(i) {
                Ok(()) => rec.fault(format!("kill -9 {name}")),
                Err(e) => rec.fault(format!("kill -9 {name} failed: {e}")),
            }
            Some(Broken::Killed(i))
        } else {
            match c.signal(i, "-STOP") {
                Ok(()) => {
                    c.members[i].paused = true;
                    rec.fault(format!("pause {name} (SIGSTOP)"));
                    Some(Broken::Paused(i))
                }
                Err(e) => {
                    rec.fault(format!("pause {name} failed: {e}"));
                    None
                }
            }
        }
    }
}

fn heal(rec: &Recorder, c: &mut LocalCluster, b: Broken) {
    match b {
        Broken::Killed(i) => {
            let name = c.members[i].name.clone();
            match c.spawn(i, "existing") {
                Ok(()) => rec.fault(format!("restart {name}")),
                Err(e) => rec.fault(format!("restart {name} failed: {e}")),
            }
        }
        Broken::Paused(i) => {
            let name = c.members[i].name.clone();
            c.members[i].paused = false;
            match c.signal(i, "-CONT") {
                Ok(()) => rec.fault(format!("resume {name} (SIGCONT)")),
                Err(e) => rec.fault(format!("resume {name} failed: {e}")),
            }
        }
    }
}

/// Runs one `--nemesis-cmd` through `sh -c` and records it.
async fn run_command(rec: &Recorder, command: &str, env: Vec<(&'static str, String)>) {
    rec.fault(format!("run `{command}`"));
    let cmd = command.to_owned();
    let status = tokio::task::spawn_blocking(move || {
        Command::new("sh")
            .args(["-c", &cmd])
            .envs(env)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
    })
    .await;
    let what = match status {
        Ok(Ok(s)) => format!(
            "`{command}` exited {}",
            s.code().map_or("by a signal".into(), |c| c.to_string())
        ),
        Ok(Err(e)) => format!("`{command}` could not run: {e}"),
        Err(e) => format!("`{command}` could not run: {e}"),
    };
    rec.fault(what);
}
