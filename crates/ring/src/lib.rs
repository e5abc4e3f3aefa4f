//! A pure consistent-hash ring with virtual nodes and a fixed, process-independent hash.
//!
//! [`HashRing`] maps keys to members: the queue service maps partitions to Redis shards
//! ([`HashRing::partition_map`]), and the cache service maps keys to their home node
//! ([`HashRing::owner`]) and, when that node dies, to the next one ([`HashRing::owners`]).
//!
//! What it is:
//! - **Consistent.** Each member gets `vnodes_per_member` points on a 64-bit ring; a key belongs
//!   to the first point clockwise from its hash. Adding a member moves keys only to it (about
//!   `1/(N+1)` of them) and removing one moves only its keys (about `1/N`).
//! - **Deterministic everywhere.** Points depend only on member *names* and keys are hashed with
//!   XXH3-64 under fixed seeds, so every process, build and platform computes the same owners,
//!   whatever order members were added in. `std`'s `RandomState` is never used.
//! - **Pure and total.** No clock, no RNG, no IO, no async. Lookups never panic: an empty ring
//!   answers `None`. Lookups cost one hash and a binary search over the sorted points.
//!
//! What it is not: a membership or failure detector (callers decide who is in the ring), a
//! replication policy (callers decide what to do with [`HashRing::owners`]), or a weighted ring
//! (every member gets the same number of virtual nodes).
//!
//! ```
//! use distsync_ring::{HashRing, PartitionId};
//!
//! let mut ring: HashRing = HashRing::new(256)?;
//! for shard in ["r1", "r2", "r3"] {
//!     ring.add(shard.to_owned())?;
//! }
//! let home = ring.owner(b"user:42").expect("ring is not empty");
//! let next = ring.owners(b"user:42", 2)[1].clone();
//! assert_ne!(*home, next);
//!
//! // The queue places partitions 0..16; all members agree on this map.
//! let map = ring.partition_map(16).expect("ring is not empty");
//! assert_eq!(Some(map[5]), ring.partition_owner(PartitionId(5)));
//!
//! // When a node leaves, only its keys move, and they move to the next owner.
//! let gone = home.clone();
//! ring.remove(&gone)?;
//! assert_eq!(ring.owner(b"user:42"), Some(&next));
//! # Ok::<(), distsync_ring::RingError>(())
//! ```
#![warn(missing_docs)]

mod error;
mod hash;
mod partition;
mod ring;

pub use error::RingError;
pub use partition::PartitionId;
pub use ring::{HashRing, VNODES_PER_MEMBER_DEFAULT, VNODES_PER_MEMBER_MAX};
