use super::*;
use crate::proto::etcdserverpb::{
    CompactionRequest, DeleteRangeRequest, PutRequest, WatchCancelRequest, WatchProgressRequest,
};

fn put(store: &mut Store, hub: &mut WatchHub, key: &str, value: &str) {
    let (_, events) = store
        .put(&PutRequest {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::copy_from_slice(value.as_bytes()),
            ..Default::default()
        })
        .unwrap();
    hub.on_events(&events, store);
    hub.catch_up(store);
}

fn create(key: &str, end: &str, start: i64) -> WatchRequest {
    WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: Bytes::copy_from_slice(key.as_bytes()),
            range_end: Bytes::copy_from_slice(end.as_bytes()),
            start_revision: start,
            prev_kv: true,
            ..Default::default()
        })),
    }
}

fn drain(hub: &mut WatchHub, stream: u64) -> Vec<WatchResponse> {
    std::iter::from_fn(|| hub.pop(stream)).collect()
}

/// (watch_id, mod_revision, key) of every event, in the order given.
fn events(resps: &[WatchResponse]) -> Vec<(i64, i64, String)> {
    resps
        .iter()
        .flat_map(|r| {
            r.events.iter().map(move |e| {
                let kv = e.kv.as_ref().unwrap();
                (
                    r.watch_id,
                    kv.mod_revision,
                    String::from_utf8_lossy(&kv.key).into_owned(),
                )
            })
        })
        .collect()
}

#[test]
fn synced_watchers_get_new_events_with_auto_ids_from_zero() {
    let (mut store, mut hub) = (Store::new(), WatchHub::default());
    hub.open(1);
    hub.request(1, create("a", "b", 0), &store);
    hub.request(1, create("b", "", 0), &store);
    let created = drain(&mut hub, 1);
    assert_eq!(created.len(), 2);
    assert!(created.iter().all(|r| r.created && !r.canceled));
    assert_eq!(
        created.iter().map(|r| r.watch_id).collect::<Vec<_>>(),
        [0, 1]
    );
    put(&mut store, &mut hub, "a1", "x");
    put(&mut store, &mut hub, "b", "y");
    put(&mut store, &mut hub, "c", "z");
    let got = drain(&mut hub, 1);
    assert_eq!(
        events(&got),
        [(0, 2, "a1".to_string()), (1, 3, "b".to_string())]
    );
}

#[test]
fn a_watcher_from_the_past_catches_up_then_follows() {
    let (mut store, mut hub) = (Store::new(), WatchHub::default());
    hub.open(7);
    for i in 0..5 {
        put(&mut store, &mut hub, &format!("k{i}"), "v");
    }
    put(&mut store, &mut hub, "k0", "w");
    hub.request(7, create("k", "l", 2), &store);
    hub.catch_up(&store);
    put(&mut store, &mut hub, "k9", "v");
    let got = drain(&mut hub, 7);
    let revs: Vec<i64> = events(&got).iter().map(|e| e.1).collect();
    assert_eq!(revs, [2, 3, 4, 5, 6, 7, 8]);
    // The overwrite carries the previous value.
    let overwrite = got
        .iter()
        .flat_map(|r| &r.events)
        .find(|e| e.kv.as_ref().unwrap().mod_revision == 7)
        .unwrap();
    assert_eq!(overwrite.prev_kv.as_ref().unwrap().value, Bytes::from("v"));
}

#[test]
fn a_full_queue_falls_back_to_the_history_without_loss_or_duplicates() {
    let cfg = WatchConfig {
        max_queued_events: 3,
        catch_up_batch: 2,
        ..Default::default()
    };
    let (mut store, mut hub) = (Store::new(), WatchHub::new(cfg));
    hub.open(1);
    hub.request(1, create("k", "l", 0), &store);
    let mut got = Vec::new();
    for i in 0..40 {
        put(&mut store, &mut hub, &format!("k{}", i % 7), &i.to_string());
        // A slow reader: takes one response every third write.
        if i % 3 == 0 {
            got.extend(hub.pop(1));
        }
        assert!(hub.streams[&1].watchers[&0].queued_events <= 3 + 2);
    }
    for _ in 0..100 {
        hub.catch_up(&store);
        got.extend(drain(&mut hub, 1));
    }
    let revs: Vec<i64> = events(&got).iter().map(|e| e.1).collect();
    assert_eq!(revs, (2..42).collect::<Vec<_>>());
}

