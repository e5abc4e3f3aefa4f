//! Lookup and membership-change costs of `HashRing`.
//!
//! `cargo bench -p distsync-ring`; CI runs `-- --test` so this keeps compiling.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use distsync_ring::HashRing;

fn ring_of(members: usize, vnodes: u32) -> HashRing {
    let mut ring = HashRing::new(vnodes).expect("bench vnodes are in range");
    for i in 1..=members {
        ring.add(format!("r{i}")).expect("names are distinct");
    }
    ring
}

fn lookups(c: &mut Criterion) {
    for (members, vnodes) in [(4, 128), (10, 256), (100, 256)] {
        let ring = ring_of(members, vnodes);
        let keys: Vec<String> = (0..1024).map(|i| format!("user:{i}")).collect();
        let mut next = keys.iter().cycle();
        c.bench_function(&format!("owner/N={members}/V={vnodes}"), |b| {
            b.iter(|| ring.owner(black_box(next.next().expect("cycle").as_bytes())))
        });
        c.bench_function(&format!("owners3/N={members}/V={vnodes}"), |b| {
            b.iter(|| ring.owners(black_box(next.next().expect("cycle").as_bytes()), 3))
        });
    }
}

fn membership(c: &mut Criterion) {
    let ring = ring_of(10, 256);
    c.bench_function("add_then_remove/N=10/V=256", |b| {
        b.iter_batched_ref(
            || ring.clone(),
            |ring| {
                ring.add("r11".to_owned()).expect("new name");
                ring.remove("r11").expect("member")
            },
            criterion::BatchSize::SmallInput,
        )
    });
    c.bench_function("partition_map/P=1024/N=10/V=256", |b| {
        b.iter(|| ring.partition_map(black_box(1024)))
    });
}

criterion_group!(benches, lookups, membership);
criterion_main!(benches);
