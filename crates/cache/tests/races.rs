//! C-04 (core part): upgrade races. When every sharer writes at once, the home serialises the
//! upgrades: each write completes exactly once with its own version, the versions are 2..=n+1
//! in some order, and the final value everywhere is the one with the highest version.

use crate::common::{Cluster, config, value};
use distsync_cache::{Key, LineState, NodeId, OpResult, Version};

fn all_sharers_write_at_once(nodes: u64) {
    let mut cluster = Cluster::new(nodes, config(8));
    cluster.write(1, "k", "initial");
    for id in 1..=nodes {
        cluster.read(id, "k");
    }
    for id in 1..=nodes {
        assert_eq!(cluster.state(id, "k"), LineState::Shared);
    }
    // Every node issues its write before any message is delivered.
    let mut ops = Vec::new();
    for id in 1..=nodes {
        let step = cluster
            .nodes
            .get_mut(&NodeId(id))
            .expect("node")
            .write(Key::from("k"), format!("from-n{id}").into())
            .expect("accepted");
        ops.push((
            id,
            cluster.queue_step(id, step).expect("S -> M is an upgrade"),
        ));
    }
    cluster.run();
    let mut versions: Vec<(Version, u64)> = ops
        .into_iter()
        .map(|(id, op)| match cluster.take_completion(op) {
            OpResult::Written(version) => (version, id),
            other => panic!("write returned {other:?}"),
        })
        .collect();
    versions.sort();
    let expected: Vec<Version> = (2..=nodes + 1).map(Version).collect();
    assert_eq!(
        versions.iter().map(|(v, _)| *v).collect::<Vec<_>>(),
        expected
    );
    let winner = versions.last().expect("non-empty").1;
    let owners: Vec<u64> = (1..=nodes)
        .filter(|id| cluster.state(*id, "k").is_owned())
        .collect();
    assert_eq!(owners, vec![winner], "the last writer owns the line alone");
    for id in 1..=nodes {
        let data = cluster.read(id, "k");
        assert_eq!(value(&data), Some(format!("from-n{winner}")));
    }
}

#[test]
fn two_sharers_upgrading_at_once_are_serialised() {
    all_sharers_write_at_once(2);
}

#[test]
fn five_sharers_upgrading_at_once_are_serialised() {
    all_sharers_write_at_once(5);
}
