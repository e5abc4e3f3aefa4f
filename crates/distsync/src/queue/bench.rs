//! `distsync bench queue`: publish throughput, consume+ack throughput and end-to-end latency
//! against running queue nodes.

use anyhow::{Context, bail};
use clap::Args;
use distsync_api::{PublishMessage, ReceiveRequest};
use distsync_client::queue::QueueClient;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// Arguments of `distsync bench queue`.
#[derive(Debug, Args)]
pub struct QueueBenchArgs {
    /// Queue node(s), comma-separated; producers and consumers are spread over them.
    #[arg(
        long,
        env = "DISTSYNC_QUEUE_ADDR",
        default_value = "127.0.0.1:7400",
        value_delimiter = ','
    )]
    pub addr: Vec<String>,
    /// Queue to use (default: a fresh name per run).
    #[arg(long)]
    pub queue: Option<String>,
    /// Messages to publish and then consume.
    #[arg(long, default_value_t = 20_000)]
    pub messages: u64,
    /// Messages per publish request.
    #[arg(long, default_value_t = 100)]
    pub batch: usize,
    /// Concurrent producers.
    #[arg(long, default_value_t = 8)]
    pub producers: usize,
    /// Concurrent consumers.
    #[arg(long, default_value_t = 8)]
    pub consumers: usize,
    /// Messages per receive.
    #[arg(long, default_value_t = 100)]
    pub receive_max: u32,
    /// Body size in bytes.
    #[arg(long, default_value_t = 100)]
    pub body_bytes: usize,
    /// Latency samples (one message at a time, publish → receive).
    #[arg(long, default_value_t = 1_000)]
    pub latency_samples: usize,
    /// Print one JSON object with every measurement on stdout (progress goes to stderr), for
    /// scripts/bench-queue.sh to turn into result files.
    #[arg(long)]
    pub json: bool,
}

/// Progress and human-readable results: on stdout, or on stderr when stdout carries JSON.
macro_rules! say {
    ($json:expr, $($arg:tt)*) => {
        if $json { eprintln!($($arg)*) } else { println!($($arg)*) }
    };
}

