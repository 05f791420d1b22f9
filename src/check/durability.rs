//! Durability: every acknowledged write is present in the final reads, or
//! overwritten.
//!
//! After a run, each key is read through every member (the *final reads*).
//! A final read is explained only by a write that no acknowledged write
//! followed in real time: if write `x` was acknowledged before write `y` was
//! sent, the key cannot end with `x`'s value, since `y` (or a later write)
//! came after it. So for a final read `f` and the acknowledged writes that
//! completed before `f` was sent:
//!
//! - a value must come from a write `s` (values are unique) that is not
//!   followed by any other of those writes: `s` either has an unknown outcome
//!   (it may have been applied last), or completed no earlier than the latest
//!   invocation among the others;
//! - an absent key needs, if any acknowledged write exists, a delete that is
//!   not followed by any of them in the same sense.
//!
//! Each rule is a necessary condition of linearizability, so it never
//! rejects a history etcd could produce; it is a narrower, direct statement
//! of what the linearizability checker also finds, and reports every key
//! whose final read shows a lost write, not only the first failing key.

use std::collections::BTreeMap;

use super::history::{Call, History, Op, Ret};

/// A final read that shows a lost or reordered write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lost {
    pub key: String,
    /// The final read and the write it shows was lost (indices into the
    /// history).
    pub read: usize,
    pub write: usize,
    pub message: String,
}

/// A write to a key: its value (None: a delete), times, and whether it was
/// acknowledged.
struct Write {
    index: usize,
    value: Option<String>,
    invoke: u64,
    /// `None` when the outcome is unknown.
    complete: Option<u64>,
}

fn write_of(index: usize, op: &Op) -> Option<Write> {
    let value = match (&op.call, &op.ret) {
        (_, Ret::Failed) => return None,
        (Call::Put { value, .. }, Ret::Put { .. } | Ret::Unknown) => Some(value.clone()),
        (
            Call::Cas { value, .. },
            Ret::Cas {
                succeeded: true, ..
            }
            | Ret::Unknown,
        ) => Some(value.clone()),
        (Call::Delete { .. }, Ret::Unknown) => None,
        (Call::Delete { .. }, Ret::Delete { deleted, .. }) if *deleted > 0 => None,
        _ => return None,
    };
    Some(Write {
        index,
        value,
        invoke: op.invoke,
        complete: op.complete,
    })
}

/// Checks the final reads (the ops `is_final` picks) of `history`; returns
/// how many were checked, or every lost write found (one per key at most).
pub fn check_final_reads(
    history: &History,
    is_final: impl Fn(&Op) -> bool,
) -> Result<usize, Vec<Lost>> {
    let mut writes: BTreeMap<&str, Vec<Write>> = BTreeMap::new();
    for (i, op) in history.iter().enumerate() {
        if let Some(w) = write_of(i, op) {
            writes.entry(op.call.key()).or_default().push(w);
        }
    }
    let mut lost: BTreeMap<String, Lost> = BTreeMap::new();
    let mut checked = 0;
    for (i, f) in history.iter().enumerate() {
        let (Call::Get { key }, Ret::Get { kv, .. }, Some(f_complete)) =
            (&f.call, &f.ret, f.complete)
        else {
            continue;
        };
        if !is_final(f) || lost.contains_key(key) {
            continue;
        }
        checked += 1;
        let empty = Vec::new();
        let ws = writes.get(key.as_str()).unwrap_or(&empty);
        let value = kv.as_ref().map(|kv| kv.value.clone());
        // The acknowledged writes done before the read was sent.
        let acked: Vec<&Write> = ws
            .iter()
            .filter(|w| w.complete.is_some_and(|c| c < f.invoke))
            .collect();
        let Some(latest) = acked.iter().max_by_key(|w| w.invoke) else {
            continue;
        };
        // Could `s` have been the last write applied before the read?
        let last = |s: &Write| {
            s.invoke < f_complete
                && acked
                    .iter()
                    .filter(|x| x.index != s.index)
                    .all(|x| s.complete.is_none_or(|c| c >= x.invoke))
        };
        let explained = ws.iter().any(|s| s.value == value && last(s));
        if !explained {
            let shown = value
                .as_deref()
                .map_or("absent".to_owned(), |v| format!("{v:?}"));
            let message = format!(
                "final read op #{i} of {key} returned {shown}, but op #{} (invoked at {} ns, acknowledged) \
                 came after every write that could have left that; it was lost",
                latest.index, latest.invoke
            );
            lost.insert(
                key.clone(),
                Lost {
                    key: key.clone(),
                    read: i,
                    write: latest.index,
                    message,
                },
            );
        }
    }
    if lost.is_empty() {
        Ok(checked)
    } else {
        Err(lost.into_values().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::history::Kv;

    fn op(client: u32, t: (u64, Option<u64>), call: Call, ret: Ret) -> Op {
        Op {
            client,
            invoke: t.0,
            complete: t.1,
            call,
            ret,
        }
    }

    fn put(t: (u64, u64), value: &str, revision: i64) -> Op {
        let call = Call::Put {
            key: "k".into(),
            value: value.into(),
        };
        op(0, (t.0, Some(t.1)), call, Ret::Put { revision })
    }

    fn final_read(t: u64, value: Option<&str>) -> Op {
        let kv = value.map(|v| Kv {
            value: v.into(),
            mod_revision: 9,
            create_revision: 2,
            version: 1,
        });
        let call = Call::Get { key: "k".into() };
        op(99, (t, Some(t + 1)), call, Ret::Get { revision: 9, kv })
    }

    fn verdict(history: &History) -> Result<usize, Vec<Lost>> {
        check_final_reads(history, |o| o.client == 99)
    }

    #[test]
    fn the_last_write_or_a_concurrent_one_passes() {
        let h = vec![
            put((0, 10), "a", 2),
            put((20, 30), "b", 3),
            final_read(100, Some("b")),
        ];
        assert_eq!(verdict(&h), Ok(1));
        // Concurrent puts: either may be last.
        let h = vec![
            put((0, 30), "a", 3),
            put((10, 20), "b", 2),
            final_read(100, Some("a")),
        ];
        assert_eq!(verdict(&h), Ok(1));
        let h = vec![
            put((0, 30), "a", 3),
            put((10, 20), "b", 2),
            final_read(100, Some("b")),
        ];
        assert_eq!(verdict(&h), Ok(1));
    }

    #[test]
    fn an_overwritten_value_at_the_end_is_a_lost_write() {
        let h = vec![
            put((0, 10), "a", 2),
            put((20, 30), "b", 3),
            final_read(100, Some("a")),
        ];
        let lost = verdict(&h).expect_err("b was lost");
        assert_eq!((lost[0].read, lost[0].write), (2, 1));
        // Absent without a delete.
        let h = vec![put((0, 10), "a", 2), final_read(100, None)];
        assert!(verdict(&h).is_err());
    }

    #[test]
    fn unknown_writes_and_deletes_explain_the_end() {
        let unknown = op(
            1,
            (40, None),
            Call::Put {
                key: "k".into(),
                value: "u".into(),
            },
            Ret::Unknown,
        );
        let h = vec![put((0, 10), "a", 2), unknown, final_read(100, Some("u"))];
        assert_eq!(verdict(&h), Ok(1));
        let delete = op(
            1,
            (20, Some(30)),
            Call::Delete { key: "k".into() },
            Ret::Delete {
                revision: 3,
                deleted: 1,
            },
        );
        let h = vec![put((0, 10), "a", 2), delete, final_read(100, None)];
        assert_eq!(verdict(&h), Ok(1));
    }
}
