//! The lessor: leases, their keys, and when they expire. Sans-IO.
//!
//! # What it owns
//!
//! The replicated part of lease state — every lease's ID, granted TTL and
//! `renewed_at` (the raft index of its grant or last keep-alive) — changes
//! only when the node applies a committed request, so every member holds the
//! same. Which live keys belong to which lease follows from the MVCC events
//! the node hands to [`Lessor::on_events`] (a put's `kv.lease` attaches, its
//! `prev_kv.lease` detaches), and after a snapshot from the store itself.
//!
//! The volatile part is each lease's *deadline*, in this member's ticks. A
//! member sets it to `now + TTL` when it applies a grant or a keep-alive;
//! only the leader acts on it. A member that becomes leader first extends
//! every deadline to `now + TTL + extend` ([`Lessor::promote`], etcd's
//! Promote), so a lease never expires early because leadership moved: the
//! old leader's countdowns are not trusted, and the new one restarts them.
//!
//! # Expiry
//!
//! The leader asks [`Lessor::expired`] on every tick; the node proposes a
//! `LeaseExpire { id, renewed_at }` for each lease returned. Applying it
//! revokes the lease only if `renewed_at` still matches, so a keep-alive
//! committed between the leader's decision and the expiry wins.
//!
//! # Invariants
//!
//! - A key is in at most one lease's key set, the lease its live version
//!   names, and only while that lease exists.
//! - Every lease's TTL is at least the minimum TTL the lessor was built with.

use crate::proto::cairnpb::{LeaseRecord, LeaseRecordList};
use crate::proto::etcdserverpb::LeaseGrantRequest;
use crate::proto::mvccpb::Event;
use bytes::Bytes;
use prost::Message as _;
use std::collections::{BTreeMap, BTreeSet};

/// etcd's largest TTL, in seconds.
pub const MAX_TTL: i64 = 9_000_000_000;

/// A lease request the lessor refuses, with etcd's messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LeaseError {
    /// gRPC NOT_FOUND.
    #[error("etcdserver: requested lease not found")]
    NotFound,
    /// gRPC FAILED_PRECONDITION.
    #[error("etcdserver: lease already exists")]
    Exists,
    /// gRPC OUT_OF_RANGE.
    #[error("etcdserver: too large lease TTL")]
    TtlTooLarge,
}

/// One lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Granted TTL in seconds.
    pub ttl: i64,
    /// Raft index of the grant or the last keep-alive (replicated).
    pub renewed_at: u64,
    /// Live keys attached to it.
    pub keys: BTreeSet<Bytes>,
    /// This member's tick at which it expires (volatile).
    deadline: u64,
    /// The tick at which this leader last proposed its expiry, if it has.
    expiring: Option<u64>,
}

/// What [`Lessor::time_to_live`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeToLive {
    /// Whole seconds left, as this member counts them.
    pub remaining: i64,
    pub granted: i64,
    pub keys: Vec<Bytes>,
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct Lessor {
    leases: BTreeMap<i64, Lease>,
    /// The smallest TTL granted, in seconds.
    min_ttl: i64,
    /// Milliseconds per tick of this member's clock (its heartbeat interval).
    tick_ms: u64,
}

impl Lessor {
    /// An empty lessor. `min_ttl` is etcd's minimum TTL (1.5 election
    /// timeouts, rounded up to seconds); `tick_ms` converts TTLs to ticks.
    pub fn new(min_ttl: i64, tick_ms: u64) -> Self {
        Self {
            leases: BTreeMap::new(),
            min_ttl: min_ttl.max(1),
            tick_ms: tick_ms.max(1),
        }
    }

    fn ttl_ticks(&self, ttl: i64) -> u64 {
        ticks(ttl, self.tick_ms)
    }

    /// Whether lease `id` exists.
    pub fn exists(&self, id: i64) -> bool {
        self.leases.contains_key(&id)
    }

    /// The lease `id`, if it exists.
    pub fn get(&self, id: i64) -> Option<&Lease> {
        self.leases.get(&id)
    }

    /// Every lease's ID, in order.
    pub fn ids(&self) -> Vec<i64> {
        self.leases.keys().copied().collect()
    }

    /// Applies a grant at raft index `index`; returns the TTL granted.
    pub fn grant(
        &mut self,
        req: &LeaseGrantRequest,
        index: u64,
        now: u64,
    ) -> Result<i64, LeaseError> {
        if req.ttl > MAX_TTL {
            return Err(LeaseError::TtlTooLarge);
        }
        // The proposer fills in an ID when the client left it 0.
        if req.id == 0 {
            return Err(LeaseError::NotFound);
        }
        if self.leases.contains_key(&req.id) {
            return Err(LeaseError::Exists);
        }
        let ttl = req.ttl.max(self.min_ttl);
        let deadline = now + self.ttl_ticks(ttl);
        self.leases.insert(
            req.id,
            Lease {
                ttl,
                renewed_at: index,
                keys: BTreeSet::new(),
                deadline,
                expiring: None,
            },
        );
        Ok(ttl)
    }

