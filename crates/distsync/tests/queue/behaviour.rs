//! The behavioural suite, run against both backends: each scenario is one async fn taking the
//! backend, instantiated twice by `both_backends!`.

use crate::common::{Backend, ClientError, Cluster, QueueClient};
use distsync_api::{PublishMessage, ReceiveRequest, ReceivedMessage};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

macro_rules! both_backends {
    ($name:ident) => {
        mod $name {
            use crate::common::Backend;
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn redis() {
                super::$name(Backend::Redis).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn embedded() {
                super::$name(Backend::Embedded).await;
            }
        }
    };
}

pub fn message(body: String) -> PublishMessage {
    PublishMessage {
        key: None,
        body,
        headers: None,
    }
}

pub fn receive_request(
    group: &str,
    consumer: &str,
    max: u32,
    wait_ms: u64,
    visibility_ms: u64,
) -> ReceiveRequest {
    ReceiveRequest {
        group: group.to_owned(),
        consumer: consumer.to_owned(),
        max,
        wait_ms,
        visibility_ms,
        resume: false,
    }
}

/// What producers had acknowledged and what consumers received (the total-queue model).
#[derive(Debug, Default)]
pub struct Ledger {
    pub acknowledged: HashSet<String>,
    pub attempted: HashSet<String>,
    pub deliveries: HashMap<String, u32>,
    /// Errors the client handed back (after its own failover) that the caller then retried.
    pub retried: Vec<ClientError>,
}

impl Ledger {
    pub fn lost(&self) -> Vec<String> {
        let mut lost: Vec<String> = self
            .acknowledged
            .iter()
            .filter(|body| !self.deliveries.contains_key(*body))
            .cloned()
            .collect();
        lost.sort();
        lost
    }

    /// Whether every acknowledged message was delivered: [`Ledger::lost`] is empty. Cheap while
    /// many are missing (it stops at the first), which matters to consumers asking after every
    /// batch.
    pub fn all_delivered(&self) -> bool {
        self.acknowledged
            .iter()
            .all(|body| self.deliveries.contains_key(body))
    }

    pub fn duplicates(&self) -> u64 {
        self.deliveries
            .values()
            .map(|&n| u64::from(n.saturating_sub(1)))
            .sum()
    }

    pub fn unexpected(&self) -> Vec<String> {
        self.deliveries
            .keys()
            .filter(|body| !self.attempted.contains(*body))
            .cloned()
            .collect()
    }

    /// Asserts lost = unexpected = ∅ and prints the report.
    pub fn check(&self, label: &str) {
        let lost = self.lost();
        let unexpected = self.unexpected();
        let recovered = self
            .deliveries
            .keys()
            .filter(|b| !self.acknowledged.contains(*b))
            .count();
        println!(
            "{label}: acknowledged={} attempted={} delivered_unique={} duplicates={} recovered_unacknowledged={} lost={} unexpected={} retried_client_errors={}",
            self.acknowledged.len(),
            self.attempted.len(),
            self.deliveries.len(),
            self.duplicates(),
            recovered,
            lost.len(),
            unexpected.len(),
            self.retried.len()
        );
        assert!(
            lost.is_empty(),
            "{label}: {} acknowledged messages never delivered, e.g. {:?}",
            lost.len(),
            &lost[..lost.len().min(5)]
        );
        assert!(
            unexpected.is_empty(),
            "{label}: delivered messages nobody published: {unexpected:?}"
        );
    }
}

/// Publishes `count` messages named `{prefix}-{seq}` in batches, retrying a failed batch
/// until it succeeds (a retry after an indeterminate failure may duplicate, never lose).
pub async fn produce(
    client: Arc<QueueClient>,
    queue: String,
    prefix: String,
    count: usize,
    batch: usize,
    ledger: Arc<Mutex<Ledger>>,
) {
    let mut seq = 0;
    while seq < count {
        let n = batch.min(count - seq);
        let bodies: Vec<String> = (seq..seq + n).map(|i| format!("{prefix}-{i}")).collect();
        ledger
            .lock()
            .expect("ledger lock")
            .attempted
            .extend(bodies.iter().cloned());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match client
                .publish(&queue, bodies.iter().cloned().map(message).collect())
                .await
            {
                Ok(ids) => {
                    assert_eq!(ids.len(), n);
                    ledger
                        .lock()
                        .expect("ledger lock")
                        .acknowledged
                        .extend(bodies.iter().cloned());
                    break;
                }
                Err(error) => {
                    assert!(Instant::now() < deadline, "publish kept failing: {error}");
                    ledger.lock().expect("ledger lock").retried.push(error);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        seq += n;
    }
}

/// `producers` tasks running [`produce`] on `queue`, each publishing `count` messages named
/// `p{index}-{seq}` in batches of `batch`.
pub fn spawn_producers(
    client: &Arc<QueueClient>,
    queue: &str,
    producers: usize,
    count: usize,
    batch: usize,
    ledger: &Arc<Mutex<Ledger>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..producers)
        .map(|p| {
            tokio::spawn(produce(
                Arc::clone(client),
                queue.to_string(),
                format!("p{p}"),
                count,
                batch,
                Arc::clone(ledger),
            ))
        })
        .collect()
}

/// `consumers` tasks running [`consume_until_drained`] on `queue`, named `c{index}`.
pub fn spawn_consumers(
    client: &Arc<QueueClient>,
    queue: &str,
    consumers: usize,
    ledger: &Arc<Mutex<Ledger>>,
    done: &Arc<std::sync::atomic::AtomicBool>,
    limit: Duration,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..consumers)
        .map(|i| {
            tokio::spawn(consume_until_drained(
                Arc::clone(client),
                queue.to_string(),
                format!("c{i}"),
                Arc::clone(ledger),
                Arc::clone(done),
                limit,
            ))
        })
        .collect()
}

/// `producers` tasks publishing chunks of `chunk` messages (named `{prefix}{index}-{chunk}-{seq}`,
/// batches of 10) until `stop` is set, so the load lasts as long as a fault schedule however
/// fast the machine is; at most `chunks_max` chunks each.
#[allow(clippy::too_many_arguments)] // the scenario's knobs, named at each call site
pub fn spawn_producers_until(
    client: &Arc<QueueClient>,
    queue: &str,
    prefix: &str,
    producers: usize,
    chunk: usize,
    chunks_max: usize,
    stop: &Arc<std::sync::atomic::AtomicBool>,
    ledger: &Arc<Mutex<Ledger>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..producers)
        .map(|p| {
            let (client, ledger, stop) = (client.clone(), ledger.clone(), stop.clone());
            let (queue, prefix) = (queue.to_owned(), format!("{prefix}{p}"));
            tokio::spawn(async move {
                for n in 0..chunks_max {
                    if stop.load(std::sync::atomic::Ordering::SeqCst) {
                        return;
                    }
                    let prefix = format!("{prefix}-{n}");
                    produce(
                        client.clone(),
                        queue.clone(),
                        prefix,
                        chunk,
                        10,
                        ledger.clone(),
                    )
                    .await;
                }
            })
        })
        .collect()
}

