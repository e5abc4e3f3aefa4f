//! Black-box tests of the lock service: real `distsync serve lock` processes on loopback,
//! killed, paused and partitioned by the test (TESTING.md L-* and D-*).

mod cluster;
mod deadlock;
mod faults;
mod fencing;
mod input;
#[path = "../support/link.rs"]
mod link;
#[path = "../support/metrics.rs"]
mod metrics;
#[path = "../support/ports.rs"]
mod ports;
#[path = "../support/process.rs"]
mod process;
#[path = "../support/seed.rs"]
mod seed;
mod semantics;
mod soak;
