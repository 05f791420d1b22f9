//! The checker's tests: hand-built histories, each valid one next to a
//! variant that breaks one rule, then generated histories.

use super::generate::{generate, Rng, Shape};
use super::*;

// Builders. Times are (invoke, complete); revisions are what etcd returns.

fn kv(value: &str, mod_revision: i64, create_revision: i64, version: i64) -> Option<Kv> {
    Some(Kv {
        value: value.to_owned(),
        mod_revision,
        create_revision,
        version,
    })
}

fn op(client: u32, (invoke, complete): (u64, u64), call: Call, ret: Ret) -> Op {
    Op {
        client,
        invoke,
        complete: Some(complete),
        call,
        ret,
    }
}

fn put(client: u32, t: (u64, u64), key: &str, value: &str, revision: i64) -> Op {
    op(
        client,
        t,
        Call::Put {
            key: key.to_owned(),
            value: value.to_owned(),
        },
        Ret::Put { revision },
    )
}

fn get(client: u32, t: (u64, u64), key: &str, revision: i64, kv: Option<Kv>) -> Op {
    op(
        client,
        t,
        Call::Get {
            key: key.to_owned(),
        },
        Ret::Get { revision, kv },
    )
}

fn delete(client: u32, t: (u64, u64), key: &str, revision: i64, deleted: i64) -> Op {
    op(
        client,
        t,
        Call::Delete {
            key: key.to_owned(),
        },
        Ret::Delete { revision, deleted },
    )
}

fn cas_call(key: &str, expect_mod_revision: i64, value: &str) -> Call {
    Call::Cas {
        key: key.to_owned(),
        expect_mod_revision,
        value: value.to_owned(),
    }
}

fn cas_ok(client: u32, t: (u64, u64), key: &str, expect: i64, value: &str, revision: i64) -> Op {
    op(
        client,
        t,
        cas_call(key, expect, value),
        Ret::Cas {
            revision,
            succeeded: true,
            kv: None,
        },
    )
}

fn cas_fail(
    client: u32,
    t: (u64, u64),
    key: &str,
    expect: i64,
    value: &str,
    revision: i64,
    kv: Option<Kv>,
) -> Op {
    op(
        client,
        t,
        cas_call(key, expect, value),
        Ret::Cas {
            revision,
            succeeded: false,
            kv,
        },
    )
}

fn put_unknown(client: u32, invoke: u64, key: &str, value: &str) -> Op {
    Op {
        client,
        invoke,
        complete: None,
        call: Call::Put {
            key: key.to_owned(),
            value: value.to_owned(),
        },
        ret: Ret::Unknown,
    }
}

/// The check that fails, or `None` if the history passes.
fn verdict(history: &History) -> Option<Check> {
    check(history).err().map(|v| v.check)
}

#[test]
fn sequential_history_is_valid() {
    let history = vec![
        get(0, (0, 1), "a", 1, None),
        put(0, (2, 3), "a", "1", 2),
        get(0, (4, 5), "a", 2, kv("1", 2, 2, 1)),
        put(0, (6, 7), "a", "2", 3),
        put(0, (8, 9), "b", "x", 4),
        get(0, (10, 11), "a", 4, kv("2", 3, 2, 2)),
        delete(0, (12, 13), "a", 5, 1),
        get(0, (14, 15), "a", 5, None),
        put(0, (16, 17), "a", "3", 6),
        get(0, (18, 19), "a", 6, kv("3", 6, 6, 1)),
    ];
    let stats = check(&history).unwrap();
    assert_eq!(
        (stats.ops, stats.keys, stats.unknown, stats.failed),
        (10, 2, 0, 0)
    );
    assert!(stats.states >= 10, "every op is a state: {stats:?}");

    // The same history with the second put's value read back wrong.
    let mut wrong = history.clone();
    wrong[5] = get(0, (10, 11), "a", 4, kv("1", 3, 2, 2));
    assert_eq!(verdict(&wrong), Some(Check::Linearizability));
}

