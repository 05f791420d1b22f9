//! Storage errors: what the WAL, the snapshot store and recovery return.
//!
//! The kind of a failure is kept, never flattened into a string: an
//! [`Error::Io`] carries the original [`std::io::Error`] (so `StorageFull` stays
//! distinguishable from EIO), and [`Error::Corrupt`] says which file and which
//! byte offset failed its check. Client-visible errors of the key-value store
//! live in [`crate::mvcc::Error`].

use std::io;

/// A failure of cairn's storage layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The `Disk` failed an operation. The node must stop if this was a write
    /// or a sync: the durable state is unknown.
    #[error("{op} {file}: {source}")]
    Io {
        /// The operation that failed (`append`, `sync`, ...).
        op: &'static str,
        /// The file it was applied to.
        file: String,
        /// The error as the disk returned it.
        #[source]
        source: io::Error,
    },
    /// Stored data failed a check (CRC, framing, sequence). The node must not
    /// serve from it.
    #[error("corrupt data in {file} at offset {offset}: {reason}")]
    Corrupt {
        /// The file holding the bad data.
        file: String,
        /// Byte offset of the first bad byte or record.
        offset: u64,
        /// What check failed.
        reason: String,
    },
    /// An earlier write or sync failed, so this handle no longer knows what is
    /// durable. Reopen (recover) to go on.
    #[error("storage is poisoned by an earlier failure; recover by reopening")]
    Poisoned,
}

impl Error {
    /// Wraps an I/O error with the operation and file it came from.
    pub fn io(op: &'static str, file: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            op,
            file: file.into(),
            source,
        }
    }

    /// The `io::ErrorKind` of an I/O failure, if this is one.
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        match self {
            Error::Io { source, .. } => Some(source.kind()),
            _ => None,
        }
    }
}

/// Result of a storage operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;
