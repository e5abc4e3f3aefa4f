//! Membership changes under faults: add a learner, promote it, remove a voter, re-add it,
//! with drops and a crash in between; quorum is judged per configuration by the checkers.

use crate::common::*;
use distsync_raft::{Membership, MembershipChange, NodeId, ProposeError};
use distsync_sim::net::LinkFaults;

fn change(c: &mut distsync_sim::raft::Cluster, change: MembershipChange) {
    // Retry on whoever leads until the change is accepted, then until it is applied.
    for _ in 0..200 {
        if let Some(leader) = c.leader() {
            match c.propose_membership(leader, change) {
                Ok(p) => {
                    let applied = c.run_until_cond(COMMIT_BOUND_TICKS, |c| {
                        c.committed_value(p.index).is_some()
                    });
                    if applied && c.committed_value(p.index) == Some(None) {
                        return;
                    }
                }
                Err(ProposeError::InvalidMembershipChange) => return,
                Err(_) => {}
            }
        }
        c.run_ticks(5);
    }
    panic!(
        "membership change {change:?} never committed (seed {})",
        c.seed()
    );
}

#[test]
fn membership_add_promote_remove_readd_under_drops_and_a_crash() {
    // Proves single-server changes stay safe and live with 10 % drops and a crash: a new node
    // joins as learner, catches up and is promoted; a voter is removed and re-added.
    let mut c = cluster_with(3, 156, |o| o.snapshot_every_entries = Some(20));
    c.net.set_default_faults(LinkFaults {
        drop_probability: 0.1,
        duplicate_probability: 0.02,
        delay_min_us: 500,
        delay_max_us: 20_000,
        reorder_probability: 0.1,
        reorder_delay_max_us: 50_000,
    });
    for _ in 0..30 {
        one(&mut c, 3);
    }
    c.add_node(NodeId(4), Membership::default());
    change(&mut c, MembershipChange::AddLearner(NodeId(4)));
    for _ in 0..5 {
        one(&mut c, 4);
    }
    change(&mut c, MembershipChange::AddVoter(NodeId(4)));
    let leader = check_one_leader(&mut c, &ids(4));
    let victim = others(&ids(4), leader)[0];
    c.crash(victim, false);
    one(&mut c, 3);
    c.restart(victim);
    change(&mut c, MembershipChange::Remove(victim));
    for _ in 0..5 {
        one(&mut c, 3);
    }
    change(&mut c, MembershipChange::AddLearner(victim));
    change(&mut c, MembershipChange::AddVoter(victim));
    c.heal();
    let last = one(&mut c, 4);
    c.run_until_cond(COMMIT_BOUND_TICKS, |c| c.n_applied(last) == 4);
    assert_eq!(c.n_applied(last), 4);
    let leader = c.leader().expect("a leader");
    assert_eq!(c.status(leader).unwrap().membership.voters.len(), 4);
}

#[test]
fn membership_removed_leader_hands_over() {
    // Proves removing the current leader leaves a cluster that elects a leader among the rest
    // and keeps committing.
    let mut c = cluster(5, 157);
    one(&mut c, 5);
    let leader = check_one_leader(&mut c, &ids(5));
    change(&mut c, MembershipChange::Remove(leader));
    let rest = others(&ids(5), leader);
    c.run_ticks(3 * ET_MAX);
    let new_leader = check_one_leader(&mut c, &rest);
    assert_ne!(new_leader, leader);
    one(&mut c, 4);
}
