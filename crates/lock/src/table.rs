//! The lock table: the deterministic state machine every replica applies from the Raft log.

use crate::command::LockCommand;
use crate::config::LockConfig;
use crate::error::LockError;
use crate::fencing::{FencingToken, TokenIssuer};
use crate::idempotency::{IdempotencyKey, RecentRequests};
use crate::mode::LockMode;
use crate::name::LockName;
use crate::outcome::{ApplyOutcome, Grant, LockEvent, Response};
use crate::queue::{Hold, LockInfo, NameState, RequestTag, Waiter};
use crate::session::{Session, SessionEndCause, SessionId, SessionInfo};
use crate::wait_for::WaitForGraph;
use distsync_raft::LogIndex;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// `command` with its request tag cleared, for comparing a retry with what a key recorded.
fn untagged(command: &LockCommand) -> LockCommand {
    let mut command = command.clone();
    if let LockCommand::Acquire { tag, .. } = &mut command {
        *tag = 0;
    }
    command
}

/// Version written at the front of every snapshot.
const SNAPSHOT_FORMAT: u32 = 3;

/// Sessions, holds, wait queues and fencing state, changed only by [`LockTable::apply`].
///
/// Pure and deterministic: no clock, no randomness, no IO, and every map is a `BTreeMap`, so two
/// replicas that apply the same entries produce the same outcomes and byte-identical snapshots.
///
/// # Semantics
/// - Shared holders coexist; an exclusive holder is alone.
/// - Waiters are served strictly first-come first-served: a request is granted at once only if
///   nobody is queued and it is compatible with every holder, so a stream of readers cannot starve
///   a queued writer. A release (or cancel, close, expiry) grants the next compatible waiters in
///   the same apply step — a whole run of shared waiters at once — and reports them as
///   [`LockEvent::Granted`].
/// - Fencing tokens strictly increase over all grants, `max(previous + 1, log index)`.
/// - Acquire is idempotent per (session, name): a repeat returns the existing grant (same token)
///   or "still waiting", never a second grant or a self-deadlock. Holding exclusive satisfies a
///   shared request.
/// - Ending a session (close or expiry) withdraws all its waits and releases all its holds before
///   anything is granted, so a waiter of an ending session is never granted (TESTING L-14).
/// - **Shared -> exclusive upgrade.** A session holding shared that asks for exclusive:
///   if it is the only holder, it is upgraded in place at once, with a new fencing token;
///   otherwise (with `wait`) it keeps its shared hold and waits at the *head* of the queue (ahead
///   of earlier waiters, who are blocked by its shared hold anyway) until the other holders are
///   gone. A second holder asking to upgrade while one upgrade is pending would wait for the first
///   upgrader's shared hold while the first waits for its own: a deadlock, refused at once with
///   `Deadlock { cycle: [second, first] }` (TESTING D-06). A try-lock upgrade that cannot be done
///   at once answers `NotGranted`. Releasing the shared hold while the upgrade is pending turns
///   the upgrade into an ordinary exclusive wait that keeps its place at the head.
/// - Deadlock: a wait that would close a cycle in the [`WaitForGraph`] is refused with
///   [`LockError::Deadlock`], the cycle starting with the requester (the youngest request is the
///   victim, and nothing is queued); acyclic waits are never refused; a try-lock adds no edge.
/// - Idempotency keys: a command applied with a key seen recently (bounded by
///   `max_idempotency_keys`) returns the first outcome without acting again, errors included. A
///   key reused for a different command is refused. An `Acquire` whose first outcome was
///   `Waiting` is re-evaluated instead, so a retry sees the grant if it has happened since.
#[derive(Clone, Debug)]
pub struct LockTable {
    /// Part of the replicated state (bounds decide outcomes), so it travels in snapshots.
    config: LockConfig,
    applied_index: LogIndex,
    sessions: BTreeMap<SessionId, Session>,
    /// Only names with a holder or a waiter; a free lock has no entry.
    locks: BTreeMap<LockName, NameState>,
    tokens: TokenIssuer,
    recent: RecentRequests,
    /// Derived from `locks` (rebuilt on restore, not stored in snapshots).
    graph: WaitForGraph,
}

#[derive(Serialize)]
struct SnapshotRef<'a> {
    format: u32,
    config: &'a LockConfig,
    applied_index: LogIndex,
    sessions: &'a BTreeMap<SessionId, Session>,
    locks: &'a BTreeMap<LockName, NameState>,
    tokens: &'a TokenIssuer,
    recent: &'a RecentRequests,
}

