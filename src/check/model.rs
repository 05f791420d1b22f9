//! The model of one key that the linearizability search steps.
//!
//! The state is what a sequence of operations on one key leaves behind: the
//! key's value and metadata (or its absence), and the least the store's
//! revision can be at that point. Every field is something a later response
//! can contradict:
//!
//! - `value` and `version` are always known, because the search knows exactly
//!   which writes it has linearized (a Put with an unknown outcome that the
//!   search chose to apply counts like any other).
//! - `mod_revision` and `create_revision` are [`Rev`]s: known, or unknown
//!   within bounds. A write whose outcome is unknown also has an unknown
//!   revision; the first read that sees the key binds it, and a Cas that
//!   succeeded binds it to the revision it expected.
//! - `store_floor` is the least the store revision can be after the ops
//!   linearized so far. The store revision never goes down along the real
//!   order of operations, and every write raises it, so along the per-key
//!   order too: a read's header revision must be at least the floor, a write's
//!   revision above it. This is what ties a key's revisions to the header
//!   revisions of its reads, and what makes two concurrent reads of different
//!   header revisions linearizable in one order only.
//!
//! [`step`] returns `None` when the op cannot come next, which is how the
//! search prunes. Every check it makes is a necessary condition of etcd's
//! semantics, so a `None` never rejects a history etcd could have produced.

/// A revision the search may not know yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Rev {
    Known(i64),
    /// Unknown, strictly between `above` and `below`.
    Between {
        above: i64,
        below: i64,
    },
}

impl Rev {
    /// The revision once it is known to be `r`; `None` if it cannot be.
    fn bind(self, r: i64) -> Option<Rev> {
        match self {
            Rev::Known(k) => (k == r).then_some(self),
            Rev::Between { above, below } => (above < r && r < below).then_some(Rev::Known(r)),
        }
    }

    /// The revision once it is known to be below `r`; `None` if it cannot be.
    fn below(self, r: i64) -> Option<Rev> {
        match self {
            Rev::Known(k) => (k < r).then_some(self),
            Rev::Between { above, below } => {
                let below = below.min(r);
                (above.saturating_add(1) < below).then_some(Rev::Between { above, below })
            }
        }
    }
}

impl std::fmt::Display for Rev {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rev::Known(r) => write!(f, "{r}"),
            Rev::Between {
                above,
                below: i64::MAX,
            } => write!(f, "unknown (> {above})"),
            Rev::Between { above, below } => write!(f, "unknown (> {above}, < {below})"),
        }
    }
}

/// A key that exists, as the model knows it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct Present {
    /// The value, interned per key (see `linearize::KeyOps`).
    pub value: u32,
    /// Puts since the key was created: 1 for the creating put.
    pub version: i64,
    /// The revision of the last put.
    pub mod_revision: Rev,
    /// The revision of the creating put; equal to `mod_revision` while
    /// `version` is 1.
    pub create_revision: Rev,
}

impl Present {
    /// The key once its mod revision is known to be `r`.
    fn with_mod(&self, r: i64) -> Option<Present> {
        let mod_revision = self.mod_revision.bind(r)?;
        let create_revision = if self.version == 1 {
            mod_revision
        } else {
            self.create_revision
        };
        Some(Present {
            mod_revision,
            create_revision,
            ..self.clone()
        })
    }
}

/// The model's state: the key, and the least the store revision can be.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct State {
    /// The key; `None` when absent.
    pub key: Option<Present>,
    /// The least the store revision can be at this point.
    pub store_floor: i64,
}

impl State {
    /// An empty store, at revision 1.
    pub fn initial() -> State {
        State {
            key: None,
            store_floor: 1,
        }
    }
}

/// A key and its metadata as a response returned it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Seen {
    pub value: u32,
    pub mod_revision: i64,
    pub create_revision: i64,
    pub version: i64,
}

/// What one operation does to the key, and what its response says.
/// A revision of `None` is a write whose outcome is unknown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Step {
    /// A Get, or a Delete that deleted nothing (`kv: None`): the key as it
    /// was at header revision `revision`.
    Read { revision: i64, kv: Option<Seen> },
    /// A Put.
    Put { revision: Option<i64>, value: u32 },
    /// A Delete that deleted the key.
    Delete { revision: Option<i64> },
    /// A Cas whose compare held, so it put `value`.
    CasHit {
        expect: i64,
        revision: Option<i64>,
        value: u32,
    },
    /// A Cas whose compare failed, so it read the key.
    CasMiss {
        expect: i64,
        revision: i64,
        kv: Option<Seen>,
    },
}

