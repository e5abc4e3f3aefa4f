//! R-01..R-03: elections.

use crate::common::*;
use distsync_raft::NodeId;
use rand::Rng;

#[test]
fn r01_initial_election_is_quick_and_then_stable() {
    // one leader within LEADER_BOUND, all agree on a term >= 1, and no term change during
    // 2 x ET_max of quiet (hard).
    let mut c = cluster(3, 101);
    let all = ids(3);
    let leader = check_one_leader(&mut c, &all);
    c.run_ticks(10);
    let terms: Vec<_> = all.iter().map(|&id| c.status(id).unwrap().term).collect();
    assert!(
        terms[0].0 >= 1 && terms.iter().all(|&t| t == terms[0]),
        "terms {terms:?}"
    );
    c.run_ticks(2 * ET_MAX);
    for &id in &all {
        assert_eq!(
            c.status(id).unwrap().term,
            terms[0],
            "term changed during quiet"
        );
    }
    assert_eq!(c.leader(), Some(leader));
}

#[test]
fn r02_reelection_after_leader_loss_and_only_with_a_majority() {
    // a new leader after each loss; zero leaders while only 1 of 3 is connected; one
    // leader once a majority is back.
    let mut c = cluster(3, 102);
    let all = ids(3);
    let leader1 = check_one_leader(&mut c, &all);
    c.isolate(leader1);
    check_one_leader(&mut c, &others(&all, leader1));
    c.reconnect(leader1);
    let leader2 = check_one_leader(&mut c, &all);
    let next = NodeId(leader2.0 % 3 + 1);
    c.isolate(leader2);
    c.isolate(next);
    c.run_ticks(2 * ET_MAX);
    let alone: Vec<NodeId> = all
        .iter()
        .copied()
        .filter(|&x| x != leader2 && x != next)
        .collect();
    check_no_leader(&c, &alone);
    c.reconnect(next);
    c.isolate(leader2);
    let mut two = alone.clone();
    two.push(next);
    check_one_leader(&mut c, &two);
    c.reconnect(leader2);
    check_one_leader(&mut c, &all);
}

#[test]
fn r03_many_elections_with_three_of_seven_isolated() {
    // 7 nodes, 9 rounds isolating 3 random nodes: a leader among the 4 connected each round.
    let mut c = cluster(7, 103);
    let all = ids(7);
    check_one_leader(&mut c, &all);
    for _ in 0..9 {
        let mut cut = Vec::new();
        while cut.len() < 3 {
            let id = NodeId(c.rng().random_range(1..=7));
            if !cut.contains(&id) {
                cut.push(id);
            }
        }
        for &id in &cut {
            c.isolate(id);
        }
        let connected: Vec<NodeId> = all.iter().copied().filter(|x| !cut.contains(x)).collect();
        check_one_leader(&mut c, &connected);
        for &id in &cut {
            c.reconnect(id);
        }
    }
    check_one_leader(&mut c, &all);
}
