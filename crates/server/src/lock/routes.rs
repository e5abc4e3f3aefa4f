//! HTTP handlers of the lock service. They validate, call the Raft group, and map errors; the
//! lock semantics live in `distsync-lock`.

use super::LockService;
use super::forward::{forward_to_leader, post_to_leader};
use super::state_machine::LockReply;
use crate::http::{ApiError, Json, metrics_response, with_common_routes};
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use distsync_api::{
    AcquireRequest, AcquireResponse, AddMemberRequest, ClusterStatus, CreateSessionRequest,
    ErrorBody, ErrorCode, HolderView, IDEMPOTENCY_KEY_HEADER, LockMode as ApiMode, LockState,
    MemberView, ReleaseRequest, ReleaseResponse, SessionResponse, WaiterView,
};
use distsync_lock::{
    FencingToken, IdempotencyKey, LockCommand, LockError, LockMode, LockName, RequestTag,
    Response as Outcome, SessionId,
};
use distsync_raft::Role;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The lock service's routes, plus health, readiness and metrics.
pub fn router(service: Arc<LockService>) -> Router {
    let forwarded = Router::new()
        .route("/v1/sessions", post(create_session))
        .route("/v1/sessions/{id}/keepalive", post(keep_alive))
        .route("/v1/sessions/{id}", delete(close_session))
        .route("/v1/locks/{name}/acquire", post(acquire))
        .route("/v1/locks/{name}/release", post(release))
        .route("/v1/locks/{name}", get(lock_state))
        .route("/v1/cluster/members", post(add_member))
        .route("/v1/cluster/members/{id}", delete(remove_member))
        .route(ABANDON_PATH, post(abandon))
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::clone(&service),
            forward_to_leader,
        ));
    let routes = Router::new()
        .merge(forwarded)
        .route("/v1/cluster", get(cluster_status))
        .route("/v1/admin/crash", post(crash))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics));
    with_common_routes(routes).with_state(service)
}

type ApiResult<T> = Result<T, ApiError>;

fn parse_name(name: &str) -> ApiResult<LockName> {
    LockName::new(name).map_err(ApiError::from)
}

fn idempotency_key(headers: &HeaderMap) -> ApiResult<Option<IdempotencyKey>> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY_HEADER) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| ApiError::invalid("Idempotency-Key must be visible ASCII"))?;
    IdempotencyKey::new(text).map(Some).map_err(ApiError::from)
}

fn to_core_mode(mode: ApiMode) -> LockMode {
    match mode {
        ApiMode::Shared => LockMode::Shared,
        ApiMode::Exclusive => LockMode::Exclusive,
    }
}

fn to_api_mode(mode: LockMode) -> ApiMode {
    match mode {
        LockMode::Shared => ApiMode::Shared,
        LockMode::Exclusive => ApiMode::Exclusive,
    }
}

/// Proposes `command` and waits for its outcome, at most the commit timeout: a node cut off from
/// the majority answers `no_leader` rather than hanging.
async fn propose_reply(service: &LockService, command: LockCommand) -> ApiResult<LockReply> {
    let proposal = service.raft.propose(command.encode());
    match tokio::time::timeout(service.commit_timeout, proposal).await {
        Ok(Ok(reply)) => Ok(reply),
        Ok(Err(error)) => Err(error.into()),
        Err(_) => Err(ApiError::new(
            ErrorCode::NoLeader,
            format!(
                "not committed within {:?}: this node cannot reach a majority; retry",
                service.commit_timeout
            ),
        )),
    }
}

async fn propose(service: &LockService, command: LockCommand) -> ApiResult<Outcome> {
    Ok(propose_reply(service, command).await?.outcome?)
}

/// Undoes an acquire whose answer never reached its client (the client went away, or the
/// proposal's fate is unknown because it did not commit in time): otherwise a queued wait would
/// later be granted to a session whose client was told it failed, or a grant made meanwhile
/// would stay held, and the lock with it. It proposes `Abandon` with the request's tag, which
/// withdraws the wait, releases the hold the request was granted, or turns an upgrade back into
/// the shared hold it replaced — unless a later request (the client's retry) was answered with
/// that wait or hold, or the hold predates the request. A request the table answered (granted,
/// refused, queued and then told) disarms it: its client knows where it stands.
struct Abandonment {
    service: Arc<LockService>,
    session: SessionId,
    name: LockName,
    tag: RequestTag,
    armed: bool,
}

