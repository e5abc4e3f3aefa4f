//! `distsync bench cache`: clients reading and writing Zipf-distributed keys through running
//! cache nodes over HTTP; throughput, latency percentiles, and the hit ratio from `/v1/stats`.

use super::client::CacheClient;
use anyhow::Context;
use clap::Args;
use hdrhistogram::Histogram;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Measure cache operations per second, their latency and the hit ratio.
#[derive(Debug, Args)]
pub struct CacheBenchArgs {
    /// Cache nodes' HTTP addresses (`HOST:PORT` or `NAME=HOST:PORT`); clients are spread over
    /// them round-robin.
    #[arg(
        long,
        value_delimiter = ',',
        env = "DISTSYNC_CACHE_ENDPOINTS",
        default_value = "127.0.0.1:7201,127.0.0.1:7202,127.0.0.1:7203"
    )]
    pub targets: Vec<String>,
    /// Concurrent clients.
    #[arg(long, default_value_t = 32)]
    pub clients: usize,
    /// How long to measure (after the keys are written once and a 1 s warm-up).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Fraction of operations that are reads (the rest are writes).
    #[arg(long, default_value_t = 0.95)]
    pub read_ratio: f64,
    /// Distinct keys.
    #[arg(long, default_value_t = 1_000)]
    pub keys: usize,
    /// Zipf exponent of the key popularity (0 = uniform).
    #[arg(long, default_value_t = 1.0)]
    pub zipf: f64,
    /// Value size in bytes.
    #[arg(long, default_value_t = 100)]
    pub value_bytes: usize,
    /// Scenario name recorded in the JSON result.
    #[arg(long)]
    pub scenario: Option<String>,
    /// Print one JSON result (docs/performance/results/SCHEMA.md, without `meta`).
    #[arg(long)]
    pub json: bool,
}

/// splitmix64: deterministic and dependency-free; quality is ample for picking keys.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Cumulative Zipf probabilities over ranks 1..=n; a key is drawn by binary search.
fn zipf_cdf(n: usize, exponent: f64) -> Vec<f64> {
    let weights: Vec<f64> = (1..=n)
        .map(|rank| 1.0 / (rank as f64).powf(exponent))
        .collect();
    let total: f64 = weights.iter().sum();
    let mut cumulative = 0.0;
    weights
        .iter()
        .map(|weight| {
            cumulative += weight / total;
            cumulative
        })
        .collect()
}

fn draw(cdf: &[f64], rng: &mut SplitMix) -> usize {
    let u = rng.unit();
    cdf.partition_point(|&p| p < u).min(cdf.len() - 1)
}

fn latency_histogram() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, 60_000_000, 3)?)
}

struct ClientResult {
    ops: u64,
    reads: u64,
    errors: u64,
    latency: Histogram<u64>,
}

pub fn run(args: CacheBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.clients > 0 && args.keys > 0 && !args.targets.is_empty(),
        "--clients, --keys and --targets must be non-empty"
    );
    anyhow::ensure!(
        (0.0..=1.0).contains(&args.read_ratio),
        "--read-ratio is a fraction"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run_async(args))
}

async fn hits_and_misses(stats_client: &CacheClient, nodes: usize) -> anyhow::Result<(u64, u64)> {
    let (mut hits, mut misses) = (0, 0);
    for index in 0..nodes {
        let stats = stats_client.stats_at(index).await?;
        hits += stats.hits;
        misses += stats.misses;
    }
    Ok((hits, misses))
}

