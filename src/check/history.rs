//! The history a run records (the simulator's, or `cairn verify`'s against a
//! real cluster): every client operation with when it was invoked, when (and
//! whether) it completed, what it asked and what it got.
//!
//! Times are nanoseconds since the run began (simulated in `sim/`, the wall
//! clock's in `cairn verify`). An operation whose
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

/// A watch event's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EventKind {
    Put,
    Delete,
}

/// One event as a watcher received it. For a delete, `value` is empty and
/// `create_revision`, `version` and `lease` are 0 (etcd's tombstone).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Event {
    pub kind: EventKind,
    pub key: String,
    pub value: String,
    pub mod_revision: i64,
    pub create_revision: i64,
    pub version: i64,
    pub lease: i64,
    /// The key-value before the event, when the watcher asked for it and the
    /// server sent one.
    pub prev: Option<PrevKv>,
}

/// An event's `prev_kv`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PrevKv {
    pub value: String,
    pub mod_revision: i64,
    pub create_revision: i64,
    pub version: i64,
    pub lease: i64,
}

/// One response on a watcher, other than its `created` response.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WatchResponse {
    /// Simulated nanoseconds since the start when the client received it.
    pub at: u64,
    pub header_revision: i64,
    /// More responses for the same revision follow (fragment=true watchers).
    pub fragment: bool,
    pub canceled: bool,
    pub compact_revision: i64,
    pub events: Vec<Event>,
}

impl WatchResponse {
    /// A progress response: no events, not a cancel. Its header revision
    /// promises that every event at or below it was sent.
    pub fn is_progress(&self) -> bool {
        self.events.is_empty() && !self.canceled && !self.fragment
    }
}

/// How a watcher ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WatchEnd {
    /// Still open when the run ended.
    Open,
    /// The client canceled it and got the canceled response.
    Canceled,
    /// The server canceled it because its start was compacted.
    Compacted(i64),
    /// The server refused or canceled it for another reason.
    Refused,
    /// Its stream broke (member crashed, connection lost, no answer).
    Broken,
    /// Its create request was never answered.
    NeverCreated,
}

/// One watcher: what was asked, and everything it received.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WatchRecord {
    /// Which watching client (one stream at a time per client).
    pub client: u32,
    /// The member the stream talked to.
    pub member: usize,
    pub key: String,
    /// Empty: only `key`; "\0": every key >= `key`; else the exclusive end.
    pub range_end: String,
    /// As requested; 0 means the member's current revision + 1.
    pub start_revision: i64,
    pub prev_kv: bool,
    pub no_put: bool,
    pub no_delete: bool,
    pub fragment: bool,
    /// The watcher this one resumes (created from its last vouched revision
    /// + 1), by index in the run's watch records.
    pub resumes: Option<usize>,
    /// When the create request was sent.
    pub invoke: u64,
    /// The created response's time and header revision (None: never created).
    pub created: Option<(u64, i64)>,
    pub watch_id: i64,
    pub responses: Vec<WatchResponse>,
    /// When progress requests were sent on its stream while it was open.
    pub progress_requests: Vec<u64>,
    pub end: WatchEnd,
}

impl WatchRecord {
    /// Whether `key` is in the watcher's range.
    pub fn covers(&self, key: &str) -> bool {
        if self.range_end.is_empty() {
            key == self.key
        } else if self.range_end == "\0" {
            key >= self.key.as_str()
        } else {
            key >= self.key.as_str() && key < self.range_end.as_str()
        }
    }

    /// Whether the watcher's filters let an event of `kind` through.
    pub fn passes(&self, kind: EventKind) -> bool {
        match kind {
            EventKind::Put => !self.no_put,
            EventKind::Delete => !self.no_delete,
        }
    }

    /// The first revision the watcher reports: the requested start, or the
    /// created response's revision + 1.
    pub fn first_revision(&self) -> Option<i64> {
        if self.start_revision > 0 {
            Some(self.start_revision)
        } else {
            self.created.map(|(_, r)| r + 1)
        }
    }