#[test]
fn concurrent_puts_valid_in_one_order_only() {
    // Two puts overlap; reads during them show "y" then "x", so y went first.
    let history = vec![
        put(0, (0, 100), "k", "x", 3),
        put(1, (0, 100), "k", "y", 2),
        get(2, (10, 20), "k", 2, kv("y", 2, 2, 1)),
        get(2, (30, 40), "k", 3, kv("x", 3, 2, 2)),
        get(3, (35, 110), "k", 3, kv("x", 3, 2, 2)),
    ];
    assert_eq!(verdict(&history), None);

    // After both completed, "y" can no longer be the value.
    let mut late = history.clone();
    late.push(get(2, (120, 130), "k", 3, kv("y", 2, 2, 1)));
    assert_eq!(verdict(&late), Some(Check::Linearizability));

    // The reads in the other order: the second read's header goes back.
    let mut swapped = history.clone();
    swapped[2] = get(2, (10, 20), "k", 3, kv("x", 3, 2, 2));
    swapped[3] = get(2, (30, 40), "k", 2, kv("y", 2, 2, 1));
    assert_eq!(verdict(&swapped), Some(Check::ReadOrder));

    // Same, with the header kept up to date: no order explains it.
    swapped[3] = get(2, (30, 40), "k", 3, kv("y", 2, 2, 1));
    assert_eq!(verdict(&swapped), Some(Check::Linearizability));
}

#[test]
fn concurrent_reads_order_by_header_revision() {
    // Two overlapping reads of an absent key, one at a later header: valid,
    // ordered by header, whichever was invoked first.
    let history = vec![
        put(0, (0, 5), "other", "o", 2),
        get(1, (10, 50), "k", 2, None),
        get(2, (10, 50), "k", 1, None),
    ];
    // The second read's header is below a write that completed before it
    // was invoked.
    assert_eq!(verdict(&history), Some(Check::ReadOrder));
    let mut fixed = history.clone();
    fixed[0] = put(0, (0, 15), "other", "o", 2);
    assert_eq!(verdict(&fixed), None);
}

#[test]
fn header_revision_places_a_read_among_concurrent_writes() {
    // All concurrent. The absent read at header 6 comes after the delete.
    let history = vec![
        put(0, (0, 100), "k", "a", 2),
        get(1, (0, 100), "k", 5, kv("a", 2, 2, 1)),
        delete(2, (0, 100), "k", 6, 1),
        get(3, (0, 100), "k", 6, None),
    ];
    assert_eq!(verdict(&history), None);
    // At header 4 it is before the delete (6), so after the put (2): it
    // cannot see the key absent. Only the header revision says so.
    let mut early = history.clone();
    early[3] = get(3, (0, 100), "k", 4, None);
    assert_eq!(verdict(&early), Some(Check::Linearizability));
}

#[test]
fn stale_read_is_a_violation() {
    let history = vec![
        put(0, (0, 1), "k", "old", 2),
        put(0, (2, 3), "k", "new", 3),
        get(1, (4, 5), "k", 3, kv("new", 3, 2, 2)),
    ];
    assert_eq!(verdict(&history), None);
    let mut stale = history.clone();
    stale[2] = get(1, (4, 5), "k", 3, kv("old", 2, 2, 1));
    assert_eq!(verdict(&stale), Some(Check::Linearizability));
    // A stale read that also reports the stale header.
    stale[2] = get(1, (4, 5), "k", 2, kv("old", 2, 2, 1));
    assert_eq!(verdict(&stale), Some(Check::ReadOrder));
}

