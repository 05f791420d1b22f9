//! The watch hub: every watcher of a member, and the responses owed to them.
//! Sans-IO.
//!
//! # What it owns
//!
//! Watch streams (one per gRPC `Watch` call, numbered by the driver) and
//! their watchers. A watcher names a key range, filters, and `next_rev`: the
//! first revision it has not yet been given. Responses wait in the watcher's
//! queue until the driver takes them with [`WatchHub::pop`], which it does
//! only while the client's stream has room: a slow client slows only itself.
//!
//! # Synced and unsynced watchers
//!
//! A *synced* watcher has been given every event below `next_rev`, and
//! `next_rev` is past the store's current revision. Events of newly applied
//! writes ([`WatchHub::on_events`]) go straight into its queue.
//!
//! An *unsynced* watcher is behind: it was created with a start revision in
//! the past, or its queue was full when events came (it holds at most
//! `max_queued_events`, plus one revision), or the store was replaced by a
//! snapshot. [`WatchHub::catch_up`] reads its events from the MVCC history,
//! a batch at a time while its queue has room, until it reaches the current
//! revision and is synced again. Memory per watcher is bounded either way.
//!
//! A watcher whose `next_rev` is below the compaction revision can never be
//! given its events: it gets a response with `compact_revision` and is
//! canceled. One at the compaction revision is served, as etcd serves it,
//! and misses nothing: the store keeps that revision's deletes for it
//! (`crate::mvcc`, "Compaction"), which etcd loses.
//!
//! # Guarantees, and why they hold
//!
//! - Ordered and unique: `next_rev` only grows, and a watcher is given the
//!   events of revisions `>= next_rev` only, in revision order.
//! - Reliable: synced, it takes every event as it is applied; unsynced, the
//!   history read starts at exactly `next_rev`. The driver calls
//!   `on_events` with every applied event before `catch_up`.
//! - Atomic: a revision's events go into one response (split only for a
//!   watcher that asked for fragments, by [`WatchHub::pop`]).
//! - Bookmarkable: a progress response (header revision `H`) goes out only
//!   when every watcher of the stream is synced and has sent everything it
//!   queued, so every event `<= H` went before it. As in etcd 3.4 it has
//!   watch ID -1 and speaks for every watcher of the stream (a stream with
//!   none gets one too); periodic notifications name their watcher.
//!
//! # Streams that require a leader
//!
//! A stream opened with etcd's `hasleader` metadata
//! ([`WatchHub::open_requiring_leader`]; kube-apiserver opens every watch
//! this way, through clientv3's `WithRequireLeader`) must not stay open,
//! silent, on a member that has lost its leader: its client would never
//! learn that it sees no more writes. [`WatchHub::leader_tick`] counts the
//! ticks the member has gone without a leader; once they reach
//! `no_leader_cancel_ticks` (etcd's three election timeouts), every such
//! stream is dropped and handed back to the driver, which ends it with
//! `etcdserver: no leader`. Streams opened without it are left alone, as in
//! etcd.

#[cfg(test)]
mod tests;

use crate::mvcc::Store;
use crate::planted::{self, Bug};
use crate::proto::etcdserverpb::{
    watch_create_request::FilterType, watch_request::RequestUnion, ResponseHeader,
    WatchCreateRequest, WatchRequest, WatchResponse,
};
use crate::proto::mvccpb::{event::EventType, Event};
use bytes::Bytes;
use prost::Message as _;
use std::collections::{BTreeMap, VecDeque};

/// etcd's error for a create whose range is empty.
pub const EMPTY_RANGE: &str = "mvcc: watcher range is empty";
/// etcd's error for a create reusing a watch ID of the stream.
pub const DUPLICATE_ID: &str = "mvcc: duplicate watch ID provided on the WatchStream";

/// Limits and intervals.
#[derive(Debug, Clone)]
pub struct WatchConfig {
    /// Events a watcher's queue holds before it falls back to catching up.
    pub max_queued_events: usize,
    /// Events read from the history per catch-up step of one watcher.
    pub catch_up_batch: usize,
    /// Ticks between progress notifications to watchers that asked for
    /// them (etcd: 10 minutes).
    pub progress_notify_ticks: u64,
    /// A fragmenting watcher's responses stay under this many bytes.
    pub max_response_bytes: usize,
    /// Ticks without a leader after which streams that require one are
    /// ended (etcd: three election timeouts, `maxNoLeaderCnt`).
    pub no_leader_cancel_ticks: u64,
}

impl Default for WatchConfig {
    fn default() -> Self {
        Self {
            max_queued_events: 1024,
            catch_up_batch: 1024,
            progress_notify_ticks: 6000,
            max_response_bytes: 1536 * 1024,
            no_leader_cancel_ticks: 30,
        }
    }
}

