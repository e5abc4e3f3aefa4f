//! The queue HTTP API: thin handlers over [`QueueService`].

use super::QueueNode;
use crate::http::{ApiError, Json, metrics_response, with_common_routes};
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use distsync_api::{
    AckRequest, AckResponse, DeadLettersResponse, ErrorBody, ErrorCode, NackRequest, NackResponse,
    PublishRequest, PublishResponse, QueueStats, ReceiveRequest, ReceiveResponse, ReceivedMessage,
    RingView,
};
use distsync_queue::{PublishMessage, QueueError, ReceiveOptions, now_ms};
use serde::Deserialize;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The queue node's router: the queue API plus `/healthz`, `/readyz` and `/metrics`.
pub fn router(node: Arc<QueueNode>) -> Router {
    let routes = Router::new()
        .route("/v1/queues/{queue}/messages", post(publish))
        .route("/v1/queues/{queue}/receive", post(receive))
        .route("/v1/queues/{queue}/ack", post(ack))
        .route("/v1/queues/{queue}/nack", post(nack))
        .route("/v1/queues/{queue}", get(stats))
        .route("/v1/queues/{queue}/dead-letters", get(dead_letters))
        .route("/v1/ring", get(ring))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics));
    with_common_routes(routes).with_state(node)
}

/// Maps a queue error to its HTTP code, counting shard failures.
fn api_error(node: &QueueNode, error: QueueError) -> ApiError {
    let code = match &error {
        QueueError::InvalidRequest(_) => ErrorCode::InvalidRequest,
        QueueError::PayloadTooLarge { .. } => ErrorCode::PayloadTooLarge,
        QueueError::UnknownReceipt { .. } => ErrorCode::UnknownReceipt,
        QueueError::ShardUnavailable { shard, .. } => {
            node.metrics.shard_error(shard);
            ErrorCode::ShardUnavailable
        }
        QueueError::Backend { shard, .. } => {
            node.metrics.shard_error(shard);
            ErrorCode::Internal
        }
    };
    ApiError::new(code, error.to_string())
}

#[utoipa::path(post, path = "/v1/queues/{queue}/messages", tag = "queues",
    params(("queue" = String, Path, description = "Queue name: 1-128 of [A-Za-z0-9_.-]")),
    request_body = PublishRequest,
    responses(
        (status = 201, body = PublishResponse, description = "Every message is durable as configured"),
        (status = 400, body = ErrorBody, description = "invalid_request"),
        (status = 413, body = ErrorBody, description = "payload_too_large"),
        (status = 503, body = ErrorBody, description = "shard_unavailable: a shard of the batch did not answer; part of the batch may be stored"),
    ))]
async fn publish(
    State(node): State<Arc<QueueNode>>,
    Path(queue): Path<String>,
    Json(request): Json<PublishRequest>,
) -> Result<(StatusCode, Json<PublishResponse>), ApiError> {
    let started = Instant::now();
    let messages: Vec<PublishMessage> = request
        .messages
        .into_iter()
        .map(|m| PublishMessage {
            key: m.key,
            body: m.body,
            headers: m.headers.unwrap_or_default(),
        })
        .collect();
    let count = messages.len() as u64;
    let ids = node
        .service
        .publish(&queue, messages)
        .await
        .map_err(|e| api_error(&node, e))?;
    node.metrics.published.inc_by(count);
    node.metrics
        .publish_latency
        .observe(started.elapsed().as_secs_f64());
    Ok((
        StatusCode::CREATED,
        Json(PublishResponse {
            ids: ids.iter().map(ToString::to_string).collect(),
        }),
    ))
}

#[utoipa::path(post, path = "/v1/queues/{queue}/receive", tag = "queues",
    params(("queue" = String, Path, description = "Queue name")),
    request_body = ReceiveRequest,
    responses(
        (status = 200, body = ReceiveResponse, description = "Possibly empty after wait_ms; with resume, the consumer's own pending messages first"),
        (status = 400, body = ErrorBody, description = "invalid_request"),
        (status = 503, body = ErrorBody, description = "shard_unavailable: every shard is down"),
    ))]
async fn receive(
    State(node): State<Arc<QueueNode>>,
    Path(queue): Path<String>,
    Json(request): Json<ReceiveRequest>,
) -> Result<Json<ReceiveResponse>, ApiError> {
    let options = ReceiveOptions {
        max: request.max,
        wait: Duration::from_millis(request.wait_ms),
        visibility: Duration::from_millis(request.visibility_ms),
        resume: request.resume,
    };
    let outcome = node
        .service
        .receive(&queue, &request.group, &request.consumer, options)
        .await
        .map_err(|e| api_error(&node, e))?;
    for shard in &outcome.failed_shards {
        node.metrics.shard_error(shard);
    }
    node.metrics.dead_lettered.inc_by(outcome.dead_lettered);
    // At most `max` (a u32) messages are returned.
    let resumed = u32::try_from(outcome.resumed).unwrap_or(u32::MAX);
    let now = now_ms();
    let messages = outcome
        .messages
        .into_iter()
        .map(|m| {
            node.metrics.delivered.inc();
            if m.delivery_count > 1 {
                node.metrics.redelivered.inc();
            } else if m.entry.published_at_ms > 0 {
                let latency_ms = now.saturating_sub(m.entry.published_at_ms);
                node.metrics
                    .end_to_end_latency
                    .observe(latency_ms as f64 / 1000.0);
            }
            ReceivedMessage {
                id: m.id.to_string(),
                receipt: m.receipt.to_string(),
                key: m.entry.key,
                body: m.entry.body,
                delivery_count: m.delivery_count,
                partition: m.id.partition.0,
                headers: m.entry.headers,
            }
        })
        .collect();
    Ok(Json(ReceiveResponse { messages, resumed }))
}

