//! Alarms and the space quota, as etcd's `alarm` package and its quota,
//! capped and corrupt appliers.
//!
//! # What this module owns
//!
//! - [`Alarms`]: the active alarms, one per (member, kind). Replicated state:
//!   changed only by an applied `AlarmRequest`, kept in snapshots (the
//!   `Alarms` section) and rebuilt from the WAL by replay, so every member
//!   holds the same set at the same index.
//! - The quota: what a request costs ([`cost`], etcd's formula) and whether
//!   it fits under `--quota-backend-bytes` given this member's database size.
//! - The gate every applied request passes ([`Node::apply_guarded`]):
//!   - while CORRUPT is active, writes (put, delete, txn, compaction, lease
//!     grant and revoke) fail with `etcdserver: corrupt cluster`;
//!   - while NOSPACE is active, puts, txns that put and lease grants fail with
//!     `etcdserver: mvcc: database space exceeded`, changing nothing; reads,
//!     deletes, compaction and alarm requests go on;
//!   - a put, txn or lease grant that did not fit is applied all the same (as
//!     etcd's quota applier does: replicas must not diverge on a member-local
//!     size) but answered with the NOSPACE error, and the member raises the
//!     alarm through raft.
//!
//! # Database size
//!
//! etcd's quota compares bbolt's file size, which compaction does not shrink
//! (it frees pages inside the file) and defragmentation does. cairn's
//! counterpart is [`Node::db_size`]: the most bytes the store has held in use
//! ([`Store::bytes_in_use`](crate::mvcc::Store::bytes_in_use)) since the
//! member started or last defragmented. Memory a compaction frees inside the
//! store's structures is not handed back until a defragment rebuilds them,
//! so, as in etcd, the recovery from NOSPACE is compact, defragment, disarm.
//! The size is this member's own: which members raise NOSPACE may differ, but
//! what every member applies does not.
//!
//! # Invariants
//!
//! - An alarm request changes the set only by adding or removing the one
//!   (member, kind) it names; `NONE` is never stored.
//! - `db_size >= bytes_in_use` after every applied entry.

use super::{Node, NodeError, Response};
use crate::proto::cairnpb::{raft_request::Request, AlarmList, RaftRequest};
use crate::proto::etcdserverpb::{
    alarm_request::AlarmAction, request_op, AlarmMember, AlarmRequest, AlarmResponse, AlarmType,
    PutRequest, TxnRequest,
};
use prost::Message as _;
use std::collections::BTreeSet;

/// etcd's default quota when `--quota-backend-bytes` is 0: 2 GiB.
pub const DEFAULT_QUOTA_BYTES: u64 = 2 * 1024 * 1024 * 1024;

/// etcd's estimate of a key's metadata, added to each put's cost.
const KV_OVERHEAD: u64 = 256;

/// etcd's estimate of a lease's cost.
const LEASE_OVERHEAD: u64 = 64;

/// The quota in force for a configured `--quota-backend-bytes`: etcd's
/// default for 0. (etcd turns the quota off for a negative value; the
/// driver passes `u64::MAX` for that.)
pub fn effective_quota(configured: u64) -> u64 {
    if configured == 0 {
        DEFAULT_QUOTA_BYTES
    } else {
        configured
    }
}

/// What a request costs against the quota, as etcd's `BackendQuota.Cost`:
/// a put its key and value plus 256, a txn the costlier of its branches
/// (nested txns included), a lease grant 64; anything else 0 (it always fits).
pub fn cost(request: &Request) -> u64 {
    match request {
        Request::Put(p) => cost_put(p),
        Request::Txn(t) => cost_txn(t),
        Request::LeaseGrant(_) => LEASE_OVERHEAD,
        _ => 0,
    }
}

fn cost_put(p: &PutRequest) -> u64 {
    KV_OVERHEAD + p.key.len() as u64 + p.value.len() as u64
}

fn cost_txn(t: &TxnRequest) -> u64 {
    let branch = |ops: &[crate::proto::etcdserverpb::RequestOp]| -> u64 {
        ops.iter()
            .map(|op| match &op.request {
                Some(request_op::Request::RequestPut(p)) => cost_put(p),
                Some(request_op::Request::RequestTxn(t)) => cost_txn(t),
                _ => 0,
            })
            .sum()
    };
    branch(&t.success).max(branch(&t.failure))
}

