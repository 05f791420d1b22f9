//! `cairn snapshot status` and `cairn snapshot restore`: reading a backup
//! image (`crate::snap::image`, what `etcdctl snapshot save` wrote from
//! cairn) and turning it into a data directory for a member of a new cluster,
//! with etcdutl's flags.
//!
//! # What a restore writes
//!
//! For member `--name` of `--initial-cluster` (IDs from the peer URLs and
//! `--initial-cluster-token`, as a starting member computes them): a snapshot
//! at raft index 1, term 1, whose voters are the new members, holding the
//! image's store, leases and alarms (not the old cluster's member list), and
//! a WAL that starts after it. Every member of the new cluster is restored
//! from the same image, so they start from the same state and the same
//! revisions. `--bump-revision N --mark-compacted` (etcd 3.6's, for
//! Kubernetes: a restore must not hand out revisions clients have already
//! seen) raises the revision by N and compacts there.
//!
//! This is driver code (files, the wall clock is not used); the image and
//! the store are read with the core's decoders.

// Driver code: it reads a backup file the user names and writes a new data dir.
#![allow(clippy::disallowed_methods)]

use crate::disk::FsDisk;
use crate::error::{Error, Result};
use crate::mvcc::{self, Store};
use crate::proto::cairnpb::LeaseRecordList;
use crate::snap::image::{read_image, Image};
use crate::snap::{encode_sections, SectionKind, Snapshot, SnapshotMeta};
use crate::storage::{self, SNAP_DIR, WAL_DIR};
use crate::wal::{HardState, SnapshotMarker};
use bytes::Bytes;
use prost::Message as _;
use std::collections::BTreeMap;
use std::path::Path;

/// What `snapshot status` reports, as etcdctl's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageStatus {
    /// CRC32 of the payload.
    pub hash: u32,
    pub revision: i64,
    /// Keys with a retained version.
    pub total_key: usize,
    /// Bytes of the file.
    pub total_size: u64,
}

fn corrupt(file: &Path, offset: usize, reason: impl Into<String>) -> Error {
    Error::Corrupt {
        file: file.display().to_string(),
        offset: offset as u64,
        reason: reason.into(),
    }
}

/// Reads and checks an image file.
pub fn read_image_file(path: &Path) -> Result<Image> {
    let data = std::fs::read(path).map_err(|e| Error::io("read", path.display().to_string(), e))?;
    read_image(data.into()).map_err(|e| corrupt(path, e.offset, e.what))
}

fn store_of(path: &Path, image: &Image) -> Result<Store> {
    let mvcc = image
        .section(SectionKind::Mvcc)
        .ok_or_else(|| corrupt(path, 0, "image has no mvcc section"))?;
    Store::decode(mvcc).map_err(|e| corrupt(path, e.offset, format!("mvcc state: {e}")))
}

/// `cairn snapshot status FILE`.
pub fn status(path: &Path) -> Result<ImageStatus> {
    let image = read_image_file(path)?;
    let store = store_of(path, &image)?;
    let mut h = crc32fast::Hasher::new();
    for (_, bytes) in &image.sections {
        h.update(bytes);
    }
    let total_size = std::fs::metadata(path)
        .map_err(|e| Error::io("stat", path.display().to_string(), e))?
        .len();
    Ok(ImageStatus {
        hash: h.finalize(),
        revision: image.revision,
        total_key: store.key_count(),
        total_size,
    })
}

/// Why a restore did not happen.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The flags cannot work together (etcdutl's checks and messages).
    #[error("{0}")]
    Usage(String),
    /// Reading the image or writing the data directory failed.
    #[error(transparent)]
    Storage(#[from] Error),
}

/// What `cairn snapshot restore` is told (etcdutl's flags).
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    pub data_dir: std::path::PathBuf,
    pub name: String,
    pub initial_cluster: BTreeMap<String, Vec<String>>,
    pub initial_cluster_token: String,
    pub initial_advertise_peer_urls: Vec<String>,
    pub bump_revision: u64,
    pub mark_compacted: bool,
}