#[derive(Deserialize)]
struct SnapshotData {
    format: u32,
    config: LockConfig,
    applied_index: LogIndex,
    sessions: BTreeMap<SessionId, Session>,
    locks: BTreeMap<LockName, NameState>,
    tokens: TokenIssuer,
    recent: RecentRequests,
}

impl LockTable {
    /// An empty table.
    ///
    /// # Errors
    /// [`LockError::InvalidConfig`] if `config` does not validate.
    pub fn new(config: LockConfig) -> Result<LockTable, LockError> {
        config.validate()?;
        Ok(LockTable {
            config,
            applied_index: LogIndex(0),
            sessions: BTreeMap::new(),
            locks: BTreeMap::new(),
            tokens: TokenIssuer::default(),
            recent: RecentRequests::default(),
            graph: WaitForGraph::new(),
        })
    }

    /// The bounds this table applies with.
    pub fn config(&self) -> &LockConfig {
        &self.config
    }

    /// Index of the last applied entry (0 before any).
    pub fn applied_index(&self) -> LogIndex {
        self.applied_index
    }

    /// The highest fencing token issued so far (0 before any grant).
    pub fn last_fencing_token(&self) -> FencingToken {
        self.tokens.last()
    }

    /// Apply the committed entry at `index`. Returns the answer for the command's proposer and the
    /// side effects for everyone else (waiters granted, waits withdrawn, sessions ended), so the
    /// shell can wake waiting requests in this same step.
    ///
    /// Entries that carry no lock command (Raft no-ops, undecodable bytes) need not be applied;
    /// indexes only have to increase.
    ///
    /// # Panics
    /// If `index` is not above the last applied index, or a safety invariant breaks (a conflicting
    /// grant, a fencing token that does not increase, a grant to a session that no longer exists).
    pub fn apply(&mut self, index: LogIndex, command: LockCommand) -> ApplyOutcome {
        assert!(
            index > self.applied_index,
            "apply index {index} not above applied index {}",
            self.applied_index
        );
        self.applied_index = index;
        let mut events = Vec::new();
        let response = match command.idempotency_key().cloned() {
            None => self.execute(index, command, &mut events),
            Some(key) => self.execute_once(index, key, command, &mut events),
        };
        #[cfg(test)]
        self.check_invariants();
        ApplyOutcome { response, events }
    }

    fn execute_once(
        &mut self,
        index: LogIndex,
        key: IdempotencyKey,
        command: LockCommand,
        events: &mut Vec<LockEvent>,
    ) -> Result<Response, LockError> {
        if let Some(seen) = self.recent.get(&key) {
            // A retry is tagged anew by the node that proposes it: the tag is not part of what
            // the key promises to repeat.
            if untagged(&seen.command) != untagged(&command) {
                return Err(LockError::IdempotencyKeyReused {
                    key: key.to_string(),
                });
            }
            let reevaluate = matches!(command, LockCommand::Acquire { .. })
                && matches!(seen.response, Ok(Response::Waiting { .. }));
            if !reevaluate {
                return seen.response.clone();
            }
        }
        let response = self.execute(index, command.clone(), events);
        self.recent.remember(
            key,
            command,
            response.clone(),
            self.config.max_idempotency_keys,
        );
        response
    }

    fn execute(
        &mut self,
        index: LogIndex,
        command: LockCommand,
        events: &mut Vec<LockEvent>,
    ) -> Result<Response, LockError> {
        match command {
            LockCommand::CreateSession { ttl_ms, .. } => self.create_session(index, ttl_ms),
            LockCommand::CloseSession { session, .. } => {
                if !self.sessions.contains_key(&session) {
                    return Err(LockError::SessionNotFound(session));
                }
                self.end_sessions(index, &[session], SessionEndCause::Closed, events);
                Ok(Response::SessionClosed { session })
            }
            LockCommand::ExpireSessions { sessions } => {
                let mut seen = BTreeSet::new();
                let expired: Vec<SessionId> = sessions
                    .into_iter()
                    .filter(|s| self.sessions.contains_key(s) && seen.insert(*s))
                    .collect();
                self.end_sessions(index, &expired, SessionEndCause::Expired, events);
                Ok(Response::SessionsExpired { sessions: expired })
            }
            LockCommand::Acquire {
                session,
                name,
                mode,
                wait,
                tag,
                ..
            } => self.acquire(index, session, name, mode, wait, tag),
            LockCommand::CancelWait { session, name } => {
                self.cancel_wait(index, session, name, events)
            }
            LockCommand::Abandon { session, name, tag } => {
                Ok(self.abandon(index, session, name, tag, events))
            }
            LockCommand::Release {
                session,
                name,
                token,
                ..
            } => self.release(index, session, name, token, events),
        }
    }

