//! [`FileStreams`]: the embedded backend. Same semantics as Redis Streams, stored in one
//! append-only log file per stream, so `distsync up` needs nothing installed.
//!
//! Each stream's whole state (entries, groups, pending lists, dead letters) is rebuilt on start
//! by replaying its log ([`log`]). Durability: appends, group creation, acknowledgements and
//! dead-lettering are fsynced before they return; deliveries, claims and releases are written
//! but not fsynced (losing them in a crash only means a redelivery with a lower count). A torn
//! tail (a record cut by a crash) is detected by its CRC and truncated on replay.
//!
//! One process owns a directory: the embedded backend is for a single queue node.

mod log;

use crate::backend::{
    BackendError, DeadLetter, Delivery, GroupInfo, NewEntry, StreamBackend, StreamId, StreamInfo,
};
use crate::service::now_ms;
use log::{Op, StreamLog};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// The embedded, file-backed backend: one directory, one log file per stream.
#[derive(Debug)]
pub struct FileStreams {
    dir: PathBuf,
    streams: Mutex<HashMap<String, Arc<Mutex<StreamState>>>>,
    /// Woken on every append; waits also end on their timeout, so a missed wake-up only delays.
    appended: Notify,
}

#[derive(Debug)]
struct Pending {
    consumer: String,
    delivered_at_ms: u64,
    count: u64,
}

#[derive(Debug, Default)]
struct Group {
    last_delivered: StreamId,
    pel: BTreeMap<StreamId, Pending>,
    consumers: BTreeSet<String>,
}

#[derive(Debug)]
struct StreamState {
    log: StreamLog,
    entries: BTreeMap<StreamId, NewEntry>,
    last_id: StreamId,
    groups: BTreeMap<String, Group>,
    dead_letters: Vec<DeadLetter>,
}

impl StreamState {
    /// Applies one operation to memory. Used both live (after logging) and on replay, so the
    /// two can never disagree.
    fn apply(&mut self, op: Op) {
        match op {
            Op::Add { id, entry } => {
                assert!(
                    id > self.last_id,
                    "stream ids must increase: {id} after {}",
                    self.last_id
                );
                self.last_id = id;
                self.entries.insert(id, entry);
            }
            Op::CreateGroup { group } => {
                self.groups.entry(group).or_default();
            }
            Op::Deliver {
                group,
                consumer,
                ids,
                at_ms,
            } => {
                let group = self.groups.entry(group).or_default();
                group.consumers.insert(consumer.clone());
                for id in ids {
                    if id > group.last_delivered {
                        group.last_delivered = id;
                    }
                    let pending = group.pel.entry(id).or_insert(Pending {
                        consumer: consumer.clone(),
                        delivered_at_ms: at_ms,
                        count: 0,
                    });
                    pending.consumer.clone_from(&consumer);
                    pending.delivered_at_ms = at_ms;
                    pending.count += 1;
                }
            }
            Op::Ack { group, ids } => {
                if let Some(group) = self.groups.get_mut(&group) {
                    for id in ids {
                        group.pel.remove(&id);
                    }
                }
            }
            Op::Release { group, ids } => {
                if let Some(group) = self.groups.get_mut(&group) {
                    for id in ids {
                        if let Some(pending) = group.pel.get_mut(&id) {
                            pending.delivered_at_ms = 0;
                        }
                    }
                }
            }
            Op::DeadLetter { group, id, count } => {
                let Some(g) = self.groups.get_mut(&group) else {
                    return;
                };
                if g.pel.remove(&id).is_none() {
                    return;
                }
                if let Some(entry) = self.entries.get(&id) {
                    self.dead_letters.push(DeadLetter {
                        source_id: id,
                        group,
                        delivery_count: count,
                        entry: entry.clone(),
                    });
                }
            }
            Op::Trim { below } => {
                self.entries = self.entries.split_off(&below);
            }
        }
    }

    fn record(&mut self, op: Op, sync: bool) -> Result<(), BackendError> {
        self.log.append(&op, sync)?;
        self.apply(op);
        Ok(())
    }

    fn next_id(&self) -> StreamId {
        let ms = now_ms();
        if ms > self.last_id.ms {
            StreamId { ms, seq: 0 }
        } else {
            self.last_id.next()
        }
    }

    fn delivery(&self, id: StreamId, count: u64) -> Option<Delivery> {
        self.entries.get(&id).map(|entry| Delivery {
            id,
            entry: entry.clone(),
            delivery_count: count,
        })
    }

