//! Auto-compaction: `--auto-compaction-mode` and `--auto-compaction-retention`,
//! with etcd 3.5's semantics (`server/etcdserver/api/v3compactor`).
//!
//! The decisions are a pure state machine ([`Periodic`], [`ByRevision`]) fed
//! the time and the store's revision; [`run`] is the driver task that feeds
//! them from the event loop every interval and proposes the compactions they
//! ask for through raft, like any client's `Compact`. Every member runs one;
//! only the leader's acts (the others are paused, as etcd's are, but a paused
//! periodic compactor still samples revisions, so a new leader compacts on
//! the same schedule).
//!
//! - **periodic** (retention a duration; a bare number is hours): every
//!   `interval = min(retention, 1h) / 10` the current revision is sampled and
//!   the newest `retention / interval + 1` samples are kept. The first
//!   compaction comes one retention after start, to the revision sampled at
//!   start; after that one every `min(retention, 1h)`, to the oldest sample
//!   (about retention + one interval old).
//! - **revision** (retention a number of revisions): every 5 minutes, compact
//!   to `current - retention` unless that is not positive or is the revision
//!   last compacted to.
//!
//! A compaction refused because the revision was already compacted counts as
//! done, as in etcd.

use super::config::{parse_go_duration, ConfigError};
use super::raft_loop::Command;
use crate::node::{NodeError, Response};
use crate::proto::cairnpb::raft_request::Request;
use crate::proto::etcdserverpb::CompactionRequest;
use std::collections::VecDeque;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// etcd's revision-mode check period.
const REVISION_INTERVAL: Duration = Duration::from_secs(300);
/// The longest period between periodic compactions.
const HOUR: Duration = Duration::from_secs(3600);

/// What `--auto-compaction-mode` / `--auto-compaction-retention` ask for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AutoCompaction {
    /// Keep this much history.
    Periodic(Duration),
    /// Keep this many revisions.
    Revision(i64),
}

/// Parses the two flags as etcd does; `None` when auto-compaction is off
/// (a zero retention, etcd's default).
pub fn parse(mode: &str, retention: &str) -> Result<Option<AutoCompaction>, ConfigError> {
    let retention = if retention.is_empty() { "0" } else { retention };
    let parsed = match mode {
        "periodic" => match retention.parse::<u64>() {
            Ok(hours) => AutoCompaction::Periodic(Duration::from_secs(hours.saturating_mul(3600))),
            Err(_) => AutoCompaction::Periodic(
                parse_go_duration(retention)
                    .map_err(|e| ConfigError(format!("error parsing CompactionRetention: {e}")))?,
            ),
        },
        "revision" => AutoCompaction::Revision(retention.parse::<i64>().map_err(|_| {
            ConfigError(format!(
                "error parsing CompactionRetention: {retention:?} is not a number of revisions"
            ))
        })?),
        other => {
            return Err(ConfigError(format!(
                "unknown auto-compaction-mode {other:?}"
            )))
        }
    };
    Ok(match parsed {
        AutoCompaction::Periodic(d) if d.is_zero() => None,
        AutoCompaction::Revision(n) if n <= 0 => None,
        p => Some(p),
    })
}

/// The periodic compactor's state. Time is a [`Duration`] since start.
#[derive(Debug)]
pub struct Periodic {
    /// How often a compaction may happen once the first one has.
    compact_interval: Duration,
    /// How often the revision is sampled.
    pub interval: Duration,
    /// Samples kept.
    retentions: usize,
    revs: VecDeque<i64>,
    /// Before the first compaction, the whole retention; then `compact_interval`.
    base_interval: Duration,
    last_success: Duration,
}

impl Periodic {
    pub fn new(retention: Duration) -> Self {
        let compact_interval = retention.min(HOUR);
        let interval = (compact_interval / 10).max(Duration::from_millis(1));
        Self {
            compact_interval,
            interval,
            retentions: (retention.as_nanos() / interval.as_nanos()) as usize + 1,
            revs: VecDeque::new(),
            base_interval: retention,
            last_success: Duration::ZERO,
        }
    }

    /// Records the current revision (before the wait of one interval).
    pub fn sample(&mut self, revision: i64) {
        self.revs.push_back(revision);
        while self.revs.len() > self.retentions {
            self.revs.pop_front();
        }
    }

    /// After the wait: the revision to compact to, if one is due now.
    pub fn due(&mut self, now: Duration, leader: bool) -> Option<i64> {
        if !leader || now.saturating_sub(self.last_success) < self.base_interval {
            return None;
        }
        self.base_interval = self.compact_interval;
        self.revs.front().copied().filter(|r| *r > 0)
    }

    /// The compaction asked for at `now` was applied.
    pub fn done(&mut self, now: Duration) {
        self.last_success = now;
    }
}

/// The revision-count compactor's state.
#[derive(Debug)]
pub struct ByRevision {
    retention: i64,
    last: i64,
}

impl ByRevision {
    pub fn new(retention: i64) -> Self {
        Self { retention, last: 0 }
    }

    /// The revision to compact to at this check, if any.
    pub fn due(&self, current: i64, leader: bool) -> Option<i64> {
        let rev = current - self.retention;
        (leader && rev > 0 && rev != self.last).then_some(rev)
    }

    pub fn done(&mut self, revision: i64) {
        self.last = revision;
    }
}

