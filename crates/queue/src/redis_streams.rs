//! [`RedisStreams`]: a shard that is one Redis server; each partition is a Redis stream.
//!
//! Command map: append = pipelined `XADD` (no `MAXLEN`: trimming is separate and MINID-based);
//! group = `XGROUP CREATE … 0 MKSTREAM`; new = `XREADGROUP … >`; own pending = `MULTI
//! XREADGROUP … 0` + `XPENDING … consumer` `EXEC` (the read increments the counts, the listing
//! reports them); claim = `XPENDING … IDLE` then
//! `XCLAIM` (which increments the delivery counter); ack = `XACK`; release = `XCLAIM … IDLE
//! <huge> JUSTID` to the same owner (no counter increment); dead-letter = `MULTI XADD XACK
//! EXEC`; trim = `XTRIM … MINID` below every group's first pending or undelivered entry; wait
//! = `XREAD BLOCK … $` on a dedicated connection (a blocking command must not sit on the shared
//! multiplexed connection).
//!
//! Durability is Redis's: with `appendonly yes` and `appendfsync always`, Redis fsyncs the AOF
//! before it replies, so an `XADD` that returned survives SIGKILL of the server.

use crate::backend::{
    BackendError, DeadLetter, Delivery, GroupInfo, NewEntry, StreamBackend, StreamId, StreamInfo,
};
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Client, RedisError, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Idle-time value that makes a released entry claimable by any `claim_idle` (31 years).
const RELEASED_IDLE_MS: u64 = 1_000_000_000_000;
/// For each stream in KEYS, the last id delivered to group ARGV[1] (`0-0` if the stream or
/// group does not exist): one round trip for every partition of a shard.
const LAST_DELIVERED_SCRIPT: &str = r"
local out = {}
for i, key in ipairs(KEYS) do
  local id = '0-0'
  if redis.call('EXISTS', key) == 1 then
    for _, g in ipairs(redis.call('XINFO', 'GROUPS', key)) do
      local name, last
      for j = 1, #g, 2 do
        if g[j] == 'name' then name = g[j + 1] end
        if g[j] == 'last-delivered-id' then last = g[j + 1] end
      end
      if name == ARGV[1] and last then id = last end
    end
  end
  out[i] = id
end
return out
";

/// Idle dedicated connections kept per shard for blocking waits.
const WAIT_CONNECTIONS_IDLE_MAX: usize = 32;

/// A Redis server holding streams. A few [`ConnectionManager`]s (multiplexed, reconnecting),
/// taken in turn, serve every non-blocking command; blocking waits use dedicated connections
/// from a small pool.
///
/// Why more than one multiplexed connection: with `appendfsync always` Redis fsyncs once per
/// event-loop iteration, and an iteration reads at most one buffer (16 KiB) from each client.
/// Over a single connection every concurrent publish shares that one buffer, so a batch of a
/// hundred `XADD`s needs two fsyncs and the shard is fsync-bound far below its ceiling; with
/// several connections one iteration takes a buffer from each and one fsync covers them all.
pub struct RedisStreams {
    client: Client,
    managers: Box<[ConnectionManager]>,
    next_manager: AtomicUsize,
    waiters: Mutex<Vec<MultiplexedConnection>>,
    response_timeout: Duration,
}

impl std::fmt::Debug for RedisStreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStreams")
            .field("server", &self.client.get_connection_info().addr())
            .finish_non_exhaustive()
    }
}

