//! A seeded xorshift for the random choices of a fault schedule. The seed is printed, so a
//! failing run's choices (victims, fault kinds) can be made again with `DISTSYNC_TEST_SEED`;
//! their timing is the machine's.

#![allow(dead_code)] // each test binary uses a different subset

/// Returns the generator; prints `{what} seed: DISTSYNC_TEST_SEED=…`.
pub fn seeded_rng(what: &str) -> impl FnMut() -> u64 {
    let seed = std::env::var("DISTSYNC_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock after 1970")
                .as_nanos() as u64
        });
    eprintln!("{what} seed: DISTSYNC_TEST_SEED={seed}");
    xorshift(seed)
}

/// xorshift64 from `seed` (any value; 0 is made odd).
pub fn xorshift(seed: u64) -> impl FnMut() -> u64 {
    let mut state = seed | 1;
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    }
}
