//! The naive reference model of the MVCC store, shared by the proptest model
//! test (`tests/mvcc_model.rs`) and the `mvcc_model` fuzz target.
//!
//! The model keeps a full copy of the key space for every revision
//! (`states[r]` is the store as of revision `r`), applies each request with
//! the simplest code that states etcd's rules, and never forgets anything:
//! compaction only moves the line below which reads are refused.
#![allow(dead_code)]

use bytes::Bytes;
use cairn::mvcc::{Error, Store};
use cairn::proto::etcdserverpb::{
    compare::{CompareResult, CompareTarget, TargetUnion},
    range_request::{SortOrder, SortTarget},
    request_op::Request,
    response_op::Response,
    CompactionRequest, Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp,
    TxnRequest,
};
use cairn::proto::mvccpb::KeyValue;
use std::collections::BTreeMap;

macro_rules! check {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

macro_rules! check_eq {
    ($got:expr, $want:expr) => {
        check_eq!($got, $want, "")
    };
    ($got:expr, $want:expr, $($fmt:tt)+) => {{
        let (got, want) = (&$got, &$want);
        if got != want {
            return Err(format!("{}\n  store: {:?}\n  model: {:?}", format!($($fmt)+), got, want));
        }
    }};
}

/// One request of a generated sequence. Revisions in `Range` and `Compact`
/// are small numbers the runner maps onto the revisions that exist.
#[derive(Debug, Clone)]
pub enum Op {
    Put(PutRequest),
    Del(DeleteRangeRequest),
    Range(RangeRequest),
    Txn(TxnRequest),
    Compact(i64),
}

// ---------------------------------------------------------------- the model

#[derive(Debug, Clone, PartialEq, Eq)]
struct Kv {
    create: i64,
    modr: i64,
    version: i64,
    lease: i64,
    value: Vec<u8>,
}

type State = BTreeMap<Vec<u8>, Kv>;

/// What a request returned, in a form both sides convert to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Out {
    Range {
        kvs: Vec<(Vec<u8>, Kv)>,
        more: bool,
        count: i64,
        rev: i64,
    },
    Put {
        prev: Option<(Vec<u8>, Kv)>,
        rev: i64,
    },
    Del {
        deleted: i64,
        prev: Vec<(Vec<u8>, Kv)>,
        rev: i64,
    },
    Txn {
        succeeded: bool,
        responses: Vec<Out>,
        rev: i64,
    },
    Compacted,
    Err(Error),
}

struct Model {
    /// `states[r]`: every key as of revision `r`. `states[0]` and `states[1]` are empty.
    states: Vec<State>,
    compacted: i64,
}

fn in_range(k: &[u8], key: &[u8], end: &[u8]) -> bool {
    match end {
        [] => k == key,
        [0] => k >= key,
        _ => k >= key && k < end,
    }
}

impl Model {
    fn new() -> Self {
        Self {
            states: vec![State::new(), State::new()],
            compacted: 0,
        }
    }

    fn cur(&self) -> i64 {
        self.states.len() as i64 - 1
    }

    fn range(&self, r: &RangeRequest, view: &State, view_rev: i64) -> Result<Out, Error> {
        if r.revision > view_rev {
            return Err(Error::FutureRev);
        }
        let rev = if r.revision <= 0 {
            view_rev
        } else {
            r.revision
        };
        if rev < self.compacted {
            return Err(Error::Compacted);
        }
        let state = if rev == view_rev {
            view
        } else {
            &self.states[rev as usize]
        };
        let mut kvs: Vec<(Vec<u8>, Kv)> = state
            .iter()
            .filter(|(k, _)| in_range(k, &r.key, &r.range_end))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let count = kvs.len() as i64;
        kvs.retain(|(_, v)| {
            (r.min_mod_revision == 0 || v.modr >= r.min_mod_revision)
                && (r.max_mod_revision == 0 || v.modr <= r.max_mod_revision)
                && (r.min_create_revision == 0 || v.create >= r.min_create_revision)
                && (r.max_create_revision == 0 || v.create <= r.max_create_revision)
        });
        let target = SortTarget::try_from(r.sort_target).unwrap();
        let mut order = SortOrder::try_from(r.sort_order).unwrap();
        if order == SortOrder::None && target != SortTarget::Key {
            order = SortOrder::Ascend;
        }
        let field = |x: &(Vec<u8>, Kv)| -> (i64, Vec<u8>) {
            match target {
                SortTarget::Key => (0, x.0.clone()),
                SortTarget::Version => (x.1.version, vec![]),
                SortTarget::Create => (x.1.create, vec![]),
                SortTarget::Mod => (x.1.modr, vec![]),
                SortTarget::Value => (0, x.1.value.clone()),
            }
        };
        match order {
            SortOrder::Ascend => kvs.sort_by_key(field),
            SortOrder::Descend => kvs.sort_by_key(|x| std::cmp::Reverse(field(x))),
            SortOrder::None => {}
        }
        let mut more = false;
        if r.count_only {
            kvs.clear();
        } else if r.limit > 0 && kvs.len() > r.limit as usize {
            kvs.truncate(r.limit as usize);
            more = true;
        }
        if r.keys_only {
            for (_, v) in &mut kvs {
                v.value.clear();
            }
        }
        Ok(Out::Range {
            kvs,
            more,
            count,
            rev: view_rev,
        })
    }

