//! The queue service's IO shell: an axum router over [`QueueService`], its metrics, and the
//! node's serve loop. Handlers only extract, validate, call the service and map errors.
//!
//! A queue node serves its own port with exactly: the `/v1/queues/…` and `/v1/ring` API, and
//! `/healthz`, `/readyz`, `/metrics`.

mod metrics;
mod openapi;
mod routes;

pub use metrics::QueueMetrics;
pub use openapi::openapi_document;
pub use routes::router;

use distsync_queue::QueueService;
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Everything a queue node's handlers share.
#[derive(Debug)]
pub struct QueueNode {
    /// The service (stateless over its shards).
    pub service: Arc<QueueService>,
    /// Prometheus metrics.
    pub metrics: QueueMetrics,
}

impl QueueNode {
    /// A node over `service`.
    pub fn new(service: QueueService) -> Arc<Self> {
        Arc::new(QueueNode {
            service: Arc::new(service),
            metrics: QueueMetrics::new(),
        })
    }
}

/// Serves the queue API on `listener` until `shutdown` completes, then drains in-flight requests.
///
/// # Errors
///
/// The listener fails.
pub async fn serve(
    listener: TcpListener,
    node: Arc<QueueNode>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    let shards: Vec<&str> = node
        .service
        .shards()
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    tracing::info!(%addr, ?shards, partitions = node.service.config().partitions, "queue node serving");
    let trim_interval = node.service.config().trim_interval;
    let trimmer = (!trim_interval.is_zero()).then(|| {
        let node = node.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(trim_interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let removed = node.service.trim_known().await;
                node.metrics.trimmed.inc_by(removed);
                node.metrics.trim_runs.inc();
                if removed > 0 {
                    tracing::debug!(removed, "trimmed acknowledged entries");
                }
            }
        })
    });
    let result = axum::serve(listener, router(node.clone()))
        .with_graceful_shutdown(shutdown)
        .await;
    if let Some(trimmer) = trimmer {
        trimmer.abort();
    }
    result
}
