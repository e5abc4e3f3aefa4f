//! `distsync serve cache`.

use anyhow::Context;
use clap::{Args, ValueEnum};
use distsync_cache::{
    CacheConfig, EvictionPolicy, HashSeed, InjectedBugs, StoreLimits, WritePolicy,
};
use distsync_server::cache::{
    BackingStore, CacheClusterSpec, CacheEngine, CacheMember, EngineConfig, Membership,
    run_cache_node,
};
use std::net::ToSocketAddrs;
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
    /// This node's name: a name in --cluster, or a new node's name (it joins the running
    /// cluster). Default: the host name (one per container when a Compose service is scaled).
    #[arg(long, env = "DISTSYNC_CACHE_ID")]
    pub id: Option<String>,
    /// The cluster's seed nodes: `NAME=HTTP_ADDR/PEER_ADDR,…`, the same list on every seed. A
    /// node started later with the seeds here (and its own name not among them) joins without
    /// a restart of the others.
    #[arg(long, env = "DISTSYNC_CACHE_CLUSTER")]
    pub cluster: CacheClusterSpec,
    /// Where the other nodes reach a node not listed in --cluster: `HTTP_ADDR/PEER_ADDR`.
    /// Default: this host's address with the ports of --listen-http and --listen-peer.
    #[arg(long, env = "DISTSYNC_CACHE_ADVERTISE")]
    pub advertise: Option<String>,
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
    /// Threads serving --resp, each an event loop of its own over its share of the
    /// connections (0: one per two CPUs, at least one).
    #[arg(long, env = "DISTSYNC_CACHE_RESP_THREADS", default_value_t = 0)]
    pub resp_threads: usize,
    /// After a request, a RESP thread keeps polling its sockets this long before it sleeps:
    /// clients spend less CPU per request when the thread they write to is already awake, at
    /// the price of that thread's core while requests keep coming (0: always sleep).
    #[arg(long, env = "DISTSYNC_CACHE_RESP_BUSY_POLL_US", default_value_t = 0)]
    pub resp_busy_poll_us: u64,
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
    /// Test only: switch on a deliberate bug, so that a black-box test can show its checker
    /// catches it (a negative control). Never in production.
    #[arg(long = "test-inject-bug", value_enum, hide = true)]
    pub inject_bugs: Vec<InjectedBugArg>,
    /// Test only: journal every line state change with the wall clock, served at
    /// `GET /v1/internal/transitions`, so a test can check the single-writer invariant in
    /// real time across nodes. Memory grows with the load (bounded at two million changes).
    #[arg(long = "test-record-transitions", hide = true)]
    pub record_transitions: bool,
}

/// The deliberate bugs `--test-inject-bug` can switch on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InjectedBugArg {
    /// A home grants M before every sharer acknowledged its invalidation.
    GrantBeforeInvalidateAcks,
    /// A node drops an evicted Modified line without writing it back.
    SkipWriteBackOnEviction,
    /// A node serves hits after its lease ran out.
    ServeWithoutLease,
    /// A node keeps its Shared copies when a lapsed lease is renewed.
    KeepSharedAfterLeaseLapse,
    /// A new home rebuilds its directory without the members' reports.
    RebuildWithoutHoldings,
    /// A node serves, and its coordinator issues views, without a majority of the view.
    IgnoreQuorum,
}

impl CacheServeArgs {
    fn injects(&self, bug: InjectedBugArg) -> bool {
        self.inject_bugs.contains(&bug)
    }

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
            // The standard library's per-process random keys, drawn from the OS.
            store_hash_seed: HashSeed(std::hash::BuildHasher::hash_one(
                &std::hash::RandomState::new(),
                0,
            )),
            value_bytes_max,
            lease_ticks: self.lease_ticks,
            heartbeat_interval_ticks: (self.lease_ticks / 5).max(1),
            injected_bugs: InjectedBugs {
                grant_before_invalidate_acks: self
                    .injects(InjectedBugArg::GrantBeforeInvalidateAcks),
                skip_write_back_on_eviction: self.injects(InjectedBugArg::SkipWriteBackOnEviction),
                serve_without_lease: self.injects(InjectedBugArg::ServeWithoutLease),
                keep_shared_after_lease_lapse: self
                    .injects(InjectedBugArg::KeepSharedAfterLeaseLapse),
                rebuild_without_holdings: self.injects(InjectedBugArg::RebuildWithoutHoldings),
            },
            ..defaults
        };
        config.validate()?;
        Ok(config)
    }
}