#[test]
fn lost_acknowledged_write_is_a_violation() {
    // A read concurrent with the put may miss it...
    let history = vec![put(0, (0, 10), "k", "v", 2), get(1, (5, 8), "k", 1, None)];
    assert_eq!(verdict(&history), None);
    // ...but not after it completed, and no other write removed it.
    let mut lost = history.clone();
    lost.push(get(1, (20, 21), "k", 2, None));
    lost.push(get(2, (30, 31), "k", 2, None));
    let violation = check(&lost).unwrap_err();
    assert_eq!(violation.check, Check::Linearizability);
    assert_eq!(violation.key.as_deref(), Some("k"));
    let stuck: Vec<usize> = violation
        .window
        .iter()
        .filter(|w| w.mark == Mark::Stuck)
        .map(|w| w.index)
        .collect();
    assert_eq!(stuck, vec![2], "{violation}");
}

#[test]
fn revisions_going_backwards_across_keys_is_a_violation() {
    let history = vec![put(0, (0, 1), "a", "1", 3), put(1, (2, 3), "b", "1", 2)];
    let violation = check(&history).unwrap_err();
    assert_eq!(violation.check, Check::WriteOrder);
    assert_eq!(
        violation.window.iter().map(|w| w.index).collect::<Vec<_>>(),
        vec![0, 1]
    );
    // Concurrent, either order of revisions is fine.
    let mut concurrent = history.clone();
    concurrent[1] = put(1, (0, 3), "b", "1", 2);
    assert_eq!(verdict(&concurrent), None);
    // A read on another key at a header below an earlier write.
    let read = vec![put(0, (0, 1), "a", "1", 2), get(1, (2, 3), "b", 1, None)];
    assert_eq!(verdict(&read), Some(Check::ReadOrder));
}

#[test]
fn duplicate_revision_is_a_violation() {
    let history = vec![put(0, (0, 10), "a", "1", 2), put(1, (0, 10), "b", "1", 3)];
    assert_eq!(verdict(&history), None);
    let mut duplicate = history.clone();
    duplicate[1] = put(1, (0, 10), "b", "1", 2);
    assert_eq!(verdict(&duplicate), Some(Check::DuplicateRevision));
    // A delete and a Cas are writes too.
    let mixed = vec![put(0, (0, 10), "a", "1", 2), delete(1, (0, 10), "b", 2, 1)];
    assert_eq!(verdict(&mixed), Some(Check::DuplicateRevision));
}

#[test]
fn unknown_put_observed_later_is_valid() {
    let history = vec![
        put_unknown(0, 0, "k", "u"),
        get(1, (10, 11), "k", 2, kv("u", 2, 2, 1)),
    ];
    let stats = check(&history).unwrap();
    assert_eq!(stats.unknown, 1);
    // Not before it was invoked.
    let mut early = history.clone();
    early[0] = put_unknown(0, 20, "k", "u");
    early.swap(0, 1);
    assert_eq!(verdict(&early), Some(Check::Linearizability));
}

#[test]
fn unknown_put_never_observed_is_valid() {
    let history = vec![
        put_unknown(0, 0, "k", "u"),
        put(1, (5, 6), "k", "v", 2),
        get(1, (10, 11), "k", 2, kv("v", 2, 2, 1)),
        get(1, (12, 13), "k", 2, kv("v", 2, 2, 1)),
    ];
    assert_eq!(verdict(&history), None);
    // A read that says the key existed before "v" was put: only the unknown
    // put can explain it, and only if it took revision 2, below "v".
    let counted = vec![
        put_unknown(0, 0, "k", "u"),
        put(1, (5, 6), "k", "v", 3),
        get(1, (10, 11), "k", 3, kv("v", 3, 2, 2)),
    ];
    assert_eq!(verdict(&counted), None);
    assert_eq!(
        verdict(&counted[1..].to_vec()),
        Some(Check::Linearizability)
    );
}

