//! Nodes stepped against each other in memory, on logical time: no driver,
//! no disk, no network. Messages are delivered in order; persistence is
//! instant. These pin down the node's contract; the simulator adds faults.

use super::*;
use crate::proto::etcdserverpb::PutRequest;
use bytes::Bytes;
use std::collections::VecDeque;

struct Cluster {
    nodes: BTreeMap<u64, Node>,
    /// Members cut off from everyone (their messages are dropped both ways).
    isolated: BTreeSet<u64>,
    replies: Vec<(u64, Reply)>,
}

fn cfg(id: u64, voters: &[u64]) -> NodeConfig {
    NodeConfig {
        id,
        cluster_id: 7,
        voters: voters.to_vec(),
        election_tick: 10,
        seed: id,
        heartbeat_tick: 1,
        snapshot_count: 20,
        snapshot_catchup_entries: 5,
        max_txn_ops: 128,
        tick_ms: 100,
        min_lease_ttl: 2,
        quota_backend_bytes: 0,
    }
}

impl Cluster {
    fn new(n: u64) -> Self {
        let voters: Vec<u64> = (1..=n).collect();
        let nodes = voters
            .iter()
            .map(|&id| {
                (
                    id,
                    Node::new(cfg(id, &voters), Recovery::default()).unwrap(),
                )
            })
            .collect();
        Self {
            nodes,
            isolated: BTreeSet::new(),
            replies: Vec::new(),
        }
    }

    /// Runs every node's Ready loop and delivers messages until nothing moves.
    fn settle(&mut self) {
        let mut queue: VecDeque<Message> = VecDeque::new();
        for _ in 0..10_000 {
            let mut moved = false;
            for (id, node) in &mut self.nodes {
                while let Some(rd) = node.ready() {
                    moved = true;
                    queue.extend(rd.messages);
                    node.persisted(rd.number);
                    queue.extend(rd.persisted_messages);
                }
                if let Some(snap) = node.take_snapshot() {
                    assert_eq!(snap.get_metadata().index, node.applied);
                }
                self.replies
                    .extend(node.take_replies().into_iter().map(|r| (*id, r)));
            }
            while let Some(m) = queue.pop_front() {
                moved = true;
                if self.isolated.contains(&m.from) || self.isolated.contains(&m.to) {
                    continue;
                }
                if let Some(n) = self.nodes.get_mut(&m.to) {
                    n.step(m);
                }
            }
            if !moved {
                return;
            }
        }
        panic!("cluster did not settle");
    }

    fn tick(&mut self, n: usize) {
        for _ in 0..n {
            for node in self.nodes.values_mut() {
                node.tick();
            }
            self.settle();
        }
    }

    fn leader(&self) -> Option<u64> {
        self.nodes
            .values()
            .find(|n| n.status().is_leader && !self.isolated.contains(&n.id()))
            .map(|n| n.id())
    }

    fn put(&mut self, on: u64, id: u64, k: &str, v: &str) {
        let req = PutRequest {
            key: Bytes::from(k.to_string()),
            value: Bytes::from(v.to_string()),
            ..Default::default()
        };
        self.nodes
            .get_mut(&on)
            .unwrap()
            .propose(id, Request::Put(req));
        self.settle();
    }

    fn reply(&self, id: u64) -> Option<&Reply> {
        self.replies.iter().map(|(_, r)| r).find(|r| r.id == id)
    }
}

fn get(key: &str, serializable: bool) -> RangeRequest {
    RangeRequest {
        key: Bytes::from(key.to_string()),
        serializable,
        ..Default::default()
    }
}

