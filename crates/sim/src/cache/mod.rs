//! The cache simulation: N [`distsync_cache`] nodes (each a `CacheNode` plus the `Directory` of
//! the keys the consistent-hash ring homes on it) over [`crate::net::SimNetwork`] with drops,
//! duplicates, delays, reordering and isolating partitions; an in-memory backing store with
//! random latency; seeded clients issuing reads, writes, deletes and evictions on a few hot keys.
//!
//! After **every** step (message delivery, backing-store answer, tick, client submission) the
//! [`Checker`] checks SWMR, fresh copies, the data-value invariant and the coherence lease; at
//! the end every node flushes and the backing store must hold the last write of every key.
//! Liveness: once faults stop, every operation completes within [`LIVENESS_BOUND_TICKS`].
//!
//! ```text
//! distsync sim cache --seeds 200 --first-seed 0 --nodes 3
//! seeds=200 steps=… violations=0 liveness_failures=0
//! distsync sim cache --seed 17 --nodes 3 --trace     # replay one seed
//! ```
//!
//! Each seed draws its own fault mix and configuration (write-back or write-through, LRU or LFU,
//! 1–8 lines per node), swarm-testing style.

mod checker;
mod scenario;
mod world;

pub use checker::Checker;
pub use distsync_cache::InjectedBugs;
pub use scenario::{
    CacheSeedReport, CacheSweepOptions, CacheSweepSummary, LIVENESS_BOUND_TICKS, run_seed, sweep,
};
pub use world::{CacheWorld, ClientOpKind, RingHomes, SimHost, TICK_US, WireMessage};
