//! [`StreamBackend`]: what one shard must offer a partition, and the values it trades in.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::str::FromStr;
use std::time::Duration;

/// An entry id in a stream: milliseconds and a sequence number, ordered like Redis stream ids.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct StreamId {
    /// Milliseconds part.
    pub ms: u64,
    /// Sequence within the millisecond.
    pub seq: u64,
}

impl StreamId {
    /// The smallest id after this one.
    pub fn next(self) -> StreamId {
        match self.seq.checked_add(1) {
            Some(seq) => StreamId { ms: self.ms, seq },
            None => StreamId {
                ms: self.ms + 1,
                seq: 0,
            },
        }
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

impl FromStr for StreamId {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (ms, seq) = text
            .split_once('-')
            .ok_or_else(|| format!("stream id {text:?} is not \"ms-seq\""))?;
        let parse = |part: &str| {
            part.parse::<u64>()
                .map_err(|_| format!("stream id {text:?} is not \"ms-seq\""))
        };
        Ok(StreamId {
            ms: parse(ms)?,
            seq: parse(seq)?,
        })
    }
}

/// A message as stored in a partition's stream.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NewEntry {
    /// The partitioning key, if the producer gave one.
    pub key: Option<String>,
    /// The payload.
    pub body: String,
    /// Producer-supplied headers.
    pub headers: BTreeMap<String, String>,
    /// When the accepting node stored it (Unix ms); end-to-end latency is measured from here.
    pub published_at_ms: u64,
}

/// One delivery of an entry to a consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The entry's id.
    pub id: StreamId,
    /// The entry.
    pub entry: NewEntry,
    /// How many times the group has delivered it, this delivery included (1 for the first).
    pub delivery_count: u64,
}

/// A dead-lettered entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The entry's id in its source stream.
    pub source_id: StreamId,
    /// The group that gave up on it.
    pub group: String,
    /// Deliveries made before it was dead-lettered.
    pub delivery_count: u64,
    /// The entry.
    pub entry: NewEntry,
}

/// A consumer group of one stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupInfo {
    /// The group's name.
    pub name: String,
    /// Consumers the group has seen.
    pub consumers: u64,
    /// Entries delivered and not yet acknowledged.
    pub pending: u64,
    /// The last entry id delivered to the group.
    pub last_delivered: StreamId,
}

/// What a stream holds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StreamInfo {
    /// Entries in the stream (delivered or not, acknowledged or not, until trimmed).
    pub length: u64,
    /// Its consumer groups, by name.
    pub groups: Vec<GroupInfo>,
    /// Entries in its dead-letter stream.
    pub dead_letters: u64,
}

/// Why a backend operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BackendError {
    /// The shard could not be reached or is not serving (connection refused, timeout, loading).
    /// The operation may or may not have taken effect.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The group does not exist on this stream (e.g. the shard lost its data).
    #[error("no such consumer group")]
    NoGroup,
    /// Anything else the shard answered.
    #[error("{0}")]
    Other(String),
}

/// The operations a partition needs from the shard that stores it, one stream per partition.
///
/// Every implementation has the same semantics (the behavioural suite runs against each):
/// - `append` returns only once the entries are durable as the backend is configured.
/// - A group created with `ensure_group` starts at the beginning of the stream, so messages
///   published before the first receive are delivered.
/// - `read_new` delivers entries never delivered to the group (delivery count 1) and records
///   them as pending for `consumer`; `claim_idle` takes over pending entries idle for at least
///   `min_idle`, from any consumer, and increments their delivery count; `read_own_pending`
///   delivers again the entries pending for one consumer, whatever their idle time, also
///   incrementing their count and resetting their idle time.
/// - Nothing unacknowledged is ever removed: `trim_acknowledged` removes only entries every group
///   has acknowledged (MINID semantics), and dead-lettering moves an entry atomically.
pub trait StreamBackend: Send + Sync + 'static {
    /// Checks that the shard answers.
    fn ping(&self) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// Appends entries to several streams of this shard, returning their ids in order, once they
    /// are durable.
    fn append(
        &self,
        batches: &[(String, Vec<NewEntry>)],
    ) -> impl Future<Output = Result<Vec<Vec<StreamId>>, BackendError>> + Send;

    /// Creates `group` on `stream` (and the stream) if missing, positioned before the first entry.
    fn ensure_group(
        &self,
        stream: &str,
        group: &str,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// Delivers up to `count` entries never delivered to `group`, to `consumer`.
    fn read_new(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        count: usize,
    ) -> impl Future<Output = Result<Vec<Delivery>, BackendError>> + Send;

    /// Delivers again to `consumer` up to `count` of the entries pending for it in `group`,
    /// oldest first, however recently they were delivered (Redis: `XREADGROUP GROUP group
    /// consumer COUNT count STREAMS stream 0`, which reads the consumer's own pending list).
    /// Each returned delivery's count is incremented and its idle time reset, as a claim by its
    /// owner would; entries pending for other consumers are untouched. An entry pending but no
    /// longer in the stream is neither returned nor counted (Redis does the same).
    fn read_own_pending(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        count: usize,
    ) -> impl Future<Output = Result<Vec<Delivery>, BackendError>> + Send;

    /// Claims up to `count` pending entries idle at least `min_idle` for `consumer`.
    fn claim_idle(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        min_idle: Duration,
        count: usize,
    ) -> impl Future<Output = Result<Vec<Delivery>, BackendError>> + Send;

    /// Acknowledges entries; returns how many were pending.
    fn ack(
        &self,
        stream: &str,
        group: &str,
        ids: &[StreamId],
    ) -> impl Future<Output = Result<u64, BackendError>> + Send;

    /// Makes pending entries claimable at once (a nack); returns how many were pending.
    fn release(
        &self,
        stream: &str,
        group: &str,
        ids: &[StreamId],
    ) -> impl Future<Output = Result<u64, BackendError>> + Send;

    /// Atomically appends `delivery` to the stream's dead-letter stream and acknowledges it in
    /// `group`, so it is dead-lettered exactly once.
    fn dead_letter(
        &self,
        stream: &str,
        group: &str,
        delivery: &Delivery,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// Up to `count` entries of the stream's dead-letter stream, oldest first.
    fn dead_letters(
        &self,
        stream: &str,
        count: usize,
    ) -> impl Future<Output = Result<Vec<DeadLetter>, BackendError>> + Send;

    /// Describes the stream; `None` if it does not exist.
    fn info(
        &self,
        stream: &str,
    ) -> impl Future<Output = Result<Option<StreamInfo>, BackendError>> + Send;

    /// Removes entries every group has acknowledged (below the smallest pending or undelivered
    /// id of every group); a stream without groups is never trimmed. Returns entries removed.
    fn trim_acknowledged(
        &self,
        stream: &str,
    ) -> impl Future<Output = Result<u64, BackendError>> + Send;

    /// Returns when one of `streams` may hold an entry not yet delivered to `group` (appended
    /// by any process), or after `timeout`. Spurious returns are allowed; callers re-read.
    fn wait_for_new(
        &self,
        streams: &[String],
        group: &str,
        timeout: Duration,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;
}
