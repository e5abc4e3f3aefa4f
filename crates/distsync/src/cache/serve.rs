//! `distsync serve cache`.

use anyhow::Context;
use clap::{Args, ValueEnum};
use distsync_cache::{CacheConfig, EvictionPolicy, StoreLimits, WritePolicy};
use distsync_server::cache::{
    BackingStore, CacheClusterSpec, CacheEngine, EngineConfig, Membership, run_cache_node,
};
use std::time::Duration;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum PolicyArg {
    Lru,
    Lfu,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum WritePolicyArg {
    WriteBack,
    WriteThrough,
}

/// Run a cache node.
#[derive(Debug, Args)]
pub struct CacheServeArgs {
    /// This node's name (a name in --cluster).
    #[arg(long, env = "DISTSYNC_CACHE_ID")]
    pub id: String,
    /// Every node: `NAME=HTTP_ADDR/PEER_ADDR,…`, the same list on every node.
    #[arg(long, env = "DISTSYNC_CACHE_CLUSTER")]
    pub cluster: CacheClusterSpec,
    /// Backing store: `memory` (in this process) or `redis://HOST:PORT`.
    #[arg(long, env = "DISTSYNC_CACHE_STORE", default_value = "memory")]
    pub store: String,
    /// Most lines this node keeps.
    #[arg(long, env = "DISTSYNC_CACHE_CAPACITY", default_value_t = 100_000)]
    pub capacity: usize,
    /// Most value bytes this node keeps (unbounded when absent).
    #[arg(long, env = "DISTSYNC_CACHE_CAPACITY_BYTES")]
    pub capacity_bytes: Option<usize>,
    /// Replacement policy of the local store.
    #[arg(long, env = "DISTSYNC_CACHE_POLICY", value_enum, default_value_t = PolicyArg::Lru)]
    pub policy: PolicyArg,
    /// When a write is acknowledged: at once (write-back; a node that dies loses its unwritten
    /// Modified lines) or once in the backing store (write-through; nothing acknowledged is lost).
    #[arg(long, env = "DISTSYNC_CACHE_WRITE_POLICY", value_enum, default_value_t = WritePolicyArg::WriteBack)]
    pub write_policy: WritePolicyArg,
    /// Largest value in bytes (larger ones get 413).
    #[arg(long, env = "DISTSYNC_CACHE_VALUE_BYTES_MAX", default_value_t = 512 * 1024)]
    pub value_bytes_max: usize,
    /// Serve the Redis protocol (GET, SET, DEL, …) here too.
    #[arg(long, env = "DISTSYNC_CACHE_RESP")]
    pub resp: Option<String>,
    /// Bind the HTTP API here instead of this node's address in --cluster (e.g. 0.0.0.0:7201).
    #[arg(long, env = "DISTSYNC_CACHE_LISTEN_HTTP")]
    pub listen_http: Option<String>,
    /// Bind the peer port here instead of this node's address in --cluster.
    #[arg(long, env = "DISTSYNC_CACHE_LISTEN_PEER")]
    pub listen_peer: Option<String>,
    /// Length of one protocol tick.
    #[arg(long, env = "DISTSYNC_CACHE_TICK_MS", default_value_t = 10)]
    pub tick_ms: u64,
    /// Coherence lease in ticks: a node cut off from a key's home stops serving it after this.
    #[arg(long, env = "DISTSYNC_CACHE_LEASE_TICKS", default_value_t = 50)]
    pub lease_ticks: u64,
    /// How long a request waits for its coherence transaction before 503 `node_unavailable`.
    #[arg(long, env = "DISTSYNC_CACHE_OP_TIMEOUT_MS", default_value_t = 2_000)]
    pub op_timeout_ms: u64,
    /// A node not heard from for this long is declared dead: the next view leaves it out and
    /// its keys move to the next node on the ring.
    #[arg(
        long,
        env = "DISTSYNC_CACHE_FAILURE_TIMEOUT_MS",
        default_value_t = 1_500
    )]
    pub failure_timeout_ms: u64,
    /// How long one backing-store request may take before it is retried.
    #[arg(long, env = "DISTSYNC_CACHE_STORE_TIMEOUT_MS", default_value_t = 1_000)]
    pub store_timeout_ms: u64,
}

impl CacheServeArgs {
    /// The core configuration these flags describe.
    pub fn core_config(&self) -> anyhow::Result<CacheConfig> {
        let defaults = CacheConfig::default();
        let value_bytes_max = match self.capacity_bytes {
            Some(bytes) => self.value_bytes_max.min(bytes),
            None => self.value_bytes_max,
        };
        let config = CacheConfig {
            eviction_policy: match self.policy {
                PolicyArg::Lru => EvictionPolicy::Lru,
                PolicyArg::Lfu => EvictionPolicy::Lfu,
            },
            store_limits: StoreLimits {
                entries_max: Some(self.capacity),
                bytes_max: self.capacity_bytes,
            },
            write_policy: match self.write_policy {
                WritePolicyArg::WriteBack => WritePolicy::WriteBack,
                WritePolicyArg::WriteThrough => WritePolicy::WriteThrough,
            },
            value_bytes_max,
            lease_ticks: self.lease_ticks,
            heartbeat_interval_ticks: (self.lease_ticks / 5).max(1),
            ..defaults
        };
        config.validate()?;
        Ok(config)
    }
}

pub fn run(args: CacheServeArgs) -> anyhow::Result<()> {
    let own = args
        .cluster
        .members
        .iter()
        .find(|member| member.name == args.id)
        .with_context(|| {
            format!(
                "node {} is not listed in --cluster {}",
                args.id, args.cluster
            )
        })?
        .clone();
    let http_addr = args.listen_http.clone().unwrap_or(own.http);
    let peer_addr = args.listen_peer.clone().unwrap_or(own.peer);
    let config = EngineConfig {
        name: args.id.clone(),
        core: args.core_config()?,
        tick: Duration::from_millis(args.tick_ms.max(1)),
        op_timeout: Duration::from_millis(args.op_timeout_ms),
        query_timeout: Duration::from_millis(500),
        failure_timeout: Duration::from_millis(args.failure_timeout_ms.max(1)),
    };
    tracing::info!(?config, store = %args.store, "effective configuration");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(async move {
        let backing =
            BackingStore::open(&args.store, Duration::from_millis(args.store_timeout_ms))?;
        let membership = Membership::new(args.cluster.members.clone())?;
        let engine = CacheEngine::new(config, membership, backing)?;
        let http = tokio::net::TcpListener::bind(&http_addr)
            .await
            .with_context(|| format!("binding the HTTP API on {http_addr}"))?;
        let peer = tokio::net::TcpListener::bind(&peer_addr)
            .await
            .with_context(|| format!("binding the peer port on {peer_addr}"))?;
        if let Some(resp_addr) = &args.resp {
            let resp = tokio::net::TcpListener::bind(resp_addr)
                .await
                .with_context(|| format!("binding the RESP port on {resp_addr}"))?;
            tokio::spawn(distsync_server::cache::serve_resp(resp, engine.clone()));
        }
        run_cache_node(engine, http, peer, crate::serve::shutdown_signal()).await
    })
}
