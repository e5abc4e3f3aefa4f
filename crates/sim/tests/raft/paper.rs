//! R-30..R-39: paper-section tests that drive single nodes directly through `step` and `tick`
//! (no network; election timeout 10 ticks, heartbeat 1 tick, PreVote and CheckQuorum off so the
//! paper's plain protocol is what is observed).

use bytes::Bytes;
use distsync_raft::{
    CampaignKind, Entry, EntryPayload, HardState, LogIndex, Membership, Message, MessageBody,
    NodeId, PersistedState, RaftConfig, RaftNode, Role, Term,
};

fn config(id: u64) -> RaftConfig {
    let mut c = RaftConfig::new(NodeId(id));
    c.election_timeout_ticks = 10;
    c.heartbeat_interval_ticks = 1;
    c.pre_vote = false;
    c.check_quorum = false;
    c
}

fn members(n: u64) -> Membership {
    Membership::with_voters((1..=n).map(NodeId))
}

/// A node of an `n`-node cluster restored with the given log (entry terms from index 1) and term.
fn node_with_log(id: u64, n: u64, terms: &[u64], term: u64, seed: u64) -> RaftNode {
    let entries = terms
        .iter()
        .enumerate()
        .map(|(i, &t)| Entry {
            term: Term(t),
            index: LogIndex(i as u64 + 1),
            payload: EntryPayload::Noop,
        })
        .collect();
    let persisted = PersistedState {
        hard_state: HardState {
            term: Term(term),
            voted_for: None,
            commit: LogIndex(0),
        },
        snapshot: None,
        entries,
    };
    RaftNode::restore(config(id), members(n), persisted, seed).expect("valid persisted state")
}

/// Carries out every Ready (persisting nothing: these tests do not crash) and returns the
/// messages and the last hard state handed out.
fn drain(node: &mut RaftNode) -> (Vec<Message>, Option<HardState>) {
    let mut messages = Vec::new();
    let mut hard_state = None;
    while node.has_ready() {
        let ready = node.ready();
        messages.extend(ready.messages.iter().cloned());
        if ready.hard_state.is_some() {
            hard_state.clone_from(&ready.hard_state);
        }
        node.advance(ready);
    }
    (messages, hard_state)
}

fn tick_until_campaign(node: &mut RaftNode, max: u64) -> Option<u64> {
    for t in 1..=max {
        node.tick();
        let (messages, _) = drain(node);
        if messages
            .iter()
            .any(|m| matches!(m.body, MessageBody::RequestVote { .. }))
        {
            return Some(t);
        }
    }
    None
}

fn vote_request(from: u64, to: u64, term: u64, last_index: u64, last_term: u64) -> Message {
    Message {
        from: NodeId(from),
        to: NodeId(to),
        term: Term(term),
        body: MessageBody::RequestVote {
            kind: CampaignKind::Election,
            last_log_index: LogIndex(last_index),
            last_log_term: Term(last_term),
        },
    }
}

fn vote_response(from: u64, to: u64, term: u64, granted: bool) -> Message {
    Message {
        from: NodeId(from),
        to: NodeId(to),
        term: Term(term),
        body: MessageBody::RequestVoteResponse {
            pre_vote: false,
            granted,
        },
    }
}

fn granted_to(messages: &[Message], to: u64) -> Option<bool> {
    messages.iter().rev().find_map(|m| match m.body {
        MessageBody::RequestVoteResponse { granted, .. } if m.to == NodeId(to) => Some(granted),
        _ => None,
    })
}

fn append(
    from: u64,
    to: u64,
    term: u64,
    prev: (u64, u64),
    entries: &[(u64, u64)],
    commit: u64,
) -> Message {
    Message {
        from: NodeId(from),
        to: NodeId(to),
        term: Term(term),
        body: MessageBody::AppendEntries {
            prev_log_index: LogIndex(prev.0),
            prev_log_term: Term(prev.1),
            entries: entries
                .iter()
                .map(|&(i, t)| Entry {
                    term: Term(t),
                    index: LogIndex(i),
                    payload: EntryPayload::Noop,
                })
                .collect(),
            leader_commit: LogIndex(commit),
            read_round: 0,
        },
    }
}

