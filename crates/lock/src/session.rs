//! Sessions: the owner of every hold and wait. A session ends by being closed or by expiring, and
//! its end releases its locks and withdraws its waits in the same apply step.

use crate::fencing::FencingToken;
use crate::name::LockName;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, VecDeque};
use std::fmt;

/// Identity of a session: the log index of the `CreateSession` entry that made it, so ids are
/// unique and every replica assigns the same one without coordination.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct SessionId(pub u64);

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What the leader needs to (re)build its keep-alive deadline table, e.g. after a failover.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionInfo {
    /// The session.
    pub session: SessionId,
    /// Time-to-live between keep-alives, in milliseconds of the leader's monotonic clock.
    pub ttl_ms: u64,
    /// Number of lock names the session holds or waits for.
    pub lock_count: usize,
}

/// Why a session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SessionEndCause {
    /// Its owner closed it (`CloseSession`).
    Closed,
    /// The leader stopped receiving keep-alives and committed `ExpireSessions`.
    Expired,
}

/// A live session and the names it holds or waits for (the reverse index of the lock table, so
/// ending a session touches only its own locks).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Session {
    pub(crate) ttl_ms: u64,
    /// Names held, in any mode.
    pub(crate) held: BTreeSet<LockName>,
    /// Names waited for. A name can be both held and waited for during a shared->exclusive
    /// upgrade.
    pub(crate) waiting: BTreeSet<LockName>,
    /// The session's last releases (name and token of the hold), newest last, so that a retry
    /// of one whose answer was lost is answered `released` again rather than `not_held`
    /// without a remembered idempotency key per release. Bounded by [`RELEASES_REMEMBERED`]
    /// and gone with the session.
    pub(crate) released: VecDeque<(LockName, FencingToken)>,
}

/// How many of a session's releases are recognised when retried.
pub(crate) const RELEASES_REMEMBERED: usize = 16;

impl Session {
    pub(crate) fn new(ttl_ms: u64) -> Session {
        Session {
            ttl_ms,
            held: BTreeSet::new(),
            waiting: BTreeSet::new(),
            released: VecDeque::new(),
        }
    }

    pub(crate) fn remember_release(&mut self, name: LockName, token: FencingToken) {
        if self.released.len() == RELEASES_REMEMBERED {
            self.released.pop_front();
        }
        self.released.push_back((name, token));
    }

    pub(crate) fn released_before(&self, name: &LockName, token: FencingToken) -> bool {
        self.released
            .iter()
            .any(|(released, released_token)| released == name && *released_token == token)
    }

    /// Distinct names held or waited for: the quantity `max_locks_per_session` bounds.
    pub(crate) fn lock_count(&self) -> usize {
        self.held.len() + self.waiting.difference(&self.held).count()
    }

    pub(crate) fn info(&self, session: SessionId) -> SessionInfo {
        SessionInfo {
            session,
            ttl_ms: self.ttl_ms,
            lock_count: self.lock_count(),
        }
    }
}
