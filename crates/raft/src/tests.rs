//! Fast checks of the core on a perfect network. The adversarial suites (faults, crashes,
//! invariants after every step, the paper tests) live in `distsync-sim`.

use crate::{
    EntryPayload, LogIndex, MemCluster, MembershipChange, NodeId, ProposeError, ReadId, Role,
    TestBugs,
};
use bytes::Bytes;

#[test]
fn three_nodes_elect_one_leader_and_replicate_in_order() {
    // Proves the happy path end to end: one leader, commands applied in order everywhere.
    let mut cluster = MemCluster::new(3);
    let leader = cluster.elect();
    for i in 0..10u8 {
        let node = cluster.nodes.get_mut(&leader).unwrap();
        node.propose(Bytes::from(vec![i])).unwrap();
    }
    cluster.stabilize();
    // Followers learn the final commit index from the next heartbeat.
    for _ in 0..3 {
        for node in cluster.nodes.values_mut() {
            node.tick();
        }
        cluster.stabilize();
    }
    let expected: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i]).collect();
    for (id, applied) in &cluster.applied {
        let got: Vec<Vec<u8>> = applied
            .iter()
            .map(|entry| match &entry.payload {
                EntryPayload::Command(data) => data.to_vec(),
                other => panic!("unexpected payload {other:?}"),
            })
            .collect();
        assert_eq!(got, expected, "node {id} applied a different sequence");
    }
    let leaders = cluster
        .nodes
        .values()
        .filter(|node| node.status().role == Role::Leader)
        .count();
    assert_eq!(leaders, 1);
}

#[test]
fn proposals_off_the_leader_name_the_leader() {
    // Proves a follower refuses proposals and points at the leader it knows.
    let mut cluster = MemCluster::new(3);
    let leader = cluster.elect();
    let follower = cluster
        .nodes
        .keys()
        .copied()
        .find(|&id| id != leader)
        .unwrap();
    let error = cluster
        .nodes
        .get_mut(&follower)
        .unwrap()
        .propose(Bytes::new())
        .unwrap_err();
    assert_eq!(
        error,
        ProposeError::NotLeader {
            leader_hint: Some(leader)
        }
    );
}

#[test]
fn read_index_is_confirmed_after_a_quorum_heartbeat() {
    // Proves ReadIndex yields the commit index only after the leader's round is acknowledged.
    let mut cluster = MemCluster::new(3);
    let leader = cluster.elect();
    let node = cluster.nodes.get_mut(&leader).unwrap();
    node.read_index(ReadId(42)).unwrap();
    let ready = node.ready();
    assert!(ready.read_states.is_empty(), "confirmed before any ack");
    let commit = node.status().commit;
    let heartbeats = ready.messages.len();
    assert_eq!(heartbeats, 2, "one heartbeat per follower");
    node.advance(ready.clone());
    let mut confirmed = Vec::new();
    for message in ready.messages {
        let to = message.to;
        cluster.nodes.get_mut(&to).unwrap().step(message);
        let follower = cluster.nodes.get_mut(&to).unwrap();
        let reply = follower.ready();
        follower.advance(reply.clone());
        let node = cluster.nodes.get_mut(&leader).unwrap();
        for message in reply.messages {
            node.step(message);
        }
        let ready = node.ready();
        confirmed.extend(ready.read_states.iter().copied());
        node.advance(ready);
    }
    assert_eq!(confirmed.len(), 1);
    assert_eq!(confirmed[0].id, ReadId(42));
    assert_eq!(confirmed[0].index, commit);
}

#[test]
fn leadership_transfer_moves_the_leader_to_the_target() {
    // Proves TimeoutNow makes the caught-up target win the next election at once.
    let mut cluster = MemCluster::new(3);
    let leader = cluster.elect();
    let target = cluster
        .nodes
        .keys()
        .copied()
        .find(|&id| id != leader)
        .unwrap();
    cluster
        .nodes
        .get_mut(&leader)
        .unwrap()
        .transfer_leadership(target)
        .unwrap();
    cluster.stabilize();
    assert_eq!(cluster.leader(), Some(target));
}

#[test]
fn a_learner_catches_up_then_votes_after_promotion() {
    // Proves single-server membership changes: a joining node with no history learns the
    // membership from the log, and its promotion makes it count.
    let mut cluster = MemCluster::new(3);
    let leader = cluster.elect();
    let mut config = crate::RaftConfig::new(NodeId(4));
    config.election_timeout_ticks = 10;
    config.heartbeat_interval_ticks = 2;
    let joiner = crate::RaftNode::new(config, crate::Membership::default(), 4).unwrap();
    cluster.nodes.insert(NodeId(4), joiner);
    cluster.applied.insert(NodeId(4), Vec::new());
    let node = cluster.nodes.get_mut(&leader).unwrap();
    node.propose_membership(MembershipChange::AddLearner(NodeId(4)))
        .unwrap();
    cluster.stabilize();
    let node = cluster.nodes.get_mut(&leader).unwrap();
    node.propose_membership(MembershipChange::AddVoter(NodeId(4)))
        .unwrap();
    cluster.stabilize();
    let status = cluster.nodes[&NodeId(4)].status();
    assert!(status.membership.is_voter(NodeId(4)));
    assert_eq!(status.membership.voters.len(), 4);
    assert!(status.last_index >= LogIndex(3));
}

