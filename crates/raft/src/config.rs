//! Configuration of one Raft node.

use crate::error::ConfigError;
use crate::types::NodeId;

/// Tunables of one node. Time is counted in ticks; the shell decides how long a tick is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RaftConfig {
    /// This node's id.
    pub id: NodeId,
    /// Minimum election timeout; each timer reset draws uniformly from `[t, 2t)` so that
    /// split votes resolve quickly (§5.2).
    pub election_timeout_ticks: u64,
    /// A leader sends heartbeats this often. Must be well below the election timeout.
    pub heartbeat_interval_ticks: u64,
    /// Run a pre-vote round before raising the term (thesis §9.6), so a node returning from a
    /// partition cannot depose a healthy leader.
    pub pre_vote: bool,
    /// A leader that has not heard from a majority within an election timeout steps down, and
    /// followers that heard from a leader within one ignore vote requests (leader stickiness).
    pub check_quorum: bool,
    /// Upper bound on entries in one `AppendEntries`.
    pub max_entries_per_message: usize,
    /// Upper bound on entry bytes in one `AppendEntries` (one entry is always allowed).
    pub max_bytes_per_message: usize,
    /// Upper bound on unacknowledged `AppendEntries` per follower (pipelining window).
    pub max_inflight_messages: usize,
    /// Test-only protocol bugs for negative controls. All off in production.
    pub bugs: TestBugs,
}

/// Deliberate protocol bugs, switched on only by negative-control tests to prove that the
/// simulator's checkers detect the violations they cause.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TestBugs {
    /// Commit an entry of an earlier term by counting replicas (the Figure 8 bug, §5.4.2).
    pub commit_previous_term_by_count: bool,
    /// Grant a vote even when already voted for someone else in this term.
    pub grant_second_vote_in_term: bool,
    /// Leave the vote out of the hard state handed to the caller for persisting.
    pub skip_persist_vote: bool,
}

impl TestBugs {
    /// Whether any bug is on.
    pub fn any(&self) -> bool {
        self.commit_previous_term_by_count
            || self.grant_second_vote_in_term
            || self.skip_persist_vote
    }
}

impl RaftConfig {
    /// Defaults suited to a 10 ms tick: election timeout 30–60 ticks, heartbeat every 5.
    pub fn new(id: NodeId) -> Self {
        RaftConfig {
            id,
            election_timeout_ticks: 30,
            heartbeat_interval_ticks: 5,
            pre_vote: true,
            check_quorum: true,
            max_entries_per_message: 512,
            max_bytes_per_message: 1 << 20,
            max_inflight_messages: 64,
            bugs: TestBugs::default(),
        }
    }

    /// Checks that the settings can work together.
    ///
    /// # Errors
    /// [`ConfigError`] naming the first setting that is out of range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.id.0 == 0 {
            return Err(ConfigError::Invalid("id must be non-zero"));
        }
        if self.heartbeat_interval_ticks == 0 {
            return Err(ConfigError::Invalid(
                "heartbeat_interval_ticks must be at least 1",
            ));
        }
        if self.election_timeout_ticks <= self.heartbeat_interval_ticks {
            return Err(ConfigError::Invalid(
                "election_timeout_ticks must exceed heartbeat_interval_ticks",
            ));
        }
        if self.max_entries_per_message == 0 || self.max_inflight_messages == 0 {
            return Err(ConfigError::Invalid(
                "max_entries_per_message and max_inflight_messages must be at least 1",
            ));
        }
        Ok(())
    }
}