    /// Hands pending entries `(id, new delivery count)` to `consumer` again, as of `at_ms`:
    /// their counts and idle times change in the log (unsynced, like every delivery).
    fn redeliver(
        &mut self,
        group: String,
        consumer: String,
        picked: Vec<(StreamId, u64)>,
        at_ms: u64,
    ) -> Result<Vec<Delivery>, BackendError> {
        if picked.is_empty() {
            return Ok(Vec::new());
        }
        let deliveries = picked
            .iter()
            .filter_map(|(id, count)| self.delivery(*id, *count))
            .collect();
        self.record(
            Op::Deliver {
                group,
                consumer,
                ids: picked.into_iter().map(|(id, _)| id).collect(),
                at_ms,
            },
            false,
        )?;
        Ok(deliveries)
    }
}

fn file_name(stream: &str) -> String {
    // Names are `[A-Za-z0-9_.-]` joined by ':'; '@' never occurs in them, so this is injective.
    format!("{}.log", stream.replace(':', "@"))
}

impl FileStreams {
    /// Opens (creating if needed) the directory and replays every stream log in it.
    ///
    /// # Errors
    ///
    /// The directory or a log cannot be read.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, BackendError> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir)
            .map_err(|e| BackendError::Other(format!("creating {}: {e}", dir.display())))?;
        let mut streams = HashMap::new();
        let listing = std::fs::read_dir(&dir)
            .map_err(|e| BackendError::Other(format!("listing {}: {e}", dir.display())))?;
        for item in listing {
            let item = item.map_err(|e| BackendError::Other(e.to_string()))?;
            let name = item.file_name().to_string_lossy().into_owned();
            let Some(stem) = name.strip_suffix(".log") else {
                continue;
            };
            let stream = stem.replace('@', ":");
            let state = Self::load(&dir.join(&name))?;
            streams.insert(stream, Arc::new(Mutex::new(state)));
        }
        tracing::info!(dir = %dir.display(), streams = streams.len(), "embedded streams opened");
        Ok(FileStreams {
            dir,
            streams: Mutex::new(streams),
            appended: Notify::new(),
        })
    }

    fn load(path: &Path) -> Result<StreamState, BackendError> {
        let (log, ops) = StreamLog::open(path)?;
        let mut state = StreamState {
            log,
            entries: BTreeMap::new(),
            last_id: StreamId::default(),
            groups: BTreeMap::new(),
            dead_letters: Vec::new(),
        };
        for op in ops {
            state.apply(op);
        }
        Ok(state)
    }

    fn stream(
        &self,
        stream: &str,
        create: bool,
    ) -> Result<Option<Arc<Mutex<StreamState>>>, BackendError> {
        let mut streams = self
            .streams
            .lock()
            .expect("stream map lock is never held across a panic");
        if let Some(state) = streams.get(stream) {
            return Ok(Some(state.clone()));
        }
        if !create {
            return Ok(None);
        }
        let state = Arc::new(Mutex::new(Self::load(&self.dir.join(file_name(stream)))?));
        streams.insert(stream.to_owned(), state.clone());
        Ok(Some(state))
    }

    /// Runs `f` on the stream's state on a blocking thread (it may fsync).
    async fn with_stream<T: Send + 'static>(
        &self,
        stream: &str,
        create: bool,
        f: impl FnOnce(&mut StreamState) -> Result<T, BackendError> + Send + 'static,
    ) -> Result<Option<T>, BackendError> {
        let Some(state) = self.stream(stream, create)? else {
            return Ok(None);
        };
        tokio::task::spawn_blocking(move || {
            let mut state = state
                .lock()
                .expect("stream lock is never held across a panic");
            f(&mut state).map(Some)
        })
        .await
        .map_err(|e| BackendError::Other(format!("embedded backend task failed: {e}")))?
    }

    async fn with_existing<T: Send + Default + 'static>(
        &self,
        stream: &str,
        f: impl FnOnce(&mut StreamState) -> Result<T, BackendError> + Send + 'static,
    ) -> Result<T, BackendError> {
        Ok(self
            .with_stream(stream, false, f)
            .await?
            .unwrap_or_default())
    }
}

impl StreamBackend for FileStreams {
    async fn ping(&self) -> Result<(), BackendError> {
        Ok(())
    }