impl Abandonment {
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for Abandonment {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let service = Arc::clone(&self.service);
        let abandon = AbandonRequest {
            session_id: self.session.0,
            name: self.name.as_str().to_owned(),
            tag: self.tag,
        };
        tokio::spawn(async move {
            // The wait or grant lives as long as the session, which its client may keep alive:
            // keep trying through elections and partitions, then give up loudly.
            let deadline = tokio::time::Instant::now() + ABANDON_GIVE_UP_AFTER;
            let mut pause = ABANDON_RETRY_MIN;
            loop {
                match abandon_through_leader(&service, &abandon).await {
                    Ok(()) => return,
                    Err(error) if error.body.code != ErrorCode::NoLeader => {
                        tracing::warn!(?abandon, %error.body.message, "abandoning an acquire failed");
                        return;
                    }
                    Err(_) => {}
                }
                if tokio::time::Instant::now() + pause > deadline {
                    tracing::warn!(
                        ?abandon,
                        "could not withdraw an abandoned acquire: no leader reached"
                    );
                    return;
                }
                // A retry policy, not a synchronisation: an election may take a while, and a
                // cut-off node hears of the new leader only once the partition heals.
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(ABANDON_RETRY_MAX);
            }
        });
    }
}

/// Proposes the abandonment here if this node leads, or has the leader propose it: leadership
/// may have moved since the acquire was proposed, and the request may still commit (or have
/// committed) under the new leader.
async fn abandon_through_leader(service: &LockService, abandon: &AbandonRequest) -> ApiResult<()> {
    let status = service.raft.status();
    if status.is_leader() {
        return propose_abandon(service, abandon).await;
    }
    match status.leader_http() {
        Some(leader) => post_to_leader(service, leader, ABANDON_PATH, abandon).await,
        None => Err(ApiError::new(ErrorCode::NoLeader, "no leader is known")),
    }
}

const ABANDON_RETRY_MIN: Duration = Duration::from_millis(100);
const ABANDON_RETRY_MAX: Duration = Duration::from_secs(2);
const ABANDON_GIVE_UP_AFTER: Duration = Duration::from_secs(120);

/// Node to node only (so not in the OpenAPI document): a node whose acquire was abandoned
/// after leadership moved asks the leader to withdraw it.
const ABANDON_PATH: &str = "/v1/internal/abandon";

/// An acquire to withdraw, named by the tag its node gave it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AbandonRequest {
    session_id: u64,
    name: String,
    tag: RequestTag,
}

async fn abandon(
    State(service): State<Arc<LockService>>,
    Json(request): Json<AbandonRequest>,
) -> ApiResult<StatusCode> {
    propose_abandon(&service, &request).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn propose_abandon(service: &LockService, abandon: &AbandonRequest) -> ApiResult<()> {
    let command = LockCommand::Abandon {
        session: SessionId(abandon.session_id),
        name: parse_name(&abandon.name)?,
        tag: abandon.tag,
    };
    propose(service, command).await.map(drop)
}

fn unexpected(outcome: &Outcome) -> ApiError {
    ApiError::internal(format!("unexpected outcome {outcome:?}"))
}

#[utoipa::path(post, path = "/v1/sessions", tag = "locks",
    request_body = CreateSessionRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retry apply once")),
    responses(
        (status = 201, body = SessionResponse),
        (status = 400, body = ErrorBody, description = "invalid_request: bad body or TTL out of range"),
        (status = 503, body = ErrorBody, description = "no_leader"),
    ))]
async fn create_session(
    State(service): State<Arc<LockService>>,
    headers: HeaderMap,
    Json(request): Json<CreateSessionRequest>,
) -> ApiResult<Response> {
    let command = LockCommand::CreateSession {
        ttl_ms: request.ttl_ms,
        idempotency_key: idempotency_key(&headers)?,
    };
    match propose(&service, command).await? {
        Outcome::SessionCreated { session, ttl_ms } => Ok((
            StatusCode::CREATED,
            Json(SessionResponse {
                session_id: session.0,
                ttl_ms,
            }),
        )
            .into_response()),
        other => Err(unexpected(&other)),
    }
}

#[utoipa::path(post, path = "/v1/sessions/{id}/keepalive", tag = "locks",
    params(("id" = u64, Path, description = "Session id")),
    responses(
        (status = 200, body = SessionResponse),
        (status = 404, body = ErrorBody, description = "session_not_found"),
        (status = 503, body = ErrorBody, description = "no_leader"),
    ))]
