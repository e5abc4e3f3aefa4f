//! `distsync lock …` and `distsync cluster …`: lock-service clients for people and scripts.

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use distsync_api::LockMode;
use distsync_client::{Client, ClientConfig};
use std::time::Duration;

/// Where the lock service is.
#[derive(Debug, Args, Clone)]
pub struct Endpoints {
    /// Lock nodes' HTTP addresses; any node serves any request.
    #[arg(
        long,
        global = true,
        env = "DISTSYNC_LOCK_ENDPOINTS",
        value_delimiter = ',',
        default_value = "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003"
    )]
    pub endpoints: Vec<String>,
}

impl Endpoints {
    pub fn client(&self) -> anyhow::Result<Client> {
        Client::new(ClientConfig::new(self.endpoints.clone())).context("building the client")
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ModeArg {
    Shared,
    Exclusive,
}

impl From<ModeArg> for LockMode {
    fn from(mode: ModeArg) -> Self {
        match mode {
            ModeArg::Shared => LockMode::Shared,
            ModeArg::Exclusive => LockMode::Exclusive,
        }
    }
}

/// `distsync lock`.
#[derive(Debug, Args)]
pub struct LockArgs {
    #[command(flatten)]
    pub endpoints: Endpoints,
    #[command(subcommand)]
    pub command: LockCommand,
}

#[derive(Debug, Subcommand)]
pub enum LockCommand {
    /// Create a session, acquire a lock, print the grant, hold it (keeping the session alive)
    /// until --hold elapses or Ctrl-C, then release it and close the session.
    Acquire {
        name: String,
        #[arg(long, value_enum, default_value_t = ModeArg::Exclusive)]
        mode: ModeArg,
        /// Session time-to-live.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// How long to wait for the lock (0s: try once).
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        wait: Duration,
        /// How long to hold it; without this flag, until Ctrl-C.
        #[arg(long, value_parser = humantime::parse_duration)]
        hold: Option<Duration>,
    },
    /// Release a lock held by a session.
    Release {
        name: String,
        #[arg(long)]
        session: u64,
        /// Only release the hold with this fencing token.
        #[arg(long)]
        token: Option<u64>,
    },
    /// Show a lock's holders and waiters (linearizable).
    Show { name: String },
}

/// `distsync cluster`.
#[derive(Debug, Args)]
pub struct ClusterArgs {
    #[command(flatten)]
    pub endpoints: Endpoints,
    #[command(subcommand)]
    pub command: ClusterCommand,
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// One line per node: role, term, leader, commit and applied index.
    Status,
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

pub fn run_lock(args: LockArgs) -> anyhow::Result<()> {
    let client = args.endpoints.client()?;
    runtime()?.block_on(async move {
        match args.command {
            LockCommand::Acquire {
                name,
                mode,
                ttl,
                wait,
                hold,
            } => {
                let session = client.create_session(ttl).await?;
                let guard = match session.lock(&name, mode.into(), wait).await {
                    Ok(guard) => guard,
                    Err(error) => {
                        let _ = session.close().await;
                        return Err(error.into());
                    }
                };
                println!(
                    "{}",
                    serde_json::json!({
                        "name": guard.name(),
                        "mode": guard.mode(),
                        "fencing_token": guard.fencing_token(),
                        "session_id": session.id(),
                    })
                );
                match hold {
                    Some(hold) => tokio::time::sleep(hold).await,
                    None => {
                        let _ = tokio::signal::ctrl_c().await;
                    }
                }
                guard.release().await?;
                session.close().await?;
                Ok(())
            }
            LockCommand::Release {
                name,
                session,
                token,
            } => {
                let released = client.release(session, &name, token).await?;
                println!("{}", serde_json::to_string(&released)?);
                Ok(())
            }
            LockCommand::Show { name } => {
                let state = client.lock_state(&name).await?;
                println!("{}", serde_json::to_string_pretty(&state)?);
                Ok(())
            }
        }
    })
}

pub fn run_cluster(args: ClusterArgs) -> anyhow::Result<()> {
    let client = args.endpoints.client()?;
    runtime()?.block_on(async move {
        match args.command {
            ClusterCommand::Status => {
                println!(
                    "{:<6} {:<22} {:<14} {:>6} {:>7} {:>10} {:>10}",
                    "node", "endpoint", "role", "term", "leader", "commit", "applied"
                );
                for endpoint in client.endpoints().to_vec() {
                    match client.cluster_status_of(&endpoint).await {
                        Ok(status) => println!(
                            "{:<6} {:<22} {:<14} {:>6} {:>7} {:>10} {:>10}",
                            status.id,
                            endpoint,
                            status.role,
                            status.term,
                            status
                                .leader_id
                                .map_or("-".to_string(), |id| id.to_string()),
                            status.commit_index,
                            status.applied_index
                        ),
                        Err(error) => println!("{:<6} {:<22} unreachable: {error}", "?", endpoint),
                    }
                }
                Ok(())
            }
        }
    })
}
