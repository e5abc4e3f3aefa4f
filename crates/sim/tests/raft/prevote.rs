//! R-40..R-45: CheckQuorum, leader stickiness and PreVote under partitions.

use crate::common::*;
use distsync_raft::{CampaignKind, Message, MessageBody, NodeId, Role, Term};
use distsync_sim::raft::ELECTION_TIMEOUT_TICKS;

#[test]
fn r40_check_quorum_isolated_leader_steps_down_within_et_plus_one() {
    // the isolated leader steps down within 2 x ET + 1 ticks: it checks for a quorum of
    // acks every ET (etcd: electionTimeout), and acks received just before the cut still count in
    // the first window, so stepping down may need a second one.
    let mut c = cluster(3, 140);
    let leader = check_one_leader(&mut c, &ids(3));
    c.isolate(leader);
    let bound = 2 * ELECTION_TIMEOUT_TICKS + 1;
    let stepped = c.run_until_cond(bound, |c| {
        c.status(leader).is_some_and(|s| s.role != Role::Leader)
    });
    assert!(
        stepped,
        "isolated leader still leads after 2 x ET + 1 ticks"
    );
    let (_, result) = c.propose(leader);
    assert!(result.is_err(), "stepped-down leader accepts proposals");
}

#[test]
fn r41_follower_with_a_live_leader_refuses_higher_term_vote() {
    // a follower that heard from the leader within ET refuses a RequestVote with a higher
    // term (leader stickiness); the leader is unchanged.
    let mut c = cluster(3, 141);
    let all = ids(3);
    let leader = check_one_leader(&mut c, &all);
    c.run_ticks(10);
    let follower = others(&all, leader)[0];
    let third = others(&others(&all, leader), follower)[0];
    let term = c.status(leader).unwrap().term;
    let last = c.status(third).unwrap().last_index;
    c.checker_mut().options.persist_before_send = true;
    c.step_node(Message {
        from: third,
        to: follower,
        term: Term(term.0 + 5),
        body: MessageBody::RequestVote {
            kind: CampaignKind::Election,
            last_log_index: last,
            last_log_term: term,
        },
    });
    let s = c.status(follower).unwrap();
    assert_ne!(
        s.voted_for,
        Some(third),
        "vote granted despite a live leader"
    );
    c.run_ticks(20);
    assert_eq!(c.leader(), Some(leader));
    assert_eq!(c.status(leader).unwrap().term, term);
}

fn isolated_follower_rejoins(pre_vote: bool, seed: u64) -> (NodeId, Term, Term, NodeId, u64) {
    let mut c = cluster_with(3, seed, |o| o.raft.pre_vote = pre_vote);
    let all = ids(3);
    let leader = check_one_leader(&mut c, &all);
    one(&mut c, 3);
    let term_before = c.status(leader).unwrap().term;
    let victim = others(&all, leader)[0];
    let victim_term = c.status(victim).unwrap().term;
    c.isolate(victim);
    // Five election timeouts at most 2 ET each.
    c.run_ticks(5 * ET_MAX);
    let persisted_term = c.node(victim).disk.durable().hard_state.term;
    assert!(persisted_term >= victim_term);
    c.reconnect(victim);
    c.run_ticks(2 * ET_MAX);
    let leader_after = check_one_leader(&mut c, &all);
    let term_after = c.status(leader_after).unwrap().term;
    let elections = c.checker().leaders().len() as u64;
    let _ = persisted_term;
    (leader_after, term_before, term_after, victim, elections)
}

#[test]
fn r42_without_prevote_a_rejoining_follower_disrupts_the_leader() {
    // R-42 (documents the disruption): without PreVote the isolated follower's term races ahead,
    // and on reconnect the cluster moves to a higher term.
    let (_, before, after, _, _) = isolated_follower_rejoins(false, 142);
    assert!(after > before, "expected a term change without PreVote");
}

#[test]
fn r43_with_prevote_a_rejoining_follower_changes_nothing() {
    // with PreVote the isolated node stays pre-candidate, its persisted term does not rise,
    // and leader and term are unchanged after it reconnects (no extra election).
    let mut c = cluster_with(3, 143, |o| o.raft.pre_vote = true);
    let all = ids(3);
    let leader = check_one_leader(&mut c, &all);
    one(&mut c, 3);
    let term = c.status(leader).unwrap().term;
    let elections = c.checker().leaders().len();
    let victim = others(&all, leader)[0];
    let victim_term = c.node(victim).disk.durable().hard_state.term;
    c.isolate(victim);
    c.run_ticks(5 * ET_MAX);
    assert_eq!(c.node(victim).disk.durable().hard_state.term, victim_term);
    assert_ne!(c.status(victim).unwrap().role, Role::Candidate);
    c.reconnect(victim);
    c.run_ticks(2 * ET_MAX);
    assert_eq!(c.leader(), Some(leader));
    assert_eq!(c.status(leader).unwrap().term, term);
    assert_eq!(
        c.checker().leaders().len(),
        elections,
        "an extra election happened"
    );
    let (l, before, after, v, _) = isolated_follower_rejoins(true, 1430);
    assert_eq!(before, after, "term changed with PreVote");
    assert_ne!(l, v);
}

#[test]
fn r44_split_prevote_still_elects_a_leader() {
    // 5 nodes, PreVote on; force a split by partitioning into 2 + 2 + 1 until every timer
    // fired, then heal: a leader within LEADER_BOUND.
    let mut c = cluster(5, 144);
    let all = ids(5);
    c.partition(&[
        vec![NodeId(1), NodeId(2)],
        vec![NodeId(3), NodeId(4)],
        vec![NodeId(5)],
    ]);
    c.run_ticks(3 * ET_MAX);
    check_no_leader(&c, &all);
    c.heal();
    check_one_leader(&mut c, &all);
}

#[test]
fn r45_lagging_node_rejoins_as_leader_is_isolated() {
    // a lagging node rejoins exactly as the leader is isolated: a leader within
    // LEADER_BOUND (etcd TestNodeWithSmallerTermCanCompleteElection).
    let mut c = cluster(5, 145);
    let all = ids(5);
    let leader = check_one_leader(&mut c, &all);
    let lagger = others(&all, leader)[0];
    c.isolate(lagger);
    for _ in 0..5 {
        one(&mut c, 4);
    }
    c.reconnect(lagger);
    c.isolate(leader);
    check_one_leader(&mut c, &others(&all, leader));
    c.reconnect(leader);
    one(&mut c, 5);
}
