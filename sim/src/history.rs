//! The history a simulation records: every client operation with when it was
//! invoked, when (and whether) it completed, what it asked and what it got.
//!
//! Times are simulated nanoseconds since the run began. An operation whose
//! outcome is unknown (the client timed out, or lost its connection after
//! sending) has `complete: None` and `ret: Ret::Unknown`: it may or may not
//! have taken effect, at any time after its invocation.

/// A key's value and metadata as a read returned it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Kv {
    pub value: String,
    pub mod_revision: i64,
    pub create_revision: i64,
    pub version: i64,
}

/// What a client asked.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Call {
    /// Put `value` at `key`.
    Put { key: String, value: String },
    /// Linearizable get of one key.
    Get { key: String },
    /// Delete one key.
    Delete { key: String },
    /// Txn: if `key`'s mod_revision equals `expect_mod_revision` (0: the key
    /// does not exist) then put `value`, else get `key`.
    Cas {
        key: String,
        expect_mod_revision: i64,
        value: String,
    },
}

impl Call {
    /// The one key the operation touches.
    pub fn key(&self) -> &str {
        match self {
            Call::Put { key, .. }
            | Call::Get { key }
            | Call::Delete { key }
            | Call::Cas { key, .. } => key,
        }
    }

    /// Whether the operation can change the store.
    pub fn is_write(&self) -> bool {
        !matches!(self, Call::Get { .. })
    }
}

/// What the client got back.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Ret {
    /// The put took revision `revision`.
    Put { revision: i64 },
    /// The header revision, and the key as read (None: absent).
    Get { revision: i64, kv: Option<Kv> },
    /// The header revision and how many keys were deleted (0 or 1).
    Delete { revision: i64, deleted: i64 },
    /// Whether the compare held; the header revision; on failure, the key as
    /// the failure branch read it.
    Cas {
        revision: i64,
        succeeded: bool,
        kv: Option<Kv>,
    },
    /// The request definitely did not take effect (e.g. "no leader" before
    /// it was proposed).
    Failed,
    /// It may or may not have taken effect.
    Unknown,
}

/// One operation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Op {
    /// Which client issued it (a client runs one operation at a time).
    pub client: u32,
    /// When the client sent it.
    pub invoke: u64,
    /// When the answer arrived; `None` for an unknown outcome.
    pub complete: Option<u64>,
    pub call: Call,
    pub ret: Ret,
}

/// A whole run's operations, in invocation order.
pub type History = Vec<Op>;
