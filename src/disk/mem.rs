//! [`Disk`] in memory, with crashes and injected faults.
//!
//! `MemDisk` models a POSIX directory closely enough to test crash safety:
//! every file (an inode) has its current contents and the contents as of its
//! last `sync`; the directory has its current entries and the entries as of its
//! last `sync_dir`. [`MemDisk::crash`] throws away everything that was not made
//! durable: unsynced bytes, unsynced truncations, and creates, renames and
//! removes not followed by `sync_dir`.
//!
//! Clones share one directory, so a test (or the simulator) can keep a handle
//! outside a node, crash it, and hand it to the restarted node.
//!
//! A fault hook ([`MemDisk::set_fault`]) sees every operation before it runs and
//! may fail it with any `io::Error`; a failed operation changes nothing.

use super::{check_name, Disk};
use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

/// One operation as the fault hook sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskOp<'a> {
    Create(&'a str),
    /// File name and number of bytes to append.
    Append(&'a str, usize),
    Read(&'a str),
    Len(&'a str),
    Sync(&'a str),
    /// File name and new length.
    Truncate(&'a str, u64),
    Rename(&'a str, &'a str),
    Remove(&'a str),
    List,
    SyncDir,
}

/// A fault hook: returns `Some(error)` to fail the operation.
pub type FaultFn = Box<dyn FnMut(&DiskOp<'_>) -> Option<io::Error> + Send>;

/// An in-memory directory. See the module docs.
#[derive(Clone, Default)]
pub struct MemDisk {
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    /// File contents by inode number.
    inodes: BTreeMap<u64, Inode>,
    /// Directory entries now.
    names: BTreeMap<String, u64>,
    /// Directory entries as of the last `sync_dir`.
    durable_names: BTreeMap<String, u64>,
    /// Next inode number to hand out.
    next_inode: u64,
    /// Consulted before every operation.
    fault: Option<FaultFn>,
}

#[derive(Default, Clone)]
struct Inode {
    /// Contents now.
    data: Vec<u8>,
    /// Contents as of the last successful `sync`.
    durable: Vec<u8>,
}

impl std::fmt::Debug for MemDisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        f.debug_struct("MemDisk")
            .field("files", &state.names.keys().collect::<Vec<_>>())
            .finish()
    }
}

fn not_found(name: &str) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{name}: no such file"))
}

impl State {
    fn inode(&mut self, name: &str) -> io::Result<&mut Inode> {
        let ino = *self.names.get(name).ok_or_else(|| not_found(name))?;
        Ok(self
            .inodes
            .get_mut(&ino)
            .expect("every name points at an inode"))
    }

    fn check(&mut self, op: DiskOp<'_>) -> io::Result<()> {
        match self.fault.as_mut().and_then(|f| f(&op)) {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }

    /// Drops inodes no directory entry (current or durable) points at.
    fn collect_garbage(&mut self) {
        let live: std::collections::BTreeSet<u64> = self
            .names
            .values()
            .chain(self.durable_names.values())
            .copied()
            .collect();
        self.inodes.retain(|ino, _| live.contains(ino));
    }
}

impl MemDisk {
    /// An empty directory.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the state consistent (every
        // mutation is a single step), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Installs (or with `None`, removes) the fault hook.
    pub fn set_fault(&self, fault: Option<FaultFn>) {
        self.lock().fault = fault;
    }

    /// Simulates power loss: keeps only what was made durable.
    pub fn crash(&self) {
        self.crash_with(|_, _, _| Vec::new());
    }

    /// Simulates power loss where the device may have written some of what
    /// was never synced. Directory changes since the last `sync_dir` are lost.
    /// For every surviving file whose unsynced change is an append, `tail` is
    /// called with the file name, the durable length and the unsynced bytes,
    /// and returns what the file holds past its durable length after the
    /// crash: nothing (lost), all of it (kept), a prefix, or a prefix followed
    /// by garbage (a torn sector). Any other unsynced change (a truncation)
    /// is lost.
    pub fn crash_with(&self, mut tail: impl FnMut(&str, usize, &[u8]) -> Vec<u8>) {
        let mut state = self.lock();
        state.names = state.durable_names.clone();
        let names: Vec<(String, u64)> = state.names.iter().map(|(n, i)| (n.clone(), *i)).collect();
        for (name, ino) in names {
            let inode = state
                .inodes
                .get_mut(&ino)
                .expect("every name points at an inode");
            let durable_len = inode.durable.len();
            let after = if inode.data.len() > durable_len && inode.data.starts_with(&inode.durable)
            {
                tail(&name, durable_len, &inode.data[durable_len..])
            } else {
                Vec::new()
            };
            inode.data = inode.durable.clone();
            inode.data.extend_from_slice(&after);
            // What survived the crash is what the disk now holds.
            inode.durable = inode.data.clone();
        }
        for inode in state.inodes.values_mut() {
            inode.data = inode.durable.clone();
        }
        state.collect_garbage();
    }

    /// Flips the bits of `mask` in the byte at `offset` of `name`, in both the
    /// current and the durable contents (a latent media error).
    pub fn corrupt(&self, name: &str, offset: usize, mask: u8) -> io::Result<()> {
        let mut state = self.lock();
        let inode = state.inode(name)?;
        for buf in [&mut inode.data, &mut inode.durable] {
            if let Some(b) = buf.get_mut(offset) {
                *b ^= mask;
            }
        }
        Ok(())
    }

    /// Total bytes currently stored, for tests and reports.
    pub fn total_bytes(&self) -> u64 {
        let state = self.lock();
        state.inodes.values().map(|i| i.data.len() as u64).sum()
    }
}

impl Disk for MemDisk {
    fn create(&mut self, name: &str) -> io::Result<()> {
        check_name(name)?;
        let mut state = self.lock();
        state.check(DiskOp::Create(name))?;
        if state.names.contains_key(name) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{name}: file exists"),
            ));
        }
        let ino = state.next_inode;
        state.next_inode += 1;
        state.inodes.insert(ino, Inode::default());
        state.names.insert(name.to_string(), ino);
        Ok(())
    }

    fn append(&mut self, name: &str, data: &[u8]) -> io::Result<()> {
        let mut state = self.lock();
        state.check(DiskOp::Append(name, data.len()))?;
        state.inode(name)?.data.extend_from_slice(data);
        Ok(())
    }

    fn read(&mut self, name: &str) -> io::Result<Vec<u8>> {
        let mut state = self.lock();
        state.check(DiskOp::Read(name))?;
        Ok(state.inode(name)?.data.clone())
    }

    fn len(&mut self, name: &str) -> io::Result<u64> {
        let mut state = self.lock();
        state.check(DiskOp::Len(name))?;
        Ok(state.inode(name)?.data.len() as u64)
    }

    fn sync(&mut self, name: &str) -> io::Result<()> {
        let mut state = self.lock();
        state.check(DiskOp::Sync(name))?;
        let inode = state.inode(name)?;
        inode.durable = inode.data.clone();
        Ok(())
    }

    fn truncate(&mut self, name: &str, len: u64) -> io::Result<()> {
        let mut state = self.lock();
        state.check(DiskOp::Truncate(name, len))?;
        let len = usize::try_from(len).map_err(|_| io::ErrorKind::InvalidInput)?;
        state.inode(name)?.data.resize(len, 0);
        Ok(())
    }

    fn rename(&mut self, from: &str, to: &str) -> io::Result<()> {
        check_name(to)?;
        let mut state = self.lock();
        state.check(DiskOp::Rename(from, to))?;
        let ino = state.names.remove(from).ok_or_else(|| not_found(from))?;
        state.names.insert(to.to_string(), ino);
        state.collect_garbage();
        Ok(())
    }

    fn remove(&mut self, name: &str) -> io::Result<()> {
        let mut state = self.lock();
        state.check(DiskOp::Remove(name))?;
        state.names.remove(name).ok_or_else(|| not_found(name))?;
        state.collect_garbage();
        Ok(())
    }

    fn list(&mut self) -> io::Result<Vec<String>> {
        let mut state = self.lock();
        state.check(DiskOp::List)?;
        Ok(state.names.keys().cloned().collect())
    }

    fn sync_dir(&mut self) -> io::Result<()> {
        let mut state = self.lock();
        state.check(DiskOp::SyncDir)?;
        state.durable_names = state.names.clone();
        state.collect_garbage();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_keeps_only_durable_state() {
        let mut d = MemDisk::new();
        d.create("a").unwrap();
        d.append("a", b"hello").unwrap();
        d.sync("a").unwrap();
        d.sync_dir().unwrap();
        d.append("a", b" world").unwrap();
        d.create("b").unwrap();
        d.sync("b").unwrap();
        d.crash();
        assert_eq!(d.list().unwrap(), vec!["a".to_string()]);
        assert_eq!(d.read("a").unwrap(), b"hello");
    }

    #[test]
    fn crash_with_can_keep_or_tear_an_unsynced_tail() {
        let mut d = MemDisk::new();
        d.create("a").unwrap();
        d.append("a", b"synced").unwrap();
        d.sync("a").unwrap();
        d.sync_dir().unwrap();
        d.append("a", b"-unsynced").unwrap();
        d.crash_with(|name, durable_len, tail| {
            assert_eq!((name, durable_len, tail), ("a", 6, &b"-unsynced"[..]));
            let mut torn = tail[..3].to_vec();
            torn.extend_from_slice(b"??");
            torn
        });
        assert_eq!(d.read("a").unwrap(), b"synced-un??");
    }

    #[test]
    fn rename_is_durable_only_after_sync_dir() {
        let mut d = MemDisk::new();
        d.create("tmp").unwrap();
        d.append("tmp", b"x").unwrap();
        d.sync("tmp").unwrap();
        d.sync_dir().unwrap();
        d.rename("tmp", "final").unwrap();
        d.crash();
        assert_eq!(d.list().unwrap(), vec!["tmp".to_string()]);
        d.rename("tmp", "final").unwrap();
        d.sync_dir().unwrap();
        d.crash();
        assert_eq!(d.list().unwrap(), vec!["final".to_string()]);
        assert_eq!(d.read("final").unwrap(), b"x");
    }

    #[test]
    fn fault_hook_fails_without_effect_and_keeps_kind() {
        let mut d = MemDisk::new();
        d.create("a").unwrap();
        d.set_fault(Some(Box::new(|op| {
            matches!(op, DiskOp::Append(..)).then(|| io::ErrorKind::StorageFull.into())
        })));
        let err = d.append("a", b"x").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::StorageFull);
        assert_eq!(d.len("a").unwrap(), 0);
    }

    #[test]
    fn names_cannot_escape_the_directory() {
        let mut d = MemDisk::new();
        for bad in ["", "..", "a/b", "/etc"] {
            assert_eq!(
                d.create(bad).unwrap_err().kind(),
                io::ErrorKind::InvalidInput
            );
        }
    }
}
