//! `distsync bench cache`: clients reading and writing Zipf-distributed keys through running
//! cache nodes over HTTP; throughput, latency percentiles, and the hit ratio from `/v1/stats`
//! (`--mode load`). `--mode coherence` measures the coherence traffic one write causes when
//! `--sharers` other nodes hold the key Shared, from the nodes' counter deltas.

use anyhow::Context;
use clap::Args;
use distsync_api::ErrorCode;
use distsync_client::ClientError;
use distsync_client::cache::CacheClient;
use hdrhistogram::Histogram;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What `distsync bench cache` measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CacheBenchMode {
    /// Concurrent clients on a Zipf read/write mix: throughput, latency, hit ratio.
    Load,
    /// One write at a time to keys that `--sharers` other nodes hold Shared: coherence messages
    /// and invalidations per write.
    Coherence,
}

/// Measure cache operations per second, their latency and the hit ratio.
#[derive(Debug, Args)]
pub struct CacheBenchArgs {
    /// `load` (throughput, latency, hit ratio) or `coherence` (messages per write).
    #[arg(long, value_enum, default_value_t = CacheBenchMode::Load)]
    pub mode: CacheBenchMode,
    /// Coherence mode: how many nodes other than the writer read each key (and so hold it
    /// Shared) before the measured write; at most the number of targets minus one.
    #[arg(long, default_value_t = 0)]
    pub sharers: usize,
    /// Coherence mode: measured writes, each to its own key, one at a time.
    #[arg(long, default_value_t = 200)]
    pub writes: usize,
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
    /// How long to measure (after the keys are written once and a 1 s warm-up); load mode only.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Fraction of operations that are reads (the rest are writes); load mode only.
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
    /// Reads answered "no value": every key is written before measuring, so these are keys the
    /// cluster lost, and a hit ratio over them would flatter the store.
    reads_not_found: u64,
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
    if args.mode == CacheBenchMode::Coherence {
        anyhow::ensure!(
            args.sharers < args.targets.len(),
            "--sharers {} needs at least {} --targets (the writer and its sharers are distinct nodes)",
            args.sharers,
            args.sharers + 1
        );
        anyhow::ensure!(args.writes > 0, "--writes must be at least 1");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(async {
        match args.mode {
            CacheBenchMode::Load => run_load(&args).await,
            CacheBenchMode::Coherence => run_coherence(&args).await,
        }
    })?;
    if args.json {
        println!("{report}");
    } else {
        println!("{}", summary_line(&report));
    }
    Ok(())
}

/// One human-readable line from a result: its configuration, then its measurements.
fn summary_line(report: &serde_json::Value) -> String {
    let mut parts = vec![format!(
        "nodes={} clients={}",
        report["nodes"], report["clients"]
    )];
    for section in ["params", "extra"] {
        if let Some(map) = report[section].as_object() {
            for (name, value) in map {
                if value.is_number() || value.is_string() {
                    parts.push(format!("{name}={value}"));
                }
            }
        }
    }
    parts.push(format!(
        "ops={} errors={} ops/s={:.0} p50={}ms p99={}ms",
        report["ops"],
        report["errors"],
        report["throughput_per_s"].as_f64().unwrap_or(0.0),
        report["latency_ms"]["p50"],
        report["latency_ms"]["p99"]
    ));
    parts.join(" ")
}

/// Every target's capacity and eviction policy, which define what a hit ratio means; the
/// targets must agree, or one number per run would describe none of them.
async fn store_config(client: &CacheClient, nodes: usize) -> anyhow::Result<(Option<u64>, String)> {
    let mut seen = Vec::new();
    for index in 0..nodes {
        let stats = client
            .stats_at(index)
            .await
            .with_context(|| format!("reading /v1/stats of {}", client.endpoints()[index].base))?;
        seen.push((stats.capacity, stats.policy));
    }
    let first = seen[0].clone();
    anyhow::ensure!(
        seen.iter().all(|config| *config == first),
        "the targets run different capacities or policies: {seen:?}"
    );
    Ok(first)
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

/// How long the preload keeps retrying one key through a membership change (a joining or
/// leaving node makes the cluster answer 503 `node_unavailable` for a moment).
const PRELOAD_RETRY_LIMIT: Duration = Duration::from_secs(15);

/// Writes one key before the measurement. Unlike a measured write, whose failure is counted,
/// a preload write must land: an unavailable node or cluster is retried until
/// [`PRELOAD_RETRY_LIMIT`]; any other refusal (a value too large, a bad key) fails at once.
async fn preload_put(client: &CacheClient, key: &str, value: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + PRELOAD_RETRY_LIMIT;
    let mut backoff = Duration::from_millis(20);
    loop {
        let error = match client.put(key, value, None).await {
            Ok(_) => return Ok(()),
            Err(error) => error,
        };
        let transient = matches!(error, ClientError::Unavailable(_))
            || error.code() == Some(ErrorCode::NodeUnavailable);
        if !transient || Instant::now() + backoff > deadline {
            return Err(error).with_context(|| format!("preloading {key}"));
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_millis(500));
    }
}

async fn run_load(args: &CacheBenchArgs) -> anyhow::Result<serde_json::Value> {
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
                preload_put(&client, key, &value).await?;
            }
            anyhow::Ok(())
        }));
    }
    for task in preload {
        task.await?.context("writing every key once")?;
    }
    let stats_client = CacheClient::new(&args.targets);
    let (capacity, policy) = store_config(&stats_client, args.targets.len()).await?;
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
                reads_not_found: 0,
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
                let (ok, found) = if is_read {
                    match client.get(key, None).await {
                        Ok(entry) => (true, entry.is_some()),
                        Err(_) => (false, false),
                    }
                } else {
                    (client.put(key, &value, None).await.is_ok(), true)
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
                result.reads_not_found += u64::from(!found);
                result
                    .latency
                    .saturating_record(began.elapsed().as_micros() as u64);
            }
            anyhow::Ok(result)
        }));
    }
    let mut ops = 0;
    let mut reads = 0;
    let mut reads_not_found = 0;
    let mut errors = 0;
    let mut latency = latency_histogram()?;
    for task in tasks {
        let result = task.await??;
        ops += result.ops;
        reads += result.reads;
        reads_not_found += result.reads_not_found;
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
    Ok(serde_json::json!({
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
            "capacity": capacity,
            "policy": policy,
            "warmup_s": warmup.as_secs_f64(),
        },
        "duration_s": elapsed,
        "ops": ops,
        "throughput_per_s": ops as f64 / elapsed,
        "latency_ms": {"p50": ms(0.5), "p90": ms(0.9), "p99": ms(0.99), "max": latency.max() as f64 / 1000.0},
        "errors": errors,
        "extra": {"reads": reads, "writes": ops - reads, "reads_not_found": reads_not_found, "hit_ratio": hit_ratio},
    }))
}