    fn create_session(&mut self, index: LogIndex, ttl_ms: u64) -> Result<Response, LockError> {
        self.config.check_ttl(ttl_ms)?;
        if self.sessions.len() >= self.config.max_sessions {
            return Err(LockError::TooManySessions {
                max: self.config.max_sessions,
            });
        }
        let session = SessionId(index.0);
        let previous = self.sessions.insert(session, Session::new(ttl_ms));
        assert!(previous.is_none(), "session id {session} assigned twice");
        Ok(Response::SessionCreated { session, ttl_ms })
    }

    fn acquire(
        &mut self,
        index: LogIndex,
        session: SessionId,
        name: LockName,
        mode: LockMode,
        wait: bool,
        tag: RequestTag,
    ) -> Result<Response, LockError> {
        let owner = self
            .sessions
            .get(&session)
            .ok_or(LockError::SessionNotFound(session))?;
        let state = self.locks.get(&name);
        if let Some(hold) = state.and_then(|s| s.hold(session)) {
            if hold.mode.covers(mode) {
                // This request is answered with the hold: an abandoned earlier one must not
                // take it away any more.
                self.state_mut(&name)
                    .holders
                    .get_mut(&session)
                    .expect("the hold was just read")
                    .claimed_by = tag;
                return Ok(Response::Granted(Grant {
                    session,
                    name,
                    mode: hold.mode,
                    token: hold.token,
                }));
            }
            return self.upgrade(index, session, name, wait, tag);
        }
        if let Some(position) = state.and_then(|s| s.waiter_position(session)) {
            let waiting = state.expect("a queued lock has state").queue[position].mode;
            return if waiting == mode {
                self.state_mut(&name).queue[position].tag = tag;
                Ok(Response::Waiting { mode })
            } else {
                Err(LockError::WaitModeMismatch { name, waiting })
            };
        }
        if owner.lock_count() >= self.config.max_locks_per_session {
            return Err(LockError::TooManyLocksForSession {
                session,
                max: self.config.max_locks_per_session,
            });
        }
        match state {
            None if self.locks.len() >= self.config.max_locks => {
                return Err(LockError::TooManyLocks {
                    max: self.config.max_locks,
                });
            }
            Some(state) if !state.can_grant_new(mode) => {
                if !wait {
                    return Ok(Response::NotGranted);
                }
                if state.queue.len() >= self.config.max_waiters_per_lock {
                    return Err(LockError::TooManyWaiters {
                        name,
                        max: self.config.max_waiters_per_lock,
                    });
                }
                let waiter = Waiter {
                    session,
                    mode,
                    upgrade: false,
                    tag,
                };
                return self.enqueue(name, waiter);
            }
            _ => {}
        }
        // Free, or compatible with every holder and nobody queued: the queue is empty, so the
        // new holder changes no wait-for edge.
        let token = self.tokens.issue(index);
        self.locks
            .entry(name.clone())
            .or_default()
            .grant(session, mode, token, tag);
        self.session_mut(session).held.insert(name.clone());
        Ok(Response::Granted(Grant {
            session,
            name,
            mode,
            token,
        }))
    }

    /// `session` holds `name` shared and asks for exclusive (see the type's docs).
    fn upgrade(
        &mut self,
        index: LogIndex,
        session: SessionId,
        name: LockName,
        wait: bool,
        tag: RequestTag,
    ) -> Result<Response, LockError> {
        let state = self.locks.get(&name).expect("a held lock has state");
        if let Some(position) = state.waiter_position(session) {
            self.state_mut(&name).queue[position].tag = tag;
            return Ok(Response::Waiting {
                mode: LockMode::Exclusive,
            });
        }
        if state.holders.len() == 1 {
            self.unlink(&name);
            let token = self.tokens.issue(index);
            self.state_mut(&name)
                .grant(session, LockMode::Exclusive, token, tag);
            self.link(&name);
            return Ok(Response::Granted(Grant {
                session,
                name,
                mode: LockMode::Exclusive,
                token,
            }));
        }
        if !wait {
            return Ok(Response::NotGranted);
        }
        if state.queue.len() >= self.config.max_waiters_per_lock {
            return Err(LockError::TooManyWaiters {
                name,
                max: self.config.max_waiters_per_lock,
            });
        }
        let waiter = Waiter {
            session,
            mode: LockMode::Exclusive,
            upgrade: true,
            tag,
        };
        self.enqueue(name, waiter)
    }

