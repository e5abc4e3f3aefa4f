//! Any node accepts any request: a follower forwards writes and linearizable reads to the leader
//! and relays the answer. Waits for a leader (bounded) while an election runs.

use super::LockService;
use crate::http::{ApiError, BODY_LIMIT_BYTES};
use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use distsync_api::{ErrorBody, ErrorCode};
use std::sync::Arc;
use std::time::Duration;

/// Marks a request that was already forwarded once, so two nodes with different opinions about
/// the leader cannot bounce it between them.
const FORWARDED_HEADER: &str = "x-distsync-forwarded";

/// Middleware: serve locally on the leader, forward elsewhere.
pub async fn forward_to_leader(
    State(service): State<Arc<LockService>>,
    request: Request,
    next: Next,
) -> Response {
    // A forwarded request comes from a node that believes this one leads. If this node knows no
    // leader it was probably cut off and stepped down: bounce the request at once, so the
    // client retries through nodes that know the new leader, rather than holding it here for
    // the whole leader wait.
    if request.headers().contains_key(FORWARDED_HEADER) && !service.raft.status().is_leader() {
        return ApiError::new(
            ErrorCode::NoLeader,
            "forwarded to a node that is not the leader; retry",
        )
        .into_response();
    }
    let status = match wait_for_leader(&service).await {
        Some(status) => status,
        None => {
            return ApiError::new(
                ErrorCode::NoLeader,
                "no leader is known; the cluster may be electing one or this node may be cut off",
            )
            .into_response();
        }
    };
    if status.is_leader() {
        return next.run(request).await;
    }
    let Some(leader_http) = status.leader_http().map(str::to_string) else {
        return ApiError::new(ErrorCode::NoLeader, "the leader's address is unknown")
            .into_response();
    };
    match relay(&service, &leader_http, request).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn wait_for_leader(service: &LockService) -> Option<crate::raft::NodeStatus> {
    let mut watch = service.raft.watch_status();
    let deadline = tokio::time::Instant::now() + service.leader_wait;
    loop {
        {
            let status = watch.borrow_and_update();
            if status.leader.is_some() && status.running {
                return Some(status.clone());
            }
        }
        if tokio::time::timeout_at(deadline, watch.changed())
            .await
            .is_err()
        {
            return None;
        }
    }
}

async fn relay(
    service: &LockService,
    leader_http: &str,
    request: Request,
) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let body = to_bytes(body, BODY_LIMIT_BYTES).await.map_err(|_| {
        ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("request body exceeds {BODY_LIMIT_BYTES} bytes"),
        )
    })?;
    let path = parts
        .uri
        .path_and_query()
        .map_or(parts.uri.path(), |path| path.as_str());
    let url = format!("http://{leader_http}{path}");
    let method = reqwest::Method::from_bytes(parts.method.as_str().as_bytes())
        .map_err(|_| ApiError::invalid("unsupported method"))?;
    let mut outbound = service
        .http_client
        .request(method, &url)
        .timeout(forward_timeout(&body))
        .header(FORWARDED_HEADER, "1")
        .body(body);
    for (name, value) in &parts.headers {
        if is_end_to_end(name) {
            outbound = outbound.header(name.as_str(), value.as_bytes());
        }
    }
    let answer = outbound.send().await.map_err(|error| {
        ApiError::new(
            ErrorCode::NoLeader,
            format!("the leader at {leader_http} could not be reached: {error}"),
        )
    })?;
    let mut response = Response::builder().status(answer.status().as_u16());
    for (name, value) in answer.headers() {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_str().as_bytes()),
            HeaderValue::from_bytes(value.as_bytes()),
        ) && is_end_to_end(&name)
        {
            response = response.header(name, value);
        }
    }
    if let Ok(leader) = HeaderValue::from_str(leader_http) {
        response = response.header(distsync_api::LEADER_HEADER, leader);
    }
    let bytes = answer.bytes().await.map_err(|error| {
        ApiError::new(
            ErrorCode::NoLeader,
            format!("the leader's answer was cut off: {error}"),
        )
    })?;
    response
        .body(Body::from(bytes))
        .map_err(|error| ApiError::internal(error.to_string()))
}

/// Sends a write this node made up itself (not a client's request) to the leader at
/// `leader_http`, marked as forwarded so a node that no longer leads bounces it rather than
/// relaying it on. The leader's error answer comes back as the error.
pub async fn post_to_leader<T: serde::Serialize>(
    service: &LockService,
    leader_http: &str,
    path: &str,
    body: &T,
) -> Result<(), ApiError> {
    let unreachable = |error: reqwest::Error| {
        ApiError::new(
            ErrorCode::NoLeader,
            format!("the leader at {leader_http} could not be reached: {error}"),
        )
    };
    let answer = service
        .http_client
        .post(format!("http://{leader_http}{path}"))
        .timeout(service.commit_timeout + service.leader_wait)
        .header(FORWARDED_HEADER, "1")
        .json(body)
        .send()
        .await
        .map_err(unreachable)?;
    let status = answer.status();
    if status.is_success() {
        return Ok(());
    }
    let body: ErrorBody = answer.json().await.map_err(unreachable)?;
    Err(ApiError { status, body })
}

/// Headers that describe the message itself and are relayed; hop-by-hop ones are not.
fn is_end_to_end(name: &HeaderName) -> bool {
    !matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "transfer-encoding"
            | "te"
            | "upgrade"
            | "host"
            | "content-length"
    )
}

/// A forwarded acquire may wait up to its `wait_ms`; give the leader that long plus the time to
/// commit, and a floor for everything else.
fn forward_timeout(body: &[u8]) -> Duration {
    let wait_ms = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|value| value.get("wait_ms").and_then(serde_json::Value::as_u64))
        .unwrap_or(0);
    Duration::from_millis(wait_ms.min(3_600_000)) + Duration::from_secs(10)
}
