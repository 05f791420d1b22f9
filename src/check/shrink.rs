//! Shrinking a linearizability violation to a small failing sub-history, for
//! a report a person can read.
//!
//! A violation of [`Check::Linearizability`] is about one key, and per-key
//! checking is sound (see the module docs of [`crate::check`]), so the key's
//! ops alone already fail. Of those, reads can be dropped: a read changes no
//! state, so an order that explains a history explains it without the read
//! too. Hence if a sub-history without some reads still fails, the whole
//! history fails for the same reason, and the smaller one is a proof. Writes
//! (known or unknown) are kept: leaving one out can make a read
//! unexplainable that was explained before, which would prove nothing.
//!
//! The reads are removed delta-debugging style: chunks of half of them, then
//! quarters, and so on down to one at a time, keeping every removal after
//! which the sub-history still fails; at most `max_checks` checks.
//! Violations of the other checks name the two or so ops involved already
//! and are returned as they are.

use super::history::{History, Op, Ret};
use super::{check, Check, Violation};

/// A violation and the sub-history it was shrunk to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shrunk {
    /// The violation of the sub-history, with window indices into the whole
    /// history.
    pub violation: Violation,
    /// The sub-history: indices into the whole history, in invocation order.
    pub ops: Vec<usize>,
}

fn is_read(op: &Op) -> bool {
    match op.ret {
        Ret::Get { .. } => true,
        Ret::Cas { succeeded, .. } => !succeeded,
        Ret::Delete { deleted, .. } => deleted == 0,
        _ => false,
    }
}

/// The sub-history of `indices` checked: its violation, if it has one
/// that is not merely inconclusive.
fn fails(history: &[Op], indices: &[usize]) -> Option<Violation> {
    let sub: History = indices.iter().map(|&i| history[i].clone()).collect();
    match check(&sub) {
        Err(v) if !v.is_inconclusive() => Some(v),
        _ => None,
    }
}

/// Shrinks `v`, a violation found in `history`; see the module docs.
pub fn shrink(history: &History, v: &Violation, max_checks: usize) -> Shrunk {
    let whole = || Shrunk {
        violation: v.clone(),
        ops: v.window.iter().map(|w| w.index).collect(),
    };
    let Some(key) = v.key.as_deref() else {
        return whole();
    };
    if v.check != Check::Linearizability {
        return whole();
    }
    let mut kept: Vec<usize> = (0..history.len())
        .filter(|&i| history[i].call.key() == key)
        .collect();
    let Some(mut last) = fails(history, &kept) else {
        return whole();
    };
    let mut checks = 1;
    let mut chunk = kept
        .iter()
        .filter(|&&i| is_read(&history[i]))
        .count()
        .div_ceil(2);
    while chunk >= 1 && checks < max_checks {
        let reads: Vec<usize> = kept
            .iter()
            .copied()
            .filter(|&i| is_read(&history[i]))
            .collect();
        for group in reads.chunks(chunk) {
            if checks >= max_checks {
                break;
            }
            let trial: Vec<usize> = kept
                .iter()
                .copied()
                .filter(|i| !group.contains(i))
                .collect();
            checks += 1;
            if let Some(found) = fails(history, &trial) {
                kept = trial;
                last = found;
            }
        }
        if chunk == 1 {
            break;
        }
        chunk = chunk.div_ceil(2);
    }
    let mut violation = last;
    for w in &mut violation.window {
        w.index = kept[w.index];
    }
    Shrunk {
        violation,
        ops: kept,
    }
}
