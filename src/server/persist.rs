//! The persistence worker: the one owner of the WAL and the snapshot store
//! once a member runs, doing the disk work the event loop hands it, in order,
//! off the loop.
//!
//! The loop sends a [`Job`] per raft `Ready` (and per snapshot the node took
//! of itself) and goes on: it takes proposals, ticks and sends appends while
//! the disk works. The worker takes every job queued when it wakes, writes
//! them all in order and fsyncs once (group commit across Readies), then
//! reports the highest Ready number now durable ([`Done::Persisted`]); only
//! then may the loop send what promises durability.
//!
//! # Invariants
//! - Jobs are carried out in the order they were sent, so a snapshot file
//!   is written before its WAL marker and entries after both, as recovery
//!   expects.
//! - `Persisted(n)` is sent only after the writes of every Ready up to `n`
//!   are fsynced when any of them asked for it (`must_sync`).
//! - A storage error is reported once and the worker stops: nothing after
//!   a failed write or fsync is ever reported durable.
//!
//! On real disks the worker is an OS thread (an fsync blocks); under the
//! simulator it is a task on the member's node, so runs stay deterministic
//! and a slow simulated disk stalls only the worker.

use crate::disk::Disk;
use crate::node::convert::snapshot_to_file;
use crate::planted::{self, Bug};
use crate::snap::SnapStore;
use crate::wal::{Entry, HardState, SnapshotMarker, Wal};
use raft::eraftpb::Snapshot;
use std::time::Duration;
use tokio::sync::mpsc;

/// Jobs taken in one wake-up, at most (bounds one group commit).
const MAX_JOBS_PER_SYNC: usize = 256;

/// Disk work, in the order it must happen.
#[derive(Debug)]
pub enum Job {
    /// One Ready's writes.
    Ready {
        number: u64,
        /// A snapshot received from the leader: file, then WAL marker.
        snapshot: Option<Box<Snapshot>>,
        entries: Vec<Entry>,
        hard_state: Option<HardState>,
        must_sync: bool,
    },
    /// A snapshot this member took of its own state.
    Snapshot(Box<Snapshot>),
    /// Fsync what was written (the planted ack-before-fsync's deferred fsync).
    Sync,
}

/// What the worker reports.
#[derive(Debug)]
pub enum Done {
    /// Every Ready up to this number is durable.
    Persisted(u64),
    /// A write or fsync failed; the worker has stopped.
    Failed(crate::Error),
}

/// The worker's state.
pub struct Worker<D: Disk> {
    pub wal: Wal<D>,
    pub snaps: SnapStore<D>,
    /// Extra fsync latency the simulator injects (zero otherwise), and the
    /// generator that draws it.
    pub sync_latency_max: Duration,
    pub rng: super::SplitMix64,
}

/// Starts the worker. Dropping the job sender stops it after a last fsync;
/// the done channel closes when it has stopped.
pub fn spawn<D: Disk + 'static>(
    worker: Worker<D>,
) -> (mpsc::UnboundedSender<Job>, mpsc::UnboundedReceiver<Done>) {
    let (job_tx, job_rx) = mpsc::unbounded_channel();
    let (done_tx, done_rx) = mpsc::unbounded_channel();
    run(worker, job_rx, done_tx);
    (job_tx, done_rx)
}

#[cfg(not(madsim))]
fn run<D: Disk + 'static>(
    mut worker: Worker<D>,
    mut jobs: mpsc::UnboundedReceiver<Job>,
    done: mpsc::UnboundedSender<Done>,
) {
    std::thread::Builder::new()
        .name("cairn-persist".into())
        .spawn(move || {
            while let Some(first) = jobs.blocking_recv() {
                if !worker.round(first, &mut jobs, &done) {
                    return;
                }
            }
            worker.finish(&done);
        })
        .expect("spawning the persistence thread");
}