    fn compare(&self, c: &Compare, state: &State) -> bool {
        let matching: Vec<&Kv> = state
            .iter()
            .filter(|(k, _)| in_range(k, &c.key, &c.range_end))
            .map(|(_, v)| v)
            .collect();
        let target = CompareTarget::try_from(c.target).unwrap();
        if matching.is_empty() && target == CompareTarget::Value {
            return false;
        }
        let zero = Kv {
            create: 0,
            modr: 0,
            version: 0,
            lease: 0,
            value: vec![],
        };
        let check = |v: &Kv| {
            let ord = match (&c.target_union, target) {
                (Some(TargetUnion::Value(x)), CompareTarget::Value) => v.value.as_slice().cmp(x),
                (Some(TargetUnion::Version(x)), CompareTarget::Version) => v.version.cmp(x),
                (Some(TargetUnion::CreateRevision(x)), CompareTarget::Create) => v.create.cmp(x),
                (Some(TargetUnion::ModRevision(x)), CompareTarget::Mod) => v.modr.cmp(x),
                (Some(TargetUnion::Lease(x)), CompareTarget::Lease) => v.lease.cmp(x),
                other => panic!("generator made a mismatched compare {other:?}"),
            };
            match CompareResult::try_from(c.result).unwrap() {
                CompareResult::Equal => ord.is_eq(),
                CompareResult::NotEqual => ord.is_ne(),
                CompareResult::Greater => ord.is_gt(),
                CompareResult::Less => ord.is_lt(),
            }
        };
        if matching.is_empty() {
            check(&zero)
        } else {
            matching.into_iter().all(check)
        }
    }

    /// Applies `ops` of a txn begun at `begin` to the working copy `w`.
    fn txn_ops(
        &self,
        t: &TxnRequest,
        begin: i64,
        w: &mut State,
        changed: &mut bool,
    ) -> Result<Out, Error> {
        let main = begin + 1;
        let succeeded = t
            .compare
            .iter()
            .all(|c| self.compare(c, &self.states[begin as usize]));
        let ops = if succeeded { &t.success } else { &t.failure };
        let mut responses = Vec::new();
        for op in ops {
            let out = match op.request.as_ref().unwrap() {
                Request::RequestRange(r) => {
                    if r.revision != 0 && r.revision > begin {
                        return Err(Error::FutureRev);
                    }
                    if r.revision != 0 && r.revision < self.compacted {
                        return Err(Error::Compacted);
                    }
                    let view_rev = if *changed { main } else { begin };
                    let r2 = RangeRequest {
                        revision: r.revision.max(0),
                        ..r.clone()
                    };
                    self.range(&r2, w, view_rev)?
                }
                Request::RequestPut(p) => {
                    let prev = w.get(&p.key[..]).cloned();
                    if (p.ignore_value || p.ignore_lease) && prev.is_none() {
                        return Err(Error::KeyNotFound);
                    }
                    let kv = Kv {
                        create: prev.as_ref().map_or(main, |p| p.create),
                        modr: main,
                        version: prev.as_ref().map_or(1, |p| p.version + 1),
                        lease: if p.ignore_lease {
                            prev.as_ref().unwrap().lease
                        } else {
                            p.lease
                        },
                        value: if p.ignore_value {
                            prev.as_ref().unwrap().value.clone()
                        } else {
                            p.value.to_vec()
                        },
                    };
                    w.insert(p.key.to_vec(), kv);
                    *changed = true;
                    Out::Put {
                        prev: prev.filter(|_| p.prev_kv).map(|v| (p.key.to_vec(), v)),
                        rev: main,
                    }
                }
                Request::RequestDeleteRange(d) => {
                    let doomed: Vec<(Vec<u8>, Kv)> = w
                        .iter()
                        .filter(|(k, _)| in_range(k, &d.key, &d.range_end))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    for (k, _) in &doomed {
                        w.remove(k);
                    }
                    *changed |= !doomed.is_empty();
                    Out::Del {
                        deleted: doomed.len() as i64,
                        prev: if d.prev_kv { doomed } else { vec![] },
                        rev: if *changed { main } else { begin },
                    }
                }
                Request::RequestTxn(nested) => self.txn_ops(nested, begin, w, changed)?,
            };
            responses.push(out);
        }
        Ok(Out::Txn {
            succeeded,
            responses,
            rev: if *changed { main } else { begin },
        })
    }

