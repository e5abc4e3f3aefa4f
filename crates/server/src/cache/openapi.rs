//! The OpenAPI document of the cache service, derived from the handlers and the API types.

use super::routes::{
    __path_coherence, __path_delete_key, __path_get_key, __path_put_key, __path_stats,
};
use distsync_api::{
    CacheEntry, CachePutRequest, CachePutResponse, CacheStats, CoherenceView, ErrorBody, ErrorCode,
};
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "distsync cache service",
        description = "A key/value cache over several nodes kept coherent by directory-based MESI. Errors are JSON `{\"code\", \"message\"}` with a stable `code`.",
    ),
    paths(get_key, put_key, delete_key, coherence, stats),
    components(schemas(
        CacheEntry,
        CachePutRequest,
        CachePutResponse,
        CacheStats,
        CoherenceView,
        ErrorBody,
        ErrorCode
    ))
)]
struct CacheApi;

/// The cache service's OpenAPI 3 document (merged into the one document of distsync).
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    CacheApi::openapi()
}
