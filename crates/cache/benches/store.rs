//! The line store's hit path, as a GET on a node uses it: a lookup that counts as a use, on a
//! store much larger than the CPU caches, in random key order, so that the cost is mostly the
//! cache lines a lookup touches.
//!
//! `cargo bench -p distsync-cache --bench store`. 100,000 entries of 16-byte keys (as
//! `redis-benchmark -r 100000` names them) and 100-byte values; keys held as `Bytes` (the
//! protocol's type) or as `LineKey` (what a node's store holds).

use std::hint::black_box;

use bytes::Bytes;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use distsync_cache::{EvictionPolicy, LineKey, LineStore, StoreLimits};

const ENTRIES: usize = 100_000;
/// Lookups per measured batch, drawn in advance so that drawing costs nothing inside.
const ORDER_LEN: usize = 1 << 16;

fn key(i: usize) -> Bytes {
    Bytes::from(format!("key:{i:012}"))
}

/// A fixed pseudo-random sequence of key indices, repeats allowed (xorshift).
fn random_order() -> Vec<usize> {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    (0..ORDER_LEN)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % ENTRIES as u64) as usize
        })
        .collect()
}

fn filled<K: std::hash::Hash + Eq>(
    policy: EvictionPolicy,
    as_key: impl Fn(Bytes) -> K,
) -> LineStore<K, Bytes> {
    let mut store = LineStore::with_hash_seed(policy, StoreLimits::entries(ENTRIES), 1)
        .expect("bench limits are valid");
    // Keys and values allocated apart, as on a node, where a key and its value are copied out
    // of a request among other allocations: next to each other, fetching the key's cache line
    // would bring in the value's as well, and a stored key would cost nothing to follow.
    let values: Vec<Bytes> = (0..ENTRIES).map(|_| Bytes::from(vec![b'v'; 100])).collect();
    for (i, value) in values.into_iter().enumerate() {
        store
            .insert(as_key(key(i)), value, 100)
            .expect("values fit");
    }
    store
}

fn hits<K>(c: &mut Criterion, name: &str, mut store: LineStore<K, Bytes>)
where
    K: std::hash::Hash + Eq + std::borrow::Borrow<[u8]>,
{
    let keys: Vec<Bytes> = (0..ENTRIES).map(key).collect();
    let order = random_order();
    let mut next = order.iter().cycle();
    c.bench_function(name, |b| {
        b.iter(|| {
            let key = &keys[*next.next().expect("cycle")];
            // What a reply needs of the value: its bytes, read.
            let value = store.get(&key[..]).expect("every key is stored");
            black_box(value.first().copied())
        })
    });
}

fn get_hit(c: &mut Criterion) {
    for policy in [EvictionPolicy::Lru, EvictionPolicy::Lfu] {
        hits(
            c,
            &format!("get_hit/{policy}/line_key"),
            filled(policy, LineKey::from),
        );
        hits(
            c,
            &format!("get_hit/{policy}/bytes_key"),
            filled(policy, |key| key),
        );
    }
}

fn insert_evicting(c: &mut Criterion) {
    for policy in [EvictionPolicy::Lru, EvictionPolicy::Lfu] {
        let mut store = filled(policy, LineKey::from);
        let value = Bytes::from(vec![b'v'; 100]);
        let mut fresh = ENTRIES;
        c.bench_function(&format!("insert_evicting/{policy}/line_key"), |b| {
            b.iter_batched(
                || {
                    fresh += 1;
                    LineKey::from(key(fresh))
                },
                |new_key| {
                    let evicted = store
                        .insert(new_key, value.clone(), 100)
                        .expect("values fit");
                    black_box(evicted.len())
                },
                BatchSize::SmallInput,
            )
        });
    }
}

criterion_group!(benches, get_hit, insert_evicting);
criterion_main!(benches);
