//! `distsync bench …`: load generators that report throughput and latency percentiles. Every
//! service's benchmark is a variant of [`BenchTarget`]; each lives next to its service's client.

mod etcd;
mod lock;

use clap::{Args, Subcommand};

/// Arguments of `distsync bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub target: BenchTarget,
}

#[derive(Debug, Subcommand)]
pub enum BenchTarget {
    /// Acquire+release pairs against the lock service.
    Lock(lock::LockBenchArgs),
    /// Queue: publish throughput, consume+ack throughput, end-to-end latency.
    Queue(crate::queue::bench::QueueBenchArgs),
    /// Cache: Zipf-distributed reads and writes through the cache nodes.
    Cache(crate::cache::bench::CacheBenchArgs),
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.target {
        BenchTarget::Lock(args) => lock::run(args),
        BenchTarget::Queue(args) => crate::queue::bench::run(args),
        BenchTarget::Cache(args) => crate::cache::bench::run(args),
    }
}
