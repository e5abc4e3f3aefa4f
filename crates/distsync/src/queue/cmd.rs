//! `distsync queue publish|consume|stats`.

use anyhow::Context;
use clap::{Args, Subcommand};
use distsync_api::{PublishMessage, ReceiveRequest};
use distsync_client::queue::{QueueClient, Start};

/// `distsync queue …`: talk to queue nodes.
#[derive(Debug, Args)]
pub struct QueueCmd {
    /// Queue node(s), comma-separated; the next one is tried when one cannot be reached.
    #[arg(
        long,
        global = true,
        env = "DISTSYNC_QUEUE_ADDR",
        default_value = "127.0.0.1:7400",
        value_delimiter = ','
    )]
    pub addr: Vec<String>,
    #[command(subcommand)]
    pub action: QueueAction,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum QueueAction {
    /// Publish one message; prints its id.
    Publish {
        /// Queue name.
        queue: String,
        /// Message body.
        body: String,
        /// Partitioning key (same key, same partition, publish order kept).
        #[arg(long)]
        key: Option<String>,
    },
    /// Receive messages and print them as JSON lines.
    Consume {
        /// Queue name.
        queue: String,
        /// Consumer group (created on first use).
        #[arg(long)]
        group: String,
        /// Consumer name within the group. One process at a time per name: a starting
        /// consumer first takes back the messages pending under its name (see --no-resume).
        /// Without a name the consumer is `cli` and does not resume, so that two people trying
        /// the command at once do not take each other's in-flight messages.
        #[arg(long, env = "DISTSYNC_QUEUE_CONSUMER")]
        consumer: Option<String>,
        /// Acknowledge every message after printing it.
        #[arg(long)]
        ack: bool,
        /// Most messages per receive.
        #[arg(long, default_value_t = 10)]
        max: u32,
        /// Long-poll limit per receive.
        #[arg(long, default_value_t = 5_000)]
        wait_ms: u64,
        /// Visibility timeout.
        #[arg(long, default_value_t = 30_000)]
        visibility_ms: u64,
        /// Keep receiving until interrupted instead of stopping after one receive; without
        /// --ack, each message is then nacked (handed back) after printing.
        #[arg(long)]
        follow: bool,
        /// Do not start with the messages still pending under --consumer (left by an earlier
        /// run that died before acking them); they then come back only after their visibility
        /// timeout, to any consumer of the group. Needed only if several processes share one
        /// consumer name, which they should not: without this flag, each one starting would
        /// take the others' in-flight messages.
        #[arg(long)]
        no_resume: bool,
    },
    /// Print per-partition statistics as JSON.
    Stats {
        /// Queue name.
        queue: String,
    },
}

pub fn run(cmd: QueueCmd) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(async move {
        let client = QueueClient::new(&cmd.addr);
        match cmd.action {
            QueueAction::Publish { queue, body, key } => {
                let ids = client
                    .publish(
                        &queue,
                        vec![PublishMessage {
                            key,
                            body,
                            headers: None,
                        }],
                    )
                    .await?;
                for id in ids {
                    println!("{id}");
                }
            }
            QueueAction::Consume {
                queue,
                group,
                consumer,
                ack,
                max,
                wait_ms,
                visibility_ms,
                follow,
                no_resume,
            } => {
                // A (re)started consumer first takes back what it left pending; only a named
                // one, since the default name is anyone's.
                let resume = consumer.is_some() && !no_resume;
                let request = ReceiveRequest {
                    group: group.clone(),
                    consumer: consumer.unwrap_or_else(|| "cli".to_owned()),
                    max,
                    wait_ms,
                    visibility_ms,
                    resume,
                };
                if follow {
                    let start = if !resume { Start::Fresh } else { Start::Resume };
                    // The consumer loop: print, then ack (with --ack) or hand back (without).
                    client
                        .consume(&queue, &request, start, |message| {
                            match serde_json::to_string(message) {
                                Ok(line) => println!("{line}"),
                                Err(error) => eprintln!("cannot print message: {error}"),
                            }
                            (ack, true)
                        })
                        .await?;
                } else {
                    let response = client.receive(&queue, &request).await?;
                    let receipts: Vec<String> = response
                        .messages
                        .iter()
                        .map(|m| m.receipt.clone())
                        .collect();
                    for message in &response.messages {
                        println!("{}", serde_json::to_string(message)?);
                    }
                    if ack && !receipts.is_empty() {
                        client.ack(&queue, &group, receipts).await?;
                    }
                }
            }
            QueueAction::Stats { queue } => {
                let stats = client.stats(&queue).await?;
                println!("{}", serde_json::to_string_pretty(&stats)?);
            }
        }
        Ok(())
    })
}
