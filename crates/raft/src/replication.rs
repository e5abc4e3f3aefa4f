//! Log replication: sending appends and snapshots under flow control, the follower's consistency
//! check with the fast-backup hint, and commitment.

use crate::entry::{Entry, Snapshot};
use crate::message::{ConflictHint, MessageBody};
use crate::node::{RaftNode, Role};
use crate::progress::ReplicationState;
use crate::types::{LogIndex, NodeId, Term};

impl RaftNode {
    /// Whether some follower could be sent entries right now.
    pub(crate) fn has_appends_to_send(&self) -> bool {
        let last_index = self.log.last_index();
        let max_inflight = self.config.max_inflight_messages;
        self.progress
            .values()
            .any(|progress| progress.can_send(max_inflight) && progress.next_index <= last_index)
    }

    /// Sends every follower what it lacks, as far as its window allows. Called once per `ready`,
    /// so proposals made since the last round travel together in one batch.
    pub(crate) fn send_pending_appends(&mut self) {
        let last_index = self.log.last_index();
        let max_inflight = self.config.max_inflight_messages;
        let peers: Vec<NodeId> = self.progress.keys().copied().collect();
        for peer in peers {
            while self.progress.get(&peer).is_some_and(|progress| {
                progress.can_send(max_inflight) && progress.next_index <= last_index
            }) {
                self.send_append(peer);
            }
        }
    }

    /// Sends `to` the entries from its next index, or the snapshot when they were compacted.
    pub(crate) fn send_append(&mut self, to: NodeId) {
        let Some(progress) = self.progress.get(&to) else {
            return;
        };
        let next = progress.next_index;
        let prev_log_index = next.prev();
        let Some(prev_log_term) = self.log.term(prev_log_index) else {
            if prev_log_index > self.log.last_index() {
                // Our view of the follower ran past our own log; probe again from its match.
                if let Some(progress) = self.progress.get_mut(&to) {
                    progress.become_probe();
                }
            } else {
                self.send_snapshot(to);
            }
            return;
        };
        let entries = self.log.slice(
            next,
            self.config.max_entries_per_message,
            self.config.max_bytes_per_message,
        );
        let last = entries.last().map_or(prev_log_index, |entry| entry.index);
        let carried_entries = !entries.is_empty();
        let body = MessageBody::AppendEntries {
            prev_log_index,
            prev_log_term,
            entries,
            leader_commit: self.log.commit,
            read_round: self.reads.round(),
        };
        let commit = self.log.commit;
        self.send(to, body);
        if let Some(progress) = self.progress.get_mut(&to) {
            progress.on_sent(last, carried_entries);
            progress.commit_sent = progress.commit_sent.max(commit);
        }
    }

    fn send_snapshot(&mut self, to: NodeId) {
        let snapshot = self.log.snapshot().clone();
        tracing::debug!(node = %self.id, %to, index = %snapshot.meta.last_index, "sending snapshot");
        self.send(to, MessageBody::InstallSnapshot { snapshot });
        if let Some(progress) = self.progress.get_mut(&to) {
            progress.become_snapshot();
        }
    }

    /// Heartbeats assert leadership, carry the commit index a follower can safely apply and
    /// confirm the current read round. They probe at the follower's known match point, which
    /// always passes the consistency check.
    pub(crate) fn broadcast_heartbeat(&mut self) {
        let round = self.reads.round();
        self.broadcast_read_round(round);
    }

    pub(crate) fn broadcast_read_round(&mut self, read_round: u64) {
        let peers: Vec<NodeId> = self.progress.keys().copied().collect();
        for peer in peers {
            let Some(progress) = self.progress.get_mut(&peer) else {
                continue;
            };
            progress.on_heartbeat();
            let match_index = progress.match_index;
            let (prev_log_index, prev_log_term) = match self.log.term(match_index) {
                Some(term) => (match_index, term),
                None => (LogIndex(0), Term(0)),
            };
            self.send(
                peer,
                MessageBody::AppendEntries {
                    prev_log_index,
                    prev_log_term,
                    entries: Vec::new(),
                    leader_commit: self.log.commit.min(prev_log_index),
                    read_round,
                },
            );
        }
    }

