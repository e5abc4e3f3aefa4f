//! Topology change: adding a shard moves partitions; messages left in a moved partition's old
//! location are still delivered (drained), none is lost.

use crate::behaviour::{Ledger, consume_until_drained, produce, receive_request};
use crate::common::{NodeProc, QueueClient, RedisProc};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

async fn placement(addr: &str) -> Vec<String> {
    let ring: serde_json::Value = reqwest::get(format!("http://{addr}/v1/ring"))
        .await
        .expect("GET /v1/ring")
        .json()
        .await
        .expect("ring JSON");
    ring["placement"]
        .as_array()
        .expect("placement")
        .iter()
        .map(|p| p["shard"].as_str().expect("shard").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn adding_a_shard_moves_partitions_and_old_messages_are_still_delivered() {
    // Proves H-02 on the live service and the drain: with r1 alone every partition is on r1;
    // after restarting the node with r1,r2 some partitions move, only to r2; the 1 000
    // messages published before the change (100 already consumed, 50 received but not acked)
    // and 1 000 published after are all delivered.
    let dir = tempfile::tempdir().expect("tempdir");
    let r1 = RedisProc::start(&dir.path().join("r1"));
    let r2 = RedisProc::start(&dir.path().join("r2"));
    let ledger = Arc::new(Mutex::new(Ledger::default()));

    let mut before = NodeProc::start(&format!("r1={}", r1.url()), &[]);
    assert!(placement(&before.addr).await.iter().all(|s| s == "r1"));
    let client = Arc::new(QueueClient::new(std::slice::from_ref(&before.addr)));
    produce(
        client.clone(),
        "moving".into(),
        "old".into(),
        1_000,
        50,
        ledger.clone(),
    )
    .await;
    let consumed = client
        .receive(
            "moving",
            &receive_request("workers", "c", 100, 1_000, 2_000),
        )
        .await
        .expect("receive");
    crate::behaviour::record(&ledger, &consumed.messages);
    client
        .ack(
            "moving",
            "workers",
            consumed
                .messages
                .iter()
                .map(|m| m.receipt.clone())
                .collect(),
        )
        .await
        .expect("ack");
    // Received but never acked: must come back after the visibility timeout, from r1.
    let in_flight = client
        .receive(
            "moving",
            &receive_request("workers", "lost-worker", 50, 1_000, 2_000),
        )
        .await
        .expect("receive");
    assert_eq!(in_flight.messages.len(), 50);
    before.kill();

    let after = NodeProc::start(&format!("r1={},r2={}", r1.url(), r2.url()), &[]);
    let map = placement(&after.addr).await;
    let moved = map.iter().filter(|s| *s == "r2").count();
    assert!(
        moved > 0 && moved < map.len(),
        "expected some partitions to move to r2: {map:?}"
    );
    let client = Arc::new(QueueClient::new(std::slice::from_ref(&after.addr)));
    produce(
        client.clone(),
        "moving".into(),
        "new".into(),
        1_000,
        50,
        ledger.clone(),
    )
    .await;
    let done = Arc::new(AtomicBool::new(true));
    consume_until_drained(
        client,
        "moving".into(),
        "c2".into(),
        ledger.clone(),
        done,
        Duration::from_secs(60),
    )
    .await;
    ledger.lock().expect("ledger lock").check("shard added");
}
