//! What a replicated service plugs into the Raft driver.

use super::driver::{DriverError, NodeStatus};
use distsync_raft::LogIndex;
use std::time::Instant;
use tokio::sync::oneshot;

/// Completes the request that proposed a command: immediately at apply time, or later (a lock
/// wait is answered when a release grants it).
pub type Responder<R> = oneshot::Sender<Result<R, DriverError>>;

/// A deterministic state machine replicated through Raft. `apply` must depend only on the
/// command and the current state (never a clock), so every replica reaches the same state;
/// `on_tick` is where a leader may turn time into commands.
pub trait StateMachine: Send + 'static {
    /// What a proposer is answered with.
    type Response: Send + 'static;

    /// Applies a committed command. `responder` is present on the node that proposed it.
    fn apply(
        &mut self,
        index: LogIndex,
        command: &[u8],
        responder: Option<Responder<Self::Response>>,
    );

    /// The whole state, for a Raft snapshot.
    fn snapshot(&self) -> Vec<u8>;

    /// Checks that `snapshot` would restore, without touching the state. A snapshot from a peer
    /// is checked before the node persists it: once persisted, a snapshot that does not restore
    /// would stop the node at every start.
    ///
    /// # Errors
    /// When the bytes are not a snapshot of this state machine.
    fn validate_snapshot(&self, snapshot: &[u8]) -> anyhow::Result<()>;

    /// Replaces the state with a snapshot's.
    ///
    /// # Errors
    /// When the bytes are not a snapshot of this state machine.
    fn restore(&mut self, snapshot: &[u8]) -> anyhow::Result<()>;

    /// Whether the leader may hold `command` back to share the log append (and its fsync) of
    /// the next proposal, for up to the driver's batch delay. True only for a command whose
    /// proposer cannot be answered before some later command anyway (a lock acquire that will
    /// queue behind a holder: the release that lets it in is that later command). Holding it
    /// back changes when it is proposed, never what it does.
    fn may_join_next_batch(&self, _command: &[u8]) -> bool {
        false
    }

    /// Called on every tick with the node's status. A leader returns commands to propose
    /// (for example, expiring sessions whose deadline passed).
    fn on_tick(&mut self, now: Instant, status: &NodeStatus) -> Vec<Vec<u8>>;

    /// Called when this node gains or loses leadership.
    fn on_leadership_change(&mut self, is_leader: bool, now: Instant);
}
