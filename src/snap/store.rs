//! [`SnapStore`]: snapshot files in one directory, written atomically.
//!
//! See the module docs of [`crate::snap`] for the protocol; this file is the
//! code that carries it out.

use super::file::{decode_snapshot, encode_snapshot_parts, Snapshot};
use crate::disk::Disk;
use crate::error::{Error, Result};
use bytes::Bytes;
use std::io;

/// How many snapshots to keep unless told otherwise: the newest and one
/// before it, so a newest snapshot that turns out unreadable has a fallback.
pub const DEFAULT_KEEP: usize = 2;
/// Suffix of a complete snapshot file.
const SNAP_SUFFIX: &str = ".snap";
/// Suffix of a snapshot being written. Never read; removed when found stale.
const TMP_SUFFIX: &str = ".tmp";
/// Suffix given to a snapshot that failed its checks, so it is not retried.
const BROKEN_SUFFIX: &str = ".broken";
/// What [`Error::Io`] names as the file for directory-wide operations.
const DIR: &str = ".";

/// The file name of the snapshot at (`term`, `index`): `{term:016x}-{index:016x}.snap`.
pub fn snap_name(term: u64, index: u64) -> String {
    format!("{term:016x}-{index:016x}{SNAP_SUFFIX}")
}

/// The (`term`, `index`) a snapshot file name stands for, if `name` is exactly
/// what [`snap_name`] writes (lower-case hex, fixed width).
pub fn parse_snap_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(SNAP_SUFFIX)?;
    let (term, index) = stem.split_once('-')?;
    let term = u64::from_str_radix(term, 16).ok()?;
    let index = u64::from_str_radix(index, 16).ok()?;
    // Round-trip so that `+1`, upper case or a short field are not ours.
    (snap_name(term, index) == name).then_some((term, index))
}

/// What [`SnapStore::load_newest`] found.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The newest snapshot that passed every check, with its file name.
    pub snapshot: Option<(String, Snapshot)>,
    /// Newer snapshots that failed a check, newest first: the file name they
    /// had and why they were rejected (always [`Error::Corrupt`]). Each has
    /// been renamed to `<name>.broken`. The caller should log every one.
    pub rejected: Vec<(String, Error)>,
}

/// The snapshot files of one node, in their own directory (a [`Disk`]).
#[derive(Debug)]
pub struct SnapStore<D: Disk> {
    /// The directory. Holds only this store's files.
    disk: D,
    /// How many of the newest snapshots [`SnapStore::save`] keeps. At least 1.
    keep: usize,
}

fn io_err<'a>(op: &'static str, file: &'a str) -> impl FnOnce(io::Error) -> Error + 'a {
    move |source| Error::io(op, file, source)
}

impl<D: Disk> SnapStore<D> {
    /// A store over `disk` keeping the `keep` newest snapshots
    /// ([`DEFAULT_KEEP`] is a good value). Touches nothing on disk.
    ///
    /// # Panics
    /// If `keep` is 0: a store that deletes every snapshot it writes is a
    /// configuration bug.
    pub fn new(disk: D, keep: usize) -> Self {
        assert!(
            keep >= 1,
            "a snapshot store must keep at least one snapshot"
        );
        Self { disk, keep }
    }

    /// The disk underneath, for tests and for the driver's bookkeeping.
    pub fn disk(&mut self) -> &mut D {
        &mut self.disk
    }

    /// Writes `s` atomically and returns its file name.
    ///
    /// Steps: write `{name}.tmp`, sync it, rename it to `{name}`, sync the
    /// directory. Only then are older snapshots pruned (all but the `keep`
    /// newest by index, never the one just written) together with every
    /// stale `.tmp`, and the directory synced again.
    ///
    /// On error the previous snapshots are intact: nothing is removed before
    /// the new file is durable. An error up to and including the rename
    /// removes the `.tmp` (best effort; a leftover is pruned by the next
    /// save). An error after the rename leaves it unknown whether the new
    /// snapshot is durable; the caller must treat the save as failed.
    pub fn save(&mut self, s: &Snapshot) -> Result<String> {
        let name = snap_name(s.meta.term, s.meta.index);
        let tmp = format!("{name}{TMP_SUFFIX}");
        let (head, tail) = encode_snapshot_parts(s);
        let parts: [&[u8]; 3] = [&head, &s.data, &tail];
        let written = self.write_tmp(&tmp, &parts).and_then(|()| {
            self.disk
                .rename(&tmp, &name)
                .map_err(io_err("rename", &tmp))
        });
        if let Err(e) = written {
            // Best effort: the error that matters is `e`, and a leftover
            // `.tmp` is harmless (never read, pruned by the next save).
            let _ = self.disk.remove(&tmp);
            return Err(e);
        }
        self.disk.sync_dir().map_err(io_err("sync_dir", DIR))?;
        self.prune(&name)?;
        Ok(name)
    }