#[utoipa::path(post, path = "/v1/queues/{queue}/ack", tag = "queues",
    params(("queue" = String, Path, description = "Queue name")),
    request_body = AckRequest,
    responses(
        (status = 200, body = AckResponse),
        (status = 400, body = ErrorBody, description = "invalid_request or unknown_receipt"),
        (status = 503, body = ErrorBody, description = "shard_unavailable"),
    ))]
async fn ack(
    State(node): State<Arc<QueueNode>>,
    Path(queue): Path<String>,
    Json(request): Json<AckRequest>,
) -> Result<Json<AckResponse>, ApiError> {
    let acked = node
        .service
        .ack(&queue, &request.group, &request.receipts)
        .await
        .map_err(|e| api_error(&node, e))?;
    node.metrics.acked.inc_by(acked);
    Ok(Json(AckResponse { acked }))
}

#[utoipa::path(post, path = "/v1/queues/{queue}/nack", tag = "queues",
    params(("queue" = String, Path, description = "Queue name")),
    request_body = NackRequest,
    responses(
        (status = 200, body = NackResponse),
        (status = 400, body = ErrorBody, description = "invalid_request or unknown_receipt"),
        (status = 503, body = ErrorBody, description = "shard_unavailable"),
    ))]
async fn nack(
    State(node): State<Arc<QueueNode>>,
    Path(queue): Path<String>,
    Json(request): Json<NackRequest>,
) -> Result<Json<NackResponse>, ApiError> {
    let delay = Duration::from_millis(request.delay_ms.unwrap_or(0));
    let nacked = node
        .service
        .nack(&queue, &request.group, &request.receipts, delay)
        .await
        .map_err(|e| api_error(&node, e))?;
    Ok(Json(NackResponse { nacked }))
}

#[utoipa::path(get, path = "/v1/queues/{queue}", tag = "queues",
    params(("queue" = String, Path, description = "Queue name")),
    responses(
        (status = 200, body = QueueStats, description = "Per partition; a down shard's partitions have available = false"),
        (status = 400, body = ErrorBody, description = "invalid_request"),
    ))]
async fn stats(
    State(node): State<Arc<QueueNode>>,
    Path(queue): Path<String>,
) -> Result<Json<QueueStats>, ApiError> {
    let stats = node
        .service
        .stats(&queue)
        .await
        .map_err(|e| api_error(&node, e))?;
    for row in stats.partitions.iter().filter(|row| !row.available) {
        node.metrics.shard_error(&row.shard);
    }
    Ok(Json(stats))
}

/// Query of `GET /v1/queues/{q}/dead-letters`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeadLettersQuery {
    /// Most messages per partition (default 100, at most 1000).
    limit: Option<usize>,
}

#[utoipa::path(get, path = "/v1/queues/{queue}/dead-letters", tag = "queues",
    params(("queue" = String, Path, description = "Queue name"),
           ("limit" = Option<usize>, Query, description = "Most per partition, 1..=1000 (default 100)")),
    responses(
        (status = 200, body = DeadLettersResponse),
        (status = 400, body = ErrorBody, description = "invalid_request"),
        (status = 503, body = ErrorBody, description = "shard_unavailable"),
    ))]
async fn dead_letters(
    State(node): State<Arc<QueueNode>>,
    Path(queue): Path<String>,
    query: Result<Query<DeadLettersQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<DeadLettersResponse>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::invalid(e.body_text()))?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("limit must be 1..=1000"));
    }
    let messages = node
        .service
        .dead_letters(&queue, limit)
        .await
        .map_err(|e| api_error(&node, e))?;
    Ok(Json(DeadLettersResponse { messages }))
}

#[utoipa::path(get, path = "/v1/ring", tag = "queues",
    responses((status = 200, body = RingView, description = "Partition placement every node computes")))]
async fn ring(State(node): State<Arc<QueueNode>>) -> Json<RingView> {
    Json(node.service.ring_view())
}

/// Ready when at least one shard answers (a node with some shards down still serves the other
/// partitions); the body lists every shard's state.
async fn readyz(State(node): State<Arc<QueueNode>>) -> impl IntoResponse {
    let shards = node.service.check_shards().await;
    let mut body = String::new();
    let mut up = 0;
    for (name, error) in &shards {
        match error {
            None => {
                up += 1;
                body.push_str(&format!("shard {name}: ok\n"));
            }
            Some(error) => body.push_str(&format!("shard {name}: unavailable: {error}\n")),
        }
    }
    let status = if up > 0 {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, body)
}

async fn metrics(State(node): State<Arc<QueueNode>>) -> Response {
    metrics_response(node.metrics.render())
}
