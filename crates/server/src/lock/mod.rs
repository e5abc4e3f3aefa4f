//! The lock service: the lock table replicated by Raft, served over HTTP.

mod errors;
mod forward;
mod node;
mod openapi;
mod routes;
mod state_machine;

pub use node::{LockNodeConfig, run_lock_node};
pub use openapi::openapi_document;
pub use state_machine::{LockReply, LockStateMachine, SessionTiming};

use crate::metrics::Metrics;
use crate::raft::RaftHandle;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

/// Everything the lock service's HTTP handlers share.
pub struct LockService {
    /// The Raft group.
    pub raft: RaftHandle<LockStateMachine>,
    /// Metrics of this node.
    pub metrics: Arc<Metrics>,
    /// Client used to forward requests to the leader.
    pub http_client: reqwest::Client,
    /// How long a request waits for a leader to be known before answering `no_leader`.
    pub leader_wait: Duration,
    /// How long a proposal may take to commit before answering `no_leader` (a node cut off from
    /// the majority never commits anything).
    pub commit_timeout: Duration,
    /// The last fencing token applied here ([`LockStateMachine::issued_tokens`]).
    pub issued_tokens: Arc<AtomicU64>,
    /// Whether `POST /v1/admin/crash` may abort this process (demos and fault drills only).
    pub allow_fault_injection: bool,
}

pub use routes::router;
