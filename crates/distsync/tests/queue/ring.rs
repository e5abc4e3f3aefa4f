//! Topology change: adding a shard moves partitions; messages left in a moved partition's old
//! location are still delivered (drained), none is lost. Queue nodes joining and leaving move
//! nothing: every node computes the same placement.

use crate::behaviour::{
    Ledger, consume_until_drained, produce, receive_request, spawn_producers_until,
};
use crate::common::{
    Backend, ClientError, Cluster, NodeProc, QueueClient, RedisProc, metric, ring,
};
use crate::faults::wait_acknowledged;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

async fn placement(addr: &str) -> Vec<String> {
    ring(addr)
        .await
        .placement
        .into_iter()
        .map(|p| p.shard)
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

/// Q-11's schedule (join at 30 s, leave at 60 s) compressed: each phase runs this long.
const PHASE: Duration = Duration::from_secs(3);

/// Lets the load run until `until` (the schedule), and at least 1 000 more publishes are
/// acknowledged (so a slow machine still does work in every phase).
async fn phase(ledger: &Mutex<Ledger>, until: Instant) {
    let acknowledged = ledger.lock().expect("ledger lock").acknowledged.len();
    wait_acknowledged(ledger, acknowledged + 1_000).await;
    tokio::time::sleep_until(until.into()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queue_node_joining_and_leaving_under_load_moves_nothing_and_loses_nothing() {
    // Proves Q-11 for stateless queue nodes: 2 nodes over 3 shards under load; a 3rd node
    // joins and gets its own producers and consumer (clients that try it first), then one of
    // the original nodes leaves with SIGTERM. Every node reports the same partition → shard
    // placement throughout (nodes own no partitions, so joining or leaving moves none); the
    // newcomer serves publishes and deliveries; lost = ∅; the only client errors are
    // connection failures that the caller retried, never an error answer.
    let mut cluster = Cluster::start(Backend::Redis, 3, 2, &[]);
    let placement_at_start = ring(&cluster.nodes[0].addr).await;
    assert_eq!(ring(&cluster.nodes[1].addr).await, placement_at_start);
    let shards_used: std::collections::BTreeSet<&str> = placement_at_start
        .placement
        .iter()
        .map(|p| p.shard.as_str())
        .collect();
    assert_eq!(shards_used.len(), 3, "{placement_at_start:?}");

    let started = Instant::now();
    let client = Arc::new(cluster.client());
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let (stop, done) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let consume = |client: &Arc<QueueClient>, name: &str| {
        tokio::spawn(consume_until_drained(
            client.clone(),
            "rebalance".into(),
            name.into(),
            ledger.clone(),
            done.clone(),
            Duration::from_secs(60),
        ))
    };
    let mut consumers = vec![consume(&client, "c0"), consume(&client, "c1")];
    let mut producers =
        spawn_producers_until(&client, "rebalance", "a", 2, 100, 1_000, &stop, &ledger);
    phase(&ledger, started + PHASE).await;

    // Join.
    cluster.nodes.push(NodeProc::start(&cluster.shards, &[]));
    for node in &cluster.nodes {
        assert_eq!(
            ring(&node.addr).await,
            placement_at_start,
            "{} after the join",
            node.addr
        );
    }
    let newcomer = cluster.nodes[2].addr.clone();
    let via_newcomer = Arc::new(QueueClient::new(&[
        newcomer.clone(),
        cluster.nodes[0].addr.clone(),
        cluster.nodes[1].addr.clone(),
    ]));
    consumers.push(consume(&via_newcomer, "c2"));
    producers.extend(spawn_producers_until(
        &via_newcomer,
        "rebalance",
        "b",
        1,
        100,
        1_000,
        &stop,
        &ledger,
    ));
    phase(&ledger, started + PHASE * 2).await;
    let newcomer_published = metric(&newcomer, "distsync_queue_published_total").await;
    let newcomer_delivered = metric(&newcomer, "distsync_queue_delivered_total").await;
    assert!(
        newcomer_published > 0 && newcomer_delivered > 0,
        "the new node served no traffic: published={newcomer_published} delivered={newcomer_delivered}"
    );

    // Leave: node 0, the one the first client is talking to.
    let leaver_published = metric(&cluster.nodes[0].addr, "distsync_queue_published_total").await;
    assert!(leaver_published > 0, "the leaving node served no traffic");
    let first_client_acknowledged = || {
        let ledger = ledger.lock().expect("ledger lock");
        ledger
            .acknowledged
            .iter()
            .filter(|b| b.starts_with('a'))
            .count()
    };
    let before_leave = first_client_acknowledged();
    cluster.nodes[0].stop();
    let left_at = Instant::now();
    phase(&ledger, started + PHASE * 3).await;
    assert!(
        first_client_acknowledged() > before_leave,
        "the first client's producers made no progress after its node left"
    );
    for node in &cluster.nodes[1..] {
        assert_eq!(
            ring(&node.addr).await,
            placement_at_start,
            "{} after the leave",
            node.addr
        );
    }

    stop.store(true, Ordering::SeqCst);
    for producer in producers {
        producer.await.expect("producer task");
    }
    done.store(true, Ordering::SeqCst);
    for consumer in consumers {
        consumer.await.expect("consumer task");
    }
    let ledger = ledger.lock().expect("ledger lock");
    let answered: Vec<&ClientError> = ledger
        .retried
        .iter()
        .filter(|e| !matches!(e, ClientError::Unavailable(_)))
        .collect();
    eprintln!(
        "Q-11: newcomer published={newcomer_published} delivered={newcomer_delivered}; leaver published={leaver_published}; leave to drained {:?}; retried client errors={} ({} error answers); total {:?}",
        left_at.elapsed(),
        ledger.retried.len(),
        answered.len(),
        started.elapsed()
    );
    assert!(
        answered.is_empty(),
        "error answers during join/leave: {answered:?}"
    );
    ledger.check("Q-11 queue node join and leave");
}
