//! `distsync probe URL`: one HTTP GET whose exit status says whether the answer was a 2xx. It is
//! the container health check (the runtime image ships no HTTP client) and lets scripts ask a
//! node that is cut off from every network through `docker exec`.

use anyhow::Context;
use clap::Args;
use std::time::Duration;

/// Arguments of `distsync probe`.
#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// The URL to GET, e.g. `http://127.0.0.1:7001/readyz`.
    #[arg(env = "DISTSYNC_PROBE_URL")]
    pub url: String,
    /// Give up after this long (the health check's own timeout should be longer).
    #[arg(long, env = "DISTSYNC_PROBE_TIMEOUT_MS", default_value_t = 2_000)]
    pub timeout_ms: u64,
}

/// Prints the status line on stderr and the body on stdout; fails unless the status is 2xx.
pub fn run(args: ProbeArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let (status, body) = runtime.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(args.timeout_ms))
            .build()?;
        let response = client
            .get(&args.url)
            .send()
            .await
            .with_context(|| format!("GET {}", args.url))?;
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        anyhow::Ok((status, body))
    })?;
    eprintln!("{status}");
    println!("{}", body.trim_end());
    anyhow::ensure!(status.is_success(), "GET {} answered {status}", args.url);
    Ok(())
}
