//! [`Disk`] over a real directory with `std::fs`.
//!
//! This is driver code: it is the one place in the library allowed to touch the
//! file system, which is why it opts out of the `disallowed_methods` lint.
#![allow(clippy::disallowed_methods)]

use super::{check_name, Disk};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// A directory on the real file system. Appends go through cached open file
/// handles, so a stream of appends to one segment costs one `write(2)` each.
#[derive(Debug)]
pub struct FsDisk {
    /// The directory every name is relative to.
    dir: PathBuf,
    /// Open handles for appending and syncing, by file name. Dropped on
    /// rename, remove and truncate so no stale handle outlives its file.
    handles: HashMap<String, File>,
    /// Whether `sync` and `sync_dir` reach the disk. Off only for
    /// `--unsafe-no-fsync`.
    fsync: bool,
}

impl FsDisk {
    /// Opens `dir` as a disk, creating it (and its parents) if needed. A newly
    /// created directory is made durable by syncing its parent.
    pub fn open(dir: impl AsRef<Path>) -> io::Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        if !dir.is_dir() {
            std::fs::create_dir_all(&dir)?;
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                File::open(parent)?.sync_all()?;
            }
        }
        Ok(Self {
            dir,
            handles: HashMap::new(),
            fsync: true,
        })
    }

    /// With `false`, [`Disk::sync`] and [`Disk::sync_dir`] return at once
    /// without fsync: writes reach the page cache only, and a power loss can
    /// lose what was acknowledged (`--unsafe-no-fsync`).
    pub fn with_fsync(mut self, fsync: bool) -> Self {
        self.fsync = fsync;
        self
    }

    /// The directory this disk lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, name: &str) -> io::Result<PathBuf> {
        check_name(name)?;
        Ok(self.dir.join(name))
    }

    fn handle(&mut self, name: &str) -> io::Result<&mut File> {
        let path = self.path(name)?;
        if !self.handles.contains_key(name) {
            let file = OpenOptions::new().append(true).open(path)?;
            self.handles.insert(name.to_string(), file);
        }
        Ok(self
            .handles
            .get_mut(name)
            .expect("handle was just inserted"))
    }
}

impl Disk for FsDisk {
    fn create(&mut self, name: &str) -> io::Result<()> {
        let path = self.path(name)?;
        let file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(path)?;
        self.handles.insert(name.to_string(), file);
        Ok(())
    }

    fn append(&mut self, name: &str, data: &[u8]) -> io::Result<()> {
        self.handle(name)?.write_all(data)
    }

    fn read(&mut self, name: &str) -> io::Result<Vec<u8>> {
        let mut buf = Vec::new();
        File::open(self.path(name)?)?.read_to_end(&mut buf)?;
        Ok(buf)
    }

    fn len(&mut self, name: &str) -> io::Result<u64> {
        Ok(std::fs::metadata(self.path(name)?)?.len())
    }

    fn sync(&mut self, name: &str) -> io::Result<()> {
        let fsync = self.fsync;
        let file = self.handle(name)?;
        if fsync {
            file.sync_data()?;
        }
        Ok(())
    }

    fn truncate(&mut self, name: &str, len: u64) -> io::Result<()> {
        let path = self.path(name)?;
        self.handles.remove(name);
        OpenOptions::new().write(true).open(path)?.set_len(len)
    }

    fn rename(&mut self, from: &str, to: &str) -> io::Result<()> {
        let (src, dst) = (self.path(from)?, self.path(to)?);
        self.handles.remove(from);
        self.handles.remove(to);
        std::fs::rename(src, dst)
    }

    fn remove(&mut self, name: &str) -> io::Result<()> {
        let path = self.path(name)?;
        self.handles.remove(name);
        std::fs::remove_file(path)
    }

    fn list(&mut self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                if let Ok(name) = entry.file_name().into_string() {
                    names.push(name);
                }
            }
        }
        names.sort();
        Ok(names)
    }

    fn sync_dir(&mut self) -> io::Result<()> {
        if !self.fsync {
            return Ok(());
        }
        File::open(&self.dir)?.sync_all()
    }
}
