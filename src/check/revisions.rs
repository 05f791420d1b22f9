//! Checks on revisions across keys, and on each response by itself.
//!
//! etcd has one revision counter for the whole store, so the revisions that
//! responses carry must agree with real time across keys, which the per-key
//! search cannot see. Each check here is a necessary condition:
//!
//! - **Write order** (check a, extended): a write invoked after another op
//!   completed takes a revision above every revision that op carried (its
//!   write revision, or the header revision of a read).
//! - **Duplicate revision** (check b): two writes never share a revision,
//!   and a revision a read reports as a key's mod or create revision was not
//!   taken by a known write to another key.
//! - **Read order** (check c, extended): a read (a Get, a failed Cas, a
//!   Delete that deleted nothing) invoked after another op completed has a
//!   header revision at least that op's revision.
//! - **Kv metadata** (check d): a returned kv has `1 <= create_revision <=
//!   mod_revision <= header revision`, `version >= 1`, and
//!   `create_revision == mod_revision` exactly when `version == 1`.

use std::collections::BTreeMap;

use super::{fmt_kv, Check, Mark, Violation};
use crate::check::history::{Kv, Op, Ret};

/// The store revision an op's response carries, if its outcome is known.
#[derive(Debug, Clone, Copy)]
struct Carried {
    index: usize,
    invoke: u64,
    complete: u64,
    revision: i64,
    /// A write's own revision (strictly above what came before) rather than a
    /// read's header revision.
    write: bool,
}

fn carried(history: &[Op]) -> Vec<Carried> {
    history
        .iter()
        .enumerate()
        .filter_map(|(index, op)| {
            let complete = op.complete?;
            let (revision, write) = match op.ret {
                Ret::Put { revision } => (revision, true),
                Ret::Get { revision, .. } => (revision, false),
                Ret::Delete { revision, deleted } => (revision, deleted > 0),
                Ret::Cas {
                    revision,
                    succeeded,
                    ..
                } => (revision, succeeded),
                Ret::Failed | Ret::Unknown => return None,
            };
            Some(Carried {
                index,
                invoke: op.invoke,
                complete,
                revision,
                write,
            })
        })
        .collect()
}

/// Checks a, b and c.
pub(super) fn check_order(history: &[Op]) -> Result<(), Violation> {
    let ops = carried(history);
    check_duplicates(history, &ops)?;
    let mut by_invoke: Vec<&Carried> = ops.iter().collect();
    by_invoke.sort_by_key(|c| (c.invoke, c.index));
    let mut by_complete: Vec<&Carried> = ops.iter().collect();
    by_complete.sort_by_key(|c| (c.complete, c.index));
    // The op with the highest revision among those completed so far.
    let mut highest: Option<&Carried> = None;
    let mut done = by_complete.iter().peekable();
    for b in by_invoke {
        while let Some(a) = done.next_if(|a| a.complete < b.invoke) {
            if highest.is_none_or(|h| a.revision > h.revision) {
                highest = Some(a);
            }
        }
        let Some(a) = highest else { continue };
        let ok = if b.write {
            b.revision > a.revision
        } else {
            b.revision >= a.revision
        };
        if !ok {
            let (check, rule) = if b.write {
                (Check::WriteOrder, "a write must take a revision above")
            } else {
                (
                    Check::ReadOrder,
                    "a read's header revision must be at least",
                )
            };
            let message = format!(
                "op #{} was invoked after op #{} completed with revision {}, but carries revision {}: {rule} \
                 the revision of every op completed before it",
                b.index, a.index, a.revision, b.revision
            );
            return Err(
                Violation::new(check, Some(history[b.index].call.key()), message).with_ops(
                    history,
                    &[a.index, b.index],
                    Mark::Involved,
                ),
            );
        }
    }
    Ok(())
}

/// Check b: no two writes share a revision.
fn check_duplicates(history: &[Op], ops: &[Carried]) -> Result<(), Violation> {
    let mut by_revision: BTreeMap<i64, usize> = BTreeMap::new();
    for c in ops.iter().filter(|c| c.write) {
        if let Some(&first) = by_revision.get(&c.revision) {
            let message = format!(
                "ops #{first} and #{} are different writes with the same revision {}",
                c.index, c.revision
            );
            return Err(Violation::new(
                Check::DuplicateRevision,
                Some(history[c.index].call.key()),
                message,
            )
            .with_ops(history, &[first, c.index], Mark::Involved));
        }
        by_revision.insert(c.revision, c.index);
    }
    for (index, op) in history.iter().enumerate() {
        let kv = match &op.ret {
            Ret::Get { kv: Some(kv), .. } | Ret::Cas { kv: Some(kv), .. } => kv,
            _ => continue,
        };
        let key = op.call.key();
        for (name, revision) in [
            ("mod_revision", kv.mod_revision),
            ("create_revision", kv.create_revision),
        ] {
            let Some(&writer) = by_revision.get(&revision) else {
                continue;
            };
            let other = history[writer].call.key();
            if other != key {
                let message = format!(
                    "op #{index} read {key:?} with {name} {revision}, but op #{writer} wrote {other:?} at that revision"
                );
                return Err(
                    Violation::new(Check::DuplicateRevision, Some(key), message).with_ops(
                        history,
                        &[writer, index],
                        Mark::Involved,
                    ),
                );
            }
        }
    }
    Ok(())
}

/// Check d, on every returned kv.
pub(super) fn check_kvs(history: &[Op]) -> Result<(), Violation> {
    for (index, op) in history.iter().enumerate() {
        let (revision, kv) = match &op.ret {
            Ret::Get {
                revision,
                kv: Some(kv),
            }
            | Ret::Cas {
                revision,
                kv: Some(kv),
                ..
            } => (*revision, kv),
            _ => continue,
        };
        if let Some(problem) = kv_problem(revision, kv) {
            let message = format!("op #{index} returned {}: {problem}", fmt_kv(kv));
            return Err(
                Violation::new(Check::KvMetadata, Some(op.call.key()), message).with_ops(
                    history,
                    &[index],
                    Mark::Involved,
                ),
            );
        }
    }
    Ok(())
}

fn kv_problem(header: i64, kv: &Kv) -> Option<String> {
    if kv.mod_revision > header {
        return Some(format!("mod_revision above the header revision {header}"));
    }
    if kv.create_revision < 1 || kv.create_revision > kv.mod_revision {
        return Some("create_revision must be in 1..=mod_revision".to_owned());
    }
    if kv.version < 1 {
        return Some("version must be at least 1".to_owned());
    }
    if (kv.version == 1) != (kv.create_revision == kv.mod_revision) {
        return Some("create_revision equals mod_revision exactly when version is 1".to_owned());
    }
    None
}
