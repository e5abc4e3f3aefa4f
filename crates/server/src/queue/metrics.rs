//! Queue metrics in Prometheus text format.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Counters and histograms of one queue node.
#[derive(Debug)]
pub struct QueueMetrics {
    registry: Registry,
    /// Messages stored by publishes that returned 201.
    pub published: Counter,
    /// Deliveries handed to consumers (redeliveries included).
    pub delivered: Counter,
    /// Deliveries acknowledged.
    pub acked: Counter,
    /// Deliveries with a delivery count above 1.
    pub redelivered: Counter,
    /// Messages moved to a dead-letter stream.
    pub dead_lettered: Counter,
    /// Trim passes completed (each over every queue this node has served).
    pub trim_runs: Counter,
    /// Entries removed by trimming (acknowledged by every group).
    pub trimmed: Counter,
    /// Publish request latency, seconds.
    pub publish_latency: Histogram,
    /// From publish to first delivery, seconds.
    pub end_to_end_latency: Histogram,
    /// Operations that failed on a shard, by shard.
    pub shard_errors: Family<Vec<(String, String)>, Counter>,
}

impl Default for QueueMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl QueueMetrics {
    /// Registers every metric under the `distsync_queue_` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("distsync_queue");
        let metrics = QueueMetrics {
            published: Counter::default(),
            delivered: Counter::default(),
            acked: Counter::default(),
            redelivered: Counter::default(),
            dead_lettered: Counter::default(),
            trim_runs: Counter::default(),
            trimmed: Counter::default(),
            publish_latency: Histogram::new(exponential_buckets(0.0001, 2.0, 18)),
            end_to_end_latency: Histogram::new(exponential_buckets(0.0001, 2.0, 22)),
            shard_errors: Family::default(),
            registry: Registry::default(),
        };
        registry.register("published", "Messages published", metrics.published.clone());
        registry.register(
            "delivered",
            "Deliveries to consumers",
            metrics.delivered.clone(),
        );
        registry.register("acked", "Deliveries acknowledged", metrics.acked.clone());
        registry.register(
            "redelivered",
            "Deliveries after the first",
            metrics.redelivered.clone(),
        );
        registry.register(
            "dead_lettered",
            "Messages dead-lettered",
            metrics.dead_lettered.clone(),
        );
        registry.register(
            "trim_runs",
            "Trim passes completed",
            metrics.trim_runs.clone(),
        );
        registry.register(
            "trimmed_entries",
            "Entries removed by trimming because every group acknowledged them",
            metrics.trimmed.clone(),
        );
        registry.register(
            "publish_latency_seconds",
            "Publish request latency",
            metrics.publish_latency.clone(),
        );
        registry.register(
            "end_to_end_latency_seconds",
            "Publish to first delivery",
            metrics.end_to_end_latency.clone(),
        );
        registry.register(
            "shard_errors",
            "Failed shard operations",
            metrics.shard_errors.clone(),
        );
        QueueMetrics {
            registry,
            ..metrics
        }
    }

    /// Counts a failure of `shard`.
    pub fn shard_error(&self, shard: &str) {
        self.shard_errors
            .get_or_create(&vec![("shard".to_owned(), shard.to_owned())])
            .inc();
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }
}
