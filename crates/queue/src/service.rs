//! [`QueueService`]: publish, receive, ack, nack and stats over every shard.
//!
//! The service keeps no message state. What it caches is only an optimisation that is safe to
//! lose: which groups it has already created, when it last looked for idle pending entries, and
//! a wake-up signal for long-polls waiting on messages published through this node.

use crate::any::{AnyBackend, ShardSpec};
use crate::backend::{BackendError, Delivery, NewEntry, StreamBackend, StreamId};
use crate::config::{ConfigError, QueueConfig};
use crate::error::QueueError;
use crate::name::validate_name;
use crate::partition::Partitioner;
use crate::receipt::{MessageId, Receipt};
use distsync_api::{
    DeadLetterMessage, GroupStats, PartitionPlacement, PartitionStats, QueueStats, RingView,
};
use distsync_ring::{HashRing, PartitionId};
use futures_util::future::{join_all, select_all};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;

/// Wall-clock Unix milliseconds (publish timestamps and the embedded backend's idle times).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// One shard: a name on the ring and the backend that stores its partitions.
#[derive(Debug)]
pub struct Shard {
    /// The shard's name (its ring identity).
    pub name: String,
    /// Its storage.
    pub backend: AnyBackend,
}

/// A message to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishMessage {
    /// Partitioning key.
    pub key: Option<String>,
    /// Payload.
    pub body: String,
    /// Headers.
    pub headers: BTreeMap<String, String>,
}

/// How a receive behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiveOptions {
    /// Most messages to return.
    pub max: u32,
    /// Long-poll limit.
    pub wait: Duration,
    /// Visibility timeout (also the idle time after which others' deliveries are claimed).
    pub visibility: Duration,
    /// The consumer is (re)starting: deliver the messages still pending under its name first,
    /// however recently they were delivered, then the usual claims and new messages.
    pub resume: bool,
}

/// One message handed to a consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// Its id.
    pub id: MessageId,
    /// The handle for ack/nack.
    pub receipt: Receipt,
    /// The stored message.
    pub entry: NewEntry,
    /// Deliveries so far, this one included.
    pub delivery_count: u64,
}

/// What a receive did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Messages delivered.
    pub messages: Vec<Received>,
    /// How many of `messages`, from the first, are the consumer's own pending messages
    /// delivered again because of [`ReceiveOptions::resume`].
    pub resumed: usize,
    /// Messages moved to the dead-letter stream during this receive.
    pub dead_lettered: u64,
    /// Shards that failed during this receive (their partitions were skipped).
    pub failed_shards: Vec<String>,
}

/// The queue service of one node.
#[derive(Debug)]
pub struct QueueService {
    config: QueueConfig,
    shards: Vec<Shard>,
    ring: HashRing,
    /// Partition → index into `shards`, computed once from the ring.
    placement: Vec<usize>,
    partitioner: Partitioner,
    /// (queue, group, partition) whose group exists: saves an `XGROUP CREATE` per read.
    groups_ready: Mutex<HashSet<(String, String, Location)>>,
    /// (queue, group, partition) → last idle-claim scan, to scan at most a few times per
    /// visibility timeout instead of on every receive.
    claims_scanned: Mutex<HashMap<(String, String, Location), Instant>>,
    /// (queue, partition) → shards that are not its owner but still hold its entries (after a
    /// topology change); receive drains them. Found by `probe_old_locations`.
    old_locations: Mutex<HashMap<(String, u32), Vec<usize>>>,
    /// Queues whose old locations have been probed.
    probed_queues: Mutex<HashSet<String>>,
    /// Per queue: woken when this node publishes to it.
    published: Mutex<HashMap<String, Arc<Notify>>>,
    /// Rotates the partition a sweep starts at, so no partition is favoured.
    sweep_start: AtomicU32,
    /// Queues this node has served, for the periodic trim (a cache: any node trims any queue).
    known_queues: Mutex<BTreeSet<String>>,
}

/// Where a partition's stream is read: the partition and the shard holding that stream (the
/// owner, or an old location being drained).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Location {
    partition: PartitionId,
    shard: usize,
}

/// Which pending or new messages a sweep over the partitions delivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// The consumer's own pending messages, whatever their idle time (a resuming receive).
    OwnPending,
    /// Deliveries idle past the visibility timeout, then new messages.
    Ready,
}