/// Directory message kinds that are not caused by reads or writes: lease heartbeats and
/// membership reports run on their own clock and would be charged to whichever write was
/// in flight.
const BACKGROUND_KINDS: [&str; 4] = ["heartbeat", "heartbeat_ack", "holdings", "holdings_ack"];

/// Coherence counters summed over every node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct CoherenceCounters {
    invalidations_sent: u64,
    invalidations_received: u64,
    /// `distsync_cache_directory_messages_total` by kind (in and out of every home's directory),
    /// background kinds left out.
    directory_messages: std::collections::BTreeMap<String, u64>,
}

impl CoherenceCounters {
    fn directory_total(&self) -> u64 {
        self.directory_messages.values().sum()
    }
}

/// Adds one `/metrics` text's directory message counters to `into`.
fn add_directory_messages(text: &str, into: &mut std::collections::BTreeMap<String, u64>) {
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("distsync_cache_directory_messages_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.split_once("} ") else {
            continue;
        };
        let kind = labels.split(',').find_map(|label| {
            label
                .trim()
                .strip_prefix("kind=\"")
                .and_then(|v| v.strip_suffix('"'))
        });
        let (Some(kind), Ok(value)) = (kind, value.trim().parse::<f64>()) else {
            continue;
        };
        if !BACKGROUND_KINDS.contains(&kind) {
            *into.entry(kind.to_string()).or_default() += value as u64;
        }
    }
}

async fn coherence_counters(
    client: &CacheClient,
    nodes: usize,
) -> anyhow::Result<CoherenceCounters> {
    let mut counters = CoherenceCounters::default();
    for index in 0..nodes {
        let stats = client.stats_at(index).await?;
        counters.invalidations_sent += stats.invalidations_sent;
        counters.invalidations_received += stats.invalidations_received;
        let text = client.metrics_at(index).await?;
        add_directory_messages(&text, &mut counters.directory_messages);
    }
    Ok(counters)
}

/// The counters once they stop moving: a write is answered before its last acknowledgements
/// (a `GrantAck`) reach the home, so a snapshot taken at the answer could miss them.
async fn settled_counters(client: &CacheClient, nodes: usize) -> anyhow::Result<CoherenceCounters> {
    let mut previous = coherence_counters(client, nodes).await?;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let current = coherence_counters(client, nodes).await?;
        if current == previous {
            return Ok(current);
        }
        previous = current;
    }
    anyhow::bail!("coherence counters still moving after 2 s: is another client using the cluster?")
}

