//! The checkers that judge a [`History`] of etcd v3 client operations.
//!
//! Pure and sans-IO: a history in, a verdict out. The simulator (`sim/`)
//! records its histories on simulated time and `cairn verify` on a real
//! cluster's wall clock; both judge them with the same code, here. Times are
//! nanoseconds since the run began; nothing here reads a clock.
//!
//! - [`history`]: what a run records (KV ops, watchers, lease ops).
//! - this module: KV linearizability and the revision checks.
//! - [`watch`]: etcd's watch guarantees; [`lease`]: the lease rules.
//! - [`multi`]: multi-key txns and ranges at a revision, against the
//!   watchers' event log.
//! - [`shrink`]: a violation shrunk to a small failing sub-history.
//! - [`durability`]: the final reads against the acknowledged writes.
//!
//! [`check`] answers one question: could a store with etcd v3's semantics
//! (one linearizable key space, one revision counter) have produced these
//! responses? It returns [`Stats`] if it could, and a [`Violation`] naming the
//! check that failed, the key, and a small window of the history otherwise. A
//! search that runs out of budget is a [`Violation`] of kind
//! [`Check::Inconclusive`]: not a pass, and not proof of a bug.
//!
//! # The checks, in the order they run
//!
//! 1. **Well-formed** ([`Check::Malformed`]): each op's return matches its
//!    call, completes no earlier than it was invoked, and has a completion
//!    time unless its outcome is unknown. A malformed history is the
//!    runner's bug, reported rather than judged.
//! 2. **Kv metadata** ([`Check::KvMetadata`]): each returned kv by itself
//!    (see `check/revisions.rs`).
//! 3. **Revisions across keys** ([`Check::DuplicateRevision`],
//!    [`Check::WriteOrder`], [`Check::ReadOrder`]): the store revision never
//!    goes back in real time, and each write takes its own (see
//!    `check/revisions.rs`).
//! 4. **Per-key linearizability** ([`Check::Linearizability`]): for each key,
//!    in key order, a search for an order of its ops that respects real time
//!    and explains every response (see `check/linearize.rs` and `check/model.rs`).
//!
//! # Why per key is enough, and what it misses
//!
//! Every op touches one key, and a key's responses depend only on the ops on
//! that key, given their revisions. A linearization of the whole history
//! projects onto a linearization of each key, so a key without one proves a
//! violation (Herlihy and Wing's locality). The converse needs the keys'
//! orders to agree on revisions across keys; the checks of step 3 cover the
//! real-time part of that, not all of it. The checker never rejects a history
//! etcd could produce; it may, rarely, accept one that only a cross-key
//! argument would reject.
//!
//! # Assumptions
//!
//! - Every key starts absent (the simulator's store is empty; `cairn
//!   verify` uses a fresh key prefix). The store revision may start anywhere
//!   at or above 1 and other clients may raise it: the model only needs a
//!   lower bound. Compaction does not matter, since gets read the current
//!   revision.
//! - Gets are linearizable (not serializable) reads.
//! - An op with [`Ret::Unknown`] may take effect at any time after its
//!   invocation, or never; its completion time, if any, is ignored.
//!
//! # Cost
//!
//! The search expands each (set of placed ops, model state) pair at most
//! once, and the reductions in `check/linearize.rs` keep a valid key's search close
//! to one state per op: 5,000 generated ops over 8 keys with 10 clients and 3%
//! unknown outcomes take about 10,000 states and well under a second. Unknown
//! outcomes and true violations make it explore more; the most seen for one
//! key in the stress sweep (`tests::stress_generated_histories`: up to 1,550
//! ops, 16 clients, 30% unknown) was about 12,000. [`Config::max_states_per_key`]
//! bounds it.

pub mod durability;
pub mod history;
pub mod lease;
mod linearize;
mod model;
pub mod multi;
mod revisions;
pub mod shrink;
pub mod watch;

#[cfg(test)]
mod generate;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod watch_tests;

use std::collections::BTreeMap;
use std::fmt;

use crate::check::history::{Call, History, Kv, Op, Ret};
use linearize::{Deepest, KeyOps, Outcome};

/// Bounds on the work [`check_with`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// The most search states expanded for one key before it is reported
    /// [`Check::Inconclusive`]. Each state costs about 100 bytes plus an
    /// eighth of a byte per op of the key.
    pub max_states_per_key: u64,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            max_states_per_key: 1_000_000,
        }
    }
}

/// What a successful check looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Ops in the history.
    pub ops: usize,
    /// Distinct keys.
    pub keys: usize,
    /// Ops with an unknown outcome.
    pub unknown: usize,
    /// Ops that definitely did not take effect.
    pub failed: usize,
    /// Search states expanded, over all keys.
    pub states: u64,
    /// The most states expanded for one key.
    pub states_max_per_key: u64,
}

