//! Starting a lock node: storage, Raft driver, peer listener, HTTP API.

use super::state_machine::{LockStateMachine, SessionTiming};
use super::{LockService, router};
use crate::metrics::Metrics;
use crate::raft::{DriverConfig, spawn_driver};
use distsync_lock::LockConfig;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// Everything a lock node needs to run.
#[derive(Clone, Debug)]
pub struct LockNodeConfig {
    /// Raft and storage settings.
    pub driver: DriverConfig,
    /// Limits of the lock table (must be identical on every node).
    pub lock: LockConfig,
    /// Leader-side session timing.
    pub timing: SessionTiming,
    /// How long a proposal may take to commit before answering `no_leader`.
    pub commit_timeout: Duration,
    /// How long a request waits for a leader to be known.
    pub leader_wait: Duration,
    /// Whether `POST /v1/admin/crash` may abort the process.
    pub allow_fault_injection: bool,
}

/// Runs a lock node until `shutdown` completes or the Raft driver fails.
///
/// # Errors
/// When storage cannot be opened, the driver stops on a storage failure, or the HTTP server
/// fails.
pub async fn run_lock_node(
    config: LockNodeConfig,
    http_listener: TcpListener,
    raft_listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::default());
    let state_machine = LockStateMachine::new(
        config.lock.clone(),
        config.timing,
        Arc::clone(&metrics.lock),
    )?;
    let (raft, mut driver) = spawn_driver(
        config.driver.clone(),
        state_machine,
        raft_listener,
        Arc::clone(&metrics.raft),
    )?;
    let http_client = reqwest::Client::builder()
        .pool_idle_timeout(Duration::from_secs(30))
        .build()?;
    let service = Arc::new(LockService {
        raft,
        metrics,
        http_client,
        leader_wait: config.leader_wait,
        commit_timeout: config.commit_timeout,
        request_tags: super::RequestTags::new(),
        allow_fault_injection: config.allow_fault_injection,
    });
    let app = router(service);
    tracing::info!(
        node = config.driver.id,
        http = %http_listener.local_addr()?,
        raft = %raft_listener_addr(&config),
        data_dir = %config.driver.data_dir.display(),
        "lock node started"
    );
    let server = axum::serve(http_listener, app).with_graceful_shutdown(shutdown);
    tokio::select! {
        result = server => {
            result?;
            driver.abort();
            Ok(())
        }
        result = &mut driver => {
            match result {
                Ok(Ok(())) => Ok(()),
                Ok(Err(error)) => Err(error),
                Err(error) => Err(anyhow::anyhow!("raft driver task failed: {error}")),
            }
        }
    }
}

fn raft_listener_addr(config: &LockNodeConfig) -> String {
    config
        .driver
        .cluster
        .members
        .get(&config.driver.id)
        .map_or_else(|| "?".to_string(), |address| address.raft.clone())
}