/// What the passes of one receive collected so far.
#[derive(Debug, Default)]
struct Sweep {
    outcome: Outcome,
    /// Shards (indices) that failed during this receive: later passes skip them.
    failed: BTreeSet<usize>,
    last_error: Option<QueueError>,
}

/// Messages of one publish bound for one partition: their request positions and entries.
type PartitionBatch = (Vec<usize>, Vec<NewEntry>);

fn stream_key(queue: &str, partition: PartitionId) -> String {
    format!("dsq:{queue}:p{}", partition.0)
}

impl QueueService {
    /// Builds the service over already opened shards.
    ///
    /// # Errors
    ///
    /// An invalid config or an empty shard list.
    pub fn new(config: QueueConfig, shards: Vec<Shard>) -> Result<Self, ConfigError> {
        config.validate()?;
        if shards.is_empty() {
            return Err(ConfigError("at least one shard is needed".to_owned()));
        }
        let mut ring = HashRing::new(config.vnodes).map_err(|e| ConfigError(e.to_string()))?;
        for shard in &shards {
            ring.add(shard.name.clone())
                .map_err(|e| ConfigError(e.to_string()))?;
        }
        let map = ring
            .partition_map(config.partitions)
            .expect("the ring has at least one shard");
        let placement = map
            .iter()
            .map(|name| {
                shards
                    .iter()
                    .position(|s| &s.name == *name)
                    .expect("every ring member is a shard")
            })
            .collect();
        Ok(QueueService {
            partitioner: Partitioner::new(config.partitions),
            config,
            shards,
            ring,
            placement,
            groups_ready: Mutex::new(HashSet::new()),
            claims_scanned: Mutex::new(HashMap::new()),
            old_locations: Mutex::new(HashMap::new()),
            probed_queues: Mutex::new(HashSet::new()),
            published: Mutex::new(HashMap::new()),
            sweep_start: AtomicU32::new(0),
            known_queues: Mutex::new(BTreeSet::new()),
        })
    }