/// Which check a [`Violation`] comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Check {
    /// The history itself is inconsistent (a return that does not match its
    /// call, a completion before the invocation).
    Malformed,
    /// A returned kv is inconsistent by itself (check d).
    KvMetadata,
    /// Two writes share a revision (check b).
    DuplicateRevision,
    /// A write's revision is not above that of an op completed before it was
    /// invoked (check a).
    WriteOrder,
    /// A read's header revision is below that of an op completed before it
    /// was invoked (check c).
    ReadOrder,
    /// No order of a key's ops explains the responses.
    Linearizability,
    /// The search for a key ran out of budget: neither pass nor violation.
    Inconclusive,
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Check::Malformed => "malformed history",
            Check::KvMetadata => "inconsistent kv metadata",
            Check::DuplicateRevision => "duplicate revision",
            Check::WriteOrder => "write revision order",
            Check::ReadOrder => "read revision order",
            Check::Linearizability => "not linearizable",
            Check::Inconclusive => "inconclusive (search budget exceeded)",
        })
    }
}

/// How an op in a [`Violation`]'s window relates to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// One of the ops the failed check is about.
    Involved,
    /// Placed in the longest order the search found (shown for context).
    Placed,
    /// Could have come next after that order, but none could.
    Stuck,
}

/// One op in a [`Violation`]'s window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowOp {
    /// Its index in the history.
    pub index: usize,
    pub mark: Mark,
    pub op: Op,
}

/// A failed check, with the ops it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub check: Check,
    /// The key, when the check is about one.
    pub key: Option<String>,
    /// What is wrong, in a sentence or two.
    pub message: String,
    /// The ops involved, in invocation order; at most [`WINDOW_OPS_MAX`].
    pub window: Vec<WindowOp>,
}

/// The most ops a [`Violation`] shows.
pub const WINDOW_OPS_MAX: usize = 20;

/// Of a linearizability window, how many of the last placed ops to show.
const WINDOW_PLACED_MAX: usize = 6;

impl Violation {
    fn new(check: Check, key: Option<&str>, message: String) -> Violation {
        Violation {
            check,
            key: key.map(str::to_owned),
            message,
            window: Vec::new(),
        }
    }

    /// Adds the ops at `indices` (into `history`) to the window, keeping it
    /// in invocation order and within [`WINDOW_OPS_MAX`].
    fn with_ops(mut self, history: &[Op], indices: &[usize], mark: Mark) -> Violation {
        for &index in indices {
            if self.window.len() < WINDOW_OPS_MAX && self.window.iter().all(|w| w.index != index) {
                self.window.push(WindowOp {
                    index,
                    mark,
                    op: history[index].clone(),
                });
            }
        }
        self.window.sort_by_key(|w| (w.op.invoke, w.index));
        self
    }

