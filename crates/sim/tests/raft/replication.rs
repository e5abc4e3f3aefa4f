//! R-04..R-13: agreement, failures, rejoin, backup and message counts.

use crate::common::*;
use distsync_raft::{LogIndex, NodeId, Role};
use distsync_sim::raft::TICK_US;

#[test]
fn r04_basic_agree_commands_land_in_order_after_the_noop() {
    // 3 commands land at consecutive indexes (after the leader's no-op at index 1, which
    // our Raft appends at the start of every term), none applied before submission.
    let mut c = cluster(3, 104);
    check_one_leader(&mut c, &ids(3));
    c.run_ticks(10);
    let base = c
        .committed_values()
        .keys()
        .last()
        .copied()
        .unwrap_or(LogIndex(0));
    for k in 1..=3 {
        let next = LogIndex(base.0 + k);
        assert_eq!(
            c.n_applied(next),
            0,
            "index {next} applied before submission"
        );
        let index = one(&mut c, 3);
        assert_eq!(index, next, "command {k} at index {index}");
    }
}

#[test]
fn r05_rpc_bytes_stay_near_the_payload() {
    // 1 + 10 commands of 5000 bytes; bytes sent <= 3 x 50,000 + 50,000.
    let mut c = cluster(3, 105);
    check_one_leader(&mut c, &ids(3));
    let v = c.next_value();
    c.one_value(v, 5000, 3, true, COMMIT_BOUND_TICKS)
        .expect("first command");
    c.net.reset_stats();
    for _ in 0..10 {
        let v = c.next_value();
        c.one_value(v, 5000, 3, true, COMMIT_BOUND_TICKS)
            .expect("command commits");
    }
    let bytes = c.net.stats().bytes_sent;
    assert!(
        bytes <= 3 * 50_000 + 50_000,
        "sent {bytes} bytes for 50,000 bytes of commands"
    );
}

#[test]
fn r06_follower_failure_commits_with_two_and_not_with_one() {
    // commits with 2 of 3; a submission with 1 of 3 returns index 4 and is never applied.
    let mut c = cluster(3, 106);
    let all = ids(3);
    let leader = check_one_leader(&mut c, &all);
    one(&mut c, 3);
    let f1 = others(&all, leader)[0];
    c.isolate(f1);
    one(&mut c, 2);
    let leader = check_one_leader(&mut c, &others(&all, f1));
    let f2 = others(&others(&all, f1), leader)[0];
    c.isolate(f2);
    let (_, result) = c.propose(leader);
    let p = result.expect("the leader still accepts proposals");
    assert_eq!(p.index, LogIndex(4));
    c.run_ticks(2 * ET_MAX);
    assert_eq!(
        c.n_applied(p.index),
        0,
        "index 4 applied with 1 of 3 connected"
    );
}

#[test]
fn r07_leader_failure_then_no_commit_with_one_of_three() {
    // lose the leader, then the next leader; the lone node commits nothing new.
    let mut c = cluster(3, 107);
    let all = ids(3);
    let leader1 = check_one_leader(&mut c, &all);
    one(&mut c, 3);
    c.isolate(leader1);
    one(&mut c, 2);
    let leader2 = check_one_leader(&mut c, &others(&all, leader1));
    c.isolate(leader2);
    let before = c.committed_values().len();
    for id in all.clone() {
        let _ = c.propose(id);
    }
    c.run_ticks(2 * ET_MAX);
    assert_eq!(
        c.committed_values().len(),
        before,
        "something committed with 1 of 3"
    );
}

#[test]
fn r08_fail_agree_rejoined_follower_catches_up() {
    // one follower out for 4 commits; it rejoins and applies all, then 2 more commit on 3.
    let mut c = cluster(3, 108);
    let all = ids(3);
    let leader = check_one_leader(&mut c, &all);
    one(&mut c, 3);
    let f = others(&all, leader)[0];
    c.isolate(f);
    for _ in 0..4 {
        one(&mut c, 2);
    }
    c.reconnect(f);
    let a = one(&mut c, 3);
    let b = one(&mut c, 3);
    assert!(b > a);
    assert!(
        c.node(f).state.applied >= a,
        "rejoined follower did not apply everything"
    );
}

