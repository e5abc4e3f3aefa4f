//! Linearizable reads through ReadIndex (thesis §6.4): the leader notes its commit index, confirms
//! it is still leader by a heartbeat round acknowledged by a quorum, and the read is served once
//! the state machine has applied up to the noted index.

use crate::error::ReadError;
use crate::node::{RaftNode, Role};
use crate::ready::ReadState;
use crate::types::{LogIndex, ReadId};
use std::collections::VecDeque;

/// A read waiting for its heartbeat round to be acknowledged by a quorum.
#[derive(Clone, Copy, Debug)]
struct PendingRead {
    id: ReadId,
    index: LogIndex,
    round: u64,
}

/// The leader's bookkeeping of ReadIndex requests.
#[derive(Debug, Default)]
pub(crate) struct ReadTracker {
    /// Heartbeat round counter; followers echo the round of each append they answer.
    round: u64,
    /// Whether the leader committed an entry of its own term yet. Until then its commit index may
    /// lag what earlier leaders committed, so no read may be served from it.
    term_committed: bool,
    waiting_for_term_commit: Vec<ReadId>,
    /// Reads that need a new heartbeat round.
    unassigned: Vec<ReadId>,
    pending: VecDeque<PendingRead>,
    ready: Vec<ReadState>,
    aborted: Vec<ReadId>,
}

impl ReadTracker {
    pub(crate) fn round(&self) -> u64 {
        self.round
    }

    pub(crate) fn needs_round(&self) -> bool {
        !self.unassigned.is_empty()
    }

    pub(crate) fn has_output(&self) -> bool {
        !self.ready.is_empty() || !self.aborted.is_empty()
    }

    fn add(&mut self, id: ReadId) {
        if self.term_committed {
            self.unassigned.push(id);
        } else {
            self.waiting_for_term_commit.push(id);
        }
    }

    /// Opens a new heartbeat round for the reads received since the last one.
    fn start_round(&mut self, commit: LogIndex) -> Option<u64> {
        if self.unassigned.is_empty() {
            return None;
        }
        self.round += 1;
        let round = self.round;
        self.pending
            .extend(self.unassigned.drain(..).map(|id| PendingRead {
                id,
                index: commit,
                round,
            }));
        Some(round)
    }

    /// A quorum acknowledged every round up to `round`.
    fn confirm(&mut self, round: u64) {
        while self.pending.front().is_some_and(|read| read.round <= round) {
            let read = self.pending.pop_front().expect("front was just checked");
            self.ready.push(ReadState {
                id: read.id,
                index: read.index,
            });
        }
    }

    pub(crate) fn on_commit_in_term(&mut self, commit: LogIndex, term_start_index: LogIndex) {
        if !self.term_committed && commit >= term_start_index {
            self.term_committed = true;
            self.unassigned.append(&mut self.waiting_for_term_commit);
        }
    }

    pub(crate) fn abort_all(&mut self) {
        self.aborted.append(&mut self.waiting_for_term_commit);
        self.aborted.append(&mut self.unassigned);
        self.aborted
            .extend(self.pending.drain(..).map(|read| read.id));
    }

    pub(crate) fn reset_for_new_term(&mut self) {
        self.abort_all();
        self.term_committed = false;
    }

    pub(crate) fn take_ready(&mut self) -> Vec<ReadState> {
        std::mem::take(&mut self.ready)
    }

    pub(crate) fn take_aborted(&mut self) -> Vec<ReadId> {
        std::mem::take(&mut self.aborted)
    }
}

impl RaftNode {
    /// Requests a linearizable read. The confirmation arrives as a [`ReadState`] in a later
    /// [`crate::Ready`], or the id comes back in `aborted_reads` if leadership is lost first.
    ///
    /// # Errors
    /// [`ReadError::NotLeader`] off the leader.
    pub fn read_index(&mut self, id: ReadId) -> Result<(), ReadError> {
        if self.role != Role::Leader {
            return Err(ReadError::NotLeader {
                leader_hint: self.leader,
            });
        }
        self.reads.add(id);
        Ok(())
    }

    /// Opens a heartbeat round for new reads and broadcasts it.
    pub(crate) fn start_read_round(&mut self) {
        if let Some(round) = self.reads.start_round(self.log.commit) {
            self.broadcast_read_round(round);
            self.confirm_reads();
        }
    }

    /// Serves every read whose round a quorum of voters has acknowledged.
    pub(crate) fn confirm_reads(&mut self) {
        let mut acked: Vec<u64> = self
            .membership
            .voters
            .iter()
            .map(|&id| {
                if id == self.id {
                    self.reads.round()
                } else {
                    self.progress
                        .get(&id)
                        .map_or(0, |progress| progress.acked_read_round)
                }
            })
            .collect();
        if acked.is_empty() {
            return;
        }
        acked.sort_unstable_by(|a, b| b.cmp(a));
        let quorum_round = acked[self.membership.quorum() - 1];
        self.reads.confirm(quorum_round);
    }
}
