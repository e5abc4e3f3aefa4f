//! `distsync cache get|put|delete|coherence|stats`.

use anyhow::Context;
use clap::{Args, Subcommand};
use distsync_client::cache::CacheClient;

/// `distsync cache …`: talk to cache nodes.
#[derive(Debug, Args)]
pub struct CacheCmd {
    /// Cache nodes' HTTP addresses as `NAME=HOST:PORT` (or `HOST:PORT`), comma-separated; the
    /// next one is tried when one cannot be reached.
    #[arg(
        long,
        global = true,
        env = "DISTSYNC_CACHE_ENDPOINTS",
        value_delimiter = ',',
        default_value = "c1=127.0.0.1:7201,c2=127.0.0.1:7202,c3=127.0.0.1:7203"
    )]
    pub endpoints: Vec<String>,
    /// Send the request to this node (by name) instead of the first reachable one.
    #[arg(long, global = true)]
    pub node: Option<String>,
    #[command(subcommand)]
    pub action: CacheAction,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum CacheAction {
    /// Print a key's value and the answering node's line state as JSON (exit 1 when absent).
    Get {
        /// The key.
        key: String,
    },
    /// Write a value; prints its version.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// Delete a key.
    Delete {
        /// The key.
        key: String,
    },
    /// Print every node's state of a key.
    Coherence {
        /// The key.
        key: String,
    },
    /// Print a node's statistics as JSON (every endpoint's without --node).
    Stats,
}

pub fn run(cmd: CacheCmd) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(async move {
        let client = CacheClient::new(&cmd.endpoints);
        let node = cmd.node.as_deref();
        match cmd.action {
            CacheAction::Get { key } => match client.get(&key, node).await? {
                Some(entry) => println!("{}", serde_json::to_string(&entry)?),
                None => {
                    eprintln!("not found: {key}");
                    std::process::exit(1);
                }
            },
            CacheAction::Put { key, value } => {
                let written = client.put(&key, &value, node).await?;
                println!("{}", serde_json::to_string(&written)?);
            }
            CacheAction::Delete { key } => {
                client.delete(&key, node).await?;
                println!("deleted {key}");
            }
            CacheAction::Coherence { key } => {
                let view = client.coherence(&key, node).await?;
                println!("{}", serde_json::to_string_pretty(&view)?);
            }
            CacheAction::Stats => {
                if node.is_some() {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&client.stats(node).await?)?
                    );
                } else {
                    for index in 0..client.endpoints().len() {
                        match client.stats_at(index).await {
                            Ok(stats) => println!("{}", serde_json::to_string(&stats)?),
                            Err(error) => eprintln!("{}: {error}", client.endpoints()[index].base),
                        }
                    }
                }
            }
        }
        Ok(())
    })
}
