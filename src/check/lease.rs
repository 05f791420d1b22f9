//! The lease checker.
//!
//! - **TTL** ([`LeaseCheck::Ttl`]): a keep-alive answers the granted TTL, or
//!   0 when the lease is gone.
//! - **Revoked** ([`LeaseCheck::Outlived`]): once a lease is known gone (a
//!   revoke was acknowledged, or a keep-alive answered TTL 0), no read
//!   invoked afterwards returns a key attached to it, no put invoked
//!   afterwards attaches a key to it, and no watcher sees a
//!   put attached to it above an acknowledged revoke's revision; a watcher
//!   that vouched past an acknowledged revoke's revision saw every key it
//!   knew attached to the lease deleted at or before that revision.
//! - **One revision** ([`LeaseCheck::Atomic`]): all the keys a lease deletes
//!   (revoked or expired) go in one revision, as the watchers see it. A
//!   delete event is the lease's when the key's previous version (its
//!   prev_kv, or the watcher's previous event on the key) was attached to it.
//! - **Not early** ([`LeaseCheck::Early`]): a lease that the client did not
//!   revoke disappears no earlier than its TTL after the last time the
//!   leader could have restarted its countdown. Every acknowledged grant or
//!   keep-alive (TTL > 0) was applied before the lease went, so the
//!   countdown ran from no earlier than the latest of their invoke times.
//!   The leader counts the TTL in ticks, and a member's tick may run fast
//!   (clock skew, [`Extra::min_tick_factor`]), and the first tick may come
//!   up to one tick interval early ([`Extra::max_tick_nanos`]). The lease is
//!   observed gone by a watch response with the deletion of a key attached
//!   to it, a keep-alive answering TTL 0, a revoke answering "not found", or
//!   a read of a key whose last write (acknowledged, none unknown since) was
//!   attached to it and which is now absent. An observation counts only if
//!   no revoke of the lease was invoked before it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::check::history::{EventKind, Extra, LeaseCall, LeaseRet};

/// Which lease rule a [`LeaseViolation`] breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LeaseCheck {
    /// A keep-alive answered a TTL other than the granted one (or 0).
    Ttl,
    Outlived,
    Atomic,
    Early,
}

impl fmt::Display for LeaseCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LeaseCheck::Ttl => "a keep-alive answered a TTL other than the granted one",
            LeaseCheck::Outlived => "a key outlived its lease",
            LeaseCheck::Atomic => "a lease's keys deleted at different revisions",
            LeaseCheck::Early => "a lease expired before its TTL",
        })
    }
}

/// A broken lease rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseViolation {
    pub check: LeaseCheck,
    pub lease: i64,
    pub message: String,
}

impl fmt::Display for LeaseViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (lease {}): {}", self.check, self.lease, self.message)
    }
}

impl std::error::Error for LeaseViolation {}

/// What a passing lease check looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LeaseStats {
    pub leases: usize,
    pub ops: usize,
    /// Times a lease was observed gone without a revoke.
    pub expiries_observed: usize,
}

#[derive(Debug, Default)]
struct Lease {
    ttl: i64,
    /// The latest invoke time of an acknowledged grant or keep-alive
    /// (TTL > 0), and which op it was.
    renewed: Option<(u64, usize)>,
    /// The earliest invoke time of any revoke of it.
    revoke_invoked: Option<u64>,
    /// The earliest time it was known gone, and how.
    gone: Option<(u64, String)>,
    /// Revisions of acknowledged revokes.
    revoked_at: Vec<(i64, usize)>,
}

fn secs(ns: u64) -> String {
    format!("{:.3} s", ns as f64 / 1e9)
}