    async fn append(
        &self,
        batches: &[(String, Vec<NewEntry>)],
    ) -> Result<Vec<Vec<StreamId>>, BackendError> {
        let mut all_ids = Vec::with_capacity(batches.len());
        for (stream, entries) in batches {
            let entries = entries.clone();
            let ids = self
                .with_stream(stream, true, move |state| {
                    let mut ids = Vec::with_capacity(entries.len());
                    let last = entries.len().saturating_sub(1);
                    for (i, entry) in entries.into_iter().enumerate() {
                        let id = state.next_id();
                        // One fsync per batch: the last record's sync covers the earlier ones.
                        state.record(Op::Add { id, entry }, i == last)?;
                        ids.push(id);
                    }
                    Ok(ids)
                })
                .await?
                .unwrap_or_default();
            all_ids.push(ids);
        }
        self.appended.notify_waiters();
        Ok(all_ids)
    }

    async fn ensure_group(&self, stream: &str, group: &str) -> Result<(), BackendError> {
        let group = group.to_owned();
        self.with_stream(stream, true, move |state| {
            if !state.groups.contains_key(&group) {
                state.record(Op::CreateGroup { group }, true)?;
            }
            Ok(())
        })
        .await
        .map(|_| ())
    }

    async fn read_new(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        count: usize,
    ) -> Result<Vec<Delivery>, BackendError> {
        let (group, consumer) = (group.to_owned(), consumer.to_owned());
        let found = self
            .with_stream(stream, false, move |state| {
                let Some(g) = state.groups.get(&group) else {
                    return Err(BackendError::NoGroup);
                };
                let ids: Vec<StreamId> = state
                    .entries
                    .range(g.last_delivered.next()..)
                    .take(count)
                    .map(|(id, _)| *id)
                    .collect();
                if ids.is_empty() {
                    return Ok(Vec::new());
                }
                let deliveries = ids.iter().filter_map(|id| state.delivery(*id, 1)).collect();
                state.record(
                    Op::Deliver {
                        group,
                        consumer,
                        ids,
                        at_ms: now_ms(),
                    },
                    false,
                )?;
                Ok(deliveries)
            })
            .await?;
        found.ok_or(BackendError::NoGroup)
    }

    async fn read_own_pending(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        count: usize,
    ) -> Result<Vec<Delivery>, BackendError> {
        let (group, consumer) = (group.to_owned(), consumer.to_owned());
        let found = self
            .with_stream(stream, false, move |state| {
                let Some(g) = state.groups.get(&group) else {
                    return Err(BackendError::NoGroup);
                };
                // Like Redis's read of a consumer's pending list from ID 0: its first `count`
                // entries, and of those only the ones still in the stream are delivered and
                // counted.
                let own: Vec<(StreamId, u64)> = g
                    .pel
                    .iter()
                    .filter(|(_, p)| p.consumer == consumer)
                    .take(count)
                    .filter(|(id, _)| state.entries.contains_key(id))
                    .map(|(id, p)| (*id, p.count + 1))
                    .collect();
                state.redeliver(group, consumer, own, now_ms())
            })
            .await?;
        found.ok_or(BackendError::NoGroup)
    }

    async fn claim_idle(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        min_idle: Duration,
        count: usize,
    ) -> Result<Vec<Delivery>, BackendError> {
        let (group, consumer) = (group.to_owned(), consumer.to_owned());
        let min_idle_ms = min_idle.as_millis() as u64;
        self.with_existing(stream, move |state| {
            let Some(g) = state.groups.get(&group) else {
                return Err(BackendError::NoGroup);
            };
            let now = now_ms();
            let claimed: Vec<(StreamId, u64)> = g
                .pel
                .iter()
                .filter(|(_, p)| now.saturating_sub(p.delivered_at_ms) >= min_idle_ms)
                .take(count)
                .map(|(id, p)| (*id, p.count + 1))
                .collect();
            state.redeliver(group, consumer, claimed, now)
        })
        .await
    }

    async fn ack(&self, stream: &str, group: &str, ids: &[StreamId]) -> Result<u64, BackendError> {
        let (group, ids) = (group.to_owned(), ids.to_vec());
        self.with_existing(stream, move |state| {
            let Some(g) = state.groups.get(&group) else {
                return Ok(0);
            };
            let pending: Vec<StreamId> = ids
                .into_iter()
                .filter(|id| g.pel.contains_key(id))
                .collect();
            let n = pending.len() as u64;
            if n > 0 {
                state.record(
                    Op::Ack {
                        group,
                        ids: pending,
                    },
                    true,
                )?;
            }
            Ok(n)
        })
        .await
    }

