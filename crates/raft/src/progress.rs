//! What a leader knows about each follower's log, and how fast it may send to it.

use crate::types::LogIndex;
use std::collections::VecDeque;

/// How the leader is currently replicating to one follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReplicationState {
    /// The follower's match point is unknown: send one append at a time and wait for the answer.
    Probe {
        /// An append is outstanding; wait for its answer or the next heartbeat.
        paused: bool,
    },
    /// The follower is known to match: stream appends optimistically, up to the in-flight window.
    Replicate,
    /// The follower needs a snapshot; one was sent, wait for its answer.
    Snapshot,
}

/// Replication progress of one follower.
#[derive(Clone, Debug)]
pub(crate) struct Progress {
    /// Highest index known to be replicated on the follower.
    pub(crate) match_index: LogIndex,
    /// Next index to send.
    pub(crate) next_index: LogIndex,
    pub(crate) state: ReplicationState,
    /// Last index of each unacknowledged append, oldest first (the pipelining window).
    inflight: VecDeque<LogIndex>,
    /// The follower answered within the current CheckQuorum period.
    pub(crate) recent_active: bool,
    /// Highest read round the follower acknowledged in this term.
    pub(crate) acked_read_round: u64,
    /// Ticks since the follower last made progress while something was outstanding; drives
    /// retransmission when messages are lost.
    pub(crate) stalled_ticks: u64,
    /// Highest commit index sent to the follower in this term.
    pub(crate) commit_sent: LogIndex,
}

impl Progress {
    pub(crate) fn new(next_index: LogIndex) -> Self {
        Progress {
            match_index: LogIndex(0),
            next_index,
            state: ReplicationState::Probe { paused: false },
            inflight: VecDeque::new(),
            recent_active: false,
            acked_read_round: 0,
            stalled_ticks: 0,
            commit_sent: LogIndex(0),
        }
    }

    pub(crate) fn become_probe(&mut self) {
        self.state = ReplicationState::Probe { paused: false };
        self.next_index = self.match_index.next();
        self.inflight.clear();
        self.stalled_ticks = 0;
    }

    pub(crate) fn become_replicate(&mut self) {
        self.state = ReplicationState::Replicate;
        self.next_index = self.match_index.next();
        self.inflight.clear();
        self.stalled_ticks = 0;
    }

    pub(crate) fn become_snapshot(&mut self) {
        self.state = ReplicationState::Snapshot;
        self.inflight.clear();
        self.stalled_ticks = 0;
    }

    /// Whether another append may be sent now.
    pub(crate) fn can_send(&self, max_inflight: usize) -> bool {
        match self.state {
            ReplicationState::Probe { paused } => !paused,
            ReplicationState::Replicate => self.inflight.len() < max_inflight,
            ReplicationState::Snapshot => false,
        }
    }

    /// Records that an append ending at `last` was sent.
    pub(crate) fn on_sent(&mut self, last: LogIndex, carried_entries: bool) {
        match self.state {
            ReplicationState::Probe { .. } => {
                self.state = ReplicationState::Probe { paused: true };
            }
            ReplicationState::Replicate => {
                if carried_entries {
                    self.next_index = last.next();
                    self.inflight.push_back(last);
                }
            }
            ReplicationState::Snapshot => {}
        }
    }

    /// The follower confirmed it matches up to `index`. Returns whether that was news.
    pub(crate) fn on_match(&mut self, index: LogIndex) -> bool {
        let advanced = index > self.match_index;
        if advanced {
            self.match_index = index;
            self.stalled_ticks = 0;
        }
        if self.next_index <= index {
            self.next_index = index.next();
        }
        while self.inflight.front().is_some_and(|&last| last <= index) {
            self.inflight.pop_front();
        }
        advanced
    }

    /// Whether something sent is still unanswered (used for retransmission).
    pub(crate) fn has_outstanding(&self, last_index: LogIndex) -> bool {
        match self.state {
            ReplicationState::Probe { paused } => paused,
            ReplicationState::Replicate => {
                !self.inflight.is_empty() || self.match_index < last_index
            }
            ReplicationState::Snapshot => true,
        }
    }

    /// A heartbeat round passed: a paused probe may try again (its append or answer was lost).
    pub(crate) fn on_heartbeat(&mut self) {
        if let ReplicationState::Probe { paused: true } = self.state {
            self.state = ReplicationState::Probe { paused: false };
        }
    }
}
