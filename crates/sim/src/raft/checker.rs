//! The invariants I1–I7 of TESTING.md R-00, checked after every simulator step.
//!
//! The checker keeps its own record of the whole run (every leader of every term, every entry
//! ever appended, every entry ever applied) so that it judges history, not just the present:
//! a term with two leaders fails even if the first leader is long gone.

use distsync_raft::{
    CampaignKind, Entry, EntryPayload, HardState, LogIndex, Membership, Message, MessageBody,
    NodeId, Role, Status, Term,
};
use std::collections::{BTreeMap, BTreeSet};
use std::hash::{DefaultHasher, Hash, Hasher};

/// A current leader's log as the checker needs it: (leader, term, snapshot index, (index, term)
/// of every entry after the snapshot).
pub type LeaderLog = (NodeId, Term, LogIndex, Vec<(LogIndex, Term)>);

/// A broken invariant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Which invariant: `I1`…`I7` with a short name.
    pub invariant: &'static str,
    /// What was seen.
    pub detail: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.invariant, self.detail)
    }
}

fn violation(invariant: &'static str, detail: String) -> Result<(), Violation> {
    Err(Violation { invariant, detail })
}

/// A stable hash of an entry's payload (the same bytes give the same hash in every run).
pub fn payload_hash(payload: &EntryPayload) -> u64 {
    let mut h = DefaultHasher::new();
    match payload {
        EntryPayload::Noop => 0u8.hash(&mut h),
        EntryPayload::Command(data) => {
            1u8.hash(&mut h);
            data.as_ref().hash(&mut h);
        }
        EntryPayload::Membership(m) => {
            2u8.hash(&mut h);
            m.voters.hash(&mut h);
            m.learners.hash(&mut h);
        }
    }
    h.finish()
}

/// An entry known committed: the first node to apply it fixed these.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommittedEntry {
    /// Term of the entry.
    pub term: Term,
    /// Hash of its payload.
    pub payload: u64,
    /// Hash of the state machine after applying it.
    pub state_hash: u64,
    /// Term of the first applier when it applied the entry: at least the term in which the entry
    /// was committed.
    pub commit_term: Term,
}

/// Which optional, stricter checks run (all on by default; the negative controls also measure
/// detection with them off, to show I1–I7 alone bite).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckerOptions {
    /// Persistence contract: a message is sent only after the term, vote and entries it depends on
    /// are durable (part of I6).
    pub persist_before_send: bool,
    /// §5.4.2: a leader advances its commit index only to an entry of its own term.
    pub leader_commits_own_term_only: bool,
}

impl Default for CheckerOptions {
    fn default() -> Self {
        CheckerOptions {
            persist_before_send: true,
            leader_commits_own_term_only: true,
        }
    }
}

/// The run-long record the invariants are judged against.
#[derive(Debug, Default)]
pub struct Checker {
    /// Which optional checks run.
    pub options: CheckerOptions,
    /// I1: the leader of each term, over the whole run.
    leaders: BTreeMap<Term, NodeId>,
    /// I2: per node, the (term, last index) it had while leader.
    leader_tail: BTreeMap<NodeId, (Term, LogIndex)>,
    /// I3: every (index, term) ever appended anywhere -> (payload hash, term of index - 1).
    appended: BTreeMap<(LogIndex, Term), (u64, Term)>,
    /// I4/I5: committed entries, fixed by the first node that applied each index.
    committed: BTreeMap<LogIndex, CommittedEntry>,
    /// Membership entries among the committed ones, to judge quorums (I7).
    committed_memberships: BTreeMap<LogIndex, Membership>,
    bootstrap_membership: Membership,
    /// I6: the last durable hard state of each node.
    durable_hard_state: BTreeMap<NodeId, HardState>,
    /// I6: votes granted, by (voter, term), over all incarnations.
    votes_granted: BTreeMap<(NodeId, Term), NodeId>,
    /// I6: the highest commit index any node ever reported, and the entry there.
    max_commit: LogIndex,
    /// Leaders already checked for completeness (I4) on election.
    completeness_checked: BTreeSet<(Term, NodeId)>,
    /// Leader commit index per node, for the §5.4.2 rule.
    leader_commit: BTreeMap<NodeId, (Term, LogIndex)>,
    /// Every (index -> term) any node ever reported committed (its commit index covers it).
    /// Index -> (entry term, term of the first reporter). The reporter's term is at least the
    /// term in which the entry was committed, so I4 demands it from leaders of later terms only.
    commit_terms: BTreeMap<LogIndex, (Term, Term)>,
    /// Per node, the commit index already folded into `commit_terms`.
    commit_seen: BTreeMap<NodeId, LogIndex>,
}

