//! Typed Rust clients for distsync: [`Client`] for the lock service, [`queue::QueueClient`] and
//! [`cache::CacheClient`] for the other two. They share [`ClientError`].
//!
//! Lock service:
//! - Any node serves any request (followers forward to the leader); the client rotates through
//!   the endpoints it was given when one is down or answers `no_leader`, and retries with
//!   backoff until a deadline.
//! - Retries are safe: every write carries an `Idempotency-Key`, so a retry after a lost answer
//!   is applied once; acquire and release are idempotent per (session, lock) as well.
//! - A [`Session`] keeps itself alive in the background; a [`LockGuard`] releases its lock when
//!   dropped.
#![warn(missing_docs)]

pub mod cache;
pub mod queue;

use distsync_api::{
    AcquireRequest, AcquireResponse, ClusterStatus, CreateSessionRequest, ErrorBody, ErrorCode,
    IDEMPOTENCY_KEY_HEADER, LEADER_HEADER, LockMode, LockState, ReleaseRequest, ReleaseResponse,
    SessionResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The service answered with an error.
    #[error("{status}: {} ({:?})", body.message, body.code)]
    Api {
        /// HTTP status.
        status: u16,
        /// The error body.
        body: ErrorBody,
    },
    /// No endpoint could be reached (within the retry deadline, where the client retries), or a
    /// request named a node the client was not given.
    #[error("no endpoint reachable: {0}")]
    Unavailable(String),
    /// The answer was not what the API promises.
    #[error("unexpected answer: {0}")]
    Protocol(String),
}

impl ClientError {
    /// The API error code, if the service answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Api { body, .. } => Some(body.code),
            _ => None,
        }
    }
}

/// The HTTP client of the queue and cache clients: a short connect timeout, so a node that is
/// down costs little before the next one is tried, and up to `idle_per_host` kept connections.
fn failover_http_client(idle_per_host: usize) -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_millis(500))
        .pool_max_idle_per_host(idle_per_host)
        .build()
        .expect("a client without TLS or proxies always builds")
}

/// Client settings.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// `host:port` of every node to try.
    pub endpoints: Vec<String>,
    /// How long one call keeps retrying unavailable endpoints.
    pub retry_deadline: Duration,
    /// Per-request timeout on top of any `wait_ms`.
    pub request_timeout: Duration,
}

impl ClientConfig {
    /// Defaults: retry for 10 s, 5 s per request.
    pub fn new(endpoints: impl IntoIterator<Item = impl Into<String>>) -> Self {
        ClientConfig {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            retry_deadline: Duration::from_secs(10),
            request_timeout: Duration::from_secs(5),
        }
    }
}

/// A handle to the lock service. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    http: reqwest::Client,
    config: ClientConfig,
    /// The endpoint that answered last; tried first next time.
    preferred: AtomicUsize,
    key_prefix: String,
    key_counter: AtomicU64,
}

