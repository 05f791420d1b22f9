//! The watch checker: etcd's watch guarantees, judged over every watcher a
//! run created.
//!
//! The *known events* of a run are every event any watcher received plus
//! every write acknowledged with its revision (puts, deletes that deleted a
//! key, successful compare-and-swaps, puts with a lease). Values are unique
//! within a run, so an event maps back to the write that produced it. On
//! that table, for each watcher:
//!
//! - **Agreement** ([`WatchCheck::Agreement`]): events at the same (key,
//!   mod_revision) agree everywhere in kind, value, version, create_revision
//!   and lease, and with the acknowledged write; each event is well formed.
//! - **Range** ([`WatchCheck::Range`]): every event is in the watcher's key
//!   range, passes its filters, and is at or after its start revision.
//! - **Ordered** ([`WatchCheck::Order`]): events inside a response are sorted
//!   by revision; across responses revisions strictly increase, except that
//!   a fragment's revision continues in the next response.
//! - **Unique** ([`WatchCheck::Unique`]): no (key, mod_revision) twice.
//! - **Atomic** ([`WatchCheck::Atomic`]): the events of one revision arrive
//!   in one response (or one run of fragments).
//! - **Reliable** ([`WatchCheck::Reliable`]): between its start revision and
//!   the highest revision it vouched for (its last complete event revision,
//!   or a progress response's header revision), the watcher received every
//!   known event in its range that passes its filters. On a watcher that
//!   resumes another one this is reported as [`WatchCheck::Resumable`], and
//!   a gap below a progress response's revision as [`WatchCheck::Bookmark`].
//! - **Bookmarkable** ([`WatchCheck::Bookmark`]): after a progress response
//!   with header revision H, no event at or below H arrives.
//! - **prev_kv** ([`WatchCheck::PrevKv`]): only sent when asked for; a put
//!   of version 1 has none; otherwise it is the key's previous version: a
//!   known put with the same value and metadata, with no known event on the
//!   key between it and the event.
//! - **Compaction** ([`WatchCheck::Compaction`]): a watcher canceled for
//!   compaction at C still needed a revision at or below C.

use std::collections::BTreeMap;
use std::fmt;

use crate::check::history::{
    Call, Event, EventKind, Extra, History, LeaseCall, LeaseRet, MultiCall, MultiRet, Ret,
    WatchEnd, WatchRecord,
};

/// Which watch guarantee a [`WatchViolation`] breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WatchCheck {
    Agreement,
    Range,
    Order,
    Unique,
    Atomic,
    Reliable,
    Resumable,
    Bookmark,
    PrevKv,
    Compaction,
}

impl fmt::Display for WatchCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WatchCheck::Agreement => "events disagree",
            WatchCheck::Range => "event outside the watcher's range, filters or start",
            WatchCheck::Order => "events out of order",
            WatchCheck::Unique => "event delivered twice",
            WatchCheck::Atomic => "a revision split over responses",
            WatchCheck::Reliable => "event missing (reliable)",
            WatchCheck::Resumable => "resumed watcher is not the exact continuation",
            WatchCheck::Bookmark => "progress response broken (bookmarkable)",
            WatchCheck::PrevKv => "wrong prev_kv",
            WatchCheck::Compaction => "canceled for compaction it did not need",
        })
    }
}

/// A broken watch guarantee.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchViolation {
    pub check: WatchCheck,
    /// The watcher's index in the run's watch records.
    pub watcher: Option<usize>,
    pub message: String,
}

impl fmt::Display for WatchViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.watcher {
            Some(w) => write!(f, "{} on watcher #{w}: {}", self.check, self.message),
            None => write!(f, "{}: {}", self.check, self.message),
        }
    }
}

impl std::error::Error for WatchViolation {}

/// What a passing watch check looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WatchStats {
    pub watchers: usize,
    pub events: usize,
    /// Progress responses received.
    pub progress: usize,
    /// Responses that were fragments of a revision.
    pub fragments: usize,
    /// The most events in one response.
    pub max_events: usize,
    /// Watchers that resumed another one.
    pub resumed: usize,
    /// Watchers canceled for compaction.
    pub compacted: usize,
    /// Watchers that started in the past (start_revision > 0).
    pub from_past: usize,
    /// Known (key, revision) events in all.
    pub known: usize,
    /// (watcher, event) pairs the reliability check required.
    pub required: usize,
}

