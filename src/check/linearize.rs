//! The per-key linearizability search (Wing & Gong, with Lowe's memoisation).
//!
//! # What it searches for
//!
//! An order of the key's operations that (1) respects real time: an op that
//! completed before another was invoked comes first; (2) contains every op
//! that completed with a known outcome; (3) may contain, anywhere after its
//! invocation, any op whose outcome is unknown, or leave it out; and (4) makes
//! every response what [`model::step`] expects.
//!
//! # How
//!
//! A depth-first search over prefixes of such an order. At each point the
//! candidates for the next op are the ops not yet placed that were invoked no
//! later than the earliest completion among the known ops not yet placed (an op
//! invoked after that completion must follow it). Known ops are tried first, in
//! invocation order, then unknown ones: in a valid history the known ops nearly
//! always fix the order, and an unknown write is only needed where a later
//! response shows it took effect.
//!
//! Lowe's memoisation makes this tractable: the search never expands the same
//! (set of placed ops, model state) twice, since what can follow depends on
//! nothing else, and every state it meets again has already failed (success
//! ends the search, and no sequence of placements returns to the same state
//! with the same known ops placed, because every write raises the store
//! floor and every read is a known op). The set is a bitset over the key's ops.
//!
//! Four reductions keep the states few; each keeps every order that could
//! succeed, or one equivalent to it:
//!
//! - **Ceilings.** The store floor only rises, so a step that lifts it above
//!   the header revision of an unplaced known read (or to or above the
//!   revision of an unplaced known write) strands that op for good. The
//!   search keeps the least such ceiling and refuses those steps at once,
//!   instead of finding out at the end of a long doomed path.
//! - **Free reads.** A candidate read that leaves the state exactly as it is
//!   (it binds nothing and its header revision is the floor) is placed
//!   without trying alternatives: nothing unplaced must precede it, and no
//!   later op can tell it moved. This collapses the orders of concurrent reads
//!   at one revision, otherwise tried in every combination.
//! - **Subsumption.** An unknown op can always be left out, so having it still
//!   available is never worse than having used it. A state is skipped if the
//!   same known ops and model state were reached before with a subset of its
//!   unknown ops placed. This stops an unknown put from being tried before
//!   every later delete (which erases the trace of it) separately.
//! - **Symmetry.** Unknown ops with identical steps (all unknown deletes, and
//!   all unknown puts whose value no response shows, which get one shared
//!   value) are interchangeable once invoked, so of those only the earliest
//!   invoked not yet placed is a candidate.
//!
//! The search stops with
//! success as soon as every known op is placed (unknown ops left over are
//! taken not to have happened), and with [`Outcome::Exhausted`] once it has
//! expanded `budget` states, which is an inconclusive answer, not a pass.
//!
//! For a report it remembers the deepest point it reached (most known ops
//! placed): the placed ops in order, the model state, and the candidates, none
//! of which could come next.

use std::collections::{BTreeMap, HashMap};

use super::model::{self, Seen, State, Step};
use crate::check::history::{Call, Kv, Op, Ret};

/// One op of the key, ready for the search.
#[derive(Debug, Clone)]
pub(super) struct KeyOp {
    /// Its index in the history.
    pub index: usize,
    pub invoke: u64,
    /// `u64::MAX` when the outcome is unknown.
    pub complete: u64,
    /// Whether the outcome is known (the op must be placed).
    pub known: bool,
    pub step: Step,
}

/// A key's ops, in invocation order, with the key's values interned.
#[derive(Debug)]
pub(super) struct KeyOps {
    pub ops: Vec<KeyOp>,
    /// Interned values, by id.
    pub values: Vec<String>,
}

impl KeyOps {
    /// The searchable ops of `indices` (all on one key): failed ops and
    /// reads with unknown outcome change nothing and are left out.
    pub fn new(history: &[Op], indices: &[usize]) -> KeyOps {
        let mut interner = Interner::default();
        let mut ops = Vec::with_capacity(indices.len());
        for &index in indices {
            let op = &history[index];
            if let Some(step) = to_step(&op.call, &op.ret, &mut interner) {
                let known = op.ret != Ret::Unknown;
                let complete = if known {
                    op.complete.unwrap_or(u64::MAX)
                } else {
                    u64::MAX
                };
                ops.push(KeyOp {
                    index,
                    invoke: op.invoke,
                    complete,
                    known,
                    step,
                });
            }
        }
        ops.sort_by_key(|op| (op.invoke, op.index));
        let mut values = interner.values;
        anonymise_unobserved(&mut ops, &mut values);
        KeyOps { ops, values }
    }
}

