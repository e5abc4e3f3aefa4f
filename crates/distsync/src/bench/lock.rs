//! `distsync bench lock`: clients doing acquire+release pairs, uncontended or on one hot name,
//! against distsync or, with the same client loop and accounting, against etcd.

use super::etcd::{EtcdGateway, EtcdLease};
use crate::lock_cmd::ModeArg;
use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use distsync_api::LockMode;
use distsync_client::{Client, ClientConfig, Session};
use hdrhistogram::Histogram;
use std::time::{Duration, Instant};

/// Measure acquire+release pairs per second and their latency.
#[derive(Debug, Args)]
pub struct LockBenchArgs {
    /// Which lock service the targets run.
    #[arg(long, value_enum, default_value_t = LockSystem::Distsync)]
    pub system: LockSystem,
    /// Lock nodes' HTTP addresses, or etcd client URLs' `host:port` (clients spread over them).
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
    /// Lock mode (etcd has exclusive locks only).
    #[arg(long, value_enum, default_value_t = ModeArg::Exclusive)]
    pub mode: ModeArg,
    /// Stop after this many pairs in total (bounds the run besides --duration).
    #[arg(long, default_value_t = 10_000_000)]
    pub max_pairs: u64,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// A lock service the benchmark can drive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LockSystem {
    /// distsync's lock service (`distsync serve lock`).
    Distsync,
    /// etcd's v3 lock API over its JSON gateway.
    Etcd,
}

/// One benchmark client's session with the system under test: a distsync session or an etcd
/// lease, each kept alive in the background.
enum BenchSession {
    Distsync { client: Client, session: Session },
    Etcd(EtcdLease),
}

/// What a release needs: distsync's fencing token, or the key etcd created for the holder.
enum Held {
    Fencing(u64),
    EtcdKey(String),
}

/// Sessions outlive any run; the keep-alive keeps them from expiring anyway.
const SESSION_TTL: Duration = Duration::from_secs(30);
/// How long a distsync acquire waits before answering `timeout` (etcd's lock call has no limit).
const ACQUIRE_WAIT: Duration = Duration::from_secs(10);

impl BenchSession {
    /// A session through `targets[0]`; a distsync client also knows the other targets (and so
    /// follows the leader its first node names), an etcd client keeps to its one member.
    async fn open(system: LockSystem, targets: &[String]) -> anyhow::Result<Self> {
        let target = &targets[0];
        Ok(match system {
            LockSystem::Distsync => {
                let client = Client::new(ClientConfig::new(targets.iter().cloned()))
                    .context("building a client")?;
                let session = client.create_session(SESSION_TTL).await?;
                BenchSession::Distsync { client, session }
            }
            LockSystem::Etcd => {
                let (gateway, _) = EtcdGateway::connect(target).await?;
                BenchSession::Etcd(gateway.grant_lease(SESSION_TTL).await?)
            }
        })
    }

    async fn acquire(&self, name: &str, mode: LockMode) -> anyhow::Result<Held> {
        Ok(match self {
            BenchSession::Distsync { client, session } => Held::Fencing(
                client
                    .acquire(session.id(), name, mode, ACQUIRE_WAIT)
                    .await?
                    .fencing_token,
            ),
            BenchSession::Etcd(lease) => Held::EtcdKey(lease.lock(name).await?),
        })
    }

    async fn release(&self, name: &str, held: Held) -> anyhow::Result<()> {
        match (self, held) {
            (BenchSession::Distsync { client, session }, Held::Fencing(token)) => {
                client.release(session.id(), name, Some(token)).await?;
            }
            (BenchSession::Etcd(lease), Held::EtcdKey(key)) => lease.unlock(&key).await?,
            _ => bail!("a hold released through another system's session"),
        }
        Ok(())
    }

    async fn close(self) -> anyhow::Result<()> {
        match self {
            BenchSession::Distsync { session, .. } => session.close().await?,
            BenchSession::Etcd(lease) => lease.revoke().await?,
        }
        Ok(())
    }
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
    if args.system == LockSystem::Etcd && matches!(args.mode, ModeArg::Shared) {
        bail!(
            "etcd has no shared locks (its lock API grants exclusive locks only); run --mode shared against distsync"
        );
    }
    if args.targets.is_empty() {
        bail!("--targets names no node");
    }
    let server_version = match args.system {
        LockSystem::Distsync => None,
        LockSystem::Etcd => Some(EtcdGateway::connect(&args.targets[0]).await?.1),
    };
    let warmup = Duration::from_secs(1);
    let start = Instant::now();
    let measure_from = start + warmup;
    let stop_at = measure_from + args.duration;
    let pairs_per_client = args.max_pairs / args.clients.max(1) as u64;
    let mut tasks = Vec::new();
    for index in 0..args.clients {
        // Each client starts at another node, round-robin, as a fleet of clients would.
        let mut targets = args.targets.clone();
        targets.rotate_left(index % args.targets.len());
        let system = args.system;
        let mode: LockMode = args.mode.into();
        let name = if args.contended {
            "bench-hot".to_string()
        } else {
            format!("bench-{index}")
        };
        tasks.push(tokio::spawn(async move {
            let session = BenchSession::open(system, &targets).await?;
            let mut result = ClientResult {
                pairs: 0,
                errors: 0,
                pair_latency: latency_histogram()?,
                acquire_latency: latency_histogram()?,
            };
            while Instant::now() < stop_at && result.pairs < pairs_per_client {
                let began = Instant::now();
                let acquired = session.acquire(&name, mode).await;
                let acquired_at = Instant::now();
                let released = match acquired {
                    Ok(held) => session.release(&name, held).await,
                    Err(error) => Err(error),
                };
                if let Err(error) = released {
                    tracing::debug!(%error, "pair failed");
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
        "system": format!("{:?}", args.system).to_lowercase(),
        "server_version": server_version,
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
            "system={:?} clients={} contended={} pairs={} errors={} pairs/s={:.0} pair p50={:.2}ms p90={:.2}ms p99={:.2}ms acquire p50={:.2}ms p99={:.2}ms",
            args.system,
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
