//! The Raft simulation: a cluster of [`distsync_raft::RaftNode`]s driven by a simulated shell,
//! checked after every step, and randomized swarm scenarios over it.

mod checker;
mod cluster;
mod disk;
mod scenario;
mod state_machine;

pub use checker::{
    Checker, CheckerOptions, CommittedEntry, LeaderLog, Violation, entry_term, payload_hash,
};
pub use cluster::{Cluster, ClusterOptions, SimNode};
pub use disk::SimDisk;
pub use scenario::{SeedReport, SweepOptions, SweepSummary, run_seed, sweep};
pub use state_machine::{KvStateMachine, decode_command, encode_command};

/// One tick of simulated time: 10 ms.
pub const TICK_US: u64 = 10_000;
/// Minimum election timeout (ET_min = 300 ms); each reset draws from `[ET, 2 ET)`.
pub const ELECTION_TIMEOUT_TICKS: u64 = 30;
/// ET_max: the longest a randomized election timeout can be (600 ms).
pub const ELECTION_TIMEOUT_MAX_TICKS: u64 = 2 * ELECTION_TIMEOUT_TICKS;
/// Heartbeat interval (50 ms).
pub const HEARTBEAT_INTERVAL_TICKS: u64 = 5;
/// LEADER_BOUND of TESTING.md: a leader within 5 s.
pub const LEADER_BOUND_TICKS: u64 = 500;
/// COMMIT_BOUND of TESTING.md: a command commits within 10 s.
pub const COMMIT_BOUND_TICKS: u64 = 1_000;

/// Derives the seed of one component from the root seed (splitmix64), so that every component
/// has its own stream and adding a component does not shift the others.
pub fn derive_seed(root: u64, component: u64) -> u64 {
    let mut z = root ^ component.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