#[test]
fn unknown_put_placed_between_known_writes() {
    // "u" took a revision between "v" (2) and the read (4); its create
    // revision is v's.
    let history = vec![
        put_unknown(0, 0, "k", "u"),
        put(1, (0, 5), "k", "v", 2),
        put(2, (6, 7), "other", "o", 3),
        get(1, (10, 11), "k", 4, kv("u", 4, 2, 2)),
    ];
    assert_eq!(verdict(&history), None);
    // It cannot have taken revision 3: "other" did.
    let mut taken = history.clone();
    taken[3] = get(1, (10, 11), "k", 4, kv("u", 3, 2, 2));
    assert_eq!(verdict(&taken), Some(Check::DuplicateRevision));
    // Nor 2, which "v" took.
    taken[3] = get(1, (10, 11), "k", 4, kv("u", 2, 1, 2));
    assert_eq!(verdict(&taken), Some(Check::Linearizability));
}

#[test]
fn read_of_a_value_nobody_wrote_is_a_violation() {
    let history = vec![
        put(0, (0, 1), "k", "v", 2),
        get(1, (2, 3), "k", 2, kv("v", 2, 2, 1)),
    ];
    assert_eq!(verdict(&history), None);
    let mut invented = history.clone();
    invented[1] = get(1, (2, 3), "k", 2, kv("ghost", 2, 2, 1));
    assert_eq!(verdict(&invented), Some(Check::Linearizability));
    // Even when a failed put of it exists.
    invented.push(Op {
        ret: Ret::Failed,
        ..put(2, (0, 1), "k", "ghost", 0)
    });
    assert_eq!(verdict(&invented), Some(Check::Linearizability));
    invented[1] = get(1, (2, 3), "k", 2, kv("v", 2, 2, 1));
    assert_eq!(check(&invented).unwrap().failed, 1);
}

#[test]
fn cas_semantics() {
    let history = vec![
        // Expect 0 on a missing key: holds.
        cas_ok(0, (0, 1), "k", 0, "a", 2),
        // Expect 0 on a present key: fails, reads the key.
        cas_fail(0, (2, 3), "k", 0, "b", 2, kv("a", 2, 2, 1)),
        // Expect the current mod revision: holds.
        cas_ok(0, (4, 5), "k", 2, "c", 3),
        // Expect an old one: fails.
        cas_fail(0, (6, 7), "k", 2, "d", 3, kv("c", 3, 2, 2)),
        delete(0, (8, 9), "k", 4, 1),
        // Expect a revision on a missing key: fails, reads nothing.
        cas_fail(0, (10, 11), "k", 3, "e", 4, None),
    ];
    assert_eq!(verdict(&history), None);

    let mut bad = history[..2].to_vec();
    bad[1] = cas_ok(0, (2, 3), "k", 0, "b", 3);
    assert_eq!(
        verdict(&bad),
        Some(Check::Linearizability),
        "expect 0 cannot hold on a present key"
    );
    let mut bad = history.clone();
    bad[3] = cas_fail(0, (6, 7), "k", 3, "d", 3, kv("c", 3, 2, 2));
    assert_eq!(
        verdict(&bad),
        Some(Check::Linearizability),
        "a compare that held cannot fail"
    );
    let mut bad = history.clone();
    bad[5] = cas_ok(0, (10, 11), "k", 3, "e", 5);
    assert_eq!(
        verdict(&bad),
        Some(Check::Linearizability),
        "a missing key compares as 0"
    );
    let mut bad = history.clone();
    bad[5] = cas_fail(0, (10, 11), "k", 0, "e", 4, None);
    assert_eq!(
        verdict(&bad),
        Some(Check::Linearizability),
        "expect 0 on a missing key holds"
    );
}

#[test]
fn unknown_cas_applies_only_if_its_compare_holds() {
    let unknown = |invoke, expect, value| Op {
        client: 9,
        invoke,
        complete: None,
        call: cas_call("k", expect, value),
        ret: Ret::Unknown,
    };
    let history = vec![
        put(0, (0, 1), "k", "a", 2),
        unknown(2, 2, "b"),
        get(1, (10, 11), "k", 3, kv("b", 3, 2, 2)),
    ];
    assert_eq!(verdict(&history), None);
    let mut wrong_expect = history.clone();
    wrong_expect[1] = unknown(2, 7, "b");
    assert_eq!(verdict(&wrong_expect), Some(Check::Linearizability));
}

