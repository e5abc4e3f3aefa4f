//! The stepped Raft node: construction, the public API, ticks, and role transitions.
//! Elections live in `election.rs`, replication in `replication.rs`, reads in `read_index.rs`.

use crate::config::RaftConfig;
use crate::entry::{Entry, EntryPayload, HardState, PersistedState, Snapshot, SnapshotMeta};
use crate::error::{ProposeError, RaftError, TransferError};
use crate::log::RaftLog;
use crate::membership::{Membership, MembershipChange};
use crate::message::{Message, MessageBody};
use crate::progress::Progress;
use crate::read_index::ReadTracker;
use crate::ready::Ready;
use crate::types::{LogIndex, NodeId, Term};
use bytes::Bytes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;

/// Terms at or above this are refused as malformed, so that term arithmetic can never overflow
/// (a real cluster would need billions of years of elections to get near it).
const TERM_MAX: u64 = u64::MAX / 2;

/// How many election timeouts a sent snapshot may go unanswered before it is sent again. Long
/// enough for a large snapshot to cross and be persisted (a resend while the first is still in
/// flight costs only bandwidth: the follower ignores a snapshot no newer than its own); short
/// enough that a lost one does not stall the follower for seconds (with ten, 7 of 120 lossy
/// simulation runs missed the commit bound).
const SNAPSHOT_STALL_FACTOR: u64 = 3;

/// The role a node plays in its current term.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Follows a leader (or waits for one).
    Follower,
    /// Runs a pre-vote round without having raised its term.
    PreCandidate,
    /// Campaigns for leadership in its current term.
    Candidate,
    /// Leads its current term.
    Leader,
}

/// A snapshot of a node's volatile state, for the shell, metrics and checkers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// This node.
    pub id: NodeId,
    /// Current role.
    pub role: Role,
    /// Current term.
    pub term: Term,
    /// Vote cast in the current term.
    pub voted_for: Option<NodeId>,
    /// The leader of the current term, if known.
    pub leader: Option<NodeId>,
    /// Highest index known committed.
    pub commit: LogIndex,
    /// Highest index handed to the shell for applying.
    pub applied: LogIndex,
    /// Index of the last entry in the log.
    pub last_index: LogIndex,
    /// Highest index the shell has confirmed persisted.
    pub persisted_index: LogIndex,
    /// The membership in force (the latest one appended).
    pub membership: Membership,
}

/// Where a proposal landed. It is committed once an entry with this index **and term** comes
/// out in `Ready::committed_entries`; a different term at that index means it was overwritten.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Proposal {
    /// Index of the appended entry.
    pub index: LogIndex,
    /// Term of the appended entry.
    pub term: Term,
}

/// A leadership transfer in progress.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Transfer {
    pub(crate) target: NodeId,
    pub(crate) elapsed_ticks: u64,
}

/// One Raft node, driven by its shell through [`tick`](RaftNode::tick),
/// [`step`](RaftNode::step), [`propose`](RaftNode::propose) and the
/// [`ready`](RaftNode::ready)/[`advance`](RaftNode::advance) loop.
#[derive(Debug)]
pub struct RaftNode {
    pub(crate) config: RaftConfig,
    pub(crate) id: NodeId,
    pub(crate) term: Term,
    pub(crate) voted_for: Option<NodeId>,
    pub(crate) role: Role,
    pub(crate) leader: Option<NodeId>,
    pub(crate) log: RaftLog,
    /// Membership a bootstrapped node starts from, before any snapshot or membership entry.
    initial_membership: Membership,
    pub(crate) membership: Membership,
    /// Index of the entry (or snapshot) that set `membership`.
    pub(crate) membership_index: LogIndex,
    /// Leader only: replication progress of every other member.
    pub(crate) progress: BTreeMap<NodeId, Progress>,
    /// Candidate and pre-candidate only: answers received in this round.
    pub(crate) votes: BTreeMap<NodeId, bool>,
    pub(crate) election_elapsed: u64,
    pub(crate) heartbeat_elapsed: u64,
    pub(crate) randomized_election_timeout: u64,
    /// Leader only: first index of the current term (its no-op).
    pub(crate) term_start_index: LogIndex,
    pub(crate) transfer: Option<Transfer>,
    pub(crate) reads: ReadTracker,
    pub(crate) outbox: Vec<Message>,
    /// The hard state last handed to the shell.
    persisted_hard_state: HardState,
    rng: ChaCha8Rng,
}

