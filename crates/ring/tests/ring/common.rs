//! Shared builders and statistics for the ring tests.

use distsync_ring::HashRing;

/// Keys per salt (TESTING.md B3: 100k keys).
pub const KEYS_PER_SALT: u32 = 100_000;

/// Salts per configuration (TESTING.md B3: 20, averaged).
pub const SALTS: u32 = 20;

/// Member counts of H-01..H-03.
pub const MEMBER_COUNTS: [usize; 3] = [3, 5, 10];

/// Virtual nodes per member of H-01..H-03.
pub const VNODE_COUNTS: [u32; 2] = [128, 256];

/// What a salt changes.
///
/// The thresholds of TESTING.md B3 are stated over "20 different hash seeds, averaged", that is
/// over 20 independent ring layouts. Placement depends only on member names, so salting the
/// names gives an independent layout from the production hash, with no second code path.
/// Salting only the keys measures the one production layout of `r1..rN`, whose balance is a
/// single draw: see `balance::production_shard_names_mean_cv_within_bound` for what that means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Salting {
    /// The salt changes the key set and the member names (`s{salt}/r{i}`): a new ring layout.
    KeysAndNames,
    /// The salt changes only the key set; members are the production names `r1..rN`.
    KeysOnly,
}

/// The name of member `i` (1-based) under `salting` and `salt`, spelled like a queue shard.
pub fn member_name(salting: Salting, salt: u32, i: usize) -> String {
    match salting {
        Salting::KeysAndNames => format!("s{salt}/r{i}"),
        Salting::KeysOnly => format!("r{i}"),
    }
}

/// A ring with members 1..=`members`, named by [`member_name`].
pub fn ring_of(members: usize, vnodes_per_member: u32, salting: Salting, salt: u32) -> HashRing {
    let mut ring = HashRing::new(vnodes_per_member).expect("test vnodes are in range");
    for i in 1..=members {
        ring.add(member_name(salting, salt, i))
            .expect("names are distinct");
    }
    ring
}

/// Key `i` of the key set chosen by `salt`, spelled like an application key.
pub fn key(salt: u32, i: u32, buf: &mut String) -> &[u8] {
    use std::fmt::Write as _;
    buf.clear();
    write!(buf, "salt{salt}:key{i}").expect("writing to a String cannot fail");
    buf.as_bytes()
}

/// The index in `ring.members()` of each key's owner, for one salt's key set.
pub fn owner_indices(ring: &HashRing, salt: u32) -> Vec<usize> {
    let mut buf = String::new();
    (0..KEYS_PER_SALT)
        .map(|i| {
            let owner = ring
                .owner(key(salt, i, &mut buf))
                .expect("ring is not empty");
            index_of(ring, owner)
        })
        .collect()
}

/// The index of the member called `name` in `ring.members()`.
pub fn index_of(ring: &HashRing, name: &str) -> usize {
    ring.members()
        .iter()
        .position(|member| member == name)
        .expect("name is a member")
}

/// How many keys each member owns, for one salt's key set.
pub fn key_counts(ring: &HashRing, salt: u32) -> Vec<u64> {
    let mut counts = vec![0u64; ring.len()];
    for owner in owner_indices(ring, salt) {
        counts[owner] += 1;
    }
    counts
}

/// Balance of one key set over the members.
#[derive(Debug, Clone, Copy)]
pub struct Balance {
    /// Coefficient of variation of the per-member key count: population standard deviation
    /// (divided by N) over the mean.
    pub cv: f64,
    /// The largest per-member key count over the mean.
    pub max_over_mean: f64,
}

/// The balance of per-member key `counts`.
pub fn balance(counts: &[u64]) -> Balance {
    let n = counts.len() as f64;
    let mean = counts.iter().sum::<u64>() as f64 / n;
    let variance = counts
        .iter()
        .map(|&count| (count as f64 - mean).powi(2))
        .sum::<f64>()
        / n;
    let max = counts.iter().copied().max().unwrap_or(0) as f64;
    Balance {
        cv: variance.sqrt() / mean,
        max_over_mean: max / mean,
    }
}
