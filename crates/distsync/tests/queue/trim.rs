//! Trim safety (TESTING.md Q-08, adapted: our trim is MINID-based below every group's first
//! pending or undelivered entry; there is no length cap to overrun).

use crate::behaviour::{Ledger, message, receive_request, record};
use crate::common::{Backend, Cluster, QueueClient, Resp, metric};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const QUEUE: &str = "trimmed";

/// Waits until the node has completed `passes` more trim passes than now.
async fn await_trim_passes(cluster: &Cluster, passes: u64) {
    let name = "distsync_queue_trim_runs_total";
    let target = metric(&cluster.nodes[0].addr, name).await + passes;
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&cluster.nodes[0].addr, name).await < target {
        assert!(Instant::now() < deadline, "the trimmer stopped running");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn stream_length(client: &QueueClient) -> u64 {
    let stats = client.stats(QUEUE).await.expect("stats");
    stats.partitions.iter().map(|p| p.length).sum()
}

/// Receives and acks as `consumer` of `group` until a receive comes back empty. A receive also
/// claims other consumers' entries idle for longer than its visibility.
const VISIBILITY_MS: u64 = 2_000;

async fn drain(client: &QueueClient, group: &str, consumer: &str, ledger: &Mutex<Ledger>) {
    let request = receive_request(group, consumer, 100, 200, VISIBILITY_MS);
    loop {
        let response = client.receive(QUEUE, &request).await.expect("receive");
        if response.messages.is_empty() {
            return;
        }
        record(ledger, &response.messages);
        let receipts = response
            .messages
            .iter()
            .map(|m| m.receipt.clone())
            .collect();
        client.ack(QUEUE, group, receipts).await.expect("ack");
    }
}

/// Creates `groups` on every partition, then publishes 2,000 messages (40 batches of 50);
/// returns the producers' ledger.
async fn publish_with_groups(client: &QueueClient, groups: &[&str]) -> Ledger {
    for group in groups {
        client
            .receive(QUEUE, &receive_request(group, "setup", 1, 0, 1_000))
            .await
            .expect("group creation");
    }
    let mut published = Ledger::default();
    for batch in 0..40 {
        let bodies: Vec<String> = (0..50).map(|i| format!("m-{batch}-{i}")).collect();
        client
            .publish(QUEUE, bodies.iter().cloned().map(message).collect())
            .await
            .expect("publish");
        published.attempted.extend(bodies.iter().cloned());
        published.acknowledged.extend(bodies);
    }
    published
}

/// A worker of group "workers" takes 100 entries and crashes (never acks): they stay pending
/// under its name. Returns their bodies.
async fn crash_a_worker(client: &QueueClient, workers: &Mutex<Ledger>) -> Vec<String> {
    let crashed = client
        .receive(
            QUEUE,
            &receive_request("workers", "crashed", 100, 0, VISIBILITY_MS),
        )
        .await
        .expect("receive");
    assert_eq!(crashed.messages.len(), 100);
    record(workers, &crashed.messages);
    crashed.messages.iter().map(|m| m.body.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn trimming_never_removes_what_a_group_still_needs() {
    // Proves Q-08: with a trim pass every 50 ms, (1) while group "audit" has read nothing, no
    // entry is trimmed although "workers" acknowledged almost all of them; (2) a crashed
    // worker's 100 pending entries survive every trim and are redelivered; (3) each group
    // receives every acknowledged publish (lost = ∅ per group); (4) once both groups have
    // acknowledged everything, the streams are trimmed to nothing (the trim does run).
    let cluster = Cluster::start(Backend::Redis, 1, 1, &["--trim-interval-ms", "50"]);
    let client = cluster.client();
    let published = publish_with_groups(&client, &["workers", "audit"]).await;
    let workers = Mutex::new(Ledger {
        acknowledged: published.acknowledged.clone(),
        attempted: published.attempted.clone(),
        ..Ledger::default()
    });
    let audit = Mutex::new(published);

    let crashed_bodies = crash_a_worker(&client, &workers).await;
    drain(&client, "workers", "fast", &workers).await;
    await_trim_passes(&cluster, 3).await;
    assert_eq!(
        stream_length(&client).await,
        2_000,
        "entries were trimmed although group audit has not read them"
    );

    drain(&client, "audit", "auditor", &audit).await;
    await_trim_passes(&cluster, 3).await;
    let stats = client.stats(QUEUE).await.expect("stats");
    let length: u64 = stats.partitions.iter().map(|p| p.length).sum();
    let pending: u64 = stats.partitions.iter().map(|p| p.pending).sum();
    assert!(
        length < 2_000,
        "nothing was trimmed after both groups acknowledged most entries"
    );
    assert!(
        length >= pending,
        "pending entries were trimmed: length {length} < pending {pending}"
    );

    // The crashed worker's entries come back after their visibility lapses.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        drain(&client, "workers", "fast", &workers).await;
        let redelivered = {
            let ledger = workers.lock().expect("ledger");
            crashed_bodies
                .iter()
                .all(|body| ledger.deliveries.get(body).copied().unwrap_or(0) >= 2)
        };
        if redelivered {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the crashed worker's entries were not redelivered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    workers.lock().expect("ledger").check("group workers");
    audit.lock().expect("ledger").check("group audit");

    let deadline = Instant::now() + Duration::from_secs(10);
    while stream_length(&client).await > 0 {
        assert!(
            Instant::now() < deadline,
            "fully acknowledged entries were never trimmed"
        );
        await_trim_passes(&cluster, 1).await;
    }
    // The pass that emptied the streams is counted when it ends.
    await_trim_passes(&cluster, 1).await;
    let trimmed = metric(
        &cluster.nodes[0].addr,
        "distsync_queue_trimmed_entries_total",
    )
    .await;
    assert!(
        trimmed >= 2_000,
        "only {trimmed} entries counted as trimmed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn trim_negative_control_a_plain_maxlen_cap_loses_what_a_group_still_needs() {
    // the checks above can fail. The same situation — a group that has read little, a
    // crashed worker's entries pending — trimmed the way a length cap trims (`XTRIM … MAXLEN 20`
    // on every partition's stream, what `XADD … MAXLEN` does on each append) must show the loss
    // the MINID trim prevents: published, acknowledged entries that no consumer ever receives
    // (lost > 0), and XAUTOCLAIM reporting pending entries as deleted. Our own trimmer is off,
    // so all the loss is the cap's.
    let cluster = Cluster::start(Backend::Redis, 1, 1, &["--trim-interval-ms", "0"]);
    let client = cluster.client();
    let published = publish_with_groups(&client, &["workers"]).await;
    let workers = Mutex::new(published);
    crash_a_worker(&client, &workers).await;

    let redis = cluster.redis_for("r1");
    let (mut trimmed, mut deleted_pending) = (0, 0);
    for partition in 0..16 {
        let stream = format!("dsq:{QUEUE}:p{partition}");
        match redis.command(&["XTRIM", &stream, "MAXLEN", "20"]) {
            Resp::Integer(removed) => trimmed += removed,
            other => panic!("XTRIM {stream}: {other:?}"),
        }
        // Redis 7 answers [next cursor, claimed entries, IDs pending but no longer in the
        // stream] (and drops the latter from the pending list).
        let reply = redis.command(&[
            "XAUTOCLAIM",
            &stream,
            "workers",
            "probe",
            "0",
            "0-0",
            "COUNT",
            "1000",
            "JUSTID",
        ]);
        deleted_pending += reply.items().get(2).map_or(0, |ids| ids.items().len());
    }
    drain(&client, "workers", "fast", &workers).await;
    let ledger = workers.lock().expect("ledger");
    let lost = ledger.lost();
    println!(
        "Q-09 control: the cap removed {trimmed} entries; XAUTOCLAIM reported {deleted_pending} \
         pending entries deleted; lost {} of {} acknowledged, e.g. {:?}",
        lost.len(),
        ledger.acknowledged.len(),
        lost.first()
    );
    assert!(trimmed > 0, "the cap trimmed nothing: no control at all");
    assert!(
        !lost.is_empty(),
        "a length cap trimmed {trimmed} unread entries and the checker saw no loss: it is blind"
    );
    assert!(
        deleted_pending > 0,
        "XAUTOCLAIM reported no pending entry as deleted after the cap trimmed them"
    );
}
