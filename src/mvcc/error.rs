//! Errors a client can cause in the key-value store, with etcd's exact messages.
//!
//! Clients match on these strings (etcd's `rpctypes/error.go`), so each
//! `Display` is the message etcd puts in its gRPC status, and
//! [`Error::grpc_code`] is the status code etcd uses. All of them are
//! deterministic: every replica applying the same request fails the same way,
//! so an apply error never makes replicas diverge.

/// gRPC status codes used by the key-value store (numeric values as in the
/// gRPC spec, so the server can convert without a lookup table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum GrpcCode {
    InvalidArgument = 3,
    OutOfRange = 11,
}

/// A request the store refuses. Nothing is changed when one is returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The requested revision is below the compaction revision.
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted,
    /// The requested revision is above the current revision.
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRev,
    /// A key (of a request, compare or op) is empty.
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    /// `ignore_value`/`ignore_lease` on a key that does not exist, or an empty
    /// op in a txn (etcd uses this error for both).
    #[error("etcdserver: key not found")]
    KeyNotFound,
    /// `ignore_value` together with a value.
    #[error("etcdserver: value is provided")]
    ValueProvided,
    /// `ignore_lease` together with a lease.
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    /// More compares or ops in one txn branch than the limit.
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    /// Two writes of one txn touch the same key.
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    /// A sort order or target that is not one of the enum's values.
    #[error("etcdserver: invalid sort option")]
    InvalidSortOption,
}

impl Error {
    /// The gRPC status code etcd returns with this error.
    pub fn grpc_code(self) -> GrpcCode {
        match self {
            Error::Compacted | Error::FutureRev => GrpcCode::OutOfRange,
            _ => GrpcCode::InvalidArgument,
        }
    }
}
