//! The MVCC store (in progress).
