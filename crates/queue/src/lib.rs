//! The queue service's logic: named queues split into partitions, partitions placed on shards
//! by the consistent-hash ring, and each partition stored as a stream with consumer groups,
//! pending lists, acknowledgements, idle-time claims, delivery counters and a dead-letter stream.
//!
//! What it is:
//! - [`Partitioner`]: a keyed message goes to `xxh3(key) mod P` (so one key keeps its order), a
//!   keyless one to the next partition in turn.
//! - [`StreamBackend`]: the operations one shard offers a partition (append durably, create a
//!   group, read new entries, claim idle pending entries, acknowledge, release, dead-letter,
//!   describe, trim safely, wait for new entries). Two implementations with the same semantics:
//!   [`RedisStreams`] (Redis Streams: XADD, XREADGROUP, XACK, XPENDING/XCLAIM, MULTI) and
//!   [`FileStreams`] (embedded: an append-only, fsynced, CRC-framed log per partition, replayed on
//!   start), used when nothing is installed.
//! - [`QueueService`]: publish / receive / ack / nack / stats over all shards. It keeps no message
//!   state: every delivery, claim and acknowledgement lives in the backend, and a [`Receipt`]
//!   names the partition, shard and stream id, so any node can route an ack.
//!
//! What it is not: an HTTP server (that is `distsync-server`'s `queue` module), or a membership
//! service (the shard list is configuration; every node with the same list computes the same
//! placement).
#![warn(missing_docs)]

mod any;
mod backend;
mod config;
mod embedded;
mod error;
mod name;
mod partition;
mod receipt;
#[cfg(feature = "redis")]
mod redis_streams;
mod service;

pub use any::{AnyBackend, ShardSpec, ShardTarget, parse_shard_specs};
pub use backend::{
    BackendError, DeadLetter, Delivery, GroupInfo, NewEntry, StreamBackend, StreamId, StreamInfo,
};
pub use config::{ConfigError, QueueConfig};
pub use distsync_ring::PartitionId;
pub use embedded::FileStreams;
pub use error::QueueError;
pub use name::validate_name;
pub use partition::Partitioner;
pub use receipt::{MessageId, Receipt};
#[cfg(feature = "redis")]
pub use redis_streams::RedisStreams;
pub use service::{Outcome, PublishMessage, QueueService, ReceiveOptions, Received, Shard, now_ms};