/// Receives and acks until every acknowledged publish was delivered (and `done` says the
/// producers finished), retrying failed calls; gives up after `limit`.
pub async fn consume_until_drained(
    client: Arc<QueueClient>,
    queue: String,
    consumer: String,
    ledger: Arc<Mutex<Ledger>>,
    done: Arc<std::sync::atomic::AtomicBool>,
    limit: Duration,
) {
    let request = receive_request("workers", &consumer, 100, 300, 5_000);
    let deadline = Instant::now() + limit;
    loop {
        {
            let ledger = ledger.lock().expect("ledger lock");
            if done.load(std::sync::atomic::Ordering::SeqCst) && ledger.all_delivered() {
                return;
            }
        }
        if Instant::now() > deadline {
            return;
        }
        let response = match client.receive(&queue, &request).await {
            Ok(response) => response,
            Err(error) => {
                ledger.lock().expect("ledger lock").retried.push(error);
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let receipts: Vec<String> = response
            .messages
            .iter()
            .map(|m| m.receipt.clone())
            .collect();
        record(&ledger, &response.messages);
        if !receipts.is_empty() {
            // A failed ack only means a redelivery later: the message was recorded.
            if let Err(error) = client.ack(&queue, "workers", receipts).await {
                ledger.lock().expect("ledger lock").retried.push(error);
            }
        }
    }
}

pub fn record(ledger: &Mutex<Ledger>, messages: &[ReceivedMessage]) {
    let mut ledger = ledger.lock().expect("ledger lock");
    for m in messages {
        *ledger.deliveries.entry(m.body.clone()).or_default() += 1;
    }
}

#[test]
fn ledger_reports_an_acknowledged_message_nobody_received_as_lost() {
    // Proves the checker can fail: one acknowledged message missing from the deliveries is
    // reported lost (and `check` panics on it); one delivered twice counts one duplicate.
    let mut ledger = Ledger::default();
    for body in ["a", "b", "c"] {
        ledger.attempted.insert(body.into());
        ledger.acknowledged.insert(body.into());
    }
    ledger.deliveries.insert("a".into(), 2);
    ledger.deliveries.insert("c".into(), 1);
    assert_eq!(ledger.lost(), vec!["b".to_owned()]);
    assert_eq!(ledger.duplicates(), 1);
    let panicked = std::panic::catch_unwind(|| ledger.check("negative control")).is_err();
    assert!(panicked, "check accepted a lost message");
    ledger.deliveries.insert("b".into(), 1);
    ledger.check("healed control");
}

both_backends!(four_producers_and_four_consumers_lose_nothing);
async fn four_producers_and_four_consumers_lose_nothing(backend: Backend) {
    // Proves Q-01 (the fault-free baseline) and at-least-once under concurrency: 4 producers ×
    // 25 000 messages and 4 consumers at once; every acknowledged publish is delivered
    // (lost = ∅), none twice (no fault, and every batch is acked well within its visibility),
    // and the queue drains within 30 s of the last publish.
    const PER_PRODUCER: usize = 25_000;
    let cluster = Cluster::start(backend, 2, 1, &[]);
    let client = Arc::new(cluster.client());
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let started = Instant::now();
    let consumers = spawn_consumers(&client, "load", 4, &ledger, &done, Duration::from_secs(120));
    let producers = spawn_producers(&client, "load", 4, PER_PRODUCER, 100, &ledger);
    for producer in producers {
        producer.await.expect("producer task");
    }
    let published_at = Instant::now();
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    for consumer in consumers {
        consumer.await.expect("consumer task");
    }
    let drain = published_at.elapsed();
    println!(
        "{backend:?}: {} messages published in {:?}, drained {drain:?} after the last publish",
        4 * PER_PRODUCER,
        published_at - started
    );
    let ledger = ledger.lock().expect("ledger lock");
    assert_eq!(ledger.acknowledged.len(), 4 * PER_PRODUCER);
    ledger.check(&format!("{backend:?} Q-01"));
    assert_eq!(ledger.duplicates(), 0, "duplicates without any fault");
    assert!(
        drain <= Duration::from_secs(30),
        "the queue took {drain:?} to drain after the last publish"
    );
}

both_backends!(crashed_consumer_messages_are_redelivered_after_visibility_timeout);
async fn crashed_consumer_messages_are_redelivered_after_visibility_timeout(backend: Backend) {
    // Proves redelivery: consumer A takes 10 messages and "crashes" (never acks); after the
    // visibility timeout consumer B gets exactly those 10 with delivery_count >= 2, and not
    // before the timeout.
    let cluster = Cluster::start(backend, 1, 1, &[]);
    let client = cluster.client();
    let bodies: Vec<String> = (0..10).map(|i| format!("m{i}")).collect();
    client
        .publish("jobs", bodies.iter().cloned().map(message).collect())
        .await
        .expect("publish");
    let visibility_ms = 800;
    let taken = client
        .receive("jobs", &receive_request("g", "a", 10, 2_000, visibility_ms))
        .await
        .expect("receive a");
    assert_eq!(taken.messages.len(), 10);
    assert!(taken.messages.iter().all(|m| m.delivery_count == 1));
    let crashed_at = Instant::now();
    // B asks at once: nothing new, and A's deliveries are not idle long enough yet.
    let early = client
        .receive("jobs", &receive_request("g", "b", 10, 0, visibility_ms))
        .await
        .expect("receive b early");
    assert!(
        early.messages.is_empty(),
        "redelivered before the visibility timeout: {early:?}"
    );
    let mut again: Vec<ReceivedMessage> = Vec::new();
    while again.len() < 10 {
        assert!(
            crashed_at.elapsed() < Duration::from_secs(10),
            "not redelivered in time"
        );
        let response = client
            .receive("jobs", &receive_request("g", "b", 10, 2_000, visibility_ms))
            .await
            .expect("receive b");
        again.extend(response.messages);
    }
    assert!(crashed_at.elapsed() >= Duration::from_millis(visibility_ms));
    let mut got: Vec<String> = again.iter().map(|m| m.body.clone()).collect();
    got.sort();
    let mut want = bodies.clone();
    want.sort();
    assert_eq!(got, want);
    assert!(again.iter().all(|m| m.delivery_count >= 2), "{again:?}");
    let acked = client
        .ack(
            "jobs",
            "g",
            again.iter().map(|m| m.receipt.clone()).collect(),
        )
        .await
        .expect("ack");
    assert_eq!(acked, 10);
    let stats = client.stats("jobs").await.expect("stats");
    assert_eq!(stats.partitions.iter().map(|p| p.pending).sum::<u64>(), 0);
}

both_backends!(restarted_consumer_gets_its_own_pending_messages_first_with_resume);
async fn restarted_consumer_gets_its_own_pending_messages_first_with_resume(backend: Backend) {
    // Proves `resume`: consumer A takes 10 messages and dies without acking (visibility 60 s).
    // Restarted without `resume` (the control) it gets only new messages, none of its 10;
    // restarted with it, it gets exactly its 10 first, with delivery_count 2 and `resumed` 10,
    // then the new ones. Another consumer's `resume` gets none of A's. A page of own pending
    // messages as large as `max` says so (`resumed` == max).
    let cluster = Cluster::start(backend, 2, 1, &[]);
    let client = cluster.client();
    let visibility_ms = 60_000;
    let bodies = |prefix: &str, range: std::ops::Range<usize>| -> Vec<String> {
        range.map(|i| format!("{prefix}-{i}")).collect()
    };
    let publish = |batch: Vec<String>| {
        let client = &client;
        async move {
            client
                .publish("jobs", batch.into_iter().map(message).collect())
                .await
                .expect("publish")
        }
    };
    let resume_request = |consumer: &str, max: u32| ReceiveRequest {
        resume: true,
        ..receive_request("g", consumer, max, 0, visibility_ms)
    };
    let sorted = |messages: &[ReceivedMessage]| {
        let mut got: Vec<String> = messages.iter().map(|m| m.body.clone()).collect();
        got.sort();
        got
    };
    let old = bodies("old", 0..10);
    publish(old.clone()).await;
    let taken = client
        .receive("jobs", &receive_request("g", "a", 10, 2_000, visibility_ms))
        .await
        .expect("receive a");
    assert_eq!(sorted(&taken.messages), old);
    assert_eq!(taken.resumed, 0);
    publish(bodies("new", 0..5)).await;

    // Control: a plain receive of the restarted A gets the new messages, not its own.
    let plain = client
        .receive("jobs", &receive_request("g", "a", 20, 0, visibility_ms))
        .await
        .expect("plain receive");
    assert_eq!(sorted(&plain.messages), bodies("new", 0..5), "{plain:?}");
    assert!(plain.messages.iter().all(|m| m.delivery_count == 1));
    assert_eq!(plain.resumed, 0);
    let acked = client
        .ack(
            "jobs",
            "g",
            plain.messages.iter().map(|m| m.receipt.clone()).collect(),
        )
        .await
        .expect("ack the control's");
    assert_eq!(acked, 5);

    // Someone else's resume is not A's.
    publish(bodies("new", 5..10)).await;
    let other = client
        .receive(
            "jobs",
            &ReceiveRequest {
                max: 1,
                ..resume_request("b", 20)
            },
        )
        .await
        .expect("b resumes");
    assert_eq!(other.resumed, 0, "{other:?}");
    assert!(
        other.messages.iter().all(|m| m.body.starts_with("new-")),
        "{other:?}"
    );
    let mut fresh = other.messages;

    // A restarts with resume: its 10 first, counted, then new ones.
    let resumed = client
        .receive("jobs", &resume_request("a", 20))
        .await
        .expect("a resumes");
    assert_eq!(resumed.resumed, 10, "{resumed:?}");
    let (own, after) = resumed.messages.split_at(10);
    assert_eq!(sorted(own), old);
    assert!(own.iter().all(|m| m.delivery_count == 2), "{own:?}");
    assert!(
        after
            .iter()
            .all(|m| m.body.starts_with("new-") && m.delivery_count == 1),
        "{after:?}"
    );
    fresh.extend(after.iter().cloned());
    assert_eq!(sorted(&fresh), bodies("new", 5..10));

    // 14 are pending under A now: a page of 4 is all its own and says so.
    let page = client
        .receive("jobs", &resume_request("a", 4))
        .await
        .expect("a resumes a page");
    assert_eq!((page.messages.len(), page.resumed), (4, 4), "{page:?}");
    assert!(
        page.messages.iter().all(|m| m.delivery_count >= 2),
        "{page:?}"
    );

    let receipts: Vec<String> = resumed
        .messages
        .iter()
        .chain(&fresh)
        .map(|m| m.receipt.clone())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(client.ack("jobs", "g", receipts).await.expect("ack"), 15);
    let stats = client.stats("jobs").await.expect("stats");
    assert_eq!(stats.partitions.iter().map(|p| p.pending).sum::<u64>(), 0);
}

both_backends!(resumed_message_past_max_deliveries_is_dead_lettered);
async fn resumed_message_past_max_deliveries_is_dead_lettered(backend: Backend) {
    // Proves a resume read counts as a delivery: with --max-deliveries 2, a message received
    // once and then resumed once (count 2) is dead-lettered, with count 2, by the next resume
    // instead of being handed out a third time.
    let cluster = Cluster::start(backend, 1, 1, &["--max-deliveries", "2"]);
    let client = cluster.client();
    client
        .publish("work", vec![message("poison".into())])
        .await
        .expect("publish");
    let resume = ReceiveRequest {
        resume: true,
        ..receive_request("g", "c", 10, 0, 60_000)
    };
    let first = client
        .receive("work", &receive_request("g", "c", 10, 2_000, 60_000))
        .await
        .expect("receive");
    assert_eq!(first.messages.len(), 1);
    let second = client.receive("work", &resume).await.expect("resume");
    assert_eq!(second.messages.len(), 1);
    assert_eq!((second.messages[0].delivery_count, second.resumed), (2, 1));
    let third = client.receive("work", &resume).await.expect("resume again");
    assert!(third.messages.is_empty(), "{third:?}");
    let dead = dead_letters(&cluster).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["body"], "poison");
    assert_eq!(dead[0]["delivery_count"], 2);
    let stats = client.stats("work").await.expect("stats");
    assert_eq!(stats.partitions.iter().map(|p| p.pending).sum::<u64>(), 0);
}

both_backends!(poison_message_is_dead_lettered_after_exactly_n_deliveries);
async fn poison_message_is_dead_lettered_after_exactly_n_deliveries(backend: Backend) {
    // Proves Q-10: of 100 messages, 10 chosen ones fail in every handler (nacked each time).
    // With the default --max-deliveries 5 each of them is delivered exactly 5 times (counts 1
    // to 5), then appears exactly once in the dead letters with its count; the 90 good ones are
    // delivered once each; at the end nothing is pending and nothing more is delivered.
    const MAX_DELIVERIES: u64 = 5;
    let cluster = Cluster::start(backend, 1, 1, &[]);
    let client = cluster.client();
    let poison: HashSet<String> = (0..10).map(|i| format!("poison-{i}")).collect();
    let batch: Vec<PublishMessage> = (0..100)
        .map(|i| {
            if i % 10 == 3 {
                message(format!("poison-{}", i / 10))
            } else {
                message(format!("good-{i}"))
            }
        })
        .collect();
    client.publish("work", batch).await.expect("publish");
    let mut deliveries: HashMap<String, Vec<u64>> = HashMap::new();
    let started = Instant::now();
    let dead = loop {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "not every poison message was dead-lettered: deliveries {deliveries:?}"
        );
        let response = client
            .receive("work", &receive_request("g", "c", 100, 300, 200))
            .await
            .expect("receive");
        for m in &response.messages {
            deliveries
                .entry(m.body.clone())
                .or_default()
                .push(m.delivery_count);
            if poison.contains(&m.body) {
                client
                    .nack("work", "g", vec![m.receipt.clone()], None)
                    .await
                    .expect("nack");
            } else {
                client
                    .ack("work", "g", vec![m.receipt.clone()])
                    .await
                    .expect("ack");
            }
        }
        let dead = dead_letters(&cluster).await;
        if dead.len() >= poison.len() {
            break dead;
        }
    };
    let mut dead_bodies: Vec<&str> = dead.iter().filter_map(|d| d["body"].as_str()).collect();
    dead_bodies.sort_unstable();
    let mut expected: Vec<&str> = poison.iter().map(String::as_str).collect();
    expected.sort_unstable();
    assert_eq!(
        dead_bodies, expected,
        "each poison message exactly once: {dead:?}"
    );
    assert!(
        dead.iter().all(|d| d["delivery_count"] == MAX_DELIVERIES),
        "dead letters must carry {MAX_DELIVERIES} deliveries: {dead:?}"
    );
    for body in &poison {
        assert_eq!(
            deliveries[body],
            (1..=MAX_DELIVERIES).collect::<Vec<_>>(),
            "{body}"
        );
    }
    let good: Vec<_> = deliveries
        .iter()
        .filter(|(body, _)| !poison.contains(*body))
        .collect();
    assert_eq!(good.len(), 90);
    assert!(
        good.iter().all(|(_, counts)| **counts == [1]),
        "a good message was delivered twice: {good:?}"
    );
    // Dead-lettered means acked in the group: nothing pending, nothing more delivered.
    let response = client
        .receive("work", &receive_request("g", "c", 10, 500, 200))
        .await
        .expect("receive after");
    assert!(response.messages.is_empty(), "{response:?}");
    let stats = client.stats("work").await.expect("stats");
    assert_eq!(
        stats.partitions.iter().map(|p| p.dead_letters).sum::<u64>(),
        10
    );
    assert_eq!(stats.partitions.iter().map(|p| p.pending).sum::<u64>(), 0);
}

