//! Tests of the watch and lease checkers: hand-built runs, each valid one
//! next to variants that break one rule.

use super::lease::{check_leases, LeaseCheck};
use super::watch::{check_watches, WatchCheck};
use crate::check::history::*;

const S: u64 = 1_000_000_000;

fn put_op(client: u32, t: (u64, u64), key: &str, value: &str, revision: i64) -> Op {
    Op {
        client,
        invoke: t.0,
        complete: Some(t.1),
        call: Call::Put {
            key: key.into(),
            value: value.into(),
        },
        ret: Ret::Put { revision },
    }
}

fn del_op(client: u32, t: (u64, u64), key: &str, revision: i64) -> Op {
    Op {
        client,
        invoke: t.0,
        complete: Some(t.1),
        call: Call::Delete { key: key.into() },
        ret: Ret::Delete {
            revision,
            deleted: 1,
        },
    }
}

fn put(key: &str, value: &str, rev: i64, create: i64, version: i64) -> Event {
    Event {
        kind: EventKind::Put,
        key: key.into(),
        value: value.into(),
        mod_revision: rev,
        create_revision: create,
        version,
        lease: 0,
        prev: None,
    }
}

fn leased(mut e: Event, lease: i64) -> Event {
    e.lease = lease;
    e
}

fn del(key: &str, rev: i64) -> Event {
    Event {
        kind: EventKind::Delete,
        key: key.into(),
        value: String::new(),
        mod_revision: rev,
        create_revision: 0,
        version: 0,
        lease: 0,
        prev: None,
    }
}

fn with_prev(mut e: Event, value: &str, rev: i64, create: i64, version: i64, lease: i64) -> Event {
    e.prev = Some(PrevKv {
        value: value.into(),
        mod_revision: rev,
        create_revision: create,
        version,
        lease,
    });
    e
}

fn resp(at: u64, header: i64, events: Vec<Event>) -> WatchResponse {
    WatchResponse {
        at,
        header_revision: header,
        fragment: false,
        canceled: false,
        compact_revision: 0,
        events,
    }
}

fn progress(at: u64, header: i64) -> WatchResponse {
    resp(at, header, Vec::new())
}

fn watcher(
    key: &str,
    range_end: &str,
    start: i64,
    created: i64,
    responses: Vec<WatchResponse>,
) -> WatchRecord {
    WatchRecord {
        client: 0,
        member: 0,
        key: key.into(),
        range_end: range_end.into(),
        start_revision: start,
        prev_kv: false,
        no_put: false,
        no_delete: false,
        fragment: false,
        resumes: None,
        invoke: 0,
        created: Some((1, created)),
        watch_id: 0,
        responses,
        progress_requests: Vec::new(),
        end: WatchEnd::Open,
    }
}

/// k0 = a (2), k0 = b (3), k1 = c (4), k0 deleted (5).
fn kv_history() -> History {
    vec![
        put_op(0, (10, 20), "k0", "a", 2),
        put_op(0, (30, 40), "k0", "b", 3),
        put_op(1, (50, 60), "k1", "c", 4),
        del_op(0, (70, 80), "k0", 5),
    ]
}

fn prefix_watcher() -> WatchRecord {
    watcher(
        "k",
        "l",
        0,
        1,
        vec![
            resp(100, 2, vec![put("k0", "a", 2, 2, 1)]),
            resp(110, 3, vec![put("k0", "b", 3, 2, 2)]),
            resp(120, 4, vec![put("k1", "c", 4, 4, 1)]),
            resp(130, 5, vec![del("k0", 5)]),
            progress(140, 5),
        ],
    )
}

fn run(watches: Vec<WatchRecord>) -> Extra {
    Extra {
        watches,
        leases: Vec::new(),
        min_tick_factor: 0.9,
        max_tick_nanos: S / 10,
        multi: Vec::new(),
    }
}

fn watch_verdict(history: &History, extra: &Extra) -> Option<WatchCheck> {
    check_watches(history, extra).err().map(|v| {
        // Every violation renders.
        assert!(!v.to_string().is_empty());
        v.check
    })
}