impl Client {
    /// A client for the given endpoints.
    ///
    /// # Errors
    /// [`ClientError::Protocol`] when no endpoint is given or the HTTP client cannot be built.
    pub fn new(config: ClientConfig) -> Result<Self, ClientError> {
        if config.endpoints.is_empty() {
            return Err(ClientError::Protocol("no endpoint given".into()));
        }
        let http = reqwest::Client::builder()
            .pool_idle_timeout(Duration::from_secs(30))
            .tcp_nodelay(true)
            .build()
            .map_err(|error| ClientError::Protocol(error.to_string()))?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos());
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                config,
                preferred: AtomicUsize::new(0),
                key_prefix: format!("c{}-{nanos:x}", std::process::id()),
                key_counter: AtomicU64::new(0),
            }),
        })
    }

    fn new_idempotency_key(&self) -> String {
        let n = self.inner.key_counter.fetch_add(1, Ordering::Relaxed);
        format!("{}-{n}", self.inner.key_prefix)
    }

    /// Sends one request, rotating endpoints and retrying while the service is unavailable.
    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&B>,
        idempotency_key: Option<&str>,
        extra_timeout: Duration,
    ) -> Result<T, ClientError> {
        let deadline = tokio::time::Instant::now() + self.inner.config.retry_deadline;
        let endpoints = &self.inner.config.endpoints;
        let mut attempt = 0usize;
        let mut backoff = Duration::from_millis(20);
        let mut last_error;
        loop {
            let index = (self.inner.preferred.load(Ordering::Relaxed) + attempt) % endpoints.len();
            let url = format!("http://{}{}", endpoints[index], path);
            let mut request = self
                .inner
                .http
                .request(method.clone(), &url)
                .timeout(self.inner.config.request_timeout + extra_timeout);
            if let Some(body) = body {
                request = request.json(body);
            }
            if let Some(key) = idempotency_key {
                request = request.header(IDEMPOTENCY_KEY_HEADER, key);
            }
            match request.send().await {
                Ok(response) => {
                    let status = response.status();
                    let leader = response
                        .headers()
                        .get(LEADER_HEADER)
                        .and_then(|value| value.to_str().ok())
                        .and_then(|leader| endpoints.iter().position(|e| e == leader));
                    let bytes = response
                        .bytes()
                        .await
                        .map_err(|error| ClientError::Protocol(error.to_string()));
                    match bytes {
                        Ok(bytes) if status.is_success() => {
                            // A follower relayed this to the leader and named it: go there
                            // directly next time.
                            self.inner
                                .preferred
                                .store(leader.unwrap_or(index), Ordering::Relaxed);
                            let text = if bytes.is_empty() {
                                &b"null"[..]
                            } else {
                                &bytes[..]
                            };
                            return serde_json::from_slice(text)
                                .map_err(|error| ClientError::Protocol(error.to_string()));
                        }
                        Ok(bytes) => {
                            let body: ErrorBody = serde_json::from_slice(&bytes).map_err(|_| {
                                ClientError::Protocol(format!(
                                    "{status} with a non-JSON body: {}",
                                    String::from_utf8_lossy(&bytes)
                                ))
                            })?;
                            if body.code != ErrorCode::NoLeader {
                                return Err(ClientError::Api {
                                    status: status.as_u16(),
                                    body,
                                });
                            }
                            last_error = body.message;
                        }
                        Err(error) => last_error = error.to_string(),
                    }
                }
                Err(error) => last_error = error.to_string(),
            }
            attempt += 1;
            if tokio::time::Instant::now() + backoff > deadline {
                return Err(ClientError::Unavailable(last_error));
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(500));
        }
    }

    /// Creates a session with `ttl` and keeps it alive in the background every `ttl / 3`.
    ///
    /// # Errors
    /// As any call.
    pub async fn create_session(&self, ttl: Duration) -> Result<Session, ClientError> {
        let key = self.new_idempotency_key();
        let response: SessionResponse = self
            .call(
                reqwest::Method::POST,
                "/v1/sessions",
                Some(&CreateSessionRequest {
                    ttl_ms: ttl.as_millis() as u64,
                }),
                Some(&key),
                Duration::ZERO,
            )
            .await?;
        Ok(Session::start(self.clone(), response.session_id, ttl))
    }

    /// Extends a session's TTL.
    ///
    /// # Errors
    /// `session_not_found` when it expired or was closed.
    pub async fn keep_alive(&self, session_id: u64) -> Result<SessionResponse, ClientError> {
        self.call::<(), _>(
            reqwest::Method::POST,
            &format!("/v1/sessions/{session_id}/keepalive"),
            None,
            None,
            Duration::ZERO,
        )
        .await
    }

    /// Closes a session, releasing its locks.
    ///
    /// # Errors
    /// As any call.
    pub async fn close_session(&self, session_id: u64) -> Result<(), ClientError> {
        let key = self.new_idempotency_key();
        self.call::<(), serde_json::Value>(
            reqwest::Method::DELETE,
            &format!("/v1/sessions/{session_id}"),
            None,
            Some(&key),
            Duration::ZERO,
        )
        .await
        .map(|_| ())
    }

    /// Acquires `name` for a session, waiting up to `wait` (zero: try-lock).
    ///
    /// # Errors
    /// `timeout`, `deadlock` (with the cycle), `session_not_found`, `invalid_request`.
    pub async fn acquire(
        &self,
        session_id: u64,
        name: &str,
        mode: LockMode,
        wait: Duration,
    ) -> Result<AcquireResponse, ClientError> {
        let request = AcquireRequest {
            session_id,
            mode,
            wait_ms: wait.as_millis() as u64,
        };
        self.call(
            reqwest::Method::POST,
            &format!("/v1/locks/{name}/acquire"),
            Some(&request),
            None,
            wait,
        )
        .await
    }

    /// Releases `name` held by a session (only the hold with `fencing_token`, when given).
    ///
    /// # Errors
    /// `not_held`, `session_not_found`.
    pub async fn release(
        &self,
        session_id: u64,
        name: &str,
        fencing_token: Option<u64>,
    ) -> Result<ReleaseResponse, ClientError> {
        // With the token, a retry is recognised by the service itself (the session remembers
        // its last releases); without it, an idempotency key makes the retry apply once.
        let key = fencing_token.is_none().then(|| self.new_idempotency_key());
        self.call(
            reqwest::Method::POST,
            &format!("/v1/locks/{name}/release"),
            Some(&ReleaseRequest {
                session_id,
                fencing_token,
            }),
            key.as_deref(),
            Duration::ZERO,
        )
        .await
    }

    /// Holders and waiters of `name`, linearizable.
    ///
    /// # Errors
    /// As any call.
    pub async fn lock_state(&self, name: &str) -> Result<LockState, ClientError> {
        self.call::<(), _>(
            reqwest::Method::GET,
            &format!("/v1/locks/{name}"),
            None,
            None,
            Duration::ZERO,
        )
        .await
    }

    /// The view of the node at `endpoint` (no retry on other nodes).
    ///
    /// # Errors
    /// When that node cannot be reached.
    pub async fn cluster_status_of(&self, endpoint: &str) -> Result<ClusterStatus, ClientError> {
        let url = format!("http://{endpoint}/v1/cluster");
        let response = self
            .inner
            .http
            .get(&url)
            .timeout(self.inner.config.request_timeout)
            .send()
            .await
            .map_err(|error| ClientError::Unavailable(error.to_string()))?;
        response
            .json()
            .await
            .map_err(|error| ClientError::Protocol(error.to_string()))
    }

    /// The endpoints this client uses.
    pub fn endpoints(&self) -> &[String] {
        &self.inner.config.endpoints
    }
}

