//! A node dies (SIGKILL) under write-through: the others keep serving, nothing acknowledged is
//! lost from the backing store, and a request that needs the dead node fails in bounded time.
//! A node stopped (SIGTERM) under write-back writes back every Modified line first.

use super::common::{ClientError, Cluster, RedisProc, Rng, await_view, command, redis_command};
use distsync_api::ErrorCode;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
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
                Err(ClientError::Api { status: 503, body }) if !independent_of_c3 => {
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

/// Waits until `client` reads `expected` for `key` on `node`, failing at `deadline`. A 503 while
/// the cluster agrees on a new view is expected; any other value is lost or stale data.
async fn await_value(
    client: &super::common::CacheClient,
    key: &str,
    node: &str,
    expected: &str,
    deadline: Instant,
) {
    loop {
        match client.get(key, Some(node)).await {
            Ok(Some(entry)) => {
                assert_eq!(entry.value, expected, "{key} on {node}: lost or stale");
                return;
            }
            Err(ClientError::Api { status: 503, body }) => {
                assert_eq!(body.code, ErrorCode::NodeUnavailable);
            }
            other => panic!("{key} on {node}: {other:?}"),
        }
        assert!(
            Instant::now() < deadline,
            "{key} on {node} not served again in time"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// C-08: SIGKILL a node that homes one key and owns another in M, under write-through. Within
/// 5 s the survivors agree on a view without it and serve both keys again (the new home rebuilt
/// from the survivors; the dead owner's line reclaimed) with every acknowledged write; the
/// restarted node rejoins with a new view, serves none of its old lines, and works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_is_replaced_by_a_new_view_and_rejoins_after_restart() {
    let test_started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisProc::start(dir.path());
    let mut cluster = Cluster::start(
        3,
        &redis.url(),
        &[
            "--write-policy",
            "write-through",
            "--op-timeout-ms",
            "1000",
            "--failure-timeout-ms",
            "1000",
        ],
    );
    let client = cluster.client();
    let full_epoch = await_view(
        &client,
        &["c1", "c2", "c3"],
        &["c1", "c2", "c3"],
        Instant::now() + Duration::from_secs(5),
    )
    .await;

    // One key homed on c3 (written by c1), one homed elsewhere and owned in M by c3.
    let mut homed_on_c3 = None;
    let mut owned_by_c3 = None;
    for i in 0..200 {
        let key = format!("failover-{i}");
        let home = client.coherence(&key, Some("c1")).await.unwrap().home;
        if home == "c3" && homed_on_c3.is_none() {
            homed_on_c3 = Some(key);
        } else if home != "c3" && owned_by_c3.is_none() {
            owned_by_c3 = Some(key);
        }
    }
    let (homed_on_c3, owned_by_c3) = (homed_on_c3.unwrap(), owned_by_c3.unwrap());
    let mut acked: BTreeMap<String, String> = BTreeMap::new();
    client.put(&homed_on_c3, "h-1", Some("c1")).await.unwrap();
    acked.insert(homed_on_c3.clone(), "h-1".into());
    client.put(&owned_by_c3, "o-1", Some("c3")).await.unwrap();
    acked.insert(owned_by_c3.clone(), "o-1".into());
    let states = client.coherence(&owned_by_c3, Some("c1")).await.unwrap();
    assert_eq!(states.states["c3"], "M", "{owned_by_c3}: {states:?}");
    let mut rng = Rng::new(8);
    let names = ["c1", "c2", "c3"];
    for i in 0..30 {
        let key = format!("bulk-{i}");
        let value = format!("b-{i}");
        client
            .put(&key, &value, Some(names[rng.below(3)]))
            .await
            .unwrap();
        acked.insert(key, value);
    }

    let killed_at = Instant::now();
    cluster.nodes[2].kill();
    let failover_deadline = killed_at + Duration::from_secs(5);
    for node in ["c1", "c2"] {
        await_value(&client, &homed_on_c3, node, "h-1", failover_deadline).await;
        await_value(&client, &owned_by_c3, node, "o-1", failover_deadline).await;
    }
    let failover = killed_at.elapsed();
    let survivors_epoch =
        await_view(&client, &["c1", "c2"], &["c1", "c2"], failover_deadline).await;
    assert!(survivors_epoch > full_epoch);
    eprintln!("both keys served on both survivors {failover:?} after SIGKILL");

    // Nothing acknowledged is lost, and the survivors keep taking writes.
    for (key, value) in &acked {
        for node in ["c1", "c2"] {
            await_value(
                &client,
                key,
                node,
                value,
                Instant::now() + Duration::from_secs(3),
            )
            .await;
        }
    }
    client.put(&homed_on_c3, "h-2", Some("c2")).await.unwrap();
    client.put(&owned_by_c3, "o-2", Some("c1")).await.unwrap();
    for (key, value) in [(&homed_on_c3, "h-2"), (&owned_by_c3, "o-2")] {
        let stored = redis_command(redis.port, &["HGET", &format!("distsync:cache:{key}"), "v"]);
        assert_eq!(stored.as_deref(), Some(value), "{key} in redis");
    }

    // The restarted c3 is a fresh member of a new view; its old M line ("o-1") is gone.
    cluster.restart("c3");
    let rejoined_epoch = await_view(
        &client,
        &["c1", "c2", "c3"],
        &["c1", "c2", "c3"],
        Instant::now() + Duration::from_secs(10),
    )
    .await;
    assert!(rejoined_epoch > survivors_epoch);
    let states = client.coherence(&owned_by_c3, Some("c1")).await.unwrap();
    assert_eq!(states.states["c3"], "I", "old line of c3 kept: {states:?}");
    let deadline = Instant::now() + Duration::from_secs(5);
    await_value(&client, &owned_by_c3, "c3", "o-2", deadline).await;
    await_value(&client, &homed_on_c3, "c3", "h-2", deadline).await;
    client.put(&homed_on_c3, "h-3", Some("c3")).await.unwrap();
    client.put(&owned_by_c3, "o-3", Some("c3")).await.unwrap();
    for node in ["c1", "c2", "c3"] {
        await_value(&client, &homed_on_c3, node, "h-3", deadline).await;
        await_value(&client, &owned_by_c3, node, "o-3", deadline).await;
    }
    assert!(
        test_started.elapsed() < Duration::from_secs(40),
        "took {:?}",
        test_started.elapsed()
    );
}

/// Issue 5: a Modified line is written back on shutdown. c1 of three nodes (write-back, Redis
/// behind them) holds 40,000 keys Modified, homed on all three, when it gets SIGTERM; once it
/// has exited, Redis holds every value. A flush that started every write-back at once took
/// longer than the node's shutdown allows and left 24,762 of them unwritten; bounded, it takes
/// about half a second of the 5 s here (debug build).
#[test]
fn sigterm_writes_back_every_modified_line_of_a_full_node() {
    const KEYS: usize = 40_000;
    const BATCH: usize = 500;
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisProc::start(dir.path());
    let mut cluster = Cluster::start(
        3,
        &redis.url(),
        &["--capacity", "100000", "--write-policy", "write-back"],
    );
    let value_of = |i: usize| format!("value-{i}");
    let mut node = TcpStream::connect(&cluster.nodes[0].resp).unwrap();
    node.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    for first in (0..KEYS).step_by(BATCH) {
        let batch: Vec<u8> = (first..first + BATCH)
            .flat_map(|i| command(&["SET", &format!("shutdown-{i}"), &value_of(i)]))
            .collect();
        node.write_all(&batch).unwrap();
        let mut replies = vec![0; BATCH * b"+OK\r\n".len()];
        node.read_exact(&mut replies).unwrap();
        assert!(
            replies.chunks(5).all(|reply| reply == b"+OK\r\n"),
            "a SET failed: {}",
            String::from_utf8_lossy(&replies)
        );
    }
    drop(node);
    assert_eq!(
        redis_command(redis.port, &["DBSIZE"]).as_deref(),
        Some("0"),
        "write-back: nothing reaches redis before the shutdown"
    );
    let stopping = Instant::now();
    cluster.nodes[0].stop();
    eprintln!(
        "c1 wrote back {KEYS} lines and exited {:?} after SIGTERM",
        stopping.elapsed()
    );

    let mut stored = redis::Client::open(redis.url())
        .and_then(|client| client.get_connection())
        .expect("connecting to redis");
    let mut hgets = redis::pipe();
    for i in 0..KEYS {
        hgets.hget(format!("distsync:cache:shutdown-{i}"), "v");
    }
    let values: Vec<Option<String>> = hgets.query(&mut stored).expect("reading redis");
    let missing: Vec<usize> = (0..KEYS)
        .filter(|&i| values[i].as_deref() != Some(value_of(i).as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {KEYS} acknowledged writes are not in redis after SIGTERM, e.g. shutdown-{}",
        missing.len(),
        missing[0]
    );
}