/// Makes node 1 of an `n`-node cluster leader of the next term by granting it every vote.
fn elect(node: &mut RaftNode, n: u64) {
    tick_until_campaign(node, 100).expect("campaigns");
    let term = node.status().term.0;
    for peer in 2..=n {
        node.step(vote_response(peer, 1, term, true));
    }
    drain(node);
    assert_eq!(node.status().role, Role::Leader);
}

#[test]
fn r30_higher_term_makes_follower_and_stale_term_changes_nothing() {
    // R-30 (§5.1): a node seeing a higher term adopts it and follows; stale-term messages change
    // nothing.
    for start_role in ["follower", "candidate", "leader"] {
        let mut node = node_with_log(1, 3, &[], 0, 30);
        if start_role != "follower" {
            tick_until_campaign(&mut node, 100).expect("campaigns");
        }
        if start_role == "leader" {
            node.step(vote_response(2, 1, node.status().term.0, true));
            drain(&mut node);
            assert_eq!(node.status().role, Role::Leader);
        }
        node.step(append(2, 1, 9, (0, 0), &[], 0));
        drain(&mut node);
        let s = node.status();
        assert_eq!(
            (s.term, s.role),
            (Term(9), Role::Follower),
            "from {start_role}"
        );
        let before = node.status();
        node.step(append(3, 1, 4, (0, 0), &[(1, 4)], 1));
        node.step(vote_request(3, 1, 5, 10, 5));
        drain(&mut node);
        let after = node.status();
        assert_eq!(
            (
                before.term,
                before.last_index,
                before.commit,
                before.voted_for
            ),
            (after.term, after.last_index, after.commit, after.voted_for)
        );
    }
}

#[test]
fn r31_start_as_follower_heartbeat_and_election_start() {
    // R-31 (§5.2): starts follower; a leader heartbeats every peer each heartbeat tick; an expired
    // follower increments its term, votes for itself and asks every peer.
    let mut node = RaftNode::new(config(1), members(3), 31).unwrap();
    assert_eq!(node.status().role, Role::Follower);
    tick_until_campaign(&mut node, 100).expect("campaigns");
    let s = node.status();
    assert_eq!(
        (s.role, s.term, s.voted_for),
        (Role::Candidate, Term(1), Some(NodeId(1)))
    );
    let mut node = RaftNode::new(config(1), members(3), 32).unwrap();
    node.tick();
    let mut asked = Vec::new();
    for _ in 0..100 {
        node.tick();
        let (messages, _) = drain(&mut node);
        asked = messages
            .iter()
            .filter(|m| matches!(m.body, MessageBody::RequestVote { .. }))
            .map(|m| m.to)
            .collect();
        if !asked.is_empty() {
            break;
        }
    }
    asked.sort();
    assert_eq!(asked, vec![NodeId(2), NodeId(3)]);
    node.step(vote_response(2, 1, 1, true));
    drain(&mut node);
    assert_eq!(node.status().role, Role::Leader);
    node.tick();
    let (messages, _) = drain(&mut node);
    let mut to: Vec<_> = messages
        .iter()
        .filter(|m| matches!(m.body, MessageBody::AppendEntries { .. }))
        .map(|m| m.to)
        .collect();
    to.sort();
    to.dedup();
    assert_eq!(
        to,
        vec![NodeId(2), NodeId(3)],
        "heartbeat must reach every peer"
    );
}

#[test]
fn r32_one_round_outcome_matches_the_majority_rule() {
    // R-32 (§5.2): for sizes 1, 3, 5 and vote patterns, leader iff yes-votes (with its own) form
    // a majority.
    for n in [1u64, 3, 5] {
        for yes in 0..n {
            let mut node = RaftNode::new(config(1), members(n), 320 + n * 10 + yes).unwrap();
            tick_until_campaign(&mut node, 100).or(Some(0));
            if n == 1 {
                assert_eq!(node.status().role, Role::Leader);
                continue;
            }
            let term = node.status().term.0;
            for peer in 2..=n {
                node.step(vote_response(peer, 1, term, peer - 1 <= yes));
            }
            drain(&mut node);
            let won = yes + 1 > n / 2;
            assert_eq!(node.status().role == Role::Leader, won, "n {n} yes {yes}");
        }
    }
}

