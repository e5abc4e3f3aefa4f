//! The cache service's IO shell: one node is a [`CacheEngine`] (the MESI core behind a mutex,
//! its effects carried out over the peer transport and the backing store), an axum router over
//! it, and optionally a Redis-protocol (RESP) listener.
//!
//! A cache node serves exactly: `/v1/cache/{key}` (GET, PUT, DELETE),
//! `/v1/cache/{key}/coherence`, `/v1/stats`, `/healthz`, `/readyz`, `/metrics`, `/openapi.json`.

mod backing;
mod busy_poll;
mod engine;
mod key;
mod membership;
mod metrics;
mod openapi;
mod pending_hits;
mod resp;
mod routes;

pub use backing::BackingStore;
pub use engine::{CacheEngine, CacheOp, EngineConfig, EngineError, PeerMessage};
pub use key::{KEY_BYTES_MAX, validate_key};
pub use membership::{
    AnnouncedMember, CacheClusterSpec, CacheClusterSpecError, CacheMember, EPOCH_LIMIT,
    EPOCH_RANK_BITS, FailureDetector, MAX_MEMBERS, Membership, MembershipView, ViewMember,
    counter_of, epoch_of, node_id_of,
};
pub use metrics::CacheMetrics;
pub use openapi::openapi_document;
pub use resp::{RespError, RespLane, accept_resp, parse_command};
pub use routes::{router, stats_of};

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// How long shutdown waits for the Modified lines to be written back.
const FLUSH_LIMIT: Duration = Duration::from_secs(5);

/// How long shutdown waits for the peers to hear that this node leaves.
const LEAVE_LIMIT: Duration = Duration::from_millis(500);

/// Runs a cache node until `shutdown` completes, then writes back its Modified lines and tells
/// the other nodes it leaves.
///
/// # Errors
/// The HTTP server fails, or the Modified lines are not all written back within 5 s.
pub async fn run_cache_node(
    engine: Arc<CacheEngine>,
    http_listener: TcpListener,
    peer_listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    tracing::info!(
        node = engine.name(),
        id = %engine.id(),
        http = %http_listener.local_addr()?,
        peer = %peer_listener.local_addr()?,
        store = %engine.backing().describe(),
        "cache node started"
    );
    let tasks = engine.start(peer_listener);
    let result = axum::serve(http_listener, router(Arc::clone(&engine)))
        .with_graceful_shutdown(shutdown)
        .await;
    let flushed = engine.flush(FLUSH_LIMIT).await;
    for task in tasks {
        task.abort();
    }
    engine.leave(LEAVE_LIMIT).await;
    result?;
    // Exiting with an error tells whoever stopped the node (an orchestrator, a script) that
    // acknowledged writes may be gone, which a log line alone would not.
    anyhow::ensure!(
        flushed,
        "shutdown: not every Modified line was written back in time ({FLUSH_LIMIT:?}: the homes \
         or the backing store did not answer); under write-back, the writes they held are lost"
    );
    Ok(())
}
