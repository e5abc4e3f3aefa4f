//! Coherence across real nodes: states, freshness under concurrent readers, capacity pressure.

use super::common::{Cluster, Interval, Rng, assert_single_writer, check_reads};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_on_one_node_is_read_on_every_node_with_consistent_states() {
    // Proves cross-node coherence and the M/E/S/I states /coherence reports at each step.
    let cluster = Cluster::start(3, "memory", &[]);
    let client = cluster.client();
    client.put("colour", "red", Some("c1")).await.unwrap();
    let view = client.coherence("colour", Some("c2")).await.unwrap();
    assert_eq!(view.states["c1"], "M", "{view:?}");
    assert_eq!(view.states["c2"], "I", "{view:?}");
    assert_eq!(view.states["c3"], "I", "{view:?}");

    for node in ["c2", "c3"] {
        let entry = client
            .get("colour", Some(node))
            .await
            .unwrap()
            .expect("a value");
        assert_eq!(entry.value, "red");
        assert_eq!(entry.state, "S");
    }
    let view = client.coherence("colour", Some("c3")).await.unwrap();
    let expected: BTreeMap<String, String> = [("c1", "S"), ("c2", "S"), ("c3", "S")]
        .map(|(n, s)| (n.into(), s.into()))
        .into();
    assert_eq!(
        view.states, expected,
        "the owner dropped to S when others read"
    );

    // A write on a sharer invalidates the other copies before it is acknowledged.
    client.put("colour", "blue", Some("c2")).await.unwrap();
    let view = client.coherence("colour", Some("c1")).await.unwrap();
    assert_single_writer(&view.states);
    assert_eq!(view.states["c2"], "M", "{view:?}");
    for node in ["c1", "c2", "c3"] {
        let entry = client.get("colour", Some(node)).await.unwrap().unwrap();
        assert_eq!(entry.value, "blue", "read on {node}");
    }

    // A read of a key no one holds is granted E (even for "absent"); a delete anywhere then
    // reaches every node.
    assert!(client.get("lonely", Some("c1")).await.unwrap().is_none());
    let view = client.coherence("lonely", Some("c2")).await.unwrap();
    assert_eq!(view.states["c1"], "E", "{view:?}");
    assert_single_writer(&view.states);
    client.put("solo", "1", Some("c3")).await.unwrap();
    client.delete("solo", Some("c1")).await.unwrap();
    for node in ["c1", "c2", "c3"] {
        assert!(
            client.get("solo", Some(node)).await.unwrap().is_none(),
            "deleted on {node}"
        );
    }

    // The CLI reaches the same nodes.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_distsync"))
        .args([
            "cache",
            "get",
            "colour",
            "--node",
            "c3",
            "--endpoints",
            &cluster.endpoints(),
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let printed: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(printed["value"], "blue");
    let mut invalidations = 0;
    for node in ["c1", "c2", "c3"] {
        invalidations += client.stats(Some(node)).await.unwrap().invalidations_sent;
    }
    assert!(invalidations >= 2, "the upgrade invalidated two sharers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readers_never_see_a_value_older_than_a_completed_write() {
    // Proves freshness and monotonic reads: one writer per key writes increasing values through
    // random nodes while readers on every node read; no read may return a value older than a
    // write that completed before the read began, and no reader sees newer then older.
    let cluster = Cluster::start(3, "memory", &[]);
    let client = Arc::new(cluster.client());
    let names = ["c1", "c2", "c3"];
    let keys = ["k0", "k1", "k2", "k3"];
    let run_for = Duration::from_secs(5);
    let writes: Arc<Mutex<BTreeMap<&str, Vec<Interval>>>> = Arc::default();
    let mut tasks = Vec::new();
    for (index, key) in keys.into_iter().enumerate() {
        let client = Arc::clone(&client);
        let writes = Arc::clone(&writes);
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng::new(index as u64 + 11);
            let deadline = Instant::now() + run_for;
            let mut value = 0u64;
            while Instant::now() < deadline {
                value += 1;
                let start = Instant::now();
                let node = names[rng.below(3)];
                client
                    .put(key, &value.to_string(), Some(node))
                    .await
                    .expect("write");
                let end = Instant::now();
                writes
                    .lock()
                    .unwrap()
                    .entry(key)
                    .or_default()
                    .push(Interval { start, end, value });
            }
            Vec::new()
        }));
    }
    for (index, node) in names.into_iter().enumerate() {
        for reader in 0..2 {
            let client = Arc::clone(&client);
            tasks.push(tokio::spawn(async move {
                let mut rng = Rng::new(100 + index as u64 * 7 + reader);
                let deadline = Instant::now() + run_for;
                let mut reads = Vec::new();
                while Instant::now() < deadline {
                    let key = keys[rng.below(keys.len())];
                    let start = Instant::now();
                    let entry = client.get(key, Some(node)).await.expect("read");
                    let end = Instant::now();
                    let value = entry.map_or(0, |e| e.value.parse().expect("a number"));
                    reads.push((key, Interval { start, end, value }));
                }
                reads
            }));
        }
    }
    let mut reads_by_reader = Vec::new();
    for task in tasks {
        reads_by_reader.push(task.await.unwrap());
    }
    let writes = writes.lock().unwrap();
    let checked = check_reads(&writes, &reads_by_reader);
    let written: usize = writes.values().map(Vec::len).sum();
    assert!(
        checked > 300 && written > 40,
        "too little load: {checked} reads, {written} writes"
    );
    eprintln!("freshness: {checked} reads and {written} writes checked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_capacity_pressure_every_read_returns_the_last_write() {
    // Proves evictions (including of Modified lines) never lose or resurrect a value: 10x more
    // keys than each node's capacity, written and re-read through random nodes.
    let cluster = Cluster::start(3, "memory", &["--capacity", "20", "--policy", "lfu"]);
    let client = cluster.client();
    let names = ["c1", "c2", "c3"];
    let mut rng = Rng::new(7);
    let mut last: BTreeMap<String, String> = BTreeMap::new();
    for round in 0..2 {
        for i in 0..200 {
            let key = format!("key-{i}");
            let value = format!("v{round}-{i}");
            client
                .put(&key, &value, Some(names[rng.below(3)]))
                .await
                .unwrap();
            last.insert(key, value);
        }
        for (key, value) in &last {
            let node = names[rng.below(3)];
            let entry = client.get(key, Some(node)).await.unwrap().expect("a value");
            assert_eq!(&entry.value, value, "{key} read on {node}");
        }
    }
    let mut evictions = 0;
    for node in names {
        let stats = client.stats(Some(node)).await.unwrap();
        assert!(stats.lines <= 20, "{node} holds {} lines", stats.lines);
        evictions += stats.evictions;
    }
    assert!(evictions > 100, "only {evictions} evictions");
}
