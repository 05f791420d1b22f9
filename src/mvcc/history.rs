//! Reads of the store's history for the watch and lease components: the
//! events of a key range since a revision, the leases a write would attach
//! keys to, the live keys attached to leases, and deleting a set of keys at
//! one revision (a lease's revocation).

use super::{key_bounds, Store, Version};
use crate::proto::etcdserverpb::{request_op::Request, DeleteRangeRequest, TxnRequest};
use crate::proto::mvccpb::{event::EventType, Event, KeyValue};
use bytes::Bytes;

impl Store {
    /// The events of the keys `key`/`range_end` name at revisions
    /// `from..=current`, in revision order, each with the key's previous
    /// version as `prev_kv` when it is still retained. Whole revisions only:
    /// it stops after the revision at which the count reaches `max` (so a
    /// watcher never sees part of a revision). Returns the events and the
    /// revision to read from next (`current + 1` when it read everything).
    ///
    /// The caller makes sure `from` is at or above the compaction revision:
    /// below it, deletes are no longer retained and the events would be
    /// incomplete. At it, the deletes compaction kept are included.
    /// Walks every key of the range: the cost of catching up is the range's
    /// size, paid only by watchers that fell behind.
    pub fn events_from(
        &self,
        key: &[u8],
        range_end: &[u8],
        from: i64,
        max: usize,
    ) -> (Vec<Event>, i64) {
        let Some(bounds) = key_bounds(key, range_end) else {
            return (Vec::new(), self.current + 1);
        };
        let mut found: Vec<(super::Revision, Event)> = Vec::new();
        if from == self.compacted {
            for k in &self.kept_deletes {
                let Some(t) = &k.tombstone else { continue };
                if super::in_bounds(&bounds, &k.key) {
                    let prev = k.prev.as_ref().map(|p| p.to_kv(false));
                    found.push((t.rev(), event_of(t, prev)));
                }
            }
        }
        for history in self.keys.range(bounds) {
            let first = history.partition_point(|v| v.main() < from);
            for i in first..history.len() {
                let prev = match i.checked_sub(1) {
                    Some(p) => Some(&history[p]).filter(|p| !p.is_tombstone()),
                    // Compaction dropped it; kept if this change is at the
                    // compaction revision.
                    None if history[i].main() == self.compacted => self.kept_prev(history[i].key()),
                    None => None,
                }
                .map(|p| p.to_kv(false));
                found.push((history[i].rev(), event_of(&history[i], prev)));
            }
        }
        found.sort_unstable_by_key(|(rev, _)| *rev);
        let mut next = self.current + 1;
        if found.len() > max {
            let last = found[max.max(1) - 1].0.main;
            let cut = found.partition_point(|(rev, _)| rev.main <= last);
            found.truncate(cut);
            next = last + 1;
        }
        (found.into_iter().map(|(_, e)| e).collect(), next)
    }

    /// The leases the writes of `req` would attach keys to: its puts that
    /// name a lease (not those keeping the key's own), in the branch its
    /// compares choose, nested txns included. The node checks they exist
    /// before applying the txn, as etcd does.
    pub fn txn_leases(&self, req: &TxnRequest) -> Vec<i64> {
        let mut out = Vec::new();
        self.collect_txn_leases(req, &mut out);
        out
    }

    fn collect_txn_leases(&self, req: &TxnRequest, out: &mut Vec<i64>) {
        // Compares, nested ones included, read the state the txn begins from.
        let succeeded = req
            .compare
            .iter()
            .all(|c| self.compare_holds(c, self.current));
        let ops = if succeeded {
            &req.success
        } else {
            &req.failure
        };
        for op in ops {
            match &op.request {
                Some(Request::RequestPut(p)) if p.lease != 0 && !p.ignore_lease => {
                    out.push(p.lease)
                }
                Some(Request::RequestTxn(t)) => self.collect_txn_leases(t, out),
                _ => {}
            }
        }
    }

    /// Every live key attached to a lease, with the lease: what the lessor's
    /// key sets are rebuilt from after a snapshot.
    pub fn leased_keys(&self) -> impl Iterator<Item = (Bytes, i64)> + '_ {
        self.keys.iter().filter_map(|history| {
            history
                .last()
                .filter(|v| !v.is_tombstone() && v.lease != 0)
                .map(|v| (v.key_bytes(), v.lease))
        })
    }

    /// Deletes those of `keys` that are live, all at one revision (none taken
    /// if none is live): how a revoked or expired lease takes its keys.
    pub fn delete_keys(&mut self, keys: &[Bytes]) -> Vec<Event> {
        let written = self.write(|tx| {
            for key in keys {
                tx.delete_range(&DeleteRangeRequest {
                    key: key.clone(),
                    ..Default::default()
                });
            }
            Ok(())
        });
        written.map(|(_, events)| events).unwrap_or_default()
    }
}

/// The event that wrote `version`.
fn event_of(version: &Version, prev: Option<KeyValue>) -> Event {
    let (kind, kv) = if version.is_tombstone() {
        (
            EventType::Delete,
            KeyValue {
                key: version.key_bytes(),
                mod_revision: version.main(),
                ..Default::default()
            },
        )
    } else {
        (EventType::Put, version.to_kv(false))
    };
    Event {
        r#type: kind as i32,
        kv: Some(kv),
        prev_kv: prev,
    }
}