impl RedisStreams {
    /// A backend for the server at `url` (`redis://host:port[/db]`). Connects lazily: a shard
    /// that is down at start makes only its partitions unavailable.
    ///
    /// `response_timeout` bounds every command (an fsync-always `XADD` included); past it the
    /// shard counts as unavailable for that request. `connections` multiplexed connections
    /// (at least one) carry the non-blocking commands.
    ///
    /// # Errors
    ///
    /// The URL does not parse.
    pub fn connect(
        url: &str,
        response_timeout: Duration,
        connections: usize,
    ) -> Result<Self, BackendError> {
        let client = Client::open(url).map_err(|e| BackendError::Other(format!("{url}: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(500)))
            .set_response_timeout(Some(response_timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        let managers = (0..connections.max(1))
            .map(|_| {
                ConnectionManager::new_lazy_with_config(client.clone(), config.clone())
                    .map_err(classify)
            })
            .collect::<Result<Box<[_]>, _>>()?;
        Ok(RedisStreams {
            client,
            managers,
            next_manager: AtomicUsize::new(0),
            waiters: Mutex::new(Vec::new()),
            response_timeout,
        })
    }

    /// The next command connection in turn. A command's replies come back on the connection
    /// it went out on, and commands of one request are awaited one after another, so spreading
    /// requests over connections reorders nothing a caller waited for.
    fn command_connection(&self) -> ConnectionManager {
        let turn = self.next_manager.fetch_add(1, Ordering::Relaxed);
        self.managers[turn % self.managers.len()].clone()
    }

    async fn query(&self, cmd: &redis::Cmd) -> Result<Value, BackendError> {
        let mut conn = self.command_connection();
        cmd.query_async::<Value>(&mut conn).await.map_err(classify)
    }

    async fn query_pipe(&self, pipe: &redis::Pipeline) -> Result<Vec<Value>, BackendError> {
        let mut conn = self.command_connection();
        pipe.query_async::<Vec<Value>>(&mut conn)
            .await
            .map_err(classify)
    }

    fn dlq(stream: &str) -> String {
        format!("{stream}:dlq")
    }

    async fn wait_connection(
        &self,
        block: Duration,
    ) -> Result<MultiplexedConnection, BackendError> {
        let pooled = self
            .waiters
            .lock()
            .expect("waiter pool lock is never held across a panic")
            .pop();
        let mut conn = match pooled {
            Some(conn) => conn,
            None => {
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(Duration::from_millis(500)))
                    .set_response_timeout(None);
                self.client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .map_err(classify)?
            }
        };
        conn.set_response_timeout(block + self.response_timeout);
        Ok(conn)
    }
}

/// Sorts a Redis error into "cannot reach the shard" versus "the shard said no".
fn classify(error: RedisError) -> BackendError {
    let code = error.code().unwrap_or_default();
    // A failed command inside a transaction (MULTI … EXEC) comes back as a list of the server
    // errors, whose own codes `code()` does not report.
    let no_group_in_transaction = || {
        error
            .clone()
            .into_server_errors()
            .is_some_and(|errors| errors.iter().any(|(_, e)| e.code() == "NOGROUP"))
    };
    if code == "NOGROUP" || no_group_in_transaction() {
        BackendError::NoGroup
    } else if error.is_io_error()
        || error.is_timeout()
        || error.is_connection_refusal()
        || error.is_connection_dropped()
        || matches!(
            code,
            "LOADING" | "MASTERDOWN" | "READONLY" | "MISCONF" | "TRYAGAIN"
        )
    {
        BackendError::Unavailable(error.to_string())
    } else {
        BackendError::Other(error.to_string())
    }
}

fn bad_reply(what: &str, value: &Value) -> BackendError {
    BackendError::Other(format!("unexpected reply to {what}: {value:?}"))
}

/// `XREADGROUP GROUP group consumer COUNT count STREAMS stream from`: `>` for new entries,
/// `0` for the consumer's own pending ones.
fn xreadgroup(stream: &str, group: &str, consumer: &str, count: usize, from: &str) -> redis::Cmd {
    let mut cmd = redis::cmd("XREADGROUP");
    cmd.arg("GROUP")
        .arg(group)
        .arg(consumer)
        .arg("COUNT")
        .arg(count)
        .arg("STREAMS")
        .arg(stream)
        .arg(from);
    cmd
}

/// The `(id, delivery count)` of each entry of an extended `XPENDING` reply.
fn pending_counts(reply: &Value) -> Result<Vec<(StreamId, u64)>, BackendError> {
    let items = as_array(reply).ok_or_else(|| bad_reply("XPENDING", reply))?;
    items
        .iter()
        .map(|item| {
            let Some([id, _owner, _idle, delivered]) = as_array(item) else {
                return Err(bad_reply("XPENDING entry", item));
            };
            Ok((as_id(id)?, as_u64(delivered).unwrap_or(0)))
        })
        .collect()
}

/// Deliveries of `entries`, each with its count in `counts` (an entry missing there was
/// pending, hence delivered at least twice now).
fn deliveries(entries: Vec<RawEntry>, counts: &HashMap<StreamId, u64>) -> Vec<Delivery> {
    entries
        .into_iter()
        .map(|(id, fields)| Delivery {
            id,
            entry: entry_from_fields(&fields),
            delivery_count: counts.get(&id).copied().unwrap_or(2),
        })
        .collect()
}

fn as_string(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(text) => Some(text.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        Value::Int(n) => Some(n.to_string()),
        _ => None,
    }
}

fn as_u64(value: &Value) -> Option<u64> {
    match value {
        Value::Int(n) => u64::try_from(*n).ok(),
        other => as_string(other)?.parse().ok(),
    }
}

fn as_id(value: &Value) -> Result<StreamId, BackendError> {
    as_string(value)
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| bad_reply("stream id", value))
}

fn as_array(value: &Value) -> Option<&[Value]> {
    match value {
        Value::Array(items) | Value::Set(items) => Some(items),
        _ => None,
    }
}

/// An entry as Redis returns it: id and field map.
type RawEntry = (StreamId, BTreeMap<String, String>);

/// Stream entry fields: `k` key, `b` body, `t` publish time, `h.<name>` headers; dead letters
/// add `src` (source id), `g` (group) and `n` (delivery count).
fn entry_fields(entry: &NewEntry, cmd: &mut redis::Cmd) {
    if let Some(key) = &entry.key {
        cmd.arg("k").arg(key);
    }
    cmd.arg("b").arg(&entry.body);
    cmd.arg("t").arg(entry.published_at_ms);
    for (name, value) in &entry.headers {
        cmd.arg(format!("h.{name}")).arg(value);
    }
}

fn parse_fields(value: &Value) -> Result<BTreeMap<String, String>, BackendError> {
    let mut fields = BTreeMap::new();
    match value {
        Value::Map(pairs) => {
            for (k, v) in pairs {
                if let (Some(k), Some(v)) = (as_string(k), as_string(v)) {
                    fields.insert(k, v);
                }
            }
        }
        other => {
            let items = as_array(other).ok_or_else(|| bad_reply("entry fields", other))?;
            for pair in items.chunks(2) {
                if let [k, v] = pair
                    && let (Some(k), Some(v)) = (as_string(k), as_string(v))
                {
                    fields.insert(k, v);
                }
            }
        }
    }
    Ok(fields)
}

fn entry_from_fields(fields: &BTreeMap<String, String>) -> NewEntry {
    NewEntry {
        key: fields.get("k").cloned(),
        body: fields.get("b").cloned().unwrap_or_default(),
        headers: fields
            .iter()
            .filter_map(|(k, v)| {
                k.strip_prefix("h.")
                    .map(|name| (name.to_owned(), v.clone()))
            })
            .collect(),
        published_at_ms: fields.get("t").and_then(|t| t.parse().ok()).unwrap_or(0),
    }
}

/// Parses `[[id, [field, value, …]], …]`; entries whose fields are nil (deleted) are skipped.
fn parse_entries(value: &Value) -> Result<Vec<RawEntry>, BackendError> {
    let Some(items) = as_array(value) else {
        return if matches!(value, Value::Nil) {
            Ok(Vec::new())
        } else {
            Err(bad_reply("entries", value))
        };
    };
    let mut entries = Vec::with_capacity(items.len());
    for item in items {
        let pair = as_array(item).ok_or_else(|| bad_reply("entry", item))?;
        let [id, fields] = pair else {
            return Err(bad_reply("entry", item));
        };
        if matches!(fields, Value::Nil) {
            continue;
        }
        entries.push((as_id(id)?, parse_fields(fields)?));
    }
    Ok(entries)
}

/// Parses an `XREAD`/`XREADGROUP` reply for one stream.
fn parse_read_reply(value: &Value) -> Result<Vec<RawEntry>, BackendError> {
    match value {
        Value::Nil => Ok(Vec::new()),
        Value::Map(pairs) => match pairs.first() {
            Some((_, entries)) => parse_entries(entries),
            None => Ok(Vec::new()),
        },
        other => {
            let streams = as_array(other).ok_or_else(|| bad_reply("XREADGROUP", other))?;
            match streams.first().and_then(as_array) {
                Some([_, entries]) => parse_entries(entries),
                Some(_) => Err(bad_reply("XREADGROUP", other)),
                None => Ok(Vec::new()),
            }
        }
    }
}

/// Parses a flat `[name, value, name, value …]` reply (XINFO) into a map.
fn parse_flat_map(value: &Value) -> HashMap<String, Value> {
    let mut map = HashMap::new();
    match value {
        Value::Map(pairs) => {
            for (k, v) in pairs {
                if let Some(k) = as_string(k) {
                    map.insert(k, v.clone());
                }
            }
        }
        other => {
            if let Some(items) = as_array(other) {
                for pair in items.chunks(2) {
                    if let [k, v] = pair
                        && let Some(k) = as_string(k)
                    {
                        map.insert(k, v.clone());
                    }
                }
            }
        }
    }
    map
}

impl RedisStreams {
    async fn groups(&self, stream: &str) -> Result<Vec<GroupInfo>, BackendError> {
        let reply = self
            .query(redis::cmd("XINFO").arg("GROUPS").arg(stream))
            .await?;
        let items = as_array(&reply).ok_or_else(|| bad_reply("XINFO GROUPS", &reply))?;
        let mut groups = Vec::with_capacity(items.len());
        for item in items {
            let map = parse_flat_map(item);
            let get_u64 = |name: &str| map.get(name).and_then(as_u64).unwrap_or(0);
            groups.push(GroupInfo {
                name: map.get("name").and_then(as_string).unwrap_or_default(),
                consumers: get_u64("consumers"),
                pending: get_u64("pending"),
                last_delivered: match map.get("last-delivered-id") {
                    Some(id) => as_id(id)?,
                    None => StreamId::default(),
                },
            });
        }
        Ok(groups)
    }
}

impl StreamBackend for RedisStreams {
    async fn ping(&self) -> Result<(), BackendError> {
        self.query(&redis::cmd("PING")).await.map(|_| ())
    }

    async fn append(
        &self,
        batches: &[(String, Vec<NewEntry>)],
    ) -> Result<Vec<Vec<StreamId>>, BackendError> {
        let mut pipe = redis::pipe();
        for (stream, entries) in batches {
            for entry in entries {
                let mut cmd = redis::cmd("XADD");
                cmd.arg(stream).arg("*");
                entry_fields(entry, &mut cmd);
                pipe.add_command(cmd);
            }
        }
        let replies = self.query_pipe(&pipe).await?;
        let mut replies = replies.iter();
        let mut ids = Vec::with_capacity(batches.len());
        for (_, entries) in batches {
            let mut stream_ids = Vec::with_capacity(entries.len());
            for _ in entries {
                let reply = replies.next().ok_or_else(|| {
                    BackendError::Other("XADD pipeline reply too short".to_owned())
                })?;
                stream_ids.push(as_id(reply)?);
            }
            ids.push(stream_ids);
        }
        Ok(ids)
    }

    async fn ensure_group(&self, stream: &str, group: &str) -> Result<(), BackendError> {
        let result = self
            .query(
                redis::cmd("XGROUP")
                    .arg("CREATE")
                    .arg(stream)
                    .arg(group)
                    .arg("0")
                    .arg("MKSTREAM"),
            )
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(BackendError::Other(message)) if message.contains("BUSYGROUP") => Ok(()),
            Err(error) => Err(error),
        }
    }

    async fn read_new(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        count: usize,
    ) -> Result<Vec<Delivery>, BackendError> {
        let reply = self
            .query(&xreadgroup(stream, group, consumer, count, ">"))
            .await?;
        Ok(parse_read_reply(&reply)?
            .into_iter()
            .map(|(id, fields)| Delivery {
                id,
                entry: entry_from_fields(&fields),
                delivery_count: 1,
            })
            .collect())
    }

    async fn read_own_pending(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        count: usize,
    ) -> Result<Vec<Delivery>, BackendError> {
        // Reading from ID 0 returns the consumer's pending entries (not new ones), increments
        // their delivery counters and resets their idle times, but the reply carries no count:
        // XPENDING over the same range of the same list, in the same transaction, reports the
        // counts just incremented.
        let mut pipe = redis::pipe();
        pipe.atomic()
            .add_command(xreadgroup(stream, group, consumer, count, "0"))
            .cmd("XPENDING")
            .arg(stream)
            .arg(group)
            .arg("-")
            .arg("+")
            .arg(count)
            .arg(consumer);
        let replies = self.query_pipe(&pipe).await?;
        let [read, pending] = replies.as_slice() else {
            return Err(BackendError::Other(format!(
                "own-pending transaction reply: {replies:?}"
            )));
        };
        let counts = pending_counts(pending)?.into_iter().collect();
        // Entries deleted from the stream come back with nil fields and uncounted: skipped.
        Ok(deliveries(parse_read_reply(read)?, &counts))
    }

    async fn claim_idle(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        min_idle: Duration,
        count: usize,
    ) -> Result<Vec<Delivery>, BackendError> {
        let min_idle_ms = min_idle.as_millis() as u64;
        let reply = self
            .query(
                redis::cmd("XPENDING")
                    .arg(stream)
                    .arg(group)
                    .arg("IDLE")
                    .arg(min_idle_ms)
                    .arg("-")
                    .arg("+")
                    .arg(count),
            )
            .await?;
        let pending = pending_counts(&reply)?;
        if pending.is_empty() {
            return Ok(Vec::new());
        }
        let mut claim = redis::cmd("XCLAIM");
        claim.arg(stream).arg(group).arg(consumer).arg(min_idle_ms);
        for (id, _) in &pending {
            claim.arg(id.to_string());
        }
        // XCLAIM increments the counters XPENDING reported just before.
        let counts = pending
            .into_iter()
            .map(|(id, delivered)| (id, delivered + 1))
            .collect();
        let claimed = self.query(&claim).await?;
        Ok(deliveries(parse_entries(&claimed)?, &counts))
    }

    async fn ack(&self, stream: &str, group: &str, ids: &[StreamId]) -> Result<u64, BackendError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let mut cmd = redis::cmd("XACK");
        cmd.arg(stream).arg(group);
        for id in ids {
            cmd.arg(id.to_string());
        }
        let reply = self.query(&cmd).await?;
        as_u64(&reply).ok_or_else(|| bad_reply("XACK", &reply))
    }

    async fn release(
        &self,
        stream: &str,
        group: &str,
        ids: &[StreamId],
    ) -> Result<u64, BackendError> {
        // Keep each entry with its current owner (XPENDING tells who), only reset its idle time.
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.cmd("XPENDING")
                .arg(stream)
                .arg(group)
                .arg(id.to_string())
                .arg(id.to_string())
                .arg(1);
        }
        let replies = self.query_pipe(&pipe).await?;
        let mut claims = redis::pipe();
        let mut released = 0;
        for (id, reply) in ids.iter().zip(&replies) {
            let Some([entry, ..]) = as_array(reply) else {
                continue;
            };
            let Some([_, owner, ..]) = as_array(entry) else {
                continue;
            };
            let Some(owner) = as_string(owner) else {
                continue;
            };
            claims
                .cmd("XCLAIM")
                .arg(stream)
                .arg(group)
                .arg(owner)
                .arg(0)
                .arg(id.to_string())
                .arg("IDLE")
                .arg(RELEASED_IDLE_MS)
                .arg("JUSTID");
            released += 1;
        }
        if released > 0 {
            self.query_pipe(&claims).await?;
        }
        Ok(released)
    }

