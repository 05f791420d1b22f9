//! The watch hub against the one thing a watcher must get: every event of
//! its range from its start revision on, in revision order, exactly once,
//! with the right `prev_kv`, each revision in one response; or, if the
//! history it needed was compacted, a cancel naming the compaction.
//!
//! Steps are random writes (puts, deletes, a prefix delete), compactions,
//! watchers created at revisions in the past, and a reader that takes a few
//! responses now and then, over queues of two events, so watchers keep
//! falling behind and catching up from the history. The expected events are
//! the store's own write events. Shared by `tests/watch_model.rs` (proptest)
//! and `fuzz/fuzz_targets/watch_model.rs` (cargo-fuzz).

use bytes::Bytes;
use cairn::mvcc::Store;
use cairn::proto::etcdserverpb::{
    watch_request::RequestUnion, CompactionRequest, DeleteRangeRequest, PutRequest,
    WatchCreateRequest, WatchRequest, WatchResponse,
};
use cairn::proto::mvccpb::Event;
use cairn::watch::{WatchConfig, WatchHub};
use std::collections::BTreeSet;

/// One step of a run.
#[derive(Debug, Clone)]
pub enum Step {
    /// Put key `k<n>`.
    Put(u8),
    /// Delete key `k<n>`.
    Delete(u8),
    /// Delete every key.
    DeletePrefix,
    /// Compact two revisions behind the current one.
    Compact,
    /// The reader takes up to this many responses.
    Pop(u8),
    /// A watcher of one key (or every key) from `from_back` revisions ago.
    Watch {
        from_back: u8,
        prefix: bool,
        key: u8,
    },
}

struct Expect {
    id: i64,
    start: i64,
    key: Bytes,
    prefix: bool,
}

fn key(k: u8) -> Bytes {
    Bytes::from(format!("k{}", k % 6))
}

/// Runs `steps`; an error says what a watcher got wrong.
pub fn run(steps: &[Step]) -> Result<(), String> {
    let cfg = WatchConfig {
        max_queued_events: 2,
        catch_up_batch: 3,
        ..Default::default()
    };
    let (mut store, mut hub) = (Store::new().with_index_chunk(2), WatchHub::new(cfg));
    hub.open(1);
    let mut all: Vec<Event> = Vec::new();
    let mut expect: Vec<Expect> = Vec::new();
    let mut got: Vec<WatchResponse> = Vec::new();
    for s in steps {
        let events = match *s {
            Step::Put(k) => {
                let req = PutRequest {
                    key: key(k),
                    value: Bytes::from(format!("v{}", all.len())),
                    ..Default::default()
                };
                store.put(&req).map_err(|e| e.to_string())?.1
            }
            Step::Delete(k) => {
                let req = DeleteRangeRequest {
                    key: key(k),
                    ..Default::default()
                };
                store.delete_range(&req).map_err(|e| e.to_string())?.1
            }
            Step::DeletePrefix => {
                let req = DeleteRangeRequest {
                    key: Bytes::from("k"),
                    range_end: Bytes::from("l"),
                    ..Default::default()
                };
                store.delete_range(&req).map_err(|e| e.to_string())?.1
            }
            Step::Compact => {
                let rev = store.current_revision() - 2;
                if rev > store.compact_revision() {
                    let req = CompactionRequest {
                        revision: rev,
                        ..Default::default()
                    };
                    store.compact(&req).map_err(|e| e.to_string())?;
                }
                vec![]
            }
            Step::Pop(n) => {
                for _ in 0..n {
                    got.extend(hub.pop(1));
                }
                vec![]
            }
            Step::Watch {
                from_back,
                prefix,
                key: k,
            } => {
                let start = (store.current_revision() + 1 - i64::from(from_back % 8)).max(1);
                let (wkey, end) = if prefix {
                    (Bytes::from("k"), "l")
                } else {
                    (key(k), "")
                };
                let create = WatchCreateRequest {
                    key: wkey.clone(),
                    range_end: Bytes::from(end),
                    start_revision: start,
                    prev_kv: true,
                    ..Default::default()
                };
                let req = WatchRequest {
                    request_union: Some(RequestUnion::CreateRequest(create)),
                };
                hub.request(1, req, &store);
                expect.push(Expect {
                    id: expect.len() as i64,
                    start,
                    key: wkey,
                    prefix,
                });
                vec![]
            }
        };
        all.extend(events.iter().cloned());
        hub.on_events(&events, &store);
        hub.catch_up(&store);
    }
    // The reader catches up in the end.
    for _ in 0..10_000 {
        if !hub.has_pending(1) && hub.behind() == 0 {
            break;
        }
        hub.catch_up(&store);
        got.extend(std::iter::from_fn(|| hub.pop(1)));
    }
    if hub.has_pending(1) || hub.behind() > 0 {
        return Err("watchers still behind after the reader drained".into());
    }
    for e in &expect {
        let mine: Vec<&WatchResponse> = got.iter().filter(|r| r.watch_id == e.id).collect();
        if !mine.first().is_some_and(|r| r.created) {
            return Err(format!("watcher {}: no created response first", e.id));
        }
        if let Some(c) = mine.iter().find(|r| r.canceled) {
            if c.compact_revision < e.start {
                return Err(format!(
                    "watcher {} from {} canceled at compaction {}",
                    e.id, e.start, c.compact_revision
                ));
            }
            continue;
        }
        let received: Vec<&Event> = mine.iter().flat_map(|r| &r.events).collect();
        let wanted: Vec<&Event> = all
            .iter()
            .filter(|ev| {
                let kv = ev.kv.as_ref().expect("events carry a kv");
                kv.mod_revision >= e.start
                    && if e.prefix {
                        kv.key.starts_with(b"k")
                    } else {
                        kv.key == e.key
                    }
            })
            .collect();
        if received != wanted {
            return Err(format!(
                "watcher {} from {}: got {:?}\nwanted {:?}",
                e.id, e.start, received, wanted
            ));
        }
        let mut seen = BTreeSet::new();
        for r in mine.iter().filter(|r| !r.events.is_empty()) {
            let revs: BTreeSet<i64> = r
                .events
                .iter()
                .filter_map(|ev| ev.kv.as_ref().map(|kv| kv.mod_revision))
                .collect();
            for rev in revs {
                if !seen.insert(rev) {
                    return Err(format!("watcher {}: revision {rev} split", e.id));
                }
            }
        }
    }
    Ok(())
}