    /// Applies a keep-alive at raft index `index`: the lease's countdown
    /// starts over. Returns its TTL, or `None` if it does not exist.
    pub fn renew(&mut self, id: i64, index: u64, now: u64) -> Option<i64> {
        let tick_ms = self.tick_ms;
        let lease = self.leases.get_mut(&id)?;
        lease.renewed_at = index;
        lease.deadline = now + ticks(lease.ttl, tick_ms);
        lease.expiring = None;
        Some(lease.ttl)
    }

    /// Applies a revoke: removes the lease and returns its keys, which the
    /// node deletes at one revision.
    pub fn revoke(&mut self, id: i64) -> Result<Vec<Bytes>, LeaseError> {
        let lease = self.leases.remove(&id).ok_or(LeaseError::NotFound)?;
        Ok(lease.keys.into_iter().collect())
    }

    /// Applies an expiry the leader proposed: revokes the lease if it was
    /// not renewed since (`renewed_at` matches). Returns its keys if so.
    pub fn expire(&mut self, id: i64, renewed_at: u64) -> Option<Vec<Bytes>> {
        if self.leases.get(&id)?.renewed_at != renewed_at {
            return None;
        }
        self.revoke(id).ok()
    }

    /// Keeps key sets in step with applied MVCC events.
    pub fn on_events(&mut self, events: &[Event]) {
        for e in events {
            let Some(kv) = &e.kv else { continue };
            if let Some(prev) = e.prev_kv.as_ref().filter(|p| p.lease != 0) {
                if let Some(l) = self.leases.get_mut(&prev.lease) {
                    l.keys.remove(&prev.key);
                }
            }
            // A delete event's kv carries no lease.
            if kv.lease != 0 {
                if let Some(l) = self.leases.get_mut(&kv.lease) {
                    l.keys.insert(kv.key.clone());
                }
            }
        }
    }

    /// Leases past their deadline that this member, as leader, has not
    /// proposed to expire in the last `retry` ticks: `(id, renewed_at)` for
    /// each, marked as being expired. At most `max` per call, so a mass
    /// expiry is spread over ticks as etcd spreads it.
    pub fn expired(&mut self, now: u64, retry: u64, max: usize) -> Vec<(i64, u64)> {
        let mut out = Vec::new();
        for (id, lease) in &mut self.leases {
            if out.len() >= max {
                break;
            }
            let due = lease.deadline <= now;
            let pending = lease.expiring.is_some_and(|t| now < t + retry);
            if due && !pending {
                lease.expiring = Some(now);
                out.push((*id, lease.renewed_at));
            }
        }
        out
    }

    /// This member became leader at tick `now`: every lease gets its full TTL
    /// again, plus `extend` ticks (etcd's Promote).
    pub fn promote(&mut self, now: u64, extend: u64) {
        let tick_ms = self.tick_ms;
        for lease in self.leases.values_mut() {
            lease.deadline =
                if crate::planted::active(crate::planted::Bug::LeaseExpiresOnLeaderChange) {
                    now
                } else {
                    now + extend + ticks(lease.ttl, tick_ms)
                };
            lease.expiring = None;
        }
    }

    /// Lease `id`'s remaining time as this member counts it.
    pub fn time_to_live(&self, id: i64, now: u64) -> Option<TimeToLive> {
        let lease = self.leases.get(&id)?;
        let left = lease
            .deadline
            .saturating_sub(now)
            .saturating_mul(self.tick_ms)
            / 1000;
        Some(TimeToLive {
            remaining: left as i64,
            granted: lease.ttl,
            keys: lease.keys.iter().cloned().collect(),
        })
    }

    /// The replicated state, for a snapshot's lease section.
    pub fn encode(&self) -> Vec<u8> {
        LeaseRecordList {
            leases: self
                .leases
                .iter()
                .map(|(id, l)| LeaseRecord {
                    id: *id,
                    ttl: l.ttl,
                    renewed_at: l.renewed_at,
                })
                .collect(),
        }
        .encode_to_vec()
    }

    /// Replaces the state with a snapshot's: `records` from its lease
    /// section, keys from the store's live keys. Deadlines start over at
    /// `now + TTL`.
    pub fn restore(
        &mut self,
        records: &[LeaseRecord],
        leased_keys: impl Iterator<Item = (Bytes, i64)>,
        now: u64,
    ) {
        self.leases.clear();
        for r in records {
            let deadline = now + self.ttl_ticks(r.ttl);
            self.leases.insert(
                r.id,
                Lease {
                    ttl: r.ttl,
                    renewed_at: r.renewed_at,
                    keys: BTreeSet::new(),
                    deadline,
                    expiring: None,
                },
            );
        }
        for (key, id) in leased_keys {
            if let Some(l) = self.leases.get_mut(&id) {
                l.keys.insert(key);
            }
        }
    }
}

/// `ttl` seconds in whole ticks of `tick_ms` milliseconds, rounded up: a
/// lease never expires early.
fn ticks(ttl: i64, tick_ms: u64) -> u64 {
    (ttl.max(0) as u64).saturating_mul(1000).div_ceil(tick_ms)
}

/// Lease records out of a snapshot's lease section (none if it has none).
pub fn records_from_section(bytes: Bytes) -> Vec<LeaseRecord> {
    LeaseRecordList::decode(bytes)
        .map(|l| l.leases)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