    /// Runs a txn; returns its output and commits its writes on success.
    fn txn(&mut self, t: &TxnRequest) -> Out {
        let begin = self.cur();
        let mut w = self.states[begin as usize].clone();
        let mut changed = false;
        match self.txn_ops(t, begin, &mut w, &mut changed) {
            Ok(out) => {
                if changed {
                    self.states.push(w);
                }
                out
            }
            Err(e) => Out::Err(e),
        }
    }

    fn compact(&mut self, rev: i64) -> Out {
        if rev <= self.compacted {
            Out::Err(Error::Compacted)
        } else if rev > self.cur() {
            Out::Err(Error::FutureRev)
        } else {
            self.compacted = rev;
            Out::Compacted
        }
    }
}

/// A write: the branch choices it depends on, its key, and for a delete its range end.
type Write = (Vec<(usize, bool)>, Vec<u8>, Option<Vec<u8>>);

/// The writes of a txn tree with the branch choices they depend on, for the
/// naive duplicate-key check.
fn writes(
    ops: &[RequestOp],
    path: &mut Vec<(usize, bool)>,
    next_id: &mut usize,
    out: &mut Vec<Write>,
) {
    for op in ops {
        match op.request.as_ref().unwrap() {
            Request::RequestPut(p) => out.push((path.clone(), p.key.to_vec(), None)),
            Request::RequestDeleteRange(d) => {
                out.push((path.clone(), d.key.to_vec(), Some(d.range_end.to_vec())))
            }
            Request::RequestTxn(t) => {
                let id = *next_id;
                *next_id += 1;
                for (branch, ops) in [(true, &t.success), (false, &t.failure)] {
                    path.push((id, branch));
                    writes(ops, path, next_id, out);
                    path.pop();
                }
            }
            Request::RequestRange(_) => {}
        }
    }
}

/// Whether two writes of `ops` that can both run touch the same key (a put
/// and a put of it, or a put inside a delete's raw `[key, end)`).
fn naive_conflict(ops: &[RequestOp]) -> bool {
    let mut ws = Vec::new();
    writes(ops, &mut vec![], &mut 0, &mut ws);
    let compatible = |a: &[(usize, bool)], b: &[(usize, bool)]| {
        a.iter()
            .all(|(id, br)| b.iter().all(|(id2, br2)| id != id2 || br == br2))
    };
    let covers = |start: &[u8], end: &[u8], k: &[u8]| {
        if end.is_empty() {
            k == start
        } else {
            start <= k && k < end
        }
    };
    for (i, a) in ws.iter().enumerate() {
        for b in &ws[i + 1..] {
            if !compatible(&a.0, &b.0) {
                continue;
            }
            let clash = match (&a.2, &b.2) {
                (None, None) => a.1 == b.1,
                (None, Some(end)) => covers(&b.1, end, &a.1),
                (Some(end), None) => covers(&a.1, end, &b.1),
                (Some(_), Some(_)) => false,
            };
            if clash {
                return true;
            }
        }
    }
    false
}

/// Conflicts among the writes at one level only: etcd always rejects these.
fn same_level_conflict(ops: &[RequestOp]) -> bool {
    let flat: Vec<RequestOp> = ops
        .iter()
        .filter(|o| !matches!(o.request, Some(Request::RequestTxn(_))))
        .cloned()
        .collect();
    naive_conflict(&flat)
}

// ---------------------------------------------------------- converting

fn kv_out(kv: &KeyValue) -> (Vec<u8>, Kv) {
    (
        kv.key.to_vec(),
        Kv {
            create: kv.create_revision,
            modr: kv.mod_revision,
            version: kv.version,
            lease: kv.lease,
            value: kv.value.to_vec(),
        },
    )
}