    async fn dead_letter(
        &self,
        stream: &str,
        group: &str,
        delivery: &Delivery,
    ) -> Result<(), BackendError> {
        let mut add = redis::cmd("XADD");
        add.arg(Self::dlq(stream)).arg("*");
        entry_fields(&delivery.entry, &mut add);
        add.arg("src")
            .arg(delivery.id.to_string())
            .arg("g")
            .arg(group)
            .arg("n")
            .arg(delivery.delivery_count);
        let mut pipe = redis::pipe();
        pipe.atomic().add_command(add);
        pipe.cmd("XACK")
            .arg(stream)
            .arg(group)
            .arg(delivery.id.to_string());
        self.query_pipe(&pipe).await.map(|_| ())
    }

    async fn dead_letters(
        &self,
        stream: &str,
        count: usize,
    ) -> Result<Vec<DeadLetter>, BackendError> {
        let reply = self
            .query(
                redis::cmd("XRANGE")
                    .arg(Self::dlq(stream))
                    .arg("-")
                    .arg("+")
                    .arg("COUNT")
                    .arg(count),
            )
            .await?;
        parse_entries(&reply)?
            .into_iter()
            .map(|(_, fields)| {
                Ok(DeadLetter {
                    source_id: fields
                        .get("src")
                        .and_then(|id| id.parse().ok())
                        .ok_or_else(|| BackendError::Other("dead letter without src".to_owned()))?,
                    group: fields.get("g").cloned().unwrap_or_default(),
                    delivery_count: fields.get("n").and_then(|n| n.parse().ok()).unwrap_or(0),
                    entry: entry_from_fields(&fields),
                })
            })
            .collect()
    }

