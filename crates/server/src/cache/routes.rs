//! The cache HTTP API: thin handlers over [`CacheEngine`].

use super::engine::{CacheEngine, CacheOp, EngineError};
use super::key::validate_key;
use crate::http::{ApiError, Json, metrics_response, with_common_routes};
use axum::Router;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use distsync_api::{
    CacheEntry, CachePutRequest, CachePutResponse, CacheStats, CacheTransitions, CoherenceView,
    ErrorBody, ErrorCode,
};
use distsync_cache::{CacheError, OpResult, WritePolicy};
use std::sync::Arc;

/// The cache node's router: the cache API plus `/healthz`, `/readyz`, `/metrics` and
/// `/openapi.json`.
pub fn router(engine: Arc<CacheEngine>) -> Router {
    let routes = Router::new()
        .route(
            "/v1/cache/{key}",
            get(get_key).put(put_key).delete(delete_key),
        )
        .route("/v1/cache/{key}/coherence", get(coherence))
        .route("/v1/stats", get(stats))
        .route("/v1/internal/transitions", get(transitions))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics));
    with_common_routes(routes).with_state(engine)
}

/// Maps an engine error to its HTTP answer.
pub fn api_error(error: EngineError) -> ApiError {
    let code = match &error {
        EngineError::Refused(CacheError::ValueTooLarge { .. }) => ErrorCode::PayloadTooLarge,
        EngineError::Refused(
            CacheError::TooManyPendingTransactions { .. }
            | CacheError::TooManyQueuedOperations { .. },
        ) => ErrorCode::LimitExceeded,
        EngineError::Refused(CacheError::InvalidConfig(_)) => ErrorCode::Internal,
        EngineError::Unavailable { .. }
        | EngineError::ShuttingDown
        | EngineError::NotInView { .. }
        | EngineError::NoQuorum { .. } => ErrorCode::NodeUnavailable,
    };
    ApiError::new(code, error.to_string())
}

fn key_of(path: Result<Path<String>, PathRejection>) -> Result<Bytes, ApiError> {
    let Path(key) = path.map_err(|rejection| ApiError::invalid(rejection.body_text()))?;
    validate_key(key.as_bytes()).map_err(ApiError::invalid)?;
    Ok(Bytes::from(key))
}

#[utoipa::path(get, path = "/v1/cache/{key}", tag = "cache",
    params(("key" = String, Path, description = "1-250 bytes, no whitespace or control characters")),
    responses(
        (status = 200, body = CacheEntry, description = "The newest value: no older than any write completed before this read began"),
        (status = 400, body = ErrorBody, description = "invalid_request: bad key"),
        (status = 404, body = ErrorBody, description = "not_found: never written, or deleted"),
        (status = 429, body = ErrorBody, description = "limit_exceeded: too many operations in flight on this node"),
        (status = 503, body = ErrorBody, description = "node_unavailable: the key's home (or its owner) did not answer in time"),
    ))]
async fn get_key(
    State(engine): State<Arc<CacheEngine>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<CacheEntry>, ApiError> {
    let key = key_of(path)?;
    let result = engine
        .execute(CacheOp::Get(key.clone()))
        .await
        .map_err(api_error)?;
    let OpResult::Read(data) = result else {
        return Err(ApiError::internal(format!("a read finished as {result:?}")));
    };
    let Some(value) = data.value else {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            format!("no value under key {}", String::from_utf8_lossy(&key)),
        ));
    };
    Ok(Json(CacheEntry {
        key: String::from_utf8_lossy(&key).into_owned(),
        value: String::from_utf8_lossy(&value).into_owned(),
        state: engine.local_state(&key).letter().to_string(),
        version: data.version.0,
    }))
}

#[utoipa::path(put, path = "/v1/cache/{key}", tag = "cache",
    params(("key" = String, Path, description = "1-250 bytes, no whitespace or control characters")),
    request_body = CachePutRequest,
    responses(
        (status = 200, body = CachePutResponse, description = "Written: every other copy is invalidated (under write-through, the value is also in the backing store)"),
        (status = 400, body = ErrorBody, description = "invalid_request: bad key or body"),
        (status = 413, body = ErrorBody, description = "payload_too_large: the value exceeds --value-bytes-max or the body 1 MiB"),
        (status = 429, body = ErrorBody, description = "limit_exceeded"),
        (status = 503, body = ErrorBody, description = "node_unavailable: the key's home (or its owner) did not answer in time, or this node is cut off from a majority of the cluster; the message says whether the write took effect (if not, it never will)"),
    ))]