async fn keep_alive(
    State(service): State<Arc<LockService>>,
    Path(id): Path<u64>,
) -> ApiResult<Json<SessionResponse>> {
    let session = SessionId(id);
    // A leadership barrier first (ReadIndex): the leader has applied everything committed before
    // this request, including an expiry or close a previous leader committed, and still leads.
    let barrier = service.raft.read(|_| ());
    tokio::time::timeout(service.commit_timeout, barrier)
        .await
        .map_err(|_| ApiError::new(ErrorCode::NoLeader, "leadership not confirmed; retry"))??;
    let ttl = service
        .raft
        .with_local(move |state, status| {
            if status.role != Role::Leader {
                return Err(ApiError::new(
                    ErrorCode::NoLeader,
                    "leadership moved; retry",
                ));
            }
            state
                .keep_alive(session, Instant::now())
                .ok_or_else(|| ApiError::from(LockError::SessionNotFound(session)))
        })
        .await??;
    Ok(Json(SessionResponse {
        session_id: id,
        ttl_ms: ttl,
    }))
}

#[utoipa::path(delete, path = "/v1/sessions/{id}", tag = "locks",
    params(("id" = u64, Path, description = "Session id"),
           ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry apply once")),
    responses(
        (status = 204, description = "Closed; its locks were released and its waits cancelled"),
        (status = 404, body = ErrorBody, description = "session_not_found"),
        (status = 503, body = ErrorBody, description = "no_leader"),
    ))]
async fn close_session(
    State(service): State<Arc<LockService>>,
    headers: HeaderMap,
    Path(id): Path<u64>,
) -> ApiResult<StatusCode> {
    let command = LockCommand::CloseSession {
        session: SessionId(id),
        idempotency_key: idempotency_key(&headers)?,
    };
    match propose(&service, command).await? {
        Outcome::SessionClosed { .. } => Ok(StatusCode::NO_CONTENT),
        other => Err(unexpected(&other)),
    }
}

#[utoipa::path(post, path = "/v1/locks/{name}/acquire", tag = "locks",
    request_body = AcquireRequest,
    params(("name" = String, Path, description = "Lock name: 1–256 bytes of [A-Za-z0-9._:-]"),
           ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry apply once")),
    responses(
        (status = 200, body = AcquireResponse),
        (status = 400, body = ErrorBody, description = "invalid_request: bad name, mode or body"),
        (status = 404, body = ErrorBody, description = "session_not_found"),
        (status = 408, body = ErrorBody, description = "timeout: not granted within wait_ms; the wait was withdrawn"),
        (status = 409, body = ErrorBody, description = "deadlock, with the cycle"),
        (status = 503, body = ErrorBody, description = "no_leader"),
    ))]
async fn acquire(
    State(service): State<Arc<LockService>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Json(request): Json<AcquireRequest>,
) -> ApiResult<Json<AcquireResponse>> {
    let started = Instant::now();
    let name = parse_name(&name)?;
    let session = SessionId(request.session_id);
    let mode = to_core_mode(request.mode);
    let wait = Duration::from_millis(request.wait_ms);
    let tag = service.request_tags.next();
    let command = LockCommand::Acquire {
        session,
        name: name.clone(),
        mode,
        wait: request.wait_ms > 0,
        idempotency_key: idempotency_key(&headers)?,
        tag,
    };
    // From here on the request may queue a wait or be granted: undo that if it ends without
    // its answer (a try-lock too: a grant its client never heard of would stay held).
    let withdrawal = Abandonment {
        service: Arc::clone(&service),
        session,
        name: name.clone(),
        tag,
        armed: true,
    };
    // An error here leaves the command's fate unknown (it may still commit): stay armed.
    let reply = propose_reply(&service, command).await?;
    let outcome = match reply.outcome {
        Ok(outcome) => outcome,
        Err(refused) => {
            withdrawal.disarm();
            return Err(refused.into());
        }
    };
    let grant = match (outcome, reply.wait) {
        (Outcome::Granted(grant), _) => grant,
        (Outcome::NotGranted, _) => {
            withdrawal.disarm();
            return Err(timeout_error(&name, request.wait_ms));
        }
        (Outcome::Waiting { .. }, Some(granted)) => {
            let remaining = wait.saturating_sub(started.elapsed());
            match tokio::time::timeout(remaining, granted).await {
                Ok(Ok(Ok(grant))) => grant,
                Ok(Ok(Err(error))) => {
                    withdrawal.disarm();
                    return Err(error.into());
                }
                Ok(Err(_)) | Err(_) => {
                    cancel_wait(&service, session, &name, request.wait_ms).await?
                }
            }
        }
        (other, _) => return Err(unexpected(&other)),
    };
    withdrawal.disarm();
    service
        .metrics
        .lock
        .acquire_seconds
        .observe(started.elapsed().as_secs_f64());
    Ok(Json(AcquireResponse {
        name: grant.name.as_str().to_string(),
        mode: to_api_mode(grant.mode),
        fencing_token: grant.token.0,
    }))
}

