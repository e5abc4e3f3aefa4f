//! The one OpenAPI document of distsync: every service's paths, derived from the handlers and
//! the API types, committed as `docs/api/openapi.yaml` and served at `/openapi.json`.

/// The OpenAPI 3 document of every HTTP API.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    let mut document = crate::lock::openapi_document();
    document.merge(crate::queue::openapi_document());
    document.merge(crate::cache::openapi_document());
    document.info.title = "distsync".to_string();
    document.info.description = Some(
        "Distributed locks on a Raft group, partitioned queues on Redis Streams and a MESI-coherent cache. Errors are \
         JSON `{\"code\", \"message\"}` with a stable machine-readable `code`."
            .to_string(),
    );
    document
}

/// `GET /openapi.json`.
pub async fn openapi_json() -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        openapi_document().to_pretty_json().unwrap_or_default(),
    )
        .into_response()
}
