//! The checker of multi-key operations: txns that compare and put several
//! keys at once, and ranges at a past or the current revision.
//!
//! # The ground truth: the watchers' event log
//!
//! Every write takes one revision, so a store's history is a sequence of
//! revisions, and the events at each are what watchers receive. Watchers
//! over the whole range of the multi-key ops (`range`, given by the caller),
//! resumed one after another, see that sequence; the watch checker has
//! already proved what they saw agrees with every acknowledged write and
//! misses nothing up to the revision each vouched for. So the state of
//! every key at any revision `R` up to the *covered* revision is known
//! exactly: the latest event at or below `R`. The covered revision is the
//! end of the run of overlapping `[first revision, vouched]` intervals of
//! those watchers that starts at or below the earliest event in the range
//! (the range holds no keys when the run starts, so nothing is missed
//! before it).
//!
//! # The checks, for each op with a known outcome
//!
//! - **Real time** ([`MultiCheck::RealTime`]): its revision (a read's header
//!   revision, a txn's own) is at least (for a write, above) the revision of
//!   every op, single- or multi-key, that completed before it was invoked.
//! - **Snapshot** ([`MultiCheck::Snapshot`]): a range at `R` (or at its
//!   header revision for a current read) returns exactly the log's state at
//!   `R`: the same keys, values, mod and create revisions and versions.
//! - **Txn** ([`MultiCheck::Txn`]): a txn that succeeded at `W` has exactly
//!   its puts at `W` in the log (every key, its value, nothing else) and
//!   each compared key had the expected mod revision at `W - 1`; a txn that
//!   failed at header `H` read each key as the log has it at `H`, and at
//!   least one compare was false there.
//!
//! Ops at revisions above the covered one are counted as unchecked, never
//! passed. Together with the real-time check these make each op
//! linearizable at its revision: the log fixes the order of writes, the
//! revisions place each op in it, and real time bounds where it may go.

use std::collections::BTreeMap;
use std::fmt;

use super::history::{EventKind, Extra, History, Kv, MultiCall, MultiOp, MultiRet, Ret};

/// Which rule a [`MultiViolation`] breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MultiCheck {
    RealTime,
    Snapshot,
    Txn,
}

impl fmt::Display for MultiCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MultiCheck::RealTime => "a multi-key op's revision goes back in real time",
            MultiCheck::Snapshot => "a range does not match the store at its revision",
            MultiCheck::Txn => "a multi-key txn does not match the store",
        })
    }
}

/// A broken rule, about multi-key op `op` (an index into `Extra::multi`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultiViolation {
    pub check: MultiCheck,
    pub op: usize,
    pub message: String,
}

impl fmt::Display for MultiViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (multi-key op #{}): {}",
            self.check, self.op, self.message
        )
    }
}

impl std::error::Error for MultiViolation {}

/// What a passing check looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MultiStats {
    pub ops: usize,
    /// Ranges and txns checked against the log.
    pub ranges: usize,
    pub txns: usize,
    /// Ops with a known outcome above the covered revision.
    pub unchecked: usize,
    /// The covered revision (0: no watcher covered the range).
    pub covered: i64,
}

/// A key's state after an event: `None` when deleted.
type Log = BTreeMap<String, BTreeMap<i64, Option<Kv>>>;

fn in_range(key: &str, (start, end): (&str, &str)) -> bool {
    key >= start && (end.is_empty() || key < end)
}

/// The event log of the range, and the revision it is complete up to.
fn event_log(extra: &Extra, range: (&str, &str)) -> (Log, i64) {
    let mut log = Log::new();
    for w in &extra.watches {
        for r in &w.responses {
            for e in r.events.iter().filter(|e| in_range(&e.key, range)) {
                let state = (e.kind == EventKind::Put).then(|| Kv {
                    value: e.value.clone(),
                    mod_revision: e.mod_revision,
                    create_revision: e.create_revision,
                    version: e.version,
                });
                log.entry(e.key.clone())
                    .or_default()
                    .entry(e.mod_revision)
                    .or_insert(state);
            }
        }
    }
    let earliest = log
        .values()
        .filter_map(|k| k.keys().next().copied())
        .min()
        .unwrap_or(i64::MAX);
    let mut spans: Vec<(i64, i64)> = extra
        .watches
        .iter()
        .filter(|w| w.key == range.0 && w.range_end == range.1)
        .filter_map(|w| Some((w.first_revision()?, w.vouched())))
        .filter(|(first, vouched)| first <= vouched)
        .collect();
    spans.sort_unstable();
    let mut covered = 0;
    let mut reach: Option<i64> = None;
    for (first, vouched) in spans {
        match reach {
            None if first <= earliest => reach = Some(vouched),
            Some(r) if first <= r + 1 => reach = Some(r.max(vouched)),
            _ => {}
        }
        covered = reach.unwrap_or(0);
    }
    (log, covered)
}

