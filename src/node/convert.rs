//! Conversions between raft-rs's types and the WAL's and snapshot store's,
//! and the recovery of a node's starting state from them. Pure.

use super::Recovery;
use crate::{snap, storage, wal};
use raft::eraftpb::{ConfState, Entry, EntryType, HardState, Snapshot, SnapshotMetadata};

/// A raft entry as the WAL stores it.
pub fn entry_to_wal(e: &Entry) -> wal::Entry {
    wal::Entry {
        index: e.index,
        term: e.term,
        kind: match e.get_entry_type() {
            EntryType::EntryNormal => wal::EntryKind::Normal,
            EntryType::EntryConfChange => wal::EntryKind::ConfChange,
            EntryType::EntryConfChangeV2 => wal::EntryKind::ConfChangeV2,
        },
        data: e.data.clone(),
        context: e.context.clone(),
    }
}

/// A WAL entry as raft reads it.
pub fn entry_from_wal(e: wal::Entry) -> Entry {
    let mut out = Entry {
        index: e.index,
        term: e.term,
        data: e.data,
        context: e.context,
        ..Default::default()
    };
    out.set_entry_type(match e.kind {
        wal::EntryKind::Normal => EntryType::EntryNormal,
        wal::EntryKind::ConfChange => EntryType::EntryConfChange,
        wal::EntryKind::ConfChangeV2 => EntryType::EntryConfChangeV2,
    });
    out
}

/// A raft hard state as the WAL stores it.
pub fn hard_state_to_wal(hs: &HardState) -> wal::HardState {
    wal::HardState {
        term: hs.term,
        vote: hs.vote,
        commit: hs.commit,
    }
}

/// A raft snapshot as a snapshot file holds it.
pub fn snapshot_to_file(s: &Snapshot) -> snap::Snapshot {
    let meta = s.get_metadata();
    snap::Snapshot {
        meta: snap::SnapshotMeta {
            index: meta.index,
            term: meta.term,
            voters: meta.get_conf_state().voters.clone(),
            learners: meta.get_conf_state().learners.clone(),
        },
        data: s.data.clone(),
    }
}

/// A snapshot file as raft takes it.
pub fn snapshot_from_file(s: &snap::Snapshot) -> Snapshot {
    let mut meta = SnapshotMetadata {
        index: s.meta.index,
        term: s.meta.term,
        ..Default::default()
    };
    meta.set_conf_state(ConfState {
        voters: s.meta.voters.clone(),
        learners: s.meta.learners.clone(),
        ..Default::default()
    });
    let mut out = Snapshot {
        data: s.data.clone(),
        ..Default::default()
    };
    out.set_metadata(meta);
    out
}

/// What a node starts from, given what storage recovery found.
pub fn recovery(rec: storage::Recovered) -> Recovery {
    let hs = rec.wal.hard_state;
    Recovery {
        store: rec.store,
        snapshot: rec.snapshot.as_ref().map(|(_, s)| snapshot_from_file(s)),
        hard_state: HardState {
            term: hs.term,
            vote: hs.vote,
            commit: hs.commit,
            ..Default::default()
        },
        entries: rec.wal.entries.into_iter().map(entry_from_wal).collect(),
        members: rec
            .snapshot
            .as_ref()
            .map(|(_, s)| super::members_from_data(&s.data))
            .unwrap_or_default(),
        leases: rec
            .snapshot
            .as_ref()
            .map(|(_, s)| super::leases_from_data(&s.data))
            .unwrap_or_default(),
        alarms: rec
            .snapshot
            .as_ref()
            .map(|(_, s)| super::alarms_from_data(&s.data))
            .unwrap_or_default(),
    }
}