    /// Queue `waiter` (an upgrade at the head, anything else at the tail) unless that closes a
    /// wait-for cycle. Queuing never makes anything grantable, so there is nothing to settle.
    fn enqueue(&mut self, name: LockName, waiter: Waiter) -> Result<Response, LockError> {
        let (session, mode) = (waiter.session, waiter.mode);
        self.unlink(&name);
        let state = self.state_mut(&name);
        if waiter.upgrade {
            state.queue.push_front(waiter);
        } else {
            state.queue.push_back(waiter);
        }
        self.link(&name);
        if let Some(cycle) = self.graph.find_cycle_through(session) {
            self.unlink(&name);
            let state = self.state_mut(&name);
            let position = state
                .waiter_position(session)
                .expect("the waiter was just queued");
            state.queue.remove(position);
            self.link(&name);
            return Err(LockError::Deadlock { cycle });
        }
        self.session_mut(session).waiting.insert(name);
        Ok(Response::Waiting { mode })
    }

    fn cancel_wait(
        &mut self,
        index: LogIndex,
        session: SessionId,
        name: LockName,
        events: &mut Vec<LockEvent>,
    ) -> Result<Response, LockError> {
        if !self.sessions.contains_key(&session) {
            return Err(LockError::SessionNotFound(session));
        }
        let Some(state) = self.locks.get(&name) else {
            return Ok(Response::NotWaiting);
        };
        let Some(position) = state.waiter_position(session) else {
            return Ok(match state.hold(session) {
                Some(hold) => Response::Granted(Grant {
                    session,
                    name,
                    mode: hold.mode,
                    token: hold.token,
                }),
                None => Response::NotWaiting,
            });
        };
        self.withdraw_wait(index, session, &name, position, events);
        Ok(Response::WaitCancelled)
    }

    /// Removes `session`'s wait (at `position` in the queue of `name`) and grants what that
    /// makes grantable.
    fn withdraw_wait(
        &mut self,
        index: LogIndex,
        session: SessionId,
        name: &LockName,
        position: usize,
        events: &mut Vec<LockEvent>,
    ) {
        self.unlink(name);
        self.state_mut(name).queue.remove(position);
        self.session_mut(session).waiting.remove(name);
        self.settle(index, name, events);
        self.link(name);
    }

    /// Removes `session`'s hold on `name` and grants what that makes grantable. A pending
    /// upgrade of the session outlives the shared hold as a plain exclusive wait at the head.
    fn drop_hold(
        &mut self,
        index: LogIndex,
        session: SessionId,
        name: &LockName,
        events: &mut Vec<LockEvent>,
    ) {
        self.unlink(name);
        let state = self.state_mut(name);
        state.holders.remove(&session);
        if let Some(position) = state.waiter_position(session) {
            state.queue[position].upgrade = false;
        }
        self.session_mut(session).held.remove(name);
        self.settle(index, name, events);
        self.link(name);
    }

    /// See [`LockCommand::Abandon`]. Never an error: a session that ended or a request that was
    /// never applied leaves nothing to undo.
    fn abandon(
        &mut self,
        index: LogIndex,
        session: SessionId,
        name: LockName,
        tag: RequestTag,
        events: &mut Vec<LockEvent>,
    ) -> Response {
        let Some(state) = self.locks.get(&name).filter(|_| tag != 0) else {
            return Response::NotWaiting;
        };
        if let Some(position) = state.waiter_position(session) {
            if state.queue[position].tag != tag {
                return Response::NotWaiting;
            }
            self.withdraw_wait(index, session, &name, position, events);
            return Response::WaitCancelled;
        }
        let Some(hold) = state
            .hold(session)
            .filter(|hold| hold.granted_by == tag && hold.claimed_by == tag)
        else {
            return Response::NotWaiting;
        };
        match hold.before_upgrade {
            Some((token, granted_by)) => {
                // Back to the shared hold the session had (and still believes it has); it was
                // the only holder, so nothing conflicts.
                self.unlink(&name);
                self.state_mut(&name).holders.insert(
                    session,
                    Hold {
                        mode: LockMode::Shared,
                        token,
                        granted_by,
                        claimed_by: granted_by,
                        before_upgrade: None,
                    },
                );
                self.settle(index, &name, events);
                self.link(&name);
            }
            None => self.drop_hold(index, session, &name, events),
        }
        Response::Released {
            name,
            token: hold.token,
        }
    }