/// A session kept alive in the background until closed or dropped.
#[derive(Debug)]
pub struct Session {
    client: Client,
    id: u64,
    keepalive: JoinHandle<()>,
    lost: watch::Receiver<bool>,
}

impl Session {
    fn start(client: Client, id: u64, ttl: Duration) -> Self {
        let (lost_tx, lost) = watch::channel(false);
        let keepalive_client = client.clone();
        let keepalive = tokio::spawn(async move {
            let period = (ttl / 3).max(Duration::from_millis(50));
            loop {
                tokio::time::sleep(period).await;
                match keepalive_client.keep_alive(id).await {
                    Ok(_) => {}
                    Err(error) if error.code() == Some(ErrorCode::SessionNotFound) => {
                        tracing::warn!(session = id, "session expired");
                        let _ = lost_tx.send(true);
                        return;
                    }
                    Err(error) => {
                        tracing::debug!(session = id, %error, "keep-alive failed; retrying")
                    }
                }
            }
        });
        Session {
            client,
            id,
            keepalive,
            lost,
        }
    }

    /// The session id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Whether the service reported the session gone (every lock it held is released).
    pub fn is_lost(&self) -> bool {
        *self.lost.borrow()
    }

    /// Acquires `name`, returning a guard that releases it on drop.
    ///
    /// # Errors
    /// As [`Client::acquire`].
    pub async fn lock(
        &self,
        name: &str,
        mode: LockMode,
        wait: Duration,
    ) -> Result<LockGuard, ClientError> {
        let grant = self.client.acquire(self.id, name, mode, wait).await?;
        Ok(LockGuard {
            client: self.client.clone(),
            session_id: self.id,
            name: grant.name,
            mode: grant.mode,
            fencing_token: grant.fencing_token,
            released: false,
        })
    }

    /// Closes the session, releasing every lock it holds.
    ///
    /// # Errors
    /// As any call.
    pub async fn close(self) -> Result<(), ClientError> {
        self.keepalive.abort();
        self.client.close_session(self.id).await
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.keepalive.abort();
    }
}

/// A held lock; released when dropped (in the background) or by [`LockGuard::release`].
#[derive(Debug)]
pub struct LockGuard {
    client: Client,
    session_id: u64,
    name: String,
    mode: LockMode,
    fencing_token: u64,
    released: bool,
}

impl LockGuard {
    /// The fencing token: hand it to the protected resource with every request.
    pub fn fencing_token(&self) -> u64 {
        self.fencing_token
    }

    /// The mode held.
    pub fn mode(&self) -> LockMode {
        self.mode
    }

    /// The lock's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Releases the lock now and reports the outcome.
    ///
    /// # Errors
    /// `not_held` when the session lost it meanwhile (it expired).
    pub async fn release(mut self) -> Result<(), ClientError> {
        self.released = true;
        self.client
            .release(self.session_id, &self.name, Some(self.fencing_token))
            .await
            .map(|_| ())
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        let client = self.client.clone();
        let (session, name, token) = (self.session_id, self.name.clone(), self.fencing_token);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(error) = client.release(session, &name, Some(token)).await {
                    tracing::debug!(%error, lock = %name, "release on drop failed");
                }
            });
        }
    }
}