    /// The highest revision the watcher has vouched for: every event in its
    /// range at or below it was delivered. The last complete revision of an
    /// event response, or a progress response's header revision; at least
    /// the first revision - 1.
    pub fn vouched(&self) -> i64 {
        let mut v = self.first_revision().map_or(0, |f| f - 1);
        for r in &self.responses {
            if r.canceled {
                continue;
            }
            if r.is_progress() {
                v = v.max(r.header_revision);
            } else if let Some(last) = r.events.last() {
                let done = if r.fragment {
                    last.mod_revision - 1
                } else {
                    last.mod_revision
                };
                v = v.max(done);
            }
        }
        v
    }
}

/// A lease request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LeaseCall {
    /// Grant a lease; `id` 0 lets the server pick.
    Grant {
        id: i64,
        ttl: i64,
    },
    Revoke {
        id: i64,
    },
    /// One keep-alive request on the client's keep-alive stream.
    KeepAlive {
        id: i64,
    },
    /// Put `value` at `key`, attached to lease `lease` (0: no lease, which
    /// detaches the key from any lease).
    Put {
        key: String,
        value: String,
        lease: i64,
    },
    /// Linearizable get of one key.
    Get {
        key: String,
    },
}

/// What a lease request got.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LeaseRet {
    Granted {
        id: i64,
        ttl: i64,
        revision: i64,
    },
    /// An error that proves the request had no effect (lease already exists,
    /// lease not found, no leader).
    Refused(String),
    Revoked {
        revision: i64,
    },
    /// A keep-alive's answer: the granted TTL, 0 if the lease is gone.
    Alive {
        ttl: i64,
    },
    Put {
        revision: i64,
    },
    Get {
        revision: i64,
        kv: Option<(Kv, i64)>,
    },
    Unknown,
}

/// One lease client operation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LeaseOp {
    pub client: u32,
    pub invoke: u64,
    pub complete: Option<u64>,
    pub call: LeaseCall,
    pub ret: LeaseRet,
}

/// Everything a run records besides the key-value history, and what the
/// watch and lease checkers need to know about the run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Extra {
    pub watches: Vec<WatchRecord>,
    pub leases: Vec<LeaseOp>,
    /// The fastest member clock: a member counts a second in this many
    /// simulated seconds (0.9..=1.0 with clock skew, else 1.0).
    pub min_tick_factor: f64,
    /// The longest tick interval, in simulated nanoseconds.
    pub max_tick_nanos: u64,
    /// Multi-key operations (`check::multi`), on keys no single-key op
    /// touches.
    pub multi: Vec<MultiOp>,
}

/// A multi-key request: a txn over several keys, or a range (at a past
/// revision or the current one).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MultiCall {
    /// Range `[key, range_end)` at `revision` (0: the current revision).
    Range {
        key: String,
        range_end: String,
        revision: i64,
    },
    /// Txn: if each key's mod_revision equals its expected one (0: the key
    /// does not exist), put `value` at every key; else get every key.
    Txn {
        keys: Vec<(String, i64)>,
        value: String,
    },
}

/// What a multi-key request got.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MultiRet {
    /// The header revision, and the keys read (at the requested revision,
    /// or at the header revision for a current read), in key order.
    Range {
        revision: i64,
        kvs: Vec<(String, Kv)>,
    },
    /// Whether the compares held; the header revision (the txn's own
    /// revision when it wrote); on failure each key as read.
    Txn {
        revision: i64,
        succeeded: bool,
        kvs: Vec<(String, Option<Kv>)>,
    },
    /// It definitely did not take effect (or, for a range, was refused:
    /// compacted, future revision).
    Failed,
    /// It may or may not have taken effect.
    Unknown,
}

/// One multi-key operation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MultiOp {
    pub client: u32,
    pub invoke: u64,
    pub complete: Option<u64>,
    pub call: MultiCall,
    pub ret: MultiRet,
}