impl Checker {
    /// A checker for a cluster bootstrapped with `membership`.
    pub fn new(membership: Membership, options: CheckerOptions) -> Self {
        Checker {
            options,
            bootstrap_membership: membership,
            ..Checker::default()
        }
    }

    /// The leader of every term seen so far.
    pub fn leaders(&self) -> &BTreeMap<Term, NodeId> {
        &self.leaders
    }

    /// Entries known committed.
    pub fn committed(&self) -> &BTreeMap<LogIndex, CommittedEntry> {
        &self.committed
    }

    /// Highest commit index reported by any node.
    pub fn max_commit(&self) -> LogIndex {
        self.max_commit
    }

    /// I1 and I2 on a node's status, plus the §5.4.2 commit rule; called after every step that
    /// touched the node. `term_at` looks up the term of an index in the node's log.
    pub fn check_status(
        &mut self,
        status: &Status,
        term_at: impl Fn(LogIndex) -> Option<Term>,
    ) -> Result<(), Violation> {
        if status.commit > self.max_commit {
            self.max_commit = status.commit;
        }
        if status.role != Role::Leader {
            self.leader_tail.remove(&status.id);
            self.leader_commit.remove(&status.id);
            return Ok(());
        }
        match self.leaders.get(&status.term) {
            Some(&other) if other != status.id => {
                return violation(
                    "I1 election safety",
                    format!(
                        "nodes {other} and {} are both leader of term {}",
                        status.id, status.term
                    ),
                );
            }
            Some(_) => {}
            None => {
                self.leaders.insert(status.term, status.id);
            }
        }
        match self.leader_tail.get(&status.id) {
            Some(&(term, last)) if term == status.term && status.last_index < last => {
                return violation(
                    "I2 leader append-only",
                    format!(
                        "leader {} of term {term} shrank its log from {last} to {}",
                        status.id, status.last_index
                    ),
                );
            }
            _ => {
                self.leader_tail
                    .insert(status.id, (status.term, status.last_index));
            }
        }
        if self.options.leader_commits_own_term_only {
            let previous = self.leader_commit.get(&status.id).copied();
            let advanced = match previous {
                Some((term, commit)) if term == status.term => status.commit > commit,
                _ => false,
            };
            if advanced
                && let Some(term) = term_at(status.commit)
                && term != status.term
            {
                return violation(
                    "I4 leader commit rule (§5.4.2)",
                    format!(
                        "leader {} of term {} advanced its commit index to {} whose entry \
                                 has term {term}",
                        status.id, status.term, status.commit
                    ),
                );
            }
            self.leader_commit
                .insert(status.id, (status.term, status.commit));
        }
        Ok(())
    }