async fn put_key(
    State(engine): State<Arc<CacheEngine>>,
    path: Result<Path<String>, PathRejection>,
    Json(request): Json<CachePutRequest>,
) -> Result<Json<CachePutResponse>, ApiError> {
    let key = key_of(path)?;
    let result = engine
        .execute(CacheOp::Put(key.clone(), Bytes::from(request.value)))
        .await
        .map_err(api_error)?;
    let OpResult::Written(version) = result else {
        return Err(ApiError::internal(format!(
            "a write finished as {result:?}"
        )));
    };
    Ok(Json(CachePutResponse {
        key: String::from_utf8_lossy(&key).into_owned(),
        version: version.0,
    }))
}

#[utoipa::path(delete, path = "/v1/cache/{key}", tag = "cache",
    params(("key" = String, Path, description = "1-250 bytes, no whitespace or control characters")),
    responses(
        (status = 204, description = "Deleted (also when there was nothing to delete)"),
        (status = 400, body = ErrorBody, description = "invalid_request: bad key"),
        (status = 503, body = ErrorBody, description = "node_unavailable"),
    ))]
async fn delete_key(
    State(engine): State<Arc<CacheEngine>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let key = key_of(path)?;
    engine
        .execute(CacheOp::Delete(key))
        .await
        .map_err(api_error)?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/v1/cache/{key}/coherence", tag = "cache",
    params(("key" = String, Path, description = "The key")),
    responses(
        (status = 200, body = CoherenceView, description = "Every node's state of the key; `unknown` for a node that did not answer"),
        (status = 400, body = ErrorBody, description = "invalid_request: bad key"),
    ))]
async fn coherence(
    State(engine): State<Arc<CacheEngine>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<CoherenceView>, ApiError> {
    let key = key_of(path)?;
    let (home, states) = engine.coherence(&key).await;
    Ok(Json(CoherenceView {
        key: String::from_utf8_lossy(&key).into_owned(),
        home,
        states: states
            .into_iter()
            .map(|(name, state)| {
                let shown = state.map_or_else(|| "unknown".to_string(), |s| s.letter().to_string());
                (name, shown)
            })
            .collect(),
    }))
}

/// The node's statistics.
pub fn stats_of(engine: &CacheEngine) -> CacheStats {
    let (lines, bytes, directory_entries, pending) = engine.occupancy();
    let metrics = &engine.metrics;
    let core = &engine.config().core;
    let view = engine.membership().current();
    CacheStats {
        node: engine.name().to_string(),
        hits: metrics.hits.get(),
        misses: metrics.misses.get(),
        hit_ratio: metrics.hit_ratio(),
        evictions: metrics.evictions.get(),
        invalidations_sent: metrics.invalidations_sent.get(),
        invalidations_received: metrics.invalidations_received.get(),
        write_backs: metrics.write_backs.get(),
        errors: metrics.errors.get(),
        lines: lines as u64,
        bytes: bytes as u64,
        capacity: core.store_limits.entries_max.map(|n| n as u64),
        capacity_bytes: core.store_limits.bytes_max.map(|n| n as u64),
        policy: match core.eviction_policy {
            distsync_cache::EvictionPolicy::Lru => "lru".into(),
            distsync_cache::EvictionPolicy::Lfu => "lfu".into(),
        },
        write_policy: match core.write_policy {
            WritePolicy::WriteBack => "write-back".into(),
            WritePolicy::WriteThrough => "write-through".into(),
        },
        directory_entries: directory_entries as u64,
        pending_transactions: pending as u64,
        view_epoch: view.epoch(),
        view_members: view.names(),
        in_view: engine.is_serving(),
        quorum: engine.has_quorum(),
    }
}

#[utoipa::path(get, path = "/v1/stats", tag = "cache",
    responses((status = 200, body = CacheStats, description = "This node's counters and occupancy")))]
async fn stats(State(engine): State<Arc<CacheEngine>>) -> Json<CacheStats> {
    Json(stats_of(&engine))
}

/// Test only, not in the OpenAPI document: the node's line state changes, for a black-box test
/// of the single-writer invariant in real time.
async fn transitions(
    State(engine): State<Arc<CacheEngine>>,
) -> Result<Json<CacheTransitions>, ApiError> {
    engine.transitions().map(Json).ok_or_else(|| {
        ApiError::new(
            ErrorCode::NotFound,
            "this node keeps no transition journal (start it with --test-record-transitions)",
        )
    })
}

async fn readyz(State(engine): State<Arc<CacheEngine>>) -> Response {
    if engine.is_ready() {
        (
            StatusCode::OK,
            axum::Json(serde_json::json!({"status": "ready"})),
        )
            .into_response()
    } else {
        ApiError::new(
            ErrorCode::NodeUnavailable,
            "not in a cache view yet (every node must be reached once), left out of the current one, or cut off from a majority of it",
        )
        .into_response()
    }
}

async fn metrics(State(engine): State<Arc<CacheEngine>>) -> Response {
    let (lines, bytes, _, _) = engine.occupancy();
    metrics_response(engine.metrics.render(lines, bytes))
}
