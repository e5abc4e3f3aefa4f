//! Errors returned by the Raft core. Expected conditions of a healthy cluster (a stale message,
//! a lost vote) are not errors: they are handled inside `step`.

use crate::types::{LogIndex, NodeId};
use thiserror::Error;

/// A configuration that cannot work.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    /// A setting is out of range.
    #[error("invalid raft configuration: {0}")]
    Invalid(&'static str),
}

/// Failure to build a node.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum RaftError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// What was persisted does not form a valid log (gap, wrong order, or ahead of the snapshot).
    #[error("persisted state is inconsistent: {0}")]
    CorruptState(String),
}

/// Why a proposal (command or membership change) was not appended.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ProposeError {
    /// Only the leader appends; `leader_hint` is the leader this node knows of, if any.
    #[error("not the leader (leader hint: {leader_hint:?})")]
    NotLeader {
        /// The current leader as far as this node knows.
        leader_hint: Option<NodeId>,
    },
    /// The leader is handing leadership over and takes no new proposals meanwhile.
    #[error("leadership transfer in progress")]
    TransferInProgress,
    /// A membership change is still uncommitted, or the leader has not yet committed an entry
    /// of its own term (thesis §4.1 safety fix); retry shortly.
    #[error("a membership change is pending until index {pending_index}")]
    MembershipChangePending {
        /// Index that must commit before the next change is accepted.
        pending_index: LogIndex,
    },
    /// The membership change would change nothing or leave no voter.
    #[error("membership change is a no-op or would leave no voter")]
    InvalidMembershipChange,
}

/// Why a linearizable read cannot be served by this node.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ReadError {
    /// Only the leader confirms reads.
    #[error("not the leader (leader hint: {leader_hint:?})")]
    NotLeader {
        /// The current leader as far as this node knows.
        leader_hint: Option<NodeId>,
    },
}

/// Why a leadership transfer was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum TransferError {
    /// Only the leader can transfer leadership.
    #[error("not the leader")]
    NotLeader,
    /// The target is not a voter of the current membership.
    #[error("node {0} is not a voter")]
    NotAVoter(NodeId),
}