/// Gives every unknown write whose value no response shows one shared value.
///
/// Nothing can tell such writes apart except their invocation times, so the
/// symmetry reduction (see the module docs) then tries only one of them where
/// any would do, for instance where versions show that some write happened
/// but no read saw it. Without this a history with many unknown puts makes
/// the search try every choice of which ones happened.
fn anonymise_unobserved(ops: &mut [KeyOp], values: &mut Vec<String>) {
    let mut observed = vec![false; values.len()];
    for op in ops.iter() {
        if let Step::Read { kv: Some(seen), .. } | Step::CasMiss { kv: Some(seen), .. } = &op.step {
            observed[seen.value as usize] = true;
        }
    }
    let anonymous = u32::try_from(values.len()).expect("fewer than 2^32 values per key");
    let mut used = false;
    for op in ops.iter_mut().filter(|op| !op.known) {
        if let Step::Put { value, .. } | Step::CasHit { value, .. } = &mut op.step {
            if !observed[*value as usize] {
                *value = anonymous;
                used = true;
            }
        }
    }
    if used {
        values.push("<a value no response shows>".to_owned());
    }
}

/// Value ids for one key.
#[derive(Default)]
struct Interner {
    ids: BTreeMap<String, u32>,
    values: Vec<String>,
}

impl Interner {
    fn id(&mut self, value: &str) -> u32 {
        if let Some(&id) = self.ids.get(value) {
            return id;
        }
        let id = u32::try_from(self.values.len()).expect("fewer than 2^32 values per key");
        self.ids.insert(value.to_owned(), id);
        self.values.push(value.to_owned());
        id
    }

    fn seen(&mut self, kv: &Option<Kv>) -> Option<Seen> {
        kv.as_ref().map(|kv| Seen {
            value: self.id(&kv.value),
            mod_revision: kv.mod_revision,
            create_revision: kv.create_revision,
            version: kv.version,
        })
    }
}

/// The step of an op, or `None` if it cannot have changed the key. Call and
/// return kinds are assumed to match (the caller checked).
fn to_step(call: &Call, ret: &Ret, interner: &mut Interner) -> Option<Step> {
    match (call, ret) {
        (_, Ret::Failed) | (Call::Get { .. }, Ret::Unknown) => None,
        (Call::Get { .. }, Ret::Get { revision, kv }) => Some(Step::Read {
            revision: *revision,
            kv: interner.seen(kv),
        }),
        (Call::Put { value, .. }, Ret::Put { revision }) => Some(Step::Put {
            revision: Some(*revision),
            value: interner.id(value),
        }),
        (Call::Put { value, .. }, Ret::Unknown) => Some(Step::Put {
            revision: None,
            value: interner.id(value),
        }),
        (
            Call::Delete { .. },
            Ret::Delete {
                revision,
                deleted: 0,
            },
        ) => Some(Step::Read {
            revision: *revision,
            kv: None,
        }),
        (Call::Delete { .. }, Ret::Delete { revision, .. }) => Some(Step::Delete {
            revision: Some(*revision),
        }),
        (Call::Delete { .. }, Ret::Unknown) => Some(Step::Delete { revision: None }),
        (
            Call::Cas {
                expect_mod_revision,
                value,
                ..
            },
            Ret::Cas {
                revision,
                succeeded: true,
                ..
            },
        ) => Some(Step::CasHit {
            expect: *expect_mod_revision,
            revision: Some(*revision),
            value: interner.id(value),
        }),
        (
            Call::Cas {
                expect_mod_revision,
                ..
            },
            Ret::Cas {
                revision,
                succeeded: false,
                kv,
            },
        ) => Some(Step::CasMiss {
            expect: *expect_mod_revision,
            revision: *revision,
            kv: interner.seen(kv),
        }),
        // A Cas that failed its compare changed nothing: the same as leaving
        // it out, so only the success is searched.
        (
            Call::Cas {
                expect_mod_revision,
                value,
                ..
            },
            Ret::Unknown,
        ) => Some(Step::CasHit {
            expect: *expect_mod_revision,
            revision: None,
            value: interner.id(value),
        }),
        _ => unreachable!("call and return kinds were checked to match"),
    }
}

/// Where the search got furthest.
#[derive(Debug, Clone)]
pub(super) struct Deepest {
    /// Positions (in `KeyOps::ops`) of the placed ops, in order.
    pub placed: Vec<usize>,
    /// The model state after them.
    pub state: State,
    /// Positions of the ops that could have come next; none of them could.
    pub candidates: Vec<usize>,
}

/// How a key's search ended.
#[derive(Debug)]
pub(super) enum Outcome {
    Linearizable,
    /// No order exists.
    Violation(Deepest),
    /// The budget ran out first.
    Exhausted(Deepest),
}