#[test]
fn delete_then_read_absent() {
    let history = vec![
        put(0, (0, 1), "k", "v", 2),
        delete(0, (2, 3), "k", 3, 1),
        get(1, (4, 5), "k", 3, None),
        delete(1, (6, 7), "k", 3, 0),
    ];
    assert_eq!(verdict(&history), None);
    let mut resurrected = history.clone();
    resurrected[2] = get(1, (4, 5), "k", 3, kv("v", 2, 2, 1));
    assert_eq!(verdict(&resurrected), Some(Check::Linearizability));
    let mut twice = history.clone();
    twice[3] = delete(1, (6, 7), "k", 4, 1);
    assert_eq!(verdict(&twice), Some(Check::Linearizability));
}

#[test]
fn version_and_create_revision_bookkeeping() {
    let history = vec![
        put(0, (0, 1), "k", "1", 2),
        put(0, (2, 3), "k", "2", 3),
        get(0, (4, 5), "k", 3, kv("2", 3, 2, 2)),
        delete(0, (6, 7), "k", 4, 1),
        put(0, (8, 9), "k", "3", 5),
        put(0, (10, 11), "k", "4", 6),
        get(0, (12, 13), "k", 6, kv("4", 6, 5, 2)),
    ];
    assert_eq!(verdict(&history), None);
    // A version that survived the delete.
    let mut bad = history.clone();
    bad[6] = get(0, (12, 13), "k", 6, kv("4", 6, 5, 4));
    assert_eq!(verdict(&bad), Some(Check::Linearizability));
    // The first generation's create revision.
    bad[6] = get(0, (12, 13), "k", 6, kv("4", 6, 2, 2));
    assert_eq!(verdict(&bad), Some(Check::Linearizability));
    // Inconsistent by itself: version 1 but create_revision != mod_revision.
    bad[6] = get(0, (12, 13), "k", 6, kv("4", 6, 5, 1));
    assert_eq!(verdict(&bad), Some(Check::KvMetadata));
    // mod_revision above the header revision.
    bad[6] = get(0, (12, 13), "k", 5, kv("4", 6, 5, 2));
    assert_eq!(verdict(&bad), Some(Check::KvMetadata));
    // version 0.
    bad[2] = get(0, (4, 5), "k", 3, kv("2", 3, 3, 0));
    assert_eq!(verdict(&bad), Some(Check::KvMetadata));
}

#[test]
fn malformed_histories_are_reported() {
    let mut history = vec![put(0, (5, 4), "k", "v", 2)];
    assert_eq!(verdict(&history), Some(Check::Malformed));
    history[0] = op(
        0,
        (0, 1),
        Call::Get {
            key: "k".to_owned(),
        },
        Ret::Put { revision: 2 },
    );
    assert_eq!(verdict(&history), Some(Check::Malformed));
    history[0] = Op {
        complete: None,
        ..put(0, (0, 1), "k", "v", 2)
    };
    assert_eq!(verdict(&history), Some(Check::Malformed));
}