fn clients(args: &QueueBenchArgs, n: usize) -> Vec<Arc<QueueClient>> {
    (0..n)
        .map(|i| {
            // Start each client on a different node; it still fails over to the others.
            let mut nodes = args.addr.clone();
            nodes.rotate_left(i % args.addr.len().max(1));
            Arc::new(QueueClient::new(&nodes))
        })
        .collect()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

pub fn run(args: QueueBenchArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(run_async(args))
}

async fn run_async(args: QueueBenchArgs) -> anyhow::Result<()> {
    if args.batch == 0 || args.producers == 0 || args.consumers == 0 || args.addr.is_empty() {
        bail!("batch, producers, consumers and addr must be non-empty");
    }
    let queue = args
        .queue
        .clone()
        .unwrap_or_else(|| format!("bench-{}-{}", std::process::id(), distsync_queue::now_ms()));
    let body = "x".repeat(args.body_bytes);
    let json = args.json;
    say!(
        json,
        "queue={queue} nodes={} messages={} batch={} producers={} consumers={} body_bytes={}",
        args.addr.len(),
        args.messages,
        args.batch,
        args.producers,
        args.consumers,
        args.body_bytes
    );

    // Phase 1: publish.
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut producers = Vec::new();
    for client in clients(&args, args.producers) {
        let (next, queue, body, total, batch) = (
            next.clone(),
            queue.clone(),
            body.clone(),
            args.messages,
            args.batch as u64,
        );
        producers.push(tokio::spawn(async move {
            loop {
                let first = next.fetch_add(batch, Ordering::Relaxed);
                if first >= total {
                    return Ok::<(), anyhow::Error>(());
                }
                let n = batch.min(total - first);
                let messages = (0..n)
                    .map(|_| PublishMessage {
                        key: None,
                        body: body.clone(),
                        headers: None,
                    })
                    .collect();
                client.publish(&queue, messages).await?;
            }
        }));
    }
    for producer in producers {
        producer.await??;
    }
    let publish_secs = started.elapsed().as_secs_f64();
    say!(
        json,
        "publish: {} msgs in {:.2} s = {:.0} msg/s (batch {})",
        args.messages,
        publish_secs,
        args.messages as f64 / publish_secs,
        args.batch
    );

    // Phase 2: consume + ack everything just published.
    let received = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut consumers = Vec::new();
    for (i, client) in clients(&args, args.consumers).into_iter().enumerate() {
        let (received, queue, total, max) = (
            received.clone(),
            queue.clone(),
            args.messages,
            args.receive_max,
        );
        consumers.push(tokio::spawn(async move {
            let request = ReceiveRequest {
                group: "bench".to_owned(),
                consumer: format!("c{i}"),
                max,
                wait_ms: 200,
                visibility_ms: 60_000,
                resume: false,
            };
            while received.load(Ordering::Relaxed) < total {
                let response = client.receive(&queue, &request).await?;
                if response.messages.is_empty() {
                    continue;
                }
                let n = response.messages.len() as u64;
                let receipts = response.messages.into_iter().map(|m| m.receipt).collect();
                client.ack(&queue, "bench", receipts).await?;
                received.fetch_add(n, Ordering::Relaxed);
            }
            Ok::<(), anyhow::Error>(())
        }));
    }
    for consumer in consumers {
        consumer.await??;
    }
    let consume_secs = started.elapsed().as_secs_f64();
    let consumed = received.load(Ordering::Relaxed);
    say!(
        json,
        "consume+ack: {consumed} msgs in {consume_secs:.2} s = {:.0} msg/s (receive max {})",
        consumed as f64 / consume_secs,
        args.receive_max
    );

    // Phase 3: end-to-end latency, one message in flight at a time.
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let lat_queue = format!("{queue}-latency");
    let consumer_client = clients(&args, 2).pop().expect("two clients were made");
    let producer_client = clients(&args, 1).pop().expect("one client was made");
    let samples = args.latency_samples;
    let consumer = {
        let (sent, lat_queue) = (sent.clone(), lat_queue.clone());
        tokio::spawn(async move {
            let request = ReceiveRequest {
                group: "latency".to_owned(),
                consumer: "l0".to_owned(),
                max: 10,
                wait_ms: 1_000,
                visibility_ms: 60_000,
                resume: false,
            };
            let mut latencies = Vec::with_capacity(samples);
            while latencies.len() < samples {
                let response = consumer_client.receive(&lat_queue, &request).await?;
                let now = Instant::now();
                let mut receipts = Vec::new();
                for message in response.messages {
                    if let Some(at) = sent.lock().await.remove(&message.body) {
                        latencies.push(now - at);
                    }
                    receipts.push(message.receipt);
                }
                if !receipts.is_empty() {
                    consumer_client.ack(&lat_queue, "latency", receipts).await?;
                }
            }
            Ok::<_, anyhow::Error>(latencies)
        })
    };
    // Create the group first so the consumer is already waiting when samples start.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for i in 0..samples {
        let body = format!("sample-{i}");
        sent.lock().await.insert(body.clone(), Instant::now());
        producer_client
            .publish(
                &lat_queue,
                vec![PublishMessage {
                    key: None,
                    body,
                    headers: None,
                }],
            )
            .await?;
        // Keep one message in flight: wait until the consumer saw it.
        while !sent.lock().await.is_empty() {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    }
    let mut latencies = consumer.await??;
    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let (p50, p90, p99) = (
        ms(percentile(&latencies, 50.0)),
        ms(percentile(&latencies, 90.0)),
        ms(percentile(&latencies, 99.0)),
    );
    let max = ms(latencies.last().copied().unwrap_or_default());
    if !latencies.is_empty() {
        say!(
            json,
            "end-to-end latency: p50 {p50:.2} ms, p90 {p90:.2} ms, p99 {p99:.2} ms, max {max:.2} ms ({} samples)",
            latencies.len()
        );
    }
    if json {
        let mut result = serde_json::json!({
            "nodes": args.addr.len(),
            "batch": args.batch,
            "producers": args.producers,
            "consumers": args.consumers,
            "receive_max": args.receive_max,
            "body_bytes": args.body_bytes,
            "publish": { "messages": args.messages, "seconds": publish_secs },
            "consume": { "messages": consumed, "seconds": consume_secs },
        });
        // Latency is omitted, not zero, when no sample was taken (schema rule).
        if !latencies.is_empty() {
            result["latency_ms"] = serde_json::json!({
                "samples": latencies.len(), "p50": p50, "p90": p90, "p99": p99, "max": max
            });
        }
        println!("{result}");
    }
    Ok(())
}
