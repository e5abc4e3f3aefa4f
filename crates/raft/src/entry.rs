//! Log entries, hard state and snapshots: everything the caller persists.

use crate::membership::Membership;
use crate::types::{LogIndex, NodeId, Term};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// What a log entry carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryPayload {
    /// Appended by every new leader so that it can commit entries of earlier terms (§5.4.2).
    Noop,
    /// An opaque application command; Raft never looks inside.
    Command(Bytes),
    /// The complete membership after a single-server change. Carrying the whole configuration,
    /// not the delta, lets a node that joins with no history learn it from any one entry. It
    /// takes effect as soon as it is appended.
    Membership(Membership),
}

/// One entry of the replicated log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Term of the leader that created the entry.
    pub term: Term,
    /// Position in the log.
    pub index: LogIndex,
    /// What the entry carries.
    pub payload: EntryPayload,
}

impl Entry {
    /// Approximate size in bytes, used for flow control and batching limits.
    pub fn size_bytes(&self) -> usize {
        24 + match &self.payload {
            EntryPayload::Noop => 0,
            EntryPayload::Command(data) => data.len(),
            EntryPayload::Membership(membership) => {
                8 * (membership.voters.len() + membership.learners.len())
            }
        }
    }
}

/// The state that must survive a crash before any message depending on it is sent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardState {
    /// Latest term this node has seen.
    pub term: Term,
    /// Candidate this node voted for in `term`, if any.
    pub voted_for: Option<NodeId>,
    /// Highest index known committed. Persisting it is an optimisation (restart applies sooner);
    /// correctness never depends on it being current.
    pub commit: LogIndex,
}

/// Describes the prefix of the log a snapshot replaces.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    /// Index of the last entry the snapshot covers.
    pub last_index: LogIndex,
    /// Term of that entry.
    pub last_term: Term,
    /// The membership in force at `last_index`.
    pub membership: Membership,
}

/// An application state snapshot plus the log position it corresponds to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Where the snapshot sits in the log.
    pub meta: SnapshotMeta,
    /// Opaque application state.
    pub data: Bytes,
}

/// Everything a node persisted, handed back to [`crate::RaftNode::restore`] on restart.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PersistedState {
    /// The last persisted hard state.
    pub hard_state: HardState,
    /// The last persisted snapshot, if any.
    pub snapshot: Option<Snapshot>,
    /// Persisted entries after the snapshot, contiguous and in index order.
    pub entries: Vec<Entry>,
}
