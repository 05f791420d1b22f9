//! [`LogStore`]: raft-rs's view of the log, in memory.
//!
//! raft-rs reads its log through the `raft::Storage` trait. `LogStore` holds
//! what it needs: the entries after the last compaction, the hard state, the
//! membership and the newest snapshot *with its data* (so the leader can send
//! it to a follower that fell behind the compacted log).
//!
//! It is not the durable copy. The driver writes every entry and hard state to
//! the WAL and fsyncs before telling the node they are persisted; on restart
//! the `LogStore` is rebuilt from the newest snapshot and the WAL.
//!
//! Invariants:
//! - `entries` are contiguous; the first is at `snapshot index + 1` or, after a
//!   compaction that kept catch-up entries, somewhat lower.
//! - `term(snapshot index)` is always answerable, so raft can check the entry
//!   right before the first one it holds.

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, Storage, StorageError};

/// raft-rs's log in memory. See the module docs.
#[derive(Debug, Default)]
pub struct LogStore {
    /// The last hard state handed to [`LogStore::set_hard_state`].
    hard_state: HardState,
    /// Current membership.
    conf_state: ConfState,
    /// The newest snapshot, with data; index 0 when there is none.
    snapshot: Snapshot,
    /// Entries not compacted away, contiguous.
    entries: Vec<Entry>,
}

impl LogStore {
    /// A fresh log for a new cluster with these voters.
    pub fn new(voters: Vec<u64>) -> Self {
        Self {
            conf_state: ConfState {
                voters,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// A log recovered from disk: its newest snapshot (if any), the hard
    /// state and the entries after the snapshot.
    pub fn recovered(
        voters: Vec<u64>,
        snapshot: Option<Snapshot>,
        hard_state: HardState,
        entries: Vec<Entry>,
    ) -> Self {
        let mut store = Self::new(voters);
        if let Some(snap) = snapshot {
            store.snapshot = snap;
        }
        store.hard_state = hard_state;
        // A hard state saved before a snapshot was taken can lag it.
        let snap_index = store.snapshot_index();
        if store.hard_state.commit < snap_index {
            store.hard_state.commit = snap_index;
        }
        store.entries = entries
            .into_iter()
            .filter(|e| e.index > snap_index)
            .collect();
        store
    }

    fn snapshot_index(&self) -> u64 {
        self.snapshot.get_metadata().index
    }

    fn first(&self) -> u64 {
        self.entries
            .first()
            .map_or(self.snapshot_index() + 1, |e| e.index)
    }

    fn last(&self) -> u64 {
        self.entries
            .last()
            .map_or(self.snapshot_index(), |e| e.index)
    }

    /// The current hard state.
    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    /// The current membership.
    pub fn conf_state(&self) -> &ConfState {
        &self.conf_state
    }

    /// Records a new hard state.
    pub fn set_hard_state(&mut self, hs: HardState) {
        self.hard_state = hs;
    }

    /// Appends entries, replacing any from the first new index on (raft's
    /// truncation of a conflicting suffix).
    ///
    /// # Panics
    /// If the entries overwrite compacted entries or leave a gap: raft-rs never
    /// asks for either.
    pub fn append(&mut self, ents: &[Entry]) {
        let Some(head) = ents.first() else { return };
        assert!(
            head.index >= self.first(),
            "append at {} overwrites compacted log (first {})",
            head.index,
            self.first()
        );
        assert!(
            head.index <= self.last() + 1,
            "append at {} leaves a gap after {}",
            head.index,
            self.last()
        );
        let keep = (head.index - self.first()) as usize;
        self.entries.truncate(keep);
        self.entries.extend_from_slice(ents);
    }

    /// Replaces the log with a snapshot received from the leader.
    pub fn apply_snapshot(&mut self, snap: Snapshot) {
        let meta = snap.get_metadata();
        self.hard_state.term = self.hard_state.term.max(meta.term);
        self.hard_state.commit = meta.index;
        self.conf_state = meta.get_conf_state().clone();
        self.entries.clear();
        self.snapshot = snap;
    }

    /// Installs a snapshot this node took of its own applied state, and drops
    /// entries before `compact_to` (kept entries let slow followers catch up
    /// without a snapshot).
    pub fn set_snapshot(&mut self, snap: Snapshot, compact_to: u64) {
        self.snapshot = snap;
        let compact_to = compact_to.min(self.snapshot_index() + 1);
        if compact_to > self.first() {
            let drop = ((compact_to - self.first()) as usize).min(self.entries.len());
            self.entries.drain(..drop);
        }
    }

    /// Drops the newest snapshot's data, keeping its metadata: called just
    /// before a newer snapshot replaces it, so two are never held at once.
    pub fn release_snapshot_data(&mut self) {
        self.snapshot.data = Default::default();
    }

    /// The newest snapshot (data included).
    pub fn latest_snapshot(&self) -> &Snapshot {
        &self.snapshot
    }
}

impl Storage for LogStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState {
            hard_state: self.hard_state.clone(),
            conf_state: self.conf_state.clone(),
        })
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _ctx: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low < self.first() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last() + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let from = (low - self.first()) as usize;
        let to = (high - self.first()) as usize;
        let mut ents = self.entries[from..to].to_vec();
        raft::util::limit_size(&mut ents, max_size.into());
        Ok(ents)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx == self.snapshot_index() {
            return Ok(self.snapshot.get_metadata().term);
        }
        if idx < self.first() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if idx > self.last() {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        Ok(self.entries[(idx - self.first()) as usize].term)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.first())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last())
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        if self.snapshot_index() == 0 || self.snapshot_index() < request_index {
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        Ok(self.snapshot.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            ..Default::default()
        }
    }

    #[test]
    fn append_truncates_conflicts_and_compaction_keeps_terms_answerable() {
        let mut s = LogStore::new(vec![1]);
        s.append(&[entry(1, 1), entry(2, 1), entry(3, 1)]);
        s.append(&[entry(2, 2)]);
        assert_eq!((s.first_index().unwrap(), s.last_index().unwrap()), (1, 2));
        assert_eq!(s.term(2).unwrap(), 2);
        s.append(&[entry(3, 2), entry(4, 2)]);
        let mut snap = Snapshot::default();
        snap.mut_metadata().index = 3;
        snap.mut_metadata().term = 2;
        s.set_snapshot(snap, 3);
        assert_eq!(s.first_index().unwrap(), 3);
        assert_eq!(s.term(3).unwrap(), 2);
        assert!(matches!(
            s.term(1),
            Err(raft::Error::Store(StorageError::Compacted))
        ));
        assert!(matches!(
            s.entries(1, 3, None, GetEntriesContext::empty(false)),
            Err(raft::Error::Store(StorageError::Compacted))
        ));
        assert_eq!(s.snapshot(0, 2).unwrap().get_metadata().index, 3);
    }
}