/// One level of the depth-first search.
struct Frame {
    /// The state after the ops placed so far.
    state: State,
    /// The op this frame placed (none for the root).
    placed: Option<usize>,
    /// Ops that may come next.
    candidates: Vec<usize>,
    /// How many of `candidates` were tried.
    tried: usize,
}

/// Searches `ops` for a linearization, expanding at most `budget` states.
/// Returns the outcome and the number of states expanded.
pub(super) fn search(ops: &[KeyOp], budget: u64) -> (Outcome, u64) {
    let mut search = Search::new(ops);
    let outcome = search.run(budget);
    (outcome, search.states)
}

/// The search's working state.
struct Search<'a> {
    ops: &'a [KeyOp],
    /// Ops placed on the current path.
    placed: Bitset,
    /// Which ops have an unknown outcome.
    unknown_mask: Bitset,
    known_total: usize,
    known_placed: usize,
    /// For each unplaced known op, the most the store floor may be for it to
    /// still fit (its header revision, or its write revision minus one), as
    /// a multiset: a step that lifts the floor past the least of them strands
    /// that op, so the search backs out at once.
    ceilings: BTreeMap<i64, u32>,
    /// States met, keyed by the known ops placed and the model state, with
    /// the sets of unknown ops placed each time.
    seen: HashMap<(Bitset, State), Vec<Bitset>>,
    stack: Vec<Frame>,
    /// States expanded.
    states: u64,
    /// The deepest point, by known ops placed.
    deepest: (usize, Deepest),
}

impl<'a> Search<'a> {
    fn new(ops: &'a [KeyOp]) -> Search<'a> {
        let placed = Bitset::new(ops.len());
        let mut ceilings = BTreeMap::new();
        for ceiling in ops.iter().filter_map(ceiling) {
            *ceilings.entry(ceiling).or_insert(0) += 1;
        }
        let state = State::initial();
        let candidates = candidates(ops, &placed, &state);
        let deepest = Deepest {
            placed: Vec::new(),
            state: state.clone(),
            candidates: candidates.clone(),
        };
        Search {
            ops,
            unknown_mask: Bitset::from_fn(ops.len(), |i| !ops[i].known),
            known_total: ops.iter().filter(|op| op.known).count(),
            known_placed: 0,
            placed,
            ceilings,
            seen: HashMap::new(),
            stack: vec![Frame {
                state,
                placed: None,
                candidates,
                tried: 0,
            }],
            states: 1,
            deepest: (0, deepest),
        }
    }

    fn run(&mut self, budget: u64) -> Outcome {
        while self.known_placed < self.known_total {
            let Some(top) = self.stack.last_mut() else {
                return Outcome::Violation(self.deepest.1.clone());
            };
            let Some(&next) = top.candidates.get(top.tried) else {
                self.pop();
                continue;
            };
            top.tried += 1;
            let Some(state) = model::step(&top.state, &self.ops[next].step) else {
                continue;
            };
            self.push(next, state);
            if self.states >= budget && self.known_placed < self.known_total {
                return Outcome::Exhausted(self.deepest.1.clone());
            }
        }
        Outcome::Linearizable
    }

    /// Places op `next`, reaching `state`, unless that strands a known op or
    /// was met before.
    fn push(&mut self, next: usize, state: State) {
        let ceiling = ceiling(&self.ops[next]);
        if let Some(c) = ceiling {
            remove_one(&mut self.ceilings, c);
        }
        let stranded = self
            .ceilings
            .first_key_value()
            .is_some_and(|(&least, _)| state.store_floor > least);
        self.placed.set(next);
        if stranded || !self.first_meeting(&state) {
            self.placed.clear(next);
            if let Some(c) = ceiling {
                *self.ceilings.entry(c).or_insert(0) += 1;
            }
            return;
        }
        self.known_placed += usize::from(self.ops[next].known);
        self.states += 1;
        let candidates = candidates(self.ops, &self.placed, &state);
        let frame = Frame {
            state,
            placed: Some(next),
            candidates,
            tried: 0,
        };
        if self.known_placed > self.deepest.0 {
            let placed = self
                .stack
                .iter()
                .chain(std::iter::once(&frame))
                .filter_map(|f| f.placed)
                .collect();
            let deepest = Deepest {
                placed,
                state: frame.state.clone(),
                candidates: frame.candidates.clone(),
            };
            self.deepest = (self.known_placed, deepest);
        }
        self.stack.push(frame);
    }

    /// Whether no state met before subsumes the current one (see the module
    /// docs); records it if so.
    fn first_meeting(&mut self, state: &State) -> bool {
        let (known, unknown) = self.placed.split(&self.unknown_mask);
        let met = self.seen.entry((known, state.clone())).or_default();
        if met.iter().any(|earlier| earlier.is_subset(&unknown)) {
            return false;
        }
        met.push(unknown);
        true
    }

    /// Backs out of the top frame.
    fn pop(&mut self) {
        let frame = self.stack.pop().expect("the stack is not empty");
        if let Some(op) = frame.placed {
            self.placed.clear(op);
            self.known_placed -= usize::from(self.ops[op].known);
            if let Some(c) = ceiling(&self.ops[op]) {
                *self.ceilings.entry(c).or_insert(0) += 1;
            }
        }
    }
}

/// The most the store floor may be before a known op for it to fit.
fn ceiling(op: &KeyOp) -> Option<i64> {
    if !op.known {
        return None;
    }
    match op.step {
        Step::Read { revision, .. } | Step::CasMiss { revision, .. } => Some(revision),
        Step::Put {
            revision: Some(r), ..
        }
        | Step::CasHit {
            revision: Some(r), ..
        }
        | Step::Delete { revision: Some(r) } => Some(r - 1),
        Step::Put { revision: None, .. }
        | Step::CasHit { revision: None, .. }
        | Step::Delete { revision: None } => {
            unreachable!("known writes have revisions")
        }
    }
}

fn remove_one(set: &mut BTreeMap<i64, u32>, value: i64) {
    let count = set
        .get_mut(&value)
        .expect("the ceiling of an unplaced op is in the set");
    *count -= 1;
    if *count == 0 {
        set.remove(&value);
    }
}

/// The ops that may come next after `placed`, reaching `state`: known ones
/// first, each group in invocation order.
///
/// A read that leaves the state as it is (it binds nothing and its header is
/// the floor) is the only candidate when there is one: placing it first is
/// never worse, since nothing unplaced must precede it and nothing after it
/// can tell it moved. This collapses the orders of concurrent reads of one
/// revision, which would otherwise be tried in every combination.
fn candidates(ops: &[KeyOp], placed: &Bitset, state: &State) -> Vec<usize> {
    let mut known = Vec::new();
    let mut unknown = Vec::new();
    let mut earliest_complete = u64::MAX;
    for i in placed.zeros() {
        let op = &ops[i];
        // Ops are in invocation order, and every later op completes after it
        // is invoked, so none past this point can lower the bound.
        if op.invoke > earliest_complete {
            break;
        }
        if op.known {
            known.push(i);
            earliest_complete = earliest_complete.min(op.complete);
        } else if unknown.iter().all(|&u: &usize| ops[u].step != op.step) {
            unknown.push(i);
        }
    }
    let free = known.iter().copied().find(|&i| {
        matches!(ops[i].step, Step::Read { .. } | Step::CasMiss { .. })
            && model::step(state, &ops[i].step).as_ref() == Some(state)
    });
    if let Some(read) = free {
        return vec![read];
    }
    known.extend(unknown);
    known
}

/// A fixed-size set of op positions.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Bitset {
    words: Box<[u64]>,
    len: usize,
}