/// The active alarms. See the module docs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Alarms {
    /// (kind, member): listed in this order, so the output is deterministic.
    active: BTreeSet<(i32, u64)>,
}

impl Alarms {
    /// Alarms decoded from a snapshot's `Alarms` section; none if absent.
    pub fn from_section(bytes: Option<bytes::Bytes>) -> Self {
        let list = bytes
            .and_then(|b| AlarmList::decode(b).ok())
            .unwrap_or_default();
        Self {
            active: (list.alarms.into_iter())
                .filter(|a| a.alarm != AlarmType::None as i32)
                .map(|a| (a.alarm, a.member_id))
                .collect(),
        }
    }

    /// The snapshot section.
    pub fn encode(&self) -> Vec<u8> {
        AlarmList {
            alarms: self.list(AlarmType::None),
        }
        .encode_to_vec()
    }

    /// The active alarms of `kind` (`NONE`: all of them).
    pub fn list(&self, kind: AlarmType) -> Vec<AlarmMember> {
        (self.active.iter())
            .filter(|(k, _)| kind == AlarmType::None || *k == kind as i32)
            .map(|(k, m)| AlarmMember {
                member_id: *m,
                alarm: *k,
            })
            .collect()
    }

    /// Whether any member has raised `kind`.
    pub fn is_active(&self, kind: AlarmType) -> bool {
        self.active.iter().any(|(k, _)| *k == kind as i32)
    }

    /// Applies an alarm request, as etcd's applier does: GET lists, ACTIVATE
    /// adds (and answers with) the alarm, DEACTIVATE removes (and answers
    /// with) it if it was there.
    pub fn apply(&mut self, req: &AlarmRequest) -> AlarmResponse {
        let kind = AlarmType::try_from(req.alarm).unwrap_or(AlarmType::None);
        let member = AlarmMember {
            member_id: req.member_id,
            alarm: req.alarm,
        };
        let alarms = match AlarmAction::try_from(req.action) {
            Ok(AlarmAction::Get) => self.list(kind),
            Ok(AlarmAction::Activate) if kind != AlarmType::None => {
                self.active.insert((req.alarm, req.member_id));
                vec![member]
            }
            Ok(AlarmAction::Deactivate) if self.active.remove(&(req.alarm, req.member_id)) => {
                vec![member]
            }
            _ => Vec::new(),
        };
        AlarmResponse {
            header: None,
            alarms,
        }
    }
}

/// How etcd's Status lists an alarm in `errors` (gogoproto's text form of
/// `AlarmMember`, trailing space included).
pub fn alarm_error_string(a: &AlarmMember) -> String {
    let name = AlarmType::try_from(a.alarm).map_or("NONE", |t| t.as_str_name());
    format!("memberID:{} alarm:{} ", a.member_id, name)
}

impl Node {
    /// This member's database size: the most bytes the store has held in
    /// use since the member started or last defragmented (module docs).
    pub fn db_size(&self) -> u64 {
        self.db_size
    }

    /// The active alarms.
    pub fn alarms(&self) -> Vec<AlarmMember> {
        self.alarms.list(AlarmType::None)
    }

    /// Whether `cost` more bytes fit under the quota, as etcd's
    /// `BackendQuota.Available`: a request that costs nothing always fits.
    pub(super) fn fits(&self, cost: u64) -> bool {
        cost == 0 || self.db_size.saturating_add(cost) < self.quota_bytes
    }

    /// Proposes NOSPACE for this member, unless it is active or was proposed
    /// less than an election timeout ago (a proposal may be lost).
    pub(super) fn raise_nospace(&mut self) {
        let active =
            (self.alarms.list(AlarmType::Nospace).iter()).any(|a| a.member_id == self.cfg.id);
        let recent = self
            .nospace_proposed_at
            .is_some_and(|t| self.ticks.saturating_sub(t) < self.cfg.election_tick as u64);
        if active || recent {
            return;
        }
        tracing::warn!(
            db_size = self.db_size,
            quota = self.quota_bytes,
            "database space exceeded; raising the NOSPACE alarm"
        );
        self.nospace_proposed_at = Some(self.ticks);
        let data = RaftRequest {
            id: 0,
            request: Some(Request::Alarm(AlarmRequest {
                action: AlarmAction::Activate as i32,
                member_id: self.cfg.id,
                alarm: AlarmType::Nospace as i32,
            })),
        }
        .encode_to_vec();
        let _ = self.raw.propose(Vec::new(), data);
    }