#[test]
fn a_complete_watcher_passes() {
    let h = kv_history();
    let stats = check_watches(&h, &run(vec![prefix_watcher()])).expect("valid");
    assert_eq!(stats.events, 4);
    assert_eq!(stats.required, 4);
    // A single-key watcher from a past revision, and one that vouched only to 3.
    let single = watcher(
        "k0",
        "",
        3,
        5,
        vec![resp(100, 5, vec![put("k0", "b", 3, 2, 2), del("k0", 5)])],
    );
    let short = watcher(
        "k",
        "l",
        1,
        1,
        vec![
            resp(100, 2, vec![put("k0", "a", 2, 2, 1)]),
            progress(101, 2),
        ],
    );
    assert_eq!(
        watch_verdict(&h, &run(vec![prefix_watcher(), single, short.clone()])),
        None
    );
    // Without the progress response, a watcher that stopped early owes nothing past 2.
    let mut shorter = short;
    shorter.responses.pop();
    assert_eq!(watch_verdict(&h, &run(vec![shorter])), None);
}

#[test]
fn a_missing_event_is_unreliable() {
    let h = kv_history();
    let mut w = prefix_watcher();
    w.responses.remove(2); // k1 at 4
    assert_eq!(watch_verdict(&h, &run(vec![w])), Some(WatchCheck::Reliable));
    // Known only from another watcher, not from an acknowledged write.
    let mut other = prefix_watcher();
    other.responses[2].events[0] = put("k2", "z", 4, 4, 1);
    let mut w = prefix_watcher();
    w.responses.remove(2);
    let mut h2 = kv_history();
    h2.remove(2);
    assert_eq!(
        watch_verdict(&h2, &run(vec![other, w])),
        Some(WatchCheck::Reliable)
    );
}

#[test]
fn a_gap_below_a_progress_response_breaks_the_bookmark() {
    let h = kv_history();
    let mut w = prefix_watcher();
    w.responses.remove(3); // delete at 5, then progress 5
    assert_eq!(watch_verdict(&h, &run(vec![w])), Some(WatchCheck::Bookmark));
    // An event at or below a progress revision arriving after it.
    let mut w = prefix_watcher();
    w.responses.swap(3, 4);
    assert_eq!(watch_verdict(&h, &run(vec![w])), Some(WatchCheck::Bookmark));
}

#[test]
fn duplicates_and_disorder_are_caught() {
    let h = kv_history();
    let mut w = prefix_watcher();
    let again = w.responses[1].clone();
    w.responses.insert(2, again);
    assert_eq!(watch_verdict(&h, &run(vec![w])), Some(WatchCheck::Unique));
    let mut w = prefix_watcher();
    w.responses.swap(1, 2);
    assert_eq!(watch_verdict(&h, &run(vec![w])), Some(WatchCheck::Order));
    let mut w = prefix_watcher();
    let r2 = w.responses.remove(2);
    w.responses[1].events.insert(0, r2.events[0].clone()); // 4 before 3 in one response
    assert_eq!(watch_verdict(&h, &run(vec![w])), Some(WatchCheck::Order));
}

#[test]
fn a_revision_split_over_responses_is_not_atomic() {
    // A lease deletes two keys at revision 6.
    let h = kv_history();
    let mut w = prefix_watcher();
    w.range_end = "m".into();
    w.responses.pop();
    w.responses
        .push(resp(150, 6, vec![del("k1", 6), del("lease/a", 6)]));
    assert_eq!(watch_verdict(&h, &run(vec![w.clone()])), None);
    let last = w.responses.pop().expect("one");
    w.responses.push(resp(150, 6, vec![last.events[0].clone()]));
    w.responses.push(resp(151, 6, vec![last.events[1].clone()]));
    assert_eq!(
        watch_verdict(&h, &run(vec![w.clone()])),
        Some(WatchCheck::Atomic)
    );
    // Unless they are fragments.
    w.fragment = true;
    w.responses[4].fragment = true;
    assert_eq!(watch_verdict(&h, &run(vec![w])), None);
}

