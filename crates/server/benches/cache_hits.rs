//! A cache node's GET hit path, called from one thread and from two at once: whether hits scale
//! with the threads serving them (`cargo bench -p distsync-server --bench cache_hits`).
//!
//! One node of a one-node cluster, in memory, 100,000 keys of 100 bytes, all held Modified, so
//! every read is a hit; the keys are read in a pseudo-random order, each thread its own. The
//! time criterion reports is per hit over all threads: with hits that scale, two threads take
//! half as long per hit as one. No network and no RESP parsing: only what the threads share.

use bytes::Bytes;
use criterion::{Criterion, Throughput, black_box, criterion_group, criterion_main};
use distsync_cache::{CacheConfig, OpResult, StoreLimits};
use distsync_server::cache::{
    BackingStore, CacheClusterSpec, CacheEngine, CacheOp, EngineConfig, Membership,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const KEYS: u64 = 100_000;

fn key(index: u64) -> Bytes {
    Bytes::from(format!("key:{index:012}"))
}

/// A serving node with every key held, and the runtime that keeps its leases alive.
fn node() -> (tokio::runtime::Runtime, Arc<CacheEngine>) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let engine = runtime.block_on(async {
        let spec: CacheClusterSpec = "c1=127.0.0.1:1/127.0.0.1:2".parse().expect("spec");
        let membership = Membership::new(spec.members.clone(), &spec.members[0]).expect("view");
        let config = EngineConfig {
            name: "c1".into(),
            core: CacheConfig {
                store_limits: StoreLimits::entries(KEYS as usize * 2),
                ..CacheConfig::default()
            },
            tick: Duration::from_millis(10),
            op_timeout: Duration::from_secs(2),
            query_timeout: Duration::from_millis(500),
            failure_timeout: Duration::from_secs(1),
            ignore_quorum: false,
            record_transitions: false,
        };
        let backing = BackingStore::open("memory", Duration::from_secs(1)).expect("backing");
        let engine = CacheEngine::new(config, membership, backing).expect("engine");
        let peer = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("peer port");
        // The tasks run on the runtime for as long as it lives.
        drop(engine.start(peer));
        let value = Bytes::from(vec![b'v'; 100]);
        assert!(
            engine.until_ready(Duration::from_secs(10)).await,
            "the node serves within 10 s"
        );
        for index in 0..KEYS {
            engine
                .execute(CacheOp::Put(key(index), value.clone()))
                .await
                .expect("put");
        }
        engine
    });
    (runtime, engine)
}

/// `hits` reads of pseudo-random keys from `threads` threads at once; the wall time. A read the
/// hit path declines (the node's tick ran late, starved of CPU by these threads, and its lease
/// must be caught up first) takes the slow path, as a RESP connection's would, and is counted
/// in `slow_reads`.
fn hit(
    runtime: &tokio::runtime::Handle,
    engine: &Arc<CacheEngine>,
    keys: &[Bytes],
    threads: u64,
    hits: u64,
    slow_reads: &AtomicU64,
) -> Duration {
    let started = Instant::now();
    std::thread::scope(|scope| {
        for thread in 0..threads {
            scope.spawn(move || {
                // xorshift: a different order per thread, no shared state.
                let mut state = 0x9E37_79B9_7F4A_7C15_u64 ^ (thread + 1);
                let mut copied = 0usize;
                for _ in 0..hits / threads {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    let key = &keys[(state % KEYS) as usize];
                    let hit =
                        engine.read_hit_with(key, |data| data.value.as_ref().map_or(0, Bytes::len));
                    copied += hit.unwrap_or_else(|| {
                        slow_reads.fetch_add(1, Ordering::Relaxed);
                        match runtime.block_on(engine.execute(CacheOp::Get(key.clone()))) {
                            Ok(OpResult::Read(data)) => data.value.map_or(0, |value| value.len()),
                            other => panic!("a read of a held key answered {other:?}"),
                        }
                    });
                }
                black_box(copied);
            });
        }
    });
    started.elapsed()
}

fn cache_hits(c: &mut Criterion) {
    let (runtime, engine) = node();
    let keys: Vec<Bytes> = (0..KEYS).map(key).collect();
    let mut group = c.benchmark_group("cache_hits");
    group.throughput(Throughput::Elements(1));
    for threads in [1, 2] {
        let (reads, slow_reads) = (AtomicU64::new(0), AtomicU64::new(0));
        group.bench_function(format!("get_hit/{threads}_threads"), |b| {
            b.iter_custom(|hits| {
                reads.fetch_add(hits, Ordering::Relaxed);
                hit(
                    runtime.handle(),
                    &engine,
                    &keys,
                    threads,
                    hits.max(threads),
                    &slow_reads,
                )
            })
        });
        eprintln!(
            "{threads} thread(s): {} of {} reads took the slow path",
            slow_reads.load(Ordering::Relaxed),
            reads.load(Ordering::Relaxed)
        );
    }
    group.finish();
}

criterion_group!(benches, cache_hits);
criterion_main!(benches);
