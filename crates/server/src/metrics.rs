//! Prometheus metrics of a node (`/metrics`, text exposition format).

use crate::raft::NodeStatus;
use distsync_raft::Role;
use distsync_wire::TransportStats;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

/// Latency buckets from 50 µs to about 1.6 s.
fn latency_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.000_05, 2.0, 16)
}

/// Raft metrics, updated by the driver.
#[derive(Debug)]
pub struct RaftMetrics {
    /// Proposals made (client commands and leader housekeeping).
    pub proposals: Counter,
    /// Proposals refused (not leader).
    pub proposals_rejected: Counter,
    /// Proposals held back to share the next one's log append (see
    /// `StateMachine::may_join_next_batch`).
    pub proposals_held_back: Counter,
    /// Service commands applied.
    pub applied: Counter,
    /// Snapshots taken.
    pub snapshots: Counter,
    /// Snapshots from a peer refused because they do not restore.
    pub snapshots_rejected: Counter,
    /// Time to persist and fsync one `Ready`.
    pub persist_seconds: Histogram,
    role: Gauge,
    term: Gauge,
    commit_index: Gauge,
    applied_index: Gauge,
    leader_id: Gauge,
    peer_messages_sent: Gauge,
    peer_messages_dropped: Gauge,
    peer_messages_received: Gauge,
    peer_connects: Gauge,
    transport: Mutex<Option<Arc<TransportStats>>>,
}

impl RaftMetrics {
    fn new(registry: &mut Registry) -> Self {
        let metrics = RaftMetrics {
            proposals: Counter::default(),
            proposals_rejected: Counter::default(),
            proposals_held_back: Counter::default(),
            applied: Counter::default(),
            snapshots: Counter::default(),
            snapshots_rejected: Counter::default(),
            persist_seconds: Histogram::new(latency_buckets()),
            role: Gauge::default(),
            term: Gauge::default(),
            commit_index: Gauge::default(),
            applied_index: Gauge::default(),
            leader_id: Gauge::default(),
            peer_messages_sent: Gauge::default(),
            peer_messages_dropped: Gauge::default(),
            peer_messages_received: Gauge::default(),
            peer_connects: Gauge::default(),
            transport: Mutex::new(None),
        };
        let raft = registry.sub_registry_with_prefix("raft");
        raft.register("proposals", "Proposals made", metrics.proposals.clone());
        raft.register(
            "proposals_rejected",
            "Proposals refused because this node does not lead",
            metrics.proposals_rejected.clone(),
        );
        raft.register(
            "proposals_held_back",
            "Proposals held back to share the log append and fsync of the next proposal",
            metrics.proposals_held_back.clone(),
        );
        raft.register(
            "applied_commands",
            "Service commands applied",
            metrics.applied.clone(),
        );
        raft.register("snapshots", "Snapshots taken", metrics.snapshots.clone());
        raft.register(
            "snapshots_rejected",
            "Snapshots from a peer refused because they do not restore",
            metrics.snapshots_rejected.clone(),
        );
        raft.register(
            "persist_seconds",
            "Time to write and fsync one batch of log entries and hard state",
            metrics.persist_seconds.clone(),
        );
        raft.register(
            "role",
            "0 follower, 1 pre-candidate, 2 candidate, 3 leader",
            metrics.role.clone(),
        );
        raft.register("term", "Current term", metrics.term.clone());
        raft.register(
            "commit_index",
            "Highest committed index",
            metrics.commit_index.clone(),
        );
        raft.register(
            "applied_index",
            "Highest applied index",
            metrics.applied_index.clone(),
        );
        raft.register(
            "leader_id",
            "Known leader (0 = none)",
            metrics.leader_id.clone(),
        );
        raft.register(
            "peer_messages_sent",
            "Messages written to peer connections",
            metrics.peer_messages_sent.clone(),
        );
        raft.register(
            "peer_messages_dropped",
            "Messages dropped (peer down, queue full)",
            metrics.peer_messages_dropped.clone(),
        );
        raft.register(
            "peer_messages_received",
            "Messages received from peers",
            metrics.peer_messages_received.clone(),
        );
        raft.register(
            "peer_connects",
            "Peer connections established",
            metrics.peer_connects.clone(),
        );
        metrics
    }