#[test]
fn a_revision_stays_in_one_response_unless_fragmented() {
    let (mut store, mut hub) = (Store::new(), WatchHub::default());
    hub.open(1);
    for i in 0..10 {
        put(&mut store, &mut hub, &format!("k{i}"), &"x".repeat(100));
    }
    hub.request(1, create("k", "l", 0), &store);
    let mut frag = create("k", "l", 0);
    if let Some(RequestUnion::CreateRequest(c)) = &mut frag.request_union {
        c.fragment = true;
        c.watch_id = 9;
    }
    hub.request(1, frag, &store);
    hub.cfg.max_response_bytes = 400;
    let (_, evs) = store
        .delete_range(&DeleteRangeRequest {
            key: Bytes::from("k"),
            range_end: Bytes::from("l"),
            ..Default::default()
        })
        .unwrap();
    hub.on_events(&evs, &store);
    let got = drain(&mut hub, 1);
    let whole: Vec<_> = got
        .iter()
        .filter(|r| r.watch_id == 0 && !r.created)
        .collect();
    assert_eq!(whole.len(), 1);
    assert_eq!(whole[0].events.len(), 10);
    let pieces: Vec<_> = got
        .iter()
        .filter(|r| r.watch_id == 9 && !r.created)
        .collect();
    assert!(pieces.len() > 1, "{} pieces", pieces.len());
    assert!(pieces[..pieces.len() - 1].iter().all(|r| r.fragment));
    assert!(!pieces.last().unwrap().fragment);
    assert_eq!(pieces.iter().map(|r| r.events.len()).sum::<usize>(), 10);
}

#[test]
fn compacted_start_revisions_cancel_the_watcher() {
    let (mut store, mut hub) = (Store::new(), WatchHub::default());
    hub.open(1);
    for i in 0..5 {
        put(&mut store, &mut hub, "k", &i.to_string());
    }
    store
        .compact(&CompactionRequest {
            revision: 4,
            ..Default::default()
        })
        .unwrap();
    hub.request(1, create("k", "", 3), &store);
    hub.request(1, create("k", "", 4), &store);
    hub.catch_up(&store);
    let got = drain(&mut hub, 1);
    let canceled: Vec<_> = got.iter().filter(|r| r.canceled).collect();
    assert_eq!(canceled.len(), 1);
    assert_eq!(canceled[0].watch_id, 0);
    assert_eq!(canceled[0].compact_revision, 4);
    // At the compaction revision itself: accepted, from that revision on.
    assert_eq!(
        events(&got),
        [
            (1, 4, "k".to_string()),
            (1, 5, "k".to_string()),
            (1, 6, "k".to_string())
        ]
    );
}

#[test]
fn a_watch_at_the_compaction_revision_gets_its_deletes() {
    let (mut store, mut hub) = (Store::new(), WatchHub::default());
    hub.open(1);
    put(&mut store, &mut hub, "a", "1"); // 2
    put(&mut store, &mut hub, "b", "1"); // 3
    let (_, _) = store
        .delete_range(&DeleteRangeRequest {
            key: Bytes::from_static(b"a"),
            range_end: Bytes::from_static(b"c"),
            ..Default::default()
        })
        .unwrap(); // 4: deletes a and b
    put(&mut store, &mut hub, "c", "1"); // 5
    store
        .compact(&CompactionRequest {
            revision: 4,
            ..Default::default()
        })
        .unwrap();
    store.check_invariants();
    // The kept deletes survive a snapshot round trip.
    let store = Store::decode(store.encode().into()).unwrap();
    hub.request(1, create("a", "z", 4), &store);
    hub.catch_up(&store);
    let got = drain(&mut hub, 1);
    assert_eq!(
        events(&got),
        [
            (0, 4, "a".to_string()),
            (0, 4, "b".to_string()),
            (0, 5, "c".to_string())
        ]
    );
    let deletes: Vec<_> = got.iter().flat_map(|r| &r.events).take(2).collect();
    assert!(deletes.iter().all(|e| e.r#type == 1));
    // prev_kv of a delete at the compaction revision is kept too.
    assert_eq!(
        deletes[0].prev_kv.as_ref().unwrap().value,
        Bytes::from_static(b"1")
    );
    // The next compaction lets them go.
    let mut store = store;
    store
        .compact(&CompactionRequest {
            revision: 5,
            ..Default::default()
        })
        .unwrap();
    store.check_invariants();
    let (evs, _) = store.events_from(b"a", b"z", 5, 100);
    assert_eq!(evs.len(), 1);
}

#[test]
fn cancel_progress_and_refused_creates() {
    let (mut store, mut hub) = (Store::new(), WatchHub::default());
    hub.open(1);
    put(&mut store, &mut hub, "a", "1");
    hub.request(1, create("a", "", 0), &store);
    hub.request(1, create("b", "a", 0), &store);
    let got = drain(&mut hub, 1);
    assert!(got[0].created && !got[0].canceled && got[0].watch_id == 0);
    assert_eq!(got[1].cancel_reason, EMPTY_RANGE);
    assert!(got[1].created && got[1].canceled && got[1].watch_id == -1);
    let mut taken = create("a", "", 0);
    if let Some(RequestUnion::CreateRequest(c)) = &mut taken.request_union {
        c.watch_id = 5;
    }
    hub.request(1, taken.clone(), &store);
    hub.request(1, taken, &store);
    let got = drain(&mut hub, 1);
    assert_eq!(got.last().unwrap().cancel_reason, DUPLICATE_ID);
    put(&mut store, &mut hub, "a", "2");
    let progress = WatchRequest {
        request_union: Some(RequestUnion::ProgressRequest(WatchProgressRequest {})),
    };
    hub.request(1, progress.clone(), &store);
    let got = drain(&mut hub, 1);
    // Each watcher's event, then one progress response for the stream.
    assert_eq!(got.len(), 3);
    assert!(got[..2].iter().all(|r| r.events.len() == 1));
    assert_eq!(got[2].watch_id, -1);
    assert!(got[2].events.is_empty());
    assert_eq!(got[2].header.as_ref().unwrap().revision, 3);
    // A watcher behind holds the answer back until it has caught up.
    let mut past = create("a", "", 1);
    if let Some(RequestUnion::CreateRequest(c)) = &mut past.request_union {
        c.watch_id = 8;
    }
    hub.request(1, past, &store);
    hub.request(1, progress, &store);
    let got = drain(&mut hub, 1);
    assert_eq!(got.len(), 1, "only the created response: {got:?}");
    hub.catch_up(&store);
    let got = drain(&mut hub, 1);
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].events.len(), 2);
    assert_eq!(got[1].watch_id, -1);
    let cancel8 = WatchRequest {
        request_union: Some(RequestUnion::CancelRequest(WatchCancelRequest {
            watch_id: 8,
        })),
    };
    hub.request(1, cancel8, &store);
    drain(&mut hub, 1);
    let cancel = WatchRequest {
        request_union: Some(RequestUnion::CancelRequest(WatchCancelRequest {
            watch_id: 5,
        })),
    };
    hub.request(1, cancel.clone(), &store);
    hub.request(1, cancel, &store);
    let got = drain(&mut hub, 1);
    assert_eq!(got.len(), 1, "an unknown ID gets no answer");
    assert!(got[0].canceled);
    put(&mut store, &mut hub, "a", "3");
    assert_eq!(events(&drain(&mut hub, 1)), [(0, 4, "a".to_string())]);
    assert_eq!(hub.watchers(), 1);
    hub.close(1);
    assert_eq!(hub.watchers(), 0);
}