impl RaftNode {
    /// A node with an empty log. Bootstrap members all pass the same `membership`; a node that
    /// will be added later passes `Membership::default()` and learns the membership from the
    /// leader.
    ///
    /// # Errors
    /// [`RaftError::Config`] when the configuration is unusable.
    pub fn new(
        config: RaftConfig,
        membership: Membership,
        rng_seed: u64,
    ) -> Result<Self, RaftError> {
        Self::restore(config, membership, PersistedState::default(), rng_seed)
    }

    /// A node restarted from what its shell persisted. `membership` is the bootstrap membership,
    /// used only while neither a snapshot nor a membership entry says otherwise.
    ///
    /// # Errors
    /// [`RaftError::Config`] for an unusable configuration; [`RaftError::CorruptState`] when the
    /// persisted entries are not contiguous after the snapshot.
    pub fn restore(
        config: RaftConfig,
        membership: Membership,
        persisted: PersistedState,
        rng_seed: u64,
    ) -> Result<Self, RaftError> {
        config.validate()?;
        let snapshot = persisted.snapshot.unwrap_or_default();
        let mut expected = snapshot.meta.last_index.next();
        for entry in &persisted.entries {
            if entry.index != expected {
                return Err(RaftError::CorruptState(format!(
                    "expected entry {expected}, found {}",
                    entry.index
                )));
            }
            expected = expected.next();
        }
        let mut hard_state = persisted.hard_state;
        let last_term = persisted
            .entries
            .last()
            .map_or(snapshot.meta.last_term, |entry| entry.term);
        if last_term > hard_state.term {
            // A crash between writing a Ready's entries and its hard state leaves entries of a
            // term the hard state never recorded. Nothing that depended on that Ready was sent
            // (it was never fsynced whole), so no vote in that term left this node: adopting the
            // term with no vote is what the lost write would have said at most.
            hard_state.term = last_term;
            hard_state.voted_for = None;
        }
        let log = RaftLog::restore(snapshot, persisted.entries, hard_state.commit);
        let mut node = RaftNode {
            id: config.id,
            term: hard_state.term,
            voted_for: hard_state.voted_for,
            role: Role::Follower,
            leader: None,
            log,
            initial_membership: membership.clone(),
            membership,
            membership_index: LogIndex(0),
            progress: BTreeMap::new(),
            votes: BTreeMap::new(),
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            randomized_election_timeout: config.election_timeout_ticks,
            term_start_index: LogIndex(0),
            transfer: None,
            reads: ReadTracker::default(),
            outbox: Vec::new(),
            persisted_hard_state: hard_state,
            rng: ChaCha8Rng::seed_from_u64(rng_seed),
            config,
        };
        node.recompute_membership();
        node.reset_election_timer();
        Ok(node)
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// This node's role, without building the whole [`Status`].
    pub fn role(&self) -> Role {
        self.role
    }

    /// The volatile state, for the shell and checkers.
    pub fn status(&self) -> Status {
        Status {
            id: self.id,
            role: self.role,
            term: self.term,
            voted_for: self.voted_for,
            leader: self.leader,
            commit: self.log.commit,
            applied: self.log.applied,
            last_index: self.log.last_index(),
            persisted_index: self.log.stable_last(),
            membership: self.membership.clone(),
        }
    }

    /// The in-memory log after the snapshot, with the snapshot's metadata.
    pub fn log_entries(&self) -> (&SnapshotMeta, &[Entry]) {
        (self.log.snapshot_meta(), self.log.entries())
    }

    /// The latest snapshot, if the log was ever compacted or a snapshot installed.
    pub fn snapshot(&self) -> Option<&Snapshot> {
        let snapshot = self.log.snapshot();
        (snapshot.meta.last_index > LogIndex(0)).then_some(snapshot)
    }

    /// Leader only: the highest index known replicated on `id` (`None` off the leader or for a
    /// node that is not a member). Used to promote a learner once it has caught up.
    pub fn follower_match(&self, id: NodeId) -> Option<LogIndex> {
        if self.role != Role::Leader {
            return None;
        }
        if id == self.id {
            return Some(self.log.stable_last());
        }
        self.progress.get(&id).map(|progress| progress.match_index)
    }

    /// Advances logical time by one tick: election timeouts, heartbeats, CheckQuorum and
    /// retransmission are all counted in ticks.
    pub fn tick(&mut self) {
        match self.role {
            Role::Leader => self.tick_leader(),
            _ => self.tick_election(),
        }
    }

    fn tick_leader(&mut self) {
        self.election_elapsed += 1;
        self.heartbeat_elapsed += 1;
        if let Some(transfer) = &mut self.transfer {
            transfer.elapsed_ticks += 1;
            if transfer.elapsed_ticks >= self.config.election_timeout_ticks {
                tracing::debug!(node = %self.id, target = %transfer.target, "leadership transfer abandoned");
                self.transfer = None;
            }
        }
        if self.election_elapsed >= self.config.election_timeout_ticks {
            self.election_elapsed = 0;
            if self.config.check_quorum && !self.check_quorum_active() {
                tracing::info!(node = %self.id, term = self.term.0, "lost contact with a quorum; stepping down");
                self.become_follower(self.term, None);
                return;
            }
        }
        let last_index = self.log.last_index();
        let stall_limit = self.config.election_timeout_ticks;
        for progress in self.progress.values_mut() {
            if progress.has_outstanding(last_index) {
                progress.stalled_ticks += 1;
                // A snapshot can take far longer to transfer than an append; resending it early
                // would only queue more copies behind the first.
                let limit = if progress.state == crate::progress::ReplicationState::Snapshot {
                    stall_limit * SNAPSHOT_STALL_FACTOR
                } else {
                    stall_limit
                };
                if progress.stalled_ticks >= limit {
                    // Appends or their answers were lost: start over from the known match point.
                    progress.become_probe();
                }
            }
        }
        if self.heartbeat_elapsed >= self.config.heartbeat_interval_ticks {
            self.heartbeat_elapsed = 0;
            self.broadcast_heartbeat();
        }
        self.announce_commit();
    }

    /// Whether a quorum of voters was heard from in the last election timeout; resets the marks.
    fn check_quorum_active(&mut self) -> bool {
        let mut active: Vec<NodeId> = self
            .progress
            .iter_mut()
            .filter_map(|(&id, progress)| std::mem::take(&mut progress.recent_active).then_some(id))
            .collect();
        active.push(self.id);
        self.membership.has_quorum(active.iter())
    }

    /// Feeds one message from a peer. Misaddressed, stale and unexpected messages are ignored or
    /// answered as the protocol says; nothing a peer sends makes this panic unless it breaks a
    /// safety invariant that only a faulty peer could break.
    pub fn step(&mut self, message: Message) {
        if message.to != self.id || message.from == self.id || message.term.0 >= TERM_MAX {
            return;
        }
        if message.term > self.term {
            if !self.on_higher_term(&message) {
                return;
            }
        } else if message.term < self.term {
            self.on_lower_term(&message);
            return;
        }
        let from = message.from;
        match message.body {
            MessageBody::RequestVote {
                kind,
                last_log_index,
                last_log_term,
            } => self.on_request_vote(from, message.term, kind, last_log_index, last_log_term),
            MessageBody::RequestVoteResponse { pre_vote, granted } => {
                self.on_vote_response(from, pre_vote, granted)
            }
            MessageBody::AppendEntries {
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
                read_round,
            } => self.on_append_entries(
                from,
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
                read_round,
            ),
            MessageBody::AppendEntriesResponse {
                success,
                match_index,
                conflict,
                read_round,
            } => self.on_append_entries_response(from, success, match_index, conflict, read_round),
            MessageBody::InstallSnapshot { snapshot } => self.on_install_snapshot(from, snapshot),
            MessageBody::InstallSnapshotResponse { last_index } => {
                self.on_install_snapshot_response(from, last_index)
            }
            MessageBody::TimeoutNow => self.on_timeout_now(from),
        }
    }

    /// Appends an application command. Only the leader accepts proposals.
    ///
    /// # Errors
    /// [`ProposeError::NotLeader`] off the leader; [`ProposeError::TransferInProgress`] while
    /// leadership is being handed over.
    pub fn propose(&mut self, command: Bytes) -> Result<Proposal, ProposeError> {
        self.check_can_propose()?;
        Ok(self.append_own(EntryPayload::Command(command)))
    }

    /// Proposes a single-server membership change. It takes effect on this leader at once and on
    /// each follower when appended there.
    ///
    /// # Errors
    /// As [`propose`](RaftNode::propose), plus [`ProposeError::MembershipChangePending`] while an
    /// earlier change (or this term's first entry) is uncommitted, and
    /// [`ProposeError::InvalidMembershipChange`] for a no-op or a change that leaves no voter.
    pub fn propose_membership(
        &mut self,
        change: MembershipChange,
    ) -> Result<Proposal, ProposeError> {
        self.check_can_propose()?;
        // One change at a time keeps every pair of consecutive configurations overlapping, and a
        // leader must commit an entry of its own term first (the thesis erratum of §4.1).
        let pending_index = self.membership_index.max(self.term_start_index);
        if pending_index > self.log.commit {
            return Err(ProposeError::MembershipChangePending { pending_index });
        }
        let next = self
            .membership
            .apply(change)
            .ok_or(ProposeError::InvalidMembershipChange)?;
        let proposal = self.append_own(EntryPayload::Membership(next.clone()));
        self.set_membership(next, proposal.index);
        Ok(proposal)
    }

    fn check_can_propose(&self) -> Result<(), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader_hint: self.leader,
            });
        }
        if self.transfer.is_some() {
            return Err(ProposeError::TransferInProgress);
        }
        Ok(())
    }

    pub(crate) fn append_own(&mut self, payload: EntryPayload) -> Proposal {
        let index = self.log.last_index().next();
        self.log.push(Entry {
            term: self.term,
            index,
            payload,
        });
        Proposal {
            index,
            term: self.term,
        }
    }

    /// Hands leadership to `to` once it has caught up; proposals are refused meanwhile. The
    /// transfer is abandoned after an election timeout.
    ///
    /// # Errors
    /// [`TransferError::NotLeader`] off the leader, [`TransferError::NotAVoter`] for a target
    /// that cannot lead.
    pub fn transfer_leadership(&mut self, to: NodeId) -> Result<(), TransferError> {
        if self.role != Role::Leader {
            return Err(TransferError::NotLeader);
        }
        if !self.membership.is_voter(to) {
            return Err(TransferError::NotAVoter(to));
        }
        if to == self.id {
            return Ok(());
        }
        self.transfer = Some(Transfer {
            target: to,
            elapsed_ticks: 0,
        });
        self.maybe_send_timeout_now(to);
        Ok(())
    }

    /// The application took a snapshot of its state at `index`, which it has applied. The log
    /// up to `index` is dropped; the shell persists the snapshot itself. Ignored when `index` is
    /// not applied yet or not beyond the current snapshot.
    pub fn compact(&mut self, index: LogIndex, data: Bytes) {
        if index > self.log.applied || index <= self.log.snapshot_meta().last_index {
            tracing::debug!(node = %self.id, %index, "compaction request ignored");
            return;
        }
        let Some(last_term) = self.log.term(index) else {
            return;
        };
        let membership = self.membership_at(index);
        self.log.compact(Snapshot {
            meta: SnapshotMeta {
                last_index: index,
                last_term,
                membership,
            },
            data,
        });
    }

    /// Whether [`ready`](RaftNode::ready) has anything to hand out.
    pub fn has_ready(&self) -> bool {
        !self.outbox.is_empty()
            || self.log.has_unstable()
            || self.log.has_pending_snapshot()
            || self.log.has_next_committed()
            || self.hard_state_changed()
            || self.reads.has_output()
            || (self.role == Role::Leader
                && (self.reads.needs_round() || self.has_appends_to_send()))
    }

    /// Collects the work for the shell. See [`Ready`] for the order in which to carry it out;
    /// call [`advance`](RaftNode::advance) afterwards and before the next `ready`.
    pub fn ready(&mut self) -> Ready {
        if self.role == Role::Leader {
            self.start_read_round();
            self.send_pending_appends();
        }
        let snapshot = self.log.take_pending_snapshot();
        let entries = self.log.take_unstable();
        let hard_state = self.hard_state_changed() || !entries.is_empty() || snapshot.is_some();
        let hard_state = hard_state.then(|| {
            let hard_state = self.hard_state_to_persist();
            self.persisted_hard_state = hard_state.clone();
            hard_state
        });
        // Everything handed out above is persisted before anything here is applied, so
        // committed entries may be applied up to the commit index in the same round.
        let committed_entries = self.log.take_committed(self.config.max_bytes_per_message);
        Ready {
            hard_state,
            entries,
            snapshot,
            messages: std::mem::take(&mut self.outbox),
            committed_entries,
            read_states: self.reads.take_ready(),
            aborted_reads: self.reads.take_aborted(),
        }
    }

    /// The shell carried out `ready`: what it persisted now counts towards commitment.
    pub fn advance(&mut self, ready: Ready) {
        if let Some(last) = ready.entries.last() {
            self.log.stable_to(last.index);
        }
        if self.role == Role::Leader {
            self.maybe_commit();
        }
    }

    fn hard_state_changed(&self) -> bool {
        let current = self.hard_state_to_persist();
        current.term != self.persisted_hard_state.term
            || current.voted_for != self.persisted_hard_state.voted_for
    }

    fn hard_state_to_persist(&self) -> HardState {
        let voted_for = if self.config.bugs.skip_persist_vote && self.voted_for != Some(self.id) {
            None
        } else {
            self.voted_for
        };
        HardState {
            term: self.term,
            voted_for,
            commit: self.log.commit,
        }
    }

    pub(crate) fn send(&mut self, to: NodeId, body: MessageBody) {
        self.send_with_term(to, self.term, body);
    }

    pub(crate) fn send_with_term(&mut self, to: NodeId, term: Term, body: MessageBody) {
        tracing::trace!(from = %self.id, %to, term = term.0, kind = body.kind_name(), "send");
        self.outbox.push(Message {
            from: self.id,
            to,
            term,
            body,
        });
    }

    pub(crate) fn reset_election_timer(&mut self) {
        self.election_elapsed = 0;
        let timeout = self.config.election_timeout_ticks;
        self.randomized_election_timeout = self.rng.random_range(timeout..2 * timeout);
    }

    /// Becomes a follower of `leader` in `term` (raising the term clears the vote).
    pub(crate) fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        assert!(
            term >= self.term,
            "term went backwards: {} -> {}",
            self.term,
            term
        );
        if term > self.term {
            self.term = term;
            self.voted_for = None;
        }
        if self.role == Role::Leader {
            self.reads.abort_all();
        }
        self.role = Role::Follower;
        self.leader = leader;
        self.progress.clear();
        self.votes.clear();
        self.transfer = None;
        self.reset_election_timer();
    }

    pub(crate) fn become_leader(&mut self) {
        assert!(
            matches!(self.role, Role::Candidate),
            "only a candidate becomes leader"
        );
        tracing::info!(node = %self.id, term = self.term.0, "became leader");
        self.role = Role::Leader;
        self.leader = Some(self.id);
        self.votes.clear();
        self.heartbeat_elapsed = 0;
        self.election_elapsed = 0;
        self.transfer = None;
        self.reads.reset_for_new_term();
        let next = self.log.last_index().next();
        self.progress = self
            .membership
            .members()
            .filter(|&id| id != self.id)
            .map(|id| (id, Progress::new(next)))
            .collect();
        self.term_start_index = self.append_own(EntryPayload::Noop).index;
    }

    /// Installs `membership` as the configuration in force, set by the entry at `index`.
    pub(crate) fn set_membership(&mut self, membership: Membership, index: LogIndex) {
        self.membership = membership;
        self.membership_index = index;
        if self.role == Role::Leader {
            let next = self.log.last_index().next();
            let members: Vec<NodeId> = self
                .membership
                .members()
                .filter(|&id| id != self.id)
                .collect();
            self.progress.retain(|id, _| members.contains(id));
            for id in members {
                self.progress
                    .entry(id)
                    .or_insert_with(|| Progress::new(next));
            }
            if let Some(transfer) = self.transfer
                && !self.membership.is_voter(transfer.target)
            {
                self.transfer = None;
            }
        }
    }

    /// Recomputes the membership from the log after a truncation, snapshot or restart: the last
    /// membership entry wins, else the snapshot's, else the bootstrap membership.
    pub(crate) fn recompute_membership(&mut self) {
        let (membership, index) = self.membership_upto(self.log.last_index());
        self.set_membership(membership, index);
    }

    fn membership_at(&self, index: LogIndex) -> Membership {
        self.membership_upto(index).0
    }

    fn membership_upto(&self, index: LogIndex) -> (Membership, LogIndex) {
        let found = self
            .log
            .entries()
            .iter()
            .rev()
            .find_map(|entry| match &entry.payload {
                EntryPayload::Membership(membership) if entry.index <= index => {
                    Some((membership.clone(), entry.index))
                }
                _ => None,
            });
        found.unwrap_or_else(|| {
            let meta = self.log.snapshot_meta();
            if meta.last_index > LogIndex(0) {
                (meta.membership.clone(), meta.last_index)
            } else {
                (self.initial_membership.clone(), LogIndex(0))
            }
        })
    }
}