    fn release(
        &mut self,
        index: LogIndex,
        session: SessionId,
        name: LockName,
        token: Option<FencingToken>,
        events: &mut Vec<LockEvent>,
    ) -> Result<Response, LockError> {
        let Some(owner) = self.sessions.get(&session) else {
            return Err(LockError::SessionNotFound(session));
        };
        let hold = self.locks.get(&name).and_then(|s| s.hold(session));
        // A retry of a release that was applied: the same answer again.
        if let Some(presented) = token
            && hold.is_none_or(|hold| hold.token != presented)
            && owner.released_before(&name, presented)
        {
            return Ok(Response::Released {
                name,
                token: presented,
            });
        }
        let Some(hold) = hold else {
            return Err(LockError::NotHeld { session, name });
        };
        if let Some(presented) = token
            && presented != hold.token
        {
            return Err(LockError::StaleFencingToken {
                name,
                presented,
                current: hold.token,
            });
        }
        let token = hold.token;
        self.drop_hold(index, session, &name, events);
        self.session_mut(session)
            .remember_release(name.clone(), token);
        Ok(Response::Released { name, token })
    }

    /// End `ids` (all existing): withdraw every wait and release every hold of all of them first,
    /// then grant what became grantable, so no ending session is granted anything.
    fn end_sessions(
        &mut self,
        index: LogIndex,
        ids: &[SessionId],
        cause: SessionEndCause,
        events: &mut Vec<LockEvent>,
    ) {
        let mut touched = BTreeSet::new();
        for &id in ids {
            let session = self
                .sessions
                .remove(&id)
                .expect("only existing sessions are ended");
            events.push(LockEvent::SessionEnded { session: id, cause });
            for name in session.waiting {
                self.unlink(&name);
                let state = self.state_mut(&name);
                let position = state
                    .waiter_position(id)
                    .expect("a session's waits are queued");
                state.queue.remove(position);
                self.link(&name);
                events.push(LockEvent::WaitCancelled {
                    session: id,
                    name: name.clone(),
                    cause,
                });
                touched.insert(name);
            }
            for name in session.held {
                self.unlink(&name);
                let hold = self
                    .state_mut(&name)
                    .holders
                    .remove(&id)
                    .expect("a session's holds are recorded");
                self.link(&name);
                events.push(LockEvent::Released {
                    session: id,
                    name: name.clone(),
                    token: hold.token,
                    cause,
                });
                touched.insert(name);
            }
        }
        for name in &touched {
            self.unlink(name);
            self.settle(index, name, events);
            self.link(name);
        }
    }

    /// Grant queued waiters from the head while they are grantable, then drop the entry if the
    /// name is free. Callers unlink the name's edges before and link them after.
    ///
    /// # Panics
    /// If a waiter's session no longer exists: every way a session ends withdraws its waits first,
    /// and this re-check at grant time keeps it so (Jepsen found etcd granting to expired
    /// waiters).
    fn settle(&mut self, index: LogIndex, name: &LockName, events: &mut Vec<LockEvent>) {
        let Some(state) = self.locks.get_mut(name) else {
            return;
        };
        while state.head_is_grantable() {
            let waiter = state.queue.pop_front().expect("a grantable head exists");
            let owner = self.sessions.get_mut(&waiter.session).unwrap_or_else(|| {
                panic!(
                    "waiter session {} of lock {name} no longer exists at grant time",
                    waiter.session
                )
            });
            let token = self.tokens.issue(index);
            state.grant(waiter.session, waiter.mode, token, waiter.tag);
            owner.waiting.remove(name);
            owner.held.insert(name.clone());
            events.push(LockEvent::Granted(Grant {
                session: waiter.session,
                name: name.clone(),
                mode: waiter.mode,
                token,
            }));
        }
        if state.is_free() {
            self.locks.remove(name);
        }
    }