/// The state after `step`, or `None` if `step` cannot come next.
pub(super) fn step(state: &State, step: &Step) -> Option<State> {
    match *step {
        Step::Read { revision, kv } => {
            let store_floor = read_at(state.store_floor, revision)?;
            let key = observe(state.key.as_ref(), kv.as_ref())?;
            Some(State { key, store_floor })
        }
        Step::Put { revision, value } => put(state, revision, value),
        Step::Delete { revision } => {
            let old = state.key.as_ref()?;
            let (_, store_floor) = write_at(state.store_floor, revision)?;
            if let Some(r) = revision {
                old.mod_revision.below(r)?;
            }
            Some(State {
                key: None,
                store_floor,
            })
        }
        Step::CasHit {
            expect,
            revision,
            value,
        } => {
            let compared = match &state.key {
                None if expect == 0 => State {
                    key: None,
                    ..*state
                },
                Some(old) if expect != 0 => State {
                    key: Some(old.with_mod(expect)?),
                    ..*state
                },
                _ => return None,
            };
            put(&compared, revision, value)
        }
        Step::CasMiss {
            expect,
            revision,
            kv,
        } => {
            // A missing key compares as mod revision 0.
            if kv.map_or(0, |s| s.mod_revision) == expect {
                return None;
            }
            let store_floor = read_at(state.store_floor, revision)?;
            let key = observe(state.key.as_ref(), kv.as_ref())?;
            Some(State { key, store_floor })
        }
    }
}

/// A put of `value` at `revision` (unknown: `None`).
fn put(state: &State, revision: Option<i64>, value: u32) -> Option<State> {
    let (rev, store_floor) = write_at(state.store_floor, revision)?;
    let key = match &state.key {
        None => Present {
            value,
            version: 1,
            mod_revision: rev,
            create_revision: rev,
        },
        Some(old) => {
            let create_revision = match revision {
                Some(r) => {
                    old.mod_revision.below(r)?;
                    old.create_revision.below(r)?
                }
                None => old.create_revision,
            };
            Present {
                value,
                version: old.version + 1,
                mod_revision: rev,
                create_revision,
            }
        }
    };
    Some(State {
        key: Some(key),
        store_floor,
    })
}

/// The floor after a read at header revision `revision`.
fn read_at(floor: i64, revision: i64) -> Option<i64> {
    (revision >= floor).then_some(revision)
}

/// The write's revision and the floor after it.
fn write_at(floor: i64, revision: Option<i64>) -> Option<(Rev, i64)> {
    match revision {
        Some(r) => (r > floor).then_some((Rev::Known(r), r)),
        None => Some((
            Rev::Between {
                above: floor,
                below: i64::MAX,
            },
            floor.saturating_add(1),
        )),
    }
}

/// The key after a response saw it as `seen`, or `None` if it cannot have.
fn observe(key: Option<&Present>, seen: Option<&Seen>) -> Option<Option<Present>> {
    match (key, seen) {
        (None, None) => Some(None),
        (Some(key), Some(seen)) => {
            if key.value != seen.value || key.version != seen.version {
                return None;
            }
            let key = key.with_mod(seen.mod_revision)?;
            let create_revision = key.create_revision.bind(seen.create_revision)?;
            Some(Some(Present {
                create_revision,
                ..key
            }))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(value: u32, mod_revision: i64, create_revision: i64, version: i64) -> Option<Seen> {
        Some(Seen {
            value,
            mod_revision,
            create_revision,
            version,
        })
    }

    #[test]
    fn unknown_put_is_bound_by_a_read() {
        let s = step(
            &State::initial(),
            &Step::Put {
                revision: None,
                value: 7,
            },
        )
        .unwrap();
        assert_eq!(s.store_floor, 2);
        // A read cannot have seen it at a revision it cannot have had.
        assert!(step(
            &s,
            &Step::Read {
                revision: 3,
                kv: seen(7, 1, 1, 1)
            }
        )
        .is_none());
        assert!(step(
            &s,
            &Step::Read {
                revision: 1,
                kv: seen(7, 2, 2, 1)
            }
        )
        .is_none());
        let s = step(
            &s,
            &Step::Read {
                revision: 3,
                kv: seen(7, 3, 3, 1),
            },
        )
        .unwrap();
        assert_eq!(s.key.unwrap().create_revision, Rev::Known(3));
    }

    #[test]
    fn create_revision_of_an_unknown_put_stays_below_later_puts() {
        let s = step(
            &State::initial(),
            &Step::Put {
                revision: None,
                value: 1,
            },
        )
        .unwrap();
        let s = step(
            &s,
            &Step::Put {
                revision: Some(5),
                value: 2,
            },
        )
        .unwrap();
        assert!(step(
            &s,
            &Step::Read {
                revision: 5,
                kv: seen(2, 5, 5, 2)
            }
        )
        .is_none());
        assert!(step(
            &s,
            &Step::Read {
                revision: 5,
                kv: seen(2, 5, 4, 2)
            }
        )
        .is_some());
    }

    #[test]
    fn cas_compares_missing_key_as_zero() {
        let s = State::initial();
        assert!(step(
            &s,
            &Step::CasHit {
                expect: 0,
                revision: Some(2),
                value: 1
            }
        )
        .is_some());
        assert!(step(
            &s,
            &Step::CasHit {
                expect: 2,
                revision: Some(2),
                value: 1
            }
        )
        .is_none());
        assert!(step(
            &s,
            &Step::CasMiss {
                expect: 0,
                revision: 1,
                kv: None
            }
        )
        .is_none());
        assert!(step(
            &s,
            &Step::CasMiss {
                expect: 3,
                revision: 1,
                kv: None
            }
        )
        .is_some());
    }
}