/// The wait ran out: withdraw it through the log. If the grant won the race, report the grant
/// (answering 408 would leave a hold nobody knows about).
async fn cancel_wait(
    service: &LockService,
    session: SessionId,
    name: &LockName,
    wait_ms: u64,
) -> ApiResult<distsync_lock::Grant> {
    let command = LockCommand::CancelWait {
        session,
        name: name.clone(),
    };
    match propose(service, command).await? {
        Outcome::Granted(grant) => Ok(grant),
        Outcome::WaitCancelled | Outcome::NotWaiting => {
            service.metrics.lock.wait_timeouts.inc();
            Err(timeout_error(name, wait_ms))
        }
        other => Err(unexpected(&other)),
    }
}

fn timeout_error(name: &LockName, wait_ms: u64) -> ApiError {
    ApiError::new(
        ErrorCode::Timeout,
        format!("lock {name} was not granted within {wait_ms} ms"),
    )
}

#[utoipa::path(post, path = "/v1/locks/{name}/release", tag = "locks",
    request_body = ReleaseRequest,
    params(("name" = String, Path, description = "Lock name"),
           ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry apply once")),
    responses(
        (status = 200, body = ReleaseResponse),
        (status = 404, body = ErrorBody, description = "session_not_found"),
        (status = 409, body = ErrorBody, description = "not_held (or a stale fencing token)"),
        (status = 503, body = ErrorBody, description = "no_leader"),
    ))]
async fn release(
    State(service): State<Arc<LockService>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Json(request): Json<ReleaseRequest>,
) -> ApiResult<Json<ReleaseResponse>> {
    let name = parse_name(&name)?;
    let command = LockCommand::Release {
        session: SessionId(request.session_id),
        name,
        token: request.fencing_token.map(FencingToken),
        idempotency_key: idempotency_key(&headers)?,
    };
    match propose(&service, command).await? {
        Outcome::Released { name, token } => Ok(Json(ReleaseResponse {
            name: name.as_str().to_string(),
            fencing_token: token.0,
        })),
        other => Err(unexpected(&other)),
    }
}

#[utoipa::path(get, path = "/v1/locks/{name}", tag = "locks",
    params(("name" = String, Path, description = "Lock name")),
    responses(
        (status = 200, body = LockState, description = "Linearizable: reflects every grant and release committed before the request"),
        (status = 400, body = ErrorBody, description = "invalid_request: bad name"),
        (status = 503, body = ErrorBody, description = "no_leader"),
    ))]
async fn lock_state(
    State(service): State<Arc<LockService>>,
    Path(name): Path<String>,
) -> ApiResult<Json<LockState>> {
    let name = parse_name(&name)?;
    let read = service.raft.read(move |state| state.table().lock(&name));
    let info = tokio::time::timeout(service.commit_timeout, read)
        .await
        .map_err(|_| {
            ApiError::new(
                ErrorCode::NoLeader,
                "read not confirmed by a majority; retry",
            )
        })??;
    Ok(Json(LockState {
        name: info.name.as_str().to_string(),
        holders: info
            .holders
            .iter()
            .map(|holder| HolderView {
                session_id: holder.session.0,
                mode: to_api_mode(holder.mode),
                fencing_token: holder.token.0,
            })
            .collect(),
        waiters: info
            .waiters
            .iter()
            .map(|waiter| WaiterView {
                session_id: waiter.session.0,
                mode: to_api_mode(waiter.mode),
            })
            .collect(),
    }))
}

#[utoipa::path(get, path = "/v1/cluster", tag = "cluster",
    responses((status = 200, body = ClusterStatus, description = "The answering node's own view")))]