async fn run_coherence(args: &CacheBenchArgs) -> anyhow::Result<serde_json::Value> {
    let nodes = args.targets.len();
    let value = "v".repeat(args.value_bytes);
    let per_node: Vec<CacheClient> = args
        .targets
        .iter()
        .map(|target| CacheClient::new(std::slice::from_ref(target)))
        .collect();
    let all = CacheClient::new(&args.targets);
    let (capacity, policy) = store_config(&all, nodes).await?;
    // Key names carry the sharer count so runs against one cluster never reuse a key.
    let keys: Vec<String> = (0..args.writes)
        .map(|i| format!("coherence:s{}:{i}", args.sharers))
        .collect();
    // The writer rotates over the nodes so homes and writers pair up in every combination; its
    // sharers are the next `sharers` nodes after it.
    let writer_of = |i: usize| i % nodes;
    // Set-up: the writer writes the key, then each sharer reads it (the writer's copy drops to
    // Shared with the first reader). With no sharers the writer keeps it Modified.
    for (i, key) in keys.iter().enumerate() {
        let writer = writer_of(i);
        per_node[writer]
            .put(key, &value, None)
            .await
            .with_context(|| format!("set-up write of {key}"))?;
        for offset in 1..=args.sharers {
            let reader = (writer + offset) % nodes;
            let entry = per_node[reader]
                .get(key, None)
                .await
                .with_context(|| format!("set-up read of {key}"))?;
            anyhow::ensure!(entry.is_some(), "set-up read of {key} found no value");
        }
    }
    let before = settled_counters(&all, nodes).await?;
    let mut latency = latency_histogram()?;
    let mut errors = 0u64;
    let began = Instant::now();
    for (i, key) in keys.iter().enumerate() {
        let started = Instant::now();
        match per_node[writer_of(i)].put(key, &value, None).await {
            Ok(_) => latency.saturating_record(started.elapsed().as_micros() as u64),
            Err(_) => errors += 1,
        }
    }
    let elapsed = began.elapsed().as_secs_f64();
    let after = settled_counters(&all, nodes).await?;
    let writes = args.writes as u64 - errors;
    anyhow::ensure!(writes > 0, "every measured write failed");
    let per_write = |count: u64| count as f64 / writes as f64;
    let by_kind: serde_json::Map<String, serde_json::Value> = after
        .directory_messages
        .iter()
        .map(|(kind, &count)| {
            let delta =
                count.saturating_sub(before.directory_messages.get(kind).copied().unwrap_or(0));
            (kind.clone(), serde_json::json!(per_write(delta)))
        })
        .filter(|(_, per)| per.as_f64() != Some(0.0))
        .collect();
    let ms = |quantile: f64| latency.value_at_quantile(quantile) as f64 / 1000.0;
    let scenario = args.scenario.clone().unwrap_or_else(|| "coherence".into());
    Ok(serde_json::json!({
        "schema": "distsync-bench/1",
        "service": "cache",
        "scenario": scenario,
        "system": "distsync",
        "nodes": nodes,
        "clients": 1,
        "params": {
            "sharers": args.sharers,
            "writes": args.writes,
            "value_bytes": args.value_bytes,
            "protocol": "http",
            "capacity": capacity,
            "policy": policy,
        },
        "duration_s": elapsed,
        "ops": writes,
        "throughput_per_s": writes as f64 / elapsed,
        "latency_ms": {"p50": ms(0.5), "p90": ms(0.9), "p99": ms(0.99), "max": latency.max() as f64 / 1000.0},
        "errors": errors,
        "extra": {
            "coherence_msgs_per_write": per_write(after.directory_total().saturating_sub(before.directory_total())),
            "invalidations_per_write": per_write(after.invalidations_sent.saturating_sub(before.invalidations_sent)),
            "invalidations_received_per_write":
                per_write(after.invalidations_received.saturating_sub(before.invalidations_received)),
            "directory_messages_per_write_by_kind": by_kind,
        },
    }))
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

    #[test]
    fn directory_messages_are_summed_by_kind_without_background_traffic() {
        // Proves the /metrics parser adds a node's counters per kind, across directions, and
        // leaves out heartbeats (which tick on their own clock) and unrelated families.
        let text = "# HELP distsync_cache_directory_messages Coherence messages\n\
            distsync_cache_directory_messages_total{direction=\"in\",kind=\"upgrade\"} 3\n\
            distsync_cache_directory_messages_total{direction=\"out\",kind=\"invalidate\"} 6\n\
            distsync_cache_directory_messages_total{direction=\"in\",kind=\"heartbeat\"} 40\n\
            distsync_cache_directory_messages_total{direction=\"out\",kind=\"heartbeat_ack\"} 40\n\
            distsync_cache_invalidations_sent_total 6\n";
        let mut counts = std::collections::BTreeMap::new();
        add_directory_messages(text, &mut counts);
        add_directory_messages(text, &mut counts);
        let expected: std::collections::BTreeMap<String, u64> =
            [("invalidate".to_string(), 12), ("upgrade".to_string(), 6)].into();
        assert_eq!(counts, expected);
    }
}