/// The host name, which names a node started without --id.
fn host_name() -> anyhow::Result<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .or_else(|_| std::env::var("HOSTNAME"))
        .context("--id not given and the host name is unknown")?;
    anyhow::ensure!(
        !name.is_empty(),
        "--id not given and the host name is empty"
    );
    Ok(name)
}

/// This node as the others reach it: its --cluster entry, or for a joining node the
/// --advertise addresses (default: the host's address, resolved as the others would, with the
/// listen ports).
fn own_member(args: &CacheServeArgs, name: &str) -> anyhow::Result<CacheMember> {
    if let Some(member) = args.cluster.members.iter().find(|m| m.name == name) {
        return Ok(member.clone());
    }
    let (http, peer) = match &args.advertise {
        Some(advertise) => {
            let (http, peer) = advertise
                .split_once('/')
                .context("--advertise is HTTP_ADDR/PEER_ADDR")?;
            (http.to_string(), peer.to_string())
        }
        None => {
            let (Some(http), Some(peer)) = (&args.listen_http, &args.listen_peer) else {
                anyhow::bail!(
                    "node {name} is not in --cluster {}: give --advertise HTTP_ADDR/PEER_ADDR \
                     (or --listen-http and --listen-peer) so that the others can reach it",
                    args.cluster
                );
            };
            let port = |listen: &str| {
                listen
                    .parse::<std::net::SocketAddr>()
                    .map(|addr| addr.port())
                    .with_context(|| format!("listen address {listen} is not IP:PORT"))
            };
            let host = host_name()?;
            let ip = (host.as_str(), 0)
                .to_socket_addrs()
                .with_context(|| format!("resolving this host's name {host}"))?
                .map(|addr| addr.ip())
                .find(|ip| ip.is_ipv4() && !ip.is_loopback())
                .with_context(|| {
                    format!("host name {host} has no non-loopback IPv4 address; give --advertise")
                })?;
            (
                format!("{ip}:{}", port(http)?),
                format!("{ip}:{}", port(peer)?),
            )
        }
    };
    let spec: CacheClusterSpec = format!("{name}={http}/{peer}").parse()?;
    Ok(spec.members[0].clone())
}

pub fn run(args: CacheServeArgs) -> anyhow::Result<()> {
    let name = match &args.id {
        Some(id) => id.clone(),
        None => host_name()?,
    };
    let own = own_member(&args, &name)?;
    let joining = !args.cluster.members.iter().any(|m| m.name == name);
    if joining {
        tracing::info!(node = %name, http = %own.http, peer = %own.peer, seeds = %args.cluster, "joining the cluster of the seeds");
    }
    let http_addr = args.listen_http.clone().unwrap_or(own.http.clone());
    let peer_addr = args.listen_peer.clone().unwrap_or(own.peer.clone());
    let config = EngineConfig {
        name: name.clone(),
        core: args.core_config()?,
        tick: Duration::from_millis(args.tick_ms.max(1)),
        op_timeout: Duration::from_millis(args.op_timeout_ms),
        query_timeout: Duration::from_millis(500),
        failure_timeout: Duration::from_millis(args.failure_timeout_ms.max(1)),
        ignore_quorum: args.injects(InjectedBugArg::IgnoreQuorum),
        record_transitions: args.record_transitions,
    };
    if !args.inject_bugs.is_empty() {
        tracing::warn!(bugs = ?args.inject_bugs, "deliberate bugs switched on (--test-inject-bug): test use only");
    }
    tracing::info!(?config, store = %args.store, "effective configuration");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(async move {
        let backing =
            BackingStore::open(&args.store, Duration::from_millis(args.store_timeout_ms))?;
        let membership = Membership::new(args.cluster.members.clone(), &own)?;
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
            let threads = match args.resp_threads {
                // The other half is for what a RESP thread's requests also need: the kernel's
                // network stack, the node's own runtime, and clients on the same machine (as
                // under `distsync up`). On 2 CPUs with the load generator beside the node, two
                // RESP threads served a fifth fewer pipelined GETs than one, though the hit
                // path itself no longer serialises them (docs/performance/cache.md,
                // "2026-12-05 morning").
                0 => std::thread::available_parallelism().map_or(1, |cpus| (cpus.get() / 2).max(1)),
                threads => threads,
            };
            let busy_poll = Duration::from_micros(args.resp_busy_poll_us);
            spawn_resp_threads(resp.into_std()?, engine.clone(), threads, busy_poll)?;
        }
        run_cache_node(engine, http, peer, crate::serve::shutdown_signal()).await
    })
}