    /// I4/I5 on commit indexes: every entry a node reports committed (at or below its commit
    /// index) is the same at that index on every node, for the whole run. `term_at` reads the
    /// node's log (`None` where it was compacted). A restart resets the node's mark.
    pub fn check_commit(
        &mut self,
        node: NodeId,
        node_term: Term,
        commit: LogIndex,
        term_at: impl Fn(LogIndex) -> Option<Term>,
    ) -> Result<(), Violation> {
        let seen = self.commit_seen.get(&node).copied().unwrap_or(LogIndex(0));
        if commit <= seen {
            return Ok(());
        }
        let mut index = seen.next();
        while index <= commit {
            if let Some(term) = term_at(index) {
                match self.commit_terms.get(&index) {
                    Some(&(known, _)) if known != term => {
                        return violation(
                            "I5 state machine safety (commit)",
                            format!(
                                "node {node} committed ({index}, term {term}) but ({index}, term \
                                 {known}) was committed before"
                            ),
                        );
                    }
                    Some(_) => {}
                    None => {
                        self.commit_terms.insert(index, (term, node_term));
                    }
                }
            }
            index = index.next();
        }
        self.commit_seen.insert(node, commit);
        Ok(())
    }

    /// Forgets a node's commit mark (it restarted and reports from its persisted commit again).
    pub fn on_restart(&mut self, node: NodeId) {
        self.commit_seen.remove(&node);
    }

    /// I4 on election: a leader's log holds every entry committed so far. Runs once per
    /// (term, leader); `log` is the leader's snapshot index and entries.
    pub fn check_new_leader(
        &mut self,
        status: &Status,
        snapshot_index: LogIndex,
        entries: &[Entry],
    ) -> Result<(), Violation> {
        if status.role != Role::Leader
            || !self.completeness_checked.insert((status.term, status.id))
        {
            return Ok(());
        }
        let applied = self
            .committed
            .range(snapshot_index.next()..)
            .map(|(&i, c)| (i, c.term, c.commit_term));
        let reported = self
            .commit_terms
            .range(snapshot_index.next()..)
            .map(|(&i, &(t, by))| (i, t, by));
        for (index, committed_term, commit_term) in applied.chain(reported) {
            if commit_term >= status.term {
                // Committed in this leader's term or later: not required of it.
                continue;
            }
            let term = entry_term(entries, index);
            if term != Some(committed_term) {
                return violation(
                    "I4 leader completeness",
                    format!(
                        "leader {} of term {} lacks committed entry {index} (term {}); has {term:?}",
                        status.id, status.term, committed_term
                    ),
                );
            }
        }
        Ok(())
    }

    /// I3 and I2 on entries a node hands out for persisting. `prev_term` is the term of the entry
    /// just before `entries[0]` in the node's log; `was_leader_tail` is the node's last index
    /// before this batch if it is the leader of `term` (a leader only ever appends).
    pub fn check_appended(
        &mut self,
        node: NodeId,
        entries: &[Entry],
        prev_term: Term,
        leader_of: Option<(Term, LogIndex)>,
    ) -> Result<(), Violation> {
        if let (Some((term, persisted_last)), Some(first)) = (leader_of, entries.first())
            && first.index <= persisted_last
        {
            return violation(
                "I2 leader append-only",
                format!(
                    "leader {node} of term {term} rewrote its log from index {} (persisted up \
                         to {persisted_last})",
                    first.index
                ),
            );
        }
        let mut prev = prev_term;
        for entry in entries {
            let record = (payload_hash(&entry.payload), prev);
            match self.appended.get(&(entry.index, entry.term)) {
                Some(&known) if known != record => {
                    let what = if known.0 != record.0 {
                        "a different command"
                    } else {
                        "a different preceding entry"
                    };
                    return violation(
                        "I3 log matching",
                        format!(
                            "node {node} holds entry ({}, term {}) with {what} than another log \
                             (previous term {} vs {})",
                            entry.index, entry.term, prev, known.1
                        ),
                    );
                }
                Some(_) => {}
                None => {
                    self.appended.insert((entry.index, entry.term), record);
                }
            }
            prev = entry.term;
        }
        Ok(())
    }

