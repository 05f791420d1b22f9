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
        election_tick: 10 + id as usize,
        heartbeat_tick: 1,
        snapshot_count: 20,
        snapshot_catchup_entries: 5,
        max_txn_ops: 128,
        ticks_per_sec: 10,
        min_lease_ttl: 2,
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
                    queue.extend(node.persisted());
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