#[test]
fn events_must_agree_with_writes_and_each_other() {
    let h = kv_history();
    let mut w = prefix_watcher();
    w.responses[1].events[0].value = "x".into();
    assert_eq!(
        watch_verdict(&h, &run(vec![w])),
        Some(WatchCheck::Agreement)
    );
    let mut a = prefix_watcher();
    let mut b = prefix_watcher();
    a.responses[2].events[0] = put("k2", "z", 4, 4, 1);
    b.responses[2].events[0] = put("k2", "z", 4, 3, 2);
    let mut h2 = kv_history();
    h2.remove(2);
    assert_eq!(
        watch_verdict(&h2, &run(vec![a, b])),
        Some(WatchCheck::Agreement)
    );
    let mut w = prefix_watcher();
    w.responses[0].events[0].version = 2; // version 2 but create == mod
    assert_eq!(
        watch_verdict(&h, &run(vec![w])),
        Some(WatchCheck::Agreement)
    );
}

#[test]
fn events_outside_range_filter_or_start_are_caught() {
    let h = kv_history();
    let mut w = prefix_watcher();
    w.key = "k0".into();
    w.range_end = String::new();
    assert_eq!(watch_verdict(&h, &run(vec![w])), Some(WatchCheck::Range));
    let mut w = prefix_watcher();
    w.no_put = true;
    assert_eq!(watch_verdict(&h, &run(vec![w])), Some(WatchCheck::Range));
    let mut w = prefix_watcher();
    w.created = Some((1, 2)); // start 0 at revision 2: nothing at 2
    assert_eq!(watch_verdict(&h, &run(vec![w])), Some(WatchCheck::Range));
    // A NODELETE watcher that gets only the puts passes.
    let mut w = prefix_watcher();
    w.no_delete = true;
    w.responses.remove(3);
    assert_eq!(watch_verdict(&h, &run(vec![w])), None);
}

#[test]
fn a_resumed_watcher_must_continue_exactly() {
    let h = kv_history();
    let mut first = prefix_watcher();
    first.responses.truncate(2); // up to 3
    first.end = WatchEnd::Broken;
    let mut next = watcher(
        "k",
        "l",
        4,
        5,
        vec![
            resp(200, 5, vec![put("k1", "c", 4, 4, 1)]),
            resp(201, 5, vec![del("k0", 5)]),
        ],
    );
    next.resumes = Some(0);
    assert_eq!(
        watch_verdict(&h, &run(vec![first.clone(), next.clone()])),
        None
    );
    next.responses.remove(0);
    assert_eq!(
        watch_verdict(&h, &run(vec![first.clone(), next.clone()])),
        Some(WatchCheck::Resumable)
    );
    // Replaying what the first one had already delivered.
    let mut replay = next;
    replay.responses.insert(
        0,
        resp(
            199,
            5,
            vec![put("k0", "b", 3, 2, 2), put("k1", "c", 4, 4, 1)],
        ),
    );
    assert_eq!(
        watch_verdict(&h, &run(vec![first, replay])),
        Some(WatchCheck::Range)
    );
}

#[test]
fn prev_kv_must_be_the_previous_version() {
    let h = kv_history();
    let mut w = prefix_watcher();
    w.prev_kv = true;
    w.responses[1].events[0] = with_prev(put("k0", "b", 3, 2, 2), "a", 2, 2, 1, 0);
    w.responses[3].events[0] = with_prev(del("k0", 5), "b", 3, 2, 2, 0);
    assert_eq!(watch_verdict(&h, &run(vec![w.clone()])), None);
    let mut bad = w.clone();
    bad.responses[3].events[0] = with_prev(del("k0", 5), "a", 2, 2, 1, 0); // skips b
    assert_eq!(watch_verdict(&h, &run(vec![bad])), Some(WatchCheck::PrevKv));
    let mut bad = w.clone();
    bad.responses[1].events[0] = with_prev(put("k0", "b", 3, 2, 2), "zz", 2, 2, 1, 0);
    assert_eq!(watch_verdict(&h, &run(vec![bad])), Some(WatchCheck::PrevKv));
    let mut bad = w.clone();
    bad.responses[0].events[0] = with_prev(put("k0", "a", 2, 2, 1), "zz", 1, 1, 1, 0);
    assert_eq!(watch_verdict(&h, &run(vec![bad])), Some(WatchCheck::PrevKv));
    let mut bad = w;
    bad.prev_kv = false;
    assert_eq!(watch_verdict(&h, &run(vec![bad])), Some(WatchCheck::PrevKv));
}