#[test]
fn a_single_member_elects_itself_and_applies_writes() {
    let mut c = Cluster::new(1);
    c.tick(3);
    assert_eq!(c.leader(), Some(1));
    c.put(1, 100, "a", "1");
    let reply = c.reply(100).expect("the write is answered");
    match &reply.result {
        Ok(Response::Put(p)) => {
            let h = p.header.as_ref().unwrap();
            assert_eq!((h.revision, h.member_id, h.cluster_id), (2, 1, 7));
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn three_members_replicate_and_agree_on_the_hash() {
    let mut c = Cluster::new(3);
    c.tick(30);
    let leader = c.leader().expect("a leader is elected");
    for i in 0..50u64 {
        // Followers forward proposals to the leader.
        let on = 1 + i % 3;
        c.put(on, 1000 + i, &format!("k{}", i % 7), &format!("v{i}"));
        assert!(
            matches!(c.reply(1000 + i).map(|r| &r.result), Some(Ok(_))),
            "write {i} answered"
        );
    }
    c.tick(3);
    let hashes: BTreeSet<u32> = c
        .nodes
        .values()
        .map(|n| n.store().hash_kv(0).unwrap().hash)
        .collect();
    assert_eq!(hashes.len(), 1, "every member holds the same state");
    assert!(c.nodes.values().all(|n| n.store().current_revision() == 51));
    // Linearizable reads on a follower go through ReadIndex.
    let follower = (1..=3).find(|&id| id != leader).unwrap();
    c.nodes
        .get_mut(&follower)
        .unwrap()
        .read(5000, get("k0", false));
    c.settle();
    match &c.reply(5000).expect("read answered").result {
        Ok(Response::Range(r)) => assert_eq!(r.kvs[0].value, Bytes::from("v49")),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn a_lagging_member_catches_up_through_a_snapshot() {
    let mut c = Cluster::new(3);
    c.tick(30);
    let leader = c.leader().unwrap();
    let lagging = (1..=3).find(|&id| id != leader).unwrap();
    c.isolated.insert(lagging);
    for i in 0..60u64 {
        c.put(leader, 2000 + i, &format!("k{i}"), "v");
    }
    // The leader snapshotted (every 20 entries) and compacted past the lagging member.
    assert!(c.nodes[&leader].snapshot_index >= 40);
    c.isolated.clear();
    c.tick(20);
    let lag = &c.nodes[&lagging];
    assert_eq!(
        lag.store().hash_kv(0).unwrap(),
        c.nodes[&leader].store().hash_kv(0).unwrap()
    );
    assert!(
        lag.snapshot_index >= 40,
        "caught up through a snapshot, not the log"
    );
}

#[test]
fn a_proposal_without_a_leader_fails_fast() {
    let mut c = Cluster::new(3);
    // No ticks yet: nobody knows a leader.
    c.put(2, 7, "a", "1");
    assert_eq!(
        c.reply(7).map(|r| r.result.clone()),
        Some(Err(NodeError::NoLeader))
    );
}

fn grant(c: &mut Cluster, on: u64, id: u64, lease: i64, ttl: i64) {
    let req = crate::proto::etcdserverpb::LeaseGrantRequest { ttl, id: lease };
    c.nodes
        .get_mut(&on)
        .unwrap()
        .propose(id, Request::LeaseGrant(req));
    c.settle();
}

fn put_leased(c: &mut Cluster, on: u64, id: u64, k: &str, lease: i64) {
    let req = PutRequest {
        key: Bytes::from(k.to_string()),
        value: Bytes::from("v"),
        lease,
        ..Default::default()
    };
    c.nodes.get_mut(&on).unwrap().propose(id, Request::Put(req));
    c.settle();
}

fn renew(c: &mut Cluster, on: u64, id: u64, lease: i64) {
    let req = crate::proto::cairnpb::LeaseRenew { id: lease };
    c.nodes
        .get_mut(&on)
        .unwrap()
        .propose(id, Request::LeaseRenew(req));
    c.settle();
}

/// The revision at which `key` was deleted on `node`, if it was.
fn deleted_at(node: &mut Node, key: &str) -> Option<i64> {
    node.take_events()
        .into_iter()
        .filter(|e| e.r#type == crate::proto::mvccpb::event::EventType::Delete as i32)
        .map(|e| e.kv.unwrap())
        .find(|kv| kv.key == key.as_bytes())
        .map(|kv| kv.mod_revision)
}

#[test]
fn an_expired_lease_deletes_its_keys_at_one_revision_on_every_member() {
    let mut c = Cluster::new(3);
    c.tick(30);
    let leader = c.leader().unwrap();
    grant(&mut c, leader, 1, 77, 2);
    assert!(matches!(
        c.reply(1).map(|r| &r.result),
        Some(Ok(Response::LeaseGrant(g))) if g.id == 77 && g.ttl == 2
    ));
    put_leased(&mut c, leader, 2, "a", 77);
    put_leased(&mut c, leader, 3, "b", 77);
    for n in c.nodes.values_mut() {
        n.take_events();
    }
    // TTL 2 s is 20 ticks: alive at 15, gone by 25.
    c.tick(15);
    assert!(c.nodes.values().all(|n| n.lessor().exists(77)));
    c.tick(10);
    for n in c.nodes.values_mut() {
        assert!(!n.lessor().exists(77));
        let events = n.take_events();
        let revs: BTreeSet<i64> = events
            .iter()
            .map(|e| e.kv.as_ref().unwrap().mod_revision)
            .collect();
        assert_eq!(events.len(), 2, "both keys deleted");
        assert_eq!(revs.len(), 1, "at one revision");
    }
    // A put naming the lease now fails, the same way everywhere.
    put_leased(&mut c, leader, 4, "c", 77);
    assert_eq!(
        c.reply(4).map(|r| r.result.clone()),
        Some(Err(NodeError::Lease(LeaseError::NotFound)))
    );
}

#[test]
fn keep_alives_hold_a_lease_and_a_new_leader_restarts_its_countdown() {
    let mut c = Cluster::new(3);
    c.tick(30);
    let old = c.leader().unwrap();
    grant(&mut c, old, 1, 5, 3);
    put_leased(&mut c, old, 2, "k", 5);
    // Keep-alives through a follower every second, for six TTLs.
    let follower = (1..=3).find(|&id| id != old).unwrap();
    for i in 0..18 {
        renew(&mut c, follower, 100 + i, 5);
        c.tick(10);
    }
    assert!(matches!(
        c.reply(117).map(|r| &r.result),
        Some(Ok(Response::LeaseRenew(r))) if r.ttl == 3
    ));
    assert!(c.nodes.values().all(|n| n.lessor().exists(5)));
    // The leader is cut off right after a keep-alive; a new one is elected.
    renew(&mut c, follower, 200, 5);
    c.isolated.insert(old);
    let mut waited = 0;
    while c.leader().is_none_or(|l| l == old) {
        c.tick(1);
        waited += 1;
        assert!(waited < 100, "no new leader");
    }
    // Even if the election took longer than the TTL, the new leader gives
    // the lease its full TTL again before it can expire.
    let new = c.leader().unwrap();
    c.tick(29);
    assert!(c.nodes[&new].lessor().exists(5), "expired early");
    c.tick(40);
    assert!(!c.nodes[&new].lessor().exists(5), "expired in the end");
    assert!(deleted_at(c.nodes.get_mut(&new).unwrap(), "k").is_some());
}

#[test]
fn leases_reach_a_lagging_member_through_a_snapshot() {
    let mut c = Cluster::new(3);
    c.tick(30);
    let leader = c.leader().unwrap();
    let lagging = (1..=3).find(|&id| id != leader).unwrap();
    c.isolated.insert(lagging);
    grant(&mut c, leader, 1, 9, 1000);
    put_leased(&mut c, leader, 2, "leased", 9);
    for i in 0..60u64 {
        c.put(leader, 3000 + i, &format!("k{i}"), "v");
    }
    c.isolated.clear();
    c.tick(20);
    let lag = &c.nodes[&lagging];
    assert!(lag.snapshot_index >= 40);
    let ttl = lag
        .lessor()
        .time_to_live(9, lag.ticks())
        .expect("lease arrived");
    assert_eq!(ttl.granted, 1000);
    assert_eq!(ttl.keys, vec![Bytes::from("leased")]);
}

#[test]
fn a_txn_checks_the_leases_of_the_branch_it_takes() {
    use crate::proto::etcdserverpb::{compare, request_op, Compare, RequestOp, TxnRequest};
    let mut c = Cluster::new(1);
    c.tick(3);
    let put_op = |lease| RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key: Bytes::from("t"),
            value: Bytes::from("v"),
            lease,
            ..Default::default()
        })),
    };
    // The compare fails (the key does not exist at version 1), so only the
    // failure branch, with no lease, runs.
    let txn = |success_lease| TxnRequest {
        compare: vec![Compare {
            key: Bytes::from("t"),
            target: compare::CompareTarget::Version as i32,
            result: compare::CompareResult::Equal as i32,
            target_union: Some(compare::TargetUnion::Version(1)),
            ..Default::default()
        }],
        success: vec![put_op(success_lease)],
        failure: vec![put_op(0)],
    };
    c.nodes
        .get_mut(&1)
        .unwrap()
        .propose(1, Request::Txn(txn(404)));
    c.settle();
    assert!(matches!(c.reply(1).map(|r| &r.result), Some(Ok(_))));
    // Now version is 1: the success branch with the unknown lease is refused.
    c.nodes
        .get_mut(&1)
        .unwrap()
        .propose(2, Request::Txn(txn(404)));
    c.settle();
    assert_eq!(
        c.reply(2).map(|r| r.result.clone()),
        Some(Err(NodeError::Lease(LeaseError::NotFound)))
    );
    assert_eq!(c.nodes[&1].store().current_revision(), 2);
}

/// A write that crosses the quota raises NOSPACE through raft: every member
/// lists the alarm, refuses the next put on any member, and a member that was
/// cut off learns it from the leader's snapshot (the Alarms section).
#[test]
fn nospace_is_raised_through_raft_and_reaches_a_lagging_member_by_snapshot() {
    use crate::proto::etcdserverpb::AlarmType;
    let voters = [1, 2, 3];
    let mut c = Cluster::new(3);
    for (&id, node) in c.nodes.iter_mut() {
        let mut small = cfg(id, &voters);
        small.quota_backend_bytes = 8_000;
        *node = Node::new(small, Recovery::default()).unwrap();
    }
    c.tick(30);
    let leader = c.leader().unwrap();
    let lagging = (1..=3).find(|&id| id != leader).unwrap();
    c.isolated.insert(lagging);
    let big = "x".repeat(1_000);
    let mut refused = None;
    for i in 0..20u64 {
        c.put(leader, 3000 + i, &format!("k{i}"), &big);
        if matches!(
            c.reply(3000 + i),
            Some(Reply {
                result: Err(NodeError::NoSpace),
                ..
            })
        ) {
            refused = Some(i);
            break;
        }
    }
    assert!(refused.is_some(), "8 kB of 1 kB puts crossed the quota");
    c.tick(2);
    for (id, node) in &c.nodes {
        if *id == lagging {
            continue;
        }
        let alarms = node.alarms();
        assert!(!alarms.is_empty(), "member {id} lists the alarm");
        assert!(alarms.iter().all(|a| a.alarm == AlarmType::Nospace as i32));
    }
    // Enough entries (deletes still go through) for the leader to snapshot
    // past the lagging member.
    for i in 0..45u64 {
        let req = crate::proto::etcdserverpb::DeleteRangeRequest {
            key: Bytes::from(format!("k{}", i % 5)),
            ..Default::default()
        };
        c.nodes
            .get_mut(&leader)
            .unwrap()
            .propose(4000 + i, Request::DeleteRange(req));
        c.settle();
    }
    c.isolated.clear();
    c.tick(20);
    assert_eq!(c.nodes[&lagging].alarms(), c.nodes[&leader].alarms());
    c.put(lagging, 5000, "after", "v");
    assert!(matches!(
        c.reply(5000),
        Some(Reply {
            result: Err(NodeError::NoSpace),
            ..
        })
    ));
}

/// A defragment runs in steps and answers every request that waited once the
/// last step is done; the database size then falls to the bytes in use.
#[test]
fn a_defragment_answers_after_its_last_step() {
    let mut c = Cluster::new(1);
    c.tick(3);
    for i in 0..30u64 {
        c.put(1, 6000 + i, &format!("k{}", i % 3), &"v".repeat(100));
    }
    let node = c.nodes.get_mut(&1).unwrap();
    let rev = node.store().current_revision();
    node.propose(
        7000,
        Request::Compaction(crate::proto::etcdserverpb::CompactionRequest {
            revision: rev,
            physical: true,
        }),
    );
    c.settle();
    let node = c.nodes.get_mut(&1).unwrap();
    assert!(node.db_size() > node.status().db_size_in_use);
    node.defragment(7001);
    node.defragment(7002);
    assert!(node.defragmenting());
    node.defragment_step();
    assert!(!node.defragmenting(), "three keys: one step");
    let replies = node.take_replies();
    assert_eq!(replies.len(), 2);
    assert!(replies
        .iter()
        .all(|r| r.result == Ok(Response::Defragmented)));
    assert_eq!(node.db_size(), node.status().db_size_in_use);
}