/// `cairn snapshot restore FILE`. Refuses an existing data directory, as
/// etcdutl does. Returns the restored store's revision.
pub fn restore(path: &Path, opts: &RestoreOptions) -> std::result::Result<i64, RestoreError> {
    let usage = RestoreError::Usage;
    if opts.data_dir.exists() {
        return Err(usage(format!(
            "data-dir {:?} exists",
            opts.data_dir.display().to_string()
        )));
    }
    if opts.bump_revision > 0 && !opts.mark_compacted {
        return Err(usage(
            "--mark-compacted required if --bump-revision > 0".into(),
        ));
    }
    if opts.bump_revision == 0 && opts.mark_compacted {
        return Err(usage(
            "--bump-revision required if --mark-compacted is set".into(),
        ));
    }
    let members =
        crate::server::config::members_of(&opts.initial_cluster, &opts.initial_cluster_token);
    let me = members
        .iter()
        .find(|m| m.name == opts.name)
        .ok_or_else(|| {
            usage(format!(
                "--name {:?} is not in --initial-cluster",
                opts.name
            ))
        })?;
    let mut mine = opts.initial_advertise_peer_urls.clone();
    let mut listed = me.peer_urls.clone();
    mine.sort();
    listed.sort();
    if mine != listed {
        return Err(usage(format!(
            "--initial-cluster has {}={:?} but --initial-advertise-peer-urls is {:?}",
            opts.name, listed, mine
        )));
    }

    let (mut store, mut leases, alarms) = load(path)?;
    if opts.bump_revision > 0 {
        store.bump_revision(i64::try_from(opts.bump_revision).unwrap_or(i64::MAX));
        let rev = store.current_revision();
        store
            .compact(&crate::proto::etcdserverpb::CompactionRequest {
                revision: rev,
                physical: true,
            })
            .map_err(|e: mvcc::Error| usage(format!("--mark-compacted: {e}")))?;
    }
    let revision = store.current_revision();
    // A lease's last renewal was an index of the old cluster's log.
    for l in &mut leases.leases {
        l.renewed_at = 0;
    }
    let data = encode_sections(&[
        (SectionKind::Lease, &leases.encode_to_vec()),
        (SectionKind::Alarms, &alarms),
        (SectionKind::Mvcc, &store.encode()),
    ]);
    write_data_dir(opts, members.iter().map(|m| m.id).collect(), data)?;
    Ok(revision)
}

/// The store, leases and alarms of a backup file: a cairn image, or a
/// snapshot a real etcd wrote (a bbolt database and its sha256), migrated.
fn load(path: &Path) -> Result<(Store, LeaseRecordList, Bytes)> {
    let data = std::fs::read(path).map_err(|e| Error::io("read", path.display().to_string(), e))?;
    if crate::etcd_db::is_etcd_snapshot(&data) {
        return load_etcd(path, &data);
    }
    let image = read_image(data.into()).map_err(|e| corrupt(path, e.offset, e.what))?;
    let store = store_of(path, &image)?;
    let leases = LeaseRecordList::decode(image.section(SectionKind::Lease).unwrap_or_default())
        .map_err(|e| corrupt(path, 0, format!("lease section: {e}")))?;
    Ok((
        store,
        leases,
        image.section(SectionKind::Alarms).unwrap_or_default(),
    ))
}

/// An etcd snapshot's keys (every retained version, with its revisions,
/// version and lease), compaction revision and leases. etcd's alarms are
/// the old cluster's members': not kept.
fn load_etcd(path: &Path, data: &[u8]) -> Result<(Store, LeaseRecordList, Bytes)> {
    let db = crate::etcd_db::read_snapshot(data).map_err(|e| corrupt(path, e.offset, e.what))?;
    let versions = db.versions.into_iter().map(|v| mvcc::ImportedVersion {
        key: v.kv.key,
        main: v.main,
        sub: v.sub,
        tombstone: v.tombstone,
        create: v.kv.create_revision,
        version: v.kv.version,
        lease: v.kv.lease,
        value: v.kv.value,
    });
    let store = Store::import(versions, db.compacted)
        .map_err(|e| corrupt(path, e.offset, format!("etcd keys: {e}")))?;
    let leases = LeaseRecordList {
        leases: (db.leases.into_iter())
            .map(|l| crate::proto::cairnpb::LeaseRecord {
                id: l.id,
                ttl: l.ttl,
                renewed_at: 0,
            })
            .collect(),
    };
    Ok((store, leases, Bytes::new()))
}

/// The snapshot at index 1 and a WAL after it, in a new data directory.
fn write_data_dir(opts: &RestoreOptions, voters: Vec<u64>, data: Vec<u8>) -> Result<()> {
    let open = |sub: &str| {
        let dir = opts.data_dir.join(sub);
        FsDisk::open(&dir).map_err(|e| Error::io("open", dir.display().to_string(), e))
    };
    let (mut wal, mut snaps, _) = storage::recover(
        open(WAL_DIR)?,
        open(SNAP_DIR)?,
        &storage::StorageOptions::default(),
    )?;
    let (index, term) = (1, 1);
    snaps.save(&Snapshot {
        meta: SnapshotMeta {
            index,
            term,
            voters,
            learners: Vec::new(),
        },
        data: data.into(),
    })?;
    wal.mark_snapshot(SnapshotMarker { index, term })?;
    wal.set_hard_state(HardState {
        term,
        vote: 0,
        commit: index,
    })?;
    wal.sync()
}

/// go-humanize's `Bytes` (SI units), as etcdctl prints sizes.
pub fn humanize_bytes(n: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    if n < 10 {
        return format!("{n} B");
    }
    let e = ((n as f64).ln() / 1000f64.ln()).floor() as usize;
    let val = (n as f64 / 1000f64.powi(e as i32) * 10.0 + 0.5).floor() / 10.0;
    if val < 10.0 {
        format!("{val:.1} {}", UNITS[e])
    } else {
        format!("{val:.0} {}", UNITS[e])
    }
}

#[cfg(test)]
mod tests {
    use super::humanize_bytes;

    #[test]
    fn sizes_print_as_go_humanize() {
        assert_eq!(humanize_bytes(5), "5 B");
        assert_eq!(humanize_bytes(544), "544 B");
        assert_eq!(humanize_bytes(2_138_112), "2.1 MB");
        assert_eq!(humanize_bytes(20_480), "20 kB");
    }
}