/// Runs `mode` against the event loop behind `commands` until the loop is
/// gone.
pub async fn run(mode: AutoCompaction, commands: mpsc::Sender<Command>) {
    let start = tokio::time::Instant::now();
    match mode {
        AutoCompaction::Periodic(retention) => {
            let mut c = Periodic::new(retention);
            loop {
                let Some((revision, _)) = status(&commands).await else {
                    return;
                };
                c.sample(revision);
                tokio::time::sleep(c.interval).await;
                let Some((_, leader)) = status(&commands).await else {
                    return;
                };
                let now = start.elapsed();
                if let Some(rev) = c.due(now, leader) {
                    tracing::info!(revision = rev, compact_period = ?retention, "starting auto periodic compaction");
                    if compact(&commands, rev).await {
                        tracing::info!(revision = rev, compact_period = ?retention, "completed auto periodic compaction");
                        c.done(now);
                    }
                }
            }
        }
        AutoCompaction::Revision(retention) => {
            let mut c = ByRevision::new(retention);
            loop {
                tokio::time::sleep(REVISION_INTERVAL).await;
                let Some((current, leader)) = status(&commands).await else {
                    return;
                };
                if let Some(rev) = c.due(current, leader) {
                    tracing::info!(
                        revision = rev,
                        revision_compaction_retention = retention,
                        "starting auto revision compaction"
                    );
                    if compact(&commands, rev).await {
                        tracing::info!(
                            revision = rev,
                            revision_compaction_retention = retention,
                            "completed auto revision compaction"
                        );
                        c.done(rev);
                    }
                }
            }
        }
    }
}

/// The store's revision and whether this member leads; `None` once the loop
/// is gone.
async fn status(commands: &mpsc::Sender<Command>) -> Option<(i64, bool)> {
    let (tx, rx) = oneshot::channel();
    commands.send(Command::Status(tx)).await.ok()?;
    let st = rx.await.ok()?;
    Some((st.revision, st.is_leader))
}

/// Proposes a compaction to `revision`; whether it is done (applied, or the
/// revision was already compacted).
async fn compact(commands: &mpsc::Sender<Command>, revision: i64) -> bool {
    let (tx, rx) = oneshot::channel();
    let request = Request::Compaction(CompactionRequest {
        revision,
        physical: false,
    });
    if commands.send(Command::Propose(request, tx)).await.is_err() {
        return false;
    }
    match rx.await {
        Ok(Ok(Response::Compaction(_))) => true,
        Ok(Err(NodeError::Mvcc(crate::mvcc::Error::Compacted))) => true,
        other => {
            tracing::warn!(revision, result = ?other.map(|r| r.map(|_| ())), "failed auto compaction; retrying at the next check");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_as_etcd_parses_them() {
        let p = |m, r| parse(m, r).map_err(|e| e.0);
        assert_eq!(p("periodic", "0"), Ok(None));
        assert_eq!(p("periodic", ""), Ok(None));
        assert_eq!(
            p("periodic", "5"),
            Ok(Some(AutoCompaction::Periodic(Duration::from_secs(
                5 * 3600
            ))))
        );
        assert_eq!(
            p("periodic", "30m"),
            Ok(Some(AutoCompaction::Periodic(Duration::from_secs(1800))))
        );
        assert_eq!(
            p("revision", "1000"),
            Ok(Some(AutoCompaction::Revision(1000)))
        );
        assert_eq!(
            p("foo", "1"),
            Err("unknown auto-compaction-mode \"foo\"".into())
        );
        assert_eq!(
            p("periodic", "abc"),
            Err("error parsing CompactionRetention: time: invalid duration \"abc\"".into())
        );
    }

    /// etcd's worked example: retention 1h samples every 6 minutes, first
    /// compacts at 1h to the revision of the start, then hourly to a
    /// revision about 66 minutes old.
    #[test]
    fn periodic_follows_etcds_windows() {
        let mut c = Periodic::new(HOUR);
        assert_eq!(c.interval, Duration::from_secs(360));
        let mut compactions = Vec::new();
        let mut now = Duration::ZERO;
        // The revision is the minute: one write a minute.
        for _ in 0..40 {
            c.sample((now.as_secs() / 60) as i64 + 1);
            now += c.interval;
            if let Some(rev) = c.due(now, true) {
                c.done(now);
                compactions.push((now.as_secs() / 60, rev));
            }
        }
        assert_eq!(
            compactions[0],
            (60, 1),
            "first: at 1h, to the start's revision"
        );
        assert_eq!(compactions[1], (120, 55), "then hourly, ~66 minutes back");
        assert_eq!(compactions[2], (180, 115));
    }

    #[test]
    fn a_follower_waits_and_revision_mode_skips_repeats() {
        let mut c = Periodic::new(Duration::from_secs(10));
        c.sample(5);
        assert_eq!(
            c.due(Duration::from_secs(11), false),
            None,
            "not the leader"
        );
        assert_eq!(c.due(Duration::from_secs(11), true), Some(5));
        let mut r = ByRevision::new(100);
        assert_eq!(r.due(50, true), None, "nothing old enough");
        assert_eq!(r.due(150, true), Some(50));
        r.done(50);
        assert_eq!(r.due(150, true), None, "already compacted there");
        assert_eq!(r.due(151, false), None, "not the leader");
    }
}
