//! Write transactions: the one path by which the store changes.
//!
//! A [`WriteTxn`] stages changes at revision `current + 1` directly in the key
//! histories (so reads inside the txn see them), numbering them with sub
//! revisions. [`WriteTxn::commit`] makes the revision current if anything
//! changed; [`WriteTxn::rollback`] removes every staged version, leaving the
//! store exactly as it was. Put, DeleteRange and Txn all run through here.

use super::{
    header, key_bytes, version_bytes, visible, Error, History, Result, Revision, Store, Version,
};
use crate::proto::etcdserverpb::{
    request_op::Request, response_op::Response, DeleteRangeRequest, DeleteRangeResponse,
    PutRequest, PutResponse, RangeRequest, RangeResponse, ResponseOp, TxnRequest, TxnResponse,
};
use crate::proto::mvccpb::{event::EventType, Event, KeyValue};

/// Changes staged at one revision. See the module docs.
pub(super) struct WriteTxn<'a> {
    /// The store being changed.
    store: &'a mut Store,
    /// The revision every change takes: the store's current revision + 1.
    main: i64,
    /// The changes staged so far, in order; `events.len()` is the next sub revision.
    events: Vec<Event>,
}

impl<'a> WriteTxn<'a> {
    pub(super) fn begin(store: &'a mut Store) -> Self {
        let main = store.current + 1;
        Self {
            store,
            main,
            events: Vec::new(),
        }
    }

    /// The revision the txn started from: what its compares read.
    fn begin_rev(&self) -> i64 {
        self.main - 1
    }

    /// The newest revision visible inside the txn: its own once it changed something.
    fn read_rev(&self) -> i64 {
        if self.events.is_empty() {
            self.begin_rev()
        } else {
            self.main
        }
    }

    fn next_rev(&self) -> Revision {
        Revision::new(self.main, self.events.len() as i64)
    }

    /// Makes the staged changes current and returns them as events.
    pub(super) fn commit(self) -> Vec<Event> {
        if !self.events.is_empty() {
            self.store.current = self.main;
        }
        self.events
    }

    /// Removes every staged version.
    pub(super) fn rollback(self) {
        for event in &self.events {
            // A key staged twice (a delete, then a put of it) was cleaned on its first event.
            let key = &event.kv.as_ref().expect("staged events carry a kv").key;
            if let Some(history) = self.store.keys.get_mut(key) {
                let main = self.main;
                let staged: u64 = (history.iter().filter(|v| v.main() == main))
                    .map(version_bytes)
                    .sum();
                self.store.in_use -= staged;
                if history.iter().all(|v| v.main() == main) {
                    // Removed whole: the index finds entries by their versions' key.
                    self.store.keys.remove(key);
                    self.store.in_use -= key_bytes(key);
                } else {
                    history.retain(|v| v.main() != main);
                }
            }
        }
    }

    /// Appends `version` to its key's history and records the event, with the
    /// key's previous live version as `prev_kv` (watchers and the lessor use it).
    fn stage(&mut self, version: Version, kind: EventType, prev: Option<KeyValue>) {
        let kv = match kind {
            EventType::Put => version.to_kv(false),
            // etcd's delete event carries the key and the revision of the delete.
            EventType::Delete => KeyValue {
                key: version.key_bytes(),
                mod_revision: version.main(),
                ..Default::default()
            },
        };
        self.store.in_use += version_bytes(&version);
        if let Some(history) = self.store.keys.get_mut(version.key()) {
            history.push(version);
        } else {
            self.store.in_use += key_bytes(version.key());
            // A new key's single version lives inline in the index's slot.
            self.store.keys.insert(History::One(version));
        }
        self.events.push(Event {
            r#type: kind as i32,
            kv: Some(kv),
            prev_kv: prev,
        });
    }

    pub(super) fn put(&mut self, req: &PutRequest) -> Result<PutResponse> {
        let prev = self
            .store
            .keys
            .get(&req.key[..])
            .and_then(|h| visible(h, self.read_rev()))
            .cloned();
        if (req.ignore_value || req.ignore_lease) && prev.is_none() {
            return Err(Error::KeyNotFound);
        }
        let rev = self.next_rev();
        let create = prev.as_ref().map_or(rev.main, |p| p.create);
        let version = prev.as_ref().map_or(1, |p| p.version + 1);
        let lease = match &prev {
            Some(p) if req.ignore_lease => p.lease,
            _ => req.lease,
        };
        let version = match &prev {
            Some(p) if req.ignore_value => Version::put_same_value(p, rev, create, version, lease),
            // A copy: the store keeps no request buffer alive (version.rs).
            _ => Version::put(&req.key, &req.value, rev, create, version, lease),
        };
        let prev = prev.map(|p| p.to_kv(false));
        self.stage(version, EventType::Put, prev.clone());
        Ok(PutResponse {
            header: header(self.main),
            prev_kv: prev.filter(|_| req.prev_kv),
        })
    }

    pub(super) fn delete_range(&mut self, req: &DeleteRangeRequest) -> DeleteRangeResponse {
        let doomed: Vec<(Version, KeyValue)> = self
            .store
            .live_at(&req.key, &req.range_end, self.read_rev())
            .map(|v| (v.clone(), v.to_kv(false)))
            .collect();
        for (live, prev) in &doomed {
            let tombstone = Version::tombstone(live, self.next_rev());
            self.stage(tombstone, EventType::Delete, Some(prev.clone()));
        }
        DeleteRangeResponse {
            header: header(self.read_rev()),
            deleted: doomed.len() as i64,
            prev_kvs: if req.prev_kv {
                doomed.into_iter().map(|(_, kv)| kv).collect()
            } else {
                Vec::new()
            },
        }
    }

    fn range(&self, req: &RangeRequest) -> Result<RangeResponse> {
        // As etcd checks a txn's range ops against the revision it began at.
        if req.revision != 0 {
            if req.revision > self.begin_rev() {
                return Err(Error::FutureRev);
            }
            if req.revision < self.store.compacted {
                return Err(Error::Compacted);
            }
        }
        self.store.range_at(req, self.read_rev())
    }

    pub(super) fn txn(&mut self, req: &TxnRequest) -> Result<TxnResponse> {
        // Compares, nested ones included, read the state the txn began from.
        let succeeded = req
            .compare
            .iter()
            .all(|c| self.store.compare_holds(c, self.begin_rev()));
        let ops = if succeeded {
            &req.success
        } else {
            &req.failure
        };
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            let response = match op.request.as_ref().ok_or(Error::KeyNotFound)? {
                Request::RequestRange(r) => Response::ResponseRange(self.range(r)?),
                Request::RequestPut(p) => Response::ResponsePut(self.put(p)?),
                Request::RequestDeleteRange(d) => {
                    Response::ResponseDeleteRange(self.delete_range(d))
                }
                Request::RequestTxn(t) => Response::ResponseTxn(self.txn(t)?),
            };
            responses.push(ResponseOp {
                response: Some(response),
            });
        }
        Ok(TxnResponse {
            header: header(self.read_rev()),
            succeeded,
            responses,
        })
    }
}
