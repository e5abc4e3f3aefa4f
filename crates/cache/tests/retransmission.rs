//! C-07 (core part): every message a transaction waits for is retransmitted on `tick`, so lost
//! requests, invalidations, acknowledgements and grants do not stall a transaction, and
//! duplicates change nothing.

use crate::common::{Cluster, config, value};
use distsync_cache::{Key, LineState, NodeId, OpResult};

#[test]
fn lost_invalidate_ack_and_grant_are_retransmitted_until_the_write_completes() {
    // Proves retransmission: N2 and N3 share k; N1's write loses the first GetModified,
    // Invalidate, InvalidateAck, Grant(M) and GrantAck; after some ticks the write completes,
    // N2/N3 are invalid and reads return the new value.
    let mut cluster = Cluster::new(3, config(8));
    cluster.write(2, "k", "v1");
    cluster.read(3, "k");
    assert_eq!(cluster.state(2, "k"), LineState::Shared);
    let step = cluster
        .nodes
        .get_mut(&NodeId(1))
        .expect("node")
        .write(Key::from("k"), "v2".into())
        .expect("accepted");
    cluster.lose_once = [
        "GetModified",
        "Invalidate",
        "InvalidateAck",
        "Grant(M)",
        "GrantAck",
    ]
    .map(String::from)
    .to_vec();
    let op = cluster
        .queue_step(1, step)
        .expect("a write miss is pending");
    cluster.run();
    for _ in 0..60 {
        for id in 1..=3 {
            cluster.tick(id);
        }
        cluster.run();
    }
    assert!(
        cluster.lose_once.is_empty(),
        "every kind was lost once: {:?}",
        cluster.trace
    );
    assert_eq!(
        cluster.take_completion(op),
        OpResult::Written(distsync_cache::Version(2))
    );
    assert_eq!(cluster.state(1, "k"), LineState::Modified);
    assert_eq!(cluster.state(2, "k"), LineState::Invalid);
    assert_eq!(cluster.state(3, "k"), LineState::Invalid);
    assert_eq!(value(&cluster.read(3, "k")).as_deref(), Some("v2"));
}

#[test]
fn duplicated_messages_change_nothing() {
    // Proves idempotence: replaying every message of a read-after-write a second time leaves
    // the states and values as they were.
    let mut cluster = Cluster::new(2, config(8));
    cluster.write(1, "k", "v1");
    cluster.read(2, "k");
    let home_trace = cluster.trace.clone();
    assert!(!home_trace.is_empty());
    // Retransmit everything by ticking past the retry interval twice with nothing outstanding.
    for _ in 0..20 {
        cluster.tick(1);
        cluster.tick(2);
        cluster.run();
    }
    assert_eq!(cluster.state(1, "k"), LineState::Shared);
    assert_eq!(cluster.state(2, "k"), LineState::Shared);
    assert_eq!(value(&cluster.read(1, "k")).as_deref(), Some("v1"));
}

#[test]
fn a_write_withdrawn_before_its_grant_never_takes_effect_and_an_applied_one_stays() {
    // Proves `withdraw` (what the shell does when it answers a client "unavailable"): N2's
    // write waits for a grant that the partition holds back; withdrawn, it is gone for good —
    // the grant arrives later and N2 holds the line without having written, and every read
    // returns the earlier value. A write-through write already applied to an M line is not
    // withdrawn: it completes once acknowledged.
    let mut cluster = Cluster::new(2, config(8));
    cluster.write(1, "k", "v1");
    let node = cluster.nodes.get_mut(&NodeId(2)).expect("node");
    let step = node.write(Key::from("k"), "v2".into()).expect("accepted");
    let op = cluster
        .queue_step(2, step)
        .expect("a write miss is pending");
    cluster.partitioned = Some(NodeId(2));
    cluster.run();
    let node = cluster.nodes.get_mut(&NodeId(2)).expect("node");
    assert!(node.withdraw(op), "it waited behind its transaction");
    assert!(!node.withdraw(op), "withdrawn once");
    cluster.partitioned = None;
    for _ in 0..20 {
        cluster.tick(1);
        cluster.tick(2);
        cluster.run();
    }
    assert!(cluster.completions.iter().all(|c| c.op != op), "no answer");
    assert_eq!(cluster.state(2, "k"), LineState::Modified, "granted anyway");
    assert_eq!(value(&cluster.read(1, "k")).as_deref(), Some("v1"));

    let mut cluster = Cluster::new(
        1,
        distsync_cache::CacheConfig {
            write_policy: distsync_cache::WritePolicy::WriteThrough,
            ..config(8)
        },
    );
    cluster.write(1, "k", "v1");
    let node = cluster.nodes.get_mut(&NodeId(1)).expect("node");
    let step = node.write(Key::from("k"), "v2".into()).expect("accepted");
    let op = cluster
        .queue_step(1, step)
        .expect("waits for its write-through");
    let node = cluster.nodes.get_mut(&NodeId(1)).expect("node");
    assert!(!node.withdraw(op), "applied already");
    cluster.run();
    assert_eq!(
        cluster.take_completion(op),
        OpResult::Written(distsync_cache::Version(2))
    );
    assert_eq!(cluster.backing_value("k").as_deref(), Some("v2"));
}
