//! `distsync serve …`: run one node of a service.

mod lock;

use clap::{Args, Subcommand};

/// Arguments of `distsync serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(subcommand)]
    pub service: ServeService,
}

/// Which service this node runs.
#[derive(Debug, Subcommand)]
pub enum ServeService {
    /// A node of the Raft-replicated lock service.
    Lock(lock::LockServeArgs),
    /// A node of the queue service (stateless over its Redis or embedded shards).
    Queue(crate::queue::serve::QueueServeArgs),
    /// A node of the MESI-coherent cache service.
    Cache(crate::cache::serve::CacheServeArgs),
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    match args.service {
        ServeService::Lock(args) => lock::run(args),
        ServeService::Queue(args) => crate::queue::serve::run(args),
        ServeService::Cache(args) => crate::cache::serve::run(args),
    }
}

/// Completes on Ctrl-C or SIGTERM (what `docker stop` sends).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
    tracing::info!("shutting down");
}