async fn cluster_status(State(service): State<Arc<LockService>>) -> Json<ClusterStatus> {
    let status = service.raft.status();
    let role = match status.role {
        Role::Leader => "leader",
        Role::Follower => "follower",
        Role::Candidate => "candidate",
        Role::PreCandidate => "pre_candidate",
    };
    let members = status
        .membership
        .members()
        .map(|id| {
            let address = status.addresses.get(&id.0);
            MemberView {
                id: id.0,
                http_addr: address.map(|address| address.http.clone()),
                raft_addr: address.map(|address| address.raft.clone()),
                voter: status.membership.is_voter(id),
            }
        })
        .collect();
    Json(ClusterStatus {
        id: status.id,
        role: role.to_string(),
        term: status.term,
        leader_id: status.leader,
        commit_index: status.commit,
        applied_index: status.applied,
        members,
    })
}

#[utoipa::path(post, path = "/v1/cluster/members", tag = "cluster",
    request_body = AddMemberRequest,
    responses(
        (status = 200, body = ClusterStatus, description = "Added as a voter after catching up"),
        (status = 409, body = ErrorBody, description = "membership_change_rejected"),
        (status = 503, body = ErrorBody, description = "no_leader"),
    ))]
async fn add_member(
    State(service): State<Arc<LockService>>,
    Json(request): Json<AddMemberRequest>,
) -> ApiResult<Json<ClusterStatus>> {
    if request.id == 0 {
        return Err(ApiError::invalid("node id 0 is reserved"));
    }
    let address = crate::raft::MemberAddress {
        http: request.http_addr,
        raft: request.raft_addr,
    };
    service
        .raft
        .add_member(request.id, address, Duration::from_secs(30))
        .await?;
    Ok(cluster_status(State(service)).await)
}

#[utoipa::path(delete, path = "/v1/cluster/members/{id}", tag = "cluster",
    params(("id" = u64, Path, description = "Node id")),
    responses(
        (status = 200, body = ClusterStatus),
        (status = 409, body = ErrorBody, description = "membership_change_rejected"),
        (status = 503, body = ErrorBody, description = "no_leader"),
    ))]
async fn remove_member(
    State(service): State<Arc<LockService>>,
    Path(id): Path<u64>,
) -> ApiResult<Json<ClusterStatus>> {
    service.raft.remove_member(id).await?;
    Ok(cluster_status(State(service)).await)
}

/// How long a crash waits after answering, so the answer leaves before the process dies.
const CRASH_ANSWER_GRACE: Duration = Duration::from_millis(100);

#[utoipa::path(post, path = "/v1/admin/crash", tag = "admin",
    responses(
        (status = 202, description = "The process aborts right after this answer (no clean shutdown)"),
        (status = 403, body = ErrorBody, description = "forbidden: the node runs without --allow-fault-injection"),
    ))]
async fn crash(State(service): State<Arc<LockService>>) -> ApiResult<Response> {
    if !service.allow_fault_injection {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "fault injection is disabled on this node; start it with --allow-fault-injection \
             (DISTSYNC_ALLOW_FAULT_INJECTION=true)",
        ));
    }
    let status = service.raft.status();
    tracing::warn!(
        node = status.id,
        role = ?status.role,
        term = status.term,
        "POST /v1/admin/crash: aborting the process"
    );
    // A crash, not a shutdown: no graceful close of connections or of the Raft driver, exactly
    // what a killed process leaves behind. The delay only lets the 202 reach the caller.
    tokio::spawn(async {
        tokio::time::sleep(CRASH_ANSWER_GRACE).await;
        std::process::abort();
    });
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({"node": status.id, "term": status.term, "crashing": true})),
    )
        .into_response())
}

/// Ready once the node knows a leader and has applied everything it knows committed.
async fn readyz(State(service): State<Arc<LockService>>) -> Response {
    let status = service.raft.status();
    if status.running && status.leader.is_some() && status.applied >= status.commit {
        Json(serde_json::json!({"status": "ready", "leader_id": status.leader})).into_response()
    } else {
        ApiError::new(
            ErrorCode::NoLeader,
            format!(
                "not ready: leader {:?}, applied {} of {} committed",
                status.leader, status.applied, status.commit
            ),
        )
        .into_response()
    }
}

async fn metrics(State(service): State<Arc<LockService>>) -> Response {
    metrics_response(service.metrics.render())
}
