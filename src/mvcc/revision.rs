//! Revisions, as etcd's `mvcc/revision.go` defines them.
//!
//! Every write transaction the store applies gets the next *main* revision;
//! each change inside it (a put, or the deletion of one key) gets a *sub*
//! revision, 0, 1, 2, ... in the order applied. `{main, sub}` orders every
//! change ever made. Clients see main revisions only (`mod_revision`,
//! `create_revision`, header revisions); sub revisions order changes within
//! one revision for watch events and the hash.

/// A point in the store's history: `main` is the transaction, `sub` the
/// change within it. Ordered by `main`, then `sub`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Revision {
    /// The store revision of the write transaction.
    pub main: i64,
    /// The index of the change within that transaction.
    pub sub: i64,
}

impl Revision {
    /// A revision from its two parts.
    pub const fn new(main: i64, sub: i64) -> Self {
        Self { main, sub }
    }
}
