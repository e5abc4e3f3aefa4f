//! The crate's one error type.
//!
//! Expected outcomes of a healthy lock service (a lock that is busy, a wait that is queued) are
//! not errors: they are [`crate::Response`] values. A `LockError` is a request that cannot be
//! carried out as asked; the HTTP layer maps each variant to a status and a stable code.

use crate::fencing::FencingToken;
use crate::mode::LockMode;
use crate::name::LockName;
use crate::session::SessionId;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Why a command (or a decode, snapshot restore or configuration) was refused.
///
/// Serialisable because the outcome of an idempotent command, errors included, is remembered in
/// replicated state and returned again to a retry.
#[derive(Clone, Debug, PartialEq, Eq, Error, Serialize, Deserialize)]
pub enum LockError {
    /// The session does not exist: never created, closed, or expired.
    #[error("session {0} not found")]
    SessionNotFound(SessionId),
    /// A release named a lock the session does not hold.
    #[error("session {session} does not hold lock {name}")]
    NotHeld {
        /// The releasing session.
        session: SessionId,
        /// The lock it named.
        name: LockName,
    },
    /// A release carried a fencing token that is not the one of the session's current hold (it is
    /// from an earlier grant, so the release is stale).
    #[error("stale fencing token {presented} for lock {name}; the current hold has {current}")]
    StaleFencingToken {
        /// The lock named.
        name: LockName,
        /// The token the caller presented.
        presented: FencingToken,
        /// The token of the hold the session has now.
        current: FencingToken,
    },
    /// Waiting would close a cycle in the wait-for graph. `cycle` lists the sessions in wait-for
    /// order starting with the requester: each waits for the next, the last for the requester.
    #[error("deadlock: waiting would close the cycle {cycle:?}")]
    Deadlock {
        /// The sessions of the cycle, requester first.
        cycle: Vec<SessionId>,
    },
    /// The session is already waiting for this lock in another mode; withdraw that wait first.
    #[error("session already waits for lock {name} in mode {waiting}")]
    WaitModeMismatch {
        /// The lock named.
        name: LockName,
        /// The mode of the pending wait.
        waiting: LockMode,
    },
    /// A lock name failed validation; the text says why.
    #[error("invalid lock name: {0}")]
    InvalidName(String),
    /// An idempotency key failed validation; the text says why.
    #[error("invalid idempotency key: {0}")]
    InvalidIdempotencyKey(String),
    /// The idempotency key was already used for a different command.
    #[error("idempotency key {key} was already used for a different command")]
    IdempotencyKeyReused {
        /// The key.
        key: String,
    },
    /// The requested session TTL is outside the configured range.
    #[error("session ttl {ttl_ms} ms outside [{min_ms}, {max_ms}] ms")]
    TtlOutOfRange {
        /// The requested TTL.
        ttl_ms: u64,
        /// Smallest TTL accepted.
        min_ms: u64,
        /// Largest TTL accepted.
        max_ms: u64,
    },
    /// The table already has `max_sessions` sessions.
    #[error("too many sessions (at most {max})")]
    TooManySessions {
        /// The configured bound.
        max: usize,
    },
    /// The table already tracks `max_locks` names with a holder or waiter.
    #[error("too many locks (at most {max})")]
    TooManyLocks {
        /// The configured bound.
        max: usize,
    },
    /// The session already holds or waits for `max_locks_per_session` names.
    #[error("session {session} holds or waits for too many locks (at most {max})")]
    TooManyLocksForSession {
        /// The session.
        session: SessionId,
        /// The configured bound.
        max: usize,
    },
    /// The lock's wait queue is full.
    #[error("too many waiters for lock {name} (at most {max})")]
    TooManyWaiters {
        /// The lock.
        name: LockName,
        /// The configured bound.
        max: usize,
    },
    /// A configuration setting is out of range.
    #[error("invalid lock configuration: {0}")]
    InvalidConfig(String),
    /// Bytes did not decode to a command.
    #[error("cannot decode lock command: {0}")]
    Decode(String),
    /// Snapshot bytes did not decode, or decoded to an inconsistent table.
    #[error("corrupt lock snapshot: {0}")]
    CorruptSnapshot(String),
}
