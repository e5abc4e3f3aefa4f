//! What applying one command produces: the answer for its proposer and the side effects other
//! parties must hear about in the same step.

use crate::error::LockError;
use crate::fencing::FencingToken;
use crate::mode::LockMode;
use crate::name::LockName;
use crate::session::{SessionEndCause, SessionId};
use serde::{Deserialize, Serialize};

/// A lock held by a session, as granted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// The holder.
    pub session: SessionId,
    /// The lock.
    pub name: LockName,
    /// The mode held (exclusive when an exclusive holder repeats a shared acquire).
    pub mode: LockMode,
    /// The hold's fencing token.
    pub token: FencingToken,
}

/// The direct answer to a command's proposer (the `Ok` side of [`ApplyOutcome::response`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// `CreateSession`: the new session.
    SessionCreated {
        /// Its id (the entry's log index).
        session: SessionId,
        /// Its TTL.
        ttl_ms: u64,
    },
    /// `CloseSession`: the session is gone; its releases and withdrawn waits are in the events.
    SessionClosed {
        /// The closed session.
        session: SessionId,
    },
    /// `ExpireSessions`: the sessions that existed and are now expired, in command order
    /// (duplicates and unknown ids dropped).
    SessionsExpired {
        /// The expired sessions.
        sessions: Vec<SessionId>,
    },
    /// `Acquire`: the lock is held, by this command or (idempotently) by an earlier one.
    /// `CancelWait` also answers this when the grant won the race against the cancel, so the
    /// shell answers the timed-out request with the grant instead of a timeout.
    Granted(Grant),
    /// `Acquire` with `wait`: queued (or still queued). The grant arrives later as a
    /// [`LockEvent::Granted`].
    Waiting {
        /// The mode waited for.
        mode: LockMode,
    },
    /// `Acquire` without `wait` (try-lock): not free now; nothing was queued.
    NotGranted,
    /// `CancelWait`: the wait was withdrawn.
    WaitCancelled,
    /// `CancelWait`: there was no wait and no hold (already withdrawn, or never made).
    NotWaiting,
    /// `Release`: the hold was dropped.
    Released {
        /// The lock.
        name: LockName,
        /// The token of the hold that was released.
        token: FencingToken,
    },
}

/// A side effect of a command on someone other than its proposer. Events of one apply are in the
/// order they happened; the proposer's own result is only in [`ApplyOutcome::response`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockEvent {
    /// A waiter was granted (by a release, cancel, close or expiry in this step): wake its
    /// pending acquire at once.
    Granted(Grant),
    /// A session ended: drop its keep-alive deadline and fail its pending requests.
    SessionEnded {
        /// The session.
        session: SessionId,
        /// Closed or expired.
        cause: SessionEndCause,
    },
    /// A pending wait was withdrawn because its session ended.
    WaitCancelled {
        /// The waiting session.
        session: SessionId,
        /// The lock it waited for.
        name: LockName,
        /// Closed or expired.
        cause: SessionEndCause,
    },
    /// A hold was released because its session ended.
    Released {
        /// The former holder.
        session: SessionId,
        /// The lock.
        name: LockName,
        /// The token of the released hold.
        token: FencingToken,
        /// Closed or expired.
        cause: SessionEndCause,
    },
}

/// Result of [`crate::LockTable::apply`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApplyOutcome {
    /// The answer for whoever proposed the command.
    pub response: Result<Response, LockError>,
    /// Effects on other parties, in order.
    pub events: Vec<LockEvent>,
}