/// The state of `key` at `revision` by the log.
fn at<'a>(log: &'a Log, key: &str, revision: i64) -> Option<&'a Kv> {
    log.get(key)?
        .range(..=revision)
        .next_back()
        .and_then(|(_, s)| s.as_ref())
}

fn fmt_kv(kv: Option<&Kv>) -> String {
    kv.map_or_else(
        || "absent".to_owned(),
        |kv| {
            format!(
                "{:?} (mod {}, create {}, ver {})",
                kv.value, kv.mod_revision, kv.create_revision, kv.version
            )
        },
    )
}

/// Checks the run's multi-key ops; `range` is the key range they touch
/// (`[start, end)`), which watchers over exactly that range covered.
pub fn check_multi(
    history: &History,
    extra: &Extra,
    range: (&str, &str),
) -> Result<MultiStats, MultiViolation> {
    let (log, covered) = event_log(extra, range);
    let mut stats = MultiStats {
        ops: extra.multi.len(),
        covered,
        ..MultiStats::default()
    };
    check_real_time(history, &extra.multi)?;
    for (i, op) in extra.multi.iter().enumerate() {
        let fail = |check, message| MultiViolation {
            check,
            op: i,
            message,
        };
        match (&op.call, &op.ret) {
            (
                MultiCall::Range {
                    key,
                    range_end,
                    revision,
                },
                MultiRet::Range {
                    revision: header,
                    kvs,
                },
            ) => {
                let r = if *revision > 0 { *revision } else { *header };
                if r > covered {
                    stats.unchecked += 1;
                    continue;
                }
                stats.ranges += 1;
                let want: Vec<(&String, &Kv)> = log
                    .keys()
                    .filter(|k| in_range(k, (key, range_end)))
                    .filter_map(|k| Some((k, at(&log, k, r)?)))
                    .collect();
                let got: Vec<(&String, &Kv)> = kvs.iter().map(|(k, v)| (k, v)).collect();
                if want != got {
                    let show = |v: &[(&String, &Kv)]| {
                        v.iter()
                            .map(|(k, kv)| format!("{k}={}", fmt_kv(Some(kv))))
                            .collect::<Vec<_>>()
                            .join(", ")
                    };
                    return Err(fail(
                        MultiCheck::Snapshot,
                        format!(
                            "range [{key:?}, {range_end:?}) at revision {r} returned [{}] but the store \
                             held [{}]",
                            show(&got),
                            show(&want)
                        ),
                    ));
                }
            }
            (
                MultiCall::Txn { keys, value },
                MultiRet::Txn {
                    revision,
                    succeeded,
                    kvs,
                },
            ) => {
                if *revision > covered {
                    stats.unchecked += 1;
                    continue;
                }
                stats.txns += 1;
                check_txn(&log, keys, value, *revision, *succeeded, kvs)
                    .map_err(|m| fail(MultiCheck::Txn, m))?;
            }
            _ => {}
        }
    }
    Ok(stats)
}

fn check_txn(
    log: &Log,
    keys: &[(String, i64)],
    value: &str,
    revision: i64,
    succeeded: bool,
    kvs: &[(String, Option<Kv>)],
) -> Result<(), String> {
    let mod_at = |key: &str, r: i64| at(log, key, r).map_or(0, |kv| kv.mod_revision);
    if succeeded {
        let at_w: Vec<&String> = log
            .iter()
            .filter(|(_, events)| events.contains_key(&revision))
            .map(|(k, _)| k)
            .collect();
        let mine: Vec<&String> = keys.iter().map(|(k, _)| k).collect();
        if at_w != mine {
            return Err(format!(
                "it succeeded at revision {revision}, where the store changed {at_w:?}, not {mine:?}"
            ));
        }
        for (key, expect) in keys {
            let now = at(log, key, revision);
            if now.map(|kv| kv.value.as_str()) != Some(value) {
                return Err(format!(
                    "it put {value:?} at {key} at revision {revision}, but the store has {}",
                    fmt_kv(now)
                ));
            }
            let before = mod_at(key, revision - 1);
            if before != *expect {
                return Err(format!(
                    "it succeeded at revision {revision}, comparing {key}'s mod revision with {expect}, \
                     but it was {before}"
                ));
            }
        }
        return Ok(());
    }
    for (key, kv) in kvs {
        let want = at(log, key, revision);
        if want != kv.as_ref() {
            return Err(format!(
                "it failed at revision {revision} and read {key} as {}, but the store had {}",
                fmt_kv(kv.as_ref()),
                fmt_kv(want)
            ));
        }
    }
    if keys
        .iter()
        .all(|(key, expect)| mod_at(key, revision) == *expect)
    {
        return Err(format!(
            "it failed at revision {revision}, but every compare held there: {keys:?}"
        ));
    }
    Ok(())
}

