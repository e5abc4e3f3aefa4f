//! Queue service bodies: publish, receive, ack, nack, stats, dead letters and the ring.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// `POST /v1/queues/{q}/messages`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishRequest {
    /// The messages, stored in this order per partition.
    pub messages: Vec<PublishMessage>,
}

/// One message to publish.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishMessage {
    /// Partitioning key: messages with the same key go to one partition and keep their order.
    /// Without it, partitions are filled in turn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The payload.
    pub body: String,
    /// Free-form headers, returned with the message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<BTreeMap<String, String>>,
}

/// 201 answer to a publish: sent only once every message is durable as configured.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PublishResponse {
    /// One id per message, in request order (`"{partition}-{ms}-{seq}"`).
    pub ids: Vec<String>,
}

/// `POST /v1/queues/{q}/receive`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReceiveRequest {
    /// Consumer group; created on first use, starting at the oldest message.
    pub group: String,
    /// This consumer's name within the group; a restarted consumer should reuse it.
    pub consumer: String,
    /// Most messages to return (default 10).
    #[serde(default = "default_max")]
    pub max: u32,
    /// Long-poll: wait up to this long for a message when none is ready (default 0).
    #[serde(default)]
    pub wait_ms: u64,
    /// A message not acked within this long is delivered again (default 30 000). This is
    /// also the idle time after which this request claims other deliveries, so every consumer
    /// of a group should use the same value.
    #[serde(default = "default_visibility_ms")]
    pub visibility_ms: u64,
    /// This consumer is (re)starting: deliver the messages still pending under its name in the
    /// group first, whatever their idle time (each with `delivery_count` one higher, and those
    /// past the node's max deliveries dead-lettered instead), then the usual redeliveries and
    /// new messages (default false: pending messages come back only after `visibility_ms`).
    /// Send it on the first receive after a start; if `resumed` in the answer equals `max`,
    /// more may be pending: ack or nack those and send it again. Only for a consumer name used
    /// by one process at a time: a second live process under the same name would be handed the
    /// first one's in-flight messages.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub resume: bool,
}

fn default_max() -> u32 {
    10
}

fn default_visibility_ms() -> u64 {
    30_000
}

/// 200 answer to a receive; empty when nothing arrived within `wait_ms`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReceiveResponse {
    /// The delivered messages.
    pub messages: Vec<ReceivedMessage>,
    /// With `resume`: how many of `messages`, from the first, are this consumer's own pending
    /// messages delivered again. Absent when 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub resumed: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// One delivery.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReceivedMessage {
    /// The message id (the same on every delivery).
    pub id: String,
    /// Handle to ack or nack this delivery.
    pub receipt: String,
    /// The partitioning key, if any.
    pub key: Option<String>,
    /// The payload.
    pub body: String,
    /// 1 on the first delivery, then one more for each redelivery.
    pub delivery_count: u64,
    /// The partition it came from.
    pub partition: u32,
    /// Headers given at publish, if any.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
}

/// `POST /v1/queues/{q}/ack`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AckRequest {
    /// The group the messages were received in.
    pub group: String,
    /// Receipts from receive.
    pub receipts: Vec<String>,
}

/// 200 answer to an ack.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AckResponse {
    /// Receipts that were pending and are now acknowledged (an ack repeated is not counted).
    pub acked: u64,
}

/// `POST /v1/queues/{q}/nack`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NackRequest {
    /// The group the messages were received in.
    pub group: String,
    /// Receipts from receive.
    pub receipts: Vec<String>,
    /// Make them deliverable again after this long instead of at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
}

/// 200 answer to a nack.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NackResponse {
    /// Receipts made deliverable again (or scheduled to be, with `delay_ms`).
    pub nacked: u64,
}

/// `GET /v1/queues/{q}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct QueueStats {
    /// The queue.
    pub queue: String,
    /// One row per partition.
    pub partitions: Vec<PartitionStats>,
}

/// One partition of a queue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PartitionStats {
    /// Partition number.
    pub partition: u32,
    /// The shard holding it.
    pub shard: String,
    /// False if the shard did not answer; the counts are then 0.
    pub available: bool,
    /// Entries in the stream (acknowledged ones included until trimmed).
    pub length: u64,
    /// Delivered but unacknowledged, summed over groups.
    pub pending: u64,
    /// Consumers, summed over groups.
    pub consumers: u64,
    /// Entries in the partition's dead-letter stream.
    pub dead_letters: u64,
    /// Per group detail.
    pub groups: Vec<GroupStats>,
}

/// One consumer group of a partition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct GroupStats {
    /// Group name.
    pub group: String,
    /// Delivered but unacknowledged.
    pub pending: u64,
    /// Consumers seen.
    pub consumers: u64,
    /// Last stream id delivered to the group.
    pub last_delivered_id: String,
}

/// `GET /v1/queues/{q}/dead-letters`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DeadLettersResponse {
    /// Dead-lettered messages, per partition oldest first.
    pub messages: Vec<DeadLetterMessage>,
}

/// One dead-lettered message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DeadLetterMessage {
    /// The message id it had in the queue.
    pub id: String,
    /// Partition it came from.
    pub partition: u32,
    /// The group that gave up on it.
    pub group: String,
    /// How many times it was delivered.
    pub delivery_count: u64,
    /// The partitioning key, if any.
    pub key: Option<String>,
    /// The payload.
    pub body: String,
}

/// `GET /v1/ring`: shard placement as every queue node computes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RingView {
    /// Shard names in the ring.
    pub shards: Vec<String>,
    /// Virtual nodes per shard.
    pub vnodes: u32,
    /// Partitions per queue.
    pub partitions: u32,
    /// Partition → shard.
    pub placement: Vec<PartitionPlacement>,
}

/// Where one partition lives.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PartitionPlacement {
    /// Partition number.
    pub partition: u32,
    /// Its shard.
    pub shard: String,
}