#[test]
fn r33_one_vote_per_term_even_across_restart() {
    // R-33 (§5.2): first come first served, at most one vote per term, and the vote survives a
    // crash because it is persisted before the reply.
    let mut node = RaftNode::new(config(1), members(3), 33).unwrap();
    node.step(vote_request(2, 1, 1, 0, 0));
    let (messages, hard_state) = drain(&mut node);
    assert_eq!(granted_to(&messages, 2), Some(true));
    node.step(vote_request(3, 1, 1, 0, 0));
    let (messages, _) = drain(&mut node);
    assert_eq!(granted_to(&messages, 3), Some(false));
    let hard_state = hard_state.expect("the vote is handed out for persisting");
    assert_eq!(hard_state.voted_for, Some(NodeId(2)));
    let persisted = PersistedState {
        hard_state,
        snapshot: None,
        entries: vec![],
    };
    let mut restarted = RaftNode::restore(config(1), members(3), persisted, 34).unwrap();
    restarted.step(vote_request(3, 1, 1, 0, 0));
    let (messages, _) = drain(&mut restarted);
    assert_eq!(
        granted_to(&messages, 3),
        Some(false),
        "second vote after restart"
    );
}

#[test]
fn r34_randomized_timeouts_cover_the_range_and_rarely_collide() {
    // R-34 (§5.2): with election = 10 ticks, 500 resets cover every value in [10, 20); with
    // 5 nodes x 1000 rounds, at most 30 % of rounds have more than one node time out first.
    let mut seen = std::collections::BTreeSet::new();
    for seed in 0..500 {
        let mut node = RaftNode::new(config(1), members(3), seed).unwrap();
        let t = tick_until_campaign(&mut node, 100).expect("campaigns");
        assert!((10..20).contains(&t), "timeout {t}");
        seen.insert(t);
    }
    assert_eq!(seen.len(), 10, "values seen: {seen:?}");
    let mut collisions = 0;
    for round in 0..1000u64 {
        let times: Vec<u64> = (1..=5)
            .map(|id| {
                let mut node = RaftNode::new(config(id), members(5), round * 7 + id).unwrap();
                tick_until_campaign(&mut node, 100).expect("campaigns")
            })
            .collect();
        let first = *times.iter().min().unwrap();
        if times.iter().filter(|&&t| t == first).count() > 1 {
            collisions += 1;
        }
    }
    assert!(collisions <= 300, "{collisions} of 1000 rounds collided");
}

#[test]
fn r35_leader_replicates_and_commits_at_majority() {
    // R-35 (§5.3): the leader persists and sends new entries with prev index/term; commits at a
    // majority, and commit of i commits everything below.
    let mut node = RaftNode::new(config(1), members(3), 35).unwrap();
    elect(&mut node, 3);
    let noop = node.status().last_index;
    let p1 = node.propose(Bytes::from_static(b"a")).unwrap();
    let p2 = node.propose(Bytes::from_static(b"b")).unwrap();
    let ready = node.ready();
    assert!(
        ready.entries.iter().any(|e| e.index == p2.index),
        "entries handed out to persist"
    );
    let prevs: Vec<_> = ready
        .messages
        .iter()
        .filter_map(|m| match &m.body {
            MessageBody::AppendEntries {
                prev_log_index,
                entries,
                ..
            } if !entries.is_empty() => Some((*prev_log_index, entries.first().unwrap().index)),
            _ => None,
        })
        .collect();
    assert!(
        prevs.iter().all(|(prev, first)| prev.next() == *first),
        "{prevs:?}"
    );
    node.advance(ready);
    drain(&mut node);
    assert!(node.status().commit < p1.index);
    let term = node.status().term.0;
    node.step(Message {
        from: NodeId(2),
        to: NodeId(1),
        term: Term(term),
        body: MessageBody::AppendEntriesResponse {
            success: true,
            match_index: p2.index,
            conflict: None,
            read_round: 0,
        },
    });
    let ready = node.ready();
    let applied: Vec<_> = ready.committed_entries.iter().map(|e| e.index).collect();
    node.advance(ready);
    assert_eq!(node.status().commit, p2.index);
    assert!(applied.contains(&noop) && applied.contains(&p1.index) && applied.contains(&p2.index));
}