#[test]
fn violation_shows_a_small_readable_window() {
    // A long valid run on one key, then a stale read.
    let mut history = Vec::new();
    for i in 0..200u64 {
        let revision = i as i64 + 2;
        history.push(put(
            0,
            (10 * i, 10 * i + 1),
            "k",
            &format!("v{i}"),
            revision,
        ));
    }
    history.push(get(1, (2000, 2001), "k", 201, kv("v3", 5, 2, 4)));
    let violation = check(&history).unwrap_err();
    assert_eq!(violation.check, Check::Linearizability);
    assert!(violation.window.len() <= WINDOW_OPS_MAX);
    assert!(violation
        .window
        .iter()
        .any(|w| w.index == 200 && w.mark == Mark::Stuck));
    let text = violation.to_string();
    assert!(text.starts_with("not linearizable on key \"k\":"), "{text}");
    assert!(text.contains("get k"), "{text}");
    assert!(
        text.contains("rev 201 \"v3\" (mod 5, create 2, ver 4)"),
        "{text}"
    );
    assert!(
        text.contains("\"v199\" (mod_revision 201"),
        "the state before the read: {text}"
    );
    assert_eq!(text.lines().count(), 2 + violation.window.len(), "{text}");
}

#[test]
fn exhausted_budget_is_inconclusive_not_a_pass() {
    let history = generate(
        7,
        Shape {
            ops: 300,
            clients: 8,
            keys: 1,
            unknown_percent: 10,
            failed_percent: 5,
        },
    );
    assert!(check(&history).is_ok());
    let tiny = Config {
        max_states_per_key: 10,
    };
    let violation = check_with(&history, &tiny).unwrap_err();
    assert!(violation.is_inconclusive());
    assert!(
        violation.to_string().starts_with("inconclusive"),
        "{violation}"
    );
}

fn random_shape(rng: &mut Rng) -> Shape {
    Shape {
        ops: 20 + rng.below(300) as usize,
        clients: 1 + rng.below(10) as u32,
        keys: 1 + rng.below(4) as u32,
        unknown_percent: rng.below(15),
        failed_percent: rng.below(10),
    }
}

#[test]
fn generated_valid_histories_pass() {
    let mut rng = Rng::new(1);
    for seed in 0..300 {
        let shape = random_shape(&mut rng);
        let history = generate(seed, shape);
        if let Err(violation) = check(&history) {
            panic!("seed {seed} {shape:?}: a valid history failed: {violation}");
        }
    }
}

/// Replaces the value of one read that saw the key with another value
/// written to that key (or an unwritten one); `None` if there is no read.
fn mutate_one_read(rng: &mut Rng, history: &mut History) -> Option<usize> {
    let reads: Vec<usize> = (0..history.len())
        .filter(|&i| matches!(history[i].ret, Ret::Get { kv: Some(_), .. }))
        .collect();
    let &target = reads.get(rng.below(reads.len().max(1) as u64) as usize)?;
    let key = history[target].call.key().to_owned();
    let Ret::Get { kv: Some(kv), .. } = &history[target].ret else {
        unreachable!()
    };
    let others: Vec<String> = history
        .iter()
        .filter_map(|op| match &op.call {
            Call::Put { key: k, value } | Call::Cas { key: k, value, .. }
                if *k == key && *value != kv.value =>
            {
                Some(value.clone())
            }
            _ => None,
        })
        .collect();
    let value = others
        .get(rng.below(others.len().max(1) as u64) as usize)
        .cloned()
        .unwrap_or_else(|| "x".to_owned());
    if let Ret::Get { kv: Some(kv), .. } = &mut history[target].ret {
        kv.value = value;
    }
    Some(target)
}

#[test]
fn mutated_reads_are_caught() {
    let mut rng = Rng::new(2);
    let (mut tried, mut caught) = (0, 0);
    for seed in 0..300 {
        let shape = random_shape(&mut rng);
        let mut history = generate(1000 + seed, shape);
        if mutate_one_read(&mut rng, &mut history).is_none() {
            continue;
        }
        tried += 1;
        match check(&history) {
            Err(v) if v.check == Check::Linearizability => caught += 1,
            Err(v) => panic!("seed {seed}: only the value changed, yet: {v}"),
            Ok(_) => {}
        }
    }
    eprintln!("caught {caught} of {tried} mutated reads");
    assert!(tried >= 250, "{tried}");
    assert!(caught * 100 >= tried * 95, "caught {caught} of {tried}");
}