fn first_shard(cluster: &Cluster) -> &str {
    let spec = cluster.shards.split(',').next().expect("one shard");
    spec.split_once('=').map_or("embedded", |(name, _)| name)
}

async fn dead_letters(cluster: &Cluster) -> Vec<serde_json::Value> {
    let body: serde_json::Value = reqwest::get(cluster.url("/v1/queues/work/dead-letters"))
        .await
        .expect("GET dead-letters")
        .json()
        .await
        .expect("dead-letters JSON");
    body["messages"].as_array().cloned().unwrap_or_default()
}

both_backends!(messages_with_one_key_keep_publish_order);
async fn messages_with_one_key_keep_publish_order(backend: Backend) {
    // Proves per-key order (Q-14): 300 messages of key "k" published one by one by one
    // producer are first delivered in publish order.
    let cluster = Cluster::start(backend, 2, 1, &[]);
    let client = cluster.client();
    for i in 0..300 {
        client
            .publish(
                "ordered",
                vec![PublishMessage {
                    key: Some("k".into()),
                    body: format!("{i}"),
                    headers: None,
                }],
            )
            .await
            .expect("publish");
    }
    let mut seen = Vec::new();
    while seen.len() < 300 {
        let response = client
            .receive("ordered", &receive_request("g", "c", 50, 1_000, 30_000))
            .await
            .expect("receive");
        assert!(!response.messages.is_empty(), "ran dry at {}", seen.len());
        for m in &response.messages {
            seen.push(m.body.parse::<u32>().expect("numeric body"));
        }
        client
            .ack(
                "ordered",
                "g",
                response
                    .messages
                    .iter()
                    .map(|m| m.receipt.clone())
                    .collect(),
            )
            .await
            .expect("ack");
    }
    assert_eq!(seen, (0..300).collect::<Vec<_>>());
}

