//! Scaling a running cache cluster: nodes that were not in the seeds' `--cluster` join under a
//! read/write load, take over their share of the ring, and leave again with SIGTERM; the seeds
//! are never restarted and no reader ever sees a stale value.

use super::common::{
    CacheClient, ClientError, Cluster, Interval, RedisProc, Rng, await_view, check_reads,
};
use distsync_api::ErrorCode;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SEEDS: [&str; 3] = ["c1", "c2", "c3"];
const KEYS: usize = 12;
const FAILURE_TIMEOUT_MS: u64 = 3_000;

/// An error a request may meet while views change: 503 `node_unavailable`. Anything else fails
/// the test.
fn tolerated(error: &ClientError) -> bool {
    matches!(error, ClientError::Api { status: 503, body } if body.code == ErrorCode::NodeUnavailable)
}

/// A key (of the form `prefix-N`) whose home is `home`, asked through `via`.
async fn key_homed_on(client: &CacheClient, prefix: &str, home: &str, via: &str) -> String {
    for i in 0..500 {
        let key = format!("{prefix}-{i}");
        if client.coherence(&key, Some(via)).await.unwrap().home == home {
            return key;
        }
    }
    panic!("no key of 500 is homed on {home}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_join_and_leave_under_load_without_a_restart_or_a_stale_read() {
    // Proves 3 -> 5 -> 3 under load: two nodes started with only the seeds in --cluster are
    // admitted by a new view on every node and home keys that work through them; on SIGTERM
    // they write back, announce that they leave and the view shrinks well before the failure
    // timeout; meanwhile one writer per key and readers on every seed check freshness and
    // monotonic reads, and at the end every seed reads at least the last acknowledged write.
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisProc::start(dir.path());
    let failure_timeout = FAILURE_TIMEOUT_MS.to_string();
    let mut cluster = Cluster::start(
        3,
        &redis.url(),
        &[
            "--failure-timeout-ms",
            &failure_timeout,
            "--op-timeout-ms",
            "1000",
        ],
    );
    let seeds = Arc::new(cluster.client());
    let boot_epoch = await_view(
        &seeds,
        &SEEDS,
        &SEEDS,
        Instant::now() + Duration::from_secs(10),
    )
    .await;

    let stop = Arc::new(AtomicBool::new(false));
    let unavailable = Arc::new(AtomicU64::new(0));
    let writes: Arc<Mutex<BTreeMap<String, Vec<Interval>>>> = Arc::default();
    let mut writers = Vec::new();
    for index in 0..KEYS {
        let (client, stop, unavailable, writes) = (
            Arc::clone(&seeds),
            Arc::clone(&stop),
            Arc::clone(&unavailable),
            Arc::clone(&writes),
        );
        writers.push(tokio::spawn(async move {
            let key = format!("scaled-{index}");
            let mut rng = Rng::new(index as u64 + 1);
            // Every attempt writes a new value, so a write that failed but was applied can
            // never be confused with an older one.
            let mut value = 0u64;
            while !stop.load(Ordering::Relaxed) {
                value += 1;
                let start = Instant::now();
                let node = SEEDS[rng.below(SEEDS.len())];
                match client.put(&key, &value.to_string(), Some(node)).await {
                    Ok(_) => {
                        writes
                            .lock()
                            .unwrap()
                            .entry(key.clone())
                            .or_default()
                            .push(Interval {
                                start,
                                end: Instant::now(),
                                value,
                            })
                    }
                    Err(error) if tolerated(&error) => {
                        unavailable.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(error) => panic!("write {key}={value} on {node}: {error:?}"),
                }
            }
            (key, value)
        }));
    }
    let mut readers = Vec::new();
    for (index, node) in SEEDS.into_iter().enumerate() {
        for reader in 0..2u64 {
            let (client, stop, unavailable) = (
                Arc::clone(&seeds),
                Arc::clone(&stop),
                Arc::clone(&unavailable),
            );
            readers.push(tokio::spawn(async move {
                let mut rng = Rng::new(100 + index as u64 * 7 + reader);
                let mut reads = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("scaled-{}", rng.below(KEYS));
                    let start = Instant::now();
                    match client.get(&key, Some(node)).await {
                        Ok(entry) => {
                            let value = entry.map_or(0, |e| e.value.parse().expect("a number"));
                            reads.push((
                                key,
                                Interval {
                                    start,
                                    end: Instant::now(),
                                    value,
                                },
                            ));
                        }
                        Err(error) if tolerated(&error) => {
                            unavailable.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(error) => panic!("read {key} on {node}: {error:?}"),
                    }
                }
                reads
            }));
        }
    }
    // Load on the 3 seeds alone for a while (a bounded period of work, not a wait for an event).
    tokio::time::sleep(Duration::from_secs(1)).await;

    // 3 -> 5: the joiners know only the seeds.
    let join_started = Instant::now();
    cluster.join("c4");
    cluster.join("c5");
    let everyone = cluster.client();
    let five = ["c1", "c2", "c3", "c4", "c5"];
    let grown_epoch = await_view(
        &everyone,
        &five,
        &five,
        join_started + Duration::from_secs(15),
    )
    .await;
    let join_time = join_started.elapsed();
    assert!(grown_epoch > boot_epoch);
    for joiner in ["c4", "c5"] {
        let key = key_homed_on(&everyone, joiner, joiner, "c1").await;
        everyone
            .put(&key, "through-the-joiner", Some(joiner))
            .await
            .unwrap();
        for node in five {
            let entry = everyone.get(&key, Some(node)).await.unwrap();
            assert_eq!(
                entry.map(|e| e.value).as_deref(),
                Some("through-the-joiner"),
                "{key} on {node}"
            );
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    // 5 -> 3: SIGTERM; the leavers say so, which must beat the failure timeout.
    let leave_started = Instant::now();
    for node in cluster
        .nodes
        .iter_mut()
        .filter(|node| node.name == "c4" || node.name == "c5")
    {
        node.stop();
    }
    let shrunk_epoch = await_view(
        &seeds,
        &SEEDS,
        &SEEDS,
        leave_started + Duration::from_secs(15),
    )
    .await;
    let leave_time = leave_started.elapsed();
    assert!(shrunk_epoch > grown_epoch);
    assert!(
        leave_time < Duration::from_millis(FAILURE_TIMEOUT_MS),
        "the view shrank only after {leave_time:?}: the leave announcement was not used"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);

    let mut last_attempt = BTreeMap::new();
    for writer in writers {
        let (key, value) = writer.await.unwrap();
        last_attempt.insert(key, value);
    }
    let mut reads_by_reader = Vec::new();
    for reader in readers {
        reads_by_reader.push(reader.await.unwrap());
    }
    let writes = std::mem::take(&mut *writes.lock().unwrap());
    let checked = check_reads(&writes, &reads_by_reader);
    // Nothing acknowledged was lost by the nodes that left (their Modified lines went back).
    for (key, attempted) in &last_attempt {
        let acked = writes
            .get(key)
            .and_then(|w| w.last())
            .map_or(0, |w| w.value);
        for node in SEEDS {
            let value = seeds
                .get(key, Some(node))
                .await
                .unwrap()
                .map_or(0, |e| e.value.parse::<u64>().unwrap());
            assert!(
                (acked..=*attempted).contains(&value),
                "{key} on {node}: {value}, acknowledged {acked}, last attempted {attempted}"
            );
        }
    }
    let written: usize = writes.values().map(Vec::len).sum();
    let unavailable = unavailable.load(Ordering::Relaxed);
    eprintln!(
        "scale 3->5->3: joined in {join_time:?}, left in {leave_time:?}; {checked} reads and \
         {written} writes checked, {unavailable} answered 503 during view changes"
    );
    assert!(
        checked > 200 && written > 50,
        "too little load: {checked} reads, {written} writes"
    );
}
