//! The OpenAPI document of the lock service, derived from the handlers and the API types.

use super::routes::{
    __path_acquire, __path_add_member, __path_close_session, __path_cluster_status, __path_crash,
    __path_create_session, __path_keep_alive, __path_lock_state, __path_release,
    __path_remove_member,
};
use distsync_api::{
    AcquireRequest, AcquireResponse, AddMemberRequest, ClusterStatus, CreateSessionRequest,
    ErrorBody, ErrorCode, HolderView, LockMode, LockState, MemberView, ReleaseRequest,
    ReleaseResponse, SessionResponse, WaiterView,
};
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "distsync",
        description = "Distributed locks on a Raft group. Errors are JSON `{\"code\", \"message\"}` with a stable `code`.",
    ),
    paths(
        create_session,
        keep_alive,
        close_session,
        acquire,
        release,
        lock_state,
        cluster_status,
        add_member,
        remove_member,
        crash
    ),
    components(schemas(
        AcquireRequest,
        AcquireResponse,
        AddMemberRequest,
        ClusterStatus,
        CreateSessionRequest,
        ErrorBody,
        ErrorCode,
        HolderView,
        LockMode,
        LockState,
        MemberView,
        ReleaseRequest,
        ReleaseResponse,
        SessionResponse,
        WaiterView
    ))
)]
struct LockApi;

/// The lock service's OpenAPI 3 document.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    LockApi::openapi()
}
