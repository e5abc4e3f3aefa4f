//! The batch of work a node hands to its shell.

use crate::entry::{Entry, HardState, Snapshot};
use crate::message::Message;
use crate::types::{LogIndex, ReadId};

/// Work the shell must carry out, **in this order**:
/// 1. persist `snapshot` (if any), then `entries`, then `hard_state`, and fsync;
/// 2. send `messages` (they may depend on what was just persisted: votes, appends);
/// 3. restore the state machine from `snapshot` (if any), then apply `committed_entries`;
/// 4. answer `read_states` once the state machine has applied up to each read's index;
/// 5. call [`crate::RaftNode::advance`] with this `Ready`.
///
/// `entries` may start at or below an index the shell has already persisted: the shell must
/// then drop its persisted entries from `entries[0].index` on before appending (a follower
/// overwriting a divergent suffix).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[must_use = "a Ready must be carried out and handed back through advance()"]
pub struct Ready {
    /// Hard state to persist, when it changed.
    pub hard_state: Option<HardState>,
    /// Entries to persist, contiguous and ascending.
    pub entries: Vec<Entry>,
    /// A snapshot received from the leader: persist it, replace the log with it, and restore
    /// the state machine from it.
    pub snapshot: Option<Snapshot>,
    /// Messages to send after persisting.
    pub messages: Vec<Message>,
    /// Entries known committed and persisted here, to apply in order.
    pub committed_entries: Vec<Entry>,
    /// Linearizable reads whose leadership check passed: serve each once the state machine
    /// has applied `index`.
    pub read_states: Vec<ReadState>,
    /// Reads that will never be confirmed (this node lost leadership); fail or retry them.
    pub aborted_reads: Vec<ReadId>,
}

/// A confirmed linearizable read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadState {
    /// The id the caller gave to [`crate::RaftNode::read_index`].
    pub id: ReadId,
    /// The commit index at the time of the request; the read is linearizable once the state
    /// machine has applied at least this index.
    pub index: LogIndex,
}

impl Ready {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.hard_state.is_none()
            && self.entries.is_empty()
            && self.snapshot.is_none()
            && self.messages.is_empty()
            && self.committed_entries.is_empty()
            && self.read_states.is_empty()
            && self.aborted_reads.is_empty()
    }
}