    async fn info(&self, stream: &str) -> Result<Option<StreamInfo>, BackendError> {
        let mut pipe = redis::pipe();
        pipe.cmd("EXISTS")
            .arg(stream)
            .cmd("XLEN")
            .arg(stream)
            .cmd("XLEN")
            .arg(Self::dlq(stream));
        let replies = self.query_pipe(&pipe).await?;
        let [exists, length, dead_letters] = replies.as_slice() else {
            return Err(BackendError::Other("info pipeline reply".to_owned()));
        };
        if as_u64(exists) != Some(1) {
            return Ok(None);
        }
        Ok(Some(StreamInfo {
            length: as_u64(length).unwrap_or(0),
            groups: self.groups(stream).await?,
            dead_letters: as_u64(dead_letters).unwrap_or(0),
        }))
    }

    async fn trim_acknowledged(&self, stream: &str) -> Result<u64, BackendError> {
        let groups = match self.groups(stream).await {
            Ok(groups) => groups,
            Err(BackendError::Other(message)) if message.contains("no such key") => return Ok(0),
            Err(error) => return Err(error),
        };
        let mut min_id: Option<StreamId> = None;
        for group in &groups {
            let keep_from = if group.pending > 0 {
                let reply = self
                    .query(redis::cmd("XPENDING").arg(stream).arg(&group.name))
                    .await?;
                match as_array(&reply) {
                    // Acknowledged since XINFO (`[0, nil, nil, nil]`): nothing is pending now,
                    // and whatever was delivered by then is acknowledged.
                    Some([_, Value::Nil, ..]) => group.last_delivered.next(),
                    Some([_, smallest, ..]) => as_id(smallest)?,
                    _ => return Err(bad_reply("XPENDING summary", &reply)),
                }
            } else {
                group.last_delivered.next()
            };
            min_id = Some(min_id.map_or(keep_from, |m| m.min(keep_from)));
        }
        // No group: nobody has consumed anything yet, so nothing may go.
        let Some(min_id) = min_id else {
            return Ok(0);
        };
        let reply = self
            .query(
                redis::cmd("XTRIM")
                    .arg(stream)
                    .arg("MINID")
                    .arg(min_id.to_string()),
            )
            .await?;
        as_u64(&reply).ok_or_else(|| bad_reply("XTRIM", &reply))
    }

