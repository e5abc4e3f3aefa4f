//! Cache service bodies: read, write, coherence view and node statistics.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// `PUT /v1/cache/{key}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CachePutRequest {
    /// The value (UTF-8 text over HTTP; the RESP port also takes binary values).
    pub value: String,
}

/// 200 answer to `GET /v1/cache/{key}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CacheEntry {
    /// The key.
    pub key: String,
    /// The value. A binary value written through the RESP port is shown with invalid UTF-8
    /// sequences replaced by U+FFFD.
    pub value: String,
    /// The state of the answering node's copy after the read: `M`, `E` or `S`.
    pub state: String,
    /// Version of the value: strictly increasing with every write of the key, cluster-wide.
    pub version: u64,
}

/// 200 answer to `PUT /v1/cache/{key}`: sent once every other copy is invalidated (and, under
/// `--write-policy write-through`, once the value is in the backing store).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CachePutResponse {
    /// The key.
    pub key: String,
    /// Version of the written value.
    pub version: u64,
}

/// `GET /v1/cache/{key}/coherence`: every node's copy of one key, as each node reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CoherenceView {
    /// The key.
    pub key: String,
    /// The node that homes the key (keeps its directory entry).
    pub home: String,
    /// Per node name: `M`, `E`, `S`, `I`, or `unknown` when the node did not answer in time.
    pub states: BTreeMap<String, String>,
}

/// `GET /v1/stats`: one cache node's counters since it started and its store's occupancy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CacheStats {
    /// This node's name.
    pub node: String,
    /// Reads served from a valid local copy.
    pub hits: u64,
    /// Reads that needed a coherence transaction (or waited for a lease renewal).
    pub misses: u64,
    /// `hits / (hits + misses)`, 0 before the first read.
    pub hit_ratio: f64,
    /// Lines dropped from the local store to make room or on a lease lapse.
    pub evictions: u64,
    /// Invalidations this node sent as a home.
    pub invalidations_sent: u64,
    /// Invalidations this node received as a holder.
    pub invalidations_received: u64,
    /// Writes this node, as a home, sent to the backing store.
    pub write_backs: u64,
    /// Reads, writes and deletes that failed (timeouts, limits).
    pub errors: u64,
    /// Lines in the local store.
    pub lines: u64,
    /// Bytes of values in the local store.
    pub bytes: u64,
    /// Most lines the store keeps (`--capacity`).
    pub capacity: Option<u64>,
    /// Most value bytes the store keeps (`--capacity-bytes`).
    pub capacity_bytes: Option<u64>,
    /// `lru` or `lfu`.
    pub policy: String,
    /// `write-back` or `write-through`.
    pub write_policy: String,
    /// Keys this node homes that have a directory entry.
    pub directory_entries: u64,
    /// Coherence transactions this node has in flight.
    pub pending_transactions: u64,
    /// Epoch of the membership view this node adopted (0: none yet).
    #[serde(default)]
    pub view_epoch: u64,
    /// Names of the members of that view, sorted.
    #[serde(default)]
    pub view_members: Vec<String>,
    /// Whether this node is in that view (it serves nothing otherwise).
    #[serde(default)]
    pub in_view: bool,
    /// Whether a majority of the view's members confirmed this node's coherence lease at its
    /// last tick. A node without (on the minority side of a partition, or just after a view
    /// change) serves nothing: requests wait for it, then answer 503 `node_unavailable`.
    #[serde(default)]
    pub quorum: bool,
}

/// One change of a line's state on a node, stamped with the node's wall clock: an entry of
/// `GET /v1/internal/transitions` (test only, not in the OpenAPI document; served by a node
/// started with `--test-record-transitions`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineTransition {
    /// Microseconds since 1970 when the node made the change.
    pub at_unix_us: u64,
    /// The key.
    pub key: String,
    /// State before (`M`, `E`, `S` or `I`).
    pub from: String,
    /// State after.
    pub to: String,
}

/// `GET /v1/internal/transitions`: every line state change of one node, in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheTransitions {
    /// The changes, oldest first.
    pub transitions: Vec<LineTransition>,
    /// Changes not kept because the journal was full: a non-zero count makes it incomplete.
    pub dropped: u64,
}
