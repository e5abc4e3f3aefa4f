//! Messages exchanged between Raft nodes.

use crate::entry::{Entry, Snapshot};
use crate::types::{LogIndex, NodeId, Term};
use serde::{Deserialize, Serialize};

/// A message from one node to another. Every message carries its sender's term (§5.1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Sender.
    pub from: NodeId,
    /// Recipient.
    pub to: NodeId,
    /// Sender's term; for a pre-vote request, the term the sender would campaign in.
    pub term: Term,
    /// What the message says.
    pub body: MessageBody,
}

/// Why a vote was requested; a forced campaign (leadership transfer) overrides leader stickiness.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CampaignKind {
    /// A pre-vote round (thesis §9.6): asks "would you vote for me?" without raising any term.
    PreVote,
    /// A real election after an election timeout.
    Election,
    /// An election ordered by the leader through `TimeoutNow` (leadership transfer).
    Transfer,
}

/// The protocol's message kinds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MessageBody {
    /// Candidate asks for a vote (or a pre-vote).
    RequestVote {
        /// Election, pre-vote or transfer.
        kind: CampaignKind,
        /// Index of the candidate's last log entry.
        last_log_index: LogIndex,
        /// Term of the candidate's last log entry.
        last_log_term: Term,
    },
    /// Answer to `RequestVote`.
    RequestVoteResponse {
        /// Whether this answers a pre-vote.
        pre_vote: bool,
        /// Whether the vote was granted.
        granted: bool,
    },
    /// Leader replicates entries; with no entries it is a heartbeat.
    AppendEntries {
        /// Index of the entry right before `entries`.
        prev_log_index: LogIndex,
        /// Term of that entry.
        prev_log_term: Term,
        /// Entries to append, possibly none.
        entries: Vec<Entry>,
        /// Leader's commit index.
        leader_commit: LogIndex,
        /// The leader's heartbeat round, echoed back so the leader can confirm leadership for
        /// ReadIndex requests issued before this round.
        read_round: u64,
    },
    /// Answer to `AppendEntries`.
    AppendEntriesResponse {
        /// Whether the entries were appended (the consistency check passed).
        success: bool,
        /// On success: the index of the last entry now known to match the leader's.
        /// On rejection: the `prev_log_index` that was rejected.
        match_index: LogIndex,
        /// On rejection: the fast-backup hint (where the leader should retry).
        conflict: Option<ConflictHint>,
        /// The `read_round` of the request being answered.
        read_round: u64,
    },
    /// Leader sends its snapshot to a follower whose needed entries were compacted away.
    InstallSnapshot {
        /// The snapshot, whole.
        snapshot: Snapshot,
    },
    /// Answer to `InstallSnapshot`.
    InstallSnapshotResponse {
        /// The follower's last log index after handling the snapshot.
        last_index: LogIndex,
    },
    /// Leadership transfer: the leader tells an up-to-date follower to campaign at once.
    TimeoutNow,
}

/// A follower's hint that lets the leader skip a whole divergent term in one round trip
/// (the "accelerated log backtracking" of §5.3 and the 6.5840 lab).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConflictHint {
    /// Term of the follower's entry at the rejected index, if it has one there.
    pub term: Option<Term>,
    /// With `term`: the first index the follower holds of that term. Without: the follower's
    /// last index + 1 (its log is too short).
    pub index: LogIndex,
}

impl MessageBody {
    /// A short name for logs and counters.
    pub fn kind_name(&self) -> &'static str {
        match self {
            MessageBody::RequestVote {
                kind: CampaignKind::PreVote,
                ..
            } => "PreVote",
            MessageBody::RequestVote { .. } => "RequestVote",
            MessageBody::RequestVoteResponse { pre_vote: true, .. } => "PreVoteResponse",
            MessageBody::RequestVoteResponse { .. } => "RequestVoteResponse",
            MessageBody::AppendEntries { entries, .. } if entries.is_empty() => "Heartbeat",
            MessageBody::AppendEntries { .. } => "AppendEntries",
            MessageBody::AppendEntriesResponse { .. } => "AppendEntriesResponse",
            MessageBody::InstallSnapshot { .. } => "InstallSnapshot",
            MessageBody::InstallSnapshotResponse { .. } => "InstallSnapshotResponse",
            MessageBody::TimeoutNow => "TimeoutNow",
        }
    }
}
