//! The queue service's client: publish, receive, ack, nack, statistics and a consumer loop.
//!
//! Any queue node serves any request, so the client keeps a list of nodes and moves to the
//! next one when a node cannot be reached. Only connection failures fail over; an HTTP error
//! answer (4xx, or 503 `shard_unavailable`) is the answer.

use crate::ClientError;
use distsync_api::{
    AckRequest, AckResponse, ErrorBody, NackRequest, NackResponse, PublishMessage, PublishRequest,
    PublishResponse, QueueStats, ReceiveRequest, ReceiveResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// How a consumer loop ([`QueueClient::consume`]) starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// First the messages still pending under this consumer's name (from a run that died
    /// before acking them), then new ones: the receives carry `resume` until the consumer's own
    /// pending messages are drained. Only when one process at a time uses the consumer name.
    Resume,
    /// Plain receives: messages pending from an earlier run come back after their visibility
    /// timeout, to any consumer of the group. For several processes sharing one consumer name.
    Fresh,
}

/// An HTTP client for one or more equivalent queue nodes.
#[derive(Debug)]
pub struct QueueClient {
    http: reqwest::Client,
    nodes: Vec<String>,
    current: AtomicUsize,
}

impl QueueClient {
    /// A client for `nodes` (`host:port` or `http://host:port`), tried in turn.
    pub fn new(nodes: &[String]) -> Self {
        let nodes = nodes
            .iter()
            .map(|n| {
                let n = n.trim().trim_end_matches('/');
                if n.starts_with("http://") || n.starts_with("https://") {
                    n.to_owned()
                } else {
                    format!("http://{n}")
                }
            })
            .collect();
        QueueClient {
            http: crate::failover_http_client(64),
            nodes,
            current: AtomicUsize::new(0),
        }
    }

    /// Sends `body` to `path` on the current node, failing over to the others on connection
    /// errors. `timeout` bounds one attempt.
    async fn call<B: Serialize, R: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&B>,
        timeout: Duration,
    ) -> Result<R, ClientError> {
        let mut last = String::new();
        let start = self.current.load(Ordering::Relaxed);
        for attempt in 0..self.nodes.len() {
            let index = (start + attempt) % self.nodes.len();
            let mut request = self
                .http
                .request(method.clone(), format!("{}{path}", self.nodes[index]))
                .timeout(timeout);
            if let Some(body) = body {
                request = request.json(body);
            }
            match request.send().await {
                Ok(response) => {
                    self.current.store(index, Ordering::Relaxed);
                    let status = response.status();
                    let bytes = response
                        .bytes()
                        .await
                        .map_err(|e| ClientError::Unavailable(e.to_string()))?;
                    if status.is_success() {
                        return serde_json::from_slice(&bytes).map_err(|e| {
                            ClientError::Protocol(format!(
                                "bad answer from {}: {e}",
                                self.nodes[index]
                            ))
                        });
                    }
                    let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                        ErrorBody::new(
                            distsync_api::ErrorCode::Internal,
                            String::from_utf8_lossy(&bytes).into_owned(),
                        )
                    });
                    return Err(ClientError::Api {
                        status: status.as_u16(),
                        body,
                    });
                }
                Err(error) => {
                    last = format!("{}: {error}", self.nodes[index]);
                }
            }
        }
        Err(ClientError::Unavailable(last))
    }

    /// Publishes messages; returns their ids.
    ///
    /// # Errors
    ///
    /// See [`ClientError`].
    pub async fn publish(
        &self,
        queue: &str,
        messages: Vec<PublishMessage>,
    ) -> Result<Vec<String>, ClientError> {
        let response: PublishResponse = self
            .call(
                reqwest::Method::POST,
                &format!("/v1/queues/{queue}/messages"),
                Some(&PublishRequest { messages }),
                Duration::from_secs(10),
            )
            .await?;
        Ok(response.ids)
    }

    /// Receives messages (long-polling up to `request.wait_ms`).
    ///
    /// # Errors
    ///
    /// See [`ClientError`].
    pub async fn receive(
        &self,
        queue: &str,
        request: &ReceiveRequest,
    ) -> Result<ReceiveResponse, ClientError> {
        self.call(
            reqwest::Method::POST,
            &format!("/v1/queues/{queue}/receive"),
            Some(request),
            Duration::from_millis(request.wait_ms) + Duration::from_secs(10),
        )
        .await
    }

    /// Acknowledges deliveries.
    ///
    /// # Errors
    ///
    /// See [`ClientError`].
    pub async fn ack(
        &self,
        queue: &str,
        group: &str,
        receipts: Vec<String>,
    ) -> Result<u64, ClientError> {
        let response: AckResponse = self
            .call(
                reqwest::Method::POST,
                &format!("/v1/queues/{queue}/ack"),
                Some(&AckRequest {
                    group: group.to_owned(),
                    receipts,
                }),
                Duration::from_secs(10),
            )
            .await?;
        Ok(response.acked)
    }

    /// Makes deliveries deliverable again.
    ///
    /// # Errors
    ///
    /// See [`ClientError`].
    pub async fn nack(
        &self,
        queue: &str,
        group: &str,
        receipts: Vec<String>,
        delay_ms: Option<u64>,
    ) -> Result<u64, ClientError> {
        let response: NackResponse = self
            .call(
                reqwest::Method::POST,
                &format!("/v1/queues/{queue}/nack"),
                Some(&NackRequest {
                    group: group.to_owned(),
                    receipts,
                    delay_ms,
                }),
                Duration::from_secs(10),
            )
            .await?;
        Ok(response.nacked)
    }

    /// Per-partition statistics.
    ///
    /// # Errors
    ///
    /// See [`ClientError`].
    pub async fn stats(&self, queue: &str) -> Result<QueueStats, ClientError> {
        self.call::<(), _>(
            reqwest::Method::GET,
            &format!("/v1/queues/{queue}"),
            None,
            Duration::from_secs(10),
        )
        .await
    }

    /// A consumer loop: receives, hands each message to `handle`, acks the ones it accepted
    /// and nacks the others (redelivered at once), until `handle` asks to stop or a call fails.
    /// With [`Start::Resume`] the first receive asks for this consumer's own pending messages
    /// first (`request.resume` is ignored).
    ///
    /// `handle` returns `(accepted, keep_going)`.
    ///
    /// # Errors
    ///
    /// The first failed call.
    pub async fn consume<F>(
        &self,
        queue: &str,
        request: &ReceiveRequest,
        start: Start,
        mut handle: F,
    ) -> Result<(), ClientError>
    where
        F: FnMut(&distsync_api::ReceivedMessage) -> (bool, bool),
    {
        let mut request = request.clone();
        request.resume = start == Start::Resume;
        loop {
            let response = self.receive(queue, &request).await?;
            let (mut acks, mut nacks, mut keep_going) = (Vec::new(), Vec::new(), true);
            for message in &response.messages {
                let (accepted, more) = handle(message);
                if accepted {
                    acks.push(message.receipt.clone());
                } else {
                    nacks.push(message.receipt.clone());
                }
                keep_going &= more;
            }
            if !acks.is_empty() {
                self.ack(queue, &request.group, acks).await?;
            }
            if !nacks.is_empty() {
                self.nack(queue, &request.group, nacks, None).await?;
            }
            // A whole batch of own pending messages may have left more behind. Asking again is
            // safe only now that this batch is acked or nacked: a resume hands out whatever is
            // still pending under the name, so it would repeat an unanswered message.
            request.resume &= response.resumed >= request.max;
            if !keep_going {
                return Ok(());
            }
        }
    }
}