impl Bitset {
    fn new(len: usize) -> Bitset {
        Bitset {
            words: vec![0; len.div_ceil(64)].into_boxed_slice(),
            len,
        }
    }

    fn from_fn(len: usize, f: impl Fn(usize) -> bool) -> Bitset {
        let mut set = Bitset::new(len);
        for i in (0..len).filter(|&i| f(i)) {
            set.set(i);
        }
        set
    }

    /// The members outside `mask`, and those inside it.
    fn split(&self, mask: &Bitset) -> (Bitset, Bitset) {
        let outside = self
            .words
            .iter()
            .zip(mask.words.iter())
            .map(|(w, m)| w & !m)
            .collect();
        let inside = self
            .words
            .iter()
            .zip(mask.words.iter())
            .map(|(w, m)| w & m)
            .collect();
        (
            Bitset {
                words: outside,
                len: self.len,
            },
            Bitset {
                words: inside,
                len: self.len,
            },
        )
    }

    fn is_subset(&self, other: &Bitset) -> bool {
        self.words
            .iter()
            .zip(other.words.iter())
            .all(|(a, b)| a & !b == 0)
    }

    fn set(&mut self, i: usize) {
        self.words[i / 64] |= 1 << (i % 64);
    }

    fn clear(&mut self, i: usize) {
        self.words[i / 64] &= !(1 << (i % 64));
    }

    /// The positions not in the set, in increasing order.
    fn zeros(&self) -> impl Iterator<Item = usize> + '_ {
        self.words.iter().enumerate().flat_map(move |(w, &word)| {
            let mut rest = !word;
            std::iter::from_fn(move || {
                if rest == 0 {
                    return None;
                }
                let bit = rest.trailing_zeros() as usize;
                rest &= rest - 1;
                Some(w * 64 + bit)
            })
            .take_while(move |&i| i < self.len)
        })
    }
}