    /// I5 on one applied entry, and, when it is the first application of its index anywhere, I7
    /// (durable on a majority) and I4 (present in every current leader's log). `durable_on` says
    /// which nodes hold the entry durably; `memberships` are the configurations that may be in
    /// force (the latest of every live node), `leaders` the current leaders' logs.
    #[allow(clippy::too_many_arguments)] // one call site; a struct would only rename the list
    pub fn check_applied(
        &mut self,
        node: NodeId,
        node_term: Term,
        entry: &Entry,
        state_hash: u64,
        durable_on: &BTreeSet<NodeId>,
        memberships: &[Membership],
        leaders: &[LeaderLog],
    ) -> Result<(), Violation> {
        let payload = payload_hash(&entry.payload);
        if let Some(known) = self.committed.get(&entry.index) {
            if known.term != entry.term || known.payload != payload {
                return violation(
                    "I5 state machine safety",
                    format!(
                        "node {node} applied ({}, term {}) but ({}, term {}) was applied at that \
                         index before",
                        entry.index, entry.term, entry.index, known.term
                    ),
                );
            }
            if known.state_hash != state_hash {
                return violation(
                    "I5 state machine safety",
                    format!(
                        "node {node}'s state after index {} differs from the first applier's",
                        entry.index
                    ),
                );
            }
            return Ok(());
        }
        // First application anywhere: the entry is committed from now on.
        let config_at = self.membership_at(entry.index);
        let quorum_ok = std::iter::once(&config_at)
            .chain(memberships.iter())
            .any(|m| m.voters.iter().filter(|v| durable_on.contains(v)).count() >= m.quorum());
        if !quorum_ok {
            return violation(
                "I7 quorum",
                format!(
                    "entry ({}, term {}) first applied by node {node} is durable only on {:?}; \
                     voters {:?}",
                    entry.index, entry.term, durable_on, config_at.voters
                ),
            );
        }
        for (leader, term, snapshot_index, log) in leaders {
            if *term > node_term && entry.index > *snapshot_index {
                let has = log
                    .binary_search_by_key(&entry.index, |(i, _)| *i)
                    .ok()
                    .map(|k| log[k].1);
                if has != Some(entry.term) {
                    return violation(
                        "I4 leader completeness",
                        format!(
                            "entry ({}, term {}) committed now, but leader {leader} of term {term} \
                             has {has:?} there",
                            entry.index, entry.term
                        ),
                    );
                }
            }
        }
        if let EntryPayload::Membership(m) = &entry.payload {
            self.committed_memberships.insert(entry.index, m.clone());
        }
        self.committed.insert(
            entry.index,
            CommittedEntry {
                term: entry.term,
                payload,
                state_hash,
                commit_term: node_term,
            },
        );
        Ok(())
    }

    /// I5 on a snapshot install: the snapshot's state equals the state every node reached at
    /// its last index.
    pub fn check_snapshot_state(
        &self,
        node: NodeId,
        last_index: LogIndex,
        last_term: Term,
        state_hash: u64,
    ) -> Result<(), Violation> {
        if let Some(known) = self.committed.get(&last_index) {
            if known.term != last_term || known.state_hash != state_hash {
                return violation(
                    "I5 state machine safety",
                    format!(
                        "node {node} installed a snapshot at {last_index} (term {last_term}) that \
                         differs from the applied state there (term {})",
                        known.term
                    ),
                );
            }
        } else if last_index > LogIndex(0) {
            return violation(
                "I5 state machine safety",
                format!("node {node} installed a snapshot at {last_index}, never applied anywhere"),
            );
        }
        Ok(())
    }

    /// The membership in force at `index` according to the committed log.
    pub fn membership_at(&self, index: LogIndex) -> Membership {
        self.committed_memberships
            .range(..=index)
            .next_back()
            .map(|(_, m)| m.clone())
            .unwrap_or_else(|| self.bootstrap_membership.clone())
    }

