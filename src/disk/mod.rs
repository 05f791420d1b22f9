//! The one door through which cairn touches storage.
//!
//! Every byte that reaches a disk goes through [`Disk`]: the WAL, the snapshot
//! store and recovery are written against this trait and nothing else. Two
//! implementations exist:
//!
//! - [`FsDisk`], a directory on a real file system (`std::fs`, real `fsync`).
//! - [`MemDisk`], an in-memory directory that keeps what was synced apart from
//!   what was only written, can [crash](MemDisk::crash) (losing unsynced data)
//!   and can fail any operation on demand. Unit tests, fuzzing and the
//!   simulator build on it.
//!
//! # The contract
//!
//! A `Disk` is one flat directory of named files. Names are plain file names
//! (no `/`), so a component that needs two directories holds two disks.
//!
//! Durability follows POSIX, spelled out so both implementations agree:
//! - Data written by [`append`](Disk::append) or cut by
//!   [`truncate`](Disk::truncate) is durable only after [`sync`](Disk::sync) of
//!   that file returns `Ok`.
//! - A file's existence and name ([`create`](Disk::create),
//!   [`rename`](Disk::rename), [`remove`](Disk::remove)) are durable only after
//!   [`sync_dir`](Disk::sync_dir) returns `Ok`.
//! - An error from `sync` leaves the file's durable contents unknown. Callers
//!   must not carry on as if the write happened (ARCHITECTURE.md rule 4).
//!
//! Errors are `std::io::Error` and keep their [`io::ErrorKind`]: a full disk
//! (`StorageFull`) is not a failed device (`Other`, EIO) is not a missing file
//! (`NotFound`). Detecting corrupt *contents* is the caller's job (CRCs).

mod fs;
mod mem;

pub use fs::FsDisk;
pub use mem::{DiskOp, FaultFn, MemDisk};

use std::io;

/// A flat directory of files with explicit durability. See the module docs for
/// the durability contract every implementation keeps.
pub trait Disk: Send {
    /// Creates an empty file. Fails with `AlreadyExists` if `name` exists.
    fn create(&mut self, name: &str) -> io::Result<()>;
    /// Appends `data` to the end of the file. Not durable until [`Disk::sync`].
    fn append(&mut self, name: &str, data: &[u8]) -> io::Result<()>;
    /// Reads the whole file as it is now (synced or not).
    fn read(&mut self, name: &str) -> io::Result<Vec<u8>>;
    /// Returns the file's current length in bytes.
    fn len(&mut self, name: &str) -> io::Result<u64>;
    /// Makes the file's contents durable (`fdatasync`).
    fn sync(&mut self, name: &str) -> io::Result<()>;
    /// Cuts the file to `len` bytes. Not durable until [`Disk::sync`].
    fn truncate(&mut self, name: &str, len: u64) -> io::Result<()>;
    /// Atomically renames `from` to `to`, replacing `to` if it exists.
    /// Not durable until [`Disk::sync_dir`].
    fn rename(&mut self, from: &str, to: &str) -> io::Result<()>;
    /// Removes the file. Not durable until [`Disk::sync_dir`].
    fn remove(&mut self, name: &str) -> io::Result<()>;
    /// Lists the files in the directory, sorted by name.
    fn list(&mut self) -> io::Result<Vec<String>>;
    /// Makes the directory's entries (creates, renames, removes) durable.
    fn sync_dir(&mut self) -> io::Result<()>;
}

/// Checks that `name` is a plain file name, so no caller can reach outside
/// the disk's directory.
pub(crate) fn check_name(name: &str) -> io::Result<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\\', '\0']) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid file name {name:?}"),
        ));
    }
    Ok(())
}
