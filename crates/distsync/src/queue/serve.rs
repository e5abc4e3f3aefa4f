//! `distsync serve queue`.

use anyhow::Context;
use clap::Args;
use distsync_queue::{QueueConfig, QueueService, parse_shard_specs};
use distsync_server::queue::{QueueNode, serve};
use std::time::Duration;

/// Run a queue-service node (stateless: every node with the same shard list is equivalent).
#[derive(Debug, Args)]
pub struct QueueServeArgs {
    /// Bind the HTTP API here (port 0 picks a free port; the bound address is printed on stdout).
    #[arg(long, env = "DISTSYNC_QUEUE_LISTEN", default_value = "127.0.0.1:7400")]
    pub listen: String,
    /// Shards: `r1=redis://HOST:PORT,r2=redis://HOST:PORT` or `embedded:DIR`.
    #[arg(long, env = "DISTSYNC_QUEUE_SHARDS")]
    pub shards: String,
    /// Partitions per queue (the same on every node).
    #[arg(long, env = "DISTSYNC_QUEUE_PARTITIONS", default_value_t = 16)]
    pub partitions: u32,
    /// Virtual nodes per shard on the ring (the same on every node).
    #[arg(long, env = "DISTSYNC_QUEUE_VNODES", default_value_t = 128)]
    pub vnodes: u32,
    /// Deliveries after which an unacknowledged message is dead-lettered.
    #[arg(long, env = "DISTSYNC_QUEUE_MAX_DELIVERIES", default_value_t = 5)]
    pub max_deliveries: u32,
    /// Largest message body in bytes (larger ones get 413).
    #[arg(long, env = "DISTSYNC_QUEUE_BODY_BYTES_MAX", default_value_t = 256 * 1024)]
    pub body_bytes_max: usize,
    /// How long a shard may take to answer before its partitions answer 503.
    #[arg(long, env = "DISTSYNC_QUEUE_SHARD_TIMEOUT_MS", default_value_t = 3_000)]
    pub shard_timeout_ms: u64,
    /// Connections per Redis shard for non-blocking commands: with `appendfsync always` one
    /// fsync covers what every connection sent, so several connections batch more per fsync.
    #[arg(long, env = "DISTSYNC_QUEUE_SHARD_CONNECTIONS", default_value_t = 4)]
    pub shard_connections: usize,
    /// How often to trim entries every group has acknowledged (MINID trimming; 0 = never).
    #[arg(
        long,
        env = "DISTSYNC_QUEUE_TRIM_INTERVAL_MS",
        default_value_t = 30_000
    )]
    pub trim_interval_ms: u64,
}

impl QueueServeArgs {
    /// The queue config these flags describe.
    pub fn config(&self) -> QueueConfig {
        QueueConfig {
            partitions: self.partitions,
            vnodes: self.vnodes,
            max_deliveries: self.max_deliveries,
            body_bytes_max: self.body_bytes_max,
            shard_response_timeout: Duration::from_millis(self.shard_timeout_ms),
            shard_connections: self.shard_connections,
            trim_interval: Duration::from_millis(self.trim_interval_ms),
            ..QueueConfig::default()
        }
    }
}

pub fn run(args: QueueServeArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(async move {
        let specs = parse_shard_specs(&args.shards)
            .map_err(anyhow::Error::msg)
            .context("parsing --shards")?;
        let config = args.config();
        tracing::info!(?config, shards = ?specs.iter().map(|s| &s.name).collect::<Vec<_>>(), "queue config");
        let service = QueueService::open(config, &specs)?;
        let listener = tokio::net::TcpListener::bind(&args.listen)
            .await
            .with_context(|| format!("binding queue API listener on {}", args.listen))?;
        let addr = listener.local_addr()?;
        // Tests and scripts started with port 0 read the bound address from here.
        println!("listening on {addr}");
        serve(listener, QueueNode::new(service), crate::serve::shutdown_signal())
            .await
            .context("serving the queue API")
    })
}