#[test]
fn r36_consistency_check_rejects_mismatch_and_truncates_conflicts() {
    // R-36 (§5.3): a follower rejects a mismatched previous entry and, on a conflict, replaces
    // its conflicting suffix. (Repair of whole divergent logs runs in .)
    let mut node = node_with_log(2, 3, &[1, 1, 1], 1, 36);
    node.step(append(1, 2, 2, (3, 2), &[(4, 2)], 0));
    let (messages, _) = drain(&mut node);
    assert!(messages.iter().any(|m| matches!(
        m.body,
        MessageBody::AppendEntriesResponse { success: false, .. }
    )));
    assert_eq!(node.status().last_index, LogIndex(3));
    node.step(append(1, 2, 2, (1, 1), &[(2, 2)], 0));
    drain(&mut node);
    let (_, entries) = node.log_entries();
    let terms: Vec<u64> = entries.iter().map(|e| e.term.0).collect();
    assert_eq!(terms, vec![1, 2], "conflicting suffix not replaced");
}

#[test]
fn r37_voters_refuse_candidates_with_older_logs() {
    // R-37 (§5.4.1): a vote goes only to candidates at least as up to date, compared as
    // (last term, last index).
    for (last_index, last_term, expect) in
        [(5, 1, false), (2, 2, false), (3, 2, true), (1, 3, true)]
    {
        let mut node = node_with_log(1, 3, &[1, 2, 2], 2, 37);
        node.step(vote_request(2, 1, 3, last_index, last_term));
        let (messages, _) = drain(&mut node);
        assert_eq!(
            granted_to(&messages, 2),
            Some(expect),
            "candidate ({last_term}, {last_index})"
        );
    }
}

#[test]
fn r38_new_leader_does_not_commit_old_term_entries_by_counting() {
    // R-38 (§5.4.2, Figure 8): a replica count of a previous-term entry commits nothing; once the
    // leader's own no-op reaches a majority everything up to it commits.
    let mut node = node_with_log(1, 5, &[1, 2], 2, 38);
    elect(&mut node, 5);
    let term = node.status().term.0;
    let noop = node.status().last_index;
    let ack = |from: u64, index: u64| Message {
        from: NodeId(from),
        to: NodeId(1),
        term: Term(term),
        body: MessageBody::AppendEntriesResponse {
            success: true,
            match_index: LogIndex(index),
            conflict: None,
            read_round: 0,
        },
    };
    node.step(ack(2, 2));
    node.step(ack(3, 2));
    drain(&mut node);
    assert!(
        node.status().commit < LogIndex(2),
        "old-term entry committed by counting"
    );
    node.step(ack(2, noop.0));
    node.step(ack(3, noop.0));
    drain(&mut node);
    assert_eq!(node.status().commit, noop);
}

#[test]
fn r39_old_and_reordered_messages_do_not_regress_state() {
    // duplicated, stale and reordered appends leave the same log as in-order delivery.
    let mut in_order = node_with_log(2, 3, &[], 1, 39);
    in_order.step(append(1, 2, 1, (0, 0), &[(1, 1)], 0));
    in_order.step(append(1, 2, 1, (1, 1), &[(2, 1), (3, 1)], 1));
    drain(&mut in_order);
    let mut reordered = node_with_log(2, 3, &[], 1, 39);
    reordered.step(append(1, 2, 1, (1, 1), &[(2, 1), (3, 1)], 1));
    reordered.step(append(1, 2, 1, (0, 0), &[(1, 1)], 0));
    reordered.step(append(1, 2, 1, (1, 1), &[(2, 1), (3, 1)], 1));
    reordered.step(append(1, 2, 1, (0, 0), &[(1, 1)], 0));
    drain(&mut reordered);
    let a = in_order.status();
    let b = reordered.status();
    assert_eq!((a.last_index, a.term), (b.last_index, b.term));
    assert!(b.commit >= LogIndex(1));
    // Dueling candidates: a second candidate in the same term gets no vote.
    let mut voter = node_with_log(3, 3, &[], 0, 391);
    voter.step(vote_request(1, 3, 1, 0, 0));
    voter.step(vote_request(2, 3, 1, 0, 0));
    let (messages, _) = drain(&mut voter);
    assert_eq!(granted_to(&messages, 1), Some(true));
    assert_eq!(granted_to(&messages, 2), Some(false));
}
