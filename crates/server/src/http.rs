//! What every HTTP API shares: the JSON error type, a JSON extractor whose rejections are JSON
//! errors too, and the JSON 404 fallback.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use distsync_api::{ErrorBody, ErrorCode};
use serde::de::DeserializeOwned;

/// Request bodies larger than this are refused with 413.
pub const BODY_LIMIT_BYTES: usize = 1 << 20;

/// An oversized body up to this size is read and dropped before the 413 is sent.
const DRAIN_LIMIT_BYTES: usize = 16 << 20;

/// An error answered as `{"code", "message"}` with the status its code implies.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// JSON body.
    pub body: ErrorBody,
}

impl ApiError {
    /// An error with the status conventionally used for `code`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            status: status_for(code),
            body: ErrorBody::new(code, message),
        }
    }

    /// `invalid_request` (400).
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, message)
    }

    /// `internal` (500).
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }
}

/// The status each code is answered with.
pub fn status_for(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::InvalidRequest | ErrorCode::UnknownReceipt => StatusCode::BAD_REQUEST,
        ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        ErrorCode::NotFound | ErrorCode::SessionNotFound => StatusCode::NOT_FOUND,
        ErrorCode::Timeout => StatusCode::REQUEST_TIMEOUT,
        ErrorCode::Deadlock | ErrorCode::NotHeld | ErrorCode::IdempotencyKeyReused => {
            StatusCode::CONFLICT
        }
        ErrorCode::MembershipChangeRejected => StatusCode::CONFLICT,
        ErrorCode::LimitExceeded => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::NoLeader | ErrorCode::ShardUnavailable | ErrorCode::NodeUnavailable => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status == StatusCode::PAYLOAD_TOO_LARGE {
            // The rest of the oversized body is never read, so the connection cannot carry
            // another request: say so, or a client would reuse it and see it cut off.
            return (
                self.status,
                [(axum::http::header::CONNECTION, "close")],
                axum::Json(self.body),
            )
                .into_response();
        }
        (self.status, axum::Json(self.body)).into_response()
    }
}

/// Like `axum::Json`, but a body that is not valid JSON of the expected shape is answered with a
/// JSON `invalid_request` (or `payload_too_large`) naming the problem, not axum's plain text.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<S, T> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(request, state).await {
            Ok(axum::Json(value)) => Ok(Json(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

impl<T: serde::Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("request body exceeds {BODY_LIMIT_BYTES} bytes"),
        );
    }
    ApiError::invalid(rejection.body_text())
}

/// Middleware: refuses a body whose declared `Content-Length` exceeds [`BODY_LIMIT_BYTES`]
/// without handing it to a handler (bodies without a length are cut off by the body limit layer).
pub async fn reject_oversized_bodies(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let declared = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if let Some(length) = declared.filter(|&length| length > BODY_LIMIT_BYTES as u64) {
        // Read (and drop) a moderately oversized body before answering: a client still writing
        // it would otherwise see its connection cut instead of this answer. Beyond the drain
        // limit the connection is closed at once.
        if length <= DRAIN_LIMIT_BYTES as u64 {
            let _ = axum::body::to_bytes(request.into_body(), DRAIN_LIMIT_BYTES).await;
        }
        return ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("request body of {length} bytes exceeds {BODY_LIMIT_BYTES} bytes"),
        )
        .into_response();
    }
    next.run(request).await
}

/// The JSON answer for paths that name nothing.
pub async fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such endpoint")
}

/// `GET /healthz` of every node: the process is up and serving HTTP.
pub async fn healthz() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({"status": "ok"}))
}

/// A Prometheus text exposition as an HTTP answer.
pub fn metrics_response(text: String) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// What every node's router ends with: `/healthz`, `/openapi.json`, the JSON 404 fallback and
/// the body limits (an oversized body is refused with 413 before any handler reads it).
pub fn with_common_routes<S: Clone + Send + Sync + 'static>(
    router: axum::Router<S>,
) -> axum::Router<S> {
    router
        .route("/healthz", axum::routing::get(healthz))
        .route("/openapi.json", axum::routing::get(crate::openapi_json))
        .fallback(not_found)
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT_BYTES))
        .layer(axum::middleware::from_fn(reject_oversized_bodies))
}
