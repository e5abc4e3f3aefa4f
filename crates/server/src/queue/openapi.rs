//! The OpenAPI document of the queue service, derived from the handlers and the API types.

use super::routes::{
    __path_ack, __path_dead_letters, __path_nack, __path_publish, __path_receive, __path_ring,
    __path_stats,
};
use distsync_api::{
    AckRequest, AckResponse, DeadLetterMessage, DeadLettersResponse, ErrorBody, ErrorCode,
    GroupStats, NackRequest, NackResponse, PartitionPlacement, PartitionStats, PublishMessage,
    PublishRequest, PublishResponse, QueueStats, ReceiveRequest, ReceiveResponse, ReceivedMessage,
    RingView,
};
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "distsync queue service",
        description = "Partitioned queues on Redis Streams (or the embedded backend), at-least-once. Errors are JSON `{\"code\", \"message\"}` with a stable `code`.",
    ),
    paths(publish, receive, ack, nack, stats, dead_letters, ring),
    components(schemas(
        AckRequest,
        AckResponse,
        DeadLetterMessage,
        DeadLettersResponse,
        ErrorBody,
        ErrorCode,
        GroupStats,
        NackRequest,
        NackResponse,
        PartitionPlacement,
        PartitionStats,
        PublishMessage,
        PublishRequest,
        PublishResponse,
        QueueStats,
        ReceiveRequest,
        ReceiveResponse,
        ReceivedMessage,
        RingView
    ))
)]
struct QueueApi;

/// The queue service's OpenAPI 3 document (merge it with the lock service's for one document).
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    QueueApi::openapi()
}
