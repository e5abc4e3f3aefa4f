//! Black-box tests of the cache service: real `distsync serve cache` processes (and a real
//! `redis-server` where the backing store matters) on loopback ports 17000-17999
//! (move them with `DISTSYNC_TEST_CACHE_PORT_BASE`).
//!
//! `coherence` checks what every reader sees across nodes (states, freshness, capacity
//! pressure); `faults` kills a node under write-through; `input` feeds bad requests, bad RESP
//! frames and a peer that vanishes mid-frame.

mod coherence;
mod common;
mod faults;
mod input;