/// The revision an op carries and whether it is a write's own.
fn carried_multi(op: &MultiOp) -> Option<(i64, bool)> {
    match op.ret {
        MultiRet::Range { revision, .. } => Some((revision, false)),
        MultiRet::Txn {
            revision,
            succeeded,
            ..
        } => Some((revision, succeeded)),
        MultiRet::Failed | MultiRet::Unknown => None,
    }
}

fn carried_single(ret: &Ret) -> Option<i64> {
    match *ret {
        Ret::Put { revision }
        | Ret::Get { revision, .. }
        | Ret::Delete { revision, .. }
        | Ret::Cas { revision, .. } => Some(revision),
        Ret::Failed | Ret::Unknown => None,
    }
}

/// The real-time rule for every multi-key op, against every op completed
/// before it was invoked.
fn check_real_time(history: &History, multi: &[MultiOp]) -> Result<(), MultiViolation> {
    // (completion time, revision, what), in completion order.
    let mut done: Vec<(u64, i64, String)> = history
        .iter()
        .enumerate()
        .filter_map(|(i, op)| Some((op.complete?, carried_single(&op.ret)?, format!("op #{i}"))))
        .collect();
    done.extend(multi.iter().enumerate().filter_map(|(i, op)| {
        Some((
            op.complete?,
            carried_multi(op)?.0,
            format!("multi-key op #{i}"),
        ))
    }));
    done.sort();
    // The highest revision completed up to each point.
    let mut best: Vec<(u64, i64, usize)> = Vec::with_capacity(done.len());
    for (j, (t, r, _)) in done.iter().enumerate() {
        match best.last() {
            Some(&(_, b, _)) if b >= *r => best.push((*t, b, best.last().map_or(j, |x| x.2))),
            _ => best.push((*t, *r, j)),
        }
    }
    for (i, op) in multi.iter().enumerate() {
        let Some((revision, write)) = carried_multi(op) else {
            continue;
        };
        let before = best.partition_point(|&(t, _, _)| t < op.invoke);
        let Some(&(_, floor, j)) = before.checked_sub(1).map(|k| &best[k]) else {
            continue;
        };
        let ok = if write {
            revision > floor
        } else {
            revision >= floor
        };
        if !ok {
            return Err(MultiViolation {
                check: MultiCheck::RealTime,
                op: i,
                message: format!(
                    "it carries revision {revision}, but {} completed with revision {floor} before it \
                     was invoked",
                    done[j].2
                ),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::history::{Event, WatchEnd, WatchRecord, WatchResponse};

    fn kv(value: &str, m: i64, c: i64, v: i64) -> Kv {
        Kv {
            value: value.into(),
            mod_revision: m,
            create_revision: c,
            version: v,
        }
    }

    fn put_event(key: &str, value: &str, m: i64) -> Event {
        Event {
            kind: EventKind::Put,
            key: key.into(),
            value: value.into(),
            mod_revision: m,
            create_revision: m,
            version: 1,
            lease: 0,
            prev: None,
        }
    }

    /// A watcher of ["p/", "p0") from revision 2 that got the txn at 3
    /// (a and b) and a put of a at 4 (version 2), and vouched for 5.
    fn extra(multi: Vec<MultiOp>) -> Extra {
        let mut a4 = put_event("p/a", "y", 4);
        a4.create_revision = 3;
        a4.version = 2;
        let resp = |at, header, events| WatchResponse {
            at,
            header_revision: header,
            fragment: false,
            canceled: false,
            compact_revision: 0,
            events,
        };
        let w = WatchRecord {
            client: 0,
            member: 0,
            key: "p/".into(),
            range_end: "p0".into(),
            start_revision: 2,
            prev_kv: false,
            no_put: false,
            no_delete: false,
            fragment: false,
            resumes: None,
            invoke: 0,
            created: Some((1, 1)),
            watch_id: 0,
            responses: vec![
                resp(
                    30,
                    3,
                    vec![put_event("p/a", "x", 3), put_event("p/b", "x", 3)],
                ),
                resp(50, 4, vec![a4]),
                resp(60, 5, vec![]),
            ],
            progress_requests: vec![55],
            end: WatchEnd::Open,
        };
        Extra {
            watches: vec![w],
            multi,
            ..Extra::default()
        }
    }

    fn op(t: (u64, u64), call: MultiCall, ret: MultiRet) -> MultiOp {
        MultiOp {
            client: 1,
            invoke: t.0,
            complete: Some(t.1),
            call,
            ret,
        }
    }

    fn range_at(revision: i64) -> MultiCall {
        MultiCall::Range {
            key: "p/".into(),
            range_end: "p0".into(),
            revision,
        }
    }

    fn txn_call(expect_a: i64, expect_b: i64) -> MultiCall {
        MultiCall::Txn {
            keys: vec![("p/a".into(), expect_a), ("p/b".into(), expect_b)],
            value: "x".into(),
        }
    }

    fn valid() -> Vec<MultiOp> {
        let both = vec![
            ("p/a".into(), kv("x", 3, 3, 1)),
            ("p/b".into(), kv("x", 3, 3, 1)),
        ];
        vec![
            op(
                (10, 20),
                txn_call(0, 0),
                MultiRet::Txn {
                    revision: 3,
                    succeeded: true,
                    kvs: vec![],
                },
            ),
            op(
                (21, 22),
                range_at(0),
                MultiRet::Range {
                    revision: 3,
                    kvs: both.clone(),
                },
            ),
            op(
                (60, 61),
                range_at(3),
                MultiRet::Range {
                    revision: 4,
                    kvs: both,
                },
            ),
            op(
                (60, 61),
                range_at(2),
                MultiRet::Range {
                    revision: 4,
                    kvs: vec![],
                },
            ),
            op(
                (60, 62),
                txn_call(3, 3),
                MultiRet::Txn {
                    revision: 4,
                    succeeded: false,
                    kvs: vec![
                        ("p/a".into(), Some(kv("y", 4, 3, 2))),
                        ("p/b".into(), Some(kv("x", 3, 3, 1))),
                    ],
                },
            ),
        ]
    }

    fn verdict(multi: Vec<MultiOp>) -> Result<MultiStats, MultiCheck> {
        check_multi(&Vec::new(), &extra(multi), ("p/", "p0")).map_err(|v| {
            assert!(!v.to_string().is_empty());
            v.check
        })
    }

    #[test]
    fn a_consistent_run_passes_and_is_all_checked() {
        let stats = verdict(valid()).expect("valid");
        assert_eq!(
            (stats.ranges, stats.txns, stats.unchecked, stats.covered),
            (3, 2, 0, 5)
        );
    }

    #[test]
    fn a_stale_range_is_caught() {
        let mut ops = valid();
        ops[2].ret = MultiRet::Range {
            revision: 4,
            kvs: vec![],
        };
        assert_eq!(verdict(ops), Err(MultiCheck::Snapshot));
    }

    #[test]
    fn a_txn_that_was_not_atomic_or_compared_wrongly_is_caught() {
        let mut ops = valid();
        // Claims success at 4, where only a changed.
        ops[4].ret = MultiRet::Txn {
            revision: 4,
            succeeded: true,
            kvs: vec![],
        };
        ops[4].invoke = 40;
        ops[4].complete = Some(45);
        assert_eq!(verdict(ops), Err(MultiCheck::Txn));
        // Fails at 2, where both keys were absent, so both compares (0, 0)
        // held.
        let mut ops = valid();
        ops[4] = op(
            (5, 6),
            txn_call(0, 0),
            MultiRet::Txn {
                revision: 2,
                succeeded: false,
                kvs: vec![("p/a".into(), None), ("p/b".into(), None)],
            },
        );
        assert_eq!(verdict(ops), Err(MultiCheck::Txn));
    }

    #[test]
    fn a_revision_going_back_in_real_time_is_caught() {
        let mut ops = valid();
        // A current range invoked after the txn at 3 completed, answering 2.
        ops[1].ret = MultiRet::Range {
            revision: 2,
            kvs: vec![],
        };
        assert_eq!(verdict(ops), Err(MultiCheck::RealTime));
    }

    #[test]
    fn ops_beyond_the_watchers_are_unchecked_not_passed() {
        let mut ops = valid();
        ops.push(op(
            (70, 71),
            range_at(0),
            MultiRet::Range {
                revision: 9,
                kvs: vec![],
            },
        ));
        assert_eq!(verdict(ops).expect("valid").unchecked, 1);
    }
}
