//! C-05: eviction. A Modified victim is written back before the line is dropped; E/S victims
//! are dropped with a notice; a later read anywhere returns the latest value.

use crate::common::{Cluster, config, value};
use distsync_cache::{
    CacheConfig, EvictionPolicy, Key, LineState, NodeId, OpResult, OpStep, WritePolicy,
};

fn fill_beyond_capacity_with_m_e_s_lines(config: CacheConfig) {
    let mut cluster = Cluster::new(2, config);
    cluster.write(1, "a", "a-latest"); // N1: a in M
    cluster.read(2, "c");
    cluster.read(1, "c"); // N1: c in S
    cluster.read(1, "b"); // N1: b in E (capacity 3 reached)
    assert_eq!(cluster.state(1, "a"), LineState::Modified);
    assert_eq!(cluster.state(1, "b"), LineState::Exclusive);
    assert_eq!(cluster.state(1, "c"), LineState::Shared);
    assert_eq!(
        cluster.backing_value("a"),
        None,
        "write-back: not yet in the backing store"
    );

    cluster.trace.clear();
    cluster.read(1, "d"); // evicts a (least recently used / least frequently used)
    assert_eq!(cluster.state(1, "a"), LineState::Invalid);
    assert!(
        cluster.trace.contains(&"N1->H PutModified".to_string()),
        "{:?}",
        cluster.trace
    );
    let put = cluster.trace.iter().position(|t| t == "N1->H PutModified");
    let write = cluster.trace.iter().position(|t| t == "H backing Write");
    let ack = cluster.trace.iter().position(|t| t == "H->N1 PutAck");
    assert!(
        put < write && write < ack,
        "write-back before PutAck: {:?}",
        cluster.trace
    );
    assert_eq!(cluster.backing_value("a").as_deref(), Some("a-latest"));

    cluster.trace.clear();
    cluster.read(1, "e"); // evicts c (S)
    assert!(
        cluster.trace.contains(&"N1->H PutShared".to_string()),
        "{:?}",
        cluster.trace
    );
    cluster.trace.clear();
    cluster.read(1, "f"); // evicts b (E)
    assert!(
        cluster.trace.contains(&"N1->H PutExclusive".to_string()),
        "{:?}",
        cluster.trace
    );

    assert_eq!(value(&cluster.read(2, "a")).as_deref(), Some("a-latest"));
    assert_eq!(value(&cluster.read(1, "a")).as_deref(), Some("a-latest"));
}

#[test]
fn modified_victim_is_written_back_before_it_is_dropped_lru() {
    // Proves C-05 under LRU: see `fill_beyond_capacity_with_m_e_s_lines`.
    fill_beyond_capacity_with_m_e_s_lines(config(3));
}

#[test]
fn modified_victim_is_written_back_before_it_is_dropped_lfu() {
    // Proves C-05 under LFU (all three lines have frequency 1, so the oldest goes first).
    fill_beyond_capacity_with_m_e_s_lines(CacheConfig {
        eviction_policy: EvictionPolicy::Lfu,
        ..config(3)
    });
}

#[test]
fn flush_writes_back_every_modified_line() {
    // Proves the shutdown rule: after `flush` the backing store holds every last write.
    let mut cluster = Cluster::new(2, config(8));
    cluster.write(1, "x", "x1");
    cluster.write(1, "y", "y1");
    cluster.write(1, "x", "x2");
    cluster.flush(1);
    assert_eq!(cluster.backing_value("x").as_deref(), Some("x2"));
    assert_eq!(cluster.backing_value("y").as_deref(), Some("y1"));
    assert_eq!(cluster.state(1, "x"), LineState::Invalid);
}

#[test]
fn write_through_acknowledges_only_after_the_backing_store_has_the_value() {
    // Proves WritePolicy::WriteThrough: when `write` reports Written, the backing store already
    // holds that version.
    let mut cluster = Cluster::new(
        2,
        CacheConfig {
            write_policy: WritePolicy::WriteThrough,
            ..config(8)
        },
    );
    let version = cluster.write(1, "k", "v1");
    assert_eq!(cluster.backing_value("k").as_deref(), Some("v1"));
    let version2 = cluster.write(1, "k", "v2");
    assert!(version2 > version);
    assert_eq!(cluster.backing_value("k").as_deref(), Some("v2"));
}

#[test]
fn delete_is_a_write_of_absent_and_reaches_the_backing_store() {
    // Proves delete: readers see "not found", and the write-back removes the value.
    let mut cluster = Cluster::new(2, config(8));
    cluster.write(1, "k", "v1");
    cluster.flush(1);
    let step = cluster
        .nodes
        .get_mut(&distsync_cache::NodeId(2))
        .expect("node")
        .delete("k".into())
        .expect("accepted");
    cluster.finish(2, step);
    assert_eq!(value(&cluster.read(1, "k")), None);
    cluster.flush(2);
    cluster.flush(1);
    assert_eq!(cluster.backing_value("k"), None);
}

