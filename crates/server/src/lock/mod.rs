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
use std::sync::atomic::{AtomicU64, Ordering};
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
    /// Tags this node's acquire requests, so an abandoned one can be withdrawn exactly.
    pub request_tags: RequestTags,
    /// Whether `POST /v1/admin/crash` may abort this process (demos and fault drills only).
    pub allow_fault_injection: bool,
}

pub use routes::router;

/// Hands out [`distsync_lock::RequestTag`]s: a per-process random start (so tags of different
/// nodes and of this node's earlier lives do not collide) plus a counter.
#[derive(Debug)]
pub struct RequestTags {
    next: AtomicU64,
}

impl RequestTags {
    /// Starts at a random point, drawn from the standard library's randomly keyed hasher.
    pub fn new() -> Self {
        use std::hash::{BuildHasher, Hasher};
        let start = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        RequestTags {
            next: AtomicU64::new(start),
        }
    }

    /// A fresh tag, never 0 (which means untagged).
    pub fn next(&self) -> distsync_lock::RequestTag {
        loop {
            let tag = self.next.fetch_add(1, Ordering::Relaxed);
            if tag != 0 {
                return tag;
            }
        }
    }
}

impl Default for RequestTags {
    fn default() -> Self {
        Self::new()
    }
}