#[test]
fn a_needless_compaction_cancel_is_caught() {
    let h = kv_history();
    let mut w = watcher("k", "l", 2, 5, vec![]);
    w.end = WatchEnd::Compacted(3);
    assert_eq!(watch_verdict(&h, &run(vec![w.clone()])), None);
    let mut w = prefix_watcher();
    w.end = WatchEnd::Compacted(3);
    assert_eq!(
        watch_verdict(&h, &run(vec![w])),
        Some(WatchCheck::Compaction)
    );
}

// Leases.

fn lease_op(invoke: u64, complete: u64, call: LeaseCall, ret: LeaseRet) -> LeaseOp {
    LeaseOp {
        client: 0,
        invoke,
        complete: Some(complete),
        call,
        ret,
    }
}

const L: i64 = 7;

/// Lease 7 (TTL 5) granted at 0 s, kept alive at 1 s, key lease/a attached at
/// revision 2, lease/b at 3.
fn lease_ops() -> Vec<LeaseOp> {
    vec![
        lease_op(
            0,
            S / 100,
            LeaseCall::Grant { id: 0, ttl: 5 },
            LeaseRet::Granted {
                id: L,
                ttl: 5,
                revision: 1,
            },
        ),
        lease_op(
            S / 10,
            S / 5,
            LeaseCall::Put {
                key: "lease/a".into(),
                value: "la".into(),
                lease: L,
            },
            LeaseRet::Put { revision: 2 },
        ),
        lease_op(
            S / 4,
            S / 3,
            LeaseCall::Put {
                key: "lease/b".into(),
                value: "lb".into(),
                lease: L,
            },
            LeaseRet::Put { revision: 3 },
        ),
        lease_op(
            S,
            S + S / 100,
            LeaseCall::KeepAlive { id: L },
            LeaseRet::Alive { ttl: 5 },
        ),
    ]
}

fn lease_watcher(expired_at: u64, revs: (i64, i64)) -> WatchRecord {
    watcher(
        "lease/",
        "lease0",
        0,
        1,
        vec![
            resp(S / 5, 2, vec![leased(put("lease/a", "la", 2, 2, 1), L)]),
            resp(S / 3, 3, vec![leased(put("lease/b", "lb", 3, 3, 1), L)]),
            resp(expired_at, revs.1, vec![del("lease/a", revs.0)]),
            resp(expired_at, revs.1, vec![del("lease/b", revs.1)]),
        ],
    )
}

fn lease_run(leases: Vec<LeaseOp>, watches: Vec<WatchRecord>) -> Extra {
    Extra {
        watches,
        leases,
        min_tick_factor: 0.9,
        max_tick_nanos: S / 10,
        multi: Vec::new(),
    }
}

fn lease_verdict(extra: &Extra) -> Option<LeaseCheck> {
    check_leases(extra).err().map(|v| {
        assert!(!v.to_string().is_empty());
        v.check
    })
}

#[test]
fn an_expiry_after_the_ttl_passes() {
    // Kept alive at 1 s, TTL 5, fastest tick 0.9: not before 5.4 s.
    let mut w = lease_watcher(6 * S, (4, 4));
    // One response for the revision.
    let d = w.responses.pop().expect("one").events;
    w.responses[2].events.extend(d);
    let extra = lease_run(lease_ops(), vec![w]);
    let stats = check_leases(&extra).expect("valid");
    assert_eq!(stats.expiries_observed, 2);
    assert_eq!(check_watches(&Vec::new(), &extra).err(), None);
}