#[derive(Debug)]
struct Watcher {
    key: Bytes,
    range_end: Bytes,
    no_put: bool,
    no_delete: bool,
    prev_kv: bool,
    fragment: bool,
    progress_notify: bool,
    /// The first revision not yet given to this watcher.
    next_rev: i64,
    synced: bool,
    queue: VecDeque<WatchResponse>,
    /// Events in `queue`.
    queued_events: usize,
    /// Events were queued since the last periodic progress notification.
    active: bool,
}

impl Watcher {
    fn matches(&self, key: &[u8]) -> bool {
        match &self.range_end[..] {
            [] => key == &self.key[..],
            [0] => key >= &self.key[..],
            end => key >= &self.key[..] && key < end,
        }
    }

    /// The events of `events` this watcher wants, as it wants them.
    fn select(&self, events: &[Event]) -> Vec<Event> {
        events
            .iter()
            .filter(|e| {
                let key = e.kv.as_ref().map_or(&[][..], |kv| &kv.key[..]);
                let is_put = e.r#type == EventType::Put as i32;
                let wanted = if is_put {
                    !self.no_put
                } else {
                    !self.no_delete
                };
                self.matches(key) && wanted
            })
            .map(|e| {
                let mut e = e.clone();
                if !self.prev_kv {
                    e.prev_kv = None;
                }
                e
            })
            .collect()
    }

    fn push(&mut self, resp: WatchResponse) {
        self.queued_events += resp.events.len();
        self.queue.push_back(resp);
    }
}

#[derive(Debug, Default)]
struct Stream {
    watchers: BTreeMap<i64, Watcher>,
    /// The next ID an auto-numbered watcher gets (etcd 3.4 starts at 0).
    next_id: i64,
    /// Responses to creates (in request order, as clients expect), cancels,
    /// and what a canceled watcher still had queued: sent before events.
    control: VecDeque<WatchResponse>,
    /// Where `pop` looks first next time, so watchers take turns.
    cursor: i64,
    /// A progress request waits for an answer.
    progress_wanted: bool,
    /// Opened with `hasleader`: ended once the member has no leader.
    require_leader: bool,
}

/// See the module docs.
#[derive(Debug, Default)]
pub struct WatchHub {
    cfg: WatchConfig,
    streams: BTreeMap<u64, Stream>,
    /// The store generation the watchers are synced with.
    generation: u64,
    ticks: u64,
    /// The store's current revision as of the last call that saw the store.
    current: i64,
    /// Consecutive ticks the member has had no leader.
    ticks_without_leader: u64,
}

fn header(revision: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader {
        revision,
        ..Default::default()
    })
}

impl WatchHub {
    pub fn new(cfg: WatchConfig) -> Self {
        Self {
            cfg,
            ..Default::default()
        }
    }

    /// Registers a stream the driver numbered `stream`.
    pub fn open(&mut self, stream: u64) {
        self.streams.entry(stream).or_default();
    }

    /// Registers a stream whose client asked for a leader (`hasleader`): it
    /// is ended by [`WatchHub::leader_tick`] when the member has none.
    pub fn open_requiring_leader(&mut self, stream: u64) {
        self.streams.entry(stream).or_default().require_leader = true;
    }

    /// One tick of the member's leadership: `has_leader` says whether it
    /// knows a leader now. After `no_leader_cancel_ticks` ticks in a row
    /// without one, drops every stream opened requiring a leader and returns
    /// their numbers, for the driver to end with `etcdserver: no leader`;
    /// any such stream still open on a later leaderless tick goes too.
    #[must_use]
    pub fn leader_tick(&mut self, has_leader: bool) -> Vec<u64> {
        if has_leader {
            self.ticks_without_leader = 0;
            return Vec::new();
        }
        self.ticks_without_leader += 1;
        if self.ticks_without_leader < self.cfg.no_leader_cancel_ticks.max(1) {
            return Vec::new();
        }
        let ended: Vec<u64> = (self.streams.iter())
            .filter(|(_, st)| st.require_leader)
            .map(|(id, _)| *id)
            .collect();
        for id in &ended {
            self.streams.remove(id);
        }
        ended
    }

    /// Drops a stream and its watchers.
    pub fn close(&mut self, stream: u64) {
        self.streams.remove(&stream);
    }

    /// Number of watchers on every stream.
    pub fn watchers(&self) -> usize {
        self.streams.values().map(|s| s.watchers.len()).sum()
    }