    /// Creates `tmp` (replacing a stale one) with `parts` in it, synced.
    fn write_tmp(&mut self, tmp: &str, parts: &[&[u8]]) -> Result<()> {
        match self.disk.create(tmp) {
            // Left by a crash during an earlier save of this same snapshot.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                self.disk.remove(tmp).map_err(io_err("remove", tmp))?;
                self.disk.create(tmp).map_err(io_err("create", tmp))?;
            }
            other => other.map_err(io_err("create", tmp))?,
        }
        for part in parts {
            self.disk.append(tmp, part).map_err(io_err("append", tmp))?;
        }
        self.disk.sync(tmp).map_err(io_err("sync", tmp))
    }

    /// Removes all but the `keep` newest snapshots (sparing `just_saved`) and
    /// every `.tmp`, then syncs the directory if anything was removed.
    fn prune(&mut self, just_saved: &str) -> Result<()> {
        let names = self.disk.list().map_err(io_err("list", DIR))?;
        let mut doomed: Vec<String> = names
            .iter()
            .filter(|n| n.ends_with(TMP_SUFFIX))
            .cloned()
            .collect();
        let snaps = sorted_snaps(&names);
        let old = snaps.len().saturating_sub(self.keep);
        doomed.extend(
            snaps[..old]
                .iter()
                .filter(|n| n.as_str() != just_saved)
                .cloned(),
        );
        if doomed.is_empty() {
            return Ok(());
        }
        for name in &doomed {
            self.disk.remove(name).map_err(io_err("remove", name))?;
        }
        self.disk.sync_dir().map_err(io_err("sync_dir", DIR))
    }

    /// The snapshot files, oldest first (by index, then term). Files whose
    /// names are not exactly ours (`.tmp`, `.broken`, anything else) are left
    /// out.
    pub fn list(&mut self) -> Result<Vec<String>> {
        let names = self.disk.list().map_err(io_err("list", DIR))?;
        Ok(sorted_snaps(&names))
    }

    /// Finds the newest snapshot that passes every check.
    ///
    /// Newer files that fail (bad magic, version, CRC, framing, or metadata
    /// that disagrees with the file name) are not passed over in silence:
    /// each is renamed to `<name>.broken` (so the next start does not try it
    /// again), the directory is synced, and it is returned in
    /// [`Loaded::rejected`]. A disk error (reading, renaming) is returned as
    /// [`Error::Io`]: that is not corruption, and guessing past it is unsafe.
    pub fn load_newest(&mut self) -> Result<Loaded> {
        let mut loaded = Loaded::default();
        for name in self.list()?.into_iter().rev() {
            let buf = self.disk.read(&name).map_err(io_err("read", &name))?;
            match check(&name, Bytes::from(buf)) {
                Ok(snapshot) => {
                    loaded.snapshot = Some((name, snapshot));
                    break;
                }
                Err(err) => {
                    let broken = format!("{name}{BROKEN_SUFFIX}");
                    self.disk
                        .rename(&name, &broken)
                        .map_err(io_err("rename", &name))?;
                    self.disk.sync_dir().map_err(io_err("sync_dir", DIR))?;
                    loaded.rejected.push((name, err));
                }
            }
        }
        Ok(loaded)
    }
}

/// Decodes `buf`, read from `name`, and checks it matches its name.
fn check(name: &str, buf: Bytes) -> Result<Snapshot> {
    let corrupt = |offset: usize, reason: String| Error::Corrupt {
        file: name.to_string(),
        offset: offset as u64,
        reason,
    };
    let s = decode_snapshot(buf).map_err(|e| corrupt(e.offset, e.what.to_string()))?;
    let named = parse_snap_name(name);
    if named != Some((s.meta.term, s.meta.index)) {
        return Err(corrupt(
            super::file::INDEX_OFFSET,
            format!(
                "holds term {} index {}, which its name does not",
                s.meta.term, s.meta.index
            ),
        ));
    }
    Ok(s)
}

/// The snapshot files among `names`, oldest first by (index, term).
fn sorted_snaps(names: &[String]) -> Vec<String> {
    let mut snaps: Vec<(u64, u64, &String)> = names
        .iter()
        .filter_map(|n| parse_snap_name(n).map(|(term, index)| (index, term, n)))
        .collect();
    snaps.sort();
    snaps.into_iter().map(|(_, _, n)| n.clone()).collect()
}