/// Serves the RESP port on `threads` threads, each with a single-threaded runtime serving its
/// own connections (handed out by an accept loop on the first, to the least busy), the way redis-server runs
/// its event loop, times the cores. A GET hit is a few microseconds of work between two
/// syscalls; spread over the main runtime's work-stealing workers, the wake-ups of other
/// workers and the shared run queues cost more per request than the lookup itself: paired
/// `redis-benchmark -t get` rounds went from a median 62,400 to 68,100 GET/s on one thread
/// (docs/performance/cache.md). Misses and writes still finish through the engine, whose
/// coherence traffic runs on the main runtime; a RESP task only awaits their outcome.
fn spawn_resp_threads(
    listener: std::net::TcpListener,
    engine: std::sync::Arc<distsync_server::cache::CacheEngine>,
    threads: usize,
    busy_poll: Duration,
) -> anyhow::Result<()> {
    use distsync_server::cache::{RespLane, accept_resp};
    type Start = (RespLane, Option<(std::net::TcpListener, Vec<RespLane>)>);
    // Each runtime is built on, and never leaves, its own thread: a runtime dropped here, on
    // the main runtime, would panic ("cannot drop a runtime in a context where blocking is not
    // allowed"). A thread whose start never comes (a later thread failed) just returns.
    let mut starts = Vec::new();
    let mut handles = Vec::new();
    for index in 0..threads.max(1) {
        let (handle_sender, handle_receiver) = std::sync::mpsc::channel();
        let (start_sender, start_receiver) = std::sync::mpsc::channel::<Start>();
        std::thread::Builder::new()
            .name(format!("resp-{index}"))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_io()
                    .enable_time()
                    .build();
                let runtime = match runtime {
                    Ok(runtime) => runtime,
                    Err(failure) => {
                        let _ = handle_sender.send(Err(failure));
                        return;
                    }
                };
                let _ = handle_sender.send(Ok(runtime.handle().clone()));
                let Ok((lane, acceptor)) = start_receiver.recv() else {
                    return;
                };
                runtime.block_on(async move {
                    if let Some((listener, lanes)) = acceptor {
                        match tokio::net::TcpListener::from_std(listener) {
                            Ok(listener) => {
                                tokio::join!(accept_resp(listener, lanes), lane.run());
                                return;
                            }
                            Err(failure) => {
                                tracing::error!(error = %failure, "RESP listener unusable");
                            }
                        }
                    }
                    lane.run().await
                });
            })
            .context("starting a RESP thread")?;
        let handle = handle_receiver
            .recv()
            .context("a RESP thread ended before its runtime started")?
            .context("starting a RESP runtime")?;
        handles.push(handle);
        starts.push(start_sender);
    }
    let lanes: Vec<RespLane> = handles
        .into_iter()
        .map(|handle| RespLane::new(handle, std::sync::Arc::clone(&engine), busy_poll))
        .collect();
    let mut acceptor = Some((listener, lanes.clone()));
    for (start, lane) in starts.into_iter().zip(lanes) {
        start
            .send((lane, acceptor.take()))
            .map_err(|_| anyhow::anyhow!("a RESP thread ended before it started serving"))?;
    }
    Ok(())
}
