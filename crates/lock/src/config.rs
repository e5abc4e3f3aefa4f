//! Bounds of the lock table.

use crate::error::LockError;
use serde::{Deserialize, Serialize};

/// Bounds on everything the table stores, so no client can grow replicated state without limit.
/// Exceeding a bound is a typed [`LockError`], never a panic.
///
/// The configuration is part of the replicated state: every replica must apply with the same
/// bounds or their outcomes diverge. It is therefore written into snapshots and taken from the
/// snapshot on restore.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockConfig {
    /// Most live sessions.
    pub max_sessions: usize,
    /// Most lock names that have a holder or a waiter at one time.
    pub max_locks: usize,
    /// Most distinct names one session holds or waits for.
    pub max_locks_per_session: usize,
    /// Longest wait queue of one name.
    pub max_waiters_per_lock: usize,
    /// How many recent idempotency keys (and their outcomes) are remembered; the oldest is
    /// forgotten first. 0 disables deduplication.
    pub max_idempotency_keys: usize,
    /// Shortest session TTL accepted, in milliseconds.
    pub session_ttl_ms_min: u64,
    /// Longest session TTL accepted, in milliseconds.
    pub session_ttl_ms_max: u64,
}

impl Default for LockConfig {
    fn default() -> LockConfig {
        LockConfig {
            max_sessions: 100_000,
            max_locks: 1_000_000,
            max_locks_per_session: 10_000,
            max_waiters_per_lock: 10_000,
            max_idempotency_keys: 100_000,
            session_ttl_ms_min: 100,
            session_ttl_ms_max: 3_600_000,
        }
    }
}

impl LockConfig {
    /// Check that every bound can work.
    ///
    /// # Errors
    /// [`LockError::InvalidConfig`] if a `max_*` bound other than `max_idempotency_keys` is 0, or
    /// the TTL range is empty or starts at 0.
    pub fn validate(&self) -> Result<(), LockError> {
        let positive = [
            ("max_sessions", self.max_sessions),
            ("max_locks", self.max_locks),
            ("max_locks_per_session", self.max_locks_per_session),
            ("max_waiters_per_lock", self.max_waiters_per_lock),
        ];
        for (field, value) in positive {
            if value == 0 {
                return Err(LockError::InvalidConfig(format!(
                    "{field} must be at least 1"
                )));
            }
        }
        if self.session_ttl_ms_min == 0 {
            return Err(LockError::InvalidConfig(
                "session_ttl_ms_min must be at least 1".into(),
            ));
        }
        if self.session_ttl_ms_min > self.session_ttl_ms_max {
            return Err(LockError::InvalidConfig(format!(
                "session_ttl_ms_min ({}) exceeds session_ttl_ms_max ({})",
                self.session_ttl_ms_min, self.session_ttl_ms_max
            )));
        }
        Ok(())
    }

    /// Check a requested session TTL against the configured range.
    ///
    /// # Errors
    /// [`LockError::TtlOutOfRange`] when outside `[session_ttl_ms_min, session_ttl_ms_max]`.
    pub fn check_ttl(&self, ttl_ms: u64) -> Result<(), LockError> {
        if (self.session_ttl_ms_min..=self.session_ttl_ms_max).contains(&ttl_ms) {
            Ok(())
        } else {
            Err(LockError::TtlOutOfRange {
                ttl_ms,
                min_ms: self.session_ttl_ms_min,
                max_ms: self.session_ttl_ms_max,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid() {
        // Proves the defaults pass their own validation.
        assert_eq!(LockConfig::default().validate(), Ok(()));
    }

    #[test]
    fn zero_bounds_and_empty_ttl_range_are_invalid() {
        // Proves each unusable setting is reported as InvalidConfig.
        let base = LockConfig::default();
        let bad = [
            LockConfig {
                max_sessions: 0,
                ..base.clone()
            },
            LockConfig {
                max_locks: 0,
                ..base.clone()
            },
            LockConfig {
                max_locks_per_session: 0,
                ..base.clone()
            },
            LockConfig {
                max_waiters_per_lock: 0,
                ..base.clone()
            },
            LockConfig {
                session_ttl_ms_min: 0,
                ..base.clone()
            },
            LockConfig {
                session_ttl_ms_min: 10,
                session_ttl_ms_max: 9,
                ..base.clone()
            },
        ];
        for config in bad {
            assert!(
                matches!(config.validate(), Err(LockError::InvalidConfig(_))),
                "{config:?}"
            );
        }
        let no_dedup = LockConfig {
            max_idempotency_keys: 0,
            ..base
        };
        assert_eq!(no_dedup.validate(), Ok(()));
    }

    #[test]
    fn ttl_outside_range_is_rejected() {
        // Proves both ends of the TTL range are inclusive and outside values are typed errors.
        let config = LockConfig {
            session_ttl_ms_min: 10,
            session_ttl_ms_max: 20,
            ..LockConfig::default()
        };
        assert_eq!(config.check_ttl(10), Ok(()));
        assert_eq!(config.check_ttl(20), Ok(()));
        assert!(matches!(
            config.check_ttl(9),
            Err(LockError::TtlOutOfRange { .. })
        ));
        assert!(matches!(
            config.check_ttl(21),
            Err(LockError::TtlOutOfRange { .. })
        ));
    }
}
