//! How lock-table and Raft errors are answered over HTTP.

use crate::http::ApiError;
use crate::raft::DriverError;
use distsync_api::{ErrorBody, ErrorCode};
use distsync_lock::LockError;

impl From<LockError> for ApiError {
    fn from(error: LockError) -> Self {
        let code = match &error {
            LockError::SessionNotFound(_) => ErrorCode::SessionNotFound,
            LockError::NotHeld { .. } | LockError::StaleFencingToken { .. } => ErrorCode::NotHeld,
            LockError::Deadlock { cycle } => {
                let mut api = ApiError::new(ErrorCode::Deadlock, error.to_string());
                api.body = ErrorBody {
                    cycle: Some(cycle.iter().map(|session| session.0).collect()),
                    ..api.body
                };
                return api;
            }
            LockError::IdempotencyKeyReused { .. } => ErrorCode::IdempotencyKeyReused,
            LockError::TooManySessions { .. }
            | LockError::TooManyLocks { .. }
            | LockError::TooManyLocksForSession { .. }
            | LockError::TooManyWaiters { .. } => ErrorCode::LimitExceeded,
            LockError::InvalidName(_)
            | LockError::InvalidIdempotencyKey(_)
            | LockError::TtlOutOfRange { .. }
            | LockError::WaitModeMismatch { .. } => ErrorCode::InvalidRequest,
            LockError::InvalidConfig(_) | LockError::Decode(_) | LockError::CorruptSnapshot(_) => {
                ErrorCode::Internal
            }
        };
        ApiError::new(code, error.to_string())
    }
}

impl From<DriverError> for ApiError {
    fn from(error: DriverError) -> Self {
        match error {
            DriverError::NotLeader { .. } | DriverError::Dropped => {
                ApiError::new(ErrorCode::NoLeader, format!("{error}; retry"))
            }
            DriverError::Stopped => ApiError::new(ErrorCode::Internal, error.to_string()),
            DriverError::Rejected(message) => {
                ApiError::new(ErrorCode::MembershipChangeRejected, message)
            }
        }
    }
}
