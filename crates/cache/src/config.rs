//! Configuration of a cache node and its directory. All limits carry their unit in the name.

use crate::error::CacheError;
use crate::store::{EvictionPolicy, StoreLimits};

/// When a write is acknowledged to the client.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum WritePolicy {
    /// Acknowledged once the node holds the line in M and has applied the write; the backing
    /// store is updated on eviction, when another node reads or writes the key, and on `flush`.
    /// A node that dies holding dirty lines loses those writes.
    #[default]
    WriteBack,
    /// Acknowledged only after the home confirms the value reached the backing store, so nothing
    /// acknowledged is lost when a node dies.
    WriteThrough,
}

/// Deliberate protocol bugs for the simulator's negative controls. Never set them elsewhere.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InjectedBugs {
    /// The home grants M without waiting for every `InvalidateAck` (and stops retransmitting
    /// the `Invalidate`s once the grant is acknowledged).
    pub grant_before_invalidate_acks: bool,
    /// A node evicting a Modified line drops it with a `PutExclusive` notice instead of writing
    /// it back.
    pub skip_write_back_on_eviction: bool,
    /// A node serves hits even when the lease of the key's home has run out.
    pub serve_without_lease: bool,
    /// A node keeps its Shared copies when its lapsed lease is renewed (though the home may
    /// have revoked them meanwhile).
    pub keep_shared_after_lease_lapse: bool,
    /// After a membership change the new home ignores the members' `Holdings` and rebuilds
    /// every entry as uncached (so it reads the backing store and forgets surviving owners).
    pub rebuild_without_holdings: bool,
}

/// A seed for a hash over client-chosen keys. Kept out of `Debug` output, so that logging a
/// configuration does not tell anyone which keys would collide.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct HashSeed(pub u64);

impl std::fmt::Debug for HashSeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HashSeed(..)")
    }
}

/// Configuration shared by [`crate::CacheNode`] and [`crate::Directory`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheConfig {
    /// Replacement policy of the local store.
    pub eviction_policy: EvictionPolicy,
    /// Bounds of the local store.
    pub store_limits: StoreLimits,
    /// Seed of the local store's index hash ([`crate::LineStore::with_hash_seed`]): random in a
    /// server, whose keys come from clients. Nothing the node does depends on it.
    pub store_hash_seed: HashSeed,
    /// When writes are acknowledged.
    pub write_policy: WritePolicy,
    /// Largest value accepted by `write`.
    pub value_bytes_max: usize,
    /// Coherence transactions a node may have in flight (new local operations beyond it fail
    /// with [`CacheError::TooManyPendingTransactions`]; evictions caused by grants may exceed it
    /// by at most the number of grants in flight).
    pub pending_transactions_max: usize,
    /// Local operations that may wait behind one key's transaction.
    pub queued_operations_per_key_max: usize,
    /// Requests a home queues per key behind the active transaction; further requests are
    /// dropped and the requester's retransmission brings them back later.
    pub pending_requests_per_key_max: usize,
    /// Fetch answers a node remembers (one per key, until the home moves on) so that a
    /// duplicated `Fetch` gets the same answer; oldest forgotten first beyond this bound.
    pub fetch_answers_max: usize,
    /// Ticks after which an unanswered request, invalidation, fetch, grant, write-back or
    /// backing-store request is sent again.
    pub retry_interval_ticks: u64,
    /// Coherence lease: a node serves a line only while fewer than this many ticks have passed
    /// since it sent a request or heartbeat that the line's home has answered.
    pub lease_ticks: u64,
    /// Allowance for tick-rate drift between nodes: a home counts a silent sharer's copy as
    /// revoked `lease_ticks + lease_revoke_margin_ticks` after it last confirmed that node's lease.
    pub lease_revoke_margin_ticks: u64,
    /// Ticks between heartbeats a node sends to every home (to renew its leases).
    pub heartbeat_interval_ticks: u64,
    /// Test-only protocol bugs (negative controls); all off by default.
    pub injected_bugs: InjectedBugs,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            eviction_policy: EvictionPolicy::Lru,
            store_limits: StoreLimits::entries(1024),
            store_hash_seed: HashSeed(0),
            write_policy: WritePolicy::WriteBack,
            value_bytes_max: 1 << 20,
            pending_transactions_max: 1024,
            queued_operations_per_key_max: 64,
            pending_requests_per_key_max: 64,
            fetch_answers_max: 4096,
            retry_interval_ticks: 5,
            lease_ticks: 50,
            lease_revoke_margin_ticks: 10,
            heartbeat_interval_ticks: 10,
            injected_bugs: InjectedBugs::default(),
        }
    }
}

impl CacheConfig {
    /// Checks ranges and the relations between the limits.
    ///
    /// # Errors
    /// [`CacheError::InvalidConfig`] naming the offending field.
    pub fn validate(&self) -> Result<(), CacheError> {
        let positive = [
            ("value_bytes_max", self.value_bytes_max as u64),
            (
                "pending_transactions_max",
                self.pending_transactions_max as u64,
            ),
            (
                "queued_operations_per_key_max",
                self.queued_operations_per_key_max as u64,
            ),
            (
                "pending_requests_per_key_max",
                self.pending_requests_per_key_max as u64,
            ),
            ("fetch_answers_max", self.fetch_answers_max as u64),
            ("retry_interval_ticks", self.retry_interval_ticks),
            ("lease_ticks", self.lease_ticks),
            ("lease_revoke_margin_ticks", self.lease_revoke_margin_ticks),
            ("heartbeat_interval_ticks", self.heartbeat_interval_ticks),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(CacheError::InvalidConfig(format!(
                    "{name} must be positive"
                )));
            }
        }
        if self.heartbeat_interval_ticks * 2 > self.lease_ticks {
            return Err(CacheError::InvalidConfig(
                "lease_ticks must be at least twice heartbeat_interval_ticks".into(),
            ));
        }
        if let Some(bytes_max) = self.store_limits.bytes_max
            && self.value_bytes_max > bytes_max
        {
            return Err(CacheError::InvalidConfig(
                "value_bytes_max must not exceed store_limits.bytes_max".into(),
            ));
        }
        Ok(())
    }
}