    /// Handles a client's request on `stream`.
    pub fn request(&mut self, stream: u64, req: WatchRequest, store: &Store) {
        let Some(st) = self.streams.get_mut(&stream) else {
            return;
        };
        let current = store.current_revision();
        self.current = current;
        match req.request_union {
            Some(RequestUnion::CreateRequest(c)) => Self::create(st, c, current),
            Some(RequestUnion::CancelRequest(c)) => {
                // As etcd: canceling an unknown ID gets no answer.
                if let Some(w) = st.watchers.remove(&c.watch_id) {
                    st.control.extend(w.queue);
                    st.control.push_back(WatchResponse {
                        header: header(current),
                        watch_id: c.watch_id,
                        canceled: true,
                        ..Default::default()
                    });
                }
            }
            // Answered by `pop` once every watcher of the stream is synced
            // and has sent what it queued.
            Some(RequestUnion::ProgressRequest(_)) => st.progress_wanted = true,
            None => {}
        }
    }

    fn create(st: &mut Stream, mut c: WatchCreateRequest, current: i64) {
        if c.key.is_empty() {
            // etcd: "\0" is the smallest key.
            c.key = Bytes::from_static(&[0]);
        }
        let refused = |reason: &str| WatchResponse {
            header: header(current),
            watch_id: -1,
            created: true,
            canceled: true,
            cancel_reason: reason.to_string(),
            ..Default::default()
        };
        // Empty: the key alone; "\0": every key from it; else [key, end).
        let empty = match &c.range_end[..] {
            [] | [0] => false,
            end => end <= &c.key[..],
        };
        if empty {
            st.control.push_back(refused(EMPTY_RANGE));
            return;
        }
        let id = if c.watch_id == 0 {
            while st.watchers.contains_key(&st.next_id) {
                st.next_id += 1;
            }
            st.next_id += 1;
            st.next_id - 1
        } else if st.watchers.contains_key(&c.watch_id) {
            st.control.push_back(refused(DUPLICATE_ID));
            return;
        } else {
            c.watch_id
        };
        let start = if c.start_revision <= 0 {
            current + 1
        } else {
            c.start_revision
        };
        let has = |f: FilterType| c.filters.contains(&(f as i32));
        let w = Watcher {
            no_put: has(FilterType::Noput),
            no_delete: has(FilterType::Nodelete),
            key: c.key,
            range_end: c.range_end,
            prev_kv: c.prev_kv,
            fragment: c.fragment,
            progress_notify: c.progress_notify,
            next_rev: start,
            synced: start > current,
            queue: VecDeque::new(),
            queued_events: 0,
            active: false,
        };
        // Through the control queue: clients match created responses to
        // their create requests in order.
        st.control.push_back(WatchResponse {
            header: header(current),
            watch_id: id,
            created: true,
            ..Default::default()
        });
        st.watchers.insert(id, w);
    }

    /// Events of newly applied writes, in revision order: every event the
    /// node applied since the last call, before any `catch_up`.
    pub fn on_events(&mut self, events: &[Event], store: &Store) {
        if events.is_empty() {
            return;
        }
        self.current = store.current_revision();
        let max = self.cfg.max_queued_events;
        for chunk in events.chunk_by(|a, b| mod_rev(a) == mod_rev(b)) {
            let rev = mod_rev(&chunk[0]);
            for st in self.streams.values_mut() {
                for (id, w) in &mut st.watchers {
                    if !w.synced || rev < w.next_rev {
                        continue;
                    }
                    if w.queued_events >= max {
                        // Full: read this revision and later ones from the history.
                        w.synced = false;
                        continue;
                    }
                    w.next_rev = rev + 1;
                    let selected = w.select(chunk);
                    if !selected.is_empty() {
                        w.active = true;
                        w.push(WatchResponse {
                            header: header(rev),
                            watch_id: *id,
                            events: selected,
                            ..Default::default()
                        });
                    }
                }
            }
        }
        // Synced watchers whose ranges saw nothing are synced up to here too.
        let next = store.current_revision() + 1;
        for st in self.streams.values_mut() {
            for w in st.watchers.values_mut() {
                if w.synced {
                    w.next_rev = w.next_rev.max(next);
                }
            }
        }
    }

    /// The store was replaced (a snapshot from the leader) if `generation`
    /// changed: every watcher catches up from the new store's history.
    pub fn store_generation(&mut self, generation: u64) {
        if generation != self.generation {
            self.generation = generation;
            for st in self.streams.values_mut() {
                for w in st.watchers.values_mut() {
                    w.synced = false;
                }
            }
        }
    }

