//! The HTTP API of distsync: every request and response body, and the error body with its stable
//! machine-readable codes. The server and the client both use these types, so no shape is
//! written twice, and the OpenAPI document is derived from them.
//!
//! Request bodies reject unknown fields: a misspelt field is an error, not a silent default.
#![warn(missing_docs)]

mod cache;
mod error;
mod lock;
mod queue;

pub use cache::{
    CacheEntry, CachePutRequest, CachePutResponse, CacheStats, CacheTransitions, CoherenceView,
    LineTransition,
};
pub use error::{ErrorBody, ErrorCode};
pub use lock::{
    AcquireRequest, AcquireResponse, AddMemberRequest, ClusterStatus, CreateSessionRequest,
    HolderView, LockMode, LockState, MemberView, ReleaseRequest, ReleaseResponse, SessionResponse,
    WaiterView,
};
pub use queue::{
    AckRequest, AckResponse, DeadLetterMessage, DeadLettersResponse, GroupStats, NackRequest,
    NackResponse, PartitionPlacement, PartitionStats, PublishMessage, PublishRequest,
    PublishResponse, QueueStats, ReceiveRequest, ReceiveResponse, ReceivedMessage, RingView,
};

/// Header carrying a client-chosen key that makes a write safe to retry: a retried request with
/// the same key is applied once and answered with the first outcome.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

/// Set by a lock node on an answer it relayed from the leader: the leader's HTTP address, so a
/// client can send its next request there directly and save the extra hop.
pub const LEADER_HEADER: &str = "x-distsync-leader";
