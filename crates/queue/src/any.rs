//! Shard specifications (`r1=redis://…`, `embedded:DIR`) and [`AnyBackend`], which lets one
//! node hold shards of either kind behind the same [`StreamBackend`] trait.

use crate::backend::{
    BackendError, DeadLetter, Delivery, NewEntry, StreamBackend, StreamId, StreamInfo,
};
use crate::config::QueueConfig;
use crate::embedded::FileStreams;
#[cfg(feature = "redis")]
use crate::redis_streams::RedisStreams;
use std::path::PathBuf;
use std::time::Duration;

/// Where a shard's data lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardTarget {
    /// A Redis server URL (`redis://host:port`).
    Redis(String),
    /// A directory for the embedded backend.
    Embedded(PathBuf),
}

/// One `name=target` item of `--shards`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardSpec {
    /// The shard's name: its identity on the ring. Renaming a shard moves its partitions.
    pub name: String,
    /// Where its data lives.
    pub target: ShardTarget,
}

/// Parses `r1=redis://h:p,r2=redis://h:p` or `embedded:DIR` (one shard named `embedded`) or
/// `e1=embedded:DIR1,e2=embedded:DIR2`.
///
/// # Errors
///
/// What is malformed: empty list, a bad or repeated name, an unknown scheme.
pub fn parse_shard_specs(text: &str) -> Result<Vec<ShardSpec>, String> {
    let mut specs: Vec<ShardSpec> = Vec::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, target) = match item.split_once('=') {
            Some((name, target)) => (name.trim().to_owned(), target.trim()),
            None if item.starts_with("embedded:") => ("embedded".to_owned(), item),
            None => {
                return Err(format!(
                    "shard {item:?} must be NAME=redis://HOST:PORT or embedded:DIR"
                ));
            }
        };
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(format!(
                "shard name {name:?} must be letters, digits, '_' or '-'"
            ));
        }
        if specs.iter().any(|s| s.name == name) {
            return Err(format!("shard name {name:?} is given twice"));
        }
        let target = if let Some(dir) = target.strip_prefix("embedded:") {
            if dir.is_empty() {
                return Err(format!("shard {name}: embedded needs a directory"));
            }
            ShardTarget::Embedded(PathBuf::from(dir))
        } else if target.starts_with("redis://") {
            ShardTarget::Redis(target.to_owned())
        } else {
            return Err(format!(
                "shard {name}: {target:?} is neither redis://… nor embedded:DIR"
            ));
        };
        specs.push(ShardSpec { name, target });
    }
    if specs.is_empty() {
        return Err("at least one shard is needed".to_owned());
    }
    Ok(specs)
}

/// A shard backend of either kind.
#[derive(Debug)]
pub enum AnyBackend {
    /// Redis Streams.
    #[cfg(feature = "redis")]
    Redis(RedisStreams),
    /// The embedded file-backed backend.
    Embedded(FileStreams),
}

impl AnyBackend {
    /// Opens the backend a spec names.
    ///
    /// # Errors
    ///
    /// A bad URL or an unreadable directory.
    pub fn open(target: &ShardTarget, config: &QueueConfig) -> Result<Self, BackendError> {
        match target {
            #[cfg(feature = "redis")]
            ShardTarget::Redis(url) => Ok(AnyBackend::Redis(RedisStreams::connect(
                url,
                config.shard_response_timeout,
                config.shard_connections,
            )?)),
            #[cfg(not(feature = "redis"))]
            ShardTarget::Redis(url) => Err(BackendError::Other(format!(
                "{url}: built without the redis feature"
            ))),
            ShardTarget::Embedded(dir) => Ok(AnyBackend::Embedded(FileStreams::open(dir)?)),
        }
    }
}

macro_rules! delegate {
    ($self:ident, $backend:ident => $call:expr) => {
        match $self {
            #[cfg(feature = "redis")]
            AnyBackend::Redis($backend) => $call.await,
            AnyBackend::Embedded($backend) => $call.await,
        }
    };
}

impl StreamBackend for AnyBackend {
    async fn ping(&self) -> Result<(), BackendError> {
        delegate!(self, b => b.ping())
    }
    async fn append(
        &self,
        batches: &[(String, Vec<NewEntry>)],
    ) -> Result<Vec<Vec<StreamId>>, BackendError> {
        delegate!(self, b => b.append(batches))
    }
    async fn ensure_group(&self, stream: &str, group: &str) -> Result<(), BackendError> {
        delegate!(self, b => b.ensure_group(stream, group))
    }
    async fn read_new(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        count: usize,
    ) -> Result<Vec<Delivery>, BackendError> {
        delegate!(self, b => b.read_new(stream, group, consumer, count))
    }
    async fn read_own_pending(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        count: usize,
    ) -> Result<Vec<Delivery>, BackendError> {
        delegate!(self, b => b.read_own_pending(stream, group, consumer, count))
    }
    async fn claim_idle(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        min_idle: Duration,
        count: usize,
    ) -> Result<Vec<Delivery>, BackendError> {
        delegate!(self, b => b.claim_idle(stream, group, consumer, min_idle, count))
    }
    async fn ack(&self, stream: &str, group: &str, ids: &[StreamId]) -> Result<u64, BackendError> {
        delegate!(self, b => b.ack(stream, group, ids))
    }
    async fn release(
        &self,
        stream: &str,
        group: &str,
        ids: &[StreamId],
    ) -> Result<u64, BackendError> {
        delegate!(self, b => b.release(stream, group, ids))
    }
    async fn dead_letter(
        &self,
        stream: &str,
        group: &str,
        delivery: &Delivery,
    ) -> Result<(), BackendError> {
        delegate!(self, b => b.dead_letter(stream, group, delivery))
    }
    async fn dead_letters(
        &self,
        stream: &str,
        count: usize,
    ) -> Result<Vec<DeadLetter>, BackendError> {
        delegate!(self, b => b.dead_letters(stream, count))
    }
    async fn info(&self, stream: &str) -> Result<Option<StreamInfo>, BackendError> {
        delegate!(self, b => b.info(stream))
    }
    async fn trim_acknowledged(&self, stream: &str) -> Result<u64, BackendError> {
        delegate!(self, b => b.trim_acknowledged(stream))
    }
    async fn wait_for_new(
        &self,
        streams: &[String],
        group: &str,
        timeout: Duration,
    ) -> Result<(), BackendError> {
        delegate!(self, b => b.wait_for_new(streams, group, timeout))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_specs_parse_redis_and_embedded_forms() {
        // Proves the --shards grammar: named redis and embedded shards, the bare embedded form,
        // and refusal of empty, duplicate and unknown-scheme items.
        let specs =
            parse_shard_specs("r1=redis://127.0.0.1:6379,r2=redis://h:7000").expect("parse");
        assert_eq!(specs[1].name, "r2");
        assert_eq!(specs[1].target, ShardTarget::Redis("redis://h:7000".into()));
        let specs = parse_shard_specs("embedded:/tmp/q").expect("parse");
        assert_eq!(specs[0].name, "embedded");
        assert_eq!(specs[0].target, ShardTarget::Embedded("/tmp/q".into()));
        for bad in [
            "",
            "r1=redis://a,r1=redis://b",
            "r1=http://x",
            "r:1=redis://x",
            "foo",
        ] {
            assert!(parse_shard_specs(bad).is_err(), "{bad:?} accepted");
        }
    }
}
