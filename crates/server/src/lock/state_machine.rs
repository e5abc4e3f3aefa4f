//! The lock table as a replicated state machine, plus the leader-local session clock.

use crate::metrics::LockMetrics;
use crate::raft::{NodeStatus, Responder, StateMachine};
use distsync_lock::{
    Grant, LockCommand, LockConfig, LockError, LockEvent, LockName, LockTable, LogIndex, Response,
    SessionId,
};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// What a waiting acquire is eventually told.
pub type WaitResult = Result<Grant, LockError>;

/// Acquires waiting for a grant, by (session, lock). Handlers register before proposing, so a
/// grant applied right after the proposal cannot be missed; the state machine completes them in
/// the same apply step as the release that grants them.
#[derive(Debug, Default)]
pub struct WaiterRegistry {
    next_id: u64,
    waiting: HashMap<WaitKey, Vec<(u64, oneshot::Sender<WaitResult>)>>,
}

/// Who waits for which lock.
type WaitKey = (SessionId, LockName);

/// Removes its registration when the waiting request ends, however it ends.
#[derive(Debug)]
pub struct WaiterGuard {
    registry: Arc<Mutex<WaiterRegistry>>,
    key: WaitKey,
    id: u64,
}

impl Drop for WaiterGuard {
    fn drop(&mut self) {
        if let Ok(mut registry) = self.registry.lock() {
            if let Some(list) = registry.waiting.get_mut(&self.key) {
                list.retain(|(id, _)| *id != self.id);
                if list.is_empty() {
                    registry.waiting.remove(&self.key);
                }
            }
        }
    }
}

/// Registers a waiter for `(session, name)`.
pub fn register_waiter(
    registry: &Arc<Mutex<WaiterRegistry>>,
    session: SessionId,
    name: LockName,
) -> (WaiterGuard, oneshot::Receiver<WaitResult>) {
    let (sender, receiver) = oneshot::channel();
    let mut guard_registry = registry.lock().expect("waiter registry is never poisoned");
    guard_registry.next_id += 1;
    let id = guard_registry.next_id;
    let key = (session, name);
    guard_registry
        .waiting
        .entry(key.clone())
        .or_default()
        .push((id, sender));
    drop(guard_registry);
    (
        WaiterGuard {
            registry: Arc::clone(registry),
            key,
            id,
        },
        receiver,
    )
}

impl WaiterRegistry {
    fn notify(&mut self, key: &WaitKey, result: &WaitResult) {
        if let Some(list) = self.waiting.remove(key) {
            for (_, sender) in list {
                let _ = sender.send(result.clone());
            }
        }
    }

    fn notify_session(&mut self, session: SessionId) {
        let keys: Vec<WaitKey> = self
            .waiting
            .keys()
            .filter(|(waiting, _)| *waiting == session)
            .cloned()
            .collect();
        for key in keys {
            self.notify(&key, &Err(LockError::SessionNotFound(session)));
        }
    }
}

/// How sessions are timed on the leader.
#[derive(Clone, Copy, Debug)]
pub struct SessionTiming {
    /// Added to every session's TTL when a node becomes leader, so that no session expires
    /// because of the time it took to elect the leader (clients could not reach anyone).
    pub leader_grace: Duration,
}

/// The replicated lock table and the leader's keep-alive deadlines.
#[derive(Debug)]
pub struct LockStateMachine {
    table: LockTable,
    config: LockConfig,
    waiters: Arc<Mutex<WaiterRegistry>>,
    /// Leader only: when each session expires unless kept alive. Lives on the leader's
    /// monotonic clock and never enters the log; expiry does, as a command.
    deadlines: HashMap<SessionId, Instant>,
    /// Expiries proposed but not yet applied (not proposed twice, not kept alive meanwhile).
    expiring: HashSet<SessionId>,
    is_leader: bool,
    timing: SessionTiming,
    metrics: Arc<LockMetrics>,
}

impl LockStateMachine {
    /// An empty lock table.
    ///
    /// # Errors
    /// When `config` is invalid.
    pub fn new(
        config: LockConfig,
        timing: SessionTiming,
        metrics: Arc<LockMetrics>,
    ) -> Result<Self, LockError> {
        Ok(LockStateMachine {
            table: LockTable::new(config.clone())?,
            config,
            waiters: Arc::new(Mutex::new(WaiterRegistry::default())),
            deadlines: HashMap::new(),
            expiring: HashSet::new(),
            is_leader: false,
            timing,
            metrics,
        })
    }

