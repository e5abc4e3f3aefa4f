//! The cache service's client: get, put, delete, coherence views and statistics.
//!
//! Endpoints are `NAME=HOST:PORT` (or bare `HOST:PORT`). A request either names its node (to
//! read or write through that node's local copy) or goes to the current node, moving to the next
//! one when a node cannot be reached. An HTTP error answer is the answer, never failed over.

use crate::ClientError;
use distsync_api::{
    CacheEntry, CachePutRequest, CachePutResponse, CacheStats, CacheTransitions, CoherenceView,
    ErrorBody,
};
use serde::de::DeserializeOwned;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// One cache node's HTTP endpoint.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// Its name, when given as `NAME=HOST:PORT`.
    pub name: Option<String>,
    /// `http://HOST:PORT`.
    pub base: String,
}

/// Parses `NAME=HOST:PORT` or `HOST:PORT`.
pub fn parse_endpoint(text: &str) -> Endpoint {
    let text = text.trim().trim_end_matches('/');
    let (name, addr) = match text.split_once('=') {
        Some((name, addr)) => (Some(name.trim().to_string()), addr.trim()),
        None => (None, text),
    };
    let base = if addr.starts_with("http://") || addr.starts_with("https://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    };
    Endpoint { name, base }
}

/// An HTTP client for a cache cluster.
#[derive(Debug)]
pub struct CacheClient {
    http: reqwest::Client,
    endpoints: Vec<Endpoint>,
    current: AtomicUsize,
    timeout: Duration,
}

impl CacheClient {
    /// A client for `endpoints`.
    pub fn new(endpoints: &[String]) -> Self {
        CacheClient {
            http: crate::failover_http_client(256),
            endpoints: endpoints.iter().map(|e| parse_endpoint(e)).collect(),
            current: AtomicUsize::new(0),
            timeout: Duration::from_secs(10),
        }
    }

    /// The endpoints, in order.
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    fn url(base: &str, key: Option<&str>, suffix: &[&str], path: &str) -> String {
        match key {
            None => format!("{base}{path}"),
            Some(key) => {
                let mut url = reqwest::Url::parse(base).expect("endpoint bases are http URLs");
                {
                    let mut segments = url.path_segments_mut().expect("http URLs have a path");
                    segments.extend(["v1", "cache"]).push(key).extend(suffix);
                }
                url.to_string()
            }
        }
    }

    /// Sends to `node` (by name, or by index with `#N`), or else to the current node with
    /// failover on connection errors. Returns the status and body text.
    async fn call(
        &self,
        method: reqwest::Method,
        node: Option<&str>,
        key: Option<&str>,
        suffix: &[&str],
        path: &str,
        body: Option<&CachePutRequest>,
    ) -> Result<(u16, String), ClientError> {
        let order: Vec<usize> = match node {
            Some(name) => {
                let index = self
                    .endpoints
                    .iter()
                    .position(|e| e.name.as_deref() == Some(name))
                    .ok_or_else(|| {
                        ClientError::Unavailable(format!(
                            "no endpoint named {name:?} (give --endpoints NAME=HOST:PORT,…)"
                        ))
                    })?;
                vec![index]
            }
            None => {
                let start = self.current.load(Ordering::Relaxed);
                (0..self.endpoints.len())
                    .map(|i| (start + i) % self.endpoints.len())
                    .collect()
            }
        };
        let mut last = String::from("no endpoints given");
        for index in order {
            let url = Self::url(&self.endpoints[index].base, key, suffix, path);
            let mut request = self
                .http
                .request(method.clone(), &url)
                .timeout(self.timeout);
            if let Some(body) = body {
                request = request.json(body);
            }
            match request.send().await {
                Ok(response) => {
                    self.current.store(index, Ordering::Relaxed);
                    let status = response.status().as_u16();
                    let text = response
                        .text()
                        .await
                        .map_err(|e| ClientError::Unavailable(format!("{url}: {e}")))?;
                    return Ok((status, text));
                }
                Err(error) => last = format!("{url}: {error}"),
            }
        }
        Err(ClientError::Unavailable(last))
    }

    fn decode<T: DeserializeOwned>(status: u16, text: &str) -> Result<T, ClientError> {
        if (200..300).contains(&status) {
            serde_json::from_str(text)
                .map_err(|e| ClientError::Protocol(format!("undecodable answer ({e}): {text}")))
        } else {
            Err(Self::error(status, text))
        }
    }

    fn error(status: u16, text: &str) -> ClientError {
        match serde_json::from_str::<ErrorBody>(text) {
            Ok(body) => ClientError::Api { status, body },
            Err(_) => ClientError::Protocol(format!("{status}: {text}")),
        }
    }

    /// Reads `key`; `None` when it has no value.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn get(
        &self,
        key: &str,
        node: Option<&str>,
    ) -> Result<Option<CacheEntry>, ClientError> {
        let (status, text) = self
            .call(reqwest::Method::GET, node, Some(key), &[], "", None)
            .await?;
        if status == 404 {
            let error = Self::error(status, &text);
            if let ClientError::Api { body, .. } = &error
                && body.code == distsync_api::ErrorCode::NotFound
            {
                return Ok(None);
            }
            return Err(error);
        }
        Self::decode(status, &text).map(Some)
    }

    /// Writes `value` under `key`.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn put(
        &self,
        key: &str,
        value: &str,
        node: Option<&str>,
    ) -> Result<CachePutResponse, ClientError> {
        let body = CachePutRequest {
            value: value.to_string(),
        };
        let (status, text) = self
            .call(reqwest::Method::PUT, node, Some(key), &[], "", Some(&body))
            .await?;
        Self::decode(status, &text)
    }

    /// Deletes `key`.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn delete(&self, key: &str, node: Option<&str>) -> Result<(), ClientError> {
        let (status, text) = self
            .call(reqwest::Method::DELETE, node, Some(key), &[], "", None)
            .await?;
        if status == 204 {
            Ok(())
        } else {
            Err(Self::error(status, &text))
        }
    }

    /// Every node's state of `key`.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn coherence(
        &self,
        key: &str,
        node: Option<&str>,
    ) -> Result<CoherenceView, ClientError> {
        let (status, text) = self
            .call(
                reqwest::Method::GET,
                node,
                Some(key),
                &["coherence"],
                "",
                None,
            )
            .await?;
        Self::decode(status, &text)
    }

    /// A node's statistics.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn stats(&self, node: Option<&str>) -> Result<CacheStats, ClientError> {
        let (status, text) = self
            .call(reqwest::Method::GET, node, None, &[], "/v1/stats", None)
            .await?;
        Self::decode(status, &text)
    }

    /// A node's line state changes (`GET /v1/internal/transitions`; the node must have been
    /// started with `--test-record-transitions`).
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn transitions(&self, node: Option<&str>) -> Result<CacheTransitions, ClientError> {
        let (status, text) = self
            .call(
                reqwest::Method::GET,
                node,
                None,
                &[],
                "/v1/internal/transitions",
                None,
            )
            .await?;
        Self::decode(status, &text)
    }

    /// Statistics of the endpoint at `index`.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn stats_at(&self, index: usize) -> Result<CacheStats, ClientError> {
        let (status, text) = self.get_path_at(index, "/v1/stats").await?;
        Self::decode(status, &text)
    }

    /// The Prometheus text exposition (`/metrics`) of the endpoint at `index`: the benchmark
    /// reads the per-kind directory message counters there, which `/v1/stats` does not carry.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn metrics_at(&self, index: usize) -> Result<String, ClientError> {
        let (status, text) = self.get_path_at(index, "/metrics").await?;
        if (200..300).contains(&status) {
            Ok(text)
        } else {
            Err(Self::error(status, &text))
        }
    }

    async fn get_path_at(&self, index: usize, path: &str) -> Result<(u16, String), ClientError> {
        let base = &self.endpoints[index].base;
        let url = format!("{base}{path}");
        let response = self
            .http
            .get(&url)
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| ClientError::Unavailable(format!("{url}: {e}")))?;
        let status = response.status().as_u16();
        let text = response
            .text()
            .await
            .map_err(|e| ClientError::Unavailable(format!("{url}: {e}")))?;
        Ok((status, text))
    }
}
