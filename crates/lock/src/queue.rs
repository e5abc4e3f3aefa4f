//! The state of one lock name: its holders and its FIFO wait queue, the grant rule, and the
//! wait-for edges the name contributes.

use crate::fencing::FencingToken;
use crate::mode::LockMode;
use crate::name::LockName;
use crate::session::SessionId;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};

/// A current holder of a lock (read view for `GET /v1/locks/{name}`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// The holding session.
    pub session: SessionId,
    /// The mode held.
    pub mode: LockMode,
    /// The hold's fencing token.
    pub token: FencingToken,
}

/// A queued request for a lock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waiter {
    /// The waiting session.
    pub session: SessionId,
    /// The mode it waits for.
    pub mode: LockMode,
    /// A shared holder waiting to become exclusive; it keeps its shared hold while it waits, at
    /// the head of the queue.
    pub upgrade: bool,
    /// The [`RequestTag`] of the latest acquire that asked for this wait (a retry re-tags it):
    /// only that request's abandonment withdraws it.
    pub(crate) tag: RequestTag,
}

/// Identifies one acquire request, chosen by the node that proposed it (unique with
/// overwhelming probability; 0 means untagged and is never abandoned). The table records it on
/// the wait and on the hold the request leads to, so an abandoned request's withdrawal
/// (`LockCommand::Abandon`) touches nothing a later request — a client's retry — has claimed.
pub type RequestTag = u64;

/// A lock's holders and waiters (read view for `GET /v1/locks/{name}`). A free lock has both
/// lists empty.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    /// The lock.
    pub name: LockName,
    /// Holders, oldest grant first.
    pub holders: Vec<Holder>,
    /// Waiters, in the order they will be served.
    pub waiters: Vec<Waiter>,
}

/// A hold: mode and fencing token, and which requests it answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Hold {
    pub(crate) mode: LockMode,
    pub(crate) token: FencingToken,
    /// The request whose acquire was granted this hold.
    pub(crate) granted_by: RequestTag,
    /// The latest request answered with this hold (the granting one, or a later repeat).
    pub(crate) claimed_by: RequestTag,
    /// For an upgrade: the shared hold it replaced, restored if the upgrading request is
    /// abandoned.
    pub(crate) before_upgrade: Option<(FencingToken, RequestTag)>,
}

/// Holders and FIFO queue of one name.
///
/// Stable-state invariant (after every apply): the head of the queue is not grantable. Were it
/// grantable it would already have been granted, in the same step that made it so.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct NameState {
    pub(crate) holders: BTreeMap<SessionId, Hold>,
    pub(crate) queue: VecDeque<Waiter>,
}

impl NameState {
    pub(crate) fn is_free(&self) -> bool {
        self.holders.is_empty() && self.queue.is_empty()
    }

    pub(crate) fn hold(&self, session: SessionId) -> Option<Hold> {
        self.holders.get(&session).copied()
    }

    pub(crate) fn waiter_position(&self, session: SessionId) -> Option<usize> {
        self.queue.iter().position(|w| w.session == session)
    }

    /// Whether a new (not holding, not queued) request can be granted at once: nobody is queued
    /// ahead of it (strict FIFO, so readers cannot overtake a queued writer) and it is
    /// compatible with every holder.
    pub(crate) fn can_grant_new(&self, mode: LockMode) -> bool {
        self.queue.is_empty()
            && self
                .holders
                .values()
                .all(|h| h.mode.is_compatible_with(mode))
    }

    /// Whether `waiter` could be granted given the current holders (ignoring its place).
    fn can_grant(&self, waiter: &Waiter) -> bool {
        if waiter.upgrade {
            self.holders.keys().all(|s| *s == waiter.session)
        } else {
            self.holders
                .values()
                .all(|h| h.mode.is_compatible_with(waiter.mode))
        }
    }

    pub(crate) fn head_is_grantable(&self) -> bool {
        self.queue.front().is_some_and(|w| self.can_grant(w))
    }

    /// Record a grant (an upgrade replaces the session's shared hold).
    ///
    /// # Panics
    /// If the grant would conflict with another holder, or the token does not exceed every
    /// token held on this name.
    pub(crate) fn grant(
        &mut self,
        session: SessionId,
        mode: LockMode,
        token: FencingToken,
        tag: RequestTag,
    ) {
        for (other, hold) in &self.holders {
            assert!(
                *other == session || hold.mode.is_compatible_with(mode),
                "conflicting grant: {mode} to session {session} while session {other} holds {}",
                hold.mode
            );
            assert!(
                token > hold.token,
                "fencing token {token} not above held token {}",
                hold.token
            );
        }
        let before_upgrade = self
            .holders
            .get(&session)
            .map(|shared| (shared.token, shared.granted_by));
        self.holders.insert(
            session,
            Hold {
                mode,
                token,
                granted_by: tag,
                claimed_by: tag,
                before_upgrade,
            },
        );
    }