    /// Moves unsynced watchers forward from the history, one batch each
    /// while their queues have room; cancels those whose next revision was
    /// compacted.
    pub fn catch_up(&mut self, store: &Store) {
        let current = store.current_revision();
        self.current = current;
        let compacted = store.compact_revision();
        let (max, batch) = (self.cfg.max_queued_events, self.cfg.catch_up_batch);
        for st in self.streams.values_mut() {
            let mut gone = Vec::new();
            for (id, w) in &mut st.watchers {
                if w.synced || w.queued_events >= max {
                    continue;
                }
                if w.next_rev < compacted {
                    gone.push(*id);
                    continue;
                }
                let (events, next) = store.events_from(&w.key, &w.range_end, w.next_rev, batch);
                let mut selected = w.select(&events);
                if planted::active(Bug::WatchSkipsCatchUpEvent) && !selected.is_empty() {
                    selected.remove(0);
                }
                // Never lower: a watcher may start above the current revision.
                w.next_rev = w.next_rev.max(next);
                if !selected.is_empty() {
                    w.active = true;
                    w.push(WatchResponse {
                        header: header(current),
                        watch_id: *id,
                        events: selected,
                        ..Default::default()
                    });
                }
                if next > current {
                    w.synced = true;
                }
            }
            for id in gone {
                let w = st.watchers.remove(&id).expect("listed above");
                st.control.extend(w.queue);
                st.control.push_back(WatchResponse {
                    header: header(current),
                    watch_id: id,
                    canceled: true,
                    compact_revision: compacted,
                    ..Default::default()
                });
            }
        }
    }

    /// One logical tick: every `progress_notify_ticks`, synced watchers that
    /// asked for progress notifications and were given no events since the
    /// last one get one.
    pub fn tick(&mut self, store: &Store) {
        self.ticks += 1;
        if !self
            .ticks
            .is_multiple_of(self.cfg.progress_notify_ticks.max(1))
        {
            return;
        }
        let current = store.current_revision();
        for st in self.streams.values_mut() {
            for (id, w) in &mut st.watchers {
                if w.progress_notify && w.synced && !std::mem::take(&mut w.active) {
                    w.push(progress(*id, current));
                }
            }
        }
    }

    /// Watchers that are behind and catching up from the history.
    pub fn behind(&self) -> usize {
        self.streams
            .values()
            .flat_map(|s| s.watchers.values())
            .filter(|w| !w.synced)
            .count()
    }

    /// Whether `stream` has responses waiting.
    pub fn has_pending(&self, stream: u64) -> bool {
        self.streams.get(&stream).is_some_and(|st| {
            !st.control.is_empty()
                || st.watchers.values().any(|w| !w.queue.is_empty())
                || (st.progress_wanted && st.watchers.values().all(|w| w.synced))
        })
    }

    /// Streams with responses waiting.
    pub fn pending_streams(&self) -> Vec<u64> {
        self.streams
            .keys()
            .copied()
            .filter(|s| self.has_pending(*s))
            .collect()
    }

    /// The next response for `stream`, if any; watchers take turns. A large
    /// response of a watcher that asked for fragments comes out in pieces.
    pub fn pop(&mut self, stream: u64) -> Option<WatchResponse> {
        let limit = self.cfg.max_response_bytes;
        let st = self.streams.get_mut(&stream)?;
        if let Some(r) = st.control.pop_front() {
            return Some(r);
        }
        let Some(id) = st
            .watchers
            .range(st.cursor..)
            .chain(st.watchers.range(..st.cursor))
            .find(|(_, w)| !w.queue.is_empty())
            .map(|(id, _)| *id)
        else {
            // Everything queued is sent: answer a progress request if every
            // watcher is synced (as etcd: one response, watch ID -1, for all).
            if st.progress_wanted && st.watchers.values().all(|w| w.synced) {
                st.progress_wanted = false;
                return Some(progress(-1, self.current));
            }
            return None;
        };
        st.cursor = id.saturating_add(1);
        let w = st.watchers.get_mut(&id).expect("found above");
        let mut resp = w.queue.pop_front().expect("non-empty");
        if w.fragment && resp.events.len() > 1 && resp.encoded_len() >= limit {
            let rest = split_fragment(&mut resp, limit);
            w.queue.push_front(rest);
        }
        w.queued_events -= resp.events.len();
        Some(resp)
    }
}

/// Cuts `resp` down to its first fragment (at least one event, under
/// `limit` bytes when it can be) and returns the rest, etcd's way: every
/// piece but the last has `fragment` set.
fn split_fragment(resp: &mut WatchResponse, limit: usize) -> WatchResponse {
    let mut events = std::mem::take(&mut resp.events);
    let base = resp.encoded_len();
    let mut size = base;
    let mut n = 0;
    for e in &events {
        let len = e.encoded_len();
        let grown = size + len + prost::length_delimiter_len(len) + 1;
        if n >= 1 && grown >= limit {
            break;
        }
        size = grown;
        n += 1;
    }
    let rest_events = events.split_off(n);
    resp.events = events;
    resp.fragment = true;
    WatchResponse {
        header: resp.header,
        watch_id: resp.watch_id,
        events: rest_events,
        ..Default::default()
    }
}

fn progress(id: i64, revision: i64) -> WatchResponse {
    WatchResponse {
        header: header(revision),
        watch_id: id,
        ..Default::default()
    }
}

fn mod_rev(e: &Event) -> i64 {
    e.kv.as_ref().map_or(0, |kv| kv.mod_revision)
}
