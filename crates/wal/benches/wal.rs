//! Persist throughput with fsync: one `persist` call (one record, one fsync) per iteration,
//! for batches of 1, 16 and 256 entries carrying 16 B or 1 KiB commands; and the same without
//! fsync, to separate CPU cost from disk latency.
//!
//! Run: `cargo bench -p distsync-wal --bench wal`.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use distsync_raft::{Entry, EntryPayload, LogIndex, Snapshot, SnapshotMeta, Term};
use distsync_wal::{RaftStorage, WalOptions};
use std::time::Duration;

/// Compact every this many entries so a long run does not fill the disk.
const COMPACT_EVERY_ENTRIES: u64 = 200_000;

fn persist_throughput(c: &mut Criterion) {
    persist_group(c, "persist_fsync", true);
    // Same work without the fsync: the CPU and page-cache cost, to separate it from the disk.
    persist_group(c, "persist_nosync", false);
}

fn persist_group(c: &mut Criterion, name: &str, sync: bool) {
    let mut group = c.benchmark_group(name);
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(5));
    for payload_bytes in [16usize, 1024] {
        for batch in [1u64, 16, 256] {
            group.throughput(Throughput::Elements(batch));
            let id = BenchmarkId::new(format!("{payload_bytes}B"), batch);
            group.bench_function(id, |b| {
                let dir = tempfile::tempdir().expect("tempdir");
                let (mut storage, _) = RaftStorage::open(
                    dir.path(),
                    WalOptions {
                        sync,
                        ..WalOptions::default()
                    },
                )
                .expect("open");
                let command = bytes::Bytes::from(vec![0xab; payload_bytes]);
                let mut next = 1u64;
                let mut entries = Vec::with_capacity(batch as usize);
                b.iter(|| {
                    entries.clear();
                    entries.extend((next..next + batch).map(|index| Entry {
                        term: Term(1),
                        index: LogIndex(index),
                        payload: EntryPayload::Command(command.clone()),
                    }));
                    storage.persist(None, &entries, None).expect("persist");
                    next += batch;
                    if next % COMPACT_EVERY_ENTRIES < batch {
                        let snapshot = Snapshot {
                            meta: SnapshotMeta {
                                last_index: LogIndex(next - 1),
                                last_term: Term(1),
                                ..SnapshotMeta::default()
                            },
                            data: bytes::Bytes::new(),
                        };
                        storage.save_snapshot(&snapshot).expect("save_snapshot");
                    }
                });
            });
        }
    }
    group.finish();
}

criterion_group!(benches, persist_throughput);
criterion_main!(benches);