/// Checks the run's leases.
pub fn check_leases(extra: &Extra) -> Result<LeaseStats, LeaseViolation> {
    let mut leases: BTreeMap<i64, Lease> = BTreeMap::new();
    // Observations of a lease gone: (time, how).
    let mut observed: BTreeMap<i64, Vec<(u64, String)>> = BTreeMap::new();
    for (i, op) in extra.leases.iter().enumerate() {
        let done = op.complete;
        match (&op.call, &op.ret) {
            (LeaseCall::Grant { .. }, LeaseRet::Granted { id, ttl, .. }) => {
                let l = leases.entry(*id).or_default();
                l.ttl = *ttl;
                l.renewed = Some((op.invoke, i));
            }
            (LeaseCall::Revoke { id }, ret) => {
                let l = leases.entry(*id).or_default();
                l.revoke_invoked = Some(l.revoke_invoked.map_or(op.invoke, |t| t.min(op.invoke)));
                if let (LeaseRet::Revoked { revision }, Some(t)) = (ret, done) {
                    l.revoked_at.push((*revision, i));
                    if l.gone.as_ref().is_none_or(|g| t < g.0) {
                        l.gone = Some((t, format!("revoke op #{i} acknowledged")));
                    }
                }
                if let (LeaseRet::Refused(why), Some(t)) = (ret, done) {
                    if why.contains("not found") {
                        observed
                            .entry(*id)
                            .or_default()
                            .push((t, format!("revoke op #{i} answered {why:?}")));
                    }
                }
            }
            (LeaseCall::KeepAlive { id }, LeaseRet::Alive { ttl }) => {
                let Some(t) = done else { continue };
                let l = leases.entry(*id).or_default();
                if *ttl > 0 && l.ttl > 0 && *ttl != l.ttl {
                    return Err(LeaseViolation {
                        check: LeaseCheck::Ttl,
                        lease: *id,
                        message: format!(
                            "keep-alive op #{i} answered TTL {ttl}, but the lease was granted {} s",
                            l.ttl
                        ),
                    });
                }
                if *ttl > 0 {
                    if l.renewed.is_none_or(|(r, _)| op.invoke > r) {
                        l.renewed = Some((op.invoke, i));
                    }
                } else {
                    if l.gone.as_ref().is_none_or(|g| t < g.0) {
                        l.gone = Some((t, format!("keep-alive op #{i} answered TTL 0")));
                    }
                    observed
                        .entry(*id)
                        .or_default()
                        .push((t, format!("keep-alive op #{i} answered TTL 0")));
                }
            }
            _ => {}
        }
    }
    // Reads: no key attached to a lease known gone before the read began;
    // puts: none attaches a key to such a lease.
    for (i, op) in extra.leases.iter().enumerate() {
        if let (LeaseCall::Put { key, lease, .. }, LeaseRet::Put { revision }) = (&op.call, &op.ret)
        {
            if let Some((t, how)) = leases.get(lease).and_then(|l| l.gone.as_ref()) {
                if *t < op.invoke {
                    return Err(LeaseViolation {
                        check: LeaseCheck::Outlived,
                        lease: *lease,
                        message: format!(
                            "put op #{i} invoked at {} attached {key:?} to the lease at revision {revision}, but the lease was gone at {} ({how})",
                            secs(op.invoke), secs(*t)
                        ),
                    });
                }
            }
        }
        if let LeaseRet::Get {
            kv: Some((kv, lease)),
            ..
        } = &op.ret
        {
            if let Some((t, how)) = leases.get(lease).and_then(|l| l.gone.as_ref()) {
                if *t < op.invoke {
                    return Err(LeaseViolation {
                        check: LeaseCheck::Outlived,
                        lease: *lease,
                        message: format!(
                            "read op #{i} invoked at {} returned {:?} (mod {}) attached to the lease, which was gone at {} ({how})",
                            secs(op.invoke), kv.value, kv.mod_revision, secs(*t)
                        ),
                    });
                }
            }
        }
    }
    // Reads that find a key absent whose last write was attached to a lease.
    // key -> (lease, completed) of its last acknowledged put; keys with a put
    // of unknown outcome (which may apply at any later time) are left out.
    let mut last_write: BTreeMap<&str, (i64, u64)> = BTreeMap::new();
    let mut unknown: BTreeSet<&str> = BTreeSet::new();
    for (i, op) in extra.leases.iter().enumerate() {
        match (&op.call, &op.ret) {
            (LeaseCall::Put { key, lease, .. }, LeaseRet::Put { .. }) => {
                last_write.insert(key, (*lease, op.complete.unwrap_or(u64::MAX)));
            }
            (LeaseCall::Put { .. }, LeaseRet::Refused(_)) => {}
            (LeaseCall::Put { key, .. }, _) => {
                unknown.insert(key);
            }
            (LeaseCall::Get { key }, LeaseRet::Get { kv: None, .. }) => {
                if unknown.contains(key.as_str()) {
                    continue;
                }
                if let (Some((lease, acked)), Some(t)) = (last_write.get(key.as_str()), op.complete)
                {
                    if *lease != 0 && *acked < op.invoke {
                        observed
                            .entry(*lease)
                            .or_default()
                            .push((t, format!("read op #{i} found {key:?} absent")));
                    }
                }
            }
            _ => {}
        }
    }
    // Watchers: deletions attributed to leases; puts above a revoke.
    let mut deleted_at: BTreeMap<i64, BTreeMap<i64, String>> = BTreeMap::new();
    for (wi, w) in extra.watches.iter().enumerate() {
        let mut state: BTreeMap<&str, i64> = BTreeMap::new(); // key -> lease of its live version
        for (j, r) in w.responses.iter().enumerate() {
            for e in &r.events {
                match e.kind {
                    EventKind::Put => {
                        for (rev, op) in leases.get(&e.lease).map_or(&[][..], |l| &l.revoked_at[..])
                        {
                            if e.lease != 0 && e.mod_revision > *rev {
                                return Err(LeaseViolation {
                                    check: LeaseCheck::Outlived,
                                    lease: e.lease,
                                    message: format!(
                                        "watcher #{wi} response {j}: put {} {:?} at revision {} attached to the lease, which revoke op #{op} removed at revision {rev}",
                                        e.key, e.value, e.mod_revision
                                    ),
                                });
                            }
                        }
                        state.insert(&e.key, e.lease);
                    }
                    EventKind::Delete => {
                        let lease = e
                            .prev
                            .as_ref()
                            .map(|p| p.lease)
                            .or_else(|| state.get(e.key.as_str()).copied())
                            .unwrap_or(0);
                        state.remove(e.key.as_str());
                        if lease == 0 {
                            continue;
                        }
                        let how = format!(
                            "watcher #{wi} response {j} at {}: delete {} at {}",
                            secs(r.at),
                            e.key,
                            e.mod_revision
                        );
                        observed.entry(lease).or_default().push((r.at, how.clone()));
                        let revs = deleted_at.entry(lease).or_default();
                        revs.entry(e.mod_revision).or_insert(how);
                        if revs.len() > 1 {
                            let all: Vec<String> = revs.values().cloned().collect();
                            return Err(LeaseViolation {
                                check: LeaseCheck::Atomic,
                                lease,
                                message: format!(
                                    "its keys were deleted at different revisions: {}",
                                    all.join("; ")
                                ),
                            });
                        }
                    }
                }
            }
        }
        // Keys still attached to a lease at an acknowledged revoke's revision.
        let vouched = w.vouched();
        for (id, l) in &leases {
            for (rev, op) in &l.revoked_at {
                if *rev > vouched {
                    continue;
                }
                let mut attached: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
                for r in &w.responses {
                    for e in r.events.iter().filter(|e| e.mod_revision <= *rev) {
                        match e.kind {
                            EventKind::Put => {
                                attached.insert(&e.key, (e.lease, e.mod_revision));
                            }
                            EventKind::Delete => {
                                attached.remove(e.key.as_str());
                            }
                        }
                    }
                }
                if let Some((key, (_, put))) = attached.iter().find(|(_, (lease, _))| lease == id) {
                    if w.no_delete {
                        continue;
                    }
                    return Err(LeaseViolation {
                        check: LeaseCheck::Outlived,
                        lease: *id,
                        message: format!(
                            "watcher #{wi} vouched up to {vouched}, past revoke op #{op}'s revision {rev}, but {key:?} \
                             (put at {put}, attached to the lease) was never deleted"
                        ),
                    });
                }
            }
        }
    }
    // Not early.
    let factor = if extra.min_tick_factor > 0.0 {
        extra.min_tick_factor
    } else {
        1.0
    };
    let mut expiries = 0;
    for (id, obs) in &observed {
        let Some(l) = leases.get(id) else { continue };
        let Some((renewed, by)) = l.renewed else {
            continue;
        };
        let earliest = renewed + (l.ttl as f64 * 1e9 * factor) as u64;
        let earliest = earliest.saturating_sub(extra.max_tick_nanos);
        for (t, how) in obs {
            if l.revoke_invoked.is_some_and(|r| r <= *t) {
                continue;
            }
            expiries += 1;
            if *t < earliest {
                return Err(LeaseViolation {
                    check: LeaseCheck::Early,
                    lease: *id,
                    message: format!(
                        "gone by {} ({how}), but op #{by} (grant or keep-alive, invoked at {}) renewed its TTL of {} s, \
                         so it could not expire before {} (TTL x {factor:.3} tick factor, less one tick)",
                        secs(*t),
                        secs(renewed),
                        l.ttl,
                        secs(earliest)
                    ),
                });
            }
        }
    }
    Ok(LeaseStats {
        leases: leases.len(),
        ops: extra.leases.len(),
        expiries_observed: expiries,
    })
}