both_backends!(bad_input_gets_json_4xx_and_leaves_the_node_serving);
async fn bad_input_gets_json_4xx_and_leaves_the_node_serving(backend: Backend) {
    // Proves input validation at the edge: each bad request gets its 4xx with a JSON
    // {code, message}; afterwards the node still publishes and receives.
    let cluster = Cluster::start(backend, 1, 1, &[]);
    let http = reqwest::Client::new();
    let post = |path: &str, body: String| {
        http.post(cluster.url(path))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let cases: Vec<(&str, String, u16, &str)> = vec![
        (
            "/v1/queues/bad:name/messages",
            r#"{"messages":[{"body":"x"}]}"#.into(),
            400,
            "invalid_request",
        ),
        (
            "/v1/queues/q/messages",
            format!(
                r#"{{"messages":[{{"body":"{}"}}]}}"#,
                "x".repeat(300 * 1024)
            ),
            413,
            "payload_too_large",
        ),
        (
            "/v1/queues/q/messages",
            format!(r#"{{"messages":[{{"body":"{}"}}]}}"#, "x".repeat(2 << 20)),
            413,
            "payload_too_large",
        ),
        (
            "/v1/queues/q/ack",
            r#"{"group":"g","receipts":["garbage"]}"#.into(),
            400,
            "unknown_receipt",
        ),
        (
            "/v1/queues/q/ack",
            r#"{"group":"g","receipts":["0:nosuchshard:1-0"]}"#.into(),
            400,
            "unknown_receipt",
        ),
        (
            "/v1/queues/q/ack",
            r#"{"group":"g","receipts":["999:r1:1-0"]}"#.into(),
            400,
            "unknown_receipt",
        ),
        (
            "/v1/queues/q/nack",
            r#"{"group":"g","receipts":["x:y"]}"#.into(),
            400,
            "unknown_receipt",
        ),
        (
            "/v1/queues/q/messages",
            r#"{"messages":[{"body":"x"}"#.into(),
            400,
            "invalid_request",
        ),
        (
            "/v1/queues/q/messages",
            r#"{"messages":[{"body":"x","colour":"red"}]}"#.into(),
            400,
            "invalid_request",
        ),
        (
            "/v1/queues/q/receive",
            r#"{"group":"g","consumer":"c","bogus":1}"#.into(),
            400,
            "invalid_request",
        ),
        (
            "/v1/queues/q/receive",
            r#"{"group":"g","consumer":"c","max":0}"#.into(),
            400,
            "invalid_request",
        ),
        (
            "/v1/queues/q/receive",
            r#"{"group":"","consumer":"c"}"#.into(),
            400,
            "invalid_request",
        ),
        (
            "/v1/queues/q/messages",
            r#"{"messages":[]}"#.into(),
            400,
            "invalid_request",
        ),
    ];
    for (path, body, status, code) in cases {
        let response = post(path, body).await.expect("request");
        assert_eq!(response.status().as_u16(), status, "{path}");
        let json: serde_json::Value = response.json().await.expect("error body is JSON");
        assert_eq!(json["code"], code, "{path}: {json}");
        assert!(
            json["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{json}"
        );
    }
    // Well-formed receipts that are not pending (here: of a group that does not exist) are
    // not an error: an ack is idempotent, and they are simply not counted.
    let receipt = format!("0:{}:1-0", first_shard(&cluster));
    let body = format!(r#"{{"group":"nobody","receipts":["{receipt}"]}}"#);
    let response = post("/v1/queues/q/ack", body).await.expect("request");
    assert_eq!(response.status().as_u16(), 200);
    let json: serde_json::Value = response.json().await.expect("ack body");
    assert_eq!(json["acked"], 0);
    let response = http
        .get(cluster.url("/v1/nope"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status().as_u16(), 404);
    // Still serving.
    let client = cluster.client();
    client
        .publish("q", vec![message("ok".into())])
        .await
        .expect("publish after bad input");
    let got = client
        .receive("q", &receive_request("g", "c", 1, 2_000, 30_000))
        .await
        .expect("receive after bad input");
    assert_eq!(got.messages.len(), 1);
    let metrics = http
        .get(cluster.url("/metrics"))
        .send()
        .await
        .expect("metrics");
    let text = metrics.text().await.expect("metrics text");
    assert!(text.contains("distsync_queue_published_total 1"), "{text}");
}