#[test]
fn big_history_checks_quickly() {
    let shape = Shape {
        ops: 5000,
        clients: 10,
        keys: 8,
        unknown_percent: 3,
        failed_percent: 2,
    };
    let history = generate(42, shape);
    let stats = check(&history).unwrap();
    eprintln!("5000 ops, 8 keys, 10 clients: {stats:?}");
    assert_eq!((stats.ops, stats.keys), (5000, 8));
    assert!(stats.unknown > 50, "{stats:?}");
    assert!(stats.states < 200_000, "{stats:?}");
    let mut rng = Rng::new(3);
    let mut mutated = history.clone();
    mutate_one_read(&mut rng, &mut mutated).unwrap();
    assert_eq!(verdict(&mutated), Some(Check::Linearizability));
}

#[test]
fn checking_is_deterministic() {
    let mut history = generate(
        5,
        Shape {
            ops: 400,
            clients: 6,
            keys: 3,
            unknown_percent: 5,
            failed_percent: 5,
        },
    );
    mutate_one_read(&mut Rng::new(9), &mut history).unwrap();
    assert_eq!(check(&history), check(&history));
}

/// A wider sweep than the default tests: more ops, clients and unknowns.
/// `cargo test --release -p cairn-sim stress -- --ignored --nocapture`
#[test]
#[ignore]
fn stress_generated_histories() {
    let mut rng = Rng::new(11);
    let (mut states_max, mut tried, mut caught, mut inconclusive) = (0, 0, 0, 0);
    for seed in 0..2000 {
        let shape = Shape {
            ops: 50 + rng.below(1500) as usize,
            clients: 1 + rng.below(16) as u32,
            keys: 1 + rng.below(8) as u32,
            unknown_percent: rng.below(30),
            failed_percent: rng.below(10),
        };
        let mut history = generate(50_000 + seed, shape);
        match check(&history) {
            Ok(stats) => states_max = states_max.max(stats.states_max_per_key),
            Err(v) => panic!("seed {seed} {shape:?}: a valid history failed: {v}"),
        }
        if mutate_one_read(&mut rng, &mut history).is_some() {
            tried += 1;
            match check(&history) {
                Err(v) if v.check == Check::Linearizability => caught += 1,
                Err(v) if v.is_inconclusive() => inconclusive += 1,
                Err(v) => panic!("seed {seed}: {v}"),
                Ok(_) => {}
            }
        }
    }
    eprintln!("most states for one key {states_max}; mutations caught {caught} of {tried}, {inconclusive} inconclusive");
    assert_eq!(inconclusive, 0);
}

#[test]
fn shrinking_keeps_the_stale_read_and_drops_the_rest() {
    // Ten good reads of k, reads of another key, then a stale read of k.
    let mut history = vec![put(0, (0, 1), "k", "old", 2), put(0, (2, 3), "k", "new", 3)];
    for i in 0..10 {
        let t = 10 + 2 * i;
        history.push(get(1, (t, t + 1), "k", 3, kv("new", 3, 2, 2)));
        history.push(get(2, (t, t + 1), "other", 3, None));
    }
    history.push(get(3, (40, 41), "k", 3, kv("old", 2, 2, 1)));
    let violation = check(&history).expect_err("a stale read");
    assert_eq!(violation.check, Check::Linearizability);
    let shrunk = super::shrink::shrink(&history, &violation, 100);
    // Both writes stay (leaving one out would prove nothing); of the reads
    // only the stale one is needed.
    assert_eq!(shrunk.ops, vec![0, 1, history.len() - 1]);
    assert_eq!(shrunk.violation.check, Check::Linearizability);
    assert!(shrunk
        .violation
        .window
        .iter()
        .all(|w| shrunk.ops.contains(&w.index)));
    // The sub-history fails by itself.
    let sub: History = shrunk.ops.iter().map(|&i| history[i].clone()).collect();
    assert!(check(&sub).is_err());
}