    /// Whether this is an inconclusive search rather than a violation.
    pub fn is_inconclusive(&self) -> bool {
        self.check == Check::Inconclusive
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            Some(key) => writeln!(f, "{} on key {key:?}: {}", self.check, self.message)?,
            None => writeln!(f, "{}: {}", self.check, self.message)?,
        }
        writeln!(
            f,
            "  {:>6}  {:<6} {:>6} {:>12} {:>12}  {:<36} ret",
            "op", "", "client", "invoke", "complete", "call"
        )?;
        for w in &self.window {
            let mark = match w.mark {
                Mark::Involved => "*",
                Mark::Placed => "placed",
                Mark::Stuck => "stuck",
            };
            let complete =
                w.op.complete
                    .map_or_else(|| "-".to_owned(), |c| c.to_string());
            writeln!(
                f,
                "  {:>6}  {:<6} {:>6} {:>12} {:>12}  {:<36} {}",
                format!("#{}", w.index),
                mark,
                w.op.client,
                w.op.invoke,
                complete,
                fmt_call(&w.op.call),
                fmt_ret(&w.op.ret)
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for Violation {}

/// Checks `history` with the default [`Config`].
pub fn check(history: &History) -> Result<Stats, Violation> {
    check_with(history, &Config::default())
}

/// Checks `history`: see the module docs for what, and in which order.
pub fn check_with(history: &History, config: &Config) -> Result<Stats, Violation> {
    check_well_formed(history)?;
    revisions::check_kvs(history)?;
    revisions::check_order(history)?;
    let mut by_key: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (index, op) in history.iter().enumerate() {
        by_key.entry(op.call.key()).or_default().push(index);
    }
    let mut stats = Stats {
        ops: history.len(),
        keys: by_key.len(),
        unknown: history.iter().filter(|op| op.ret == Ret::Unknown).count(),
        failed: history.iter().filter(|op| op.ret == Ret::Failed).count(),
        ..Stats::default()
    };
    for (key, indices) in &by_key {
        let key_ops = KeyOps::new(history, indices);
        let (outcome, states) = linearize::search(&key_ops.ops, config.max_states_per_key);
        stats.states += states;
        stats.states_max_per_key = stats.states_max_per_key.max(states);
        match outcome {
            Outcome::Linearizable => {}
            Outcome::Violation(deepest) => {
                return Err(stuck(
                    history,
                    key,
                    &key_ops,
                    &deepest,
                    Check::Linearizability,
                    states,
                ))
            }
            Outcome::Exhausted(deepest) => {
                return Err(stuck(
                    history,
                    key,
                    &key_ops,
                    &deepest,
                    Check::Inconclusive,
                    states,
                ))
            }
        }
    }
    Ok(stats)
}

/// The report of a key whose search failed or gave up.
fn stuck(
    history: &[Op],
    key: &str,
    key_ops: &KeyOps,
    deepest: &Deepest,
    check: Check,
    states: u64,
) -> Violation {
    let known = key_ops.ops.iter().filter(|op| op.known).count();
    let placed_known = deepest
        .placed
        .iter()
        .filter(|&&p| key_ops.ops[p].known)
        .count();
    let state = &deepest.state;
    let after = match &state.key {
        None => "absent".to_owned(),
        Some(p) => format!(
            "{:?} (mod_revision {}, create_revision {}, version {})",
            key_ops.values[p.value as usize], p.mod_revision, p.create_revision, p.version
        ),
    };
    let what = if check == Check::Inconclusive {
        format!("gave up after {states} search states")
    } else {
        format!("no order of the key's ops explains the responses ({states} search states)")
    };
    let message = format!(
        "{what}; the longest order found places {placed_known} of the {known} ops with a known outcome, after \
         which the key is {after} and the store revision is at least {}; no op marked stuck can come next",
        state.store_floor
    );
    let stuck: Vec<usize> = deepest
        .candidates
        .iter()
        .map(|&c| key_ops.ops[c].index)
        .take(WINDOW_OPS_MAX - WINDOW_PLACED_MAX)
        .collect();
    let room = WINDOW_OPS_MAX - stuck.len();
    let skip = deepest
        .placed
        .len()
        .saturating_sub(room.min(WINDOW_PLACED_MAX));
    let placed: Vec<usize> = deepest.placed[skip..]
        .iter()
        .map(|&p| key_ops.ops[p].index)
        .collect();
    Violation::new(check, Some(key), message)
        .with_ops(history, &stuck, Mark::Stuck)
        .with_ops(history, &placed, Mark::Placed)
}

/// Check 1: the history is well formed.
fn check_well_formed(history: &[Op]) -> Result<(), Violation> {
    for (index, op) in history.iter().enumerate() {
        let problem = if op.complete.is_some_and(|c| c < op.invoke) {
            Some("completes before it was invoked")
        } else if op.complete.is_none() && op.ret != Ret::Unknown {
            Some("has no completion time but a known outcome")
        } else if !ret_matches(&op.call, &op.ret) {
            Some("has a return of the wrong kind")
        } else if matches!(op.ret, Ret::Delete { deleted, .. } if !(0..=1).contains(&deleted)) {
            Some("deleted more than one key")
        } else {
            None
        };
        if let Some(problem) = problem {
            let message = format!("op #{index} {problem}");
            return Err(
                Violation::new(Check::Malformed, Some(op.call.key()), message).with_ops(
                    history,
                    &[index],
                    Mark::Involved,
                ),
            );
        }
    }
    Ok(())
}

fn ret_matches(call: &Call, ret: &Ret) -> bool {
    matches!(
        (call, ret),
        (_, Ret::Failed | Ret::Unknown)
            | (Call::Put { .. }, Ret::Put { .. })
            | (Call::Get { .. }, Ret::Get { .. })
            | (Call::Delete { .. }, Ret::Delete { .. })
            | (Call::Cas { .. }, Ret::Cas { .. })
    )
}

fn fmt_call(call: &Call) -> String {
    match call {
        Call::Put { key, value } => format!("put {key} {value:?}"),
        Call::Get { key } => format!("get {key}"),
        Call::Delete { key } => format!("delete {key}"),
        Call::Cas {
            key,
            expect_mod_revision,
            value,
        } => format!("cas {key} if mod={expect_mod_revision} put {value:?}"),
    }
}

fn fmt_kv(kv: &Kv) -> String {
    format!(
        "{:?} (mod {}, create {}, ver {})",
        kv.value, kv.mod_revision, kv.create_revision, kv.version
    )
}

fn fmt_ret(ret: &Ret) -> String {
    let kv = |kv: &Option<Kv>| kv.as_ref().map_or_else(|| "absent".to_owned(), fmt_kv);
    match ret {
        Ret::Put { revision } => format!("rev {revision}"),
        Ret::Get { revision, kv: k } => format!("rev {revision} {}", kv(k)),
        Ret::Delete { revision, deleted } => format!("rev {revision} deleted {deleted}"),
        Ret::Cas {
            revision,
            succeeded: true,
            ..
        } => format!("rev {revision} succeeded"),
        Ret::Cas {
            revision,
            succeeded: false,
            kv: k,
        } => format!("rev {revision} failed, read {}", kv(k)),
        Ret::Failed => "failed".to_owned(),
        Ret::Unknown => "unknown".to_owned(),
    }
}