    /// The waiter registry shared with the HTTP handlers.
    pub fn waiters(&self) -> Arc<Mutex<WaiterRegistry>> {
        Arc::clone(&self.waiters)
    }

    /// The replicated table (read-only).
    pub fn table(&self) -> &LockTable {
        &self.table
    }

    /// The table's limits and TTL range.
    pub fn config(&self) -> &LockConfig {
        &self.config
    }

    /// Leader only: pushes a session's deadline out by its TTL. Returns the TTL, or `None` when
    /// the session does not exist (or is being expired).
    pub fn keep_alive(&mut self, session: SessionId, now: Instant) -> Option<u64> {
        if !self.is_leader || self.expiring.contains(&session) {
            return None;
        }
        let info = self.table.session(session)?;
        self.deadlines
            .insert(session, now + Duration::from_millis(info.ttl_ms));
        Some(info.ttl_ms)
    }

    fn on_events(&mut self, events: &[LockEvent]) {
        let mut waiters = self
            .waiters
            .lock()
            .expect("waiter registry is never poisoned");
        for event in events {
            match event {
                LockEvent::Granted(grant) => {
                    self.metrics.grants.inc();
                    waiters.notify(&(grant.session, grant.name.clone()), &Ok(grant.clone()));
                }
                LockEvent::SessionEnded { session, .. } => {
                    self.deadlines.remove(session);
                    self.expiring.remove(session);
                    waiters.notify_session(*session);
                }
                LockEvent::WaitCancelled { .. } | LockEvent::Released { .. } => {}
            }
        }
    }
}

impl StateMachine for LockStateMachine {
    type Response = Result<Response, LockError>;

    fn apply(
        &mut self,
        index: LogIndex,
        command: &[u8],
        responder: Option<Responder<Self::Response>>,
    ) {
        let command = match LockCommand::decode(command) {
            Ok(command) => command,
            Err(error) => {
                tracing::error!(%index, %error, "undecodable lock command skipped");
                if let Some(responder) = responder {
                    let _ = responder.send(Ok(Err(error)));
                }
                return;
            }
        };
        let outcome = self.table.apply(index, command);
        match &outcome.response {
            Ok(Response::SessionCreated { session, ttl_ms }) if self.is_leader => {
                self.deadlines
                    .insert(*session, Instant::now() + Duration::from_millis(*ttl_ms));
            }
            Ok(Response::SessionsExpired { sessions }) => {
                self.metrics.session_expiries.inc_by(sessions.len() as u64);
            }
            Ok(Response::Granted(_)) => {
                self.metrics.grants.inc();
            }
            Ok(Response::Waiting { .. }) => {
                self.metrics.waits.inc();
            }
            Err(LockError::Deadlock { .. }) => {
                self.metrics.deadlocks.inc();
            }
            _ => {}
        }
        self.on_events(&outcome.events);
        if let Some(responder) = responder {
            let _ = responder.send(Ok(outcome.response));
        }
    }

    fn snapshot(&self) -> Vec<u8> {
        self.table.snapshot()
    }

    fn restore(&mut self, snapshot: &[u8]) -> anyhow::Result<()> {
        self.table = LockTable::restore(snapshot)?;
        let now = Instant::now();
        self.deadlines.clear();
        self.expiring.clear();
        if self.is_leader {
            self.on_leadership_change(true, now);
        }
        Ok(())
    }

    fn on_tick(&mut self, now: Instant, status: &NodeStatus) -> Vec<Vec<u8>> {
        if !self.is_leader || !status.is_leader() {
            return Vec::new();
        }
        let mut expired: Vec<SessionId> = self
            .deadlines
            .iter()
            .filter(|(session, deadline)| **deadline <= now && !self.expiring.contains(session))
            .map(|(&session, _)| session)
            .collect();
        if expired.is_empty() {
            return Vec::new();
        }
        expired.sort_unstable();
        self.expiring.extend(expired.iter().copied());
        tracing::info!(sessions = ?expired, "expiring sessions that missed their keep-alive");
        vec![LockCommand::ExpireSessions { sessions: expired }.encode()]
    }

    fn on_leadership_change(&mut self, is_leader: bool, now: Instant) {
        self.is_leader = is_leader;
        self.expiring.clear();
        self.deadlines.clear();
        if is_leader {
            // Clients may have been unable to reach anyone during the election: every session
            // gets its full TTL again plus a grace period before this leader expires it.
            for info in self.table.sessions() {
                let deadline = now + Duration::from_millis(info.ttl_ms) + self.timing.leader_grace;
                self.deadlines.insert(info.session, deadline);
            }
        }
    }
}
