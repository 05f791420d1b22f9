//! Valid histories for the checker's tests, from a seed.
//!
//! Clients issue ops one at a time on simulated time. Each op that takes
//! effect gets a linearization point strictly inside its interval (for ops
//! with an unknown outcome: any time after invocation), and the ops are then
//! applied, in that order, to a sequential store with etcd's revision rules
//! to compute the responses. The result is linearizable by construction.

use std::collections::BTreeMap;

use crate::check::history::{Call, History, Kv, Op, Ret};

/// xorshift64*: small, deterministic, good enough for test data.
pub(super) struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (n > 0), up to a negligible bias.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn percent(&mut self, p: u64) -> bool {
        self.below(100) < p
    }
}

/// The shape of a generated history.
#[derive(Debug, Clone, Copy)]
pub(super) struct Shape {
    pub ops: usize,
    pub clients: u32,
    pub keys: u32,
    /// Percent of ops whose outcome is unknown (half of them take effect).
    pub unknown_percent: u64,
    /// Percent of ops that fail without effect.
    pub failed_percent: u64,
}

/// A generated op before its response is known.
struct Pending {
    /// When it takes effect; `None` if it never does.
    at: Option<u64>,
    /// Whether the client learns the outcome.
    known: bool,
}

/// A valid history of the given shape.
pub(super) fn generate(seed: u64, shape: Shape) -> History {
    let mut rng = Rng::new(seed);
    let mut next_invoke: Vec<u64> = (0..shape.clients).map(|_| rng.below(20)).collect();
    let mut history = Vec::with_capacity(shape.ops);
    let mut pending = Vec::with_capacity(shape.ops);
    for n in 0..shape.ops {
        // The client free soonest goes next (ties: lowest number).
        let client = (0..shape.clients)
            .min_by_key(|&c| (next_invoke[c as usize], c))
            .expect("at least one client");
        let invoke = next_invoke[client as usize];
        let key = format!("k{}", rng.below(u64::from(shape.keys)));
        let value = format!("c{client}-{n}");
        let call = match rng.below(10) {
            0..=3 => Call::Get { key },
            4..=6 => Call::Put { key, value },
            7 => Call::Delete { key },
            // The expected revision is chosen when the op is applied.
            _ => Call::Cas {
                key,
                expect_mod_revision: 0,
                value,
            },
        };
        let (complete, p) = if rng.percent(shape.unknown_percent) {
            // It may take effect long after the client gave up on it.
            let at = rng.percent(50).then(|| invoke + 1 + rng.below(400));
            next_invoke[client as usize] = invoke + 100 + rng.below(50);
            (None, Pending { at, known: false })
        } else if rng.percent(shape.failed_percent) {
            let complete = invoke + 1 + rng.below(30);
            next_invoke[client as usize] = complete + rng.below(10);
            (
                Some(complete),
                Pending {
                    at: None,
                    known: true,
                },
            )
        } else {
            let at = invoke + 1 + rng.below(40);
            let complete = at + 1 + rng.below(40);
            next_invoke[client as usize] = complete + rng.below(10);
            (
                Some(complete),
                Pending {
                    at: Some(at),
                    known: true,
                },
            )
        };
        let ret = if complete.is_some() {
            Ret::Failed
        } else {
            Ret::Unknown
        };
        history.push(Op {
            client,
            invoke,
            complete,
            call,
            ret,
        });
        pending.push(p);
    }
    apply_all(&mut rng, &mut history, &pending);
    history
}

/// Applies the ops that take effect in order of their linearization points,
/// filling in the responses of those whose outcome is known.
fn apply_all(rng: &mut Rng, history: &mut [Op], pending: &[Pending]) {
    let mut order: Vec<(u64, usize)> = pending
        .iter()
        .enumerate()
        .filter_map(|(i, p)| p.at.map(|at| (at, i)))
        .collect();
    order.sort_unstable();
    let mut store = Store {
        revision: 1,
        keys: BTreeMap::new(),
    };
    for (_, i) in order {
        let op = &mut history[i];
        if let Call::Cas {
            key,
            expect_mod_revision,
            ..
        } = &mut op.call
        {
            let current = store.keys.get(key.as_str()).map_or(0, |kv| kv.mod_revision);
            *expect_mod_revision = match rng.below(4) {
                0 | 1 => current,
                2 => 0,
                _ => (current - 1).max(0),
            };
        }
        let ret = store.apply(&op.call);
        if pending[i].known {
            op.ret = ret;
        }
    }
}

/// A sequential store with etcd's revision rules.
struct Store {
    revision: i64,
    keys: BTreeMap<String, Kv>,
}

impl Store {
    fn apply(&mut self, call: &Call) -> Ret {
        match call {
            Call::Get { key } => Ret::Get {
                revision: self.revision,
                kv: self.keys.get(key).cloned(),
            },
            Call::Put { key, value } => Ret::Put {
                revision: self.put(key, value),
            },
            Call::Delete { key } => {
                let deleted = i64::from(self.keys.remove(key).is_some());
                self.revision += deleted;
                Ret::Delete {
                    revision: self.revision,
                    deleted,
                }
            }
            Call::Cas {
                key,
                expect_mod_revision,
                value,
            } => {
                let current = self.keys.get(key).map_or(0, |kv| kv.mod_revision);
                if current == *expect_mod_revision {
                    Ret::Cas {
                        revision: self.put(key, value),
                        succeeded: true,
                        kv: None,
                    }
                } else {
                    Ret::Cas {
                        revision: self.revision,
                        succeeded: false,
                        kv: self.keys.get(key).cloned(),
                    }
                }
            }
        }
    }

    fn put(&mut self, key: &str, value: &str) -> i64 {
        self.revision += 1;
        let revision = self.revision;
        let kv = match self.keys.get(key) {
            Some(old) => Kv {
                value: value.to_owned(),
                mod_revision: revision,
                version: old.version + 1,
                ..old.clone()
            },
            None => Kv {
                value: value.to_owned(),
                mod_revision: revision,
                create_revision: revision,
                version: 1,
            },
        };
        self.keys.insert(key.to_owned(), kv);
        revision
    }
}
