//! Write transactions: the one path by which the store changes.
//!
//! A [`WriteTxn`] stages changes at revision `current + 1` directly in the key
//! histories (so reads inside the txn see them), numbering them with sub
//! revisions. [`WriteTxn::commit`] makes the revision current if anything
//! changed; [`WriteTxn::rollback`] removes every staged version, leaving the
//! store exactly as it was. Put, DeleteRange and Txn all run through here.

use super::{header, key_bytes, version_bytes, visible, Error, Result, Revision, Store, Version};
use crate::proto::etcdserverpb::{
    request_op::Request, response_op::Response, DeleteRangeRequest, DeleteRangeResponse,
    PutRequest, PutResponse, RangeRequest, RangeResponse, ResponseOp, TxnRequest, TxnResponse,
};
use crate::proto::mvccpb::{event::EventType, Event, KeyValue};
use bytes::Bytes;

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
                let staged: u64 = (history.iter().filter(|v| v.rev.main == main))
                    .map(version_bytes)
                    .sum();
                history.retain(|v| v.rev.main != main);
                self.store.in_use -= staged;
                if history.is_empty() {
                    self.store.keys.remove(key);
                    self.store.in_use -= key_bytes(key);
                }
            }
        }
    }

    /// Appends `version` to `key`'s history and records the event, with the
    /// key's previous live version as `prev_kv` (watchers and the lessor use it).
    fn stage(&mut self, key: &Bytes, version: Version, kind: EventType, prev: Option<KeyValue>) {
        let kv = match kind {
            EventType::Put => version.to_kv(key, false),
            // etcd's delete event carries the key and the revision of the delete.
            EventType::Delete => KeyValue {
                key: key.clone(),
                mod_revision: version.rev.main,
                ..Default::default()
            },
        };
        // Most keys only ever hold one version: don't let Vec's default growth
        // reserve four (288 bytes) for them.
        self.store.in_use += version_bytes(&version);
        let in_use = &mut self.store.in_use;
        self.store
            .keys
            .entry(key.clone())
            .or_insert_with(|| {
                *in_use += key_bytes(key);
                Vec::with_capacity(1)
            })
            .push(version);
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
        let version = Version {
            rev,
            create: prev.as_ref().map_or(rev.main, |p| p.create),
            version: prev.as_ref().map_or(1, |p| p.version + 1),
            lease: match &prev {
                Some(p) if req.ignore_lease => p.lease,
                _ => req.lease,
            },
            value: match &prev {
                Some(p) if req.ignore_value => p.value.clone(),
                _ => req.value.clone(),
            },
        };
        let prev = prev.map(|p| p.to_kv(&req.key, false));
        self.stage(&req.key, version, EventType::Put, prev.clone());
        Ok(PutResponse {
            header: header(self.main),
            prev_kv: prev.filter(|_| req.prev_kv),
        })
    }

    pub(super) fn delete_range(&mut self, req: &DeleteRangeRequest) -> DeleteRangeResponse {
        let doomed: Vec<(Bytes, KeyValue)> = self
            .store
            .live_at(&req.key, &req.range_end, self.read_rev())
            .map(|(k, v)| (k.clone(), v.to_kv(k, false)))
            .collect();
        for (key, prev) in &doomed {
            let tombstone = Version {
                rev: self.next_rev(),
                create: 0,
                version: 0,
                lease: 0,
                value: Bytes::new(),
            };
            self.stage(key, tombstone, EventType::Delete, Some(prev.clone()));
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