    pub(crate) fn on_append_entries(
        &mut self,
        from: NodeId,
        mut prev_log_index: LogIndex,
        mut prev_log_term: Term,
        mut entries: Vec<Entry>,
        leader_commit: LogIndex,
        read_round: u64,
    ) {
        match self.role {
            Role::Leader => {
                tracing::warn!(node = %self.id, %from, term = self.term.0, "append from another leader of my term ignored");
                return;
            }
            Role::Candidate | Role::PreCandidate => self.become_follower(self.term, Some(from)),
            Role::Follower => {
                self.leader = Some(from);
                self.election_elapsed = 0;
            }
        }
        let well_formed = entries.iter().enumerate().all(|(offset, entry)| {
            prev_log_index
                .0
                .checked_add(1 + offset as u64)
                .is_some_and(|expected| entry.index.0 == expected)
                && entry.term <= self.term
        });
        let Some(last_new) = prev_log_index
            .0
            .checked_add(entries.len() as u64)
            .filter(|_| well_formed)
            .map(LogIndex)
        else {
            tracing::warn!(node = %self.id, %from, "malformed append ignored");
            return;
        };
        let commit = self.log.commit;
        if prev_log_index < commit {
            // The committed prefix matches every leader's log: skip what it covers.
            let skip = usize::try_from(commit.0 - prev_log_index.0).unwrap_or(usize::MAX);
            entries.drain(..skip.min(entries.len()));
            prev_log_index = commit;
            prev_log_term = self
                .log
                .term(commit)
                .expect("the commit index is never compacted past");
            if entries.is_empty() {
                self.send(
                    from,
                    MessageBody::AppendEntriesResponse {
                        success: true,
                        match_index: commit,
                        conflict: None,
                        read_round,
                    },
                );
                return;
            }
        }
        if self.log.term(prev_log_index) != Some(prev_log_term) {
            let conflict = self.conflict_hint(prev_log_index);
            self.send(
                from,
                MessageBody::AppendEntriesResponse {
                    success: false,
                    match_index: prev_log_index,
                    conflict: Some(conflict),
                    read_round,
                },
            );
            return;
        }
        let has_membership = entries
            .iter()
            .any(|entry| matches!(entry.payload, crate::entry::EntryPayload::Membership(_)));
        let truncated = self.log.merge(entries);
        if has_membership || truncated.is_some_and(|index| index <= self.membership_index) {
            self.recompute_membership();
        }
        self.log.commit_to(leader_commit.min(last_new));
        self.send(
            from,
            MessageBody::AppendEntriesResponse {
                success: true,
                match_index: last_new,
                conflict: None,
                read_round,
            },
        );
    }

    /// Where the leader should retry after our log failed the check at `rejected`.
    fn conflict_hint(&self, rejected: LogIndex) -> ConflictHint {
        if rejected > self.log.last_index() {
            return ConflictHint {
                term: None,
                index: self.log.last_index().next(),
            };
        }
        let term = self
            .log
            .term(rejected)
            .expect("a rejected index within the log is above the commit index");
        let floor = self.log.commit.max(self.log.first_index());
        let mut first = rejected;
        while first > floor && self.log.term(first.prev()) == Some(term) {
            first = first.prev();
        }
        ConflictHint {
            term: Some(term),
            index: first,
        }
    }

    pub(crate) fn on_append_entries_response(
        &mut self,
        from: NodeId,
        success: bool,
        match_index: LogIndex,
        conflict: Option<ConflictHint>,
        read_round: u64,
    ) {
        if self.role != Role::Leader {
            return;
        }
        let Some(progress) = self.progress.get_mut(&from) else {
            return;
        };
        progress.recent_active = true;
        if read_round > progress.acked_read_round {
            progress.acked_read_round = read_round;
            self.confirm_reads();
        }
        let Some(progress) = self.progress.get_mut(&from) else {
            return;
        };
        if success {
            if match_index > self.log.last_index() {
                return;
            }
            let advanced = progress.on_match(match_index);
            if matches!(progress.state, ReplicationState::Probe { .. })
                && progress.match_index.next() >= progress.next_index
            {
                progress.become_replicate();
            }
            if advanced {
                self.maybe_commit();
            }
            self.maybe_send_timeout_now(from);
            self.maybe_probe(from);
            return;
        }
        // A rejection at or below the known match point is stale (reordered or duplicated).
        if match_index <= progress.match_index {
            return;
        }
        if matches!(progress.state, ReplicationState::Probe { .. })
            && match_index != progress.next_index.prev()
        {
            return;
        }
        let Some(conflict) = conflict else {
            return;
        };
        let retry_at = match conflict.term {
            Some(term) => match self.last_index_of_term(term, match_index) {
                Some(last_of_term) => last_of_term.next().min(match_index),
                None => conflict.index,
            },
            None => conflict.index,
        };
        let Some(progress) = self.progress.get_mut(&from) else {
            return;
        };
        progress.become_probe();
        progress.next_index = retry_at
            .max(progress.match_index.next())
            .min(match_index)
            .max(LogIndex(1));
    }

    /// A follower that answered a heartbeat but lags behind our log gets an append now, even when
    /// no new entry would trigger one: a node added with nothing proposed after it (or one whose
    /// probe was lost) would otherwise never start catching up.
    fn maybe_probe(&mut self, to: NodeId) {
        let last_index = self.log.last_index();
        let max_inflight = self.config.max_inflight_messages;
        let Some(progress) = self.progress.get(&to) else {
            return;
        };
        let probing = matches!(progress.state, ReplicationState::Probe { .. });
        if progress.match_index < last_index
            && progress.can_send(max_inflight)
            && (probing || progress.next_index <= last_index)
        {
            self.send_append(to);
        }
    }

