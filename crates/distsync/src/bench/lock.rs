//! `distsync bench lock`: clients doing acquire+release pairs, uncontended or on one hot name.

use crate::lock_cmd::ModeArg;
use anyhow::Context;
use clap::Args;
use distsync_api::LockMode;
use distsync_client::{Client, ClientConfig};
use hdrhistogram::Histogram;
use std::time::{Duration, Instant};

/// Measure acquire+release pairs per second and their latency.
#[derive(Debug, Args)]
pub struct LockBenchArgs {
    /// Lock nodes' HTTP addresses (clients spread over them).
    #[arg(
        long,
        value_delimiter = ',',
        env = "DISTSYNC_LOCK_ENDPOINTS",
        default_value = "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003"
    )]
    pub targets: Vec<String>,
    /// Concurrent clients, each with its own session.
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// How long to run (after a 1 s warm-up).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Every client uses the same lock name (measures handoffs).
    #[arg(long)]
    pub contended: bool,
    /// Lock mode.
    #[arg(long, value_enum, default_value_t = ModeArg::Exclusive)]
    pub mode: ModeArg,
    /// Stop after this many pairs in total (bounds the run besides --duration).
    #[arg(long, default_value_t = 10_000_000)]
    pub max_pairs: u64,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

struct ClientResult {
    pairs: u64,
    errors: u64,
    pair_latency: Histogram<u64>,
    acquire_latency: Histogram<u64>,
}

/// Microseconds from 1 µs to 60 s at 3 significant digits; fixed bounds, so merging the
/// per-client histograms never has to resize.
fn latency_histogram() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, 60_000_000, 3)?)
}

pub fn run(args: LockBenchArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run_async(args))
}

async fn run_async(args: LockBenchArgs) -> anyhow::Result<()> {
    let warmup = Duration::from_secs(1);
    let start = Instant::now();
    let measure_from = start + warmup;
    let stop_at = measure_from + args.duration;
    let pairs_per_client = args.max_pairs / args.clients.max(1) as u64;
    let mut tasks = Vec::new();
    for index in 0..args.clients {
        // Each client talks to one node, round-robin, as a fleet of clients would.
        let target = args.targets[index % args.targets.len()].clone();
        let client = Client::new(ClientConfig::new([target])).context("building a client")?;
        let mode: LockMode = args.mode.into();
        let name = if args.contended {
            "bench-hot".to_string()
        } else {
            format!("bench-{index}")
        };
        tasks.push(tokio::spawn(async move {
            let session = client.create_session(Duration::from_secs(30)).await?;
            let mut result = ClientResult {
                pairs: 0,
                errors: 0,
                pair_latency: latency_histogram()?,
                acquire_latency: latency_histogram()?,
            };
            while Instant::now() < stop_at && result.pairs < pairs_per_client {
                let began = Instant::now();
                let acquired = client
                    .acquire(session.id(), &name, mode, Duration::from_secs(10))
                    .await;
                let acquired_at = Instant::now();
                let released = match &acquired {
                    Ok(grant) => client
                        .release(session.id(), &name, Some(grant.fencing_token))
                        .await
                        .map(|_| ()),
                    Err(_) => Ok(()),
                };
                if acquired.is_err() || released.is_err() {
                    result.errors += 1;
                    continue;
                }
                if began >= measure_from {
                    result.pairs += 1;
                    result
                        .pair_latency
                        .saturating_record(began.elapsed().as_micros() as u64);
                    result
                        .acquire_latency
                        .saturating_record((acquired_at - began).as_micros() as u64);
                }
            }
            let _ = session.close().await;
            anyhow::Ok(result)
        }));
    }
    let mut pairs = 0;
    let mut errors = 0;
    let mut pair_latency = latency_histogram()?;
    let mut acquire_latency = latency_histogram()?;
    for task in tasks {
        let result = task.await??;
        pairs += result.pairs;
        errors += result.errors;
        pair_latency.add(&result.pair_latency)?;
        acquire_latency.add(&result.acquire_latency)?;
    }
    let elapsed = Instant::now()
        .min(stop_at)
        .saturating_duration_since(measure_from)
        .as_secs_f64()
        .max(1e-9);
    let ms = |histogram: &Histogram<u64>, quantile: f64| {
        histogram.value_at_quantile(quantile) as f64 / 1000.0
    };
    let report = serde_json::json!({
        "benchmark": "lock",
        "targets": args.targets,
        "clients": args.clients,
        "contended": args.contended,
        "mode": format!("{:?}", args.mode).to_lowercase(),
        "duration_s": elapsed,
        "pairs": pairs,
        "errors": errors,
        "pairs_per_s": pairs as f64 / elapsed,
        "pair_ms": {"p50": ms(&pair_latency, 0.5), "p90": ms(&pair_latency, 0.9), "p99": ms(&pair_latency, 0.99)},
        "acquire_ms": {"p50": ms(&acquire_latency, 0.5), "p90": ms(&acquire_latency, 0.9), "p99": ms(&acquire_latency, 0.99)},
    });
    if args.json {
        println!("{report}");
    } else {
        println!(
            "clients={} contended={} pairs={} errors={} pairs/s={:.0} pair p50={:.2}ms p90={:.2}ms p99={:.2}ms acquire p50={:.2}ms p99={:.2}ms",
            args.clients,
            args.contended,
            pairs,
            errors,
            pairs as f64 / elapsed,
            ms(&pair_latency, 0.5),
            ms(&pair_latency, 0.9),
            ms(&pair_latency, 0.99),
            ms(&acquire_latency, 0.5),
            ms(&acquire_latency, 0.99),
        );
    }
    Ok(())
}