    /// Opens every shard of `specs` and builds the service.
    ///
    /// # Errors
    ///
    /// A shard that cannot be opened (bad URL, unreadable directory) or an invalid config.
    pub fn open(config: QueueConfig, specs: &[ShardSpec]) -> Result<Self, ConfigError> {
        let shards = specs
            .iter()
            .map(|spec| {
                AnyBackend::open(&spec.target, &config)
                    .map(|backend| Shard {
                        name: spec.name.clone(),
                        backend,
                    })
                    .map_err(|e| ConfigError(format!("shard {}: {e}", spec.name)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Self::new(config, shards)
    }

    /// The configuration in force.
    pub fn config(&self) -> &QueueConfig {
        &self.config
    }

    /// The shards, in configuration order.
    pub fn shards(&self) -> &[Shard] {
        &self.shards
    }

    /// The shard that holds `partition`.
    pub fn shard_of(&self, partition: PartitionId) -> &Shard {
        &self.shards[self.placement[partition.0 as usize]]
    }

    /// Placement as every node computes it.
    pub fn ring_view(&self) -> RingView {
        RingView {
            shards: self.ring.members().to_vec(),
            vnodes: self.ring.vnodes_per_member(),
            partitions: self.config.partitions,
            placement: (0..self.config.partitions)
                .map(|p| PartitionPlacement {
                    partition: p,
                    shard: self.shard_of(PartitionId(p)).name.clone(),
                })
                .collect(),
        }
    }

    fn remember(&self, queue: &str) {
        let mut known = self
            .known_queues
            .lock()
            .expect("known-queue lock is never held across a panic");
        if !known.contains(queue) {
            known.insert(queue.to_owned());
        }
    }

    /// Trims every queue this node has served (see [`QueueService::trim`]); returns entries
    /// removed. Shard failures are logged and skipped: the next round tries again.
    pub async fn trim_known(&self) -> u64 {
        let queues: Vec<String> = self
            .known_queues
            .lock()
            .expect("known-queue lock is never held across a panic")
            .iter()
            .cloned()
            .collect();
        let mut removed = 0;
        for queue in queues {
            match self.trim(&queue).await {
                Ok(n) => removed += n,
                Err(error) => tracing::warn!(%queue, %error, "trim skipped"),
            }
        }
        removed
    }

    fn notify_for(&self, queue: &str) -> Arc<Notify> {
        self.published
            .lock()
            .expect("notify map lock is never held across a panic")
            .entry(queue.to_owned())
            .or_default()
            .clone()
    }

    fn check_queue(queue: &str) -> Result<(), QueueError> {
        validate_name("queue", queue).map_err(QueueError::InvalidRequest)
    }

    /// Appends `messages` to `queue`; returns their ids once every one is durable.
    ///
    /// # Errors
    ///
    /// Invalid names or sizes; a shard that failed (some messages may then have been stored:
    /// a retry can duplicate them, never lose them).
    pub async fn publish(
        &self,
        queue: &str,
        messages: Vec<PublishMessage>,
    ) -> Result<Vec<MessageId>, QueueError> {
        Self::check_queue(queue)?;
        if messages.is_empty() {
            return Err(QueueError::InvalidRequest(
                "messages must not be empty".to_owned(),
            ));
        }
        if messages.len() > self.config.messages_per_publish_max {
            return Err(QueueError::InvalidRequest(format!(
                "at most {} messages per publish, got {}",
                self.config.messages_per_publish_max,
                messages.len()
            )));
        }
        for message in &messages {
            if message.body.len() > self.config.body_bytes_max {
                return Err(QueueError::PayloadTooLarge {
                    size: message.body.len(),
                    limit: self.config.body_bytes_max,
                });
            }
        }
        self.remember(queue);
        let published_at_ms = now_ms();
        // shard → partition → (request positions, entries), in request order per partition.
        let mut plan: BTreeMap<usize, BTreeMap<PartitionId, PartitionBatch>> = BTreeMap::new();
        for (position, message) in messages.into_iter().enumerate() {
            let partition = self.partitioner.for_message(message.key.as_deref());
            let (positions, entries) = plan
                .entry(self.placement[partition.0 as usize])
                .or_default()
                .entry(partition)
                .or_default();
            positions.push(position);
            entries.push(NewEntry {
                key: message.key,
                body: message.body,
                headers: message.headers,
                published_at_ms,
            });
        }
        let total: usize = plan
            .values()
            .flat_map(|parts| parts.values())
            .map(|(positions, _)| positions.len())
            .sum();
        let writes = plan.iter().map(|(&shard, parts)| async move {
            let batches: Vec<(String, Vec<NewEntry>)> = parts
                .iter()
                .map(|(partition, (_, entries))| (stream_key(queue, *partition), entries.clone()))
                .collect();
            let shard_ref = &self.shards[shard];
            shard_ref
                .backend
                .append(&batches)
                .await
                .map_err(|e| QueueError::from_backend(&shard_ref.name, e))
        });
        let results = join_all(writes).await;
        let mut ids = vec![None; total];
        for (result, parts) in results.into_iter().zip(plan.values()) {
            let stream_ids = result?;
            for ((partition, (positions, _)), partition_ids) in parts.iter().zip(stream_ids) {
                for (&position, stream_id) in positions.iter().zip(partition_ids) {
                    ids[position] = Some(MessageId {
                        partition: *partition,
                        stream_id,
                    });
                }
            }
        }
        self.notify_for(queue).notify_waiters();
        ids.into_iter()
            .map(|id| {
                id.ok_or_else(|| QueueError::Backend {
                    shard: "?".to_owned(),
                    source: BackendError::Other("a message got no id".to_owned()),
                })
            })
            .collect()
    }

    fn check_receive(
        &self,
        group: &str,
        consumer: &str,
        options: &ReceiveOptions,
    ) -> Result<(), QueueError> {
        validate_name("group", group).map_err(QueueError::InvalidRequest)?;
        validate_name("consumer", consumer).map_err(QueueError::InvalidRequest)?;
        let invalid = |m: String| Err(QueueError::InvalidRequest(m));
        if options.max == 0 || options.max > self.config.receive_max_max {
            return invalid(format!("max must be 1..={}", self.config.receive_max_max));
        }
        if options.wait.as_millis() > u128::from(self.config.wait_ms_max) {
            return invalid(format!(
                "wait_ms must be at most {}",
                self.config.wait_ms_max
            ));
        }
        if options.visibility.is_zero()
            || options.visibility.as_millis() > u128::from(self.config.visibility_ms_max)
        {
            return invalid(format!(
                "visibility_ms must be 1..={}",
                self.config.visibility_ms_max
            ));
        }
        Ok(())
    }

    /// Delivers up to `options.max` messages of `queue` to `consumer` of `group`: with
    /// `options.resume`, first the messages pending under `consumer` itself whatever their
    /// idle time (counted in [`Outcome::resumed`]); then deliveries left idle past the
    /// visibility timeout; then new ones. Redeliveries of messages delivered `max_deliveries`
    /// times already go to the dead-letter stream instead. Waits up to `options.wait` when
    /// there is nothing.
    ///
    /// # Errors
    ///
    /// Invalid names or ranges; [`QueueError::ShardUnavailable`] only if *every* shard failed
    /// (otherwise failed shards are listed in [`Outcome::failed_shards`]).
    pub async fn receive(
        &self,
        queue: &str,
        group: &str,
        consumer: &str,
        options: ReceiveOptions,
    ) -> Result<Outcome, QueueError> {
        Self::check_queue(queue)?;
        self.check_receive(group, consumer, &options)?;
        self.remember(queue);
        self.probe_old_locations(queue).await;
        let deadline = Instant::now() + options.wait;
        let notify = self.notify_for(queue);
        // A resuming consumer's own pending messages come first, read once per request: the
        // read delivers them again, so a second read would hand them out twice.
        let mut own = None;
        if options.resume {
            let mut sweep = Sweep::default();
            self.sweep(
                queue,
                group,
                consumer,
                &options,
                Pass::OwnPending,
                &mut sweep,
            )
            .await;
            sweep.outcome.resumed = sweep.outcome.messages.len();
            own = Some(sweep);
        }
        loop {
            // Registered before the sweep, so a publish through this node during the sweep
            // still wakes the wait below.
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let mut sweep = own.take().unwrap_or_default();
            if sweep.outcome.messages.len() < options.max as usize {
                self.sweep(queue, group, consumer, &options, Pass::Ready, &mut sweep)
                    .await;
            }
            let Sweep {
                outcome,
                last_error,
                ..
            } = sweep;
            let now = Instant::now();
            if !outcome.messages.is_empty() || outcome.dead_lettered > 0 || now >= deadline {
                return self.finish(outcome, last_error);
            }
            if let Some(error) = last_error
                && outcome.failed_shards.len() == self.shards.len()
            {
                return Err(error);
            }
            let slice = (deadline - now).min(self.config.poll_interval_max);
            let failed: BTreeSet<&String> = outcome.failed_shards.iter().collect();
            let waits: Vec<_> = self
                .shards
                .iter()
                .enumerate()
                .filter(|(_, shard)| !failed.contains(&shard.name))
                .map(|(index, shard)| {
                    let streams: Vec<String> = (0..self.config.partitions)
                        .filter(|p| self.placement[*p as usize] == index)
                        .map(|p| stream_key(queue, PartitionId(p)))
                        .collect();
                    Box::pin(async move {
                        if shard
                            .backend
                            .wait_for_new(&streams, group, slice)
                            .await
                            .is_err()
                        {
                            tokio::time::sleep(slice).await;
                        }
                    })
                })
                .collect();
            if waits.is_empty() {
                tokio::select! {
                    _ = &mut notified => {}
                    _ = tokio::time::sleep(slice) => {}
                }
            } else {
                tokio::select! {
                    _ = &mut notified => {}
                    _ = select_all(waits) => {}
                }
            }
        }
    }

    fn finish(
        &self,
        outcome: Outcome,
        last_error: Option<QueueError>,
    ) -> Result<Outcome, QueueError> {
        match last_error {
            Some(error)
                if outcome.messages.is_empty()
                    && outcome.failed_shards.len() == self.shards.len() =>
            {
                Err(error)
            }
            _ => Ok(outcome),
        }
    }

    /// One pass over the partitions, starting at a rotating one, adding to `sweep` until
    /// `max` are collected. A partition the ring moved is read at its old locations first
    /// (draining them), then at its owner. Shards that failed earlier in the request are
    /// skipped.
    async fn sweep(
        &self,
        queue: &str,
        group: &str,
        consumer: &str,
        options: &ReceiveOptions,
        pass: Pass,
        sweep: &mut Sweep,
    ) {
        let partitions = self.config.partitions;
        let start = self.sweep_start.fetch_add(1, Ordering::Relaxed) % partitions;
        'partitions: for i in 0..partitions {
            let partition = PartitionId((start + i) % partitions);
            let mut locations = self.old_locations(queue, partition);
            locations.push(self.placement[partition.0 as usize]);
            for shard_index in locations {
                if sweep.failed.contains(&shard_index) {
                    continue;
                }
                let want = options.max as usize - sweep.outcome.messages.len();
                let location = Location {
                    partition,
                    shard: shard_index,
                };
                let outcome = &mut sweep.outcome;
                let result = match pass {
                    Pass::OwnPending => {
                        self.resume_partition(queue, group, consumer, location, want, outcome)
                            .await
                    }
                    Pass::Ready => {
                        self.receive_partition(
                            queue,
                            group,
                            consumer,
                            location,
                            options.visibility,
                            want,
                            outcome,
                        )
                        .await
                    }
                };
                if let Err(error) = result {
                    let shard = &self.shards[shard_index].name;
                    tracing::warn!(%shard, %partition, %error, "receive skipped a partition");
                    sweep.failed.insert(shard_index);
                    sweep.outcome.failed_shards.push(shard.clone());
                    sweep.last_error = Some(error);
                }
                if sweep.outcome.messages.len() >= options.max as usize {
                    break 'partitions;
                }
            }
        }
    }

    /// Shards other than the owner that still hold entries of `queue`'s `partition`.
    fn old_locations(&self, queue: &str, partition: PartitionId) -> Vec<usize> {
        self.old_locations
            .lock()
            .expect("old-location lock is never held across a panic")
            .get(&(queue.to_owned(), partition.0))
            .cloned()
            .unwrap_or_default()
    }

    /// Once per queue per process (retried until every shard answered): finds streams of the
    /// queue on shards that no longer own their partition (left there by a topology change),
    /// so receive drains them.
    async fn probe_old_locations(&self, queue: &str) {
        if self
            .probed_queues
            .lock()
            .expect("probe lock is never held across a panic")
            .contains(queue)
        {
            return;
        }
        if self.shards.len() < 2 {
            self.probed_queues
                .lock()
                .expect("probe lock is never held across a panic")
                .insert(queue.to_owned());
            return;
        }
        let mut complete = true;
        let mut found: HashMap<(String, u32), Vec<usize>> = HashMap::new();
        for p in 0..self.config.partitions {
            let partition = PartitionId(p);
            let owner = self.placement[p as usize];
            for (index, shard) in self.shards.iter().enumerate() {
                if index == owner {
                    continue;
                }
                match shard.backend.info(&stream_key(queue, partition)).await {
                    Ok(Some(info)) if info.length > 0 => {
                        tracing::info!(%queue, %partition, shard = %shard.name, entries = info.length, "draining a moved partition's old location");
                        found.entry((queue.to_owned(), p)).or_default().push(index);
                    }
                    Ok(_) => {}
                    Err(_) => complete = false,
                }
            }
        }
        self.old_locations
            .lock()
            .expect("old-location lock is never held across a panic")
            .extend(found);
        if complete {
            self.probed_queues
                .lock()
                .expect("probe lock is never held across a panic")
                .insert(queue.to_owned());
        }
    }

    async fn ensure_group(
        &self,
        queue: &str,
        group: &str,
        location: Location,
    ) -> Result<(), QueueError> {
        let key = (queue.to_owned(), group.to_owned(), location);
        if self
            .groups_ready
            .lock()
            .expect("group cache lock is never held across a panic")
            .contains(&key)
        {
            return Ok(());
        }
        let shard = &self.shards[location.shard];
        shard
            .backend
            .ensure_group(&stream_key(queue, location.partition), group)
            .await
            .map_err(|e| QueueError::from_backend(&shard.name, e))?;
        self.groups_ready
            .lock()
            .expect("group cache lock is never held across a panic")
            .insert(key);
        Ok(())
    }

    fn forget_group(&self, queue: &str, group: &str, location: Location) {
        self.groups_ready
            .lock()
            .expect("group cache lock is never held across a panic")
            .remove(&(queue.to_owned(), group.to_owned(), location));
    }

    /// Whether to scan this location for idle pending entries now: a few times per
    /// visibility timeout, so redelivery is late by at most a quarter of it (and 1 s).
    fn claim_scan_due(
        &self,
        queue: &str,
        group: &str,
        location: Location,
        visibility: Duration,
    ) -> bool {
        let interval = (visibility / 4).clamp(Duration::from_millis(5), Duration::from_secs(1));
        let now = Instant::now();
        let key = (queue.to_owned(), group.to_owned(), location);
        let mut scanned = self
            .claims_scanned
            .lock()
            .expect("claim scan lock is never held across a panic");
        match scanned.get(&key) {
            Some(last) if now.duration_since(*last) < interval => false,
            _ => {
                scanned.insert(key, now);
                true
            }
        }
    }

    #[allow(clippy::too_many_arguments)] // one call site; a struct would only rename the list
    async fn receive_partition(
        &self,
        queue: &str,
        group: &str,
        consumer: &str,
        location: Location,
        visibility: Duration,
        want: usize,
        outcome: &mut Outcome,
    ) -> Result<(), QueueError> {
        let partition = location.partition;
        let shard = &self.shards[location.shard];
        let stream = stream_key(queue, partition);
        let backend_error = |e| QueueError::from_backend(&shard.name, e);
        self.ensure_group(queue, group, location).await?;
        let mut want = want;
        if self.claim_scan_due(queue, group, location, visibility) {
            let claimed = match shard
                .backend
                .claim_idle(&stream, group, consumer, visibility, want)
                .await
            {
                Err(BackendError::NoGroup) => {
                    self.forget_group(queue, group, location);
                    Vec::new()
                }
                other => other.map_err(backend_error)?,
            };
            want -= self
                .hand_out(queue, group, location, claimed, outcome)
                .await?;
        }
        if want == 0 {
            return Ok(());
        }
        let fresh = match shard.backend.read_new(&stream, group, consumer, want).await {
            Err(BackendError::NoGroup) => {
                self.forget_group(queue, group, location);
                self.ensure_group(queue, group, location).await?;
                shard
                    .backend
                    .read_new(&stream, group, consumer, want)
                    .await
                    .map_err(backend_error)?
            }
            other => other.map_err(backend_error)?,
        };
        for delivery in fresh {
            outcome
                .messages
                .push(self.received(partition, shard, delivery));
        }
        Ok(())
    }

    /// The own-pending pass of a resuming receive at one location: up to `want` of the
    /// messages pending under `consumer`, whatever their idle time.
    async fn resume_partition(
        &self,
        queue: &str,
        group: &str,
        consumer: &str,
        location: Location,
        want: usize,
        outcome: &mut Outcome,
    ) -> Result<(), QueueError> {
        let shard = &self.shards[location.shard];
        let stream = stream_key(queue, location.partition);
        let own = match shard
            .backend
            .read_own_pending(&stream, group, consumer, want)
            .await
        {
            // No group (never used here, or the shard lost its data): nothing is pending under
            // any name; the pass for new messages creates it.
            Err(BackendError::NoGroup) => {
                self.forget_group(queue, group, location);
                Vec::new()
            }
            other => other.map_err(|e| QueueError::from_backend(&shard.name, e))?,
        };
        self.hand_out(queue, group, location, own, outcome).await?;
        Ok(())
    }

    /// Adds redeliveries (claimed, or own pending read again) to `outcome`, except those now
    /// past `max_deliveries`, which go to the dead-letter stream instead. Returns how many
    /// were added.
    async fn hand_out(
        &self,
        queue: &str,
        group: &str,
        location: Location,
        deliveries: Vec<Delivery>,
        outcome: &mut Outcome,
    ) -> Result<usize, QueueError> {
        let partition = location.partition;
        let shard = &self.shards[location.shard];
        let stream = stream_key(queue, partition);
        let mut added = 0;
        for delivery in deliveries {
            if delivery.delivery_count > u64::from(self.config.max_deliveries) {
                // The backend counted this delivery, which is not made: record the ones made.
                let dead = Delivery {
                    delivery_count: delivery.delivery_count - 1,
                    ..delivery
                };
                shard
                    .backend
                    .dead_letter(&stream, group, &dead)
                    .await
                    .map_err(|e| QueueError::from_backend(&shard.name, e))?;
                tracing::info!(%queue, %group, %partition, id = %dead.id, deliveries = dead.delivery_count, "dead-lettered");
                outcome.dead_lettered += 1;
            } else {
                added += 1;
                outcome
                    .messages
                    .push(self.received(partition, shard, delivery));
            }
        }
        Ok(added)
    }

    fn received(&self, partition: PartitionId, shard: &Shard, delivery: Delivery) -> Received {
        Received {
            id: MessageId {
                partition,
                stream_id: delivery.id,
            },
            receipt: Receipt {
                partition,
                shard: shard.name.clone(),
                stream_id: delivery.id,
            },
            entry: delivery.entry,
            delivery_count: delivery.delivery_count,
        }
    }

    /// Parses receipts and groups them by (shard, partition).
    fn route(
        &self,
        receipts: &[String],
    ) -> Result<BTreeMap<(usize, PartitionId), Vec<StreamId>>, QueueError> {
        let mut routes: BTreeMap<(usize, PartitionId), Vec<StreamId>> = BTreeMap::new();
        for text in receipts {
            let unknown = |reason: String| QueueError::UnknownReceipt {
                receipt: text.clone(),
                reason,
            };
            let receipt = Receipt::parse(text).map_err(unknown)?;
            if receipt.partition.0 >= self.config.partitions {
                return Err(unknown(format!(
                    "partition {} does not exist (partitions: {})",
                    receipt.partition.0, self.config.partitions
                )));
            }
            let shard = self
                .shards
                .iter()
                .position(|s| s.name == receipt.shard)
                .ok_or_else(|| unknown(format!("shard {:?} is not configured", receipt.shard)))?;
            routes
                .entry((shard, receipt.partition))
                .or_default()
                .push(receipt.stream_id);
        }
        Ok(routes)
    }

    fn check_receipts(
        &self,
        queue: &str,
        group: &str,
        receipts: &[String],
    ) -> Result<(), QueueError> {
        Self::check_queue(queue)?;
        validate_name("group", group).map_err(QueueError::InvalidRequest)?;
        if receipts.is_empty() {
            return Err(QueueError::InvalidRequest(
                "receipts must not be empty".to_owned(),
            ));
        }
        if receipts.len() > self.config.receive_max_max as usize {
            return Err(QueueError::InvalidRequest(format!(
                "at most {} receipts per request",
                self.config.receive_max_max
            )));
        }
        Ok(())
    }

    /// Acknowledges deliveries; returns how many were still pending.
    ///
    /// # Errors
    ///
    /// A malformed receipt (nothing is acked then), or a shard that failed.
    pub async fn ack(
        &self,
        queue: &str,
        group: &str,
        receipts: &[String],
    ) -> Result<u64, QueueError> {
        self.check_receipts(queue, group, receipts)?;
        let routes = self.route(receipts)?;
        let acks = routes.iter().map(|((shard, partition), ids)| async move {
            let shard = &self.shards[*shard];
            match shard
                .backend
                .ack(&stream_key(queue, *partition), group, ids)
                .await
            {
                // A group that does not exist has nothing pending: nothing to acknowledge.
                Err(BackendError::NoGroup) => Ok(0),
                other => other.map_err(|e| QueueError::from_backend(&shard.name, e)),
            }
        });
        let mut acked = 0;
        for result in join_all(acks).await {
            acked += result?;
        }
        Ok(acked)
    }

    /// Makes deliveries claimable again, now or after `delay`.
    ///
    /// A delayed nack is a timer in this node: if the node stops first, the message simply
    /// comes back after its visibility timeout, so nothing is lost either way.
    ///
    /// # Errors
    ///
    /// A malformed receipt, a delay out of range, or a shard that failed.
    pub async fn nack(
        self: &Arc<Self>,
        queue: &str,
        group: &str,
        receipts: &[String],
        delay: Duration,
    ) -> Result<u64, QueueError> {
        self.check_receipts(queue, group, receipts)?;
        if delay.as_millis() > u128::from(self.config.nack_delay_ms_max) {
            return Err(QueueError::InvalidRequest(format!(
                "delay_ms must be at most {}",
                self.config.nack_delay_ms_max
            )));
        }
        let routes = self.route(receipts)?;
        if !delay.is_zero() {
            let service = Arc::clone(self);
            let (queue, group) = (queue.to_owned(), group.to_owned());
            let scheduled = receipts.len() as u64;
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                if let Err(error) = service.release(&queue, &group, &routes).await {
                    tracing::warn!(%queue, %group, %error, "delayed nack failed; visibility timeout will redeliver");
                }
            });
            return Ok(scheduled);
        }
        let released = self.release(queue, group, &routes).await?;
        self.notify_for(queue).notify_waiters();
        Ok(released)
    }

    async fn release(
        &self,
        queue: &str,
        group: &str,
        routes: &BTreeMap<(usize, PartitionId), Vec<StreamId>>,
    ) -> Result<u64, QueueError> {
        let mut released = 0;
        for ((shard_index, partition), ids) in routes {
            let shard = &self.shards[*shard_index];
            released += match shard
                .backend
                .release(&stream_key(queue, *partition), group, ids)
                .await
            {
                Err(BackendError::NoGroup) => 0,
                other => other.map_err(|e| QueueError::from_backend(&shard.name, e))?,
            };
            // A released entry must be claimable by the next receive, whatever the scan timer.
            self.claims_scanned
                .lock()
                .expect("claim scan lock is never held across a panic")
                .remove(&(
                    queue.to_owned(),
                    group.to_owned(),
                    Location {
                        partition: *partition,
                        shard: *shard_index,
                    },
                ));
        }
        Ok(released)
    }

    /// Per-partition statistics; a partition whose shard fails is reported `available: false`.
    ///
    /// # Errors
    ///
    /// An invalid queue name.
    pub async fn stats(&self, queue: &str) -> Result<QueueStats, QueueError> {
        Self::check_queue(queue)?;
        let rows = (0..self.config.partitions).map(|p| async move {
            let partition = PartitionId(p);
            let shard = self.shard_of(partition);
            let mut row = PartitionStats {
                partition: p,
                shard: shard.name.clone(),
                available: true,
                length: 0,
                pending: 0,
                consumers: 0,
                dead_letters: 0,
                groups: Vec::new(),
            };
            match shard.backend.info(&stream_key(queue, partition)).await {
                Ok(Some(info)) => {
                    row.length = info.length;
                    row.dead_letters = info.dead_letters;
                    row.pending = info.groups.iter().map(|g| g.pending).sum();
                    row.consumers = info.groups.iter().map(|g| g.consumers).sum();
                    row.groups = info
                        .groups
                        .into_iter()
                        .map(|g| GroupStats {
                            group: g.name,
                            pending: g.pending,
                            consumers: g.consumers,
                            last_delivered_id: g.last_delivered.to_string(),
                        })
                        .collect();
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::debug!(shard = %shard.name, %error, "stats: shard failed");
                    row.available = false;
                }
            }
            row
        });
        Ok(QueueStats {
            queue: queue.to_owned(),
            partitions: join_all(rows).await,
        })
    }

    /// Dead-lettered messages of `queue`, up to `limit` per partition.
    ///
    /// # Errors
    ///
    /// An invalid queue name, or a shard that failed.
    pub async fn dead_letters(
        &self,
        queue: &str,
        limit: usize,
    ) -> Result<Vec<DeadLetterMessage>, QueueError> {
        Self::check_queue(queue)?;
        let mut messages = Vec::new();
        for p in 0..self.config.partitions {
            let partition = PartitionId(p);
            let shard = self.shard_of(partition);
            let dead = shard
                .backend
                .dead_letters(&stream_key(queue, partition), limit)
                .await
                .map_err(|e| QueueError::from_backend(&shard.name, e))?;
            messages.extend(dead.into_iter().map(|d| {
                DeadLetterMessage {
                    id: MessageId {
                        partition,
                        stream_id: d.source_id,
                    }
                    .to_string(),
                    partition: p,
                    group: d.group,
                    delivery_count: d.delivery_count,
                    key: d.entry.key,
                    body: d.entry.body,
                }
            }));
        }
        Ok(messages)
    }

    /// Removes entries of `queue` that every group has acknowledged (MINID trimming); returns
    /// how many went. Never removes an undelivered or pending entry.
    ///
    /// # Errors
    ///
    /// An invalid queue name, or a shard that failed.
    pub async fn trim(&self, queue: &str) -> Result<u64, QueueError> {
        Self::check_queue(queue)?;
        let mut removed = 0;
        for p in 0..self.config.partitions {
            let partition = PartitionId(p);
            let mut locations = self.old_locations(queue, partition);
            locations.push(self.placement[p as usize]);
            for index in locations {
                let shard = &self.shards[index];
                let stream = stream_key(queue, partition);
                let backend_error = |e| QueueError::from_backend(&shard.name, e);
                removed += shard
                    .backend
                    .trim_acknowledged(&stream)
                    .await
                    .map_err(backend_error)?;
                if index != self.placement[p as usize] {
                    // A drained old location that every group has fully acknowledged is done.
                    let info = shard.backend.info(&stream).await.map_err(backend_error)?;
                    if info.is_none_or(|info| info.length == 0) {
                        tracing::info!(%queue, %partition, shard = %shard.name, "old location drained");
                        if let Some(old) = self
                            .old_locations
                            .lock()
                            .expect("old-location lock is never held across a panic")
                            .get_mut(&(queue.to_owned(), p))
                        {
                            old.retain(|&i| i != index);
                        }
                    }
                }
            }
        }
        Ok(removed)
    }

    /// Pings every shard; returns (name, error) for each shard that did not answer.
    pub async fn check_shards(&self) -> Vec<(String, Option<String>)> {
        join_all(self.shards.iter().map(|shard| async move {
            let result = shard.backend.ping().await;
            (shard.name.clone(), result.err().map(|e| e.to_string()))
        }))
        .await
    }
}
