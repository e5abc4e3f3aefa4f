//! `distsync serve lock`.

use anyhow::Context;
use clap::Args;
use distsync_lock::LockConfig;
use distsync_server::lock::{LockNodeConfig, SessionTiming, run_lock_node};
use distsync_server::raft::{ClusterSpec, DriverConfig};
use std::path::PathBuf;
use std::time::Duration;

/// Run a lock-service node.
#[derive(Debug, Args)]
pub struct LockServeArgs {
    /// This node's id (a key of --cluster).
    #[arg(long, env = "DISTSYNC_NODE_ID")]
    pub id: u64,
    /// Every node: `ID=HTTP_ADDR/RAFT_ADDR,…`. Addresses are only for dialing.
    #[arg(long, env = "DISTSYNC_CLUSTER")]
    pub cluster: ClusterSpec,
    /// Directory of the write-ahead log and snapshots.
    #[arg(long, env = "DISTSYNC_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Bind the HTTP API here instead of this node's address in --cluster (e.g. 0.0.0.0:7001).
    #[arg(long, env = "DISTSYNC_LISTEN_HTTP")]
    pub listen_http: Option<String>,
    /// Bind the peer port here instead of this node's address in --cluster.
    #[arg(long, env = "DISTSYNC_LISTEN_RAFT")]
    pub listen_raft: Option<String>,
    /// Start outside the membership and wait to be added (POST /v1/cluster/members).
    #[arg(long, env = "DISTSYNC_JOIN")]
    pub join: bool,
    /// Minimum election timeout; each election draws from [t, 2t). The default keeps the time
    /// from a leader's crash to the next grant under 1 s even when one split vote forces a second
    /// election (detection up to 2t, then up to 2t again).
    #[arg(long, env = "DISTSYNC_ELECTION_TIMEOUT_MS", default_value_t = 200)]
    pub election_timeout_ms: u64,
    /// Leader heartbeat interval.
    #[arg(long, env = "DISTSYNC_HEARTBEAT_MS", default_value_t = 50)]
    pub heartbeat_ms: u64,
    /// Length of one Raft tick.
    #[arg(long, env = "DISTSYNC_TICK_MS", default_value_t = 10)]
    pub tick_ms: u64,
    /// Take a snapshot every this many applied entries.
    #[arg(long, env = "DISTSYNC_SNAPSHOT_INTERVAL", default_value_t = 10_000)]
    pub snapshot_interval: u64,
    /// Extra time a new leader gives every session before expiring it.
    #[arg(long, env = "DISTSYNC_LOCK_SESSION_GRACE_MS", default_value_t = 2_000)]
    pub session_grace_ms: u64,
    /// Smallest session TTL accepted.
    #[arg(long, env = "DISTSYNC_LOCK_SESSION_TTL_MS_MIN", default_value_t = 500)]
    pub session_ttl_ms_min: u64,
    /// How long a write may take to commit before the answer is `no_leader`.
    #[arg(long, env = "DISTSYNC_COMMIT_TIMEOUT_MS", default_value_t = 3_000)]
    pub commit_timeout_ms: u64,
    /// Write this many bytes of zeros ahead of the log's records, so that the fsync after an
    /// append flushes data only (no file-size change to journal); 0 turns it off.
    #[arg(
        long,
        env = "DISTSYNC_WAL_PREALLOCATE_BYTES",
        default_value_t = distsync_wal::WalOptions::default().preallocate_bytes
    )]
    pub wal_preallocate_bytes: u64,
    /// How long the leader may hold back an acquire that will queue behind a holder, so that
    /// it shares the log append and fsync of the next proposal (usually the release that lets
    /// the next waiter in) instead of costing one of its own; 0 proposes every request at once.
    #[arg(long, env = "DISTSYNC_QUEUED_ACQUIRE_BATCH_MS", default_value_t = 2)]
    pub queued_acquire_batch_ms: u64,
    /// Do not fsync the log. UNSAFE: a machine crash can lose acknowledged grants.
    #[arg(long, env = "DISTSYNC_UNSAFE_NO_FSYNC")]
    pub unsafe_no_fsync: bool,
    /// Serve `POST /v1/admin/crash`, which aborts this process (for `distsync demo` and fault
    /// drills; without this flag it answers 403 `forbidden`).
    #[arg(long, env = "DISTSYNC_ALLOW_FAULT_INJECTION")]
    pub allow_fault_injection: bool,
}

/// The longest hold-back `--queued-acquire-batch-ms` accepts (10 minutes): far past any use,
/// and far from overflowing a deadline.
const QUEUED_ACQUIRE_BATCH_MS_LIMIT: u64 = 600_000;

pub fn run(args: LockServeArgs) -> anyhow::Result<()> {
    let own = args
        .cluster
        .members
        .get(&args.id)
        .with_context(|| {
            format!(
                "node {} is not listed in --cluster {}",
                args.id, args.cluster
            )
        })?
        .clone();
    let http_addr = args.listen_http.clone().unwrap_or(own.http);
    let raft_addr = args.listen_raft.clone().unwrap_or(own.raft);
    let lock = LockConfig {
        session_ttl_ms_min: args.session_ttl_ms_min,
        ..LockConfig::default()
    };
    lock.validate()?;
    if args.queued_acquire_batch_ms >= args.commit_timeout_ms.min(QUEUED_ACQUIRE_BATCH_MS_LIMIT) {
        // A held-back acquire must not outlive its commit timeout: it would be answered
        // `no_leader`, withdrawn and retried, again and again while the lock stays taken.
        anyhow::bail!(
            "--queued-acquire-batch-ms ({}) must be below --commit-timeout-ms ({}) and {}",
            args.queued_acquire_batch_ms,
            args.commit_timeout_ms,
            QUEUED_ACQUIRE_BATCH_MS_LIMIT
        );
    }
    let config = LockNodeConfig {
        driver: DriverConfig {
            id: args.id,
            cluster: args.cluster,
            join: args.join,
            data_dir: args.data_dir,
            tick: Duration::from_millis(args.tick_ms.max(1)),
            election_timeout: Duration::from_millis(args.election_timeout_ms),
            heartbeat: Duration::from_millis(args.heartbeat_ms),
            snapshot_interval_entries: args.snapshot_interval,
            fsync: !args.unsafe_no_fsync,
            wal_preallocate_bytes: args.wal_preallocate_bytes,
            batch_join_max: Duration::from_millis(args.queued_acquire_batch_ms),
        },
        lock,
        timing: SessionTiming {
            leader_grace: Duration::from_millis(args.session_grace_ms),
        },
        commit_timeout: Duration::from_millis(args.commit_timeout_ms),
        leader_wait: Duration::from_millis(args.election_timeout_ms * 4),
        allow_fault_injection: args.allow_fault_injection,
    };
    if args.unsafe_no_fsync {
        tracing::warn!("fsync is OFF: acknowledged grants can be lost in a machine crash");
    }
    tracing::info!(?config, "effective configuration");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let http = tokio::net::TcpListener::bind(&http_addr)
            .await
            .with_context(|| format!("binding the HTTP API on {http_addr}"))?;
        let raft = tokio::net::TcpListener::bind(&raft_addr)
            .await
            .with_context(|| format!("binding the peer port on {raft_addr}"))?;
        run_lock_node(config, http, raft, super::shutdown_signal()).await
    })
}