fn response_out(r: &Response) -> Out {
    match r {
        Response::ResponseRange(r) => Out::Range {
            kvs: r.kvs.iter().map(kv_out).collect(),
            more: r.more,
            count: r.count,
            rev: r.header.unwrap().revision,
        },
        Response::ResponsePut(p) => Out::Put {
            prev: p.prev_kv.as_ref().map(kv_out),
            rev: p.header.unwrap().revision,
        },
        Response::ResponseDeleteRange(d) => Out::Del {
            deleted: d.deleted,
            prev: d.prev_kvs.iter().map(kv_out).collect(),
            rev: d.header.unwrap().revision,
        },
        Response::ResponseTxn(t) => Out::Txn {
            succeeded: t.succeeded,
            responses: t
                .responses
                .iter()
                .map(|r| response_out(r.response.as_ref().unwrap()))
                .collect(),
            rev: t.header.unwrap().revision,
        },
    }
}

// ---------------------------------------------------------- the test

fn as_txn(ops: Vec<RequestOp>) -> TxnRequest {
    TxnRequest {
        success: ops,
        ..Default::default()
    }
}

/// Applies `ops` to a fresh store and a fresh model; fails on the first difference.
pub fn run(ops: Vec<Op>) -> Result<(), String> {
    // Chunks of 2 to 4 keys: five keys split and merge the index's chunks.
    let mut store = Store::new().with_index_chunk(2 + ops.len() % 3);
    let mut model = Model::new();
    for op in ops {
        // Map small generated revisions onto ones near the real history.
        let cur = model.cur();
        let pick = |r: i64| if r <= 0 { r } else { (r * cur) / 8 + (r % 3) };
        let (got, want) = match op {
            Op::Put(p) => {
                let got = store
                    .put(&p)
                    .map(|(r, _)| response_out(&Response::ResponsePut(r)));
                let want = model.txn(&as_txn(vec![RequestOp {
                    request: Some(Request::RequestPut(p)),
                }]));
                (got, unwrap_single(want))
            }
            Op::Del(d) => {
                let got = store
                    .delete_range(&d)
                    .map(|(r, _)| response_out(&Response::ResponseDeleteRange(r)));
                let want = model.txn(&as_txn(vec![RequestOp {
                    request: Some(Request::RequestDeleteRange(d)),
                }]));
                (got, unwrap_single(want))
            }
            Op::Range(mut r) => {
                r.revision = pick(r.revision);
                let got = store
                    .range(&r)
                    .map(|r| response_out(&Response::ResponseRange(r)));
                let cur_state = model.states[cur as usize].clone();
                let want = match model.range(&r, &cur_state, cur) {
                    Ok(o) => o,
                    Err(e) => Out::Err(e),
                };
                (got, want)
            }
            Op::Txn(t) => {
                let got = store
                    .txn(&t)
                    .map(|(r, _)| response_out(&Response::ResponseTxn(r)));
                if got == Err(Error::DuplicateKey) {
                    check!(
                        naive_conflict(&t.success) || naive_conflict(&t.failure),
                        "store rejected a txn with no conflicting writes: {t:?}"
                    );
                    continue;
                }
                check!(
                    !same_level_conflict(&t.success) && !same_level_conflict(&t.failure),
                    "store accepted a txn with same-level conflicting writes: {t:?}"
                );
                (got, model.txn(&t))
            }
            Op::Compact(r) => {
                let rev = pick(r);
                let got = store
                    .compact(&CompactionRequest {
                        revision: rev,
                        physical: false,
                    })
                    .map(|_| Out::Compacted);
                (got, model.compact(rev))
            }
        };
        let got = got.unwrap_or_else(Out::Err);
        check_eq!(got, want);
        store.check_invariants();
        check_eq!(store.current_revision(), model.cur());
    }
    // Every readable revision agrees in full, and the state survives a round trip.
    for rev in model.compacted.max(1)..=model.cur() {
        let all = RangeRequest {
            key: Bytes::from_static(b"\0"),
            range_end: Bytes::from_static(b"\0"),
            revision: rev,
            ..Default::default()
        };
        let got = response_out(&Response::ResponseRange(store.range(&all).unwrap()));
        let want = model
            .range(
                &all,
                &model.states[model.cur() as usize].clone(),
                model.cur(),
            )
            .unwrap();
        check_eq!(got, want, "full state at revision {}", rev);
    }
    let decoded = Store::decode(Bytes::from(store.encode())).unwrap();
    check_eq!(decoded.hash_kv(0).unwrap(), store.hash_kv(0).unwrap());
    check_eq!(&decoded, &store);
    Ok(())
}

fn unwrap_single(out: Out) -> Out {
    match out {
        Out::Txn { mut responses, .. } => responses.pop().unwrap(),
        other => other,
    }
}