#[test]
fn r09_fail_no_agree_with_three_of_five_out() {
    // the proposed index is never applied while 3 followers are cut; after healing the
    // next command lands right after it (or one later for a new leader's no-op); final commit on 5.
    let mut c = cluster(5, 109);
    let all = ids(5);
    one(&mut c, 5);
    let leader = check_one_leader(&mut c, &all);
    let followers = others(&all, leader);
    for &f in &followers[..3] {
        c.isolate(f);
    }
    let (_, result) = c.propose(leader);
    let p = result.expect("leader accepts");
    c.run_ticks(2 * ET_MAX);
    assert_eq!(c.n_applied(p.index), 0, "applied while a majority was cut");
    for &f in &followers[..3] {
        c.reconnect(f);
    }
    let next = one(&mut c, 5);
    assert!(
        next.0 >= p.index.0 && next.0 <= p.index.0 + 2,
        "next index {next} after uncommitted {}",
        p.index
    );
}

#[test]
fn r10_concurrent_starts_all_commit_in_one_term() {
    // 5 submissions in one term all commit.
    let mut c = cluster(3, 110);
    let leader = check_one_leader(&mut c, &ids(3));
    one(&mut c, 3);
    let term = c.status(leader).unwrap().term;
    let mut proposals = Vec::new();
    for _ in 0..5 {
        let (v, r) = c.propose(leader);
        proposals.push((v, r.expect("leader accepts")));
    }
    let last = proposals.last().unwrap().1.index;
    c.run_until_cond(COMMIT_BOUND_TICKS, |c| c.n_applied(last) == 3);
    assert_eq!(c.status(leader).unwrap().term, term, "term changed");
    for (v, p) in proposals {
        assert_eq!(c.committed_value(p.index), Some(Some(v)));
    }
}

#[test]
fn r11_rejoining_stale_leader_loses_its_uncommitted_entries() {
    // a stale leader with 3 uncommitted entries rejoins; they are replaced; final commit on 3.
    let mut c = cluster(3, 111);
    let all = ids(3);
    one(&mut c, 3);
    let leader1 = check_one_leader(&mut c, &all);
    c.isolate(leader1);
    let stale: Vec<_> = (0..3)
        .map(|_| c.propose(leader1))
        .map(|(v, r)| (v, r.expect("isolated leader still accepts").index))
        .collect();
    one(&mut c, 2);
    let leader2 = check_one_leader(&mut c, &others(&all, leader1));
    c.isolate(leader2);
    c.reconnect(leader1);
    c.isolate(leader2);
    one(&mut c, 2);
    c.reconnect(leader2);
    one(&mut c, 3);
    for (v, index) in stale {
        assert_ne!(
            c.committed_value(index),
            Some(Some(v)),
            "stale entry {index} survived"
        );
    }
}

fn divergent_terms(c: &distsync_sim::raft::Cluster, id: NodeId) -> usize {
    let raft = c.node(id).raft().expect("up");
    let commit = raft.status().commit;
    let (_, entries) = raft.log_entries();
    let mut terms: Vec<_> = entries
        .iter()
        .filter(|e| e.index > commit)
        .map(|e| e.term)
        .collect();
    terms.dedup();
    terms.len()
}