    /// The wait-for edges (waiter -> blocker) this name contributes, in a reduced form with the
    /// same reachability as the full relation "a waiter waits for every incompatible holder and
    /// every incompatible waiter ahead of it".
    ///
    /// The queue splits into groups: a maximal run of shared waiters, or a single exclusive
    /// waiter. Neighbouring groups are always incompatible. Every member of the first group
    /// waits for each incompatible holder; every member of a later group waits for each member of
    /// the group just ahead. Each full edge is then a path of reduced edges (the first group is
    /// never grantable, so when it is a shared run the holder is a lone exclusive one, which
    /// blocks everybody behind too), and each reduced edge is a full edge, so a cycle exists in
    /// one graph exactly when it exists in the other, and every reported cycle is a real one.
    /// The reduction keeps the edge count linear in the queue length instead of quadratic.
    pub(crate) fn wait_edges(&self) -> Vec<(SessionId, SessionId)> {
        let mut edges = Vec::new();
        let mut previous: Vec<SessionId> = Vec::new();
        let mut first = true;
        let mut i = 0;
        while i < self.queue.len() {
            let start = i;
            if self.is_plain_shared(i) {
                while i < self.queue.len() && self.is_plain_shared(i) {
                    i += 1;
                }
            } else {
                i += 1;
            }
            let group = self.queue.range(start..i);
            for waiter in group.clone() {
                if first {
                    for (holder, hold) in &self.holders {
                        if *holder != waiter.session && !hold.mode.is_compatible_with(waiter.mode) {
                            edges.push((waiter.session, *holder));
                        }
                    }
                } else {
                    edges.extend(previous.iter().map(|blocker| (waiter.session, *blocker)));
                }
            }
            previous = group.map(|w| w.session).collect();
            first = false;
        }
        edges
    }

    fn is_plain_shared(&self, i: usize) -> bool {
        self.queue[i].mode == LockMode::Shared && !self.queue[i].upgrade
    }

    pub(crate) fn info(&self, name: &LockName) -> LockInfo {
        let mut holders: Vec<Holder> = self
            .holders
            .iter()
            .map(|(session, hold)| Holder {
                session: *session,
                mode: hold.mode,
                token: hold.token,
            })
            .collect();
        holders.sort_by_key(|h| h.token);
        LockInfo {
            name: name.clone(),
            holders,
            waiters: self.queue.iter().cloned().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use LockMode::{Exclusive, Shared};

    fn state(holders: &[(u64, LockMode)], queue: &[(u64, LockMode, bool)]) -> NameState {
        NameState {
            holders: holders
                .iter()
                .enumerate()
                .map(|(i, (s, mode))| {
                    (
                        SessionId(*s),
                        Hold {
                            mode: *mode,
                            token: FencingToken(i as u64 + 1),
                            granted_by: 0,
                            claimed_by: 0,
                            before_upgrade: None,
                        },
                    )
                })
                .collect(),
            queue: queue
                .iter()
                .map(|(s, mode, upgrade)| Waiter {
                    session: SessionId(*s),
                    mode: *mode,
                    upgrade: *upgrade,
                    tag: 0,
                })
                .collect(),
        }
    }

    fn edges(state: &NameState) -> Vec<(u64, u64)> {
        state
            .wait_edges()
            .into_iter()
            .map(|(a, b)| (a.0, b.0))
            .collect()
    }

    #[test]
    fn queue_groups_wait_for_the_group_ahead() {
        // Proves the reduced edge rule: head group -> incompatible holders, later groups -> the
        // whole group just ahead (a shared run behind X, an X behind a shared run).
        let s = state(
            &[(1, Exclusive)],
            &[
                (2, Shared, false),
                (3, Shared, false),
                (4, Exclusive, false),
                (5, Shared, false),
            ],
        );
        assert_eq!(edges(&s), vec![(2, 1), (3, 1), (4, 2), (4, 3), (5, 4)]);
    }

    #[test]
    fn upgrader_waits_for_the_other_shared_holders_only() {
        // Proves an upgrader has no self-edge and those behind it wait for it.
        let s = state(
            &[(1, Shared), (2, Shared)],
            &[(1, Exclusive, true), (3, Exclusive, false)],
        );
        assert_eq!(edges(&s), vec![(1, 2), (3, 1)]);
    }

    #[test]
    fn new_request_cannot_overtake_the_queue() {
        // Proves strict FIFO: a shared request is not granted past a queued writer even though
        // it is compatible with the shared holder.
        let s = state(&[(1, Shared)], &[(2, Exclusive, false)]);
        assert!(!s.can_grant_new(Shared));
        assert!(state(&[(1, Shared)], &[]).can_grant_new(Shared));
        assert!(!state(&[(1, Shared)], &[]).can_grant_new(Exclusive));
    }

    #[test]
    #[should_panic(expected = "conflicting grant")]
    fn conflicting_grant_panics() {
        // Proves the no-conflict invariant is asserted at the grant itself.
        let mut s = state(&[(1, Shared)], &[]);
        s.grant(SessionId(2), Exclusive, FencingToken(10), 0);
    }
}
