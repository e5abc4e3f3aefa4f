//! Bounds: pending transactions, value size and configuration are refused with typed errors,
//! never by panicking or by growing without limit.

use crate::common::{Cluster, config};
use distsync_cache::{CacheConfig, CacheError, CacheNode, Key, NodeId, OpStep};

#[test]
fn new_miss_beyond_pending_transactions_max_is_refused_but_hits_are_served() {
    // Proves the transaction bound: with pending_transactions_max = 1, a second concurrent miss
    // fails with TooManyPendingTransactions, while a hit on a held line still completes.
    let mut cluster = Cluster::new(
        1,
        CacheConfig {
            pending_transactions_max: 1,
            ..config(8)
        },
    );
    cluster.write(1, "held", "v");
    let node = cluster.nodes.get_mut(&NodeId(1)).expect("node");
    let first = node.read(Key::from("a")).expect("first miss accepted");
    assert!(matches!(first, OpStep::Pending { .. }));
    assert_eq!(
        node.read(Key::from("b")),
        Err(CacheError::TooManyPendingTransactions { limit: 1 })
    );
    assert!(matches!(
        node.read(Key::from("held")),
        Ok(OpStep::Done { .. })
    ));
}

#[test]
fn oversized_value_and_invalid_config_are_typed_errors() {
    // Proves input validation: a value over value_bytes_max and a config without bounds are
    // refused with CacheError values.
    let mut cluster = Cluster::new(
        1,
        CacheConfig {
            value_bytes_max: 4,
            ..config(8)
        },
    );
    let node = cluster.nodes.get_mut(&NodeId(1)).expect("node");
    assert_eq!(
        node.write(Key::from("k"), "12345".into()),
        Err(CacheError::ValueTooLarge {
            size_bytes: 5,
            limit_bytes: 4
        })
    );
    let bad = CacheConfig {
        lease_ticks: 10,
        heartbeat_interval_ticks: 6,
        ..CacheConfig::default()
    };
    let result = CacheNode::new(NodeId(1), bad, |_: &[u8]| NodeId(1), vec![NodeId(1)]);
    assert!(matches!(result, Err(CacheError::InvalidConfig(_))));
}