    async fn release(
        &self,
        stream: &str,
        group: &str,
        ids: &[StreamId],
    ) -> Result<u64, BackendError> {
        let (group, ids) = (group.to_owned(), ids.to_vec());
        let released = self
            .with_existing(stream, move |state| {
                let Some(g) = state.groups.get(&group) else {
                    return Ok(0);
                };
                let pending: Vec<StreamId> = ids
                    .into_iter()
                    .filter(|id| g.pel.contains_key(id))
                    .collect();
                let n = pending.len() as u64;
                if n > 0 {
                    state.record(
                        Op::Release {
                            group,
                            ids: pending,
                        },
                        false,
                    )?;
                }
                Ok(n)
            })
            .await?;
        self.appended.notify_waiters();
        Ok(released)
    }

    async fn dead_letter(
        &self,
        stream: &str,
        group: &str,
        delivery: &Delivery,
    ) -> Result<(), BackendError> {
        let (group, id, count) = (group.to_owned(), delivery.id, delivery.delivery_count);
        self.with_existing(stream, move |state| {
            state.record(Op::DeadLetter { group, id, count }, true)
        })
        .await
    }

    async fn dead_letters(
        &self,
        stream: &str,
        count: usize,
    ) -> Result<Vec<DeadLetter>, BackendError> {
        self.with_existing(stream, move |state| {
            Ok(state.dead_letters.iter().take(count).cloned().collect())
        })
        .await
    }

    async fn info(&self, stream: &str) -> Result<Option<StreamInfo>, BackendError> {
        self.with_stream(stream, false, |state| {
            Ok(StreamInfo {
                length: state.entries.len() as u64,
                groups: state
                    .groups
                    .iter()
                    .map(|(name, g)| GroupInfo {
                        name: name.clone(),
                        consumers: g.consumers.len() as u64,
                        pending: g.pel.len() as u64,
                        last_delivered: g.last_delivered,
                    })
                    .collect(),
                dead_letters: state.dead_letters.len() as u64,
            })
        })
        .await
    }

    async fn trim_acknowledged(&self, stream: &str) -> Result<u64, BackendError> {
        self.with_existing(stream, |state| {
            let below = state
                .groups
                .values()
                .map(|g| match g.pel.keys().next() {
                    Some(first_pending) => *first_pending,
                    None => g.last_delivered.next(),
                })
                .min();
            let Some(below) = below else {
                return Ok(0);
            };
            let removed = state.entries.range(..below).count() as u64;
            if removed > 0 {
                state.record(Op::Trim { below }, true)?;
            }
            Ok(removed)
        })
        .await
    }

    async fn wait_for_new(
        &self,
        _streams: &[String],
        _group: &str,
        timeout: Duration,
    ) -> Result<(), BackendError> {
        let _ = tokio::time::timeout(timeout, self.appended.notified()).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(body: &str) -> NewEntry {
        NewEntry {
            key: None,
            body: body.to_owned(),
            headers: BTreeMap::new(),
            published_at_ms: 1,
        }
    }

    #[tokio::test]
    async fn own_pending_read_skips_an_entry_gone_from_the_stream_without_counting_it() {
        // Proves parity with Redis's `XREADGROUP … 0` on an entry deleted while pending (the
        // reply has it with nil fields and its counter stays): it is not delivered, not
        // counted, and stays pending; the entries after it are delivered with count 2.
        let dir = tempfile::tempdir().expect("tempdir");
        let backend = FileStreams::open(dir.path()).expect("open");
        let s = "dsq:gone:p0";
        let ids = backend
            .append(&[(s.to_owned(), vec![entry("a"), entry("b"), entry("c")])])
            .await
            .expect("append")
            .remove(0);
        backend.ensure_group(s, "g").await.expect("group");
        assert_eq!(
            backend.read_new(s, "g", "c", 3).await.expect("read").len(),
            3
        );
        let state = backend.stream(s, false).expect("stream").expect("exists");
        // Our trim never goes past a pending entry; applied directly, it stands for XDEL.
        state
            .lock()
            .expect("stream lock")
            .apply(Op::Trim { below: ids[1] });
        let own = backend
            .read_own_pending(s, "g", "c", 10)
            .await
            .expect("own pending");
        assert_eq!(
            own.iter()
                .map(|d| (d.id, d.delivery_count))
                .collect::<Vec<_>>(),
            vec![(ids[1], 2), (ids[2], 2)]
        );
        let state = state.lock().expect("stream lock");
        let pending = &state.groups["g"].pel[&ids[0]];
        assert_eq!((pending.consumer.as_str(), pending.count), ("c", 1));
    }
}
