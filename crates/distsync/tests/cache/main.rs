//! Black-box tests of the cache service: real `distsync serve cache` processes (and a real
//! `redis-server` where the backing store matters) on loopback ports
//! from `support/ports.rs`.
//!
//! `coherence` checks what every reader sees across nodes (states, freshness, capacity
//! pressure); `faults` kills a node under write-through; `input` feeds bad requests, bad RESP
//! frames and a peer that vanishes mid-frame; `resp` runs concurrent pipelined RESP clients;
//! `network` runs the nodes over proxies that drop, delay, reorder and partition their
//! messages.

mod coherence;
mod common;
mod faults;
mod input;
#[path = "../support/link.rs"]
mod link;
mod network;
#[path = "../support/ports.rs"]
mod ports;
#[path = "../support/process.rs"]
mod process;
mod resp;
mod scale;
