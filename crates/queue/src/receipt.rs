//! Message ids and receipts: everything needed to route an ack is in the string itself.

use crate::backend::StreamId;
use distsync_ring::PartitionId;
use std::fmt;

/// A message's id: its partition and its stream id, printed `"{partition}-{ms}-{seq}"`.
///
/// Stable across deliveries (a redelivered message has the same id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageId {
    /// The partition the message is in.
    pub partition: PartitionId,
    /// Its id in the partition's stream.
    pub stream_id: StreamId,
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.partition.0, self.stream_id)
    }
}

/// The handle of one delivery, used to ack or nack it: `"{partition}:{shard}:{ms}-{seq}"`.
///
/// It names the shard that delivered the message, not only the partition, so an ack reaches
/// the stream the message was read from even if the ring has since moved the partition (a
/// draining old location). Receipts hold no secret and no node state: any node can route them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Receipt {
    /// The partition the message was read from.
    pub partition: PartitionId,
    /// The shard that holds the stream it was read from.
    pub shard: String,
    /// The entry's id in that stream.
    pub stream_id: StreamId,
}

impl fmt::Display for Receipt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.partition.0, self.shard, self.stream_id)
    }
}

impl Receipt {
    /// Parses a receipt printed by [`Receipt`]'s `Display`.
    ///
    /// # Errors
    ///
    /// What is malformed.
    pub fn parse(text: &str) -> Result<Receipt, String> {
        let mut parts = text.splitn(3, ':');
        let (Some(partition), Some(shard), Some(id)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err("expected \"partition:shard:ms-seq\"".to_owned());
        };
        let partition = partition
            .parse::<u32>()
            .map_err(|_| format!("partition {partition:?} is not a number"))?;
        if shard.is_empty() {
            return Err("empty shard name".to_owned());
        }
        let stream_id = id.parse::<StreamId>()?;
        Ok(Receipt {
            partition: PartitionId(partition),
            shard: shard.to_owned(),
            stream_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipts_round_trip_and_reject_garbage() {
        // Proves a printed receipt parses back to itself, and malformed ones are refused.
        let receipt = Receipt {
            partition: PartitionId(7),
            shard: "r2".to_owned(),
            stream_id: StreamId {
                ms: 1_700_000_000_123,
                seq: 4,
            },
        };
        assert_eq!(receipt.to_string(), "7:r2:1700000000123-4");
        assert_eq!(Receipt::parse(&receipt.to_string()), Ok(receipt));
        for bad in [
            "",
            "nope",
            "x:r1:1-0",
            "1::1-0",
            "1:r1:1",
            "1:r1:a-b",
            "1:r1:1-0-0",
        ] {
            assert!(Receipt::parse(bad).is_err(), "{bad:?} parsed");
        }
    }
}
