//! Partition ids and how they become ring keys.

use std::fmt;

/// A queue partition, numbered `0..partitions`.
///
/// A newtype so that a partition id cannot be swapped with a shard or node id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PartitionId(pub u32);

impl PartitionId {
    /// The bytes hashed to place this partition: the id as 4 big-endian bytes.
    ///
    /// Fixed forever: every process must derive the same key from the same id.
    pub fn ring_key(self) -> [u8; 4] {
        self.0.to_be_bytes()
    }
}

impl fmt::Display for PartitionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_key_is_big_endian_id() {
        // Proves the partition key encoding, which every process must agree on, is fixed.
        assert_eq!(PartitionId(0x0102_0304).ring_key(), [1, 2, 3, 4]);
    }
}