    /// Applies one request through the alarm and quota gate (module docs).
    pub(super) fn apply_guarded(
        &mut self,
        index: u64,
        request: Option<Request>,
    ) -> Result<Response, NodeError> {
        let Some(request) = request else {
            return self.apply_request(index, None);
        };
        if let Request::Alarm(a) = &request {
            let mut resp = self.alarms.apply(a);
            let revision = self.kv.current_revision();
            self.fill_header(&mut resp.header, revision);
            return Ok(Response::Alarm(resp));
        }
        let cost = cost(&request);
        let writes = !matches!(
            request,
            Request::Attributes(_) | Request::LeaseRenew(_) | Request::LeaseExpire(_)
        );
        if writes && self.alarms.is_active(AlarmType::Corrupt) {
            return Err(NodeError::Corrupt);
        }
        if cost > 0 && self.alarms.is_active(AlarmType::Nospace) {
            return Err(NodeError::NoSpace);
        }
        let fits = self.fits(cost);
        let result = self.apply_request(index, Some(request));
        self.db_size = self.db_size.max(self.kv.bytes_in_use());
        match result {
            Ok(_) if !fits => {
                self.raise_nospace();
                Err(NodeError::NoSpace)
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::etcdserverpb::{RequestOp, TxnRequest};

    fn req(action: AlarmAction, member: u64, kind: AlarmType) -> AlarmRequest {
        AlarmRequest {
            action: action as i32,
            member_id: member,
            alarm: kind as i32,
        }
    }

    #[test]
    fn alarms_apply_as_etcd_and_survive_encoding() {
        let mut a = Alarms::default();
        assert!(a
            .apply(&req(AlarmAction::Activate, 1, AlarmType::None))
            .alarms
            .is_empty());
        assert_eq!(
            a.apply(&req(AlarmAction::Activate, 2, AlarmType::Nospace))
                .alarms
                .len(),
            1
        );
        assert_eq!(
            a.apply(&req(AlarmAction::Activate, 1, AlarmType::Corrupt))
                .alarms
                .len(),
            1
        );
        // Activating again answers with the alarm and changes nothing.
        assert_eq!(
            a.apply(&req(AlarmAction::Activate, 2, AlarmType::Nospace))
                .alarms
                .len(),
            1
        );
        assert_eq!(a.list(AlarmType::None).len(), 2);
        assert_eq!(
            a.apply(&req(AlarmAction::Get, 0, AlarmType::Nospace))
                .alarms[0]
                .member_id,
            2
        );
        let decoded = Alarms::from_section(Some(a.encode().into()));
        assert_eq!(decoded, a);
        assert!(a
            .apply(&req(AlarmAction::Deactivate, 1, AlarmType::Nospace))
            .alarms
            .is_empty());
        assert_eq!(
            a.apply(&req(AlarmAction::Deactivate, 2, AlarmType::Nospace))
                .alarms
                .len(),
            1
        );
        assert!(!a.is_active(AlarmType::Nospace));
        assert!(a.is_active(AlarmType::Corrupt));
        assert_eq!(
            alarm_error_string(&a.list(AlarmType::None)[0]),
            "memberID:1 alarm:CORRUPT "
        );
        assert_eq!(Alarms::from_section(None), Alarms::default());
    }

    #[test]
    fn costs_are_etcds() {
        let put = |k: &str, v: &str| PutRequest {
            key: k.as_bytes().to_vec().into(),
            value: v.as_bytes().to_vec().into(),
            ..Default::default()
        };
        assert_eq!(cost(&Request::Put(put("ab", "cde"))), 256 + 5);
        let op = |p| RequestOp {
            request: Some(request_op::Request::RequestPut(p)),
        };
        let txn = TxnRequest {
            success: vec![op(put("a", "b"))],
            failure: vec![op(put("a", "b")), op(put("c", "d"))],
            ..Default::default()
        };
        assert_eq!(cost(&Request::Txn(txn)), 2 * 258);
        assert_eq!(effective_quota(0), DEFAULT_QUOTA_BYTES);
        assert_eq!(effective_quota(5), 5);
    }
}