#[test]
fn filters_and_prev_kv() {
    let (mut store, mut hub) = (Store::new(), WatchHub::default());
    hub.open(1);
    let mut req = create("a", "", 0);
    if let Some(RequestUnion::CreateRequest(c)) = &mut req.request_union {
        c.filters = vec![FilterType::Noput as i32];
        c.prev_kv = false;
    }
    hub.request(1, req, &store);
    put(&mut store, &mut hub, "a", "1");
    let (_, evs) = store
        .delete_range(&DeleteRangeRequest {
            key: Bytes::from("a"),
            ..Default::default()
        })
        .unwrap();
    hub.on_events(&evs, &store);
    let got = drain(&mut hub, 1);
    let evs: Vec<_> = got.iter().flat_map(|r| &r.events).collect();
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0].r#type, EventType::Delete as i32);
    assert!(evs[0].prev_kv.is_none());
}

#[test]
fn a_watcher_starting_in_the_future_stays_there_through_a_store_replacement() {
    let (mut store, mut hub) = (Store::new(), WatchHub::default());
    hub.open(1);
    hub.request(1, create("k", "", 5), &store);
    // A snapshot replaced the store: every watcher catches up from it.
    hub.store_generation(1);
    hub.catch_up(&store);
    for i in 0..6 {
        put(&mut store, &mut hub, "k", &i.to_string());
    }
    let revs: Vec<i64> = events(&drain(&mut hub, 1)).iter().map(|e| e.1).collect();
    assert_eq!(revs, [5, 6, 7]);
}

#[test]
fn streams_requiring_a_leader_end_after_the_configured_leaderless_ticks() {
    let cfg = WatchConfig {
        no_leader_cancel_ticks: 3,
        ..Default::default()
    };
    let (mut store, mut hub) = (Store::new(), WatchHub::new(cfg));
    hub.open(1);
    hub.open_requiring_leader(2);
    hub.open_requiring_leader(3);
    for stream in 1..=3 {
        hub.request(stream, create("k", "", 0), &store);
    }
    // Leaderless ticks count only in a row: a leader seen again resets them.
    assert!(hub.leader_tick(false).is_empty());
    assert!(hub.leader_tick(false).is_empty());
    assert!(hub.leader_tick(true).is_empty());
    assert!(hub.leader_tick(false).is_empty());
    assert!(hub.leader_tick(false).is_empty());
    assert_eq!(hub.leader_tick(false), [2, 3]);
    assert_eq!(
        hub.watchers(),
        1,
        "only the stream without hasleader is left"
    );
    // A stream opened requiring a leader while there is still none goes at
    // the next leaderless tick; the other stream keeps its events.
    hub.open_requiring_leader(4);
    assert_eq!(hub.leader_tick(false), [4]);
    drain(&mut hub, 1);
    put(&mut store, &mut hub, "k", "v");
    assert_eq!(events(&drain(&mut hub, 1)), [(0, 2, "k".to_string())]);
    assert!(hub.leader_tick(true).is_empty());
}
