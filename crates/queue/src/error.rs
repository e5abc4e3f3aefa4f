//! The errors of queue operations.

use crate::backend::BackendError;

/// Why a queue operation failed. Each variant maps to one stable HTTP error code.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// A request field is out of range or malformed (`invalid_request`).
    #[error("{0}")]
    InvalidRequest(String),
    /// A message body exceeds the configured limit (`payload_too_large`).
    #[error("message body of {size} bytes exceeds the limit of {limit} bytes")]
    PayloadTooLarge {
        /// The body's size.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// A receipt that does not parse or names a partition or shard this node does not know
    /// (`unknown_receipt`).
    #[error("unknown receipt {receipt:?}: {reason}")]
    UnknownReceipt {
        /// The receipt as given.
        receipt: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The shard holding the partition did not answer (`shard_unavailable`).
    #[error("shard {shard} is unavailable: {source}")]
    ShardUnavailable {
        /// The shard's name.
        shard: String,
        /// What the backend reported.
        #[source]
        source: BackendError,
    },
    /// The backend answered something unexpected (`internal`).
    #[error("shard {shard} failed: {source}")]
    Backend {
        /// The shard's name.
        shard: String,
        /// What the backend reported.
        #[source]
        source: BackendError,
    },
}

impl QueueError {
    /// Wraps a backend error of `shard`, separating "cannot reach it" from "it said no".
    pub fn from_backend(shard: &str, source: BackendError) -> Self {
        match source {
            BackendError::Unavailable(_) => QueueError::ShardUnavailable {
                shard: shard.to_owned(),
                source,
            },
            _ => QueueError::Backend {
                shard: shard.to_owned(),
                source,
            },
        }
    }
}