    /// I6 on a hard state that just became durable: the term never decreases and a vote cast in
    /// a term never changes.
    pub fn check_durable_hard_state(
        &mut self,
        node: NodeId,
        hard_state: &HardState,
    ) -> Result<(), Violation> {
        if let Some(previous) = self.durable_hard_state.get(&node) {
            if hard_state.term < previous.term {
                return violation(
                    "I6 durability",
                    format!(
                        "node {node}'s persisted term went from {} to {}",
                        previous.term, hard_state.term
                    ),
                );
            }
            if hard_state.term == previous.term
                && previous.voted_for.is_some()
                && hard_state.voted_for != previous.voted_for
            {
                return violation(
                    "I6 durability",
                    format!(
                        "node {node}'s persisted vote in term {} changed from {:?} to {:?}",
                        hard_state.term, previous.voted_for, hard_state.voted_for
                    ),
                );
            }
        }
        self.durable_hard_state.insert(node, hard_state.clone());
        Ok(())
    }

    /// I6 on a message about to be sent: a vote is granted at most once per term (across
    /// restarts), and, with `persist_before_send`, only after the term and vote are durable; an
    /// append is acknowledged only once the entries are durable.
    pub fn check_send(
        &mut self,
        message: &Message,
        durable: &HardState,
        durable_last_index: LogIndex,
    ) -> Result<(), Violation> {
        if let MessageBody::RequestVoteResponse {
            pre_vote: false,
            granted: true,
        } = message.body
        {
            let key = (message.from, message.term);
            match self.votes_granted.get(&key) {
                Some(&candidate) if candidate != message.to => {
                    return violation(
                        "I6 durability (one vote per term)",
                        format!(
                            "node {} granted its term-{} vote to {candidate} and then to {}",
                            message.from, message.term, message.to
                        ),
                    );
                }
                _ => {
                    self.votes_granted.insert(key, message.to);
                }
            }
            if self.options.persist_before_send
                && (durable.term != message.term || durable.voted_for != Some(message.to))
            {
                return violation(
                    "I6 durability (persist before send)",
                    format!(
                        "node {} granted its term-{} vote to {} before persisting it (durable: \
                         term {}, vote {:?})",
                        message.from, message.term, message.to, durable.term, durable.voted_for
                    ),
                );
            }
        }
        if !self.options.persist_before_send {
            return Ok(());
        }
        let is_pre_vote = matches!(
            message.body,
            MessageBody::RequestVote {
                kind: CampaignKind::PreVote,
                ..
            } | MessageBody::RequestVoteResponse { pre_vote: true, .. }
        );
        if !is_pre_vote && message.term > durable.term {
            return violation(
                "I6 durability (persist before send)",
                format!(
                    "node {} sent {} in term {} with durable term {}",
                    message.from,
                    message.body.kind_name(),
                    message.term,
                    durable.term
                ),
            );
        }
        if let MessageBody::AppendEntriesResponse {
            success: true,
            match_index,
            ..
        } = message.body
            && match_index > durable_last_index
        {
            return violation(
                "I6 durability (persist before send)",
                format!(
                    "node {} acknowledged entries up to {match_index} with only {} durable",
                    message.from, durable_last_index
                ),
            );
        }
        Ok(())
    }

    /// I6 after a crash: the highest committed entry is still durable on a majority.
    pub fn check_committed_durable(
        &self,
        holds: impl Fn(NodeId, LogIndex, Term) -> bool,
        memberships: &[Membership],
    ) -> Result<(), Violation> {
        let Some((&index, entry)) = self.committed.iter().next_back() else {
            return Ok(());
        };
        let config_at = self.membership_at(index);
        let ok = std::iter::once(&config_at)
            .chain(memberships.iter())
            .any(|m| {
                m.voters
                    .iter()
                    .filter(|&&v| holds(v, index, entry.term))
                    .count()
                    >= m.quorum()
            });
        if ok {
            Ok(())
        } else {
            violation(
                "I6 durability",
                format!(
                    "committed entry ({index}, term {}) is no longer durable on a majority",
                    entry.term
                ),
            )
        }
    }
}

/// The term of the entry at `index` in a contiguous slice, if present.
pub fn entry_term(entries: &[Entry], index: LogIndex) -> Option<Term> {
    let first = entries.first()?.index;
    if index < first {
        return None;
    }
    entries.get((index.0 - first.0) as usize).map(|e| e.term)
}
