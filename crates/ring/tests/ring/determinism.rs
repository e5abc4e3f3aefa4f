//! H-04: placement is a fixed function of the member names, identical in every process.

use distsync_ring::{HashRing, PartitionId};

use crate::common::index_of;

/// The queue's default layout: four Redis shards at V = 128 (TESTING.md B3).
fn shards() -> HashRing {
    let mut ring = HashRing::new(128).expect("128 is in range");
    for name in ["r1", "r2", "r3", "r4"] {
        ring.add(name.to_owned()).expect("distinct");
    }
    ring
}

/// 64-bit FNV-1a, written out so the digest below does not depend on any crate.
fn fnv1a(state: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(state, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[test]
fn owners_of_fixed_keys_are_pinned() {
    // Proves H-04 across builds: owners of fixed keys are compared with golden values, so any
    // change of hash, seed, key encoding or point layout (which would split a cluster of mixed
    // builds) fails here.
    let ring = shards();
    let golden: [(&str, &str); 8] = GOLDEN_OWNERS;
    for (key, expected) in golden {
        assert_eq!(
            ring.owner(key.as_bytes()).map(String::as_str),
            Some(expected),
            "owner of {key:?}"
        );
    }
    let partitions: Vec<&str> = ring
        .partition_map(16)
        .expect("ring is not empty")
        .into_iter()
        .map(String::as_str)
        .collect();
    assert_eq!(partitions, GOLDEN_PARTITION_MAP);
}

#[test]
fn owners_of_a_million_keys_match_a_pinned_digest() {
    // Proves H-04 at the scale TESTING.md asks for: the owners of 1M keys ("key{i}") on r1..r4,
    // V=128, hash to a pinned digest, so another build or platform that places any one of them
    // differently fails.
    let ring = shards();
    let mut counts = [0u32; 4];
    let mut digest = 0xcbf2_9ce4_8422_2325;
    let mut key = String::new();
    for i in 0..1_000_000u32 {
        use std::fmt::Write as _;
        key.clear();
        write!(key, "key{i}").expect("writing to a String cannot fail");
        let owner = ring.owner(key.as_bytes()).expect("ring is not empty");
        let at = index_of(&ring, owner);
        counts[at] += 1;
        digest = fnv1a(digest, &[at as u8]);
    }
    println!("H-04 1M keys on r1..r4 V=128: counts {counts:?}, digest {digest:#018x}");
    assert_eq!((counts, digest), GOLDEN_MILLION_KEYS);
}

#[test]
fn rings_built_in_different_orders_are_identical() {
    // Proves H-04 within a build: two rings built independently, with members added in different
    // orders (one with a detour through removals), are equal and agree on every lookup.
    let names = ["c1", "c2", "c3", "c4", "c5", "c6"];
    let mut forward: HashRing = HashRing::new(64).expect("64 is in range");
    for name in names {
        forward.add(name.to_owned()).expect("distinct");
    }
    let mut shuffled: HashRing = HashRing::new(64).expect("64 is in range");
    for name in ["c4", "c1", "x9", "c6", "c3", "c2", "x8", "c5"] {
        shuffled.add(name.to_owned()).expect("distinct");
    }
    shuffled.remove("x9").expect("member");
    shuffled.remove("x8").expect("member");
    assert_eq!(forward, shuffled);
    for i in 0u32..100_000 {
        let key = i.to_be_bytes();
        assert_eq!(forward.owners(&key, 3), shuffled.owners(&key, 3));
    }
    assert_eq!(
        forward.partition_map(256),
        shuffled.partition_map(256),
        "partition maps differ"
    );
    assert_eq!(
        forward.partition_owner(PartitionId(7)),
        shuffled.partition_owner(PartitionId(7))
    );
}

/// Owners on r1..r4, V=128, recorded when the layout was fixed. Never regenerate these to make
/// the test pass: a difference means processes of different builds would disagree.
const GOLDEN_OWNERS: [(&str, &str); 8] = [
    ("", "r1"),
    ("user:42", "r3"),
    ("order:1", "r3"),
    ("order:2", "r2"),
    ("session:abc", "r2"),
    ("queue/events", "r4"),
    ("cache/line/0", "r1"),
    ("cache/line/1", "r1"),
];
/// `partition_map(16)` on r1..r4, V=128.
const GOLDEN_PARTITION_MAP: [&str; 16] = [
    "r3", "r3", "r2", "r2", "r2", "r2", "r4", "r2", "r3", "r4", "r3", "r4", "r2", "r1", "r3", "r4",
];
/// Per-member counts and FNV-1a digest of the owners of "key0".."key999999" on r1..r4, V=128.
const GOLDEN_MILLION_KEYS: ([u32; 4], u64) =
    ([284_839, 241_280, 220_104, 253_777], 0x9843_6263_8600_664e);