    /// The last index at or below `upto` whose entry has `term`, if our log still holds one.
    fn last_index_of_term(&self, term: Term, upto: LogIndex) -> Option<LogIndex> {
        let mut index = upto.min(self.log.last_index());
        loop {
            let entry_term = self.log.term(index)?;
            if entry_term == term {
                return Some(index);
            }
            if entry_term < term || index.0 == 0 {
                return None;
            }
            index = index.prev();
        }
    }

    pub(crate) fn on_install_snapshot(&mut self, from: NodeId, snapshot: Snapshot) {
        if self.role != Role::Follower {
            self.become_follower(self.term, Some(from));
        }
        self.leader = Some(from);
        self.election_elapsed = 0;
        let index = snapshot.meta.last_index;
        let last_index = if index <= self.log.commit {
            self.log.commit
        } else if self.log.term(index) == Some(snapshot.meta.last_term) {
            // We already hold the entries it covers: commit them and keep what follows.
            self.log.commit_to(index);
            index
        } else {
            tracing::info!(node = %self.id, %index, "installing snapshot from leader");
            self.log.install_snapshot(snapshot);
            self.recompute_membership();
            index
        };
        self.send(from, MessageBody::InstallSnapshotResponse { last_index });
    }

    pub(crate) fn on_install_snapshot_response(&mut self, from: NodeId, last_index: LogIndex) {
        if self.role != Role::Leader || last_index > self.log.last_index() {
            return;
        }
        let Some(progress) = self.progress.get_mut(&from) else {
            return;
        };
        progress.recent_active = true;
        let advanced = progress.on_match(last_index);
        progress.become_replicate();
        if advanced {
            self.maybe_commit();
        }
    }

    /// Advances the commit index to the highest index stored on a quorum of voters, but only
    /// through an entry of the current term (§5.4.2, Figure 8).
    pub(crate) fn maybe_commit(&mut self) {
        let mut matches: Vec<LogIndex> = self
            .membership
            .voters
            .iter()
            .map(|&id| {
                if id == self.id {
                    self.log.stable_last()
                } else {
                    self.progress
                        .get(&id)
                        .map_or(LogIndex(0), |progress| progress.match_index)
                }
            })
            .collect();
        if matches.is_empty() {
            return;
        }
        matches.sort_unstable_by(|a, b| b.cmp(a));
        let candidate = matches[self.membership.quorum() - 1];
        if candidate <= self.log.commit {
            return;
        }
        let current_term = self.log.term(candidate) == Some(self.term);
        if !current_term && !self.config.bugs.commit_previous_term_by_count {
            return;
        }
        self.log.commit_to(candidate);
        self.on_commit_advanced();
    }

    fn on_commit_advanced(&mut self) {
        self.reads
            .on_commit_in_term(self.log.commit, self.term_start_index);
        if self.membership_index <= self.log.commit && !self.membership.is_voter(self.id) {
            // Last chance: a node that stops leading announces nothing more.
            self.announce_commit();
            tracing::info!(node = %self.id, "removed from the voters; stepping down");
            self.become_follower(self.term, None);
        }
    }

    /// Sends the commit index to every follower that has not been told it yet. Called once per
    /// tick rather than on every advance: under load the next append carries the new commit
    /// index anyway, and announcing each advance at once cost an extra message and answer per
    /// entry and follower, half the peer traffic of a lock operation. A follower's apply lags by
    /// one tick at most; nothing waits on it (the leader answers clients).
    pub(crate) fn announce_commit(&mut self) {
        let commit = self.log.commit;
        let peers: Vec<NodeId> = self.progress.keys().copied().collect();
        let max_inflight = self.config.max_inflight_messages;
        for peer in peers {
            if self.progress.get(&peer).is_some_and(|progress| {
                progress.state == ReplicationState::Replicate
                    && progress.can_send(max_inflight)
                    && progress.commit_sent < commit
            }) {
                self.send_append(peer);
            }
        }
    }

    /// Completes a leadership transfer once the target holds our whole log.
    pub(crate) fn maybe_send_timeout_now(&mut self, to: NodeId) {
        let Some(transfer) = self.transfer else {
            return;
        };
        if transfer.target != to {
            return;
        }
        let caught_up = self
            .progress
            .get(&to)
            .is_some_and(|progress| progress.match_index == self.log.last_index());
        let max_inflight = self.config.max_inflight_messages;
        if caught_up {
            self.send(to, MessageBody::TimeoutNow);
        } else if self
            .progress
            .get(&to)
            .is_some_and(|progress| progress.can_send(max_inflight))
        {
            self.send_append(to);
        }
    }
}
