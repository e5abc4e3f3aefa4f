//! Prometheus metrics of a cache node (`distsync_cache_*`).

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

/// Counters, gauges and histograms of one cache node.
#[derive(Debug)]
pub struct CacheMetrics {
    registry: Registry,
    /// Reads served from a valid local copy.
    pub hits: Counter,
    /// Reads that needed a coherence transaction or a lease renewal.
    pub misses: Counter,
    /// Lines dropped from the local store (capacity, lease lapse).
    pub evictions: Counter,
    /// `Invalidate` messages this node sent as a home.
    pub invalidations_sent: Counter,
    /// `Invalidate` messages this node received as a holder.
    pub invalidations_received: Counter,
    /// Backing-store writes issued by this node as a home.
    pub write_backs: Counter,
    /// Operations answered with an error (timeout, limit).
    pub errors: Counter,
    /// Line state changes on this node, labelled `from`, `to` (M/E/S/I).
    pub transitions: Family<Labels, Counter>,
    /// Messages into and out of this node's directory, labelled `direction`, `kind`.
    pub directory_messages: Family<Labels, Counter>,
    /// Latency of reads, writes and deletes as served by this node, labelled `op`.
    pub op_seconds: Family<Labels, Histogram>,
    /// The `op` children of `op_seconds`, resolved once: a label lookup per operation (a
    /// vector, two strings and a hash) cost more than the observation itself on a hit.
    op_seconds_get: Histogram,
    op_seconds_put: Histogram,
    op_seconds_delete: Histogram,
    hit_ratio: Gauge<f64, std::sync::atomic::AtomicU64>,
    lines: Gauge,
    bytes: Gauge,
    view_epoch: Gauge,
    view_members: Gauge,
}

impl Default for CacheMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl CacheMetrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("distsync_cache");
        let op_seconds: Family<Labels, Histogram> = Family::new_with_constructor(|| {
            // 20 µs to about 1.3 s: a local hit up to a timed-out transaction.
            Histogram::new(exponential_buckets(0.000_02, 2.0, 17))
        });
        let child = |op: &str| {
            op_seconds
                .get_or_create(&vec![("op", op.to_string())])
                .clone()
        };
        let (op_seconds_get, op_seconds_put, op_seconds_delete) =
            (child("get"), child("put"), child("delete"));
        let metrics = CacheMetrics {
            hits: Counter::default(),
            misses: Counter::default(),
            evictions: Counter::default(),
            invalidations_sent: Counter::default(),
            invalidations_received: Counter::default(),
            write_backs: Counter::default(),
            errors: Counter::default(),
            transitions: Family::default(),
            directory_messages: Family::default(),
            op_seconds,
            op_seconds_get,
            op_seconds_put,
            op_seconds_delete,
            hit_ratio: Gauge::default(),
            lines: Gauge::default(),
            bytes: Gauge::default(),
            view_epoch: Gauge::default(),
            view_members: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "hits",
            "Reads served from a valid local copy",
            metrics.hits.clone(),
        );
        registry.register(
            "misses",
            "Reads that needed a coherence transaction or a lease renewal",
            metrics.misses.clone(),
        );
        registry.register(
            "hit_ratio",
            "hits / (hits + misses) since start",
            metrics.hit_ratio.clone(),
        );
        registry.register(
            "evictions",
            "Lines dropped from the local store (capacity, lease lapse)",
            metrics.evictions.clone(),
        );
        registry.register(
            "invalidations_sent",
            "Invalidate messages sent by this node as a home",
            metrics.invalidations_sent.clone(),
        );
        registry.register(
            "invalidations_received",
            "Invalidate messages received by this node as a holder",
            metrics.invalidations_received.clone(),
        );
        registry.register(
            "write_backs",
            "Backing-store writes issued by this node as a home",
            metrics.write_backs.clone(),
        );
        registry.register(
            "op_errors",
            "Operations answered with an error",
            metrics.errors.clone(),
        );
        registry.register(
            "state_transitions",
            "Line state changes on this node by from and to state",
            metrics.transitions.clone(),
        );
        registry.register(
            "directory_messages",
            "Coherence messages into (in) and out of (out) this node's directory by kind",
            metrics.directory_messages.clone(),
        );
        registry.register(
            "op_seconds",
            "Latency of get, put and delete as served by this node",
            metrics.op_seconds.clone(),
        );
        registry.register("lines", "Lines in the local store", metrics.lines.clone());
        registry.register(
            "bytes",
            "Value bytes in the local store",
            metrics.bytes.clone(),
        );
        registry.register(
            "view_epoch",
            "Epoch of the membership view this node adopted (0: none yet)",
            metrics.view_epoch.clone(),
        );
        registry.register(
            "view_members",
            "Members in the membership view this node adopted",
            metrics.view_members.clone(),
        );
        CacheMetrics {
            registry,
            ..metrics
        }
    }

    /// Counts a change of a line from `from` to `to` (letters M/E/S/I).
    pub fn transition(&self, from: char, to: char) {
        self.transitions
            .get_or_create(&vec![("from", from.to_string()), ("to", to.to_string())])
            .inc();
    }

    /// Counts a directory message.
    pub fn directory_message(&self, direction: &'static str, kind: &'static str) {
        self.directory_messages
            .get_or_create(&vec![
                ("direction", direction.to_string()),
                ("kind", kind.to_string()),
            ])
            .inc();
    }

    /// Records how long `op` took.
    pub fn observe_op(&self, op: &'static str, seconds: f64) {
        let histogram = match op {
            "get" => &self.op_seconds_get,
            "put" => &self.op_seconds_put,
            "delete" => &self.op_seconds_delete,
            other => {
                self.op_seconds
                    .get_or_create(&vec![("op", other.to_string())])
                    .observe(seconds);
                return;
            }
        };
        histogram.observe(seconds);
    }

    /// Records the adopted membership view.
    pub fn set_view(&self, epoch: u64, members: usize) {
        self.view_epoch.set(epoch as i64);
        self.view_members.set(members as i64);
    }

    /// `hits / (hits + misses)`, 0 before the first read.
    pub fn hit_ratio(&self) -> f64 {
        let (hits, misses) = (self.hits.get(), self.misses.get());
        if hits + misses == 0 {
            0.0
        } else {
            hits as f64 / (hits + misses) as f64
        }
    }

    /// The text exposition, with the store occupancy given by the caller.
    pub fn render(&self, lines: usize, bytes: usize) -> String {
        self.hit_ratio.set(self.hit_ratio());
        self.lines.set(lines as i64);
        self.bytes.set(bytes as i64);
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }
}