#[test]
fn an_early_expiry_is_caught() {
    let extra = lease_run(lease_ops(), vec![lease_watcher(5 * S, (4, 4))]);
    assert_eq!(lease_verdict(&extra), Some(LeaseCheck::Early));
    // Seen by a keep-alive answering TTL 0.
    let mut ops = lease_ops();
    ops.push(lease_op(
        4 * S,
        4 * S + 1,
        LeaseCall::KeepAlive { id: L },
        LeaseRet::Alive { ttl: 0 },
    ));
    assert_eq!(
        lease_verdict(&lease_run(ops.clone(), vec![])),
        Some(LeaseCheck::Early)
    );
    // Seen by a read that finds a key attached to it absent.
    let mut ops = lease_ops();
    ops.push(lease_op(
        4 * S,
        4 * S + 1,
        LeaseCall::Get {
            key: "lease/b".into(),
        },
        LeaseRet::Get {
            revision: 4,
            kv: None,
        },
    ));
    assert_eq!(
        lease_verdict(&lease_run(ops.clone(), vec![])),
        Some(LeaseCheck::Early)
    );
    // Not if the client revoked it first.
    ops.push(lease_op(
        3 * S,
        3 * S + 1,
        LeaseCall::Revoke { id: L },
        LeaseRet::Unknown,
    ));
    ops.sort_by_key(|o| o.invoke);
    assert_eq!(lease_verdict(&lease_run(ops, vec![])), None);
}

#[test]
fn keys_of_a_lease_go_in_one_revision() {
    let extra = lease_run(lease_ops(), vec![lease_watcher(6 * S, (4, 5))]);
    assert_eq!(lease_verdict(&extra), Some(LeaseCheck::Atomic));
}

#[test]
fn a_key_must_not_outlive_a_revoke() {
    let mut ops = lease_ops();
    ops.push(lease_op(
        2 * S,
        2 * S + 1,
        LeaseCall::Revoke { id: L },
        LeaseRet::Revoked { revision: 4 },
    ));
    ops.push(lease_op(
        3 * S,
        3 * S + 1,
        LeaseCall::Get {
            key: "lease/a".into(),
        },
        LeaseRet::Get {
            revision: 4,
            kv: Some((
                Kv {
                    value: "la".into(),
                    mod_revision: 2,
                    create_revision: 2,
                    version: 1,
                },
                L,
            )),
        },
    ));
    assert_eq!(
        lease_verdict(&lease_run(ops.clone(), vec![])),
        Some(LeaseCheck::Outlived)
    );
    // A watcher that vouched past the revoke but never saw lease/b deleted.
    let mut ops = lease_ops();
    ops.push(lease_op(
        2 * S,
        2 * S + 1,
        LeaseCall::Revoke { id: L },
        LeaseRet::Revoked { revision: 4 },
    ));
    let mut w = lease_watcher(2 * S, (4, 4));
    let d = w.responses.pop().expect("one").events;
    w.responses[2].events.extend(d);
    assert_eq!(
        lease_verdict(&lease_run(ops.clone(), vec![w.clone()])),
        None
    );
    w.responses[2].events.pop();
    w.responses.push(progress(3 * S, 4));
    assert_eq!(
        lease_verdict(&lease_run(ops, vec![w])),
        Some(LeaseCheck::Outlived)
    );
}

#[test]
fn a_keep_alive_answers_the_granted_ttl() {
    let mut ops = lease_ops();
    assert_eq!(lease_verdict(&lease_run(ops.clone(), vec![])), None);
    ops.push(lease_op(
        2 * S,
        2 * S + 1,
        LeaseCall::KeepAlive { id: L },
        LeaseRet::Alive { ttl: 4 },
    ));
    assert_eq!(
        lease_verdict(&lease_run(ops, vec![])),
        Some(LeaseCheck::Ttl)
    );
}

#[test]
fn no_put_attaches_a_key_to_a_revoked_lease() {
    let mut ops = lease_ops();
    ops.push(lease_op(
        2 * S,
        2 * S + 1,
        LeaseCall::Revoke { id: L },
        LeaseRet::Revoked { revision: 4 },
    ));
    let put = |ret| {
        lease_op(
            3 * S,
            3 * S + 1,
            LeaseCall::Put {
                key: "lease/a".into(),
                value: "la2".into(),
                lease: L,
            },
            ret,
        )
    };
    let mut refused = ops.clone();
    refused.push(put(LeaseRet::Refused(
        "etcdserver: requested lease not found".into(),
    )));
    assert_eq!(lease_verdict(&lease_run(refused, vec![])), None);
    ops.push(put(LeaseRet::Put { revision: 5 }));
    assert_eq!(
        lease_verdict(&lease_run(ops, vec![])),
        Some(LeaseCheck::Outlived)
    );
}
