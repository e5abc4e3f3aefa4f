//! The lock table as a replicated state machine, plus the leader-local session clock.

use crate::metrics::LockMetrics;
use crate::raft::{NodeStatus, Responder, StateMachine};
use distsync_lock::{
    Grant, LockCommand, LockConfig, LockError, LockEvent, LockName, LockTable, LogIndex, Response,
    SessionId,
};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// An expiry proposal not applied within this long is proposed again (it may have been lost;
/// applying one twice is harmless).
const EXPIRY_RETRY: Duration = Duration::from_secs(2);

/// What a waiting acquire is eventually told.
pub type WaitResult = Result<Grant, LockError>;

/// Acquires waiting for a grant, by (session, lock). A waiter is registered by `apply` itself,
/// in the same step that queued its wait, so it can only ever be completed by a grant (or session
/// end) that comes later in the log than its own `Acquire`.
#[derive(Debug, Default)]
struct WaiterRegistry {
    waiting: HashMap<WaitKey, Vec<oneshot::Sender<WaitResult>>>,
}

/// Who waits for which lock.
type WaitKey = (SessionId, LockName);

impl WaiterRegistry {
    fn register(&mut self, key: WaitKey) -> oneshot::Receiver<WaitResult> {
        let (sender, receiver) = oneshot::channel();
        let list = self.waiting.entry(key).or_default();
        // Drop senders whose requests have gone away, so a long wait cannot accumulate them.
        list.retain(|sender| !sender.is_closed());
        list.push(sender);
        receiver
    }

    fn notify(&mut self, key: &WaitKey, result: &WaitResult) {
        if let Some(list) = self.waiting.remove(key) {
            for sender in list {
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

/// What a proposer of a lock command is answered with: the outcome, and for an acquire that
/// queued, the channel its grant will arrive on.
#[derive(Debug)]
pub struct LockReply {
    /// The command's outcome.
    pub outcome: Result<Response, LockError>,
    /// Present when the outcome is `Waiting`.
    pub wait: Option<oneshot::Receiver<WaitResult>>,
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
    waiters: WaiterRegistry,
    /// Leader only: when each session expires unless kept alive. Lives on the leader's
    /// monotonic clock and never enters the log; expiry does, as a command.
    deadlines: HashMap<SessionId, Instant>,
    /// Expiries proposed but not yet applied, with when they were proposed: not kept alive
    /// meanwhile, and proposed again if the first proposal was lost.
    expiring: HashMap<SessionId, Instant>,
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
            waiters: WaiterRegistry::default(),
            deadlines: HashMap::new(),
            expiring: HashMap::new(),
            is_leader: false,
            timing,
            metrics,
        })
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
        if !self.is_leader || self.expiring.contains_key(&session) {
            return None;
        }
        let info = self.table.session(session)?;
        self.deadlines
            .insert(session, now + Duration::from_millis(info.ttl_ms));
        Some(info.ttl_ms)
    }

    fn on_events(&mut self, events: &[LockEvent]) {
        let waiters = &mut self.waiters;
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
    type Response = LockReply;

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
                    let _ = responder.send(Ok(LockReply {
                        outcome: Err(error),
                        wait: None,
                    }));
                }
                return;
            }
        };
        let wait_key = match &command {
            LockCommand::Acquire { session, name, .. }
            | LockCommand::CancelWait { session, name }
            | LockCommand::Abandon { session, name, .. } => Some((*session, name.clone())),
            _ => None,
        };
        let cancels = matches!(
            command,
            LockCommand::CancelWait { .. } | LockCommand::Abandon { .. }
        );
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
        if cancels
            && matches!(outcome.response, Ok(Response::WaitCancelled))
            && let Some(key) = &wait_key
        {
            self.waiters.notify(
                key,
                &Err(LockError::NotHeld {
                    session: key.0,
                    name: key.1.clone(),
                }),
            );
        }
        if let Some(responder) = responder {
            let wait = match (&outcome.response, wait_key) {
                (Ok(Response::Waiting { .. }), Some(key)) if !cancels => {
                    Some(self.waiters.register(key))
                }
                _ => None,
            };
            let _ = responder.send(Ok(LockReply {
                outcome: outcome.response,
                wait,
            }));
        }
    }

    fn may_join_next_batch(&self, command: &[u8]) -> bool {
        matches!(
            LockCommand::decode(command),
            Ok(LockCommand::Acquire { session, name, mode, wait: true, .. })
                if self.table.acquire_would_queue(session, &name, mode)
        )
    }

    fn snapshot(&self) -> Vec<u8> {
        self.table.snapshot()
    }

    fn validate_snapshot(&self, snapshot: &[u8]) -> anyhow::Result<()> {
        LockTable::restore(snapshot)?;
        Ok(())
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
            .filter(|(session, deadline)| {
                **deadline <= now
                    && self
                        .expiring
                        .get(session)
                        .is_none_or(|proposed| now.duration_since(*proposed) > EXPIRY_RETRY)
            })
            .map(|(&session, _)| session)
            .collect();
        if expired.is_empty() {
            return Vec::new();
        }
        expired.sort_unstable();
        self.expiring
            .extend(expired.iter().map(|&session| (session, now)));
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
