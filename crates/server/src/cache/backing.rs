//! The backing store ("main memory") behind the homes: an in-process map or Redis.
//!
//! Both store each key's value together with its version and apply a write only if its version
//! is at least the stored one, atomically, so a delayed retransmission of an old write-back
//! never overwrites newer data. A delete is stored as a versioned tombstone for the same reason.
//! Failed requests are not retried here: the home retransmits unanswered backing requests on
//! its tick.

use bytes::Bytes;
use distsync_cache::{
    BackingOp, BackingRequest, BackingResponse, BackingResult, Key, LineData, Version,
};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// Prefix of every Redis key the cache writes.
const REDIS_KEY_PREFIX: &[u8] = b"distsync:cache:";

/// Stores `ARGV[2]` (the value, if `ARGV[3]` is `1`) under version `ARGV[1]` unless a newer
/// version is stored. A hash `{ver, v}`; a tombstone keeps only `ver`.
const WRITE_IF_NEWER: &str = r"
local stored = redis.call('HGET', KEYS[1], 'ver')
if stored and tonumber(stored) > tonumber(ARGV[1]) then return 0 end
if ARGV[3] == '1' then
  redis.call('HSET', KEYS[1], 'ver', ARGV[1], 'v', ARGV[2])
else
  redis.call('HSET', KEYS[1], 'ver', ARGV[1])
  redis.call('HDEL', KEYS[1], 'v')
end
return 1
";

/// Where the homes keep every key's last written-back value.
#[derive(Debug)]
pub enum BackingStore {
    /// In this process (for `distsync up` and tests): lost when the process ends.
    Memory(Mutex<HashMap<Key, LineData>>),
    /// A Redis server.
    Redis {
        /// The URL, for logs.
        url: String,
        /// Multiplexed, reconnecting connection.
        manager: ConnectionManager,
    },
}

impl BackingStore {
    /// `memory` or `redis://HOST:PORT[/DB]`.
    ///
    /// # Errors
    /// An unknown scheme or a malformed Redis URL (Redis itself is connected lazily).
    pub fn open(spec: &str, response_timeout: Duration) -> anyhow::Result<Self> {
        if spec == "memory" {
            return Ok(BackingStore::Memory(Mutex::new(HashMap::new())));
        }
        anyhow::ensure!(
            spec.starts_with("redis://"),
            "--store must be `memory` or `redis://HOST:PORT`, not {spec:?}"
        );
        let client = redis::Client::open(spec)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(500)))
            .set_response_timeout(Some(response_timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        let manager = ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(BackingStore::Redis {
            url: spec.to_string(),
            manager,
        })
    }

    /// `memory` or the Redis URL.
    pub fn describe(&self) -> String {
        match self {
            BackingStore::Memory(_) => "memory".into(),
            BackingStore::Redis { url, .. } => url.clone(),
        }
    }

    /// Carries out one request of a home.
    ///
    /// # Errors
    /// Redis failed or did not answer in time.
    pub async fn execute(&self, request: BackingRequest) -> anyhow::Result<BackingResponse> {
        let result = match self {
            BackingStore::Memory(map) => {
                let mut map = map.lock().unwrap_or_else(|poison| poison.into_inner());
                match request.op {
                    BackingOp::Read => {
                        BackingResult::Read(map.get(&request.key).cloned().unwrap_or_default())
                    }
                    BackingOp::Write(data) => {
                        let stored = map.get(&request.key).map(|d| d.version);
                        if stored.is_none_or(|version| version <= data.version) {
                            map.insert(request.key.clone(), data);
                        }
                        BackingResult::Written
                    }
                }
            }
            BackingStore::Redis { manager, .. } => {
                let mut conn = manager.clone();
                let redis_key = [REDIS_KEY_PREFIX, &request.key[..]].concat();
                match request.op {
                    BackingOp::Read => {
                        let (value, version): (Option<Vec<u8>>, Option<u64>) = redis::cmd("HMGET")
                            .arg(&redis_key)
                            .arg("v")
                            .arg("ver")
                            .query_async(&mut conn)
                            .await?;
                        BackingResult::Read(LineData {
                            value: value.map(Bytes::from),
                            version: Version(version.unwrap_or(0)),
                        })
                    }
                    BackingOp::Write(data) => {
                        let present = if data.value.is_some() { "1" } else { "0" };
                        let _: i64 = redis::cmd("EVAL")
                            .arg(WRITE_IF_NEWER)
                            .arg(1)
                            .arg(&redis_key)
                            .arg(data.version.0)
                            .arg(data.value.as_deref().unwrap_or_default())
                            .arg(present)
                            .query_async(&mut conn)
                            .await?;
                        BackingResult::Written
                    }
                }
            }
        };
        Ok(BackingResponse {
            id: request.id,
            key: request.key,
            result,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use distsync_cache::BackingRequestId;

    fn write(key: &str, value: Option<&str>, version: u64) -> BackingRequest {
        BackingRequest {
            id: BackingRequestId(version),
            key: Bytes::copy_from_slice(key.as_bytes()),
            op: BackingOp::Write(LineData {
                value: value.map(|v| Bytes::copy_from_slice(v.as_bytes())),
                version: Version(version),
            }),
        }
    }

    async fn read(store: &BackingStore, key: &str) -> LineData {
        let response = store
            .execute(BackingRequest {
                id: BackingRequestId(0),
                key: Bytes::copy_from_slice(key.as_bytes()),
                op: BackingOp::Read,
            })
            .await
            .unwrap();
        match response.result {
            BackingResult::Read(data) => data,
            BackingResult::Written => panic!("a read answered as a write"),
        }
    }

    #[tokio::test]
    async fn memory_store_never_lets_an_older_version_overwrite_a_newer_one() {
        // Proves the version rule a delayed write-back relies on, tombstones included.
        let store = BackingStore::open("memory", Duration::from_secs(1)).unwrap();
        store.execute(write("k", Some("v2"), 2)).await.unwrap();
        store.execute(write("k", Some("v1"), 1)).await.unwrap();
        assert_eq!(read(&store, "k").await.value.as_deref(), Some(&b"v2"[..]));
        store.execute(write("k", None, 3)).await.unwrap();
        store.execute(write("k", Some("v2"), 2)).await.unwrap();
        let data = read(&store, "k").await;
        assert_eq!((data.value, data.version), (None, Version(3)));
        assert_eq!(read(&store, "never").await, LineData::default());
    }

    #[test]
    fn unknown_store_specs_are_refused() {
        // Proves a typo in --store fails at start instead of silently using memory.
        assert!(BackingStore::open("mem", Duration::from_secs(1)).is_err());
        assert!(BackingStore::open("postgres://x", Duration::from_secs(1)).is_err());
    }
}