    /// Lets `/metrics` report the peer transport's counters.
    pub fn attach_transport(&self, stats: Arc<TransportStats>) {
        if let Ok(mut transport) = self.transport.lock() {
            *transport = Some(stats);
        }
    }

    /// Records the node's latest status.
    pub fn observe_status(&self, status: &NodeStatus) {
        let role = match status.role {
            Role::Follower => 0,
            Role::PreCandidate => 1,
            Role::Candidate => 2,
            Role::Leader => 3,
        };
        self.role.set(role);
        self.term.set(status.term as i64);
        self.commit_index.set(status.commit as i64);
        self.applied_index.set(status.applied as i64);
        self.leader_id.set(status.leader.unwrap_or(0) as i64);
    }

    fn refresh_transport(&self) {
        let Ok(transport) = self.transport.lock() else {
            return;
        };
        if let Some(stats) = transport.as_ref() {
            let load =
                |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed) as i64;
            self.peer_messages_sent.set(load(&stats.sent));
            self.peer_messages_dropped.set(load(&stats.dropped));
            self.peer_messages_received.set(load(&stats.received));
            self.peer_connects.set(load(&stats.connects));
        }
    }
}

/// Lock service metrics, updated by the lock state machine and handlers.
#[derive(Debug)]
pub struct LockMetrics {
    /// Locks granted (immediately or to a waiter).
    pub grants: Counter,
    /// Acquires that queued.
    pub waits: Counter,
    /// Waits refused because they would close a cycle.
    pub deadlocks: Counter,
    /// Acquires answered `timeout`.
    pub wait_timeouts: Counter,
    /// Sessions expired by the leader.
    pub session_expiries: Counter,
    /// Time from receiving an acquire to answering it (granted ones).
    pub acquire_seconds: Histogram,
}

impl LockMetrics {
    fn new(registry: &mut Registry) -> Self {
        let metrics = LockMetrics {
            grants: Counter::default(),
            waits: Counter::default(),
            deadlocks: Counter::default(),
            wait_timeouts: Counter::default(),
            session_expiries: Counter::default(),
            acquire_seconds: Histogram::new(latency_buckets()),
        };
        let lock = registry.sub_registry_with_prefix("lock");
        lock.register("grants", "Locks granted", metrics.grants.clone());
        lock.register("waits", "Acquires that queued", metrics.waits.clone());
        lock.register(
            "deadlocks",
            "Waits refused as deadlocks",
            metrics.deadlocks.clone(),
        );
        lock.register(
            "wait_timeouts",
            "Acquires that timed out",
            metrics.wait_timeouts.clone(),
        );
        lock.register(
            "session_expiries",
            "Sessions expired",
            metrics.session_expiries.clone(),
        );
        lock.register(
            "acquire_seconds",
            "Acquire latency of granted requests, as served by the leader",
            metrics.acquire_seconds.clone(),
        );
        metrics
    }
}

/// Every metric of a lock node.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Raft metrics.
    pub raft: Arc<RaftMetrics>,
    /// Lock service metrics.
    pub lock: Arc<LockMetrics>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("distsync");
        let raft = Arc::new(RaftMetrics::new(&mut registry));
        let lock = Arc::new(LockMetrics::new(&mut registry));
        Metrics {
            registry,
            raft,
            lock,
        }
    }
}

impl Metrics {
    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        self.raft.refresh_transport();
        let mut out = String::new();
        if let Err(error) = encode(&mut out, &self.registry) {
            tracing::warn!(%error, "metrics encoding failed");
        }
        out
    }
}