#[test]
fn flush_writes_back_no_more_lines_at_a_time_than_the_transaction_bound() {
    // Proves the flush's flow control: with 20 Modified lines and at most 3 transactions, no
    // step of the flush has more than 3 write-backs in flight, every line is still written
    // back, and the store ends empty. Started all at once, 86,000 write-backs made each of a
    // home's ticks outlast the tick interval, and a node's shutdown gave up before they ended.
    let bound = 3;
    let mut cluster = Cluster::new(
        1,
        CacheConfig {
            pending_transactions_max: bound,
            ..config(64)
        },
    );
    let keys: Vec<String> = (0..20).map(|i| format!("k{i:02}")).collect();
    for key in &keys {
        cluster.write(1, key, &format!("{key}-v"));
    }
    let step = cluster.nodes.get_mut(&NodeId(1)).expect("node").flush();
    let op = cluster
        .queue_step(1, step)
        .expect("20 write-backs take a while");
    let mut most_in_flight = 0;
    loop {
        let in_flight = cluster.node(1).load().transactions;
        assert!(in_flight <= bound, "{in_flight} transactions in flight");
        most_in_flight = most_in_flight.max(in_flight);
        if !cluster.step() {
            break;
        }
    }
    assert_eq!(most_in_flight, bound, "the flush used its whole allowance");
    assert_eq!(cluster.take_completion(op), OpResult::Flushed);
    for key in &keys {
        assert_eq!(
            cluster.backing_value(key).as_deref(),
            Some(format!("{key}-v").as_str())
        );
    }
    assert!(cluster.node(1).store().is_empty());
}

#[test]
fn a_line_granted_after_a_flush_began_is_flushed_before_it_completes() {
    // Proves the flush covers operations in flight when it began: N1's write of k is waiting
    // for its grant when the flush starts; when the flush completes, the backing store holds
    // that write (acknowledged once the grant arrived), and N1 no longer holds the line.
    let mut cluster = Cluster::new(1, config(8));
    let step = cluster
        .nodes
        .get_mut(&NodeId(1))
        .expect("node")
        .write(Key::from("k"), "late".into())
        .expect("accepted");
    let write = cluster
        .queue_step(1, step)
        .expect("a miss waits for its grant");
    let step = cluster.nodes.get_mut(&NodeId(1)).expect("node").flush();
    let flush = cluster
        .queue_step(1, step)
        .expect("the write is still in flight");
    let mut ticks = 0;
    while !cluster.completions.iter().any(|c| c.op == flush) {
        if !cluster.step() {
            ticks += 1;
            assert!(ticks <= 10, "the flush never completed");
            cluster.tick(1);
        }
    }
    assert_eq!(
        cluster.backing_value("k").as_deref(),
        Some("late"),
        "the flush completed before the write it began with was written back"
    );
    cluster.run();
    assert!(matches!(
        cluster.take_completion(write),
        OpResult::Written(_)
    ));
    assert_eq!(cluster.take_completion(flush), OpResult::Flushed);
    assert_eq!(cluster.state(1, "k"), LineState::Invalid);
}

#[test]
fn a_flush_does_not_wait_for_what_can_never_finish() {
    // Proves the flush's limits: a read whose request never reaches its home (the messages
    // below are never delivered), and whose operation the shell has withdrawn (its client was
    // answered "unavailable"), installs no write and is not waited for; and a node declared
    // dead (outside the view) flushes at once, although a transaction it can no longer send
    // is still open.
    let mut cluster = Cluster::new(2, config(8));
    let node = cluster.nodes.get_mut(&NodeId(1)).expect("node");
    let OpStep::Pending { op, .. } = node.read(Key::from("k")).expect("accepted") else {
        panic!("a miss waits for its home");
    };
    assert!(node.withdraw(op));
    assert!(
        matches!(node.flush(), OpStep::Done { .. }),
        "withdrawn read waited for"
    );

    let node = cluster.nodes.get_mut(&NodeId(2)).expect("node");
    let OpStep::Pending { .. } = node.write(Key::from("j"), "v".into()).expect("accepted") else {
        panic!("a miss waits for its home");
    };
    let pending = node.flush();
    assert!(
        matches!(pending, OpStep::Pending { .. }),
        "a write in flight is waited for"
    );
    node.set_members(1, vec![distsync_cache::NodeId(0)]);
    assert!(
        matches!(node.flush(), OpStep::Done { .. }),
        "a node outside the view has nothing left to flush"
    );
}
