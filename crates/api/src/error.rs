//! The error body every endpoint returns on failure.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Stable, machine-readable error codes. Clients branch on these, never on messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request is malformed: bad JSON, unknown field, bad name or mode, value out of range.
    InvalidRequest,
    /// The body exceeds the size limit.
    PayloadTooLarge,
    /// The path names nothing.
    NotFound,
    /// The session does not exist (never created, closed, or expired).
    SessionNotFound,
    /// The lock was not granted within `wait_ms`; the wait was withdrawn.
    Timeout,
    /// Waiting would close a cycle in the wait-for graph; `cycle` names the sessions.
    Deadlock,
    /// A release named a lock the session does not hold (or with a stale fencing token).
    NotHeld,
    /// The idempotency key was used before for a different request.
    IdempotencyKeyReused,
    /// A limit was reached (sessions, waiters, locks per session).
    LimitExceeded,
    /// No leader could be reached within the request's deadline.
    NoLeader,
    /// A membership change is already in progress, or the change is not allowed.
    MembershipChangeRejected,
    /// A receipt that does not parse or names a partition or shard this node does not know.
    UnknownReceipt,
    /// The shard holding the partition does not answer; other partitions keep working.
    ShardUnavailable,
    /// A node the request needs (the key's home, or the node holding its only copy) did not
    /// answer in time, or the node asked is cut off from a majority of its cluster. A write
    /// answered so took effect before the answer or never will (the message says which). Keys
    /// homed elsewhere keep working.
    NodeUnavailable,
    /// The node does not allow this operation (e.g. fault injection without
    /// `--allow-fault-injection`).
    Forbidden,
    /// Something failed inside the node; the message says what.
    Internal,
}

/// The JSON body of every error response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong, for programs.
    pub code: ErrorCode,
    /// What went wrong, for people.
    pub message: String,
    /// For `deadlock`: the sessions of the cycle, the requester first; each waits for the next.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cycle: Option<Vec<u64>>,
}

impl ErrorBody {
    /// An error body with no extra fields.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorBody {
            code,
            message: message.into(),
            cycle: None,
        }
    }
}