    fn state_mut(&mut self, name: &LockName) -> &mut NameState {
        self.locks
            .get_mut(name)
            .unwrap_or_else(|| panic!("lock {name} has no state"))
    }

    fn session_mut(&mut self, session: SessionId) -> &mut Session {
        self.sessions
            .get_mut(&session)
            .unwrap_or_else(|| panic!("session {session} does not exist"))
    }

    /// Remove `name`'s wait-for edges from the graph (before changing its state).
    fn unlink(&mut self, name: &LockName) {
        if let Some(state) = self.locks.get(name) {
            for (from, to) in state.wait_edges() {
                self.graph.remove_edge(from, to);
            }
        }
    }

    /// Add `name`'s wait-for edges to the graph (after changing its state).
    fn link(&mut self, name: &LockName) {
        if let Some(state) = self.locks.get(name) {
            for (from, to) in state.wait_edges() {
                self.graph.add_edge(from, to);
            }
        }
    }

    /// Holders and waiters of `name`, for `GET /v1/locks/{name}`; both empty for a free lock.
    pub fn lock(&self, name: &LockName) -> LockInfo {
        match self.locks.get(name) {
            Some(state) => state.info(name),
            None => LockInfo {
                name: name.clone(),
                holders: Vec::new(),
                waiters: Vec::new(),
            },
        }
    }

    /// Whether a waiting acquire of `name` in `mode` by `session`, applied now, would find the
    /// lock taken by others: the session lives, neither holds nor already waits for `name`, and
    /// the lock cannot be granted to it at once (it would queue, or be refused if queueing closed
    /// a wait-for cycle). A hint for when to propose it (the server's
    /// `StateMachine::may_join_next_batch`); no outcome depends on it.
    pub fn acquire_would_queue(&self, session: SessionId, name: &LockName, mode: LockMode) -> bool {
        let Some(state) = self.locks.get(name) else {
            return false;
        };
        self.sessions.contains_key(&session)
            && state.hold(session).is_none()
            && state.waiter_position(session).is_none()
            && !state.can_grant_new(mode)
    }