    async fn wait_for_new(
        &self,
        streams: &[String],
        group: &str,
        timeout: Duration,
    ) -> Result<(), BackendError> {
        if streams.is_empty() {
            tokio::time::sleep(timeout).await;
            return Ok(());
        }
        // Wait for entries after the group's last-delivered id (not after `$`): an entry
        // appended between the caller's read and this wait then ends the wait at once instead
        // of being missed until the timeout.
        let mut ids = redis::cmd("EVAL");
        ids.arg(LAST_DELIVERED_SCRIPT).arg(streams.len());
        for stream in streams {
            ids.arg(stream);
        }
        ids.arg(group);
        let reply = self.query(&ids).await?;
        let ids: Vec<String> = as_array(&reply)
            .ok_or_else(|| bad_reply("last-delivered script", &reply))?
            .iter()
            .map(|id| as_string(id).unwrap_or_else(|| "0-0".to_owned()))
            .collect();
        if ids.len() != streams.len() {
            return Err(bad_reply("last-delivered script", &reply));
        }
        let mut conn = self.wait_connection(timeout).await?;
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT")
            .arg(1)
            .arg("BLOCK")
            .arg(timeout.as_millis().max(1) as u64)
            .arg("STREAMS");
        for stream in streams {
            cmd.arg(stream);
        }
        for id in &ids {
            cmd.arg(id);
        }
        // If this future is dropped mid-command the connection is dropped with it (its reply
        // would otherwise arrive to the next user); only completed waits return it to the pool.
        let result = cmd.query_async::<Value>(&mut conn).await.map_err(classify);
        if result.is_ok() {
            let mut pool = self
                .waiters
                .lock()
                .expect("waiter pool lock is never held across a panic");
            if pool.len() < WAIT_CONNECTIONS_IDLE_MAX {
                pool.push(conn);
            }
        }
        result.map(|_| ())
    }
}
