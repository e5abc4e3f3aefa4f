//! A node dies (SIGKILL) under write-through: the others keep serving, nothing acknowledged is
//! lost from the backing store, and a request that needs the dead node fails in bounded time.

use super::common::{CacheClientError, Cluster, RedisProc, Rng, redis_command};
use distsync_api::ErrorCode;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_node_under_write_through_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisProc::start(dir.path());
    let mut cluster = Cluster::start(
        3,
        &redis.url(),
        &["--write-policy", "write-through", "--op-timeout-ms", "1000"],
    );
    let client = cluster.client();
    let names = ["c1", "c2", "c3"];
    let mut rng = Rng::new(5);
    // key -> (last acknowledged value, node that wrote it)
    let mut acked: BTreeMap<String, (String, &str)> = BTreeMap::new();
    for round in 0..3 {
        for i in 0..30 {
            let key = format!("key-{i}");
            let value = format!("r{round}-{i}");
            let node = names[rng.below(3)];
            client.put(&key, &value, Some(node)).await.unwrap();
            acked.insert(key, (value, node));
        }
    }
    let mut homes = BTreeMap::new();
    for key in acked.keys() {
        homes.insert(
            key.clone(),
            client.coherence(key, Some("c1")).await.unwrap().home,
        );
    }
    cluster.nodes[2].kill();

    // Nothing acknowledged is missing from the backing store.
    for (key, (value, _)) in &acked {
        let stored = redis_command(redis.port, &["HGET", &format!("distsync:cache:{key}"), "v"]);
        assert_eq!(stored.as_deref(), Some(value.as_str()), "{key} in redis");
    }

    // Keys homed on a survivor and last written by a survivor keep working on both survivors;
    // a key that needs the dead node answers node_unavailable in bounded time, never stale data.
    let mut served = 0;
    for (key, (value, writer)) in &acked {
        for node in ["c1", "c2"] {
            let started = Instant::now();
            let result = client.get(key, Some(node)).await;
            assert!(
                started.elapsed() < Duration::from_secs(3),
                "{key} on {node} took too long"
            );
            let independent_of_c3 = homes[key] != "c3" && *writer != "c3";
            match result {
                Ok(Some(entry)) => {
                    assert_eq!(&entry.value, value, "{key} on {node}");
                    served += 1;
                }
                Err(CacheClientError::Api { status: 503, body }) if !independent_of_c3 => {
                    assert_eq!(body.code, ErrorCode::NodeUnavailable);
                }
                other => panic!(
                    "{key} (home {}, writer {writer}) on {node}: {other:?}",
                    homes[key]
                ),
            }
        }
    }
    assert!(served >= 20, "only {served} reads served after the kill");

    // Writes to keys that do not involve the dead node still succeed and reach the store.
    for (key, (_, writer)) in &acked {
        if homes[key] != "c3" && *writer != "c3" {
            client.put(key, "after", Some("c1")).await.unwrap();
            let stored =
                redis_command(redis.port, &["HGET", &format!("distsync:cache:{key}"), "v"]);
            assert_eq!(stored.as_deref(), Some("after"));
        }
    }
}