    /// Every lock with a holder or a waiter, by name.
    pub fn locks(&self) -> impl Iterator<Item = LockInfo> + '_ {
        self.locks.iter().map(|(name, state)| state.info(name))
    }

    /// A live session, or `None` if it never existed or has ended.
    pub fn session(&self, session: SessionId) -> Option<SessionInfo> {
        self.sessions.get(&session).map(|s| s.info(session))
    }

    /// Every live session with its TTL, by id: what a new leader needs to rebuild its keep-alive
    /// deadlines (giving each a full TTL of grace).
    pub fn sessions(&self) -> impl Iterator<Item = SessionInfo> + '_ {
        self.sessions.iter().map(|(id, s)| s.info(*id))
    }

    /// The holds of `session`, by name; empty if it has none or does not exist.
    pub fn held_by(&self, session: SessionId) -> Vec<Grant> {
        let Some(owner) = self.sessions.get(&session) else {
            return Vec::new();
        };
        owner
            .held
            .iter()
            .map(|name| {
                let hold = self.locks[name]
                    .hold(session)
                    .expect("a session's holds are recorded");
                Grant {
                    session,
                    name: name.clone(),
                    mode: hold.mode,
                    token: hold.token,
                }
            })
            .collect()
    }

    /// The current wait-for graph (always acyclic).
    pub fn wait_for_graph(&self) -> &WaitForGraph {
        &self.graph
    }

    /// Serialise the whole table (postcard) for a Raft snapshot. Deterministic: equal tables give
    /// equal bytes.
    pub fn snapshot(&self) -> Vec<u8> {
        postcard::to_allocvec(&SnapshotRef {
            format: SNAPSHOT_FORMAT,
            config: &self.config,
            applied_index: self.applied_index,
            sessions: &self.sessions,
            locks: &self.locks,
            tokens: &self.tokens,
            recent: &self.recent,
        })
        .expect("serialising plain data into a growable Vec cannot fail")
    }

    /// Rebuild a table from [`LockTable::snapshot`] bytes, checking it for consistency.
    ///
    /// # Errors
    /// [`LockError::CorruptSnapshot`] if the bytes do not decode, have an unknown format, or
    /// describe an inconsistent table (conflicting holders, dangling sessions, a cycle, ...).
    pub fn restore(bytes: &[u8]) -> Result<LockTable, LockError> {
        let corrupt = |e: &dyn std::fmt::Display| LockError::CorruptSnapshot(e.to_string());
        let (data, rest) =
            postcard::take_from_bytes::<SnapshotData>(bytes).map_err(|e| corrupt(&e))?;
        if !rest.is_empty() {
            return Err(corrupt(&format!("{} trailing bytes", rest.len())));
        }
        if data.format != SNAPSHOT_FORMAT {
            return Err(corrupt(&format!("unknown format {}", data.format)));
        }
        data.config.validate().map_err(|e| corrupt(&e))?;
        let mut table = LockTable {
            config: data.config,
            applied_index: data.applied_index,
            sessions: data.sessions,
            locks: data.locks,
            tokens: data.tokens,
            recent: data.recent,
            graph: WaitForGraph::new(),
        };
        let names: Vec<LockName> = table.locks.keys().cloned().collect();
        for name in &names {
            table.link(name);
        }
        table.verify().map_err(|e| corrupt(&e))?;
        Ok(table)
    }

    /// Check every invariant of the table (a full scan: for tests and simulation checkers, not for
    /// each apply in production).
    ///
    /// # Panics
    /// If an invariant is broken, naming it.
    pub fn check_invariants(&self) {
        if let Err(broken) = self.verify() {
            panic!("lock table invariant broken: {broken}");
        }
    }

    fn verify(&self) -> Result<(), String> {
        for (name, state) in &self.locks {
            if state.is_free() {
                return Err(format!("free lock {name} kept an entry"));
            }
            if state.head_is_grantable() {
                return Err(format!("head waiter of {name} is grantable but waits"));
            }
            let exclusive = state
                .holders
                .values()
                .filter(|h| h.mode == LockMode::Exclusive)
                .count();
            if exclusive > 0 && state.holders.len() > 1 {
                return Err(format!("conflicting holders of {name}"));
            }
            let mut queued = BTreeSet::new();
            for (session, hold) in &state.holders {
                if hold.token > self.tokens.last() {
                    return Err(format!(
                        "token {} of {name} above the last issued",
                        hold.token
                    ));
                }
                if !self
                    .sessions
                    .get(session)
                    .is_some_and(|s| s.held.contains(name))
                {
                    return Err(format!("holder {session} of {name} unknown to its session"));
                }
            }
            for (position, waiter) in state.queue.iter().enumerate() {
                if !queued.insert(waiter.session) {
                    return Err(format!(
                        "session {} queued twice for {name}",
                        waiter.session
                    ));
                }
                if !self
                    .sessions
                    .get(&waiter.session)
                    .is_some_and(|s| s.waiting.contains(name))
                {
                    return Err(format!(
                        "waiter {} of {name} unknown to its session",
                        waiter.session
                    ));
                }
                let holds_shared = state
                    .hold(waiter.session)
                    .is_some_and(|h| h.mode == LockMode::Shared);
                if waiter.upgrade != holds_shared
                    || (waiter.upgrade && (position != 0 || waiter.mode != LockMode::Exclusive))
                {
                    return Err(format!("misplaced upgrade of {} on {name}", waiter.session));
                }
                if state.hold(waiter.session).is_some() && !waiter.upgrade {
                    return Err(format!("holder {} of {name} also queued", waiter.session));
                }
            }
        }
        if self.locks.len() > self.config.max_locks
            || self.sessions.len() > self.config.max_sessions
        {
            return Err("a table bound is exceeded".into());
        }
        for (id, session) in &self.sessions {
            if id.0 > self.applied_index.0 {
                return Err(format!("session {id} is from the future"));
            }
            for name in &session.held {
                if self.locks.get(name).and_then(|s| s.hold(*id)).is_none() {
                    return Err(format!("session {id} believes it holds {name}"));
                }
            }
            for name in &session.waiting {
                if self
                    .locks
                    .get(name)
                    .and_then(|s| s.waiter_position(*id))
                    .is_none()
                {
                    return Err(format!("session {id} believes it waits for {name}"));
                }
            }
        }
        let mut expected = WaitForGraph::new();
        for state in self.locks.values() {
            for (from, to) in state.wait_edges() {
                expected.add_edge(from, to);
            }
        }
        if expected != self.graph {
            return Err("wait-for graph out of step with the queues".into());
        }
        if !self.graph.is_acyclic() {
            return Err("wait-for graph has a cycle".into());
        }
        if !self.recent.is_consistent() {
            return Err("idempotency table order out of step".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
