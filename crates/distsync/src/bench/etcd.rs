//! A minimal etcd v3 lock client over etcd's JSON gateway (grpc-gateway), for benchmarking etcd
//! with the same client loop as distsync. Only what a lock benchmark needs: lease grant,
//! keep-alive and revoke, lock and unlock.

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use std::time::Duration;
use tokio::task::JoinHandle;

/// One etcd endpoint and the gateway path prefix its version serves.
#[derive(Clone, Debug)]
pub struct EtcdGateway {
    http: reqwest::Client,
    base: String,
}

#[derive(Deserialize)]
struct VersionAnswer {
    etcdserver: String,
}

#[derive(Deserialize)]
struct LeaseGrantAnswer {
    /// int64 values are strings in grpc-gateway's JSON.
    #[serde(rename = "ID")]
    id: String,
}

#[derive(Deserialize)]
struct LockAnswer {
    key: String,
}

#[derive(Deserialize)]
struct GatewayError {
    #[serde(default)]
    message: String,
    #[serde(default)]
    code: i32,
}

/// The gateway's path prefix by server version: `/v3` from 3.4 on, `/v3beta` in 3.3 and
/// `/v3alpha` before (3.4 still accepts `/v3beta`, 3.5 dropped it).
fn gateway_prefix(server_version: &str) -> anyhow::Result<&'static str> {
    let mut parts = server_version.split('.').map(str::parse::<u32>);
    let (Some(Ok(major)), Some(Ok(minor))) = (parts.next(), parts.next()) else {
        bail!("etcd reported an unparsable version {server_version:?}");
    };
    Ok(match (major, minor) {
        (3, 0..=2) => "/v3alpha",
        (3, 3) => "/v3beta",
        (3, _) => "/v3",
        _ => bail!("etcd {server_version} is not a v3 server"),
    })
}

impl EtcdGateway {
    /// Connects to `endpoint` (`host:port` of an etcd client URL) and picks the gateway prefix
    /// from the version it reports. Returns the gateway and that version.
    ///
    /// # Errors
    /// When the endpoint does not answer `/version` or reports an unknown version.
    pub async fn connect(endpoint: &str) -> anyhow::Result<(Self, String)> {
        let http = reqwest::Client::builder()
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(30))
            .build()?;
        let version: VersionAnswer = http
            .get(format!("http://{endpoint}/version"))
            .send()
            .await
            .with_context(|| format!("asking etcd at {endpoint} for its version"))?
            .json()
            .await
            .context("decoding etcd's /version answer")?;
        let prefix = gateway_prefix(&version.etcdserver)?;
        Ok((
            EtcdGateway {
                http,
                base: format!("http://{endpoint}{prefix}"),
            },
            version.etcdserver,
        ))
    }

    async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: serde_json::Value,
    ) -> anyhow::Result<T> {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .with_context(|| format!("POST {path}"))?;
        let status = response.status();
        let bytes = response.bytes().await?;
        if !status.is_success() {
            let error: GatewayError = serde_json::from_slice(&bytes).unwrap_or(GatewayError {
                message: String::from_utf8_lossy(&bytes).into_owned(),
                code: -1,
            });
            bail!(
                "POST {path}: HTTP {status}, grpc code {}: {}",
                error.code,
                error.message
            );
        }
        serde_json::from_slice(&bytes).with_context(|| format!("decoding the answer to {path}"))
    }

    /// Grants a lease of `ttl` and keeps it alive in the background until the returned
    /// [`EtcdLease`] is revoked or dropped.
    ///
    /// # Errors
    /// When etcd refuses or cannot be reached.
    pub async fn grant_lease(&self, ttl: Duration) -> anyhow::Result<EtcdLease> {
        let ttl_s = ttl.as_secs().max(2);
        let answer: LeaseGrantAnswer = self
            .post("/lease/grant", serde_json::json!({ "TTL": ttl_s }))
            .await?;
        let gateway = self.clone();
        let id = answer.id.clone();
        // One keep-alive per third of the TTL, as etcd's own clients do.
        let keep_alive = tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(ttl_s) / 3);
            every.tick().await;
            loop {
                every.tick().await;
                let sent: anyhow::Result<serde_json::Value> = gateway
                    .post("/lease/keepalive", serde_json::json!({ "ID": id }))
                    .await;
                if let Err(error) = sent {
                    tracing::warn!(%error, "etcd lease keep-alive failed");
                }
            }
        });
        Ok(EtcdLease {
            gateway: self.clone(),
            id: answer.id,
            keep_alive,
        })
    }
}

/// A lease with its background keep-alive: etcd's equivalent of a distsync session.
#[derive(Debug)]
pub struct EtcdLease {
    gateway: EtcdGateway,
    id: String,
    keep_alive: JoinHandle<()>,
}

impl EtcdLease {
    /// Blocks until the lock `name` is held under this lease; returns the lock's key, which
    /// [`EtcdLease::unlock`] takes.
    ///
    /// # Errors
    /// When etcd refuses (for example the lease expired) or cannot be reached.
    pub async fn lock(&self, name: &str) -> anyhow::Result<String> {
        let answer: LockAnswer = self
            .gateway
            .post(
                "/lock/lock",
                serde_json::json!({ "name": BASE64.encode(name), "lease": self.id }),
            )
            .await?;
        Ok(answer.key)
    }

    /// Releases the lock held under `key` (as returned by [`EtcdLease::lock`]).
    ///
    /// # Errors
    /// When etcd refuses or cannot be reached.
    pub async fn unlock(&self, key: &str) -> anyhow::Result<()> {
        let _: serde_json::Value = self
            .gateway
            .post("/lock/unlock", serde_json::json!({ "key": key }))
            .await?;
        Ok(())
    }

    /// Stops the keep-alive and revokes the lease, releasing anything still held under it.
    ///
    /// # Errors
    /// When etcd refuses or cannot be reached.
    pub async fn revoke(self) -> anyhow::Result<()> {
        self.keep_alive.abort();
        let _: serde_json::Value = self
            .gateway
            .post("/lease/revoke", serde_json::json!({ "ID": self.id }))
            .await?;
        Ok(())
    }
}

impl Drop for EtcdLease {
    fn drop(&mut self) {
        self.keep_alive.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::gateway_prefix;

    #[test]
    fn the_gateway_prefix_follows_the_server_version() {
        assert_eq!(gateway_prefix("3.2.26").unwrap(), "/v3alpha");
        assert_eq!(gateway_prefix("3.3.25").unwrap(), "/v3beta");
        assert_eq!(gateway_prefix("3.4.23").unwrap(), "/v3");
        assert_eq!(gateway_prefix("3.5.9").unwrap(), "/v3");
        assert!(gateway_prefix("2.3.8").is_err());
        assert!(gateway_prefix("garbage").is_err());
    }
}