async fn run_async(args: CacheBenchArgs) -> anyhow::Result<()> {
    let value = "v".repeat(args.value_bytes);
    let key_names: Arc<Vec<String>> =
        Arc::new((0..args.keys).map(|i| format!("bench:{i}")).collect());
    let clients: Vec<Arc<CacheClient>> = (0..args.clients)
        .map(|index| {
            let target = args.targets[index % args.targets.len()].clone();
            Arc::new(CacheClient::new(&[target]))
        })
        .collect();
    // Every key exists before measuring, so reads measure hits and coherence, not 404s.
    let mut preload = Vec::new();
    for (index, client) in clients.iter().enumerate() {
        let client = Arc::clone(client);
        let keys = Arc::clone(&key_names);
        let value = value.clone();
        let stride = args.clients;
        preload.push(tokio::spawn(async move {
            for key in keys.iter().skip(index).step_by(stride) {
                client.put(key, &value, None).await?;
            }
            anyhow::Ok(())
        }));
    }
    for task in preload {
        task.await?.context("writing every key once")?;
    }
    let stats_client = CacheClient::new(&args.targets);
    let cdf = Arc::new(zipf_cdf(args.keys, args.zipf));
    let warmup = Duration::from_secs(1);
    let measure_from = Instant::now() + warmup;
    let stop_at = measure_from + args.duration;
    let mut tasks = Vec::new();
    let (before_tx, before_rx) = tokio::sync::oneshot::channel();
    let targets = args.targets.len();
    let stats_task = tokio::spawn(async move {
        tokio::time::sleep_until(measure_from.into()).await;
        let before = hits_and_misses(&stats_client, targets).await;
        let _ = before_tx.send(());
        tokio::time::sleep_until(stop_at.into()).await;
        let after = hits_and_misses(&stats_client, targets).await;
        (before, after)
    });
    for (index, client) in clients.iter().enumerate() {
        let client = Arc::clone(client);
        let keys = Arc::clone(&key_names);
        let cdf = Arc::clone(&cdf);
        let value = value.clone();
        let read_ratio = args.read_ratio;
        tasks.push(tokio::spawn(async move {
            let mut rng = SplitMix(0x5eed + index as u64);
            let mut result = ClientResult {
                ops: 0,
                reads: 0,
                errors: 0,
                latency: latency_histogram()?,
            };
            loop {
                let began = Instant::now();
                if began >= stop_at {
                    break;
                }
                let key = &keys[draw(&cdf, &mut rng)];
                let is_read = rng.unit() < read_ratio;
                let ok = if is_read {
                    client.get(key, None).await.is_ok()
                } else {
                    client.put(key, &value, None).await.is_ok()
                };
                if began < measure_from {
                    continue;
                }
                if !ok {
                    result.errors += 1;
                    continue;
                }
                result.ops += 1;
                result.reads += u64::from(is_read);
                result
                    .latency
                    .saturating_record(began.elapsed().as_micros() as u64);
            }
            anyhow::Ok(result)
        }));
    }
    let mut ops = 0;
    let mut reads = 0;
    let mut errors = 0;
    let mut latency = latency_histogram()?;
    for task in tasks {
        let result = task.await??;
        ops += result.ops;
        reads += result.reads;
        errors += result.errors;
        latency.add(&result.latency)?;
    }
    let _ = before_rx.await;
    let (before, after) = stats_task.await?;
    let hit_ratio = match (before, after) {
        (Ok((h0, m0)), Ok((h1, m1))) if h1 + m1 > h0 + m0 => {
            Some((h1 - h0) as f64 / ((h1 - h0) + (m1 - m0)) as f64)
        }
        _ => None,
    };
    let elapsed = args.duration.as_secs_f64();
    let ms = |quantile: f64| latency.value_at_quantile(quantile) as f64 / 1000.0;
    let scenario = args
        .scenario
        .clone()
        .unwrap_or_else(|| format!("read-{:.0}", args.read_ratio * 100.0));
    let report = serde_json::json!({
        "schema": "distsync-bench/1",
        "service": "cache",
        "scenario": scenario,
        "system": "distsync",
        "nodes": args.targets.len(),
        "clients": args.clients,
        "params": {
            "read_ratio": args.read_ratio,
            "keys": args.keys,
            "zipf": args.zipf,
            "value_bytes": args.value_bytes,
            "protocol": "http",
        },
        "duration_s": elapsed,
        "ops": ops,
        "throughput_per_s": ops as f64 / elapsed,
        "latency_ms": {"p50": ms(0.5), "p90": ms(0.9), "p99": ms(0.99), "max": latency.max() as f64 / 1000.0},
        "errors": errors,
        "extra": {"reads": reads, "writes": ops - reads, "hit_ratio": hit_ratio},
    });
    if args.json {
        println!("{report}");
    } else {
        println!(
            "nodes={} clients={} read_ratio={} ops={} errors={} ops/s={:.0} p50={:.2}ms p90={:.2}ms p99={:.2}ms hit_ratio={}",
            args.targets.len(),
            args.clients,
            args.read_ratio,
            ops,
            errors,
            ops as f64 / elapsed,
            ms(0.5),
            ms(0.9),
            ms(0.99),
            hit_ratio.map_or_else(|| "n/a".to_string(), |r| format!("{r:.3}")),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipf_draws_favour_low_ranks_and_cover_the_range() {
        // Proves the sampler is skewed as configured and never indexes out of range.
        let cdf = zipf_cdf(100, 1.0);
        let mut rng = SplitMix(1);
        let mut counts = [0usize; 100];
        for _ in 0..100_000 {
            counts[draw(&cdf, &mut rng)] += 1;
        }
        assert!(counts[0] > counts[9] * 5, "{:?}", &counts[..10]);
        assert!(counts[99] > 0);
        let uniform = zipf_cdf(10, 0.0);
        assert!((uniform[4] - 0.5).abs() < 1e-9);
    }
}