#[test]
fn r12_backup_over_divergent_logs_is_fast() {
    // two rounds of 50 uncommitted entries on isolated leader+follower pairs, 50 commits
    // on the other side, then mixing; every commit within COMMIT_BOUND; final commit on 5; and
    // the conflict back-up uses at most 2 AppendEntries rejections per divergent term.
    let mut c = cluster(5, 112);
    let all = ids(5);
    one(&mut c, 5);
    let leader1 = check_one_leader(&mut c, &all);
    let rest = others(&all, leader1);
    let f1 = rest[0];
    c.partition(&[vec![leader1, f1], rest[1..].to_vec()]);
    for _ in 0..50 {
        let _ = c.propose(leader1);
    }
    c.run_ticks(5);
    for _ in 0..50 {
        one(&mut c, 3);
    }
    let leader2 = check_one_leader(&mut c, &rest[1..]);
    let other = others(&rest[1..], leader2)[0];
    let f2 = others(&others(&rest[1..], leader2), other)[0];
    // Leader2 and one follower take 50 uncommitted entries.
    c.partition(&[vec![leader2, f2], vec![leader1], vec![f1], vec![other]]);
    for _ in 0..50 {
        let _ = c.propose(leader2);
    }
    c.run_ticks(5);
    // The original leader, its follower and `other` form a majority.
    let divergent = [leader1, f1]
        .iter()
        .map(|&id| (id, divergent_terms(&c, id)))
        .collect::<Vec<_>>();
    let before = c.rejections_sent().clone();
    c.partition(&[vec![leader1, f1, other], vec![leader2], vec![f2]]);
    for _ in 0..50 {
        one(&mut c, 3);
    }
    for (id, terms) in divergent {
        let sent = c.rejections_sent().get(&id).copied().unwrap_or(0)
            - before.get(&id).copied().unwrap_or(0);
        assert!(
            sent <= 2 * terms.max(1) as u64,
            "node {id} sent {sent} rejections for {terms} divergent terms"
        );
    }
    c.heal();
    one(&mut c, 5);
}

#[test]
fn r13_rpc_counts_for_election_agreement_and_idle() {
    // election <= 30 RPCs; 12 entries in one term <= 42 RPCs; 1 s idle <= 60 RPCs; the
    // leader sends <= 10 heartbeats/s per peer (lab rule: heartbeat every 100 ms here).
    // RPCs are requests; responses ride on them as in the lab's RPC count.
    let requests = |c: &distsync_sim::raft::Cluster| {
        let kinds = &c.net.stats().by_kind;
        [
            "PreVote",
            "RequestVote",
            "AppendEntries",
            "Heartbeat",
            "InstallSnapshot",
            "TimeoutNow",
        ]
        .iter()
        .map(|k| kinds.get(k).map_or(0, |s| s.messages))
        .sum::<u64>()
    };
    let mut c = cluster_with(3, 113, |o| o.raft.heartbeat_interval_ticks = 10);
    let leader = check_one_leader(&mut c, &ids(3));
    let election = requests(&c);
    assert!(election <= 30, "election took {election} RPCs");
    c.run_ticks(20);
    let term = c.status(leader).unwrap().term;
    c.net.reset_stats();
    // The 12 proposals arrive together (the lab starts them without waiting), and the shell
    // drains its proposal queue before taking the next Ready, so they travel in one batch.
    for (_, result) in c.propose_batch(leader, 12) {
        result.expect("the leader accepts");
    }
    c.run_until_cond(COMMIT_BOUND_TICKS, |c| {
        c.committed_values()
            .values()
            .filter(|v| v.is_some())
            .count()
            == 12
    });
    assert_eq!(c.status(leader).unwrap().term, term, "term changed");
    let agreement = requests(&c);
    assert!(agreement <= 42, "12 entries took {agreement} RPCs");
    c.run_ticks(10);
    c.net.reset_stats();
    c.run_ticks(100);
    let idle = requests(&c);
    assert!(idle <= 60, "1 s idle took {idle} RPCs");
    for peer in others(&ids(3), leader) {
        let hb = c
            .net
            .stats()
            .by_link
            .get(&(leader.0, peer.0))
            .map_or(0, |s| s.messages);
        assert!(hb <= 10, "leader sent {hb} messages/s to {peer}");
    }
    assert_eq!(c.status(leader).unwrap().role, Role::Leader);
    let _ = TICK_US;
}