/// What is known of the event at one (revision, key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Known {
    pub kind: EventKind,
    pub value: Option<String>,
    pub version: Option<i64>,
    pub create_revision: Option<i64>,
    pub lease: Option<i64>,
    /// Where it was first learned, for messages.
    pub source: String,
}

/// The known events of a run, by (revision, key).
pub(crate) type KnownEvents = BTreeMap<(i64, String), Known>;

fn fmt_event(e: &Event) -> String {
    match e.kind {
        EventKind::Put => format!(
            "put {} {:?} (mod {}, create {}, ver {}, lease {})",
            e.key, e.value, e.mod_revision, e.create_revision, e.version, e.lease
        ),
        EventKind::Delete => format!("delete {} at {}", e.key, e.mod_revision),
    }
}

fn describe(i: usize, w: &WatchRecord) -> String {
    let range = if w.range_end.is_empty() {
        format!("{:?}", w.key)
    } else {
        format!("[{:?}, {:?})", w.key, w.range_end)
    };
    format!(
        "client {} on n{}, {range}, start {}{}{}{}{}{}",
        w.client,
        w.member,
        w.start_revision,
        w.created.map_or(String::new(), |(t, r)| format!(
            ", created at {t} ns rev {r}"
        )),
        if w.prev_kv { ", prev_kv" } else { "" },
        if w.no_put { ", NOPUT" } else { "" },
        if w.no_delete { ", NODELETE" } else { "" },
        w.resumes
            .map_or(String::new(), |p| format!(", resumes #{p}")),
    ) + &format!(" (#{i})")
}

fn violation(
    check: WatchCheck,
    watcher: Option<(usize, &WatchRecord)>,
    msg: String,
) -> WatchViolation {
    WatchViolation {
        check,
        watcher: watcher.map(|(i, _)| i),
        message: match watcher {
            Some((i, w)) => format!("{msg} [watcher {}]", describe(i, w)),
            None => msg,
        },
    }
}

/// Merges `new` into the table; a contradiction is an agreement violation.
fn learn(known: &mut KnownEvents, revision: i64, key: &str, new: Known) -> Result<(), String> {
    match known.get_mut(&(revision, key.to_owned())) {
        None => {
            known.insert((revision, key.to_owned()), new);
            Ok(())
        }
        Some(old) => {
            let clash = |what: &str, a: &dyn fmt::Debug, b: &dyn fmt::Debug| {
                Err(format!(
                    "at revision {revision} key {key:?}: {} says {what} {a:?}, {} says {b:?}",
                    old.source, new.source
                ))
            };
            if old.kind != new.kind {
                return clash("kind", &old.kind, &new.kind);
            }
            fn merge<T: PartialEq + Clone + fmt::Debug>(
                a: &mut Option<T>,
                b: &Option<T>,
            ) -> Result<(), (T, T)> {
                match (a.as_ref(), b) {
                    (Some(x), Some(y)) if x != y => Err((x.clone(), y.clone())),
                    (None, Some(y)) => {
                        *a = Some(y.clone());
                        Ok(())
                    }
                    _ => Ok(()),
                }
            }
            let mut old2 = old.clone();
            if let Err((a, b)) = merge(&mut old2.value, &new.value) {
                return clash("value", &a, &b);
            }
            if let Err((a, b)) = merge(&mut old2.version, &new.version) {
                return clash("version", &a, &b);
            }
            if let Err((a, b)) = merge(&mut old2.create_revision, &new.create_revision) {
                return clash("create_revision", &a, &b);
            }
            if let Err((a, b)) = merge(&mut old2.lease, &new.lease) {
                return clash("lease", &a, &b);
            }
            *old = old2;
            Ok(())
        }
    }
}