#[test]
fn compaction_sends_a_snapshot_to_a_follower_that_is_behind() {
    // Proves a follower missing compacted entries catches up through InstallSnapshot.
    let mut cluster = MemCluster::new(3);
    let leader = cluster.elect();
    let lagging = cluster
        .nodes
        .keys()
        .copied()
        .find(|&id| id != leader)
        .unwrap();
    let parked = cluster.nodes.remove(&lagging).unwrap();
    for i in 0..20u8 {
        cluster
            .nodes
            .get_mut(&leader)
            .unwrap()
            .propose(Bytes::from(vec![i]))
            .unwrap();
        cluster.stabilize();
    }
    let node = cluster.nodes.get_mut(&leader).unwrap();
    let applied = node.status().applied;
    node.compact(applied, Bytes::from_static(b"state"));
    assert!(node.snapshot().is_some());
    cluster.nodes.insert(lagging, parked);
    for _ in 0..20 {
        for node in cluster.nodes.values_mut() {
            node.tick();
        }
        cluster.stabilize();
    }
    let status = cluster.nodes[&lagging].status();
    assert!(status.commit >= applied, "lagging node did not catch up");
    let snapshot = cluster.nodes[&lagging]
        .snapshot()
        .expect("snapshot installed");
    assert_eq!(snapshot.data, Bytes::from_static(b"state"));
}

#[test]
fn commit_bug_flag_is_off_by_default() {
    // Guards the negative controls: production defaults enable no deliberate bug.
    assert!(!crate::RaftConfig::new(NodeId(1)).bugs.any());
    assert!(TestBugs::default() == crate::RaftConfig::new(NodeId(1)).bugs);
}

#[test]
fn a_learner_added_last_catches_up_without_further_proposals() {
    // Proves a node added when nothing else is proposed still catches up (by snapshot), driven
    // only by heartbeats: the probe starts from the heartbeat answer.
    let mut cluster = MemCluster::new(3);
    let leader = cluster.elect();
    for i in 0..20u8 {
        let node = cluster.nodes.get_mut(&leader).unwrap();
        node.propose(Bytes::from(vec![i])).unwrap();
        cluster.stabilize();
    }
    let node = cluster.nodes.get_mut(&leader).unwrap();
    let applied = node.status().applied;
    node.compact(applied, Bytes::from_static(b"state"));
    let mut config = crate::RaftConfig::new(NodeId(4));
    config.election_timeout_ticks = 10;
    config.heartbeat_interval_ticks = 2;
    let joiner = crate::RaftNode::new(config, crate::Membership::default(), 4).unwrap();
    cluster.nodes.insert(NodeId(4), joiner);
    cluster.applied.insert(NodeId(4), Vec::new());
    let node = cluster.nodes.get_mut(&leader).unwrap();
    let added = node
        .propose_membership(MembershipChange::AddLearner(NodeId(4)))
        .unwrap();
    cluster.stabilize();
    for _ in 0..10 {
        for node in cluster.nodes.values_mut() {
            node.tick();
        }
        cluster.stabilize();
    }
    let status = cluster.nodes[&NodeId(4)].status();
    assert!(
        status.commit >= added.index,
        "learner stuck at commit {} (membership entry at {})",
        status.commit,
        added.index
    );
    assert!(cluster.nodes[&NodeId(4)].snapshot().is_some());
}

#[test]
fn a_commit_reaches_followers_with_the_next_append_or_at_the_leaders_next_tick() {
    // Proves the commit index costs no message of its own: a follower learns it from the next
    // append when one comes, else from what the leader sends at its next tick, and never later.
    let mut cluster = MemCluster::new(3);
    let leader = cluster.elect();
    // Two ticks: the heartbeat due at the second settles every follower, and the single tick
    // at the end then sends no heartbeat (MemCluster beats every two ticks).
    for _ in 0..2 {
        cluster.nodes.get_mut(&leader).unwrap().tick();
        cluster.stabilize();
    }
    let followers: Vec<_> = cluster
        .nodes
        .keys()
        .copied()
        .filter(|&id| id != leader)
        .collect();
    let commit_of = |cluster: &MemCluster, id| cluster.nodes[&id].status().commit;
    let propose = |cluster: &mut MemCluster, command: &'static [u8]| {
        let node = cluster.nodes.get_mut(&leader).unwrap();
        let index = node.propose(Bytes::from_static(command)).unwrap().index;
        cluster.stabilize();
        index
    };

    let first = propose(&mut cluster, b"first");
    assert_eq!(commit_of(&cluster, leader), first);
    for &id in &followers {
        assert!(
            commit_of(&cluster, id) < first,
            "node {id} was told at once"
        );
    }

    let second = propose(&mut cluster, b"second");
    for &id in &followers {
        assert_eq!(
            commit_of(&cluster, id),
            first,
            "node {id} missed the append's commit"
        );
    }

    cluster.nodes.get_mut(&leader).unwrap().tick();
    cluster.stabilize();
    for &id in &followers {
        assert_eq!(
            commit_of(&cluster, id),
            second,
            "node {id} not told at the tick"
        );
    }
}
