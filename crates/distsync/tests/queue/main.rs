//! Black-box tests of the queue service: real `distsync serve queue` processes over real
//! `redis-server` processes (or the embedded backend), on loopback ports.
//!
//! The behavioural suite (`behaviour`) runs against both backends; `faults` kills Redis shards
//! and queue nodes with SIGKILL; `consumers` kills consumer processes; `ring` changes the
//! shards and the queue nodes. Every check that "nothing was lost" is a total-queue check:
//! lost = acknowledged publishes never delivered must be empty; duplicates are reported.

mod behaviour;
mod common;
mod consumers;
mod faults;
#[path = "../support/link.rs"]
mod link;
#[path = "../support/metrics.rs"]
mod metrics;
#[path = "../support/ports.rs"]
mod ports;
#[path = "../support/process.rs"]
mod process;
mod ring;
#[path = "../support/seed.rs"]
mod seed;
mod trim;
