//! Shared builders and waits for the Raft simulation tests.

use distsync_raft::NodeId;
use distsync_sim::raft::{Cluster, ClusterOptions, LEADER_BOUND_TICKS};

pub use distsync_sim::raft::{COMMIT_BOUND_TICKS, ELECTION_TIMEOUT_MAX_TICKS as ET_MAX};

/// A cluster of `n` voters with default settings and reliable 1 ms links.
pub fn cluster(n: u64, seed: u64) -> Cluster {
    Cluster::new(ClusterOptions::new(n, seed))
}

/// A cluster with adjusted options.
pub fn cluster_with(n: u64, seed: u64, adjust: impl FnOnce(&mut ClusterOptions)) -> Cluster {
    let mut opts = ClusterOptions::new(n, seed);
    adjust(&mut opts);
    Cluster::new(opts)
}

/// `NodeId(1..=n)`.
pub fn ids(n: u64) -> Vec<NodeId> {
    (1..=n).map(NodeId).collect()
}

/// Waits (up to LEADER_BOUND) for exactly one leader in the highest term among `among` and
/// returns it (6.5840 `checkOneLeader`).
pub fn check_one_leader(c: &mut Cluster, among: &[NodeId]) -> NodeId {
    let among = among.to_vec();
    let ok = c.run_until_cond(LEADER_BOUND_TICKS, |c| c.leader_among(&among).is_some());
    c.assert_ok();
    assert!(
        ok,
        "no leader among {among:?} within {LEADER_BOUND_TICKS} ticks (seed {})",
        c.seed()
    );
    c.leader_among(&among).expect("checked above")
}

/// Asserts that no node among `among` is leader.
pub fn check_no_leader(c: &Cluster, among: &[NodeId]) {
    assert_eq!(
        c.leaders_count_among(among),
        0,
        "expected no leader among {among:?} (seed {})",
        c.seed()
    );
}

/// `one()` that must succeed within COMMIT_BOUND.
pub fn one(c: &mut Cluster, expected: usize) -> distsync_raft::LogIndex {
    let index = c.one(expected, true, COMMIT_BOUND_TICKS);
    c.assert_ok();
    index.unwrap_or_else(|| {
        panic!(
            "no agreement on {expected} nodes within {COMMIT_BOUND_TICKS} ticks (seed {})",
            c.seed()
        )
    })
}

/// Other ids than `id` among `all`.
pub fn others(all: &[NodeId], id: NodeId) -> Vec<NodeId> {
    all.iter().copied().filter(|&x| x != id).collect()
}
