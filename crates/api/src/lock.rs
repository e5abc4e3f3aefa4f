//! Lock service bodies: sessions, locks and the cluster.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// How a lock is held.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LockMode {
    /// Many shared holders coexist.
    Shared,
    /// An exclusive holder is alone.
    Exclusive,
}

/// `POST /v1/sessions`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSessionRequest {
    /// Time-to-live between keep-alives, in milliseconds.
    pub ttl_ms: u64,
}

/// A session, as created or kept alive.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SessionResponse {
    /// The session's id.
    pub session_id: u64,
    /// Its time-to-live in milliseconds.
    pub ttl_ms: u64,
}

/// `POST /v1/locks/{name}/acquire`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AcquireRequest {
    /// The requesting session.
    pub session_id: u64,
    /// Shared or exclusive.
    pub mode: LockMode,
    /// How long to wait for the lock, in milliseconds; 0 is a try-lock.
    #[serde(default)]
    pub wait_ms: u64,
}

/// A granted lock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AcquireResponse {
    /// The lock.
    pub name: String,
    /// The mode held.
    pub mode: LockMode,
    /// Strictly increases with every grant of this name: pass it to the protected resource,
    /// which must refuse any token lower than one it has seen.
    pub fencing_token: u64,
}

/// `POST /v1/locks/{name}/release`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleaseRequest {
    /// The holding session.
    pub session_id: u64,
    /// When given, release only the hold with this token (a stale release cannot drop a later
    /// grant).
    #[serde(default)]
    pub fencing_token: Option<u64>,
}

/// A released lock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReleaseResponse {
    /// The lock.
    pub name: String,
    /// The token of the hold that was released.
    pub fencing_token: u64,
}

/// One holder of a lock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HolderView {
    /// The holding session.
    pub session_id: u64,
    /// The mode held.
    pub mode: LockMode,
    /// The hold's fencing token.
    pub fencing_token: u64,
}

/// One waiter of a lock, in queue order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WaiterView {
    /// The waiting session.
    pub session_id: u64,
    /// The mode waited for.
    pub mode: LockMode,
}

/// `GET /v1/locks/{name}`: linearizable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LockState {
    /// The lock.
    pub name: String,
    /// Current holders.
    pub holders: Vec<HolderView>,
    /// Waiters, first in line first.
    pub waiters: Vec<WaiterView>,
}

/// One member of the lock cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MemberView {
    /// Node id.
    pub id: u64,
    /// Client API address, when known.
    pub http_addr: Option<String>,
    /// Peer (Raft) address, when known.
    pub raft_addr: Option<String>,
    /// Whether it votes (a learner does not).
    pub voter: bool,
}

/// `GET /v1/cluster`: the answering node's own view.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ClusterStatus {
    /// The answering node.
    pub id: u64,
    /// `leader`, `follower`, `candidate` or `pre_candidate`.
    pub role: String,
    /// Its current term.
    pub term: u64,
    /// The leader it knows of.
    pub leader_id: Option<u64>,
    /// Highest index known committed.
    pub commit_index: u64,
    /// Highest index applied to the lock table.
    pub applied_index: u64,
    /// The membership in force.
    pub members: Vec<MemberView>,
}

/// `POST /v1/cluster/members`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddMemberRequest {
    /// The new node's id (never reuse an id).
    pub id: u64,
    /// Its client API address.
    pub http_addr: String,
    /// Its peer (Raft) address.
    pub raft_addr: String,
}
