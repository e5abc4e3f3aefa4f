//! Entries committed per second by an in-memory 3-node cluster (the core alone: no disk, no
//! network, instant delivery), with proposals batched the way a busy shell batches them.

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use distsync_raft::MemCluster;

const BATCH: usize = 1024;

fn commit_batches(c: &mut Criterion) {
    let mut group = c.benchmark_group("raft_core_commit");
    for entry_bytes in [16usize, 1024] {
        group.throughput(Throughput::Elements(BATCH as u64));
        group.bench_with_input(
            BenchmarkId::new("3_nodes_batch_1024", format!("{entry_bytes}B")),
            &entry_bytes,
            |b, &entry_bytes| {
                let mut cluster = MemCluster::new(3);
                let leader = cluster.elect();
                let payload = Bytes::from(vec![7u8; entry_bytes]);
                b.iter(|| {
                    let node = cluster.nodes.get_mut(&leader).expect("leader exists");
                    let target = node.status().last_index.0 + BATCH as u64;
                    for _ in 0..BATCH {
                        node.propose(payload.clone()).expect("leader accepts");
                    }
                    cluster.stabilize();
                    let commit = cluster.nodes[&leader].status().commit.0;
                    assert!(commit >= target, "batch not committed: {commit} < {target}");
                    // Keep memory flat across iterations, as the lock service's snapshots do.
                    for (id, node) in cluster.nodes.iter_mut() {
                        let applied = node.status().applied;
                        node.compact(applied, Bytes::new());
                        cluster.applied.get_mut(id).expect("record exists").clear();
                    }
                });
            },
        );
    }
    group.finish();
}

criterion_group!(benches, commit_batches);
criterion_main!(benches);
