//! The command-line tree. Every server flag can also come from a `DISTSYNC_*` variable.

use clap::{Parser, Subcommand, ValueEnum};

/// distsync: distributed locks, queues and a coherent cache.
#[derive(Debug, Parser)]
#[command(name = "distsync", version, about)]
pub struct Cli {
    /// Log filter (tracing EnvFilter syntax); `RUST_LOG` takes precedence.
    #[arg(long, global = true, env = "DISTSYNC_LOG", default_value = "info")]
    pub log: String,
    /// Log line format.
    #[arg(long, global = true, env = "DISTSYNC_LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the whole system locally (lock cluster, queue node, cache nodes), Ctrl-C to stop.
    Up(crate::up::UpArgs),
    /// Run one node of a service.
    Serve(crate::serve::ServeArgs),
    /// Use the lock service: acquire, release, show.
    Lock(crate::lock_cmd::LockArgs),
    /// Inspect the lock cluster.
    Cluster(crate::lock_cmd::ClusterArgs),
    /// Load generators reporting throughput and latency.
    Bench(crate::bench::BenchArgs),
    /// Publish, consume and inspect queues (`distsync queue publish|consume|stats`).
    Queue(crate::queue::cmd::QueueCmd),
    /// Read, write and inspect the cache (`distsync cache get|put|delete|coherence|stats`).
    Cache(crate::cache::cmd::CacheCmd),
    /// Run a deterministic simulation sweep (no sockets, no clock, one seed per run).
    Sim(crate::sim::SimArgs),
    /// GET a URL; exit 0 on a 2xx answer (the container health check).
    Probe(crate::probe::ProbeArgs),
    /// A live, narrated tour of every feature against a running system (`up` or Compose).
    Demo(crate::demo::DemoArgs),
}
