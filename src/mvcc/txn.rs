//! Request validation and txn compares, as etcd's `v3rpc/key.go` and
//! `apply.go` define them.
//!
//! The `check_*` functions are the checks etcd makes before a request reaches
//! raft; the store runs them again before applying, so a bad request never
//! changes anything however it arrives. They are pure and cheap.

use super::{Error, Result, Store};
use crate::proto::etcdserverpb::{
    compare::{CompareResult, CompareTarget, TargetUnion},
    range_request::{SortOrder, SortTarget},
    request_op::Request,
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use crate::proto::mvccpb::KeyValue;
use bytes::Bytes;
use std::collections::BTreeSet;

/// Checks a Range request: a key is given and the sort options are known.
pub fn check_range(req: &RangeRequest) -> Result<()> {
    if req.key.is_empty() {
        return Err(Error::EmptyKey);
    }
    if SortOrder::try_from(req.sort_order).is_err()
        || SortTarget::try_from(req.sort_target).is_err()
    {
        return Err(Error::InvalidSortOption);
    }
    Ok(())
}

/// Checks a Put request: a key is given, and `ignore_value`/`ignore_lease`
/// come without a value/lease.
pub fn check_put(req: &PutRequest) -> Result<()> {
    if req.key.is_empty() {
        return Err(Error::EmptyKey);
    }
    if req.ignore_value && !req.value.is_empty() {
        return Err(Error::ValueProvided);
    }
    if req.ignore_lease && req.lease != 0 {
        return Err(Error::LeaseProvided);
    }
    Ok(())
}

/// Checks a DeleteRange request: a key is given.
pub fn check_delete(req: &DeleteRangeRequest) -> Result<()> {
    if req.key.is_empty() {
        return Err(Error::EmptyKey);
    }
    Ok(())
}

/// Checks a Txn: at most `max_ops` compares and ops per branch (nested txns
/// share the budget as in etcd), every op well formed, and no two writes that
/// can both run touch the same key.
pub fn check_txn(req: &TxnRequest, max_ops: usize) -> Result<()> {
    check_txn_ops(req, max_ops)?;
    check_intervals(&req.success)?;
    check_intervals(&req.failure)?;
    Ok(())
}

fn check_txn_ops(req: &TxnRequest, max_ops: usize) -> Result<()> {
    let opc = req
        .compare
        .len()
        .max(req.success.len())
        .max(req.failure.len());
    if opc > max_ops {
        return Err(Error::TooManyOps);
    }
    if req.compare.iter().any(|c| c.key.is_empty()) {
        return Err(Error::EmptyKey);
    }
    for op in req.success.iter().chain(&req.failure) {
        match op.request.as_ref() {
            Some(Request::RequestRange(r)) => check_range(r)?,
            Some(Request::RequestPut(p)) => check_put(p)?,
            Some(Request::RequestDeleteRange(d)) => check_delete(d)?,
            Some(Request::RequestTxn(t)) => check_txn_ops(t, max_ops - opc)?,
            // etcd answers an empty op with "key not found".
            None => return Err(Error::KeyNotFound),
        }
    }
    Ok(())
}

/// A deleted interval for the duplicate check: `[start, end)`, or one key
/// when `end` is empty.
///
/// As in etcd, `end` is compared as raw bytes, so a delete with range_end
/// `"\0"` covers no key in this check (etcd's interval tree treats it the same
/// way). Matching etcd here means a txn etcd accepts, cairn accepts.
struct Deleted {
    start: Bytes,
    end: Bytes,
}

impl Deleted {
    fn covers(&self, key: &[u8]) -> bool {
        if self.end.is_empty() {
            key == &self.start[..]
        } else {
            &self.start[..] <= key && key < &self.end[..]
        }
    }
}

fn deleted_covers(dels: &[Deleted], key: &[u8]) -> bool {
    dels.iter().any(|d| d.covers(key))
}

/// etcd's `checkIntervals`: the keys put and the ranges deleted by `ops`
/// (nested txns included), or `DuplicateKey` if a key is put twice or put and
/// deleted by ops that can run together. The two branches of a nested txn
/// never both run, so they may put the same key.
fn check_intervals(ops: &[RequestOp]) -> Result<(BTreeSet<Bytes>, Vec<Deleted>)> {
    let mut dels: Vec<Deleted> = ops
        .iter()
        .filter_map(|op| match &op.request {
            Some(Request::RequestDeleteRange(d)) => Some(Deleted {
                start: d.key.clone(),
                end: d.range_end.clone(),
            }),
            _ => None,
        })
        .collect();
    let mut puts = BTreeSet::new();
    for op in ops {
        let Some(Request::RequestTxn(t)) = &op.request else {
            continue;
        };
        let (puts_then, dels_then) = check_intervals(&t.success)?;
        let (puts_else, dels_else) = check_intervals(&t.failure)?;
        for k in &puts_then {
            if puts.contains(k) || deleted_covers(&dels, k) {
                return Err(Error::DuplicateKey);
            }
            puts.insert(k.clone());
        }
        for k in &puts_else {
            if (puts.contains(k) && !puts_then.contains(k)) || deleted_covers(&dels, k) {
                return Err(Error::DuplicateKey);
            }
            puts.insert(k.clone());
        }
        dels.extend(dels_then);
        dels.extend(dels_else);
    }
    for op in ops {
        let Some(Request::RequestPut(p)) = &op.request else {
            continue;
        };
        if puts.contains(&p.key) || deleted_covers(&dels, &p.key) {
            return Err(Error::DuplicateKey);
        }
        puts.insert(p.key.clone());
    }
    Ok((puts, dels))
}

impl Store {
    /// Whether compare `c` holds at revision `rev`: for every key it names, or
    /// for a missing key's zero values. A value compare on no key fails.
    pub(super) fn compare_holds(&self, c: &Compare, rev: i64) -> bool {
        let mut found = false;
        for version in self.live_at(&c.key, &c.range_end, rev) {
            found = true;
            if !compare_kv(c, &version.to_kv(false)) {
                return false;
            }
        }
        found || (c.target != CompareTarget::Value as i32 && compare_kv(c, &KeyValue::default()))
    }
}

/// etcd's `compareKV`. A target_union that does not match the target compares
/// against zero (or the empty value); an unknown result holds, as in etcd.
fn compare_kv(c: &Compare, kv: &KeyValue) -> bool {
    use std::cmp::Ordering;
    let int = |f: fn(&TargetUnion) -> Option<i64>| c.target_union.as_ref().and_then(f).unwrap_or(0);
    let ord: Ordering = match CompareTarget::try_from(c.target) {
        Ok(CompareTarget::Value) => {
            let v: &[u8] = match &c.target_union {
                Some(TargetUnion::Value(v)) => v,
                _ => &[],
            };
            kv.value[..].cmp(v)
        }
        Ok(CompareTarget::Version) => kv.version.cmp(&int(|t| match t {
            TargetUnion::Version(v) => Some(*v),
            _ => None,
        })),
        Ok(CompareTarget::Create) => kv.create_revision.cmp(&int(|t| match t {
            TargetUnion::CreateRevision(v) => Some(*v),
            _ => None,
        })),
        Ok(CompareTarget::Mod) => kv.mod_revision.cmp(&int(|t| match t {
            TargetUnion::ModRevision(v) => Some(*v),
            _ => None,
        })),
        Ok(CompareTarget::Lease) => kv.lease.cmp(&int(|t| match t {
            TargetUnion::Lease(v) => Some(*v),
            _ => None,
        })),
        Err(_) => Ordering::Equal,
    };
    match CompareResult::try_from(c.result) {
        Ok(CompareResult::Equal) => ord == Ordering::Equal,
        Ok(CompareResult::NotEqual) => ord != Ordering::Equal,
        Ok(CompareResult::Greater) => ord == Ordering::Greater,
        Ok(CompareResult::Less) => ord == Ordering::Less,
        Err(_) => true,
    }
}