#[cfg(madsim)]
fn run<D: Disk + 'static>(
    mut worker: Worker<D>,
    mut jobs: mpsc::UnboundedReceiver<Job>,
    done: mpsc::UnboundedSender<Done>,
) {
    tokio::spawn(async move {
        while let Some(first) = jobs.recv().await {
            let synced = worker.wants_sync(&first);
            if !worker.round(first, &mut jobs, &done) {
                return;
            }
            if synced {
                worker.slow_disk().await;
            }
        }
        worker.finish(&done);
    });
}

impl<D: Disk> Worker<D> {
    /// Carries out `first` and every job queued behind it, with one fsync.
    /// Returns false if the worker must stop.
    fn round(
        &mut self,
        first: Job,
        jobs: &mut mpsc::UnboundedReceiver<Job>,
        done: &mpsc::UnboundedSender<Done>,
    ) -> bool {
        let mut batch = vec![first];
        while batch.len() < MAX_JOBS_PER_SYNC {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        match self.write(batch) {
            Ok(Some(number)) => done.send(Done::Persisted(number)).is_ok(),
            Ok(None) => true,
            Err(e) => {
                let _ = done.send(Done::Failed(e));
                false
            }
        }
    }

    /// Writes a batch in order and fsyncs once if any job asked for it.
    /// Returns the highest Ready number in it.
    fn write(&mut self, batch: Vec<Job>) -> crate::Result<Option<u64>> {
        let mut sync = false;
        let mut persisted = None;
        for job in batch {
            match job {
                Job::Ready {
                    number,
                    snapshot,
                    entries,
                    hard_state,
                    must_sync,
                } => {
                    if let Some(snap) = snapshot {
                        self.save_snapshot(&snap)?;
                    }
                    if !entries.is_empty() {
                        self.wal.append(&entries)?;
                    }
                    if let Some(hs) = hard_state {
                        if !planted::active(Bug::SkipHardStateSync) {
                            self.wal.set_hard_state(hs)?;
                        }
                    }
                    // Planted bug: report durable now, fsync at the next tick.
                    sync |= must_sync && !planted::active(Bug::AckBeforeFsync);
                    persisted = Some(number);
                }
                Job::Snapshot(snap) => self.save_snapshot(&snap)?,
                Job::Sync => sync = true,
            }
        }
        if sync {
            crate::metrics::time_wal_fsync(|| self.wal.sync())?;
        }
        Ok(persisted)
    }

    #[cfg(madsim)]
    fn wants_sync(&self, job: &Job) -> bool {
        matches!(
            job,
            Job::Ready {
                must_sync: true,
                ..
            } | Job::Sync
        )
    }

    /// The simulator's slow disk: the worker stalls as in a long fsync.
    #[cfg(madsim)]
    async fn slow_disk(&mut self) {
        if self.sync_latency_max.is_zero() {
            return;
        }
        let max = self.sync_latency_max.as_micros().max(1) as u64;
        tokio::time::sleep(Duration::from_micros(self.rng.next_u64() % max)).await;
    }

    /// The loop has stopped: make everything written durable.
    fn finish(&mut self, done: &mpsc::UnboundedSender<Done>) {
        if let Err(e) = self.wal.sync() {
            let _ = done.send(Done::Failed(e));
        }
    }

    /// Saves a snapshot durably, then marks it in the WAL and drops the
    /// segments it makes redundant. The file comes first: recovery trusts
    /// that a snapshot exists for every marker.
    fn save_snapshot(&mut self, snap: &Snapshot) -> crate::Result<()> {
        let meta = snap.get_metadata();
        let marker = SnapshotMarker {
            index: meta.index,
            term: meta.term,
        };
        self.snaps.save(&snapshot_to_file(snap))?;
        self.wal.mark_snapshot(marker)?;
        self.wal.sync()?;
        self.wal.release_to(marker.index)?;
        tracing::info!(index = marker.index, term = marker.term, "saved snapshot");
        Ok(())
    }
}
