//! The crate's error type.

use crate::types::Key;

/// Operating errors of the cache core (broken invariants panic instead).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CacheError {
    /// A configuration value is out of range.
    #[error("invalid cache configuration: {0}")]
    InvalidConfig(String),
    /// A value is larger than a line may be.
    #[error("value of {size_bytes} bytes exceeds the limit of {limit_bytes} bytes")]
    ValueTooLarge {
        /// Size of the rejected value.
        size_bytes: usize,
        /// The configured limit.
        limit_bytes: usize,
    },
    /// The node already has `limit` coherence transactions in flight; retry later.
    #[error("too many pending coherence transactions (limit {limit})")]
    TooManyPendingTransactions {
        /// The configured limit (`pending_transactions_max`).
        limit: usize,
    },
    /// Too many local operations are queued behind the transaction on this key; retry later.
    #[error("too many operations queued on key {key:?} (limit {limit})")]
    TooManyQueuedOperations {
        /// The key.
        key: Key,
        /// The configured limit (`queued_operations_per_key_max`).
        limit: usize,
    },
}
