//! cairn: a distributed key-value store that speaks the etcd v3 API.
//!
//! This crate holds cairn's sans-IO core and the storage it stands on:
//!
//! - [`disk`]: the [`Disk`](disk::Disk) trait, the one door to storage, with a
//!   real (`std::fs`) and an in-memory, crashable implementation.
//! - [`wal`]: the append-only, segmented, CRC-framed write-ahead log that makes
//!   raft's log and hard state durable.
//! - [`snap`]: atomic, checksummed snapshot files.
//! - [`mvcc`]: the in-memory multi-version key-value store with etcd's
//!   revision semantics.
//! - [`lease`]: the lessor: leases, their keys, and expiry from ticks.
//! - [`watch`]: the watch hub: watchers, their bounded queues, catch-up from
//!   the MVCC history.
//! - [`node`]: raft-rs around the store and the lessor: the replicated member.
//! - [`storage`]: a node's data directory and its recovery order.
//! - [`backup`]: backup images to status and restore (`cairn snapshot`);
//!   [`etcd_db`] reads an etcd snapshot (bbolt) for a migration.
//! - [`proto`]: the etcd v3 wire types (`etcdserverpb`, `mvccpb`).
//! - [`check`]: the checkers that judge a recorded client history
//!   (linearizability, watch and lease guarantees), shared by the simulator
//!   and `cairn verify`.
//!
//! Nothing in the core reads a clock, spawns a thread, touches a file except
//! through a `Disk`, or draws ambient randomness; `clippy.toml` enforces it.
//! Two runs fed the same inputs produce the same outputs.

pub mod backup;
pub mod check;
pub mod codec;
pub mod disk;
pub mod error;
pub mod etcd_db;
pub mod lease;
pub mod metrics;
pub mod mvcc;
pub mod node;
pub mod planted;
pub mod proto;
pub mod rng;
pub mod server;
pub mod snap;
pub mod storage;
pub mod wal;
pub mod watch;

pub use error::{Error, Result};
