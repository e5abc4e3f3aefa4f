//! Leader election: timeouts, PreVote, votes, term handling and leader stickiness.

use crate::message::{CampaignKind, Message, MessageBody};
use crate::node::{RaftNode, Role};
use crate::types::{LogIndex, NodeId, Term};

impl RaftNode {
    pub(crate) fn tick_election(&mut self) {
        self.election_elapsed += 1;
        if self.election_elapsed >= self.randomized_election_timeout {
            let kind = if self.config.pre_vote {
                CampaignKind::PreVote
            } else {
                CampaignKind::Election
            };
            self.campaign(kind);
        }
    }

    /// Whether this node heard from a live leader recently enough to refuse being disrupted
    /// (leader stickiness; only meaningful with CheckQuorum, which makes leaders step down).
    fn in_lease(&self) -> bool {
        self.config.check_quorum
            && self.leader.is_some()
            && self.election_elapsed < self.config.election_timeout_ticks
    }

    /// Starts a pre-vote round or an election. Nodes that do not vote never campaign.
    pub(crate) fn campaign(&mut self, kind: CampaignKind) {
        if !self.membership.is_voter(self.id) {
            self.reset_election_timer();
            return;
        }
        let campaign_term = match kind {
            CampaignKind::PreVote => {
                // A pre-candidate raises no term and keeps its vote: a node that cannot win
                // never disturbs the cluster (thesis §9.6).
                self.role = Role::PreCandidate;
                self.leader = None;
                self.term.next()
            }
            CampaignKind::Election | CampaignKind::Transfer => {
                self.term = self.term.next();
                self.voted_for = Some(self.id);
                self.role = Role::Candidate;
                self.leader = None;
                tracing::debug!(node = %self.id, term = self.term.0, "starting election");
                self.term
            }
        };
        self.progress.clear();
        self.transfer = None;
        self.reset_election_timer();
        self.votes.clear();
        self.votes.insert(self.id, true);
        if self.tally_votes() {
            return;
        }
        let last_log_index = self.log.last_index();
        let last_log_term = self.log.last_term();
        let voters: Vec<NodeId> = self
            .membership
            .voters
            .iter()
            .copied()
            .filter(|&id| id != self.id)
            .collect();
        for to in voters {
            self.send_with_term(
                to,
                campaign_term,
                MessageBody::RequestVote {
                    kind,
                    last_log_index,
                    last_log_term,
                },
            );
        }
    }

    /// Handles a message whose term is above ours. Returns whether to go on processing it.
    pub(crate) fn on_higher_term(&mut self, message: &Message) -> bool {
        match &message.body {
            MessageBody::RequestVote { kind, .. } => {
                if *kind != CampaignKind::Transfer && self.in_lease() {
                    tracing::debug!(node = %self.id, from = %message.from, "vote request ignored: leader is alive");
                    return false;
                }
                if *kind != CampaignKind::PreVote {
                    self.become_follower(message.term, None);
                }
                true
            }
            // A granted pre-vote carries the future term of our own campaign: nothing to adopt.
            MessageBody::RequestVoteResponse {
                pre_vote: true,
                granted: true,
            } => true,
            MessageBody::AppendEntries { .. } | MessageBody::InstallSnapshot { .. } => {
                self.become_follower(message.term, Some(message.from));
                true
            }
            _ => {
                self.become_follower(message.term, None);
                true
            }
        }
    }

    /// Handles a message from an older term.
    pub(crate) fn on_lower_term(&mut self, message: &Message) {
        match &message.body {
            // A deposed leader (or one cut off by a partition) learns our term and steps down;
            // with PreVote and CheckQuorum nothing else would ever tell it.
            MessageBody::AppendEntries { .. } | MessageBody::InstallSnapshot { .. } => {
                self.send(
                    message.from,
                    MessageBody::AppendEntriesResponse {
                        success: false,
                        match_index: LogIndex(0),
                        conflict: None,
                        read_round: 0,
                    },
                );
            }
            MessageBody::RequestVote {
                kind: CampaignKind::PreVote,
                ..
            } => {
                self.send(
                    message.from,
                    MessageBody::RequestVoteResponse {
                        pre_vote: true,
                        granted: false,
                    },
                );
            }
            _ => {}
        }
    }

    pub(crate) fn on_request_vote(
        &mut self,
        from: NodeId,
        message_term: Term,
        kind: CampaignKind,
        last_log_index: LogIndex,
        last_log_term: Term,
    ) {
        let up_to_date = self.log.is_up_to_date(last_log_index, last_log_term);
        let pre_vote = kind == CampaignKind::PreVote;
        let can_vote = self.voted_for == Some(from)
            || (self.voted_for.is_none() && self.leader.is_none())
            || (pre_vote && message_term > self.term)
            || self.config.bugs.grant_second_vote_in_term;
        let granted = can_vote && up_to_date;
        if granted && !pre_vote {
            self.voted_for = Some(from);
            self.reset_election_timer();
        }
        // A granted pre-vote answers in the candidate's future term so that it is not mistaken
        // for a stale reply; a refusal carries our own term.
        let term = if granted && pre_vote {
            message_term
        } else {
            self.term
        };
        self.send_with_term(
            from,
            term,
            MessageBody::RequestVoteResponse { pre_vote, granted },
        );
    }

    pub(crate) fn on_vote_response(&mut self, from: NodeId, pre_vote: bool, granted: bool) {
        let expected = match self.role {
            Role::PreCandidate => pre_vote,
            Role::Candidate => !pre_vote,
            _ => false,
        };
        if !expected || !self.membership.is_voter(from) {
            return;
        }
        self.votes.entry(from).or_insert(granted);
        self.tally_votes();
    }

    /// Acts on the votes so far. Returns whether the round is decided.
    fn tally_votes(&mut self) -> bool {
        let granted: Vec<NodeId> = self
            .votes
            .iter()
            .filter_map(|(&id, &granted)| granted.then_some(id))
            .collect();
        let refused: Vec<NodeId> = self
            .votes
            .iter()
            .filter_map(|(&id, &granted)| (!granted).then_some(id))
            .collect();
        if self.membership.has_quorum(granted.iter()) {
            match self.role {
                Role::PreCandidate => self.campaign(CampaignKind::Election),
                Role::Candidate => self.become_leader(),
                _ => return false,
            }
            true
        } else if self.membership.has_quorum(refused.iter()) {
            self.become_follower(self.term, None);
            true
        } else {
            false
        }
    }

    pub(crate) fn on_timeout_now(&mut self, from: NodeId) {
        if self.role == Role::Follower && self.leader == Some(from) {
            tracing::info!(node = %self.id, "leadership transferred here; campaigning");
            self.campaign(CampaignKind::Transfer);
        }
    }
}
