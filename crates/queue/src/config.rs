//! [`QueueConfig`]: the limits and defaults of the queue service.

use std::time::Duration;

/// Queue service configuration. Every node of a deployment must use the same `partitions`,
/// `vnodes` and shard list, or they would place partitions differently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueConfig {
    /// Partitions per queue.
    pub partitions: u32,
    /// Virtual nodes per shard on the ring.
    pub vnodes: u32,
    /// Deliveries after which a message that is still not acked goes to the dead-letter stream.
    pub max_deliveries: u32,
    /// Largest message body.
    pub body_bytes_max: usize,
    /// Most messages in one publish.
    pub messages_per_publish_max: usize,
    /// Largest `max` of a receive.
    pub receive_max_max: u32,
    /// Longest long-poll.
    pub wait_ms_max: u64,
    /// Longest visibility timeout.
    pub visibility_ms_max: u64,
    /// Longest nack delay.
    pub nack_delay_ms_max: u64,
    /// A long-poll re-reads at least this often, which bounds the cost of a missed wake-up.
    pub poll_interval_max: Duration,
    /// How long a shard may take to answer one command before it counts as unavailable.
    pub shard_response_timeout: Duration,
    /// Multiplexed connections per Redis shard for non-blocking commands (see `RedisStreams`).
    pub shard_connections: usize,
    /// How often a node trims entries every group has acknowledged (MINID); zero disables.
    pub trim_interval: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            partitions: 16,
            vnodes: 128,
            max_deliveries: 5,
            body_bytes_max: 256 * 1024,
            messages_per_publish_max: 1000,
            receive_max_max: 1000,
            wait_ms_max: 60_000,
            visibility_ms_max: 12 * 3600 * 1000,
            nack_delay_ms_max: 15 * 60 * 1000,
            poll_interval_max: Duration::from_millis(500),
            shard_response_timeout: Duration::from_secs(3),
            shard_connections: 4,
            trim_interval: Duration::from_secs(30),
        }
    }
}

/// A configuration value out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid queue configuration: {0}")]
pub struct ConfigError(pub String);

impl QueueConfig {
    /// Checks every value.
    ///
    /// # Errors
    ///
    /// The first value out of range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let check = |ok: bool, what: &str| {
            if ok {
                Ok(())
            } else {
                Err(ConfigError(what.to_owned()))
            }
        };
        check(
            (1..=4096).contains(&self.partitions),
            "partitions must be 1..=4096",
        )?;
        check(
            (1..=distsync_ring::VNODES_PER_MEMBER_MAX).contains(&self.vnodes),
            "vnodes must be 1..=65536",
        )?;
        check(
            self.max_deliveries >= 1,
            "max_deliveries must be at least 1",
        )?;
        check(
            self.body_bytes_max >= 1,
            "body_bytes_max must be at least 1",
        )?;
        check(
            self.messages_per_publish_max >= 1,
            "messages_per_publish_max must be at least 1",
        )?;
        check(
            self.receive_max_max >= 1,
            "receive_max_max must be at least 1",
        )?;
        check(
            !self.poll_interval_max.is_zero(),
            "poll_interval_max must be positive",
        )?;
        check(
            !self.shard_response_timeout.is_zero(),
            "shard_response_timeout must be positive",
        )?;
        check(
            (1..=64).contains(&self.shard_connections),
            "shard_connections must be 1..=64",
        )
    }
}