/// Acknowledged writes with their revisions.
fn acked_writes(history: &History, extra: &Extra) -> Vec<(i64, String, Known)> {
    let mut out = Vec::new();
    for (i, op) in history.iter().enumerate() {
        let key = op.call.key().to_owned();
        let put = |value: &str, source: String| Known {
            kind: EventKind::Put,
            value: Some(value.to_owned()),
            version: None,
            create_revision: None,
            lease: Some(0),
            source,
        };
        match (&op.call, &op.ret) {
            (Call::Put { value, .. }, Ret::Put { revision }) => {
                out.push((*revision, key, put(value, format!("acked put op #{i}"))))
            }
            (
                Call::Cas { value, .. },
                Ret::Cas {
                    revision,
                    succeeded: true,
                    ..
                },
            ) => out.push((*revision, key, put(value, format!("acked cas op #{i}")))),
            (Call::Delete { .. }, Ret::Delete { revision, deleted }) if *deleted > 0 => out.push((
                *revision,
                key,
                Known {
                    kind: EventKind::Delete,
                    value: None,
                    version: None,
                    create_revision: None,
                    lease: None,
                    source: format!("acked delete op #{i}"),
                },
            )),
            _ => {}
        }
    }
    for (i, op) in extra.multi.iter().enumerate() {
        if let (
            MultiCall::Txn { keys, value },
            MultiRet::Txn {
                revision,
                succeeded: true,
                ..
            },
        ) = (&op.call, &op.ret)
        {
            for (key, _) in keys {
                let known = Known {
                    kind: EventKind::Put,
                    value: Some(value.clone()),
                    version: None,
                    create_revision: None,
                    lease: Some(0),
                    source: format!("acked multi-key txn #{i}"),
                };
                out.push((*revision, key.clone(), known));
            }
        }
    }
    for (i, op) in extra.leases.iter().enumerate() {
        if let (LeaseCall::Put { key, value, lease }, LeaseRet::Put { revision }) =
            (&op.call, &op.ret)
        {
            out.push((
                *revision,
                key.clone(),
                Known {
                    kind: EventKind::Put,
                    value: Some(value.clone()),
                    version: None,
                    create_revision: None,
                    lease: Some(*lease),
                    source: format!("acked lease put #{i}"),
                },
            ));
        }
    }
    out
}

fn known_of(e: &Event, source: String) -> Known {
    match e.kind {
        EventKind::Put => Known {
            kind: EventKind::Put,
            value: Some(e.value.clone()),
            version: Some(e.version),
            create_revision: Some(e.create_revision),
            lease: Some(e.lease),
            source,
        },
        EventKind::Delete => Known {
            kind: EventKind::Delete,
            value: None,
            version: None,
            create_revision: None,
            lease: None,
            source,
        },
    }
}

/// An event's problems by itself.
fn malformed(e: &Event) -> Option<&'static str> {
    match e.kind {
        EventKind::Put => {
            if e.version < 1 {
                Some("a put with version < 1")
            } else if e.create_revision < 1 || e.create_revision > e.mod_revision {
                Some("a put with create_revision outside 1..=mod_revision")
            } else if (e.version == 1) != (e.create_revision == e.mod_revision) {
                Some("a put whose create_revision equals its mod_revision exactly when version is not 1")
            } else {
                None
            }
        }
        EventKind::Delete => (e.mod_revision < 1 || !e.value.is_empty() || e.version != 0)
            .then_some("a delete that is not a tombstone"),
    }
}

/// Builds the table of known events; checks agreement on the way.
pub(crate) fn known_events(
    history: &History,
    extra: &Extra,
) -> Result<KnownEvents, WatchViolation> {
    let mut known = KnownEvents::new();
    for (revision, key, k) in acked_writes(history, extra) {
        learn(&mut known, revision, &key, k)
            .map_err(|m| violation(WatchCheck::Agreement, None, m))?;
    }
    for (i, w) in extra.watches.iter().enumerate() {
        for (j, r) in w.responses.iter().enumerate() {
            for e in &r.events {
                if let Some(problem) = malformed(e) {
                    return Err(violation(
                        WatchCheck::Agreement,
                        Some((i, w)),
                        format!("response {j} carries {problem}: {}", fmt_event(e)),
                    ));
                }
                let source = format!("watcher #{i} response {j}");
                learn(&mut known, e.mod_revision, &e.key, known_of(e, source))
                    .map_err(|m| violation(WatchCheck::Agreement, Some((i, w)), m))?;
            }
        }
    }
    Ok(known)
}

/// Checks every watcher of the run against the known events.
pub fn check_watches(history: &History, extra: &Extra) -> Result<WatchStats, WatchViolation> {
    let known = known_events(history, extra)?;
    let mut stats = WatchStats {
        watchers: extra.watches.len(),
        known: known.len(),
        ..WatchStats::default()
    };
    for (i, w) in extra.watches.iter().enumerate() {
        stats.events += w.responses.iter().map(|r| r.events.len()).sum::<usize>();
        stats.progress += w.responses.iter().filter(|r| r.is_progress()).count();
        stats.resumed += usize::from(w.resumes.is_some());
        stats.fragments += w.responses.iter().filter(|r| r.fragment).count();
        stats.max_events = w
            .responses
            .iter()
            .map(|r| r.events.len())
            .fold(stats.max_events, usize::max);
        stats.compacted += usize::from(matches!(w.end, WatchEnd::Compacted(_)));
        stats.from_past += usize::from(w.start_revision > 0 && w.resumes.is_none());
        stats.required += check_one(i, w, &known)?;
    }
    Ok(stats)
}

/// Checks one watcher; returns how many known events it was required to
/// have received.
fn check_one(i: usize, w: &WatchRecord, known: &KnownEvents) -> Result<usize, WatchViolation> {
    let here = Some((i, w));
    let Some(first) = w.first_revision() else {
        // Never created: it must have received nothing.
        if w.responses.iter().any(|r| !r.events.is_empty()) {
            return Err(violation(
                WatchCheck::Range,
                here,
                "events on a watcher that was never created".into(),
            ));
        }
        return Ok(0);
    };
    // Range, filters, start; unique; order; bookmarks; atomic.
    let mut seen: BTreeMap<(i64, String), usize> = BTreeMap::new();
    let mut last: Option<i64> = None;
    let mut progress: Option<(usize, i64)> = None;
    let mut revision_responses: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
    for (j, r) in w.responses.iter().enumerate() {
        if r.is_progress() {
            if progress.is_none_or(|(_, h)| r.header_revision > h) {
                progress = Some((j, r.header_revision));
            }
            continue;
        }
        for (n, e) in r.events.iter().enumerate() {
            let at = format!("response {j} event {n} ({})", fmt_event(e));
            if !w.covers(&e.key) || !w.passes(e.kind) || e.mod_revision < first {
                return Err(violation(
                    WatchCheck::Range,
                    here,
                    format!("{at} is outside the range, filtered out, or before revision {first}"),
                ));
            }
            if let Some(&before) = seen.get(&(e.mod_revision, e.key.clone())) {
                return Err(violation(
                    WatchCheck::Unique,
                    here,
                    format!("{at} was already delivered in response {before}"),
                ));
            }
            seen.insert((e.mod_revision, e.key.clone()), j);
            if let Some((_, h)) = progress.filter(|&(_, h)| e.mod_revision <= h) {
                let (pj, _) = progress.expect("set");
                return Err(violation(
                    WatchCheck::Bookmark,
                    here,
                    format!(
                        "{at} arrived after progress response {pj} promised everything up to {h}"
                    ),
                ));
            }
            if n > 0 && e.mod_revision < r.events[n - 1].mod_revision {
                return Err(violation(
                    WatchCheck::Order,
                    here,
                    format!(
                        "{at} follows revision {} in the same response",
                        r.events[n - 1].mod_revision
                    ),
                ));
            }
            if n == 0 {
                if let Some(prev) = last {
                    // Equal revisions across responses are the atomic check's (or a
                    // fragment's) business.
                    let ok = e.mod_revision >= prev;
                    if !ok {
                        return Err(violation(
                            WatchCheck::Order,
                            here,
                            format!("{at} follows revision {prev} of an earlier response"),
                        ));
                    }
                }
            }
            let rs = revision_responses.entry(e.mod_revision).or_default();
            if rs.last() != Some(&j) {
                rs.push(j);
            }
        }
        if let Some(e) = r.events.last() {
            last = Some(e.mod_revision);
        }
    }
    for (revision, rs) in &revision_responses {
        if rs.len() > 1 {
            let fragments = rs.windows(2).all(|p| p[1] == p[0] + 1)
                && rs[..rs.len() - 1].iter().all(|&j| w.responses[j].fragment);
            if !fragments {
                return Err(violation(
                    WatchCheck::Atomic,
                    here,
                    format!("revision {revision} arrived in responses {rs:?}, not as one response or one run of fragments"),
                ));
            }
        }
    }
    // Reliable: every known event in scope up to the vouched revision.
    let vouched = w.vouched();
    let last_event = w
        .responses
        .iter()
        .filter(|r| !r.fragment)
        .flat_map(|r| r.events.last())
        .map(|e| e.mod_revision)
        .max()
        .unwrap_or(first - 1);
    let mut required = 0;
    for ((revision, key), k) in known.range((first, String::new())..) {
        if *revision > vouched {
            break;
        }
        if !w.covers(key) || !w.passes(k.kind) {
            continue;
        }
        required += 1;
        if !seen.contains_key(&(*revision, key.clone())) {
            let check = if *revision > last_event {
                WatchCheck::Bookmark
            } else if w.resumes.is_some() {
                WatchCheck::Resumable
            } else {
                WatchCheck::Reliable
            };
            let got: Vec<i64> = seen
                .keys()
                .map(|(r, _)| *r)
                .filter(|r| (revision - 3..=revision + 3).contains(r))
                .collect();
            return Err(violation(
                check,
                here,
                format!(
                    "{:?} {key:?} at revision {revision} (from {}) was never delivered, though the watcher vouched for \
                     every event from {first} up to {vouched}; it got revisions {got:?} near it",
                    k.kind, k.source
                ),
            ));
        }
    }
    // prev_kv.
    for (j, r) in w.responses.iter().enumerate() {
        for e in &r.events {
            let Some(p) = &e.prev else { continue };
            let at = format!("response {j} {} with prev_kv {p:?}", fmt_event(e));
            let bad = |why: &str| Err(violation(WatchCheck::PrevKv, here, format!("{at}: {why}")));
            if !w.prev_kv {
                return bad("the watcher did not ask for prev_kv");
            }
            if e.kind == EventKind::Put && e.version == 1 {
                return bad("a put of version 1 has no previous version");
            }
            if p.mod_revision >= e.mod_revision || p.version < 1 {
                return bad("not an earlier live version");
            }
            if e.kind == EventKind::Put
                && (p.version != e.version - 1 || p.create_revision != e.create_revision)
            {
                return bad("not the previous version of the same generation");
            }
            if let Some(k) = known.get(&(p.mod_revision, e.key.clone())) {
                let same = k.kind == EventKind::Put
                    && k.value.as_ref().is_none_or(|v| *v == p.value)
                    && k.version.is_none_or(|v| v == p.version)
                    && k.create_revision.is_none_or(|c| c == p.create_revision)
                    && k.lease.is_none_or(|l| l == p.lease);
                if !same {
                    return bad(&format!("the key's event at {} was {k:?}", p.mod_revision));
                }
            }
            let between = known
                .range((p.mod_revision + 1, String::new())..(e.mod_revision, String::new()))
                .find(|((_, key), _)| *key == e.key);
            if let Some(((rev, _), k)) = between {
                return bad(&format!(
                    "the key changed in between, at revision {rev} ({:?}, from {})",
                    k.kind, k.source
                ));
            }
        }
    }
    if let WatchEnd::Compacted(c) = w.end {
        if vouched >= c {
            return Err(violation(
                WatchCheck::Compaction,
                here,
                format!("canceled with compact_revision {c}, but it had everything up to {vouched} and needed nothing at or below {c}"),
            ));
        }
    }
    Ok(required)
}
